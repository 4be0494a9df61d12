//! AVX2 GEMM tiles of this family's packed layouts (`packed`): one half (8 rows) of a group of
//! 16 weight rows times a tile of tokens, on the same records as the AVX-512 tiles; every output
//! lane bit-identical to the family's reference dot product.

#![allow(clippy::too_many_arguments)]
use super::packed::{q4k, q6k};
use crate::blocks::*;
use crate::packed::gemm256::*;
use std::arch::x86_64::*;
use std::mem::size_of;

/// The tile of Q4_K records, or (`FIFTH`) Q5_K records (Q4_K's, plus a fifth-bit vector per
/// sub-block), against Q8_K activations (`aux[t]` pointing to `AUX_K nb`
/// values), as `dot_scalar::vec_dot_q4_k_q8_k` / `vec_dot_q5_k_q8_k`. Q4_K's quants (`0..=15`)
/// let a sub-block's low and high nibbles sum in one i16 sum (at most 30720); Q5_K's (`0..=31`)
/// need two (four registers each, at most 31744).
///
/// # Safety: as for `crate::packed::gemm256::Tile`, with Q8_K activations.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn tile_q4k<const FIFTH: bool, const T: usize>(
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
    let mut acc = [_mm256_setzero_ps(); T];
    for b in 0..nb {
        // SAFETY: (all reads) record b of `w`, block b of each `a[t]` and of each `aux[t]`.
        unsafe {
            let rec = w.add(b * stride);
            let blk: [*const u8; T] = std::array::from_fn(|t| a[t].add(b * size_of::<BlockQ8K>()));
            let mut isum = [_mm256_setzero_si256(); T];
            for s in 0..8 {
                let hv = if FIFTH {
                    load(rec.add(q4k::fifth_bits(s) + 32 * h))
                } else {
                    _mm256_setzero_si256()
                };
                let mut s16 = [[_mm256_setzero_si256(); T]; 2];
                for v in 0..4 {
                    let raw = load(rec.add(q4k::nibbles(FIFTH, s) + 64 * v + 32 * h));
                    let (lo, hi) = if FIFTH {
                        q5_0_quants(raw, hv, v, m4, m10)
                    } else {
                        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), m4);
                        (_mm256_and_si256(raw, m4), hi)
                    };
                    for t in 0..T {
                        let y = blk[t].add(4 + 32 * s);
                        let l = _mm256_maddubs_epi16(lo, bcst(y.add(4 * v)));
                        let u = _mm256_maddubs_epi16(hi, bcst(y.add(16 + 4 * v)));
                        if FIFTH {
                            s16[0][t] = _mm256_add_epi16(s16[0][t], l);
                            s16[1][t] = _mm256_add_epi16(s16[1][t], u);
                        } else {
                            s16[0][t] = _mm256_add_epi16(s16[0][t], _mm256_add_epi16(l, u));
                        }
                    }
                }
                let sc = scale_pairs::<false>(rec.add(q4k::scales(FIFTH, s) + 8 * h));
                for t in 0..T {
                    let mut p = _mm256_madd_epi16(s16[0][t], sc);
                    if FIFTH {
                        p = _mm256_add_epi32(p, _mm256_madd_epi16(s16[1][t], sc));
                    }
                    isum[t] = _mm256_add_epi32(isum[t], p);
                }
            }
            let mut mins = [_mm256_setzero_si256(); 4];
            for (q, m) in mins.iter_mut().enumerate() {
                *m = _mm256_cvtepu8_epi16(_mm_loadu_si128(
                    rec.add(q4k::mins(FIFTH, q) + 16 * h).cast(),
                ));
            }
            let dw = f16x8(rec.add(q4k::d(FIFTH) + 16 * h));
            let dmw = f16x8(rec.add(q4k::d(FIFTH) + 32 + 16 * h));
            for t in 0..T {
                let bs = aux[t].add(AUX_K * b + 16).cast::<u8>();
                let mut msum = _mm256_setzero_si256();
                for (q, m) in mins.iter().enumerate() {
                    msum = _mm256_add_epi32(msum, _mm256_madd_epi16(*m, bcst(bs.add(4 * q))));
                }
                let dy = _mm256_set1_ps(blk[t].cast::<f32>().read_unaligned());
                // sum += d·dy·isum - dmin·dy·msum
                let f = _mm256_sub_ps(
                    _mm256_mul_ps(_mm256_mul_ps(dw, dy), _mm256_cvtepi32_ps(isum[t])),
                    _mm256_mul_ps(_mm256_mul_ps(dmw, dy), _mm256_cvtepi32_ps(msum)),
                );
                acc[t] = _mm256_add_ps(acc[t], f);
            }
        }
    }
    for t in 0..T {
        // SAFETY: guaranteed by the caller.
        unsafe { store(out[t], mask, acc[t]) };
    }
}

