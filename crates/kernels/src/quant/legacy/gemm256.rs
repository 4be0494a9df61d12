//! AVX2 GEMM tiles of this family's packed layouts (`packed`): one half (8 rows) of a group of
//! 16 weight rows times a tile of tokens, on the same records as the AVX-512 tiles; every output
//! lane bit-identical to the family's reference dot product.

#![allow(clippy::too_many_arguments)]
use super::gemm512::{Q4_0, Q8_0};
use crate::blocks::*;
use crate::packed::gemm256::*;
use std::arch::x86_64::*;
use std::mem::size_of;

/// Offset of the scales in a record of `KIND`.
const fn d_offset(kind: u8) -> usize {
    match kind {
        Q8_0 => 512,
        Q4_0 => 256,
        _ => 320,
    }
}

/// `out[t]` (8 lanes under `mask`, rows of half `h`) for the tokens of one tile of 32-value blocks.
///
/// # Safety: `w` points to `nb` records of `KIND` (`stride` bytes apart); each `a[t]` to `nb`
/// Q8_0 blocks (quants in `-127..=127`) and `aux[t]` to its `2 nb` aux values; each `out[t]` to
/// 8 writable f32 under `mask`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn tile_q32<const KIND: u8, const T: usize>(
    nb: usize,
    stride: usize,
    w: *const u8,
    h: usize,
    a: [*const u8; T],
    aux: [*const i32; T],
    out: [*mut f32; T],
    mask: __m256i,
) {
    let m4 = _mm256_set1_epi8(0x0F);
    let m10 = _mm256_set1_epi8(0x10);
    let m80 = _mm256_set1_epi8(-128);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); T];
    for b in 0..nb {
        // SAFETY: (all reads) record b of `w`, block b of each `a[t]`, entries b and nb + b of
        // each `aux[t]`, all inside what the caller guarantees.
        unsafe {
            let rec = w.add(b * stride);
            let y: [*const u8; T] =
                std::array::from_fn(|t| a[t].add(b * size_of::<BlockQ8_0>() + 2));
            let mut p = [_mm256_setzero_si256(); T];
            match KIND {
                Q8_0 => {
                    for g in 0..8 {
                        let x = _mm256_xor_si256(load(rec.add(64 * g + 32 * h)), m80);
                        let ax = _mm256_abs_epi8(x);
                        for t in 0..T {
                            let s = _mm256_sign_epi8(bcst(y[t].add(4 * g)), x);
                            let p16 = _mm256_maddubs_epi16(ax, s);
                            p[t] = _mm256_add_epi32(p[t], _mm256_madd_epi16(p16, ones));
                        }
                    }
                }
                Q4_0 => {
                    let mut s16 = [_mm256_setzero_si256(); T];
                    for v in 0..4 {
                        let raw = load(rec.add(64 * v + 32 * h));
                        let lo = _mm256_and_si256(raw, m4);
                        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), m4);
                        for t in 0..T {
                            let l = _mm256_maddubs_epi16(lo, bcst(y[t].add(4 * v)));
                            let u = _mm256_maddubs_epi16(hi, bcst(y[t].add(16 + 4 * v)));
                            s16[t] = _mm256_add_epi16(s16[t], _mm256_add_epi16(l, u));
                        }
                    }
                    for t in 0..T {
                        p[t] = _mm256_madd_epi16(s16[t], ones);
                    }
                }
                _ => {
                    let hv = load(rec.add(256 + 32 * h));
                    let mut s16 = [[_mm256_setzero_si256(); T]; 2];
                    for v in 0..4 {
                        let raw = load(rec.add(64 * v + 32 * h));
                        let (lo, hi) = q5_0_quants(raw, hv, v, m4, m10);
                        for t in 0..T {
                            let l = _mm256_maddubs_epi16(lo, bcst(y[t].add(4 * v)));
                            let u = _mm256_maddubs_epi16(hi, bcst(y[t].add(16 + 4 * v)));
                            s16[0][t] = _mm256_add_epi16(s16[0][t], l);
                            s16[1][t] = _mm256_add_epi16(s16[1][t], u);
                        }
                    }
                    for t in 0..T {
                        p[t] = _mm256_add_epi32(
                            _mm256_madd_epi16(s16[0][t], ones),
                            _mm256_madd_epi16(s16[1][t], ones),
                        );
                    }
                }
            }
            let dw = f16x8(rec.add(d_offset(KIND) + 16 * h));
            for t in 0..T {
                if KIND != Q8_0 {
                    // -offset · Σy, so that Σ (u - offset) y comes out exact.
                    let neg = aux[t].add(b).read();
                    let off = if KIND == Q4_0 { neg << 3 } else { neg << 4 };
                    p[t] = _mm256_add_epi32(p[t], _mm256_set1_epi32(off));
                }
                let dy = _mm256_set1_ps(f32::from_bits(aux[t].add(nb + b).read() as u32));
                // sum += isum · d_w · d_a
                let f = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(p[t]), dw), dy);
                acc[t] = _mm256_add_ps(acc[t], f);
            }
        }
    }
    for t in 0..T {
        // SAFETY: guaranteed by the caller.
        unsafe { store(out[t], mask, acc[t]) };
    }
}

