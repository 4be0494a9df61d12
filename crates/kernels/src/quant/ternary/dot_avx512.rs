//! The AVX-512 VNNI row kernel of TQ2_0 (one weight row against one Q8_K row, for decode): the
//! 2-bit fields `t` go straight into `vpdpbusd` as unsigned bytes, and `Σ y` (from the block sums)
//! is taken back out, so `Σ (t - 1) · y` is the decoded reference's exact integer sum; each
//! block's float steps and their order are `decoded::dot_k`'s, so the result equals it bit for bit.

use super::BlockTQ2_0;
use crate::blocks::BlockQ8K;
use crate::quant::decoded::x86::f16_to_f32;
use crate::quant::decoded::{sum4, term_without_mins};
use crate::simd::check_row;
use crate::types::GgmlType;
use crate::view::blocks_of;
use std::arch::x86_64::*;

/// `quant::decoded::dot_k` of `n` values of a TQ2_0 row, decoded, against Q8_K `a`.
pub(super) fn dot_tq2_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    check_row(GgmlType::TQ2_0, n, w, a);
    // SAFETY: `ternary::rows` returns this kernel only for `Isa::Avx512Vnni`, which
    // `quant::row_kernels` caps at what the CPU has.
    unsafe { dot_impl(w, a) }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
fn dot_impl(w: &[u8], a: &[u8]) -> f32 {
    let (x, y) = (blocks_of::<BlockTQ2_0>(w), blocks_of::<BlockQ8K>(a));
    let m3 = _mm512_set1_epi8(3);
    sum4!(x.len(), |i| {
        let (x, y) = (&x[i], &y[i]);
        // SAFETY: `qs` is 64 bytes, `bsums` 32, `y.qs` 256 (every load below).
        unsafe {
            // -Σ y over the block (the fields are the quants + 1).
            let bs = _mm256_loadu_si256(y.bsums.as_ptr().cast());
            let neg = _mm256_madd_epi16(bs, _mm256_set1_epi16(-1));
            let mut acc = _mm512_zextsi256_si512(neg);
            let qs = _mm512_loadu_si512(x.qs.as_ptr().cast());
            // Byte m of shift l: value 32 l + m (bytes 0..32) or 128 + 32 l + m (bytes 32..64).
            let fields = [
                _mm512_and_si512(qs, m3),
                _mm512_and_si512(_mm512_srli_epi16::<2>(qs), m3),
                _mm512_and_si512(_mm512_srli_epi16::<4>(qs), m3),
                _mm512_and_si512(_mm512_srli_epi16::<6>(qs), m3),
            ];
            for (l, t) in fields.iter().enumerate() {
                let lo = _mm256_loadu_si256(y.qs.as_ptr().add(32 * l).cast());
                let hi = _mm256_loadu_si256(y.qs.as_ptr().add(128 + 32 * l).cast());
                let yv = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
                acc = _mm512_dpbusd_epi32(acc, *t, yv);
            }
            let is = _mm512_reduce_add_epi32(acc);
            term_without_mins(f16_to_f32(x.d.to_bits()), y.d, is)
        }
    })
}
