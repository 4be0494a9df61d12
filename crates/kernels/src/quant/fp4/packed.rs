//! The packed (row-interleaved) record of MXFP4 and its [`Layout`] for the packed GEMM
//! (`crate::packed`), at AVX-512 only: IQ4_NL's record and tile (`iq4::gemm512::tile_iq4nl`) with
//! MXFP4's value table and exponents.
//!
//! Record of one block of a group of 16 rows (272 bytes; missing rows of the last group are zero):
//! the 4-bit indices into `kvalues_mxfp4` as 4 nibble vectors laid out like Q4_0's, then the 16
//! rows' exponents `e` (one byte each).

use super::BlockMXFP4;
use crate::packed::{put_ggml_nibbles, Layout};
use crate::types::GgmlType;

/// The packed layout of MXFP4 (`None` for the family's other types).
pub(crate) fn layout(ty: GgmlType) -> Option<Layout> {
    #[cfg(target_arch = "x86_64")]
    if ty == GgmlType::MXFP4 {
        use crate::packed::{gemm512::tiles512, packer};
        use crate::quant::iq4::gemm512 as g5;
        return Some(Layout {
            record_bytes: 272,
            pack: packer!(BlockMXFP4, pack_mxfp4),
            avx512: tiles512!(g5::tile_iq4nl, true),
            avx2: None,
            amx: Some(crate::packed::gemm_amx::gemm::<g5::AmxIq4nl<true>>),
        });
    }
    let _ = ty;
    None
}

#[inline(always)]
fn pack_mxfp4(x: &BlockMXFP4, i: usize, rec: &mut [u8]) {
    put_ggml_nibbles(rec, 0, i, &x.qs);
    rec[256 + i] = x.e;
}
