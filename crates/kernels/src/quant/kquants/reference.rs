//! Reference dot products of the k-quants with Q8_K activations, computed like ggml's generic
//! kernels: exact integer sums per super-block, scaled by the block scales, blocks summed in order.

use super::blocks::*;
use super::{q3k_scales, scale_min_k4};
use crate::quant::legacy::reference::{dot_i8, sum_blocks};
use crate::types::GgmlType;
use crate::view::blocks_of;

/// The reference dot product of a row of k-quant type `ty`; `None` if `ty` is not one.
pub(crate) fn vec_dot(ty: GgmlType, w: &[u8], a: &[u8]) -> Option<f32> {
    Some(match ty {
        GgmlType::Q2_K => vec_dot_q2_k_q8_k(w, a),
        GgmlType::Q3_K => vec_dot_q3_k_q8_k(w, a),
        GgmlType::Q4_K => vec_dot_q4_k_q8_k(w, a),
        GgmlType::Q5_K => vec_dot_q5_k_q8_k(w, a),
        GgmlType::Q6_K => vec_dot_q6_k_q8_k(w, a),
        GgmlType::Q8_K => vec_dot_q8_k_q8_k(w, a),
        _ => return None,
    })
}

/// Q8_K · Q8_K: per block, (integer sum) × d_w × d_a.
pub fn vec_dot_q8_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    sum_blocks(w, a, |x: &BlockQ8K, y: &BlockQ8K| {
        dot_i8(&x.qs, &y.qs) as f32 * x.d * y.d
    })
}

/// Q2_K · Q8_K: d_w d_a × (sum of sub-block scale × integer sum) minus dmin d_a × (sum of
/// sub-block min × the activation's 16-value sums `bsums`).
pub fn vec_dot_q2_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    let (x, y) = (blocks_of::<BlockQ2K>(w), blocks_of::<BlockQ8K>(a));
    let mut sum = 0.0f32;
    for (x, y) in x.iter().zip(y.iter()) {
        let mins: i32 = (0..16)
            .map(|j| y.bsums[j] as i32 * (x.scales[j] >> 4) as i32)
            .sum();
        let mut isum = 0i32;
        let mut is = 0;
        let mut o = 0;
        for half in 0..2 {
            let q = &x.qs[half * 32..half * 32 + 32];
            for shift in [0, 2, 4, 6] {
                for part in 0..2 {
                    let sc = (x.scales[is] & 0xF) as i32;
                    is += 1;
                    let mut s = 0i32;
                    for l in 0..16 {
                        s += ((q[l + 16 * part] >> shift) & 3) as i32 * y.qs[o + l] as i32;
                    }
                    o += 16;
                    isum += sc * s;
                }
            }
        }
        let dall = y.d * x.d.to_f32();
        let dmin = y.d * x.dmin.to_f32();
        sum += dall * isum as f32 - dmin * mins as f32;
    }
    sum
}

/// Q3_K · Q8_K: d_w d_a × (sum of signed 6-bit sub-block scale × integer sum of 3-bit quants).
pub fn vec_dot_q3_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    let (x, y) = (blocks_of::<BlockQ3K>(w), blocks_of::<BlockQ8K>(a));
    let mut sum = 0.0f32;
    for (x, y) in x.iter().zip(y.iter()) {
        let scales = q3k_scales(&x.scales);
        let mut isum = 0i32;
        let (mut is, mut o, mut m) = (0, 0, 1u8);
        for half in 0..2 {
            let q = &x.qs[half * 32..half * 32 + 32];
            for shift in [0, 2, 4, 6] {
                for part in 0..2 {
                    let mut s = 0i32;
                    for l in 0..16 {
                        let k = l + 16 * part;
                        let hi = if x.hmask[k] & m != 0 { 0 } else { 4 };
                        s += (((q[k] >> shift) & 3) as i32 - hi) * y.qs[o + l] as i32;
                    }
                    o += 16;
                    isum += scales[is] as i32 * s;
                    is += 1;
                }
                m <<= 1;
            }
        }
        sum += x.d.to_f32() * y.d * isum as f32;
    }
    sum
}

