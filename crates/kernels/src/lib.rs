//! CPU compute kernels for frugal: ggml's quantized block layouts, dequantization, activation
//! quantization, dot products, matrix multiplication and the elementwise ops of a transformer.
//!
//! Every SIMD kernel has a scalar reference in this crate and is tested against it. Instruction
//! sets are chosen at run time ([`cpu::Isa`]), so one binary runs on any x86_64. All `unsafe` code
//! of frugal lives here (and the mmap in `frugal-formats`), each block with a `// SAFETY:` comment.

// Index loops mirror ggml's block layouts value by value; iterator chains would hide that.
#![allow(clippy::needless_range_loop)]

#[cfg(not(target_endian = "little"))]
compile_error!("frugal reads little-endian GGUF data in place and needs a little-endian target");

pub mod activation;
mod amx;
pub mod blocks;
pub mod cpu;
pub mod delta_net;
pub mod dequant;
pub mod dot;
pub mod dot_scalar;
pub mod kv_elem;
pub mod kv_quant;
pub mod matmul;
pub mod ops;
pub mod packed;
pub mod parallel;
pub mod pool;
pub mod priority;
pub mod quant;
pub mod quantize;
mod simd;
pub mod storage;
pub mod types;
mod view;

pub use cpu::Isa;
pub use kv_elem::KvElem;
pub use matmul::{matmul, Matrix};
pub use pool::ThreadPool;
pub use storage::{SharedBytes, WeightBytes};
pub use types::{GgmlType, QK, QK_K};

/// Errors of kernel entry points that take caller-provided shapes.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{ty} data for {rows}x{cols} needs {expected} bytes, got {actual}")]
    SizeMismatch {
        ty: GgmlType,
        rows: usize,
        cols: usize,
        expected: usize,
        actual: usize,
    },
    #[error("row length {cols} is not a multiple of the {ty} block length {block}")]
    RaggedRow {
        ty: GgmlType,
        cols: usize,
        block: usize,
    },
    #[error("{0} is not supported for this operation")]
    Unsupported(GgmlType),
    #[error("region [{offset}, {offset} + {len}) lies outside the {size} mapped bytes")]
    RegionOutOfBounds {
        offset: usize,
        len: usize,
        size: usize,
    },
}
