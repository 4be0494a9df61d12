//! AVX2 GEMM kernels over the packed (row-interleaved) layouts of `crate::packed`: the 256-bit
//! port of `gemm512`, on the same records. A 16-row group is done as two halves of 8 rows (the
//! first and second 32 bytes of every 64-byte vector, one row per 32-bit lane), each half times a
//! tile of up to `T` tokens, the weights of each block decoded once per tile.
//!
//! `vpdpbusd` (four u8·i8 products into an i32 lane) becomes `vpmaddubsw` (pairs into saturating
//! i16) and `vpmaddwd` (pairs of i16 into i32). The i16 sums never saturate, so every integer sum
//! stays exact (the activations are quantized to `-128..=127`):
//!
//! * Q4_0 and Q4_K: quants `0..=15`; a `vpmaddubsw` pair is at most 2·15·128 = 3840 in
//!   magnitude, so all 8 registers of a 32-value block sum in i16 (8·3840 = 30720) before one
//!   `vpmaddwd`, with ones (Q4_0) or the sub-block scale (Q4_K, `0..=63`) in both halves of a lane.
//! * Q5_0, Q5_1 and Q5_K: quants `0..=31`, a pair at most 7936; four registers (31744) per i16
//!   sum, two sums (per block, or per sub-block times its scale for Q5_K).
//! * Q6_K: quants `0..=63`, a pair at most 16128; two registers (32256) per i16 sum, the signed
//!   sub-block scale applied by `vpmaddwd` to each.
//! * Q8_0: the stored `q + 128` is turned back into `q`, and |q| (unsigned) multiplies sign(y, q):
//!   a pair is at most 2·128·127 = 32512. This needs activations in `-127..=127`, which Q8_0
//!   activations are (`d = amax / 127`), as in `avx2`'s kernels.
//! * IQ4_NL and IQ4_XS: the indices are looked up (`vpshufb`) as the signed values of
//!   `kvalues_iq4nl` (`-127..=113`), and |x| multiplies sign(y, x) as for Q8_0 (a pair at most
//!   2·127·127 = 32258; Q8_0 and Q8_K activations are in `-127..=127`); each `vpmaddubsw` goes
//!   through its own `vpmaddwd` (by ones, or IQ4_XS's signed sub-block scale), no offset.
//!
//! The offsets of the unsigned quants are taken back out through the activations' block sums,
//! and every output lane then runs the scalar reference's float arithmetic (the same
//! multiplications and additions in the same order, never fused), so the results equal
//! `dot_scalar` bit for bit, like `gemm512`'s.

pub(crate) use super::gemm512::AUX_K;
use std::arch::x86_64::*;

/// Offset of the bsums in a Q8_K block.
pub(crate) const BSUMS: usize = 4 + 256;

/// The dword at `p` broadcast to every lane.
///
/// # Safety: 4 readable bytes at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn bcst(p: *const u8) -> __m256i {
    // SAFETY: guaranteed by the caller.
    _mm256_set1_epi32(unsafe { p.cast::<i32>().read_unaligned() })
}

/// 8 f16 at `p` as f32.
///
/// # Safety: 16 readable bytes at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f16x8(p: *const u8) -> __m256 {
    // SAFETY: guaranteed by the caller.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p.cast()) })
}

/// # Safety: 32 readable bytes at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn load(p: *const u8) -> __m256i {
    // SAFETY: guaranteed by the caller.
    unsafe { _mm256_loadu_si256(p.cast()) }
}

/// The 8 bytes at `p` (one per row of a half), as i16 pairs `(v, v)`: one per 32-bit lane,
/// sign-extended when `SIGNED`, else zero-extended.
///
/// # Safety: 8 readable bytes at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn scale_pairs<const SIGNED: bool>(p: *const u8) -> __m256i {
    // SAFETY: guaranteed by the caller.
    let l = unsafe { _mm_loadl_epi64(p.cast()) };
    let d = _mm_unpacklo_epi8(l, l);
    if SIGNED {
        _mm256_cvtepi8_epi16(d)
    } else {
        _mm256_cvtepu8_epi16(d)
    }
}

