//! AVX2 + FMA + F16C dot-product kernels for ggml block types (the level below AVX-512).
//!
//! Signed 8-bit dot products use the |x|·sign(y, x) identity with `vpmaddubsw` + `vpmaddwd`;
//! Q4_K and Q6_K keep their weights unsigned and fold the offsets into the activations' block sums.
//! Also SIMD activation quantizers (Q8_0, Q8_K, F16), byte-identical to the scalar ones, used at
//! this level and above.
//!
//! Every public kernel is a safe `fn(n, w, a) -> f32` that checks the slice lengths before any
//! pointer arithmetic; the `unsafe` inside is only the `#[target_feature]` call, made after the
//! dispatcher confirmed the CPU has those features (see `Isa::available`).

use crate::blocks::*;
use crate::quant::kquants::scale_min_k4;
use crate::types::{GgmlType, QK, QK_K};
use std::arch::x86_64::*;

/// Sums `d_i * Σ lanes(p_i)` over blocks `i in 0..nb`, where the body maps `i` to the block's
/// combined scale `d_i` and its 8 lanes of integer dot products `p_i`. Four independent
/// accumulators hide the FMA latency that one running sum would be bound by.
macro_rules! sum_blocks {
    ($nb:expr, |$i:ident| $body:block) => {{
        let nb = $nb;
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut base = 0;
        while base + 4 <= nb {
            for (j, acc) in acc.iter_mut().enumerate() {
                let $i = base + j;
                let (d, p): (f32, __m256i) = $body;
                *acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(p), *acc);
            }
            base += 4;
        }
        for $i in base..nb {
            let (d, p): (f32, __m256i) = $body;
            acc[0] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(p), acc[0]);
        }
        hsum_ps(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ))
    }};
}

/// Like `sum_blocks!` for four activation rows at once (Q8_0 activations): the body decodes
/// weight block `i` once into its scale and signed values, shared by the four dot products. Each
/// row is accumulated in exactly `sum_blocks!`'s order, so a token gets bit-identical results
/// whether it is computed alone or in a batch.
macro_rules! sum_blocks_x4 {
    ($nb:expr, $a:expr, |$i:ident| $body:block) => {{
        let a: &[&[u8]; 4] = $a;
        let nb = $nb;
        let mut acc = [[_mm256_setzero_ps(); 4]; 4];
        for $i in 0..nb {
            // Blocks go round-robin to four accumulators; the tail after the last full group of
            // four goes to the first, as in `sum_blocks!`.
            let k = if $i < nb / 4 * 4 { $i % 4 } else { 0 };
            let (dw, x): (f32, __m256i) = $body;
            let ax = _mm256_sign_epi8(x, x);
            for (j, acc) in acc.iter_mut().enumerate() {
                let ab = &a[j][$i * B8..($i + 1) * B8];
                // SAFETY: an activation block has 32 quants after its 2-byte scale.
                let y = unsafe { load32(ab.as_ptr().add(2)) };
                let p = dpbusd(_mm256_setzero_si256(), ax, _mm256_sign_epi8(y, x));
                acc[k] = _mm256_fmadd_ps(
                    _mm256_set1_ps(dw * f16_at(ab)),
                    _mm256_cvtepi32_ps(p),
                    acc[k],
                );
            }
        }
        let total = |a: [__m256; 4]| {
            hsum_ps(_mm256_add_ps(
                _mm256_add_ps(a[0], a[1]),
                _mm256_add_ps(a[2], a[3]),
            ))
        };
        [total(acc[0]), total(acc[1]), total(acc[2]), total(acc[3])]
    }};
}

use super::VecDotFn;
use crate::cpu::Isa;

/// The kernel for `ty`, if this level has one.
pub fn kernel(ty: GgmlType) -> Option<VecDotFn> {
    debug_assert!(Isa::available().contains(&Isa::Avx2));
    Some(match ty {
        GgmlType::F32 => f32_dot,
        GgmlType::F16 => f16_dot,
        GgmlType::BF16 => bf16_dot,
        GgmlType::Q8_0 => q8_0,
        GgmlType::Q4_0 => q4_0,
        GgmlType::Q5_0 => q5_0,
        GgmlType::Q4_K => q4_k,
        GgmlType::Q6_K => q6_k,
        _ => return None,
    })
}

