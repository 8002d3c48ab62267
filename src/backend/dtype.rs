//! Storage types of tensors (issue #13 item 1). Arithmetic is always f32; a tensor's dtype says how its
//! elements are stored. bf16 keeps f32's 8-bit exponent and 7 of its 23 mantissa bits, so it needs no
//! loss scaling; storing rounds to nearest, ties to even (IEEE's default, what `cvt.rn.bf16.f32` and
//! `kernels/storage.cuh` do), and loading is exact.
//!
//! The CPU backend's bf16 mode stores bf16 the same way and rounds at the same points as the kernels
//! (each op's outputs, once), so the emulator's differential tests compare like with like.

use crate::error::{Error, Result};
use half::bf16;

/// How a tensor's elements are stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    #[default]
    F32,
    Bf16,
}

impl Dtype {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::Bf16 => 2,
        }
    }

    /// `f32` or `bf16`, as in configs, flags and kernel names.
    pub const fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The `precision` setting of training, evaluation, search and benchmarks (`train.precision`,
/// `--precision`): `auto` is bf16 on a GPU of compute capability 8.0 or newer (Ampere, Hopper: bf16 tensor
/// cores) and fp32 elsewhere (older GPUs, and the CPU, whose bf16 mode is a reference, not a fast path).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Auto,
    #[serde(alias = "f32")]
    Fp32,
    Bf16,
}

impl Precision {
    /// The storage type on a device of `compute_capability` (`None`: not a GPU).
    pub fn resolve(self, compute_capability: Option<(i32, i32)>) -> Dtype {
        match self {
            Precision::Fp32 => Dtype::F32,
            Precision::Bf16 => Dtype::Bf16,
            Precision::Auto => match compute_capability {
                Some(cc) if cc >= (8, 0) => Dtype::Bf16,
                _ => Dtype::F32,
            },
        }
    }

    /// Parses a `--precision` value; the error names the accepted values.
    pub fn parse(s: &str) -> std::result::Result<Precision, String> {
        match s {
            "auto" => Ok(Precision::Auto),
            "fp32" | "f32" => Ok(Precision::Fp32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(format!("unknown precision '{other}': use auto, fp32 or bf16")),
        }
    }
}

/// `x` rounded to the nearest bf16 (ties to even; NaN stays NaN, overflow goes to infinity), as f32.
pub fn round_bf16(x: f32) -> f32 {
    bf16::from_f32(x).to_f32()
}

/// Rounds every element of `v` to bf16 in place (the CPU bf16 mode's storage point).
pub fn round_slice_bf16(v: &mut [f32]) {
    for x in v {
        *x = round_bf16(*x);
    }
}

/// The bytes of `values` stored as `dtype` (little endian, as on every CUDA device and x86/ARM host).
pub fn encode(values: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F32 => bytemuck::cast_slice(values).to_vec(),
        Dtype::Bf16 => values.iter().flat_map(|&x| bf16::from_f32(x).to_bits().to_le_bytes()).collect(),
    }
}

/// The f32 values of `bytes` stored as `dtype`; errors when the length is not a whole number of elements.
pub fn decode(bytes: &[u8], dtype: Dtype) -> Result<Vec<f32>> {
    if bytes.len() % dtype.size() != 0 {
        return Err(Error::shape(
            "decode",
            format!("a multiple of {} bytes ({dtype})", dtype.size()),
            format!("{} bytes", bytes.len()),
        ));
    }
    Ok(match dtype {
        Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::Bf16 => {
            bytes.chunks_exact(2).map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()).collect()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest_even() {
        // 1 + 2^-8 is exactly halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0)
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0), 1.0);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties go to 1 + 2^-6 (even)
        assert_eq!(round_bf16(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
        // just above the halfway point rounds up
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0 + 1.0 / 65536.0), 1.0 + 1.0 / 128.0);
        assert!(round_bf16(f32::NAN).is_nan());
        assert_eq!(round_bf16(f32::MAX), f32::INFINITY);
        assert_eq!(round_bf16(-0.0).to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn auto_precision_is_bf16_from_ampere_on_gpus_only() {
        assert_eq!(Precision::Auto.resolve(Some((9, 0))), Dtype::Bf16);
        assert_eq!(Precision::Auto.resolve(Some((8, 0))), Dtype::Bf16);
        assert_eq!(Precision::Auto.resolve(Some((7, 5))), Dtype::F32);
        assert_eq!(Precision::Auto.resolve(None), Dtype::F32);
        assert_eq!(Precision::Bf16.resolve(None), Dtype::Bf16, "an explicit bf16 runs the CPU bf16 mode");
        assert_eq!(Precision::Fp32.resolve(Some((9, 0))), Dtype::F32);
        assert_eq!(Precision::parse("f32"), Ok(Precision::Fp32));
        assert!(Precision::parse("fp16").unwrap_err().contains("auto, fp32 or bf16"));
    }

    #[test]
    fn encode_decode_round_trip() {
        let v = [0.0, -1.5, 3.140625, 1e-40, 65280.0];
        for dtype in [Dtype::F32, Dtype::Bf16] {
            let bytes = encode(&v, dtype);
            assert_eq!(bytes.len(), v.len() * dtype.size());
            // every value above is exactly representable in bf16 (1e-40 is a bf16 subnormal after rounding)
            let back = decode(&bytes, dtype).unwrap();
            let want: Vec<f32> = v.iter().map(|&x| if dtype == Dtype::Bf16 { round_bf16(x) } else { x }).collect();
            assert_eq!(back, want);
        }
        assert!(decode(&[0u8; 3], Dtype::Bf16).is_err());
    }
}
