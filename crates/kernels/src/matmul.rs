//! Weight matrices and matrix multiplication against f32 activations.
//!
//! Like ggml, activations are first quantized into the weight type's `vec_dot_type` (once per
//! call, or once for several matrices with [`quantize_activations`]), then every weight row is
//! dotted with every activation row. Rows are cut into contiguous ranges that threads take as they come
//! free ([`matmul_batch`] runs several products in one such region); within a range, a tile
//! of weight rows stays in L1 while a block of tokens (sized for L2) passes over it, four tokens
//! per kernel call where the weight type has a four-row kernel.

use crate::blocks::BlockQ8K;
use crate::cpu::Isa;
use crate::dequant::dequantize_row;
use crate::dot::{quantize_row_fn, vec_dot4_fn, vec_dot_fn, VecDot4Fn, VecDotFn};
use crate::packed::{ActAux, Acts, Packed, PackedProduct};
use crate::parallel::par_chunks_mut;
use crate::pool::ThreadPool;
use crate::quant::{Decoded32, DecodedK, Kernels};
use crate::storage::{zeros, AlignedBytes, SharedBytes, WeightBytes};
use crate::types::GgmlType;
use crate::types::{QK, QK_K};
use crate::KernelError;
use std::mem::size_of;
use std::sync::OnceLock;

/// A weight matrix `[rows x cols]` in a ggml type: rows are output features, cols are inputs.
#[derive(Clone)]
pub struct Matrix {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    /// Owned, or borrowed from a memory-mapped file (see [`Matrix::from_mapped`]).
    data: WeightBytes,
    /// The row-interleaved layout of the packed GEMM, built on first use (see [`Matrix::repack`]).
    packed: OnceLock<Option<Box<Packed>>>,
    /// How [`matmul`] computes with this matrix, chosen once when it is made.
    plan: Plan,
}

/// The kernels of a matrix, chosen once from its type and `Isa::best()`: the packed GEMM (its
/// layout built on first use), a decoded type's decoder and generic dot product, or a row kernel
/// (one token, and four at a time where the type has such a kernel).
#[derive(Clone, Copy)]
enum Plan {
    Packed,
    /// A decoded type: its decoder and dot product, and the fused row kernel its family may have
    /// for few tokens (decode), where decoding each row into a buffer first costs more.
    Decoded(Kernels, Option<VecDotFn>),
    Rows {
        dot: VecDotFn,
        dot4: Option<VecDot4Fn>,
    },
}

impl Plan {
    fn new(ty: GgmlType, may_pack: bool) -> Plan {
        let isa = Isa::best();
        if may_pack && crate::packed::packs(ty) {
            return Plan::Packed;
        }
        if let Some(k) = crate::quant::kernels(ty, isa) {
            let fused = crate::quant::row_kernels(ty, isa).map(|(dot, _)| dot);
            return Plan::Decoded(k, fused);
        }
        Plan::Rows {
            dot: vec_dot_fn(ty, isa),
            dot4: vec_dot4_fn(ty, isa),
        }
    }
}

