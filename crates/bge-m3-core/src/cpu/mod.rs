//! The encoder on the CPU in f32: weights packed at load, layers fused and multi-threaded, and
//! a batch's sequences laid end to end without padding.
//!
//! candle's CPU backend runs one op at a time, each into a freshly allocated tensor, and its
//! matrix product packs the weights again on every call. Here each `Linear` weight is packed
//! once, at load ([`matmul::PackedMatrix`]), so a pass streams every weight matrix from memory
//! exactly once whatever its number of rows; a layer is four such products and four fused
//! passes (bias + split into heads; bias + GELU; bias + residual + LayerNorm, twice), plus
//! attention per (sequence, head, block of queries).
//!
//! The sequences of a pass are laid end to end ([`attention::Segments`]): every per-token step
//! runs on exactly the real tokens, and only attention looks at sequence boundaries. A pass of
//! texts of different lengths therefore costs what the texts cost alone, and a text's hidden
//! states do not depend on the other texts of its pass (the products give every row the same
//! sum in the same order, see [`matmul`]).
//!
//! Only f32 on the CPU takes this path; every other device and dtype runs the candle layers of
//! the encoder (`encoder.rs`, which chooses the path and calls this one), and they remain the
//! reference the tests compare this path with.

// The unsafe code of the crate is here, in the modules that allow it (the workspace denies
// `unsafe_code` everywhere else): tasks that write disjoint parts of one buffer (`shared`, and
// its users `matmul` and `attention`), and kernels compiled for CPU features that only a token
// of `arch` can reach (`matmul`'s microkernel, `kernels`). See docs/DESIGN.md, "Unsafe code".

/// Tokens of CPU features. A kernel compiled for AVX2 and FMA is reachable only with the token
/// that detection makes, and only detection makes it:
///
/// ```compile_fail
/// #[path = "arch.rs"]
/// mod arch;
/// // Made without detection: does not compile (the field is private to `arch`).
/// let token = arch::Avx2Fma { _detected: () };
/// ```
///
/// The same module reached the same way, through `detect` (so that the failure above is the
/// private field, nothing else):
///
/// ```
/// #[path = "arch.rs"]
/// mod arch;
/// use arch::Avx2Fma;
///
/// /// Safe code, compiled for AVX2 and FMA, reachable only with their token.
/// #[target_feature(enable = "avx2,fma")]
/// fn double(_: Avx2Fma, x: &mut [f32]) {
///     x.iter_mut().for_each(|v| *v *= 2.0);
/// }
///
/// let mut x = [1.5f32; 8];
/// if let Some(token) = Avx2Fma::detect() {
///     // SAFETY: `token` proves that the CPU has AVX2 and FMA, the features `double` enables.
///     unsafe { double(token, &mut x) };
///     assert_eq!(x, [3.0; 8]);
/// }
/// ```
#[cfg(target_arch = "x86_64")]
mod arch;
#[allow(unsafe_code)]
mod attention;
#[allow(unsafe_code)]
mod kernels;
#[allow(unsafe_code)]
mod matmul;
#[allow(unsafe_code)]
mod shared;
#[cfg(test)]
mod testing;

use candle_core::{CpuStorage, Device, Storage, StorageRef, Tensor};
use candle_nn::VarBuilder;

use crate::batch::{position_ids, HiddenStates};
use crate::config::Config;
use crate::{Error, Result};
use attention::{Heads, Segments};
use kernels::Norm;
use matmul::PackedMatrix;

/// A `Linear` layer: its weight packed for [`matmul::matmul`], and its bias.
struct Dense {
    weight: PackedMatrix,
    bias: Vec<f32>,
}

