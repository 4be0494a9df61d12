//! Prefill over decoded super-blocks with AVX-512 VNNI: sixteen weight rows at a time, one per
//! 32-bit lane, so a broadcast activation dword feeds sixteen rows per `vpdpbusd` and no
//! horizontal sums are needed (the layout idea of `crate::packed`, built here on the fly from the
//! decoded form, per block, and reused by every token of a token block).
//!
//! Every output is bit-identical to the row path (`dot_k` at the same level): the same exact
//! integers per block, the same float operations, blocks summed in `sum4!`'s order.

use super::{Decode32Fn, DecodeKFn, Decoded32, DecodedK};
use crate::blocks::BlockQ8K;
use crate::types::{QK, QK_K};
use std::arch::x86_64::*;

/// Weight rows per panel: one per 32-bit lane of a 512-bit register.
pub(crate) const ROWS: usize = 16;

/// One super-block of up to 16 rows, interleaved: vector `v`, lane `r` (a dword), byte `j`
/// holds value `4v + j` of row `r` plus 128 (unsigned for `vpdpbusd`); per run of 16 values the
/// rows' scales and mins; the rows' `d` and `dmin`. Missing rows are zero (they contribute
/// nothing).
#[repr(C, align(64))]
pub(crate) struct Panel {
    w: [[u32; ROWS]; QK_K / 4],
    sc: [[i32; ROWS]; QK_K / 16],
    m: [[i32; ROWS]; QK_K / 16],
    d: [f32; ROWS],
    dmin: [f32; ROWS],
}

impl Panel {
    pub(crate) fn new() -> Box<Panel> {
        Box::new(Panel {
            w: [[0x8080_8080; ROWS]; QK_K / 4],
            sc: [[0; ROWS]; QK_K / 16],
            m: [[0; ROWS]; QK_K / 16],
            d: [0.0; ROWS],
            dmin: [0.0; ROWS],
        })
    }

    /// Decodes block `b` of each of `rows` (at most 16 row slices of the weight type) into the
    /// panel.
    pub(crate) fn fill(&mut self, decode: DecodeKFn, rows: &[&[u8]], b: usize, block_bytes: usize) {
        assert!(rows.len() <= ROWS);
        let mut x = [DecodedK::ZERO];
        for r in 0..ROWS {
            if r < rows.len() {
                decode(&rows[r][b * block_bytes..(b + 1) * block_bytes], &mut x);
            } else {
                x[0] = DecodedK::ZERO;
            }
            let x = &x[0];
            for (v, w) in self.w.iter_mut().enumerate() {
                w[r] = dword(&x.q, v) ^ 0x8080_8080;
            }
            for s in 0..QK_K / 16 {
                self.sc[s][r] = x.sc[s] as i32;
                self.m[s][r] = x.m[s] as i32;
            }
            self.d[r] = x.d;
            self.dmin[r] = x.dmin;
        }
    }
}

/// Values `4v .. 4v + 4` of `q` as one little-endian dword.
#[inline(always)]
fn dword(q: &[i8], v: usize) -> u32 {
    u32::from_le_bytes([
        q[4 * v] as u8,
        q[4 * v + 1] as u8,
        q[4 * v + 2] as u8,
        q[4 * v + 3] as u8,
    ])
}

/// Four running sums per row lane (block `b` into sum `b % 4`), one set per token.
pub(crate) type Sums = [[f32; ROWS]; 4];

/// The four sums added as `sum4!` adds them: `(s0 + s1) + (s2 + s3)`.
pub(crate) fn total(s: &Sums, r: usize) -> f32 {
    (s[0][r] + s[1][r]) + (s[2][r] + s[3][r])
}

/// Adds block `b`'s terms for `N` tokens (activation blocks `a`) to their sums.
///
/// # Safety
/// The CPU has AVX-512 F/BW/VL and VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn accumulate<const N: usize>(
    p: &Panel,
    a: [&BlockQ8K; N],
    sums: &mut [Sums; N],
    b: usize,
) {
    let zero = _mm512_setzero_si512();
    let (mut is, mut corr, mut ms) = ([zero; N], [zero; N], [zero; N]);
    for s in 0..QK_K / 16 {
        let mut dp = [zero; N];
        for v in 4 * s..4 * s + 4 {
            // SAFETY: `w[v]` is 16 dwords (64 bytes).
            let w = unsafe { _mm512_loadu_si512(p.w[v].as_ptr().cast()) };
            for t in 0..N {
                // SAFETY: `qs` holds 256 bytes and `4v + 4 <= 256`.
                let dword = unsafe { a[t].qs.as_ptr().add(4 * v).cast::<i32>().read_unaligned() };
                dp[t] = _mm512_dpbusd_epi32(dp[t], w, _mm512_set1_epi32(dword));
            }
        }
        // SAFETY: `sc[s]` and `m[s]` are 16 i32 (64 bytes).
        let (sc, m) = unsafe {
            (
                _mm512_loadu_si512(p.sc[s].as_ptr().cast()),
                _mm512_loadu_si512(p.m[s].as_ptr().cast()),
            )
        };
        for t in 0..N {
            let bs = _mm512_set1_epi32(a[t].bsums[s] as i32);
            is[t] = _mm512_add_epi32(is[t], _mm512_mullo_epi32(dp[t], sc));
            corr[t] = _mm512_add_epi32(corr[t], _mm512_mullo_epi32(sc, bs));
            ms[t] = _mm512_add_epi32(ms[t], _mm512_mullo_epi32(m, bs));
        }
    }
    // SAFETY: `d` and `dmin` are 16 f32.
    let (d, dmin) = unsafe {
        (
            _mm512_loadu_ps(p.d.as_ptr()),
            _mm512_loadu_ps(p.dmin.as_ptr()),
        )
    };
    for t in 0..N {
        let is = _mm512_sub_epi32(is[t], _mm512_slli_epi32(corr[t], 7));
        let da = _mm512_set1_ps(a[t].d);
        let term = _mm512_sub_ps(
            _mm512_mul_ps(_mm512_mul_ps(d, da), _mm512_cvtepi32_ps(is)),
            _mm512_mul_ps(_mm512_mul_ps(dmin, da), _mm512_cvtepi32_ps(ms[t])),
        );
        let slot = &mut sums[t][b % 4];
        // SAFETY: `slot` is 16 f32.
        unsafe {
            let acc = _mm512_loadu_ps(slot.as_ptr());
            _mm512_storeu_ps(slot.as_mut_ptr(), _mm512_add_ps(acc, term));
        }
    }
}

