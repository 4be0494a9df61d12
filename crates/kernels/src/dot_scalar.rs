//! Reference dot products: one weight row against one activation row already quantized into the
//! weight type's `vec_dot_type`, computed like ggml's generic kernels (exact integer sums per block,
//! scaled by the block scales). Every SIMD kernel in `simd` is tested against these.

use crate::blocks::*;
use crate::dequant::{blocks_of, q3k_scales, scale_min_k4};
use crate::types::{GgmlType, QK};
use half::f16;

/// Dot product of `n` values: weights `w` of type `ty`, activations `a` of `ty.vec_dot_type()`.
pub fn vec_dot(ty: GgmlType, n: usize, w: &[u8], a: &[u8]) -> f32 {
    assert_eq!(Some(w.len()), ty.row_bytes(n), "vec_dot: weight row size");
    assert_eq!(
        Some(a.len()),
        ty.vec_dot_type().row_bytes(n),
        "vec_dot: activation row size"
    );
    match ty {
        GgmlType::F32 => vec_dot_f32(w, a),
        GgmlType::F16 => vec_dot_f16(w, a),
        GgmlType::BF16 => vec_dot_bf16(w, a),
        GgmlType::Q4_0 => vec_dot_q4_0_q8_0(w, a),
        GgmlType::Q4_1 => vec_dot_q4_1_q8_1(w, a),
        GgmlType::Q5_0 => vec_dot_q5_0_q8_0(w, a),
        GgmlType::Q5_1 => vec_dot_q5_1_q8_1(w, a),
        GgmlType::Q8_0 => vec_dot_q8_0_q8_0(w, a),
        GgmlType::Q8_1 => vec_dot_q8_1_q8_1(w, a),
        GgmlType::Q2_K => vec_dot_q2_k_q8_k(w, a),
        GgmlType::Q3_K => vec_dot_q3_k_q8_k(w, a),
        GgmlType::Q4_K => vec_dot_q4_k_q8_k(w, a),
        GgmlType::Q5_K => vec_dot_q5_k_q8_k(w, a),
        GgmlType::Q6_K => vec_dot_q6_k_q8_k(w, a),
        GgmlType::Q8_K => vec_dot_q8_k_q8_k(w, a),
        // The other types' reference is the generic one over their decoded form.
        _ => crate::quant::vec_dot(ty, crate::Isa::Scalar, n, w, a),
    }
}

fn floats(b: &[u8]) -> impl Iterator<Item = f32> + '_ {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
}

/// F32 · F32, products and sum in f64 (ggml's `ggml_float`), rounded to f32 once.
pub fn vec_dot_f32(w: &[u8], a: &[u8]) -> f32 {
    floats(w)
        .zip(floats(a))
        .map(|(x, y)| x as f64 * y as f64)
        .sum::<f64>() as f32
}

/// F16 · F16, products and sum in f64.
pub fn vec_dot_f16(w: &[u8], a: &[u8]) -> f32 {
    let h = |c: &[u8]| f16::from_le_bytes([c[0], c[1]]).to_f32() as f64;
    w.chunks_exact(2)
        .zip(a.chunks_exact(2))
        .map(|(x, y)| h(x) * h(y))
        .sum::<f64>() as f32
}

/// BF16 · BF16, products and sum in f64.
pub fn vec_dot_bf16(w: &[u8], a: &[u8]) -> f32 {
    let h = |c: &[u8]| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16) as f64;
    w.chunks_exact(2)
        .zip(a.chunks_exact(2))
        .map(|(x, y)| h(x) * h(y))
        .sum::<f64>() as f32
}

/// Sums `f(weight block, activation block)` over the row's blocks, in order.
fn sum_blocks<W: bytemuck::Pod, A: bytemuck::Pod>(
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
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
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
