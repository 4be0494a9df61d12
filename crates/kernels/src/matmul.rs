//! Weight matrices and matrix multiplication against f32 activations.
//!
//! Like ggml, activations are first quantized into the weight type's `vec_dot_type` (once per call,
//! or once for several matrices with [`quantize_activations`]), then every weight row is dotted with
//! every activation row. Rows are split across threads in contiguous ranges; within a range, a tile
//! of weight rows stays in cache while every token passes over it.

use crate::cpu::Isa;
use crate::dequant::dequantize_row;
use crate::dot::{vec_dot4_fn, vec_dot_fn};
use crate::parallel::par_chunks_mut;
use crate::pool::ThreadPool;
use crate::quantize::quantize_row;
use crate::types::GgmlType;
use crate::KernelError;
use bytemuck::{Pod, Zeroable};

/// Weight rows per tile.
const TILE_ROWS: usize = 8;

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A 64-byte-aligned byte buffer (block views need 2- or 4-byte alignment; SIMD loads prefer 64).
#[derive(Clone)]
pub struct AlignedBytes {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedBytes {
    pub fn zeroed(len: usize) -> AlignedBytes {
        AlignedBytes {
            lines: vec![Line([0; 64]); len.div_ceil(64)],
            len,
        }
    }

    pub fn from_slice(bytes: &[u8]) -> AlignedBytes {
        let mut a = AlignedBytes::zeroed(bytes.len());
        a.as_mut_slice().copy_from_slice(bytes);
        a
    }

    pub fn as_slice(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.lines)[..self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.lines)[..self.len]
    }
}

/// A weight matrix `[rows x cols]` in a ggml type: rows are output features, cols are inputs.
#[derive(Clone)]
pub struct Matrix {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    data: AlignedBytes,
}

