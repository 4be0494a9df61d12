//! Gated DeltaNet's two passes over a head's state (`simd::Passes`) on 512-bit and 256-bit
//! registers: lanes take columns `j` of the row-major state, and each lane runs the reference's
//! multiplications and fused multiply-adds down the rows in the reference's order, so the results
//! equal it bit for bit. A segment of `GROUP` registers of columns goes down the rows at once, so
//! that as many independent sums are in flight (a single sum would wait on every fused
//! multiply-add's latency); the last `dim % width` columns run masked.
//!
//! The chunked form's products (`ops::weighted_rows`: output rows plus weighted sums of value
//! rows) go in tiles of `ROWS` rows by `COLS` registers of columns: each load of a value row
//! serves every row of the tile, each weight every register, and each lane sums in the
//! reference's order, so these equal it bit for bit too.

use super::Passes;
use crate::ops::check_weighted_rows;
use std::arch::x86_64::*;

/// Checks what both passes index: `s` holds `dim × dim`, the vectors `dim` values.
fn check(s: &[f32], dim: usize, vecs: &[&[f32]]) {
    assert!(
        s.len() == dim * dim && vecs.iter().all(|v| v.len() == dim),
        "delta_net: state or vector length"
    );
}

/// A tile of `ops::weighted_rows`: its output rows (`dv` apart) from column `c0`, their weights
/// (`w_stride` apart) and the `len` value rows (`v_stride` apart), as pointers into slices that
/// `check_weighted_rows` accepted.
#[derive(Clone, Copy)]
struct Tile {
    out: *mut f32,
    dv: usize,
    c0: usize,
    w: *const f32,
    w_stride: usize,
    v: *const f32,
    v_stride: usize,
    len: usize,
}

/// Calls `$f::<G, ..>(args)` for `G = $n` registers, 1 to 8.
macro_rules! by_group {
    ($n:expr, $f:ident $(, $c:expr)*; $($arg:expr),*) => {
        match $n {
            1 => $f::<1 $(, $c)*>($($arg),*),
            2 => $f::<2 $(, $c)*>($($arg),*),
            3 => $f::<3 $(, $c)*>($($arg),*),
            4 => $f::<4 $(, $c)*>($($arg),*),
            5 => $f::<5 $(, $c)*>($($arg),*),
            6 => $f::<6 $(, $c)*>($($arg),*),
            7 => $f::<7 $(, $c)*>($($arg),*),
            _ => $f::<8 $(, $c)*>($($arg),*),
        }
    };
}

/// Calls `$f::<G, R, ..>(args)` for a tile of `R = $r` rows by `G = $g` registers, 1 to 4 each.
macro_rules! by_tile {
    ($r:expr, $g:expr, $f:ident $(, $c:expr)*; $($arg:expr),*) => {
        match ($r, $g) {
            (1, 1) => $f::<1, 1 $(, $c)*>($($arg),*),
            (1, 2) => $f::<2, 1 $(, $c)*>($($arg),*),
            (1, 3) => $f::<3, 1 $(, $c)*>($($arg),*),
            (1, _) => $f::<4, 1 $(, $c)*>($($arg),*),
            (2, 1) => $f::<1, 2 $(, $c)*>($($arg),*),
            (2, 2) => $f::<2, 2 $(, $c)*>($($arg),*),
            (2, 3) => $f::<3, 2 $(, $c)*>($($arg),*),
            (2, _) => $f::<4, 2 $(, $c)*>($($arg),*),
            (3, 1) => $f::<1, 3 $(, $c)*>($($arg),*),
            (3, 2) => $f::<2, 3 $(, $c)*>($($arg),*),
            (3, 3) => $f::<3, 3 $(, $c)*>($($arg),*),
            (3, _) => $f::<4, 3 $(, $c)*>($($arg),*),
            (_, 1) => $f::<1, 4 $(, $c)*>($($arg),*),
            (_, 2) => $f::<2, 4 $(, $c)*>($($arg),*),
            (_, 3) => $f::<3, 4 $(, $c)*>($($arg),*),
            (_, _) => $f::<4, 4 $(, $c)*>($($arg),*),
        }
    };
}

pub(crate) mod avx512 {
    use super::*;

    pub(crate) const PASSES: Passes = Passes {
        decay_project,
        update_read,
        weighted_rows,
    };

    /// Registers per segment (a whole row of 128 columns).
    const GROUP: usize = 8;

    /// The tile of `weighted_rows`: 16 sums in flight, 8 loads per 16 fused multiply-adds.
    const ROWS: usize = 4;
    const COLS: usize = 4;

