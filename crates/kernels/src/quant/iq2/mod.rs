//! IQ2_XXS, IQ2_XS and IQ2_S: 256 values in 32 groups of 8, each group a row of a fixed grid
//! (bytes 8, 25 or 43) with 8 signs, scaled by `d * (0.5 + s) * 0.25` for a 4-bit `s` per 32
//! values (IQ2_XXS) or per 16 (IQ2_XS, IQ2_S).
//!
//! Decoded: `q` is the signed grid byte, `sc = 2 * s + 1`, `d` is the block's `d / 8` (a power of
//! two: exact), no mins; ggml's dot product sums the same integers `sc * Σ q * a` and multiplies
//! by `0.125` at the end instead.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod dot_avx512;
mod grids;

use super::decoded::{DecodedK, Decoder};
use crate::cpu::Isa;
use crate::types::{GgmlType, QK_K};
use crate::view::blocks_of;
use bytemuck::{Pod, Zeroable};
pub(super) use grids::KSIGNS_IQ2XS;
use grids::{IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID};
use half::f16;

/// 256 values: 32 groups of 8; per 32 values two little-endian u32 words (`qs[4i..4i + 4]`): the
/// first holds the 4 grid indices (a byte each), the second 4 × 7 sign bits (`ksigns_iq2xs` adds
/// the eighth, an even parity) and the 4-bit scale in its top bits.
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
#[repr(C)]
pub struct BlockIq2Xxs {
    pub d: f16,
    pub qs: [u16; QK_K / 8],
}

/// 256 values: per group of 8 a u16 with a 9-bit grid index and 7 sign bits; a 4-bit scale per 16
/// values (low nibble of `scales[i]` for values 32i..32i + 16, high nibble for the next 16).
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
#[repr(C)]
pub struct BlockIq2Xs {
    pub d: f16,
    pub qs: [u16; QK_K / 8],
    pub scales: [u8; QK_K / 32],
}

/// 256 values: `qs[0..32]` the low 8 bits of the 32 grid indices (10 bits: 2 more per group in
/// `qh`), `qs[32..64]` a sign byte per group; scales as in IQ2_XS.
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
#[repr(C)]
pub struct BlockIq2S {
    pub d: f16,
    pub qs: [u8; QK_K / 4],
    pub qh: [u8; QK_K / 32],
    pub scales: [u8; QK_K / 32],
}

const _: () = {
    assert!(std::mem::size_of::<BlockIq2Xxs>() == 66);
    assert!(std::mem::size_of::<BlockIq2Xs>() == 74);
    assert!(std::mem::size_of::<BlockIq2S>() == 82);
};

/// A block type of this family, read 32 values (4 groups of 8) at a time.
pub(super) trait Iq2Block: Pod {
    const TYPE: GgmlType;
    /// The bits of the f16 super-block scale.
    fn d_bits(&self) -> u16;
    /// The 4-bit scale `s` of each run of 16 values.
    fn scales(&self) -> [u8; QK_K / 16];
    /// Values `32 * ib..32 * ib + 32`: each group's grid row (value `j` in byte `j`) and its sign
    /// byte (byte `l` of the u32 for group `l`; bit `j` set: value `j` is negative).
    fn group32(&self, ib: usize) -> ([u64; 4], u32);
}

/// Low and high nibbles of `scales[i]`: the scales of values 32i..32i + 16 and the next 16.
#[inline(always)]
fn nibble_scales(scales: &[u8; QK_K / 32]) -> [u8; QK_K / 16] {
    std::array::from_fn(|s| (scales[s / 2] >> (4 * (s % 2))) & 0xF)
}

impl Iq2Block for BlockIq2Xxs {
    const TYPE: GgmlType = GgmlType::IQ2_XXS;

    #[inline(always)]
    fn d_bits(&self) -> u16 {
        self.d.to_bits()
    }

    #[inline(always)]
    fn scales(&self) -> [u8; QK_K / 16] {
        std::array::from_fn(|s| (self.qs[4 * (s / 2) + 3] >> 12) as u8)
    }

    #[inline(always)]
    fn group32(&self, ib: usize) -> ([u64; 4], u32) {
        let q = &self.qs[4 * ib..4 * ib + 4];
        let idx = q[0] as u32 | (q[1] as u32) << 16;
        let aux = q[2] as u32 | (q[3] as u32) << 16;
        let grid = std::array::from_fn(|l| IQ2XXS_GRID[((idx >> (8 * l)) & 0xFF) as usize]);
        let mut signs = 0;
        for l in 0..4 {
            signs |= (KSIGNS_IQ2XS[((aux >> (7 * l)) & 127) as usize] as u32) << (8 * l);
        }
        (grid, signs)
    }
}

impl Iq2Block for BlockIq2Xs {
    const TYPE: GgmlType = GgmlType::IQ2_XS;

    #[inline(always)]
    fn d_bits(&self) -> u16 {
        self.d.to_bits()
    }

    #[inline(always)]
    fn scales(&self) -> [u8; QK_K / 16] {
        nibble_scales(&self.scales)
    }

    #[inline(always)]
    fn group32(&self, ib: usize) -> ([u64; 4], u32) {
        let q = &self.qs[4 * ib..4 * ib + 4];
        let grid = std::array::from_fn(|l| IQ2XS_GRID[(q[l] & 511) as usize]);
        let mut signs = 0;
        for (l, &q) in q.iter().enumerate() {
            signs |= (KSIGNS_IQ2XS[(q >> 9) as usize] as u32) << (8 * l);
        }
        (grid, signs)
    }
}

