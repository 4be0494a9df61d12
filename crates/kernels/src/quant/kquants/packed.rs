//! The packed (row-interleaved) records of Q2_K, Q3_K, Q4_K, Q5_K and Q6_K, their packing, and their
//! [`Layout`]s for the packed GEMM (`crate::packed`; tiles in `gemm512`, `gemm256`).
//!
//! Record layout of one block of a group of 16 rows (missing rows of the last group are zero):
//!
//! * Q4_K (2368 bytes): per 32-value sub-block `s` (at `272 s`, [`q4k`]), 4 nibble vectors laid
//!   out like Q4_0's, then the 16 rows' sub-block scales (16 bytes); after the 8 sub-blocks, the
//!   mins as 4 vectors of 16-bit pairs `(min 2p, min 2p + 1)` (stored as bytes, 32 per pair);
//!   `d`; `dmin`.
//! * Q5_K (2880 bytes): Q4_K's record with, per sub-block (at `336 s`), a fifth-bit vector laid
//!   out like Q5_0's between the nibbles and the scales.
//! * Q6_K (3360 bytes): per 32 values `c` (at `416 c`, [`q6k`]), the low 4 bits as 4 nibble
//!   vectors; the top 2 bits as 2 vectors `h` (lane `r`, byte `j`, bits `2m..2m + 2` hold the top
//!   bits of value `32c + 16h + 4m + j`); the scales of sub-blocks `2c` and `2c + 1` (16 bytes
//!   each, one per row); then `d` (at 3328).
//! * Q2_K (1600 bytes): per 16-value sub-block `k` (at [`q2k::low`]`(k)` = `80 k`), one 2-bit
//!   vector (lane `r`, byte `j`, bits `2m..2m + 2` hold value `16k + 4m + j`, 0..3) and the 16
//!   rows' sub-block scales (low nibbles, 16 bytes); the mins (high nibbles) as 8 vectors of
//!   16-bit pairs `(min 2p, min 2p + 1)` (stored as bytes, 32 per pair, at `1280 + 32 p`); `d` (at
//!   1536); `dmin` (at 1568).
//! * Q3_K (1824 bytes): per pair of sub-blocks `2c, 2c + 1` (at `224 c`), the high (`hmask`) bits
//!   as one vector (lane `r`, byte `j`, bit `4h + m` is the high bit of value `16(2c + h) + 4m +
//!   j`), then per sub-block `k` of the pair its two low bits like Q2_K's and its 16 signed 6-bit
//!   scales ([`q3k`]); a value is `low | high << 2` in 0..7, its quant that minus 4; `d` (at
//!   1792).
//!
//! The records are laid out in the order their tiles read them: decode (one token)
//! streams the weights, and reading several places of a record at once keeps the hardware
//! prefetchers from following.

use super::blocks::*;
use super::{q3k_scales, scale_min_k4};
use crate::packed::{lane, put_f16, put_fifth_bits, put_nibbles, Layout, PackFn};
use crate::types::{GgmlType, QK_K};

