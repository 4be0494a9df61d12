//! Softmax, SwiGLU and GeGLU over rows with the best SIMD kernel the CPU has: the same bits as their
//! scalar references (`ops::softmax`, `ops::swiglu`, `ops::geglu`) at every level.

use crate::cpu::Isa;

/// [`crate::ops::softmax`] (of `scale · x`, in place) with the kernel of `isa` or the best level
/// below it.
pub fn softmax_at(isa: Isa, x: &mut [f32], scale: f32) {
    crate::simd::softmax(isa.min(Isa::best_available()), x, scale)
}

/// [`softmax_at`] at `Isa::best()`.
pub fn softmax(x: &mut [f32], scale: f32) {
    softmax_at(Isa::best(), x, scale)
}

/// [`crate::ops::swiglu`] (`gate[i] = silu(gate[i]) · up[i]`) with the kernel of `isa` or the best
/// level below it.
pub fn swiglu_at(isa: Isa, gate: &mut [f32], up: &[f32]) {
    crate::simd::swiglu(isa.min(Isa::best_available()), gate, up)
}

/// [`swiglu_at`] at `Isa::best()`.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    swiglu_at(Isa::best(), gate, up)
}

/// [`crate::ops::geglu`] (`gate[i] = gelu(gate[i]) · up[i]`) with the kernel of `isa` or the best
/// level below it.
pub fn geglu_at(isa: Isa, gate: &mut [f32], up: &[f32]) {
    crate::simd::geglu(isa.min(Isa::best_available()), gate, up)
}

/// [`geglu_at`] at `Isa::best()`.
pub fn geglu(gate: &mut [f32], up: &[f32]) {
    geglu_at(Isa::best(), gate, up)
}
