//! A batch of token sequences on its way through the encoder: the RoBERTa position ids that
//! go in, and the last hidden state that comes out. Both encoder paths (the candle layers of
//! `encoder.rs` and the fused CPU path of `cpu/`) speak these, and the heads read the output.

use candle_core::Tensor;

/// RoBERTa position ids for one sequence: `padding_idx + 1 + (number of non-pad tokens up to
/// and including this one)` for real tokens, `padding_idx` for `<pad>` tokens.
///
/// Like transformers' `create_position_ids_from_input_ids`, a `<pad>` id keeps position
/// `padding_idx` and does not advance the count, even when it is a literal `<pad>` in the text.
pub(crate) fn position_ids(ids: &[u32], padding_idx: u32) -> Vec<u32> {
    let mut seen = 0u32;
    ids.iter()
        .map(|&id| {
            if id == padding_idx {
                padding_idx
            } else {
                seen += 1;
                padding_idx + seen
            }
        })
        .collect()
}

/// The last hidden state of a batch: one row per token position, each sequence's rows
/// contiguous and in order (padded or not, depending on the path).
#[derive(Debug)]
pub(crate) struct HiddenStates {
    /// `(rows, hidden)`, in the encoder's dtype.
    pub(crate) rows: Tensor,
    /// The first row of each sequence; sequence `i`'s tokens are its next `len` rows.
    pub(crate) starts: Vec<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The doc-test this function had while it was public.
    #[test]
    fn a_literal_pad_keeps_its_position_and_the_count() {
        assert_eq!(position_ids(&[0, 9, 1, 9, 2], 1), vec![2, 3, 1, 4, 5]);
    }

    #[test]
    fn positions_skip_pad_tokens_and_count_in_integers() {
        assert_eq!(position_ids(&[0, 5, 6, 2], 1), vec![2, 3, 4, 5]);
        // A literal <pad> inside the text keeps position 1 and does not advance the count.
        assert_eq!(position_ids(&[0, 1, 5, 2], 1), vec![2, 1, 3, 4]);
        // 8192 tokens end at position 8193, the last row of BGE-M3's 8194-row table.
        let ids = vec![7u32; 8192];
        let positions = position_ids(&ids, 1);
        assert_eq!(positions.first(), Some(&2));
        assert_eq!(positions.last(), Some(&8193));
        assert!(positions.windows(2).all(|w| w[1] == w[0] + 1));
    }
}
