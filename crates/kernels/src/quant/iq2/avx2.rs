//! The AVX2 decoder: 32 values at a time, the 4 grid rows are read as in the scalar decoder, the
//! sign bits spread to byte masks `m` (0 or -1), and `q = (grid ^ m) - m`.

use super::{set_scales, Iq2Block};
use crate::quant::decoded::DecodedK;
use crate::view::blocks_of;
use std::arch::x86_64::*;

/// Decodes a row at AVX2 (with F16C, part of `Isa::Avx2`); `iq2::decoder` returns it only for
/// `Isa::Avx2` or above, which `quant::decoder` caps at the CPU's level.
pub(super) fn decode<B: Iq2Block>(row: &[u8], out: &mut [DecodedK]) {
    // SAFETY: dispatched only where the CPU has AVX2 and F16C (see above).
    unsafe { decode_impl::<B>(row, out) }
}

#[target_feature(enable = "avx2,f16c")]
fn decode_impl<B: Iq2Block>(row: &[u8], out: &mut [DecodedK]) {
    // Byte b of lanes 0..8 reads sign byte 0, 8..16 byte 1, then bytes 2 and 3 (per 128-bit lane
    // of a broadcast u32); `bits` picks bit j for value j of each group.
    let spread = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let bits = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    for (x, o) in blocks_of::<B>(row).iter().zip(out.iter_mut()) {
        let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(x.d_bits() as i32)));
        set_scales(x, d, o);
        for ib in 0..8 {
            let (g, s) = x.group32(ib);
            let g = _mm256_set_epi64x(g[3] as i64, g[2] as i64, g[1] as i64, g[0] as i64);
            let s = _mm256_shuffle_epi8(_mm256_set1_epi32(s as i32), spread);
            let m = _mm256_cmpeq_epi8(_mm256_and_si256(s, bits), bits);
            let q = _mm256_sub_epi8(_mm256_xor_si256(g, m), m);
            // SAFETY: `q` holds 256 bytes; values 32ib..32ib + 32 are in bounds for ib < 8.
            unsafe { _mm256_storeu_si256(o.q.as_mut_ptr().add(32 * ib).cast(), q) };
        }
    }
}
