//! SIMD code shared by the families' kernels, each tested against its scalar reference
//! (tests/simd*.rs): the kernel signatures, the building blocks of each level (`avx2::prims`,
//! `avx512::prims`), the f32 operations of attention (`attn`, dot products, axpy). The kernels of
//! each weight type live with its family (`quant`).
//!
//! x86_64 has two levels, both compiled into every binary and chosen at run time: AVX2+FMA+F16C
//! (`avx2`), and AVX-512 F/BW/VL/DQ+VNNI on 512-bit registers (`avx512`). Other targets use the
//! scalar kernels.

use crate::cpu::Isa;

/// Dot product of `n` values: a weight row (ggml bytes of the weight type) with an activation row
/// (bytes of its `vec_dot_type`).
pub type VecDotFn = fn(n: usize, w: &[u8], a: &[u8]) -> f32;

/// One weight row against four activation rows (prefill): the weight blocks are decoded once.
pub type VecDot4Fn = fn(n: usize, w: &[u8], a: &[&[u8]; 4]) -> [f32; 4];

/// Quantizes one activation row into `ty`; `dst` holds exactly `ty.row_bytes(src.len())` bytes.
pub type QuantizeRowFn = fn(src: &[f32], dst: &mut [u8]);
use crate::types::GgmlType;

#[cfg(target_arch = "x86_64")]
mod activation;
#[cfg(target_arch = "x86_64")]
mod attn;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
#[cfg(target_arch = "x86_64")]
mod delta_net;
#[cfg(target_arch = "x86_64")]
pub(crate) mod kv_quant;

/// Panics unless `w` and `a` hold `n` values of `ty` and of its activation type: the check every
/// safe row kernel makes before its pointer arithmetic.
pub(crate) fn check_row(ty: GgmlType, n: usize, w: &[u8], a: &[u8]) {
    assert_eq!(Some(w.len()), ty.row_bytes(n), "vec_dot: weight row size");
    assert_eq!(
        Some(a.len()),
        ty.vec_dot_type().row_bytes(n),
        "vec_dot: activation row size"
    );
}

/// Panics unless `dst` holds exactly the bytes of `src.len()` values of `ty`: the check every
/// safe activation quantizer makes before its pointer arithmetic.
pub(crate) fn check_quantized_row(ty: GgmlType, src: &[f32], dst: &[u8]) {
    assert_eq!(
        Some(dst.len()),
        ty.row_bytes(src.len()),
        "quantize_row: {ty} destination size does not match {} values",
        src.len()
    );
}

pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    match Isa::best() {
        Isa::Avx512Vnni => return avx512::dot_f32(a, b),
        Isa::Avx2 => return avx2::dot_f32(a, b),
        Isa::Scalar => {}
    }
    crate::ops::dot_f32(a, b)
}

/// `ops::scores_t` with the best kernel at `isa` (bit-identical at every level).
#[allow(clippy::too_many_arguments)]
pub(crate) fn scores_t<E: crate::kv_elem::KvElem>(
    isa: Isa,
    q: &[f32],
    dim: usize,
    kt: &[E],
    kt_stride: usize,
    len: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512Vnni => {
            return attn::avx512::scores_t(q, dim, kt, kt_stride, len, out, out_stride)
        }
        Isa::Avx2 => return attn::avx2::scores_t(q, dim, kt, kt_stride, len, out, out_stride),
        Isa::Scalar => {}
    }
    crate::ops::scores_t(q, dim, kt, kt_stride, len, out, out_stride)
}

/// `ops::weighted_rows` with the best kernel at `isa` (bit-identical at every level).
#[allow(clippy::too_many_arguments)]
pub(crate) fn weighted_rows<E: crate::kv_elem::KvElem>(
    isa: Isa,
    out: &mut [f32],
    dv: usize,
    w: &[f32],
    w_stride: usize,
    v: &[E],
    v_stride: usize,
    len: usize,
) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512Vnni => {
            return attn::avx512::weighted_rows(out, dv, w, w_stride, v, v_stride, len)
        }
        Isa::Avx2 => return attn::avx2::weighted_rows(out, dv, w, w_stride, v, v_stride, len),
        Isa::Scalar => {}
    }
    crate::ops::weighted_rows(out, dv, w, w_stride, v, v_stride, len)
}

/// `ops::softmax` with the kernel of `isa` (bit-identical at every level).
pub(crate) fn softmax(isa: Isa, x: &mut [f32], scale: f32) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512Vnni => return activation::avx512::softmax(x, scale),
        Isa::Avx2 => return activation::avx2::softmax(x, scale),
        Isa::Scalar => {}
    }
    crate::ops::softmax(x, scale)
}

/// `ops::swiglu` with the kernel of `isa` (bit-identical at every level).
pub(crate) fn swiglu(isa: Isa, gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512Vnni => return activation::avx512::swiglu(gate, up),
        Isa::Avx2 => return activation::avx2::swiglu(gate, up),
        Isa::Scalar => {}
    }
    crate::ops::swiglu(gate, up)
}

/// `ops::geglu` with the kernel of `isa` (bit-identical at every level).
pub(crate) fn geglu(isa: Isa, gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512Vnni => return activation::avx512::geglu(gate, up),
        Isa::Avx2 => return activation::avx2::geglu(gate, up),
        Isa::Scalar => {}
    }
    crate::ops::geglu(gate, up)
}

/// `S *= decay; acc = Sᵀk` (`acc[j] = Σ_i S[i][j]·k[i]`, fused, in order of `i`).
pub(crate) type DecayProjectFn =
    fn(s: &mut [f32], dim: usize, decay: f32, k: &[f32], acc: &mut [f32]);

/// `S += k δᵀ; o = Sᵀq` (each `S[i][j] = k[i]·δ[j] + S[i][j]` fused, then `o[j]` summed like
/// `acc`).
pub(crate) type UpdateReadFn =
    fn(s: &mut [f32], dim: usize, k: &[f32], delta: &[f32], q: &[f32], o: &mut [f32]);

/// `ops::weighted_rows`: `out[h][..] += Σ_j w[h][j] · v[j][..]`.
pub(crate) type WeightedRowsFn = fn(
    out: &mut [f32],
    dv: usize,
    w: &[f32],
    w_stride: usize,
    v: &[f32],
    v_stride: usize,
    len: usize,
);

/// Gated DeltaNet's kernels at one level (`delta_net`): the recurrence's two passes over one
/// head's state for one token, and the chunked form's products.
#[derive(Clone, Copy)]
pub(crate) struct Passes {
    pub decay_project: DecayProjectFn,
    pub update_read: UpdateReadFn,
    pub weighted_rows: WeightedRowsFn,
}

/// Gated DeltaNet's kernels at `isa` (checked available), if SIMD: bit-identical to the scalar
/// ones in `delta_net`.
pub(crate) fn delta_net_passes(isa: Isa) -> Option<Passes> {
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512Vnni => return Some(delta_net::avx512::PASSES),
        Isa::Avx2 => return Some(delta_net::avx2::PASSES),
        Isa::Scalar => {}
    }
    let _ = isa;
    None
}

pub(crate) fn axpy_f32(y: &mut [f32], alpha: f32, x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    match Isa::best() {
        Isa::Avx512Vnni => return avx512::axpy_f32(y, alpha, x),
        Isa::Avx2 => return avx2::axpy_f32(y, alpha, x),
        Isa::Scalar => {}
    }
    crate::ops::axpy(y, alpha, x)
}
