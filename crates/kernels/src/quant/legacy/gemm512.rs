//! AVX-512 VNNI GEMM tiles of this family's packed layouts (`packed`): one group of 16 weight
//! rows (one per 32-bit lane) times a tile of tokens, each record decoded once per tile; every
//! output lane bit-identical to the family's reference dot product.

#![allow(clippy::too_many_arguments)]
use crate::blocks::*;
use crate::packed::gemm512::*;
use crate::packed::gemm_amx::AmxKind;
use std::arch::x86_64::*;
use std::mem::size_of;

pub(crate) const Q8_0: u8 = 0;

pub(crate) const Q4_0: u8 = 1;

pub(crate) const Q5_0: u8 = 2;

/// Offset of the scales in a record of `KIND`.
pub(crate) const fn d_offset(kind: u8) -> usize {
    match kind {
        Q8_0 => 512,
        Q4_0 => 256,
        _ => 320,
    }
}

/// `out[t]` (16 lanes under `mask`) for the tokens of one tile of 32-value blocks.
///
/// # Safety: `w` points to `nb` records of `KIND` (`stride` bytes apart); each `a[t]` to `nb`
/// Q8_0 blocks and `aux[t]` to its `2 nb` aux values; each `out[t]` to 16 writable f32 under
/// `mask`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
pub(crate) unsafe fn tile_q32<const KIND: u8, const T: usize>(
    nb: usize,
    stride: usize,
    w: *const u8,
    a: [*const u8; T],
    aux: [*const i32; T],
    out: [*mut f32; T],
    mask: __mmask16,
) {
    let mut acc = [_mm512_setzero_ps(); T];
    for b in 0..nb {
        // SAFETY: (all reads) record b of `w`, block b of each `a[t]`, entries b and nb + b of
        // each `aux[t]`, all inside what the caller guarantees.
        unsafe {
            let rec = w.add(b * stride);
            let x = decode_q32::<KIND>(rec);
            let dw = f16x16(rec.add(d_offset(KIND)));
            for t in 0..T {
                let y = a[t].add(b * size_of::<BlockQ8_0>() + 2);
                let mut p = q32_offset::<KIND>(aux[t], b);
                for g in 0..8 {
                    p = _mm512_dpbusd_epi32(p, x[g], bcst(y.add(4 * g)));
                }
                acc[t] = q32_add(acc[t], p, dw, aux[t], nb, b);
            }
        }
    }
    for t in 0..T {
        // SAFETY: guaranteed by the caller.
        unsafe { _mm512_mask_storeu_ps(out[t], mask, acc[t]) };
    }
}

/// `-offset · Σy` of block `b` (from its aux value), so that `Σ (u - offset) y` comes out exact.
///
/// # Safety: `aux` holds the token's `2 nb` aux values, `b < nb`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn q32_offset<const KIND: u8>(aux: *const i32, b: usize) -> __m512i {
    // SAFETY: guaranteed by the caller.
    let neg = _mm512_set1_epi32(unsafe { aux.add(b).read() });
    match KIND {
        Q8_0 => _mm512_slli_epi32::<7>(neg),
        Q4_0 => _mm512_slli_epi32::<3>(neg),
        _ => _mm512_slli_epi32::<4>(neg),
    }
}

/// `acc + (isum · d_w) · d_a` for block `b` (`isum` exact, `d_a` from the aux values), as
/// `dot_scalar`'s `sum += isum as f32 * x.d * y.d`.
///
/// # Safety: as for [`q32_offset`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn q32_add(
    acc: __m512,
    isum: __m512i,
    dw: __m512,
    aux: *const i32,
    nb: usize,
    b: usize,
) -> __m512 {
    // SAFETY: guaranteed by the caller.
    let dy = _mm512_set1_ps(f32::from_bits(unsafe { aux.add(nb + b).read() } as u32));
    let f = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(isum), dw), dy);
    _mm512_add_ps(acc, f)
}

/// The 8 registers of unsigned quants (`packed::gemm512::nibbles`' order) of a record of `KIND`.
///
/// # Safety: a whole record of `KIND` at `rec`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
pub(crate) unsafe fn decode_q32<const KIND: u8>(rec: *const u8) -> [__m512i; 8] {
    // SAFETY: (all reads) inside the record.
    unsafe {
        match KIND {
            Q8_0 => {
                let mut x = [_mm512_setzero_si512(); 8];
                for (g, x) in x.iter_mut().enumerate() {
                    *x = load(rec.add(64 * g));
                }
                x
            }
            Q4_0 => nibbles(rec),
            _ => {
                let mut x = nibbles(rec);
                merge_fifth(&mut x, load(rec.add(256)));
                x
            }
        }
    }
}

/// The 8 registers of unsigned quants of a Q4_1 (`FIFTH`: Q5_1) record.
///
/// # Safety: a whole record at `rec`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn decode_q4_1<const FIFTH: bool>(rec: *const u8) -> [__m512i; 8] {
    // SAFETY: (all reads) inside the record.
    unsafe {
        let mut x = nibbles(rec);
        if FIFTH {
            merge_fifth(&mut x, load(rec.add(256)));
        }
        x
    }
}

/// The 16 `d` and 16 `m` of a Q4_1 (`FIFTH`: Q5_1, after its fifth bits) record.
///
/// # Safety: a whole record at `rec`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn q4_1_scales<const FIFTH: bool>(rec: *const u8) -> (__m512, __m512) {
    let at = if FIFTH { 320 } else { 256 };
    // SAFETY: inside the record.
    unsafe { (f16x16(rec.add(at)), f16x16(rec.add(at + 32))) }
}

