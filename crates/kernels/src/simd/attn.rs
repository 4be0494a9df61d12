//! Attention kernels (`ops::scores_t`, `ops::weighted_rows`) on 512-bit and 256-bit registers:
//! one output lane per key position (scores) or value dimension (weighted rows), a tile of up to
//! 8 query/output rows sharing each load, keys and values widened from their stored type
//! (`KvElem`) as they are loaded. Every lane runs the reference's fused multiply-adds in
//! the same order, so the results equal the scalar reference bit for bit.

use crate::kv_elem::KvElem;
use crate::ops::{check_scores_t, check_weighted_rows};
use std::arch::x86_64::*;

/// Rows per tile: accumulators in registers, each load shared by all of them.
const TILE: usize = 8;

/// Calls `$f::<E, H>(args)` for `H = $n` in 1..=8.
macro_rules! by_tile {
    ($n:expr, $f:ident, $e:ty, $($arg:expr),*) => {
        match $n {
            1 => $f::<$e, 1>($($arg),*),
            2 => $f::<$e, 2>($($arg),*),
            3 => $f::<$e, 3>($($arg),*),
            4 => $f::<$e, 4>($($arg),*),
            5 => $f::<$e, 5>($($arg),*),
            6 => $f::<$e, 6>($($arg),*),
            7 => $f::<$e, 7>($($arg),*),
            _ => $f::<$e, 8>($($arg),*),
        }
    };
}

pub mod avx512 {
    use super::*;

    /// `ops::scores_t` (same arguments and panics).
    pub fn scores_t<E: KvElem>(
        q: &[f32],
        dim: usize,
        kt: &[E],
        kt_stride: usize,
        len: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        check_scores_t(q, dim, kt, kt_stride, len, out, out_stride);
        let nq = q.len() / dim;
        for h0 in (0..nq).step_by(TILE) {
            let (q, out) = (q[h0 * dim..].as_ptr(), out[h0 * out_stride..].as_mut_ptr());
            // SAFETY: rows h0..h0 + tile of q and out and every key index below are in bounds
            // (checked above); the dispatcher confirmed the CPU has these features.
            unsafe {
                by_tile!(
                    nq - h0,
                    scores_tile,
                    E,
                    dim,
                    q,
                    kt.as_ptr(),
                    kt_stride,
                    len,
                    out,
                    out_stride
                )
            };
        }
    }

    /// # Safety: `H` rows of `dim` queries at `q`; `kt` as in `ops::scores_t`; `H` output rows of
    /// `len` values, `out_stride` apart.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn scores_tile<E: KvElem, const H: usize>(
        dim: usize,
        q: *const f32,
        kt: *const E,
        kt_stride: usize,
        len: usize,
        out: *mut f32,
        out_stride: usize,
    ) {
        let mut j0 = 0;
        while j0 < len {
            let m: __mmask16 = if len - j0 >= 16 {
                !0
            } else {
                ((1u32 << (len - j0)) - 1) as __mmask16
            };
            let mut acc = [_mm512_setzero_ps(); H];
            // SAFETY: (all accesses) lanes under `m` are below `len`; rows below H, dims below
            // `dim`, as the caller guarantees.
            unsafe {
                for d in 0..dim {
                    let k = E::load16(kt.add(d * kt_stride + j0), m);
                    for (h, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm512_fmadd_ps(_mm512_set1_ps(*q.add(h * dim + d)), k, *acc);
                    }
                }
                for (h, acc) in acc.iter().enumerate() {
                    _mm512_mask_storeu_ps(out.add(h * out_stride + j0), m, *acc);
                }
            }
            j0 += 16;
        }
    }

    /// `ops::weighted_rows` (same arguments and panics).
    pub fn weighted_rows<E: KvElem>(
        out: &mut [f32],
        dv: usize,
        w: &[f32],
        w_stride: usize,
        v: &[E],
        v_stride: usize,
        len: usize,
    ) {
        check_weighted_rows(out, dv, w, w_stride, v, v_stride, len);
        let nh = out.len() / dv;
        for h0 in (0..nh).step_by(TILE) {
            let (out, w) = (out[h0 * dv..].as_mut_ptr(), w[h0 * w_stride..].as_ptr());
            // SAFETY: as in `scores_t`, for the bounds checked above.
            unsafe {
                by_tile!(
                    nh - h0,
                    weighted_tile,
                    E,
                    out,
                    dv,
                    w,
                    w_stride,
                    v.as_ptr(),
                    v_stride,
                    len
                )
            };
        }
    }

    /// # Safety: `H` rows of `dv` outputs at `out`; `H` rows of `len` weights `w_stride` apart;
    /// `len` value rows of `dv`, `v_stride` apart.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn weighted_tile<E: KvElem, const H: usize>(
        out: *mut f32,
        dv: usize,
        w: *const f32,
        w_stride: usize,
        v: *const E,
        v_stride: usize,
        len: usize,
    ) {
        let mut c = 0;
        while c < dv {
            let m: __mmask16 = if dv - c >= 16 {
                !0
            } else {
                ((1u32 << (dv - c)) - 1) as __mmask16
            };
            // SAFETY: (all accesses) lanes under `m` are below `dv`, rows below H, positions
            // below `len`, as the caller guarantees.
            unsafe {
                let mut acc: [__m512; H] =
                    std::array::from_fn(|h| _mm512_maskz_loadu_ps(m, out.add(h * dv + c)));
                for j in 0..len {
                    let x = E::load16(v.add(j * v_stride + c), m);
                    for (h, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm512_fmadd_ps(_mm512_set1_ps(*w.add(h * w_stride + j)), x, *acc);
                    }
                }
                for (h, acc) in acc.iter().enumerate() {
                    _mm512_mask_storeu_ps(out.add(h * dv + c), m, *acc);
                }
            }
            c += 16;
        }
    }
}

