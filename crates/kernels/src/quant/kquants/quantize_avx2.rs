//! The AVX2 activation quantizer into Q8_K, byte-identical to the scalar one in `quantize`
//! (same float operations; `vcvtps2dq` rounds half to even like the scalar magic-number
//! rounding), handing blocks with non-finite values to the scalar code. 256-bit code serves the
//! AVX-512 level too: quantization is a small share of a matmul.

use crate::blocks::BlockQ8K;
use crate::simd::QuantizeRowFn;
use crate::types::{GgmlType, QK_K};
use std::arch::x86_64::*;

/// The AVX2 quantizer of activation type `ty`, if this family has one for it.
pub(crate) fn quantizer(ty: GgmlType) -> Option<QuantizeRowFn> {
    (ty == GgmlType::Q8_K).then_some(quantize_q8_k as QuantizeRowFn)
}

fn quantize_q8_k(src: &[f32], dst: &mut [u8]) {
    crate::simd::check_quantized_row(GgmlType::Q8_K, src, dst);
    for (x, b) in src
        .chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(std::mem::size_of::<BlockQ8K>()))
    {
        // SAFETY: 256 values and a 292-byte block; the CPU has these features (dispatch).
        if !unsafe { imp::q8_k_block(x, b) } {
            super::quantize::quantize_activations(GgmlType::Q8_K, x, b);
        }
    }
}

mod imp {
    use super::*;
    use crate::simd::avx2::prims::*;

    /// ggml's Q8_K activation block (`quantize::quantize_row`), or `false` without writing when
    /// a value is not finite or the block's scale overflows.
    ///
    /// # Safety: the CPU has AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q8_k_block(x: &[f32], out: &mut [u8]) -> bool {
        assert!(x.len() == QK_K && out.len() == std::mem::size_of::<BlockQ8K>());
        // SAFETY: x holds 256 f32.
        let v: [__m256; 32] =
            std::array::from_fn(|k| unsafe { _mm256_loadu_ps(x.as_ptr().add(8 * k)) });
        if !all_finite(&v) {
            return false;
        }
        let mut m = _mm256_setzero_ps();
        for &v in &v {
            m = _mm256_max_ps(m, abs(v));
        }
        let amax = hmax(m);
        if amax == 0.0 {
            out.fill(0);
            return true;
        }
        // The scale comes from the first value of largest magnitude, with its sign.
        let am = _mm256_set1_ps(amax);
        let first = v
            .iter()
            .enumerate()
            .find_map(|(k, &v)| {
                let hit = _mm256_movemask_ps(_mm256_cmp_ps(abs(v), am, _CMP_EQ_OQ));
                (hit != 0).then(|| 8 * k + hit.trailing_zeros() as usize)
            })
            .expect("amax is one of the values");
        let iscale = -127.0 / x[first];
        if !iscale.is_finite() {
            // As in `q8_0_block`: leave subnormal blocks to the scalar code.
            return false;
        }
        let is = _mm256_set1_ps(iscale);
        let top = _mm256_set1_epi32(127);
        let q: [__m256i; 32] = std::array::from_fn(|k| {
            _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(is, v[k])), top)
        });
        out[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
        // 8 groups of 32 bytes, and for each the sums of its two 16-value halves.
        let ones = _mm256_set1_epi8(1);
        let mut sums = [_mm256_setzero_si256(); 8];
        for g in 0..8 {
            let bytes = pack32([q[4 * g], q[4 * g + 1], q[4 * g + 2], q[4 * g + 3]]);
            // SAFETY: group g's 32 quants lie inside the 256 after the 4-byte scale.
            unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(4 + 32 * g).cast(), bytes) };
            // Per 128-bit lane (one 16-value half): four partial sums of 4 values each.
            sums[g] = _mm256_madd_epi16(_mm256_maddubs_epi16(ones, bytes), _mm256_set1_epi16(1));
        }
        // Two rounds of hadd leave lane 0 = [half 0 of groups g..g+4], lane 1 = [half 1 ...].
        let h = |a: usize| {
            _mm256_hadd_epi32(
                _mm256_hadd_epi32(sums[a], sums[a + 1]),
                _mm256_hadd_epi32(sums[a + 2], sums[a + 3]),
            )
        };
        let p = _mm256_packs_epi32(h(0), h(4));
        let (even, odd) = (_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
        // SAFETY: the 32 bytes of bsums follow the quants.
        unsafe {
            let b = out.as_mut_ptr().add(4 + QK_K);
            _mm_storeu_si128(b.cast(), _mm_unpacklo_epi16(even, odd));
            _mm_storeu_si128(b.add(16).cast(), _mm_unpackhi_epi16(even, odd));
        }
        true
    }
}
