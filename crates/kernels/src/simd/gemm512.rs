//! AVX-512 VNNI GEMM kernels over the packed (row-interleaved) layouts of `crate::packed`: one
//! group of 16 weight rows (one per 32-bit lane) times a tile of up to 8 tokens, the weights of
//! each block decoded once per tile. Every output lane runs the scalar reference's arithmetic:
//! an exact integer sum per block (offsets of the unsigned quants taken back out through the
//! activations' block sums), then the same float multiplications and additions in the same order,
//! so the results equal `dot_scalar` bit for bit.

use crate::blocks::{BlockQ8K, BlockQ8_0};
use std::arch::x86_64::*;
use std::mem::size_of;

/// i32 values of the packed layout's per-token activation side data (`packed::ActAux`) per Q8_K
/// block.
pub(crate) const AUX_K: usize = 20;

// Kinds of the 32-value block formats.
pub const Q8_0: u8 = 0;
pub const Q4_0: u8 = 1;
pub const Q5_0: u8 = 2;

/// Offset of the scales in a record of `KIND`.
const fn d_offset(kind: u8) -> usize {
    match kind {
        Q8_0 => 512,
        Q4_0 => 256,
        _ => 320,
    }
}

/// The dword at `p` broadcast to every lane.
///
/// # Safety: 4 readable bytes at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn bcst(p: *const u8) -> __m512i {
    // SAFETY: guaranteed by the caller.
    _mm512_set1_epi32(unsafe { p.cast::<i32>().read_unaligned() })
}

/// 16 f16 at `p` as f32.
///
/// # Safety: 32 readable bytes at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn f16x16(p: *const u8) -> __m512 {
    // SAFETY: guaranteed by the caller.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(p.cast()) })
}

/// # Safety: 64 readable bytes at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn load(p: *const u8) -> __m512i {
    // SAFETY: guaranteed by the caller.
    unsafe { _mm512_loadu_si512(p.cast()) }
}

/// The 8 registers of unsigned quants of 32 values (value `4g + j` in byte `j` of register `g`)
/// from 4 nibble vectors at `p`.
///
/// # Safety: 256 readable bytes at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn nibbles(p: *const u8) -> [__m512i; 8] {
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

/// `out[t]` (16 lanes under `mask`) for the tokens of one tile of 32-value blocks.
///
/// # Safety: `w` points to `nb` records of `KIND` (`stride` bytes apart); each `a[t]` to `nb`
/// Q8_0 blocks and `aux[t]` to its `2 nb` aux values; each `out[t]` to 16 writable f32 under
/// `mask`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn tile_q32<const KIND: u8, const T: usize>(
    nb: usize,
    stride: usize,
    w: *const u8,
    a: [*const u8; T],
    aux: [*const i32; T],
    out: [*mut f32; T],
    mask: __mmask16,
) {
    let m10 = _mm512_set1_epi8(0x10);
    let mut acc = [_mm512_setzero_ps(); T];
    for b in 0..nb {
        // SAFETY: (all reads) record b of `w`, block b of each `a[t]`, entries b and nb + b of
        // each `aux[t]`, all inside what the caller guarantees.
        unsafe {
            let rec = w.add(b * stride);
            let x = match KIND {
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
                    let h = load(rec.add(256));
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
                    x
                }
            };
            let dw = f16x16(rec.add(d_offset(KIND)));
            for t in 0..T {
                let y = a[t].add(b * size_of::<BlockQ8_0>() + 2);
                // -offset · Σy, so that Σ (u - offset) y comes out exact.
                let neg = _mm512_set1_epi32(aux[t].add(b).read());
                let mut p = match KIND {
                    Q8_0 => _mm512_slli_epi32::<7>(neg),
                    Q4_0 => _mm512_slli_epi32::<3>(neg),
                    _ => _mm512_slli_epi32::<4>(neg),
                };
                for g in 0..8 {
                    p = _mm512_dpbusd_epi32(p, x[g], bcst(y.add(4 * g)));
                }
                let dy = _mm512_set1_ps(f32::from_bits(aux[t].add(nb + b).read() as u32));
                // sum += isum · d_w · d_a
                let f = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(p), dw), dy);
                acc[t] = _mm512_add_ps(acc[t], f);
            }
        }
    }
    for t in 0..T {
        // SAFETY: guaranteed by the caller.
        unsafe { _mm512_mask_storeu_ps(out[t], mask, acc[t]) };
    }
}

