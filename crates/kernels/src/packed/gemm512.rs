//! What the AVX-512 VNNI GEMM tiles of every family share (the tiles themselves live with their
//! types: `quant::*::gemm512`): one group of 16 weight rows (one per 32-bit lane) times a tile of
//! up to 8 tokens, the weights of each block decoded once per tile. Every output lane runs the scalar reference's arithmetic:
//! an exact integer sum per block (offsets of the unsigned quants taken back out through the
//! activations' block sums), then the same float multiplications and additions in the same order,
//! so the results equal `dot_scalar` bit for bit.

use std::arch::x86_64::*;

/// i32 values of the packed layout's per-token activation side data (`packed::ActAux`) per Q8_K
/// block.
pub(crate) const AUX_K: usize = 20;

// Kinds of the 32-value block formats.
/// The dword at `p` broadcast to every lane.
///
/// # Safety: 4 readable bytes at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
pub(crate) unsafe fn bcst(p: *const u8) -> __m512i {
    // SAFETY: guaranteed by the caller.
    _mm512_set1_epi32(unsafe { p.cast::<i32>().read_unaligned() })
}

/// 16 f16 at `p` as f32.
///
/// # Safety: 32 readable bytes at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
pub(crate) unsafe fn f16x16(p: *const u8) -> __m512 {
    // SAFETY: guaranteed by the caller.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(p.cast()) })
}

/// # Safety: 64 readable bytes at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
pub(crate) unsafe fn load(p: *const u8) -> __m512i {
    // SAFETY: guaranteed by the caller.
    unsafe { _mm512_loadu_si512(p.cast()) }
}

/// The 8 registers of unsigned quants of 32 values (value `4g + j` in byte `j` of register `g`)
/// from 4 nibble vectors at `p`.
///
/// # Safety: 256 readable bytes at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
pub(crate) unsafe fn nibbles(p: *const u8) -> [__m512i; 8] {
    let m4 = _mm512_set1_epi8(0x0F);
    let mut x = [_mm512_setzero_si512(); 8];
    for v in 0..4 {
        // SAFETY: inside the 256 bytes.
        let raw = unsafe { load(p.add(64 * v)) };
        x[v] = _mm512_and_si512(raw, m4);
        x[v + 4] = _mm512_and_si512(_mm512_srli_epi16::<4>(raw), m4);
    }
    x
}

/// Merges the fifth bits of 32 values into their nibbles `x` (from [`nibbles`]): `h` is the
/// fifth-bit vector (lane byte `j`, bit `g` the fifth bit of the value in byte `j` of `x[g]`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
pub(crate) fn merge_fifth(x: &mut [__m512i; 8], h: __m512i) {
    let m10 = _mm512_set1_epi8(0x10);
    let hb = [
        _mm512_slli_epi32::<4>(h),
        _mm512_slli_epi32::<3>(h),
        _mm512_slli_epi32::<2>(h),
        _mm512_slli_epi32::<1>(h),
        h,
        _mm512_srli_epi32::<1>(h),
        _mm512_srli_epi32::<2>(h),
        _mm512_srli_epi32::<3>(h),
    ];
    for g in 0..8 {
        // x | (hb & 0x10)
        x[g] = _mm512_ternarylogic_epi32::<0xF8>(x[g], hb[g], m10);
    }
}

/// A tile kernel of `T` tokens over one group's records: `(nb, stride, w, a, aux, out, mask)` —
/// `w` points to the group's `nb` block records (`stride` bytes apart), `a[t]` to token `t`'s
/// quantized activations and `aux[t]` to their side data (`packed::ActAux`), `out[t]` to the 16
/// outputs of the group's rows, of which the lanes of `mask` are written.
///
/// # Safety
/// The CPU has AVX-512 F/BW/VL/DQ and VNNI; every pointer covers what its type's kernel reads or
/// writes (`packed::gemm_group` checks the sizes).
pub(crate) type Tile<const T: usize> =
    unsafe fn(usize, usize, *const u8, [*const u8; T], [*const i32; T], [*mut f32; T], u16);

/// A type's AVX-512 tile kernels for 8, 4 and 1 tokens.
#[derive(Clone, Copy)]
pub(crate) struct Tiles {
    pub t8: Tile<8>,
    pub t4: Tile<4>,
    pub t1: Tile<1>,
}

/// The [`Tiles`] of a generic tile function `$f::<[$k,] T>`.
macro_rules! tiles512 {
    ($($f:ident)::+ $(, $k:tt)?) => {
        $crate::packed::gemm512::Tiles {
            t8: $($f)::+::<$($k,)? 8>,
            t4: $($f)::+::<$($k,)? 4>,
            t1: $($f)::+::<$($k,)? 1>,
        }
    };
}
pub(crate) use tiles512;

/// The final sum of the four running sums of `quant::decoded::sum4!` (block `i` added to sum
/// `i % 4`): `(s0 + s1) + (s2 + s3)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
pub(crate) fn sum4_total(s: &[__m512; 4]) -> __m512 {
    _mm512_add_ps(_mm512_add_ps(s[0], s[1]), _mm512_add_ps(s[2], s[3]))
}
