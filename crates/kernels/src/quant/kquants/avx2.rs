//! AVX2 decoders for Q2_K, Q3_K and Q5_K: a few shifts and masks per 32 values, bit-identical to
//! the scalar decoders in `mod.rs`. Each public function is safe and dispatched only where the CPU
//! has AVX2 and F16C (`Isa::Avx2` or above); blocks are read as byte arrays of ggml's block size.

use crate::quant::decoded::DecodedK;
use std::arch::x86_64::*;

const Q2K: usize = 84;
const Q3K: usize = 110;
const Q5K: usize = 176;

const _: () = {
    use std::mem::size_of;
    assert!(size_of::<crate::blocks::BlockQ2K>() == Q2K);
    assert!(size_of::<crate::blocks::BlockQ3K>() == Q3K);
    assert!(size_of::<crate::blocks::BlockQ5K>() == Q5K);
};

/// 16 bytes of `b` from `off`.
#[target_feature(enable = "avx2")]
#[inline]
fn ld128<const N: usize>(b: &[u8; N], off: usize) -> __m128i {
    assert!(off + 16 <= N);
    // SAFETY: bytes off..off + 16 lie inside `b` (checked above).
    unsafe { _mm_loadu_si128(b.as_ptr().add(off).cast()) }
}

/// 32 bytes of `b` from `off`.
#[target_feature(enable = "avx2")]
#[inline]
fn ld256<const N: usize>(b: &[u8; N], off: usize) -> __m256i {
    assert!(off + 32 <= N);
    // SAFETY: bytes off..off + 32 lie inside `b` (checked above).
    unsafe { _mm256_loadu_si256(b.as_ptr().add(off).cast()) }
}

/// Little-endian u32 of `b` at `off`.
#[inline]
fn u32_at<const N: usize>(b: &[u8; N], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

#[target_feature(enable = "avx2")]
#[inline]
fn st_q(dst: &mut [i8; 32], v: __m256i) {
    // SAFETY: `dst` is 32 writable bytes.
    unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), v) }
}

#[target_feature(enable = "avx2")]
#[inline]
fn st_i16(dst: &mut [i16; 16], v: __m256i) {
    // SAFETY: `dst` is 32 writable bytes.
    unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), v) }
}

/// The two f16 at `b[off..off + 4]` as f32 (F16C converts exactly, like `half`).
#[target_feature(enable = "avx2,f16c")]
#[inline]
fn two_f16<const N: usize>(b: &[u8; N], off: usize) -> (f32, f32) {
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(u32_at(b, off) as i32));
    (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
}

/// The 32-byte runs of a decoded block's values.
#[inline]
fn runs(o: &mut DecodedK) -> &mut [[i8; 32]] {
    o.q.as_chunks_mut::<32>().0
}

/// The 16 signed Q3_K scales from the 12 bytes at `b[off..]`, as bytes (ggml's `kmask` shuffle).
#[inline]
fn q3k_scales_x4<const N: usize>(b: &[u8; N], off: usize) -> [u32; 4] {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let (a0, a1, a2) = (u32_at(b, off), u32_at(b, off + 4), u32_at(b, off + 8));
    [
        (a0 & KMASK2) | ((a2 & KMASK1) << 4),
        (a1 & KMASK2) | (((a2 >> 2) & KMASK1) << 4),
        ((a0 >> 4) & KMASK2) | (((a2 >> 4) & KMASK1) << 4),
        ((a1 >> 4) & KMASK2) | (((a2 >> 6) & KMASK1) << 4),
    ]
}

/// The 8 six-bit scales (bytes 0..8) and mins (bytes 8..16) of Q4_K / Q5_K from the 12 bytes at
/// `b[off..]` (ggml's `utmp` shuffle; same values as `quant::kquants::scale_min_k4`).
#[inline]
fn k4_scales_mins<const N: usize>(b: &[u8; N], off: usize) -> [u32; 4] {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    let (u0, u1, u2) = (u32_at(b, off), u32_at(b, off + 4), u32_at(b, off + 8));
    [
        u0 & KMASK1,
        (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4),
        u1 & KMASK1,
        ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4),
    ]
}

#[target_feature(enable = "avx2")]
#[inline]
fn set_u32x4(v: [u32; 4]) -> __m128i {
    _mm_setr_epi32(v[0] as i32, v[1] as i32, v[2] as i32, v[3] as i32)
}

/// Stores Q5_K scales and mins (8 each, bytes of `sm`) as 16 runs each.
#[target_feature(enable = "avx2")]
#[inline]
fn store_k4_scales(o: &mut DecodedK, sm: __m128i) {
    st_i16(&mut o.sc, _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(sm, sm)));
    st_i16(&mut o.m, _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm)));
}

pub(crate) fn decode_q2_k(row: &[u8], out: &mut [DecodedK]) {
    // SAFETY: dispatched only where the CPU has AVX2 and F16C.
    unsafe { q2_k(row.as_chunks::<Q2K>().0, out) }
}

