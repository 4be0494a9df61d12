//! IQ1_S and IQ1_M: 256 values in 32 groups of 8, each group a row of `iq1s_grid` (values -1, 0
//! or 1) shifted by `delta = ±1/8`, scaled by `d * (2 * s + 1)` for a 3-bit `s` per 32 values
//! (IQ1_S) or per 16 (IQ1_M); the sign of `delta` is per 32 values (IQ1_S) or per group of 8
//! (IQ1_M).
//!
//! Decoded exactly as integers: `grid + delta = (8 * grid ± 1) / 8`, so `q = 8 * grid ± 1`
//! (-9..=9), `sc = 2 * s + 1`, `d` is the block's `d / 8` (a power of two: exact), no mins.
//! ggml's dot product computes the same sum split in two, `Σ sc * grid * a` plus
//! `0.125 * Σ sc * (±1) * bsums`.

#[cfg(target_arch = "x86_64")]
mod avx2;
mod grids;

use super::decoded::{DecodedK, Decoder};
use crate::cpu::Isa;
use crate::types::{GgmlType, QK_K};
use crate::view::blocks_of;
use bytemuck::{Pod, Zeroable};
use grids::IQ1S_GRID;
use half::f16;

/// 256 values: per 32 values (`ib`) 4 low index bytes in `qs` and a u16 `qh[ib]` holding the
/// 3 high index bits of each group (bits 3l..3l + 3), the 3-bit scale (bits 12..15) and the sign
/// of delta (bit 15 set: -1/8).
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
#[repr(C)]
pub struct BlockIq1S {
    pub d: f16,
    pub qs: [u8; QK_K / 8],
    pub qh: [u16; QK_K / 32],
}

/// 256 values: low index bytes in `qs`; per pair of groups a byte of `qh` with each group's 3 high
/// index bits and delta sign (bits 0..3 and 3, then 4..7 and 7); `scales` as 4 little-endian u16
/// holding 4 × 3-bit scales (one per 16 values) in their low 12 bits and, in their top nibbles,
/// the 4 nibbles of the f16 super-block scale.
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
#[repr(C)]
pub struct BlockIq1M {
    pub qs: [u8; QK_K / 8],
    pub qh: [u8; QK_K / 16],
    pub scales: [u8; QK_K / 32],
}

const _: () = {
    assert!(std::mem::size_of::<BlockIq1S>() == 50);
    assert!(std::mem::size_of::<BlockIq1M>() == 56);
};

/// A block type of this family, read 32 values (4 groups of 8) at a time.
pub(super) trait Iq1Block: Pod {
    /// The bits of the f16 super-block scale.
    fn d_bits(&self) -> u16;
    /// The 3-bit scale `s` of each run of 16 values.
    fn scales(&self) -> [u8; QK_K / 16];
    /// Values `32 * ib..32 * ib + 32`: each group's grid row (bytes -1, 0 or 1, value `j` in byte
    /// `j`) and the sign of its delta (byte `l` of the u32 for group `l`: 1 or -1 as `i8`).
    fn group32(&self, ib: usize) -> ([u64; 4], u32);
}

impl Iq1Block for BlockIq1S {
    #[inline(always)]
    fn d_bits(&self) -> u16 {
        self.d.to_bits()
    }

    #[inline(always)]
    fn scales(&self) -> [u8; QK_K / 16] {
        std::array::from_fn(|s| ((self.qh[s / 2] >> 12) & 7) as u8)
    }

    #[inline(always)]
    fn group32(&self, ib: usize) -> ([u64; 4], u32) {
        let qh = self.qh[ib] as usize;
        let q = &self.qs[4 * ib..4 * ib + 4];
        let grid = std::array::from_fn(|l| IQ1S_GRID[q[l] as usize | ((qh >> (3 * l)) & 7) << 8]);
        (
            grid,
            if qh & 0x8000 != 0 {
                0xFFFF_FFFF
            } else {
                0x0101_0101
            },
        )
    }
}

impl BlockIq1M {
    /// The 4 little-endian u16 of `scales`.
    #[inline(always)]
    fn scale_words(&self) -> [u16; 4] {
        std::array::from_fn(|i| u16::from_le_bytes([self.scales[2 * i], self.scales[2 * i + 1]]))
    }
}

impl Iq1Block for BlockIq1M {
    #[inline(always)]
    fn d_bits(&self) -> u16 {
        let sc = self.scale_words();
        (sc[0] >> 12) | ((sc[1] >> 8) & 0x00F0) | ((sc[2] >> 4) & 0x0F00) | (sc[3] & 0xF000)
    }

