//! AVX2 decoders of TQ1_0 and TQ2_0, bit-identical to the scalar ones.
//!
//! TQ1_0's byte multiply `b * 3^k mod 256` is repeated tripling (`c + c + c` in bytes), and the
//! digit `(3c) >> 8` is two unsigned byte compares (`c >= 86`, `c >= 171`).

use super::{set_scales, BlockTQ1_0, BlockTQ2_0};
use crate::quant::decoded::{DecodedK, Decoder};
use crate::types::GgmlType;
use crate::view::blocks_of;
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

/// `3 * c mod 256` for each byte.
#[target_feature(enable = "avx2")]
fn times3(c: __m256i) -> __m256i {
    _mm256_add_epi8(c, _mm256_add_epi8(c, c))
}

/// `((3 * c) >> 8) - 1` for each byte `c`: the trit is `[c >= 86] + [c >= 171]`, compared unsigned
/// by flipping the sign bits.
#[target_feature(enable = "avx2")]
fn trit_minus_one(c: __m256i) -> __m256i {
    let s = _mm256_xor_si256(c, _mm256_set1_epi8(i8::MIN));
    let ge86 = _mm256_cmpgt_epi8(s, _mm256_set1_epi8((85u8 ^ 0x80) as i8));
    let ge171 = _mm256_cmpgt_epi8(s, _mm256_set1_epi8((170u8 ^ 0x80) as i8));
    _mm256_sub_epi8(_mm256_sub_epi8(_mm256_set1_epi8(-1), ge86), ge171)
}

#[target_feature(enable = "avx2")]
fn tq1_0(x: &[BlockTQ1_0], out: &mut [DecodedK]) {
    for (x, o) in x.iter().zip(out.iter_mut()) {
        // SAFETY: `qs` is 48 bytes: bytes 0..32 and 32..48 are read.
        let (lo, hi) = unsafe {
            (
                _mm256_loadu_si256(x.qs.as_ptr().cast()),
                _mm_loadu_si128(x.qs.as_ptr().add(32).cast()),
            )
        };
        // `b * 3^k mod 256` by repeated tripling.
        let lo3 = times3(lo);
        let lo9 = times3(lo3);
        let lo27 = times3(lo9);
        let lo81 = times3(lo27);
        // qs[32..48] times 1 | 3, then 9 | 27, then 81 (low half of the last part).
        let hi2 = _mm256_broadcastsi128_si256(hi);
        let h13 = _mm256_blend_epi32::<0xF0>(hi2, times3(hi2));
        let h927 = times3(times3(h13));
        let h81 = times3(times3(h927)); // low half: qs[32..48] * 81
                                        // qh[m % 4] times 3^(m / 4) for m < 16: one power per 32-bit lane.
        let q = _mm256_set1_epi32(i32::from_le_bytes(x.qh));
        let q3 = times3(q);
        let q9 = times3(q3);
        let q27 = times3(q9);
        let qa = _mm256_blend_epi32::<0b0010>(q, q3);
        let qb = _mm256_blend_epi32::<0b1000>(q9, q27);
        let qh = _mm256_castsi256_si128(_mm256_blend_epi32::<0b1100>(qa, qb));
        let last = _mm256_inserti128_si256::<1>(h81, qh);
        let parts = [lo, lo3, lo9, lo27, lo81, h13, h927, last];
        let dst = o.q.as_mut_ptr();
        for (i, c) in parts.into_iter().enumerate() {
            // SAFETY: `q` is 256 bytes; part `i` is bytes 32i..32i + 32.
            unsafe { _mm256_storeu_si256(dst.add(32 * i).cast(), trit_minus_one(c)) };
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
