//! AVX2 GEMM tiles of this family's packed layouts (`packed`): one half (8 rows) of a group of
//! 16 weight rows times a tile of tokens, on the same records as the AVX-512 tiles; every output
//! lane bit-identical to the family's reference dot product.

#![allow(clippy::too_many_arguments)]
use super::packed::iq4xs;
use crate::blocks::*;
use crate::packed::gemm256::*;
use std::arch::x86_64::*;
use std::mem::size_of;

/// ggml's IQ4 values `kvalues_iq4nl` (signed) in both 128-bit lanes: a `vpshufb` table for 4-bit
/// indices.
///
/// # Safety: the CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn iq4_table() -> __m256i {
    let t = &super::KVALUES;
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
pub(crate) unsafe fn iq4_madd(ax: __m256i, x: __m256i, y: *const u8, m: __m256i) -> __m256i {
    // SAFETY: guaranteed by the caller.
    let s = _mm256_sign_epi8(unsafe { bcst(y) }, x);
    _mm256_madd_epi16(_mm256_maddubs_epi16(ax, s), m)
}

/// The final sum of the four running sums of `quant::decoded::sum4!`: `(s0 + s1) + (s2 + s3)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn sum4_total(s: &[__m256; 4]) -> __m256 {
    _mm256_add_ps(_mm256_add_ps(s[0], s[1]), _mm256_add_ps(s[2], s[3]))
}

/// `isum += Σ kv · y · m` over one 32-value sub-block of IQ4 indices (4 nibble vectors at `rec`,
/// half `h`) and the 32 activations at `y[t]`, for every token of the tile.
///
/// # Safety: 256 readable bytes at `rec`, 32 at each `y[t]`; the CPU has AVX2.
#[inline(always)]
pub(crate) unsafe fn iq4_block<const T: usize>(
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
pub(crate) unsafe fn tile_iq4nl<const T: usize>(
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
pub(crate) unsafe fn tile_iq4xs<const T: usize>(
    nb: usize,
    stride: usize,
    w: *const u8,
    h: usize,
    a: [*const u8; T],
    _aux: [*const i32; T],
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
                let sc = scale_pairs::<true>(rec.add(iq4xs::scales(s) + 8 * h));
                let y = blk.map(|p| p.add(4 + 32 * s));
                iq4_block(rec.add(iq4xs::nibbles(s)), h, y, sc, table, &mut isum);
            }
            let dw = f16x8(rec.add(iq4xs::D + 16 * h));
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