impl Dense {
    /// Loads `weight` `(out, in)` and `bias` `(out,)` under each of `prefixes`, stacked in that
    /// order into one layer of `prefixes.len() x out` outputs (query, key and value become one
    /// product). Each weight is packed and dropped before the next is read.
    fn load(vb: &VarBuilder, prefixes: &[&str], (out, inner): (usize, usize)) -> Result<Self> {
        let mut rows = Vec::with_capacity(prefixes.len());
        let mut bias = Vec::with_capacity(prefixes.len() * out);
        for prefix in prefixes {
            let vb = vb.pp(*prefix);
            rows.push(vb.get((out, inner), "weight")?);
            bias.extend(vb.get(out, "bias")?.to_vec1::<f32>()?);
        }
        let weight = {
            let parts = rows.iter().map(f32_slice).collect::<Result<Vec<_>>>()?;
            PackedMatrix::pack_stacked(&parts, inner)
        };
        Ok(Self { weight, bias })
    }
}

fn load_norm(vb: &VarBuilder, width: usize, eps: f64) -> Result<Norm> {
    Ok(Norm {
        gamma: vb.get(width, "weight")?.to_vec1()?,
        beta: vb.get(width, "bias")?.to_vec1()?,
        eps: eps as f32,
    })
}

/// One `encoder.layer.N`, with the erf GELU.
///
/// Source: <https://github.com/huggingface/transformers/blob/main/src/transformers/models/xlm_roberta/modeling_xlm_roberta.py>
struct Layer {
    /// `attention.self.{query,key,value}`, as one `(3 x hidden, hidden)` product.
    qkv: Dense,
    attention_output: Dense,
    attention_norm: Norm,
    intermediate: Dense,
    output: Dense,
    output_norm: Norm,
}

impl Layer {
    fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let eps = cfg.layer_norm_eps;
        Ok(Self {
            qkv: Dense::load(&vb.pp("attention.self"), &["query", "key", "value"], (h, h))?,
            attention_output: Dense::load(&vb.pp("attention.output"), &["dense"], (h, h))?,
            attention_norm: load_norm(&vb.pp("attention.output.LayerNorm"), h, eps)?,
            intermediate: Dense::load(&vb.pp("intermediate"), &["dense"], (i, h))?,
            output: Dense::load(&vb.pp("output"), &["dense"], (h, i))?,
            output_norm: load_norm(&vb.pp("output.LayerNorm"), h, eps)?,
        })
    }
}

/// The encoder's weights for the fused CPU path. Mirrors `XLMRobertaModel` up to its last
/// hidden state, like the encoder's candle layers.
///
/// Source: <https://github.com/huggingface/transformers/blob/main/src/transformers/models/xlm_roberta/modeling_xlm_roberta.py>
pub(crate) struct CpuEncoder {
    /// `embeddings.word_embeddings.weight`, `(vocab, hidden)`: the largest tensor, kept as
    /// read (a pass reads only its tokens' rows).
    words: Tensor,
    positions: Vec<f32>,
    /// Row 0 of `token_type_embeddings`: BGE-M3 inputs have a single segment.
    token_type: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    hidden: usize,
    heads: Heads,
    intermediate: usize,
    vocab: usize,
    max_positions: usize,
    pad_token_id: u32,
}

