//! The AMX int8 GEMM over the packed layouts: one group of 16 weight rows times tiles of 16
//! tokens, every output bit-identical to the scalar reference, as the AVX-512 tiles are.
//!
//! The packed layout is already AMX's B-tile layout: a 64-byte vector holds 4 consecutive quants
//! of each of the 16 rows, which is one row of a B tile (K/4 rows of 16 columns × 4 bytes). So:
//!
//! 1. **Unpack** the group once per token block into a panel of int8 B tiles, one per sub-block
//!    (32 values: 8 rows of 64 bytes; 16 values: 4 rows), with the type's AVX-512 decoder
//!    (`AmxKind::decode`).
//! 2. For each 16 tokens, for each block, **one tile product per sub-block** (signed activations
//!    of the A tile, 512 contiguous bytes of the activations' copy in tile order, [`tile_acts`], ×
//!    the weights: `tdpbssd` where the decoder
//!    took the quants' offset out, `tdpbsud` for unsigned quants): the exact int32 sum of each
//!    token and row, stored to a small buffer. Sums must not cross a sub-block (each has its
//!    own scale), so one tile product covers one sub-block.
//! 3. **The float epilogue** (`AmxKind::accumulate`) reads those sums and does what the type's
//!    AVX-512 tile does after its `vpdpbusd` chain: the offsets, integer sub-block scales, and the
//!    float scaling and accumulation in block order, with the accumulators of the 16 tokens in
//!    registers. Sub-blocks go to the tile unit in batches of 16, their epilogues after them.

use crate::amx::TileConfig;
use crate::blocks::{BlockQ8K, BlockQ8_0, BlockQ8_1};
use crate::packed::gemm512::sum4_total;
use crate::types::GgmlType;
use std::arch::x86_64::*;
use std::cell::RefCell;
use std::mem::size_of;

/// What a packed type provides for the AMX GEMM: its sub-blocks' decoder and its epilogue.
///
/// # Safety
/// `decode` and `accumulate` are called only where AVX-512 (`Isa::Avx512Vnni`) runs, with
/// pointers to whole records, activation rows and aux values of the type.
pub(crate) unsafe trait AmxKind {
    /// Sub-blocks per block.
    const S: usize;
    /// B-tile rows (registers of 4 values per row) per sub-block: 8 (32 values) or 4 (16).
    const G: usize;
    /// Whether blocks go to four running sums by `b % 4` (the decoded references' order), added
    /// as `(s0 + s1) + (s2 + s3)` at the end; else one sum, `acc[0]`.
    const SUM4: bool = false;
    /// Whether `decode` gives signed quants (offsets already taken out: `tdpbssd`) or unsigned
    /// ones (`tdpbsud`).
    const SIGNED: bool;
    /// What the epilogue needs of a record (scales, mins), read once per block and 16 tokens.
    type Block: Copy;
    /// The quants of sub-block `s` of the record at `rec` (registers `G..` unused), as B-tile
    /// rows: value `4g + j` of lane `r`'s row in byte `j` of register `g`.
    unsafe fn decode(rec: *const u8, s: usize) -> [__m512i; 8];
    unsafe fn block(rec: *const u8) -> Self::Block;
    /// Adds block `b` (of `nb`) of one token to its sums `acc` (see `SUM4`): `act` is the token's activation row,
    /// `aux` its side data (`packed::ActAux`), and sub-block `s`'s 16 row sums `Σ u · y` are the
    /// i32 at `sums + 256 s`.
    unsafe fn accumulate(
        w: &Self::Block,
        b: usize,
        nb: usize,
        act: *const u8,
        aux: *const i32,
        sums: *const i32,
        acc: &mut [__m512; 4],
    );
}

/// `Σ_s sc[s] · sums_s`: the exact sum of a block's sub-block sums (at `sums + 256 s`) times
/// their integer scales, as the AVX-512 tiles add them.
///
/// # Safety
/// `N` sub-blocks' sums at `sums`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
pub(crate) unsafe fn scaled_sum<const N: usize>(sums: *const i32, sc: &[__m512i; N]) -> __m512i {
    let mut isum = _mm512_setzero_si512();
    for (s, sc) in sc.iter().enumerate() {
        // SAFETY: sub-block s's 16 sums (the caller's promise).
        let p = unsafe { _mm512_load_si512(sums.add(256 * s).cast()) };
        isum = _mm512_add_epi32(isum, _mm512_mullo_epi32(p, *sc));
    }
    isum
}

