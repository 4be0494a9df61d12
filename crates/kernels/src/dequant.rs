//! Dequantization to f32, bit-exact with ggml's `dequantize_row_*` (same formulas, same order of
//! float operations per value): the public entry point; each family dequantizes its own types
//! (`quant`).

use crate::types::GgmlType;

/// Dequantizes `dst.len()` values of type `ty` from `src`, which must hold exactly
/// `ty.row_bytes(dst.len())` bytes.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    let n = dst.len();
    assert_eq!(
        Some(src.len()),
        ty.row_bytes(n),
        "dequantize_row: {ty} source size does not match {n} values"
    );
    assert!(
        crate::quant::dequantize_row(ty, src, dst),
        "dequantize_row: {ty} has no dequantization in this build"
    );
}
