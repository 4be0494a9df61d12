//! Softmax, SwiGLU and GeGLU rows (`ops::softmax`, `ops::swiglu`, `ops::geglu`) on 512-bit and
//! 256-bit registers.
//! Every lane runs the reference's operations in its order (`ops::exp` included, and the sums of
//! 16 values reduced as `ops::sum16` does), and the last `len % 16` values go through the
//! reference itself, so the results equal it bit for bit.

use crate::ops::{
    exp, gelu, silu, EXP_HI, EXP_LO, EXP_POLY, GELU_A, GELU_NEG_2C, LN2_HI, LN2_LO, LOG2E,
};
use std::arch::x86_64::*;

/// `ops::softmax`'s last steps on the `len % 16` values after the SIMD part: their exponentials
/// added to `sum` one by one.
fn exp_tail(tail: &mut [f32], max: f32, sum: &mut f64) {
    for v in tail {
        *v = exp(*v - max);
        *sum += *v as f64;
    }
}

pub mod avx512 {
    use super::*;

    /// `ops::softmax`.
    pub fn softmax(x: &mut [f32], scale: f32) {
        // SAFETY: the dispatcher confirmed the CPU has this function's features.
        unsafe { imp::softmax(x, scale) }
    }

    /// `ops::swiglu` (same panics).
    pub fn swiglu(gate: &mut [f32], up: &[f32]) {
        assert_eq!(gate.len(), up.len(), "swiglu: length mismatch");
        // SAFETY: as above.
        unsafe { imp::swiglu(gate, up) }
    }

    /// `ops::geglu` (same panics).
    pub fn geglu(gate: &mut [f32], up: &[f32]) {
        assert_eq!(gate.len(), up.len(), "geglu: length mismatch");
        // SAFETY: as above.
        unsafe { imp::geglu(gate, up) }
    }

    mod imp {
        use super::*;

        #[inline]
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
        fn set1(v: f32) -> __m512 {
            _mm512_set1_ps(v)
        }

        /// `ops::exp` in every lane.
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
        fn exp16(x: __m512) -> __m512 {
            const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
            let n = _mm512_roundscale_ps::<NEAREST>(_mm512_mul_ps(x, set1(LOG2E)));
            let n = _mm512_min_ps(_mm512_max_ps(n, set1(-126.0)), set1(127.0));
            let r = _mm512_fnmadd_ps(n, set1(LN2_HI), x);
            let r = _mm512_fnmadd_ps(n, set1(LN2_LO), r);
            let mut p = set1(EXP_POLY[7]);
            for &c in EXP_POLY[..7].iter().rev() {
                p = _mm512_fmadd_ps(p, r, set1(c));
            }
            let biased = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
            let y = _mm512_mul_ps(p, _mm512_castsi512_ps(_mm512_slli_epi32::<23>(biased)));
            let over = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, set1(EXP_HI));
            let y = _mm512_mask_blend_ps(over, y, set1(f32::INFINITY));
            let under = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, set1(EXP_LO));
            let y = _mm512_mask_blend_ps(under, y, _mm512_setzero_ps());
            _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x), y, x)
        }

        /// `ops::sum16` of the lanes of `v`.
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
        fn sum16(v: __m512) -> f32 {
            let s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps::<1>(v));
            let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8));
            let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps::<1>(s2, s2)))
        }

        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
        pub(super) fn softmax(x: &mut [f32], scale: f32) {
            let (body, tail) = x.split_at_mut(x.len() / 16 * 16);
            let mut vmax = set1(f32::NEG_INFINITY);
            for c in body.chunks_exact_mut(16) {
                // SAFETY: `c` holds 16 f32 (all loads and stores here).
                unsafe {
                    let v = _mm512_mul_ps(_mm512_loadu_ps(c.as_ptr()), set1(scale));
                    _mm512_storeu_ps(c.as_mut_ptr(), v);
                    vmax = _mm512_max_ps(vmax, v);
                }
            }
            let mut max = _mm512_reduce_max_ps(vmax);
            for v in tail.iter_mut() {
                *v *= scale;
                max = max.max(*v);
            }
            let mut sum = 0.0f64;
            for c in body.chunks_exact_mut(16) {
                // SAFETY: as above.
                unsafe {
                    let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(c.as_ptr()), set1(max)));
                    _mm512_storeu_ps(c.as_mut_ptr(), e);
                    sum += sum16(e) as f64;
                }
            }
            exp_tail(tail, max, &mut sum);
            let inv = (1.0 / sum) as f32;
            for c in body.chunks_exact_mut(16) {
                // SAFETY: as above.
                unsafe {
                    let v = _mm512_mul_ps(_mm512_loadu_ps(c.as_ptr()), set1(inv));
                    _mm512_storeu_ps(c.as_mut_ptr(), v);
                }
            }
            tail.iter_mut().for_each(|v| *v *= inv);
        }

        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
        pub(super) fn swiglu(gate: &mut [f32], up: &[f32]) {
            let body = gate.len() / 16 * 16;
            let one = set1(1.0);
            for (g, u) in gate[..body].chunks_exact_mut(16).zip(up.chunks_exact(16)) {
                // SAFETY: `g` and `u` hold 16 f32 each.
                unsafe {
                    let x = _mm512_loadu_ps(g.as_ptr());
                    let neg = _mm512_xor_ps(x, set1(-0.0));
                    let s = _mm512_div_ps(x, _mm512_add_ps(one, exp16(neg)));
                    let y = _mm512_mul_ps(s, _mm512_loadu_ps(u.as_ptr()));
                    _mm512_storeu_ps(g.as_mut_ptr(), y);
                }
            }
            for (g, &u) in gate[body..].iter_mut().zip(&up[body..]) {
                *g = silu(*g) * u;
            }
        }

        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
        pub(super) fn geglu(gate: &mut [f32], up: &[f32]) {
            let body = gate.len() / 16 * 16;
            let one = set1(1.0);
            for (g, u) in gate[..body].chunks_exact_mut(16).zip(up.chunks_exact(16)) {
                // SAFETY: `g` and `u` hold 16 f32 each.
                unsafe {
                    let x = _mm512_loadu_ps(g.as_ptr());
                    // `ops::gelu`'s operations in its order, unfused.
                    let t = _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(x, x), set1(GELU_A)), one);
                    let t = _mm512_mul_ps(_mm512_mul_ps(t, x), set1(GELU_NEG_2C));
                    let s = _mm512_div_ps(x, _mm512_add_ps(one, exp16(t)));
                    let y = _mm512_mul_ps(s, _mm512_loadu_ps(u.as_ptr()));
                    _mm512_storeu_ps(g.as_mut_ptr(), y);
                }
            }
            for (g, &u) in gate[body..].iter_mut().zip(&up[body..]) {
                *g = gelu(*g) * u;
            }
        }
    }
}

