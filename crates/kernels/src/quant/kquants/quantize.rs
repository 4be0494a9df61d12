//! Quantization into the k-quants: ggml's reference algorithms (`quantize_row_<type>_ref`),
//! bit-exact, and the Q8_K activation quantizer (the x86 build calls the reference for it).
//! Each float operation mirrors ggml-quants.c in order and precision (f32 throughout, no fused
//! multiply-add), which is what makes them bit-exact.

use super::blocks::*;
use super::scale_min_k4;
use crate::quant::rounding::{nearest_int, signed_max};
use crate::types::{GgmlType, QK_K};
use crate::view::write_blocks;
use bytemuck::Zeroable;
use half::f16;

/// Quantizes an activation row into Q8_K; `false` for other types.
pub(crate) fn quantize_activations(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> bool {
    if ty != GgmlType::Q8_K {
        return false;
    }
    write_blocks(dst, src, QK_K, q8k_block);
    true
}

/// Quantizes weights into a k-quant with ggml's reference algorithm; `false` for other types.
pub(crate) fn quantize_weights(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> bool {
    match ty {
        GgmlType::Q2_K => write_blocks(dst, src, QK_K, q2_k_ref),
        GgmlType::Q3_K => write_blocks(dst, src, QK_K, q3_k_ref),
        GgmlType::Q4_K => write_blocks(dst, src, QK_K, q4_k_ref),
        GgmlType::Q5_K => write_blocks(dst, src, QK_K, q5_k_ref),
        GgmlType::Q6_K => write_blocks(dst, src, QK_K, q6_k_ref),
        GgmlType::Q8_K => write_blocks(dst, src, QK_K, q8k_block),
        _ => return false,
    }
    true
}

/// ggml's `quantize_row_q8_K_ref`: the scale comes from the signed value of largest magnitude,
/// which maps to -127; `bsums` hold the sums of each 16 quants.
fn q8k_block(x: &[f32]) -> BlockQ8K {
    let mut b = BlockQ8K::zeroed();
    let (max, amax) = signed_max(x);
    if amax == 0.0 {
        return b;
    }
    let iscale = -127.0 / max;
    for (q, &v) in b.qs.iter_mut().zip(x) {
        *q = nearest_int(iscale * v).min(127) as i8;
    }
    for (s, c) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
        *s = c.iter().map(|&q| q as i16).sum();
    }
    b.d = 1.0 / iscale;
    b
}

/// ggml's threshold under which a group counts as all zero.
const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `make_qx_quants` with `rmse_type = 1` and no importance weights (weights x²): symmetric
/// quants in `-nmax..nmax` (stored biased by `nmax`), trying 18 scales around `nmax / max` and
/// keeping the one with the least weighted squared error. Returns the scale.
fn make_qx_quants(nmax: i32, x: &[f32], ls: &mut [i8]) -> f32 {
    let (max, amax) = signed_max(x);
    if amax < GROUP_MAX_EPS {
        ls.fill(0);
        return 0.0;
    }
    let quant = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for &v in x {
            let l = quant(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let store = |ls: &mut [i8], iscale: f32| {
        for (l, &v) in ls.iter_mut().zip(x) {
            *l = (quant(iscale, v) + nmax) as i8;
        }
    };
    let iscale = -(nmax as f32) / max;
    store(ls, iscale);
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            store(ls, iscale);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// ggml's `make_q3_quants` with `do_rmse`: symmetric 3-bit quants (biased by 4), refined by up to
/// five rounds of moving single values to the level that lowers the x²-weighted error.
fn make_q3_quants(x: &[f32], ls: &mut [i8]) -> f32 {
    const NMAX: i32 = 4;
    let (max, amax) = signed_max(x);
    if amax < GROUP_MAX_EPS {
        ls.fill(0);
        return 0.0;
    }
    let iscale = -(NMAX as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (l, &v) in ls.iter_mut().zip(x) {
        let q = nearest_int(iscale * v).clamp(-NMAX, NMAX - 1);
        *l = q as i8;
        let w = v * v;
        sumlx += w * v * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    for _ in 0..5 {
        let mut changed = false;
        for (l, &v) in ls.iter_mut().zip(x) {
            let w = v * v;
            let cur = *l as f32;
            let mut slx = sumlx - w * v * cur;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * cur * cur;
                let new_l = nearest_int(v * sl2 / slx).clamp(-NMAX, NMAX - 1);
                if new_l != *l as i32 {
                    slx += w * v * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *l = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for l in ls.iter_mut() {
        *l += NMAX as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Search parameters of ggml's `make_qkx2_quants`.
struct Qkx2 {
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    /// Absolute instead of squared error.
    use_mad: bool,
}

/// ggml's `make_qkx2_quants`: asymmetric quants `x ≈ scale * l - min` with l in 0..=nmax, trying
/// `nstep + 1` scales and refitting scale and min by weighted least squares each time. Writes the
/// quants to `ls` and returns (scale, min) with min >= 0 (the value subtracted).
fn make_qkx2_quants(p: &Qkx2, x: &[f32], weights: &[f32], ls: &mut [u8]) -> (f32, f32) {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        ls.fill(0);
        return (0.0, -min);
    }
    let err = |d: f32| if p.use_mad { d.abs() } else { d * d };
    let quant = |iscale: f32, v: f32, min: f32| nearest_int(iscale * (v - min)).clamp(0, p.nmax);
    let mut iscale = p.nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let l = quant(iscale, x[i], min);
        ls[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_error += weights[i] * err(diff);
    }
    if p.nstep < 1 {
        return (scale, -min);
    }
    let mut laux = [0u8; 32];
    let laux = &mut laux[..n];
    for is in 0..=p.nstep {
        iscale = (p.rmin + p.rdelta * is as f32 + p.nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let l = quant(iscale, x[i], min);
            laux[i] = l as u8;
            let (w, l) = (weights[i], l as f32);
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * err(diff);
            }
            if cur_error < best_error {
                ls.copy_from_slice(laux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Four 2-bit quants per byte as Q2_K/Q3_K store them: in each 128-value half, byte `l` holds
/// values `l`, `l + 32`, `l + 64`, `l + 96` from the low bits up.
fn pack_2bit(ls: &[u8; QK_K]) -> [u8; QK_K / 4] {
    let mut qs = [0u8; QK_K / 4];
    for (half, q) in qs.chunks_exact_mut(32).enumerate() {
        let l = &ls[128 * half..128 * half + 128];
        for k in 0..32 {
            q[k] = l[k] | (l[k + 32] << 2) | (l[k + 64] << 4) | (l[k + 96] << 6);
        }
    }
    qs
}

/// ggml's `quantize_row_q2_K_ref`.
fn q2_k_ref(x: &[f32]) -> BlockQ2K {
    const Q4SCALE: f32 = 15.0;
    let params = Qkx2 {
        nmax: 3,
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: true,
    };
    let mut ls = [0u8; QK_K];
    let mut scales = [0.0f32; QK_K / 16];
    let mut mins = [0.0f32; QK_K / 16];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..QK_K / 16 {
        let xs = &x[16 * j..16 * j + 16];
        let weights: [f32; 16] = std::array::from_fn(|l| xs[l].abs());
        (scales[j], mins[j]) =
            make_qkx2_quants(&params, xs, &weights, &mut ls[16 * j..16 * j + 16]);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }

    let mut b = BlockQ2K::zeroed();
    if max_scale > 0.0 {
        let iscale = Q4SCALE / max_scale;
        for j in 0..QK_K / 16 {
            b.scales[j] = nearest_int(iscale * scales[j]) as u8;
        }
        b.d = f16::from_f32(max_scale / Q4SCALE);
    }
    if max_min > 0.0 {
        let iscale = Q4SCALE / max_min;
        for j in 0..QK_K / 16 {
            b.scales[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
        }
        b.dmin = f16::from_f32(max_min / Q4SCALE);
    }

    // Requantize against the rounded scales.
    for j in 0..QK_K / 16 {
        let d = b.d.to_f32() * (b.scales[j] & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let dm = b.dmin.to_f32() * (b.scales[j] >> 4) as f32;
        for ii in 0..16 {
            ls[16 * j + ii] = nearest_int((x[16 * j + ii] + dm) / d).clamp(0, 3) as u8;
        }
    }
    b.qs = pack_2bit(&ls);
    b
}

/// ggml's `quantize_row_q3_K_ref`.
fn q3_k_ref(x: &[f32]) -> BlockQ3K {
    let mut ls = [0i8; QK_K];
    let mut scales = [0.0f32; QK_K / 16];
    let (mut max_scale, mut amax) = (0.0f32, 0.0f32);
    for j in 0..QK_K / 16 {
        scales[j] = make_q3_quants(&x[16 * j..16 * j + 16], &mut ls[16 * j..16 * j + 16]);
        if scales[j].abs() > amax {
            amax = scales[j].abs();
            max_scale = scales[j];
        }
    }

    let mut b = BlockQ3K::zeroed();
    if max_scale != 0.0 {
        // 6-bit scales biased by 32: low nibbles in bytes 0..8, high 2 bits in bytes 8..12.
        let iscale = -32.0 / max_scale;
        for j in 0..QK_K / 16 {
            let l = ((nearest_int(iscale * scales[j]) as i8).clamp(-32, 31) + 32) as u8;
            if j < 8 {
                b.scales[j] = l & 0xF;
            } else {
                b.scales[j - 8] |= (l & 0xF) << 4;
            }
            b.scales[j % 4 + 8] |= (l >> 4) << (2 * (j / 4));
        }
        b.d = f16::from_f32(1.0 / iscale);
    }

    // Requantize against the rounded scales.
    let signed_scales = crate::quant::kquants::q3k_scales(&b.scales);
    for j in 0..QK_K / 16 {
        let d = b.d.to_f32() * signed_scales[j] as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            ls[16 * j + ii] = (nearest_int(x[16 * j + ii] / d).clamp(-4, 3) + 4) as i8;
        }
    }

    // The high bit of value j goes to bit j / 32 of hmask[j % 32].
    let mut low = [0u8; QK_K];
    for (j, (&l, lo)) in ls.iter().zip(low.iter_mut()).enumerate() {
        let mut l = l as u8;
        if l > 3 {
            b.hmask[j % 32] |= 1 << (j / 32);
            l -= 4;
        }
        *lo = l;
    }
    b.qs = pack_2bit(&low);
    b
}

/// Scales and mins of Q4_K/Q5_K's eight sub-blocks: `make_qkx2_quants` on each with weights
/// `rms + |x|`, then both quantized to 6 bits against their maxima and packed into 12 bytes.
/// Returns the block's d, dmin and packed scales, and the quants `ls` for sub-blocks whose
/// rounded scale is zero (all others are requantized by the caller).
fn k4_scales(x: &[f32], p: &Qkx2, ls: &mut [u8; QK_K]) -> (f16, f16, [u8; 12]) {
    let mut scales = [0.0f32; QK_K / 32];
    let mut mins = [0.0f32; QK_K / 32];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        let weights: [f32; 32] = std::array::from_fn(|l| av_x + xs[l].abs());
        (scales[j], mins[j]) = make_qkx2_quants(p, xs, &weights, &mut ls[32 * j..32 * j + 32]);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut packed = [0u8; 12];
    for j in 0..QK_K / 32 {
        let l_s = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let l_m = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            packed[j] = l_s;
            packed[j + 4] = l_m;
        } else {
            packed[j + 4] = (l_s & 0xF) | ((l_m & 0xF) << 4);
            packed[j - 4] |= (l_s >> 4) << 6;
            packed[j] |= (l_m >> 4) << 6;
        }
    }
    (
        f16::from_f32(max_scale / 63.0),
        f16::from_f32(max_min / 63.0),
        packed,
    )
}

/// Requantizes Q4_K/Q5_K values against the rounded 6-bit scales: l = round((x + dm) / d).
fn k4_requantize(x: &[f32], d: f16, dmin: f16, packed: &[u8; 12], top: i32, ls: &mut [u8; QK_K]) {
    for j in 0..QK_K / 32 {
        let (sc, m) = scale_min_k4(j, packed);
        let d = d.to_f32() * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * m as f32;
        for ii in 0..32 {
            ls[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / d).clamp(0, top) as u8;
        }
    }
}

/// ggml's `quantize_row_q4_K_ref`.
fn q4_k_ref(x: &[f32]) -> BlockQ4K {
    let params = Qkx2 {
        nmax: 15,
        rmin: -1.0,
        rdelta: 0.1,
        nstep: 20,
        use_mad: false,
    };
    let mut ls = [0u8; QK_K];
    let (d, dmin, scales) = k4_scales(x, &params, &mut ls);
    k4_requantize(x, d, dmin, &scales, 15, &mut ls);
    let mut qs = [0u8; QK_K / 2];
    for (chunk, q) in qs.chunks_exact_mut(32).enumerate() {
        let l = &ls[64 * chunk..64 * chunk + 64];
        for k in 0..32 {
            q[k] = l[k] | (l[k + 32] << 4);
        }
    }
    BlockQ4K {
        d,
        dmin,
        scales,
        qs,
    }
}

/// ggml's `quantize_row_q5_K_ref`.
fn q5_k_ref(x: &[f32]) -> BlockQ5K {
    let params = Qkx2 {
        nmax: 31,
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: false,
    };
    let mut ls = [0u8; QK_K];
    let (d, dmin, scales) = k4_scales(x, &params, &mut ls);
    k4_requantize(x, d, dmin, &scales, 31, &mut ls);
    let mut qs = [0u8; QK_K / 2];
    let mut qh = [0u8; QK_K / 8];
    for (chunk, q) in qs.chunks_exact_mut(32).enumerate() {
        // Sub-blocks 2 chunk and 2 chunk + 1 keep their fifth bits in qh bits 2 chunk, 2 chunk + 1.
        let l = &ls[64 * chunk..64 * chunk + 64];
        for k in 0..32 {
            let (l1, l2) = (l[k], l[k + 32]);
            qh[k] |= ((l1 >> 4) << (2 * chunk)) | ((l2 >> 4) << (2 * chunk + 1));
            q[k] = (l1 & 0xF) | ((l2 & 0xF) << 4);
        }
    }
    BlockQ5K {
        d,
        dmin,
        scales,
        qh,
        qs,
    }
}

/// ggml's `quantize_row_q6_K_ref`.
fn q6_k_ref(x: &[f32]) -> BlockQ6K {
    let mut ls = [0i8; QK_K];
    let mut scales = [0.0f32; QK_K / 16];
    let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
    for ib in 0..QK_K / 16 {
        scales[ib] = make_qx_quants(
            32,
            &x[16 * ib..16 * ib + 16],
            &mut ls[16 * ib..16 * ib + 16],
        );
        if scales[ib].abs() > max_abs_scale {
            max_abs_scale = scales[ib].abs();
            max_scale = scales[ib];
        }
    }
    let mut b = BlockQ6K::zeroed();
    if max_abs_scale < GROUP_MAX_EPS {
        return b;
    }
    let iscale = -128.0 / max_scale;
    b.d = f16::from_f32(1.0 / iscale);
    for ib in 0..QK_K / 16 {
        b.scales[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
    }

    // Requantize against the rounded scales.
    for j in 0..QK_K / 16 {
        let d = b.d.to_f32() * b.scales[j] as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            ls[16 * j + ii] = (nearest_int(x[16 * j + ii] / d).clamp(-32, 31) + 32) as i8;
        }
    }

    // Low nibbles: in each 128-value half, ql[l] holds values l and l + 64, ql[l + 32] values
    // l + 32 and l + 96; qh[l] holds the top two bits of all four.
    for half in 0..2 {
        let l = &ls[128 * half..128 * half + 128];
        let ql = &mut b.ql[64 * half..64 * half + 64];
        let qh = &mut b.qh[32 * half..32 * half + 32];
        for k in 0..32 {
            let [q1, q2, q3, q4] = [l[k], l[k + 32], l[k + 64], l[k + 96]].map(|v| v as u8);
            ql[k] = (q1 & 0xF) | ((q3 & 0xF) << 4);
            ql[k + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4);
            qh[k] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
    b
}
