//! AVX-512 VNNI GEMM tiles of this family's packed layouts (`packed`): one group of 16 weight
//! rows (one per 32-bit lane) times a tile of tokens, each record decoded once per tile; every
//! output lane bit-identical to the family's reference dot product.

#![allow(clippy::too_many_arguments)]
use super::packed::iq4xs;
use crate::blocks::*;
use crate::packed::gemm512::*;
use crate::packed::gemm_amx::{scaled_sum, AmxKind};
use std::arch::x86_64::*;
use std::mem::size_of;

/// A value table plus 128 (unsigned for `vpdpbusd`) in every 128-bit lane: a `vpshufb` table for
/// 4-bit indices (ggml's `kvalues_iq4nl`, `kvalues_mxfp4`).
///
/// # Safety: the CPU has AVX-512 F.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
pub(crate) unsafe fn value_table(values: &[i8; 16]) -> __m512i {
    let t: [u8; 16] = std::array::from_fn(|i| (values[i] as i16 + 128) as u8);
    // SAFETY: `t` is 16 readable bytes.
    _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(t.as_ptr().cast()) })
}

/// [`value_table`] of `kvalues_iq4nl`.
///
/// # Safety: the CPU has AVX-512 F.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
pub(crate) unsafe fn iq4_table() -> __m512i {
    // SAFETY: guaranteed by the caller.
    unsafe { value_table(&super::KVALUES) }
}

/// ggml's `ggml_e8m0_to_fp32_half` of 16 exponent bytes at `p`: `(e - 1) << 23` as f32 bits, and
/// `0x200000 << e` (subnormal) for `e < 2`, as `fp4::e8m0_to_fp32_half`.
///
/// # Safety: 16 readable bytes at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn e8m0_half16(p: *const u8) -> __m512 {
    // SAFETY: guaranteed by the caller.
    let e = _mm512_cvtepu8_epi32(unsafe { _mm_loadu_si128(p.cast()) });
    let normal = _mm512_slli_epi32::<23>(_mm512_sub_epi32(e, _mm512_set1_epi32(1)));
    let small = _mm512_sllv_epi32(_mm512_set1_epi32(0x0020_0000), e);
    let tiny = _mm512_cmplt_epu32_mask(e, _mm512_set1_epi32(2));
    _mm512_castsi512_ps(_mm512_mask_blend_epi32(tiny, normal, small))
}

/// Like [`nibbles`] for IQ4 indices: the 8 registers of `KVALUES[i] + 128` of 32 values.
///
/// # Safety: 256 readable bytes at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
pub(crate) unsafe fn iq4_values(p: *const u8, table: __m512i) -> [__m512i; 8] {
    // SAFETY: guaranteed by the caller.
    let mut x = unsafe { nibbles(p) };
    for x in x.iter_mut() {
        *x = _mm512_shuffle_epi8(table, *x);
    }
    x
}

/// `Σ u · y` over the 8 registers `x` of one 32-value block and the 32 activations at `y`, plus
/// `p` (two dependency chains; exact integer sums, so the split changes nothing).
///
/// # Safety: 32 readable bytes at `y`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
pub(crate) unsafe fn dot32(p: __m512i, x: &[__m512i; 8], y: *const u8) -> __m512i {
    let (mut p, mut p2) = (p, _mm512_setzero_si512());
    for g in 0..4 {
        // SAFETY: inside the 32 bytes at `y`.
        unsafe {
            p = _mm512_dpbusd_epi32(p, x[g], bcst(y.add(4 * g)));
            p2 = _mm512_dpbusd_epi32(p2, x[g + 4], bcst(y.add(16 + 4 * g)));
        }
    }
    _mm512_add_epi32(p, p2)
}

