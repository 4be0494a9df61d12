//! AVX-512 (F/BW/VL/DQ + VNNI) row kernels of Q8_0, Q4_0 and Q5_0 against Q8_0 activations,
//! one row and four rows, bit-identical to the references in `reference`.
//!
//! Two 32-value blocks fill one register. Weights are made unsigned (`u = q + offset`: Q4_0
//! stores q + 8, Q5_0 q + 16, Q8_0 gets 128 added) so `vpdpbusd` takes them directly, and the
//! offset comes back out with a second `vpdpbusd` of the activations against the splatted offset
//! (offset · Σy per lane). The 16 integer lanes are scaled per block in float and accumulated
//! across the whole row in registers: one horizontal sum per row, none per block.
//!
//! Every kernel is a safe function that checks slice lengths before any pointer arithmetic; the
//! `unsafe` inside is the `#[target_feature]` call, made after the dispatcher confirmed the CPU
//! has those features.

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

/// One-row and four-row safe wrappers.
macro_rules! q8_family {
    ($one:ident, $four:ident, $ty:expr, $kind:expr) => {
        fn $one(n: usize, w: &[u8], a: &[u8]) -> f32 {
            check_row($ty, n, w, a);
            // SAFETY: `w` and `a` hold n / 32 blocks (checked above); features from dispatch.
            let [s] = unsafe { imp::q8_rows::<{ $kind }, 1>(n / QK, w.as_ptr(), [a.as_ptr()]) };
            s
        }

        fn $four(n: usize, w: &[u8], a: &[&[u8]; 4]) -> [f32; 4] {
            for a in a {
                check_row($ty, n, w, a);
            }
            let rows = [a[0].as_ptr(), a[1].as_ptr(), a[2].as_ptr(), a[3].as_ptr()];
            // SAFETY: as above, for each of the four activation rows.
            unsafe { imp::q8_rows::<{ $kind }, 4>(n / QK, w.as_ptr(), rows) }
        }
    };
}

q8_family!(q8_0, q8_0_x4, GgmlType::Q8_0, imp::Q8_0);
q8_family!(q4_0, q4_0_x4, GgmlType::Q4_0, imp::Q4_0);
q8_family!(q5_0, q5_0_x4, GgmlType::Q5_0, imp::Q5_0);

mod imp {
    use super::*;
    use crate::blocks::{BlockQ4_0, BlockQ5_0, BlockQ8_0};
    use crate::simd::avx512::prims::*;
    use std::mem::size_of;

    // The 32-value block formats, as const-generic selectors of `q8_rows`.
    pub(super) const Q8_0: u8 = 0;
    pub(super) const Q4_0: u8 = 1;
    pub(super) const Q5_0: u8 = 2;

    const fn block_bytes(kind: u8) -> usize {
        match kind {
            Q8_0 => size_of::<BlockQ8_0>(),
            Q4_0 => size_of::<BlockQ4_0>(),
            _ => size_of::<BlockQ5_0>(),
        }
    }

    /// What `values` adds to each signed quant to make it unsigned.
    const fn offset(kind: u8) -> u8 {
        match kind {
            Q8_0 => 128,
            Q4_0 => 8,
            _ => 16,
        }
    }

