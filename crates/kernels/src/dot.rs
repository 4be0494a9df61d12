//! Run-time dispatch of dot-product kernels (and of the activation quantizers that feed them): the
//! best implementation for a type at the instruction-set level the CPU has.

use crate::cpu::Isa;
use crate::dot_scalar;
use crate::kv_elem::KvElem;
use crate::types::GgmlType;

pub use crate::simd::{VecDot4Fn, VecDotFn};

/// A four-row kernel for `ty` at `isa` or below, if one exists (else use [`vec_dot_fn`] per row).
/// Each of its results is bit-identical to `vec_dot_fn(ty, isa)` on that row, so batching tokens
/// never changes their results.
pub fn vec_dot4_fn(ty: GgmlType, isa: Isa) -> Option<VecDot4Fn> {
    crate::quant::row_kernels(ty, isa).and_then(|k| k.1)
}

/// The fastest kernel for weights of `ty` at `isa` or below, never one the CPU lacks.
pub fn vec_dot_fn(ty: GgmlType, isa: Isa) -> VecDotFn {
    let isa = isa.min(Isa::best_available());
    if let Some((f, _)) = crate::quant::row_kernels(ty, isa) {
        return f;
    }
    decoded_fn(ty, isa).unwrap_or_else(|| scalar_fn(ty))
}

/// For a decoded type (`quant`), its decoder and generic dot product at `isa`, as one function.
fn decoded_fn(ty: GgmlType, isa: Isa) -> Option<VecDotFn> {
    use crate::quant::vec_dot;
    crate::quant::decoder(ty, isa)?;
    macro_rules! at_isa {
        ($($t:ident),*) => {
            match (ty, isa) {
                $(
                    (GgmlType::$t, Isa::Scalar) => |n: usize, w: &[u8], a: &[u8]| {
                        vec_dot(GgmlType::$t, Isa::Scalar, n, w, a)
                    },
                    (GgmlType::$t, Isa::Avx2) => |n: usize, w: &[u8], a: &[u8]| {
                        vec_dot(GgmlType::$t, Isa::Avx2, n, w, a)
                    },
                    (GgmlType::$t, Isa::Avx512Vnni) => |n: usize, w: &[u8], a: &[u8]| {
                        vec_dot(GgmlType::$t, Isa::Avx512Vnni, n, w, a)
                    },
                )*
            }
        };
    }
    Some(crate::types::with_all_types!(at_isa))
}

/// The scalar reference kernel for `ty` (checks the slice sizes like every other level).
pub fn scalar_fn(ty: GgmlType) -> VecDotFn {
    macro_rules! scalar {
        ($($t:ident),*) => {
            match ty {
                $(GgmlType::$t => |n: usize, w: &[u8], a: &[u8]| {
                    dot_scalar::vec_dot(GgmlType::$t, n, w, a)
                },)*
            }
        };
    }
    crate::types::with_all_types!(scalar)
}

pub use crate::simd::QuantizeRowFn;

/// The fastest activation quantizer for `ty` (F32, F16, BF16, Q8_0, Q8_1 or Q8_K) at `isa` or
/// below. Every level writes exactly the bytes of the scalar [`crate::quantize::quantize_row`].
pub fn quantize_row_fn(ty: GgmlType, isa: Isa) -> QuantizeRowFn {
    let isa = isa.min(Isa::best_available());
    if let Some(f) = crate::quant::activation_quantizer(ty, isa) {
        return f;
    }
    macro_rules! scalar {
        ($($t:ident),*) => {
            match ty {
                $(GgmlType::$t => |src: &[f32], dst: &mut [u8]| {
                    crate::quantize::quantize_row(GgmlType::$t, src, dst)
                },)*
                // Not an activation type: the scalar function reports it.
                _ => |_: &[f32], _: &mut [u8]| panic!("quantize_row: not an activation type"),
            }
        };
    }
    scalar!(F32, F16, BF16, Q8_0, Q8_1, Q8_K)
}

/// `quantize_row_fn(ty, Isa::best())` applied once.
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) {
    quantize_row_fn(ty, Isa::best())(src, dst)
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

/// [`crate::ops::scores_t`] (attention scores against transposed keys) with the kernel of `isa`
/// or the best level below it; every level gives the same bits.
#[allow(clippy::too_many_arguments)]
pub fn scores_t_at<E: KvElem>(
    isa: Isa,
    q: &[f32],
    dim: usize,
    kt: &[E],
    kt_stride: usize,
    len: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    let isa = isa.min(Isa::best_available());
    crate::simd::scores_t(isa, q, dim, kt, kt_stride, len, out, out_stride)
}

/// [`scores_t_at`] at `Isa::best()`.
pub fn scores_t<E: KvElem>(
    q: &[f32],
    dim: usize,
    kt: &[E],
    kt_stride: usize,
    len: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    scores_t_at(Isa::best(), q, dim, kt, kt_stride, len, out, out_stride)
}

/// [`crate::ops::weighted_rows`] (attention-weighted sums of value rows) with the kernel of `isa`
/// or the best level below it; every level gives the same bits.
#[allow(clippy::too_many_arguments)]
pub fn weighted_rows_at<E: KvElem>(
    isa: Isa,
    out: &mut [f32],
    dv: usize,
    w: &[f32],
    w_stride: usize,
    v: &[E],
    v_stride: usize,
    len: usize,
) {
    let isa = isa.min(Isa::best_available());
    crate::simd::weighted_rows(isa, out, dv, w, w_stride, v, v_stride, len)
}

/// [`weighted_rows_at`] at `Isa::best()`.
pub fn weighted_rows<E: KvElem>(
    out: &mut [f32],
    dv: usize,
    w: &[f32],
    w_stride: usize,
    v: &[E],
    v_stride: usize,
    len: usize,
) {
    weighted_rows_at(Isa::best(), out, dv, w, w_stride, v, v_stride, len)
}
