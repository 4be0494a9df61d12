//! The AVX-512 VNNI row kernel of the IQ2 types (one weight row against one Q8_K row, for decode):
//! the decoder's work and the generic dot product in one pass, nothing stored in between. Each
//! 32-value group's grid rows and signs are read as the decoder reads them; the signs negate grid
//! values under a byte mask, and 64 is added so that `vpdpbusd` sees unsigned bytes (the grid
//! values are below 64); `64 · Σ ls · bsums` is taken back out once per block. The integer sum is
//! the decoded reference's exactly, and each block's float steps and their order
//! (`decoded::dot_k`) are its own, so the result equals it bit for bit.

use super::grids::IQ2XXS_GRID;
use super::{BlockIq2Xxs, Iq2Block};
use crate::blocks::BlockQ8K;
use crate::quant::decoded::x86::f16_to_f32;
use crate::quant::decoded::{sum4, term_without_mins};
use crate::simd::check_row;
use crate::types::GgmlType;
use crate::view::blocks_of;
use std::arch::x86_64::*;

/// `quant::decoded::dot_k` of `n` values of a row of `B` blocks, decoded, against Q8_K `a`.
pub(super) fn dot<B: Iq2Block>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    check_row(B::TYPE, n, w, a);
    // SAFETY: `iq2::rows` returns this kernel only for `Isa::Avx512Vnni`, which `quant::row_kernels`
    // caps at what the CPU has.
    unsafe { dot_impl::<B>(w, a) }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
fn dot_impl<B: Iq2Block>(w: &[u8], a: &[u8]) -> f32 {
    let (x, y) = (blocks_of::<B>(w), blocks_of::<BlockQ8K>(a));
    let zero = _mm256_setzero_si256();
    let off = _mm256_set1_epi8(64);
    sum4!(x.len(), |i| {
        let (x, y) = (&x[i], &y[i]);
        // The sub-block scales 2 s + 1 (at most 31), as bytes and as i16.
        let mut ls = x.scales();
        for s in ls.iter_mut() {
            *s = 2 * *s + 1;
        }
        // SAFETY: `ls` is 16 bytes; `bsums` is 16 i16 (32 bytes).
        let (lsx, bsums) = unsafe {
            (
                _mm_loadu_si128(ls.as_ptr().cast()),
                _mm256_loadu_si256(y.bsums.as_ptr().cast()),
            )
        };
        // -64 · Σ ls · bsums, spread over the 8 lanes.
        let corr = _mm256_madd_epi16(bsums, _mm256_cvtepu8_epi16(lsx));
        let mut acc = _mm256_sub_epi32(zero, _mm256_slli_epi32::<6>(corr));
        for ib in 0..8 {
            let (g, s) = x.group32(ib);
            let g = _mm256_set_epi64x(g[3] as i64, g[2] as i64, g[1] as i64, g[0] as i64);
            // (±g) + 64 in 0..=127.
            let u = _mm256_add_epi8(_mm256_mask_sub_epi8(g, s, zero, g), off);
            // SAFETY: values 32 ib..32 ib + 32 of the block's 256.
            let q = unsafe { _mm256_loadu_si256(y.qs.as_ptr().add(32 * ib).cast()) };
            let p = _mm256_dpbusd_epi32(zero, u, q);
            // Lanes 0..4 hold sub-block 2 ib, lanes 4..8 sub-block 2 ib + 1.
            let pick = _mm_set_epi32(
                0,
                0,
                (2 * ib as i32 + 1) * 0x0101_0101,
                2 * ib as i32 * 0x0101_0101,
            );
            let sc = _mm256_cvtepu8_epi32(_mm_shuffle_epi8(lsx, pick));
            acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(p, sc));
        }
        let is = hsum(acc);
        term_without_mins(f16_to_f32(x.d_bits()) * 0.125, y.d, is)
    })
}

/// The sum of the 8 i32 lanes of `v` (wrapping, exact where the true sum fits).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
fn hsum(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<1>(s));
    _mm_cvtsi128_si32(s)
}

