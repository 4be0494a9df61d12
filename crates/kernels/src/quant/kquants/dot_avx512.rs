//! AVX-512 (F/BW/VL/DQ + VNNI) row kernels of Q4_K and Q6_K against Q8_K activations, one row
//! and four rows, bit-identical to the references in `reference`.
//!
//! Unsigned quants, `vpmaddubsw` for 16-bit pair sums, then `vpdpwssd` multiplies them by the
//! sub-block scales (permuted into place with `vpermw`) and accumulates in 32 bits. Q4_K's mins
//! and Q6_K's +32 offset are folded into the activations' 16-value block sums (`bsums`).
//!
//! Every kernel is a safe function that checks slice lengths before any pointer arithmetic; the
//! `unsafe` inside is the `#[target_feature]` call, made after the dispatcher confirmed the CPU
//! has those features.

use crate::simd::{check_row, VecDot4Fn, VecDotFn};
use crate::types::{GgmlType, QK_K};
use std::arch::x86_64::*;

/// The one-row and four-row kernels of `ty` at this level, if it has them.
pub(super) fn rows(ty: GgmlType) -> Option<(VecDotFn, Option<VecDot4Fn>)> {
    let k: (VecDotFn, VecDot4Fn) = match ty {
        GgmlType::Q4_K => (q4_k, q4_k_x4),
        GgmlType::Q6_K => (q6_k, q6_k_x4),
        _ => return None,
    };
    Some((k.0, Some(k.1)))
}

/// One-row and four-row safe wrappers.
macro_rules! k_family {
    ($one:ident, $four:ident, $ty:expr, $rows:ident) => {
        fn $one(n: usize, w: &[u8], a: &[u8]) -> f32 {
            check_row($ty, n, w, a);
            // SAFETY: `w` and `a` hold n / 256 blocks (checked above); features from dispatch.
            let [s] = unsafe { imp::$rows::<1>(n / QK_K, w.as_ptr(), [a.as_ptr()]) };
            s
        }

        fn $four(n: usize, w: &[u8], a: &[&[u8]; 4]) -> [f32; 4] {
            for a in a {
                check_row($ty, n, w, a);
            }
            let rows = [a[0].as_ptr(), a[1].as_ptr(), a[2].as_ptr(), a[3].as_ptr()];
            // SAFETY: as above, for each of the four activation rows.
            unsafe { imp::$rows::<4>(n / QK_K, w.as_ptr(), rows) }
        }
    };
}

k_family!(q4_k, q4_k_x4, GgmlType::Q4_K, q4k_rows);
k_family!(q6_k, q6_k_x4, GgmlType::Q6_K, q6k_rows);

mod imp {
    use super::*;
    use crate::blocks::{BlockQ4K, BlockQ6K, BlockQ8K};
    use crate::simd::avx512::prims::*;
    use std::mem::size_of;

    const BQ8K: usize = size_of::<BlockQ8K>();
    /// Offset of `bsums` in a Q8_K block.
    const BSUMS: usize = 4 + QK_K;

    /// `vpermw` indices: for Q4_K step `j`, 16-bit lanes 0..16 take scale `2j`, lanes 16..32
    /// scale `2j + 1`.
    static Q4K_SCALE_IDX: [[i16; 32]; 4] = {
        let mut t = [[0i16; 32]; 4];
        let mut j = 0;
        while j < 4 {
            let mut e = 0;
            while e < 32 {
                t[j][e] = (2 * j + e / 16) as i16;
                e += 1;
            }
            j += 1;
        }
        t
    };

    /// `vpermw` indices: for Q6_K quarter `q` (64 values), 16-bit lanes `8s..8s + 8` take
    /// scale `4q + s`.
    static Q6K_SCALE_IDX: [[i16; 32]; 4] = {
        let mut t = [[0i16; 32]; 4];
        let mut q = 0;
        while q < 4 {
            let mut e = 0;
            while e < 32 {
                t[q][e] = (4 * q + e / 8) as i16;
                e += 1;
            }
            q += 1;
        }
        t
    };

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    fn load_idx(t: &[i16; 32]) -> __m512i {
        // SAFETY: `t` is 64 readable bytes.
        unsafe { _mm512_loadu_si512(t.as_ptr().cast()) }
    }

