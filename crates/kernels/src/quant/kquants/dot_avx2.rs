//! AVX2 + FMA + F16C row kernels of Q4_K and Q6_K against Q8_K activations, bit-identical to
//! the references in `reference`. The weights stay unsigned and the offsets are folded into the
//! activations' block sums.
//!
//! Every kernel is a safe `fn(n, w, a)` that checks the slice lengths before any pointer
//! arithmetic; the `unsafe` inside is only the `#[target_feature]` call, made after the dispatcher
//! confirmed the CPU has those features.

use crate::blocks::*;
use crate::simd::{check_row, VecDot4Fn, VecDotFn};
use crate::types::{GgmlType, QK_K};
use std::arch::x86_64::*;

/// The one-row kernel of `ty` at this level, if it has one (no four-row kernels here).
pub(super) fn rows(ty: GgmlType) -> Option<(VecDotFn, Option<VecDot4Fn>)> {
    let k: VecDotFn = match ty {
        GgmlType::Q4_K => q4_k,
        GgmlType::Q6_K => q6_k,
        _ => return None,
    };
    Some((k, None))
}

fn q4_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    check_row(GgmlType::Q4_K, n, w, a);
    // SAFETY: as above.
    unsafe { imp::q4_k(n / QK_K, w, a) }
}

fn q6_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    check_row(GgmlType::Q6_K, n, w, a);
    // SAFETY: as above.
    unsafe { imp::q6_k(n / QK_K, w, a) }
}

mod imp {
    use super::*;
    use crate::quant::kquants::scale_min_k4;
    use crate::simd::avx2::prims::*;

    const BQ8K: usize = std::mem::size_of::<BlockQ8K>();

    const BQ4K: usize = std::mem::size_of::<BlockQ4K>();

    const BQ6K: usize = std::mem::size_of::<BlockQ6K>();

    fn q8k_parts(ab: &[u8]) -> (f32, [i16; 16]) {
        let d = f32::from_le_bytes([ab[0], ab[1], ab[2], ab[3]]);
        let mut bsums = [0i16; 16];
        for (k, s) in bsums.iter_mut().enumerate() {
            let o = 4 + QK_K + 2 * k;
            *s = i16::from_le_bytes([ab[o], ab[o + 1]]);
        }
        (d, bsums)
    }

    /// # Safety: `w` holds `nb` Q4_K blocks, `a` `nb` Q8_K blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q4_k(nb: usize, w: &[u8], a: &[u8]) -> f32 {
        let mut sum = 0.0f32;
        for i in 0..nb {
            let (wb, ab) = (&w[i * BQ4K..(i + 1) * BQ4K], &a[i * BQ8K..(i + 1) * BQ8K]);
            let (dy, bsums) = q8k_parts(ab);
            let d = f16_at(&wb[0..2]) * dy;
            let dmin = f16_at(&wb[2..4]) * dy;
            let scales: &[u8; 12] = wb[4..16].try_into().expect("12 bytes");
            let mut isum = _mm256_setzero_si256();
            let mut msum = 0i32;
            for j in 0..4 {
                let (sc1, m1) = scale_min_k4(2 * j, scales);
                let (sc2, m2) = scale_min_k4(2 * j + 1, scales);
                // SAFETY: qs (128 bytes) starts at 16; y quants (256) at 4.
                let (q, y1, y2) = unsafe {
                    (
                        load32(wb.as_ptr().add(16 + 32 * j)),
                        load32(ab.as_ptr().add(4 + 64 * j)),
                        load32(ab.as_ptr().add(4 + 64 * j + 32)),
                    )
                };
                let lo = _mm256_and_si256(q, _mm256_set1_epi8(0x0F));
                let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), _mm256_set1_epi8(0x0F));
                let p1 = dpbusd(_mm256_setzero_si256(), lo, y1);
                let p2 = dpbusd(_mm256_setzero_si256(), hi, y2);
                isum =
                    _mm256_add_epi32(isum, _mm256_mullo_epi32(p1, _mm256_set1_epi32(sc1 as i32)));
                isum =
                    _mm256_add_epi32(isum, _mm256_mullo_epi32(p2, _mm256_set1_epi32(sc2 as i32)));
                msum += m1 as i32 * (bsums[4 * j] as i32 + bsums[4 * j + 1] as i32)
                    + m2 as i32 * (bsums[4 * j + 2] as i32 + bsums[4 * j + 3] as i32);
            }
            sum += d * hsum_epi32(isum) as f32 - dmin * msum as f32;
        }
        sum
    }

    /// # Safety: `w` holds `nb` Q6_K blocks, `a` `nb` Q8_K blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q6_k(nb: usize, w: &[u8], a: &[u8]) -> f32 {
        let m4 = _mm256_set1_epi8(0x0F);
        let m2 = _mm256_set1_epi8(3);
        let mut sum = 0.0f32;
        for i in 0..nb {
            let (wb, ab) = (&w[i * BQ6K..(i + 1) * BQ6K], &a[i * BQ8K..(i + 1) * BQ8K]);
            let (dy, bsums) = q8k_parts(ab);
            let d = f16_at(&wb[208..210]) * dy;
            let sc: [i8; 16] = std::array::from_fn(|k| wb[192 + k] as i8);
            let mut isum = _mm256_setzero_si256();
            for half in 0..2 {
                // SAFETY: ql is 128 bytes at 0, qh 64 bytes at 128; y quants at 4.
                let (ql0, ql1, qh) = unsafe {
                    (
                        load32(wb.as_ptr().add(64 * half)),
                        load32(wb.as_ptr().add(64 * half + 32)),
                        load32(wb.as_ptr().add(128 + 32 * half)),
                    )
                };
                let v = [
                    _mm256_or_si256(
                        _mm256_and_si256(ql0, m4),
                        _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(ql1, m4),
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4),
                    ),
                ];
                for (k, v) in v.iter().enumerate() {
                    // SAFETY: 32 y quants for this group of the half.
                    let y = unsafe { load32(ab.as_ptr().add(4 + 128 * half + 32 * k)) };
                    let p = dpbusd(_mm256_setzero_si256(), *v, y);
                    let s0 = sc[8 * half + 2 * k] as i32;
                    let s1 = sc[8 * half + 2 * k + 1] as i32;
                    let scale = _mm256_set_epi32(s1, s1, s1, s1, s0, s0, s0, s0);
                    isum = _mm256_add_epi32(isum, _mm256_mullo_epi32(p, scale));
                }
            }
            // The unsigned quants carry +32: subtract 32 * scale * (sum of y) per 16.
            let offset: i32 = (0..16).map(|k| sc[k] as i32 * bsums[k] as i32).sum();
            sum += d * (hsum_epi32(isum) - 32 * offset) as f32;
        }
        sum
    }
}
