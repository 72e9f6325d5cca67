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
//! With [`crate::DType::Int8`] the same layers run their four products in int8 ([`int8`]): each
//! weight is quantized as it is read, with the smoothing that the model's own activations on a
//! few built-in texts call for ([`calibration`]), and the word embeddings are held in int8 too,
//! one scale per row. Everything between the products (attention, GELU, LayerNorm, residuals)
//! stays f32.
//!
//! Only f32 and int8 on the CPU take this path; every other device and dtype runs the candle
//! layers of the encoder (`encoder.rs`, which chooses the path and calls this one), and they
//! remain the reference the tests compare this path with.

// The unsafe code of the crate is here, in the modules that allow it (the workspace denies
// `unsafe_code` everywhere else): tasks that write disjoint parts of one buffer (`shared`, and
// its users `matmul`, `int8` and `attention`), and kernels compiled for CPU features that only
// a token of `arch` can reach (`matmul`'s microkernel, `int8`'s kernels and row quantizer,
// `kernels`). See docs/DESIGN.md, "Unsafe code".

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
mod aligned;
#[cfg(target_arch = "x86_64")]
mod arch;
#[allow(unsafe_code)]
mod attention;
mod calibration;
#[allow(unsafe_code)]
mod int8;
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
use crate::weights::TensorFile;
use crate::{Error, Result};
use aligned::Aligned;
use attention::{Heads, Segments};
use calibration::LayerRanges;
use int8::{QuantizedMatrix, QuantizedRows};
use kernels::Norm;
use matmul::PackedMatrix;

pub(crate) use calibration::{LENGTH as CALIBRATION_LENGTH, TEXTS as CALIBRATION_TEXTS};
pub(crate) use int8::KERNEL_VARIABLE as INT8_KERNEL_VARIABLE;

/// Whether [`int8::KERNEL_VARIABLE`], if set, names an int8 kernel this CPU has; if not, why.
pub(crate) fn check_int8_kernel() -> std::result::Result<(), String> {
    int8::Kernel::chosen().map(drop)
}

/// A `Linear` layer: its weight, packed for the products of the encoder's precision, and its
/// bias.
struct Linear {
    weight: Weight,
    bias: Vec<f32>,
}

/// A `Linear` weight `(out, in)`, packed.
enum Weight {
    /// For [`matmul::matmul`].
    F32(PackedMatrix),
    /// For [`int8::matmul`].
    Int8(QuantizedMatrix),
}

/// A `Linear` layer as read, before it is packed: its weights `(out, in)` under each prefix and
/// the biases, stacked.
struct RawLinear {
    parts: Vec<Tensor>,
    bias: Vec<f32>,
    inner: usize,
}

impl RawLinear {
    /// Reads `weight` `(out, in)` and `bias` `(out,)` under each of `prefixes`, to be stacked in
    /// that order into one layer of `prefixes.len() x out` outputs (query, key and value become
    /// one product).
    fn read(vb: &VarBuilder, prefixes: &[&str], (out, inner): (usize, usize)) -> Result<Self> {
        let mut parts = Vec::with_capacity(prefixes.len());
        let mut bias = Vec::with_capacity(prefixes.len() * out);
        for prefix in prefixes {
            let vb = vb.pp(*prefix);
            parts.push(vb.get((out, inner), "weight")?);
            bias.extend(vb.get(out, "bias")?.to_vec1::<f32>()?);
        }
        Ok(Self { parts, bias, inner })
    }

    fn slices(&self) -> Result<Vec<CpuSlice<'_>>> {
        self.parts.iter().map(f32_slice).collect()
    }

    /// Packed for the f32 products.
    fn packed(&self) -> Result<Linear> {
        Ok(Linear {
            weight: Weight::F32(PackedMatrix::pack_stacked(&self.slices()?, self.inner)),
            bias: self.bias.clone(),
        })
    }

    /// Quantized for the int8 products, smoothed for inputs of the range `range`.
    fn quantized(self, range: &calibration::InputRange) -> Result<Linear> {
        let weight = {
            let parts = self.slices()?;
            let smoothing = range.smoothing(&calibration::column_ranges(&parts, self.inner));
            let kernel = int8::Kernel::detect();
            QuantizedMatrix::quantize_stacked(kernel, &parts, self.inner, Some(&smoothing))
        };
        Ok(Linear {
            weight: Weight::Int8(weight),
            bias: self.bias,
        })
    }
}