/// One call of the AMX GEMM: a group's `nb` records (`stride` bytes apart) at `w`; `tiles` × 16
/// tokens whose activation rows start at `act` (`row_bytes` apart), their quants in tile order
/// ([`tile_acts`]) at `tiled`, their aux values at `aux` (`aux_per_token` apart); token `t`'s 16
/// outputs at `out + t · rows`, lanes of `mask` written.
pub(crate) struct AmxArgs {
    pub nb: usize,
    pub stride: usize,
    pub w: *const u8,
    pub act: *const u8,
    pub tiled: *const u8,
    pub row_bytes: usize,
    pub aux: *const i32,
    pub aux_per_token: usize,
    pub out: *mut f32,
    pub rows: usize,
    pub tiles: usize,
    pub mask: u16,
}

/// A type's AMX GEMM ([`gemm`] for its [`AmxKind`]).
///
/// # Safety
/// `cpu::amx()` holds; the pointers of [`AmxArgs`] cover what they describe, and no other thread
/// writes those outputs meanwhile.
pub(crate) type AmxGemm = unsafe fn(&AmxArgs);

thread_local! {
    /// The calling thread's unpacked panel, grown as needed and kept for the next call.
    static PANEL: RefCell<Vec<__m512i>> = const { RefCell::new(Vec::new()) };
}

/// The AMX GEMM of [`AmxKind`] `K`, as an [`AmxGemm`].
///
/// # Safety
/// As for [`AmxGemm`].
pub(crate) unsafe fn gemm<K: AmxKind>(p: &AmxArgs) {
    PANEL.with(|panel| {
        let mut panel = panel.borrow_mut();
        let need = p.nb * K::S * K::G;
        if panel.len() < need {
            panel.resize(need, _mm512_setzero_si512_const());
        }
        // SAFETY: forwarded from the caller; the panel holds `need` vectors.
        unsafe { run::<K>(p, panel.as_mut_ptr()) }
    })
}

/// A zero vector without a target feature (for `Vec::resize`).
const fn _mm512_setzero_si512_const() -> __m512i {
    // SAFETY: __m512i is plain data; all-zero bits are a valid value.
    unsafe { std::mem::transmute([0u64; 8]) }
}

/// Tile configuration for `G` B-tile rows: sums in tmm0–3 (16 tokens × 16 rows of i32), used in
/// turn; per register set `r` (0, 1), used in turn, activations in tmm`4 + 2r` (16 tokens × `4G`
/// bytes) and weights in tmm`5 + 2r` (`G` rows of 64 bytes).
const fn config(g: usize) -> TileConfig {
    let k = 4 * g as u16;
    TileConfig::new()
        .tile(0, 16, 64)
        .tile(1, 16, 64)
        .tile(2, 16, 64)
        .tile(3, 16, 64)
        .tile(4, 16, k)
        .tile(5, g as u8, 64)
        .tile(6, 16, k)
        .tile(7, g as u8, 64)
}

const CONFIG_G4: TileConfig = config(4);
const CONFIG_G8: TileConfig = config(8);

/// One sub-block's product on the tile unit: the weights (`G` rows of 64 bytes at `$b`) into tile
/// `$w`, 16 tokens' activations (rows 32 bytes apart from `$a`) into tile `$t`, their products
/// summed by `$op` (`tdpbssd` or `tdpbsud`) into tile `$c` from zero.
macro_rules! product {
    ($op:literal, $c:literal, $t:literal, $w:literal, $a:expr, $b:expr) => {
        std::arch::asm!(
            concat!("tileloadd tmm", $w, ", [{b} + {sixty_four}*1]"),
            concat!("tileloadd tmm", $t, ", [{a} + {thirty_two}*1]"),
            concat!("tilezero tmm", $c),
            concat!($op, " tmm", $c, ", tmm", $t, ", tmm", $w),
            a = in(reg) $a,
            b = in(reg) $b,
            sixty_four = in(reg) 64usize,
            thirty_two = in(reg) 32usize,
            options(nostack, readonly, preserves_flags)
        )
    };
}

/// Stores tile `$c` (16 rows of 64 bytes) at `$out`.
macro_rules! store {
    ($c:literal, $out:expr) => {
        std::arch::asm!(
            concat!("tilestored [{out} + {sixty_four}*1], tmm", $c),
            out = in(reg) $out,
            sixty_four = in(reg) 64usize,
            options(nostack, preserves_flags)
        )
    };
}