/// Like [`tile_q32`] for IQ4_NL records (Q4_0's layout: 4-bit indices into `kvalues_iq4nl`,
/// then the 16 `d`) or (`MX`) MXFP4 records (the same with indices into `kvalues_mxfp4`, then the
/// 16 exponents `e`, `d = e8m0_half(e)`), and Q8_0 activations. The indices become `value + 128`
/// by a byte shuffle, the `128 · Σy` taken back out through the block sums. Per block
/// `(d · a.d) · isum`, summed in the four running sums of the decoded reference
/// (`quant::decoded::dot_32_q8_0`).
///
/// # Safety: as for [`tile_q32`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
pub(crate) unsafe fn tile_iq4nl<const MX: bool, const T: usize>(
    nb: usize,
    stride: usize,
    w: *const u8,
    a: [*const u8; T],
    aux: [*const i32; T],
    out: [*mut f32; T],
    mask: __mmask16,
) {
    // SAFETY: the CPU has AVX-512 (this function's features).
    let table = unsafe {
        if MX {
            value_table(&crate::quant::fp4::KVALUES_MXFP4)
        } else {
            iq4_table()
        }
    };
    let mut acc = [[_mm512_setzero_ps(); 4]; T];
    for b in 0..nb {
        // SAFETY: (all reads) record b of `w`, block b of each `a[t]`, entries b and nb + b of
        // each `aux[t]`, all inside what the caller guarantees.
        unsafe {
            let rec = w.add(b * stride);
            let x = iq4_values(rec, table);
            let dw = if MX {
                e8m0_half16(rec.add(256))
            } else {
                f16x16(rec.add(256))
            };
            for t in 0..T {
                let y = a[t].add(b * size_of::<BlockQ8_0>() + 2);
                // -128 · Σy: the values are stored + 128.
                let neg = _mm512_slli_epi32::<7>(_mm512_set1_epi32(aux[t].add(b).read()));
                let p = dot32(neg, &x, y);
                let dy = _mm512_set1_ps(f32::from_bits(aux[t].add(nb + b).read() as u32));
                // sum[b % 4] += (d_w · d_a) · isum
                let f = _mm512_mul_ps(_mm512_mul_ps(dw, dy), _mm512_cvtepi32_ps(p));
                acc[t][b % 4] = _mm512_add_ps(acc[t][b % 4], f);
            }
        }
    }
    for t in 0..T {
        // SAFETY: guaranteed by the caller.
        unsafe { _mm512_mask_storeu_ps(out[t], mask, sum4_total(&acc[t])) };
    }
}

/// Like [`tile_q4k`] for IQ4_XS records (per 32-value sub-block `s`, 4 nibble vectors of
/// indices and the signed sub-block scales `ls - 32`, 16 bytes, `packed::iq4xs`; `d`) and Q8_K activations: per super-block `(d · a.d) · isum - (0 · a.d) · 0` (the decoded
/// reference `quant::decoded::dot_k` with no mins), in its four running sums.
///
/// # Safety: as for [`tile_q4k`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
pub(crate) unsafe fn tile_iq4xs<const T: usize>(
    nb: usize,
    stride: usize,
    w: *const u8,
    a: [*const u8; T],
    aux: [*const i32; T],
    out: [*mut f32; T],
    mask: __mmask16,
) {
    // SAFETY: the CPU has AVX-512 (this function's features).
    let table = unsafe { iq4_table() };
    let zero = _mm512_setzero_ps();
    let mut acc = [[zero; 4]; T];
    for b in 0..nb {
        // SAFETY: (all reads) record b of `w`, block b of each `a[t]` and of each `aux[t]`.
        unsafe {
            let rec = w.add(b * stride);
            let mut isum = [_mm512_setzero_si512(); T];
            for s in 0..8 {
                let x = iq4_values(rec.add(iq4xs::nibbles(s)), table);
                let sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(rec.add(iq4xs::scales(s)).cast()));
                for t in 0..T {
                    let y = a[t].add(b * size_of::<BlockQ8K>() + 4 + 32 * s);
                    // -128 · Σy over the 32 values (aux: -32 · bsums per 16).
                    let ax = aux[t].add(AUX_K * b + 2 * s);
                    let neg = (ax.read() + ax.add(1).read()) << 2;
                    let p = dot32(_mm512_set1_epi32(neg), &x, y);
                    isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(p, sc));
                }
            }
            let dw = f16x16(rec.add(iq4xs::D));
            for t in 0..T {
                let dy = _mm512_set1_ps(
                    a[t].add(b * size_of::<BlockQ8K>())
                        .cast::<f32>()
                        .read_unaligned(),
                );
                // sum[b % 4] += (d·dy)·isum - (dmin·dy)·msum, dmin = msum = 0
                let f = _mm512_sub_ps(
                    _mm512_mul_ps(_mm512_mul_ps(dw, dy), _mm512_cvtepi32_ps(isum[t])),
                    _mm512_mul_ps(_mm512_mul_ps(zero, dy), zero),
                );
                acc[t][b % 4] = _mm512_add_ps(acc[t][b % 4], f);
            }
        }
    }
    for t in 0..T {
        // SAFETY: guaranteed by the caller.
        unsafe { _mm512_mask_storeu_ps(out[t], mask, sum4_total(&acc[t])) };
    }
}