/// The four-row kernel for `ty`, if this level has one.
pub fn kernel4(ty: GgmlType) -> Option<super::VecDot4Fn> {
    Some(match ty {
        GgmlType::Q8_0 => q8_0_x4,
        GgmlType::Q4_0 => q4_0_x4,
        GgmlType::Q5_0 => q5_0_x4,
        _ => return None,
    })
}

fn check4(ty: GgmlType, n: usize, w: &[u8], a: &[&[u8]; 4]) {
    for a in a {
        check(ty, n, w, a);
    }
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
    // SAFETY: lengths checked above; the CPU has these features (dispatch).
    unsafe { imp::f32_bytes(n, w.as_ptr(), a.as_ptr()) }
}

fn f16_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
    check(GgmlType::F16, n, w, a);
    // SAFETY: as above.
    unsafe { imp::f16(n, w.as_ptr(), a.as_ptr()) }
}

fn bf16_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
    check(GgmlType::BF16, n, w, a);
    // SAFETY: as above.
    unsafe { imp::bf16(n, w.as_ptr(), a.as_ptr()) }
}

fn q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    check(GgmlType::Q8_0, n, w, a);
    // SAFETY: as above.
    unsafe { imp::q8_0(n / QK, w, a) }
}

fn q4_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    check(GgmlType::Q4_0, n, w, a);
    // SAFETY: as above.
    unsafe { imp::q4_0(n / QK, w, a) }
}

fn q5_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    check(GgmlType::Q5_0, n, w, a);
    // SAFETY: as above.
    unsafe { imp::q5_0(n / QK, w, a) }
}

fn q4_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    check(GgmlType::Q4_K, n, w, a);
    // SAFETY: as above.
    unsafe { imp::q4_k(n / QK_K, w, a) }
}

fn q6_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    check(GgmlType::Q6_K, n, w, a);
    // SAFETY: as above.
    unsafe { imp::q6_k(n / QK_K, w, a) }
}

/// f32 dot product (attention). Slices of any equal length.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    // SAFETY: equal lengths checked; features confirmed by the caller's dispatch.
    unsafe { imp::f32(a.len(), a.as_ptr(), b.as_ptr()) }
}

/// `y += alpha * x`. Slices of any equal length.
pub fn axpy_f32(y: &mut [f32], alpha: f32, x: &[f32]) {
    assert_eq!(y.len(), x.len());
    // SAFETY: as above.
    unsafe { imp::axpy(y.len(), y.as_mut_ptr(), alpha, x.as_ptr()) }
}

mod imp {
    use super::*;

