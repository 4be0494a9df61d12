//! TQ1_0 and TQ2_0 (ternary, BitNet b1.58): 256-value super-blocks `x = d * t`, t in {-1, 0, 1},
//! with one f16 `d`, paired with Q8_K activations. ggml's dot product is
//! `Σ_t (t * a.q) as f32 * (d * a.d)`, so the decoded form is `q = t`, every `sc = 1`, every
//! `m = 0`, `dmin = 0` (the min term is then an exact `- 0.0`).
//!
//! TQ2_0 stores `t + 1` in two bits; TQ1_0 packs five trits per byte in base 3 as a fixed-point
//! fraction (byte `b = ceil(Σ_k (t_k + 1) 3^(4-k) * 256 / 243)`), so trit `k` is the top base-3
//! digit of `b * 3^k mod 256`: `((b * 3^k mod 256) * 3) >> 8`.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod dot_avx512;

use super::decoded::{DecodedK, Decoder};
use crate::cpu::Isa;
use crate::types::{GgmlType, QK_K};
use crate::view::blocks_of;
use bytemuck::{Pod, Zeroable};
use half::f16;

/// TQ1_0: values 0..160 are five trits of each of `qs[0..32]` (trit `k` of byte `m` is value
/// `32k + m`), values 160..240 five trits of each of `qs[32..48]` (value `160 + 16k + m`), values
/// 240..256 four trits of each of `qh` (value `240 + 4k + m`).
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
#[repr(C)]
pub struct BlockTQ1_0 {
    pub qs: [u8; 48],
    pub qh: [u8; 4],
    pub d: f16,
}

/// TQ2_0: value `128c + 32l + m` is `((qs[32c + m] >> 2l) & 3) - 1`.
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
#[repr(C)]
pub struct BlockTQ2_0 {
    pub qs: [u8; QK_K / 4],
    pub d: f16,
}

const _: () = {
    assert!(std::mem::size_of::<BlockTQ1_0>() == 54);
    assert!(std::mem::size_of::<BlockTQ2_0>() == 66);
};

const POW3: [u8; 5] = [1, 3, 9, 27, 81];

/// Trit `k` of a TQ1_0 byte, in {0, 1, 2} (the stored value plus one), as ggml computes it.
#[inline(always)]
pub(crate) fn trit(b: u8, k: usize) -> u8 {
    ((b.wrapping_mul(POW3[k]) as u16 * 3) >> 8) as u8
}

/// The family's row kernels at `isa`: at AVX-512 VNNI a fused decode-and-dot kernel for TQ2_0, for
/// decode (one token), where decoding into a buffer first costs more than the dot product.
pub(super) fn rows(
    ty: GgmlType,
    isa: Isa,
) -> Option<(crate::simd::VecDotFn, Option<crate::simd::VecDot4Fn>)> {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Vnni && ty == GgmlType::TQ2_0 {
        return Some((dot_avx512::dot_tq2_0, None));
    }
    let _ = (ty, isa);
    None
}

pub(super) fn decoder(ty: GgmlType, isa: Isa) -> Option<Decoder> {
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2 {
        return avx2::decoder(ty);
    }
    let _ = isa;
    Some(match ty {
        GgmlType::TQ1_0 => Decoder::K(decode_tq1_0),
        GgmlType::TQ2_0 => Decoder::K(decode_tq2_0),
        _ => return None,
    })
}

/// The trits of a TQ1_0 block plus one (0..=2), in value order.
fn tq1_0_trits(x: &BlockTQ1_0, t: &mut [u8; QK_K]) {
    for k in 0..5 {
        for m in 0..32 {
            t[32 * k + m] = trit(x.qs[m], k);
        }
        for m in 0..16 {
            t[160 + 16 * k + m] = trit(x.qs[32 + m], k);
        }
    }
    for k in 0..4 {
        for m in 0..4 {
            t[240 + 4 * k + m] = trit(x.qh[m], k);
        }
    }
}

/// The 2-bit fields of a TQ2_0 block (0..=3, the value plus one), in value order.
fn tq2_0_fields(x: &BlockTQ2_0, t: &mut [u8; QK_K]) {
    for c in 0..2 {
        for l in 0..4 {
            for m in 0..32 {
                t[128 * c + 32 * l + m] = (x.qs[32 * c + m] >> (2 * l)) & 3;
            }
        }
    }
}

/// The parts of a ternary decoded block that do not depend on the values.
#[inline(always)]
fn set_scales(o: &mut DecodedK, d: f16) {
    o.sc = [1; QK_K / 16];
    o.m = [0; QK_K / 16];
    o.d = d.to_f32();
    o.dmin = 0.0;
}

