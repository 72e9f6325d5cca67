//! The XLM-RoBERTa encoder of BGE-M3, built from candle-nn parts.
//!
//! One struct per checkpoint submodule, each with `load(vb, cfg)` and `forward`, named after the
//! checkpoint's keys. Two things differ on purpose from candle-transformers' `XLMRobertaModel`:
//! position ids are computed in integers on the host (a cumsum in f16/bf16 cannot count past
//! 2048/256 exactly, which would silently break 8192-token inputs on a GPU), and attention is
//! computed in blocks of queries, so that its scores never need more than
//! [`ATTENTION_BLOCK_ELEMENTS`] elements at once instead of `batch x heads x L x L`.
//!
//! In f32 on the CPU the layers run fused and multi-threaded in [`crate::cpu`] instead,
//! over the same weights; the candle ops here are the path of every other device and dtype.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};

use crate::batch::{position_ids, HiddenStates};
use crate::config::{Config, HiddenAct};
use crate::cpu;
use crate::weights::TensorFile;
use crate::Result;

/// Upper bound on the elements of one block of attention scores (`batch x heads x queries x
/// keys`): 32 Mi elements, 128 MiB in f32. At 8192 tokens and 16 heads that is 256 queries a
/// block; short batches fit in one block.
pub(crate) const ATTENTION_BLOCK_ELEMENTS: usize = 1 << 25;

/// A padded batch ready for the encoder.
#[derive(Debug)]
pub(crate) struct EncoderInput {
    /// `(batch, len)` token ids, padded with `<pad>`.
    pub(crate) input_ids: Tensor,
    /// `(batch, len)` RoBERTa position ids.
    pub(crate) position_ids: Tensor,
    /// `(batch, 1, 1, len)` additive f32 mask (0 for real tokens, `f32::MIN` for padding), or
    /// `None` when no sequence is padded. It stays f32 whatever the model dtype, because the
    /// softmax is computed in f32.
    pub(crate) attention_mask: Option<Tensor>,
}

impl EncoderInput {
    /// Pads `sequences` to the longest one. Padding is right-aligned, and masked by the
    /// sequence lengths (not by the ids, so a literal `<pad>` in a text is attended to, as
    /// with Hugging Face's tokenizer output).
    pub(crate) fn new(sequences: &[&[u32]], pad_id: u32, device: &Device) -> Result<Self> {
        let batch = sequences.len();
        let len = sequences.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(batch * len);
        let mut positions = Vec::with_capacity(batch * len);
        let mut mask = Vec::with_capacity(batch * len);
        for seq in sequences {
            let padding = len - seq.len();
            ids.extend_from_slice(seq);
            ids.extend(std::iter::repeat_n(pad_id, padding));
            positions.extend(position_ids(seq, pad_id));
            positions.extend(std::iter::repeat_n(pad_id, padding));
            mask.extend(std::iter::repeat_n(0f32, seq.len()));
            mask.extend(std::iter::repeat_n(f32::MIN, padding));
        }
        let needs_mask = sequences.iter().any(|s| s.len() != len);
        let attention_mask = if needs_mask {
            Some(Tensor::from_vec(mask, (batch, 1, 1, len), device)?)
        } else {
            None
        };
        Ok(Self {
            input_ids: Tensor::from_vec(ids, (batch, len), device)?,
            position_ids: Tensor::from_vec(positions, (batch, len), device)?,
            attention_mask,
        })
    }
}

/// `embeddings.*`: word, position and token-type embeddings, then LayerNorm.
/// Mirrors `XLMRobertaEmbeddings` in transformers' `modeling_xlm_roberta.py`.
///
/// Source: <https://github.com/huggingface/transformers/blob/main/src/transformers/models/xlm_roberta/modeling_xlm_roberta.py>
struct Embeddings {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    /// Row 0 of `token_type_embeddings`: BGE-M3 inputs have a single segment.
    token_type: Tensor,
    layer_norm: LayerNorm,
}

