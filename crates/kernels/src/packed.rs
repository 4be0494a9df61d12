//! Row-interleaved ("packed") weight layouts and the matrix multiplication over them.
//!
//! The AVX-512 VNNI GEMM keeps one output row per 32-bit lane: a group of 16 weight rows is
//! multiplied by several tokens at once, `vpdpbusd` adding four products per lane, so the weights
//! of a block are decoded once for a whole tile of tokens and no horizontal sums are needed. For
//! that the 16 rows of a group are stored interleaved, block by block: each 64-byte vector holds
//! four consecutive quants of every row (lane `r` = row `r`), already unsigned, so it multiplies an
//! activation dword broadcast to all lanes. The AVX2 GEMM (`simd::gemm256`) runs on the same
//! records, a group as two halves of 8 rows (the two 32-byte halves of every vector).
//!
//! Every output is computed with exactly the arithmetic of the scalar reference
//! (`dot_scalar`): an exact integer sum per block, then the block's float scaling and accumulation
//! in block order. So a packed matmul equals the scalar kernels bit for bit, whatever the number
//! of tokens or threads.
//!
//! Record layout of one block of a group (16 rows; missing rows of the last group are zero):
//!
//! * Q4_0 (288 bytes): 4 vectors of nibbles: vector `v`, lane `r`, byte `j` holds value `4v + j`
//!   (low nibble) and `16 + 4v + j` (high nibble) of row `r`, unsigned (`q + 8` as stored); then
//!   the 16 scales (f16).
//! * Q5_0 (352 bytes): the Q4_0 nibbles of the low 4 bits; one vector of fifth bits: lane `r`,
//!   byte `j`, bit `g` is bit 4 of value `4g + j` (`g < 4`) or `16 + 4(g - 4) + j`; the scales.
//! * Q4_1 (320 bytes, AVX-512 only): the Q4_0 nibbles of `q` (no offset); the 16 `d`; the 16
//!   `m` (f16).
//! * Q5_1 (384 bytes): the Q5_0 nibbles and fifth bits of `q` (unsigned `0..=31`, no offset); the
//!   16 `d` (at 320); the 16 `m` (at 352).
//! * Q8_0 (544 bytes): 8 vectors: vector `g`, lane `r` holds values `4g..4g + 4` of row `r` plus
//!   128; the scales.
//! * Q4_K (2368 bytes): per 32-value sub-block `s`, 4 nibble vectors laid out like Q4_0's (at
//!   `256 s`); the 8 sub-block scales (16 bytes each, one per row); the mins as 4 vectors of
//!   16-bit pairs `(min 2p, min 2p + 1)` (stored as bytes, 32 per pair); `d`; `dmin`.
//! * Q5_K (2880 bytes): the Q4_K record of the low 4 bits (same offsets); then per sub-block `s` a
//!   fifth-bit vector laid out like Q5_0's (at `2368 + 64 s`).
//! * Q6_K (3360 bytes): per 32 values `c`, the low 4 bits as 4 nibble vectors (at `256 c`); the
//!   top 2 bits as 2 vectors per `c` (at `2048 + 128 c`): vector `h`, lane `r`, byte `j`, bits
//!   `2m..2m + 2` hold the top bits of value `32c + 16h + 4m + j`; the 16 sub-block scales
//!   (16 bytes each); `d`.
//! * IQ4_NL (288 bytes): Q4_0's layout, the nibbles being indices into `kvalues_iq4nl` (as
//!   stored); the 16 scales.
//! * IQ4_XS (2240 bytes): per 32-value sub-block `s`, 4 nibble vectors of indices laid out like
//!   Q4_0's (at `256 s`); the 8 sub-block scales `ls - 32` (i8, 16 bytes each, one per row); `d`;
//!   32 bytes of padding (records stay 64-byte aligned).

use crate::blocks::{
    BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0,
    BlockQ8_1,
};
use crate::cpu::Isa;
use crate::parallel::par_chunks_mut;
use crate::pool::ThreadPool;
use crate::quant::kquants::scale_min_k4;
use crate::quant::{BlockIq4Nl, BlockIq4Xs};
use crate::storage::AlignedBytes;
use crate::types::{GgmlType, QK, QK_K};
use crate::view::blocks_of;
use std::mem::size_of;

/// Weight rows per group: one per 32-bit lane of a 512-bit register.
pub const GROUP: usize = 16;

