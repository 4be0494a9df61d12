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
use crate::dequant::blocks_of;
use crate::types::{GgmlType, QK_K};
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

/// A block's fields, unpacked: `d`, the 3-bit scale of each run of 16 values, each group's grid
/// row (8 bytes -1, 0 or 1, value `j` in byte `j`) and its delta's sign (1 or -1).
pub(super) struct Unpacked {
    pub d: f32,
    pub scales: [u8; QK_K / 16],
    pub grid: [u64; QK_K / 8],
    pub delta: [i8; QK_K / 8],
}

/// A block type of this family.
pub(super) trait Iq1Block: Pod {
    fn unpack(&self) -> Unpacked;
}

impl Iq1Block for BlockIq1S {
    #[inline(always)]
    fn unpack(&self) -> Unpacked {
        let mut u = Unpacked {
            d: self.d.to_f32(),
            scales: [0; 16],
            grid: [0; 32],
            delta: [0; 32],
        };
        for (ib, &qh) in self.qh.iter().enumerate() {
            let qh = qh as usize;
            for l in 0..4 {
                let g = 4 * ib + l;
                u.grid[g] = IQ1S_GRID[self.qs[g] as usize | ((qh >> (3 * l)) & 7) << 8];
                u.delta[g] = if qh & 0x8000 != 0 { -1 } else { 1 };
            }
            u.scales[2 * ib] = ((qh >> 12) & 7) as u8;
            u.scales[2 * ib + 1] = ((qh >> 12) & 7) as u8;
        }
        u
    }
}

impl Iq1Block for BlockIq1M {
    #[inline(always)]
    fn unpack(&self) -> Unpacked {
        let sc: [u16; 4] = std::array::from_fn(|i| {
            u16::from_le_bytes([self.scales[2 * i], self.scales[2 * i + 1]])
        });
        let d =
            (sc[0] >> 12) | ((sc[1] >> 8) & 0x00F0) | ((sc[2] >> 4) & 0x0F00) | (sc[3] & 0xF000);
        let mut u = Unpacked {
            d: f16::from_bits(d).to_f32(),
            scales: [0; 16],
            grid: [0; 32],
            delta: [0; 32],
        };
        for (s, out) in u.scales.iter_mut().enumerate() {
            // Run s: u16 s / 4, bits 3 * (s % 4)..
            *out = ((sc[s / 4] >> (3 * (s % 4))) & 7) as u8;
        }
        for (g, &q) in self.qs.iter().enumerate() {
            let h = (self.qh[g / 2] >> (4 * (g % 2))) as usize;
            u.grid[g] = IQ1S_GRID[q as usize | (h & 7) << 8];
            u.delta[g] = if h & 8 != 0 { -1 } else { 1 };
        }
        u
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

/// The decoded form's scales of a block: `sc`, `d`, no mins (all but `q`).
#[inline(always)]
pub(super) fn set_scales(u: &Unpacked, o: &mut DecodedK) {
    for (sc, &s) in o.sc.iter_mut().zip(&u.scales) {
        *sc = 2 * s as i16 + 1;
    }
    o.m = [0; 16];
    o.d = u.d * 0.125;
    o.dmin = 0.0;
}

/// The scalar decoder.
fn decode<B: Iq1Block>(row: &[u8], out: &mut [DecodedK]) {
    for (x, o) in blocks_of::<B>(row).iter().zip(out.iter_mut()) {
        let u = x.unpack();
        set_scales(&u, o);
        for (l, (&g, &delta)) in u.grid.iter().zip(&u.delta).enumerate() {
            for (j, &b) in g.to_le_bytes().iter().enumerate() {
                o.q[8 * l + j] = 8 * b as i8 + delta;
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
        let u = x.unpack();
        for (l, (&g, &delta)) in u.grid.iter().zip(&u.delta).enumerate() {
            // ggml: `dl * (grid[j] + delta)`, dl = `d * (2 * s + 1)`, delta = ±0.125f.
            let dl = u.d * (2 * u.scales[l / 2] as i32 + 1) as f32;
            let delta = 0.125 * delta as f32;
            for (j, &b) in g.to_le_bytes().iter().enumerate() {
                y[8 * l + j] = dl * (b as i8 as f32 + delta);
            }
        }
    }
}

#[cfg(test)]
mod tests;