    /// Unsigned `u` times signed `s`, 4 bytes per 32-bit lane, added to `acc`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn dpbusd(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        dpbusd_avx2(acc, u, s)
    }

    /// The f16 stored little-endian at `b[0..2]`, converted with F16C (exact).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn f16_at(b: &[u8]) -> f32 {
        let bits = u16::from_le_bytes([b[0], b[1]]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    /// Signed `x` times signed `y`, via |x| and sign(y, x).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn dot_i8(acc: __m256i, x: __m256i, y: __m256i) -> __m256i {
        dpbusd(acc, _mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn hsum_ps(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn hsum_epi32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }

    /// 32 bytes from 16 nibbles: low nibbles first, then high nibbles (ggml's order).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn nibbles32(p: *const u8) -> __m256i {
        // SAFETY: the caller guarantees 16 readable bytes at p.
        let x = unsafe { _mm_loadu_si128(p as *const __m128i) };
        let both = _mm256_set_m128i(_mm_srli_epi16(x, 4), x);
        _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load32(p: *const u8) -> __m256i {
        // SAFETY: the caller guarantees 32 readable bytes at p.
        unsafe { _mm256_loadu_si256(p as *const __m256i) }
    }

    /// # Safety: `a` and `b` point to `n` readable f32 (any alignment).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn f32(n: usize, a: *const f32, b: *const f32) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY: (whole function) every load stays below n.
        unsafe {
            while i + 32 <= n {
                for (k, acc) in acc.iter_mut().enumerate() {
                    let x = _mm256_loadu_ps(a.add(i + 8 * k));
                    let y = _mm256_loadu_ps(b.add(i + 8 * k));
                    *acc = _mm256_fmadd_ps(x, y, *acc);
                }
                i += 32;
            }
            while i + 8 <= n {
                acc[0] =
                    _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i)), _mm256_loadu_ps(b.add(i)), acc[0]);
                i += 8;
            }
            let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let mut s = hsum_ps(v);
            while i < n {
                s += *a.add(i) * *b.add(i);
                i += 1;
            }
            s
        }
    }

    /// Sums `x * y` over `n` values at `a` and `b` of `size` bytes each, `load(p)` widening 8 of
    /// them to f32 and `one(p)` a single one (the tail). Four accumulators hide the FMA latency.
    macro_rules! dot8 {
        ($n:expr, $a:expr, $b:expr, $size:expr, $load:expr, $one:expr) => {{
            let (n, a, b, size): (usize, *const u8, *const u8, usize) = ($n, $a, $b, $size);
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            // SAFETY: (all loads) every value read is below n.
            unsafe {
                while i + 32 <= n {
                    for (k, acc) in acc.iter_mut().enumerate() {
                        let o = size * (i + 8 * k);
                        *acc = _mm256_fmadd_ps($load(a.add(o)), $load(b.add(o)), *acc);
                    }
                    i += 32;
                }
                while i + 8 <= n {
                    let o = size * i;
                    acc[0] = _mm256_fmadd_ps($load(a.add(o)), $load(b.add(o)), acc[0]);
                    i += 8;
                }
                let mut s = hsum_ps(_mm256_add_ps(
                    _mm256_add_ps(acc[0], acc[1]),
                    _mm256_add_ps(acc[2], acc[3]),
                ));
                while i < n {
                    s += $one(a.add(size * i)) * $one(b.add(size * i));
                    i += 1;
                }
                s
            }
        }};
    }

    /// # Safety: `a` and `b` point to `4n` readable bytes.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn f32_bytes(n: usize, a: *const u8, b: *const u8) -> f32 {
        dot8!(
            n,
            a,
            b,
            4,
            |p: *const u8| _mm256_loadu_ps(p.cast()),
            |p: *const u8| p.cast::<f32>().read_unaligned()
        )
    }

    /// # Safety: `a` and `b` point to `2n` readable bytes.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn f16(n: usize, a: *const u8, b: *const u8) -> f32 {
        dot8!(
            n,
            a,
            b,
            2,
            |p: *const u8| _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
            |p: *const u8| half::f16::from_bits(p.cast::<u16>().read_unaligned()).to_f32()
        )
    }

    /// # Safety: `a` and `b` point to `2n` readable bytes.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn bf16(n: usize, a: *const u8, b: *const u8) -> f32 {
        // A bf16 is the top half of the f32 with the same bits.
        dot8!(
            n,
            a,
            b,
            2,
            |p: *const u8| _mm256_castsi256_ps(_mm256_slli_epi32(
                _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast())),
                16
            )),
            |p: *const u8| half::bf16::from_bits(p.cast::<u16>().read_unaligned()).to_f32()
        )
    }

    /// # Safety: `y` and `x` point to `n` f32.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn axpy(n: usize, y: *mut f32, alpha: f32, x: *const f32) {
        let a = _mm256_set1_ps(alpha);
        let mut i = 0;
        // SAFETY: every access stays below n.
        unsafe {
            while i + 8 <= n {
                let v = _mm256_fmadd_ps(a, _mm256_loadu_ps(x.add(i)), _mm256_loadu_ps(y.add(i)));
                _mm256_storeu_ps(y.add(i), v);
                i += 8;
            }
            while i < n {
                *y.add(i) += alpha * *x.add(i);
                i += 1;
            }
        }
    }

    const B8: usize = std::mem::size_of::<BlockQ8_0>();

    /// # Safety: `w` and `a` hold `nb` Q8_0 blocks each.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q8_0(nb: usize, w: &[u8], a: &[u8]) -> f32 {
        sum_blocks!(nb, |i| {
            let (wb, ab) = (&w[i * B8..(i + 1) * B8], &a[i * B8..(i + 1) * B8]);
            let d = f16_at(wb) * f16_at(ab);
            // SAFETY: each block has 32 quant bytes after its 2-byte scale.
            let (x, y) = unsafe { (load32(wb.as_ptr().add(2)), load32(ab.as_ptr().add(2))) };
            (d, dot_i8(_mm256_setzero_si256(), x, y))
        })
    }

    const B40: usize = std::mem::size_of::<BlockQ4_0>();

    /// # Safety: `w` holds `nb` Q4_0 blocks, `a` `nb` Q8_0 blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q4_0(nb: usize, w: &[u8], a: &[u8]) -> f32 {
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
    pub unsafe fn q5_0(nb: usize, w: &[u8], a: &[u8]) -> f32 {
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
    pub unsafe fn q8_0_x4(nb: usize, w: &[u8], a: &[&[u8]; 4]) -> [f32; 4] {
        sum_blocks_x4!(nb, a, |i| {
            let wb = &w[i * B8..(i + 1) * B8];
            // SAFETY: 32 quants after the scale.
            (f16_at(wb), unsafe { load32(wb.as_ptr().add(2)) })
        })
    }

    /// # Safety: `w` holds `nb` Q4_0 blocks, each `a[j]` `nb` Q8_0 blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q4_0_x4(nb: usize, w: &[u8], a: &[&[u8]; 4]) -> [f32; 4] {
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
    pub unsafe fn q5_0_x4(nb: usize, w: &[u8], a: &[&[u8]; 4]) -> [f32; 4] {
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

    const BQ8K: usize = std::mem::size_of::<BlockQ8K>();
    const BQ4K: usize = std::mem::size_of::<BlockQ4K>();
    const BQ6K: usize = std::mem::size_of::<BlockQ6K>();

    fn q8k_parts(ab: &[u8]) -> (f32, [i16; 16]) {
        let d = f32::from_le_bytes([ab[0], ab[1], ab[2], ab[3]]);
        let mut bsums = [0i16; 16];
        for (k, s) in bsums.iter_mut().enumerate() {
            let o = 4 + QK_K + 2 * k;
            *s = i16::from_le_bytes([ab[o], ab[o + 1]]);
        }
        (d, bsums)
    }

    /// # Safety: `w` holds `nb` Q4_K blocks, `a` `nb` Q8_K blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q4_k(nb: usize, w: &[u8], a: &[u8]) -> f32 {
        let mut sum = 0.0f32;
        for i in 0..nb {
            let (wb, ab) = (&w[i * BQ4K..(i + 1) * BQ4K], &a[i * BQ8K..(i + 1) * BQ8K]);
            let (dy, bsums) = q8k_parts(ab);
            let d = f16_at(&wb[0..2]) * dy;
            let dmin = f16_at(&wb[2..4]) * dy;
            let scales: &[u8; 12] = wb[4..16].try_into().expect("12 bytes");
            let mut isum = _mm256_setzero_si256();
            let mut msum = 0i32;
            for j in 0..4 {
                let (sc1, m1) = scale_min_k4(2 * j, scales);
                let (sc2, m2) = scale_min_k4(2 * j + 1, scales);
                // SAFETY: qs (128 bytes) starts at 16; y quants (256) at 4.
                let (q, y1, y2) = unsafe {
                    (
                        load32(wb.as_ptr().add(16 + 32 * j)),
                        load32(ab.as_ptr().add(4 + 64 * j)),
                        load32(ab.as_ptr().add(4 + 64 * j + 32)),
                    )
                };
                let lo = _mm256_and_si256(q, _mm256_set1_epi8(0x0F));
                let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), _mm256_set1_epi8(0x0F));
                let p1 = dpbusd(_mm256_setzero_si256(), lo, y1);
                let p2 = dpbusd(_mm256_setzero_si256(), hi, y2);
                isum =
                    _mm256_add_epi32(isum, _mm256_mullo_epi32(p1, _mm256_set1_epi32(sc1 as i32)));
                isum =
                    _mm256_add_epi32(isum, _mm256_mullo_epi32(p2, _mm256_set1_epi32(sc2 as i32)));
                msum += m1 as i32 * (bsums[4 * j] as i32 + bsums[4 * j + 1] as i32)
                    + m2 as i32 * (bsums[4 * j + 2] as i32 + bsums[4 * j + 3] as i32);
            }
            sum += d * hsum_epi32(isum) as f32 - dmin * msum as f32;
        }
        sum
    }

    /// # Safety: `w` holds `nb` Q6_K blocks, `a` `nb` Q8_K blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q6_k(nb: usize, w: &[u8], a: &[u8]) -> f32 {
        let m4 = _mm256_set1_epi8(0x0F);
        let m2 = _mm256_set1_epi8(3);
        let mut sum = 0.0f32;
        for i in 0..nb {
            let (wb, ab) = (&w[i * BQ6K..(i + 1) * BQ6K], &a[i * BQ8K..(i + 1) * BQ8K]);
            let (dy, bsums) = q8k_parts(ab);
            let d = f16_at(&wb[208..210]) * dy;
            let sc: [i8; 16] = std::array::from_fn(|k| wb[192 + k] as i8);
            let mut isum = _mm256_setzero_si256();
            for half in 0..2 {
                // SAFETY: ql is 128 bytes at 0, qh 64 bytes at 128; y quants at 4.
                let (ql0, ql1, qh) = unsafe {
                    (
                        load32(wb.as_ptr().add(64 * half)),
                        load32(wb.as_ptr().add(64 * half + 32)),
                        load32(wb.as_ptr().add(128 + 32 * half)),
                    )
                };
                let v = [
                    _mm256_or_si256(
                        _mm256_and_si256(ql0, m4),
                        _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(ql1, m4),
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4),
                    ),
                ];
                for (k, v) in v.iter().enumerate() {
                    // SAFETY: 32 y quants for this group of the half.
                    let y = unsafe { load32(ab.as_ptr().add(4 + 128 * half + 32 * k)) };
                    let p = dpbusd(_mm256_setzero_si256(), *v, y);
                    let s0 = sc[8 * half + 2 * k] as i32;
                    let s1 = sc[8 * half + 2 * k + 1] as i32;
                    let scale = _mm256_set_epi32(s1, s1, s1, s1, s0, s0, s0, s0);
                    isum = _mm256_add_epi32(isum, _mm256_mullo_epi32(p, scale));
                }
            }
            // The unsigned quants carry +32: subtract 32 * scale * (sum of y) per 16.
            let offset: i32 = (0..16).map(|k| sc[k] as i32 * bsums[k] as i32).sum();
            sum += d * (hsum_epi32(isum) - 32 * offset) as f32;
        }
        sum
    }
}