impl CpuEncoder {
    /// Loads and packs the weights; `vb` is rooted where the checkpoint's `embeddings.*` keys
    /// are, on the CPU in f32.
    pub(crate) fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let h = cfg.hidden_size;
        let emb = vb.pp("embeddings");
        let words = emb.get((cfg.vocab_size, h), "word_embeddings.weight")?;
        f32_slice(&words)?;
        let positions = emb
            .get(
                (cfg.max_position_embeddings, h),
                "position_embeddings.weight",
            )?
            .flatten_all()?
            .to_vec1()?;
        let token_type = emb
            .get((cfg.type_vocab_size, h), "token_type_embeddings.weight")?
            .get(0)?
            .to_vec1()?;
        let embedding_norm = load_norm(&emb.pp("LayerNorm"), h, cfg.layer_norm_eps)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::load(vb.pp(format!("encoder.layer.{i}")), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            words,
            positions,
            token_type,
            embedding_norm,
            layers,
            hidden: h,
            heads: Heads {
                count: cfg.num_attention_heads,
                dim: cfg.head_dim(),
            },
            intermediate: cfg.intermediate_size,
            vocab: cfg.vocab_size,
            max_positions: cfg.max_position_embeddings,
            pad_token_id: cfg.pad_token_id,
        })
    }

    /// The last hidden state of `sequences` (token ids in the vocabulary, at most the model's
    /// positions long), laid end to end: sequence `i`'s rows follow sequence `i - 1`'s,
    /// without padding.
    pub(crate) fn forward(&self, sequences: &[&[u32]]) -> Result<HiddenStates> {
        let ids: Vec<u32> = sequences.iter().flat_map(|s| s.iter().copied()).collect();
        let positions: Vec<u32> = sequences
            .iter()
            .flat_map(|s| position_ids(s, self.pad_token_id))
            .collect();
        let segments = Segments::new(sequences.iter().map(|s| s.len()))?;
        let hidden = self.forward_flat(&ids, &positions, &segments)?;
        let rows = hidden.len() / self.hidden.max(1);
        Ok(HiddenStates {
            rows: Tensor::from_vec(hidden, (rows, self.hidden), &Device::Cpu)?,
            starts: segments.into_starts(),
        })
    }

    /// The last hidden state of the sequences `segments` lays end to end: `ids` and
    /// `position_ids` hold one entry per token. Returns `(tokens, hidden)` values, row-major,
    /// in the same order.
    fn forward_flat(
        &self,
        ids: &[u32],
        position_ids: &[u32],
        segments: &Segments,
    ) -> Result<Vec<f32>> {
        let tokens = segments.tokens();
        if ids.len() != tokens || position_ids.len() != tokens {
            return Err(Error::cpu_encoder(format!(
                "{} ids and {} positions for {tokens} tokens",
                ids.len(),
                position_ids.len()
            )));
        }
        // The callers check ids and lengths against the model; this only keeps the table
        // lookups in bounds whatever they are given.
        let outside = ids.iter().any(|&id| id as usize >= self.vocab)
            || position_ids
                .iter()
                .any(|&p| p as usize >= self.max_positions);
        if outside {
            return Err(Error::cpu_encoder(
                "a token id or position is outside the embedding tables",
            ));
        }
        let (h, i) = (self.hidden, self.intermediate);
        let mut x = vec![0f32; tokens * h];
        kernels::embed(
            &mut x,
            (ids, position_ids),
            (&f32_slice(&self.words)?, &self.positions, &self.token_type),
            &self.embedding_norm,
        );
        let mut ws = Workspace {
            qkv: vec![0.0; tokens * 3 * h],
            context: vec![0.0; tokens * h],
            attended: vec![0.0; tokens * h],
            inner: vec![0.0; tokens * i.max(3 * h)],
        };
        for layer in &self.layers {
            self.layer_forward(layer, &mut x, segments, &mut ws);
        }
        Ok(x)
    }

    /// One layer on `x`, the `(tokens, hidden)` hidden states, in place.
    fn layer_forward(&self, layer: &Layer, x: &mut [f32], segments: &Segments, ws: &mut Workspace) {
        let tokens = segments.tokens();
        let (h, i) = (self.hidden, self.intermediate);
        matmul::matmul(x, tokens, &layer.qkv.weight, &mut ws.qkv);
        // The intermediate activations are not needed before the attention is done: their
        // buffer holds the split heads meanwhile.
        let heads = &mut ws.inner[..tokens * 3 * h];
        attention::split_heads(&ws.qkv, &layer.qkv.bias, heads, self.heads);
        attention::attention(heads, &mut ws.context, segments, self.heads);

        let out = &layer.attention_output;
        matmul::matmul(&ws.context, tokens, &out.weight, &mut ws.attended);
        kernels::bias_residual_layer_norm(&mut ws.attended, x, &out.bias, &layer.attention_norm);

        let inner = &mut ws.inner[..tokens * i];
        matmul::matmul(&ws.attended, tokens, &layer.intermediate.weight, inner);
        kernels::bias_gelu(inner, &layer.intermediate.bias);

        // `x` is not needed any more: the layer's output goes there.
        matmul::matmul(inner, tokens, &layer.output.weight, x);
        kernels::bias_residual_layer_norm(x, &ws.attended, &layer.output.bias, &layer.output_norm);
    }
}