/// Like [`tile_q32`] for Q4_1 records (unsigned nibbles, then 16 `d` and 16 `m`) and Q8_1
/// activations (`aux[t]`: `nb` values `d`, then `nb` values `s`, as f32 bits): per block
/// `(d · a.d) · isum + m · a.s`, as `dot_scalar::vec_dot_q4_1_q8_1`.
///
/// # Safety: as for [`tile_q32`], with Q8_1 blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn tile_q4_1<const T: usize>(
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
            let x = nibbles(rec);
            let (dw, mw) = (f16x16(rec.add(256)), f16x16(rec.add(288)));
            for t in 0..T {
                let y = a[t].add(b * size_of::<crate::blocks::BlockQ8_1>() + 4);
                let mut p = _mm512_setzero_si512();
                for g in 0..8 {
                    p = _mm512_dpbusd_epi32(p, x[g], bcst(y.add(4 * g)));
                }
                let dy = _mm512_set1_ps(f32::from_bits(aux[t].add(b).read() as u32));
                let sy = _mm512_set1_ps(f32::from_bits(aux[t].add(nb + b).read() as u32));
                let f = _mm512_mul_ps(_mm512_mul_ps(dw, dy), _mm512_cvtepi32_ps(p));
                acc[t] = _mm512_add_ps(acc[t], _mm512_add_ps(f, _mm512_mul_ps(mw, sy)));
            }
        }
    }
    for t in 0..T {
        // SAFETY: guaranteed by the caller.
        unsafe { _mm512_mask_storeu_ps(out[t], mask, acc[t]) };
    }
}

/// Merges the fifth bits of 32 values into their nibbles `x` (from [`nibbles`]): `h` is the
/// fifth-bit vector (lane byte `j`, bit `g` the fifth bit of the value in byte `j` of `x[g]`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
fn merge_fifth(x: &mut [__m512i; 8], h: __m512i) {
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

/// Like [`tile_q4_1`] for Q5_1 records (Q5_0's nibbles and fifth bits of the unsigned quants,
/// then 16 `d` and 16 `m`): per block `(d · a.d) · isum + m · a.s`, as
/// `dot_scalar::vec_dot_q5_1_q8_1`.
///
/// # Safety: as for [`tile_q4_1`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn tile_q5_1<const T: usize>(
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
            let mut x = nibbles(rec);
            merge_fifth(&mut x, load(rec.add(256)));
            let (dw, mw) = (f16x16(rec.add(320)), f16x16(rec.add(352)));
            for t in 0..T {
                let y = a[t].add(b * size_of::<crate::blocks::BlockQ8_1>() + 4);
                let (mut p, mut p2) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                for g in 0..4 {
                    p = _mm512_dpbusd_epi32(p, x[g], bcst(y.add(4 * g)));
                    p2 = _mm512_dpbusd_epi32(p2, x[g + 4], bcst(y.add(16 + 4 * g)));
                }
                let p = _mm512_add_epi32(p, p2);
                let dy = _mm512_set1_ps(f32::from_bits(aux[t].add(b).read() as u32));
                let sy = _mm512_set1_ps(f32::from_bits(aux[t].add(nb + b).read() as u32));
                let f = _mm512_mul_ps(_mm512_mul_ps(dw, dy), _mm512_cvtepi32_ps(p));
                acc[t] = _mm512_add_ps(acc[t], _mm512_add_ps(f, _mm512_mul_ps(mw, sy)));
            }
        }
    }
    for t in 0..T {
        // SAFETY: guaranteed by the caller.
        unsafe { _mm512_mask_storeu_ps(out[t], mask, acc[t]) };
    }
}

