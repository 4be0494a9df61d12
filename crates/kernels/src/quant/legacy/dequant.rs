//! Dequantization of the 32-value blocks, bit-exact with ggml's `dequantize_row_*`.

use super::blocks::*;
use crate::types::{GgmlType, QK};
use crate::view::per_block;

/// Dequantizes a row of a legacy type; `false` if `ty` is not one.
pub(crate) fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> bool {
    match ty {
        GgmlType::Q4_0 => per_block(src, dst, QK, q4_0_block),
        GgmlType::Q4_1 => per_block(src, dst, QK, q4_1_block),
        GgmlType::Q5_0 => per_block(src, dst, QK, q5_0_block),
        GgmlType::Q5_1 => per_block(src, dst, QK, q5_1_block),
        GgmlType::Q8_0 => per_block(src, dst, QK, q8_0_block),
        GgmlType::Q8_1 => per_block(src, dst, QK, q8_1_block),
        _ => return false,
    }
    true
}

#[inline(always)]
fn q4_0_block(b: &BlockQ4_0, y: &mut [f32]) {
    let d = b.d.to_f32();
    for j in 0..QK / 2 {
        y[j] = ((b.qs[j] & 0xF) as i32 - 8) as f32 * d;
        y[j + QK / 2] = ((b.qs[j] >> 4) as i32 - 8) as f32 * d;
    }
}

#[inline(always)]
fn q4_1_block(b: &BlockQ4_1, y: &mut [f32]) {
    let (d, m) = (b.d.to_f32(), b.m.to_f32());
    for j in 0..QK / 2 {
        y[j] = (b.qs[j] & 0xF) as f32 * d + m;
        y[j + QK / 2] = (b.qs[j] >> 4) as f32 * d + m;
    }
}

#[inline(always)]
fn q5_0_block(b: &BlockQ5_0, y: &mut [f32]) {
    let d = b.d.to_f32();
    let qh = u32::from_le_bytes(b.qh);
    for j in 0..QK / 2 {
        let h0 = (((qh >> j) << 4) & 0x10) as u8;
        let h1 = ((qh >> (j + 12)) & 0x10) as u8;
        y[j] = (((b.qs[j] & 0xF) | h0) as i32 - 16) as f32 * d;
        y[j + QK / 2] = (((b.qs[j] >> 4) | h1) as i32 - 16) as f32 * d;
    }
}

#[inline(always)]
fn q5_1_block(b: &BlockQ5_1, y: &mut [f32]) {
    let (d, m) = (b.d.to_f32(), b.m.to_f32());
    let qh = u32::from_le_bytes(b.qh);
    for j in 0..QK / 2 {
        let h0 = (((qh >> j) << 4) & 0x10) as u8;
        let h1 = ((qh >> (j + 12)) & 0x10) as u8;
        y[j] = ((b.qs[j] & 0xF) | h0) as f32 * d + m;
        y[j + QK / 2] = ((b.qs[j] >> 4) | h1) as f32 * d + m;
    }
}

#[inline(always)]
fn q8_0_block(b: &BlockQ8_0, y: &mut [f32]) {
    let d = b.d.to_f32();
    for j in 0..QK {
        y[j] = b.qs[j] as f32 * d;
    }
}

#[inline(always)]
fn q8_1_block(b: &BlockQ8_1, y: &mut [f32]) {
    let d = b.d.to_f32();
    for j in 0..QK {
        y[j] = b.qs[j] as f32 * d;
    }
}
