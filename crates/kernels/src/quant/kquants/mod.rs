//! Q2_K, Q3_K and Q5_K: 256-value super-blocks whose ggml dot products with Q8_K activations are
//! `(d * a.d) * Σ_s sc[s] * Σ q * a - (dmin * a.d) * Σ_s m[s] * a.bsums[s]`, so they decode into
//! [`DecodedK`] with the block's own small integers (`blocks` and `dequant` hold every k-quant's
//! layout and dequantization, Q4_K, Q6_K and the Q8_K activations included).
//!
//! - Q2_K: `q` in 0..4, 4-bit scale and 4-bit min per 16 values.
//! - Q3_K: `q` in -4..4 (two low bits minus 4 unless the `hmask` bit is set), signed 6-bit scale
//!   per 16 values, no min (`m = 0`, `dmin = 0`).
//! - Q5_K: `q` in 0..32, 6-bit scale and min per 32 values (repeated for both runs of 16).

#[cfg(target_arch = "x86_64")]
mod avx2;
pub(crate) mod blocks;
mod dequant;
#[cfg(target_arch = "x86_64")]
mod dot_avx2;
#[cfg(target_arch = "x86_64")]
mod dot_avx512;
#[cfg(target_arch = "x86_64")]
mod gemm256;
#[cfg(target_arch = "x86_64")]
mod gemm512;
pub(crate) mod packed;
pub(crate) mod quantize;
#[cfg(target_arch = "x86_64")]
pub(super) mod quantize_avx2;
pub(crate) mod reference;

pub(crate) use dequant::{dequantize_row, q3k_scales, scale_min_k4};

use super::decoded::{DecodedK, Decoder};
use crate::cpu::Isa;
use crate::types::GgmlType;
use crate::view::blocks_of;
use blocks::{BlockQ2K, BlockQ3K, BlockQ5K};

/// The AVX2 decoders serve `Isa::Avx512Vnni` too: decoding is bound by storing the 384-byte
/// decoded blocks, and a 512-bit variant (`vpsrlvw` on broadcast bytes, mask registers for the
/// high bits) measured no faster on Zen 4.
pub(super) fn decoder(ty: GgmlType, isa: Isa) -> Option<Decoder> {
    let f: fn(&[u8], &mut [DecodedK]) = match (ty, isa) {
        (GgmlType::Q2_K, Isa::Scalar) => decode_q2_k,
        (GgmlType::Q3_K, Isa::Scalar) => decode_q3_k,
        (GgmlType::Q5_K, Isa::Scalar) => decode_q5_k,
        #[cfg(target_arch = "x86_64")]
        (GgmlType::Q2_K, _) => avx2::decode_q2_k,
        #[cfg(target_arch = "x86_64")]
        (GgmlType::Q3_K, _) => avx2::decode_q3_k,
        #[cfg(target_arch = "x86_64")]
        (GgmlType::Q5_K, _) => avx2::decode_q5_k,
        #[cfg(not(target_arch = "x86_64"))]
        (GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q5_K, _) => return decoder(ty, Isa::Scalar),
        _ => return None,
    };
    Some(Decoder::K(f))
}

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

/// Q2_K: byte `k` of each 32-byte half of `qs` holds values `k`, `k + 32`, `k + 64`, `k + 96` of
/// that half in its bit pairs 0, 2, 4, 6; `scales[s]` is scale (low nibble) and min (high) of run `s`.
pub(crate) fn decode_q2_k(row: &[u8], out: &mut [DecodedK]) {
    for (x, o) in blocks_of::<BlockQ2K>(row).iter().zip(out.iter_mut()) {
        for half in 0..2 {
            let q = &x.qs[32 * half..32 * half + 32];
            for s in 0..4 {
                for k in 0..32 {
                    o.q[128 * half + 32 * s + k] = ((q[k] >> (2 * s)) & 3) as i8;
                }
            }
        }
        for s in 0..16 {
            o.sc[s] = (x.scales[s] & 0xF) as i16;
            o.m[s] = (x.scales[s] >> 4) as i16;
        }
        o.d = x.d.to_f32();
        o.dmin = x.dmin.to_f32();
    }
}

/// Q3_K: the Q2_K bit pairs, minus 4 where bit `4 * half + s` of `hmask[k]` is clear.
pub(crate) fn decode_q3_k(row: &[u8], out: &mut [DecodedK]) {
    for (x, o) in blocks_of::<BlockQ3K>(row).iter().zip(out.iter_mut()) {
        for half in 0..2 {
            let q = &x.qs[32 * half..32 * half + 32];
            for s in 0..4 {
                let bit = 1u8 << (4 * half + s);
                for k in 0..32 {
                    let lo = ((q[k] >> (2 * s)) & 3) as i8;
                    let hi = if x.hmask[k] & bit != 0 { 0 } else { 4 };
                    o.q[128 * half + 32 * s + k] = lo - hi;
                }
            }
        }
        let sc = q3k_scales(&x.scales);
        for s in 0..16 {
            o.sc[s] = sc[s] as i16;
        }
        o.m = [0; 16];
        o.d = x.d.to_f32();
        o.dmin = 0.0;
    }
}

/// Q5_K: 64-value chunk `j` takes the low nibbles of `qs[32j..32j + 32]` then the high ones, plus
/// 16 where bit `2j` (first 32) or `2j + 1` (second 32) of `qh[k]` is set.
pub(crate) fn decode_q5_k(row: &[u8], out: &mut [DecodedK]) {
    for (x, o) in blocks_of::<BlockQ5K>(row).iter().zip(out.iter_mut()) {
        for j in 0..4 {
            let ql = &x.qs[32 * j..32 * j + 32];
            let (u1, u2) = (1u8 << (2 * j), 2u8 << (2 * j));
            for k in 0..32 {
                let h1 = if x.qh[k] & u1 != 0 { 16 } else { 0 };
                let h2 = if x.qh[k] & u2 != 0 { 16 } else { 0 };
                o.q[64 * j + k] = ((ql[k] & 0xF) + h1) as i8;
                o.q[64 * j + 32 + k] = ((ql[k] >> 4) + h2) as i8;
            }
        }
        for sub in 0..8 {
            let (sc, m) = scale_min_k4(sub, &x.scales);
            o.sc[2 * sub..2 * sub + 2].fill(sc as i16);
            o.m[2 * sub..2 * sub + 2].fill(m as i16);
        }
        o.d = x.d.to_f32();
        o.dmin = x.dmin.to_f32();
    }
}

#[cfg(test)]
mod tests;