impl Matrix {
    /// Copies ggml-layout bytes into aligned memory, checking the size.
    pub fn from_bytes(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<Matrix, KernelError> {
        let row_bytes = ty.row_bytes(cols).ok_or(KernelError::RaggedRow {
            ty,
            cols,
            block: ty.block_len(),
        })?;
        let expected = row_bytes.saturating_mul(rows);
        if bytes.len() != expected {
            return Err(KernelError::SizeMismatch {
                ty,
                rows,
                cols,
                expected,
                actual: bytes.len(),
            });
        }
        Ok(Matrix {
            ty,
            rows,
            cols,
            row_bytes,
            data: AlignedBytes::from_slice(bytes),
        })
    }

    pub fn from_f32(rows: usize, cols: usize, values: Vec<f32>) -> Matrix {
        assert_eq!(values.len(), rows * cols, "from_f32: size mismatch");
        Matrix {
            ty: GgmlType::F32,
            rows,
            cols,
            row_bytes: cols * 4,
            data: AlignedBytes::from_slice(bytemuck::cast_slice(&values)),
        }
    }

    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn n_bytes(&self) -> usize {
        self.rows * self.row_bytes
    }

    /// The ggml bytes of row `r`.
    pub fn row(&self, r: usize) -> &[u8] {
        &self.data.as_slice()[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Row `r` as f32 (an embedding lookup).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        dequantize_row(self.ty, self.row(r), out);
    }

    /// A dequantized F32 copy.
    pub fn to_f32(&self) -> Matrix {
        let mut v = vec![0.0f32; self.rows * self.cols];
        for (r, out) in v.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row(r, out);
        }
        Matrix::from_f32(self.rows, self.cols, v)
    }
}

/// Activation rows quantized into one `vec_dot_type`, reusable across matrices sharing it.
pub struct QuantizedActivations {
    ty: GgmlType,
    n_tokens: usize,
    cols: usize,
    row_bytes: usize,
    data: AlignedBytes,
}

impl QuantizedActivations {
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    fn row(&self, t: usize) -> &[u8] {
        &self.data.as_slice()[t * self.row_bytes..(t + 1) * self.row_bytes]
    }
}

/// Quantizes `n_tokens` rows of `x` into `ty` (an activation type).
pub fn quantize_activations(
    pool: &ThreadPool,
    ty: GgmlType,
    x: &[f32],
    n_tokens: usize,
) -> QuantizedActivations {
    assert!(
        n_tokens > 0 && x.len().is_multiple_of(n_tokens),
        "quantize_activations: shape"
    );
    let cols = x.len() / n_tokens;
    let row_bytes = ty
        .row_bytes(cols)
        .expect("activation width must fill whole blocks");
    let mut data = AlignedBytes::zeroed(row_bytes * n_tokens);
    let rows_per_chunk = n_tokens.div_ceil(pool.n_threads()).max(1);
    par_chunks_mut(
        pool,
        data.as_mut_slice(),
        row_bytes * rows_per_chunk,
        &|i, out| {
            for (j, o) in out.chunks_exact_mut(row_bytes).enumerate() {
                let t = i * rows_per_chunk + j;
                quantize_row(ty, &x[t * cols..(t + 1) * cols], o);
            }
        },
    );
    QuantizedActivations {
        ty,
        n_tokens,
        cols,
        row_bytes,
        data,
    }
}

/// `y[t * rows + r] = W[r] · x[t]` for `n_tokens` rows of `x` (`[n_tokens x cols]`, row-major).
pub fn matmul(pool: &ThreadPool, w: &Matrix, x: &[f32], n_tokens: usize, y: &mut [f32]) {
    assert_eq!(x.len(), n_tokens * w.cols, "matmul: x has the wrong size");
    let qa = quantize_activations(pool, w.ty.vec_dot_type(), x, n_tokens);
    matmul_quantized(pool, w, &qa, y);
}

/// [`matmul`] with activations already quantized into `w`'s `vec_dot_type`.
pub fn matmul_quantized(pool: &ThreadPool, w: &Matrix, qa: &QuantizedActivations, y: &mut [f32]) {
    assert_eq!(qa.ty, w.ty.vec_dot_type(), "matmul: activation type");
    assert_eq!(qa.cols, w.cols, "matmul: width mismatch");
    let (rows, n) = (w.rows, qa.n_tokens);
    assert_eq!(y.len(), rows * n, "matmul: y has the wrong size");
    let dot = vec_dot_fn(w.ty, Isa::best());
    let cols = w.cols;
    if n == 1 {
        par_chunks_mut(pool, y, TILE_ROWS, &|tile, out| {
            let a = qa.row(0);
            for (i, o) in out.iter_mut().enumerate() {
                *o = dot(cols, w.row(tile * TILE_ROWS + i), a);
            }
        });
        return;
    }
    // Compute y transposed ([rows x n]) so each thread owns whole contiguous tiles, then transpose.
    let mut yt = vec![0.0f32; rows * n];
    let dot4 = vec_dot4_fn(w.ty, Isa::best());
    par_chunks_mut(pool, &mut yt, TILE_ROWS * n, &|tile, out| {
        let r0 = tile * TILE_ROWS;
        let tile_rows = out.len() / n;
        let mut t = 0;
        if let Some(dot4) = dot4 {
            while t + 4 <= n {
                let a = [qa.row(t), qa.row(t + 1), qa.row(t + 2), qa.row(t + 3)];
                for i in 0..tile_rows {
                    let y = dot4(cols, w.row(r0 + i), &a);
                    out[i * n + t..i * n + t + 4].copy_from_slice(&y);
                }
                t += 4;
            }
        }
        for t in t..n {
            let a = qa.row(t);
            for i in 0..tile_rows {
                out[i * n + t] = dot(cols, w.row(r0 + i), a);
            }
        }
    });
    for r in 0..rows {
        for t in 0..n {
            y[t * rows + r] = yt[r * n + t];
        }
    }
}
