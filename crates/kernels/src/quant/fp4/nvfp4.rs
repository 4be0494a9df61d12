//! NVFP4: 64-value blocks of E2M1 values in four 16-value sub-blocks, each with its own unsigned
//! E4M3 (UE4M3) scale, paired with Q8_0 activations (one NVFP4 block against two Q8_0 blocks).
//!
//! Like MXFP4, ggml keeps the E2M1 values doubled (`kvalues_mxfp4`) and halves the scale
//! (`ggml_ue4m3_to_fp32` includes the 1/2). ggml's dot product (`ggml_vec_dot_nvfp4_q8_0_generic`)
//! computes, per sub-block `s` of block `i`, the exact integer sum `Σ kv[q] * a.qs` of its 16
//! values and then the term `(dy * d) * sum` (`dy` the activation block's f16 scale, `d` the
//! sub-block's scale: two roundings, no fused multiply-add). ggml adds the terms one after the
//! other; here, and in every SIMD kernel, they go to sixteen running sums (sub-block `s` of block
//! `i` to sum `4 * s + i % 4`), folded at the end by [`fold16`]: the same terms, added in an order
//! that SIMD registers can follow.

use super::KVALUES_MXFP4;
use crate::blocks::BlockQ8_0;
use crate::view::blocks_of;
use bytemuck::{Pod, Zeroable};

/// Values per NVFP4 block.
pub(crate) const QK_NVFP4: usize = 64;
/// Values per sub-block (one scale each).
pub(crate) const QK_NVFP4_SUB: usize = 16;

/// NVFP4: sub-block `s` (values `16 s .. 16 s + 16`) has scale `d[s]`; byte `qs[8 s + j]` holds
/// value `16 s + j` in its low nibble and `16 s + j + 8` in its high nibble (`j < 8`).
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
#[repr(C)]
pub struct BlockNVFP4 {
    pub d: [u8; QK_NVFP4 / QK_NVFP4_SUB],
    pub qs: [u8; QK_NVFP4 / 2],
}

const _: () = assert!(std::mem::size_of::<BlockNVFP4>() == 36);

/// ggml's `ggml_ue4m3_to_fp32`: the UE4M3 byte (exponent bits 6..3, bias 7; mantissa bits 2..0;
/// bit 7 ignored) times 1/2, exactly; 0 and 0x7F (NaN in E4M3) give 0.
pub(crate) fn ue4m3_to_fp32(x: u8) -> f32 {
    if x == 0 || x == 0x7F {
        return 0.0;
    }
    let exp = ((x >> 3) & 0xF) as i32;
    let man = (x & 7) as f32;
    let raw = if exp == 0 {
        man * 2f32.powi(-9)
    } else {
        (1.0 + man / 8.0) * 2f32.powi(exp - 7)
    };
    raw * 0.5
}

/// ggml's `ggml_fp32_to_ue4m3`: the nearest UE4M3 byte (mantissa rounded half up on its fourth
/// bit), clamped to 448; 0 for values that are not positive (NaN included).
pub(crate) fn fp32_to_ue4m3(x: f32) -> u8 {
    if x.is_nan() || x <= 0.0 {
        return 0;
    }
    let x = if x > 448.0 { 448.0 } else { x };
    let bits = x.to_bits();
    let fp32_exp = ((bits >> 23) & 0xFF) as i32 - 127;
    let fp32_man = ((bits >> 20) & 7) as i32;
    let mut exp = fp32_exp + 7;
    if exp <= 0 {
        // Subnormal: man * 2^-9, man = round(x * 2^9) (C's truncating cast of x * 512 + 0.5).
        let man = ((x * 512.0 + 0.5) as i32).min(7);
        return if man < 1 { 0 } else { man as u8 };
    }
    if exp >= 15 {
        return 0x7E;
    }
    let mut man = fp32_man + ((bits >> 19) & 1) as i32;
    if man > 7 {
        man = 0;
        exp += 1;
        if exp >= 15 {
            return 0x7E;
        }
    }
    ((exp << 3) | man) as u8
}

/// The value of nibble `q`: ggml's doubled E2M1.
#[inline(always)]
fn kv(q: u8) -> i32 {
    KVALUES_MXFP4[(q & 0xF) as usize] as i32
}

