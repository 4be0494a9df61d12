//! AVX-512 dot products of F32 and BF16 rows (F16 uses the AVX2 kernel): f32 accumulation in
//! four 512-bit accumulators, and `vdpbf16ps` for BF16 where the CPU has AVX512-BF16 (Zen 4,
//! Cooper Lake, Sapphire Rapids), tested against the f64 references within float tolerance.
//!
//! Every kernel is a safe function that checks slice lengths before any pointer arithmetic; the
//! `unsafe` inside is the `#[target_feature]` call, made after the dispatcher confirmed the CPU
//! has those features (plus `avx512bf16` for the native BF16 kernel).

use crate::simd::{check_row, VecDot4Fn, VecDotFn};
use crate::types::GgmlType;
use std::arch::x86_64::*;

/// The one-row kernel of `ty` at this level, if it has one.
pub(super) fn rows(ty: GgmlType) -> Option<(VecDotFn, Option<VecDot4Fn>)> {
    let k: VecDotFn = match ty {
        GgmlType::F32 => f32_dot,
        GgmlType::BF16 if has_bf16() => bf16_dot_native,
        GgmlType::BF16 => bf16_dot,
        _ => return None,
    };
    Some((k, None))
}

/// Whether the CPU has `vdpbf16ps` (Zen 4, Cooper Lake, Sapphire Rapids); `Isa` does not track it.
fn has_bf16() -> bool {
    std::arch::is_x86_feature_detected!("avx512bf16")
}

fn f32_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
    check_row(GgmlType::F32, n, w, a);
    // SAFETY: both slices hold n f32 (checked above); the CPU has these features (dispatch).
    unsafe { crate::simd::avx512::prims::f32(n, w.as_ptr().cast(), a.as_ptr().cast()) }
}

fn bf16_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
    check_row(GgmlType::BF16, n, w, a);
    // SAFETY: as above, with n bf16.
    unsafe { imp::bf16(n, w.as_ptr(), a.as_ptr()) }
}

fn bf16_dot_native(n: usize, w: &[u8], a: &[u8]) -> f32 {
    check_row(GgmlType::BF16, n, w, a);
    // SAFETY: as above; `kernel` hands this out only when `has_bf16()`.
    unsafe { imp::bf16_native(n, w.as_ptr(), a.as_ptr()) }
}

mod imp {
    use super::*;
    use crate::simd::avx512::prims::*;

    /// Sums `x * y` over `n` 16-bit floats at `a` and `b`, `load(p, mask)` widening 16 of them to
    /// f32 (all 16 lanes for a full mask).
    macro_rules! dot16 {
        ($n:expr, $a:expr, $b:expr, $load:ident) => {{
            let (n, a, b): (usize, *const u8, *const u8) = ($n, $a, $b);
            let mut acc = [_mm512_setzero_ps(); 4];
            let mut i = 0;
            // SAFETY: (all loads) every lane read is below n; masked-off lanes are not accessed.
            unsafe {
                while i + 64 <= n {
                    for (k, acc) in acc.iter_mut().enumerate() {
                        let o = 2 * (i + 16 * k);
                        let (x, y) = ($load(a.add(o), !0), $load(b.add(o), !0));
                        *acc = _mm512_fmadd_ps(x, y, *acc);
                    }
                    i += 64;
                }
                while i < n {
                    let m = if n - i >= 16 { !0 } else { low_mask16(n - i) };
                    let (x, y) = ($load(a.add(2 * i), m), $load(b.add(2 * i), m));
                    acc[0] = _mm512_fmadd_ps(x, y, acc[0]);
                    i += 16;
                }
            }
            sum4(acc)
        }};
    }

