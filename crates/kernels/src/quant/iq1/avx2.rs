//! The AVX2 decoder: a block's grid rows and delta signs are unpacked as in the scalar decoder,
//! then 32 values at a time `q = 8 * grid + delta` (a 16-bit shift with the bits carried across
//! bytes masked off, and each group's ±1 spread over its 8 bytes).

use super::{set_scales, Iq1Block};
use crate::dequant::blocks_of;
use crate::quant::decoded::DecodedK;
use std::arch::x86_64::*;

/// Decodes a row at AVX2; `iq1::decoder` returns it only for `Isa::Avx2` or above, which
/// `quant::decoder` caps at the CPU's level.
pub(super) fn decode<B: Iq1Block>(row: &[u8], out: &mut [DecodedK]) {
    // SAFETY: dispatched only where the CPU has AVX2 (see above).
    unsafe { decode_impl::<B>(row, out) }
}

#[target_feature(enable = "avx2")]
fn decode_impl<B: Iq1Block>(row: &[u8], out: &mut [DecodedK]) {
    // Bytes 0..8 of a 32-byte run read delta byte 0, 8..16 byte 1, then bytes 2 and 3 (per
    // 128-bit lane of a broadcast u32).
    let spread = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let high5 = _mm256_set1_epi8(0xF8u8 as i8);
    for (x, o) in blocks_of::<B>(row).iter().zip(out.iter_mut()) {
        let u = x.unpack();
        set_scales(&u, o);
        for k in 0..8 {
            // SAFETY: `grid` holds 32 u64 (groups 4k..4k + 4 are its bytes 32k..32k + 32) and
            // `q` 256 bytes (values 32k..32k + 32).
            let g = unsafe { _mm256_loadu_si256(u.grid.as_ptr().add(4 * k).cast()) };
            let g8 = _mm256_and_si256(_mm256_slli_epi16(g, 3), high5);
            let d =
                bytemuck::cast::<[i8; 4], i32>(u.delta[4 * k..4 * k + 4].try_into().expect("4"));
            let d = _mm256_shuffle_epi8(_mm256_set1_epi32(d), spread);
            let q = _mm256_add_epi8(g8, d);
            // SAFETY: as above.
            unsafe { _mm256_storeu_si256(o.q.as_mut_ptr().add(32 * k).cast(), q) };
        }
    }
}
