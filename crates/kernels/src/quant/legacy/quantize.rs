//! Quantization into the 32-value types: ggml's reference algorithms for weights
//! (`quantize_row_<type>_ref`, bit-exact) and the x86 build's Q8_0 / Q8_1 activation quantizers.

use super::blocks::*;
use crate::quant::rounding::{round_half_even, signed_max};
use crate::types::{GgmlType, QK};
use crate::view::write_blocks;
use half::f16;

/// Quantizes an activation row into Q8_0 or Q8_1 as ggml's x86 build does; `false` for other types.
pub(crate) fn quantize_activations(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> bool {
    match ty {
        GgmlType::Q8_0 => write_blocks(dst, src, QK, |x| {
            let (d, qs) = q8_block_x86(x);
            BlockQ8_0 {
                d: f16::from_f32(d),
                qs,
            }
        }),
        GgmlType::Q8_1 => write_blocks(dst, src, QK, |x| {
            let (d, qs) = q8_block_x86(x);
            // ggml's AVX2 path: the f32 product d * (sum of the quants), then to f16.
            let sum: i32 = qs.iter().map(|&q| q as i32).sum();
            BlockQ8_1 {
                d: f16::from_f32(d),
                s: f16::from_f32(d * sum as f32),
                qs,
            }
        }),
        _ => return false,
    }
    true
}

/// Quantizes weights into a legacy type with ggml's reference algorithm; `false` for other types.
pub(crate) fn quantize_weights(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> bool {
    match ty {
        GgmlType::Q4_0 => write_blocks(dst, src, QK, q4_0_ref),
        GgmlType::Q4_1 => write_blocks(dst, src, QK, q4_1_ref),
        GgmlType::Q5_0 => write_blocks(dst, src, QK, q5_0_ref),
        GgmlType::Q5_1 => write_blocks(dst, src, QK, q5_1_ref),
        GgmlType::Q8_0 => write_blocks(dst, src, QK, q8_0_ref),
        GgmlType::Q8_1 => write_blocks(dst, src, QK, q8_1_ref),
        _ => return false,
    }
    true
}

/// One Q8_0/Q8_1 block as ggml's AVX/AVX2 `quantize_row_q8_0` computes it: d = amax/127,
/// q = round_half_even(x * (127/amax)). (The scalar reference rounds half away from zero and uses
/// 1/d as the inverse scale, which gives different quants; see [`q8_0_ref`].)
#[inline]
fn q8_block_x86(x: &[f32]) -> (f32, [i8; QK]) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut qs = [0i8; QK];
    for (q, v) in qs.iter_mut().zip(x) {
        // |v * id| <= 127 up to rounding; `as` saturates like the packs instructions.
        *q = round_half_even(v * id) as i8;
    }
    (d, qs)
}

/// 32 four-bit values as ggml stores them: value `j` in the low nibble of byte `j`, value
/// `j + 16` in the high nibble.
fn pack_nibbles(q: &[u8; QK]) -> [u8; QK / 2] {
    std::array::from_fn(|j| (q[j] & 0xF) | ((q[j + QK / 2] & 0xF) << 4))
}

/// 32 five-bit values: the low four bits as nibbles, bit 4 of value `j` as bit `j` of `qh`.
fn pack_5bit(q: &[u8; QK]) -> ([u8; QK / 2], [u8; 4]) {
    let qh = q
        .iter()
        .enumerate()
        .fold(0u32, |h, (j, &v)| h | ((((v & 0x10) >> 4) as u32) << j));
    (pack_nibbles(q), qh.to_le_bytes())
}

/// Symmetric 4/5-bit quants: the value of largest magnitude maps to `-bias` (d = max / -bias);
/// q = min(2 bias - 1, trunc(x / d + bias + 0.5)), with `bias + 0.5` added as one constant as
/// ggml does (adding bias and 0.5 separately can round differently).
pub(crate) fn symmetric_quants(x: &[f32], bias: f32) -> (f32, [u8; QK]) {
    let (max, _) = signed_max(x);
    let d = max / -bias;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let top = 2 * bias as i32 - 1;
    let offset = bias + 0.5;
    // The sum is >= 0.5 for finite input, so truncation toward zero is ggml's (int8_t) cast.
    let q = std::array::from_fn(|j| ((x[j] * id + offset) as i32).min(top) as u8);
    (d, q)
}

/// Asymmetric 4/5-bit quants: x = min + d q, q = trunc((x - min) / d + 0.5) (at most `top`).
fn asymmetric_quants(x: &[f32], top: i32) -> (f32, f32, [u8; QK]) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    let d = (max - min) / top as f32;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let q = std::array::from_fn(|j| (((x[j] - min) * id + 0.5) as i32).min(top) as u8);
    (d, min, q)
}

fn q4_0_ref(x: &[f32]) -> BlockQ4_0 {
    let (d, q) = symmetric_quants(x, 8.0);
    BlockQ4_0 {
        d: f16::from_f32(d),
        qs: pack_nibbles(&q),
    }
}

fn q5_0_ref(x: &[f32]) -> BlockQ5_0 {
    let (d, q) = symmetric_quants(x, 16.0);
    let (qs, qh) = pack_5bit(&q);
    BlockQ5_0 {
        d: f16::from_f32(d),
        qh,
        qs,
    }
}

fn q4_1_ref(x: &[f32]) -> BlockQ4_1 {
    let (d, m, q) = asymmetric_quants(x, 15);
    BlockQ4_1 {
        d: f16::from_f32(d),
        m: f16::from_f32(m),
        qs: pack_nibbles(&q),
    }
}

fn q5_1_ref(x: &[f32]) -> BlockQ5_1 {
    let (d, m, q) = asymmetric_quants(x, 31);
    let (qs, qh) = pack_5bit(&q);
    BlockQ5_1 {
        d: f16::from_f32(d),
        m: f16::from_f32(m),
        qh,
        qs,
    }
}

/// The reference Q8_0/Q8_1 quants: inverse scale 1/d, rounding half away from zero.
pub(crate) fn q8_ref(x: &[f32]) -> (f32, [i8; QK]) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    (d, std::array::from_fn(|j| (x[j] * id).round() as i8))
}

fn q8_0_ref(x: &[f32]) -> BlockQ8_0 {
    let (d, qs) = q8_ref(x);
    BlockQ8_0 {
        d: f16::from_f32(d),
        qs,
    }
}

fn q8_1_ref(x: &[f32]) -> BlockQ8_1 {
    let (d, qs) = q8_ref(x);
    let sum: i32 = qs.iter().map(|&q| q as i32).sum();
    BlockQ8_1 {
        d: f16::from_f32(d),
        s: f16::from_f32(sum as f32 * d),
        qs,
    }
}
