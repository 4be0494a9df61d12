//! The decoded form of a weight row and the scalar reference of the generic dot products over it.
//!
//! A family's decoder turns each weight block into small signed integers `q` with integer scales,
//! so that one block's part of a dot product with quantized activations is an exact integer sum
//! scaled by floats in a fixed order. ggml's dot products for every k-, i- and t-quant, Q4_1,
//! Q5_1, IQ4_NL and MXFP4 have that shape; the generic kernels (`x86`: AVX2 and AVX-512, at each
//! instruction-set level) compute the same integers and the same float operations as the
//! functions here, so they agree with them bit for bit.

#[cfg(target_arch = "x86_64")]
pub(crate) mod gemm;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;

use crate::blocks::{BlockQ8K, BlockQ8_0, BlockQ8_1};
use crate::cpu::Isa;
use crate::types::{QK, QK_K};
use crate::view::blocks_of;

/// 256 weights decoded for a dot product with one Q8_K activation block `a`:
///
/// `a.d * (d * Σ_s sc[s] * Σ_{j in s} q[j] * a.qs[j]) - a.d * (dmin * Σ_s m[s] * a.bsums[s])`,
///
/// `s` running over the 16 runs of 16 values, computed as
/// `(d * a.d) * isum as f32 - (dmin * a.d) * msum as f32` with exact i32 sums `isum`, `msum`.
/// Decoders keep `|sc[s]| <= 255` and `|m[s]| <= 255` so that no integer sum can overflow.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C, align(64))]
pub struct DecodedK {
    pub q: [i8; QK_K],
    pub sc: [i16; QK_K / 16],
    pub m: [i16; QK_K / 16],
    pub d: f32,
    pub dmin: f32,
}

impl DecodedK {
    pub const ZERO: DecodedK = DecodedK {
        q: [0; QK_K],
        sc: [0; QK_K / 16],
        m: [0; QK_K / 16],
        d: 0.0,
        dmin: 0.0,
    };
}

/// 32 weights decoded for a dot product with one Q8_0 or Q8_1 activation block `a`:
/// `(d * a.d) * Σ q[j] * a.qs[j] as f32`, plus `m * a.s` against Q8_1 (ggml's Q4_1/Q5_1 form).
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C, align(8))]
pub struct Decoded32 {
    pub q: [i8; QK],
    pub d: f32,
    pub m: f32,
}

impl Decoded32 {
    pub const ZERO: Decoded32 = Decoded32 {
        q: [0; QK],
        d: 0.0,
        m: 0.0,
    };
}

/// Decodes one row of weight blocks into 256-value super-blocks (`out.len()` = blocks in the row).
pub type DecodeKFn = fn(row: &[u8], out: &mut [DecodedK]);

/// Decodes one row of weight blocks into 32-value blocks (`out.len()` = row length / 32).
pub type Decode32Fn = fn(row: &[u8], out: &mut [Decoded32]);

/// How a type's rows are decoded: which form, and the decoder.
#[derive(Clone, Copy)]
pub enum Decoder {
    K(DecodeKFn),
    B32(Decode32Fn),
}

/// Sums `$term` over blocks `$i in 0..$n` into four running sums (block `i` into sum `i % 4`),
/// added as `(s0 + s1) + (s2 + s3)` at the end: four independent dependency chains instead of one
/// long one, summed in the same order at every instruction-set level.
macro_rules! sum4 {
    ($n:expr, |$i:ident| $term:expr) => {{
        let n: usize = $n;
        let mut s = [0.0f32; 4];
        let mut base = 0;
        while base + 4 <= n {
            for (j, s) in s.iter_mut().enumerate() {
                let $i = base + j;
                *s += $term;
            }
            base += 4;
        }
        for (j, s) in s.iter_mut().enumerate().take(n - base) {
            let $i = base + j;
            *s += $term;
        }
        (s[0] + s[1]) + (s[2] + s[3])
    }};
}
pub(crate) use sum4;

