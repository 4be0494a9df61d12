//! The AVX2 decoder: a block's grid rows and sign bytes are unpacked as in the scalar decoder,
//! then 32 values at a time the sign bits are spread to byte masks `m` (0 or -1) and
//! `q = (grid ^ m) - m`.

use super::{set_scales, Iq2Block};
use crate::dequant::blocks_of;
use crate::quant::decoded::DecodedK;
use std::arch::x86_64::*;

/// Decodes a row at AVX2; `iq2::decoder` returns it only for `Isa::Avx2` or above, which
/// `quant::decoder` caps at the CPU's level.
pub(super) fn decode<B: Iq2Block>(row: &[u8], out: &mut [DecodedK]) {
    // SAFETY: dispatched only where the CPU has AVX2 (see above).
    unsafe { decode_impl::<B>(row, out) }
}

#[target_feature(enable = "avx2")]
fn decode_impl<B: Iq2Block>(row: &[u8], out: &mut [DecodedK]) {
    // Byte b of lanes 0..8 reads sign byte 0, 8..16 byte 1, then bytes 2 and 3 (per 128-bit lane
    // of a broadcast u32); `bits` picks bit j for value j of each group.
    let spread = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let bits = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    for (x, o) in blocks_of::<B>(row).iter().zip(out.iter_mut()) {
        let u = x.unpack();
        set_scales(&u, o);
        for k in 0..8 {
            // SAFETY: `grid` holds 32 u64 (groups 4k..4k + 4 are its bytes 32k..32k + 32) and
            // `q` 256 bytes (values 32k..32k + 32).
            let g = unsafe { _mm256_loadu_si256(u.grid.as_ptr().add(4 * k).cast()) };
            let s = u32::from_le_bytes(u.signs[4 * k..4 * k + 4].try_into().expect("4 bytes"));
            let s = _mm256_shuffle_epi8(_mm256_set1_epi32(s as i32), spread);
            let m = _mm256_cmpeq_epi8(_mm256_and_si256(s, bits), bits);
            let q = _mm256_sub_epi8(_mm256_xor_si256(g, m), m);
            // SAFETY: as above.
            unsafe { _mm256_storeu_si256(o.q.as_mut_ptr().add(32 * k).cast(), q) };
        }
    }
}