/// Like [`tile_q32`] for Q5_1 records (Q5_0's nibbles and fifth bits of the unsigned quants,
/// then 16 `d` and 16 `m`) and Q8_1 activations (`aux[t]`: `nb` values `d`, then `nb` values `s`,
/// as f32 bits): per block `(d · a.d) · isum + m · a.s`, as `dot_scalar::vec_dot_q5_1_q8_1`.
/// Quants `0..=31` as Q5_0's: four registers per i16 sum, two sums.
///
/// # Safety: as for [`tile_q32`], with Q8_1 blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn tile_q5_1<const T: usize>(
    nb: usize,
    stride: usize,
    w: *const u8,
    h: usize,
    a: [*const u8; T],
    aux: [*const i32; T],
    out: [*mut f32; T],
    mask: __m256i,
) {
    let m4 = _mm256_set1_epi8(0x0F);
    let m10 = _mm256_set1_epi8(0x10);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); T];
    for b in 0..nb {
        // SAFETY: (all reads) record b of `w`, block b of each `a[t]`, entries b and nb + b of
        // each `aux[t]`, all inside what the caller guarantees.
        unsafe {
            let rec = w.add(b * stride);
            let y: [*const u8; T] =
                std::array::from_fn(|t| a[t].add(b * size_of::<crate::blocks::BlockQ8_1>() + 4));
            let hv = load(rec.add(256 + 32 * h));
            let mut s16 = [[_mm256_setzero_si256(); T]; 2];
            for v in 0..4 {
                let raw = load(rec.add(64 * v + 32 * h));
                let (lo, hi) = q5_0_quants(raw, hv, v, m4, m10);
                for t in 0..T {
                    let l = _mm256_maddubs_epi16(lo, bcst(y[t].add(4 * v)));
                    let u = _mm256_maddubs_epi16(hi, bcst(y[t].add(16 + 4 * v)));
                    s16[0][t] = _mm256_add_epi16(s16[0][t], l);
                    s16[1][t] = _mm256_add_epi16(s16[1][t], u);
                }
            }
            let dw = f16x8(rec.add(320 + 16 * h));
            let mw = f16x8(rec.add(352 + 16 * h));
            for t in 0..T {
                let p = _mm256_add_epi32(
                    _mm256_madd_epi16(s16[0][t], ones),
                    _mm256_madd_epi16(s16[1][t], ones),
                );
                let dy = _mm256_set1_ps(f32::from_bits(aux[t].add(b).read() as u32));
                let sy = _mm256_set1_ps(f32::from_bits(aux[t].add(nb + b).read() as u32));
                // sum += (d·dy)·isum + m·sy
                let f = _mm256_mul_ps(_mm256_mul_ps(dw, dy), _mm256_cvtepi32_ps(p));
                acc[t] = _mm256_add_ps(acc[t], _mm256_add_ps(f, _mm256_mul_ps(mw, sy)));
            }
        }
    }
    for t in 0..T {
        // SAFETY: guaranteed by the caller.
        unsafe { store(out[t], mask, acc[t]) };
    }
}
