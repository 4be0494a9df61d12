//! AVX2 GEMM kernels over the packed (row-interleaved) layouts of `crate::packed`: the 256-bit
//! port of `gemm512`, on the same records. A 16-row group is done as two halves of 8 rows (the
//! first and second 32 bytes of every 64-byte vector, one row per 32-bit lane), each half times a
//! tile of up to `T` tokens, the weights of each block decoded once per tile.
//!
//! `vpdpbusd` (four u8·i8 products into an i32 lane) becomes `vpmaddubsw` (pairs into saturating
//! i16) and `vpmaddwd` (pairs of i16 into i32). The i16 sums never saturate, so every integer sum
//! stays exact (the activations are quantized to `-128..=127`):
//!
//! * Q4_0 and Q4_K: quants `0..=15`; a `vpmaddubsw` pair is at most 2·15·128 = 3840 in
//!   magnitude, so all 8 registers of a 32-value block sum in i16 (8·3840 = 30720) before one
//!   `vpmaddwd`, with ones (Q4_0) or the sub-block scale (Q4_K, `0..=63`) in both halves of a lane.
//! * Q5_0, Q5_1 and Q5_K: quants `0..=31`, a pair at most 7936; four registers (31744) per i16
//!   sum, two sums (per block, or per sub-block times its scale for Q5_K).
//! * Q6_K: quants `0..=63`, a pair at most 16128; two registers (32256) per i16 sum, the signed
//!   sub-block scale applied by `vpmaddwd` to each.
//! * Q8_0: the stored `q + 128` is turned back into `q`, and |q| (unsigned) multiplies sign(y, q):
//!   a pair is at most 2·128·127 = 32512. This needs activations in `-127..=127`, which Q8_0
//!   activations are (`d = amax / 127`), as in `avx2`'s kernels.
//! * IQ4_NL and IQ4_XS: the indices are looked up (`vpshufb`) as the signed values of
//!   `kvalues_iq4nl` (`-127..=113`), and |x| multiplies sign(y, x) as for Q8_0 (a pair at most
//!   2·127·127 = 32258; Q8_0 and Q8_K activations are in `-127..=127`); each `vpmaddubsw` goes
//!   through its own `vpmaddwd` (by ones, or IQ4_XS's signed sub-block scale), no offset.
//!
//! The offsets of the unsigned quants are taken back out through the activations' block sums,
//! and every output lane then runs the scalar reference's float arithmetic (the same
//! multiplications and additions in the same order, never fused), so the results equal
//! `dot_scalar` bit for bit, like `gemm512`'s.

use super::gemm512::{Kind, AUX_K, Q4_0, Q5_0, Q8_0};
use crate::blocks::{BlockQ8K, BlockQ8_0};
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

/// Offset of the bsums in a Q8_K block.
const BSUMS: usize = 4 + 256;

/// The dword at `p` broadcast to every lane.
///
/// # Safety: 4 readable bytes at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bcst(p: *const u8) -> __m256i {
    // SAFETY: guaranteed by the caller.
    _mm256_set1_epi32(unsafe { p.cast::<i32>().read_unaligned() })
}

/// 8 f16 at `p` as f32.
///
/// # Safety: 16 readable bytes at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16x8(p: *const u8) -> __m256 {
    // SAFETY: guaranteed by the caller.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p.cast()) })
}

/// # Safety: 32 readable bytes at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load(p: *const u8) -> __m256i {
    // SAFETY: guaranteed by the caller.
    unsafe { _mm256_loadu_si256(p.cast()) }
}

/// The 8 bytes at `p` (one per row of a half), as i16 pairs `(v, v)`: one per 32-bit lane,
/// sign-extended when `SIGNED`, else zero-extended.
///
/// # Safety: 8 readable bytes at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scale_pairs<const SIGNED: bool>(p: *const u8) -> __m256i {
    // SAFETY: guaranteed by the caller.
    let l = unsafe { _mm_loadl_epi64(p.cast()) };
    let d = _mm_unpacklo_epi8(l, l);
    if SIGNED {
        _mm256_cvtepi8_epi16(d)
    } else {
        _mm256_cvtepu8_epi16(d)
    }
}

