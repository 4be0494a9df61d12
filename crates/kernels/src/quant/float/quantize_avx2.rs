//! The AVX2 activation quantizer into F16, byte-identical to the scalar one in `quantize`
//! (same float operations; `vcvtps2dq` rounds half to even like the scalar magic-number
//! rounding); the tail past the last 8 values goes to the scalar code. 256-bit code serves the
//! AVX-512 level too: quantization is a small share of a matmul.

use crate::simd::QuantizeRowFn;
use crate::types::GgmlType;
use std::arch::x86_64::*;

/// The AVX2 quantizer of activation type `ty`, if this family has one for it.
pub(crate) fn quantizer(ty: GgmlType) -> Option<QuantizeRowFn> {
    (ty == GgmlType::F16).then_some(quantize_f16 as QuantizeRowFn)
}

fn quantize_f16(src: &[f32], dst: &mut [u8]) {
    crate::simd::check_quantized_row(GgmlType::F16, src, dst);
    let whole = src.len() / 8 * 8;
    // SAFETY: `whole` values fit both slices; the CPU has these features (dispatch).
    unsafe { imp::f16(&src[..whole], &mut dst[..2 * whole]) };
    super::quantize_row(GgmlType::F16, &src[whole..], &mut dst[2 * whole..]);
}

mod imp {
    use super::*;

    /// f32 to f16 with round-to-nearest-even (what `half::f16::from_f32` does).
    ///
    /// # Safety: the CPU has AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn f16(x: &[f32], out: &mut [u8]) {
        assert!(x.len().is_multiple_of(8) && out.len() == 2 * x.len());
        for (x, o) in x.chunks_exact(8).zip(out.chunks_exact_mut(16)) {
            // SAFETY: 8 values in, 16 bytes out.
            unsafe {
                let h = _mm256_cvtps_ph(_mm256_loadu_ps(x.as_ptr()), _MM_FROUND_TO_NEAREST_INT);
                _mm_storeu_si128(o.as_mut_ptr().cast(), h);
            }
        }
    }
}
