//! AVX2 decoders of IQ3_XXS / IQ3_S: per 32 values, 8 scalar loads of 4-byte grid points (faster
//! than `vpgatherdd` on the machines measured) and the 32 sign bits spread to byte masks.

use super::grids::{IQ3S_GRID, IQ3XXS_GRID};
use super::{BlockIq3S, BlockIq3Xxs};
use crate::quant::decoded::DecodedK;
use crate::view::blocks_of;
use std::arch::x86_64::*;

/// The 32 grid values `g` negated where bit `v` of `signs` is set.
#[target_feature(enable = "avx2")]
#[inline]
fn apply_signs(g: __m256i, signs: u32) -> __m256i {
    // Byte v of `s` is byte v / 8 of `signs` (each lane holds all four bytes).
    let spread = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let bits = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
    let s = _mm256_shuffle_epi8(_mm256_set1_epi32(signs as i32), spread);
    let m = _mm256_cmpeq_epi8(_mm256_and_si256(s, bits), bits);
    _mm256_sub_epi8(_mm256_xor_si256(g, m), m)
}

pub(crate) fn decode_iq3_xxs(row: &[u8], out: &mut [DecodedK]) {
    // SAFETY: dispatched only where the CPU has AVX2 (`Isa::Avx2` or above).
    unsafe { iq3_xxs(&blocks_of::<BlockIq3Xxs>(row), out) }
}

#[target_feature(enable = "avx2")]
fn iq3_xxs(x: &[BlockIq3Xxs], out: &mut [DecodedK]) {
    for (x, o) in x.iter().zip(out.iter_mut()) {
        for g in 0..8 {
            let i = &x.qs[8 * g..8 * g + 8];
            let t = |k: usize| IQ3XXS_GRID[i[k] as usize] as i32;
            let p = _mm256_setr_epi32(t(0), t(1), t(2), t(3), t(4), t(5), t(6), t(7));
            let q = apply_signs(p, x.signs(g));
            // SAFETY: values 32g..32g + 32 of the 256 of `o.q`; the store is unaligned.
            unsafe { _mm256_storeu_si256(o.q.as_mut_ptr().add(32 * g).cast(), q) };
        }
        o.sc = x.run_scales();
        o.m = [0; 16];
        o.d = x.d.to_f32() * 0.25;
        o.dmin = 0.0;
    }
}

pub(crate) fn decode_iq3_s(row: &[u8], out: &mut [DecodedK]) {
    // SAFETY: dispatched only where the CPU has AVX2 (`Isa::Avx2` or above).
    unsafe { iq3_s(&blocks_of::<BlockIq3S>(row), out) }
}

#[target_feature(enable = "avx2")]
fn iq3_s(x: &[BlockIq3S], out: &mut [DecodedK]) {
    for (x, o) in x.iter().zip(out.iter_mut()) {
        for g in 0..8 {
            let t = |k: usize| IQ3S_GRID[x.index(g, k)] as i32;
            let p = _mm256_setr_epi32(t(0), t(1), t(2), t(3), t(4), t(5), t(6), t(7));
            let q = apply_signs(p, x.signs(g));
            // SAFETY: values 32g..32g + 32 of the 256 of `o.q`; the store is unaligned.
            unsafe { _mm256_storeu_si256(o.q.as_mut_ptr().add(32 * g).cast(), q) };
        }
        o.sc = x.run_scales();
        o.m = [0; 16];
        o.d = x.d.to_f32();
        o.dmin = 0.0;
    }
}
