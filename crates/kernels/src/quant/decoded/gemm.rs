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

/// How a [`Panel`]'s values hold the scales: folded into the values (`q' = q * sc`, or
/// `-q * sc` where only the negated products fit a byte), or beside them (`q`, scaled per run).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fold {
    Plus,
    Minus,
    Unfolded,
}

/// One super-block of up to 16 rows, interleaved: vector `v`, lane `r` (a dword), byte `j`
/// holds value `4v + j` of row `r` plus 128 (unsigned for `vpdpbusd`), where the value is
/// `q * sc` (`Fold::Plus`), `-q * sc` (`Fold::Minus`) or `q` (`Fold::Unfolded`, when the products
/// of some row do not fit a byte; then `sc` holds the scales per run and `scp` the same as i16
/// pairs); the mins as i16 pairs (`mp`, run `2k` low, `2k + 1` high); the rows' `d` and `dmin`.
/// Missing rows are zero (they contribute nothing). `xs` and `qs` are scratch of `fill`.
#[repr(C, align(64))]
pub(crate) struct Panel {
    w: [[u32; ROWS]; QK_K / 4],
    sc: [[i32; ROWS]; QK_K / 16],
    scp: [[u32; ROWS]; QK_K / 32],
    mp: [[u32; ROWS]; QK_K / 32],
    d: [f32; ROWS],
    dmin: [f32; ROWS],
    fold: Fold,
    has_min: bool,
    xs: [DecodedK; ROWS],
    qs: [[i8; QK_K]; ROWS],
}

impl Panel {
    pub(crate) fn new() -> Box<Panel> {
        Box::new(Panel {
            w: [[0x8080_8080; ROWS]; QK_K / 4],
            sc: [[0; ROWS]; QK_K / 16],
            scp: [[0; ROWS]; QK_K / 32],
            mp: [[0; ROWS]; QK_K / 32],
            d: [0.0; ROWS],
            dmin: [0.0; ROWS],
            fold: Fold::Unfolded,
            has_min: false,
            xs: [DecodedK::ZERO; ROWS],
            qs: [[0; QK_K]; ROWS],
        })
    }

