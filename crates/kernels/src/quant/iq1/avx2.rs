//! The AVX2 decoder: 32 values at a time, the grid rows and delta signs are read as in the
//! scalar decoder, then `q = 8 * grid + delta` (a 16-bit shift with the bits carried across
//! bytes masked off, and each group's ±1 spread over its 8 bytes).

use super::{set_scales, Iq1Block};
use crate::quant::decoded::DecodedK;
use crate::view::blocks_of;
use std::arch::x86_64::*;

/// Decodes a row at AVX2 (with F16C, part of `Isa::Avx2`); `iq1::decoder` returns it only for
/// `Isa::Avx2` or above, which `quant::decoder` caps at the CPU's level.
pub(super) fn decode<B: Iq1Block>(row: &[u8], out: &mut [DecodedK]) {
    // SAFETY: dispatched only where the CPU has AVX2 and F16C (see above).
    unsafe { decode_impl::<B>(row, out) }
}

#[target_feature(enable = "avx2,f16c")]
fn decode_impl<B: Iq1Block>(row: &[u8], out: &mut [DecodedK]) {
    // Bytes 0..8 of a 32-byte run read delta byte 0, 8..16 byte 1, then bytes 2 and 3 (per
    // 128-bit lane of a broadcast u32).
    let spread = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let high5 = _mm256_set1_epi8(0xF8u8 as i8);
    for (x, o) in blocks_of::<B>(row).iter().zip(out.iter_mut()) {
        let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(x.d_bits() as i32)));
        set_scales(x, d, o);
        for ib in 0..8 {
            let (g, d) = x.group32(ib);
            let g = _mm256_set_epi64x(g[3] as i64, g[2] as i64, g[1] as i64, g[0] as i64);
            let g8 = _mm256_and_si256(_mm256_slli_epi16(g, 3), high5);
            let d = _mm256_shuffle_epi8(_mm256_set1_epi32(d as i32), spread);
            let q = _mm256_add_epi8(g8, d);
            // SAFETY: `q` holds 256 bytes; values 32ib..32ib + 32 are in bounds for ib < 8.
            unsafe { _mm256_storeu_si256(o.q.as_mut_ptr().add(32 * ib).cast(), q) };
        }
    }
}
