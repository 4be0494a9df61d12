//! Row-interleaved ("packed") weight layouts and the matrix multiplication over them.
//!
//! The AVX-512 VNNI GEMM keeps one output row per 32-bit lane: a group of 16 weight rows is
//! multiplied by several tokens at once, `vpdpbusd` adding four products per lane, so the weights
//! of a block are decoded once for a whole tile of tokens and no horizontal sums are needed. For
//! that the 16 rows of a group are stored interleaved, block by block: each 64-byte vector holds
//! four consecutive quants of every row (lane `r` = row `r`), already unsigned, so it multiplies an
//! activation dword broadcast to all lanes. The AVX2 GEMM (`gemm256`) runs on the same
//! records, a group as two halves of 8 rows (the two 32-byte halves of every vector).
//!
//! Every output is computed with exactly the arithmetic of the scalar reference
//! (`dot_scalar`): an exact integer sum per block, then the block's float scaling and accumulation
//! in block order. So a packed matmul equals the scalar kernels bit for bit, whatever the number
//! of tokens or threads.
//!
//! Each family defines its types' records, packing and tiles (`quant::*::packed`, `gemm512`,
//! `gemm256`) and describes them with a `Layout`; this module holds what they share: the group
//! layout, the record-writing helpers, the activations' side data (`ActAux`) and the GEMM
//! driver.
//!
//! `gemm512` and `gemm256` hold the building blocks of the tiles at each level.

#[cfg(target_arch = "x86_64")]
pub(crate) mod gemm256;
#[cfg(target_arch = "x86_64")]
pub(crate) mod gemm512;
#[cfg(target_arch = "x86_64")]
pub(crate) mod gemm_amx;

use crate::blocks::{BlockQ8K, BlockQ8_0, BlockQ8_1};
use crate::cpu::Isa;
use crate::parallel::par_chunks_mut;
use crate::pool::ThreadPool;
use crate::storage::AlignedBytes;
use crate::types::GgmlType;
use crate::view::blocks_of;
use std::mem::size_of;

/// Weight rows per group: one per 32-bit lane of a 512-bit register.
pub const GROUP: usize = 16;

/// A weight matrix in the row-interleaved layout of the module docs.
#[derive(Clone)]
pub struct Packed {
    ty: GgmlType,
    layout: Layout,
    rows: usize,
    cols: usize,
    /// Blocks per row.
    nb: usize,
    /// Bytes of one block record (16 rows).
    stride: usize,
    data: AlignedBytes,
}

/// Writes block `b` of a row (its ggml bytes) into lane `i` of a block record.
pub(crate) type PackFn = fn(row: &[u8], b: usize, i: usize, rec: &mut [u8]);

/// A type's packed layout, defined by its family: the record size, how a block is packed into
/// it, and the GEMM tiles over it at each level (`avx2: None` where the type has no AVX2 tiles:
/// below AVX-512 it then stays on its row or decoded kernels).
#[derive(Clone, Copy)]
pub(crate) struct Layout {
    pub record_bytes: usize,
    pub pack: PackFn,
    #[cfg(target_arch = "x86_64")]
    pub avx512: gemm512::Tiles,
    #[cfg(target_arch = "x86_64")]
    pub avx2: Option<gemm256::Tiles>,
    /// The AMX GEMM, where the type has one (used for whole tiles of 16 tokens where
    /// `cpu::amx()`).
    #[cfg(target_arch = "x86_64")]
    pub amx: Option<gemm_amx::AmxGemm>,
}

/// The packed layout of `ty` if it has one the current `Isa::best()` can run: AVX-512 VNNI
/// (`gemm512` tiles) or AVX2 (`gemm256` tiles).
fn layout(ty: GgmlType) -> Option<Layout> {
    let l = crate::quant::packed_layout(ty)?;
    #[cfg(target_arch = "x86_64")]
    match Isa::best() {
        Isa::Avx512Vnni => return Some(l),
        Isa::Avx2 if l.avx2.is_some() => return Some(l),
        _ => {}
    }
    let _ = l;
    None
}

/// Whether matrices of `ty` get a packed layout (and the packed GEMM) at the current `Isa::best()`.
pub fn packs(ty: GgmlType) -> bool {
    layout(ty).is_some()
}

