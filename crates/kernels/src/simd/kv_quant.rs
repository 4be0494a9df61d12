//! Widening Q8_0/Q4_0 KV blocks to f32 (`kv_quant::widen_rows`, `widen_cols`) on 512-bit and
//! 256-bit registers: each value converted and multiplied by its scale once, as the scalar
//! reference does, so the results are the same bits.

use crate::cpu::Isa;
use crate::kv_quant::{ColsAt, KvQuant, QuantRows, RowsAt, QK};
use half::f16;
use std::arch::x86_64::*;

/// `kv_quant::widen_rows` at `isa` (AVX2 or above); bounds checked by the caller.
pub(crate) fn widen_rows(isa: Isa, src: &QuantRows, w: RowsAt, out: &mut [f32]) {
    let (ty, (q, d)) = (src.kind(), src.raw());
    for r in 0..w.n_rows {
        let base = w.at + r * w.stride;
        for c in 0..w.width / QK {
            let e = base + c * QK;
            let scale = d[e / QK].to_f32();
            let dst = &mut out[r * w.width + c * QK..][..QK];
            // The 32 quants of value e: 32 bytes (Q8_0) or 16 (Q4_0), in bounds as the caller
            // checked (`e + 32 <= len`).
            let src = match ty {
                KvQuant::Q8_0 => &q[e..e + QK],
                KvQuant::Q4_0 => &q[e / 2..e / 2 + QK / 2],
            };
            // SAFETY: `src` holds the block's quants and `dst` 32 floats (slices above); the
            // dispatcher confirmed the CPU has the level's features.
            unsafe {
                match isa {
                    Isa::Avx512Vnni => avx512_block(ty, src.as_ptr(), scale, dst.as_mut_ptr()),
                    _ => avx2_block(ty, src.as_ptr(), scale, dst.as_mut_ptr()),
                }
            }
        }
    }
}

/// `kv_quant::widen_cols` at `isa` (AVX2 or above) for `lanes` a multiple of 16 and `at` even;
/// bounds checked by the caller.
pub(crate) fn widen_cols(isa: Isa, src: &QuantRows, c: ColsAt, out: &mut [f32]) {
    debug_assert!(c.lanes.is_multiple_of(16) && c.at.is_multiple_of(2));
    let (ty, (q, d)) = (src.kind(), src.raw());
    for r in 0..c.n_rows {
        for j0 in (0..c.lanes).step_by(16) {
            let e = c.at + r * c.lanes + j0;
            let scales = &d[c.scale_at + (r / QK) * c.lanes + j0..][..16];
            let dst = &mut out[r * c.lanes + j0..][..16];
            let src = match ty {
                KvQuant::Q8_0 => &q[e..e + 16],
                KvQuant::Q4_0 => &q[e / 2..e / 2 + 8],
            };
            // SAFETY: `src` holds 16 quants, `scales` 16 scales and `dst` 16 floats (slices
            // above); the dispatcher confirmed the CPU has the level's features.
            unsafe {
                match isa {
                    Isa::Avx512Vnni => {
                        avx512_lanes(ty, src.as_ptr(), scales.as_ptr(), dst.as_mut_ptr())
                    }
                    _ => avx2_lanes(ty, src.as_ptr(), scales.as_ptr(), dst.as_mut_ptr()),
                }
            }
        }
    }
}

/// 16 Q4_0 quants from 8 bytes at `p` (low nibble first), as signed bytes.
///
/// # Safety
/// 8 bytes at `p` are readable; the CPU has SSE2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn q4_16(p: *const u8) -> __m128i {
    // SAFETY: 8 readable bytes (the caller's guarantee).
    let v = unsafe { _mm_loadl_epi64(p.cast()) };
    let m = _mm_set1_epi8(15);
    let lo = _mm_and_si128(v, m);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(v), m);
    _mm_sub_epi8(_mm_unpacklo_epi8(lo, hi), _mm_set1_epi8(8))
}

/// 32 quants of one row block at `p` widened and scaled into `out`.
///
/// # Safety
/// The block's quants at `p` (32 or 16 bytes) and 32 floats at `out`; AVX-512 F/BW/VL.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")]
unsafe fn avx512_block(ty: KvQuant, p: *const u8, scale: f32, out: *mut f32) {
    let s = _mm512_set1_ps(scale);
    // SAFETY: the reads and writes stay in the block (the caller's guarantee).
    unsafe {
        let (a, b) = match ty {
            KvQuant::Q8_0 => (_mm_loadu_si128(p.cast()), _mm_loadu_si128(p.add(16).cast())),
            KvQuant::Q4_0 => (q4_16(p), q4_16(p.add(8))),
        };
        for (h, v) in [a, b].into_iter().enumerate() {
            let f = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v));
            _mm512_storeu_ps(out.add(16 * h), _mm512_mul_ps(f, s));
        }
    }
}

/// 16 lanes of a column row: quants at `p`, scales at `d`, into `out`.
///
/// # Safety
/// 16 quants at `p` (16 or 8 bytes), 16 scales at `d`, 16 floats at `out`; AVX-512 F/BW/VL.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")]
unsafe fn avx512_lanes(ty: KvQuant, p: *const u8, d: *const f16, out: *mut f32) {
    // SAFETY: the reads and writes stay in the caller's 16 lanes.
    unsafe {
        let v = match ty {
            KvQuant::Q8_0 => _mm_loadu_si128(p.cast()),
            KvQuant::Q4_0 => q4_16(p),
        };
        let s = _mm512_cvtph_ps(_mm256_loadu_si256(d.cast()));
        let f = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v));
        _mm512_storeu_ps(out, _mm512_mul_ps(f, s));
    }
}

/// Eight signed bytes (the low half of `v`) as floats.
#[inline]
#[target_feature(enable = "avx2")]
fn cvt8(v: __m128i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v))
}

/// [`avx512_block`] on 256-bit registers.
///
/// # Safety
/// As [`avx512_block`]; AVX2.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2_block(ty: KvQuant, p: *const u8, scale: f32, out: *mut f32) {
    let s = _mm256_set1_ps(scale);
    // SAFETY: as in `avx512_block`.
    unsafe {
        let (a, b) = match ty {
            KvQuant::Q8_0 => (_mm_loadu_si128(p.cast()), _mm_loadu_si128(p.add(16).cast())),
            KvQuant::Q4_0 => (q4_16(p), q4_16(p.add(8))),
        };
        for (h, v) in [a, b].into_iter().enumerate() {
            _mm256_storeu_ps(out.add(16 * h), _mm256_mul_ps(cvt8(v), s));
            let f = cvt8(_mm_srli_si128::<8>(v));
            _mm256_storeu_ps(out.add(16 * h + 8), _mm256_mul_ps(f, s));
        }
    }
}

/// [`avx512_lanes`] on 256-bit registers.
///
/// # Safety
/// As [`avx512_lanes`]; AVX2 and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2_lanes(ty: KvQuant, p: *const u8, d: *const f16, out: *mut f32) {
    // SAFETY: as in `avx512_lanes`.
    unsafe {
        let v = match ty {
            KvQuant::Q8_0 => _mm_loadu_si128(p.cast()),
            KvQuant::Q4_0 => q4_16(p),
        };
        for h in 0..2 {
            let s = _mm256_cvtph_ps(_mm_loadu_si128(d.add(8 * h).cast()));
            let f = cvt8(if h == 0 { v } else { _mm_srli_si128::<8>(v) });
            _mm256_storeu_ps(out.add(8 * h), _mm256_mul_ps(f, s));
        }
    }
}