/// `acc + ((d · a.d) · isum + m · a.s)` for block `b` (`a.d`, `a.s` from the Q8_1 aux values), as
/// `dot_scalar::vec_dot_q4_1_q8_1`.
///
/// # Safety: `aux` holds the token's `2 nb` aux values, `b < nb`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn q4_1_add(
    acc: __m512,
    isum: __m512i,
    (dw, mw): (__m512, __m512),
    aux: *const i32,
    nb: usize,
    b: usize,
) -> __m512 {
    // SAFETY: guaranteed by the caller.
    let (d, s) = unsafe { (aux.add(b).read(), aux.add(nb + b).read()) };
    let dy = _mm512_set1_ps(f32::from_bits(d as u32));
    let sy = _mm512_set1_ps(f32::from_bits(s as u32));
    let f = _mm512_mul_ps(_mm512_mul_ps(dw, dy), _mm512_cvtepi32_ps(isum));
    _mm512_add_ps(acc, _mm512_add_ps(f, _mm512_mul_ps(mw, sy)))
}

/// Like [`tile_q32`] for Q4_1 records (unsigned nibbles, then 16 `d` and 16 `m`) or (`FIFTH`)
/// Q5_1 records (Q5_0's nibbles and fifth bits of the unsigned quants, then `d` and `m`) against
/// Q8_1 activations (`aux[t]`: `nb` values `d`, then `nb` values `s`, as f32 bits): per block
/// `(d · a.d) · isum + m · a.s`, as `dot_scalar::vec_dot_q4_1_q8_1` / `vec_dot_q5_1_q8_1`.
///
/// # Safety: as for [`tile_q32`], with Q8_1 blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
pub(crate) unsafe fn tile_q4_1<const FIFTH: bool, const T: usize>(
    nb: usize,
    stride: usize,
    w: *const u8,
    a: [*const u8; T],
    aux: [*const i32; T],
    out: [*mut f32; T],
    mask: __mmask16,
) {
    let mut acc = [_mm512_setzero_ps(); T];
    for b in 0..nb {
        // SAFETY: (all reads) record b of `w`, block b of each `a[t]`, entries b and nb + b of
        // each `aux[t]`, all inside what the caller guarantees.
        unsafe {
            let rec = w.add(b * stride);
            let x = decode_q4_1::<FIFTH>(rec);
            let (dw, mw) = q4_1_scales::<FIFTH>(rec);
            for t in 0..T {
                let y = a[t].add(b * size_of::<crate::blocks::BlockQ8_1>() + 4);
                let (mut p, mut p2) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                for g in 0..4 {
                    p = _mm512_dpbusd_epi32(p, x[g], bcst(y.add(4 * g)));
                    p2 = _mm512_dpbusd_epi32(p2, x[g + 4], bcst(y.add(16 + 4 * g)));
                }
                acc[t] = q4_1_add(acc[t], _mm512_add_epi32(p, p2), (dw, mw), aux[t], nb, b);
            }
        }
    }
    for t in 0..T {
        // SAFETY: guaranteed by the caller.
        unsafe { _mm512_mask_storeu_ps(out[t], mask, acc[t]) };
    }
}

/// The AMX GEMM's view of the 32-value legacy types of `KIND` (`packed::gemm_amx`): one
/// sub-block per block, [`tile_q32`]'s epilogue.
pub(crate) struct AmxQ32<const KIND: u8>;

// SAFETY: reads only inside the records, Q8_0 blocks and aux values the AMX GEMM passes.
unsafe impl<const KIND: u8> AmxKind for AmxQ32<KIND> {
    const S: usize = 1;
    const G: usize = 8;
    const SIGNED: bool = true;
    type Block = __m512;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn decode(rec: *const u8, _s: usize) -> [__m512i; 8] {
        // The quants less their offset (128, 8, 16), as the scalar reference has them.
        let offset = _mm512_set1_epi8(match KIND {
            Q8_0 => -128,
            Q4_0 => 8,
            _ => 16,
        });
        // SAFETY: forwarded.
        unsafe { decode_q32::<KIND>(rec) }.map(|x| _mm512_sub_epi8(x, offset))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn block(rec: *const u8) -> __m512 {
        // SAFETY: forwarded.
        unsafe { f16x16(rec.add(d_offset(KIND))) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn accumulate(
        dw: &__m512,
        b: usize,
        nb: usize,
        _act: *const u8,
        aux: *const i32,
        sums: *const i32,
        acc: &mut [__m512; 4],
    ) {
        // SAFETY: forwarded.
        unsafe { acc[0] = q32_add(acc[0], load(sums.cast()), *dw, aux, nb, b) };
    }
}

/// The AMX GEMM's view of Q4_1 (`FIFTH`: Q5_1) records: one sub-block of unsigned quants per
/// block, [`tile_q4_1`]'s epilogue.
pub(crate) struct AmxQ4_1<const FIFTH: bool>;

// SAFETY: reads only inside the records and aux values the AMX GEMM passes.
unsafe impl<const FIFTH: bool> AmxKind for AmxQ4_1<FIFTH> {
    const S: usize = 1;
    const G: usize = 8;
    const SIGNED: bool = false;
    type Block = (__m512, __m512);

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn decode(rec: *const u8, _s: usize) -> [__m512i; 8] {
        // SAFETY: forwarded.
        unsafe { decode_q4_1::<FIFTH>(rec) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn block(rec: *const u8) -> Self::Block {
        // SAFETY: forwarded.
        unsafe { q4_1_scales::<FIFTH>(rec) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn accumulate(
        scales: &Self::Block,
        b: usize,
        nb: usize,
        _act: *const u8,
        aux: *const i32,
        sums: *const i32,
        acc: &mut [__m512; 4],
    ) {
        // SAFETY: forwarded.
        unsafe { acc[0] = q4_1_add(acc[0], load(sums.cast()), *scales, aux, nb, b) };
    }
}