    /// The `mask` lanes of 16 16-bit values at `p`, the others zero. A full mask is a plain load
    /// (after inlining, the main loops' constant mask picks it): masked loads are slower.
    ///
    /// # Safety: the `mask` lanes at `p` are readable.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn load16(p: *const u8, mask: __mmask16) -> __m256i {
        // SAFETY: only the lanes in `mask` are read, which the caller guarantees.
        unsafe {
            if mask == !0 {
                _mm256_loadu_si256(p.cast())
            } else {
                _mm256_maskz_loadu_epi16(mask, p.cast())
            }
        }
    }

    /// # Safety: the `mask` lanes of 16 bf16 at `p` are readable.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn load_bf16(p: *const u8, mask: __mmask16) -> __m512 {
        // SAFETY: guaranteed by the caller.
        let h = unsafe { load16(p, mask) };
        // A bf16 is the top half of the f32 with the same bits.
        _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
    }

    /// # Safety: `a` and `b` point to `2n` readable bytes.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    pub(super) unsafe fn bf16(n: usize, a: *const u8, b: *const u8) -> f32 {
        dot16!(n, a, b, load_bf16)
    }

    /// `vdpbf16ps`: 32 bf16 products per instruction, accumulated in f32 (inputs are exact in f32;
    /// like ggml's AVX512_BF16 path it treats bf16 subnormals as zero).
    ///
    /// # Safety: `a` and `b` point to `2n` readable bytes; the CPU has AVX512_BF16.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    #[target_feature(enable = "avx512bf16")]
    pub(super) unsafe fn bf16_native(n: usize, a: *const u8, b: *const u8) -> f32 {
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        // 32 bf16 as the type `vdpbf16ps` takes (the same 64 bytes).
        let bh = |v: __m512i| -> __m512bh {
            // SAFETY: both are plain 512-bit vectors; every bit pattern is valid for each.
            unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
        };
        // SAFETY: (all loads) every lane read is below n; masked-off lanes are not accessed.
        unsafe {
            while i + 128 <= n {
                for (k, acc) in acc.iter_mut().enumerate() {
                    let o = 2 * (i + 32 * k);
                    let x = _mm512_loadu_si512(a.add(o).cast());
                    let y = _mm512_loadu_si512(b.add(o).cast());
                    *acc = _mm512_dpbf16_ps(*acc, bh(x), bh(y));
                }
                i += 128;
            }
            while i < n {
                let m: __mmask32 = if n - i >= 32 {
                    !0
                } else {
                    (1u32 << (n - i)) - 1
                };
                let x = _mm512_maskz_loadu_epi16(m, a.add(2 * i).cast());
                let y = _mm512_maskz_loadu_epi16(m, b.add(2 * i).cast());
                acc[0] = _mm512_dpbf16_ps(acc[0], bh(x), bh(y));
                i += 32;
            }
        }
        sum4(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::Isa;
    use crate::dot_scalar;

    /// Both BF16 kernels against the reference (dispatch picks only one of them on a given CPU).
    #[test]
    fn both_bf16_kernels_match_the_reference() {
        if !Isa::available().contains(&Isa::Avx512Vnni) {
            return;
        }
        let mut kernels: Vec<VecDotFn> = vec![bf16_dot];
        if has_bf16() {
            kernels.push(bf16_dot_native);
        }
        for n in [0usize, 1, 15, 16, 17, 31, 33, 127, 128, 129, 1000] {
            // Deterministic values in (-1, 1) of varied magnitude (bf16 normals: no subnormals).
            let v = |i: usize, k: f32| (i as f32 * k).sin() * 0.9;
            let bf = |x: f32| half::bf16::from_f32(x).to_le_bytes();
            let w: Vec<u8> = (0..n).flat_map(|i| bf(v(i, 1.3))).collect();
            let a: Vec<u8> = (0..n).flat_map(|i| bf(v(i, 0.7) * 3.0)).collect();
            let want = dot_scalar::vec_dot(GgmlType::BF16, n, &w, &a);
            let mag: f32 = (0..n).map(|i| (v(i, 1.3) * v(i, 0.7) * 3.0).abs()).sum();
            for k in &kernels {
                let got = k(n, &w, &a);
                assert!(
                    (got - want).abs() <= 1e-5 * mag + 1e-30,
                    "n={n}: {got} vs {want}"
                );
            }
        }
    }
}
