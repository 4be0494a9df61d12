//! Reference dot products: one weight row against one activation row already quantized into the
//! weight type's `vec_dot_type`, computed like ggml's generic kernels (exact integer sums per block,
//! scaled by the block scales). Every SIMD kernel is tested against these. Each family defines
//! its own (`quant`); the types without a transcription of ggml's kernel use the generic
//! reference over their decoded form.

use crate::types::GgmlType;

pub use crate::quant::float::{vec_dot_bf16, vec_dot_f16, vec_dot_f32};
pub use crate::quant::kquants::reference::{
    vec_dot_q2_k_q8_k, vec_dot_q3_k_q8_k, vec_dot_q4_k_q8_k, vec_dot_q5_k_q8_k, vec_dot_q6_k_q8_k,
    vec_dot_q8_k_q8_k,
};
pub use crate::quant::legacy::reference::{
    vec_dot_q4_0_q8_0, vec_dot_q4_1_q8_1, vec_dot_q5_0_q8_0, vec_dot_q5_1_q8_1, vec_dot_q8_0_q8_0,
    vec_dot_q8_1_q8_1,
};

/// Dot product of `n` values: weights `w` of type `ty`, activations `a` of `ty.vec_dot_type()`.
pub fn vec_dot(ty: GgmlType, n: usize, w: &[u8], a: &[u8]) -> f32 {
    assert_eq!(Some(w.len()), ty.row_bytes(n), "vec_dot: weight row size");
    assert_eq!(
        Some(a.len()),
        ty.vec_dot_type().row_bytes(n),
        "vec_dot: activation row size"
    );
    crate::quant::reference_dot(ty, n, w, a)
}
