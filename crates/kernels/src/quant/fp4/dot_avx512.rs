//! AVX-512 (F/BW/VL/DQ + VNNI) row kernels of NVFP4 against Q8_0 activations, one row and four
//! rows (each weight block decoded once for the four), bit-identical to the reference
//! `nvfp4::vec_dot_nvfp4_q8_0`.
//!
//! One block's 64 values fill one register, sub-block `s` in 128-bit lane `s`. The signed weights
//! (`kvalues_mxfp4` via `vpshufb`) are the signed operand of `vpdpbusd`; the activations are made
//! unsigned (`y ^ 0x80 = y + 128`), and the extra `128 · Σ x` per lane, which depends on the
//! weights only, is subtracted by starting the accumulation from its negative. The integer sums
//! are exact for every byte. Four blocks' partial sums are transposed into one register of
//! sixteen sub-block sums, lane `4 s + b` for sub-block `s` of block `b`: the reference's running
//! sums. Each lane then takes `dy * d`, times the sum, plus the running sum (three roundings, as
//! in the reference), and the sixteen lanes are folded as in `nvfp4::fold16`.
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

mod imp {
    use super::*;
    use crate::quant::fp4::KVALUES_MXFP4;
    use crate::simd::avx512::prims::f16_bits;

    /// Bytes of an NVFP4 block and of a Q8_0 block.
    const BW: usize = 36;
    const BA: usize = 34;

    /// Four weight blocks, decoded: values, the negated `128 · Σ x` per lane, and the sixteen
    /// sub-block scales in lane `4 s + b`.
    struct Group {
        x: [__m512i; 4],
        neg: [__m512i; 4],
        d: __m512,
    }