/// Buffers of one forward pass, reused by every layer.
struct Workspace {
    qkv: Vec<f32>,
    context: Vec<f32>,
    attended: Vec<f32>,
    /// The intermediate activations, and before them the projection split into heads
    /// (`(3, heads, tokens, head_dim)`).
    inner: Vec<f32>,
}

/// The f32 values of a contiguous CPU tensor, borrowed from its storage.
fn f32_slice(tensor: &Tensor) -> Result<CpuSlice<'_>> {
    let (storage, layout) = tensor.storage_and_layout();
    let Some((start, end)) = layout.contiguous_offsets() else {
        return Err(not_f32());
    };
    if !matches!(&*storage, Storage::Cpu(CpuStorage::F32(_))) {
        return Err(not_f32());
    }
    Ok(CpuSlice {
        storage,
        start,
        end,
    })
}

fn not_f32() -> Error {
    Error::cpu_encoder("a weight is not a contiguous f32 tensor on the CPU")
}

/// See [`f32_slice`].
struct CpuSlice<'a> {
    storage: StorageRef<'a>,
    start: usize,
    end: usize,
}

impl std::ops::Deref for CpuSlice<'_> {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match &*self.storage {
            Storage::Cpu(CpuStorage::F32(data)) => &data[self.start..self.end],
            _ => unreachable!("checked in f32_slice"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    fn tiny() -> (CpuEncoder, Config) {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models/tiny-pt");
        let files = crate::weights::ModelFiles::locate(&dir).unwrap();
        let cfg = Config::from_file(&files.config).unwrap();
        let vb =
            crate::weights::encoder_var_builder(&files.encoder, DType::F32, &Device::Cpu).unwrap();
        (CpuEncoder::load(vb, &cfg).unwrap(), cfg)
    }

    /// The path's own checks are its own error, not a tensor library's, and say what disagreed.
    #[test]
    fn inconsistent_inputs_are_the_cpu_encoders_errors() {
        let (encoder, cfg) = tiny();
        let segments = Segments::new([3]).unwrap();
        let short = encoder
            .forward_flat(&[5, 6], &[2, 3], &segments)
            .unwrap_err();
        assert!(
            matches!(&short, Error::CpuEncoder { message } if message == "2 ids and 2 positions for 3 tokens"),
            "{short:?}"
        );
        let outside = cfg.vocab_size as u32;
        let error = encoder
            .forward_flat(&[5, outside, 6], &[2, 3, 4], &segments)
            .unwrap_err();
        assert!(
            matches!(&error, Error::CpuEncoder { message } if message.contains("outside the embedding tables")),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "cpu encoder: a token id or position is outside the embedding tables"
        );
        let ids = [5, 6, 7];
        let positions = [2, 3, cfg.max_position_embeddings as u32];
        assert!(matches!(
            encoder.forward_flat(&ids, &positions, &segments),
            Err(Error::CpuEncoder { .. })
        ));
    }

    /// A weight of another dtype is refused by the same error (the loader converts to f32
    /// first, so only a bug would get there).
    #[test]
    fn a_weight_that_is_not_f32_is_refused() {
        let weight = Tensor::zeros((2, 3), DType::F16, &Device::Cpu).unwrap();
        let error = f32_slice(&weight).err().unwrap();
        assert!(matches!(error, Error::CpuEncoder { .. }), "{error:?}");
    }
}
