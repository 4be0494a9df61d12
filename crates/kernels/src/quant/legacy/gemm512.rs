//! AVX-512 VNNI GEMM tiles of this family's packed layouts (`packed`): one group of 16 weight
//! rows (one per 32-bit lane) times a tile of tokens, each record decoded once per tile; every
//! output lane bit-identical to the family's reference dot product.

#![allow(clippy::too_many_arguments)]
use crate::blocks::*;
use crate::packed::gemm512::*;
use std::arch::x86_64::*;
use std::mem::size_of;

pub(crate) const Q8_0: u8 = 0;

pub(crate) const Q4_0: u8 = 1;

pub(crate) const Q5_0: u8 = 2;

/// Offset of the scales in a record of `KIND`.
const fn d_offset(kind: u8) -> usize {
    match kind {
        Q8_0 => 512,
        Q4_0 => 256,
        _ => 320,
    }
}

/// `out[t]` (16 lanes under `mask`) for the tokens of one tile of 32-value blocks.
///
/// # Safety: `w` points to `nb` records of `KIND` (`stride` bytes apart); each `a[t]` to `nb`
/// Q8_0 blocks and `aux[t]` to its `2 nb` aux values; each `out[t]` to 16 writable f32 under
/// `mask`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
pub(crate) unsafe fn tile_q32<const KIND: u8, const T: usize>(
    nb: usize,
    stride: usize,
    w: *const u8,
    a: [*const u8; T],
    aux: [*const i32; T],
    out: [*mut f32; T],
    mask: __mmask16,
) {
    let m10 = _mm512_set1_epi8(0x10);
    let mut acc = [_mm512_setzero_ps(); T];
    for b in 0..nb {
        // SAFETY: (all reads) record b of `w`, block b of each `a[t]`, entries b and nb + b of
        // each `aux[t]`, all inside what the caller guarantees.
        unsafe {
            let rec = w.add(b * stride);
            let x = match KIND {
                Q8_0 => {
                    let mut x = [_mm512_setzero_si512(); 8];
                    for (g, x) in x.iter_mut().enumerate() {
                        *x = load(rec.add(64 * g));
                    }
                    x
                }
                Q4_0 => nibbles(rec),
                _ => {
                    let mut x = nibbles(rec);
                    let h = load(rec.add(256));
                    let hb = [
                        _mm512_slli_epi32::<4>(h),
                        _mm512_slli_epi32::<3>(h),
                        _mm512_slli_epi32::<2>(h),
                        _mm512_slli_epi32::<1>(h),
                        h,
                        _mm512_srli_epi32::<1>(h),
                        _mm512_srli_epi32::<2>(h),
                        _mm512_srli_epi32::<3>(h),
                    ];
                    for g in 0..8 {
                        // x | (hb & 0x10)
                        x[g] = _mm512_ternarylogic_epi32::<0xF8>(x[g], hb[g], m10);
                    }
                    x
                }
            };
            let dw = f16x16(rec.add(d_offset(KIND)));
            for t in 0..T {
                let y = a[t].add(b * size_of::<BlockQ8_0>() + 2);
                // -offset · Σy, so that Σ (u - offset) y comes out exact.
                let neg = _mm512_set1_epi32(aux[t].add(b).read());
                let mut p = match KIND {
                    Q8_0 => _mm512_slli_epi32::<7>(neg),
                    Q4_0 => _mm512_slli_epi32::<3>(neg),
                    _ => _mm512_slli_epi32::<4>(neg),
                };
                for g in 0..8 {
                    p = _mm512_dpbusd_epi32(p, x[g], bcst(y.add(4 * g)));
                }
                let dy = _mm512_set1_ps(f32::from_bits(aux[t].add(nb + b).read() as u32));
                // sum += isum · d_w · d_a
                let f = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(p), dw), dy);
                acc[t] = _mm512_add_ps(acc[t], f);
            }
        }
    }
    for t in 0..T {
        // SAFETY: guaranteed by the caller.
        unsafe { _mm512_mask_storeu_ps(out[t], mask, acc[t]) };
    }
}

/// Like [`tile_q32`] for Q4_1 records (unsigned nibbles, then 16 `d` and 16 `m`) or (`FIFTH`)
/// Q5_1 records (Q5_0's nibbles and fifth bits of the unsigned quants, then `d` and `m`) against
/// Q8_1 activations (`aux[t]`: `nb` values `d`, then `nb` values `s`, as f32 bits): per block
/// `(d · a.d) · isum + m · a.s`, as `dot_scalar::vec_dot_q4_1_q8_1` / `vec_dot_q5_1_q8_1`.
///
/// # Safety: as for [`tile_q32`], with Q8_1 blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
pub(crate) unsafe fn tile_q4_1<const FIFTH: bool, const T: usize>(
    nb: usize,
    stride: usize,
    w: *const u8,
    a: [*const u8; T],
    aux: [*const i32; T],
    out: [*mut f32; T],
    mask: __mmask16,
) {
    let mut acc = [_mm512_setzero_ps(); T];
    for b in 0..nb {
        // SAFETY: (all reads) record b of `w`, block b of each `a[t]`, entries b and nb + b of
        // each `aux[t]`, all inside what the caller guarantees.
        unsafe {
            let rec = w.add(b * stride);
            let mut x = nibbles(rec);
            // Q5_1: the fifth bits, then `d` and `m` 64 bytes further on.
            let at = if FIFTH {
                merge_fifth(&mut x, load(rec.add(256)));
                320
            } else {
                256
            };
            let (dw, mw) = (f16x16(rec.add(at)), f16x16(rec.add(at + 32)));
            for t in 0..T {
                let y = a[t].add(b * size_of::<crate::blocks::BlockQ8_1>() + 4);
                let (mut p, mut p2) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                for g in 0..4 {
                    p = _mm512_dpbusd_epi32(p, x[g], bcst(y.add(4 * g)));
                    p2 = _mm512_dpbusd_epi32(p2, x[g + 4], bcst(y.add(16 + 4 * g)));
                }
                let p = _mm512_add_epi32(p, p2);
                let dy = _mm512_set1_ps(f32::from_bits(aux[t].add(b).read() as u32));
                let sy = _mm512_set1_ps(f32::from_bits(aux[t].add(nb + b).read() as u32));
                let f = _mm512_mul_ps(_mm512_mul_ps(dw, dy), _mm512_cvtepi32_ps(p));
                acc[t] = _mm512_add_ps(acc[t], _mm512_add_ps(f, _mm512_mul_ps(mw, sy)));
            }
        }
    }
    for t in 0..T {
        // SAFETY: guaranteed by the caller.
        unsafe { _mm512_mask_storeu_ps(out[t], mask, acc[t]) };
    }
}