impl Embeddings {
    fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let word_embeddings =
            candle_nn::embedding(cfg.vocab_size, cfg.hidden_size, vb.pp("word_embeddings"))?;
        let position_embeddings = candle_nn::embedding(
            cfg.max_position_embeddings,
            cfg.hidden_size,
            vb.pp("position_embeddings"),
        )?;
        let token_type = vb
            .get(
                (cfg.type_vocab_size, cfg.hidden_size),
                "token_type_embeddings.weight",
            )?
            .get(0)?;
        let layer_norm =
            candle_nn::layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("LayerNorm"))?;
        Ok(Self {
            word_embeddings,
            position_embeddings,
            token_type,
            layer_norm,
        })
    }

    fn forward(&self, input_ids: &Tensor, position_ids: &Tensor) -> Result<Tensor> {
        let words = self.word_embeddings.forward(input_ids)?;
        let positions = self.position_embeddings.forward(position_ids)?;
        // Same order of additions as transformers.
        let x = (words.broadcast_add(&self.token_type)? + positions)?;
        Ok(self.layer_norm.forward(&x)?)
    }
}

/// `attention.self`: query, key and value projections, fused into one matrix at load time.
/// Mirrors `XLMRobertaSelfAttention`.
///
/// Source: <https://github.com/huggingface/transformers/blob/main/src/transformers/models/xlm_roberta/modeling_xlm_roberta.py>
struct SelfAttention {
    qkv: Linear,
    num_heads: usize,
    head_dim: usize,
}

impl SelfAttention {
    fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let h = cfg.hidden_size;
        let weight = |name: &str| vb.get((h, h), &format!("{name}.weight"));
        let bias = |name: &str| vb.get(h, &format!("{name}.bias"));
        let qkv_weight = Tensor::cat(&[weight("query")?, weight("key")?, weight("value")?], 0)?;
        let qkv_bias = Tensor::cat(&[bias("query")?, bias("key")?, bias("value")?], 0)?;
        Ok(Self {
            qkv: Linear::new(qkv_weight, Some(qkv_bias)),
            num_heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
        })
    }

    /// `(batch, len, hidden)` in, `(batch, len, hidden)` out.
    fn forward(&self, x: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        let (batch, len, hidden) = x.dims3()?;
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((batch, len, 3, self.num_heads, self.head_dim))?
            .permute((2, 0, 3, 1, 4))?;
        let q = qkv.get(0)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let context = blocked_attention(
            &q,
            &k,
            &v,
            attention_mask,
            self.head_dim,
            ATTENTION_BLOCK_ELEMENTS,
        )?;
        Ok(context.transpose(1, 2)?.reshape((batch, len, hidden))?)
    }
}

