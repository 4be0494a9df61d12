//! AVX-512 VNNI GEMM tiles of this family's packed layouts (`packed`): one group of 16 weight
//! rows (one per 32-bit lane) times a tile of tokens, each record decoded once per tile; every
//! output lane bit-identical to the family's reference dot product.

#![allow(clippy::too_many_arguments)]
use super::packed::{q2k, q3k, q4k, q6k};
use crate::blocks::*;
use crate::packed::gemm512::*;
use crate::packed::gemm_amx::{scaled_sum, AmxKind};
use std::arch::x86_64::*;
use std::mem::size_of;

/// The tile of Q4_K records, or (`FIFTH`) Q5_K records (Q4_K's, plus a fifth-bit vector per
/// sub-block), against Q8_K activations (`aux[t]` pointing to `AUX_K nb`
/// values).
///
/// # Safety: as for `crate::packed::gemm512::Tile`, with Q8_K activations.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
pub(crate) unsafe fn tile_q4k<const FIFTH: bool, const T: usize>(
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
                let x = decode_q4k::<FIFTH>(rec, s);
                let sc =
                    _mm512_cvtepu8_epi32(_mm_loadu_si128(rec.add(q4k::scales(FIFTH, s)).cast()));
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
            let m = Q4kMins::<FIFTH>::load(rec);
            for t in 0..T {
                acc[t] = m.add(acc[t], isum[t], a[t], aux[t], b);
            }
        }
    }
    for t in 0..T {
        // SAFETY: guaranteed by the caller.
        unsafe { _mm512_mask_storeu_ps(out[t], mask, acc[t]) };
    }
}

/// The 8 registers of unsigned quants of sub-block `s` of a Q4_K (or `FIFTH`: Q5_K) record.
///
/// # Safety: a whole record at `rec`, `s < 8`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn decode_q4k<const FIFTH: bool>(rec: *const u8, s: usize) -> [__m512i; 8] {
    // SAFETY: (all reads) inside the record.
    unsafe {
        let mut x = nibbles(rec.add(q4k::nibbles(FIFTH, s)));
        if FIFTH {
            merge_fifth(&mut x, load(rec.add(q4k::fifth_bits(s))));
        }
        x
    }
}

/// The mins and scales of a Q4_K (Q5_K) record: what a block adds to a token's sum after the
/// integer sum of its quants.
#[derive(Clone, Copy)]
pub(crate) struct Q4kMins<const FIFTH: bool> {
    mins: [__m512i; 4],
    dw: __m512,
    dmw: __m512,
}

impl<const FIFTH: bool> Q4kMins<FIFTH> {
    /// # Safety: a whole record at `rec`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn load(rec: *const u8) -> Self {
        let mut mins = [_mm512_setzero_si512(); 4];
        // SAFETY: (all reads) inside the record.
        unsafe {
            for (q, m) in mins.iter_mut().enumerate() {
                *m = _mm512_cvtepu8_epi16(_mm256_loadu_si256(rec.add(q4k::mins(FIFTH, q)).cast()));
            }
            Q4kMins {
                mins,
                dw: f16x16(rec.add(q4k::d(FIFTH))),
                dmw: f16x16(rec.add(q4k::d(FIFTH) + 32)),
            }
        }
    }

    /// `acc + d·dy·isum - dmin·dy·msum` for block `b` of a token (`a` its Q8_K row, `aux` its
    /// aux values; `isum` the exact scaled sum of its quants), as `dot_scalar::vec_dot_q4_k_q8_k`.
    ///
    /// # Safety: `a` and `aux` cover block `b`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn add(
        &self,
        acc: __m512,
        isum: __m512i,
        a: *const u8,
        aux: *const i32,
        b: usize,
    ) -> __m512 {
        // SAFETY: (all reads) inside block b of the token's activations and aux values.
        unsafe {
            let bs = aux.add(AUX_K * b + 16).cast::<u8>();
            let mut msum = _mm512_setzero_si512();
            for (q, m) in self.mins.iter().enumerate() {
                msum = _mm512_dpwssd_epi32(msum, *m, bcst(bs.add(4 * q)));
            }
            let dy = _mm512_set1_ps(
                a.add(b * size_of::<BlockQ8K>())
                    .cast::<f32>()
                    .read_unaligned(),
            );
            let f = _mm512_sub_ps(
                _mm512_mul_ps(_mm512_mul_ps(self.dw, dy), _mm512_cvtepi32_ps(isum)),
                _mm512_mul_ps(_mm512_mul_ps(self.dmw, dy), _mm512_cvtepi32_ps(msum)),
            );
            _mm512_add_ps(acc, f)
        }
    }
}

