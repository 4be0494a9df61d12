//! Dequantization of the k-quant super-blocks, bit-exact with ggml's `dequantize_row_*`, and the
//! unpacking of their packed 6-bit scales.

use super::blocks::*;
use crate::types::{GgmlType, QK_K};
use crate::view::per_block;

/// Dequantizes a row of a k-quant type (Q8_K included); `false` if `ty` is not one.
pub(crate) fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> bool {
    match ty {
        GgmlType::Q8_K => per_block(src, dst, QK_K, q8_k_block),
        GgmlType::Q2_K => per_block(src, dst, QK_K, q2_k_block),
        GgmlType::Q3_K => per_block(src, dst, QK_K, q3_k_block),
        GgmlType::Q4_K => per_block(src, dst, QK_K, q4_k_block),
        GgmlType::Q5_K => per_block(src, dst, QK_K, q5_k_block),
        GgmlType::Q6_K => per_block(src, dst, QK_K, q6_k_block),
        _ => return false,
    }
    true
}

/// Scale and min of sub-block `j` from the 12 packed bytes of Q4_K / Q5_K (6 bits each).
#[inline]
pub(crate) fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The 16 signed 6-bit scales of a Q3_K block (stored biased by 32 in 12 bytes).
#[inline]
pub(crate) fn q3k_scales(packed: &[u8; 12]) -> [i8; 16] {
    let mut aux = [0u32; 4];
    for (i, a) in aux.iter_mut().take(3).enumerate() {
        *a = u32::from_le_bytes(packed[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    }
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let tmp = aux[2];
    aux[2] = ((aux[0] >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4);
    aux[3] = ((aux[1] >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4);
    aux[0] = (aux[0] & KMASK2) | ((tmp & KMASK1) << 4);
    aux[1] = (aux[1] & KMASK2) | (((tmp >> 2) & KMASK1) << 4);
    let mut out = [0i8; 16];
    for (i, a) in aux.iter().enumerate() {
        for (j, b) in a.to_le_bytes().iter().enumerate() {
            out[4 * i + j] = (*b as i8).wrapping_sub(32);
        }
    }
    out
}

#[inline(always)]
fn q8_k_block(b: &BlockQ8K, y: &mut [f32]) {
    for j in 0..QK_K {
        y[j] = b.d * b.qs[j] as f32;
    }
}

#[inline(always)]
fn q2_k_block(b: &BlockQ2K, y: &mut [f32]) {
    let (d, min) = (b.d.to_f32(), b.dmin.to_f32());
    let mut o = 0;
    let mut is = 0;
    for half in 0..2 {
        let q = &b.qs[half * 32..half * 32 + 32];
        for shift in [0, 2, 4, 6] {
            for part in 0..2 {
                let sc = b.scales[is];
                is += 1;
                let (dl, ml) = (d * (sc & 0xF) as f32, min * (sc >> 4) as f32);
                for l in 0..16 {
                    y[o] = dl * ((q[l + 16 * part] >> shift) & 3) as f32 - ml;
                    o += 1;
                }
            }
        }
    }
}

#[inline(always)]
fn q3_k_block(b: &BlockQ3K, y: &mut [f32]) {
    let d_all = b.d.to_f32();
    let scales = q3k_scales(&b.scales);
    let mut o = 0;
    let mut is = 0;
    let mut m = 1u8;
    for half in 0..2 {
        let q = &b.qs[half * 32..half * 32 + 32];
        for shift in [0, 2, 4, 6] {
            for part in 0..2 {
                let dl = d_all * scales[is] as f32;
                is += 1;
                for l in 0..16 {
                    let k = l + 16 * part;
                    let hi = if b.hmask[k] & m != 0 { 0 } else { 4 };
                    y[o] = dl * (((q[k] >> shift) & 3) as i32 - hi) as f32;
                    o += 1;
                }
            }
            m <<= 1;
        }
    }
}

#[inline(always)]
fn q4_k_block(b: &BlockQ4K, y: &mut [f32]) {
    let (d, min) = (b.d.to_f32(), b.dmin.to_f32());
    for j in 0..4 {
        let q = &b.qs[32 * j..32 * j + 32];
        let (sc1, m1) = scale_min_k4(2 * j, &b.scales);
        let (sc2, m2) = scale_min_k4(2 * j + 1, &b.scales);
        let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
        let y = &mut y[64 * j..64 * j + 64];
        for l in 0..32 {
            y[l] = d1 * (q[l] & 0xF) as f32 - m1;
            y[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

#[inline(always)]
fn q5_k_block(b: &BlockQ5K, y: &mut [f32]) {
    let (d, min) = (b.d.to_f32(), b.dmin.to_f32());
    for j in 0..4 {
        let ql = &b.qs[32 * j..32 * j + 32];
        let (u1, u2) = (1u8 << (2 * j), 2u8 << (2 * j));
        let (sc1, m1) = scale_min_k4(2 * j, &b.scales);
        let (sc2, m2) = scale_min_k4(2 * j + 1, &b.scales);
        let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
        let y = &mut y[64 * j..64 * j + 64];
        for l in 0..32 {
            let h1 = if b.qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if b.qh[l] & u2 != 0 { 16 } else { 0 };
            y[l] = d1 * ((ql[l] & 0xF) + h1) as f32 - m1;
            y[l + 32] = d2 * ((ql[l] >> 4) + h2) as f32 - m2;
        }
    }
}

#[inline(always)]
fn q6_k_block(b: &BlockQ6K, y: &mut [f32]) {
    let d = b.d.to_f32();
    for half in 0..2 {
        let ql = &b.ql[64 * half..64 * half + 64];
        let qh = &b.qh[32 * half..32 * half + 32];
        let sc = &b.scales[8 * half..8 * half + 8];
        let y = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            y[l] = d * sc[is] as f32 * q1 as f32;
            y[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
            y[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
            y[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
        }
    }
}
