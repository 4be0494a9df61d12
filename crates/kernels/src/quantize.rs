//! Quantization: activations into ggml's dot-product types exactly as ggml's x86 build does it,
//! and weights with ggml's reference quantizers (for tests and generated models).

use crate::blocks::*;
use crate::types::{GgmlType, QK, QK_K};
use crate::KernelError;
use half::{bf16, f16};

/// ggml's bf16 rounding (round to nearest even, NaN forced quiet).
pub fn f32_to_bf16(x: f32) -> bf16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return bf16::from_bits(((u >> 16) | 64) as u16);
    }
    bf16::from_bits((u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16)
}

/// Quantizes one activation row into `ty` (F32, F16, BF16, Q8_0, Q8_1 or Q8_K); `dst` must hold
/// exactly `ty.row_bytes(src.len())` bytes.
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) {
    let n = src.len();
    assert_eq!(
        Some(dst.len()),
        ty.row_bytes(n),
        "quantize_row: {ty} destination size does not match {n} values"
    );
    match ty {
        GgmlType::F32 => {
            for (d, x) in dst.chunks_exact_mut(4).zip(src) {
                d.copy_from_slice(&x.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (d, x) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&f16::from_f32(*x).to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for (d, x) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&f32_to_bf16(*x).to_le_bytes());
            }
        }
        GgmlType::Q8_0 => {
            let blocks: &mut [BlockQ8_0] = bytemuck::cast_slice_mut(dst);
            for (b, x) in blocks.iter_mut().zip(src.chunks_exact(QK)) {
                let (d, qs) = q8_block(x);
                b.d = f16::from_f32(d);
                b.qs = qs;
            }
        }
        GgmlType::Q8_1 => {
            let blocks: &mut [BlockQ8_1] = bytemuck::cast_slice_mut(dst);
            for (b, x) in blocks.iter_mut().zip(src.chunks_exact(QK)) {
                let (d, qs) = q8_block(x);
                b.d = f16::from_f32(d);
                b.s = f16::from_f32(d * qs.iter().map(|&q| q as i32).sum::<i32>() as f32);
                b.qs = qs;
            }
        }
        GgmlType::Q8_K => {
            // Built on the stack and copied out, so `dst` needs no particular alignment.
            let mut b = BlockQ8K::zeroed();
            for (out, x) in dst
                .chunks_exact_mut(std::mem::size_of::<BlockQ8K>())
                .zip(src.chunks_exact(QK_K))
            {
                q8k_block(x, &mut b);
                out.copy_from_slice(bytemuck::bytes_of(&b));
            }
        }
        other => panic!("quantize_row: {other} is not an activation type"),
    }
}

use bytemuck::Zeroable;

/// Round half to even for |x| < 2^22, as ggml's `nearest_int` does: adding 1.5 * 2^23 leaves the
/// rounded value in the mantissa. Unlike `f32::round_ties_even` (a libm call without SSE4.1 at
/// compile time) this vectorizes. Activation quantization only sees |x| <= 127.5.
#[inline]
fn round_half_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

/// One Q8_0/Q8_1 block as ggml's AVX path computes it: d = amax/127, q = round_half_even(x * 127/amax).
#[inline]
fn q8_block(x: &[f32]) -> (f32, [i8; QK]) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut qs = [0i8; QK];
    for (q, v) in qs.iter_mut().zip(x) {
        *q = round_half_even(v * id) as i8;
    }
    (d, qs)
}

/// ggml's `quantize_row_q8_K_ref`: the scale comes from the signed value of largest magnitude.
fn q8k_block(x: &[f32], b: &mut BlockQ8K) {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        *b = BlockQ8K::zeroed();
        return;
    }
    let iscale = -127.0 / max;
    for (q, &v) in b.qs.iter_mut().zip(x) {
        *q = (round_half_even(iscale * v) as i32).min(127) as i8;
    }
    for (s, c) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
        *s = c.iter().map(|&q| q as i16).sum();
    }
    b.d = 1.0 / iscale;
}