/// Like [`tile_q4k`] for Q6_K records.
///
/// # Safety: as for [`tile_q4k`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
pub(crate) unsafe fn tile_q6k<const T: usize>(
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
            for c in 0..8 {
                for h in 0..2 {
                    let k = 2 * c + h;
                    let x = decode_q6k(rec, k);
                    let sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(rec.add(q6k::scales(k)).cast()));
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
                acc[t] = add_scaled(acc[t], dw, isum[t], a[t], b);
            }
        }
    }
    for t in 0..T {
        // SAFETY: guaranteed by the caller.
        unsafe { _mm512_mask_storeu_ps(out[t], mask, acc[t]) };
    }
}

/// The 4 registers of unsigned quants (`q + 32`) of sub-block `k` (values `16k + 4m + j`) of a
/// Q6_K record.
///
/// # Safety: a whole record at `rec`, `k < 16`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn decode_q6k(rec: *const u8, k: usize) -> [__m512i; 4] {
    let (m4, m30) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x30));
    let (c, h) = (k / 2, k % 2);
    // SAFETY: (all reads) inside the record.
    unsafe {
        // Sub-block 2c + h: values 32c + 16h + 4m + j.
        let hv = load(rec.add(q6k::high(c, h)));
        let top = [
            _mm512_slli_epi16::<4>(hv),
            _mm512_slli_epi16::<2>(hv),
            hv,
            _mm512_srli_epi16::<2>(hv),
        ];
        let mut x = [_mm512_setzero_si512(); 4];
        for m in 0..4 {
            let raw = load(rec.add(q6k::nibbles(c) + 64 * m));
            let nib = if h == 0 {
                _mm512_and_si512(raw, m4)
            } else {
                _mm512_and_si512(_mm512_srli_epi16::<4>(raw), m4)
            };
            // nib | (top & 0x30)
            x[m] = _mm512_ternarylogic_epi32::<0xF8>(nib, top[m], m30);
        }
        x
    }
}

/// The 4 registers of 2-bit values of a sub-block (value `4m + j` in byte `j` of register `m`)
/// from its vector `v` of a Q2_K / Q3_K record.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
fn low2(v: __m512i) -> [__m512i; 4] {
    let m3 = _mm512_set1_epi8(0x03);
    [
        _mm512_and_si512(v, m3),
        _mm512_and_si512(_mm512_srli_epi16::<2>(v), m3),
        _mm512_and_si512(_mm512_srli_epi16::<4>(v), m3),
        _mm512_and_si512(_mm512_srli_epi16::<6>(v), m3),
    ]
}

