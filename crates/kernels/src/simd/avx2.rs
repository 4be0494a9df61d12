//! AVX2 + FMA + F16C (the level below AVX-512): the building blocks the families' row kernels
//! share (`prims`, `sum_blocks!`, `sum_blocks_x4!`; the kernels themselves live with their types,
//! `quant::*::dot_avx2`), the f32 dot product and axpy of attention, and the SIMD activation
//! quantizers (Q8_0, Q8_K, F16), byte-identical to the scalar ones, used at this level and above.
//!
//! Signed 8-bit dot products use the |x|·sign(y, x) identity with `vpmaddubsw` + `vpmaddwd`.

use std::arch::x86_64::*;

/// Sums `d_i * Σ lanes(p_i)` over blocks `i in 0..nb`, where the body maps `i` to the block's
/// combined scale `d_i` and its 8 lanes of integer dot products `p_i`. Four independent
/// accumulators hide the FMA latency that one running sum would be bound by.
macro_rules! sum_blocks {
    ($nb:expr, |$i:ident| $body:block) => {{
        let nb = $nb;
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut base = 0;
        while base + 4 <= nb {
            for (j, acc) in acc.iter_mut().enumerate() {
                let $i = base + j;
                let (d, p): (f32, __m256i) = $body;
                *acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(p), *acc);
            }
            base += 4;
        }
        for $i in base..nb {
            let (d, p): (f32, __m256i) = $body;
            acc[0] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(p), acc[0]);
        }
        hsum_ps(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ))
    }};
}
pub(crate) use sum_blocks;

/// Like `sum_blocks!` for four activation rows at once (Q8_0 activations): the body decodes
/// weight block `i` once into its scale and signed values, shared by the four dot products. Each
/// row is accumulated in exactly `sum_blocks!`'s order, so a token gets bit-identical results
/// whether it is computed alone or in a batch.
macro_rules! sum_blocks_x4 {
    ($nb:expr, $a:expr, |$i:ident| $body:block) => {{
        let a: &[&[u8]; 4] = $a;
        let nb = $nb;
        let mut acc = [[_mm256_setzero_ps(); 4]; 4];
        for $i in 0..nb {
            // Blocks go round-robin to four accumulators; the tail after the last full group of
            // four goes to the first, as in `sum_blocks!`.
            let k = if $i < nb / 4 * 4 { $i % 4 } else { 0 };
            let (dw, x): (f32, __m256i) = $body;
            let ax = _mm256_sign_epi8(x, x);
            for (j, acc) in acc.iter_mut().enumerate() {
                let ab = &a[j][$i * B8..($i + 1) * B8];
                // SAFETY: an activation block has 32 quants after its 2-byte scale.
                let y = unsafe { load32(ab.as_ptr().add(2)) };
                let p = dpbusd(_mm256_setzero_si256(), ax, _mm256_sign_epi8(y, x));
                acc[k] = _mm256_fmadd_ps(
                    _mm256_set1_ps(dw * f16_at(ab)),
                    _mm256_cvtepi32_ps(p),
                    acc[k],
                );
            }
        }
        let total = |a: [__m256; 4]| {
            hsum_ps(_mm256_add_ps(
                _mm256_add_ps(a[0], a[1]),
                _mm256_add_ps(a[2], a[3]),
            ))
        };
        [total(acc[0]), total(acc[1]), total(acc[2]), total(acc[3])]
    }};
}
pub(crate) use sum_blocks_x4;

/// f32 dot product (attention). Slices of any equal length.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    // SAFETY: equal lengths checked; features confirmed by the caller's dispatch.
    unsafe { prims::f32(a.len(), a.as_ptr(), b.as_ptr()) }
}

/// `y += alpha * x`. Slices of any equal length.
pub fn axpy_f32(y: &mut [f32], alpha: f32, x: &[f32]) {
    assert_eq!(y.len(), x.len());
    // SAFETY: as above.
    unsafe { prims::axpy(y.len(), y.as_mut_ptr(), alpha, x.as_ptr()) }
}

/// The building blocks of the AVX2 kernels here and in the families (`quant::*::dot_avx2`).
pub(crate) mod prims {
    use super::*;

