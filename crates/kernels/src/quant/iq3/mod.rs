//! IQ3_XXS and IQ3_S: 256-value super-blocks of 3-bit grid points with sign bits, paired with Q8_K.
//!
//! Each 32 values are 8 grid points of 4 unsigned values (`iq3xxs_grid`, `iq3s_grid`), 8 sign
//! bytes' worth of signs (one bit per value) and an odd scale `2 * s + 1`:
//! - IQ3_XXS: `x = d * (s + 1/2) / 2 * (±grid)`, i.e. `(d / 4) * (2s + 1) * (±grid)`; the grid
//!   indices are `qs[8g..8g + 8]` for group `g`, and the little-endian u32 at `qs[64 + 4g]` holds
//!   four 7-bit sign indices into `ksigns_iq2xs` (bits 0..28) and `s` (bits 28..32).
//! - IQ3_S: `x = d * (2s + 1) * (±grid)`; grid index `k` of group `g` is `qs[8g + k]` plus bit
//!   `k` of `qh[g]` as bit 8, the signs are the bits of `signs[4g..4g + 4]`, `s` is nibble
//!   `g % 2` of `scales[g / 2]`.
//!
//! Decoded ([`DecodedK`]): `q` the signed grid values, `sc` the odd scale (the same in both runs of
//! 16 of a group), no mins, and `d` the super-block scale, times 1/4 for IQ3_XXS (a power of two,
//! so exact): ggml's `vec_dot_iq3_xxs_q8_K` / `_iq3_s_q8_K` sum `Σ q * a * (2s + 1)` in integers
//! and scale by `d * a.d` (and 0.25) — the same integers, scaled in another float order.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod grids;

use super::decoded::{DecodedK, Decoder};
use super::iq2::KSIGNS_IQ2XS as KSIGNS;
use crate::cpu::Isa;
use crate::types::{GgmlType, QK_K};
use crate::view::blocks_of;
use bytemuck::{Pod, Zeroable};
use grids::{IQ3S_GRID, IQ3XXS_GRID};
use half::f16;

/// 256 values: 64 grid indices, then 8 little-endian u32 of sign indices and scales.
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
#[repr(C)]
pub struct BlockIq3Xxs {
    pub d: f16,
    pub qs: [u8; 3 * QK_K / 8],
}

/// 256 values: 9-bit grid indices (low 8 in `qs`, bit 8 in `qh`), one sign bit per value, and a
/// 4-bit scale per 32 values.
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
#[repr(C)]
pub struct BlockIq3S {
    pub d: f16,
    pub qs: [u8; QK_K / 4],
    pub qh: [u8; QK_K / 32],
    pub signs: [u8; QK_K / 8],
    pub scales: [u8; QK_K / 64],
}

const _: () = {
    assert!(std::mem::size_of::<BlockIq3Xxs>() == 98);
    assert!(std::mem::size_of::<BlockIq3S>() == 110);
};

impl BlockIq3Xxs {
    /// The u32 of group `g`: four 7-bit sign indices, then the 4-bit scale.
    #[inline(always)]
    fn aux(&self, g: usize) -> u32 {
        u32::from_le_bytes(self.qs[64 + 4 * g..68 + 4 * g].try_into().unwrap())
    }

    /// The 32 sign bits of group `g` (bit `j` set: value `j` negative).
    #[inline(always)]
    fn signs(&self, g: usize) -> u32 {
        let aux = self.aux(g);
        (0..4).fold(0, |m, l| {
            m | (KSIGNS[((aux >> (7 * l)) & 127) as usize] as u32) << (8 * l)
        })
    }

    /// The 16 run scales `2s + 1` (each group's twice).
    #[inline(always)]
    fn run_scales(&self) -> [i16; QK_K / 16] {
        std::array::from_fn(|r| (2 * (self.aux(r / 2) >> 28) + 1) as i16)
    }
}

impl BlockIq3S {
    /// Grid index `k` (0..8) of group `g`.
    #[inline(always)]
    fn index(&self, g: usize, k: usize) -> usize {
        self.qs[8 * g + k] as usize | (((self.qh[g] >> k) & 1) as usize) << 8
    }

    /// The 32 sign bits of group `g`.
    #[inline(always)]
    fn signs(&self, g: usize) -> u32 {
        u32::from_le_bytes(self.signs[4 * g..4 * g + 4].try_into().unwrap())
    }

    /// The 4-bit scale `s` of group `g`.
    #[inline(always)]
    fn scale(&self, g: usize) -> u8 {
        (self.scales[g / 2] >> (4 * (g % 2))) & 0xF
    }

    /// The 16 run scales `2s + 1` (each group's twice).
    #[inline(always)]
    fn run_scales(&self) -> [i16; QK_K / 16] {
        std::array::from_fn(|r| 2 * self.scale(r / 2) as i16 + 1)
    }
}

