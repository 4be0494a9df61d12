//! Run-time dispatch of dot-product kernels: the best implementation for a weight type at the
//! instruction-set level the CPU has.

use crate::cpu::Isa;
use crate::dot_scalar;
use crate::types::GgmlType;

/// Dot product of `n` values: a weight row (ggml bytes of the weight type) with an activation row
/// (bytes of its `vec_dot_type`).
pub type VecDotFn = fn(n: usize, w: &[u8], a: &[u8]) -> f32;

/// One weight row against four activation rows (prefill): the weight blocks are decoded once.
pub type VecDot4Fn = fn(n: usize, w: &[u8], a: &[&[u8]; 4]) -> [f32; 4];

/// A four-row kernel for `ty` at `isa` or below, if one exists (else use [`vec_dot_fn`] per row).
pub fn vec_dot4_fn(ty: GgmlType, isa: Isa) -> Option<VecDot4Fn> {
    crate::simd::vec_dot4_fn(ty, isa.min(Isa::best_available()))
}

/// The fastest kernel for weights of `ty` at `isa` or below, never one the CPU lacks.
pub fn vec_dot_fn(ty: GgmlType, isa: Isa) -> VecDotFn {
    let isa = isa.min(Isa::best_available());
    if let Some(f) = crate::simd::vec_dot_fn(ty, isa) {
        return f;
    }
    scalar_fn(ty)
}

/// The scalar reference kernel for `ty`.
pub fn scalar_fn(ty: GgmlType) -> VecDotFn {
    macro_rules! wrap {
        ($f:path) => {{
            fn k(_n: usize, w: &[u8], a: &[u8]) -> f32 {
                $f(w, a)
            }
            k
        }};
    }
    match ty {
        GgmlType::F32 => wrap!(dot_scalar::vec_dot_f32),
        GgmlType::F16 => wrap!(dot_scalar::vec_dot_f16),
        GgmlType::BF16 => wrap!(dot_scalar::vec_dot_bf16),
        GgmlType::Q4_0 => wrap!(dot_scalar::vec_dot_q4_0_q8_0),
        GgmlType::Q4_1 => wrap!(dot_scalar::vec_dot_q4_1_q8_1),
        GgmlType::Q5_0 => wrap!(dot_scalar::vec_dot_q5_0_q8_0),
        GgmlType::Q5_1 => wrap!(dot_scalar::vec_dot_q5_1_q8_1),
        GgmlType::Q8_0 => wrap!(dot_scalar::vec_dot_q8_0_q8_0),
        GgmlType::Q8_1 => wrap!(dot_scalar::vec_dot_q8_1_q8_1),
        GgmlType::Q2_K => wrap!(dot_scalar::vec_dot_q2_k_q8_k),
        GgmlType::Q3_K => wrap!(dot_scalar::vec_dot_q3_k_q8_k),
        GgmlType::Q4_K => wrap!(dot_scalar::vec_dot_q4_k_q8_k),
        GgmlType::Q5_K => wrap!(dot_scalar::vec_dot_q5_k_q8_k),
        GgmlType::Q6_K => wrap!(dot_scalar::vec_dot_q6_k_q8_k),
        GgmlType::Q8_K => wrap!(dot_scalar::vec_dot_q8_k_q8_k),
    }
}

/// `vec_dot_fn(ty, Isa::best())` applied once.
pub fn vec_dot(ty: GgmlType, n: usize, w: &[u8], a: &[u8]) -> f32 {
    vec_dot_fn(ty, Isa::best())(n, w, a)
}

/// f32 dot product (attention scores), with the best available kernel.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f32: length mismatch");
    crate::simd::dot_f32(a, b)
}

/// `y += alpha * x` (attention values), with the best available kernel.
pub fn axpy_f32(y: &mut [f32], alpha: f32, x: &[f32]) {
    assert_eq!(y.len(), x.len(), "axpy_f32: length mismatch");
    crate::simd::axpy_f32(y, alpha, x)
}
