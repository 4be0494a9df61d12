//! AVX2 + FMA + F16C dot products of F32, F16 and BF16 rows (f32 accumulation, four
//! accumulators), tested against the f64 references within float tolerance.
//!
//! Every kernel is a safe `fn(n, w, a)` that checks the slice lengths before any pointer
//! arithmetic; the `unsafe` inside is only the `#[target_feature]` call, made after the dispatcher
//! confirmed the CPU has those features.

use crate::simd::{check_row, VecDot4Fn, VecDotFn};
use crate::types::GgmlType;
use std::arch::x86_64::*;

/// The one-row kernel of `ty` at this level, if it has one.
pub(super) fn rows(ty: GgmlType) -> Option<(VecDotFn, Option<VecDot4Fn>)> {
    let k: VecDotFn = match ty {
        GgmlType::F32 => f32_dot,
        GgmlType::F16 => f16_dot,
        GgmlType::BF16 => bf16_dot,
        _ => return None,
    };
    Some((k, None))
}

fn f32_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
    check_row(GgmlType::F32, n, w, a);
    // SAFETY: lengths checked above; the CPU has these features (dispatch).
    unsafe { imp::f32_bytes(n, w.as_ptr(), a.as_ptr()) }
}

fn f16_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
    check_row(GgmlType::F16, n, w, a);
    // SAFETY: as above.
    unsafe { imp::f16(n, w.as_ptr(), a.as_ptr()) }
}

fn bf16_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
    check_row(GgmlType::BF16, n, w, a);
    // SAFETY: as above.
    unsafe { imp::bf16(n, w.as_ptr(), a.as_ptr()) }
}

mod imp {
    use super::*;
    use crate::simd::avx2::prims::*;

    /// Sums `x * y` over `n` values at `a` and `b` of `size` bytes each, `load(p)` widening 8 of
    /// them to f32 and `one(p)` a single one (the tail). Four accumulators hide the FMA latency.
    macro_rules! dot8 {
        ($n:expr, $a:expr, $b:expr, $size:expr, $load:expr, $one:expr) => {{
            let (n, a, b, size): (usize, *const u8, *const u8, usize) = ($n, $a, $b, $size);
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            // SAFETY: (all loads) every value read is below n.
            unsafe {
                while i + 32 <= n {
                    for (k, acc) in acc.iter_mut().enumerate() {
                        let o = size * (i + 8 * k);
                        *acc = _mm256_fmadd_ps($load(a.add(o)), $load(b.add(o)), *acc);
                    }
                    i += 32;
                }
                while i + 8 <= n {
                    let o = size * i;
                    acc[0] = _mm256_fmadd_ps($load(a.add(o)), $load(b.add(o)), acc[0]);
                    i += 8;
                }
                let mut s = hsum_ps(_mm256_add_ps(
                    _mm256_add_ps(acc[0], acc[1]),
                    _mm256_add_ps(acc[2], acc[3]),
                ));
                while i < n {
                    s += $one(a.add(size * i)) * $one(b.add(size * i));
                    i += 1;
                }
                s
            }
        }};
    }

    /// # Safety: `a` and `b` point to `4n` readable bytes.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn f32_bytes(n: usize, a: *const u8, b: *const u8) -> f32 {
        dot8!(
            n,
            a,
            b,
            4,
            |p: *const u8| _mm256_loadu_ps(p.cast()),
            |p: *const u8| p.cast::<f32>().read_unaligned()
        )
    }

    /// # Safety: `a` and `b` point to `2n` readable bytes.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn f16(n: usize, a: *const u8, b: *const u8) -> f32 {
        dot8!(
            n,
            a,
            b,
            2,
            |p: *const u8| _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
            |p: *const u8| half::f16::from_bits(p.cast::<u16>().read_unaligned()).to_f32()
        )
    }

    /// # Safety: `a` and `b` point to `2n` readable bytes.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn bf16(n: usize, a: *const u8, b: *const u8) -> f32 {
        // A bf16 is the top half of the f32 with the same bits.
        dot8!(
            n,
            a,
            b,
            2,
            |p: *const u8| _mm256_castsi256_ps(_mm256_slli_epi32(
                _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast())),
                16
            )),
            |p: *const u8| half::bf16::from_bits(p.cast::<u16>().read_unaligned()).to_f32()
        )
    }
}
