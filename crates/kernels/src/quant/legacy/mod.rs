//! Q4_1 and Q5_1: 32-value blocks `x = d * q + m`, paired with Q8_1 activations (whose `s` is
//! `d * Σ q`), so a block's dot product is `(d * a.d) * Σ q * a.q + m * a.s`.

pub(crate) mod blocks;
mod dequant;
#[cfg(target_arch = "x86_64")]
mod dot_avx2;
#[cfg(target_arch = "x86_64")]
mod dot_avx512;
#[cfg(target_arch = "x86_64")]
mod gemm256;
#[cfg(target_arch = "x86_64")]
mod gemm512;
pub(crate) mod packed;
pub(crate) mod quantize;
#[cfg(target_arch = "x86_64")]
pub(super) mod quantize_avx2;
pub(crate) mod reference;
#[cfg(target_arch = "x86_64")]
mod simd;

pub(crate) use dequant::dequantize_row;

use super::decoded::{Decoded32, Decoder};
use crate::cpu::Isa;
use crate::types::{GgmlType, QK};
use crate::view::blocks_of;
use blocks::{BlockQ4_1, BlockQ5_1};

pub(super) fn decoder(ty: GgmlType, isa: Isa) -> Option<Decoder> {
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2 {
        return simd::decoder(ty, isa);
    }
    let _ = isa;
    Some(match ty {
        GgmlType::Q4_1 => Decoder::B32(decode_q4_1),
        GgmlType::Q5_1 => Decoder::B32(decode_q5_1),
        _ => return None,
    })
}

/// The row kernels (one row, and four rows where there is one) of `ty` at exactly `isa`.
pub(super) fn rows(
    ty: GgmlType,
    isa: Isa,
) -> Option<(crate::simd::VecDotFn, Option<crate::simd::VecDot4Fn>)> {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => dot_avx512::rows(ty),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => dot_avx2::rows(ty),
        _ => None,
    }
}

/// Q4_1 values: low nibbles are values 0..16, high nibbles 16..32.
pub(crate) fn decode_q4_1(row: &[u8], out: &mut [Decoded32]) {
    for (x, o) in blocks_of::<BlockQ4_1>(row).iter().zip(out.iter_mut()) {
        for j in 0..QK / 2 {
            o.q[j] = (x.qs[j] & 0xF) as i8;
            o.q[j + QK / 2] = (x.qs[j] >> 4) as i8;
        }
        o.d = x.d.to_f32();
        o.m = x.m.to_f32();
    }
}

/// Q5_1 values: the Q4_1 nibbles plus a fifth bit from `qh` (bit `j` for value `j`).
pub(crate) fn decode_q5_1(row: &[u8], out: &mut [Decoded32]) {
    for (x, o) in blocks_of::<BlockQ5_1>(row).iter().zip(out.iter_mut()) {
        let qh = u32::from_le_bytes(x.qh);
        for j in 0..QK / 2 {
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            o.q[j] = ((x.qs[j] & 0xF) as u32 | h0) as i8;
            o.q[j + QK / 2] = ((x.qs[j] >> 4) as u32 | h1) as i8;
        }
        o.d = x.d.to_f32();
        o.m = x.m.to_f32();
    }
}