/// Like [`tile_q32`] for Q4_K records and Q8_K activations (`aux[t]` pointing to `AUX_K nb`
/// values).
///
/// # Safety: as for [`tile_q32`], with Q8_K blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn tile_q4k<const T: usize>(
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
        // SAFETY: (all reads) record b of `w`, block b of each `a[t]` and of each `aux[t]`.
        unsafe {
            let rec = w.add(b * stride);
            let mut isum = [_mm512_setzero_si512(); T];
            for s in 0..8 {
                let x = nibbles(rec.add(256 * s));
                let sc = _mm512_cvtepu8_epi32(_mm_loadu_si128(rec.add(2048 + 16 * s).cast()));
                for t in 0..T {
                    let y = a[t].add(b * size_of::<BlockQ8K>() + 4 + 32 * s);
                    // Two dependency chains (exact integer sums, so the split changes nothing):
                    // with few tokens per tile one chain of 8 would leave the unit idle.
                    let (mut p, mut p2) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                    for g in 0..4 {
                        p = _mm512_dpbusd_epi32(p, x[g], bcst(y.add(4 * g)));
                        p2 = _mm512_dpbusd_epi32(p2, x[g + 4], bcst(y.add(16 + 4 * g)));
                    }
                    let p = _mm512_add_epi32(p, p2);
                    isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(p, sc));
                }
            }
            let mut mins = [_mm512_setzero_si512(); 4];
            for (q, m) in mins.iter_mut().enumerate() {
                *m = _mm512_cvtepu8_epi16(_mm256_loadu_si256(rec.add(2176 + 32 * q).cast()));
            }
            let dw = f16x16(rec.add(2304));
            let dmw = f16x16(rec.add(2336));
            for t in 0..T {
                let bs = aux[t].add(AUX_K * b + 16).cast::<u8>();
                let mut msum = _mm512_setzero_si512();
                for (q, m) in mins.iter().enumerate() {
                    msum = _mm512_dpwssd_epi32(msum, *m, bcst(bs.add(4 * q)));
                }
                let dy = _mm512_set1_ps(
                    a[t].add(b * size_of::<BlockQ8K>())
                        .cast::<f32>()
                        .read_unaligned(),
                );
                // sum += d·dy·isum - dmin·dy·msum
                let f = _mm512_sub_ps(
                    _mm512_mul_ps(_mm512_mul_ps(dw, dy), _mm512_cvtepi32_ps(isum[t])),
                    _mm512_mul_ps(_mm512_mul_ps(dmw, dy), _mm512_cvtepi32_ps(msum)),
                );
                acc[t] = _mm512_add_ps(acc[t], f);
            }
        }
    }
    for t in 0..T {
        // SAFETY: guaranteed by the caller.
        unsafe { _mm512_mask_storeu_ps(out[t], mask, acc[t]) };
    }
}

/// Like [`tile_q4k`] for Q5_K records (Q4_K's, plus a fifth-bit vector per sub-block at
/// `2368 + 64 s`), as `dot_scalar::vec_dot_q5_k_q8_k`.
///
/// # Safety: as for [`tile_q4k`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn tile_q5k<const T: usize>(
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
        // SAFETY: (all reads) record b of `w`, block b of each `a[t]` and of each `aux[t]`.
        unsafe {
            let rec = w.add(b * stride);
            let mut isum = [_mm512_setzero_si512(); T];
            for s in 0..8 {
                let mut x = nibbles(rec.add(256 * s));
                merge_fifth(&mut x, load(rec.add(2368 + 64 * s)));
                let sc = _mm512_cvtepu8_epi32(_mm_loadu_si128(rec.add(2048 + 16 * s).cast()));
                for t in 0..T {
                    let y = a[t].add(b * size_of::<BlockQ8K>() + 4 + 32 * s);
                    // Two dependency chains, as in `tile_q4k`.
                    let (mut p, mut p2) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                    for g in 0..4 {
                        p = _mm512_dpbusd_epi32(p, x[g], bcst(y.add(4 * g)));
                        p2 = _mm512_dpbusd_epi32(p2, x[g + 4], bcst(y.add(16 + 4 * g)));
                    }
                    let p = _mm512_add_epi32(p, p2);
                    isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(p, sc));
                }
            }
            let mut mins = [_mm512_setzero_si512(); 4];
            for (q, m) in mins.iter_mut().enumerate() {
                *m = _mm512_cvtepu8_epi16(_mm256_loadu_si256(rec.add(2176 + 32 * q).cast()));
            }
            let dw = f16x16(rec.add(2304));
            let dmw = f16x16(rec.add(2336));
            for t in 0..T {
                let bs = aux[t].add(AUX_K * b + 16).cast::<u8>();
                let mut msum = _mm512_setzero_si512();
                for (q, m) in mins.iter().enumerate() {
                    msum = _mm512_dpwssd_epi32(msum, *m, bcst(bs.add(4 * q)));
                }
                let dy = _mm512_set1_ps(
                    a[t].add(b * size_of::<BlockQ8K>())
                        .cast::<f32>()
                        .read_unaligned(),
                );
                // sum += d·dy·isum - dmin·dy·msum
                let f = _mm512_sub_ps(
                    _mm512_mul_ps(_mm512_mul_ps(dw, dy), _mm512_cvtepi32_ps(isum[t])),
                    _mm512_mul_ps(_mm512_mul_ps(dmw, dy), _mm512_cvtepi32_ps(msum)),
                );
                acc[t] = _mm512_add_ps(acc[t], f);
            }
        }
    }
    for t in 0..T {
        // SAFETY: guaranteed by the caller.
        unsafe { _mm512_mask_storeu_ps(out[t], mask, acc[t]) };
    }
}