    /// The eight 6-bit scales and eight 6-bit mins of a Q4_K block, one per byte, from the 12
    /// packed bytes (`quant::kquants::scale_min_k4` for all eight sub-blocks at once).
    #[inline]
    fn q4k_scales_mins(packed: [u8; 12]) -> (u64, u64) {
        let u =
            |k: usize| u32::from_le_bytes([packed[k], packed[k + 1], packed[k + 2], packed[k + 3]]);
        let (u0, u1, u2) = (u(0), u(4), u(8));
        // Sub-blocks 0..4: the low 6 bits of bytes 0..4 (scales) and 4..8 (mins).
        let (sc_lo, mn_lo) = (u0 & 0x3f3f_3f3f, u1 & 0x3f3f_3f3f);
        // Sub-blocks 4..8: a nibble of bytes 8..12, topped by the 2 spare bits of bytes 0..8.
        let sc_hi = (u2 & 0x0f0f_0f0f) | ((u0 >> 6) & 0x0303_0303) << 4;
        let mn_hi = ((u2 >> 4) & 0x0f0f_0f0f) | ((u1 >> 6) & 0x0303_0303) << 4;
        (
            sc_lo as u64 | (sc_hi as u64) << 32,
            mn_lo as u64 | (mn_hi as u64) << 32,
        )
    }

