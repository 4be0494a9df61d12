//! AVX-512 (F/BW/VL/DQ + VNNI) on 512-bit registers: the building blocks the families' row
//! kernels share (`prims`; the kernels themselves live with their types, `quant::*::dot_avx512`)
//! and the f32 dot product and axpy of attention.
//!
//! Every function here is compiled for the features of `Isa::Avx512Vnni` (its AVX2 level included)
//! and called only after the dispatcher confirmed the CPU has them (`Isa::available`).

use std::arch::x86_64::*;

/// f32 dot product (attention). Slices of any equal length.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f32: length mismatch");
    // SAFETY: both slices hold a.len() f32; features confirmed by the caller's dispatch.
    unsafe { prims::f32(a.len(), a.as_ptr(), b.as_ptr()) }
}

/// `y += alpha * x`. Slices of any equal length.
pub fn axpy_f32(y: &mut [f32], alpha: f32, x: &[f32]) {
    assert_eq!(y.len(), x.len(), "axpy_f32: length mismatch");
    // SAFETY: as above.
    unsafe { prims::axpy(y.len(), y.as_mut_ptr(), alpha, x.as_ptr()) }
}

/// The building blocks of the AVX-512 kernels here and in the families (`quant::*::dot_avx512`).
pub(crate) mod prims {
    use super::*;

    /// The f16 stored little-endian at `p`.
    ///
    /// # Safety: 2 readable bytes at `p`.
    #[inline]
    pub(crate) unsafe fn f16_bits(p: *const u8) -> u16 {
        // SAFETY: guaranteed by the caller.
        unsafe { p.cast::<u16>().read_unaligned() }
    }

    /// Mask of the low `k` lanes (`k < 16`).
    #[inline]
    pub(crate) fn low_mask16(k: usize) -> __mmask16 {
        debug_assert!(k < 16);
        ((1u32 << k) - 1) as __mmask16
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    pub(crate) fn sum4(acc: [__m512; 4]) -> f32 {
        _mm512_reduce_add_ps(_mm512_add_ps(
            _mm512_add_ps(acc[0], acc[1]),
            _mm512_add_ps(acc[2], acc[3]),
        ))
    }

    /// # Safety: `a` and `b` point to `n` readable f32 (any alignment).
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    pub(crate) unsafe fn f32(n: usize, a: *const f32, b: *const f32) -> f32 {
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY: (all loads) every lane read is below n; masked-off lanes are not accessed.
        unsafe {
            while i + 64 <= n {
                for (k, acc) in acc.iter_mut().enumerate() {
                    let x = _mm512_loadu_ps(a.add(i + 16 * k));
                    let y = _mm512_loadu_ps(b.add(i + 16 * k));
                    *acc = _mm512_fmadd_ps(x, y, *acc);
                }
                i += 64;
            }
            while i + 16 <= n {
                let (x, y) = (_mm512_loadu_ps(a.add(i)), _mm512_loadu_ps(b.add(i)));
                acc[0] = _mm512_fmadd_ps(x, y, acc[0]);
                i += 16;
            }
            if i < n {
                let m = low_mask16(n - i);
                let x = _mm512_maskz_loadu_ps(m, a.add(i));
                let y = _mm512_maskz_loadu_ps(m, b.add(i));
                acc[1] = _mm512_fmadd_ps(x, y, acc[1]);
            }
        }
        sum4(acc)
    }

    /// # Safety: `y` and `x` point to `n` f32.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    pub(crate) unsafe fn axpy(n: usize, y: *mut f32, alpha: f32, x: *const f32) {
        let a = _mm512_set1_ps(alpha);
        let mut i = 0;
        // SAFETY: every lane accessed is below n; masked-off lanes are not accessed.
        unsafe {
            while i + 16 <= n {
                let v = _mm512_fmadd_ps(a, _mm512_loadu_ps(x.add(i)), _mm512_loadu_ps(y.add(i)));
                _mm512_storeu_ps(y.add(i), v);
                i += 16;
            }
            if i < n {
                let m = low_mask16(n - i);
                let v = _mm512_fmadd_ps(
                    a,
                    _mm512_maskz_loadu_ps(m, x.add(i)),
                    _mm512_maskz_loadu_ps(m, y.add(i)),
                );
                _mm512_mask_storeu_ps(y.add(i), m, v);
            }
        }
    }
}