/// Stores the f32 lanes of `acc` whose `mask` lane has its sign bit set at `out`.
///
/// # Safety: `out` points to writable f32 at every lane selected by `mask`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store(out: *mut f32, mask: __m256i, acc: __m256) {
    // SAFETY: guaranteed by the caller.
    unsafe { _mm256_maskstore_ps(out, mask, acc) }
}

/// `out[t]` (8 lanes under `mask`, rows of half `h`) for the tokens of one tile of 32-value blocks.
///
/// # Safety: `w` points to `nb` records of `KIND` (`stride` bytes apart); each `a[t]` to `nb`
/// Q8_0 blocks (quants in `-127..=127`) and `aux[t]` to its `2 nb` aux values; each `out[t]` to
/// 8 writable f32 under `mask`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_q32<const KIND: u8, const T: usize>(
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

/// The unsigned 5-bit quants of nibble vector `v` of a Q5_0 record half: `raw` that vector, `hv`
/// the fifth-bit vector, `m4` and `m10` the byte masks 0x0F and 0x10; values `4v + j` and
/// `16 + 4v + j` (lane byte `j`).
///
/// `#[inline(always)]` without `#[target_feature]` (the two do not combine on stable Rust): it is
/// inlined into [`tile_q32`] before any other optimization, as if written out there.
///
/// # Safety: the CPU has AVX2.
#[inline(always)]
unsafe fn q5_0_quants(
    raw: __m256i,
    hv: __m256i,
    v: usize,
    m4: __m256i,
    m10: __m256i,
) -> (__m256i, __m256i) {
    // SAFETY: the CPU has AVX2, as the caller guarantees.
    unsafe {
        // Bit 4 of value 4v + j is bit v of byte j, of 16 + 4v + j bit v + 4.
        let (hl, hh) = match v {
            0 => (_mm256_slli_epi32::<4>(hv), hv),
            1 => (_mm256_slli_epi32::<3>(hv), _mm256_srli_epi32::<1>(hv)),
            2 => (_mm256_slli_epi32::<2>(hv), _mm256_srli_epi32::<2>(hv)),
            _ => (_mm256_slli_epi32::<1>(hv), _mm256_srli_epi32::<3>(hv)),
        };
        let lo = _mm256_or_si256(_mm256_and_si256(raw, m4), _mm256_and_si256(hl, m10));
        let hi = _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(raw), m4),
            _mm256_and_si256(hh, m10),
        );
        (lo, hi)
    }
}

/// Like [`tile_q32`] for Q4_K records and Q8_K activations (`aux[t]` pointing to `AUX_K nb`
/// values).
///
/// # Safety: as for [`tile_q32`], with Q8_K blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_q4k<const T: usize>(
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
    let mut acc = [_mm256_setzero_ps(); T];
    for b in 0..nb {
        // SAFETY: (all reads) record b of `w`, block b of each `a[t]` and of each `aux[t]`.
        unsafe {
            let rec = w.add(b * stride);
            let blk: [*const u8; T] = std::array::from_fn(|t| a[t].add(b * size_of::<BlockQ8K>()));
            let mut isum = [_mm256_setzero_si256(); T];
            for s in 0..8 {
                let mut s16 = [_mm256_setzero_si256(); T];
                for v in 0..4 {
                    let raw = load(rec.add(256 * s + 64 * v + 32 * h));
                    let lo = _mm256_and_si256(raw, m4);
                    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), m4);
                    for t in 0..T {
                        let y = blk[t].add(4 + 32 * s);
                        let l = _mm256_maddubs_epi16(lo, bcst(y.add(4 * v)));
                        let u = _mm256_maddubs_epi16(hi, bcst(y.add(16 + 4 * v)));
                        s16[t] = _mm256_add_epi16(s16[t], _mm256_add_epi16(l, u));
                    }
                }
                let sc = scale_pairs::<false>(rec.add(2048 + 16 * s + 8 * h));
                for t in 0..T {
                    isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(s16[t], sc));
                }
            }
            let mut mins = [_mm256_setzero_si256(); 4];
            for (q, m) in mins.iter_mut().enumerate() {
                *m = _mm256_cvtepu8_epi16(_mm_loadu_si128(rec.add(2176 + 32 * q + 16 * h).cast()));
            }
            let dw = f16x8(rec.add(2304 + 16 * h));
            let dmw = f16x8(rec.add(2336 + 16 * h));
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

