//! Every weight type's code, one folder per quantization family, and the one table that maps a
//! type to its family (`family`).
//!
//! A family owns its block layouts, its dequantization (bit-exact with ggml / gguf-py), its
//! reference dot products and quantizers, and its kernels at each instruction-set level: SIMD row
//! kernels (`dot_avx2`, `dot_avx512`: float, legacy, k-quants), and for the types computed
//! through the [`decoded`] form a decoder per level, whose output the generic kernels (`decoded`:
//! the reference, its AVX2 and AVX-512 versions and the AVX-512 GEMM) multiply with quantized
//! activations. Every operation here dispatches through `family`; adding a type to a family
//! touches that family's folder (and `types` for its id and sizes).

pub mod decoded;
pub(crate) mod float;
pub(crate) mod fp4;
mod iq1;
mod iq2;
mod iq3;
pub(crate) mod iq4;
pub(crate) mod kquants;
pub(crate) mod legacy;
mod q1q2;
pub(crate) mod rounding;
mod ternary;

use crate::cpu::Isa;
use crate::types::GgmlType;
pub use decoded::{Decode32Fn, DecodeKFn, Decoded32, DecodedK, Decoder};

/// Dot product of a decoded row with an activation row (bytes of the type's `vec_dot_type`).
pub type DotKFn = fn(w: &[DecodedK], a: &[u8]) -> f32;
pub type Dot32Fn = fn(w: &[Decoded32], a: &[u8]) -> f32;

/// A decoded type's kernels at one instruction-set level: its decoder and the generic dot
/// product that consumes what it decodes.
#[derive(Clone, Copy)]
pub enum Kernels {
    K { decode: DecodeKFn, dot: DotKFn },
    B32 { decode: Decode32Fn, dot: Dot32Fn },
}

/// The decoder of `ty` at `isa` or the best level below it; `None` for types with kernels of their
/// own (F32, F16, BF16, Q4_0, Q5_0, Q8_0, Q4_K, Q6_K, NVFP4, and the activation types).
pub fn decoder(ty: GgmlType, isa: Isa) -> Option<Decoder> {
    let isa = isa.min(Isa::best_available());
    match family(ty) {
        Family::Float => None,
        Family::Legacy => legacy::decoder(ty, isa),
        Family::KQuants => kquants::decoder(ty, isa),
        Family::Iq1 => iq1::decoder(ty, isa),
        Family::Iq2 => iq2::decoder(ty, isa),
        Family::Iq3 => iq3::decoder(ty, isa),
        Family::Iq4 => iq4::decoder(ty, isa),
        Family::Ternary => ternary::decoder(ty, isa),
        Family::Fp4 => fp4::decoder(ty, isa),
        Family::Q1Q2 => q1q2::decoder(ty, isa),
    }
}

/// The kernels of a decoded type at `isa` or the best level below it.
pub fn kernels(ty: GgmlType, isa: Isa) -> Option<Kernels> {
    Some(match decoder(ty, isa)? {
        Decoder::K(decode) => Kernels::K {
            decode,
            dot: dot_k_fn(isa),
        },
        Decoder::B32(decode) => Kernels::B32 {
            decode,
            dot: dot_32_fn(isa, ty.vec_dot_type()),
        },
    })
}

/// The generic dot product over decoded super-blocks at `isa` or the best level below it.
pub fn dot_k_fn(isa: Isa) -> DotKFn {
    decoded::simd_dot_k(isa.min(Isa::best_available())).unwrap_or(decoded::dot_k)
}

/// The generic dot product over decoded 32-value blocks against activations of type `act`
/// (Q8_0 or Q8_1) at `isa` or the best level below it.
pub fn dot_32_fn(isa: Isa, act: GgmlType) -> Dot32Fn {
    let q8_1 = act == GgmlType::Q8_1;
    let reference = if q8_1 {
        decoded::dot_32_q8_1
    } else {
        decoded::dot_32_q8_0
    };
    decoded::simd_dot_32(isa.min(Isa::best_available()), q8_1).unwrap_or(reference)
}

