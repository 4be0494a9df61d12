//! AVX2 decoders of Q1_0 (each of 4 bytes spread over 8 lanes by `vpshufb`, one bit tested per
//! lane) and Q2_0 (the four 2-bit fields of 8 bytes by shifts, interleaved back by unpacks).

use super::{BlockQ1_0, BlockQ2_0};
use crate::quant::decoded::{Decoded32, Decoder};
use crate::types::GgmlType;
use crate::view::blocks_of;
use std::arch::x86_64::*;

pub(super) fn decoder(ty: GgmlType) -> Option<Decoder> {
    Some(match ty {
        GgmlType::Q1_0 => Decoder::B32(decode_q1_0),
        GgmlType::Q2_0 => Decoder::B32(decode_q2_0),
        _ => return None,
    })
}

fn decode_q1_0(row: &[u8], out: &mut [Decoded32]) {
    let x = blocks_of::<BlockQ1_0>(row);
    // SAFETY: this decoder is handed out only at `Isa::Avx2` or above, which the caller capped at
    // what the CPU has.
    unsafe { q1_0(&x, out) }
}

fn decode_q2_0(row: &[u8], out: &mut [Decoded32]) {
    let x = blocks_of::<BlockQ2_0>(row);
    // SAFETY: as in `decode_q1_0`.
    unsafe { q2_0(&x, out) }
}

#[target_feature(enable = "avx2")]
fn q1_0(x: &[BlockQ1_0], out: &mut [Decoded32]) {
    let spread = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, //
        2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
    );
    let bits = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let one = _mm256_set1_epi8(1);
    for (x, o) in x.iter().zip(out.chunks_exact_mut(4)) {
        let d = x.d.to_f32();
        for (k, o) in o.iter_mut().enumerate() {
            let w = u32::from_le_bytes(x.qs[4 * k..4 * k + 4].try_into().unwrap());
            let v = _mm256_shuffle_epi8(_mm256_set1_epi32(w as i32), spread);
            // -1 where the bit is clear, 0 where set; OR 1 gives -1 / +1.
            let clear = _mm256_cmpeq_epi8(_mm256_and_si256(v, bits), _mm256_setzero_si256());
            let q = _mm256_or_si256(clear, one);
            // SAFETY: `q` is 32 bytes.
            unsafe { _mm256_storeu_si256(o.q.as_mut_ptr().cast(), q) };
            o.d = d;
            o.m = 0.0;
        }
    }
}

#[target_feature(enable = "avx2")]
fn q2_0(x: &[BlockQ2_0], out: &mut [Decoded32]) {
    let (m3, one) = (_mm_set1_epi8(3), _mm_set1_epi8(1));
    for (x, o) in x.iter().zip(out.chunks_exact_mut(2)) {
        let d = x.d.to_f32();
        for (k, o) in o.iter_mut().enumerate() {
            // SAFETY: `qs` is 16 bytes; bytes 8k..8k + 8 are read.
            let b = unsafe { _mm_loadl_epi64(x.qs.as_ptr().add(8 * k).cast()) };
            let f = |s: __m128i| _mm_sub_epi8(_mm_and_si128(s, m3), one);
            let (f0, f1) = (f(b), f(_mm_srli_epi16::<2>(b)));
            let (f2, f3) = (f(_mm_srli_epi16::<4>(b)), f(_mm_srli_epi16::<6>(b)));
            // Byte i of the input gives values 4i..4i + 4: fields 0, 1, 2, 3 in turn.
            let (a, c) = (_mm_unpacklo_epi8(f0, f1), _mm_unpacklo_epi8(f2, f3));
            let q = o.q.as_mut_ptr();
            // SAFETY: `q` is 32 bytes: values 0..16, then 16..32.
            unsafe {
                _mm_storeu_si128(q.cast(), _mm_unpacklo_epi16(a, c));
                _mm_storeu_si128(q.add(16).cast(), _mm_unpackhi_epi16(a, c));
            }
            o.d = d;
            o.m = 0.0;
        }
    }
}
