//! The rounding and scanning steps of ggml's quantizers, shared by the families' quantizers so
//! that every family rounds exactly as ggml does.

/// ggml's `nearest_int`: adding 1.5 * 2^23 leaves x rounded half to even in the low mantissa bits.
/// Exact for |x| < 2^22; beyond that (or for NaN) it returns the same garbage as ggml, never panics.
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// Round half to even as an f32, for |x| < 2^22 (activation quantization only sees |x| <= 127.5).
/// Equals `_mm256_round_ps(x, _MM_ROUND_NEAREST)` there; unlike `f32::round_ties_even` (a libm call
/// without SSE4.1 at compile time) it vectorizes.
#[inline]
pub(crate) fn round_half_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

/// The value of largest magnitude (first one on ties) and that magnitude, as ggml's quantizers
/// scan for it; (0, 0) when every value is zero (or NaN).
#[inline]
pub(crate) fn signed_max(x: &[f32]) -> (f32, f32) {
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}
