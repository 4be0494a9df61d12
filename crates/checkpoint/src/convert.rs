//! Element types: checkpoint dtypes decoded to f32 (FP8 E4M3 with its block scales included),
//! and f32 rows encoded into the GGUF type a tensor is stored in (F32, F16, BF16, or a weight
//! type through the kernels' quantizers, bit-exact with ggml's reference quantizers).

use frugal_formats::Dtype;
use frugal_kernels::dequant::dequantize_row;
use frugal_kernels::quantize::{f32_to_bf16, quantize_weights};
use frugal_kernels::GgmlType;

/// The GGUF type of a float dtype stored as it is; `None` for the others.
pub fn stored_type(d: Dtype) -> Option<GgmlType> {
    match d {
        Dtype::F32 => Some(GgmlType::F32),
        Dtype::F16 => Some(GgmlType::F16),
        Dtype::BF16 => Some(GgmlType::BF16),
        _ => None,
    }
}

/// An FP8 E4M3 byte (the `e4m3fn` variant: no infinities, S.1111.111 is NaN) as f32: exact,
/// subnormals included.
pub fn e4m3_to_f32(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0f32 } else { 1.0 };
    let exp = i32::from((b >> 3) & 0xf);
    let man = f32::from(b & 7);
    if exp == 15 && man == 7.0 {
        return f32::NAN;
    }
    let magnitude = match exp {
        0 => man / 8.0 * 2f32.powi(-6),
        _ => (1.0 + man / 8.0) * 2f32.powi(exp - 7),
    };
    sign * magnitude
}

/// The values of a tensor of `dtype` as f32, or why they cannot be.
pub fn decode(dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>, String> {
    let n = bytes.len() / dtype.size();
    let mut out = vec![0.0f32; n];
    match dtype {
        Dtype::F32 | Dtype::F16 | Dtype::BF16 => {
            let ty = stored_type(dtype).expect("a float type");
            dequantize_row(ty, bytes, &mut out);
        }
        Dtype::F64 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                *o = f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32;
            }
        }
        Dtype::F8E4M3 => {
            for (o, &b) in out.iter_mut().zip(bytes) {
                *o = e4m3_to_f32(b);
            }
        }
        other => return Err(format!("dtype {other} cannot be decoded as weights")),
    }
    Ok(out)
}

/// Multiplies `values` (`rows x cols`, row-major) by their block's scale: `scales` holds
/// `ceil(rows / block.0) x ceil(cols / block.1)` values, DeepSeek-V3's `weight_scale_inv`.
pub fn apply_block_scales(
    values: &mut [f32],
    cols: usize,
    scales: &[f32],
    block: (usize, usize),
) -> Result<(), String> {
    let rows = values.len() / cols.max(1);
    let (br, bc) = (rows.div_ceil(block.0), cols.div_ceil(block.1));
    if scales.len() != br * bc {
        return Err(format!(
            "{} block scales for a {rows} x {cols} matrix in {} x {} blocks (expected {br} x {bc})",
            scales.len(),
            block.0,
            block.1
        ));
    }
    for (r, row) in values.chunks_exact_mut(cols).enumerate() {
        let scale_row = &scales[(r / block.0) * bc..][..bc];
        for (c, v) in row.iter_mut().enumerate() {
            *v *= scale_row[c / block.1];
        }
    }
    Ok(())
}