/// The packed layout of a k-quant, if it has one.
pub(crate) fn layout(ty: GgmlType) -> Option<Layout> {
    #[cfg(target_arch = "x86_64")]
    {
        use super::{gemm256 as g2, gemm512 as g5};
        use crate::packed::gemm_amx::{gemm, AmxGemm};
        use crate::packed::{gemm256::tiles256, gemm512::tiles512, packer};
        let amx: Option<AmxGemm> = match ty {
            GgmlType::Q4_K => Some(gemm::<g5::AmxQ4k<false>>),
            GgmlType::Q5_K => Some(gemm::<g5::AmxQ4k<true>>),
            GgmlType::Q6_K => Some(gemm::<g5::AmxQ6k>),
            GgmlType::Q2_K => Some(gemm::<g5::AmxQ2k>),
            GgmlType::Q3_K => Some(gemm::<g5::AmxQ3k>),
            _ => None,
        };
        let (record_bytes, pack, avx512, avx2): (usize, PackFn, _, _) = match ty {
            GgmlType::Q2_K => (
                1600,
                packer!(BlockQ2K, pack_q2_k),
                tiles512!(g5::tile_q2k),
                None,
            ),
            GgmlType::Q3_K => (
                1824,
                packer!(BlockQ3K, pack_q3_k),
                tiles512!(g5::tile_q3k),
                None,
            ),
            GgmlType::Q4_K => (
                2368,
                packer!(BlockQ4K, pack_q4_k),
                tiles512!(g5::tile_q4k, false),
                Some(tiles256!(g2::tile_q4k, false)),
            ),
            GgmlType::Q5_K => (
                2880,
                packer!(BlockQ5K, pack_q5_k),
                tiles512!(g5::tile_q4k, true),
                Some(tiles256!(g2::tile_q4k, true)),
            ),
            GgmlType::Q6_K => (
                3360,
                packer!(BlockQ6K, pack_q6_k),
                tiles512!(g5::tile_q6k),
                Some(tiles256!(g2::tile_q6k)),
            ),
            _ => return None,
        };
        Some(Layout {
            record_bytes,
            pack,
            avx512,
            avx2,
            amx,
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ty;
        None
    }
}

#[inline(always)]
fn pack_q4_k(x: &BlockQ4K, i: usize, rec: &mut [u8]) {
    for s in 0..8 {
        let q = &x.qs[32 * (s / 2)..32 * (s / 2) + 32];
        let u: Vec<u8> = q
            .iter()
            .map(|&v| if s % 2 == 0 { v & 0xF } else { v >> 4 })
            .collect();
        put_nibbles(rec, q4k::nibbles(false, s), i, &u);
        put_scale_min(rec, false, s, i, scale_min_k4(s, &x.scales));
    }
    put_f16(rec, q4k::d(false), i, x.d);
    put_f16(rec, q4k::d(false) + 32, i, x.dmin);
}

/// Row `i`'s scale and min of sub-block `s` into a Q4_K (or, `fifth`, Q5_K) record.
#[inline(always)]
fn put_scale_min(rec: &mut [u8], fifth: bool, s: usize, i: usize, (sc, m): (u8, u8)) {
    rec[q4k::scales(fifth, s) + i] = sc;
    rec[q4k::mins(fifth, s / 2) + 2 * i + s % 2] = m;
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
        put_nibbles(rec, q4k::nibbles(true, s), i, &u);
        put_fifth_bits(rec, q4k::fifth_bits(s), i, &u);
        put_scale_min(rec, true, s, i, scale_min_k4(s, &x.scales));
    }
    put_f16(rec, q4k::d(true), i, x.d);
    put_f16(rec, q4k::d(true) + 32, i, x.dmin);
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
        put_nibbles(rec, q6k::nibbles(c), i, u);
        for h in 0..2 {
            for j in 0..4 {
                let mut t = 0u8;
                for m in 0..4 {
                    t |= (u[16 * h + 4 * m + j] >> 4) << (2 * m);
                }
                *lane(rec, q6k::high(c, h), i, j) = t;
            }
        }
    }
    for k in 0..16 {
        rec[q6k::scales(k) + i] = x.scales[k] as u8;
    }
    put_f16(rec, 3328, i, x.d);
}

/// The 256 two-bit values of a Q2_K / Q3_K block in value order: byte `l` of each 32-byte half
/// of `qs` holds values `l`, `l + 32`, `l + 64`, `l + 96` of the half.
fn low2(qs: &[u8; QK_K / 4]) -> [u8; QK_K] {
    let mut u = [0u8; QK_K];
    for (o, u) in u.iter_mut().enumerate() {
        *u = (qs[32 * (o / 128) + o % 32] >> (2 * ((o % 128) / 32))) & 3;
    }
    u
}

/// Puts the 2-bit values `u` (value order) of row `i` into the 16 sub-block vectors at 0.
fn put_low2(rec: &mut [u8], i: usize, u: &[u8; QK_K], at: fn(usize) -> usize) {
    for k in 0..16 {
        for j in 0..4 {
            let mut t = 0u8;
            for m in 0..4 {
                t |= (u[16 * k + 4 * m + j] & 3) << (2 * m);
            }
            *lane(rec, at(k), i, j) = t;
        }
    }
}

