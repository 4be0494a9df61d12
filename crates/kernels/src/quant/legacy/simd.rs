//! AVX2 decoders for Q4_1 and Q5_1 (also used at AVX-512, where mask registers saved nothing
//! measurable), bit-identical to the scalar ones in `mod.rs`. `decoder` returns them only for
//! `Isa::Avx2` or above, which the caller has capped at what the CPU has.

use super::super::decoded::{Decoded32, Decoder};
use crate::cpu::Isa;
use crate::types::GgmlType;
use std::arch::x86_64::*;

const Q4_1: usize = 20;
const Q5_1: usize = 24;

const _: () = {
    assert!(std::mem::size_of::<crate::blocks::BlockQ4_1>() == Q4_1);
    assert!(std::mem::size_of::<crate::blocks::BlockQ5_1>() == Q5_1);
};

pub(super) fn decoder(ty: GgmlType, isa: Isa) -> Option<Decoder> {
    debug_assert!(isa >= Isa::Avx2);
    Some(Decoder::B32(match ty {
        GgmlType::Q4_1 => decode_q4_1_avx2,
        GgmlType::Q5_1 => decode_q5_1_avx2,
        _ => return None,
    }))
}

/// Little-endian u32 of `b` at `off`.
#[inline]
fn u32_at<const N: usize>(b: &[u8; N], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// The 32 nibbles of the 16 bytes at `b[off..]`: low nibbles first, then high (values 0..16).
#[target_feature(enable = "avx2")]
#[inline]
fn nibbles<const N: usize>(b: &[u8; N], off: usize) -> __m256i {
    assert!(off + 16 <= N);
    // SAFETY: bytes off..off + 16 lie inside `b` (checked above).
    let x = unsafe { _mm_loadu_si128(b.as_ptr().add(off).cast()) };
    let both = _mm256_inserti128_si256(_mm256_castsi128_si256(x), _mm_srli_epi16(x, 4), 1);
    _mm256_and_si256(both, _mm256_set1_epi8(0xF))
}

/// Writes the values and the f16 pair `d`, `m` at `b[0..4]` (F16C converts exactly, like `half`).
#[target_feature(enable = "avx2,f16c")]
#[inline]
fn store<const N: usize>(o: &mut Decoded32, q: __m256i, b: &[u8; N]) {
    // SAFETY: `o.q` is 32 writable bytes.
    unsafe { _mm256_storeu_si256(o.q.as_mut_ptr().cast(), q) };
    let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(u32_at(b, 0) as i32));
    o.d = _mm_cvtss_f32(dm);
    o.m = _mm_cvtss_f32(_mm_movehdup_ps(dm));
}

fn decode_q4_1_avx2(row: &[u8], out: &mut [Decoded32]) {
    // SAFETY: returned by `decoder` only for `Isa::Avx2` or above, which the CPU has.
    unsafe { q4_1_avx2(row.as_chunks::<Q4_1>().0, out) }
}

#[target_feature(enable = "avx2,f16c")]
fn q4_1_avx2(blocks: &[[u8; Q4_1]], out: &mut [Decoded32]) {
    for (b, o) in blocks.iter().zip(out.iter_mut()) {
        store(o, nibbles(b, 4), b);
    }
}

fn decode_q5_1_avx2(row: &[u8], out: &mut [Decoded32]) {
    // SAFETY: returned by `decoder` only for `Isa::Avx2` or above, which the CPU has.
    unsafe { q5_1_avx2(row.as_chunks::<Q5_1>().0, out) }
}

/// Byte `j` = 0x10 where bit `j` of `qh` is set, else 0.
#[target_feature(enable = "avx2")]
#[inline]
fn fifth_bits(qh: u32) -> __m256i {
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(qh as i32),
        _mm256_setr_epi64x(
            0,
            0x0101_0101_0101_0101,
            0x0202_0202_0202_0202,
            0x0303_0303_0303_0303,
        ),
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

#[target_feature(enable = "avx2,f16c")]
fn q5_1_avx2(blocks: &[[u8; Q5_1]], out: &mut [Decoded32]) {
    for (b, o) in blocks.iter().zip(out.iter_mut()) {
        let q = _mm256_or_si256(nibbles(b, 8), fifth_bits(u32_at(b, 4)));
        store(o, q, b);
    }
}
