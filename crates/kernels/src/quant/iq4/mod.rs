//! IQ4_NL and IQ4_XS: 4-bit indices into ggml's 16 non-linear values `kvalues_iq4nl`.
//!
//! IQ4_NL has 32-value blocks `x = d * kv[i]` paired with Q8_0 activations (decoded to
//! [`Decoded32`] with `m = 0`); IQ4_XS has 256-value super-blocks with a 6-bit scale `ls - 32` per
//! 32 values, `x = d * (ls - 32) * kv[i]`, paired with Q8_K (decoded to [`DecodedK`], the scale
//! repeated in both runs of 16, no mins). In both, nibble `j` of a 16-byte group holds value `j`
//! (low) and value `j + 16` (high) of its 32 values.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(target_arch = "x86_64")]
mod gemm256;
#[cfg(target_arch = "x86_64")]
pub(crate) mod gemm512;
pub(crate) mod packed;

use super::decoded::{Decoded32, DecodedK, Decoder};
use crate::cpu::Isa;
use crate::types::{GgmlType, QK, QK_K};
use crate::view::blocks_of;
use bytemuck::{Pod, Zeroable};
use half::f16;

/// ggml's `kvalues_iq4nl` (ggml-common.h).
pub(crate) const KVALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// 32 values `d * KVALUES[i]`; byte `j` of `qs` holds value `j` (low nibble) and `j + 16` (high).
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
#[repr(C)]
pub struct BlockIq4Nl {
    pub d: f16,
    pub qs: [u8; QK / 2],
}

/// 256 values in 8 groups of 32: group `g` is `d * (ls[g] - 32) * KVALUES[i]`, `ls[g]` 6 bits:
/// the low 4 in nibble `g % 2` of `scales_l[g / 2]`, the high 2 in bits `2g..2g+2` of `scales_h`.
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
#[repr(C)]
pub struct BlockIq4Xs {
    pub d: f16,
    pub scales_h: u16,
    pub scales_l: [u8; QK_K / 64],
    pub qs: [u8; QK_K / 2],
}

const _: () = {
    assert!(std::mem::size_of::<BlockIq4Nl>() == 18);
    assert!(std::mem::size_of::<BlockIq4Xs>() == 136);
};

impl BlockIq4Xs {
    /// The signed scale `ls - 32` of 32-value group `g`.
    #[inline(always)]
    pub(crate) fn scale(&self, g: usize) -> i16 {
        let lo = (self.scales_l[g / 2] >> (4 * (g % 2))) & 0xF;
        let hi = ((self.scales_h >> (2 * g)) & 3) as u8;
        (lo | (hi << 4)) as i16 - 32
    }

    /// The 16 run scales of [`DecodedK`]: each group's scale twice.
    #[inline(always)]
    pub(crate) fn run_scales(&self) -> [i16; QK_K / 16] {
        std::array::from_fn(|s| self.scale(s / 2))
    }
}

pub(super) fn decoder(ty: GgmlType, isa: Isa) -> Option<Decoder> {
    #[cfg(target_arch = "x86_64")]
    {
        if isa >= Isa::Avx512Vnni {
            return Some(match ty {
                GgmlType::IQ4_NL => Decoder::B32(avx2::decode_iq4_nl),
                GgmlType::IQ4_XS => Decoder::K(avx512::decode_iq4_xs),
                _ => return None,
            });
        }
        if isa >= Isa::Avx2 {
            return Some(match ty {
                GgmlType::IQ4_NL => Decoder::B32(avx2::decode_iq4_nl),
                GgmlType::IQ4_XS => Decoder::K(avx2::decode_iq4_xs),
                _ => return None,
            });
        }
    }
    let _ = isa;
    Some(match ty {
        GgmlType::IQ4_NL => Decoder::B32(decode_iq4_nl),
        GgmlType::IQ4_XS => Decoder::K(decode_iq4_xs),
        _ => return None,
    })
}

/// The 32 values of one 16-byte nibble group: low nibbles first, then high nibbles.
#[inline(always)]
fn lookup(qs: &[u8; 16], out: &mut [i8]) {
    for j in 0..16 {
        out[j] = KVALUES[(qs[j] & 0xF) as usize];
        out[j + 16] = KVALUES[(qs[j] >> 4) as usize];
    }
}

/// The scalar IQ4_NL decoder: `q` the looked-up values, `d` the block scale, `m = 0`.
pub(crate) fn decode_iq4_nl(row: &[u8], out: &mut [Decoded32]) {
    for (x, o) in blocks_of::<BlockIq4Nl>(row).iter().zip(out.iter_mut()) {
        lookup(&x.qs, &mut o.q);
        o.d = x.d.to_f32();
        o.m = 0.0;
    }
}

/// The scalar IQ4_XS decoder: `q` the looked-up values, `sc` the group scales `ls - 32` (each
/// twice), `d` the super-block scale, no mins.
pub(crate) fn decode_iq4_xs(row: &[u8], out: &mut [DecodedK]) {
    for (x, o) in blocks_of::<BlockIq4Xs>(row).iter().zip(out.iter_mut()) {
        for g in 0..QK_K / 32 {
            let qs: &[u8; 16] = x.qs[16 * g..16 * g + 16].try_into().unwrap();
            lookup(qs, &mut o.q[32 * g..32 * g + 32]);
        }
        o.sc = x.run_scales();
        o.m = [0; QK_K / 16];
        o.d = x.d.to_f32();
        o.dmin = 0.0;
    }
}

/// ggml's `dequantize_row_iq4_nl` / `_iq4_xs` (gguf-py's order: `d * (ls - 32)`, then times the
/// value); `false` for other types.
pub(super) fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> bool {
    match ty {
        GgmlType::IQ4_NL => {
            for (x, y) in blocks_of::<BlockIq4Nl>(src)
                .iter()
                .zip(dst.chunks_exact_mut(QK))
            {
                dequantize_group(x.d.to_f32(), &x.qs, y);
            }
        }
        GgmlType::IQ4_XS => {
            for (x, y) in blocks_of::<BlockIq4Xs>(src)
                .iter()
                .zip(dst.chunks_exact_mut(QK_K))
            {
                let d = x.d.to_f32();
                for (g, y) in y.chunks_exact_mut(32).enumerate() {
                    let qs: &[u8; 16] = x.qs[16 * g..16 * g + 16].try_into().unwrap();
                    dequantize_group(d * x.scale(g) as f32, qs, y);
                }
            }
        }
        _ => return false,
    }
    true
}

fn dequantize_group(dl: f32, qs: &[u8; 16], y: &mut [f32]) {
    for j in 0..16 {
        y[j] = dl * KVALUES[(qs[j] & 0xF) as usize] as f32;
        y[j + 16] = dl * KVALUES[(qs[j] >> 4) as usize] as f32;
    }
}

#[cfg(test)]
pub(in crate::quant) mod tests;
