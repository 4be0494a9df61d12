//! AVX2 + FMA + F16C row kernels of Q8_0, Q4_0 and Q5_0 against Q8_0 activations, one row and
//! four rows (the weight block decoded once for four tokens), each bit-identical to the reference
//! in `reference` (blocks summed by `sum_blocks!`'s four accumulators).
//!
//! Every kernel is a safe `fn(n, w, a)` that checks the slice lengths before any pointer
//! arithmetic; the `unsafe` inside is only the `#[target_feature]` call, made after the dispatcher
//! confirmed the CPU has those features.

use crate::blocks::*;
use crate::simd::avx2::{sum_blocks, sum_blocks_x4};
use crate::simd::{check_row, VecDot4Fn, VecDotFn};
use crate::types::{GgmlType, QK};
use std::arch::x86_64::*;

/// The one-row and four-row kernels of `ty` at this level, if it has them.
pub(super) fn rows(ty: GgmlType) -> Option<(VecDotFn, Option<VecDot4Fn>)> {
    let k: (VecDotFn, VecDot4Fn) = match ty {
        GgmlType::Q8_0 => (q8_0, q8_0_x4),
        GgmlType::Q4_0 => (q4_0, q4_0_x4),
        GgmlType::Q5_0 => (q5_0, q5_0_x4),
        _ => return None,
    };
    Some((k.0, Some(k.1)))
}

fn q8_0_x4(n: usize, w: &[u8], a: &[&[u8]; 4]) -> [f32; 4] {
    check4(GgmlType::Q8_0, n, w, a);
    // SAFETY: lengths checked above; the CPU has these features (dispatch).
    unsafe { imp::q8_0_x4(n / QK, w, a) }
}

fn q4_0_x4(n: usize, w: &[u8], a: &[&[u8]; 4]) -> [f32; 4] {
    check4(GgmlType::Q4_0, n, w, a);
    // SAFETY: as above.
    unsafe { imp::q4_0_x4(n / QK, w, a) }
}

fn q5_0_x4(n: usize, w: &[u8], a: &[&[u8]; 4]) -> [f32; 4] {
    check4(GgmlType::Q5_0, n, w, a);
    // SAFETY: as above.
    unsafe { imp::q5_0_x4(n / QK, w, a) }
}

fn check4(ty: GgmlType, n: usize, w: &[u8], a: &[&[u8]; 4]) {
    for a in a {
        check_row(ty, n, w, a);
    }
}

fn q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    check_row(GgmlType::Q8_0, n, w, a);
    // SAFETY: as above.
    unsafe { imp::q8_0(n / QK, w, a) }
}

fn q4_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    check_row(GgmlType::Q4_0, n, w, a);
    // SAFETY: as above.
    unsafe { imp::q4_0(n / QK, w, a) }
}

fn q5_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    check_row(GgmlType::Q5_0, n, w, a);
    // SAFETY: as above.
    unsafe { imp::q5_0(n / QK, w, a) }
}

mod imp {
    use super::*;
    use crate::simd::avx2::prims::*;

    const B8: usize = std::mem::size_of::<BlockQ8_0>();

    const B40: usize = std::mem::size_of::<BlockQ4_0>();