/// Q4_K · Q8_K: like Q2_K with 32-value sub-blocks and 6-bit scales and mins.
pub fn vec_dot_q4_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    let (x, y) = (blocks_of::<BlockQ4K>(w), blocks_of::<BlockQ8K>(a));
    let mut sum = 0.0f32;
    for (x, y) in x.iter().zip(y.iter()) {
        let (mut isum, mut msum) = (0i32, 0i32);
        for j in 0..4 {
            let q = &x.qs[32 * j..32 * j + 32];
            let (sc1, m1) = scale_min_k4(2 * j, &x.scales);
            let (sc2, m2) = scale_min_k4(2 * j + 1, &x.scales);
            let (mut s1, mut s2) = (0i32, 0i32);
            for l in 0..32 {
                s1 += (q[l] & 0xF) as i32 * y.qs[64 * j + l] as i32;
                s2 += (q[l] >> 4) as i32 * y.qs[64 * j + 32 + l] as i32;
            }
            isum += sc1 as i32 * s1 + sc2 as i32 * s2;
            let b1 = y.bsums[4 * j] as i32 + y.bsums[4 * j + 1] as i32;
            let b2 = y.bsums[4 * j + 2] as i32 + y.bsums[4 * j + 3] as i32;
            msum += m1 as i32 * b1 + m2 as i32 * b2;
        }
        sum += x.d.to_f32() * y.d * isum as f32 - x.dmin.to_f32() * y.d * msum as f32;
    }
    sum
}

/// Q5_K · Q8_K: like Q4_K with 5-bit quants.
pub fn vec_dot_q5_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    let (x, y) = (blocks_of::<BlockQ5K>(w), blocks_of::<BlockQ8K>(a));
    let mut sum = 0.0f32;
    for (x, y) in x.iter().zip(y.iter()) {
        let (mut isum, mut msum) = (0i32, 0i32);
        for j in 0..4 {
            let ql = &x.qs[32 * j..32 * j + 32];
            let (u1, u2) = (1u8 << (2 * j), 2u8 << (2 * j));
            let (sc1, m1) = scale_min_k4(2 * j, &x.scales);
            let (sc2, m2) = scale_min_k4(2 * j + 1, &x.scales);
            let (mut s1, mut s2) = (0i32, 0i32);
            for l in 0..32 {
                let h1 = if x.qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if x.qh[l] & u2 != 0 { 16 } else { 0 };
                s1 += ((ql[l] & 0xF) as i32 + h1) * y.qs[64 * j + l] as i32;
                s2 += ((ql[l] >> 4) as i32 + h2) * y.qs[64 * j + 32 + l] as i32;
            }
            isum += sc1 as i32 * s1 + sc2 as i32 * s2;
            let b1 = y.bsums[4 * j] as i32 + y.bsums[4 * j + 1] as i32;
            let b2 = y.bsums[4 * j + 2] as i32 + y.bsums[4 * j + 3] as i32;
            msum += m1 as i32 * b1 + m2 as i32 * b2;
        }
        sum += x.d.to_f32() * y.d * isum as f32 - x.dmin.to_f32() * y.d * msum as f32;
    }
    sum
}

/// Q6_K · Q8_K: d_w d_a × (sum of signed 8-bit sub-block scale × integer sum of (q - 32) a).
pub fn vec_dot_q6_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    let (x, y) = (blocks_of::<BlockQ6K>(w), blocks_of::<BlockQ8K>(a));
    let mut sum = 0.0f32;
    for (x, y) in x.iter().zip(y.iter()) {
        let mut isum = 0i32;
        for half in 0..2 {
            let ql = &x.ql[64 * half..64 * half + 64];
            let qh = &x.qh[32 * half..32 * half + 32];
            let sc = &x.scales[8 * half..8 * half + 8];
            let yq = &y.qs[128 * half..128 * half + 128];
            let mut s = [0i32; 8];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                s[is] += q1 * yq[l] as i32;
                s[is + 2] += q2 * yq[l + 32] as i32;
                s[is + 4] += q3 * yq[l + 64] as i32;
                s[is + 6] += q4 * yq[l + 96] as i32;
            }
            isum += (0..8).map(|k| sc[k] as i32 * s[k]).sum::<i32>();
        }
        sum += x.d.to_f32() * y.d * isum as f32;
    }
    sum
}