    /// `ops::weighted_rows` (same arguments and panics, same bits).
    fn weighted_rows(
        out: &mut [f32],
        dv: usize,
        w: &[f32],
        w_stride: usize,
        v: &[f32],
        v_stride: usize,
        len: usize,
    ) {
        check_weighted_rows(out, dv, w, w_stride, v, v_stride, len);
        if len == 0 {
            return;
        }
        let rows = out.len() / dv;
        for h0 in (0..rows).step_by(ROWS) {
            let (out, w) = (out[h0 * dv..].as_mut_ptr(), w[h0 * w_stride..].as_ptr());
            for c0 in (0..dv).step_by(16 * COLS) {
                let regs = (dv - c0).div_ceil(16).min(COLS);
                let v = v.as_ptr();
                let t = Tile {
                    out,
                    dv,
                    c0,
                    w,
                    w_stride,
                    v,
                    v_stride,
                    len,
                };
                // SAFETY: rows h0.. of `out` and `w` and rows below `len` of `v` are in bounds
                // (checked above); `regs` registers from column c0 start below `dv`; the
                // dispatcher confirmed the CPU has these features.
                unsafe { by_tile!((rows - h0).min(ROWS), regs, weighted_tile; t) }
            }
        }
    }

    /// `weighted_rows` on the tile's first `R` rows and `G` registers of columns.
    ///
    /// # Safety
    /// The tile has at least `R` rows, `c0 + 16 (G − 1) < dv`; AVX-512 F.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn weighted_tile<const G: usize, const R: usize>(t: Tile) {
        let m = masks::<G>(t.dv, t.c0);
        let at = |r: usize, g: usize| r * t.dv + t.c0 + 16 * g;
        let mut acc = [[_mm512_setzero_ps(); G]; R];
        for (r, acc) in acc.iter_mut().enumerate() {
            for (g, a) in acc.iter_mut().enumerate() {
                // SAFETY: row r of `out`, columns under the mask.
                *a = unsafe { _mm512_maskz_loadu_ps(m[g], t.out.add(at(r, g))) };
            }
        }
        for j in 0..t.len {
            // SAFETY: row j of `v`, columns under the masks; weight j of rows r < R.
            unsafe {
                let mut x = [_mm512_setzero_ps(); G];
                for (g, x) in x.iter_mut().enumerate() {
                    *x = _mm512_maskz_loadu_ps(m[g], t.v.add(j * t.v_stride + t.c0 + 16 * g));
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let wr = _mm512_set1_ps(*t.w.add(r * t.w_stride + j));
                    for (a, x) in acc.iter_mut().zip(&x) {
                        *a = _mm512_fmadd_ps(wr, *x, *a);
                    }
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (g, a) in acc.iter().enumerate() {
                // SAFETY: as the loads above.
                unsafe { _mm512_mask_storeu_ps(t.out.add(at(r, g)), m[g], *a) };
            }
        }
    }

    fn decay_project(s: &mut [f32], dim: usize, decay: f32, k: &[f32], acc: &mut [f32]) {
        check(s, dim, &[k, acc]);
        let (s, k, acc) = (s.as_mut_ptr(), k.as_ptr(), acc.as_mut_ptr());
        for j0 in (0..dim).step_by(16 * GROUP) {
            let regs = (dim - j0).div_ceil(16).min(GROUP);
            // SAFETY: lengths checked above; `regs` registers from column j0 start inside the
            // row; the dispatcher confirmed the CPU has these features.
            unsafe { by_group!(regs, decay_project_cols; s, dim, j0, decay, k, acc) }
        }
    }

    fn update_read(s: &mut [f32], dim: usize, k: &[f32], delta: &[f32], q: &[f32], o: &mut [f32]) {
        check(s, dim, &[k, delta, q, o]);
        let (s, o) = (s.as_mut_ptr(), o.as_mut_ptr());
        let (k, delta, q) = (k.as_ptr(), delta.as_ptr(), q.as_ptr());
        for j0 in (0..dim).step_by(16 * GROUP) {
            let regs = (dim - j0).div_ceil(16).min(GROUP);
            // SAFETY: as in `decay_project`.
            unsafe { by_group!(regs, update_read_cols; s, dim, j0, k, delta, q, o) }
        }
    }

    /// The lanes of the `G` registers of columns from `j0` that are below `dim`.
    #[inline]
    fn masks<const G: usize>(dim: usize, j0: usize) -> [__mmask16; G] {
        let mut m = [0xFFFF; G];
        for (g, m) in m.iter_mut().enumerate() {
            let left = dim - (j0 + 16 * g);
            if left < 16 {
                *m = (1u16 << left) - 1;
            }
        }
        m
    }

    /// `decay_project` on the `G` registers of columns from `j0`.
    ///
    /// # Safety
    /// `s` points to `dim × dim` f32, `k` and `acc` to `dim`; `j0 + 16 (G − 1) < dim`; AVX-512 F.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn decay_project_cols<const G: usize>(
        s: *mut f32,
        dim: usize,
        j0: usize,
        decay: f32,
        k: *const f32,
        acc: *mut f32,
    ) {
        let (m, vd) = (masks::<G>(dim, j0), _mm512_set1_ps(decay));
        let mut a = [_mm512_setzero_ps(); G];
        for i in 0..dim {
            // SAFETY: row i, columns under the masks, inside the state; k[i] inside `k`.
            unsafe {
                let (row, ki) = (s.add(i * dim + j0), _mm512_set1_ps(*k.add(i)));
                for (g, a) in a.iter_mut().enumerate() {
                    let p = row.add(16 * g);
                    let x = _mm512_mul_ps(_mm512_maskz_loadu_ps(m[g], p), vd);
                    _mm512_mask_storeu_ps(p, m[g], x);
                    *a = _mm512_fmadd_ps(x, ki, *a);
                }
            }
        }
        for (g, a) in a.iter().enumerate() {
            // SAFETY: columns under the mask, inside `acc`.
            unsafe { _mm512_mask_storeu_ps(acc.add(j0 + 16 * g), m[g], *a) };
        }
    }