/// `vpmaddubsw` + `vpmaddwd`: exact for the value ranges used here (|pair sums| < 2^15).
#[inline(always)]
fn dpbusd_avx2(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    // SAFETY: only inlined into the `#[target_feature(enable = "avx2,...")]` kernels below.
    unsafe {
        let p16 = _mm256_maddubs_epi16(u, s);
        _mm256_add_epi32(acc, _mm256_madd_epi16(p16, _mm256_set1_epi16(1)))
    }
}

/// The SIMD activation quantizer for `ty`, if this level has one. Each produces exactly the bytes
/// of `quantize::quantize_row` (same float operations; `vcvtps2dq` rounds half to even like the
/// scalar magic-number rounding), and hands blocks with non-finite values to the scalar code.
pub fn quantizer(ty: GgmlType) -> Option<super::QuantizeRowFn> {
    Some(match ty {
        GgmlType::Q8_0 => quantize_q8_0,
        GgmlType::Q8_K => quantize_q8_k,
        GgmlType::F16 => quantize_f16,
        _ => return None,
    })
}

fn check_quantize(ty: GgmlType, src: &[f32], dst: &[u8]) {
    assert_eq!(
        Some(dst.len()),
        ty.row_bytes(src.len()),
        "quantize_row: {ty} destination size does not match {} values",
        src.len()
    );
}

