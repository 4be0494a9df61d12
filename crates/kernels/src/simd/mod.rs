//! SIMD kernels, each tested against its scalar reference in `dot_scalar` (tests/simd.rs).
//!
//! x86_64 has two levels: AVX2+FMA+F16C, and the same kernels with AVX-512 VNNI's `vpdpbusd` (on
//! 256-bit registers) for the 8-bit dot products. Both are compiled into every binary and chosen
//! at run time.

use crate::cpu::Isa;
use crate::dot::VecDotFn;
use crate::types::GgmlType;

#[cfg(target_arch = "x86_64")]
mod x86;

/// A SIMD kernel for `ty` at `isa` (which the caller has checked is available), if there is one.
pub(crate) fn vec_dot_fn(ty: GgmlType, isa: Isa) -> Option<VecDotFn> {
    #[cfg(target_arch = "x86_64")]
    {
        match isa {
            Isa::Avx512Vnni => x86::vnni::kernel(ty),
            Isa::Avx2 => x86::avx2::kernel(ty),
            Isa::Scalar => None,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (ty, isa);
        None
    }
}

/// A kernel dotting one weight row with four activation rows, for `ty` at `isa`, if there is one.
pub(crate) fn vec_dot4_fn(ty: GgmlType, isa: Isa) -> Option<crate::dot::VecDot4Fn> {
    #[cfg(target_arch = "x86_64")]
    {
        match isa {
            Isa::Avx512Vnni => x86::vnni::kernel4(ty),
            Isa::Avx2 => x86::avx2::kernel4(ty),
            Isa::Scalar => None,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (ty, isa);
        None
    }
}

pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    match Isa::best() {
        Isa::Avx512Vnni => return x86::vnni::dot_f32(a, b),
        Isa::Avx2 => return x86::avx2::dot_f32(a, b),
        Isa::Scalar => {}
    }
    crate::ops::dot_f32(a, b)
}

pub(crate) fn axpy_f32(y: &mut [f32], alpha: f32, x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    match Isa::best() {
        Isa::Avx512Vnni => return x86::vnni::axpy_f32(y, alpha, x),
        Isa::Avx2 => return x86::avx2::axpy_f32(y, alpha, x),
        Isa::Scalar => {}
    }
    crate::ops::axpy(y, alpha, x)
}