    /// 32 nibbles from 16 bytes at each of `p0` and `p1`, as 64 bytes in value order: block 0's low
    /// nibbles (values 0..16) then its high nibbles (16..32), then the same for block 1.
    ///
    /// # Safety: 16 readable bytes at `p0` and at `p1`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn nibbles64(p0: *const u8, p1: *const u8) -> __m512i {
        // [b0, b0, b1, b1] in 128-bit lanes straight from the load unit (broadcasts, no shuffles),
        // then lanes 1 and 3 shifted to their high nibbles.
        // SAFETY: guaranteed by the caller.
        let z = unsafe {
            let z = _mm512_broadcast_i32x4(_mm_loadu_si128(p0.cast()));
            _mm512_mask_broadcast_i32x4(z, 0xFF00, _mm_loadu_si128(p1.cast()))
        };
        let z = _mm512_mask_srli_epi16(z, 0xFF00_FF00, z, 4);
        _mm512_and_si512(z, _mm512_set1_epi8(0x0F))
    }

    /// Two blocks' 32 bytes at `p0` and `p1` as one register.
    ///
    /// # Safety: 32 readable bytes at `p0` and at `p1`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn load_pair(p0: *const u8, p1: *const u8) -> __m512i {
        // A masked load fills the high half without a cross-lane shuffle.
        // SAFETY: guaranteed by the caller; the masked load reads only p1..p1 + 32.
        unsafe {
            let low = _mm512_zextsi256_si512(_mm256_loadu_si256(p0.cast()));
            _mm512_mask_loadu_epi8(low, 0xFFFF_FFFF_0000_0000, p1.wrapping_sub(32).cast())
        }
    }

    /// The weights of blocks `p0` and `p1` (which may be the same block) as 64 unsigned bytes,
    /// quant + `offset(KIND)`, in value order.
    ///
    /// # Safety: `p0` and `p1` each point to a whole block of `KIND`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn values<const KIND: u8>(p0: *const u8, p1: *const u8) -> __m512i {
        // SAFETY: (all reads) inside the two blocks, per the layouts in `blocks.rs`.
        unsafe {
            match KIND {
                // qs: 32 signed bytes after the scale; flipping the top bit adds 128.
                Q8_0 => {
                    let x = _mm512_inserti64x4(
                        _mm512_castsi256_si512(_mm256_loadu_si256(p0.add(2).cast())),
                        _mm256_loadu_si256(p1.add(2).cast()),
                        1,
                    );
                    _mm512_xor_si512(x, _mm512_set1_epi8(-128))
                }
                // qs: 16 nibble bytes after the scale, already q + 8.
                Q4_0 => nibbles64(p0.add(2), p1.add(2)),
                // qh (bit j = bit 4 of value j) at 2, 16 nibble bytes at 6; q + 16 in 0..32.
                _ => {
                    let qh0 = p0.add(2).cast::<u32>().read_unaligned() as u64;
                    let qh1 = p1.add(2).cast::<u32>().read_unaligned() as u64;
                    let high = _mm512_maskz_mov_epi8(qh0 | qh1 << 32, _mm512_set1_epi8(16));
                    _mm512_or_si512(nibbles64(p0.add(6), p1.add(6)), high)
                }
            }
        }
    }

    /// The f16 scales at `p0` and `p1` as f32 in lanes 0 and 1.
    ///
    /// # Safety: 4 readable bytes at `p0` (the scale and what follows it), 2 at `p1`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn f16_pair(p0: *const u8, p1: *const u8) -> __m128 {
        // `vmovd` + `vpinsrw` from memory: no scalar shifts.
        // SAFETY: guaranteed by the caller.
        let (lo, hi) = unsafe { (p0.cast::<i32>().read_unaligned(), f16_bits(p1)) };
        _mm_cvtph_ps(_mm_insert_epi16::<1>(_mm_cvtsi32_si128(lo), hi as i32))
    }

    /// Lanes 0..8 take element 0 of a vector, lanes 8..16 element 1.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    fn pair_index() -> __m512i {
        _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0)
    }

    /// `R` dot products of one row of `nb` weight blocks of `KIND` with `R` rows of Q8_0
    /// activations, two blocks per step. Every row runs the same float operations in the same
    /// order whatever `R` is, so the four-row kernel equals the one-row one bit for bit: pairs of
    /// each group of eight blocks go to accumulators 0..4, the remaining pairs and a lone last
    /// block to accumulator 0.
    ///
    /// # Safety: `w` points to `nb` blocks of `KIND`, each `a[r]` to `nb` Q8_0 blocks.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    pub(super) unsafe fn q8_rows<const KIND: u8, const R: usize>(
        nb: usize,
        w: *const u8,
        a: [*const u8; R],
    ) -> [f32; R] {
        let (bw, ba) = (block_bytes(KIND), size_of::<BlockQ8_0>());
        let offset = _mm512_set1_epi8(offset(KIND) as i8);
        let idx = pair_index();
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        // Adds blocks $i and $i + 1 (or, when `$two` is false, the lone block $i) to
        // accumulator $k of every row.
        macro_rules! pair {
            ($i:expr, $k:expr, $two:expr) => {{
                let (i, two) = ($i, $two);
                // SAFETY: (all pointer arithmetic and reads) blocks i and, when `two`, i + 1
                // exist in `w` and in every `a[r]`. A lone block is read as both halves of the
                // weights; its activations' high half is zero, so the high lanes add exactly 0.
                unsafe {
                    let p0 = w.add(i * bw);
                    let p1 = if two { p0.add(bw) } else { p0 };
                    let x = values::<KIND>(p0, p1);
                    let dw = f16_pair(p0, p1);
                    for r in 0..R {
                        let q0 = a[r].add(i * ba);
                        let (y, da) = if two {
                            let q1 = q0.add(ba);
                            (load_pair(q0.add(2), q1.add(2)), f16_pair(q0, q1))
                        } else {
                            let y = _mm512_zextsi256_si512(_mm256_loadu_si256(q0.add(2).cast()));
                            (y, _mm_cvtph_ps(_mm_cvtsi32_si128(f16_bits(q0) as i32)))
                        };
                        let p = _mm512_sub_epi32(
                            _mm512_dpbusd_epi32(_mm512_setzero_si512(), x, y),
                            _mm512_dpbusd_epi32(_mm512_setzero_si512(), offset, y),
                        );
                        // [dw0·da0, dw1·da1] (0 for a lone block), each spread over 8 lanes.
                        let d = _mm_mul_ps(dw, da);
                        let d = _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(d));
                        acc[r][$k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), d, acc[r][$k]);
                    }
                }
            }};
        }
        let mut i = 0;
        while i + 8 <= nb {
            pair!(i, 0, true);
            pair!(i + 2, 1, true);
            pair!(i + 4, 2, true);
            pair!(i + 6, 3, true);
            i += 8;
        }
        while i + 2 <= nb {
            pair!(i, 0, true);
            i += 2;
        }
        if i < nb {
            pair!(i, 0, false);
        }
        let mut out = [0.0f32; R];
        for r in 0..R {
            out[r] = sum4(acc[r]);
        }
        out
    }
}