/// Like [`tile_q4k`] for Q6_K records.
///
/// # Safety: as for [`tile_q4k`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn tile_q6k<const T: usize>(
    nb: usize,
    stride: usize,
    w: *const u8,
    a: [*const u8; T],
    aux: [*const i32; T],
    out: [*mut f32; T],
    mask: __mmask16,
) {
    let m4 = _mm512_set1_epi8(0x0F);
    let m30 = _mm512_set1_epi8(0x30);
    let mut acc = [_mm512_setzero_ps(); T];
    for b in 0..nb {
        // SAFETY: (all reads) record b of `w`, block b of each `a[t]` and of each `aux[t]`.
        unsafe {
            let rec = w.add(b * stride);
            let mut isum = [_mm512_setzero_si512(); T];
            for c in 0..8 {
                for h in 0..2 {
                    // Sub-block 2c + h: values 32c + 16h + 4m + j.
                    let hv = load(rec.add(2048 + 128 * c + 64 * h));
                    let top = [
                        _mm512_slli_epi16::<4>(hv),
                        _mm512_slli_epi16::<2>(hv),
                        hv,
                        _mm512_srli_epi16::<2>(hv),
                    ];
                    let mut x = [_mm512_setzero_si512(); 4];
                    for m in 0..4 {
                        let raw = load(rec.add(256 * c + 64 * m));
                        let nib = if h == 0 {
                            _mm512_and_si512(raw, m4)
                        } else {
                            _mm512_and_si512(_mm512_srli_epi16::<4>(raw), m4)
                        };
                        // nib | (top & 0x30)
                        x[m] = _mm512_ternarylogic_epi32::<0xF8>(nib, top[m], m30);
                    }
                    let k = 2 * c + h;
                    let sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(rec.add(3072 + 16 * k).cast()));
                    for t in 0..T {
                        let y = a[t].add(b * size_of::<BlockQ8K>() + 4 + 16 * k);
                        // -32 · bsums[k]: the quants are stored + 32.
                        let mut p = _mm512_set1_epi32(aux[t].add(AUX_K * b + k).read());
                        for m in 0..4 {
                            p = _mm512_dpbusd_epi32(p, x[m], bcst(y.add(4 * m)));
                        }
                        isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(p, sc));
                    }
                }
            }
            let dw = f16x16(rec.add(3328));
            for t in 0..T {
                let dy = _mm512_set1_ps(
                    a[t].add(b * size_of::<BlockQ8K>())
                        .cast::<f32>()
                        .read_unaligned(),
                );
                // sum += d·dy·isum
                let f = _mm512_mul_ps(_mm512_mul_ps(dw, dy), _mm512_cvtepi32_ps(isum[t]));
                acc[t] = _mm512_add_ps(acc[t], f);
            }
        }
    }
    for t in 0..T {
        // SAFETY: guaranteed by the caller.
        unsafe { _mm512_mask_storeu_ps(out[t], mask, acc[t]) };
    }
}

/// ggml's IQ4 values `kvalues_iq4nl` plus 128 (`1..=241`, unsigned for `vpdpbusd`), in every
/// 128-bit lane: a `vpshufb` table for 4-bit indices.
///
/// # Safety: the CPU has AVX-512 F.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn iq4_table() -> __m512i {
    let t: [u8; 16] = std::array::from_fn(|i| (crate::quant::IQ4_VALUES[i] as i16 + 128) as u8);
    // SAFETY: `t` is 16 readable bytes.
    _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(t.as_ptr().cast()) })
}