/// Like [`tile_q32`] for Q5_1 records (Q5_0's nibbles and fifth bits of the unsigned quants,
/// then 16 `d` and 16 `m`) and Q8_1 activations (`aux[t]`: `nb` values `d`, then `nb` values `s`,
/// as f32 bits): per block `(d · a.d) · isum + m · a.s`, as `dot_scalar::vec_dot_q5_1_q8_1`.
/// Quants `0..=31` as Q5_0's: four registers per i16 sum, two sums.
///
/// # Safety: as for [`tile_q32`], with Q8_1 blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_q5_1<const T: usize>(
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

/// Like [`tile_q4k`] for Q5_K records (Q4_K's, plus a fifth-bit vector per sub-block at
/// `2368 + 64 s`), as `dot_scalar::vec_dot_q5_k_q8_k`. Quants `0..=31`: the low and the high
/// nibbles of a sub-block (four registers each, at most 31744) sum in two i16 sums.
///
/// # Safety: as for [`tile_q4k`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_q5k<const T: usize>(
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
                let hv = load(rec.add(2368 + 64 * s + 32 * h));
                let mut s16 = [[_mm256_setzero_si256(); T]; 2];
                for v in 0..4 {
                    let raw = load(rec.add(256 * s + 64 * v + 32 * h));
                    let (lo, hi) = q5_0_quants(raw, hv, v, m4, m10);
                    for t in 0..T {
                        let y = blk[t].add(4 + 32 * s);
                        let l = _mm256_maddubs_epi16(lo, bcst(y.add(4 * v)));
                        let u = _mm256_maddubs_epi16(hi, bcst(y.add(16 + 4 * v)));
                        s16[0][t] = _mm256_add_epi16(s16[0][t], l);
                        s16[1][t] = _mm256_add_epi16(s16[1][t], u);
                    }
                }
                let sc = scale_pairs::<false>(rec.add(2048 + 16 * s + 8 * h));
                for t in 0..T {
                    let p = _mm256_add_epi32(
                        _mm256_madd_epi16(s16[0][t], sc),
                        _mm256_madd_epi16(s16[1][t], sc),
                    );
                    isum[t] = _mm256_add_epi32(isum[t], p);
                }
            }
            let mut mins = [_mm256_setzero_si256(); 4];
            for (q, m) in mins.iter_mut().enumerate() {
                *m = _mm256_cvtepu8_epi16(_mm_loadu_si128(rec.add(2176 + 32 * q + 16 * h).cast()));
            }
            let dw = f16x8(rec.add(2304 + 16 * h));
            let dmw = f16x8(rec.add(2336 + 16 * h));
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
unsafe fn tile_q6k<const T: usize>(
    nb: usize,
    stride: usize,
    w: *const u8,
    h: usize,
    a: [*const u8; T],
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
                    std::array::from_fn(|m| load(rec.add(256 * c + 64 * m + 32 * h)));
                for hh in 0..2 {
                    // Sub-block 2c + hh: values 32c + 16hh + 4m + j.
                    let hv = load(rec.add(2048 + 128 * c + 64 * hh + 32 * h));
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
                    let sc = scale_pairs::<true>(rec.add(3072 + 16 * k + 8 * h));
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
                let s0 = _mm_loadl_epi64(rec.add(3072 + 32 * q + 8 * h).cast());
                let s1 = _mm_loadl_epi64(rec.add(3072 + 32 * q + 16 + 8 * h).cast());
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

/// ggml's IQ4 values `kvalues_iq4nl` (signed) in both 128-bit lanes: a `vpshufb` table for 4-bit
/// indices.
///
/// # Safety: the CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq4_table() -> __m256i {
    let t = &crate::quant::IQ4_VALUES;
    // SAFETY: `t` is 16 readable bytes.
    _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(t.as_ptr().cast()) })
}

/// `Σ kv · y` in i32 pairs-of-pairs for one register of IQ4 values `x` (signed, `-127..=113`) and
/// 4 activation bytes broadcast from `y` (`-127..=127`), by ggml's sign trick: `|x|` times
/// `y · sign(x)`, a `vpmaddubsw` pair at most 2·127·127 = 32258, then `vpmaddwd` by `m` (ones,
/// or the sub-block scale in both halves of a lane).
///
/// # Safety: 4 readable bytes at `y`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq4_madd(ax: __m256i, x: __m256i, y: *const u8, m: __m256i) -> __m256i {
    // SAFETY: guaranteed by the caller.
    let s = _mm256_sign_epi8(unsafe { bcst(y) }, x);
    _mm256_madd_epi16(_mm256_maddubs_epi16(ax, s), m)
}

