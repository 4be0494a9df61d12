//! Bit-exact in-memory layouts of ggml's legacy and k-quant blocks (`ggml-common.h`), defined by
//! their families in `quant` and gathered here because the activation blocks (Q8_0, Q8_1, Q8_K)
//! are shared by every family.
//!
//! Every block is `#[repr(C)]`, `Pod`, and has exactly ggml's size, so a tensor's bytes can be viewed
//! as a slice of blocks with `bytemuck::try_cast_slice` (no `unsafe`). Multi-byte scalars are
//! little-endian on disk; x86_64 is little-endian, which `lib.rs` asserts at compile time.

pub use crate::quant::kquants::blocks::*;
pub use crate::quant::legacy::blocks::*;
