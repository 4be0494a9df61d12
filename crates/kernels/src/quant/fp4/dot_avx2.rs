//! AVX2 + F16C row kernels of NVFP4 against Q8_0 activations, one row and four rows (each
//! weight block decoded once for the four), bit-identical to the reference
//! `nvfp4::vec_dot_nvfp4_q8_0`.
//!
//! A block's 64 values fill two registers (sub-blocks 0, 1 and 2, 3, one per 128-bit lane).
//! `vpmaddubsw` multiplies the activations made unsigned (`y ^ 0x80 = y + 128`) with the signed
//! weights; the weights' own `128 · (x0 + x1)` per pair is subtracted in 16 bits (every pair sum
//! fits), so the integer sums are exact for every byte. Four blocks' partial sums are transposed
//! into two registers of sub-block sums, lane `4 s + b` (sub-blocks 0, 1) and `4 (s - 2) + b`
//! (sub-blocks 2, 3): the reference's sixteen running sums, with the same three float operations
//! per term and the same fold (`nvfp4::fold16`) as the reference and the AVX-512 kernel.
//!
//! The kernels are safe functions that check slice lengths before any pointer arithmetic; the
//! `unsafe` inside is the `#[target_feature]` call, made after the dispatcher confirmed the CPU
//! has those features.

use super::nvfp4::QK_NVFP4;
use crate::simd::{check_row, VecDot4Fn, VecDotFn};
use crate::types::GgmlType;
use std::arch::x86_64::*;

/// The one-row and four-row kernels.
pub(super) const ROWS: (VecDotFn, Option<VecDot4Fn>) = (one, Some(four));

fn one(n: usize, w: &[u8], a: &[u8]) -> f32 {
    check_row(GgmlType::NVFP4, n, w, a);
    // SAFETY: `w` holds n / 64 NVFP4 blocks and `a` n / 32 Q8_0 blocks (checked above); the
    // dispatcher hands this kernel out only when the CPU has these features.
    let [s] = unsafe { imp::rows::<1>(n / QK_NVFP4, w.as_ptr(), [a.as_ptr()]) };
    s
}

fn four(n: usize, w: &[u8], a: &[&[u8]; 4]) -> [f32; 4] {
    for a in a {
        check_row(GgmlType::NVFP4, n, w, a);
    }
    let rows = [a[0].as_ptr(), a[1].as_ptr(), a[2].as_ptr(), a[3].as_ptr()];
    // SAFETY: as above, for each of the four activation rows.
    unsafe { imp::rows::<4>(n / QK_NVFP4, w.as_ptr(), rows) }
}

/// `nvfp4::fold16` of lanes `l + 8` already added into `h`: `l + 4`, then `l + 2`, then the last
/// two.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn fold8(h: __m256) -> f32 {
    let q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
    let p = _mm_add_ps(q, _mm_movehl_ps(q, q));
    _mm_cvtss_f32(_mm_add_ss(p, _mm_movehdup_ps(p)))
}

mod imp {
    use super::*;
    use crate::quant::fp4::KVALUES_MXFP4;

    /// Bytes of an NVFP4 block and of a Q8_0 block.
    const BW: usize = 36;
    const BA: usize = 34;

    /// One half of a block: 32 signed values (two sub-blocks) and the weights' `128 (x0 + x1)`
    /// per pair.
    #[derive(Clone, Copy)]
    struct Half {
        x: __m256i,
        c: __m256i,
    }

    /// Four weight blocks, decoded: `h[k][b]` is half `k` (sub-blocks 2k, 2k + 1) of block `b`;
    /// `d[k]` the scales of sub-blocks 2k, 2k + 1 in lane `4 (s - 2k) + b`.
    struct Group {
        h: [[Half; 4]; 2],
        d: [__m256; 2],
    }