/// Dot product of `n` values of a decoded type with its activations, at `isa` or below: the row
/// is decoded, then multiplied. For tests and one-off products; `matmul` decodes each weight row
/// once per block of tokens.
pub fn vec_dot(ty: GgmlType, isa: Isa, n: usize, w: &[u8], a: &[u8]) -> f32 {
    assert_eq!(Some(w.len()), ty.row_bytes(n), "vec_dot: weight row size");
    assert_eq!(
        Some(a.len()),
        ty.vec_dot_type().row_bytes(n),
        "vec_dot: activation row size"
    );
    match kernels(ty, isa).unwrap_or_else(|| panic!("{ty} is not a decoded type")) {
        Kernels::K { decode, dot } => {
            let mut buf = vec![DecodedK::ZERO; n / crate::QK_K];
            decode(w, &mut buf);
            dot(&buf, a)
        }
        Kernels::B32 { decode, dot } => {
            let mut buf = vec![Decoded32::ZERO; n / crate::QK];
            decode(w, &mut buf);
            dot(&buf, a)
        }
    }
}

/// The quantization family of each type: the one table through which every per-type operation
/// (dequantization, reference dot product, quantization, kernels) finds its family's code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    Float,
    Legacy,
    KQuants,
    Iq1,
    Iq2,
    Iq3,
    Iq4,
    Ternary,
    Fp4,
    Q1Q2,
}

pub(crate) fn family(ty: GgmlType) -> Family {
    use GgmlType::*;
    match ty {
        F32 | F16 | BF16 => Family::Float,
        Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q8_1 => Family::Legacy,
        Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | Q8_K => Family::KQuants,
        IQ1_S | IQ1_M => Family::Iq1,
        IQ2_XXS | IQ2_XS | IQ2_S => Family::Iq2,
        IQ3_XXS | IQ3_S => Family::Iq3,
        IQ4_NL | IQ4_XS => Family::Iq4,
        TQ1_0 | TQ2_0 => Family::Ternary,
        MXFP4 | NVFP4 => Family::Fp4,
        Q1_0 | Q2_0 => Family::Q1Q2,
    }
}

/// The reference dot product of a row of `ty` with its activations (sizes checked by the caller):
/// the family's transcription of ggml's generic kernel where it has one, else the generic
/// reference over the decoded form.
pub(crate) fn reference_dot(ty: GgmlType, n: usize, w: &[u8], a: &[u8]) -> f32 {
    let own = match family(ty) {
        Family::Float => float::vec_dot(ty, w, a),
        Family::Legacy => legacy::reference::vec_dot(ty, w, a),
        Family::KQuants => kquants::reference::vec_dot(ty, w, a),
        Family::Fp4 => fp4::reference_dot(ty, w, a),
        _ => None,
    };
    own.unwrap_or_else(|| vec_dot(ty, Isa::Scalar, n, w, a))
}

/// The SIMD row kernels of `ty` (one row, and four rows where there is one) from the best level
/// at or below `isa` (capped at what the CPU has) that has them; `None` for types whose rows are
/// computed through their decoded form, and at the scalar level. The four-row kernel always comes
/// from the same level as the one-row kernel, so a token's result does not depend on whether it
/// was computed alone or in a batch.
pub(crate) fn row_kernels(
    ty: GgmlType,
    isa: Isa,
) -> Option<(crate::simd::VecDotFn, Option<crate::simd::VecDot4Fn>)> {
    let at = |isa| match family(ty) {
        Family::Float => float::rows(ty, isa),
        Family::Legacy => legacy::rows(ty, isa),
        Family::KQuants => kquants::rows(ty, isa),
        Family::Fp4 => fp4::rows(ty, isa),
        Family::Iq2 => iq2::rows(ty, isa),
        Family::Ternary => ternary::rows(ty, isa),
        _ => None,
    };
    let isa = isa.min(Isa::best_available());
    [Isa::Avx512Vnni, Isa::Avx2]
        .into_iter()
        .filter(|&l| l <= isa)
        .find_map(at)
}