/// `|row, b, i, rec| pack(&blocks_of::<$block>(row)[b], i, rec)` as a [`PackFn`].
macro_rules! packer {
    ($block:ty, $pack:path) => {
        |row: &[u8], b: usize, i: usize, rec: &mut [u8]| {
            $pack(&$crate::view::blocks_of::<$block>(row)[b], i, rec)
        }
    };
}
pub(crate) use packer;

impl Packed {
    /// Packs `rows` rows of `cols` values of `ty`, `row(r)` giving the ggml bytes of row `r`;
    /// `None` for a type without a packed layout. `packed(rows)` is told of each range of rows
    /// packed (in order, a few MB at a time), so that their source can be dropped as the copy
    /// grows rather than after it (a mapped matrix and its packed copy are both resident only a few MB
    /// at a time).
    pub fn new<'a>(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        row: impl Fn(usize) -> &'a [u8],
        packed: impl Fn(std::ops::Range<usize>),
    ) -> Option<Packed> {
        let layout = layout(ty)?;
        let stride = layout.record_bytes;
        let nb = cols / ty.block_len();
        let groups = rows.div_ceil(GROUP);
        let mut data = AlignedBytes::zeroed(groups * nb * stride);
        let group_bytes = nb * stride;
        // Groups per report: about 4 MB of records.
        let per_report = ((4 << 20) / group_bytes.max(1)).max(1);
        for (g, out) in data
            .as_mut_slice()
            .chunks_exact_mut(group_bytes)
            .enumerate()
        {
            for i in 0..GROUP.min(rows - g * GROUP) {
                let src = row(g * GROUP + i);
                for (b, rec) in out.chunks_exact_mut(stride).enumerate() {
                    (layout.pack)(src, b, i, rec);
                }
            }
            if (g + 1) % per_report == 0 || g + 1 == groups {
                let first = (g - g % per_report) * GROUP;
                packed(first..((g + 1) * GROUP).min(rows));
            }
        }
        Some(Packed {
            ty,
            layout,
            rows,
            cols,
            nb,
            stride,
            data,
        })
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

    fn groups(&self) -> usize {
        self.rows.div_ceil(GROUP)
    }

    fn group(&self, g: usize) -> &[u8] {
        let gb = self.nb * self.stride;
        &self.data.as_slice()[g * gb..(g + 1) * gb]
    }
}

/// Byte `j` of lane `i` of the 64-byte vector at `v` of a record.
pub(crate) fn lane(rec: &mut [u8], v: usize, i: usize, j: usize) -> &mut u8 {
    &mut rec[v + 4 * i + j]
}

/// Puts 32 unsigned 4-bit values (`u[k] < 16`) of row `i` into 4 nibble vectors at `at`.
#[inline(always)]
pub(crate) fn put_nibbles(rec: &mut [u8], at: usize, i: usize, u: &[u8]) {
    for v in 0..4 {
        for j in 0..4 {
            *lane(rec, at + 64 * v, i, j) = (u[4 * v + j] & 0xF) | (u[16 + 4 * v + j] & 0xF) << 4;
        }
    }
}

/// Puts ggml's 16 bytes of 32 nibbles (value `j` in the low nibble of byte `j`, value `j + 16` in
/// its high nibble: Q4_0, Q4_1, IQ4_NL, IQ4_XS, MXFP4) of row `i` into the 4 nibble vectors at
/// `at`: [`put_nibbles`] of those values, which is the bytes themselves.
#[inline(always)]
pub(crate) fn put_ggml_nibbles(rec: &mut [u8], at: usize, i: usize, qs: &[u8]) {
    for v in 0..4 {
        for j in 0..4 {
            *lane(rec, at + 64 * v, i, j) = qs[4 * v + j];
        }
    }
}

/// Puts row `i`'s f16 `d` into the 16 scales at `at`.
#[inline(always)]
pub(crate) fn put_f16(rec: &mut [u8], at: usize, i: usize, d: half::f16) {
    rec[at + 2 * i..at + 2 * i + 2].copy_from_slice(&d.to_le_bytes());
}

/// Puts bit 4 of 32 values of row `i` (`u[k] < 32`) into the fifth-bit vector at `at`: lane
/// byte `j`, bit `g` is bit 4 of value `4g + j` (`g < 4`) or `16 + 4(g - 4) + j`.
#[inline(always)]
pub(crate) fn put_fifth_bits(rec: &mut [u8], at: usize, i: usize, u: &[u8]) {
    for j in 0..4 {
        let mut h = 0u8;
        for g in 0..8 {
            let k = if g < 4 {
                4 * g + j
            } else {
                16 + 4 * (g - 4) + j
            };
            h |= ((u[k] >> 4) & 1) << g;
        }
        *lane(rec, at, i, j) = h;
    }
}

