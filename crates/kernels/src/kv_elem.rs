//! The number formats the KV cache stores keys and values in (`f32`, `f16`, `bf16`), which the
//! attention kernels (`dot::scores_t`, `dot::weighted_rows`) read directly, widening each element
//! to f32 exactly before the same fused multiply-adds: a kernel's result depends only on the
//! stored values, at every instruction-set level.

use half::{bf16, f16};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// An element type of the KV cache.
pub trait KvElem: sealed::Sealed + Copy + Default + Send + Sync + 'static {
    /// The element widened to f32 (exact).
    fn to_f32(self) -> f32;
    /// The nearest element to `x` (round to nearest even).
    fn from_f32(x: f32) -> Self;

    /// Sixteen lanes at `p` (the lanes under `m`, zeros elsewhere), widened.
    ///
    /// # Safety
    /// The elements under `m` at `p` are readable, and the CPU has AVX-512 F/BW/VL.
    #[doc(hidden)]
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self, m: std::arch::x86_64::__mmask16) -> std::arch::x86_64::__m512;

    /// The first `k` (1..=8) lanes at `p`, widened, zeros after them.
    ///
    /// # Safety
    /// `k` elements at `p` are readable, and the CPU has AVX2 and F16C.
    #[doc(hidden)]
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self, k: usize) -> std::arch::x86_64::__m256;
}

impl KvElem for f32 {
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(x: f32) -> Self {
        x
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn load16(p: *const f32, m: std::arch::x86_64::__mmask16) -> std::arch::x86_64::__m512 {
        // SAFETY: the lanes under `m` are readable (the caller's guarantee); masked-off lanes are
        // not accessed.
        unsafe { std::arch::x86_64::_mm512_maskz_loadu_ps(m, p) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(p: *const f32, k: usize) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: `k` floats at `p` are readable (the caller's guarantee): all 8, or the lanes
        // under the mask of the first `k`.
        unsafe {
            if k == 8 {
                _mm256_loadu_ps(p)
            } else {
                let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(k as i32), idx))
            }
        }
    }
}

/// The first `k` of 8 16-bit elements at `p`, zeros after them.
///
/// # Safety
/// `k` (at most 8) elements at `p` are readable, and the CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load8_u16(p: *const u16, k: usize) -> std::arch::x86_64::__m128i {
    use std::arch::x86_64::*;
    // SAFETY: `k` elements at `p` are readable: all 8 in one load, or `k` copied into a zeroed
    // buffer of 8 (AVX2 has no masked 16-bit load).
    unsafe {
        if k == 8 {
            _mm_loadu_si128(p.cast())
        } else {
            let mut buf = [0u16; 8];
            std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), k.min(8));
            _mm_loadu_si128(buf.as_ptr().cast())
        }
    }
}

impl KvElem for f16 {
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn load16(p: *const f16, m: std::arch::x86_64::__mmask16) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        // SAFETY: the lanes under `m` are readable; masked-off lanes are not accessed. f16 is
        // 16 bits of IEEE half, which `vcvtph2ps` widens exactly.
        unsafe { _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p.cast())) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(p: *const f16, k: usize) -> std::arch::x86_64::__m256 {
        // SAFETY: as `load8_u16` needs (the caller's guarantee).
        unsafe { std::arch::x86_64::_mm256_cvtph_ps(load8_u16(p.cast(), k)) }
    }
}

impl KvElem for bf16 {
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn load16(p: *const bf16, m: std::arch::x86_64::__mmask16) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        // SAFETY: the lanes under `m` are readable; masked-off lanes are not accessed. A bf16 is
        // the high half of an f32: widened by a shift.
        unsafe {
            let h = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p.cast()));
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(h))
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(p: *const bf16, k: usize) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: as `load8_u16` needs (the caller's guarantee).
        unsafe {
            let h = _mm256_cvtepu16_epi32(load8_u16(p.cast(), k));
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h))
        }
    }
}
