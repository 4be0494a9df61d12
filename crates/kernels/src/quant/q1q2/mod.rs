//! Q1_0 and Q2_0: one f16 `d` per 128 values (Q1_0: `x = ±d`, one bit each) or per 64 values
//! (Q2_0: `x = d * (q - 1)`, q in 0..4), paired with Q8_0 activations. ggml's generic dot product
//! sums each Q8_0 block's `a.d * isum` and multiplies the block's sum by `d` once; the decoded
//! form repeats `d` for each 32 values and computes `(d * a.d) * isum` per 32: the same exact
//! integers, the float products distributed (as ggml's own SSSE3 kernel for Q1_0 does).

#[cfg(target_arch = "x86_64")]
mod avx2;

use super::decoded::{Decoded32, Decoder};
use crate::cpu::Isa;
use crate::types::{GgmlType, QK};
use crate::view::blocks_of;
use bytemuck::{Pod, Zeroable};
use half::f16;

/// Q1_0: value `j` is `+d` where bit `j % 8` of `qs[j / 8]` is set, else `-d`.
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
#[repr(C)]
pub struct BlockQ1_0 {
    pub d: f16,
    pub qs: [u8; 16],
}

/// Q2_0: value `j` is `d * (((qs[j / 4] >> 2 (j % 4)) & 3) - 1)`.
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
#[repr(C)]
pub struct BlockQ2_0 {
    pub d: f16,
    pub qs: [u8; 16],
}

const _: () = {
    assert!(std::mem::size_of::<BlockQ1_0>() == 18);
    assert!(std::mem::size_of::<BlockQ2_0>() == 18);
};

pub(super) fn decoder(ty: GgmlType, isa: Isa) -> Option<Decoder> {
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2 {
        return avx2::decoder(ty);
    }
    let _ = isa;
    Some(match ty {
        GgmlType::Q1_0 => Decoder::B32(decode_q1_0),
        GgmlType::Q2_0 => Decoder::B32(decode_q2_0),
        _ => return None,
    })
}

/// Sign bit `j` of a Q1_0 block as ±1.
#[inline(always)]
fn sign(qs: &[u8; 16], j: usize) -> i8 {
    if (qs[j / 8] >> (j % 8)) & 1 != 0 {
        1
    } else {
        -1
    }
}

/// Field `j` of a Q2_0 block minus one (-1..=2).
#[inline(always)]
fn field(qs: &[u8; 16], j: usize) -> i8 {
    ((qs[j / 4] >> (2 * (j % 4))) & 3) as i8 - 1
}

pub(crate) fn decode_q1_0(row: &[u8], out: &mut [Decoded32]) {
    for (x, o) in blocks_of::<BlockQ1_0>(row)
        .iter()
        .zip(out.chunks_exact_mut(4))
    {
        for (k, o) in o.iter_mut().enumerate() {
            for j in 0..QK {
                o.q[j] = sign(&x.qs, QK * k + j);
            }
            o.d = x.d.to_f32();
            o.m = 0.0;
        }
    }
}

pub(crate) fn decode_q2_0(row: &[u8], out: &mut [Decoded32]) {
    for (x, o) in blocks_of::<BlockQ2_0>(row)
        .iter()
        .zip(out.chunks_exact_mut(2))
    {
        for (k, o) in o.iter_mut().enumerate() {
            for j in 0..QK {
                o.q[j] = field(&x.qs, QK * k + j);
            }
            o.d = x.d.to_f32();
            o.m = 0.0;
        }
    }
}

/// ggml's `dequantize_row_q1_0` (`bit ? d : -d`) and `dequantize_row_q2_0` (`(q - 1) as f32 * d`).
pub(super) fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> bool {
    match ty {
        GgmlType::Q1_0 => {
            for (x, y) in blocks_of::<BlockQ1_0>(src)
                .iter()
                .zip(dst.chunks_exact_mut(128))
            {
                let d = x.d.to_f32();
                for (j, y) in y.iter_mut().enumerate() {
                    *y = if sign(&x.qs, j) > 0 { d } else { -d };
                }
            }
        }
        GgmlType::Q2_0 => {
            for (x, y) in blocks_of::<BlockQ2_0>(src)
                .iter()
                .zip(dst.chunks_exact_mut(64))
            {
                let d = x.d.to_f32();
                for (j, y) in y.iter_mut().enumerate() {
                    *y = field(&x.qs, j) as f32 * d;
                }
            }
        }
        _ => return false,
    }
    true
}

/// ggml's `quantize_row_q1_0_ref` for one block of 128 values: `d` = mean |x|, bit set for x >= 0.
pub(crate) fn quantize_q1_0(x: &[f32]) -> BlockQ1_0 {
    let sum_abs = x.iter().fold(0.0f32, |s, v| s + v.abs());
    let mut b = BlockQ1_0 {
        d: f16::from_f32(sum_abs / 128.0),
        qs: [0; 16],
    };
    for (j, &v) in x.iter().enumerate() {
        if v >= 0.0 {
            b.qs[j / 8] |= 1 << (j % 8);
        }
    }
    b
}

/// ggml's `quantize_row_q2_0_ref` for one block of 64 values: `d` = max |x|, fields
/// `round(x / d) + 1` clamped to 0..=3.
pub(crate) fn quantize_q2_0(x: &[f32]) -> BlockQ2_0 {
    let amax = x
        .iter()
        .fold(0.0f32, |m, v| if v.abs() > m { v.abs() } else { m });
    let id = if amax > 0.0 { 1.0 / amax } else { 0.0 };
    let mut b = BlockQ2_0 {
        d: f16::from_f32(amax),
        qs: [0; 16],
    };
    for (j, &v) in x.iter().enumerate() {
        let q = ((v * id).round() as i32 + 1).clamp(0, 3) as u8;
        b.qs[j / 4] |= q << (2 * (j % 4));
    }
    b
}

#[cfg(test)]
mod tests;
