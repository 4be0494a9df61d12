//! SIMD kernels, each tested against its scalar reference (tests/simd*.rs).
//!
//! x86_64 has two levels, both compiled into every binary and chosen at run time: AVX2+FMA+F16C
//! (`avx2`), and AVX-512 F/BW/VL/DQ+VNNI on 512-bit registers (`avx512`). The packed GEMM has one
//! kernel per level (`gemm256`, `gemm512`, over the same layouts). Other targets use the scalar
//! kernels.

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
mod attn;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
pub(crate) mod gemm256;
#[cfg(target_arch = "x86_64")]
pub(crate) mod gemm512;

/// A SIMD kernel for `ty` at `isa` (which the caller has checked is available), if there is one.
pub(crate) fn vec_dot_fn(ty: GgmlType, isa: Isa) -> Option<VecDotFn> {
    #[cfg(target_arch = "x86_64")]
    {
        match isa {
            Isa::Avx512Vnni => avx512::kernel(ty).or_else(|| avx2::kernel(ty)),
            Isa::Avx2 => avx2::kernel(ty),
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
/// It always comes from the same level as `vec_dot_fn(ty, isa)`, so a token's result does not
/// depend on whether it was computed alone or in a batch.
pub(crate) fn vec_dot4_fn(ty: GgmlType, isa: Isa) -> Option<VecDot4Fn> {
    #[cfg(target_arch = "x86_64")]
    {
        match isa {
            Isa::Avx512Vnni if avx512::kernel(ty).is_some() => avx512::kernel4(ty),
            Isa::Avx512Vnni | Isa::Avx2 => avx2::kernel4(ty),
            Isa::Scalar => None,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (ty, isa);
        None
    }
}

/// A SIMD activation quantizer for `ty` at `isa`, byte-identical to `quantize::quantize_row`.
pub(crate) fn quantize_row_fn(ty: GgmlType, isa: Isa) -> Option<QuantizeRowFn> {
    #[cfg(target_arch = "x86_64")]
    {
        // 256-bit code is enough here: quantization is a small share of a matmul.
        match isa {
            Isa::Avx512Vnni | Isa::Avx2 => avx2::quantizer(ty),
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
        Isa::Avx512Vnni => return avx512::dot_f32(a, b),
        Isa::Avx2 => return avx2::dot_f32(a, b),
        Isa::Scalar => {}
    }
    crate::ops::dot_f32(a, b)
}

/// `ops::scores_t` with the best kernel at `isa` (bit-identical at every level).
#[allow(clippy::too_many_arguments)]
pub(crate) fn scores_t(
    isa: Isa,
    q: &[f32],
    dim: usize,
    kt: &[f32],
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
pub(crate) fn weighted_rows(
    isa: Isa,
    out: &mut [f32],
    dv: usize,
    w: &[f32],
    w_stride: usize,
    v: &[f32],
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

pub(crate) fn axpy_f32(y: &mut [f32], alpha: f32, x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    match Isa::best() {
        Isa::Avx512Vnni => return avx512::axpy_f32(y, alpha, x),
        Isa::Avx2 => return avx2::axpy_f32(y, alpha, x),
        Isa::Scalar => {}
    }
    crate::ops::axpy(y, alpha, x)
}
