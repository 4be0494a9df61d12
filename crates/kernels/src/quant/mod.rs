//! Weight types computed through a decoded form, one folder per quantization family.
//!
//! A family owns its block layouts, its dequantization (bit-exact with ggml / gguf-py) and a
//! decoder per instruction-set level that turns a row of blocks into the [`decoded`] form; the
//! generic kernels ([`decoded`]: the reference, and its AVX2 and AVX-512 versions) multiply
//! that form with quantized activations. Adding a type means adding it to its family's folder and
//! one line to each `match` below.

pub mod decoded;
mod fp4;
mod iq1;
mod iq2;
mod iq3;
mod iq4;
mod kquants;
mod legacy;
mod q1q2;
mod ternary;

use crate::cpu::Isa;
use crate::types::GgmlType;
pub use decoded::{Decode32Fn, DecodeKFn, Decoded32, DecodedK, Decoder};
pub(crate) use fp4::quantize_mxfp4;
pub(crate) use iq4::{BlockIq4Nl, BlockIq4Xs, KVALUES as IQ4_VALUES};
pub(crate) use q1q2::{quantize_q1_0, quantize_q2_0};
pub(crate) use ternary::{quantize_tq1_0, quantize_tq2_0};

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
/// own (F32, F16, BF16, Q4_0, Q5_0, Q8_0, Q4_K, Q6_K, and the activation types).
pub fn decoder(ty: GgmlType, isa: Isa) -> Option<Decoder> {
    let isa = isa.min(Isa::best_available());
    match ty {
        GgmlType::Q4_1 | GgmlType::Q5_1 => legacy::decoder(ty, isa),
        GgmlType::IQ4_NL | GgmlType::IQ4_XS => iq4::decoder(ty, isa),
        GgmlType::IQ3_XXS | GgmlType::IQ3_S => iq3::decoder(ty, isa),
        GgmlType::TQ1_0 | GgmlType::TQ2_0 => ternary::decoder(ty, isa),
        GgmlType::MXFP4 => fp4::decoder(ty, isa),
        GgmlType::Q1_0 | GgmlType::Q2_0 => q1q2::decoder(ty, isa),
        GgmlType::IQ2_XXS | GgmlType::IQ2_XS | GgmlType::IQ2_S => iq2::decoder(ty, isa),
        GgmlType::IQ1_S | GgmlType::IQ1_M => iq1::decoder(ty, isa),
        GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q5_K => kquants::decoder(ty, isa),
        _ => None,
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

/// Dequantizes a row of a family's type into `dst`; `false` if `ty` belongs to no family here.
pub(crate) fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> bool {
    // Families add their types here: `GgmlType::X => family::dequantize_row(ty, src, dst)`.
    match ty {
        GgmlType::IQ4_NL | GgmlType::IQ4_XS => iq4::dequantize_row(ty, src, dst),
        GgmlType::IQ3_XXS | GgmlType::IQ3_S => iq3::dequantize_row(ty, src, dst),
        GgmlType::TQ1_0 | GgmlType::TQ2_0 => ternary::dequantize_row(ty, src, dst),
        GgmlType::MXFP4 => fp4::dequantize_row(ty, src, dst),
        GgmlType::Q1_0 | GgmlType::Q2_0 => q1q2::dequantize_row(ty, src, dst),
        GgmlType::IQ2_XXS | GgmlType::IQ2_XS | GgmlType::IQ2_S => iq2::dequantize_row(ty, src, dst),
        GgmlType::IQ1_S | GgmlType::IQ1_M => iq1::dequantize_row(ty, src, dst),
        _ => false,
    }
}
