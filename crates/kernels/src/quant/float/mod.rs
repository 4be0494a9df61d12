//! F32, F16 and BF16: plain floats, dequantized by conversion and dotted in f64 as ggml's
//! reference does; quantized into by conversion (F16 rounded to nearest even, BF16 as ggml rounds).

#[cfg(target_arch = "x86_64")]
mod dot_avx2;
#[cfg(target_arch = "x86_64")]
mod dot_avx512;
#[cfg(target_arch = "x86_64")]
pub(crate) mod gemm_amx;
#[cfg(target_arch = "x86_64")]
pub(super) mod quantize_avx2;

use crate::cpu::Isa;
use crate::types::GgmlType;
use half::{bf16, f16};

/// The row kernels (one row, and four rows where there is one) of `ty` at exactly `isa`.
pub(super) fn rows(
    ty: GgmlType,
    isa: Isa,
) -> Option<(crate::simd::VecDotFn, Option<crate::simd::VecDot4Fn>)> {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => dot_avx512::rows(ty),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => dot_avx2::rows(ty),
        _ => None,
    }
}

/// Converts a row of a float type to f32; `false` if `ty` is not one.
pub(crate) fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> bool {
    match ty {
        GgmlType::F32 => f32_row(src, dst),
        GgmlType::F16 => f16_row(src, dst),
        GgmlType::BF16 => bf16_row(src, dst),
        _ => return false,
    }
    true
}

#[inline(always)]
fn f32_row(src: &[u8], dst: &mut [f32]) {
    for (d, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *d = f32::from_le_bytes(c.try_into().expect("4 bytes"));
    }
}

#[inline(always)]
fn f16_row(src: &[u8], dst: &mut [f32]) {
    for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = f16::from_le_bytes([c[0], c[1]]).to_f32();
    }
}

#[inline(always)]
fn bf16_row(src: &[u8], dst: &mut [f32]) {
    for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
        // GGML_BF16_TO_FP32: a plain shift (half's conversion would quieten NaNs).
        *d = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
    }
}

/// The reference dot product of a row of float type `ty` (products and sum in f64, ggml's
/// `ggml_float`); `None` if `ty` is not one.
pub(crate) fn vec_dot(ty: GgmlType, w: &[u8], a: &[u8]) -> Option<f32> {
    Some(match ty {
        GgmlType::F32 => vec_dot_f32(w, a),
        GgmlType::F16 => vec_dot_f16(w, a),
        GgmlType::BF16 => vec_dot_bf16(w, a),
        _ => return None,
    })
}

fn floats(b: &[u8]) -> impl Iterator<Item = f32> + '_ {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
}

/// F32 · F32, products and sum in f64 (ggml's `ggml_float`), rounded to f32 once.
pub fn vec_dot_f32(w: &[u8], a: &[u8]) -> f32 {
    floats(w)
        .zip(floats(a))
        .map(|(x, y)| x as f64 * y as f64)
        .sum::<f64>() as f32
}

/// F16 · F16, products and sum in f64.
pub fn vec_dot_f16(w: &[u8], a: &[u8]) -> f32 {
    let h = |c: &[u8]| f16::from_le_bytes([c[0], c[1]]).to_f32() as f64;
    w.chunks_exact(2)
        .zip(a.chunks_exact(2))
        .map(|(x, y)| h(x) * h(y))
        .sum::<f64>() as f32
}

/// BF16 · BF16, products and sum in f64.
pub fn vec_dot_bf16(w: &[u8], a: &[u8]) -> f32 {
    let h = |c: &[u8]| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16) as f64;
    w.chunks_exact(2)
        .zip(a.chunks_exact(2))
        .map(|(x, y)| h(x) * h(y))
        .sum::<f64>() as f32
}

/// ggml's bf16 rounding (`GGML_FP32_TO_BF16`): round to nearest even, NaN forced quiet.
pub fn f32_to_bf16(x: f32) -> bf16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return bf16::from_bits(((u >> 16) | 64) as u16);
    }
    bf16::from_bits((u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16)
}

/// Plain float rows: F32 copied, F16 rounded to nearest even (F16C and ggml's software path
/// agree), BF16 with ggml's rounding.
pub(crate) fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> bool {
    match ty {
        GgmlType::F32 => {
            for (d, x) in dst.chunks_exact_mut(4).zip(src) {
                d.copy_from_slice(&x.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (d, x) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&f16::from_f32(*x).to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for (d, x) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&f32_to_bf16(*x).to_le_bytes());
            }
        }
        _ => return false,
    }
    true
}