/// The SIMD quantizer of activation type `ty` at `isa` (capped at what the CPU has), if its
/// family has one: byte-identical to [`quantize_activations`].
pub(crate) fn activation_quantizer(ty: GgmlType, isa: Isa) -> Option<crate::simd::QuantizeRowFn> {
    if isa.min(Isa::best_available()) < Isa::Avx2 {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        match family(ty) {
            Family::Float => float::quantize_avx2::quantizer(ty),
            Family::Legacy => legacy::quantize_avx2::quantizer(ty),
            Family::KQuants => kquants::quantize_avx2::quantizer(ty),
            _ => None,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// The packed (row-interleaved) layout of `ty` for the packed GEMM, if its family defines one.
pub(crate) fn packed_layout(ty: GgmlType) -> Option<crate::packed::Layout> {
    match family(ty) {
        Family::Legacy => legacy::packed::layout(ty),
        Family::KQuants => kquants::packed::layout(ty),
        Family::Iq4 => iq4::packed::layout(ty),
        Family::Fp4 => fp4::packed::layout(ty),
        _ => None,
    }
}

/// Quantizes an activation row into `ty` (F32, F16, BF16, Q8_0, Q8_1, Q8_K: the `vec_dot_type`s)
/// as ggml's x86 build does (sizes checked by the caller); `false` for other types.
pub(crate) fn quantize_activations(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> bool {
    match family(ty) {
        Family::Float => float::quantize_row(ty, src, dst),
        Family::Legacy => legacy::quantize::quantize_activations(ty, src, dst),
        Family::KQuants => kquants::quantize::quantize_activations(ty, src, dst),
        _ => false,
    }
}

/// Quantizes weights into `ty` with ggml's reference algorithm (sizes checked by the caller);
/// `false` for types without one here (the i-quants need an importance matrix: llama-quantize
/// makes them).
pub(crate) fn quantize_weights(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> bool {
    use crate::types::{QK, QK_K};
    use crate::view::write_blocks;
    match ty {
        GgmlType::TQ1_0 => write_blocks(dst, src, QK_K, ternary::quantize_tq1_0),
        GgmlType::TQ2_0 => write_blocks(dst, src, QK_K, ternary::quantize_tq2_0),
        GgmlType::MXFP4 => write_blocks(dst, src, QK, fp4::quantize_mxfp4),
        GgmlType::NVFP4 => write_blocks(dst, src, 64, fp4::nvfp4::quantize_nvfp4),
        GgmlType::Q1_0 => write_blocks(dst, src, 128, q1q2::quantize_q1_0),
        GgmlType::Q2_0 => write_blocks(dst, src, 64, q1q2::quantize_q2_0),
        _ => {
            return match family(ty) {
                Family::Float => float::quantize_row(ty, src, dst),
                Family::Legacy => legacy::quantize::quantize_weights(ty, src, dst),
                Family::KQuants => kquants::quantize::quantize_weights(ty, src, dst),
                _ => false,
            }
        }
    }
    true
}

/// Dequantizes a row of `ty` into `dst` (sizes checked by the caller); `false` if its family
/// has no dequantization for it.
pub(crate) fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> bool {
    match family(ty) {
        Family::Float => float::dequantize_row(ty, src, dst),
        Family::Legacy => legacy::dequantize_row(ty, src, dst),
        Family::KQuants => kquants::dequantize_row(ty, src, dst),
        Family::Iq1 => iq1::dequantize_row(ty, src, dst),
        Family::Iq2 => iq2::dequantize_row(ty, src, dst),
        Family::Iq3 => iq3::dequantize_row(ty, src, dst),
        Family::Iq4 => iq4::dequantize_row(ty, src, dst),
        Family::Ternary => ternary::dequantize_row(ty, src, dst),
        Family::Fp4 => fp4::dequantize_row(ty, src, dst),
        Family::Q1Q2 => q1q2::dequantize_row(ty, src, dst),
    }
}