/// Like [`tile_q4k`] for Q2_K records (16-value sub-blocks), as
/// `dot_scalar::vec_dot_q2_k_q8_k`: the mins' sum takes the activations' `bsums` pairs straight
/// from the Q8_K blocks.
///
/// # Safety: as for [`tile_q4k`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
pub(crate) unsafe fn tile_q2k<const T: usize>(
    nb: usize,
    stride: usize,
    w: *const u8,
    a: [*const u8; T],
    _aux: [*const i32; T],
    out: [*mut f32; T],
    mask: __mmask16,
) {
    let mut acc = [_mm512_setzero_ps(); T];
    for b in 0..nb {
        // SAFETY: (all reads) record b of `w`, block b of each `a[t]`.
        unsafe {
            let rec = w.add(b * stride);
            let mut isum = [_mm512_setzero_si512(); T];
            for k in 0..16 {
                let x = low2(load(rec.add(q2k::low(k))));
                let sc = _mm512_cvtepu8_epi32(_mm_loadu_si128(rec.add(q2k::scales(k)).cast()));
                for t in 0..T {
                    let y = a[t].add(b * size_of::<BlockQ8K>() + 4 + 16 * k);
                    let mut p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), x[0], bcst(y));
                    for m in 1..4 {
                        p = _mm512_dpbusd_epi32(p, x[m], bcst(y.add(4 * m)));
                    }
                    isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(p, sc));
                }
            }
            let mut mins = [_mm512_setzero_si512(); 8];
            for (q, m) in mins.iter_mut().enumerate() {
                *m = _mm512_cvtepu8_epi16(_mm256_loadu_si256(rec.add(1280 + 32 * q).cast()));
            }
            let dw = f16x16(rec.add(1536));
            let dmw = f16x16(rec.add(1568));
            for t in 0..T {
                let blk = a[t].add(b * size_of::<BlockQ8K>());
                let mut msum = _mm512_setzero_si512();
                for (q, m) in mins.iter().enumerate() {
                    msum = _mm512_dpwssd_epi32(msum, *m, bcst(blk.add(4 + 256 + 4 * q)));
                }
                let dy = _mm512_set1_ps(blk.cast::<f32>().read_unaligned());
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

/// The high bits of sub-block `2c + h` (from its pair's vector `hv`) at bit 2 of the bytes of
/// [`low2`]'s registers (other bits unspecified).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
fn high_bits<const H: usize>(hv: __m512i) -> [__m512i; 4] {
    if H == 0 {
        [
            _mm512_slli_epi16::<2>(hv),
            _mm512_slli_epi16::<1>(hv),
            hv,
            _mm512_srli_epi16::<1>(hv),
        ]
    } else {
        [
            _mm512_srli_epi16::<2>(hv),
            _mm512_srli_epi16::<3>(hv),
            _mm512_srli_epi16::<4>(hv),
            _mm512_srli_epi16::<5>(hv),
        ]
    }
}

/// Like [`tile_q6k`] for Q3_K records (values `low | high << 2` in 0..7, quants minus 4), as
/// `dot_scalar::vec_dot_q3_k_q8_k`.
///
/// # Safety: as for [`tile_q4k`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
pub(crate) unsafe fn tile_q3k<const T: usize>(
    nb: usize,
    stride: usize,
    w: *const u8,
    a: [*const u8; T],
    _aux: [*const i32; T],
    out: [*mut f32; T],
    mask: __mmask16,
) {
    let m4 = _mm512_set1_epi8(0x04);
    let mut acc = [_mm512_setzero_ps(); T];
    for b in 0..nb {
        // SAFETY: (all reads) record b of `w`, block b of each `a[t]`.
        unsafe {
            let rec = w.add(b * stride);
            let mut isum = [_mm512_setzero_si512(); T];
            for c in 0..8 {
                let hv = load(rec.add(q3k::high(c)));
                let highs = [high_bits::<0>(hv), high_bits::<1>(hv)];
                for (h, high) in highs.iter().enumerate() {
                    let k = 2 * c + h;
                    let mut x = low2(load(rec.add(q3k::low(k))));
                    for m in 0..4 {
                        // x | (high & 4)
                        x[m] = _mm512_ternarylogic_epi32::<0xF8>(x[m], high[m], m4);
                    }
                    let sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(rec.add(q3k::scales(k)).cast()));
                    for t in 0..T {
                        let blk = a[t].add(b * size_of::<BlockQ8K>());
                        let y = blk.add(4 + 16 * k);
                        // -4 · bsums[k]: the quants are stored + 4.
                        let bs = blk.add(4 + 256 + 2 * k).cast::<i16>().read_unaligned();
                        let mut p = _mm512_set1_epi32(-4 * bs as i32);
                        for m in 0..4 {
                            p = _mm512_dpbusd_epi32(p, x[m], bcst(y.add(4 * m)));
                        }
                        isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(p, sc));
                    }
                }
            }
            let dw = f16x16(rec.add(1792));
            for t in 0..T {
                acc[t] = add_scaled(acc[t], dw, isum[t], a[t], b);
            }
        }
    }
    for t in 0..T {
        // SAFETY: guaranteed by the caller.
        unsafe { _mm512_mask_storeu_ps(out[t], mask, acc[t]) };
    }
}