/// Per-token side data of quantized activations that the packed kernels read besides the quants
/// (computed once per set of activations, shared by every matrix that uses them):
///
/// * Q8_0, per token: `nb` negated block sums `-Σ q`, then the `nb` block scales as f32 bits.
/// * Q8_1, per token: the `nb` block scales `d`, then the `nb` values `s`, as f32 bits.
/// * Q8_K, per token and block: 16 values `-32 · bsums[k]` (Q6_K's offset), then 4 dwords of
///   16-bit pairs `(b 2p, b 2p + 1)`, `b s` the sum of sub-block `s`'s 32 quants (Q4_K's mins).
pub(crate) struct ActAux {
    /// i32 values per token.
    pub per_token: usize,
    pub data: Vec<i32>,
    /// Where `cpu::amx()`: the quants of whole 16-token tiles in the AMX GEMM's order
    /// (`gemm_amx::tile_acts`); else empty.
    pub tiled: Vec<u8>,
}

pub(crate) use gemm512::AUX_K;

impl ActAux {
    pub(crate) fn new(
        pool: &ThreadPool,
        ty: GgmlType,
        q: &[u8],
        row_bytes: usize,
        n_tokens: usize,
    ) -> ActAux {
        let per_token = match ty {
            GgmlType::Q8_0 => 2 * (row_bytes / size_of::<BlockQ8_0>()),
            GgmlType::Q8_1 => 2 * (row_bytes / size_of::<BlockQ8_1>()),
            GgmlType::Q8_K => AUX_K * (row_bytes / size_of::<BlockQ8K>()),
            _ => 0,
        };
        #[cfg(target_arch = "x86_64")]
        let tiled = if crate::cpu::amx() && n_tokens >= 16 {
            gemm_amx::tile_acts(ty, q, row_bytes, n_tokens)
        } else {
            Vec::new()
        };
        #[cfg(not(target_arch = "x86_64"))]
        let tiled = Vec::new();
        let mut data = crate::storage::zeros(per_token * n_tokens);
        if per_token == 0 {
            return ActAux {
                per_token,
                data,
                tiled,
            };
        }
        par_chunks_mut(pool, &mut data, per_token, &|t, o| {
            let row = &q[t * row_bytes..(t + 1) * row_bytes];
            match ty {
                GgmlType::Q8_1 => {
                    let blocks = blocks_of::<BlockQ8_1>(row);
                    let nb = blocks.len();
                    for (b, x) in blocks.iter().enumerate() {
                        o[b] = x.d.to_f32().to_bits() as i32;
                        o[nb + b] = x.s.to_f32().to_bits() as i32;
                    }
                }
                GgmlType::Q8_0 => {
                    let blocks = blocks_of::<BlockQ8_0>(row);
                    let nb = blocks.len();
                    for (b, x) in blocks.iter().enumerate() {
                        o[b] = -x.qs.iter().map(|&v| v as i32).sum::<i32>();
                        o[nb + b] = x.d.to_f32().to_bits() as i32;
                    }
                }
                _ => {
                    for (b, x) in blocks_of::<BlockQ8K>(row).iter().enumerate() {
                        let o = &mut o[AUX_K * b..AUX_K * (b + 1)];
                        for k in 0..16 {
                            o[k] = -32 * x.bsums[k] as i32;
                        }
                        for p in 0..4 {
                            let s = |k: usize| x.bsums[k] as i32;
                            let lo = (s(4 * p) + s(4 * p + 1)) as i16 as u16 as u32;
                            let hi = (s(4 * p + 2) + s(4 * p + 3)) as i16 as u16 as u32;
                            o[16 + p] = (lo | hi << 16) as i32;
                        }
                    }
                }
            }
        });
        ActAux {
            per_token,
            data,
            tiled,
        }
    }
}

/// Quantized activations as the packed kernels see them.
pub(crate) struct Acts<'a> {
    pub q: &'a [u8],
    pub row_bytes: usize,
    pub n_tokens: usize,
    pub aux: &'a ActAux,
}

/// Bytes of quantized activations per token block: they stay in L2 while a thread's weight
/// groups pass over them.
const TOKEN_BLOCK_BYTES: usize = 384 << 10;

