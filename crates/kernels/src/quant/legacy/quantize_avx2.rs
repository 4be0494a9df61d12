//! The AVX2 activation quantizer into Q8_0, byte-identical to the scalar one in `quantize`
//! (same float operations; `vcvtps2dq` rounds half to even like the scalar magic-number
//! rounding), handing blocks with non-finite values to the scalar code. 256-bit code serves the
//! AVX-512 level too: quantization is a small share of a matmul.

use crate::blocks::BlockQ8_0;
use crate::simd::QuantizeRowFn;
use crate::types::{GgmlType, QK};
use std::arch::x86_64::*;

/// The AVX2 quantizer of activation type `ty`, if this family has one for it.
pub(crate) fn quantizer(ty: GgmlType) -> Option<QuantizeRowFn> {
    (ty == GgmlType::Q8_0).then_some(quantize_q8_0 as QuantizeRowFn)
}

fn quantize_q8_0(src: &[f32], dst: &mut [u8]) {
    crate::simd::check_quantized_row(GgmlType::Q8_0, src, dst);
    for (x, b) in src
        .chunks_exact(QK)
        .zip(dst.chunks_exact_mut(std::mem::size_of::<BlockQ8_0>()))
    {
        // SAFETY: 32 values and a 34-byte block; the CPU has these features (dispatch).
        if !unsafe { imp::q8_0_block(x, b) } {
            super::quantize::quantize_activations(GgmlType::Q8_0, x, b);
        }
    }
}

mod imp {
    use super::*;
    use crate::simd::avx2::prims::*;

    /// ggml's Q8_0 activation block (`quantize::quantize_row`), or `false` without writing when
    /// a value is not finite or the block's scale overflows.
    ///
    /// # Safety: the CPU has AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q8_0_block(x: &[f32], out: &mut [u8]) -> bool {
        assert!(x.len() == QK && out.len() == std::mem::size_of::<BlockQ8_0>());
        // SAFETY: x holds 32 f32.
        let v: [__m256; 4] =
            std::array::from_fn(|k| unsafe { _mm256_loadu_ps(x.as_ptr().add(8 * k)) });
        if !all_finite(&v) {
            return false;
        }
        let amax = hmax(_mm256_max_ps(
            _mm256_max_ps(abs(v[0]), abs(v[1])),
            _mm256_max_ps(abs(v[2]), abs(v[3])),
        ));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        if !id.is_finite() {
            // A subnormal amax: the scalar code's rounding of inf/NaN products is not vcvtps2dq's.
            return false;
        }
        let id = _mm256_set1_ps(id);
        let q = v.map(|v| _mm256_cvtps_epi32(_mm256_mul_ps(v, id)));
        out[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
        // SAFETY: 32 bytes follow the 2-byte scale.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(2).cast(), pack32(q)) };
        true
    }
}