/// The final sum of the four running sums of `quant::decoded::sum4!`: `(s0 + s1) + (s2 + s3)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sum4_total(s: &[__m256; 4]) -> __m256 {
    _mm256_add_ps(_mm256_add_ps(s[0], s[1]), _mm256_add_ps(s[2], s[3]))
}

/// `isum += Σ kv · y · m` over one 32-value sub-block of IQ4 indices (4 nibble vectors at `rec`,
/// half `h`) and the 32 activations at `y[t]`, for every token of the tile.
///
/// # Safety: 256 readable bytes at `rec`, 32 at each `y[t]`; the CPU has AVX2.
#[inline(always)]
unsafe fn iq4_block<const T: usize>(
    rec: *const u8,
    h: usize,
    y: [*const u8; T],
    m: __m256i,
    table: __m256i,
    isum: &mut [__m256i; T],
) {
    // SAFETY: reads inside what the caller guarantees; the CPU has AVX2.
    unsafe {
        let m4 = _mm256_set1_epi8(0x0F);
        for v in 0..4 {
            let raw = load(rec.add(64 * v + 32 * h));
            let lo = _mm256_shuffle_epi8(table, _mm256_and_si256(raw, m4));
            let hi = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16::<4>(raw), m4));
            let (alo, ahi) = (_mm256_sign_epi8(lo, lo), _mm256_sign_epi8(hi, hi));
            for t in 0..T {
                let l = iq4_madd(alo, lo, y[t].add(4 * v), m);
                let u = iq4_madd(ahi, hi, y[t].add(16 + 4 * v), m);
                isum[t] = _mm256_add_epi32(isum[t], _mm256_add_epi32(l, u));
            }
        }
    }
}

/// Like [`tile_q32`] for IQ4_NL records (Q4_0's layout, indices into `kvalues_iq4nl`): per block
/// `(d · a.d) · isum`, summed in the four running sums of `quant::decoded::dot_32_q8_0`.
///
/// # Safety: as for [`tile_q32`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_iq4nl<const T: usize>(
    nb: usize,
    stride: usize,
    w: *const u8,
    h: usize,
    a: [*const u8; T],
    aux: [*const i32; T],
    out: [*mut f32; T],
    mask: __m256i,
) {
    // SAFETY: the CPU has AVX2 (this function's features).
    let table = unsafe { iq4_table() };
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); 4]; T];
    for b in 0..nb {
        // SAFETY: (all reads) record b of `w`, block b of each `a[t]`, entry nb + b of each
        // `aux[t]`, all inside what the caller guarantees.
        unsafe {
            let rec = w.add(b * stride);
            let y: [*const u8; T] =
                std::array::from_fn(|t| a[t].add(b * size_of::<BlockQ8_0>() + 2));
            let mut p = [_mm256_setzero_si256(); T];
            iq4_block(rec, h, y, ones, table, &mut p);
            let dw = f16x8(rec.add(256 + 16 * h));
            for t in 0..T {
                let dy = _mm256_set1_ps(f32::from_bits(aux[t].add(nb + b).read() as u32));
                // sum[b % 4] += (d_w · d_a) · isum
                let f = _mm256_mul_ps(_mm256_mul_ps(dw, dy), _mm256_cvtepi32_ps(p[t]));
                acc[t][b % 4] = _mm256_add_ps(acc[t][b % 4], f);
            }
        }
    }
    for t in 0..T {
        // SAFETY: guaranteed by the caller.
        unsafe { store(out[t], mask, sum4_total(&acc[t])) };
    }
}