    /// `update_read` on the `G` registers of columns from `j0`.
    ///
    /// # Safety
    /// `s` points to `dim × dim` f32, the others to `dim`; `j0 + 16 (G − 1) < dim`; AVX-512 F.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn update_read_cols<const G: usize>(
        s: *mut f32,
        dim: usize,
        j0: usize,
        k: *const f32,
        delta: *const f32,
        q: *const f32,
        o: *mut f32,
    ) {
        let m = masks::<G>(dim, j0);
        let (mut d, mut acc) = ([_mm512_setzero_ps(); G], [_mm512_setzero_ps(); G]);
        for (g, d) in d.iter_mut().enumerate() {
            // SAFETY: columns under the mask, inside `delta`.
            *d = unsafe { _mm512_maskz_loadu_ps(m[g], delta.add(j0 + 16 * g)) };
        }
        for i in 0..dim {
            // SAFETY: as in `decay_project_cols`.
            unsafe {
                let row = s.add(i * dim + j0);
                let (ki, qi) = (_mm512_set1_ps(*k.add(i)), _mm512_set1_ps(*q.add(i)));
                for (g, acc) in acc.iter_mut().enumerate() {
                    let p = row.add(16 * g);
                    let x = _mm512_fmadd_ps(ki, d[g], _mm512_maskz_loadu_ps(m[g], p));
                    _mm512_mask_storeu_ps(p, m[g], x);
                    *acc = _mm512_fmadd_ps(x, qi, *acc);
                }
            }
        }
        for (g, acc) in acc.iter().enumerate() {
            // SAFETY: columns under the mask, inside `o`.
            unsafe { _mm512_mask_storeu_ps(o.add(j0 + 16 * g), m[g], *acc) };
        }
    }
}

pub(crate) mod avx2 {
    use super::*;

    pub(crate) const PASSES: Passes = Passes {
        decay_project,
        update_read,
        weighted_rows,
    };

    /// The tile of `weighted_rows`: 8 sums in flight (two FMA pipes of latency 4), 6 loads per 8
    /// fused multiply-adds, in twelve of the sixteen registers.
    const ROWS: usize = 4;
    const COLS: usize = 2;