    /// One block's 64 values at `p` as signed bytes in value order (sub-block `s` in lane `s`).
    ///
    /// # Safety: `p` points to a whole NVFP4 block.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn values(p: *const u8, table: __m512i) -> __m512i {
        // SAFETY: the 32 nibble bytes follow the 4 scale bytes.
        let q = unsafe { _mm256_loadu_si256(p.add(4).cast()) };
        // Lane s: the 8 bytes of sub-block s twice, the second copy shifted to its high nibbles.
        let idx = _mm512_set_epi64(3, 3, 2, 2, 1, 1, 0, 0);
        let z = _mm512_permutexvar_epi64(idx, _mm512_castsi256_si512(q));
        let z = _mm512_mask_srli_epi16(z, 0xF0F0_F0F0, z, 4);
        _mm512_shuffle_epi8(table, _mm512_and_si512(z, _mm512_set1_epi8(0xF)))
    }

    /// The UE4M3 bytes of `t` as f32 (`ggml_ue4m3_to_fp32`): the byte's low seven bits moved into
    /// an f16's exponent and mantissa (`<< 7`) give `2^(e-15) (1 + m/8)` (or `m 2^-17`), exactly;
    /// times 2^7 that is ggml's value. 0x7F gives 0 (bit 7 alone is ignored, as in ggml).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    pub(in crate::quant::fp4) fn ue4m3_x16(t: __m128i) -> __m512 {
        let nan = _mm_cmpeq_epi8(t, _mm_set1_epi8(0x7F));
        let t = _mm_andnot_si128(nan, _mm_and_si128(t, _mm_set1_epi8(0x7F)));
        let h = _mm256_slli_epi16::<7>(_mm256_cvtepu8_epi16(t));
        _mm512_mul_ps(_mm512_cvtph_ps(h), _mm512_set1_ps(128.0))
    }

    /// The scale bytes of four blocks at `p` (block b's `d[s]` at `36 b + s`) in lane order
    /// `4 s + b`.
    ///
    /// # Safety: four whole NVFP4 blocks at `p`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    pub(in crate::quant::fp4) unsafe fn scale_bytes(p: *const u8) -> __m128i {
        // SAFETY: each block starts with its 4 scale bytes.
        let d = |b: usize| unsafe { p.add(b * BW).cast::<i32>().read_unaligned() };
        let t = _mm_setr_epi32(d(0), d(1), d(2), d(3));
        _mm_shuffle_epi8(
            t,
            _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15),
        )
    }

    /// The f16 scales of eight Q8_0 blocks at `q` as f32, in lanes 0..8.
    ///
    /// # Safety: eight whole Q8_0 blocks at `q`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    pub(in crate::quant::fp4) unsafe fn act_scales(q: *const u8) -> __m256 {
        // SAFETY: each block starts with its scale.
        let d = |k: usize| unsafe { f16_bits(q.add(k * BA)) as i16 };
        _mm256_cvtph_ps(_mm_setr_epi16(
            d(0),
            d(1),
            d(2),
            d(3),
            d(4),
            d(5),
            d(6),
            d(7),
        ))
    }

    /// Decodes the four weight blocks at `p`.
    ///
    /// # Safety: four whole NVFP4 blocks at `p`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn group(p: *const u8, table: __m512i) -> Group {
        let zero = _mm512_setzero_si512();
        let high = _mm512_set1_epi8(-128);
        // SAFETY: blocks 0..4 at `p` (the caller's guarantee).
        let x: [__m512i; 4] = std::array::from_fn(|b| unsafe { values(p.add(b * BW), table) });
        let neg = x.map(|x| _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, high, x)));
        // SAFETY: as above.
        let d = ue4m3_x16(unsafe { scale_bytes(p) });
        Group { x, neg, d }
    }

    /// Lane `4 s + b` of the result: the sum of lanes `4 s .. 4 s + 4` of `r[b]`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    fn transpose_sum(r: [__m512i; 4]) -> __m512i {
        let p = _mm512_add_epi32(
            _mm512_unpacklo_epi32(r[0], r[1]),
            _mm512_unpackhi_epi32(r[0], r[1]),
        );
        let q = _mm512_add_epi32(
            _mm512_unpacklo_epi32(r[2], r[3]),
            _mm512_unpackhi_epi32(r[2], r[3]),
        );
        _mm512_add_epi32(_mm512_unpacklo_epi64(p, q), _mm512_unpackhi_epi64(p, q))
    }

    /// `acc` plus the sixteen terms of group `g` against the eight Q8_0 blocks at `q`.
    ///
    /// # Safety: eight whole Q8_0 blocks at `q`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn add_group(acc: __m512, g: &Group, q: *const u8) -> __m512 {
        let high = _mm512_set1_epi8(-128);
        let r: [__m512i; 4] = std::array::from_fn(|b| {
            // SAFETY: Q8_0 blocks 2b and 2b + 1 at `q`, 32 quants after each 2-byte scale; the
            // masked load reads only the second block's quants (at p1 - 32 + 32).
            let y = unsafe {
                let p0 = q.add(2 * b * BA + 2);
                let p1 = p0.add(BA);
                let low = _mm512_zextsi256_si512(_mm256_loadu_si256(p0.cast()));
                _mm512_mask_loadu_epi8(low, 0xFFFF_FFFF_0000_0000, p1.wrapping_sub(32).cast())
            };
            _mm512_dpbusd_epi32(g.neg[b], _mm512_xor_si512(y, high), g.x[b])
        });
        let sums = _mm512_cvtepi32_ps(transpose_sum(r));
        // Lane 4 s + b takes Q8_0 block 2 b + s / 2.
        let idx = _mm512_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6, 1, 3, 5, 7, 1, 3, 5, 7);
        // SAFETY: the caller's guarantee.
        let dy = _mm512_permutexvar_ps(idx, _mm512_castps256_ps512(unsafe { act_scales(q) }));
        let term = _mm512_mul_ps(_mm512_mul_ps(dy, g.d), sums);
        _mm512_add_ps(acc, term)
    }

    /// `nvfp4::fold16` of the sixteen lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    fn fold16(acc: __m512) -> f32 {
        let h = _mm256_add_ps(
            _mm512_castps512_ps256(acc),
            _mm512_extractf32x8_ps::<1>(acc),
        );
        crate::quant::fp4::dot_avx2::fold8(h)
    }

    /// `R` dot products of one row of `nb` NVFP4 blocks with `R` rows of Q8_0 activations, four
    /// blocks per step; a last group of fewer is copied into zeroed blocks, whose terms are +0
    /// and leave the sums as they are (a running sum that starts at +0 is never -0).
    ///
    /// # Safety: `w` points to `nb` NVFP4 blocks, each `a[r]` to `2 nb` Q8_0 blocks.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    pub(super) unsafe fn rows<const R: usize>(
        nb: usize,
        w: *const u8,
        a: [*const u8; R],
    ) -> [f32; R] {
        // SAFETY: the table is 16 bytes.
        let table =
            _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(KVALUES_MXFP4.as_ptr().cast()) });
        let mut acc = [_mm512_setzero_ps(); R];
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
        acc.map(|acc| fold16(acc))
    }
}