    /// Decodes block `b` of each of `rows` (at most 16 row slices of the weight type) into the
    /// panel.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/VL and VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(crate) unsafe fn fill(
        &mut self,
        decode: DecodeKFn,
        rows: &[&[u8]],
        b: usize,
        block_bytes: usize,
    ) {
        assert!(rows.len() <= ROWS);
        for r in 0..ROWS {
            if r < rows.len() {
                let x = std::slice::from_mut(&mut self.xs[r]);
                decode(&rows[r][b * block_bytes..(b + 1) * block_bytes], x);
            } else {
                self.xs[r] = DecodedK::ZERO;
            }
        }
        self.fold = self.fold_products();
        self.fill_scales();
        let (k80, zero) = (_mm512_set1_epi8(-128), _mm512_setzero_si512());
        for c in 0..QK_K / 64 {
            let mut m: [__m512i; ROWS] = std::array::from_fn(|r| {
                let src = match self.fold {
                    Fold::Unfolded => &self.xs[r].q,
                    _ => &self.qs[r],
                };
                // SAFETY: `src` holds 256 bytes; chunk `c` is bytes 64c..64c + 64.
                let v = unsafe { _mm512_loadu_si512(src.as_ptr().add(64 * c).cast()) };
                let v = if self.fold == Fold::Minus {
                    _mm512_sub_epi8(zero, v)
                } else {
                    v
                };
                _mm512_xor_si512(v, k80)
            });
            transpose16(&mut m);
            for (j, v) in m.into_iter().enumerate() {
                // SAFETY: `w[16c + j]` is 16 dwords (64 bytes).
                unsafe { _mm512_storeu_si512(self.w[16 * c + j].as_mut_ptr().cast(), v) };
            }
        }
    }

    /// Multiplies each row's values by their run's scale into `qs` (truncated to bytes) and says
    /// whether every product, or every negated product, fits a signed byte.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    fn fold_products(&mut self) -> Fold {
        let (mut hi, mut lo) = (_mm512_set1_epi16(i16::MIN), _mm512_set1_epi16(i16::MAX));
        // Lanes 0..16 take scale `2h`, lanes 16..32 scale `2h + 1`.
        let idx: [__m512i; QK_K / 32] = std::array::from_fn(|h| {
            let lanes: [i16; 32] = std::array::from_fn(|i| (2 * h + i / 16) as i16);
            // SAFETY: `lanes` is 32 i16 (64 bytes).
            unsafe { _mm512_loadu_si512(lanes.as_ptr().cast()) }
        });
        for r in 0..ROWS {
            let x = &self.xs[r];
            // SAFETY: `sc` is 16 i16 (32 bytes).
            let sc = _mm512_castsi256_si512(unsafe { _mm256_loadu_si256(x.sc.as_ptr().cast()) });
            for (h, idx) in idx.iter().enumerate() {
                // SAFETY: `q` holds 256 bytes; values 32h..32h + 32 are read.
                let q = unsafe { _mm256_loadu_si256(x.q.as_ptr().add(32 * h).cast()) };
                // |q * sc| <= 128 * 255 fits i16.
                let p =
                    _mm512_mullo_epi16(_mm512_cvtepi8_epi16(q), _mm512_permutexvar_epi16(*idx, sc));
                (hi, lo) = (_mm512_max_epi16(hi, p), _mm512_min_epi16(lo, p));
                // SAFETY: `qs[r]` holds 256 bytes; bytes 32h..32h + 32 are written.
                unsafe {
                    _mm256_storeu_si256(
                        self.qs[r].as_mut_ptr().add(32 * h).cast(),
                        _mm512_cvtepi16_epi8(p),
                    )
                };
            }
        }
        let above = |v: __m512i, t: i16| _mm512_cmpgt_epi16_mask(v, _mm512_set1_epi16(t)) != 0;
        let below = |v: __m512i, t: i16| _mm512_cmplt_epi16_mask(v, _mm512_set1_epi16(t)) != 0;
        if !above(hi, 127) && !below(lo, -128) {
            Fold::Plus
        } else if !above(hi, 128) && !below(lo, -127) {
            Fold::Minus
        } else {
            Fold::Unfolded
        }
    }

    /// The rows' scales (unfolded only), mins, `d` and `dmin` into their lanes.
    fn fill_scales(&mut self) {
        let pair = |v: &[i16; QK_K / 16], k: usize| {
            (v[2 * k] as u16 as u32) | ((v[2 * k + 1] as u16 as u32) << 16)
        };
        self.has_min = self.xs.iter().any(|x| x.m.iter().any(|&m| m != 0));
        for (r, x) in self.xs.iter().enumerate() {
            if self.fold == Fold::Unfolded {
                for s in 0..QK_K / 16 {
                    self.sc[s][r] = x.sc[s] as i32;
                }
                for k in 0..QK_K / 32 {
                    self.scp[k][r] = pair(&x.sc, k);
                }
            }
            if self.has_min {
                for k in 0..QK_K / 32 {
                    self.mp[k][r] = pair(&x.m, k);
                }
            }
            self.d[r] = x.d;
            self.dmin[r] = x.dmin;
        }
    }
}

