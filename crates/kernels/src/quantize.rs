//! Quantization: activations into ggml's dot-product types exactly as ggml's x86 build does it,
//! and weights with ggml's reference quantizers (`quantize_row_*_ref`, which `llama-quantize`
//! uses when no importance matrix is given), bit for bit.
//!
//! Each family quantizes its own types (`quant`). Blocks are built on the stack and copied out,
//! so destinations need no particular alignment.

use crate::types::GgmlType;
use crate::KernelError;

pub use crate::quant::float::f32_to_bf16;

/// Quantizes one activation row into `ty` (F32, F16, BF16, Q8_0, Q8_1 or Q8_K) as ggml's x86
/// build does before a dot product; `dst` must hold exactly `ty.row_bytes(src.len())` bytes.
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) {
    let n = src.len();
    assert_eq!(
        Some(dst.len()),
        ty.row_bytes(n),
        "quantize_row: {ty} destination size does not match {n} values"
    );
    assert!(
        crate::quant::quantize_activations(ty, src, dst),
        "quantize_row: {ty} is not an activation type"
    );
}

/// Quantizes `src` into weights of type `ty` with ggml's reference algorithm for that type:
/// every type but F32/F16/BF16 bit-exact with `quantize_row_<type>_ref` (F32/F16/BF16 are plain
/// conversions). `dst` must hold exactly `ty.row_bytes(src.len())` bytes.
pub fn quantize_weights(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), KernelError> {
    let n = src.len();
    let expected = ty.row_bytes(n).ok_or(KernelError::RaggedRow {
        ty,
        cols: n,
        block: ty.block_len(),
    })?;
    if expected != dst.len() {
        return Err(KernelError::SizeMismatch {
            ty,
            rows: 1,
            cols: n,
            expected,
            actual: dst.len(),
        });
    }
    if crate::quant::quantize_weights(ty, src, dst) {
        Ok(())
    } else {
        Err(KernelError::Unsupported(ty))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::{BlockQ8K, BlockQ8_0};
    use crate::dequant::dequantize_row;
    use crate::quant::rounding::{nearest_int, round_half_even};

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
        let b: BlockQ8_0 = bytemuck::pod_read_unaligned(&out);
        assert_eq!(b.d.to_f32(), 1.0);
        assert_eq!(&b.qs[..5], &[127, 2, -2, 4, 0]);
        // The reference weight quantizer rounds half away from zero instead.
        quantize_weights(GgmlType::Q8_0, &x, &mut out).unwrap();
        let b: BlockQ8_0 = bytemuck::pod_read_unaligned(&out);
        assert_eq!(&b.qs[..5], &[127, 3, -3, 4, 1]);
    }

    #[test]
    fn magic_rounding_equals_round_ties_even() {
        for i in -300_000..300_000 {
            let x = i as f32 * 0.000_47 + (i % 7) as f32 * 0.5;
            if x.abs() < 200.0 {
                assert_eq!(round_half_even(x), x.round_ties_even(), "{x}");
                assert_eq!(nearest_int(x), x.round_ties_even() as i32, "{x}");
            }
        }
        for x in [0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5, 127.49999] {
            assert_eq!(round_half_even(x), x.round_ties_even(), "{x}");
            assert_eq!(nearest_int(x), x.round_ties_even() as i32, "{x}");
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
        for ty in GgmlType::ALL {
            let mut out = vec![0xAAu8; ty.row_bytes(256).unwrap()];
            // Types read from files only (no quantizer here) are skipped.
            match quantize_weights(ty, &x, &mut out) {
                Err(KernelError::Unsupported(_)) => continue,
                r => r.unwrap(),
            }
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
            (GgmlType::Q8_1, 0.02),
            (GgmlType::Q8_K, 0.02),
            (GgmlType::Q4_0, 0.3),
            (GgmlType::Q4_1, 0.2),
            (GgmlType::Q5_0, 0.15),
            (GgmlType::Q5_1, 0.1),
            (GgmlType::Q2_K, 0.7),
            (GgmlType::Q3_K, 0.4),
            (GgmlType::Q4_K, 0.2),
            (GgmlType::Q5_K, 0.1),
            (GgmlType::Q6_K, 0.05),
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
    }

    #[test]
    fn weight_quantizer_reports_bad_sizes() {
        let x = [0.5f32; 48];
        let mut q = vec![0u8; 64];
        assert!(matches!(
            quantize_weights(GgmlType::Q4_0, &x, &mut q),
            Err(KernelError::RaggedRow { block: 32, .. })
        ));
        let x = [0.5f32; 64];
        assert!(matches!(
            quantize_weights(GgmlType::Q4_0, &x, &mut q),
            Err(KernelError::SizeMismatch {
                expected: 36,
                actual: 64,
                ..
            })
        ));
    }

    #[test]
    fn misaligned_destinations_work() {
        let x: Vec<f32> = (0..256).map(|i| (i as f32 * 0.37).sin()).collect();
        for ty in GgmlType::ALL {
            let len = ty.row_bytes(256).unwrap();
            let mut buf = vec![0u8; len + 1];
            // Types read from files only (no quantizer here) are skipped.
            match quantize_weights(ty, &x, &mut buf[1..]) {
                Err(KernelError::Unsupported(_)) => continue,
                r => r.unwrap(),
            }
            let mut aligned = vec![0u8; len];
            quantize_weights(ty, &x, &mut aligned).unwrap();
            assert_eq!(&buf[1..], &aligned[..], "{ty}");
        }
    }

    #[test]
    fn bf16_rounding_matches_ggml() {
        assert_eq!(f32_to_bf16(1.0).to_bits(), 0x3f80);
        // Halfway cases round to even.
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)).to_bits(), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)).to_bits(), 0x3f82);
        // NaN keeps its sign and top payload bits and is made quiet.
        assert_eq!(f32_to_bf16(f32::from_bits(0x7f80_0001)).to_bits(), 0x7fc0);
        assert_eq!(f32_to_bf16(f32::from_bits(0xff81_0000)).to_bits(), 0xffc1);
        assert_eq!(f32_to_bf16(f32::INFINITY).to_bits(), 0x7f80);
        // Just below the largest finite value rounds up to infinity, as ggml's add-and-shift does.
        assert_eq!(f32_to_bf16(f32::MAX).to_bits(), 0x7f80);
    }
}