impl Linear {
    /// [`RawLinear::read`], packed for the f32 products: each layer is packed and its weights
    /// as read dropped before the next is read.
    fn load(vb: &VarBuilder, prefixes: &[&str], shape: (usize, usize)) -> Result<Self> {
        RawLinear::read(vb, prefixes, shape)?.packed()
    }

    /// `out = x · wᵀ` for the `rows` rows of `x`, without the bias; `quantized` is the buffer
    /// of int8 activations.
    fn forward(&self, x: &[f32], rows: usize, out: &mut [f32], quantized: &mut QuantizedRows) {
        match &self.weight {
            Weight::F32(weight) => matmul::matmul(x, rows, weight, out),
            Weight::Int8(weight) => {
                quantized.quantize(x, rows, weight.inner(), weight.input_scales());
                int8::matmul(quantized, weight, out);
            }
        }
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
    qkv: Linear,
    attention_output: Linear,
    attention_norm: Norm,
    intermediate: Linear,
    output: Linear,
    output_norm: Norm,
    /// The int8 kernel of attention's scores, if they run in int8
    /// ([`int8::Kernel::scores_in_int8`]): only where the products do.
    scores: Option<int8::Kernel>,
}

impl Layer {
    fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let eps = cfg.layer_norm_eps;
        Ok(Self {
            qkv: Linear::load(&vb.pp("attention.self"), &["query", "key", "value"], (h, h))?,
            attention_output: Linear::load(&vb.pp("attention.output"), &["dense"], (h, h))?,
            attention_norm: load_norm(&vb.pp("attention.output.LayerNorm"), h, eps)?,
            intermediate: Linear::load(&vb.pp("intermediate"), &["dense"], (i, h))?,
            output: Linear::load(&vb.pp("output"), &["dense"], (h, i))?,
            output_norm: load_norm(&vb.pp("output.LayerNorm"), h, eps)?,
            scores: None,
        })
    }
}

/// A layer's weights as read, in f32.
struct RawLayer {
    qkv: RawLinear,
    attention_output: RawLinear,
    attention_norm: Norm,
    intermediate: RawLinear,
    output: RawLinear,
    output_norm: Norm,
}

impl RawLayer {
    fn read(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let eps = cfg.layer_norm_eps;
        Ok(Self {
            qkv: RawLinear::read(&vb.pp("attention.self"), &["query", "key", "value"], (h, h))?,
            attention_output: RawLinear::read(&vb.pp("attention.output"), &["dense"], (h, h))?,
            attention_norm: load_norm(&vb.pp("attention.output.LayerNorm"), h, eps)?,
            intermediate: RawLinear::read(&vb.pp("intermediate"), &["dense"], (i, h))?,
            output: RawLinear::read(&vb.pp("output"), &["dense"], (h, i))?,
            output_norm: load_norm(&vb.pp("output.LayerNorm"), h, eps)?,
        })
    }

    /// The layer in f32, its weights as read kept.
    fn packed(&self) -> Result<Layer> {
        Ok(Layer {
            qkv: self.qkv.packed()?,
            attention_output: self.attention_output.packed()?,
            attention_norm: self.attention_norm.clone(),
            intermediate: self.intermediate.packed()?,
            output: self.output.packed()?,
            output_norm: self.output_norm.clone(),
            scores: None,
        })
    }

