//! AVX-512 (F/BW/VL/DQ + VNNI) dot-product kernels on 512-bit registers.
//!
//! Q8_0/Q4_0/Q5_0: two 32-value blocks fill one register. Weights are made unsigned
//! (`u = q + offset`: Q4_0 stores q + 8, Q5_0 q + 16, Q8_0 gets 128 added) so `vpdpbusd` takes them
//! directly, and the offset comes back out with a second `vpdpbusd` of the activations against the
//! splatted offset (offset · Σy per lane). The 16 integer lanes are scaled per block in float and
//! accumulated across the whole row in registers: one horizontal sum per row, none per block.
//!
//! Q4_K/Q6_K: unsigned quants, `vpmaddubsw` for 16-bit pair sums, then `vpdpwssd` multiplies them
//! by the sub-block scales (permuted into place with `vpermw`) and accumulates in 32 bits. Q4_K's
//! mins and Q6_K's +32 offset are folded into the activations' 16-value block sums (`bsums`).
//!
//! Every function here is compiled for the features of `Isa::Avx512Vnni` (its AVX2 level included).
//! Every public kernel is a safe function that checks slice lengths before any pointer arithmetic;
//! the `unsafe` inside is the `#[target_feature]` call, made after the dispatcher confirmed the CPU
//! has those features (`Isa::available`, plus `avx512bf16` for the BF16 dot-product kernel).

use super::{VecDot4Fn, VecDotFn};
use crate::cpu::Isa;
use crate::types::{GgmlType, QK, QK_K};
use std::arch::x86_64::*;

/// Whether the CPU has `vdpbf16ps` (Zen 4, Cooper Lake, Sapphire Rapids); `Isa` does not track it.
fn has_bf16() -> bool {
    std::arch::is_x86_feature_detected!("avx512bf16")
}

/// The kernel for `ty`, if this level has one.
pub fn kernel(ty: GgmlType) -> Option<VecDotFn> {
    debug_assert!(Isa::available().contains(&Isa::Avx512Vnni));
    Some(match ty {
        GgmlType::F32 => f32_dot,
        // F16 stays with the AVX2 kernel: Zen 4 converts f16 at half the rate on 512-bit
        // registers (`vcvtph2ps zmm`), which makes the 512-bit kernel slower.
        GgmlType::BF16 if has_bf16() => bf16_dot_native,
        GgmlType::BF16 => bf16_dot,
        GgmlType::Q8_0 => q8_0,
        GgmlType::Q4_0 => q4_0,
        GgmlType::Q5_0 => q5_0,
        GgmlType::Q4_K => q4_k,
        GgmlType::Q6_K => q6_k,
        _ => return None,
    })
}

/// The four-row kernel for `ty`, if this level has one. Each of its results is bit-identical to
/// [`kernel`]'s for that row: both run the same per-row arithmetic in the same order.
pub fn kernel4(ty: GgmlType) -> Option<VecDot4Fn> {
    Some(match ty {
        GgmlType::Q8_0 => q8_0_x4,
        GgmlType::Q4_0 => q4_0_x4,
        GgmlType::Q5_0 => q5_0_x4,
        GgmlType::Q4_K => q4_k_x4,
        GgmlType::Q6_K => q6_k_x4,
        _ => return None,
    })
}

/// Panics (a caller bug) unless `w` and `a` hold exactly `n` values of `ty` and its `vec_dot_type`.
fn check(ty: GgmlType, n: usize, w: &[u8], a: &[u8]) {
    assert_eq!(Some(w.len()), ty.row_bytes(n), "vec_dot: weight row size");
    assert_eq!(
        Some(a.len()),
        ty.vec_dot_type().row_bytes(n),
        "vec_dot: activation row size"
    );
}

fn f32_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
    check(GgmlType::F32, n, w, a);
    // SAFETY: both slices hold n f32 (checked above); the CPU has these features (dispatch).
    unsafe { imp::f32(n, w.as_ptr().cast(), a.as_ptr().cast()) }
}

fn bf16_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
    check(GgmlType::BF16, n, w, a);
    // SAFETY: as above, with n bf16.
    unsafe { imp::bf16(n, w.as_ptr(), a.as_ptr()) }
}

fn bf16_dot_native(n: usize, w: &[u8], a: &[u8]) -> f32 {
    check(GgmlType::BF16, n, w, a);
    // SAFETY: as above; `kernel` hands this out only when `has_bf16()`.
    unsafe { imp::bf16_native(n, w.as_ptr(), a.as_ptr()) }
}