/// Quantizes weights with ggml's reference algorithms (`quantize_row_*_ref`). Supports Q4_0,
/// Q4_1, Q5_0, Q5_1, Q8_0 and the float types; other types return `Unsupported`.
pub fn quantize_weights(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), KernelError> {
    let n = src.len();
    if ty.row_bytes(n) != Some(dst.len()) {
        return Err(KernelError::SizeMismatch {
            ty,
            rows: 1,
            cols: n,
            expected: ty.row_bytes(n).unwrap_or(0),
            actual: dst.len(),
        });
    }
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => quantize_row(ty, src, dst),
        GgmlType::Q8_0 => {
            // The reference rounds half away from zero with 1/d as the inverse scale.
            let blocks: &mut [BlockQ8_0] = bytemuck::cast_slice_mut(dst);
            for (b, x) in blocks.iter_mut().zip(src.chunks_exact(QK)) {
                let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                b.d = f16::from_f32(d);
                for (q, v) in b.qs.iter_mut().zip(x) {
                    *q = (v * id).round() as i8;
                }
            }
        }
        GgmlType::Q4_0 | GgmlType::Q5_0 => {
            let (levels, bias) = if ty == GgmlType::Q4_0 {
                (-8.0, 8.0)
            } else {
                (-16.0, 16.0)
            };
            let max_q = if ty == GgmlType::Q4_0 { 15 } else { 31 };
            for (bi, x) in src.chunks_exact(QK).enumerate() {
                // The value of largest magnitude maps to -8 (-16): d = max / -8.
                let mut amax = 0.0f32;
                let mut max = 0.0f32;
                for &v in x {
                    if v.abs() > amax {
                        amax = v.abs();
                        max = v;
                    }
                }
                let d = max / levels;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let q: Vec<u8> = x
                    .iter()
                    .map(|v| ((v * id + bias + 0.5) as i32).min(max_q) as u8)
                    .collect();
                if ty == GgmlType::Q4_0 {
                    let b = &mut bytemuck::cast_slice_mut::<u8, BlockQ4_0>(dst)[bi];
                    b.d = f16::from_f32(d);
                    b.qs = pack_nibbles(&q);
                } else {
                    let b = &mut bytemuck::cast_slice_mut::<u8, BlockQ5_0>(dst)[bi];
                    b.d = f16::from_f32(d);
                    (b.qs, b.qh) = pack_5bit(&q);
                }
            }
        }
        GgmlType::Q4_1 | GgmlType::Q5_1 => {
            let max_q = if ty == GgmlType::Q4_1 { 15.0 } else { 31.0 };
            for (bi, x) in src.chunks_exact(QK).enumerate() {
                let min = x.iter().fold(f32::INFINITY, |m, &v| m.min(v));
                let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let d = (max - min) / max_q;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let q: Vec<u8> = x
                    .iter()
                    .map(|v| (((v - min) * id + 0.5) as i32).min(max_q as i32) as u8)
                    .collect();
                if ty == GgmlType::Q4_1 {
                    let b = &mut bytemuck::cast_slice_mut::<u8, BlockQ4_1>(dst)[bi];
                    b.d = f16::from_f32(d);
                    b.m = f16::from_f32(min);
                    b.qs = pack_nibbles(&q);
                } else {
                    let b = &mut bytemuck::cast_slice_mut::<u8, BlockQ5_1>(dst)[bi];
                    b.d = f16::from_f32(d);
                    b.m = f16::from_f32(min);
                    (b.qs, b.qh) = pack_5bit(&q);
                }
            }
        }
        other => return Err(KernelError::Unsupported(other)),
    }
    Ok(())
}

/// 32 four-bit values as ggml stores them: value `j` in the low nibble of byte `j`, value
/// `j + 16` in the high nibble.
fn pack_nibbles(q: &[u8]) -> [u8; QK / 2] {
    std::array::from_fn(|j| (q[j] & 0xF) | ((q[j + QK / 2] & 0xF) << 4))
}