    /// `ops::weighted_rows` (same arguments and panics, same bits).
    fn weighted_rows(
        out: &mut [f32],
        dv: usize,
        w: &[f32],
        w_stride: usize,
        v: &[f32],
        v_stride: usize,
        len: usize,
    ) {
        check_weighted_rows(out, dv, w, w_stride, v, v_stride, len);
        if len == 0 {
            return;
        }
        let rows = out.len() / dv;
        for h0 in (0..rows).step_by(ROWS) {
            let (out, w) = (out[h0 * dv..].as_mut_ptr(), w[h0 * w_stride..].as_ptr());
            for c0 in (0..dv).step_by(8 * COLS) {
                let regs = (dv - c0).div_ceil(8).min(COLS);
                let v = v.as_ptr();
                let t = Tile {
                    out,
                    dv,
                    c0,
                    w,
                    w_stride,
                    v,
                    v_stride,
                    len,
                };
                let r = (rows - h0).min(ROWS);
                // SAFETY: rows h0.. of `out` and `w` and rows below `len` of `v` are in bounds
                // (checked above); `regs` registers from column c0 start below `dv`, and run
                // masked unless all their columns are; the dispatcher confirmed the CPU has
                // these features.
                unsafe {
                    if c0 + 8 * regs <= dv {
                        by_tile!(r, regs, weighted_tile, false; t)
                    } else {
                        by_tile!(r, regs, weighted_tile, true; t)
                    }
                }
            }
        }
    }

    /// `weighted_rows` on the tile's first `R` rows and `G` registers of columns.
    ///
    /// # Safety
    /// The tile has at least `R` rows, `c0 + 8 (G − 1) < dv`, and `c0 + 8 G <= dv` unless `MASKED`;
    /// AVX2 and FMA.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weighted_tile<const G: usize, const R: usize, const MASKED: bool>(t: Tile) {
        let m = masks::<G>(t.dv, t.c0);
        let at = |r: usize, g: usize| r * t.dv + t.c0 + 8 * g;
        let mut acc = [[_mm256_setzero_ps(); G]; R];
        for (r, acc) in acc.iter_mut().enumerate() {
            for (g, a) in acc.iter_mut().enumerate() {
                // SAFETY: row r of `out`, the columns `load` reads.
                *a = unsafe { load::<MASKED>(t.out.add(at(r, g)), m[g]) };
            }
        }
        for j in 0..t.len {
            // SAFETY: row j of `v`, the columns `load` reads; weight j of rows r < R.
            unsafe {
                let mut x = [_mm256_setzero_ps(); G];
                for (g, x) in x.iter_mut().enumerate() {
                    *x = load::<MASKED>(t.v.add(j * t.v_stride + t.c0 + 8 * g), m[g]);
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let wr = _mm256_set1_ps(*t.w.add(r * t.w_stride + j));
                    for (a, x) in acc.iter_mut().zip(&x) {
                        *a = _mm256_fmadd_ps(wr, *x, *a);
                    }
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (g, a) in acc.iter().enumerate() {
                // SAFETY: as the loads above.
                unsafe { store::<MASKED>(t.out.add(at(r, g)), m[g], *a) };
            }
        }
    }

    /// Registers per segment: enough sums in flight for two FMA pipes, few enough that the
    /// segment's `δ` stays in the sixteen registers.
    const GROUP: usize = 4;

    fn decay_project(s: &mut [f32], dim: usize, decay: f32, k: &[f32], acc: &mut [f32]) {
        check(s, dim, &[k, acc]);
        let (s, k, acc) = (s.as_mut_ptr(), k.as_ptr(), acc.as_mut_ptr());
        for j0 in (0..dim).step_by(8 * GROUP) {
            let regs = (dim - j0).div_ceil(8).min(GROUP);
            // SAFETY: lengths checked above; `regs` registers from column j0 start inside the
            // row, and run masked unless all their columns are; the dispatcher confirmed the CPU
            // has these features.
            unsafe {
                if j0 + 8 * regs <= dim {
                    by_group!(regs, decay_project_cols, false; s, dim, j0, decay, k, acc)
                } else {
                    by_group!(regs, decay_project_cols, true; s, dim, j0, decay, k, acc)
                }
            }
        }
    }

    fn update_read(s: &mut [f32], dim: usize, k: &[f32], delta: &[f32], q: &[f32], o: &mut [f32]) {
        check(s, dim, &[k, delta, q, o]);
        let (s, o) = (s.as_mut_ptr(), o.as_mut_ptr());
        let (k, delta, q) = (k.as_ptr(), delta.as_ptr(), q.as_ptr());
        for j0 in (0..dim).step_by(8 * GROUP) {
            let regs = (dim - j0).div_ceil(8).min(GROUP);
            // SAFETY: as in `decay_project`.
            unsafe {
                if j0 + 8 * regs <= dim {
                    by_group!(regs, update_read_cols, false; s, dim, j0, k, delta, q, o)
                } else {
                    by_group!(regs, update_read_cols, true; s, dim, j0, k, delta, q, o)
                }
            }
        }
    }

    /// The lanes of the `G` registers of columns from `j0` that are below `dim`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn masks<const G: usize>(dim: usize, j0: usize) -> [__m256i; G] {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mut m = [lanes; G];
        for (g, m) in m.iter_mut().enumerate() {
            let left = (dim - (j0 + 8 * g)).min(8) as i32;
            *m = _mm256_cmpgt_epi32(_mm256_set1_epi32(left), lanes);
        }
        m
    }

