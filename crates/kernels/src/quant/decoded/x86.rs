//! The generic dot products over decoded weights (`quant::decoded`) at AVX2 and AVX-512 VNNI,
//! bit-identical to the scalar references there: the integer sums are exact (wrapping i32
//! arithmetic whose true result fits, see `DecodedK`), and the float scaling of each block is the
//! reference's, in block order.
//!
//! Each public kernel is a safe function that checks slice lengths first; the `unsafe` inside is
//! the `#[target_feature]` call, made only where the dispatcher saw the features.

use super::{sum4, Decoded32, DecodedK};
use crate::blocks::{BlockQ8K, BlockQ8_0, BlockQ8_1};
use crate::view::blocks_of;
use std::arch::x86_64::*;

/// The dot products over decoded 32-value blocks against Q8_0 and Q8_1 activations, with the
/// `isum32` of the module they are expanded in, whole loops inside one `#[target_feature]`
/// function so that `isum32` and the F16C conversions inline.
macro_rules! dot_32 {
    ($features:literal) => {
        pub(crate) fn dot_32_q8_0(w: &[Decoded32], a: &[u8]) -> f32 {
            let a = blocks_of::<BlockQ8_0>(a);
            assert_eq!(w.len(), a.len(), "dot_32: block counts differ");
            // SAFETY: dispatched only where the CPU has `$features` (`Isa::Avx2` includes FMA
            // and F16C; `Isa::Avx512Vnni` includes AVX2).
            unsafe { q8_0_impl(w, &a) }
        }

        #[target_feature(enable = $features)]
        fn q8_0_impl(w: &[Decoded32], a: &[BlockQ8_0]) -> f32 {
            sum4!(w.len(), |i| {
                let (x, y) = (&w[i], &a[i]);
                (x.d * f16_to_f32(y.d.to_bits())) * isum32(&x.q, &y.qs) as f32
            })
        }

        pub(crate) fn dot_32_q8_1(w: &[Decoded32], a: &[u8]) -> f32 {
            let a = blocks_of::<BlockQ8_1>(a);
            assert_eq!(w.len(), a.len(), "dot_32: block counts differ");
            // SAFETY: dispatched only where the CPU has `$features` (`Isa::Avx2` includes FMA
            // and F16C; `Isa::Avx512Vnni` includes AVX2).
            unsafe { q8_1_impl(w, &a) }
        }

        #[target_feature(enable = $features)]
        fn q8_1_impl(w: &[Decoded32], a: &[BlockQ8_1]) -> f32 {
            sum4!(w.len(), |i| {
                let (x, y) = (&w[i], &a[i]);
                let is = isum32(&x.q, &y.qs);
                (x.d * f16_to_f32(y.d.to_bits())) * is as f32 + x.m * f16_to_f32(y.s.to_bits())
            })
        }
    };
}

/// An f16 (its bits) as f32 through F16C: exact, like every f16 to f32 conversion.
#[target_feature(enable = "f16c")]
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
}

pub(crate) mod avx2 {
    use super::*;

