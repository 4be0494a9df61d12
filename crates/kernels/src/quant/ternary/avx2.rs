//! AVX2 decoders of TQ1_0 and TQ2_0, bit-identical to the scalar ones.
//!
//! TQ1_0's byte multiply `b * 3^k mod 256` and the digit extraction `(c * 3) >> 8` both run in
//! 16-bit lanes with the byte in the high half: `vpmullw` of `b << 8` by `3^k` leaves
//! `(b * 3^k mod 256) << 8`, and `vpmulhuw` of that by 3 is the trit.

use super::{set_scales, BlockTQ1_0, BlockTQ2_0};
use crate::dequant::blocks_of;
use crate::quant::decoded::{DecodedK, Decoder};
use crate::types::GgmlType;
use std::arch::x86_64::*;

pub(super) fn decoder(ty: GgmlType) -> Option<Decoder> {
    Some(match ty {
        GgmlType::TQ1_0 => Decoder::K(decode_tq1_0),
        GgmlType::TQ2_0 => Decoder::K(decode_tq2_0),
        _ => return None,
    })
}

fn decode_tq1_0(row: &[u8], out: &mut [DecodedK]) {
    let x = blocks_of::<BlockTQ1_0>(row);
    // SAFETY: this decoder is handed out only at `Isa::Avx2` or above, which the caller capped at
    // what the CPU has.
    unsafe { tq1_0(&x, out) }
}

fn decode_tq2_0(row: &[u8], out: &mut [DecodedK]) {
    let x = blocks_of::<BlockTQ2_0>(row);
    // SAFETY: as in `decode_tq1_0`.
    unsafe { tq2_0(&x, out) }
}

/// Trit minus one of each byte `b` of `b`, the byte at u16 lane `i` multiplied by `pw[i]` first.
#[target_feature(enable = "avx2")]
fn trits(b: __m256i, pw: __m256i) -> __m256i {
    let three = _mm256_set1_epi16(3);
    let even = _mm256_slli_epi16::<8>(b);
    let odd = _mm256_and_si256(b, _mm256_set1_epi16(0xFF00u16 as i16));
    let te = _mm256_mulhi_epu16(_mm256_mullo_epi16(even, pw), three);
    let to = _mm256_mulhi_epu16(_mm256_mullo_epi16(odd, pw), three);
    let t = _mm256_or_si256(te, _mm256_slli_epi16::<8>(to));
    _mm256_sub_epi8(t, _mm256_set1_epi8(1))
}

#[target_feature(enable = "avx2")]
fn tq1_0(x: &[BlockTQ1_0], out: &mut [DecodedK]) {
    let (p1, p3) = (_mm256_set1_epi16(1), _mm256_set1_epi16(3));
    let (p9, p27, p81) = (
        _mm256_set1_epi16(9),
        _mm256_set1_epi16(27),
        _mm256_set1_epi16(81),
    );
    // Values 224..240: trit 4 of qs[32..48]; 240..256: trit m / 4 of qh[m % 4].
    let p_last = _mm256_setr_epi16(81, 81, 81, 81, 81, 81, 81, 81, 1, 1, 3, 3, 9, 9, 27, 27);
    for (x, o) in x.iter().zip(out.iter_mut()) {
        let q = o.q.as_mut_ptr();
        // SAFETY: `qs` is 48 bytes: bytes 0..32 and 32..48 are read.
        let (lo, hi) = unsafe {
            (
                _mm256_loadu_si256(x.qs.as_ptr().cast()),
                _mm_loadu_si128(x.qs.as_ptr().add(32).cast()),
            )
        };
        let hi2 = _mm256_broadcastsi128_si256(hi);
        let last = _mm256_inserti128_si256::<1>(hi2, _mm_set1_epi32(i32::from_le_bytes(x.qh)));
        let parts = [
            trits(lo, p1),
            trits(lo, p3),
            trits(lo, p9),
            trits(lo, p27),
            trits(lo, p81),
            trits(hi2, _mm256_setr_m128i(_mm_set1_epi16(1), _mm_set1_epi16(3))),
            trits(
                hi2,
                _mm256_setr_m128i(_mm_set1_epi16(9), _mm_set1_epi16(27)),
            ),
            trits(last, p_last),
        ];
        for (i, t) in parts.into_iter().enumerate() {
            // SAFETY: `q` is 256 bytes; part `i` is bytes 32i..32i + 32.
            unsafe { _mm256_storeu_si256(q.add(32 * i).cast(), t) };
        }
        set_scales(o, x.d);
    }
}

#[target_feature(enable = "avx2")]
fn tq2_0(x: &[BlockTQ2_0], out: &mut [DecodedK]) {
    let (m3, one) = (_mm256_set1_epi8(3), _mm256_set1_epi8(1));
    for (x, o) in x.iter().zip(out.iter_mut()) {
        let q = o.q.as_mut_ptr();
        for c in 0..2 {
            // SAFETY: `qs` is 64 bytes; bytes 32c..32c + 32 are read.
            let b = unsafe { _mm256_loadu_si256(x.qs.as_ptr().add(32 * c).cast()) };
            let parts = [
                b,
                _mm256_srli_epi16::<2>(b),
                _mm256_srli_epi16::<4>(b),
                _mm256_srli_epi16::<6>(b),
            ];
            for (l, p) in parts.into_iter().enumerate() {
                let t = _mm256_sub_epi8(_mm256_and_si256(p, m3), one);
                // SAFETY: `q` is 256 bytes; this is bytes 128c + 32l..128c + 32l + 32.
                unsafe { _mm256_storeu_si256(q.add(128 * c + 32 * l).cast(), t) };
            }
        }
        set_scales(o, x.d);
    }
}