/// Exact softmax attention over `(batch, heads, len, head_dim)` tensors, computed for blocks of
/// queries so that each block's scores hold at most `block_elements` elements (or one query
/// row, if a row alone is larger). Every query row sees all keys, so the result is the same as
/// one full softmax.
fn blocked_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    attention_mask: Option<&Tensor>,
    head_dim: usize,
    block_elements: usize,
) -> Result<Tensor> {
    let (batch, heads, len, _) = q.dims4()?;
    let scale = 1.0 / (head_dim as f64).sqrt();
    let k_t = k.t()?;
    let per_query = (batch * heads * len).max(1);
    let block = (block_elements / per_query).clamp(1, len.max(1));
    let mut outputs = Vec::with_capacity(len.div_ceil(block));
    for start in (0..len).step_by(block) {
        let rows = block.min(len - start);
        let q_block = if rows == len {
            q.clone()
        } else {
            q.narrow(2, start, rows)?
        };
        // The softmax runs in f32 whatever the model dtype, as PyTorch's fused attention does:
        // a sum of 8192 exponentials accumulated in f16 loses most of its precision.
        let scores = (q_block.matmul(&k_t)? * scale)?.to_dtype(DType::F32)?;
        let scores = match attention_mask {
            Some(mask) => scores.broadcast_add(mask)?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
        outputs.push(probs.matmul(v)?);
    }
    if outputs.len() == 1 {
        Ok(outputs.pop().expect("one block"))
    } else {
        Ok(Tensor::cat(&outputs, 2)?)
    }
}

/// `dense` + `LayerNorm` over a residual: both `attention.output` (`XLMRobertaSelfOutput`) and
/// `output` (`XLMRobertaOutput`) have this shape.
///
/// Source: <https://github.com/huggingface/transformers/blob/main/src/transformers/models/xlm_roberta/modeling_xlm_roberta.py>
struct DenseResidualNorm {
    dense: Linear,
    layer_norm: LayerNorm,
}

impl DenseResidualNorm {
    fn load(vb: VarBuilder, cfg: &Config, in_features: usize) -> Result<Self> {
        Ok(Self {
            dense: candle_nn::linear(in_features, cfg.hidden_size, vb.pp("dense"))?,
            layer_norm: candle_nn::layer_norm(
                cfg.hidden_size,
                cfg.layer_norm_eps,
                vb.pp("LayerNorm"),
            )?,
        })
    }

    fn forward(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let x = (self.dense.forward(x)? + residual)?;
        Ok(self.layer_norm.forward(&x)?)
    }
}

/// `intermediate.dense` and the activation. Mirrors `XLMRobertaIntermediate`.
///
/// Source: <https://github.com/huggingface/transformers/blob/main/src/transformers/models/xlm_roberta/modeling_xlm_roberta.py>
struct Intermediate {
    dense: Linear,
    act: HiddenAct,
}

impl Intermediate {
    fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        Ok(Self {
            dense: candle_nn::linear(cfg.hidden_size, cfg.intermediate_size, vb.pp("dense"))?,
            act: cfg.hidden_act,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.dense.forward(x)?;
        Ok(match self.act {
            HiddenAct::Gelu => x.gelu_erf()?,
            HiddenAct::GeluNew => x.gelu()?,
            HiddenAct::Relu => x.relu()?,
        })
    }
}

/// `encoder.layer.N`. Mirrors `XLMRobertaLayer`.
///
/// Source: <https://github.com/huggingface/transformers/blob/main/src/transformers/models/xlm_roberta/modeling_xlm_roberta.py>
struct Layer {
    attention: SelfAttention,
    attention_output: DenseResidualNorm,
    intermediate: Intermediate,
    output: DenseResidualNorm,
}

impl Layer {
    fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        Ok(Self {
            attention: SelfAttention::load(vb.pp("attention.self"), cfg)?,
            attention_output: DenseResidualNorm::load(
                vb.pp("attention.output"),
                cfg,
                cfg.hidden_size,
            )?,
            intermediate: Intermediate::load(vb.pp("intermediate"), cfg)?,
            output: DenseResidualNorm::load(vb.pp("output"), cfg, cfg.intermediate_size)?,
        })
    }

    fn forward(&self, x: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        let attended = self.attention.forward(x, attention_mask)?;
        let x = self.attention_output.forward(&attended, x)?;
        let inner = self.intermediate.forward(&x)?;
        self.output.forward(&inner, &x)
    }
}

/// How the layers run.
enum Layers {
    /// candle ops on a padded batch: every device and dtype.
    Candle {
        embeddings: Embeddings,
        layers: Vec<Layer>,
    },
    /// [`cpu::CpuEncoder`]: f32 on the CPU with the erf GELU.
    Cpu(cpu::CpuEncoder),
}

/// The whole encoder (`embeddings.*` and `encoder.layer.*`; the unused pooler is not loaded).
/// Mirrors `XLMRobertaModel` up to its last hidden state.
///
/// Source: <https://github.com/huggingface/transformers/blob/main/src/transformers/models/xlm_roberta/modeling_xlm_roberta.py>
pub(crate) struct XlmRobertaEncoder {
    layers: Layers,
    dtype: crate::DType,
    device: Device,
    pad_token_id: u32,
}

impl XlmRobertaEncoder {
    /// Loads the weights in `vb`'s dtype; `vb` is rooted where the checkpoint's `embeddings.*`
    /// keys are. In f32 on the CPU with the erf GELU, the fused CPU path is used.
    pub(crate) fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let fused =
            vb.device().is_cpu() && vb.dtype() == DType::F32 && cfg.hidden_act == HiddenAct::Gelu;
        Self::load_layers(vb, cfg, fused)
    }

    /// Loads the weights in int8 on the CPU ([`cpu::CpuEncoder::load_int8`]); `vb` reads `file`
    /// in f32. The caller has checked that the model can run in int8 (the erf GELU).
    pub(crate) fn load_int8(
        vb: VarBuilder,
        file: &TensorFile,
        cfg: &Config,
        calibration: &[Vec<u32>],
    ) -> Result<Self> {
        let device = vb.device().clone();
        Ok(Self {
            layers: Layers::Cpu(cpu::CpuEncoder::load_int8(vb, file, cfg, calibration)?),
            dtype: crate::DType::Int8,
            device,
            pad_token_id: cfg.pad_token_id,
        })
    }

    fn load_layers(vb: VarBuilder, cfg: &Config, fused: bool) -> Result<Self> {
        let device = vb.device().clone();
        let dtype = match vb.dtype() {
            DType::F16 => crate::DType::F16,
            DType::BF16 => crate::DType::BF16,
            _ => crate::DType::F32,
        };
        let layers = if fused {
            Layers::Cpu(cpu::CpuEncoder::load(vb, cfg)?)
        } else {
            Layers::Candle {
                embeddings: Embeddings::load(vb.pp("embeddings"), cfg)?,
                layers: (0..cfg.num_hidden_layers)
                    .map(|i| Layer::load(vb.pp(format!("encoder.layer.{i}")), cfg))
                    .collect::<Result<Vec<_>>>()?,
            }
        };
        Ok(Self {
            layers,
            dtype,
            device,
            pad_token_id: cfg.pad_token_id,
        })
    }

    /// The precision the weights are held and computed in.
    pub(crate) fn dtype(&self) -> crate::DType {
        self.dtype
    }

    pub(crate) fn device(&self) -> &Device {
        &self.device
    }

    /// Whether [`Self::forward`] pads the batch to its longest sequence (see
    /// [`crate::BgeM3::pads_batches`]).
    pub(crate) fn pads_batches(&self) -> bool {
        matches!(self.layers, Layers::Candle { .. })
    }

    /// The last hidden state of `sequences` (token ids in the vocabulary, at most the model's
    /// positions long).
    pub(crate) fn forward(&self, sequences: &[&[u32]]) -> Result<HiddenStates> {
        // One span per pass (not per layer): what a trace needs to tell passes apart and
        // see their size; at the default levels it is disabled and costs next to nothing.
        let tokens: usize = sequences.iter().map(|s| s.len()).sum();
        let _pass = tracing::debug_span!("forward", batch = sequences.len(), tokens).entered();
        match &self.layers {
            Layers::Cpu(encoder) => encoder.forward(sequences),
            Layers::Candle { embeddings, layers } => {
                let input = EncoderInput::new(sequences, self.pad_token_id, &self.device)?;
                let mut x = embeddings.forward(&input.input_ids, &input.position_ids)?;
                for layer in layers {
                    x = layer.forward(&x, input.attention_mask.as_ref())?;
                }
                let (batch, len, hidden) = x.dims3()?;
                Ok(HiddenStates {
                    rows: x.reshape((batch * len, hidden))?,
                    starts: (0..batch).map(|i| i * len).collect(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_batch_masks_by_length_not_by_id() {
        let a: &[u32] = &[0, 1, 2];
        let b: &[u32] = &[0, 2];
        let input = EncoderInput::new(&[a, b], 1, &Device::Cpu).unwrap();
        assert_eq!(
            input.input_ids.to_vec2::<u32>().unwrap(),
            vec![vec![0, 1, 2], vec![0, 2, 1]]
        );
        assert_eq!(
            input.position_ids.to_vec2::<u32>().unwrap(),
            vec![vec![2, 1, 3], vec![2, 3, 1]]
        );
        let mask = input.attention_mask.unwrap().flatten_all().unwrap();
        let mask = mask.to_vec1::<f32>().unwrap();
        assert_eq!(mask[..4], [0.0, 0.0, 0.0, 0.0]);
        assert_eq!(mask[4], 0.0);
        assert_eq!(mask[5], f32::MIN);
        let same_length = EncoderInput::new(&[b, b], 1, &Device::Cpu).unwrap();
        assert!(same_length.attention_mask.is_none());
    }

    #[test]
    fn positions_stay_exact_in_half_precision_batches() {
        // The position ids are integers whatever the model dtype, so the 8192nd token looks up
        // row 8193 in f16 and bf16 too (a float cumsum would have drifted long before).
        let ids = vec![5u32; 8192];
        let input = EncoderInput::new(&[&ids], 1, &Device::Cpu).unwrap();
        assert_eq!(input.position_ids.dtype(), DType::U32);
        let positions = input.position_ids.to_vec2::<u32>().unwrap().remove(0);
        assert_eq!(positions, (2..8194).collect::<Vec<u32>>());
    }

    #[test]
    fn blocked_attention_equals_one_block() {
        let device = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (2, 3, 40, 8), &device).unwrap();
        let k = Tensor::randn(0f32, 1.0, (2, 3, 40, 8), &device).unwrap();
        let v = Tensor::randn(0f32, 1.0, (2, 3, 40, 8), &device).unwrap();
        let mut mask = vec![0f32; 80];
        mask[70..].iter_mut().for_each(|m| *m = f32::MIN);
        let mask = Tensor::from_vec(mask, (2, 1, 1, 40), &device).unwrap();
        let whole = blocked_attention(&q, &k, &v, Some(&mask), 8, usize::MAX).unwrap();
        // 7 query rows per block (2 x 3 x 7 x 40 elements), the last block shorter.
        let blocked = blocked_attention(&q, &k, &v, Some(&mask), 8, 2 * 3 * 7 * 40).unwrap();
        assert_eq!(blocked.dims(), whole.dims());
        let diff = max_abs_diff(&whole, &blocked);
        assert!(diff < 1e-6, "{diff}");
    }

    /// Largest element-wise difference of two tensors of the same shape.
    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// The fused CPU path gives the candle ops' hidden states, for sequences of one length
    /// and of several (padded by candle, laid end to end by the CPU path), on both fixture
    /// models.
    #[test]
    fn fused_cpu_path_matches_the_candle_ops() {
        for name in ["tiny-pt", "tiny-st"] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../fixtures/models")
                .join(name);
            let files = crate::weights::ModelFiles::locate(&dir).unwrap();
            let cfg = Config::from_file(&files.config).unwrap();
            let load = |fused| {
                let (vb, _) =
                    crate::weights::encoder_var_builder(&files.encoder, DType::F32, &Device::Cpu)
                        .unwrap();
                XlmRobertaEncoder::load_layers(vb, &cfg, fused).unwrap()
            };
            let (fused, candle) = (load(true), load(false));
            assert!(matches!(fused.layers, Layers::Cpu(_)));
            let long: Vec<u32> = (0..300).map(|i| 4 + (i * 37) % 1000).collect();
            // A literal <pad> (id 1) inside a text is attended to and keeps position 1.
            let short = [0, 17, 1, 99, 5, 2];
            for batch in [
                vec![&long[..]],
                vec![&long[..], &short[..]],
                vec![&short[..], &long[..]],
            ] {
                let ours = fused.forward(&batch).unwrap();
                let reference = candle.forward(&batch).unwrap();
                for (i, seq) in batch.iter().enumerate() {
                    let rows = |h: &HiddenStates| h.rows.narrow(0, h.starts[i], seq.len()).unwrap();
                    let diff = max_abs_diff(&rows(&ours), &rows(&reference));
                    assert!(
                        diff < 1e-5,
                        "{name}, {} sequences, #{i}: {diff}",
                        batch.len()
                    );
                }
            }
        }
    }
}