/// `acc + (d·dy)·isum` for block `b` of a token (`a` its Q8_K row; `isum` the exact scaled sum of
/// the block's quants), as the references of the k-quants without mins (Q3_K, Q6_K).
///
/// # Safety: `a` covers block `b`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn add_scaled(acc: __m512, dw: __m512, isum: __m512i, a: *const u8, b: usize) -> __m512 {
    // SAFETY: block b's `d` (the caller's promise).
    let d = unsafe {
        a.add(b * size_of::<BlockQ8K>())
            .cast::<f32>()
            .read_unaligned()
    };
    let f = _mm512_mul_ps(
        _mm512_mul_ps(dw, _mm512_set1_ps(d)),
        _mm512_cvtepi32_ps(isum),
    );
    _mm512_add_ps(acc, f)
}

/// The 16 sub-blocks' signed scales of a record (16 bytes of 16 rows each at `at(k)`), widened.
///
/// # Safety: a whole record at `rec`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn signed_scales(rec: *const u8, at: fn(usize) -> usize) -> [__m512i; 16] {
    // SAFETY: inside the record.
    std::array::from_fn(|k| unsafe { _mm512_cvtepi8_epi32(_mm_loadu_si128(rec.add(at(k)).cast())) })
}

/// The AMX GEMM's view of Q4_K (`FIFTH`: Q5_K) records (`packed::gemm_amx`): 8 sub-blocks of 32
/// unsigned quants, [`tile_q4k`]'s epilogue.
pub(crate) struct AmxQ4k<const FIFTH: bool>;