pub(crate) fn decode_tq1_0(row: &[u8], out: &mut [DecodedK]) {
    let mut t = [0u8; QK_K];
    for (x, o) in blocks_of::<BlockTQ1_0>(row).iter().zip(out.iter_mut()) {
        tq1_0_trits(x, &mut t);
        for (q, &t) in o.q.iter_mut().zip(&t) {
            *q = t as i8 - 1;
        }
        set_scales(o, x.d);
    }
}

pub(crate) fn decode_tq2_0(row: &[u8], out: &mut [DecodedK]) {
    let mut t = [0u8; QK_K];
    for (x, o) in blocks_of::<BlockTQ2_0>(row).iter().zip(out.iter_mut()) {
        tq2_0_fields(x, &mut t);
        for (q, &t) in o.q.iter_mut().zip(&t) {
            *q = t as i8 - 1;
        }
        set_scales(o, x.d);
    }
}

/// ggml's `dequantize_row_tq*`: `(t - 1) as f32 * d`.
pub(super) fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> bool {
    let mut t = [0u8; QK_K];
    let emit = |d: f16, t: &[u8; QK_K], y: &mut [f32]| {
        let d = d.to_f32();
        for (y, &t) in y.iter_mut().zip(t) {
            *y = (t as i8 - 1) as f32 * d;
        }
    };
    match ty {
        GgmlType::TQ1_0 => {
            for (x, y) in blocks_of::<BlockTQ1_0>(src)
                .iter()
                .zip(dst.chunks_exact_mut(QK_K))
            {
                tq1_0_trits(x, &mut t);
                emit(x.d, &t, y);
            }
        }
        GgmlType::TQ2_0 => {
            for (x, y) in blocks_of::<BlockTQ2_0>(src)
                .iter()
                .zip(dst.chunks_exact_mut(QK_K))
            {
                tq2_0_fields(x, &mut t);
                emit(x.d, &t, y);
            }
        }
        _ => return false,
    }
    true
}

/// ggml's `lroundf(x * id) + 1` for a ternary quantizer: 0, 1 or 2 for |x * id| <= 1.
#[inline]
fn ternary(x: f32, id: f32) -> u8 {
    ((x * id).round() as i32 + 1) as u8
}

/// `amax` of a block and its inverse, as ggml's ternary quantizers take them (`d = amax`).
fn amax_inverse(x: &[f32]) -> (f32, f32) {
    let d = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    (d, if d != 0.0 { 1.0 / d } else { 0.0 })
}

/// ggml's `quantize_row_tq1_0_ref` for one block of 256 values.
pub(crate) fn quantize_tq1_0(x: &[f32]) -> BlockTQ1_0 {
    let (d, id) = amax_inverse(x);
    // Base-3 digits, the first value most significant, as a ceiling fixed-point fraction.
    let digits = |vals: &mut dyn Iterator<Item = f32>| {
        vals.fold(0u8, |q, v| q.wrapping_mul(3).wrapping_add(ternary(v, id)))
    };
    let frac = |q: u8| (q as u16 * 256).div_ceil(243) as u8;
    let mut b = BlockTQ1_0 {
        qs: [0; 48],
        qh: [0; 4],
        d: f16::from_f32(d),
    };
    for m in 0..32 {
        b.qs[m] = frac(digits(&mut (0..5).map(|n| x[m + 32 * n])));
    }
    for m in 0..16 {
        b.qs[32 + m] = frac(digits(&mut (0..5).map(|n| x[160 + m + 16 * n])));
    }
    for j in 0..4 {
        // Four trits, then a zero fifth digit.
        b.qh[j] = frac(digits(&mut (0..4).map(|n| x[240 + j + 4 * n])).wrapping_mul(3));
    }
    b
}

/// ggml's `quantize_row_tq2_0_ref` for one block of 256 values.
pub(crate) fn quantize_tq2_0(x: &[f32]) -> BlockTQ2_0 {
    let (d, id) = amax_inverse(x);
    let mut b = BlockTQ2_0 {
        qs: [0; 64],
        d: f16::from_f32(d),
    };
    for c in 0..2 {
        for m in 0..32 {
            b.qs[32 * c + m] = (0..4).fold(0u8, |q, n| {
                q | (ternary(x[128 * c + 32 * n + m], id) & 3) << (2 * n)
            });
        }
    }
    b
}

#[cfg(test)]
mod tests;