/// One 32-value block of up to 16 rows, interleaved like [`Panel`]'s values but signed (here the
/// activations are the unsigned operand, `a + 128`, so the weights' sums `qsum` take the offset
/// off), with the rows' `d` and `m`.
#[repr(C, align(64))]
pub(crate) struct Panel32 {
    w: [[u32; ROWS]; QK / 4],
    qsum: [i32; ROWS],
    d: [f32; ROWS],
    m: [f32; ROWS],
}

impl Panel32 {
    pub(crate) fn new() -> Box<Panel32> {
        Box::new(Panel32 {
            w: [[0; ROWS]; QK / 4],
            qsum: [0; ROWS],
            d: [0.0; ROWS],
            m: [0.0; ROWS],
        })
    }

    /// Decodes 32-value block `b` of each of `rows` (at most 16) into the panel; weight blocks
    /// hold `block_len` values (a multiple of 32: Q1_0's 128 are four decoded blocks).
    pub(crate) fn fill(
        &mut self,
        decode: Decode32Fn,
        rows: &[&[u8]],
        b: usize,
        (block_len, block_bytes): (usize, usize),
    ) {
        assert!(rows.len() <= ROWS && block_len % QK == 0);
        let per = block_len / QK;
        let (wb, sub) = (b / per, b % per);
        let mut x = vec![Decoded32::ZERO; per];
        for r in 0..ROWS {
            if r < rows.len() {
                decode(&rows[r][wb * block_bytes..(wb + 1) * block_bytes], &mut x);
            } else {
                x[sub] = Decoded32::ZERO;
            }
            let x = &x[sub];
            for (v, w) in self.w.iter_mut().enumerate() {
                w[r] = dword(&x.q, v);
            }
            self.qsum[r] = x.q.iter().map(|&q| q as i32).sum();
            self.d[r] = x.d;
            self.m[r] = x.m;
        }
    }
}

/// One token's activation block as the 32-value kernels use it: quants, `d` and `s` (Q8_1;
/// unused against Q8_0).
#[derive(Clone, Copy)]
pub(crate) struct Act32<'a> {
    pub qs: &'a [i8; QK],
    pub d: f32,
    pub s: f32,
}

/// Adds block `b`'s terms for `N` tokens to their sums: `(d * a.d) * isum`, plus `m * a.s`
/// against Q8_1 (`Q8_1`), as `dot_32_q8_0` / `dot_32_q8_1` compute them.
///
/// # Safety
/// The CPU has AVX-512 F/BW/VL and VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn accumulate32<const N: usize, const Q8_1: bool>(
    p: &Panel32,
    a: [Act32<'_>; N],
    sums: &mut [Sums; N],
    b: usize,
) {
    let mut dp = [_mm512_setzero_si512(); N];
    for v in 0..QK / 4 {
        // SAFETY: `w[v]` is 16 dwords (64 bytes).
        let w = unsafe { _mm512_loadu_si512(p.w[v].as_ptr().cast()) };
        for t in 0..N {
            // SAFETY: `qs` holds 32 bytes and `4v + 4 <= 32`.
            let dword = unsafe { a[t].qs.as_ptr().add(4 * v).cast::<u32>().read_unaligned() };
            let unsigned = _mm512_set1_epi32((dword ^ 0x8080_8080) as i32);
            dp[t] = _mm512_dpbusd_epi32(dp[t], unsigned, w);
        }
    }
    // SAFETY: `qsum` is 16 i32, `d` and `m` 16 f32.
    let (bias, d, m) = unsafe {
        (
            _mm512_slli_epi32(_mm512_loadu_si512(p.qsum.as_ptr().cast()), 7),
            _mm512_loadu_ps(p.d.as_ptr()),
            _mm512_loadu_ps(p.m.as_ptr()),
        )
    };
    for t in 0..N {
        let is = _mm512_sub_epi32(dp[t], bias);
        let mut term = _mm512_mul_ps(
            _mm512_mul_ps(d, _mm512_set1_ps(a[t].d)),
            _mm512_cvtepi32_ps(is),
        );
        if Q8_1 {
            term = _mm512_add_ps(term, _mm512_mul_ps(m, _mm512_set1_ps(a[t].s)));
        }
        let slot = &mut sums[t][b % 4];
        // SAFETY: `slot` is 16 f32.
        unsafe {
            let acc = _mm512_loadu_ps(slot.as_ptr());
            _mm512_storeu_ps(slot.as_mut_ptr(), _mm512_add_ps(acc, term));
        }
    }
}