// SAFETY: reads only inside the records, Q8_K blocks and aux values the AMX GEMM passes.
unsafe impl<const FIFTH: bool> AmxKind for AmxQ4k<FIFTH> {
    const S: usize = 8;
    const G: usize = 8;
    const SIGNED: bool = false;
    type Block = ([__m512i; 8], Q4kMins<FIFTH>);

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn decode(rec: *const u8, s: usize) -> [__m512i; 8] {
        // SAFETY: forwarded.
        unsafe { decode_q4k::<FIFTH>(rec, s) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn block(rec: *const u8) -> Self::Block {
        // SAFETY: forwarded.
        unsafe {
            let sc = std::array::from_fn(|s| {
                _mm512_cvtepu8_epi32(_mm_loadu_si128(rec.add(q4k::scales(FIFTH, s)).cast()))
            });
            (sc, Q4kMins::load(rec))
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn accumulate(
        (sc, m): &Self::Block,
        b: usize,
        _nb: usize,
        act: *const u8,
        aux: *const i32,
        sums: *const i32,
        acc: &mut [__m512; 4],
    ) {
        // SAFETY: forwarded: 8 sub-blocks' sums at `sums`.
        unsafe {
            acc[0] = m.add(acc[0], scaled_sum(sums, sc), act, aux, b);
        }
    }
}

/// The AMX GEMM's view of Q6_K records: 16 sub-blocks of 16 quants, signed (the offset 32 taken
/// out as they are decoded), [`tile_q6k`]'s epilogue.
pub(crate) struct AmxQ6k;

// SAFETY: reads only inside the records and Q8_K blocks the AMX GEMM passes.
unsafe impl AmxKind for AmxQ6k {
    const S: usize = 16;
    const G: usize = 4;
    const SIGNED: bool = true;
    type Block = ([__m512i; 16], __m512);

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn decode(rec: *const u8, k: usize) -> [__m512i; 8] {
        let offset = _mm512_set1_epi8(32);
        // SAFETY: forwarded.
        let x = unsafe { decode_q6k(rec, k) };
        std::array::from_fn(|g| {
            if g < 4 {
                _mm512_sub_epi8(x[g], offset)
            } else {
                x[0]
            }
        })
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn block(rec: *const u8) -> Self::Block {
        // SAFETY: forwarded.
        unsafe { (signed_scales(rec, q6k::scales), f16x16(rec.add(3328))) }
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
        // SAFETY: forwarded: 16 sub-blocks' sums at `sums`, block b of the token's row.
        unsafe {
            acc[0] = add_scaled(acc[0], *dw, scaled_sum(sums, sc), act, b);
        }
    }
}

/// The AMX GEMM's view of Q2_K records: 16 sub-blocks of 16 unsigned 2-bit quants,
/// [`tile_q2k`]'s epilogue.
pub(crate) struct AmxQ2k;

// SAFETY: reads only inside the records and Q8_K blocks the AMX GEMM passes.
unsafe impl AmxKind for AmxQ2k {
    const S: usize = 16;
    const G: usize = 4;
    const SIGNED: bool = false;
    type Block = ([__m512i; 16], [__m512i; 8], __m512, __m512);

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn decode(rec: *const u8, k: usize) -> [__m512i; 8] {
        // SAFETY: forwarded.
        let x = low2(unsafe { load(rec.add(q2k::low(k))) });
        std::array::from_fn(|g| x[g % 4])
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn block(rec: *const u8) -> Self::Block {
        // SAFETY: forwarded.
        unsafe {
            (
                std::array::from_fn(|k| {
                    _mm512_cvtepu8_epi32(_mm_loadu_si128(rec.add(q2k::scales(k)).cast()))
                }),
                std::array::from_fn(|q| {
                    _mm512_cvtepu8_epi16(_mm256_loadu_si256(rec.add(1280 + 32 * q).cast()))
                }),
                f16x16(rec.add(1536)),
                f16x16(rec.add(1568)),
            )
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn accumulate(
        (sc, mins, dw, dmw): &Self::Block,
        b: usize,
        _nb: usize,
        act: *const u8,
        _aux: *const i32,
        sums: *const i32,
        acc: &mut [__m512; 4],
    ) {
        // SAFETY: forwarded: 16 sub-blocks' sums at `sums`, block b of the token's row.
        unsafe {
            let isum = scaled_sum(sums, sc);
            let blk = act.add(b * size_of::<BlockQ8K>());
            let mut msum = _mm512_setzero_si512();
            for (q, m) in mins.iter().enumerate() {
                msum = _mm512_dpwssd_epi32(msum, *m, bcst(blk.add(4 + 256 + 4 * q)));
            }
            let dy = _mm512_set1_ps(blk.cast::<f32>().read_unaligned());
            // sum += d·dy·isum - dmin·dy·msum
            let f = _mm512_sub_ps(
                _mm512_mul_ps(_mm512_mul_ps(*dw, dy), _mm512_cvtepi32_ps(isum)),
                _mm512_mul_ps(_mm512_mul_ps(*dmw, dy), _mm512_cvtepi32_ps(msum)),
            );
            acc[0] = _mm512_add_ps(acc[0], f);
        }
    }
}

/// The AMX GEMM's view of Q3_K records: 16 sub-blocks of 16 quants, signed (`low | high << 2`
/// less 4), [`tile_q3k`]'s epilogue.
pub(crate) struct AmxQ3k;

// SAFETY: reads only inside the records and Q8_K blocks the AMX GEMM passes.
unsafe impl AmxKind for AmxQ3k {
    const S: usize = 16;
    const G: usize = 4;
    const SIGNED: bool = true;
    type Block = ([__m512i; 16], __m512);

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn decode(rec: *const u8, k: usize) -> [__m512i; 8] {
        let m4 = _mm512_set1_epi8(0x04);
        // SAFETY: forwarded.
        let (hv, low) = unsafe { (load(rec.add(q3k::high(k / 2))), load(rec.add(q3k::low(k)))) };
        let high = if k.is_multiple_of(2) {
            high_bits::<0>(hv)
        } else {
            high_bits::<1>(hv)
        };
        let x = low2(low);
        // (x | (high & 4)) - 4
        std::array::from_fn(|g| {
            _mm512_sub_epi8(
                _mm512_ternarylogic_epi32::<0xF8>(x[g % 4], high[g % 4], m4),
                m4,
            )
        })
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    unsafe fn block(rec: *const u8) -> Self::Block {
        // SAFETY: forwarded.
        unsafe { (signed_scales(rec, q3k::scales), f16x16(rec.add(1792))) }
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
        // SAFETY: forwarded: 16 sub-blocks' sums at `sums`, block b of the token's row.
        unsafe {
            acc[0] = add_scaled(acc[0], *dw, scaled_sum(sums, sc), act, b);
        }
    }
}