/// Products in flight before the first of them is stored: a store waits for its product (~50
/// cycles), so each is stored two products after its own, while the next ones run.
const LAG: usize = 2;

/// Sub-blocks per batch: the tile unit computes a batch's sums, then the vector unit their
/// epilogues (on these cores the two do not overlap within a thread, so nothing is gained by
/// interleaving them finer, and whole batches keep every load of the sums behind its store).
const BATCH: usize = 16;

/// Sums of 16 tokens for a batch of sub-blocks.
#[repr(C, align(64))]
struct Sums([[i32; 256]; BATCH]);

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn run<K: AmxKind>(p: &AmxArgs, panel: *mut __m512i) {
    assert!(K::S <= BATCH && (K::G == 4 || K::G == 8));
    // SAFETY: forwarded from the caller.
    unsafe { unpack::<K>(p, panel) };
    // SAFETY: AMX may run (the caller's promise); the configurations are valid.
    unsafe {
        if K::G == 8 {
            CONFIG_G8.load()
        } else {
            CONFIG_G4.load()
        }
    };
    let mut sums = std::mem::MaybeUninit::<Sums>::uninit();
    for tile in 0..p.tiles {
        // SAFETY: forwarded from the caller; tile < tiles.
        unsafe { tile_of::<K>(p, panel, tile, sums.as_mut_ptr().cast()) };
    }
    // SAFETY: AMX may run; returns the tiles to their unused state.
    unsafe { crate::amx::release() };
}

/// Decodes the group's records into the panel: sub-block `i` (block `i / S`, sub-block `i % S`)
/// as `G` B-tile rows at `panel + G i`.
///
/// # Safety
/// As for [`AmxGemm`]; the panel holds `nb · S · G` vectors.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn unpack<K: AmxKind>(p: &AmxArgs, panel: *mut __m512i) {
    for b in 0..p.nb {
        for s in 0..K::S {
            // SAFETY: record b is inside the group (the caller's promise); the panel holds
            // nb · S · G vectors.
            unsafe {
                let x = K::decode(p.w.add(b * p.stride), s);
                let dst = panel.add((b * K::S + s) * K::G);
                for (g, x) in x.iter().take(K::G).enumerate() {
                    _mm512_store_si512(dst.add(g), *x);
                }
            }
        }
    }
}

/// The outputs of tile `tile` (16 tokens): batches of sub-blocks on the tile unit, each followed
/// by its blocks' epilogues.
///
/// # Safety
/// As for [`AmxGemm`], `tile < p.tiles`, the panel unpacked, the tiles configured for `K::G`,
/// `sums` a writable, aligned [`Sums`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn tile_of<K: AmxKind>(p: &AmxArgs, panel: *const __m512i, tile: usize, sums: *mut i32) {
    // SAFETY: tile < tiles: 16 token rows, aux values and outputs from these (the caller's
    // promise); the tile's quants in `tiled` (`tile_acts`: 16 rows of nb · S · 4G quants).
    let (act, aux, out, tiled) = unsafe {
        let t0 = 16 * tile;
        (
            p.act.add(t0 * p.row_bytes),
            p.aux.add(t0 * p.aux_per_token),
            p.out.add(t0 * p.rows),
            p.tiled.add(t0 * p.nb * K::S * 4 * K::G),
        )
    };
    let batch = BATCH / K::S;
    let mut acc = [[_mm512_setzero_ps(); 4]; 16];
    for b0 in (0..p.nb).step_by(batch) {
        let blocks = b0..(b0 + batch).min(p.nb);
        // SAFETY: sub-blocks of these blocks, at most BATCH, inside the panel and the tile.
        unsafe { products::<K>(tiled, panel, blocks.start * K::S..blocks.end * K::S, sums) };
        for b in blocks {
            // SAFETY: record b, token rows and aux values as above; the sums of block b are
            // stored (`products`) at its place in the batch.
            unsafe {
                let blk = K::block(p.w.add(b * p.stride));
                let at = sums.add((b - b0) * K::S * 256);
                for (t, acc) in acc.iter_mut().enumerate() {
                    let (a, x) = (act.add(t * p.row_bytes), aux.add(t * p.aux_per_token));
                    K::accumulate(&blk, b, p.nb, a, x, at.add(16 * t), acc);
                }
            }
        }
    }
    for (t, acc) in acc.iter().enumerate() {
        let sum = if K::SUM4 { sum4_total(acc) } else { acc[0] };
        // SAFETY: token t's 16 outputs, lanes of `mask` (the caller's promise).
        unsafe { _mm512_mask_storeu_ps(out.add(t * p.rows), p.mask, sum) };
    }
}

