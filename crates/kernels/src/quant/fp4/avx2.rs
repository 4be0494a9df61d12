//! AVX2 decoder of MXFP4: both nibbles of a block's 16 bytes looked up in `kvalues_mxfp4` with
//! one `vpshufb` each.

use super::{e8m0_to_fp32_half, BlockMXFP4, KVALUES_MXFP4};
use crate::quant::decoded::Decoded32;
use crate::view::blocks_of;
use std::arch::x86_64::*;

pub(super) fn decode_mxfp4(row: &[u8], out: &mut [Decoded32]) {
    let x = blocks_of::<BlockMXFP4>(row);
    // SAFETY: this decoder is handed out only at `Isa::Avx2` or above, which the caller capped at
    // what the CPU has.
    unsafe { mxfp4(&x, out) }
}

#[target_feature(enable = "avx2")]
fn mxfp4(x: &[BlockMXFP4], out: &mut [Decoded32]) {
    // SAFETY: the table is 16 bytes.
    let table = unsafe { _mm_loadu_si128(KVALUES_MXFP4.as_ptr().cast()) };
    let m4 = _mm_set1_epi8(0xF);
    for (x, o) in x.iter().zip(out.iter_mut()) {
        // SAFETY: `qs` is 16 bytes.
        let b = unsafe { _mm_loadu_si128(x.qs.as_ptr().cast()) };
        let lo = _mm_shuffle_epi8(table, _mm_and_si128(b, m4));
        let hi = _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16::<4>(b), m4));
        let q = o.q.as_mut_ptr();
        // SAFETY: `q` is 32 bytes: values 0..16, then 16..32.
        unsafe {
            _mm_storeu_si128(q.cast(), lo);
            _mm_storeu_si128(q.add(16).cast(), hi);
        }
        o.d = e8m0_to_fp32_half(x.e);
        o.m = 0.0;
    }
}
