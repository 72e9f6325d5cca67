//! Choosing where and in which precision the encoder runs.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use crate::{Error, Result};

/// Where to run the model: `auto`, `cpu`, `cuda` (the first GPU) or `cuda:N`.
///
/// `auto` picks the first CUDA device when the crate was built with the `cuda` feature and a
/// GPU is present, and the CPU otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The first CUDA device if this build and the machine have one, else the CPU.
    #[default]
    Auto,
    /// The CPU, in every build.
    Cpu,
    /// The CUDA device of this ordinal (`cuda` is `cuda:0`); needs the `cuda` feature.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| {
                    Error::invalid_input(
                        "device",
                        format!("{s:?} is not one of auto, cpu, cuda, cuda:N"),
                    )
                }),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// Opens the device.
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(ordinal) => open_cuda(ordinal),
            DeviceSpec::Auto
                if cfg!(feature = "cuda") && candle_core::utils::cuda_is_available() =>
            {
                open_cuda(0)
            }
            DeviceSpec::Auto => Ok(Device::Cpu),
        }
    }
}

fn open_cuda(ordinal: usize) -> Result<Device> {
    if !cfg!(feature = "cuda") {
        return Err(Error::device(
            "this build has no CUDA support; rebuild with `--features cuda`",
            None,
        ));
    }
    Device::new_cuda(ordinal).map_err(|e| {
        Error::device(
            format!("cannot open cuda:{ordinal}: {e}"),
            Some(Box::new(e)),
        )
    })
}

/// A short name for a device, as reported by the server: `cpu`, `cuda` or `cuda:N`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id: 0 } => "cuda".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// The precision of the encoder: how its weights are held and its products computed. The
/// heads, the normalisation, LayerNorm and the attention's softmax always run in f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DType {
    /// 32-bit floats: FlagEmbedding's numbers within 1e-5, the default on the CPU.
    F32,
    /// 16-bit floats (FlagEmbedding's `use_fp16`), the default on a GPU.
    F16,
    /// bfloat16.
    BF16,
    /// The encoder's linear layers in 8-bit integers, on the CPU only: weights quantized per
    /// output channel at load, activations per token at each product, sums exact in 32-bit
    /// integers; a quarter of f32's weight memory and faster products, at a small, measured
    /// cost in agreement with f32 (the README's settings give the figures).
    Int8,
}

impl DType {
    /// The name [`parse_dtype`] takes: `f32`, `f16`, `bf16` or `int8`.
    pub fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::Int8 => "int8",
        }
    }

    /// The candle dtype the weights are read in (int8 weights are read in f32 and quantized).
    pub(crate) fn candle(self) -> candle_core::DType {
        match self {
            DType::F32 | DType::Int8 => candle_core::DType::F32,
            DType::F16 => candle_core::DType::F16,
            DType::BF16 => candle_core::DType::BF16,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        parse_dtype(s)
    }
}

/// Parses a precision name: `f32`/`float32`/`fp32`, `f16`/`float16`/`fp16`, `bf16`/`bfloat16`,
/// `int8`/`i8`.
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s.trim().to_ascii_lowercase().as_str() {
        "f32" | "float32" | "fp32" => Ok(DType::F32),
        "f16" | "float16" | "fp16" | "half" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "int8" | "i8" => Ok(DType::Int8),
        _ => Err(Error::invalid_input(
            "dtype",
            format!("{s:?} is not one of f32, f16, bf16, int8"),
        )),
    }
}

/// The precision used when none is asked for: f32 on the CPU (bit-for-bit comparable with
/// FlagEmbedding's default), f16 on a GPU (FlagEmbedding's `use_fp16=True`).
pub(crate) fn default_dtype(device: &Device) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        DType::F16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("auto".parse::<DeviceSpec>().unwrap(), DeviceSpec::Auto);
        assert_eq!("CPU".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        for bad in ["", "tpu", "cuda:", "cuda:x", "cuda:-1"] {
            let err = bad.parse::<DeviceSpec>().unwrap_err();
            assert!(err.to_string().contains("`device`"), "{err}");
        }
    }

    #[test]
    fn parses_dtypes() {
        assert_eq!(parse_dtype("fp16").unwrap(), DType::F16);
        assert_eq!(parse_dtype("BF16").unwrap(), DType::BF16);
        assert_eq!(parse_dtype("float32").unwrap(), DType::F32);
        assert_eq!(parse_dtype(" INT8").unwrap(), DType::Int8);
        assert_eq!("i8".parse::<DType>().unwrap(), DType::Int8);
        for dtype in [DType::F32, DType::F16, DType::BF16, DType::Int8] {
            assert_eq!(parse_dtype(dtype.as_str()).unwrap(), dtype);
            assert_eq!(dtype.to_string(), dtype.as_str());
        }
        assert!(parse_dtype("int4")
            .unwrap_err()
            .to_string()
            .contains("`dtype`"));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_a_clear_error() {
        let err = DeviceSpec::Cuda(0).open().unwrap_err();
        assert!(err.to_string().contains("--features cuda"), "{err}");
        assert!(DeviceSpec::Auto.open().unwrap().is_cpu());
    }
}