    /// Unsigned `u` times signed `s`, 4 bytes per 32-bit lane, added to `acc`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn dpbusd(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        dpbusd_avx2(acc, u, s)
    }

    /// The f16 stored little-endian at `b[0..2]`, converted with F16C (exact).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn f16_at(b: &[u8]) -> f32 {
        let bits = u16::from_le_bytes([b[0], b[1]]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    /// Signed `x` times signed `y`, via |x| and sign(y, x).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn dot_i8(acc: __m256i, x: __m256i, y: __m256i) -> __m256i {
        dpbusd(acc, _mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn hsum_ps(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn hsum_epi32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }

    /// 32 bytes from 16 nibbles: low nibbles first, then high nibbles (ggml's order).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn nibbles32(p: *const u8) -> __m256i {
        // SAFETY: the caller guarantees 16 readable bytes at p.
        let x = unsafe { _mm_loadu_si128(p as *const __m128i) };
        let both = _mm256_set_m128i(_mm_srli_epi16(x, 4), x);
        _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn load32(p: *const u8) -> __m256i {
        // SAFETY: the caller guarantees 32 readable bytes at p.
        unsafe { _mm256_loadu_si256(p as *const __m256i) }
    }

    /// # Safety: `a` and `b` point to `n` readable f32 (any alignment).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn f32(n: usize, a: *const f32, b: *const f32) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY: (whole function) every load stays below n.
        unsafe {
            while i + 32 <= n {
                for (k, acc) in acc.iter_mut().enumerate() {
                    let x = _mm256_loadu_ps(a.add(i + 8 * k));
                    let y = _mm256_loadu_ps(b.add(i + 8 * k));
                    *acc = _mm256_fmadd_ps(x, y, *acc);
                }
                i += 32;
            }
            while i + 8 <= n {
                acc[0] =
                    _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i)), _mm256_loadu_ps(b.add(i)), acc[0]);
                i += 8;
            }
            let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let mut s = hsum_ps(v);
            while i < n {
                s += *a.add(i) * *b.add(i);
                i += 1;
            }
            s
        }
    }

    /// # Safety: `y` and `x` point to `n` f32.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn axpy(n: usize, y: *mut f32, alpha: f32, x: *const f32) {
        let a = _mm256_set1_ps(alpha);
        let mut i = 0;
        // SAFETY: every access stays below n.
        unsafe {
            while i + 8 <= n {
                let v = _mm256_fmadd_ps(a, _mm256_loadu_ps(x.add(i)), _mm256_loadu_ps(y.add(i)));
                _mm256_storeu_ps(y.add(i), v);
                i += 8;
            }
            while i < n {
                *y.add(i) += alpha * *x.add(i);
                i += 1;
            }
        }
    }

    /// Whether all 8·k values of `v` are finite (inf − inf and NaN stay NaN; a false "no" on a
    /// finite overflow only sends the block to the scalar code).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn all_finite(v: &[__m256]) -> bool {
        let mut s = _mm256_setzero_ps();
        for &x in v {
            s = _mm256_add_ps(s, x);
        }
        let z = _mm256_mul_ps(s, _mm256_setzero_ps());
        _mm256_movemask_ps(_mm256_cmp_ps(z, z, _CMP_UNORD_Q)) == 0
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn abs(x: __m256) -> __m256 {
        _mm256_andnot_ps(_mm256_set1_ps(-0.0), x)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn hmax(v: __m256) -> f32 {
        let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_movehdup_ps(m));
        _mm_cvtss_f32(m)
    }

    /// 32 int32 (four vectors, values in -128..128) as 32 bytes in order.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn pack32(q: [__m256i; 4]) -> __m256i {
        // packs work within 128-bit lanes; the permute puts the 4-byte groups back in order.
        let p = _mm256_packs_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
    }
}

/// `vpmaddubsw` + `vpmaddwd`: exact for the value ranges used here (|pair sums| < 2^15).
#[inline(always)]
fn dpbusd_avx2(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    // SAFETY: only inlined into the `#[target_feature(enable = "avx2,...")]` kernels below.
    unsafe {
        let p16 = _mm256_maddubs_epi16(u, s);
        _mm256_add_epi32(acc, _mm256_madd_epi16(p16, _mm256_set1_epi16(1)))
    }
}
