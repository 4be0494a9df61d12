//! The packed (row-interleaved) records of the legacy types, their packing, and their
//! [`Layout`]s for the packed GEMM (`crate::packed`; tiles in `gemm512`, `gemm256`).
//!
//! Record layout of one block of a group of 16 rows (missing rows of the last group are zero):
//!
//! * Q4_0 (288 bytes): 4 vectors of nibbles: vector `v`, lane `r`, byte `j` holds value `4v + j`
//!   (low nibble) and `16 + 4v + j` (high nibble) of row `r`, unsigned (`q + 8` as stored); then
//!   the 16 scales (f16).
//! * Q5_0 (352 bytes): the Q4_0 nibbles of the low 4 bits; one vector of fifth bits: lane `r`,
//!   byte `j`, bit `g` is bit 4 of value `4g + j` (`g < 4`) or `16 + 4(g - 4) + j`; the scales.
//! * Q4_1 (320 bytes, AVX-512 only): the Q4_0 nibbles of `q` (no offset); the 16 `d`; the 16
//!   `m` (f16).
//! * Q5_1 (384 bytes): the Q5_0 nibbles and fifth bits of `q` (unsigned `0..=31`, no offset); the
//!   16 `d` (at 320); the 16 `m` (at 352).
//! * Q8_0 (544 bytes): 8 vectors: vector `g`, lane `r` holds values `4g..4g + 4` of row `r` plus
//!   128; the scales.

use super::blocks::*;
use crate::packed::{lane, put_f16, put_fifth_bits, put_ggml_nibbles, put_nibbles, Layout, PackFn};
use crate::types::{GgmlType, QK};

/// The packed layout of a legacy type, if it has one.
pub(crate) fn layout(ty: GgmlType) -> Option<Layout> {
    #[cfg(target_arch = "x86_64")]
    {
        use super::gemm512::{AmxQ32, AmxQ4_1, Q4_0, Q5_0, Q8_0};
        use super::{gemm256 as g2, gemm512 as g5};
        use crate::packed::gemm_amx::{gemm, AmxGemm};
        use crate::packed::{gemm256::tiles256, gemm512::tiles512, packer};
        let amx: Option<AmxGemm> = match ty {
            GgmlType::Q4_0 => Some(gemm::<AmxQ32<Q4_0>>),
            GgmlType::Q5_0 => Some(gemm::<AmxQ32<Q5_0>>),
            GgmlType::Q8_0 => Some(gemm::<AmxQ32<Q8_0>>),
            GgmlType::Q4_1 => Some(gemm::<AmxQ4_1<false>>),
            GgmlType::Q5_1 => Some(gemm::<AmxQ4_1<true>>),
            _ => None,
        };
        let (record_bytes, pack, avx512, avx2): (usize, PackFn, _, _) = match ty {
            GgmlType::Q4_0 => (
                288,
                packer!(BlockQ4_0, pack_q4_0),
                tiles512!(g5::tile_q32, Q4_0),
                Some(tiles256!(g2::tile_q32, Q4_0)),
            ),
            GgmlType::Q5_0 => (
                352,
                packer!(BlockQ5_0, pack_q5_0),
                tiles512!(g5::tile_q32, Q5_0),
                Some(tiles256!(g2::tile_q32, Q5_0)),
            ),
            GgmlType::Q8_0 => (
                544,
                packer!(BlockQ8_0, pack_q8_0),
                tiles512!(g5::tile_q32, Q8_0),
                Some(tiles256!(g2::tile_q32, Q8_0)),
            ),
            // No AVX2 tiles: below AVX-512, Q4_1 is a decoded type.
            GgmlType::Q4_1 => (
                320,
                packer!(BlockQ4_1, pack_q4_1),
                tiles512!(g5::tile_q4_1, false),
                None,
            ),
            GgmlType::Q5_1 => (
                384,
                packer!(BlockQ5_1, pack_q5_1),
                tiles512!(g5::tile_q4_1, true),
                Some(tiles256!(g2::tile_q5_1)),
            ),
            _ => return None,
        };
        Some(Layout {
            record_bytes,
            pack,
            avx512,
            avx2,
            amx,
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ty;
        None
    }
}

#[inline(always)]
fn pack_q4_0(x: &BlockQ4_0, i: usize, rec: &mut [u8]) {
    put_ggml_nibbles(rec, 0, i, &x.qs);
    put_f16(rec, 256, i, x.d);
}

#[inline(always)]
fn pack_q4_1(x: &BlockQ4_1, i: usize, rec: &mut [u8]) {
    put_ggml_nibbles(rec, 0, i, &x.qs);
    put_f16(rec, 256, i, x.d);
    put_f16(rec, 288, i, x.m);
}

#[inline(always)]
fn pack_q5_0(x: &BlockQ5_0, i: usize, rec: &mut [u8]) {
    let qh = u32::from_le_bytes(x.qh);
    let mut u = [0u8; QK];
    for j in 0..QK / 2 {
        u[j] = (x.qs[j] & 0xF) | ((((qh >> j) << 4) & 0x10) as u8);
        u[j + QK / 2] = (x.qs[j] >> 4) | (((qh >> (j + 12)) & 0x10) as u8);
    }
    put_nibbles(rec, 0, i, &u);
    for j in 0..4 {
        let mut h = 0u8;
        for g in 0..8 {
            let k = if g < 4 {
                4 * g + j
            } else {
                16 + 4 * (g - 4) + j
            };
            h |= ((u[k] >> 4) & 1) << g;
        }
        *lane(rec, 256, i, j) = h;
    }
    put_f16(rec, 320, i, x.d);
}

#[inline(always)]
fn pack_q5_1(x: &BlockQ5_1, i: usize, rec: &mut [u8]) {
    let qh = u32::from_le_bytes(x.qh);
    let mut u = [0u8; QK];
    for j in 0..QK / 2 {
        u[j] = (x.qs[j] & 0xF) | ((((qh >> j) << 4) & 0x10) as u8);
        u[j + QK / 2] = (x.qs[j] >> 4) | (((qh >> (j + 12)) & 0x10) as u8);
    }
    put_nibbles(rec, 0, i, &u);
    put_fifth_bits(rec, 256, i, &u);
    put_f16(rec, 320, i, x.d);
    put_f16(rec, 352, i, x.m);
}

#[inline(always)]
fn pack_q8_0(x: &BlockQ8_0, i: usize, rec: &mut [u8]) {
    for g in 0..8 {
        for j in 0..4 {
            *lane(rec, 64 * g, i, j) = (x.qs[4 * g + j] as u8) ^ 0x80;
        }
    }
    put_f16(rec, 512, i, x.d);
}
