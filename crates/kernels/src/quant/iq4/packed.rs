//! The packed (row-interleaved) records of IQ4_NL and IQ4_XS, their packing, and their
//! [`Layout`]s for the packed GEMM (`crate::packed`; tiles in `gemm512`, `gemm256`).
//!
//! Record layout of one block of a group of 16 rows (missing rows of the last group are zero):
//!
//! * IQ4_NL (288 bytes): Q4_0's layout, the nibbles being indices into `kvalues_iq4nl` (as
//!   stored); the 16 scales.
//! * IQ4_XS (2240 bytes): per 32-value sub-block `s` (at `272 s`, [`iq4xs`]), 4 nibble vectors of
//!   indices laid out like Q4_0's, then the sub-block scales `ls - 32` (i8, 16 bytes, one per
//!   row), in the order the tiles read them (decode streams the record); `d` (at 2176); 32 bytes
//!   of padding (records stay 64-byte aligned).

use super::{BlockIq4Nl, BlockIq4Xs};
use crate::packed::{put_f16, put_ggml_nibbles, Layout, PackFn};
use crate::types::GgmlType;

/// The packed layout of an IQ4 type.
pub(crate) fn layout(ty: GgmlType) -> Option<Layout> {
    #[cfg(target_arch = "x86_64")]
    {
        use super::{gemm256 as g2, gemm512 as g5};
        use crate::packed::{gemm256::tiles256, gemm512::tiles512, packer};
        let (record_bytes, pack, avx512, avx2): (usize, PackFn, _, _) = match ty {
            GgmlType::IQ4_NL => (
                288,
                packer!(BlockIq4Nl, pack_iq4_nl),
                tiles512!(g5::tile_iq4nl, false),
                tiles256!(g2::tile_iq4nl),
            ),
            GgmlType::IQ4_XS => (
                2240,
                packer!(BlockIq4Xs, pack_iq4_xs),
                tiles512!(g5::tile_iq4xs),
                tiles256!(g2::tile_iq4xs),
            ),
            _ => return None,
        };
        Some(Layout {
            record_bytes,
            pack,
            avx512,
            avx2: Some(avx2),
            amx: Some(if ty == GgmlType::IQ4_NL {
                crate::packed::gemm_amx::gemm::<g5::AmxIq4nl<false>>
            } else {
                crate::packed::gemm_amx::gemm::<g5::AmxIq4xs>
            }),
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ty;
        None
    }
}

#[inline(always)]
fn pack_iq4_nl(x: &BlockIq4Nl, i: usize, rec: &mut [u8]) {
    put_ggml_nibbles(rec, 0, i, &x.qs);
    put_f16(rec, 256, i, x.d);
}

/// Offsets in a packed IQ4_XS record (module docs).
pub(crate) mod iq4xs {
    /// The 4 nibble vectors of sub-block `s`.
    pub(crate) const fn nibbles(s: usize) -> usize {
        272 * s
    }
    /// The 16 rows' scales of sub-block `s`.
    pub(crate) const fn scales(s: usize) -> usize {
        272 * s + 256
    }
    /// The 16 rows' `d`.
    pub(crate) const D: usize = 2176;
}

#[inline(always)]
fn pack_iq4_xs(x: &BlockIq4Xs, i: usize, rec: &mut [u8]) {
    for s in 0..8 {
        put_ggml_nibbles(rec, iq4xs::nibbles(s), i, &x.qs[16 * s..16 * s + 16]);
        rec[iq4xs::scales(s) + i] = x.scale(s) as i8 as u8;
    }
    put_f16(rec, iq4xs::D, i, x.d);
}