    /// The layer in int8, smoothed for the inputs' ranges `ranges`.
    fn quantized(self, ranges: &LayerRanges) -> Result<Layer> {
        Ok(Layer {
            qkv: self.qkv.quantized(&ranges.qkv)?,
            attention_output: self.attention_output.quantized(&ranges.attention_output)?,
            attention_norm: self.attention_norm,
            intermediate: self.intermediate.quantized(&ranges.intermediate)?,
            output: self.output.quantized(&ranges.output)?,
            output_norm: self.output_norm,
            scores: Some(int8::Kernel::detect()).filter(|kernel| kernel.scores_in_int8()),
        })
    }
}

/// The word embeddings, `(vocab, hidden)`.
enum Words {
    /// As read: a pass reads only its tokens' rows.
    F32(Tensor),
    /// In int8, symmetric per row: `words[id][j] = scales[id] · values[id · hidden + j]`.
    Int8 { values: Vec<i8>, scales: Vec<f32> },
}

impl Words {
    /// Bytes held (of the int8 table; the f32 one is the tensor's).
    fn bytes(&self) -> usize {
        match self {
            Words::F32(words) => words.elem_count() * 4,
            Words::Int8 { values, scales } => values.len() + 4 * scales.len(),
        }
    }

    /// Reads the table `name` of `(vocab, hidden)` from `file` a chunk of rows at a time into
    /// int8, so that the f32 table is never held.
    fn read_int8(file: &TensorFile, name: &str, (vocab, hidden): (usize, usize)) -> Result<Self> {
        let mut values = vec![0i8; vocab * hidden];
        let mut scales = vec![0f32; vocab];
        file.read_rows(name, (vocab, hidden), 4096, |first, rows| {
            for (i, row) in rows.chunks_exact(hidden.max(1)).enumerate() {
                let id = first + i;
                let values = &mut values[id * hidden..][..hidden];
                scales[id] = int8::quantize_symmetric_into(row, 127, values);
            }
        })?;
        Ok(Words::Int8 { values, scales })
    }
}

/// The encoder's weights for the fused CPU path. Mirrors `XLMRobertaModel` up to its last
/// hidden state, like the encoder's candle layers.
///
/// Source: <https://github.com/huggingface/transformers/blob/main/src/transformers/models/xlm_roberta/modeling_xlm_roberta.py>
pub(crate) struct CpuEncoder {
    /// `embeddings.word_embeddings.weight`, `(vocab, hidden)`: the largest tensor.
    words: Words,
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
    /// Loads and packs the weights in f32; `vb` is rooted where the checkpoint's
    /// `embeddings.*` keys are, on the CPU in f32.
    pub(crate) fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let h = cfg.hidden_size;
        let words = vb
            .pp("embeddings")
            .get((cfg.vocab_size, h), "word_embeddings.weight")?;
        f32_slice(&words)?;
        let mut encoder = Self::load_embeddings(&vb, cfg, Words::F32(words))?;
        encoder.layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::load(vb.pp(format!("encoder.layer.{i}")), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(encoder)
    }