/// A weight matrix in the row-interleaved layout of the module docs.
#[derive(Clone)]
pub struct Packed {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    /// Blocks per row.
    nb: usize,
    /// Bytes of one block record (16 rows).
    stride: usize,
    data: AlignedBytes,
}

/// Bytes of one block record of a group, for the types that have a packed layout.
pub(crate) fn record_bytes(ty: GgmlType) -> Option<usize> {
    Some(match ty {
        GgmlType::Q4_0 => 288,
        GgmlType::Q4_1 => 320,
        GgmlType::Q5_0 => 352,
        GgmlType::Q5_1 => 384,
        GgmlType::Q8_0 => 544,
        GgmlType::Q4_K => 2368,
        GgmlType::Q5_K => 2880,
        GgmlType::Q6_K => 3360,
        GgmlType::IQ4_NL => 288,
        GgmlType::IQ4_XS => 2240,
        _ => return None,
    })
}

/// Whether matrices of `ty` get a packed layout (and the packed GEMM) at the current `Isa::best()`:
/// AVX2 or better (`simd::gemm256`, or `simd::gemm512` with AVX-512 VNNI).
pub fn packs(ty: GgmlType) -> bool {
    // Q4_1 has a kernel at AVX-512 VNNI only; below, it is a decoded type (`quant`).
    let floor = if ty == GgmlType::Q4_1 {
        Isa::Avx512Vnni
    } else {
        Isa::Avx2
    };
    Isa::best() >= floor && record_bytes(ty).is_some()
}