    /// One block's 64 values at `p` as signed bytes in value order: sub-blocks 0, 1 and 2, 3.
    ///
    /// # Safety: `p` points to a whole NVFP4 block.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn values(p: *const u8, table: __m256i) -> [__m256i; 2] {
        let m4 = _mm256_set1_epi8(0xF);
        // SAFETY: the 32 nibble bytes follow the 4 scale bytes.
        let q = unsafe { _mm256_loadu_si256(p.add(4).cast()) };
        let lo = _mm256_and_si256(q, m4);
        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
        // Per 128-bit lane: [sub-block 0 | 2] and [1 | 3].
        let a = _mm256_shuffle_epi8(table, _mm256_unpacklo_epi64(lo, hi));
        let b = _mm256_shuffle_epi8(table, _mm256_unpackhi_epi64(lo, hi));
        [
            _mm256_permute2x128_si256::<0x20>(a, b),
            _mm256_permute2x128_si256::<0x31>(a, b),
        ]
    }

    /// The UE4M3 bytes of `t` as f32 (see the AVX-512 kernel's `ue4m3_x16`), bytes 0..8 and
    /// 8..16.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn ue4m3_x16(t: __m128i) -> [__m256; 2] {
        let nan = _mm_cmpeq_epi8(t, _mm_set1_epi8(0x7F));
        let t = _mm_andnot_si128(nan, _mm_and_si128(t, _mm_set1_epi8(0x7F)));
        let f = |t: __m128i| {
            let h = _mm_slli_epi16::<7>(_mm_cvtepu8_epi16(t));
            _mm256_mul_ps(_mm256_cvtph_ps(h), _mm256_set1_ps(128.0))
        };
        [f(t), f(_mm_srli_si128::<8>(t))]
    }

    /// Decodes the four weight blocks at `p`.
    ///
    /// # Safety: four whole NVFP4 blocks at `p`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn group(p: *const u8, table: __m256i) -> Group {
        let high = _mm256_set1_epi8(-128);
        // SAFETY: blocks 0..4 at `p` (the caller's guarantee).
        let v: [[__m256i; 2]; 4] = std::array::from_fn(|b| unsafe { values(p.add(b * BW), table) });
        let h = [0, 1].map(|k| {
            v.map(|v| Half {
                x: v[k],
                c: _mm256_maddubs_epi16(high, v[k]),
            })
        });
        // Block b's d[s] at byte 36 b + s, wanted in order 4 s + b.
        // SAFETY: each block starts with its 4 scale bytes.
        let d = |b: usize| unsafe { p.add(b * BW).cast::<i32>().read_unaligned() };
        let t = _mm_shuffle_epi8(
            _mm_setr_epi32(d(0), d(1), d(2), d(3)),
            _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15),
        );
        Group { h, d: ue4m3_x16(t) }
    }

    /// Lane `4 s + b` of the result: the sum of lanes `4 s .. 4 s + 4` of `r[b]` (s = 0, 1).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn transpose_sum(r: [__m256i; 4]) -> __m256i {
        let p = _mm256_add_epi32(
            _mm256_unpacklo_epi32(r[0], r[1]),
            _mm256_unpackhi_epi32(r[0], r[1]),
        );
        let q = _mm256_add_epi32(
            _mm256_unpacklo_epi32(r[2], r[3]),
            _mm256_unpackhi_epi32(r[2], r[3]),
        );
        _mm256_add_epi32(_mm256_unpacklo_epi64(p, q), _mm256_unpackhi_epi64(p, q))
    }

    /// `acc` plus the sixteen terms of group `g` against the eight Q8_0 blocks at `q`.
    ///
    /// # Safety: eight whole Q8_0 blocks at `q`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn add_group(acc: [__m256; 2], g: &Group, q: *const u8) -> [__m256; 2] {
        let (high, ones) = (_mm256_set1_epi8(-128), _mm256_set1_epi16(1));
        // SAFETY: each block starts with its scale.
        let d = |k: usize| unsafe { q.add(k * BA).cast::<i16>().read_unaligned() };
        let dy = _mm256_cvtph_ps(_mm_setr_epi16(
            d(0),
            d(1),
            d(2),
            d(3),
            d(4),
            d(5),
            d(6),
            d(7),
        ));
        // Lane 4 s + b takes Q8_0 block 2 b + s / 2: block 2b for half 0, 2b + 1 for half 1.
        let idx = [
            _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6),
            _mm256_setr_epi32(1, 3, 5, 7, 1, 3, 5, 7),
        ];
        let mut out = acc;
        for k in 0..2 {
            let r: [__m256i; 4] = std::array::from_fn(|b| {
                let h = g.h[k][b];
                // SAFETY: Q8_0 block 2b + k at `q` has 32 quants after its 2-byte scale.
                let y = unsafe { _mm256_loadu_si256(q.add((2 * b + k) * BA + 2).cast()) };
                let p = _mm256_maddubs_epi16(_mm256_xor_si256(y, high), h.x);
                _mm256_madd_epi16(_mm256_sub_epi16(p, h.c), ones)
            });
            let sums = _mm256_cvtepi32_ps(transpose_sum(r));
            let dy = _mm256_permutevar8x32_ps(dy, idx[k]);
            let term = _mm256_mul_ps(_mm256_mul_ps(dy, g.d[k]), sums);
            out[k] = _mm256_add_ps(out[k], term);
        }
        out
    }

    /// `R` dot products of one row of `nb` NVFP4 blocks with `R` rows of Q8_0 activations, four
    /// blocks per step; a last group of fewer is copied into zeroed blocks, whose terms are +0
    /// and leave the sums as they are (a running sum that starts at +0 is never -0).
    ///
    /// # Safety: `w` points to `nb` NVFP4 blocks, each `a[r]` to `2 nb` Q8_0 blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows<const R: usize>(
        nb: usize,
        w: *const u8,
        a: [*const u8; R],
    ) -> [f32; R] {
        // SAFETY: the table is 16 bytes.
        let t = unsafe { _mm_loadu_si128(KVALUES_MXFP4.as_ptr().cast()) };
        let table = _mm256_broadcastsi128_si256(t);
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        let full = nb / 4 * 4;
        let mut i = 0;
        while i < full {
            // SAFETY: blocks i..i + 4 exist in `w`, Q8_0 blocks 2i..2i + 8 in every `a[r]`.
            unsafe {
                let g = group(w.add(i * BW), table);
                for r in 0..R {
                    acc[r] = add_group(acc[r], &g, a[r].add(2 * i * BA));
                }
            }
            i += 4;
        }
        if i < nb {
            let k = nb - i;
            let mut wt = [0u8; 4 * BW];
            // SAFETY: the last k blocks of `w`.
            wt[..k * BW]
                .copy_from_slice(unsafe { std::slice::from_raw_parts(w.add(i * BW), k * BW) });
            // SAFETY: `wt` holds four blocks.
            let g = unsafe { group(wt.as_ptr(), table) };
            for r in 0..R {
                let mut at = [0u8; 8 * BA];
                // SAFETY: the last 2k Q8_0 blocks of `a[r]`.
                at[..2 * k * BA].copy_from_slice(unsafe {
                    std::slice::from_raw_parts(a[r].add(2 * i * BA), 2 * k * BA)
                });
                // SAFETY: `at` holds eight blocks.
                acc[r] = unsafe { add_group(acc[r], &g, at.as_ptr()) };
            }
        }
        acc.map(|[lo, hi]| fold8(_mm256_add_ps(lo, hi)))
    }
}