/// `y[t * rows + r] = W[r] · a[t]` over the packed layout, run by ranges of row groups
/// (`matmul::matmul_batch`).
pub(crate) struct PackedProduct<'a> {
    p: &'a Packed,
    a: Acts<'a>,
    out: OutPtr<'a>,
    token_block: usize,
}

impl<'a> PackedProduct<'a> {
    pub(crate) fn new(p: &'a Packed, a: Acts<'a>, y: &'a mut [f32]) -> PackedProduct<'a> {
        let n = a.n_tokens;
        assert_eq!(y.len(), p.rows * n, "matmul: y has the wrong size");
        assert_eq!(
            Some(a.row_bytes),
            p.ty.vec_dot_type().row_bytes(p.cols),
            "matmul: activation rows"
        );
        assert_eq!(a.q.len(), a.row_bytes * n, "matmul: activation size");
        assert_eq!(a.aux.data.len(), a.aux.per_token * n, "matmul: aux size");
        // A multiple of 16 tokens, so that blocks end on whole AMX tiles.
        let token_block = (TOKEN_BLOCK_BYTES / a.row_bytes.max(1)).max(16) / 16 * 16;
        PackedProduct {
            p,
            a,
            out: OutPtr(y.as_mut_ptr(), std::marker::PhantomData),
            token_block,
        }
    }

    pub(crate) fn groups(&self) -> usize {
        self.p.groups()
    }

    /// Bytes of packed weights read, times tokens.
    pub(crate) fn cost(&self) -> usize {
        self.p.groups() * self.p.nb * self.p.stride * self.a.n_tokens
    }

    /// Computes row groups `groups` for every token.
    ///
    /// # Safety
    /// No other call on this product runs on overlapping groups at the same time.
    pub(crate) unsafe fn run(&self, groups: std::ops::Range<usize>) {
        let (p, a, n) = (self.p, &self.a, self.a.n_tokens);
        for t0 in (0..n).step_by(self.token_block) {
            let t1 = (t0 + self.token_block).min(n);
            for g in groups.clone() {
                // SAFETY: this call writes only rows of its groups (the caller keeps them from
                // other calls), tokens t0..t1 < n, within `y` of rows * n values, which `out`
                // borrows for the product's lifetime.
                unsafe { gemm_group(p, g, p.group(g), a, t0..t1, &self.out) };
            }
        }
    }
}

impl Packed {
    pub(crate) fn bytes(&self) -> &[u8] {
        self.data.as_slice()
    }

    pub(crate) fn nb(&self) -> usize {
        self.nb
    }

    pub(crate) fn stride(&self) -> usize {
        self.stride
    }
}

/// The output of a packed matmul, written by several threads at disjoint indices.
pub(crate) struct OutPtr<'a>(pub *mut f32, std::marker::PhantomData<&'a mut [f32]>);

// SAFETY: only a pointer, with the lifetime of the buffer it was made from; `PackedProduct::run`'s
// callers make every index written by at most one thread.
unsafe impl Sync for OutPtr<'_> {}

/// Tokens per GEMM tile of the AVX-512 kernels.
const TILE: usize = 8;

/// Tokens per GEMM tile of the AVX2 kernels (16 registers: fewer accumulators fit).
const TILE256: usize = 4;

/// Runs the AMX GEMM on the whole 16-token tiles of `tokens` where `cpu::amx()` (their quants in
/// tile order, `ActAux::tiled`); returns the number of tokens it computed.
///
/// # Safety
/// As for [`gemm_group`], with `w` group `g`'s records and `tokens.start` a multiple of 16.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_amx_tiles(
    p: &Packed,
    amx: gemm_amx::AmxGemm,
    w: *const u8,
    a: &Acts<'_>,
    tokens: std::ops::Range<usize>,
    mask: u16,
    out: &OutPtr,
    g: usize,
) -> usize {
    let (t, tiled) = (tokens.start, &a.aux.tiled);
    let tiles = tokens.len() / 16;
    if tiled.is_empty() || tiles == 0 {
        return 0;
    }
    let tile_bytes = 16 * p.cols();
    assert!(t.is_multiple_of(16) && tiled.len() == a.n_tokens / 16 * tile_bytes);
    let args = gemm_amx::AmxArgs {
        nb: p.nb(),
        stride: p.stride(),
        w,
        act: a.q[t * a.row_bytes..].as_ptr(),
        tiled: tiled[t / 16 * tile_bytes..].as_ptr(),
        row_bytes: a.row_bytes,
        aux: a.aux.data[t * a.aux.per_token..].as_ptr(),
        aux_per_token: a.aux.per_token,
        // SAFETY: token t's output row starts inside `y` (t < n_tokens).
        out: unsafe { out.0.add(t * p.rows() + 16 * g) },
        rows: p.rows(),
        tiles,
        mask,
    };
    // SAFETY: `cpu::amx()` holds (`tiled` is built only then); tokens t..t + 16 tiles are below
    // tokens.end <= n_tokens, so their activation rows, quants in tile order, aux values and
    // outputs are inside what the caller guarantees.
    unsafe { amx(&args) };
    16 * tiles
}