    pub(crate) fn dot_k(w: &[DecodedK], a: &[u8]) -> f32 {
        let a = blocks_of::<BlockQ8K>(a);
        assert_eq!(w.len(), a.len(), "dot_k: block counts differ");
        // SAFETY: dispatched only where the CPU has AVX2 (`Isa::Avx2` or above).
        unsafe { dot_k_impl(w, &a) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_k_impl(w: &[DecodedK], a: &[BlockQ8K]) -> f32 {
        sum4!(w.len(), |i| {
            let (x, y) = (&w[i], &a[i]);
            let mut acc = _mm256_setzero_si256();
            for s in 0..16 {
                // SAFETY: `q` and `qs` hold 256 bytes; run `s` is bytes 16s..16s + 16.
                let (wq, aq) = unsafe {
                    (
                        _mm_loadu_si128(x.q.as_ptr().add(16 * s).cast()),
                        _mm_loadu_si128(y.qs.as_ptr().add(16 * s).cast()),
                    )
                };
                // |q * sc| <= 128 * 255 fits i16; pairs of products with |a| <= 128 fit i32.
                let ws = _mm256_mullo_epi16(_mm256_cvtepi8_epi16(wq), _mm256_set1_epi16(x.sc[s]));
                let p = _mm256_madd_epi16(ws, _mm256_cvtepi8_epi16(aq));
                acc = _mm256_add_epi32(acc, p);
            }
            let (is, ms) = (hsum(acc), min_sum(x, y));
            (x.d * y.d) * is as f32 - (x.dmin * y.d) * ms as f32
        })
    }

    /// `Σ m[s] * bsums[s]`.
    #[target_feature(enable = "avx2")]
    pub(super) fn min_sum(x: &DecodedK, y: &BlockQ8K) -> i32 {
        // SAFETY: `m` and `bsums` are 16 i16 each (32 bytes).
        let (m, b) = unsafe {
            (
                _mm256_loadu_si256(x.m.as_ptr().cast()),
                _mm256_loadu_si256(y.bsums.as_ptr().cast()),
            )
        };
        hsum(_mm256_madd_epi16(m, b))
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn hsum(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }

    /// `Σ q * a` of one 32-value block.
    #[target_feature(enable = "avx2")]
    fn isum32(q: &[i8; 32], a: &[i8; 32]) -> i32 {
        // SAFETY: both arrays hold 32 bytes.
        let (w0, w1, a0, a1) = unsafe {
            (
                _mm_loadu_si128(q.as_ptr().cast()),
                _mm_loadu_si128(q.as_ptr().add(16).cast()),
                _mm_loadu_si128(a.as_ptr().cast()),
                _mm_loadu_si128(a.as_ptr().add(16).cast()),
            )
        };
        let p0 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(w0), _mm256_cvtepi8_epi16(a0));
        let p1 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(w1), _mm256_cvtepi8_epi16(a1));
        hsum(_mm256_add_epi32(p0, p1))
    }

    dot_32!("avx2,fma,f16c");
}

pub(crate) mod avx512 {
    use super::avx2::hsum;
    use super::*;

    pub(crate) fn dot_k(w: &[DecodedK], a: &[u8]) -> f32 {
        let a = blocks_of::<BlockQ8K>(a);
        assert_eq!(w.len(), a.len(), "dot_k: block counts differ");
        // SAFETY: dispatched only where the CPU has AVX-512 F/BW/VL and VNNI.
        unsafe { dot_k_impl(w, &a) }
    }

    /// `vpdpbusd` multiplies unsigned by signed bytes, so the weights go in as `q + 128` and
    /// `128 * Σ_s sc[s] * bsums[s]` comes off again; lane `l` of 64-byte chunk `c` covers values
    /// `64c + 4l ..+ 4`, i.e. run `s = 4c + l / 4`, whose scale a permutation puts there.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    unsafe fn dot_k_impl(w: &[DecodedK], a: &[BlockQ8K]) -> f32 {
        let k80 = _mm512_set1_epi8(-128);
        let idx: [__m512i; 4] = std::array::from_fn(|c| {
            let l = |i: i32| 4 * c as i32 + i / 4;
            _mm512_setr_epi32(
                l(0),
                l(1),
                l(2),
                l(3),
                l(4),
                l(5),
                l(6),
                l(7),
                l(8),
                l(9),
                l(10),
                l(11),
                l(12),
                l(13),
                l(14),
                l(15),
            )
        });
        // Four blocks at a time: their exact integers reduced together, their float terms in the
        // four lanes of `sum4!`'s running sums (a block `j` past the end leaves lane `j` as is).
        let mut sums = _mm_setzero_ps();
        for base in (0..w.len()).step_by(4) {
            let live = (w.len() - base).min(4);
            let blk = |j: usize| base + j.min(live - 1);
            let (mut is, mut ms) = ([_mm256_setzero_si256(); 4], [_mm256_setzero_si256(); 4]);
            for j in 0..4 {
                (is[j], ms[j]) = block_ints(&w[blk(j)], &a[blk(j)], &idx, k80);
            }
            let f = |g: &dyn Fn(usize) -> f32| _mm_setr_ps(g(0), g(1), g(2), g(3));
            let (d, dmin, ad) = (
                f(&|j| w[blk(j)].d),
                f(&|j| w[blk(j)].dmin),
                f(&|j| a[blk(j)].d),
            );
            let term = _mm_sub_ps(
                _mm_mul_ps(_mm_mul_ps(d, ad), _mm_cvtepi32_ps(reduce4(is))),
                _mm_mul_ps(_mm_mul_ps(dmin, ad), _mm_cvtepi32_ps(reduce4(ms))),
            );
            let keep = _mm_castsi128_ps(_mm_cmplt_epi32(
                _mm_setr_epi32(0, 1, 2, 3),
                _mm_set1_epi32(live as i32),
            ));
            sums = _mm_blendv_ps(sums, _mm_add_ps(sums, term), keep);
        }
        let mut s = [0.0f32; 4];
        // SAFETY: `s` is 4 f32.
        unsafe { _mm_storeu_ps(s.as_mut_ptr(), sums) };
        (s[0] + s[1]) + (s[2] + s[3])
    }