    /// Eight lanes at `p`: those under `m` if `MASKED` (`vmaskmovps`, slow on AMD, so only for
    /// the last columns), else all.
    ///
    /// # Safety
    /// The lanes read are inside one allocation; AVX2.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load<const MASKED: bool>(p: *const f32, m: __m256i) -> __m256 {
        // SAFETY: the caller's.
        unsafe {
            if MASKED {
                _mm256_maskload_ps(p, m)
            } else {
                _mm256_loadu_ps(p)
            }
        }
    }

    /// Stores the lanes `load::<MASKED>` reads.
    ///
    /// # Safety
    /// As for `load`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn store<const MASKED: bool>(p: *mut f32, m: __m256i, x: __m256) {
        // SAFETY: the caller's.
        unsafe {
            if MASKED {
                _mm256_maskstore_ps(p, m, x)
            } else {
                _mm256_storeu_ps(p, x)
            }
        }
    }

    /// `decay_project` on the `G` registers of columns from `j0`.
    ///
    /// # Safety
    /// `s` points to `dim × dim` f32, `k` and `acc` to `dim`; `j0 + 8 (G − 1) < dim`, and
    /// `j0 + 8 G <= dim` unless `MASKED`; AVX2 and FMA.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn decay_project_cols<const G: usize, const MASKED: bool>(
        s: *mut f32,
        dim: usize,
        j0: usize,
        decay: f32,
        k: *const f32,
        acc: *mut f32,
    ) {
        let (m, vd) = (masks::<G>(dim, j0), _mm256_set1_ps(decay));
        let mut a = [_mm256_setzero_ps(); G];
        for i in 0..dim {
            // SAFETY: row i, the columns `load`/`store` touch, inside the state; k[i] inside `k`.
            unsafe {
                let (row, ki) = (s.add(i * dim + j0), _mm256_set1_ps(*k.add(i)));
                for (g, a) in a.iter_mut().enumerate() {
                    let p = row.add(8 * g);
                    let x = _mm256_mul_ps(load::<MASKED>(p, m[g]), vd);
                    store::<MASKED>(p, m[g], x);
                    *a = _mm256_fmadd_ps(x, ki, *a);
                }
            }
        }
        for (g, a) in a.iter().enumerate() {
            // SAFETY: the same columns of `acc`.
            unsafe { store::<MASKED>(acc.add(j0 + 8 * g), m[g], *a) };
        }
    }

    /// `update_read` on the `G` registers of columns from `j0`.
    ///
    /// # Safety
    /// `s` points to `dim × dim` f32, the others to `dim`; columns as for
    /// `decay_project_cols`; AVX2 and FMA.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn update_read_cols<const G: usize, const MASKED: bool>(
        s: *mut f32,
        dim: usize,
        j0: usize,
        k: *const f32,
        delta: *const f32,
        q: *const f32,
        o: *mut f32,
    ) {
        let m = masks::<G>(dim, j0);
        let (mut d, mut acc) = ([_mm256_setzero_ps(); G], [_mm256_setzero_ps(); G]);
        for (g, d) in d.iter_mut().enumerate() {
            // SAFETY: the same columns of `delta`.
            *d = unsafe { load::<MASKED>(delta.add(j0 + 8 * g), m[g]) };
        }
        for i in 0..dim {
            // SAFETY: as in `decay_project_cols`.
            unsafe {
                let row = s.add(i * dim + j0);
                let (ki, qi) = (_mm256_set1_ps(*k.add(i)), _mm256_set1_ps(*q.add(i)));
                for (g, acc) in acc.iter_mut().enumerate() {
                    let p = row.add(8 * g);
                    let x = _mm256_fmadd_ps(ki, d[g], load::<MASKED>(p, m[g]));
                    store::<MASKED>(p, m[g], x);
                    *acc = _mm256_fmadd_ps(x, qi, *acc);
                }
            }
        }
        for (g, acc) in acc.iter().enumerate() {
            // SAFETY: the same columns of `o`.
            unsafe { store::<MASKED>(o.add(j0 + 8 * g), m[g], *acc) };
        }
    }
}