/// 32 five-bit values: the low four bits as nibbles, bit 4 of value `j` as bit `j` of `qh`.
fn pack_5bit(q: &[u8]) -> ([u8; QK / 2], [u8; 4]) {
    let qh = q
        .iter()
        .enumerate()
        .fold(0u32, |h, (j, &v)| h | ((((v & 0x10) >> 4) as u32) << j));
    (pack_nibbles(q), qh.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dequant::dequantize_row;

    #[test]
    fn q8_0_rounds_half_to_even() {
        // amax = 127 → id = 1, so values are rounded directly.
        let mut x = [0.0f32; 32];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -2.5;
        x[3] = 3.5;
        x[4] = 0.5;
        let mut out = vec![0u8; 34];
        quantize_row(GgmlType::Q8_0, &x, &mut out);
        let b: &BlockQ8_0 = &bytemuck::cast_slice(&out)[0];
        assert_eq!(b.d.to_f32(), 1.0);
        assert_eq!(&b.qs[..5], &[127, 2, -2, 4, 0]);
    }

    #[test]
    fn magic_rounding_equals_round_ties_even() {
        for i in -300_000..300_000 {
            let x = i as f32 * 0.000_47 + (i % 7) as f32 * 0.5;
            if x.abs() < 200.0 {
                assert_eq!(round_half_even(x), x.round_ties_even(), "{x}");
            }
        }
        for x in [0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5, 127.49999] {
            assert_eq!(round_half_even(x), x.round_ties_even(), "{x}");
        }
    }

    #[test]
    fn zero_blocks_quantize_to_zero() {
        let x = [0.0f32; 256];
        for ty in [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K] {
            let mut out = vec![0xAAu8; ty.row_bytes(256).unwrap()];
            quantize_row(ty, &x, &mut out);
            let mut back = vec![1.0f32; 256];
            dequantize_row(ty, &out, &mut back);
            assert!(back.iter().all(|&v| v == 0.0), "{ty}");
        }
    }

    #[test]
    fn q8_k_uses_signed_max_and_bsums() {
        let mut x = [0.0f32; 256];
        for (i, v) in x.iter_mut().enumerate() {
            *v = (i as f32 - 100.0) * 0.01;
        }
        x[7] = -5.0; // the largest magnitude always maps to -127; the scale carries the sign
        let mut out = vec![0u8; 292];
        quantize_row(GgmlType::Q8_K, &x, &mut out);
        let b: BlockQ8K = bytemuck::pod_read_unaligned(&out);
        assert_eq!(b.qs[7], -127);
        assert!(b.d > 0.0);
        for (j, s) in b.bsums.iter().enumerate() {
            let want: i16 = b.qs[16 * j..16 * j + 16].iter().map(|&q| q as i16).sum();
            assert_eq!(*s, want);
        }
    }

    #[test]
    fn weight_quantizers_round_trip() {
        let x: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        for (ty, tol) in [
            (GgmlType::Q8_0, 0.02),
            (GgmlType::Q4_0, 0.3),
            (GgmlType::Q4_1, 0.2),
            (GgmlType::Q5_0, 0.15),
            (GgmlType::Q5_1, 0.1),
            (GgmlType::F16, 0.01),
            (GgmlType::BF16, 0.02),
        ] {
            let mut q = vec![0u8; ty.row_bytes(256).unwrap()];
            quantize_weights(ty, &x, &mut q).unwrap();
            let mut back = vec![0.0f32; 256];
            dequantize_row(ty, &q, &mut back);
            let err = x
                .iter()
                .zip(&back)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(err < tol, "{ty}: max error {err}");
        }
        let mut q = vec![0u8; GgmlType::Q4_K.row_bytes(256).unwrap()];
        assert!(quantize_weights(GgmlType::Q4_K, &x, &mut q).is_err());
    }

    #[test]
    fn bf16_rounding_matches_ggml() {
        assert_eq!(f32_to_bf16(1.0).to_bits(), 0x3f80);
        // Halfway cases round to even.
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)).to_bits(), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)).to_bits(), 0x3f82);
        assert!(f32_to_bf16(f32::NAN).to_f32().is_nan());
    }
}