/// ggml's `dequantize_row_nvfp4`: `kv as f32 * d` per sub-block.
pub(crate) fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    for (x, y) in blocks_of::<BlockNVFP4>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK_NVFP4))
    {
        for (s, y) in y.chunks_exact_mut(QK_NVFP4_SUB).enumerate() {
            let d = ue4m3_to_fp32(x.d[s]);
            for j in 0..QK_NVFP4_SUB / 2 {
                let q = x.qs[s * QK_NVFP4_SUB / 2 + j];
                y[j] = kv(q) as f32 * d;
                y[j + QK_NVFP4_SUB / 2] = kv(q >> 4) as f32 * d;
            }
        }
    }
}

/// The exact integer sum of sub-block `s` of `x` against its 16 activations (ggml's
/// `sumi_lo + sumi_hi`).
#[inline]
pub(crate) fn sub_block_sum(x: &BlockNVFP4, s: usize, y: &BlockQ8_0) -> i32 {
    let off = (s % 2) * QK_NVFP4_SUB;
    let (mut lo, mut hi) = (0i32, 0i32);
    for j in 0..QK_NVFP4_SUB / 2 {
        let q = x.qs[s * QK_NVFP4_SUB / 2 + j];
        lo += y.qs[off + j] as i32 * kv(q);
        hi += y.qs[off + j + QK_NVFP4_SUB / 2] as i32 * kv(q >> 4);
    }
    lo + hi
}

/// ggml's term of sub-block `s` of `x`: `dy * d * sum`, evaluated left to right.
#[inline]
pub(crate) fn sub_block_term(x: &BlockNVFP4, s: usize, y: &[BlockQ8_0]) -> f32 {
    let ya = &y[s / 2];
    let d = ue4m3_to_fp32(x.d[s]);
    ya.d.to_f32() * d * sub_block_sum(x, s, ya) as f32
}

/// Folds the sixteen running sums like the SIMD kernels fold their registers: halves added
/// lane by lane (`l + 8`, then `l + 4`, then `l + 2`), then the last two.
pub(crate) fn fold16(acc: [f32; 16]) -> f32 {
    let h: [f32; 8] = std::array::from_fn(|l| acc[l] + acc[l + 8]);
    let q: [f32; 4] = std::array::from_fn(|l| h[l] + h[l + 4]);
    let p: [f32; 2] = std::array::from_fn(|l| q[l] + q[l + 2]);
    p[0] + p[1]
}

/// The reference dot product of an NVFP4 row with its Q8_0 activations: ggml's terms (exact
/// integer sums, then `dy * d * sum`), sub-block `s` of block `i` added to running sum
/// `4 * s + i % 4`, folded by [`fold16`]. Every SIMD kernel of NVFP4 equals it bit for bit.
pub fn vec_dot_nvfp4_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let (x, y) = (blocks_of::<BlockNVFP4>(w), blocks_of::<BlockQ8_0>(a));
    let mut acc = [0.0f32; 16];
    for (i, (x, y)) in x.iter().zip(y.chunks_exact(2)).enumerate() {
        for s in 0..4 {
            acc[4 * s + i % 4] += sub_block_term(x, s, y);
        }
    }
    fold16(acc)
}

/// ggml's `quantize_row_nvfp4_ref` for one block of 64 values: per sub-block, the scale
/// `ue4m3(amax / 6)` and each value the nearest table entry at that scale (the first on ties).
pub(crate) fn quantize_nvfp4(x: &[f32]) -> BlockNVFP4 {
    let mut b = BlockNVFP4 {
        d: [0; 4],
        qs: [0; 32],
    };
    for (s, xb) in x.chunks_exact(QK_NVFP4_SUB).enumerate() {
        let amax = xb
            .iter()
            .fold(0.0f32, |m, v| if m < v.abs() { v.abs() } else { m });
        let ue = fp32_to_ue4m3(amax / 6.0);
        b.d[s] = ue;
        let d = ue4m3_to_fp32(ue);
        for j in 0..QK_NVFP4_SUB / 2 {
            let lo = super::best_index(xb[j], d);
            let hi = super::best_index(xb[j + QK_NVFP4_SUB / 2], d);
            b.qs[s * QK_NVFP4_SUB / 2 + j] = lo | (hi << 4);
        }
    }
    b
}
