//! AVX-512 (F/BW/VL) decoders for Q2_K, Q3_K and Q5_K: each 32-byte group of packed bits is
//! broadcast to both halves of a 512-bit register and shifted by a different count per half
//! (`vpsrlvw`), so one shift and one mask give 64 values; the third / fifth bits are applied
//! with byte mask registers (`vptestmb` + a masked add). Bit-identical to the scalar decoders.

use super::avx2::{
    k4_scales_mins, ld128, ld256, q3k_scales_x4, set_u32x4, st_i16, store_k4_scales, two_f16, Q2K,
    Q3K, Q5K,
};
use crate::quant::decoded::DecodedK;
use std::arch::x86_64::*;

/// 32 bytes of `b` from `off`, in both halves of a 512-bit register.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
#[inline]
fn ld256x2<const N: usize>(b: &[u8; N], off: usize) -> __m512i {
    _mm512_broadcast_i64x4(ld256(b, off))
}

/// `lo` in the low 256 bits, `hi` in the high 256 (both as 16-bit lanes).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
#[inline]
fn halves16(lo: i16, hi: i16) -> __m512i {
    _mm512_inserti64x4(_mm512_set1_epi16(lo), _mm256_set1_epi16(hi), 1)
}

/// Same for bytes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
#[inline]
fn halves8(lo: u8, hi: u8) -> __m512i {
    _mm512_inserti64x4(_mm512_set1_epi8(lo as i8), _mm256_set1_epi8(hi as i8), 1)
}

/// Stores 64 values as runs `2i` and `2i + 1` of `o`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
#[inline]
fn st64(o: &mut DecodedK, i: usize, v: __m512i) {
    let dst: &mut [i8; 64] = &mut o.q.as_chunks_mut::<64>().0[i];
    // SAFETY: `dst` is 64 writable bytes.
    unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast(), v) }
}

pub(crate) fn decode_q2_k(row: &[u8], out: &mut [DecodedK]) {
    // SAFETY: dispatched only where the CPU has AVX-512 F/BW/VL (with AVX2 and F16C).
    unsafe { q2_k(row.as_chunks::<Q2K>().0, out) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
fn q2_k(blocks: &[[u8; Q2K]], out: &mut [DecodedK]) {
    let (m3, m4) = (_mm512_set1_epi8(3), _mm_set1_epi8(0xF));
    let shifts = [halves16(0, 2), halves16(4, 6)];
    for (b, o) in blocks.iter().zip(out.iter_mut()) {
        let sc = ld128(b, 0);
        st_i16(&mut o.sc, _mm256_cvtepu8_epi16(_mm_and_si128(sc, m4)));
        let mins = _mm_and_si128(_mm_srli_epi16(sc, 4), m4);
        st_i16(&mut o.m, _mm256_cvtepu8_epi16(mins));
        (o.d, o.dmin) = two_f16(b, 80);
        for h in 0..2 {
            let q = ld256x2(b, 16 + 32 * h);
            for p in 0..2 {
                let v = _mm512_and_si512(_mm512_srlv_epi16(q, shifts[p]), m3);
                st64(o, 2 * h + p, v);
            }
        }
    }
}

pub(crate) fn decode_q3_k(row: &[u8], out: &mut [DecodedK]) {
    // SAFETY: dispatched only where the CPU has AVX-512 F/BW/VL (with AVX2 and F16C).
    unsafe { q3_k(row.as_chunks::<Q3K>().0, out) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
fn q3_k(blocks: &[[u8; Q3K]], out: &mut [DecodedK]) {
    let (m3, c4) = (_mm512_set1_epi8(3), _mm512_set1_epi8(4));
    let c32 = _mm_set1_epi8(32);
    let shifts = [halves16(0, 2), halves16(4, 6)];
    // Run pair `i` (values 64i..64i + 64) takes hmask bits 2i and 2i + 1.
    let bits: [__m512i; 4] = std::array::from_fn(|i| halves8(1 << (2 * i), 2 << (2 * i)));
    for (b, o) in blocks.iter().zip(out.iter_mut()) {
        let sc = _mm_sub_epi8(set_u32x4(q3k_scales_x4(b, 96)), c32);
        st_i16(&mut o.sc, _mm256_cvtepi8_epi16(sc));
        st_i16(&mut o.m, _mm256_setzero_si256());
        o.d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
            u16::from_le_bytes([b[108], b[109]]) as i32,
        )));
        o.dmin = 0.0;
        let hm = ld256x2(b, 0);
        for h in 0..2 {
            let q = ld256x2(b, 32 + 32 * h);
            for p in 0..2 {
                let v = _mm512_and_si512(_mm512_srlv_epi16(q, shifts[p]), m3);
                let clear = _mm512_testn_epi8_mask(hm, bits[2 * h + p]);
                st64(o, 2 * h + p, _mm512_mask_sub_epi8(v, clear, v, c4));
            }
        }
    }
}

pub(crate) fn decode_q5_k(row: &[u8], out: &mut [DecodedK]) {
    // SAFETY: dispatched only where the CPU has AVX-512 F/BW/VL (with AVX2 and F16C).
    unsafe { q5_k(row.as_chunks::<Q5K>().0, out) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
fn q5_k(blocks: &[[u8; Q5K]], out: &mut [DecodedK]) {
    let (m4, c16) = (_mm512_set1_epi8(0xF), _mm512_set1_epi8(16));
    let shifts = halves16(0, 4);
    // Chunk `j` (values 64j..64j + 64) takes qh bits 2j and 2j + 1.
    let bits: [__m512i; 4] = std::array::from_fn(|j| halves8(1 << (2 * j), 2 << (2 * j)));
    for (b, o) in blocks.iter().zip(out.iter_mut()) {
        (o.d, o.dmin) = two_f16(b, 0);
        store_k4_scales(o, set_u32x4(k4_scales_mins(b, 4)));
        let qh = ld256x2(b, 16);
        for j in 0..4 {
            let q = ld256x2(b, 48 + 32 * j);
            let v = _mm512_and_si512(_mm512_srlv_epi16(q, shifts), m4);
            let set = _mm512_test_epi8_mask(qh, bits[j]);
            st64(o, j, _mm512_mask_add_epi8(v, set, v, c16));
        }
    }
}