/// Per-block terms summed in the order of every decoded dot product (`sum4!`), for tests that
/// compare with a transcription of ggml's per-block arithmetic.
#[cfg(test)]
pub(crate) fn sum_in_kernel_order(terms: &[f32]) -> f32 {
    sum4!(terms.len(), |i| terms[i])
}

/// `Σ q * a` over equal-length runs, exactly.
fn isum(q: &[i8], a: &[i8]) -> i32 {
    q.iter().zip(a).map(|(&x, &y)| x as i32 * y as i32).sum()
}

/// [`dot_k`]'s term for one block of a decoded form without mins (`dmin` = 0, `m` = 0), in the
/// same operations: what a fused kernel that never fills a `DecodedK` computes per block.
#[inline(always)]
pub(crate) fn term_without_mins(d: f32, dy: f32, is: i32) -> f32 {
    (d * dy) * is as f32 - (0.0 * dy) * 0.0
}

/// The reference dot product of decoded super-blocks with a Q8_K activation row.
pub fn dot_k(w: &[DecodedK], a: &[u8]) -> f32 {
    let a = blocks_of::<BlockQ8K>(a);
    assert_eq!(w.len(), a.len(), "dot_k: block counts differ");
    sum4!(w.len(), |i| {
        let (x, y) = (&w[i], &a[i]);
        let mut is = 0i32;
        let mut ms = 0i32;
        for s in 0..QK_K / 16 {
            let r = 16 * s..16 * s + 16;
            is += x.sc[s] as i32 * isum(&x.q[r.clone()], &y.qs[r]);
            ms += x.m[s] as i32 * y.bsums[s] as i32;
        }
        (x.d * y.d) * is as f32 - (x.dmin * y.d) * ms as f32
    })
}

/// The reference dot product of decoded 32-value blocks with a Q8_0 activation row.
pub fn dot_32_q8_0(w: &[Decoded32], a: &[u8]) -> f32 {
    let a = blocks_of::<BlockQ8_0>(a);
    assert_eq!(w.len(), a.len(), "dot_32: block counts differ");
    sum4!(w.len(), |i| {
        let (x, y) = (&w[i], &a[i]);
        (x.d * y.d.to_f32()) * isum(&x.q, &y.qs) as f32
    })
}

/// The reference dot product of decoded 32-value blocks with a Q8_1 activation row.
pub fn dot_32_q8_1(w: &[Decoded32], a: &[u8]) -> f32 {
    let a = blocks_of::<BlockQ8_1>(a);
    assert_eq!(w.len(), a.len(), "dot_32: block counts differ");
    sum4!(w.len(), |i| {
        let (x, y) = (&w[i], &a[i]);
        (x.d * y.d.to_f32()) * isum(&x.q, &y.qs) as f32 + x.m * y.s.to_f32()
    })
}

const _: () = {
    assert!(std::mem::size_of::<DecodedK>() == 384);
    assert!(std::mem::size_of::<Decoded32>() == 40);
};

/// The generic dot product over decoded super-blocks at `isa` (checked available), if SIMD.
pub(super) fn simd_dot_k(isa: Isa) -> Option<super::DotKFn> {
    #[cfg(target_arch = "x86_64")]
    {
        match isa {
            Isa::Avx512Vnni => Some(x86::avx512::dot_k),
            Isa::Avx2 => Some(x86::avx2::dot_k),
            Isa::Scalar => None,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = isa;
        None
    }
}

/// The generic dot product over decoded 32-value blocks against Q8_1 (`q8_1`) or Q8_0 activations.
pub(super) fn simd_dot_32(isa: Isa, q8_1: bool) -> Option<super::Dot32Fn> {
    #[cfg(target_arch = "x86_64")]
    {
        use x86::{avx2, avx512};
        match (isa, q8_1) {
            (Isa::Avx512Vnni, true) => Some(avx512::dot_32_q8_1),
            (Isa::Avx512Vnni, false) => Some(avx512::dot_32_q8_0),
            (Isa::Avx2, true) => Some(avx2::dot_32_q8_1),
            (Isa::Avx2, false) => Some(avx2::dot_32_q8_0),
            (Isa::Scalar, _) => None,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, q8_1);
        None
    }
}