/// `values` (rows of `cols`) encoded as `ty`.
pub fn encode(values: &[f32], cols: usize, ty: GgmlType) -> Result<Vec<u8>, String> {
    let row_bytes = ty
        .row_bytes(cols)
        .ok_or_else(|| format!("rows of {cols} values cannot be stored as {ty}"))?;
    let rows = values.len() / cols.max(1);
    let mut out = vec![0u8; rows * row_bytes];
    match ty {
        GgmlType::F32 => {
            for (o, v) in out.chunks_exact_mut(4).zip(values) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for (o, &v) in out.chunks_exact_mut(2).zip(values) {
                o.copy_from_slice(&f32_to_bf16(v).to_bits().to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (o, &v) in out.chunks_exact_mut(2).zip(values) {
                o.copy_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes());
            }
        }
        _ => {
            for (o, row) in out
                .chunks_exact_mut(row_bytes)
                .zip(values.chunks_exact(cols))
            {
                quantize_weights(ty, row, o).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(out)
}

/// The weight type `--quantize` names (`q8_0`, `Q4_K`, …), if the kernels can quantize into it.
pub fn quant_type(name: &str) -> Result<GgmlType, String> {
    let ty = GgmlType::ALL
        .into_iter()
        .find(|t| t.name().eq_ignore_ascii_case(name))
        .ok_or_else(|| format!("unknown type '{name}'"))?;
    let probe = vec![0.5f32; ty.block_len().max(1)];
    let mut out = vec![0u8; ty.row_bytes(probe.len()).unwrap_or(0)];
    if !ty.is_quantized() || quantize_weights(ty, &probe, &mut out).is_err() {
        return Err(format!(
            "{ty} has no weight quantizer in this build (types: {})",
            quantizable_types().join(", ")
        ));
    }
    Ok(ty)
}

/// The weight types `--quantize` accepts.
pub fn quantizable_types() -> Vec<&'static str> {
    GgmlType::ALL
        .into_iter()
        .filter(|&t| {
            let probe = vec![0.5f32; t.block_len()];
            let mut out = vec![0u8; t.row_bytes(probe.len()).unwrap_or(0)];
            t.is_quantized() && quantize_weights(t, &probe, &mut out).is_ok()
        })
        .map(GgmlType::name)
        .collect()
}

/// The type a matrix of `cols` columns gets when `ty` is asked for: `llama-quantize`'s
/// fallback when its rows are not whole blocks (Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0; Q2_K and
/// Q3_K go to IQ4_NL there, which has no quantizer here, so Q4_0), then F16.
pub fn fit_type(ty: GgmlType, cols: usize) -> GgmlType {
    let fallback = match ty {
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        GgmlType::Q2_K | GgmlType::Q3_K => GgmlType::Q4_0,
        other => other,
    };
    [ty, fallback, GgmlType::F16]
        .into_iter()
        .find(|t| cols.is_multiple_of(t.block_len()))
        .unwrap_or(GgmlType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e4m3_decodes_every_class() {
        assert_eq!(e4m3_to_f32(0x00), 0.0);
        assert!(e4m3_to_f32(0x80).is_sign_negative());
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9)); // smallest subnormal
        assert_eq!(e4m3_to_f32(0x07), 7.0 * 2f32.powi(-9)); // largest subnormal
        assert_eq!(e4m3_to_f32(0x08), 2f32.powi(-6)); // smallest normal
        assert_eq!(e4m3_to_f32(0x38), 1.0);
        assert_eq!(e4m3_to_f32(0x7e), 448.0); // largest finite
        assert_eq!(e4m3_to_f32(0xfe), -448.0);
        assert!(e4m3_to_f32(0x7f).is_nan() && e4m3_to_f32(0xff).is_nan());
        assert_eq!(e4m3_to_f32(0x78), 256.0); // exponent 15 is finite in e4m3fn
    }

    #[test]
    fn types_without_quantizers_are_refused() {
        assert_eq!(quant_type("q8_0"), Ok(GgmlType::Q8_0));
        assert_eq!(quant_type("Q4_K"), Ok(GgmlType::Q4_K));
        assert!(quant_type("f16")
            .unwrap_err()
            .contains("no weight quantizer"));
        assert!(quant_type("q9_9").unwrap_err().contains("unknown type"));
    }

    #[test]
    fn ragged_rows_fall_back_like_llama_quantize() {
        assert_eq!(fit_type(GgmlType::Q4_K, 256), GgmlType::Q4_K);
        assert_eq!(fit_type(GgmlType::Q4_K, 32), GgmlType::Q5_0);
        assert_eq!(fit_type(GgmlType::Q8_0, 48), GgmlType::F16);
    }
}