/// Stores the f32 lanes of `acc` whose `mask` lane has its sign bit set at `out`.
///
/// # Safety: `out` points to writable f32 at every lane selected by `mask`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn store(out: *mut f32, mask: __m256i, acc: __m256) {
    // SAFETY: guaranteed by the caller.
    unsafe { _mm256_maskstore_ps(out, mask, acc) }
}

/// The unsigned 5-bit quants of nibble vector `v` of a Q5_0 record half: `raw` that vector, `hv`
/// the fifth-bit vector, `m4` and `m10` the byte masks 0x0F and 0x10; values `4v + j` and
/// `16 + 4v + j` (lane byte `j`).
///
/// `#[inline(always)]` without `#[target_feature]` (the two do not combine on stable Rust): it is
/// inlined into [`tile_q32`] before any other optimization, as if written out there.
///
/// # Safety: the CPU has AVX2.
#[inline(always)]
pub(crate) unsafe fn q5_0_quants(
    raw: __m256i,
    hv: __m256i,
    v: usize,
    m4: __m256i,
    m10: __m256i,
) -> (__m256i, __m256i) {
    // SAFETY: the CPU has AVX2, as the caller guarantees.
    unsafe {
        // Bit 4 of value 4v + j is bit v of byte j, of 16 + 4v + j bit v + 4.
        let (hl, hh) = match v {
            0 => (_mm256_slli_epi32::<4>(hv), hv),
            1 => (_mm256_slli_epi32::<3>(hv), _mm256_srli_epi32::<1>(hv)),
            2 => (_mm256_slli_epi32::<2>(hv), _mm256_srli_epi32::<2>(hv)),
            _ => (_mm256_slli_epi32::<1>(hv), _mm256_srli_epi32::<3>(hv)),
        };
        let lo = _mm256_or_si256(_mm256_and_si256(raw, m4), _mm256_and_si256(hl, m10));
        let hi = _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(raw), m4),
            _mm256_and_si256(hh, m10),
        );
        (lo, hi)
    }
}

/// A half-group tile kernel of `T` tokens: `(nb, stride, w, h, a, aux, out, lanes)` — like
/// `gemm512::Tile` for rows `8h..8h + 8` of the group, `out[t]` pointing to those 8 outputs and
/// `lanes` selecting the rows written.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; every pointer covers what its type's kernel reads or writes.
pub(crate) type Tile<const T: usize> = unsafe fn(
    usize,
    usize,
    *const u8,
    usize,
    [*const u8; T],
    [*const i32; T],
    [*mut f32; T],
    __m256i,
);

/// A type's AVX2 tile kernels for 4 and 1 tokens.
#[derive(Clone, Copy)]
pub(crate) struct Tiles {
    pub t4: Tile<4>,
    pub t1: Tile<1>,
}

/// The [`Tiles`] of a generic tile function `$f::<[$k,] T>`.
macro_rules! tiles256 {
    ($($f:ident)::+ $(, $k:tt)?) => {
        $crate::packed::gemm256::Tiles {
            t4: $($f)::+::<$($k,)? 4>,
            t1: $($f)::+::<$($k,)? 1>,
        }
    };
}
pub(crate) use tiles256;

/// One tile of `T` tokens over a whole group: `f` on each half of 8 rows that has live lanes.
///
/// # Safety: as for [`Tile`], for `f`, with `out[t]` pointing to the group's 16 outputs.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn tile<const T: usize>(
    f: Tile<T>,
    nb: usize,
    stride: usize,
    w: *const u8,
    a: [*const u8; T],
    aux: [*const i32; T],
    out: [*mut f32; T],
    mask: u16,
) {
    let bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    for h in 0..2 {
        let m = (mask >> (8 * h)) & 0xFF;
        if m == 0 {
            continue;
        }
        let lanes = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(m as i32), bits), bits);
        // SAFETY: rows 8h.. of the outputs start 8h floats in, inside the 16 of each `out[t]`;
        // the rest is forwarded from the caller.
        unsafe { f(nb, stride, w, h, a, aux, out.map(|p| p.add(8 * h)), lanes) };
    }
}
