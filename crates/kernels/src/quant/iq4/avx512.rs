//! AVX-512 decoder of IQ4_XS: one `vpshufb` per 64 values, two 512-bit permutes per 128.

use super::{avx2, BlockIq4Xs, KVALUES};
use crate::quant::decoded::DecodedK;
use crate::view::blocks_of;
use std::arch::x86_64::*;

pub(crate) fn decode_iq4_xs(row: &[u8], out: &mut [DecodedK]) {
    // SAFETY: dispatched only where the CPU has AVX-512 F/BW (`Isa::Avx512Vnni`), which implies
    // AVX2.
    unsafe { iq4_xs(&blocks_of::<BlockIq4Xs>(row), out) }
}

#[target_feature(enable = "avx2,avx512f,avx512bw")]
fn iq4_xs(x: &[BlockIq4Xs], out: &mut [DecodedK]) {
    // SAFETY: a 16-byte unaligned read of a 16-byte array.
    let kv = _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(KVALUES.as_ptr().cast()) });
    let m4 = _mm512_set1_epi8(0xF);
    // 128-bit lane k of `lo` holds values 0..16 of group k, of `hi` values 16..32.
    let first = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
    let second = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
    for (x, o) in x.iter().zip(out.iter_mut()) {
        for p in 0..2 {
            // SAFETY: bytes 64p..64p + 64 of the 128 of `qs` (four groups), and values
            // 128p..128p + 128 of the 256 of `o.q`; loads and stores are unaligned.
            unsafe {
                let b = _mm512_loadu_si512(x.qs.as_ptr().add(64 * p).cast());
                let lo = _mm512_shuffle_epi8(kv, _mm512_and_si512(b, m4));
                let hi = _mm512_shuffle_epi8(kv, _mm512_and_si512(_mm512_srli_epi16(b, 4), m4));
                let q = o.q.as_mut_ptr().add(128 * p);
                _mm512_storeu_si512(q.cast(), _mm512_permutex2var_epi64(lo, first, hi));
                _mm512_storeu_si512(q.add(64).cast(), _mm512_permutex2var_epi64(lo, second, hi));
            }
        }
        o.sc = avx2::run_scales(x);
        o.m = [0; 16];
        o.d = x.d.to_f32();
        o.dmin = 0.0;
    }
}