/// [`dot`] for IQ2_XXS, a whole block's indices at once: the 32 grid rows by four 8-way gathers
/// (two groups, 64 values, each), the 32 sign bytes computed in one register (`ksigns_iq2xs[i]`
/// is `i` with its parity in bit 7), the group scales and the `bsums` correction in one more.
pub(super) fn dot_iq2_xxs(n: usize, w: &[u8], a: &[u8]) -> f32 {
    check_row(GgmlType::IQ2_XXS, n, w, a);
    // SAFETY: as for `dot`.
    unsafe { dot_iq2_xxs_impl(w, a) }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
fn dot_iq2_xxs_impl(w: &[u8], a: &[u8]) -> f32 {
    let (x, y) = (blocks_of::<BlockIq2Xxs>(w), blocks_of::<BlockQ8K>(a));
    let zero = _mm512_setzero_si512();
    let off = _mm512_set1_epi8(64);
    let m7 = _mm256_set1_epi32(127);
    let m15 = _mm256_set1_epi8(15);
    // 0x80 where a 4-bit index has odd parity.
    let parity = _mm256_broadcastsi128_si256(_mm_setr_epi8(
        0, -128, -128, 0, -128, 0, 0, -128, -128, 0, 0, -128, 0, -128, -128, 0,
    ));
    // The aux words (odd dwords of the 64 index bytes), one per group.
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 0, 0, 0, 0, 0, 0, 0, 0);
    sum4!(x.len(), |i| {
        let (x, y) = (&x[i], &y[i]);
        // SAFETY: `qs` is 64 bytes, `bsums` 32, `y.qs` 256, the grid 256 u64 indexed by bytes
        // (every load and gather below).
        unsafe {
            let q = _mm512_loadu_si512(x.qs.as_ptr().cast());
            let aux = _mm512_castsi512_si256(_mm512_permutexvar_epi32(odd, q));
            // Sign indices (aux >> 7l) & 127 as byte l of each group's dword, then ksigns.
            let mut idx = _mm256_and_si256(aux, m7);
            idx = _mm256_or_si256(
                idx,
                _mm256_slli_epi32::<1>(_mm256_and_si256(aux, _mm256_set1_epi32(127 << 7))),
            );
            idx = _mm256_or_si256(
                idx,
                _mm256_slli_epi32::<2>(_mm256_and_si256(aux, _mm256_set1_epi32(127 << 14))),
            );
            idx = _mm256_or_si256(
                idx,
                _mm256_slli_epi32::<3>(_mm256_and_si256(aux, _mm256_set1_epi32(127 << 21))),
            );
            let par = _mm256_xor_si256(
                _mm256_shuffle_epi8(parity, _mm256_and_si256(idx, m15)),
                _mm256_shuffle_epi8(parity, _mm256_and_si256(_mm256_srli_epi16::<4>(idx), m15)),
            );
            let mut signs = [0u64; 4];
            _mm256_storeu_si256(signs.as_mut_ptr().cast(), _mm256_or_si256(idx, par));
            // Group scales 2 (aux >> 28) + 1, and -64 · Σ ls · (bsums of its two sub-blocks).
            let ls = _mm256_add_epi32(
                _mm256_slli_epi32::<1>(_mm256_srli_epi32::<28>(aux)),
                _mm256_set1_epi32(1),
            );
            let bs = _mm256_loadu_si256(y.bsums.as_ptr().cast());
            let pairs = _mm256_madd_epi16(bs, _mm256_set1_epi16(1));
            let corr = _mm256_slli_epi32::<6>(_mm256_mullo_epi32(ls, pairs));
            let mut acc = _mm512_zextsi256_si512(_mm256_sub_epi32(_mm256_setzero_si256(), corr));
            let ls = _mm512_zextsi256_si512(ls);
            for p in 0..4 {
                // Grid indices of groups 2p (bytes 0..4) and 2p + 1 (bytes 8..12).
                let b = _mm_loadu_si128(x.qs.as_ptr().add(8 * p).cast());
                let gi = _mm256_cvtepu8_epi32(_mm_shuffle_epi32::<0b1000>(b));
                let g = _mm512_i32gather_epi64::<8>(gi, IQ2XXS_GRID.as_ptr().cast());
                let u = _mm512_add_epi8(_mm512_mask_sub_epi8(g, signs[p], zero, g), off);
                let yq = _mm512_loadu_si512(y.qs.as_ptr().add(64 * p).cast());
                let d = _mm512_dpbusd_epi32(zero, u, yq);
                // Lanes 0..8: group 2p's scale; 8..16: group 2p + 1's.
                let pick = _mm512_inserti64x4::<1>(
                    _mm512_set1_epi32(2 * p as i32),
                    _mm256_set1_epi32(2 * p as i32 + 1),
                );
                let sc = _mm512_permutexvar_epi32(pick, ls);
                acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(d, sc));
            }
            let is = _mm512_reduce_add_epi32(acc);
            term_without_mins(f16_to_f32(x.d.to_bits()) * 0.125, y.d, is)
        }
    })
}
