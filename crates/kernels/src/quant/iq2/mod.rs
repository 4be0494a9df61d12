//! IQ2_XXS, IQ2_XS and IQ2_S: 256 values in 32 groups of 8, each group a row of a fixed grid
//! (bytes 8, 25 or 43) with 8 signs, scaled by `d * (0.5 + s) * 0.25` for a 4-bit `s` per 32
//! values (IQ2_XXS) or per 16 (IQ2_XS, IQ2_S).
//!
//! Decoded: `q` is the signed grid byte, `sc = 2 * s + 1`, `d` is the block's `d / 8` (a power of
//! two: exact), no mins; ggml's dot product sums the same integers `sc * Σ q * a` and multiplies
//! by `0.125` at the end instead.

#[cfg(target_arch = "x86_64")]
mod avx2;
mod grids;

use super::decoded::{DecodedK, Decoder};
use crate::cpu::Isa;
use crate::dequant::blocks_of;
use crate::types::{GgmlType, QK_K};
use bytemuck::{Pod, Zeroable};
use grids::{IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, KSIGNS_IQ2XS};
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

/// A block's fields, unpacked: `d`, the 4-bit scale of each run of 16 values, each group's grid
/// row (8 bytes, value `j` in byte `j`) and sign byte (bit `j` set: value `j` is negative).
pub(super) struct Unpacked {
    pub d: f32,
    pub scales: [u8; QK_K / 16],
    pub grid: [u64; QK_K / 8],
    pub signs: [u8; QK_K / 8],
}

/// A block type of this family.
pub(super) trait Iq2Block: Pod {
    fn unpack(&self) -> Unpacked;
}

impl Iq2Block for BlockIq2Xxs {
    #[inline(always)]
    fn unpack(&self) -> Unpacked {
        let mut u = Unpacked {
            d: self.d.to_f32(),
            scales: [0; 16],
            grid: [0; 32],
            signs: [0; 32],
        };
        for ib in 0..QK_K / 32 {
            let q = &self.qs[4 * ib..4 * ib + 4];
            let idx = q[0] as u32 | (q[1] as u32) << 16;
            let aux = q[2] as u32 | (q[3] as u32) << 16;
            for l in 0..4 {
                u.grid[4 * ib + l] = IQ2XXS_GRID[((idx >> (8 * l)) & 0xFF) as usize];
                u.signs[4 * ib + l] = KSIGNS_IQ2XS[((aux >> (7 * l)) & 127) as usize];
            }
            u.scales[2 * ib] = (aux >> 28) as u8;
            u.scales[2 * ib + 1] = (aux >> 28) as u8;
        }
        u
    }
}

impl Iq2Block for BlockIq2Xs {
    #[inline(always)]
    fn unpack(&self) -> Unpacked {
        let mut u = Unpacked {
            d: self.d.to_f32(),
            scales: [0; 16],
            grid: [0; 32],
            signs: [0; 32],
        };
        for (l, &q) in self.qs.iter().enumerate() {
            u.grid[l] = IQ2XS_GRID[(q & 511) as usize];
            u.signs[l] = KSIGNS_IQ2XS[(q >> 9) as usize];
        }
        for (ib, &s) in self.scales.iter().enumerate() {
            u.scales[2 * ib] = s & 0xF;
            u.scales[2 * ib + 1] = s >> 4;
        }
        u
    }
}

impl Iq2Block for BlockIq2S {
    #[inline(always)]
    fn unpack(&self) -> Unpacked {
        let mut u = Unpacked {
            d: self.d.to_f32(),
            scales: [0; 16],
            grid: [0; 32],
            signs: [0; 32],
        };
        for ib in 0..QK_K / 32 {
            let qh = self.qh[ib] as usize;
            for l in 0..4 {
                let g = 4 * ib + l;
                u.grid[g] = IQ2S_GRID[self.qs[g] as usize | ((qh << (8 - 2 * l)) & 0x300)];
            }
        }
        u.signs.copy_from_slice(&self.qs[QK_K / 8..]);
        for (ib, &s) in self.scales.iter().enumerate() {
            u.scales[2 * ib] = s & 0xF;
            u.scales[2 * ib + 1] = s >> 4;
        }
        u
    }
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
fn decode<B: Iq2Block>(row: &[u8], out: &mut [DecodedK]) {
    for (x, o) in blocks_of::<B>(row).iter().zip(out.iter_mut()) {
        let u = x.unpack();
        set_scales(&u, o);
        for (l, (&g, &s)) in u.grid.iter().zip(&u.signs).enumerate() {
            for (j, &b) in g.to_le_bytes().iter().enumerate() {
                let v = b as i8;
                o.q[8 * l + j] = if s >> j & 1 != 0 { -v } else { v };
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
        let u = x.unpack();
        for (l, (&g, &s)) in u.grid.iter().zip(&u.signs).enumerate() {
            // ggml: `db * grid[j] * (sign ? -1.f : 1.f)`, db = `d * (0.5f + s) * 0.25f`.
            let db = u.d * (0.5 + u.scales[l / 2] as f32) * 0.25;
            for (j, &b) in g.to_le_bytes().iter().enumerate() {
                let v = db * b as f32;
                y[8 * l + j] = if s >> j & 1 != 0 { -v } else { v };
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests;
