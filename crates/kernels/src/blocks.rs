//! Bit-exact in-memory layouts of ggml's quantized blocks (`ggml-common.h`).
//!
//! Every block is `#[repr(C)]`, `Pod`, and has exactly ggml's size, so a tensor's bytes can be viewed
//! as a slice of blocks with `bytemuck::try_cast_slice` (no `unsafe`). Multi-byte scalars are
//! little-endian on disk; x86_64 is little-endian, which `lib.rs` asserts at compile time.

use crate::types::{QK, QK_K};
use bytemuck::{Pod, Zeroable};
use half::f16;

/// 32 values: `x = d * (q - 8)`, q in 0..16. Nibble `j` low = value `j`, high = value `j + 16`.
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
#[repr(C)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; QK / 2],
}

/// 32 values: `x = d * q + m`, q in 0..16.
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; QK / 2],
}

/// 32 values: `x = d * (q - 16)`, q in 0..32; bit 4 of value `j` is bit `j` of `qh` (little-endian u32).
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
#[repr(C)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

/// 32 values: `x = d * q + m`, q in 0..32.
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
#[repr(C)]
pub struct BlockQ5_1 {
    pub d: f16,
    pub m: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

/// 32 values: `x = d * q`, q in -127..=127.
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK],
}

/// 32 values: `x = d * q`; `s = d * sum(q)` (used with Q4_1/Q5_1 weights).
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
#[repr(C)]
pub struct BlockQ8_1 {
    pub d: f16,
    pub s: f16,
    pub qs: [i8; QK],
}

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
    assert!(size_of::<BlockQ4_0>() == 18);
    assert!(size_of::<BlockQ4_1>() == 20);
    assert!(size_of::<BlockQ5_0>() == 22);
    assert!(size_of::<BlockQ5_1>() == 24);
    assert!(size_of::<BlockQ8_0>() == 34);
    assert!(size_of::<BlockQ8_1>() == 36);
    assert!(size_of::<BlockQ2K>() == 84);
    assert!(size_of::<BlockQ3K>() == 110);
    assert!(size_of::<BlockQ4K>() == 144);
    assert!(size_of::<BlockQ5K>() == 176);
    assert!(size_of::<BlockQ6K>() == 210);
    assert!(size_of::<BlockQ8K>() == 292);
};
