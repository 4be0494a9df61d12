//! AVX2 decoders of IQ4_NL / IQ4_XS: the nibbles index `KVALUES` with one `vpshufb` per 32 values.

use super::{BlockIq4Nl, BlockIq4Xs, KVALUES};
use crate::quant::decoded::{Decoded32, DecodedK};
use crate::view::blocks_of;
use std::arch::x86_64::*;

/// `KVALUES` in both 128-bit lanes, for `vpshufb`.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn kvalues_256() -> __m256i {
    // SAFETY: a 16-byte unaligned read of a 16-byte array.
    _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(KVALUES.as_ptr().cast()) })
}

/// The 32 values of one 16-byte nibble group, low nibbles (values 0..16) in the low lane.
#[target_feature(enable = "avx2")]
#[inline]
fn group(kv: __m256i, qs: &[u8; 16]) -> __m256i {
    // SAFETY: a 16-byte unaligned read of a 16-byte array.
    let x = unsafe { _mm_loadu_si128(qs.as_ptr().cast()) };
    let v = _mm256_set_m128i(_mm_srli_epi16(x, 4), x);
    _mm256_shuffle_epi8(kv, _mm256_and_si256(v, _mm256_set1_epi8(0xF)))
}

pub(crate) fn decode_iq4_nl(row: &[u8], out: &mut [Decoded32]) {
    // SAFETY: dispatched only where the CPU has AVX2 (`Isa::Avx2` or above).
    unsafe { iq4_nl(&blocks_of::<BlockIq4Nl>(row), out) }
}

#[target_feature(enable = "avx2")]
fn iq4_nl(x: &[BlockIq4Nl], out: &mut [Decoded32]) {
    let kv = kvalues_256();
    for (x, o) in x.iter().zip(out.iter_mut()) {
        // SAFETY: `o.q` holds 32 bytes; the store is unaligned.
        unsafe { _mm256_storeu_si256(o.q.as_mut_ptr().cast(), group(kv, &x.qs)) };
        o.d = x.d.to_f32();
        o.m = 0.0;
    }
}

pub(crate) fn decode_iq4_xs(row: &[u8], out: &mut [DecodedK]) {
    // SAFETY: dispatched only where the CPU has AVX2 (`Isa::Avx2` or above).
    unsafe { iq4_xs(&blocks_of::<BlockIq4Xs>(row), out) }
}

#[target_feature(enable = "avx2")]
fn iq4_xs(x: &[BlockIq4Xs], out: &mut [DecodedK]) {
    let kv = kvalues_256();
    let m4 = _mm256_set1_epi8(0xF);
    for (x, o) in x.iter().zip(out.iter_mut()) {
        for p in 0..4 {
            // SAFETY: bytes 32p..32p + 32 of the 128 of `qs` (two groups), and values
            // 64p..64p + 64 of the 256 of `o.q`; loads and stores are unaligned.
            unsafe {
                let b = _mm256_loadu_si256(x.qs.as_ptr().add(32 * p).cast());
                let lo = _mm256_shuffle_epi8(kv, _mm256_and_si256(b, m4));
                let hi = _mm256_shuffle_epi8(kv, _mm256_and_si256(_mm256_srli_epi16(b, 4), m4));
                let q = o.q.as_mut_ptr().add(64 * p);
                _mm256_storeu_si256(q.cast(), _mm256_permute2x128_si256(lo, hi, 0x20));
                _mm256_storeu_si256(q.add(32).cast(), _mm256_permute2x128_si256(lo, hi, 0x31));
            }
        }
        o.sc = run_scales(x);
        o.m = [0; 16];
        o.d = x.d.to_f32();
        o.dmin = 0.0;
    }
}

/// [`BlockIq4Xs::run_scales`] with vector shifts: run `s` takes nibble `s / 2` of the 4
/// `scales_l` bytes and bit pair `s / 2` of `scales_h`.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn run_scales(x: &BlockIq4Xs) -> [i16; 16] {
    let l = u32::from_le_bytes(x.scales_l) as i32;
    let h = x.scales_h as i32;
    // Group g = s / 2: low nibble at bit 4g of `l`, high pair at bit 2g of `h`.
    let lsh = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    let hsh = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    let lo = _mm256_and_si256(
        _mm256_srlv_epi32(_mm256_set1_epi32(l), lsh),
        _mm256_set1_epi32(0xF),
    );
    let hi = _mm256_and_si256(
        _mm256_srlv_epi32(_mm256_set1_epi32(h), hsh),
        _mm256_set1_epi32(3),
    );
    let ls = _mm256_sub_epi32(
        _mm256_or_si256(lo, _mm256_slli_epi32(hi, 4)),
        _mm256_set1_epi32(32),
    );
    // Each 32-bit group scale becomes two equal i16 runs: low 16 bits of `ls`, twice.
    let low = _mm256_and_si256(ls, _mm256_set1_epi32(0xFFFF));
    let both = _mm256_or_si256(low, _mm256_slli_epi32(ls, 16));
    let mut sc = [0i16; 16];
    // SAFETY: `sc` holds 32 bytes; the store is unaligned.
    unsafe { _mm256_storeu_si256(sc.as_mut_ptr().cast(), both) };
    sc
}