/// One-row and four-row safe wrappers for the 32-value block formats.
macro_rules! q8_family {
    ($one:ident, $four:ident, $ty:expr, $kind:expr) => {
        fn $one(n: usize, w: &[u8], a: &[u8]) -> f32 {
            check($ty, n, w, a);
            // SAFETY: `w` and `a` hold n / 32 blocks (checked above); features from dispatch.
            let [s] = unsafe { imp::q8_rows::<{ $kind }, 1>(n / QK, w.as_ptr(), [a.as_ptr()]) };
            s
        }

        fn $four(n: usize, w: &[u8], a: &[&[u8]; 4]) -> [f32; 4] {
            for a in a {
                check($ty, n, w, a);
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

/// One-row and four-row safe wrappers for the k-quants.
macro_rules! k_family {
    ($one:ident, $four:ident, $ty:expr, $rows:ident) => {
        fn $one(n: usize, w: &[u8], a: &[u8]) -> f32 {
            check($ty, n, w, a);
            // SAFETY: `w` and `a` hold n / 256 blocks (checked above); features from dispatch.
            let [s] = unsafe { imp::$rows::<1>(n / QK_K, w.as_ptr(), [a.as_ptr()]) };
            s
        }

        fn $four(n: usize, w: &[u8], a: &[&[u8]; 4]) -> [f32; 4] {
            for a in a {
                check($ty, n, w, a);
            }
            let rows = [a[0].as_ptr(), a[1].as_ptr(), a[2].as_ptr(), a[3].as_ptr()];
            // SAFETY: as above, for each of the four activation rows.
            unsafe { imp::$rows::<4>(n / QK_K, w.as_ptr(), rows) }
        }
    };
}

k_family!(q4_k, q4_k_x4, GgmlType::Q4_K, q4k_rows);
k_family!(q6_k, q6_k_x4, GgmlType::Q6_K, q6k_rows);

/// f32 dot product (attention). Slices of any equal length.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f32: length mismatch");
    // SAFETY: both slices hold a.len() f32; features confirmed by the caller's dispatch.
    unsafe { imp::f32(a.len(), a.as_ptr(), b.as_ptr()) }
}

/// `y += alpha * x`. Slices of any equal length.
pub fn axpy_f32(y: &mut [f32], alpha: f32, x: &[f32]) {
    assert_eq!(y.len(), x.len(), "axpy_f32: length mismatch");
    // SAFETY: as above.
    unsafe { imp::axpy(y.len(), y.as_mut_ptr(), alpha, x.as_ptr()) }
}

mod imp {
    use super::*;
    use crate::blocks::{BlockQ4K, BlockQ4_0, BlockQ5_0, BlockQ6K, BlockQ8K, BlockQ8_0};
    use std::mem::size_of;

    /// Mask of the low `k` lanes (`k < 16`).
    #[inline]
    fn low_mask16(k: usize) -> __mmask16 {
        debug_assert!(k < 16);
        ((1u32 << k) - 1) as __mmask16
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    fn sum4(acc: [__m512; 4]) -> f32 {
        _mm512_reduce_add_ps(_mm512_add_ps(
            _mm512_add_ps(acc[0], acc[1]),
            _mm512_add_ps(acc[2], acc[3]),
        ))
    }

    /// # Safety: `a` and `b` point to `n` readable f32 (any alignment).
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    pub unsafe fn f32(n: usize, a: *const f32, b: *const f32) -> f32 {
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY: (all loads) every lane read is below n; masked-off lanes are not accessed.
        unsafe {
            while i + 64 <= n {
                for (k, acc) in acc.iter_mut().enumerate() {
                    let x = _mm512_loadu_ps(a.add(i + 16 * k));
                    let y = _mm512_loadu_ps(b.add(i + 16 * k));
                    *acc = _mm512_fmadd_ps(x, y, *acc);
                }
                i += 64;
            }
            while i + 16 <= n {
                let (x, y) = (_mm512_loadu_ps(a.add(i)), _mm512_loadu_ps(b.add(i)));
                acc[0] = _mm512_fmadd_ps(x, y, acc[0]);
                i += 16;
            }
            if i < n {
                let m = low_mask16(n - i);
                let x = _mm512_maskz_loadu_ps(m, a.add(i));
                let y = _mm512_maskz_loadu_ps(m, b.add(i));
                acc[1] = _mm512_fmadd_ps(x, y, acc[1]);
            }
        }
        sum4(acc)
    }

    /// Sums `x * y` over `n` 16-bit floats at `a` and `b`, `load(p, mask)` widening 16 of them to
    /// f32 (all 16 lanes for a full mask).
    macro_rules! dot16 {
        ($n:expr, $a:expr, $b:expr, $load:ident) => {{
            let (n, a, b): (usize, *const u8, *const u8) = ($n, $a, $b);
            let mut acc = [_mm512_setzero_ps(); 4];
            let mut i = 0;
            // SAFETY: (all loads) every lane read is below n; masked-off lanes are not accessed.
            unsafe {
                while i + 64 <= n {
                    for (k, acc) in acc.iter_mut().enumerate() {
                        let o = 2 * (i + 16 * k);
                        let (x, y) = ($load(a.add(o), !0), $load(b.add(o), !0));
                        *acc = _mm512_fmadd_ps(x, y, *acc);
                    }
                    i += 64;
                }
                while i < n {
                    let m = if n - i >= 16 { !0 } else { low_mask16(n - i) };
                    let (x, y) = ($load(a.add(2 * i), m), $load(b.add(2 * i), m));
                    acc[0] = _mm512_fmadd_ps(x, y, acc[0]);
                    i += 16;
                }
            }
            sum4(acc)
        }};
    }

    /// The `mask` lanes of 16 16-bit values at `p`, the others zero. A full mask is a plain load
    /// (after inlining, the main loops' constant mask picks it): masked loads are slower.
    ///
    /// # Safety: the `mask` lanes at `p` are readable.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn load16(p: *const u8, mask: __mmask16) -> __m256i {
        // SAFETY: only the lanes in `mask` are read, which the caller guarantees.
        unsafe {
            if mask == !0 {
                _mm256_loadu_si256(p.cast())
            } else {
                _mm256_maskz_loadu_epi16(mask, p.cast())
            }
        }
    }

    /// # Safety: the `mask` lanes of 16 bf16 at `p` are readable.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn load_bf16(p: *const u8, mask: __mmask16) -> __m512 {
        // SAFETY: guaranteed by the caller.
        let h = unsafe { load16(p, mask) };
        // A bf16 is the top half of the f32 with the same bits.
        _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
    }

    /// # Safety: `a` and `b` point to `2n` readable bytes.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    pub unsafe fn bf16(n: usize, a: *const u8, b: *const u8) -> f32 {
        dot16!(n, a, b, load_bf16)
    }

    /// `vdpbf16ps`: 32 bf16 products per instruction, accumulated in f32 (inputs are exact in f32;
    /// like ggml's AVX512_BF16 path it treats bf16 subnormals as zero).
    ///
    /// # Safety: `a` and `b` point to `2n` readable bytes; the CPU has AVX512_BF16.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    #[target_feature(enable = "avx512bf16")]
    pub unsafe fn bf16_native(n: usize, a: *const u8, b: *const u8) -> f32 {
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        // 32 bf16 as the type `vdpbf16ps` takes (the same 64 bytes).
        let bh = |v: __m512i| -> __m512bh {
            // SAFETY: both are plain 512-bit vectors; every bit pattern is valid for each.
            unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
        };
        // SAFETY: (all loads) every lane read is below n; masked-off lanes are not accessed.
        unsafe {
            while i + 128 <= n {
                for (k, acc) in acc.iter_mut().enumerate() {
                    let o = 2 * (i + 32 * k);
                    let x = _mm512_loadu_si512(a.add(o).cast());
                    let y = _mm512_loadu_si512(b.add(o).cast());
                    *acc = _mm512_dpbf16_ps(*acc, bh(x), bh(y));
                }
                i += 128;
            }
            while i < n {
                let m: __mmask32 = if n - i >= 32 {
                    !0
                } else {
                    (1u32 << (n - i)) - 1
                };
                let x = _mm512_maskz_loadu_epi16(m, a.add(2 * i).cast());
                let y = _mm512_maskz_loadu_epi16(m, b.add(2 * i).cast());
                acc[0] = _mm512_dpbf16_ps(acc[0], bh(x), bh(y));
                i += 32;
            }
        }
        sum4(acc)
    }

    /// # Safety: `y` and `x` point to `n` f32.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    pub unsafe fn axpy(n: usize, y: *mut f32, alpha: f32, x: *const f32) {
        let a = _mm512_set1_ps(alpha);
        let mut i = 0;
        // SAFETY: every lane accessed is below n; masked-off lanes are not accessed.
        unsafe {
            while i + 16 <= n {
                let v = _mm512_fmadd_ps(a, _mm512_loadu_ps(x.add(i)), _mm512_loadu_ps(y.add(i)));
                _mm512_storeu_ps(y.add(i), v);
                i += 16;
            }
            if i < n {
                let m = low_mask16(n - i);
                let v = _mm512_fmadd_ps(
                    a,
                    _mm512_maskz_loadu_ps(m, x.add(i)),
                    _mm512_maskz_loadu_ps(m, y.add(i)),
                );
                _mm512_mask_storeu_ps(y.add(i), m, v);
            }
        }
    }

    // The 32-value block formats, as const-generic selectors of `q8_rows`.
    pub const Q8_0: u8 = 0;
    pub const Q4_0: u8 = 1;
    pub const Q5_0: u8 = 2;

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

    /// The f16 stored little-endian at `p`.
    ///
    /// # Safety: 2 readable bytes at `p`.
    #[inline]
    unsafe fn f16_bits(p: *const u8) -> u16 {
        // SAFETY: guaranteed by the caller.
        unsafe { p.cast::<u16>().read_unaligned() }
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
    pub unsafe fn q8_rows<const KIND: u8, const R: usize>(
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

    const BQ8K: usize = size_of::<BlockQ8K>();
    /// Offset of `bsums` in a Q8_K block.
    const BSUMS: usize = 4 + QK_K;

    /// `vpermw` indices: for Q4_K step `j`, 16-bit lanes 0..16 take scale `2j`, lanes 16..32
    /// scale `2j + 1`.
    static Q4K_SCALE_IDX: [[i16; 32]; 4] = {
        let mut t = [[0i16; 32]; 4];
        let mut j = 0;
        while j < 4 {
            let mut e = 0;
            while e < 32 {
                t[j][e] = (2 * j + e / 16) as i16;
                e += 1;
            }
            j += 1;
        }
        t
    };

    /// `vpermw` indices: for Q6_K quarter `q` (64 values), 16-bit lanes `8s..8s + 8` take
    /// scale `4q + s`.
    static Q6K_SCALE_IDX: [[i16; 32]; 4] = {
        let mut t = [[0i16; 32]; 4];
        let mut q = 0;
        while q < 4 {
            let mut e = 0;
            while e < 32 {
                t[q][e] = (4 * q + e / 8) as i16;
                e += 1;
            }
            q += 1;
        }
        t
    };

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    fn load_idx(t: &[i16; 32]) -> __m512i {
        // SAFETY: `t` is 64 readable bytes.
        unsafe { _mm512_loadu_si512(t.as_ptr().cast()) }
    }

    /// The eight 6-bit scales and eight 6-bit mins of a Q4_K block, one per byte, from the 12
    /// packed bytes (`quant::kquants::scale_min_k4` for all eight sub-blocks at once).
    #[inline]
    fn q4k_scales_mins(packed: [u8; 12]) -> (u64, u64) {
        let u =
            |k: usize| u32::from_le_bytes([packed[k], packed[k + 1], packed[k + 2], packed[k + 3]]);
        let (u0, u1, u2) = (u(0), u(4), u(8));
        // Sub-blocks 0..4: the low 6 bits of bytes 0..4 (scales) and 4..8 (mins).
        let (sc_lo, mn_lo) = (u0 & 0x3f3f_3f3f, u1 & 0x3f3f_3f3f);
        // Sub-blocks 4..8: a nibble of bytes 8..12, topped by the 2 spare bits of bytes 0..8.
        let sc_hi = (u2 & 0x0f0f_0f0f) | ((u0 >> 6) & 0x0303_0303) << 4;
        let mn_hi = ((u2 >> 4) & 0x0f0f_0f0f) | ((u1 >> 6) & 0x0303_0303) << 4;
        (
            sc_lo as u64 | (sc_hi as u64) << 32,
            mn_lo as u64 | (mn_hi as u64) << 32,
        )
    }

    /// `R` dot products of one row of `nb` Q4_K blocks with `R` rows of Q8_K activations; each
    /// weight block is decoded once for all rows, and every row's arithmetic is the same whatever
    /// `R` is (so the four-row kernel equals the one-row one bit for bit).
    ///
    /// # Safety: `w` points to `nb` Q4_K blocks, each `a[r]` to `nb` Q8_K blocks.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    pub unsafe fn q4k_rows<const R: usize>(nb: usize, w: *const u8, a: [*const u8; R]) -> [f32; R] {
        let m4 = _mm512_set1_epi8(0x0F);
        let idx = [
            load_idx(&Q4K_SCALE_IDX[0]),
            load_idx(&Q4K_SCALE_IDX[1]),
            load_idx(&Q4K_SCALE_IDX[2]),
            load_idx(&Q4K_SCALE_IDX[3]),
        ];
        let mut acc = [_mm512_setzero_ps(); R];
        let mut acc_min = [_mm256_setzero_ps(); R];
        for i in 0..nb {
            // SAFETY: (all reads) inside block i of `w` (d, dmin, 12 scale bytes, 128 quant bytes)
            // and of each `a[r]` (d, 256 quants, 16 bsums).
            unsafe {
                let x = w.add(i * size_of::<BlockQ4K>());
                // [d, dmin] of the weights.
                let dw = _mm_cvtph_ps(_mm_cvtsi32_si128(x.cast::<i32>().read_unaligned()));
                let (dw, dmw) = (_mm_cvtss_f32(dw), _mm_cvtss_f32(_mm_movehdup_ps(dw)));
                let (sc, mn) = q4k_scales_mins(x.add(4).cast::<[u8; 12]>().read_unaligned());
                let scales =
                    _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(sc as i64)));
                // 32 bytes hold 64 values: low nibbles are sub-block 2j, high ones 2j + 1; each
                // 16-bit pair sum of step j takes its sub-block's scale.
                let mut q = [_mm512_setzero_si512(); 4];
                let mut s = [_mm512_setzero_si512(); 4];
                for j in 0..4 {
                    let b = _mm256_loadu_si256(x.add(16 + 32 * j).cast());
                    let b =
                        _mm512_inserti64x4(_mm512_castsi256_si512(b), _mm256_srli_epi16(b, 4), 1);
                    q[j] = _mm512_and_si512(b, m4);
                    s[j] = _mm512_permutexvar_epi16(idx[j], scales);
                }
                // min_k for both 16-value halves of sub-block k, against the bsums.
                let mn = _mm_cvtsi64_si128(mn as i64);
                let mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mn, mn));
                for r in 0..R {
                    let y = a[r].add(i * BQ8K);
                    let dy = y.cast::<f32>().read_unaligned();
                    let mut isum = _mm512_setzero_si512();
                    for j in 0..4 {
                        let yq = _mm512_loadu_si512(y.add(4 + 64 * j).cast());
                        isum = _mm512_dpwssd_epi32(isum, _mm512_maddubs_epi16(q[j], yq), s[j]);
                    }
                    let bsums = _mm256_loadu_si256(y.add(BSUMS).cast());
                    let msum = _mm256_madd_epi16(bsums, mins);
                    acc[r] =
                        _mm512_fmadd_ps(_mm512_set1_ps(dw * dy), _mm512_cvtepi32_ps(isum), acc[r]);
                    acc_min[r] = _mm256_fmadd_ps(
                        _mm256_set1_ps(dmw * dy),
                        _mm256_cvtepi32_ps(msum),
                        acc_min[r],
                    );
                }
            }
        }
        let mut out = [0.0f32; R];
        for r in 0..R {
            let m = _mm512_castps256_ps512(acc_min[r]);
            out[r] = _mm512_reduce_add_ps(acc[r]) - _mm512_mask_reduce_add_ps(0x00FF, m);
        }
        out
    }

    /// Like [`q4k_rows`] for Q6_K weights.
    ///
    /// # Safety: `w` points to `nb` Q6_K blocks, each `a[r]` to `nb` Q8_K blocks.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    pub unsafe fn q6k_rows<const R: usize>(nb: usize, w: *const u8, a: [*const u8; R]) -> [f32; R] {
        let m4 = _mm512_set1_epi8(0x0F);
        let m30 = _mm512_set1_epi8(0x30);
        let idx = [
            load_idx(&Q6K_SCALE_IDX[0]),
            load_idx(&Q6K_SCALE_IDX[1]),
            load_idx(&Q6K_SCALE_IDX[2]),
            load_idx(&Q6K_SCALE_IDX[3]),
        ];
        let mut acc = [_mm512_setzero_ps(); R];
        for i in 0..nb {
            // SAFETY: (all reads) inside block i of `w` (ql 128 bytes, qh 64, 16 scales, d) and of
            // each `a[r]` (d, 256 quants, 16 bsums).
            unsafe {
                let x = w.add(i * size_of::<BlockQ6K>());
                let dw =
                    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(f16_bits(x.add(208)) as i32)));
                let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(x.add(192).cast()));
                let scales = _mm512_castsi256_si512(sc16);
                // Quarter 2h + 0 is values 0..64 of half h (low nibbles of ql, qh bits 0..4),
                // quarter 2h + 1 values 64..128 (high nibbles, qh bits 4..8); unsigned, + 32.
                let mut v = [_mm512_setzero_si512(); 4];
                let mut s = [_mm512_setzero_si512(); 4];
                for half in 0..2 {
                    let ql = _mm512_loadu_si512(x.add(64 * half).cast());
                    let qh = _mm256_loadu_si256(x.add(128 + 32 * half).cast());
                    let qh =
                        _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
                    v[2 * half] = _mm512_or_si512(
                        _mm512_and_si512(ql, m4),
                        _mm512_and_si512(_mm512_slli_epi16(qh, 4), m30),
                    );
                    v[2 * half + 1] = _mm512_or_si512(
                        _mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                        _mm512_and_si512(qh, m30),
                    );
                    s[2 * half] = _mm512_permutexvar_epi16(idx[2 * half], scales);
                    s[2 * half + 1] = _mm512_permutexvar_epi16(idx[2 * half + 1], scales);
                }
                for r in 0..R {
                    let y = a[r].add(i * BQ8K);
                    let dy = y.cast::<f32>().read_unaligned();
                    let mut isum = _mm512_setzero_si512();
                    for k in 0..4 {
                        let yq = _mm512_loadu_si512(y.add(4 + 64 * k).cast());
                        isum = _mm512_dpwssd_epi32(isum, _mm512_maddubs_epi16(v[k], yq), s[k]);
                    }
                    // The quants are stored + 32: subtract 32 · Σ scale_k · bsums_k.
                    let bsums = _mm256_loadu_si256(y.add(BSUMS).cast());
                    let offset = _mm256_slli_epi32(_mm256_madd_epi16(bsums, sc16), 5);
                    let isum = _mm512_sub_epi32(isum, _mm512_zextsi256_si512(offset));
                    acc[r] =
                        _mm512_fmadd_ps(_mm512_set1_ps(dw * dy), _mm512_cvtepi32_ps(isum), acc[r]);
                }
            }
        }
        let mut out = [0.0f32; R];
        for r in 0..R {
            out[r] = _mm512_reduce_add_ps(acc[r]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dot_scalar;

    /// Both BF16 kernels against the reference (dispatch picks only one of them on a given CPU).
    #[test]
    fn both_bf16_kernels_match_the_reference() {
        if !Isa::available().contains(&Isa::Avx512Vnni) {
            return;
        }
        let mut kernels: Vec<VecDotFn> = vec![bf16_dot];
        if has_bf16() {
            kernels.push(bf16_dot_native);
        }
        for n in [0usize, 1, 15, 16, 17, 31, 33, 127, 128, 129, 1000] {
            // Deterministic values in (-1, 1) of varied magnitude (bf16 normals: no subnormals).
            let v = |i: usize, k: f32| (i as f32 * k).sin() * 0.9;
            let bf = |x: f32| half::bf16::from_f32(x).to_le_bytes();
            let w: Vec<u8> = (0..n).flat_map(|i| bf(v(i, 1.3))).collect();
            let a: Vec<u8> = (0..n).flat_map(|i| bf(v(i, 0.7) * 3.0)).collect();
            let want = dot_scalar::vec_dot(GgmlType::BF16, n, &w, &a);
            let mag: f32 = (0..n).map(|i| (v(i, 1.3) * v(i, 0.7) * 3.0).abs()).sum();
            for k in &kernels {
                let got = k(n, &w, &a);
                assert!(
                    (got - want).abs() <= 1e-5 * mag + 1e-30,
                    "n={n}: {got} vs {want}"
                );
            }
        }
    }
}