/// Transposes 16 x 16 dwords in place (`m[i]` lane `j` becomes `m[j]` lane `i`): four rounds,
/// round `k` swapping bit `k` of the row index with bit `k` of the lane index.
#[target_feature(enable = "avx512f")]
#[inline]
fn transpose16(m: &mut [__m512i; 16]) {
    for k in 0..4 {
        let bit = 1i32 << k;
        // Row `i` (bit `k` clear) lane `c` takes row `i | bit_k(c)`'s lane `c & !bit`, and row
        // `i | bit` takes row `i | bit_k(c)`'s lane `c | bit`; `16 +` selects the second source.
        let sel = |c: i32, or: i32| (if c & bit != 0 { 16 } else { 0 }) + ((c & !bit) | or);
        let lo: [i32; 16] = std::array::from_fn(|c| sel(c as i32, 0));
        let hi: [i32; 16] = std::array::from_fn(|c| sel(c as i32, bit));
        // SAFETY: both arrays are 16 i32.
        let (lo, hi) = unsafe {
            (
                _mm512_loadu_si512(lo.as_ptr().cast()),
                _mm512_loadu_si512(hi.as_ptr().cast()),
            )
        };
        for i in (0..16).filter(|i| i & (1 << k) == 0) {
            let (a, b) = (m[i], m[i | 1 << k]);
            m[i] = _mm512_permutex2var_epi32(a, lo, b);
            m[i | 1 << k] = _mm512_permutex2var_epi32(a, hi, b);
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

/// The exact integer sums `Σ_s sc[s] * Σ q * a` of `N` tokens against a panel: with the scales
/// folded, `Σ (q' + 128) * a` is the products' sum plus `128 * Σ a`; unfolded, each run's sum is
/// scaled, and `128 * Σ_s sc[s] * bsums[s]` comes off.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn int_sums<const N: usize>(p: &Panel, a: &[&BlockQ8K; N]) -> [__m512i; N] {
    let zero = _mm512_setzero_si512();
    // SAFETY: `qs` holds 256 bytes and `4v + 4 <= 256`.
    let act = |t: usize, v: usize| unsafe {
        _mm512_set1_epi32(a[t].qs.as_ptr().add(4 * v).cast::<i32>().read_unaligned())
    };
    // SAFETY: `w[v]` is 16 dwords (64 bytes).
    let wv = |v: usize| unsafe { _mm512_loadu_si512(p.w[v].as_ptr().cast()) };
    let mut is = [zero; N];
    if p.fold == Fold::Unfolded {
        let mut corr = [zero; N];
        for s in 0..QK_K / 16 {
            let mut dp = [zero; N];
            for v in 4 * s..4 * s + 4 {
                let w = wv(v);
                for t in 0..N {
                    dp[t] = _mm512_dpbusd_epi32(dp[t], w, act(t, v));
                }
            }
            // SAFETY: `sc[s]` is 16 i32 (64 bytes).
            let sc = unsafe { _mm512_loadu_si512(p.sc[s].as_ptr().cast()) };
            for t in 0..N {
                is[t] = _mm512_add_epi32(is[t], _mm512_mullo_epi32(dp[t], sc));
            }
        }
        for k in 0..QK_K / 32 {
            // SAFETY: `scp[k]` is 16 dwords (64 bytes).
            let scp = unsafe { _mm512_loadu_si512(p.scp[k].as_ptr().cast()) };
            for t in 0..N {
                corr[t] = _mm512_dpwssd_epi32(corr[t], scp, bsum_pair(a[t], k));
            }
        }
        return std::array::from_fn(|t| _mm512_sub_epi32(is[t], _mm512_slli_epi32(corr[t], 7)));
    }
    let mut is2 = [zero; N];
    for v in (0..QK_K / 4).step_by(2) {
        let (w0, w1) = (wv(v), wv(v + 1));
        for t in 0..N {
            is[t] = _mm512_dpbusd_epi32(is[t], w0, act(t, v));
            is2[t] = _mm512_dpbusd_epi32(is2[t], w1, act(t, v + 1));
        }
    }
    std::array::from_fn(|t| {
        let total: i32 = a[t].bsums.iter().map(|&b| b as i32).sum();
        let corr = _mm512_set1_epi32(total << 7);
        let dp = _mm512_add_epi32(is[t], is2[t]);
        if p.fold == Fold::Plus {
            _mm512_sub_epi32(dp, corr)
        } else {
            _mm512_sub_epi32(corr, dp)
        }
    })
}

/// `bsums[2k]` (low half) and `bsums[2k + 1]` (high) of `a` in every dword.
#[target_feature(enable = "avx512f")]
#[inline]
fn bsum_pair(a: &BlockQ8K, k: usize) -> __m512i {
    let (lo, hi) = (
        a.bsums[2 * k] as u16 as u32,
        a.bsums[2 * k + 1] as u16 as u32,
    );
    _mm512_set1_epi32((lo | hi << 16) as i32)
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
    let is = int_sums(p, &a);
    let mut ms = [_mm512_setzero_si512(); N];
    if p.has_min {
        for k in 0..QK_K / 32 {
            // SAFETY: `mp[k]` is 16 dwords (64 bytes).
            let mp = unsafe { _mm512_loadu_si512(p.mp[k].as_ptr().cast()) };
            for t in 0..N {
                ms[t] = _mm512_dpwssd_epi32(ms[t], mp, bsum_pair(a[t], k));
            }
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
        let da = _mm512_set1_ps(a[t].d);
        let term = _mm512_sub_ps(
            _mm512_mul_ps(_mm512_mul_ps(d, da), _mm512_cvtepi32_ps(is[t])),
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