impl Packed {
    /// Packs `rows` rows of `cols` values of `ty`, `row(r)` giving the ggml bytes of row `r`;
    /// `None` for a type without a packed layout.
    pub fn new<'a>(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        row: impl Fn(usize) -> &'a [u8],
    ) -> Option<Packed> {
        let stride = record_bytes(ty)?;
        let nb = cols / ty.block_len();
        let groups = rows.div_ceil(GROUP);
        let mut data = AlignedBytes::zeroed(groups * nb * stride);
        let group_bytes = nb * stride;
        for (g, out) in data
            .as_mut_slice()
            .chunks_exact_mut(group_bytes)
            .enumerate()
        {
            for i in 0..GROUP.min(rows - g * GROUP) {
                let src = row(g * GROUP + i);
                for (b, rec) in out.chunks_exact_mut(stride).enumerate() {
                    pack_block(ty, src, b, i, rec);
                }
            }
        }
        Some(Packed {
            ty,
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
fn lane(rec: &mut [u8], v: usize, i: usize, j: usize) -> &mut u8 {
    &mut rec[v + 4 * i + j]
}

/// Puts 32 unsigned 4-bit values (`u[k] < 16`) of row `i` into 4 nibble vectors at `at`.
#[inline(always)]
fn put_nibbles(rec: &mut [u8], at: usize, i: usize, u: &[u8]) {
    for v in 0..4 {
        for j in 0..4 {
            *lane(rec, at + 64 * v, i, j) = (u[4 * v + j] & 0xF) | (u[16 + 4 * v + j] & 0xF) << 4;
        }
    }
}

/// Writes block `b` of row `src` into lane `i` of the block record `rec`.
fn pack_block(ty: GgmlType, src: &[u8], b: usize, i: usize, rec: &mut [u8]) {
    match ty {
        GgmlType::Q4_0 => pack_q4_0(&blocks_of::<BlockQ4_0>(src)[b], i, rec),
        GgmlType::Q4_1 => pack_q4_1(&blocks_of::<BlockQ4_1>(src)[b], i, rec),
        GgmlType::Q5_0 => pack_q5_0(&blocks_of::<BlockQ5_0>(src)[b], i, rec),
        GgmlType::Q5_1 => pack_q5_1(&blocks_of::<BlockQ5_1>(src)[b], i, rec),
        GgmlType::Q8_0 => pack_q8_0(&blocks_of::<BlockQ8_0>(src)[b], i, rec),
        GgmlType::Q4_K => pack_q4_k(&blocks_of::<BlockQ4K>(src)[b], i, rec),
        GgmlType::Q5_K => pack_q5_k(&blocks_of::<BlockQ5K>(src)[b], i, rec),
        GgmlType::Q6_K => pack_q6_k(&blocks_of::<BlockQ6K>(src)[b], i, rec),
        GgmlType::IQ4_NL => pack_iq4_nl(&blocks_of::<BlockIq4Nl>(src)[b], i, rec),
        GgmlType::IQ4_XS => pack_iq4_xs(&blocks_of::<BlockIq4Xs>(src)[b], i, rec),
        _ => unreachable!("record_bytes admits only the types above"),
    }
}

/// Puts row `i`'s f16 `d` into the 16 scales at `at`.
#[inline(always)]
fn put_f16(rec: &mut [u8], at: usize, i: usize, d: half::f16) {
    rec[at + 2 * i..at + 2 * i + 2].copy_from_slice(&d.to_le_bytes());
}

#[inline(always)]
fn pack_q4_0(x: &BlockQ4_0, i: usize, rec: &mut [u8]) {
    let mut u = [0u8; QK];
    for j in 0..QK / 2 {
        u[j] = x.qs[j] & 0xF;
        u[j + QK / 2] = x.qs[j] >> 4;
    }
    put_nibbles(rec, 0, i, &u);
    put_f16(rec, 256, i, x.d);
}

#[inline(always)]
fn pack_q4_1(x: &BlockQ4_1, i: usize, rec: &mut [u8]) {
    let mut u = [0u8; QK];
    for j in 0..QK / 2 {
        u[j] = x.qs[j] & 0xF;
        u[j + QK / 2] = x.qs[j] >> 4;
    }
    put_nibbles(rec, 0, i, &u);
    put_f16(rec, 256, i, x.d);
    put_f16(rec, 288, i, x.m);
}

#[inline(always)]
fn pack_q5_0(x: &BlockQ5_0, i: usize, rec: &mut [u8]) {
    let qh = u32::from_le_bytes(x.qh);
    let mut u = [0u8; QK];
    for j in 0..QK / 2 {
        u[j] = (x.qs[j] & 0xF) | ((((qh >> j) << 4) & 0x10) as u8);
        u[j + QK / 2] = (x.qs[j] >> 4) | (((qh >> (j + 12)) & 0x10) as u8);
    }
    put_nibbles(rec, 0, i, &u);
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
        *lane(rec, 256, i, j) = h;
    }
    put_f16(rec, 320, i, x.d);
}

/// Puts bit 4 of 32 values of row `i` (`u[k] < 32`) into the fifth-bit vector at `at`: lane
/// byte `j`, bit `g` is bit 4 of value `4g + j` (`g < 4`) or `16 + 4(g - 4) + j`.
#[inline(always)]
fn put_fifth_bits(rec: &mut [u8], at: usize, i: usize, u: &[u8]) {
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

#[inline(always)]
fn pack_q5_1(x: &BlockQ5_1, i: usize, rec: &mut [u8]) {
    let qh = u32::from_le_bytes(x.qh);
    let mut u = [0u8; QK];
    for j in 0..QK / 2 {
        u[j] = (x.qs[j] & 0xF) | ((((qh >> j) << 4) & 0x10) as u8);
        u[j + QK / 2] = (x.qs[j] >> 4) | (((qh >> (j + 12)) & 0x10) as u8);
    }
    put_nibbles(rec, 0, i, &u);
    put_fifth_bits(rec, 256, i, &u);
    put_f16(rec, 320, i, x.d);
    put_f16(rec, 352, i, x.m);
}

#[inline(always)]
fn pack_q8_0(x: &BlockQ8_0, i: usize, rec: &mut [u8]) {
    for g in 0..8 {
        for j in 0..4 {
            *lane(rec, 64 * g, i, j) = (x.qs[4 * g + j] as u8) ^ 0x80;
        }
    }
    put_f16(rec, 512, i, x.d);
}

#[inline(always)]
fn pack_q4_k(x: &BlockQ4K, i: usize, rec: &mut [u8]) {
    for s in 0..8 {
        let q = &x.qs[32 * (s / 2)..32 * (s / 2) + 32];
        let u: Vec<u8> = q
            .iter()
            .map(|&v| if s % 2 == 0 { v & 0xF } else { v >> 4 })
            .collect();
        put_nibbles(rec, 256 * s, i, &u);
        let (sc, m) = scale_min_k4(s, &x.scales);
        rec[2048 + 16 * s + i] = sc;
        rec[2176 + 32 * (s / 2) + 2 * i + s % 2] = m;
    }
    put_f16(rec, 2304, i, x.d);
    put_f16(rec, 2336, i, x.dmin);
}

#[inline(always)]
fn pack_q5_k(x: &BlockQ5K, i: usize, rec: &mut [u8]) {
    for s in 0..8 {
        let q = &x.qs[32 * (s / 2)..32 * (s / 2) + 32];
        let mut u = [0u8; 32];
        for (l, u) in u.iter_mut().enumerate() {
            let lo = if s % 2 == 0 { q[l] & 0xF } else { q[l] >> 4 };
            *u = lo | ((x.qh[l] >> s) & 1) << 4;
        }
        put_nibbles(rec, 256 * s, i, &u);
        put_fifth_bits(rec, 2368 + 64 * s, i, &u);
        let (sc, m) = scale_min_k4(s, &x.scales);
        rec[2048 + 16 * s + i] = sc;
        rec[2176 + 32 * (s / 2) + 2 * i + s % 2] = m;
    }
    put_f16(rec, 2304, i, x.d);
    put_f16(rec, 2336, i, x.dmin);
}

#[inline(always)]
fn pack_q6_k(x: &BlockQ6K, i: usize, rec: &mut [u8]) {
    let mut u = [0u8; QK_K];
    for half in 0..2 {
        let (ql, qh) = (&x.ql[64 * half..], &x.qh[32 * half..]);
        let o = 128 * half;
        for l in 0..32 {
            u[o + l] = (ql[l] & 0xF) | ((qh[l] & 3) << 4);
            u[o + l + 32] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
            u[o + l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
            u[o + l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
        }
    }
    for c in 0..8 {
        let u = &u[32 * c..32 * c + 32];
        put_nibbles(rec, 256 * c, i, u);
        for h in 0..2 {
            for j in 0..4 {
                let mut t = 0u8;
                for m in 0..4 {
                    t |= (u[16 * h + 4 * m + j] >> 4) << (2 * m);
                }
                *lane(rec, 2048 + 128 * c + 64 * h, i, j) = t;
            }
        }
    }
    for k in 0..16 {
        rec[3072 + 16 * k + i] = x.scales[k] as u8;
    }
    put_f16(rec, 3328, i, x.d);
}

#[inline(always)]
fn pack_iq4_nl(x: &BlockIq4Nl, i: usize, rec: &mut [u8]) {
    let mut u = [0u8; QK];
    for j in 0..QK / 2 {
        u[j] = x.qs[j] & 0xF;
        u[j + QK / 2] = x.qs[j] >> 4;
    }
    put_nibbles(rec, 0, i, &u);
    put_f16(rec, 256, i, x.d);
}

#[inline(always)]
fn pack_iq4_xs(x: &BlockIq4Xs, i: usize, rec: &mut [u8]) {
    for s in 0..8 {
        let q = &x.qs[16 * s..16 * s + 16];
        let mut u = [0u8; QK];
        for j in 0..QK / 2 {
            u[j] = q[j] & 0xF;
            u[j + QK / 2] = q[j] >> 4;
        }
        put_nibbles(rec, 256 * s, i, &u);
        rec[2048 + 16 * s + i] = x.scale(s) as i8 as u8;
    }
    put_f16(rec, 2176, i, x.d);
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
}

pub(crate) use crate::simd::gemm512::AUX_K;

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
        let mut data = vec![0i32; per_token * n_tokens];
        if per_token == 0 {
            return ActAux { per_token, data };
        }
        let rows_per_chunk = n_tokens.div_ceil(pool.n_threads());
        par_chunks_mut(pool, &mut data, per_token * rows_per_chunk, &|c, out| {
            for (j, o) in out.chunks_exact_mut(per_token).enumerate() {
                let t = c * rows_per_chunk + j;
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
            }
        });
        ActAux { per_token, data }
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

/// `y[t * rows + r] = W[r] · a[t]` over the packed layout, threads taking contiguous ranges of
/// row groups.
pub(crate) fn matmul_packed(pool: &ThreadPool, p: &Packed, a: &Acts<'_>, y: &mut [f32]) {
    let (rows, n) = (p.rows, a.n_tokens);
    assert_eq!(y.len(), rows * n, "matmul: y has the wrong size");
    assert_eq!(
        Some(a.row_bytes),
        p.ty.vec_dot_type().row_bytes(p.cols),
        "matmul: activation rows"
    );
    assert_eq!(a.q.len(), a.row_bytes * n, "matmul: activation size");
    assert_eq!(a.aux.data.len(), a.aux.per_token * n, "matmul: aux size");
    let groups = p.groups();
    let out = OutPtr(y.as_mut_ptr());
    let token_block = (TOKEN_BLOCK_BYTES / a.row_bytes.max(1)).max(8) / 8 * 8;
    pool.run(&|tid, nth| {
        let (g0, g1) = (groups * tid / nth, groups * (tid + 1) / nth);
        for t0 in (0..n).step_by(token_block) {
            let t1 = (t0 + token_block).min(n);
            for g in g0..g1 {
                // SAFETY: thread `tid` writes only rows of its groups g0..g1 (disjoint across
                // threads), tokens t0..t1 < n, within `y` of rows * n values, which outlives `run`.
                unsafe { gemm_group(p, g, p.group(g), a, t0..t1, &out) };
            }
        }
    });
}

impl Packed {
    pub(crate) fn nb(&self) -> usize {
        self.nb
    }

    pub(crate) fn stride(&self) -> usize {
        self.stride
    }
}

/// The output of a packed matmul, written by several threads at disjoint indices.
pub(crate) struct OutPtr(pub *mut f32);

// SAFETY: only a pointer; `packed::matmul_packed` makes every index written by at most one thread
// and keeps the buffer alive until all threads are done.
unsafe impl Sync for OutPtr {}

/// Tokens per GEMM tile of the AVX-512 kernels.
const TILE: usize = 8;

/// Tokens per GEMM tile of the AVX2 kernels (16 registers: fewer accumulators fit).
const TILE256: usize = 4;

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
    use crate::simd::{gemm256, gemm512};
    use gemm512::Kind;
    assert!(Isa::best() >= Isa::Avx2, "packed GEMM without AVX2");
    let kind = match p.ty() {
        GgmlType::Q8_0 => Kind::Q32(gemm512::Q8_0),
        GgmlType::Q4_0 => Kind::Q32(gemm512::Q4_0),
        GgmlType::Q5_0 => Kind::Q32(gemm512::Q5_0),
        GgmlType::Q4_1 => Kind::Q41,
        GgmlType::Q5_1 => Kind::Q51,
        GgmlType::Q5_K => Kind::Q5K,
        GgmlType::Q4_K => Kind::Q4K,
        GgmlType::Q6_K => Kind::Q6K,
        GgmlType::IQ4_NL => Kind::Iq4Nl,
        GgmlType::IQ4_XS => Kind::Iq4Xs,
        t => unreachable!("{t} has no packed layout"),
    };
    let (nb, stride, rows) = (p.nb(), p.stride(), p.rows());
    assert!(group.len() == nb * stride && tokens.end <= a.n_tokens && 16 * g < rows);
    assert!(
        a.q.len() >= a.n_tokens * a.row_bytes && a.aux.data.len() >= a.n_tokens * a.aux.per_token
    );
    let live = (rows - 16 * g).min(16);
    let mask = if live == 16 {
        !0u16
    } else {
        (1u16 << live) - 1
    };
    let w = group.as_ptr();
    let act = |t: usize| a.q[t * a.row_bytes..].as_ptr();
    let aux = |t: usize| a.aux.data[t * a.aux.per_token..].as_ptr();
    // SAFETY: token t's output row starts at t * rows < rows * n_tokens; the caller owns lanes
    // 16g..16g + live of it, which `mask` selects.
    let dst = |t: usize| unsafe { out.0.add(t * rows + 16 * g) };
    let mut t = tokens.start;
    let avx512 = Isa::best() == Isa::Avx512Vnni;
    macro_rules! run {
        ($m:ident, $n:expr) => {
            while tokens.end - t >= $n {
                let ts: [usize; $n] = std::array::from_fn(|i| t + i);
                // SAFETY: `group` holds nb records; each token row holds nb blocks of the
                // activation type and its aux values (the asserts above and `matmul_packed`'s);
                // the outputs are as the caller guarantees; the CPU has the features of `$m`
                // (`Isa::best()`, checked above and by `packs`).
                unsafe {
                    $m::tile::<$n>(
                        kind,
                        nb,
                        stride,
                        w,
                        ts.map(act),
                        ts.map(aux),
                        ts.map(dst),
                        mask,
                    )
                };
                t += $n;
            }
        };
    }
    if avx512 {
        run!(gemm512, TILE);
        run!(gemm512, 4);
        run!(gemm512, 1);
    } else {
        run!(gemm256, TILE256);
        run!(gemm256, 1);
    }
}