    /// `R` dot products of one row of `nb` Q4_K blocks with `R` rows of Q8_K activations; each
    /// weight block is decoded once for all rows, and every row's arithmetic is the same whatever
    /// `R` is (so the four-row kernel equals the one-row one bit for bit).
    ///
    /// # Safety: `w` points to `nb` Q4_K blocks, each `a[r]` to `nb` Q8_K blocks.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    pub(super) unsafe fn q4k_rows<const R: usize>(
        nb: usize,
        w: *const u8,
        a: [*const u8; R],
    ) -> [f32; R] {
        let m4 = _mm512_set1_epi8(0x0F);
        let idx = [
            load_idx(&Q4K_SCALE_IDX[0]),
            load_idx(&Q4K_SCALE_IDX[1]),
            load_idx(&Q4K_SCALE_IDX[2]),
            load_idx(&Q4K_SCALE_IDX[3]),
        ];
        let mut acc = [_mm512_setzero_ps(); R];
        let mut acc_min = [_mm256_setzero_ps(); R];
        for i in 0..nb {
            // SAFETY: (all reads) inside block i of `w` (d, dmin, 12 scale bytes, 128 quant bytes)
            // and of each `a[r]` (d, 256 quants, 16 bsums).
            unsafe {
                let x = w.add(i * size_of::<BlockQ4K>());
                // [d, dmin] of the weights.
                let dw = _mm_cvtph_ps(_mm_cvtsi32_si128(x.cast::<i32>().read_unaligned()));
                let (dw, dmw) = (_mm_cvtss_f32(dw), _mm_cvtss_f32(_mm_movehdup_ps(dw)));
                let (sc, mn) = q4k_scales_mins(x.add(4).cast::<[u8; 12]>().read_unaligned());
                let scales =
                    _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(sc as i64)));
                // 32 bytes hold 64 values: low nibbles are sub-block 2j, high ones 2j + 1; each
                // 16-bit pair sum of step j takes its sub-block's scale.
                let mut q = [_mm512_setzero_si512(); 4];
                let mut s = [_mm512_setzero_si512(); 4];
                for j in 0..4 {
                    let b = _mm256_loadu_si256(x.add(16 + 32 * j).cast());
                    let b =
                        _mm512_inserti64x4(_mm512_castsi256_si512(b), _mm256_srli_epi16(b, 4), 1);
                    q[j] = _mm512_and_si512(b, m4);
                    s[j] = _mm512_permutexvar_epi16(idx[j], scales);
                }
                // min_k for both 16-value halves of sub-block k, against the bsums.
                let mn = _mm_cvtsi64_si128(mn as i64);
                let mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mn, mn));
                for r in 0..R {
                    let y = a[r].add(i * BQ8K);
                    let dy = y.cast::<f32>().read_unaligned();
                    let mut isum = _mm512_setzero_si512();
                    for j in 0..4 {
                        let yq = _mm512_loadu_si512(y.add(4 + 64 * j).cast());
                        isum = _mm512_dpwssd_epi32(isum, _mm512_maddubs_epi16(q[j], yq), s[j]);
                    }
                    let bsums = _mm256_loadu_si256(y.add(BSUMS).cast());
                    let msum = _mm256_madd_epi16(bsums, mins);
                    acc[r] =
                        _mm512_fmadd_ps(_mm512_set1_ps(dw * dy), _mm512_cvtepi32_ps(isum), acc[r]);
                    acc_min[r] = _mm256_fmadd_ps(
                        _mm256_set1_ps(dmw * dy),
                        _mm256_cvtepi32_ps(msum),
                        acc_min[r],
                    );
                }
            }
        }
        let mut out = [0.0f32; R];
        for r in 0..R {
            let m = _mm512_castps256_ps512(acc_min[r]);
            out[r] = _mm512_reduce_add_ps(acc[r]) - _mm512_mask_reduce_add_ps(0x00FF, m);
        }
        out
    }

    /// Like [`q4k_rows`] for Q6_K weights.
    ///
    /// # Safety: `w` points to `nb` Q6_K blocks, each `a[r]` to `nb` Q8_K blocks.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    pub(super) unsafe fn q6k_rows<const R: usize>(
        nb: usize,
        w: *const u8,
        a: [*const u8; R],
    ) -> [f32; R] {
        let m4 = _mm512_set1_epi8(0x0F);
        let m30 = _mm512_set1_epi8(0x30);
        let idx = [
            load_idx(&Q6K_SCALE_IDX[0]),
            load_idx(&Q6K_SCALE_IDX[1]),
            load_idx(&Q6K_SCALE_IDX[2]),
            load_idx(&Q6K_SCALE_IDX[3]),
        ];
        let mut acc = [_mm512_setzero_ps(); R];
        for i in 0..nb {
            // SAFETY: (all reads) inside block i of `w` (ql 128 bytes, qh 64, 16 scales, d) and of
            // each `a[r]` (d, 256 quants, 16 bsums).
            unsafe {
                let x = w.add(i * size_of::<BlockQ6K>());
                let dw =
                    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(f16_bits(x.add(208)) as i32)));
                let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(x.add(192).cast()));
                let scales = _mm512_castsi256_si512(sc16);
                // Quarter 2h + 0 is values 0..64 of half h (low nibbles of ql, qh bits 0..4),
                // quarter 2h + 1 values 64..128 (high nibbles, qh bits 4..8); unsigned, + 32.
                let mut v = [_mm512_setzero_si512(); 4];
                let mut s = [_mm512_setzero_si512(); 4];
                for half in 0..2 {
                    let ql = _mm512_loadu_si512(x.add(64 * half).cast());
                    let qh = _mm256_loadu_si256(x.add(128 + 32 * half).cast());
                    let qh =
                        _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
                    v[2 * half] = _mm512_or_si512(
                        _mm512_and_si512(ql, m4),
                        _mm512_and_si512(_mm512_slli_epi16(qh, 4), m30),
                    );
                    v[2 * half + 1] = _mm512_or_si512(
                        _mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                        _mm512_and_si512(qh, m30),
                    );
                    s[2 * half] = _mm512_permutexvar_epi16(idx[2 * half], scales);
                    s[2 * half + 1] = _mm512_permutexvar_epi16(idx[2 * half + 1], scales);
                }
                for r in 0..R {
                    let y = a[r].add(i * BQ8K);
                    let dy = y.cast::<f32>().read_unaligned();
                    let mut isum = _mm512_setzero_si512();
                    for k in 0..4 {
                        let yq = _mm512_loadu_si512(y.add(4 + 64 * k).cast());
                        isum = _mm512_dpwssd_epi32(isum, _mm512_maddubs_epi16(v[k], yq), s[k]);
                    }
                    // The quants are stored + 32: subtract 32 · Σ scale_k · bsums_k.
                    let bsums = _mm256_loadu_si256(y.add(BSUMS).cast());
                    let offset = _mm256_slli_epi32(_mm256_madd_epi16(bsums, sc16), 5);
                    let isum = _mm512_sub_epi32(isum, _mm512_zextsi256_si512(offset));
                    acc[r] =
                        _mm512_fmadd_ps(_mm512_set1_ps(dw * dy), _mm512_cvtepi32_ps(isum), acc[r]);
                }
            }
        }
        let mut out = [0.0f32; R];
        for r in 0..R {
            out[r] = _mm512_reduce_add_ps(acc[r]);
        }
        out
    }
}