/// Like [`nibbles`] for IQ4 indices: the 8 registers of `KVALUES[i] + 128` of 32 values.
///
/// # Safety: 256 readable bytes at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn iq4_values(p: *const u8, table: __m512i) -> [__m512i; 8] {
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
unsafe fn dot32(p: __m512i, x: &[__m512i; 8], y: *const u8) -> __m512i {
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

/// The final sum of the four running sums of `quant::decoded::sum4!` (block `i` added to sum
/// `i % 4`): `(s0 + s1) + (s2 + s3)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
fn sum4_total(s: &[__m512; 4]) -> __m512 {
    _mm512_add_ps(_mm512_add_ps(s[0], s[1]), _mm512_add_ps(s[2], s[3]))
}

/// Like [`tile_q32`] for IQ4_NL records (Q4_0's layout: 4-bit indices into `kvalues_iq4nl`,
/// then the 16 `d`) and Q8_0 activations. The indices become `kvalue + 128` by a byte shuffle,
/// the `128 · Σy` taken back out through the block sums. Per block `(d · a.d) · isum`, summed in
/// the four running sums of the decoded reference (`quant::decoded::dot_32_q8_0`).
///
/// # Safety: as for [`tile_q32`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn tile_iq4nl<const T: usize>(
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
    let mut acc = [[_mm512_setzero_ps(); 4]; T];
    for b in 0..nb {
        // SAFETY: (all reads) record b of `w`, block b of each `a[t]`, entries b and nb + b of
        // each `aux[t]`, all inside what the caller guarantees.
        unsafe {
            let rec = w.add(b * stride);
            let x = iq4_values(rec, table);
            let dw = f16x16(rec.add(256));
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
/// indices at `256 s`; the 8 signed sub-block scales `ls - 32`, 16 bytes each, at 2048; `d` at
/// 2176) and Q8_K activations: per super-block `(d · a.d) · isum - (0 · a.d) · 0` (the decoded
/// reference `quant::decoded::dot_k` with no mins), in its four running sums.
///
/// # Safety: as for [`tile_q4k`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn tile_iq4xs<const T: usize>(
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
                let x = iq4_values(rec.add(256 * s), table);
                let sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(rec.add(2048 + 16 * s).cast()));
                for t in 0..T {
                    let y = a[t].add(b * size_of::<BlockQ8K>() + 4 + 32 * s);
                    // -128 · Σy over the 32 values (aux: -32 · bsums per 16).
                    let ax = aux[t].add(AUX_K * b + 2 * s);
                    let neg = (ax.read() + ax.add(1).read()) << 2;
                    let p = dot32(_mm512_set1_epi32(neg), &x, y);
                    isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(p, sc));
                }
            }
            let dw = f16x16(rec.add(2176));
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

/// Which kernel a packed type uses.
#[derive(Clone, Copy)]
pub enum Kind {
    Q32(u8),
    /// Q4_1 records against Q8_1 activations (AVX-512 only: `packed::packs`).
    Q41,
    Q4K,
    Q6K,
    /// Q5_1 records against Q8_1 activations.
    Q51,
    /// Q5_K records against Q8_K activations.
    Q5K,
    /// IQ4_NL records against Q8_0 activations.
    Iq4Nl,
    /// IQ4_XS records against Q8_K activations.
    Iq4Xs,
}

/// One tile of `T` tokens.
///
/// # Safety: as for [`tile_q32`] / [`tile_q4k`], for the kernel of `kind`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
pub unsafe fn tile<const T: usize>(
    kind: Kind,
    nb: usize,
    stride: usize,
    w: *const u8,
    a: [*const u8; T],
    aux: [*const i32; T],
    out: [*mut f32; T],
    mask: u16,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match kind {
            Kind::Q32(Q8_0) => tile_q32::<Q8_0, T>(nb, stride, w, a, aux, out, mask),
            Kind::Q32(Q4_0) => tile_q32::<Q4_0, T>(nb, stride, w, a, aux, out, mask),
            Kind::Q32(_) => tile_q32::<Q5_0, T>(nb, stride, w, a, aux, out, mask),
            Kind::Q41 => tile_q4_1::<T>(nb, stride, w, a, aux, out, mask),
            Kind::Q4K => tile_q4k::<T>(nb, stride, w, a, aux, out, mask),
            Kind::Q6K => tile_q6k::<T>(nb, stride, w, a, aux, out, mask),
            Kind::Q51 => tile_q5_1::<T>(nb, stride, w, a, aux, out, mask),
            Kind::Q5K => tile_q5k::<T>(nb, stride, w, a, aux, out, mask),
            Kind::Iq4Nl => tile_iq4nl::<T>(nb, stride, w, a, aux, out, mask),
            Kind::Iq4Xs => tile_iq4xs::<T>(nb, stride, w, a, aux, out, mask),
        }
    }
}