pub mod avx2 {
    use super::*;

    /// `ops::softmax`.
    pub fn softmax(x: &mut [f32], scale: f32) {
        // SAFETY: the dispatcher confirmed the CPU has this function's features.
        unsafe { imp::softmax(x, scale) }
    }

    /// `ops::swiglu` (same panics).
    pub fn swiglu(gate: &mut [f32], up: &[f32]) {
        assert_eq!(gate.len(), up.len(), "swiglu: length mismatch");
        // SAFETY: as above.
        unsafe { imp::swiglu(gate, up) }
    }

    /// `ops::geglu` (same panics).
    pub fn geglu(gate: &mut [f32], up: &[f32]) {
        assert_eq!(gate.len(), up.len(), "geglu: length mismatch");
        // SAFETY: as above.
        unsafe { imp::geglu(gate, up) }
    }

    mod imp {
        use super::*;

        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        fn set1(v: f32) -> __m256 {
            _mm256_set1_ps(v)
        }

        /// `ops::exp` in every lane.
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        fn exp8(x: __m256) -> __m256 {
            const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
            let n = _mm256_round_ps::<NEAREST>(_mm256_mul_ps(x, set1(LOG2E)));
            let n = _mm256_min_ps(_mm256_max_ps(n, set1(-126.0)), set1(127.0));
            let r = _mm256_fnmadd_ps(n, set1(LN2_HI), x);
            let r = _mm256_fnmadd_ps(n, set1(LN2_LO), r);
            let mut p = set1(EXP_POLY[7]);
            for &c in EXP_POLY[..7].iter().rev() {
                p = _mm256_fmadd_ps(p, r, set1(c));
            }
            let biased = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
            let y = _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32::<23>(biased)));
            let over = _mm256_cmp_ps::<_CMP_GT_OQ>(x, set1(EXP_HI));
            let y = _mm256_blendv_ps(y, set1(f32::INFINITY), over);
            let under = _mm256_cmp_ps::<_CMP_LT_OQ>(x, set1(EXP_LO));
            let y = _mm256_blendv_ps(y, _mm256_setzero_ps(), under);
            _mm256_blendv_ps(y, x, _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x))
        }

        /// `ops::sum16` of the lanes of `lo` (values 0..8) and `hi` (8..16).
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        fn sum16(lo: __m256, hi: __m256) -> f32 {
            let s8 = _mm256_add_ps(lo, hi);
            let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8));
            let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps::<1>(s2, s2)))
        }

        /// The maximum of the lanes of `v` (exact in any order).
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        fn max8(v: __m256) -> f32 {
            let m4 = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            _mm_cvtss_f32(_mm_max_ss(m2, _mm_shuffle_ps::<1>(m2, m2)))
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) fn softmax(x: &mut [f32], scale: f32) {
            let (body, tail) = x.split_at_mut(x.len() / 16 * 16);
            let mut vmax = set1(f32::NEG_INFINITY);
            for c in body.chunks_exact_mut(8) {
                // SAFETY: `c` holds 8 f32 (all loads and stores here).
                unsafe {
                    let v = _mm256_mul_ps(_mm256_loadu_ps(c.as_ptr()), set1(scale));
                    _mm256_storeu_ps(c.as_mut_ptr(), v);
                    vmax = _mm256_max_ps(vmax, v);
                }
            }
            let mut max = max8(vmax);
            for v in tail.iter_mut() {
                *v *= scale;
                max = max.max(*v);
            }
            let mut sum = 0.0f64;
            for c in body.chunks_exact_mut(16) {
                // SAFETY: `c` holds 16 f32.
                unsafe {
                    let p = c.as_mut_ptr();
                    let lo = exp8(_mm256_sub_ps(_mm256_loadu_ps(p), set1(max)));
                    let hi = exp8(_mm256_sub_ps(_mm256_loadu_ps(p.add(8)), set1(max)));
                    _mm256_storeu_ps(p, lo);
                    _mm256_storeu_ps(p.add(8), hi);
                    sum += sum16(lo, hi) as f64;
                }
            }
            exp_tail(tail, max, &mut sum);
            let inv = (1.0 / sum) as f32;
            for c in body.chunks_exact_mut(8) {
                // SAFETY: `c` holds 8 f32.
                unsafe {
                    let v = _mm256_mul_ps(_mm256_loadu_ps(c.as_ptr()), set1(inv));
                    _mm256_storeu_ps(c.as_mut_ptr(), v);
                }
            }
            tail.iter_mut().for_each(|v| *v *= inv);
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) fn swiglu(gate: &mut [f32], up: &[f32]) {
            let body = gate.len() / 8 * 8;
            let one = set1(1.0);
            for (g, u) in gate[..body].chunks_exact_mut(8).zip(up.chunks_exact(8)) {
                // SAFETY: `g` and `u` hold 8 f32 each.
                unsafe {
                    let x = _mm256_loadu_ps(g.as_ptr());
                    let neg = _mm256_xor_ps(x, set1(-0.0));
                    let s = _mm256_div_ps(x, _mm256_add_ps(one, exp8(neg)));
                    let y = _mm256_mul_ps(s, _mm256_loadu_ps(u.as_ptr()));
                    _mm256_storeu_ps(g.as_mut_ptr(), y);
                }
            }
            for (g, &u) in gate[body..].iter_mut().zip(&up[body..]) {
                *g = silu(*g) * u;
            }
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) fn geglu(gate: &mut [f32], up: &[f32]) {
            let body = gate.len() / 8 * 8;
            let one = set1(1.0);
            for (g, u) in gate[..body].chunks_exact_mut(8).zip(up.chunks_exact(8)) {
                // SAFETY: `g` and `u` hold 8 f32 each.
                unsafe {
                    let x = _mm256_loadu_ps(g.as_ptr());
                    // `ops::gelu`'s operations in its order, unfused.
                    let t = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(x, x), set1(GELU_A)), one);
                    let t = _mm256_mul_ps(_mm256_mul_ps(t, x), set1(GELU_NEG_2C));
                    let s = _mm256_div_ps(x, _mm256_add_ps(one, exp8(t)));
                    let y = _mm256_mul_ps(s, _mm256_loadu_ps(u.as_ptr()));
                    _mm256_storeu_ps(g.as_mut_ptr(), y);
                }
            }
            for (g, &u) in gate[body..].iter_mut().zip(&up[body..]) {
                *g = gelu(*g) * u;
            }
        }
    }
}
