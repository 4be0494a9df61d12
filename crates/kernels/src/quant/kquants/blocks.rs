//! Bit-exact layouts of the 256-value super-blocks (`ggml-common.h`): `#[repr(C)]`, `Pod`,
//! ggml's sizes.

use crate::types::QK_K;
use bytemuck::{Pod, Zeroable};
use half::f16;

/// 256 values in 16 sub-blocks of 16: 4-bit scale and min per sub-block, 2-bit quants.
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
#[repr(C)]
pub struct BlockQ2K {
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    pub d: f16,
    pub dmin: f16,
}

/// 256 values in 16 sub-blocks of 16: 6-bit scales packed in 12 bytes, 3-bit quants (2 low bits in
/// `qs`, the high bit in `hmask`).
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
#[repr(C)]
pub struct BlockQ3K {
    pub hmask: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 4],
    pub scales: [u8; 12],
    pub d: f16,
}

/// 256 values in 8 sub-blocks of 32: 6-bit scales and mins packed in 12 bytes, 4-bit quants.
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
#[repr(C)]
pub struct BlockQ4K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qs: [u8; QK_K / 2],
}

/// 256 values in 8 sub-blocks of 32: like Q4_K plus a fifth bit per value in `qh`.
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
#[repr(C)]
pub struct BlockQ5K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}

/// 256 values in 16 sub-blocks of 16: signed 8-bit scales, 6-bit quants (low 4 in `ql`, high 2 in `qh`).
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
#[repr(C)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: f16,
}

/// 256 activation values: `x = d * q`, with `bsums[i]` = sum of `qs[16 i .. 16 i + 16]`.
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
#[repr(C)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}

// ggml's sizes (ggml-common.h static_asserts).
const _: () = {
    use std::mem::size_of;
    assert!(size_of::<BlockQ2K>() == 84);
    assert!(size_of::<BlockQ3K>() == 110);
    assert!(size_of::<BlockQ4K>() == 144);
    assert!(size_of::<BlockQ5K>() == 176);
    assert!(size_of::<BlockQ6K>() == 210);
    assert!(size_of::<BlockQ8K>() == 292);
};