    /// Loads the weights in int8, each read in f32 and quantized before the next is read.
    /// `file` is the file behind `vb`; `calibration` holds token sequences (of the model's
    /// tokenizer, markers included) whose activations, computed in f32 one layer at a time as
    /// the layers are read, set each product's smoothing ([`calibration`]).
    pub(crate) fn load_int8(
        vb: VarBuilder,
        file: &TensorFile,
        cfg: &Config,
        calibration: &[Vec<u32>],
    ) -> Result<Self> {
        let h = cfg.hidden_size;
        let name = match vb.prefix().as_str() {
            "" => "embeddings.word_embeddings.weight".to_string(),
            prefix => format!("{prefix}.embeddings.word_embeddings.weight"),
        };
        let words = Words::read_int8(file, &name, (cfg.vocab_size, h))?;
        let mut encoder = Self::load_embeddings(&vb, cfg, words)?;
        let sequences: Vec<&[u32]> = calibration.iter().map(Vec::as_slice).collect();
        let (mut x, segments) = encoder.embed(&sequences)?;
        let mut ws = Workspace::new(segments.tokens(), h, cfg.intermediate_size);
        for i in 0..cfg.num_hidden_layers {
            let raw = RawLayer::read(vb.pp(format!("encoder.layer.{i}")), cfg)?;
            let mut ranges = LayerRanges::new(h, cfg.intermediate_size);
            // The layer's f32 activations: the ranges of its inputs, and the next layer's.
            let layer = raw.packed()?;
            encoder.layer_forward(&layer, &mut x, &segments, &mut ws, Some(&mut ranges));
            drop(layer);
            encoder.layers.push(raw.quantized(&ranges)?);
        }
        let bytes: usize = encoder.words.bytes()
            + encoder
                .layers
                .iter()
                .flat_map(|l| [&l.qkv, &l.attention_output, &l.intermediate, &l.output])
                .map(|linear| match &linear.weight {
                    Weight::Int8(w) => w.bytes(),
                    Weight::F32(_) => 0,
                })
                .sum::<usize>();
        tracing::info!(
            kernel = int8::Kernel::detect().name(),
            weight_limit = int8::Kernel::detect().weight_limit().min(127),
            calibration_tokens = segments.tokens(),
            mib = bytes >> 20,
            "int8 weights quantized"
        );
        Ok(encoder)
    }

