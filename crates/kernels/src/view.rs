//! Rows of ggml bytes seen as blocks and written from blocks: the two conversions every family's
//! dequantization, reference dot products and quantizers share.
//!
//! Views copy a misaligned slice instead of reinterpreting it (`bytemuck`, no `unsafe`), so
//! callers may pass rows at any alignment.

use bytemuck::Pod;

/// Views `bytes` as blocks; copies into an aligned buffer only if `bytes` is misaligned.
pub(crate) fn blocks_of<T: Pod>(bytes: &[u8]) -> std::borrow::Cow<'_, [T]> {
    match bytemuck::try_cast_slice(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => std::borrow::Cow::Owned(bytemuck::pod_collect_to_vec(bytes)),
    }
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

/// Fills `dst` with one block `B` per `per` values of `src`.
#[inline]
pub(crate) fn write_blocks<B: Pod>(
    dst: &mut [u8],
    src: &[f32],
    per: usize,
    f: impl Fn(&[f32]) -> B,
) {
    for (out, x) in dst
        .chunks_exact_mut(std::mem::size_of::<B>())
        .zip(src.chunks_exact(per))
    {
        out.copy_from_slice(bytemuck::bytes_of(&f(x)));
    }
}
