//! The model's rules on its inputs and options, checked here only: the library checks them
//! before any work, and the server calls the same functions while it validates a request,
//! so that both report the same field and the same words.

use crate::{Error, Result};

/// Checks a token length option (`max_length`, `max_query_length`, `max_passage_length`)
/// against the model's longest input `longest` (8192 for BGE-M3): it is returned when it is
/// within `1..=longest`, else an [`Error::InvalidInput`] names `field`.
///
/// ```
/// use bge_m3_core::check_length;
/// assert_eq!(check_length("max_length", 512, 8192).unwrap(), 512);
/// let err = check_length("max_query_length", 0, 8192).unwrap_err();
/// assert!(err.to_string().contains("max_query_length"));
/// ```
pub fn check_length(field: &str, length: usize, longest: usize) -> Result<usize> {
    if (1..=longest).contains(&length) {
        Ok(length)
    } else {
        Err(Error::invalid_input(
            field,
            format!("must be between 1 and {longest}, got {length}"),
        ))
    }
}

/// Checks a `batch_size` option: texts per forward pass, at least 1.
///
/// ```
/// use bge_m3_core::check_batch_size;
/// assert_eq!(check_batch_size(12).unwrap().get(), 12);
/// assert!(check_batch_size(0).is_err());
/// ```
pub fn check_batch_size(batch_size: usize) -> Result<std::num::NonZeroUsize> {
    std::num::NonZeroUsize::new(batch_size).ok_or_else(|| {
        Error::invalid_input(
            "batch_size",
            format!("must be at least 1, got {batch_size}"),
        )
    })
}

/// Checks pre-tokenized inputs (one id list per input) against a vocabulary of `vocab_size`
/// ids: the first id outside it is an [`Error::InvalidInput`] on field `input` that says where.
///
/// ```
/// use bge_m3_core::check_token_ids;
/// assert!(check_token_ids(&[vec![0, 5], vec![9]], 10).is_ok());
/// let err = check_token_ids(&[vec![0, 5], vec![9, 10]], 10).unwrap_err();
/// assert!(err.to_string().contains("token id 10 at input[1][1]"));
/// ```
pub fn check_token_ids<I: AsRef<[u32]>>(inputs: &[I], vocab_size: usize) -> Result<()> {
    for (i, ids) in inputs.iter().enumerate() {
        if let Some((j, id)) = ids
            .as_ref()
            .iter()
            .enumerate()
            .find(|(_, &id)| id as usize >= vocab_size)
        {
            return Err(Error::invalid_input(
                "input",
                format!(
                    "token id {id} at input[{i}][{j}] is outside the vocabulary (0..{vocab_size})"
                ),
            ));
        }
    }
    Ok(())
}