impl Matrix {
    /// Copies ggml-layout bytes into aligned memory, checking the size.
    pub fn from_bytes(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<Matrix, KernelError> {
        let row_bytes = Self::check_size(ty, rows, cols, bytes.len())?;
        Ok(Matrix {
            ty,
            rows,
            cols,
            row_bytes,
            data: WeightBytes::copy_of(bytes),
            packed: OnceLock::new(),
            plan: Plan::new(ty, true),
        })
    }

    /// Borrows the ggml-layout bytes `[offset, offset + len)` of a shared image (a memory-mapped
    /// model file) without copying them, with the size checks of [`Matrix::from_bytes`]; a region
    /// outside the image is an error. A region that is not 4-byte aligned (the strictest alignment
    /// of a block view) is copied instead, so the kernels keep their fast paths.
    pub fn from_mapped(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        map: std::sync::Arc<dyn SharedBytes>,
        offset: usize,
        len: usize,
    ) -> Result<Matrix, KernelError> {
        let row_bytes = Self::check_size(ty, rows, cols, len)?;
        let data = WeightBytes::mapped(map, offset, len)?;
        let data = if (data.as_ptr() as usize).is_multiple_of(4) {
            data
        } else {
            WeightBytes::copy_of(&data)
        };
        Ok(Matrix {
            ty,
            rows,
            cols,
            row_bytes,
            data,
            packed: OnceLock::new(),
            plan: Plan::new(ty, true),
        })
    }

    /// The bytes of one row, after checking that `len` bytes hold `rows` rows of `cols` values.
    fn check_size(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        len: usize,
    ) -> Result<usize, KernelError> {
        let row_bytes = ty.row_bytes(cols).ok_or(KernelError::RaggedRow {
            ty,
            cols,
            block: ty.block_len(),
        })?;
        let expected = row_bytes.saturating_mul(rows);
        if len != expected {
            return Err(KernelError::SizeMismatch {
                ty,
                rows,
                cols,
                expected,
                actual: len,
            });
        }
        Ok(row_bytes)
    }

    pub fn from_f32(rows: usize, cols: usize, values: Vec<f32>) -> Matrix {
        assert_eq!(values.len(), rows * cols, "from_f32: size mismatch");
        Matrix {
            ty: GgmlType::F32,
            rows,
            cols,
            row_bytes: cols * 4,
            data: WeightBytes::copy_of(bytemuck::cast_slice(&values)),
            packed: OnceLock::new(),
            plan: Plan::new(GgmlType::F32, true),
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

    /// Where the ggml bytes live: owned, or a region of a memory map.
    pub fn bytes(&self) -> &WeightBytes {
        &self.data
    }

    /// Keeps [`matmul`] on the matrix's own bytes: no packed copy is ever built. A mapped matrix
    /// then stays in the map, its pages read from the file on demand and droppable by the OS
    /// (MoE experts of a model larger than RAM).
    pub fn without_repack(mut self) -> Matrix {
        self.packed = OnceLock::from(None);
        self.plan = Plan::new(self.ty, false);
        self
    }

    /// Whether a packed copy has been built (by [`Matrix::repack`] or a first [`matmul`]).
    /// The bytes the matrix products read: the packed layout once built, else the ggml rows.
    pub fn resident_bytes(&self) -> &[u8] {
        match self.packed.get() {
            Some(Some(p)) => p.bytes(),
            _ => self.data.as_slice(),
        }
    }

    pub fn is_repacked(&self) -> bool {
        matches!(self.packed.get(), Some(Some(_)))
    }

    /// The ggml bytes of row `r`.
    pub fn row(&self, r: usize) -> &[u8] {
        &self.data.as_slice()[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Row `r` as f32 (an embedding lookup).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        dequantize_row(self.ty, self.row(r), out);
    }

    /// Builds the packed (row-interleaved) layout that [`matmul`] uses at this CPU's instruction
    /// set level, if the type has one (see `packed`); otherwise, or if already built, does nothing.
    /// `matmul` calls it on first use; a loader may call it up front to move that cost to load time.
    pub fn repack(&self) {
        self.packed();
    }

    /// The packed layout, built on first call when `packed::packs` says this type has one.
    fn packed(&self) -> Option<&Packed> {
        self.packed
            .get_or_init(|| {
                if !crate::packed::packs(self.ty) {
                    return None;
                }
                // The mapped rows' pages go as their records are written.
                let release = |rows: std::ops::Range<usize>| {
                    let rb = self.row_bytes;
                    self.data.release_range(rows.start * rb..rows.end * rb);
                };
                Packed::new(self.ty, self.rows, self.cols, |r| self.row(r), release).map(Box::new)
            })
            .as_deref()
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

/// Activation rows quantized into one `vec_dot_type`, reusable across matrices sharing it (e.g.
/// the Q, K and V projections of one input).
pub struct QuantizedActivations {
    ty: GgmlType,
    n_tokens: usize,
    cols: usize,
    row_bytes: usize,
    data: AlignedBytes,
    /// Side data of the packed kernels, computed on first use.
    aux: OnceLock<ActAux>,
}

impl QuantizedActivations {
    /// The activation type the rows are quantized into.
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    pub fn n_tokens(&self) -> usize {
        self.n_tokens
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Whether [`matmul_quantized`] can use these rows for `w` directly (same `vec_dot_type` and
    /// width); otherwise it has to requantize them first.
    pub fn fits(&self, w: &Matrix) -> bool {
        self.ty == w.ty.vec_dot_type() && self.cols == w.cols
    }

    fn row(&self, t: usize) -> &[u8] {
        &self.data.as_slice()[t * self.row_bytes..(t + 1) * self.row_bytes]
    }
}

/// Quantizes `n_tokens` rows of `x` (`[n_tokens x cols]`, row-major) into `ty`, an activation type
/// (a weight type's `vec_dot_type`), spreading the rows over the pool's threads.
pub fn quantize_activations(
    pool: &ThreadPool,
    ty: GgmlType,
    x: &[f32],
    n_tokens: usize,
) -> QuantizedActivations {
    assert!(
        n_tokens > 0 && x.len().is_multiple_of(n_tokens),
        "quantize_activations: {} values are not {n_tokens} rows",
        x.len()
    );
    let cols = x.len() / n_tokens;
    let row_bytes = ty
        .row_bytes(cols)
        .expect("quantize_activations: the width must be a whole number of blocks");
    let quantize = quantize_row_fn(ty, Isa::best());
    let mut data = AlignedBytes::scratch(row_bytes * n_tokens);
    par_chunks_mut(pool, data.as_mut_slice(), row_bytes, &|t, o| {
        quantize(&x[t * cols..(t + 1) * cols], o)
    });
    QuantizedActivations {
        ty,
        n_tokens,
        cols,
        row_bytes,
        data,
        aux: OnceLock::new(),
    }
}

/// `y[t * rows + r] = W[r] · x[t]` for `n_tokens` rows of `x` (`[n_tokens x cols]`, row-major);
/// `y` is `[n_tokens x rows]`.
///
/// Like ggml, the rows of `x` are first quantized into `w.ty().vec_dot_type()` (once per call),
/// then every weight row is dotted with every quantized row; the pool's threads take contiguous
/// ranges of weight rows.
pub fn matmul(pool: &ThreadPool, w: &Matrix, x: &[f32], n_tokens: usize, y: &mut [f32]) {
    assert_eq!(x.len(), n_tokens * w.cols, "matmul: x has the wrong size");
    let qa = quantize_activations(pool, w.ty.vec_dot_type(), x, n_tokens);
    matmul_quantized(pool, w, &qa, y);
}

/// [`matmul`] with activations quantized beforehand by [`quantize_activations`].
///
/// When `qa` is in another type than `w`'s `vec_dot_type` (see [`QuantizedActivations::fits`]),
/// its rows are dequantized and requantized into the right type first: correct, but slower and
/// not bit-identical to [`matmul`] on the original rows.
pub fn matmul_quantized(pool: &ThreadPool, w: &Matrix, qa: &QuantizedActivations, y: &mut [f32]) {
    matmul_batch(pool, &mut [Product { w, qa, y }]);
}

/// One product of [`matmul_batch`]: `y[t * rows + r] = W[r] · qa[t]`.
pub struct Product<'a> {
    pub w: &'a Matrix,
    pub qa: &'a QuantizedActivations,
    pub y: &'a mut [f32],
}

/// Several matrix products in one parallel region: each product's rows are cut into ranges in
/// proportion to its share of the work, and the pool's threads take the ranges of all of them as
/// they come free. The selected experts of a MoE decode step are a dozen small matrices: one
/// region for all of them streams their weights without a start and a join per matrix. Each
/// product computes exactly what [`matmul_quantized`] computes for it alone.
pub fn matmul_batch(pool: &ThreadPool, products: &mut [Product<'_>]) {
    let requantized: Vec<Option<QuantizedActivations>> = products
        .iter()
        .map(|p| {
            let (w, qa) = (p.w, p.qa);
            assert_eq!(qa.cols, w.cols, "matmul: activation width mismatch");
            assert_eq!(
                p.y.len(),
                w.rows * qa.n_tokens,
                "matmul: y has the wrong size"
            );
            (qa.ty != w.ty.vec_dot_type()).then(|| {
                let mut x = zeros(qa.n_tokens * qa.cols);
                for (t, row) in x.chunks_exact_mut(qa.cols).enumerate() {
                    dequantize_row(qa.ty, qa.row(t), row);
                }
                quantize_activations(pool, w.ty.vec_dot_type(), &x, qa.n_tokens)
            })
        })
        .collect();
    let work: Vec<Work<'_>> = products
        .iter_mut()
        .zip(&requantized)
        .map(|(p, rq)| Work::new(pool, p.w, rq.as_ref().unwrap_or(p.qa), p.y))
        .collect();
    let items = cut_into_items(pool, &work);
    pool.for_each(items.len(), &|i| {
        let (k, range) = &items[i];
        // SAFETY: the items' ranges of one product are disjoint (`cut_into_items`), and each
        // product writes only its own `y`, borrowed by `work` until `for_each` has returned.
        unsafe { work[*k].run(range.clone()) }
    });
}

/// One product of a batch, ready to run on any range of its rows (row groups when packed).
enum Work<'a> {
    Packed(PackedProduct<'a>),
    Rows {
        w: &'a Matrix,
        qa: &'a QuantizedActivations,
        out: SharedOut<'a>,
        /// Several tokens over a decoded type: sixteen rows per VNNI instruction.
        gemm: bool,
    },
}

impl<'a> Work<'a> {
    fn new(
        pool: &ThreadPool,
        w: &'a Matrix,
        qa: &'a QuantizedActivations,
        y: &'a mut [f32],
    ) -> Work<'a> {
        if let (Plan::Packed, Some(p)) = (w.plan, w.packed()) {
            let aux = qa.aux.get_or_init(|| {
                ActAux::new(pool, qa.ty, qa.data.as_slice(), qa.row_bytes, qa.n_tokens)
            });
            let acts = Acts {
                q: qa.data.as_slice(),
                row_bytes: qa.row_bytes,
                n_tokens: qa.n_tokens,
                aux,
            };
            return Work::Packed(PackedProduct::new(p, acts, y));
        }
        let gemm = qa.n_tokens >= GEMM_MIN_TOKENS && Isa::best() == Isa::Avx512Vnni;
        Work::Rows {
            w,
            qa,
            out: SharedOut::new(y),
            gemm,
        }
    }

    /// Rows, or row groups, of the product: what its items are ranges of.
    fn units(&self) -> usize {
        match self {
            Work::Packed(p) => p.groups(),
            Work::Rows { w, .. } => w.rows,
        }
    }

    /// What the product costs, in weight bytes read times tokens.
    fn cost(&self) -> usize {
        match self {
            Work::Packed(p) => p.cost(),
            Work::Rows { w, qa, .. } => w.n_bytes() * qa.n_tokens,
        }
    }

    /// Computes the product's rows (row groups) `range` for every token.
    ///
    /// # Safety
    /// No other call on this product runs on an overlapping range at the same time.
    unsafe fn run(&self, range: std::ops::Range<usize>) {
        let (w, qa, out, gemm) = match self {
            // SAFETY: forwarded from the caller.
            Work::Packed(p) => return unsafe { p.run(range) },
            Work::Rows { w, qa, out, gemm } => (*w, *qa, out, *gemm),
        };
        let (r0, r1, rows) = (range.start, range.end, w.rows);
        // SAFETY: this call writes only y[t * rows + r] for r in its range, which no other call
        // writes meanwhile (the caller's promise); `out` holds `y` for the product's lifetime.
        let write = |t: usize, r: usize, v: f32| unsafe { out.write(t * rows + r, v) };
        match w.plan {
            #[cfg(target_arch = "x86_64")]
            Plan::Decoded(kernels, _) if gemm => decoded_gemm(w, qa, r0..r1, kernels, &write),
            Plan::Decoded(_, Some(dot)) => matmul_rows(w, qa, r0..r1, 0, (dot, None), &write),
            Plan::Decoded(Kernels::K { decode, dot }, None) => {
                decoded_rows(w, qa, r0..r1, (DecodedK::ZERO, QK_K), decode, dot, &write)
            }
            Plan::Decoded(Kernels::B32 { decode, dot }, None) => {
                decoded_rows(w, qa, r0..r1, (Decoded32::ZERO, QK), decode, dot, &write)
            }
            Plan::Rows { dot, dot4 } => {
                let done = bf16_amx(w, qa, r0..r1, &write);
                matmul_rows(w, qa, r0..r1, done, (dot, dot4), &write)
            }
            // A type that packs but whose layout could not be built: its row kernels.
            Plan::Packed => {
                let kernels = (
                    vec_dot_fn(w.ty, Isa::best()),
                    vec_dot4_fn(w.ty, Isa::best()),
                );
                matmul_rows(w, qa, r0..r1, 0, kernels, &write)
            }
        }
    }
}

/// The items of a batch, `(product, range of its units)`: about `pool.items()` in all, each
/// product cut in proportion to its cost, at least once and at most once per unit; one product's
/// ranges are disjoint and cover it.
fn cut_into_items(pool: &ThreadPool, work: &[Work<'_>]) -> Vec<(usize, std::ops::Range<usize>)> {
    let total = work.iter().map(Work::cost).sum::<usize>().max(1) as f64;
    let target = pool.items() as f64;
    let mut items = Vec::new();
    for (k, wk) in work.iter().enumerate() {
        let units = wk.units();
        let n = ((target * wk.cost() as f64 / total).round() as usize).clamp(1, units.max(1));
        items.extend((0..n).map(|i| (k, units * i / n..units * (i + 1) / n)));
    }
    items
}

/// Tokens from which `decoded_gemm` beats one dot product per row and token.
const GEMM_MIN_TOKENS: usize = 4;

/// Tokens whose running sums `decoded_gemm` keeps while a row group's blocks pass.
const GEMM_TOKEN_BLOCK: usize = 128;

/// The rows `rows` of a decoded type for every token, with AVX-512 VNNI: groups of 16 rows,
/// each block decoded once into a panel per block of tokens (`quant::decoded::gemm`);
/// bit-identical to [`decoded_rows`].
#[cfg(target_arch = "x86_64")]
fn decoded_gemm(
    w: &Matrix,
    qa: &QuantizedActivations,
    rows: std::ops::Range<usize>,
    kernels: Kernels,
    write: &dyn Fn(usize, usize, f32),
) {
    use crate::quant::decoded::gemm::{accumulate, accumulate32, Panel, Panel32};
    let bb = w.ty.block_bytes();
    match kernels {
        Kernels::K { decode, .. } => {
            let act = |t: usize, b: usize| -> &BlockQ8K {
                let k = size_of::<BlockQ8K>();
                bytemuck::from_bytes(&qa.row(t)[b * k..(b + 1) * k])
            };
            let mut panel = Panel::new();
            let (p, fill) = (&mut panel, |p: &mut Box<Panel>, g: &[&[u8]], b| {
                // SAFETY: called only where the CPU has AVX-512 VNNI (`Isa::best()`).
                unsafe { p.fill(decode, g, b, bb) }
            });
            gemm_groups(
                w,
                qa,
                rows,
                QK_K,
                p,
                fill,
                |p, t, b, s| {
                    // SAFETY: called only where the CPU has AVX-512 VNNI (`Isa::best()`).
                    unsafe { accumulate(p, std::array::from_fn(|i| act(t + i, b)), s, b) }
                },
                |p, t, b, s| {
                    // SAFETY: as above.
                    unsafe { accumulate(p, [act(t, b)], s, b) }
                },
                write,
            );
        }
        Kernels::B32 { decode, .. } => {
            let q8_1 = w.ty.vec_dot_type() == GgmlType::Q8_1;
            let act = |t: usize, b: usize| act32(qa.row(t), b, q8_1);
            let mut panel = Panel32::new();
            let (p, fill) = (&mut panel, |p: &mut Box<Panel32>, g: &[&[u8]], b| {
                p.fill(decode, g, b, (w.ty.block_len(), bb))
            });
            gemm_groups(
                w,
                qa,
                rows,
                QK,
                p,
                fill,
                |p, t, b, s| {
                    let a = std::array::from_fn(|i| act(t + i, b));
                    // SAFETY: called only where the CPU has AVX-512 VNNI (`Isa::best()`).
                    unsafe {
                        if q8_1 {
                            accumulate32::<4, true>(p, a, s, b)
                        } else {
                            accumulate32::<4, false>(p, a, s, b)
                        }
                    }
                },
                |p, t, b, s| {
                    // SAFETY: as above.
                    unsafe {
                        if q8_1 {
                            accumulate32::<1, true>(p, [act(t, b)], s, b)
                        } else {
                            accumulate32::<1, false>(p, [act(t, b)], s, b)
                        }
                    }
                },
                write,
            );
        }
    }
}

/// Activation block `b` of a Q8_0 or (`q8_1`) Q8_1 row as the 32-value GEMM reads it.
#[cfg(target_arch = "x86_64")]
fn act32(row: &[u8], b: usize, q8_1: bool) -> crate::quant::decoded::gemm::Act32<'_> {
    use crate::blocks::{BlockQ8_0, BlockQ8_1};
    let (d, s, qs): (half::f16, f32, &[i8; QK]) = if q8_1 {
        let k = size_of::<BlockQ8_1>();
        let x: &BlockQ8_1 = bytemuck::from_bytes(&row[b * k..(b + 1) * k]);
        (x.d, x.s.to_f32(), &x.qs)
    } else {
        let k = size_of::<BlockQ8_0>();
        let x: &BlockQ8_0 = bytemuck::from_bytes(&row[b * k..(b + 1) * k]);
        (x.d, 0.0, &x.qs)
    };
    crate::quant::decoded::gemm::Act32 {
        qs,
        d: d.to_f32(),
        s,
    }
}

/// The loop of [`decoded_gemm`]: per block of tokens, per group of 16 rows, per weight block, the
/// panel filled once, then the tokens four at a time (`acc4`) and one by one (`acc1`); at the
/// end of a group each token's four running sums are added and written.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn gemm_groups<P>(
    w: &Matrix,
    qa: &QuantizedActivations,
    rows: std::ops::Range<usize>,
    block_len: usize,
    panel: &mut P,
    fill: impl Fn(&mut P, &[&[u8]], usize),
    acc4: impl Fn(&P, usize, usize, &mut [crate::quant::decoded::gemm::Sums; 4]),
    acc1: impl Fn(&P, usize, usize, &mut [crate::quant::decoded::gemm::Sums; 1]),
    write: &dyn Fn(usize, usize, f32),
) {
    use crate::quant::decoded::gemm::{total, Sums, ROWS};
    let (n, nb) = (qa.n_tokens, w.cols / block_len);
    let mut sums: Vec<Sums> = vec![[[0.0; ROWS]; 4]; GEMM_TOKEN_BLOCK];
    for t0 in (0..n).step_by(GEMM_TOKEN_BLOCK) {
        let tn = (n - t0).min(GEMM_TOKEN_BLOCK);
        for g0 in rows.clone().step_by(ROWS) {
            let g1 = (g0 + ROWS).min(rows.end);
            let all: [&[u8]; ROWS] = std::array::from_fn(|r| w.row((g0 + r).min(g1 - 1)));
            let group = &all[..g1 - g0];
            sums[..tn].fill([[0.0; ROWS]; 4]);
            for b in 0..nb {
                fill(panel, group, b);
                let mut quads = sums[..tn].chunks_exact_mut(4);
                for (i, s) in quads.by_ref().enumerate() {
                    acc4(panel, t0 + 4 * i, b, s.try_into().expect("4 sums"));
                }
                let done = t0 + tn / 4 * 4;
                for (j, s) in quads.into_remainder().iter_mut().enumerate() {
                    acc1(
                        panel,
                        done + j,
                        b,
                        std::slice::from_mut(s).try_into().expect("1 sum"),
                    );
                }
            }
            for (j, s) in sums[..tn].iter().enumerate() {
                for r in 0..group.len() {
                    write(t0 + j, g0 + r, total(s, r));
                }
            }
        }
    }
}

/// [`matmul_rows`] for a decoded type: each weight row is decoded once per block of tokens into
/// a buffer that stays in L1, then multiplied with every token of the block.
fn decoded_rows<D: Copy>(
    w: &Matrix,
    qa: &QuantizedActivations,
    rows: std::ops::Range<usize>,
    (zero, block_len): (D, usize),
    decode: fn(&[u8], &mut [D]),
    dot: fn(&[D], &[u8]) -> f32,
    write: &dyn Fn(usize, usize, f32),
) {
    let n = qa.n_tokens;
    let mut buf = vec![zero; w.cols / block_len];
    let token_block = (TOKEN_BLOCK_BYTES / qa.row_bytes.max(1)).max(1);
    for t0 in (0..n).step_by(token_block) {
        for r in rows.clone() {
            decode(w.row(r), &mut buf);
            for t in t0..(t0 + token_block).min(n) {
                write(t, r, dot(&buf, qa.row(t)));
            }
        }
    }
}

/// Weight rows per tile: their bytes stay in L1 while a block of tokens passes over them.
const TILE_ROWS: usize = 16;
/// Bytes of quantized activations per token block, sized to stay in L2 while a thread's weight
/// rows stream past it.
const TOKEN_BLOCK_BYTES: usize = 256 << 10;

/// BF16 weights times 16 tokens and more on the AMX tile unit (`quant::float::gemm_amx`) where
/// `cpu::amx_bf16()`: writes the whole tiles of 16 tokens of rows `rows`, returns how many tokens.
fn bf16_amx(
    w: &Matrix,
    qa: &QuantizedActivations,
    rows: std::ops::Range<usize>,
    write: &dyn Fn(usize, usize, f32),
) -> usize {
    let tiles = qa.n_tokens / 16;
    #[cfg(target_arch = "x86_64")]
    if w.ty == GgmlType::BF16 && tiles > 0 && w.cols.is_multiple_of(32) && crate::cpu::amx_bf16() {
        let act = (qa.data.as_slice(), qa.row_bytes, tiles);
        // SAFETY: `cpu::amx_bf16()` holds; the activations are n_tokens >= 16 tiles rows of BF16
        // (the vector type of BF16 weights), `row_bytes` = 2 cols each.
        unsafe {
            crate::quant::float::gemm_amx::gemm_bf16(w.cols, &|r| w.row(r), rows, act, write)
        };
        return 16 * tiles;
    }
    let _ = (w, rows, write, tiles);
    0
}

/// Computes `y[t][r]` for the weight rows `rows` and the tokens from `t_start` on, calling
/// `write(t, r, value)`.
fn matmul_rows(
    w: &Matrix,
    qa: &QuantizedActivations,
    rows: std::ops::Range<usize>,
    t_start: usize,
    (dot, dot4): (VecDotFn, Option<VecDot4Fn>),
    write: &dyn Fn(usize, usize, f32),
) {
    let (cols, n) = (w.cols, qa.n_tokens);
    if n == 1 && t_start == 0 {
        let a = qa.row(0);
        for r in rows {
            write(0, r, dot(cols, w.row(r), a));
        }
        return;
    }
    // A multiple of 4 tokens (the four-token kernels' step), at least 4.
    let token_block = (TOKEN_BLOCK_BYTES / qa.row_bytes.max(1)).max(4) / 4 * 4;
    for t0 in (t_start..n).step_by(token_block) {
        let t1 = (t0 + token_block).min(n);
        for tile in (rows.start..rows.end).step_by(TILE_ROWS) {
            let tile = tile..(tile + TILE_ROWS).min(rows.end);
            let mut t = t0;
            if let Some(dot4) = dot4 {
                while t + 4 <= t1 {
                    let a = [qa.row(t), qa.row(t + 1), qa.row(t + 2), qa.row(t + 3)];
                    for r in tile.clone() {
                        let v = dot4(cols, w.row(r), &a);
                        for (j, v) in v.into_iter().enumerate() {
                            write(t + j, r, v);
                        }
                    }
                    t += 4;
                }
            }
            for t in t..t1 {
                let a = qa.row(t);
                for r in tile.clone() {
                    write(t, r, dot(cols, w.row(r), a));
                }
            }
        }
    }
}

/// The output of a matmul, written by several threads at disjoint indices.
struct SharedOut<'a>(*mut f32, std::marker::PhantomData<&'a mut [f32]>);

// SAFETY: `SharedOut` is only a pointer, with the lifetime of the buffer it was made from;
// `matmul_batch` makes every index written by at most one thread.
unsafe impl Sync for SharedOut<'_> {}

impl<'a> SharedOut<'a> {
    fn new(y: &'a mut [f32]) -> SharedOut<'a> {
        SharedOut(y.as_mut_ptr(), std::marker::PhantomData)
    }

    /// # Safety
    /// `i` is in bounds of the buffer and no other thread accesses index `i` concurrently.
    unsafe fn write(&self, i: usize, v: f32) {
        // SAFETY: guaranteed by the caller.
        unsafe { self.0.add(i).write(v) }
    }
}