    /// # Safety: `w` and `a` hold `nb` Q8_0 blocks each.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q8_0(nb: usize, w: &[u8], a: &[u8]) -> f32 {
        sum_blocks!(nb, |i| {
            let (wb, ab) = (&w[i * B8..(i + 1) * B8], &a[i * B8..(i + 1) * B8]);
            let d = f16_at(wb) * f16_at(ab);
            // SAFETY: each block has 32 quant bytes after its 2-byte scale.
            let (x, y) = unsafe { (load32(wb.as_ptr().add(2)), load32(ab.as_ptr().add(2))) };
            (d, dot_i8(_mm256_setzero_si256(), x, y))
        })
    }

    /// # Safety: `w` holds `nb` Q4_0 blocks, `a` `nb` Q8_0 blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q4_0(nb: usize, w: &[u8], a: &[u8]) -> f32 {
        let eight = _mm256_set1_epi8(8);
        sum_blocks!(nb, |i| {
            let (wb, ab) = (&w[i * B40..(i + 1) * B40], &a[i * B8..(i + 1) * B8]);
            let d = f16_at(wb) * f16_at(ab);
            // SAFETY: 16 nibble bytes after the weight scale, 32 quants after the activation scale.
            let (x, y) = unsafe { (nibbles32(wb.as_ptr().add(2)), load32(ab.as_ptr().add(2))) };
            (
                d,
                dot_i8(_mm256_setzero_si256(), _mm256_sub_epi8(x, eight), y),
            )
        })
    }

    const B50: usize = std::mem::size_of::<BlockQ5_0>();

    /// 32 bytes, byte j = 0xFF where bit j of `bits` is set.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn bits_to_bytes(bits: u32) -> __m256i {
        let v = _mm256_set1_epi32(bits as i32);
        let shuf = _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0x0000_0000_0000_0000,
        );
        let bytes = _mm256_shuffle_epi8(v, shuf);
        let mask = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        _mm256_cmpeq_epi8(_mm256_and_si256(bytes, mask), mask)
    }

    /// # Safety: `w` holds `nb` Q5_0 blocks, `a` `nb` Q8_0 blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q5_0(nb: usize, w: &[u8], a: &[u8]) -> f32 {
        let sixteen = _mm256_set1_epi8(16);
        sum_blocks!(nb, |i| {
            let (wb, ab) = (&w[i * B50..(i + 1) * B50], &a[i * B8..(i + 1) * B8]);
            let d = f16_at(wb) * f16_at(ab);
            let qh = u32::from_le_bytes([wb[2], wb[3], wb[4], wb[5]]);
            // SAFETY: 16 nibble bytes at offset 6, 32 quants after the activation scale.
            let (lo, y) = unsafe { (nibbles32(wb.as_ptr().add(6)), load32(ab.as_ptr().add(2))) };
            let hi = _mm256_and_si256(bits_to_bytes(qh), sixteen);
            let x = _mm256_sub_epi8(_mm256_or_si256(lo, hi), sixteen);
            (d, dot_i8(_mm256_setzero_si256(), x, y))
        })
    }

    /// # Safety: `w` holds `nb` Q8_0 blocks, each `a[j]` `nb` Q8_0 blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q8_0_x4(nb: usize, w: &[u8], a: &[&[u8]; 4]) -> [f32; 4] {
        sum_blocks_x4!(nb, a, |i| {
            let wb = &w[i * B8..(i + 1) * B8];
            // SAFETY: 32 quants after the scale.
            (f16_at(wb), unsafe { load32(wb.as_ptr().add(2)) })
        })
    }

    /// # Safety: `w` holds `nb` Q4_0 blocks, each `a[j]` `nb` Q8_0 blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q4_0_x4(nb: usize, w: &[u8], a: &[&[u8]; 4]) -> [f32; 4] {
        let eight = _mm256_set1_epi8(8);
        sum_blocks_x4!(nb, a, |i| {
            let wb = &w[i * B40..(i + 1) * B40];
            // SAFETY: 16 nibble bytes after the scale.
            let x = unsafe { nibbles32(wb.as_ptr().add(2)) };
            (f16_at(wb), _mm256_sub_epi8(x, eight))
        })
    }

    /// # Safety: `w` holds `nb` Q5_0 blocks, each `a[j]` `nb` Q8_0 blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q5_0_x4(nb: usize, w: &[u8], a: &[&[u8]; 4]) -> [f32; 4] {
        let sixteen = _mm256_set1_epi8(16);
        sum_blocks_x4!(nb, a, |i| {
            let wb = &w[i * B50..(i + 1) * B50];
            let qh = u32::from_le_bytes([wb[2], wb[3], wb[4], wb[5]]);
            // SAFETY: 16 nibble bytes at offset 6.
            let lo = unsafe { nibbles32(wb.as_ptr().add(6)) };
            let hi = _mm256_and_si256(bits_to_bytes(qh), sixteen);
            (
                f16_at(wb),
                _mm256_sub_epi8(_mm256_or_si256(lo, hi), sixteen),
            )
        })
    }
}