/// The sums of sub-blocks `subs` of one tile: sub-block `i`'s 16 tokens × 16 rows at
/// `sums + 256 (i - subs.start)`, in sums tiles 0–3 in turn, each stored [`LAG`] products later.
///
/// # Safety
/// `tiled` is the tile's quants ([`tile_acts`]), the panel holds the sub-blocks, at most
/// [`BATCH`] of them, `sums` as for [`tile_of`], the tiles configured for `K::G`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn products<K: AmxKind>(
    tiled: *const u8,
    panel: *const __m512i,
    subs: std::ops::Range<usize>,
    sums: *mut i32,
) {
    let store = |i: usize| {
        // SAFETY: 1 KB inside `sums` (i - subs.start < BATCH).
        unsafe {
            let o = sums.add(256 * (i - subs.start));
            match i % 4 {
                0 => store!("0", o),
                1 => store!("1", o),
                2 => store!("2", o),
                _ => store!("3", o),
            }
        }
    };
    for i in subs.clone() {
        let v = i * 4 * K::G;
        // SAFETY: the A tile reads 16 rows of 4G bytes, 32 apart, inside the tile's chunk of 32
        // quants of each token (`tile_acts`); the B tile reads G vectors of the panel.
        unsafe {
            let (a, w) = (tiled.add(v / 32 * 512 + v % 32), panel.add(i * K::G));
            match (K::SIGNED, i % 4) {
                (true, 0) => product!("tdpbssd", "0", "4", "5", a, w),
                (true, 1) => product!("tdpbssd", "1", "6", "7", a, w),
                (true, 2) => product!("tdpbssd", "2", "4", "5", a, w),
                (true, _) => product!("tdpbssd", "3", "6", "7", a, w),
                (false, 0) => product!("tdpbsud", "0", "4", "5", a, w),
                (false, 1) => product!("tdpbsud", "1", "6", "7", a, w),
                (false, 2) => product!("tdpbsud", "2", "4", "5", a, w),
                (false, _) => product!("tdpbsud", "3", "6", "7", a, w),
            }
        }
        if i >= subs.start + LAG {
            store(i - LAG);
        }
    }
    for i in subs.end.saturating_sub(LAG).max(subs.start)..subs.end {
        store(i);
    }
}

/// The quants of activations in the A-tile order of [`gemm`]: for each whole tile of 16 tokens
/// (`n_tokens / 16` of them), for each 32 quants of a row, the 16 tokens' 32 bytes one after
/// another (512 bytes), so that an A tile of 32 (or 16) quants of 16 tokens is 512 contiguous
/// bytes (rows 32 apart) instead of 16 rows scattered over the activations. `ty` is the
/// activation type (Q8_0, Q8_1 or Q8_K) of rows of `row_bytes` at `q`.
pub(crate) fn tile_acts(ty: GgmlType, q: &[u8], row_bytes: usize, n_tokens: usize) -> Vec<u8> {
    let (block_bytes, qs, qk) = match ty {
        GgmlType::Q8_0 => (size_of::<BlockQ8_0>(), 2, 32),
        GgmlType::Q8_1 => (size_of::<BlockQ8_1>(), 4, 32),
        GgmlType::Q8_K => (size_of::<BlockQ8K>(), 4, 256),
        _ => return Vec::new(),
    };
    let k = row_bytes / block_bytes * qk;
    let tiles = n_tokens / 16;
    let mut out = vec![0u8; tiles * 16 * k];
    for (tile, dst) in out.chunks_exact_mut(16 * k).enumerate() {
        for r in 0..16 {
            let row = &q[(16 * tile + r) * row_bytes..][..row_bytes];
            for (b, block) in row.chunks_exact(block_bytes).enumerate() {
                for c in 0..qk / 32 {
                    let chunk = (b * qk) / 32 + c;
                    let at = chunk * 512 + r * 32;
                    dst[at..at + 32].copy_from_slice(&block[qs + 32 * c..qs + 32 * c + 32]);
                }
            }
        }
    }
    out
}