fn quantize_q8_0(src: &[f32], dst: &mut [u8]) {
    check_quantize(GgmlType::Q8_0, src, dst);
    for (x, b) in src
        .chunks_exact(QK)
        .zip(dst.chunks_exact_mut(std::mem::size_of::<BlockQ8_0>()))
    {
        // SAFETY: 32 values and a 34-byte block; the CPU has these features (dispatch).
        if !unsafe { quant::q8_0_block(x, b) } {
            crate::quantize::quantize_row(GgmlType::Q8_0, x, b);
        }
    }
}

fn quantize_q8_k(src: &[f32], dst: &mut [u8]) {
    check_quantize(GgmlType::Q8_K, src, dst);
    for (x, b) in src
        .chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(std::mem::size_of::<BlockQ8K>()))
    {
        // SAFETY: 256 values and a 292-byte block; the CPU has these features (dispatch).
        if !unsafe { quant::q8_k_block(x, b) } {
            crate::quantize::quantize_row(GgmlType::Q8_K, x, b);
        }
    }
}

fn quantize_f16(src: &[f32], dst: &mut [u8]) {
    check_quantize(GgmlType::F16, src, dst);
    let whole = src.len() / 8 * 8;
    // SAFETY: `whole` values fit both slices; the CPU has these features (dispatch).
    unsafe { quant::f16(&src[..whole], &mut dst[..2 * whole]) };
    crate::quantize::quantize_row(GgmlType::F16, &src[whole..], &mut dst[2 * whole..]);
}