/// Like [`tile_q4k`] for Q6_K records.
///
/// # Safety: as for [`tile_q4k`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn tile_q6k<const T: usize>(
    nb: usize,
    stride: usize,
    w: *const u8,
    h: usize,
    a: [*const u8; T],
    _aux: [*const i32; T],
    out: [*mut f32; T],
    mask: __m256i,
) {
    let m4 = _mm256_set1_epi8(0x0F);
    let m30 = _mm256_set1_epi8(0x30);
    let mut acc = [_mm256_setzero_ps(); T];
    for b in 0..nb {
        // SAFETY: (all reads) record b of `w`, block b of each `a[t]`.
        unsafe {
            let rec = w.add(b * stride);
            let blk: [*const u8; T] = std::array::from_fn(|t| a[t].add(b * size_of::<BlockQ8K>()));
            let mut isum = [_mm256_setzero_si256(); T];
            for c in 0..8 {
                let raw: [__m256i; 4] =
                    std::array::from_fn(|m| load(rec.add(q6k::nibbles(c) + 64 * m + 32 * h)));
                for hh in 0..2 {
                    // Sub-block 2c + hh: values 32c + 16hh + 4m + j.
                    let hv = load(rec.add(q6k::high(c, hh) + 32 * h));
                    let top = [
                        _mm256_slli_epi16::<4>(hv),
                        _mm256_slli_epi16::<2>(hv),
                        hv,
                        _mm256_srli_epi16::<2>(hv),
                    ];
                    let mut x = [_mm256_setzero_si256(); 4];
                    for m in 0..4 {
                        let nib = if hh == 0 {
                            _mm256_and_si256(raw[m], m4)
                        } else {
                            _mm256_and_si256(_mm256_srli_epi16::<4>(raw[m]), m4)
                        };
                        x[m] = _mm256_or_si256(nib, _mm256_and_si256(top[m], m30));
                    }
                    let k = 2 * c + hh;
                    let sc = scale_pairs::<true>(rec.add(q6k::scales(k) + 8 * h));
                    for t in 0..T {
                        let y = blk[t].add(4 + 16 * k);
                        let p0 = _mm256_add_epi16(
                            _mm256_maddubs_epi16(x[0], bcst(y)),
                            _mm256_maddubs_epi16(x[1], bcst(y.add(4))),
                        );
                        let p1 = _mm256_add_epi16(
                            _mm256_maddubs_epi16(x[2], bcst(y.add(8))),
                            _mm256_maddubs_epi16(x[3], bcst(y.add(12))),
                        );
                        let p =
                            _mm256_add_epi32(_mm256_madd_epi16(p0, sc), _mm256_madd_epi16(p1, sc));
                        isum[t] = _mm256_add_epi32(isum[t], p);
                    }
                }
            }
            // The quants are stored + 32: take out 32 · Σ_k sc_k · bsums_k, a pair of sub-blocks
            // per `vpmaddwd` (scales in -128..=127, bsums in -2048..=2032).
            let mut off = [_mm256_setzero_si256(); T];
            for q in 0..8 {
                let s0 = _mm_loadl_epi64(rec.add(q6k::scales(2 * q) + 8 * h).cast());
                let s1 = _mm_loadl_epi64(rec.add(q6k::scales(2 * q + 1) + 8 * h).cast());
                let sc = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(s0, s1));
                for t in 0..T {
                    let bs = bcst(blk[t].add(BSUMS + 4 * q));
                    off[t] = _mm256_add_epi32(off[t], _mm256_madd_epi16(sc, bs));
                }
            }
            let dw = f16x8(rec.add(3328 + 16 * h));
            for t in 0..T {
                let isum = _mm256_sub_epi32(isum[t], _mm256_slli_epi32::<5>(off[t]));
                let dy = _mm256_set1_ps(blk[t].cast::<f32>().read_unaligned());
                // sum += d·dy·isum
                let f = _mm256_mul_ps(_mm256_mul_ps(dw, dy), _mm256_cvtepi32_ps(isum));
                acc[t] = _mm256_add_ps(acc[t], f);
            }
        }
    }
    for t in 0..T {
        // SAFETY: guaranteed by the caller.
        unsafe { store(out[t], mask, acc[t]) };
    }
}
