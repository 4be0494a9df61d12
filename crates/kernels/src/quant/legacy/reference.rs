//! Reference dot products of the 32-value types with their activations, computed like ggml's
//! generic kernels: an exact integer sum per block, scaled by the block scales, blocks summed in
//! order. The SIMD and packed kernels of these types are tested against them.

use super::blocks::*;
use crate::types::{GgmlType, QK};
use crate::view::blocks_of;

/// The reference dot product of a row of legacy type `ty`; `None` if `ty` is not one.
pub(crate) fn vec_dot(ty: GgmlType, w: &[u8], a: &[u8]) -> Option<f32> {
    Some(match ty {
        GgmlType::Q4_0 => vec_dot_q4_0_q8_0(w, a),
        GgmlType::Q4_1 => vec_dot_q4_1_q8_1(w, a),
        GgmlType::Q5_0 => vec_dot_q5_0_q8_0(w, a),
        GgmlType::Q5_1 => vec_dot_q5_1_q8_1(w, a),
        GgmlType::Q8_0 => vec_dot_q8_0_q8_0(w, a),
        GgmlType::Q8_1 => vec_dot_q8_1_q8_1(w, a),
        _ => return None,
    })
}

/// Sums `f(weight block, activation block)` over the row's blocks, in order.
pub(crate) fn sum_blocks<W: bytemuck::Pod, A: bytemuck::Pod>(
    w: &[u8],
    a: &[u8],
    f: impl Fn(&W, &A) -> f32,
) -> f32 {
    let (x, y) = (blocks_of::<W>(w), blocks_of::<A>(a));
    x.iter()
        .zip(y.iter())
        .fold(0.0f32, |sum, (x, y)| sum + f(x, y))
}

/// Exact integer dot product of two int8 runs.
pub(crate) fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&p, &q)| p as i32 * q as i32).sum()
}

/// Q4_0 · Q8_0: per block, (integer sum of (q - 8) a) × d_w × d_a.
pub fn vec_dot_q4_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let (x, y) = (blocks_of::<BlockQ4_0>(w), blocks_of::<BlockQ8_0>(a));
    let mut sum = 0.0f32;
    for (x, y) in x.iter().zip(y.iter()) {
        let mut s = 0i32;
        for j in 0..QK / 2 {
            s += ((x.qs[j] & 0xF) as i32 - 8) * y.qs[j] as i32;
            s += ((x.qs[j] >> 4) as i32 - 8) * y.qs[j + QK / 2] as i32;
        }
        sum += s as f32 * x.d.to_f32() * y.d.to_f32();
    }
    sum
}

/// Q4_1 · Q8_1: per block, d_w d_a × (integer sum of q a) + m × s, where s is the activation
/// block's stored d × sum(a).
pub fn vec_dot_q4_1_q8_1(w: &[u8], a: &[u8]) -> f32 {
    let (x, y) = (blocks_of::<BlockQ4_1>(w), blocks_of::<BlockQ8_1>(a));
    let mut sum = 0.0f32;
    for (x, y) in x.iter().zip(y.iter()) {
        let mut s = 0i32;
        for j in 0..QK / 2 {
            s += (x.qs[j] & 0xF) as i32 * y.qs[j] as i32;
            s += (x.qs[j] >> 4) as i32 * y.qs[j + QK / 2] as i32;
        }
        sum += (x.d.to_f32() * y.d.to_f32()) * s as f32 + x.m.to_f32() * y.s.to_f32();
    }
    sum
}

#[inline]
fn q5_values(qs: &[u8; 16], qh: [u8; 4]) -> [i32; QK] {
    let qh = u32::from_le_bytes(qh);
    let mut v = [0i32; QK];
    for j in 0..QK / 2 {
        v[j] = ((qs[j] & 0xF) | ((((qh >> j) << 4) & 0x10) as u8)) as i32;
        v[j + QK / 2] = ((qs[j] >> 4) | (((qh >> (j + 12)) & 0x10) as u8)) as i32;
    }
    v
}

/// Q5_0 · Q8_0: like Q4_0 with 5-bit quants biased by 16.
pub fn vec_dot_q5_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    sum_blocks(w, a, |x: &BlockQ5_0, y: &BlockQ8_0| {
        let v = q5_values(&x.qs, x.qh);
        let s: i32 = v
            .iter()
            .zip(&y.qs)
            .map(|(&q, &b)| (q - 16) * b as i32)
            .sum();
        s as f32 * x.d.to_f32() * y.d.to_f32()
    })
}

/// Q5_1 · Q8_1: like Q4_1 with 5-bit quants.
pub fn vec_dot_q5_1_q8_1(w: &[u8], a: &[u8]) -> f32 {
    sum_blocks(w, a, |x: &BlockQ5_1, y: &BlockQ8_1| {
        let v = q5_values(&x.qs, x.qh);
        let s: i32 = v.iter().zip(&y.qs).map(|(&q, &b)| q * b as i32).sum();
        (x.d.to_f32() * y.d.to_f32()) * s as f32 + x.m.to_f32() * y.s.to_f32()
    })
}

/// Q8_0 · Q8_0: per block, (integer sum) × d_w × d_a.
pub fn vec_dot_q8_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    sum_blocks(w, a, |x: &BlockQ8_0, y: &BlockQ8_0| {
        dot_i8(&x.qs, &y.qs) as f32 * x.d.to_f32() * y.d.to_f32()
    })
}

/// Q8_1 · Q8_1 (the stored sums are not needed).
pub fn vec_dot_q8_1_q8_1(w: &[u8], a: &[u8]) -> f32 {
    sum_blocks(w, a, |x: &BlockQ8_1, y: &BlockQ8_1| {
        dot_i8(&x.qs, &y.qs) as f32 * x.d.to_f32() * y.d.to_f32()
    })
}