pub mod avx2 {
    use super::*;

    /// The lanes `0..k` of an 8-lane mask vector (`k <= 8`).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn mask8(k: usize) -> __m256i {
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(k as i32), idx)
    }

    /// Eight lanes at `p`, or those under `m` (zeros elsewhere) when not `full`: masked loads and
    /// stores are slow on AMD, so only a partial last vector takes them. Same lanes either way.
    ///
    /// # Safety
    /// With `full`, the 8 floats at `p` are readable; else the lanes under `m` are.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load(p: *const f32, full: bool, m: __m256i) -> __m256 {
        // SAFETY: as the caller guarantees.
        unsafe {
            if full {
                _mm256_loadu_ps(p)
            } else {
                _mm256_maskload_ps(p, m)
            }
        }
    }

    /// Stores the 8 lanes of `x` at `p`, or those under `m` when not `full`.
    ///
    /// # Safety
    /// With `full`, the 8 floats at `p` are writable; else the lanes under `m` are.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn store(p: *mut f32, full: bool, m: __m256i, x: __m256) {
        // SAFETY: as the caller guarantees.
        unsafe {
            if full {
                _mm256_storeu_ps(p, x)
            } else {
                _mm256_maskstore_ps(p, m, x)
            }
        }
    }

    /// `ops::scores_t` (same arguments and panics).
    pub fn scores_t<E: KvElem>(
        q: &[f32],
        dim: usize,
        kt: &[E],
        kt_stride: usize,
        len: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        check_scores_t(q, dim, kt, kt_stride, len, out, out_stride);
        let nq = q.len() / dim;
        for h0 in (0..nq).step_by(TILE) {
            let (q, out) = (q[h0 * dim..].as_ptr(), out[h0 * out_stride..].as_mut_ptr());
            // SAFETY: as in the 512-bit version.
            unsafe {
                by_tile!(
                    nq - h0,
                    scores_tile,
                    E,
                    dim,
                    q,
                    kt.as_ptr(),
                    kt_stride,
                    len,
                    out,
                    out_stride
                )
            };
        }
    }

    /// # Safety: as for the 512-bit `scores_tile`.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scores_tile<E: KvElem, const H: usize>(
        dim: usize,
        q: *const f32,
        kt: *const E,
        kt_stride: usize,
        len: usize,
        out: *mut f32,
        out_stride: usize,
    ) {
        let mut j0 = 0;
        while j0 < len {
            let (full, m) = (len - j0 >= 8, mask8((len - j0).min(8)));
            let mut acc = [_mm256_setzero_ps(); H];
            // SAFETY: (all accesses) lanes under `m` (all 8 when `full`) are below `len`;
            // masked-off lanes are not accessed; rows and dims as the caller guarantees.
            unsafe {
                for d in 0..dim {
                    let k = E::load8(kt.add(d * kt_stride + j0), (len - j0).min(8));
                    for (h, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm256_fmadd_ps(_mm256_set1_ps(*q.add(h * dim + d)), k, *acc);
                    }
                }
                for (h, acc) in acc.iter().enumerate() {
                    store(out.add(h * out_stride + j0), full, m, *acc);
                }
            }
            j0 += 8;
        }
    }

    /// `ops::weighted_rows` (same arguments and panics).
    pub fn weighted_rows<E: KvElem>(
        out: &mut [f32],
        dv: usize,
        w: &[f32],
        w_stride: usize,
        v: &[E],
        v_stride: usize,
        len: usize,
    ) {
        check_weighted_rows(out, dv, w, w_stride, v, v_stride, len);
        let nh = out.len() / dv;
        for h0 in (0..nh).step_by(TILE) {
            let (out, w) = (out[h0 * dv..].as_mut_ptr(), w[h0 * w_stride..].as_ptr());
            // SAFETY: as in the 512-bit version.
            unsafe {
                by_tile!(
                    nh - h0,
                    weighted_tile,
                    E,
                    out,
                    dv,
                    w,
                    w_stride,
                    v.as_ptr(),
                    v_stride,
                    len
                )
            };
        }
    }

    /// # Safety: as for the 512-bit `weighted_tile`.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weighted_tile<E: KvElem, const H: usize>(
        out: *mut f32,
        dv: usize,
        w: *const f32,
        w_stride: usize,
        v: *const E,
        v_stride: usize,
        len: usize,
    ) {
        let mut c = 0;
        while c < dv {
            let (full, m) = (dv - c >= 8, mask8((dv - c).min(8)));
            // SAFETY: (all accesses) lanes under `m` (all 8 when `full`) are below `dv`;
            // masked-off lanes are not accessed; rows and positions as the caller guarantees.
            unsafe {
                let mut acc: [__m256; H] =
                    std::array::from_fn(|h| load(out.add(h * dv + c), full, m));
                for j in 0..len {
                    let x = E::load8(v.add(j * v_stride + c), (dv - c).min(8));
                    for (h, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm256_fmadd_ps(_mm256_set1_ps(*w.add(h * w_stride + j)), x, *acc);
                    }
                }
                for (h, acc) in acc.iter().enumerate() {
                    store(out.add(h * dv + c), full, m, *acc);
                }
            }
            c += 8;
        }
    }
}