    /// The encoder with its embeddings and no layers yet.
    fn load_embeddings(vb: &VarBuilder, cfg: &Config, words: Words) -> Result<Self> {
        let h = cfg.hidden_size;
        let emb = vb.pp("embeddings");
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
        Ok(Self {
            words,
            positions,
            token_type,
            embedding_norm,
            layers: Vec::with_capacity(cfg.num_hidden_layers),
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
        let (mut x, segments) = self.embed(sequences)?;
        let tokens = segments.tokens();
        let mut ws = Workspace::new(tokens, self.hidden, self.intermediate);
        for layer in &self.layers {
            self.layer_forward(layer, &mut x, &segments, &mut ws, None);
        }
        Ok(HiddenStates {
            // A copy (of a few MiB, once a pass) out of the buffer that starts a cache line.
            rows: Tensor::from_slice(&x, (tokens, self.hidden), &Device::Cpu)?,
            starts: segments.into_starts(),
        })
    }

    /// The embeddings' output for `sequences` laid end to end, and where each sequence lies.
    fn embed(&self, sequences: &[&[u32]]) -> Result<(Aligned<f32>, Segments)> {
        let ids: Vec<u32> = sequences.iter().flat_map(|s| s.iter().copied()).collect();
        let position_ids: Vec<u32> = sequences
            .iter()
            .flat_map(|s| position_ids(s, self.pad_token_id))
            .collect();
        let segments = Segments::new(sequences.iter().map(|s| s.len()))?;
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
        let h = self.hidden;
        let mut x = Aligned::new(ids.len() * h);
        let tables = (&self.positions[..], &self.token_type[..]);
        match &self.words {
            Words::F32(words) => {
                let words = f32_slice(words)?;
                let word = |id: usize, row: &mut [f32]| row.copy_from_slice(&words[id * h..][..h]);
                kernels::embed(
                    &mut x,
                    (&ids, &position_ids),
                    (&word, tables.0, tables.1),
                    &self.embedding_norm,
                );
            }
            Words::Int8 { values, scales } => {
                let word = |id: usize, row: &mut [f32]| {
                    let scale = scales[id];
                    for (v, &q) in row.iter_mut().zip(&values[id * h..][..h]) {
                        *v = f32::from(q) * scale;
                    }
                };
                kernels::embed(
                    &mut x,
                    (&ids, &position_ids),
                    (&word, tables.0, tables.1),
                    &self.embedding_norm,
                );
            }
        }
        Ok((x, segments))
    }

    /// One layer on `x`, the `(tokens, hidden)` hidden states, in place. With `ranges`, the
    /// ranges of the products' inputs are taken in.
    fn layer_forward(
        &self,
        layer: &Layer,
        x: &mut [f32],
        segments: &Segments,
        ws: &mut Workspace,
        mut ranges: Option<&mut LayerRanges>,
    ) {
        let tokens = segments.tokens();
        let (h, i) = (self.hidden, self.intermediate);
        let q = &mut ws.quantized;
        if let Some(ranges) = ranges.as_deref_mut() {
            ranges.qkv.observe(x);
        }
        let qkv = &mut ws.qkv[..tokens * 3 * h];
        layer.qkv.forward(x, tokens, qkv, q);
        // The intermediate activations are not needed before the attention is done: their
        // buffer holds the split heads meanwhile.
        let heads = &mut ws.inner[..tokens * 3 * h];
        attention::split_heads(qkv, &layer.qkv.bias, heads, self.heads);
        let context = &mut ws.context[..tokens * h];
        attention::attention(heads, context, segments, self.heads, layer.scores);

        if let Some(ranges) = ranges.as_deref_mut() {
            ranges.attention_output.observe(context);
        }
        let out = &layer.attention_output;
        let attended = &mut ws.attended[..tokens * h];
        out.forward(context, tokens, attended, q);
        kernels::bias_residual_layer_norm(attended, x, &out.bias, &layer.attention_norm);

        if let Some(ranges) = ranges.as_deref_mut() {
            ranges.intermediate.observe(attended);
        }
        let inner = &mut ws.inner[..tokens * i];
        layer.intermediate.forward(attended, tokens, inner, q);
        kernels::bias_gelu(inner, &layer.intermediate.bias);

        if let Some(ranges) = ranges {
            ranges.output.observe(inner);
        }
        // `x` is not needed any more: the layer's output goes there.
        layer.output.forward(inner, tokens, x, q);
        kernels::bias_residual_layer_norm(x, attended, &layer.output.bias, &layer.output_norm);
    }
}

/// Buffers of one forward pass, reused by every layer, each starting a cache line (as do the
/// hidden states and the quantized rows: see [`aligned`]).
struct Workspace {
    qkv: Aligned<f32>,
    context: Aligned<f32>,
    attended: Aligned<f32>,
    /// The intermediate activations, and before them the projection split into heads
    /// (`(3, heads, tokens, head_dim)`).
    inner: Aligned<f32>,
    /// The int8 products' inputs, quantized.
    quantized: QuantizedRows,
}

impl Workspace {
    fn new(tokens: usize, hidden: usize, intermediate: usize) -> Self {
        Self {
            qkv: Aligned::new(tokens * 3 * hidden),
            context: Aligned::new(tokens * hidden),
            attended: Aligned::new(tokens * hidden),
            inner: Aligned::new(tokens * intermediate.max(3 * hidden)),
            quantized: QuantizedRows::default(),
        }
    }
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
        let (vb, _) =
            crate::weights::encoder_var_builder(&files.encoder, DType::F32, &Device::Cpu).unwrap();
        (CpuEncoder::load(vb, &cfg).unwrap(), cfg)
    }

    /// The path's own checks are its own error, not a tensor library's, and say what disagreed.
    /// (The ids and positions are made from the sequences here, so they cannot disagree in
    /// number with the segments: only the tables' bounds are left to check.)
    #[test]
    fn ids_and_positions_outside_the_tables_are_the_cpu_encoders_errors() {
        let (encoder, cfg) = tiny();
        let outside = cfg.vocab_size as u32;
        let Err(error) = encoder.embed(&[&[5, outside, 6]]) else {
            panic!("an id outside the vocabulary was embedded")
        };
        assert!(
            matches!(&error, Error::CpuEncoder { message } if message.contains("outside the embedding tables")),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "cpu encoder: a token id or position is outside the embedding tables"
        );
        // One position more than the table holds (positions start after the padding id).
        let long = vec![5u32; cfg.max_position_embeddings];
        assert!(matches!(
            encoder.embed(&[&long]),
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