/// Like [`tile_q4k`] for IQ4_XS records (`packed`'s layout): per super-block
/// `(d · a.d) · isum - (0 · a.d) · 0`, as `quant::decoded::dot_k`, in its four running sums.
///
/// # Safety: as for [`tile_q4k`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_iq4xs<const T: usize>(
    nb: usize,
    stride: usize,
    w: *const u8,
    h: usize,
    a: [*const u8; T],
    out: [*mut f32; T],
    mask: __m256i,
) {
    // SAFETY: the CPU has AVX2 (this function's features).
    let table = unsafe { iq4_table() };
    let zero = _mm256_setzero_ps();
    let mut acc = [[zero; 4]; T];
    for b in 0..nb {
        // SAFETY: (all reads) record b of `w`, block b of each `a[t]`.
        unsafe {
            let rec = w.add(b * stride);
            let blk: [*const u8; T] = std::array::from_fn(|t| a[t].add(b * size_of::<BlockQ8K>()));
            let mut isum = [_mm256_setzero_si256(); T];
            for s in 0..8 {
                let sc = scale_pairs::<true>(rec.add(2048 + 16 * s + 8 * h));
                let y = blk.map(|p| p.add(4 + 32 * s));
                iq4_block(rec.add(256 * s), h, y, sc, table, &mut isum);
            }
            let dw = f16x8(rec.add(2176 + 16 * h));
            for t in 0..T {
                let dy = _mm256_set1_ps(blk[t].cast::<f32>().read_unaligned());
                // sum[b % 4] += (d·dy)·isum - (dmin·dy)·msum, dmin = msum = 0
                let f = _mm256_sub_ps(
                    _mm256_mul_ps(_mm256_mul_ps(dw, dy), _mm256_cvtepi32_ps(isum[t])),
                    _mm256_mul_ps(_mm256_mul_ps(zero, dy), zero),
                );
                acc[t][b % 4] = _mm256_add_ps(acc[t][b % 4], f);
            }
        }
    }
    for t in 0..T {
        // SAFETY: guaranteed by the caller.
        unsafe { store(out[t], mask, sum4_total(&acc[t])) };
    }
}

/// One tile of `T` tokens for the rows of a group selected by `mask` (bit `r` for row `r`): the
/// first 8 rows, then the second 8 if any of them is selected.
///
/// # Safety: `w` points to `nb` records of `kind` (`stride` bytes apart); each `a[t]` to `nb`
/// activation blocks of the kind's activation type (Q8_0 and Q8_K quants in `-127..=127`) and `aux[t]`
/// to its aux values (`packed::ActAux`); each `out[t]` to 16 f32 of which those selected by
/// `mask` are writable; the CPU has AVX2, FMA and F16C.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tile<const T: usize>(
    kind: Kind,
    nb: usize,
    stride: usize,
    w: *const u8,
    a: [*const u8; T],
    aux: [*const i32; T],
    out: [*mut f32; T],
    mask: u16,
) {
    let bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    for h in 0..2 {
        let m = (mask >> (8 * h)) & 0xFF;
        if m == 0 {
            continue;
        }
        let lanes = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(m as i32), bits), bits);
        // SAFETY: rows 8h.. of the outputs start 8h floats in, inside the 16 of each `out[t]`;
        // the rest is forwarded from the caller.
        unsafe {
            let o = out.map(|p| p.add(8 * h));
            match kind {
                Kind::Q32(Q8_0) => tile_q32::<Q8_0, T>(nb, stride, w, h, a, aux, o, lanes),
                Kind::Q32(Q4_0) => tile_q32::<Q4_0, T>(nb, stride, w, h, a, aux, o, lanes),
                Kind::Q32(_) => tile_q32::<Q5_0, T>(nb, stride, w, h, a, aux, o, lanes),
                Kind::Q4K => tile_q4k::<T>(nb, stride, w, h, a, aux, o, lanes),
                Kind::Q6K => tile_q6k::<T>(nb, stride, w, h, a, o, lanes),
                // `packed::packs` packs Q4_1 only where the AVX-512 kernel runs.
                Kind::Q41 => unreachable!("no AVX2 kernel for packed Q4_1"),
                Kind::Q51 => tile_q5_1::<T>(nb, stride, w, h, a, aux, o, lanes),
                Kind::Q5K => tile_q5k::<T>(nb, stride, w, h, a, aux, o, lanes),
                Kind::Iq4Nl => tile_iq4nl::<T>(nb, stride, w, h, a, aux, o, lanes),
                Kind::Iq4Xs => tile_iq4xs::<T>(nb, stride, w, h, a, o, lanes),
            }
        }
    }
}
