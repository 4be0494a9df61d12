//! Gated DeltaNet's two passes over a head's state (`simd::Passes`) on 512-bit and 256-bit
//! registers: lanes take columns `j` of the row-major state, and each lane runs the reference's
//! multiplications and fused multiply-adds down the rows in the reference's order, so the results
//! equal it bit for bit. The last `dim % width` columns run masked.

use super::Passes;
use std::arch::x86_64::*;

/// Checks what both passes index: `s` holds `dim × dim`, the vectors `dim` values.
fn check(s: &[f32], dim: usize, vecs: &[&[f32]]) {
    assert!(
        s.len() == dim * dim && vecs.iter().all(|v| v.len() == dim),
        "delta_net: state or vector length"
    );
}

pub(crate) mod avx512 {
    use super::*;

    pub(crate) const PASSES: Passes = Passes {
        decay_project,
        update_read,
    };

    fn decay_project(s: &mut [f32], dim: usize, decay: f32, k: &[f32], acc: &mut [f32]) {
        check(s, dim, &[k, acc]);
        // SAFETY: lengths checked above; the dispatcher confirmed the CPU has these features.
        unsafe { decay_project_imp(s.as_mut_ptr(), dim, decay, k.as_ptr(), acc.as_mut_ptr()) }
    }

    fn update_read(s: &mut [f32], dim: usize, k: &[f32], delta: &[f32], q: &[f32], o: &mut [f32]) {
        check(s, dim, &[k, delta, q, o]);
        // SAFETY: as above.
        unsafe {
            update_read_imp(
                s.as_mut_ptr(),
                dim,
                k.as_ptr(),
                delta.as_ptr(),
                q.as_ptr(),
                o.as_mut_ptr(),
            )
        }
    }

    /// The lanes of columns `j0..min(j0 + 16, dim)`.
    #[inline]
    fn mask(dim: usize, j0: usize) -> __mmask16 {
        if dim - j0 >= 16 {
            0xFFFF
        } else {
            (1u16 << (dim - j0)) - 1
        }
    }

    /// # Safety: `s` points to `dim × dim` f32, `k` and `acc` to `dim`; AVX-512 F.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn decay_project_imp(s: *mut f32, dim: usize, decay: f32, k: *const f32, acc: *mut f32) {
        let vd = _mm512_set1_ps(decay);
        for j0 in (0..dim).step_by(16) {
            let m = mask(dim, j0);
            let mut a = _mm512_setzero_ps();
            for i in 0..dim {
                // SAFETY: row i, columns j0.. under `m`, inside the state; k[i] inside `k`.
                unsafe {
                    let p = s.add(i * dim + j0);
                    let x = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, p), vd);
                    _mm512_mask_storeu_ps(p, m, x);
                    a = _mm512_fmadd_ps(x, _mm512_set1_ps(*k.add(i)), a);
                }
            }
            // SAFETY: columns j0.. under `m` of `acc`.
            unsafe { _mm512_mask_storeu_ps(acc.add(j0), m, a) };
        }
    }

    /// # Safety: `s` points to `dim × dim` f32, the others to `dim`; AVX-512 F.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn update_read_imp(
        s: *mut f32,
        dim: usize,
        k: *const f32,
        delta: *const f32,
        q: *const f32,
        o: *mut f32,
    ) {
        for j0 in (0..dim).step_by(16) {
            let m = mask(dim, j0);
            // SAFETY: (all accesses) as in `decay_project_imp`.
            unsafe {
                let d = _mm512_maskz_loadu_ps(m, delta.add(j0));
                let mut acc = _mm512_setzero_ps();
                for i in 0..dim {
                    let p = s.add(i * dim + j0);
                    let x =
                        _mm512_fmadd_ps(_mm512_set1_ps(*k.add(i)), d, _mm512_maskz_loadu_ps(m, p));
                    _mm512_mask_storeu_ps(p, m, x);
                    acc = _mm512_fmadd_ps(x, _mm512_set1_ps(*q.add(i)), acc);
                }
                _mm512_mask_storeu_ps(o.add(j0), m, acc);
            }
        }
    }
}

pub(crate) mod avx2 {
    use super::*;

    pub(crate) const PASSES: Passes = Passes {
        decay_project,
        update_read,
    };

    fn decay_project(s: &mut [f32], dim: usize, decay: f32, k: &[f32], acc: &mut [f32]) {
        check(s, dim, &[k, acc]);
        // SAFETY: lengths checked above; the dispatcher confirmed the CPU has these features.
        unsafe { decay_project_imp(s.as_mut_ptr(), dim, decay, k.as_ptr(), acc.as_mut_ptr()) }
    }

    fn update_read(s: &mut [f32], dim: usize, k: &[f32], delta: &[f32], q: &[f32], o: &mut [f32]) {
        check(s, dim, &[k, delta, q, o]);
        // SAFETY: as above.
        unsafe {
            update_read_imp(
                s.as_mut_ptr(),
                dim,
                k.as_ptr(),
                delta.as_ptr(),
                q.as_ptr(),
                o.as_mut_ptr(),
            )
        }
    }

    /// All-ones lanes for columns `j0..min(j0 + 8, dim)`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn mask(dim: usize, j0: usize) -> __m256i {
        let n = (dim - j0).min(8) as i32;
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(n),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }

    /// # Safety: `s` points to `dim × dim` f32, `k` and `acc` to `dim`; AVX2 and FMA.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn decay_project_imp(s: *mut f32, dim: usize, decay: f32, k: *const f32, acc: *mut f32) {
        let vd = _mm256_set1_ps(decay);
        for j0 in (0..dim).step_by(8) {
            let m = mask(dim, j0);
            let mut a = _mm256_setzero_ps();
            for i in 0..dim {
                // SAFETY: row i, columns j0.. under `m`, inside the state; k[i] inside `k`.
                unsafe {
                    let p = s.add(i * dim + j0);
                    let x = _mm256_mul_ps(_mm256_maskload_ps(p, m), vd);
                    _mm256_maskstore_ps(p, m, x);
                    a = _mm256_fmadd_ps(x, _mm256_set1_ps(*k.add(i)), a);
                }
            }
            // SAFETY: columns j0.. under `m` of `acc`.
            unsafe { _mm256_maskstore_ps(acc.add(j0), m, a) };
        }
    }

    /// # Safety: `s` points to `dim × dim` f32, the others to `dim`; AVX2 and FMA.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn update_read_imp(
        s: *mut f32,
        dim: usize,
        k: *const f32,
        delta: *const f32,
        q: *const f32,
        o: *mut f32,
    ) {
        for j0 in (0..dim).step_by(8) {
            let m = mask(dim, j0);
            // SAFETY: (all accesses) as in `decay_project_imp`.
            unsafe {
                let d = _mm256_maskload_ps(delta.add(j0), m);
                let mut acc = _mm256_setzero_ps();
                for i in 0..dim {
                    let p = s.add(i * dim + j0);
                    let x = _mm256_fmadd_ps(_mm256_set1_ps(*k.add(i)), d, _mm256_maskload_ps(p, m));
                    _mm256_maskstore_ps(p, m, x);
                    acc = _mm256_fmadd_ps(x, _mm256_set1_ps(*q.add(i)), acc);
                }
                _mm256_maskstore_ps(o.add(j0), m, acc);
            }
        }
    }
}