#[target_feature(enable = "avx2,f16c")]
fn q2_k(blocks: &[[u8; Q2K]], out: &mut [DecodedK]) {
    let (m3, m4) = (_mm256_set1_epi8(3), _mm_set1_epi8(0xF));
    for (b, o) in blocks.iter().zip(out.iter_mut()) {
        let sc = ld128(b, 0);
        st_i16(&mut o.sc, _mm256_cvtepu8_epi16(_mm_and_si128(sc, m4)));
        let mins = _mm_and_si128(_mm_srli_epi16(sc, 4), m4);
        st_i16(&mut o.m, _mm256_cvtepu8_epi16(mins));
        (o.d, o.dmin) = two_f16(b, 80);
        let r = runs(o);
        for h in 0..2 {
            let q = ld256(b, 16 + 32 * h);
            st_q(&mut r[4 * h], _mm256_and_si256(q, m3));
            st_q(
                &mut r[4 * h + 1],
                _mm256_and_si256(_mm256_srli_epi16(q, 2), m3),
            );
            st_q(
                &mut r[4 * h + 2],
                _mm256_and_si256(_mm256_srli_epi16(q, 4), m3),
            );
            st_q(
                &mut r[4 * h + 3],
                _mm256_and_si256(_mm256_srli_epi16(q, 6), m3),
            );
        }
    }
}

pub(crate) fn decode_q3_k(row: &[u8], out: &mut [DecodedK]) {
    // SAFETY: dispatched only where the CPU has AVX2 and F16C.
    unsafe { q3_k(row.as_chunks::<Q3K>().0, out) }
}

/// `hmask` with bit `b` of each byte moved to bit 2, for b = 0..8 (16-bit shifts keep each
/// byte's bit 2 inside that byte for these counts).
#[target_feature(enable = "avx2")]
#[inline]
fn hmask_bits_at_2(h: __m256i) -> [__m256i; 8] {
    [
        _mm256_slli_epi16(h, 2),
        _mm256_slli_epi16(h, 1),
        h,
        _mm256_srli_epi16(h, 1),
        _mm256_srli_epi16(h, 2),
        _mm256_srli_epi16(h, 3),
        _mm256_srli_epi16(h, 4),
        _mm256_srli_epi16(h, 5),
    ]
}

#[target_feature(enable = "avx2,f16c")]
fn q3_k(blocks: &[[u8; Q3K]], out: &mut [DecodedK]) {
    let (m3, c4) = (_mm256_set1_epi8(3), _mm256_set1_epi8(4));
    let c32 = _mm_set1_epi8(32);
    for (b, o) in blocks.iter().zip(out.iter_mut()) {
        let sc = _mm_sub_epi8(set_u32x4(q3k_scales_x4(b, 96)), c32);
        st_i16(&mut o.sc, _mm256_cvtepi8_epi16(sc));
        st_i16(&mut o.m, _mm256_setzero_si256());
        o.d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
            u16::from_le_bytes([b[108], b[109]]) as i32,
        )));
        o.dmin = 0.0;
        let hb = hmask_bits_at_2(ld256(b, 0));
        let r = runs(o);
        for h in 0..2 {
            let q = ld256(b, 32 + 32 * h);
            let lo = [
                q,
                _mm256_srli_epi16(q, 2),
                _mm256_srli_epi16(q, 4),
                _mm256_srli_epi16(q, 6),
            ];
            for s in 0..4 {
                let v = _mm256_and_si256(lo[s], m3);
                let minus4 = _mm256_andnot_si256(hb[4 * h + s], c4);
                st_q(&mut r[4 * h + s], _mm256_sub_epi8(v, minus4));
            }
        }
    }
}

pub(crate) fn decode_q5_k(row: &[u8], out: &mut [DecodedK]) {
    // SAFETY: dispatched only where the CPU has AVX2 and F16C.
    unsafe { q5_k(row.as_chunks::<Q5K>().0, out) }
}

/// `qh` with bit `b` of each byte moved to bit 4, for b = 0..8.
#[target_feature(enable = "avx2")]
#[inline]
fn qh_bits_at_4(h: __m256i) -> [__m256i; 8] {
    [
        _mm256_slli_epi16(h, 4),
        _mm256_slli_epi16(h, 3),
        _mm256_slli_epi16(h, 2),
        _mm256_slli_epi16(h, 1),
        h,
        _mm256_srli_epi16(h, 1),
        _mm256_srli_epi16(h, 2),
        _mm256_srli_epi16(h, 3),
    ]
}

#[target_feature(enable = "avx2,f16c")]
fn q5_k(blocks: &[[u8; Q5K]], out: &mut [DecodedK]) {
    let (m4, c16) = (_mm256_set1_epi8(0xF), _mm256_set1_epi8(16));
    for (b, o) in blocks.iter().zip(out.iter_mut()) {
        (o.d, o.dmin) = two_f16(b, 0);
        store_k4_scales(o, set_u32x4(k4_scales_mins(b, 4)));
        let hb = qh_bits_at_4(ld256(b, 16));
        let r = runs(o);
        for j in 0..4 {
            let q = ld256(b, 48 + 32 * j);
            let lo = _mm256_and_si256(q, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            let h1 = _mm256_and_si256(hb[2 * j], c16);
            let h2 = _mm256_and_si256(hb[2 * j + 1], c16);
            st_q(&mut r[2 * j], _mm256_or_si256(lo, h1));
            st_q(&mut r[2 * j + 1], _mm256_or_si256(hi, h2));
        }
    }
}