pub(super) fn decoder(ty: GgmlType, isa: Isa) -> Option<Decoder> {
    #[cfg(target_arch = "x86_64")]
    {
        if isa >= Isa::Avx512Vnni {
            return Some(match ty {
                GgmlType::IQ3_XXS => Decoder::K(avx512::decode_iq3_xxs),
                GgmlType::IQ3_S => Decoder::K(avx512::decode_iq3_s),
                _ => return None,
            });
        }
        if isa >= Isa::Avx2 {
            return Some(match ty {
                GgmlType::IQ3_XXS => Decoder::K(avx2::decode_iq3_xxs),
                GgmlType::IQ3_S => Decoder::K(avx2::decode_iq3_s),
                _ => return None,
            });
        }
    }
    let _ = isa;
    Some(match ty {
        GgmlType::IQ3_XXS => Decoder::K(decode_iq3_xxs),
        GgmlType::IQ3_S => Decoder::K(decode_iq3_s),
        _ => return None,
    })
}

/// Writes the 32 signed values of one group: grid points `idx` (4 values each), negated where
/// `signs` has the value's bit.
#[inline(always)]
fn put_group(grid: &[u32], idx: impl Fn(usize) -> usize, signs: u32, q: &mut [i8]) {
    for k in 0..8 {
        let p = grid[idx(k)].to_le_bytes();
        for j in 0..4 {
            let v = 4 * k + j;
            // `s` is -1 for a negative value: (g ^ s) - s is then -g, else g.
            let s = -(((signs >> v) & 1) as i8);
            q[v] = ((p[j] as i8) ^ s).wrapping_sub(s);
        }
    }
}

/// The scalar IQ3_XXS decoder.
pub(crate) fn decode_iq3_xxs(row: &[u8], out: &mut [DecodedK]) {
    for (x, o) in blocks_of::<BlockIq3Xxs>(row).iter().zip(out.iter_mut()) {
        for g in 0..QK_K / 32 {
            let idx = |k: usize| x.qs[8 * g + k] as usize;
            put_group(&IQ3XXS_GRID, idx, x.signs(g), &mut o.q[32 * g..32 * g + 32]);
        }
        o.sc = x.run_scales();
        o.m = [0; QK_K / 16];
        o.d = x.d.to_f32() * 0.25;
        o.dmin = 0.0;
    }
}

/// The scalar IQ3_S decoder.
pub(crate) fn decode_iq3_s(row: &[u8], out: &mut [DecodedK]) {
    for (x, o) in blocks_of::<BlockIq3S>(row).iter().zip(out.iter_mut()) {
        for g in 0..QK_K / 32 {
            let idx = |k: usize| x.index(g, k);
            put_group(&IQ3S_GRID, idx, x.signs(g), &mut o.q[32 * g..32 * g + 32]);
        }
        o.sc = x.run_scales();
        o.m = [0; QK_K / 16];
        o.d = x.d.to_f32();
        o.dmin = 0.0;
    }
}

/// ggml's `dequantize_row_iq3_xxs` / `_iq3_s`, in gguf-py's float order (`db * grid * sign`);
/// `false` for other types.
pub(super) fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> bool {
    match ty {
        GgmlType::IQ3_XXS => {
            for (x, y) in blocks_of::<BlockIq3Xxs>(src)
                .iter()
                .zip(dst.chunks_exact_mut(QK_K))
            {
                let d = x.d.to_f32();
                for (g, y) in y.chunks_exact_mut(32).enumerate() {
                    let db = d * (0.5 + (x.aux(g) >> 28) as f32) * 0.5;
                    let idx = |k: usize| x.qs[8 * g + k] as usize;
                    dequantize_group(db, &IQ3XXS_GRID, idx, x.signs(g), y);
                }
            }
        }
        GgmlType::IQ3_S => {
            for (x, y) in blocks_of::<BlockIq3S>(src)
                .iter()
                .zip(dst.chunks_exact_mut(QK_K))
            {
                let d = x.d.to_f32();
                for (g, y) in y.chunks_exact_mut(32).enumerate() {
                    let db = d * (1 + 2 * x.scale(g) as i32) as f32;
                    let idx = |k: usize| x.index(g, k);
                    dequantize_group(db, &IQ3S_GRID, idx, x.signs(g), y);
                }
            }
        }
        _ => return false,
    }
    true
}

fn dequantize_group(
    db: f32,
    grid: &[u32],
    idx: impl Fn(usize) -> usize,
    signs: u32,
    y: &mut [f32],
) {
    for k in 0..8 {
        let p = grid[idx(k)].to_le_bytes();
        for j in 0..4 {
            let v = 4 * k + j;
            let sign = if signs >> v & 1 != 0 { -1.0 } else { 1.0 };
            y[v] = db * p[j] as f32 * sign;
        }
    }
}

#[cfg(test)]
mod tests;