mod quant {
    use super::*;

    /// Whether all 8·k values of `v` are finite (inf − inf and NaN stay NaN; a false "no" on a
    /// finite overflow only sends the block to the scalar code).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn all_finite(v: &[__m256]) -> bool {
        let mut s = _mm256_setzero_ps();
        for &x in v {
            s = _mm256_add_ps(s, x);
        }
        let z = _mm256_mul_ps(s, _mm256_setzero_ps());
        _mm256_movemask_ps(_mm256_cmp_ps(z, z, _CMP_UNORD_Q)) == 0
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn abs(x: __m256) -> __m256 {
        _mm256_andnot_ps(_mm256_set1_ps(-0.0), x)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn hmax(v: __m256) -> f32 {
        let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_movehdup_ps(m));
        _mm_cvtss_f32(m)
    }

    /// 32 int32 (four vectors, values in -128..128) as 32 bytes in order.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn pack32(q: [__m256i; 4]) -> __m256i {
        // packs work within 128-bit lanes; the permute puts the 4-byte groups back in order.
        let p = _mm256_packs_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
    }

    /// ggml's Q8_0 activation block (`quantize::quantize_row`), or `false` without writing when
    /// a value is not finite or the block's scale overflows.
    ///
    /// # Safety: the CPU has AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q8_0_block(x: &[f32], out: &mut [u8]) -> bool {
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

    /// ggml's Q8_K activation block (`quantize::quantize_row`), or `false` without writing when
    /// a value is not finite or the block's scale overflows.
    ///
    /// # Safety: the CPU has AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q8_k_block(x: &[f32], out: &mut [u8]) -> bool {
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

    /// f32 to f16 with round-to-nearest-even (what `half::f16::from_f32` does).
    ///
    /// # Safety: the CPU has AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn f16(x: &[f32], out: &mut [u8]) {
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