impl Iq2Block for BlockIq2S {
    const TYPE: GgmlType = GgmlType::IQ2_S;

    #[inline(always)]
    fn d_bits(&self) -> u16 {
        self.d.to_bits()
    }

    #[inline(always)]
    fn scales(&self) -> [u8; QK_K / 16] {
        nibble_scales(&self.scales)
    }

    #[inline(always)]
    fn group32(&self, ib: usize) -> ([u64; 4], u32) {
        let q = &self.qs[4 * ib..4 * ib + 4];
        let qh = self.qh[ib] as usize;
        let grid =
            std::array::from_fn(|l| IQ2S_GRID[q[l] as usize | ((qh << (8 - 2 * l)) & 0x300)]);
        let s = &self.qs[QK_K / 8 + 4 * ib..QK_K / 8 + 4 * ib + 4];
        (grid, u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
}

/// The family's row kernels at `isa`: at AVX-512 VNNI a fused decode-and-dot kernel per type, for
/// decode (one token), where decoding into a buffer first costs more than the dot product.
pub(super) fn rows(
    ty: GgmlType,
    isa: Isa,
) -> Option<(crate::simd::VecDotFn, Option<crate::simd::VecDot4Fn>)> {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Vnni {
        let dot: crate::simd::VecDotFn = match ty {
            GgmlType::IQ2_XXS => dot_avx512::dot_iq2_xxs,
            GgmlType::IQ2_XS => dot_avx512::dot::<BlockIq2Xs>,
            GgmlType::IQ2_S => dot_avx512::dot::<BlockIq2S>,
            _ => return None,
        };
        return Some((dot, None));
    }
    let _ = (ty, isa);
    None
}

pub(super) fn decoder(ty: GgmlType, isa: Isa) -> Option<Decoder> {
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2 {
        return Some(Decoder::K(match ty {
            GgmlType::IQ2_XXS => avx2::decode::<BlockIq2Xxs>,
            GgmlType::IQ2_XS => avx2::decode::<BlockIq2Xs>,
            GgmlType::IQ2_S => avx2::decode::<BlockIq2S>,
            _ => return None,
        }));
    }
    let _ = isa;
    Some(Decoder::K(match ty {
        GgmlType::IQ2_XXS => decode::<BlockIq2Xxs>,
        GgmlType::IQ2_XS => decode::<BlockIq2Xs>,
        GgmlType::IQ2_S => decode::<BlockIq2S>,
        _ => return None,
    }))
}

/// The super-block scale of `x` as f32.
#[inline(always)]
fn d<B: Iq2Block>(x: &B) -> f32 {
    f16::from_bits(x.d_bits()).to_f32()
}

/// The decoded form's scales of a block whose super-block scale is `d`: `sc`, `d / 8`, no mins
/// (all but `q`).
#[inline(always)]
pub(super) fn set_scales<B: Iq2Block>(x: &B, d: f32, o: &mut DecodedK) {
    for (sc, s) in o.sc.iter_mut().zip(x.scales()) {
        *sc = 2 * s as i16 + 1;
    }
    o.m = [0; 16];
    o.d = d * 0.125;
    o.dmin = 0.0;
}

/// The scalar decoder.
fn decode<B: Iq2Block>(row: &[u8], out: &mut [DecodedK]) {
    for (x, o) in blocks_of::<B>(row).iter().zip(out.iter_mut()) {
        set_scales(x, d(x), o);
        for ib in 0..QK_K / 32 {
            let (grid, signs) = x.group32(ib);
            for (l, g) in grid.iter().enumerate() {
                for (j, &b) in g.to_le_bytes().iter().enumerate() {
                    let neg = (signs >> (8 * l + j)) & 1 != 0;
                    o.q[32 * ib + 8 * l + j] = if neg { -(b as i8) } else { b as i8 };
                }
            }
        }
    }
}

/// Dequantizes a row of `ty` (bit-exact with ggml's `dequantize_row_iq2_*`).
pub(super) fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> bool {
    match ty {
        GgmlType::IQ2_XXS => dequantize::<BlockIq2Xxs>(src, dst),
        GgmlType::IQ2_XS => dequantize::<BlockIq2Xs>(src, dst),
        GgmlType::IQ2_S => dequantize::<BlockIq2S>(src, dst),
        _ => return false,
    }
    true
}

fn dequantize<B: Iq2Block>(src: &[u8], dst: &mut [f32]) {
    for (x, y) in blocks_of::<B>(src).iter().zip(dst.chunks_exact_mut(QK_K)) {
        let (d, scales) = (d(x), x.scales());
        for ib in 0..QK_K / 32 {
            let (grid, signs) = x.group32(ib);
            for (l, g) in grid.iter().enumerate() {
                // ggml: `db * grid[j] * (sign ? -1.f : 1.f)`, db = `d * (0.5f + s) * 0.25f`.
                let db = d * (0.5 + scales[2 * ib + l / 2] as f32) * 0.25;
                for (j, &b) in g.to_le_bytes().iter().enumerate() {
                    let v = db * b as f32;
                    let neg = (signs >> (8 * l + j)) & 1 != 0;
                    y[32 * ib + 8 * l + j] = if neg { -v } else { v };
                }
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests;