    #[inline(always)]
    fn scales(&self) -> [u8; QK_K / 16] {
        let sc = self.scale_words();
        // Run s: bits 3 * (s % 4).. of u16 s / 4.
        std::array::from_fn(|s| ((sc[s / 4] >> (3 * (s % 4))) & 7) as u8)
    }

    #[inline(always)]
    fn group32(&self, ib: usize) -> ([u64; 4], u32) {
        let q = &self.qs[4 * ib..4 * ib + 4];
        // Group l's high index bits and delta sign: nibble l % 2 of qh byte l / 2.
        let h = self.qh[2 * ib] as usize | (self.qh[2 * ib + 1] as usize) << 8;
        let grid = std::array::from_fn(|l| IQ1S_GRID[q[l] as usize | ((h >> (4 * l)) & 7) << 8]);
        // Sign bits 3, 7, 11, 15 to bits 0, 8, 16, 24, then to 0xFF (-1) bytes over 0x01 (1).
        let t = (h as u32 >> 3) & 0x1111;
        let t = (t & 1) | (t & 0x10) << 4 | (t & 0x100) << 8 | (t & 0x1000) << 12;
        (grid, 0x0101_0101 | (t * 0xFF))
    }
}

pub(super) fn decoder(ty: GgmlType, isa: Isa) -> Option<Decoder> {
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2 {
        return Some(Decoder::K(match ty {
            GgmlType::IQ1_S => avx2::decode::<BlockIq1S>,
            GgmlType::IQ1_M => avx2::decode::<BlockIq1M>,
            _ => return None,
        }));
    }
    let _ = isa;
    Some(Decoder::K(match ty {
        GgmlType::IQ1_S => decode::<BlockIq1S>,
        GgmlType::IQ1_M => decode::<BlockIq1M>,
        _ => return None,
    }))
}

/// The super-block scale of `x` as f32.
#[inline(always)]
fn d<B: Iq1Block>(x: &B) -> f32 {
    f16::from_bits(x.d_bits()).to_f32()
}

/// The decoded form's scales of a block whose super-block scale is `d`: `sc`, `d / 8`, no mins
/// (all but `q`).
#[inline(always)]
pub(super) fn set_scales<B: Iq1Block>(x: &B, d: f32, o: &mut DecodedK) {
    for (sc, s) in o.sc.iter_mut().zip(x.scales()) {
        *sc = 2 * s as i16 + 1;
    }
    o.m = [0; 16];
    o.d = d * 0.125;
    o.dmin = 0.0;
}

/// The scalar decoder.
fn decode<B: Iq1Block>(row: &[u8], out: &mut [DecodedK]) {
    for (x, o) in blocks_of::<B>(row).iter().zip(out.iter_mut()) {
        set_scales(x, d(x), o);
        for ib in 0..QK_K / 32 {
            let (grid, delta) = x.group32(ib);
            for (l, g) in grid.iter().enumerate() {
                let delta = (delta >> (8 * l)) as i8;
                for (j, &b) in g.to_le_bytes().iter().enumerate() {
                    o.q[32 * ib + 8 * l + j] = 8 * b as i8 + delta;
                }
            }
        }
    }
}

/// Dequantizes a row of `ty` (bit-exact with ggml's `dequantize_row_iq1_*`).
pub(super) fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> bool {
    match ty {
        GgmlType::IQ1_S => dequantize::<BlockIq1S>(src, dst),
        GgmlType::IQ1_M => dequantize::<BlockIq1M>(src, dst),
        _ => return false,
    }
    true
}

fn dequantize<B: Iq1Block>(src: &[u8], dst: &mut [f32]) {
    for (x, y) in blocks_of::<B>(src).iter().zip(dst.chunks_exact_mut(QK_K)) {
        let (d, scales) = (d(x), x.scales());
        for ib in 0..QK_K / 32 {
            let (grid, delta) = x.group32(ib);
            for (l, g) in grid.iter().enumerate() {
                // ggml: `dl * (grid[j] + delta)`, dl = `d * (2 * s + 1)`, delta = ±0.125f.
                let dl = d * (2 * scales[2 * ib + l / 2] as i32 + 1) as f32;
                let delta = 0.125 * (delta >> (8 * l)) as i8 as f32;
                for (j, &b) in g.to_le_bytes().iter().enumerate() {
                    y[32 * ib + 8 * l + j] = dl * (b as i8 as f32 + delta);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
