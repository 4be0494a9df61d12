//! Dequantization to f32, bit-exact with ggml's `dequantize_row_*` (same formulas, same order of
//! float operations per value): the public entry point, and the block-view helpers the families'
//! dequantizers share (each family dequantizes its own types, `quant`).

use crate::types::GgmlType;
use bytemuck::Pod;

/// Views `bytes` as blocks; copies into an aligned buffer only if `bytes` is misaligned.
pub(crate) fn blocks_of<T: Pod>(bytes: &[u8]) -> std::borrow::Cow<'_, [T]> {
    match bytemuck::try_cast_slice(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => std::borrow::Cow::Owned(bytemuck::pod_collect_to_vec(bytes)),
    }
}

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

/// Runs `block` on each block of `src` with its `per_block` output values. Generic over the
/// function (a zero-sized fn item, not a pointer) so each type gets a plain loop with its block
/// body inlined, as when it was written out in `dequantize_row`.
#[inline(always)]
pub(crate) fn per_block<B: Pod>(
    src: &[u8],
    dst: &mut [f32],
    per_block: usize,
    block: impl Fn(&B, &mut [f32]),
) {
    for (b, y) in blocks_of::<B>(src)
        .iter()
        .zip(dst.chunks_exact_mut(per_block))
    {
        block(b, y);
    }
}