/// `iq4_values` less 128: the signed values of 32 indices (the AMX GEMM's B tile).
///
/// # Safety: 256 readable bytes at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn signed_values(p: *const u8, table: __m512i) -> [__m512i; 8] {
    let m80 = _mm512_set1_epi8(-128);
    // SAFETY: guaranteed by the caller.
    unsafe { iq4_values(p, table) }.map(|x| _mm512_xor_si512(x, m80))
}

/// The AMX GEMM's view of IQ4_NL (`MX`: MXFP4) records: one sub-block of signed values per
/// block, [`tile_iq4nl`]'s epilogue in its four running sums.
pub(crate) struct AmxIq4nl<const MX: bool>;

// SAFETY: reads only inside the records and aux values the AMX GEMM passes.
unsafe impl<const MX: bool> AmxKind for AmxIq4nl<MX> {
    const S: usize = 1;
    const G: usize = 8;
    const SIGNED: bool = true;
    const SUM4: bool = true;
    type Block = __m512;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn decode(rec: *const u8, _s: usize) -> [__m512i; 8] {
        // SAFETY: the CPU has AVX-512; a whole record at `rec`.
        unsafe {
            let table = if MX {
                value_table(&crate::quant::fp4::KVALUES_MXFP4)
            } else {
                iq4_table()
            };
            signed_values(rec, table)
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn block(rec: *const u8) -> __m512 {
        // SAFETY: inside the record.
        unsafe {
            if MX {
                e8m0_half16(rec.add(256))
            } else {
                f16x16(rec.add(256))
            }
        }
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
        // SAFETY: forwarded: the block's sums at `sums`, the token's aux values.
        unsafe {
            let dy = _mm512_set1_ps(f32::from_bits(aux.add(nb + b).read() as u32));
            // sum[b % 4] += (d_w · d_a) · isum
            let f = _mm512_mul_ps(
                _mm512_mul_ps(*dw, dy),
                _mm512_cvtepi32_ps(load(sums.cast())),
            );
            acc[b % 4] = _mm512_add_ps(acc[b % 4], f);
        }
    }
}

/// The AMX GEMM's view of IQ4_XS records: 8 sub-blocks of 32 signed values, [`tile_iq4xs`]'s
/// epilogue in its four running sums.
pub(crate) struct AmxIq4xs;

// SAFETY: reads only inside the records and Q8_K blocks the AMX GEMM passes.
unsafe impl AmxKind for AmxIq4xs {
    const S: usize = 8;
    const G: usize = 8;
    const SIGNED: bool = true;
    const SUM4: bool = true;
    type Block = ([__m512i; 8], __m512);

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn decode(rec: *const u8, s: usize) -> [__m512i; 8] {
        // SAFETY: the CPU has AVX-512; a whole record at `rec`, s < 8.
        unsafe { signed_values(rec.add(iq4xs::nibbles(s)), iq4_table()) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn block(rec: *const u8) -> Self::Block {
        // SAFETY: inside the record.
        unsafe {
            let sc = std::array::from_fn(|s| {
                _mm512_cvtepi8_epi32(_mm_loadu_si128(rec.add(iq4xs::scales(s)).cast()))
            });
            (sc, f16x16(rec.add(iq4xs::D)))
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn accumulate(
        (sc, dw): &Self::Block,
        b: usize,
        _nb: usize,
        act: *const u8,
        _aux: *const i32,
        sums: *const i32,
        acc: &mut [__m512; 4],
    ) {
        let zero = _mm512_setzero_ps();
        // SAFETY: forwarded: 8 sub-blocks' sums at `sums`, block b of the token's row.
        unsafe {
            let isum = scaled_sum(sums, sc);
            let dy = _mm512_set1_ps(
                act.add(b * size_of::<BlockQ8K>())
                    .cast::<f32>()
                    .read_unaligned(),
            );
            // sum[b % 4] += (d·dy)·isum - (dmin·dy)·msum, dmin = msum = 0
            let f = _mm512_sub_ps(
                _mm512_mul_ps(_mm512_mul_ps(*dw, dy), _mm512_cvtepi32_ps(isum)),
                _mm512_mul_ps(_mm512_mul_ps(zero, dy), zero),
            );
            acc[b % 4] = _mm512_add_ps(acc[b % 4], f);
        }
    }
}