/// Computes rows `16 g..` (at most 16, fewer in a last partial group) of `y` for tokens `tokens`
/// with the packed kernels: `y[t * rows + r] = W[r] · a[t]`.
///
/// # Safety
/// `out` points to the `p.rows() * a.n_tokens` values of `y`, no other thread accesses those
/// rows of those tokens meanwhile, and `tokens.end <= a.n_tokens`. `group` is group `g` of `p`.
/// The CPU has `Isa::best()` (`packed::packs` says it is at least `Isa::Avx2` before any packed
/// layout is built): `gemm512` runs at `Isa::Avx512Vnni`, `gemm256` below.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn gemm_group(
    p: &Packed,
    g: usize,
    group: &[u8],
    a: &Acts<'_>,
    tokens: std::ops::Range<usize>,
    out: &OutPtr,
) {
    assert!(Isa::best() >= Isa::Avx2, "packed GEMM without AVX2");
    let l = p.layout;
    let (nb, stride, rows) = (p.nb(), p.stride(), p.rows());
    let (n, aux_len) = (a.n_tokens, a.aux.data.len());
    assert!(group.len() == nb * stride && tokens.end <= n && 16 * g < rows);
    assert!(a.q.len() >= n * a.row_bytes && aux_len >= n * a.aux.per_token);
    let live = (rows - 16 * g).min(16);
    let mask = (u32::MAX >> (32 - live)) as u16;
    let w = group.as_ptr();
    let act = |t: usize| a.q[t * a.row_bytes..].as_ptr();
    let aux = |t: usize| a.aux.data[t * a.aux.per_token..].as_ptr();
    // SAFETY: token t's output row starts at t * rows < rows * n_tokens; the caller owns lanes
    // 16g..16g + live of it, which `mask` selects.
    let dst = |t: usize| unsafe { out.0.add(t * rows + 16 * g) };
    let mut t = tokens.start;
    macro_rules! run {
        ($n:expr, |$ts:ident| $call:expr) => {
            while tokens.end - t >= $n {
                let $ts: [usize; $n] = std::array::from_fn(|i| t + i);
                // SAFETY: `group` holds nb records; each token row holds nb blocks of the
                // activation type and its aux values (the asserts above and `matmul_packed`'s);
                // the outputs are as the caller guarantees; the CPU has the tiles' features
                // (`Isa::best()`, checked above and by `layout`).
                unsafe { $call };
                t += $n;
            }
        };
    }
    match l.avx2 {
        Some(t2) if Isa::best() < Isa::Avx512Vnni => {
            use gemm256::tile;
            run!(TILE256, |ts| tile(
                t2.t4,
                nb,
                stride,
                w,
                ts.map(act),
                ts.map(aux),
                ts.map(dst),
                mask
            ));
            run!(1, |ts| tile(
                t2.t1,
                nb,
                stride,
                w,
                ts.map(act),
                ts.map(aux),
                ts.map(dst),
                mask
            ));
        }
        _ => {
            let t5 = l.avx512;
            if let Some(amx) = l.amx {
                // SAFETY: forwarded from the caller; `t` starts the token block (16 k tokens).
                t += unsafe { gemm_amx_tiles(p, amx, w, a, t..tokens.end, mask, out, g) };
            }
            run!(TILE, |ts| (t5.t8)(
                nb,
                stride,
                w,
                ts.map(act),
                ts.map(aux),
                ts.map(dst),
                mask
            ));
            run!(4, |ts| (t5.t4)(
                nb,
                stride,
                w,
                ts.map(act),
                ts.map(aux),
                ts.map(dst),
                mask
            ));
            run!(1, |ts| (t5.t1)(
                nb,
                stride,
                w,
                ts.map(act),
                ts.map(aux),
                ts.map(dst),
                mask
            ));
        }
    }
}