    /// One block's `Σ_s sc[s] * Σ q * a` and `Σ_s m[s] * bsums[s]`, each as 8 lanes whose sum it
    /// is (wrapping i32 arithmetic whose true result fits).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
    #[inline]
    fn block_ints(
        x: &DecodedK,
        y: &BlockQ8K,
        idx: &[__m512i; 4],
        k80: __m512i,
    ) -> (__m256i, __m256i) {
        // SAFETY: `sc`, `m` and `bsums` hold 16 i16 (32 bytes); `q` and `qs` 256 bytes.
        let (sc, m, bs) = unsafe {
            (
                _mm256_loadu_si256(x.sc.as_ptr().cast()),
                _mm256_loadu_si256(x.m.as_ptr().cast()),
                _mm256_loadu_si256(y.bsums.as_ptr().cast()),
            )
        };
        let sc32 = _mm512_cvtepi16_epi32(sc);
        let mut acc = _mm512_setzero_si512();
        for (c, idx) in idx.iter().enumerate() {
            // SAFETY: chunk `c` is bytes 64c..64c + 64 of 256.
            let (wq, aq) = unsafe {
                (
                    _mm512_loadu_si512(x.q.as_ptr().add(64 * c).cast()),
                    _mm512_loadu_si512(y.qs.as_ptr().add(64 * c).cast()),
                )
            };
            let p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_xor_si512(wq, k80), aq);
            let s = _mm512_permutexvar_epi32(*idx, sc32);
            acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(p, s));
        }
        let half = _mm256_add_epi32(
            _mm512_castsi512_si256(acc),
            _mm512_extracti64x4_epi64::<1>(acc),
        );
        let bias = _mm256_slli_epi32(_mm256_madd_epi16(sc, bs), 7);
        (_mm256_sub_epi32(half, bias), _mm256_madd_epi16(m, bs))
    }

    /// The lane sums of four vectors, in that order.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn reduce4(v: [__m256i; 4]) -> __m128i {
        let h = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
        _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h))
    }

    /// `Σ q * a` of one 32-value block: `vpdpbusd` on `q + 128`, minus `128 * Σ a`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
    fn isum32(q: &[i8; 32], a: &[i8; 32]) -> i32 {
        let k80 = _mm256_set1_epi8(-128);
        // SAFETY: both arrays hold 32 bytes.
        let (wq, aq) = unsafe {
            (
                _mm256_loadu_si256(q.as_ptr().cast()),
                _mm256_loadu_si256(a.as_ptr().cast()),
            )
        };
        let p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_xor_si256(wq, k80), aq);
        let bias = _mm256_dpbusd_epi32(_mm256_setzero_si256(), k80, aq);
        hsum(_mm256_sub_epi32(p, bias))
    }

    dot_32!("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c");
}
