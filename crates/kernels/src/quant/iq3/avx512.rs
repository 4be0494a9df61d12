//! AVX-512 decoders of IQ3_XXS / IQ3_S: per 64 values, 16 scalar loads of 4-byte grid points
//! (faster than `vpgatherdd` on the machines measured) and one masked negation by the 64 sign bits.

use super::grids::{IQ3S_GRID, IQ3XXS_GRID};
use super::{BlockIq3S, BlockIq3Xxs};
use crate::quant::decoded::DecodedK;
use crate::view::blocks_of;
use std::arch::x86_64::*;

/// The 16 grid points `t(0..16)`, negated byte by byte where `signs` has the bit, stored at `q`.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn put_points(t: impl Fn(usize) -> i32, signs: u64, q: &mut [i8; 64]) {
    let p = _mm512_setr_epi32(
        t(0),
        t(1),
        t(2),
        t(3),
        t(4),
        t(5),
        t(6),
        t(7),
        t(8),
        t(9),
        t(10),
        t(11),
        t(12),
        t(13),
        t(14),
        t(15),
    );
    let v = _mm512_mask_sub_epi8(p, signs, _mm512_setzero_si512(), p);
    // SAFETY: `q` holds 64 bytes; the store is unaligned.
    unsafe { _mm512_storeu_si512(q.as_mut_ptr().cast(), v) };
}

/// The 64 values starting at `64p` of a decoded super-block.
#[inline(always)]
fn quarter(o: &mut DecodedK, p: usize) -> &mut [i8; 64] {
    (&mut o.q[64 * p..64 * p + 64]).try_into().unwrap()
}

pub(crate) fn decode_iq3_xxs(row: &[u8], out: &mut [DecodedK]) {
    // SAFETY: dispatched only where the CPU has AVX-512 F/BW (`Isa::Avx512Vnni`).
    unsafe { iq3_xxs(&blocks_of::<BlockIq3Xxs>(row), out) }
}

#[target_feature(enable = "avx512f,avx512bw")]
fn iq3_xxs(x: &[BlockIq3Xxs], out: &mut [DecodedK]) {
    for (x, o) in x.iter().zip(out.iter_mut()) {
        for p in 0..4 {
            let signs = x.signs(2 * p) as u64 | (x.signs(2 * p + 1) as u64) << 32;
            let i = &x.qs[16 * p..16 * p + 16];
            put_points(|k| IQ3XXS_GRID[i[k] as usize] as i32, signs, quarter(o, p));
        }
        o.sc = x.run_scales();
        o.m = [0; 16];
        o.d = x.d.to_f32() * 0.25;
        o.dmin = 0.0;
    }
}

pub(crate) fn decode_iq3_s(row: &[u8], out: &mut [DecodedK]) {
    // SAFETY: dispatched only where the CPU has AVX-512 F/BW (`Isa::Avx512Vnni`).
    unsafe { iq3_s(&blocks_of::<BlockIq3S>(row), out) }
}

#[target_feature(enable = "avx512f,avx512bw")]
fn iq3_s(x: &[BlockIq3S], out: &mut [DecodedK]) {
    for (x, o) in x.iter().zip(out.iter_mut()) {
        for p in 0..4 {
            let signs = u64::from_le_bytes(x.signs[8 * p..8 * p + 8].try_into().unwrap());
            let t = |k: usize| IQ3S_GRID[x.index(2 * p + k / 8, k % 8)] as i32;
            put_points(t, signs, quarter(o, p));
        }
        o.sc = x.run_scales();
        o.m = [0; 16];
        o.d = x.d.to_f32();
        o.dmin = 0.0;
    }
}
