//! MXFP4 (OCP microscaling FP4): 32-value blocks of E2M1 values with one shared E8M0 exponent,
//! paired with Q8_0 activations. ggml keeps the E2M1 values doubled as small integers
//! (`kvalues_mxfp4`, -12..=12) and halves the scale instead (`GGML_E8M0_TO_FP32_HALF`), so a
//! block's dot product is `(a.d * d) * Σ kv[q] * a.q`: the decoded form is `q = kv[nibble]`,
//! `d = e8m0_half(e)`, `m = 0`.
//!
//! NVFP4 (`nvfp4`: 64-value blocks, one UE4M3 scale per 16 values) scales each 16 values by
//! their own float, which the decoded form's one `d` per 32 values cannot express: it has row
//! kernels of its own instead (`dot_avx2`, `dot_avx512`), bit-identical to its reference dot
//! product.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod dot_avx2;
#[cfg(target_arch = "x86_64")]
mod dot_avx512;
pub(crate) mod nvfp4;
pub(crate) mod packed;

use super::decoded::{Decoded32, Decoder};
use crate::cpu::Isa;
use crate::types::{GgmlType, QK};
use crate::view::blocks_of;
use bytemuck::{Pod, Zeroable};

/// MXFP4: value `j` is `kv[qs[j] & 15]`, value `j + 16` is `kv[qs[j] >> 4]` (j < 16), times
/// `e8m0_half(e)`.
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
#[repr(C)]
pub struct BlockMXFP4 {
    pub e: u8,
    pub qs: [u8; QK / 2],
}

const _: () = assert!(std::mem::size_of::<BlockMXFP4>() == 17);

/// ggml's `kvalues_mxfp4`: the E2M1 values, doubled.
pub(crate) const KVALUES_MXFP4: [i8; 16] =
    [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// ggml's `ggml_e8m0_to_fp32_half`: `2^(e - 128)`, exactly (subnormal for e < 2, built from bits;
/// e = 255 gives 2^127, no NaN).
#[inline(always)]
pub(crate) fn e8m0_to_fp32_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        (e as u32 - 1) << 23
    };
    f32::from_bits(bits)
}

pub(super) fn decoder(ty: GgmlType, isa: Isa) -> Option<Decoder> {
    if ty != GgmlType::MXFP4 {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2 {
        return Some(Decoder::B32(avx2::decode_mxfp4));
    }
    let _ = isa;
    Some(Decoder::B32(decode_mxfp4))
}

pub(crate) fn decode_mxfp4(row: &[u8], out: &mut [Decoded32]) {
    for (x, o) in blocks_of::<BlockMXFP4>(row).iter().zip(out.iter_mut()) {
        for j in 0..QK / 2 {
            o.q[j] = KVALUES_MXFP4[(x.qs[j] & 0xF) as usize];
            o.q[j + QK / 2] = KVALUES_MXFP4[(x.qs[j] >> 4) as usize];
        }
        o.d = e8m0_to_fp32_half(x.e);
        o.m = 0.0;
    }
}

/// The row kernels (one row, and four rows) of `ty` at exactly `isa`: NVFP4's.
pub(super) fn rows(
    ty: GgmlType,
    isa: Isa,
) -> Option<(crate::simd::VecDotFn, Option<crate::simd::VecDot4Fn>)> {
    if ty != GgmlType::NVFP4 {
        return None;
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => Some(dot_avx512::ROWS),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Some(dot_avx2::ROWS),
        _ => None,
    }
}

/// The family's own reference dot product of `ty` (NVFP4's); `None` for MXFP4, whose reference
/// is the generic one over its decoded form.
pub(super) fn reference_dot(ty: GgmlType, w: &[u8], a: &[u8]) -> Option<f32> {
    (ty == GgmlType::NVFP4).then(|| nvfp4::vec_dot_nvfp4_q8_0(w, a))
}

/// ggml's `dequantize_row_mxfp4` (`kv as f32 * d`) and `dequantize_row_nvfp4`.
pub(super) fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> bool {
    if ty == GgmlType::NVFP4 {
        nvfp4::dequantize_row(src, dst);
        return true;
    }
    if ty != GgmlType::MXFP4 {
        return false;
    }
    for (x, y) in blocks_of::<BlockMXFP4>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK))
    {
        let d = e8m0_to_fp32_half(x.e);
        for j in 0..QK / 2 {
            y[j] = KVALUES_MXFP4[(x.qs[j] & 0xF) as usize] as f32 * d;
            y[j + QK / 2] = KVALUES_MXFP4[(x.qs[j] >> 4) as usize] as f32 * d;
        }
    }
    true
}

/// ggml's `quantize_row_mxfp4_ref` for one block of 32 values: the exponent from
/// `floor(log2(amax)) - 2`, each value the nearest table entry (the first on ties).
pub(crate) fn quantize_mxfp4(x: &[f32]) -> BlockMXFP4 {
    let amax = x
        .iter()
        .fold(0.0f32, |m, v| if m < v.abs() { v.abs() } else { m });
    let e = if amax > 0.0 {
        (amax.log2().floor() - 2.0 + 127.0) as u8
    } else {
        0
    };
    let d = e8m0_to_fp32_half(e);
    let mut b = BlockMXFP4 { e, qs: [0; QK / 2] };
    for j in 0..QK / 2 {
        b.qs[j] = best_index(x[j], d) | (best_index(x[j + QK / 2], d) << 4);
    }
    b
}

/// ggml's `best_index_mxfp4`: the table entry nearest `v` at scale `d` (the first on ties).
pub(crate) fn best_index(v: f32, d: f32) -> u8 {
    let mut best = (0u8, (KVALUES_MXFP4[0] as f32 * d - v).abs());
    for (i, &k) in KVALUES_MXFP4.iter().enumerate().skip(1) {
        let err = (k as f32 * d - v).abs();
        if err < best.1 {
            best = (i as u8, err);
        }
    }
    best.0
}

#[cfg(test)]
mod nvfp4_tests;
#[cfg(test)]
mod tests;