/// Offsets in a packed Q4_K record, or (`fifth`) Q5_K record (module docs).
pub(crate) mod q4k {
    /// Bytes per sub-block: nibbles, (fifth bits,) scales.
    const fn unit(fifth: bool) -> usize {
        if fifth {
            336
        } else {
            272
        }
    }
    /// The 4 nibble vectors of sub-block `s`.
    pub(crate) const fn nibbles(fifth: bool, s: usize) -> usize {
        unit(fifth) * s
    }
    /// The fifth-bit vector of Q5_K sub-block `s`.
    pub(crate) const fn fifth_bits(s: usize) -> usize {
        unit(true) * s + 256
    }
    /// The 16 rows' scales of sub-block `s`.
    pub(crate) const fn scales(fifth: bool, s: usize) -> usize {
        unit(fifth) * s + unit(fifth) - 16
    }
    /// The mins' pair vector `q` (sub-blocks `2q`, `2q + 1`).
    pub(crate) const fn mins(fifth: bool, q: usize) -> usize {
        8 * unit(fifth) + 32 * q
    }
    /// The 16 rows' `d`, then (32 bytes on) their `dmin`.
    pub(crate) const fn d(fifth: bool) -> usize {
        8 * unit(fifth) + 128
    }
}

/// Offsets in a packed Q6_K record (module docs).
pub(crate) mod q6k {
    /// The 4 nibble vectors of values `32c..32c + 32`.
    pub(crate) const fn nibbles(c: usize) -> usize {
        416 * c
    }
    /// The top-bits vector `h` of values `32c..32c + 32`.
    pub(crate) const fn high(c: usize, h: usize) -> usize {
        416 * c + 256 + 64 * h
    }
    /// The 16 rows' scales of sub-block `k`.
    pub(crate) const fn scales(k: usize) -> usize {
        416 * (k / 2) + 384 + 16 * (k % 2)
    }
}

/// Offsets in a packed Q2_K record (module docs).
pub(crate) mod q2k {
    /// The 2-bit vector of sub-block `k`.
    pub(crate) const fn low(k: usize) -> usize {
        80 * k
    }
    /// The 16 rows' scales of sub-block `k`.
    pub(crate) const fn scales(k: usize) -> usize {
        80 * k + 64
    }
}

/// Offsets in a packed Q3_K record (module docs).
pub(crate) mod q3k {
    /// The high-bit vector of sub-blocks `2c` and `2c + 1`.
    pub(crate) const fn high(c: usize) -> usize {
        224 * c
    }
    /// The low-2-bit vector of sub-block `k`.
    pub(crate) const fn low(k: usize) -> usize {
        224 * (k / 2) + 64 + 80 * (k % 2)
    }
    /// The 16 rows' scales of sub-block `k`.
    pub(crate) const fn scales(k: usize) -> usize {
        q3k::low(k) + 64
    }
    use super::q3k;
}

#[inline(always)]
fn pack_q2_k(x: &BlockQ2K, i: usize, rec: &mut [u8]) {
    put_low2(rec, i, &low2(&x.qs), q2k::low);
    for k in 0..16 {
        rec[q2k::scales(k) + i] = x.scales[k] & 0xF;
        rec[1280 + 32 * (k / 2) + 2 * i + k % 2] = x.scales[k] >> 4;
    }
    put_f16(rec, 1536, i, x.d);
    put_f16(rec, 1568, i, x.dmin);
}

#[inline(always)]
fn pack_q3_k(x: &BlockQ3K, i: usize, rec: &mut [u8]) {
    put_low2(rec, i, &low2(&x.qs), q3k::low);
    // Value o's high bit: bit `o / 32` of hmask[o % 32].
    let high = |o: usize| (x.hmask[o % 32] >> (o / 32)) & 1;
    for c in 0..8 {
        for j in 0..4 {
            let mut t = 0u8;
            for h in 0..2 {
                for m in 0..4 {
                    t |= high(16 * (2 * c + h) + 4 * m + j) << (4 * h + m);
                }
            }
            *lane(rec, q3k::high(c), i, j) = t;
        }
    }
    for (k, sc) in q3k_scales(&x.scales).iter().enumerate() {
        rec[q3k::scales(k) + i] = *sc as u8;
    }
    put_f16(rec, 1792, i, x.d);
}
