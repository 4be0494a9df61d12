//! Keys and values of the KV cache kept in 8 or 4 bits: ggml's Q8_0 and Q4_0 (32 values share an
//! f16 scale; rounded as ggml's reference quantizers round), and their widening to f32 for the
//! attention kernels, a block at a time (so that each widened block serves every query head of
//! its group).
//!
//! Values are addressed by index in a flat array, as the f32/f16/bf16 stores address theirs. Two
//! layouts share a scale among 32 values: *rows* (32 consecutive values: value rows, and keys
//! stored as rows) and *columns* (keys transposed per block, `[dim][lanes]`: 32 consecutive dims of
//! one lane). Q4_0 keeps value `e` in byte `e / 2`, the low nibble for even `e`.

use crate::cpu::Isa;
use half::f16;

/// Values per scale.
pub const QK: usize = 32;

/// A quantized KV format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvQuant {
    Q8_0,
    Q4_0,
}

impl KvQuant {
    /// Bytes of `n` values (a multiple of [`QK`]), scales included.
    pub fn bytes_for(self, n: usize) -> usize {
        self.quant_bytes(n) + n / QK * 2
    }

    fn quant_bytes(self, n: usize) -> usize {
        match self {
            KvQuant::Q8_0 => n,
            KvQuant::Q4_0 => n.div_ceil(2),
        }
    }

    /// The scale and quants of 32 values, as ggml's `quantize_row_q8_0_ref` / `_q4_0_ref`
    /// compute them; quants are signed (Q4_0's are ggml's minus 8).
    pub fn quantize(self, x: &[f32; QK]) -> (f16, [i8; QK]) {
        match self {
            KvQuant::Q8_0 => {
                let (d, q) = crate::quant::legacy::quantize::q8_ref(x);
                (f16::from_f32(d), q)
            }
            KvQuant::Q4_0 => {
                let (d, q) = crate::quant::legacy::quantize::symmetric_quants(x, 8.0);
                (f16::from_f32(d), q.map(|q| q as i8 - 8))
            }
        }
    }
}

/// Quantized values and their scales.
#[derive(Debug, Clone)]
pub struct QuantRows {
    ty: KvQuant,
    q: Vec<u8>,
    d: Vec<f16>,
}

impl QuantRows {
    /// `n` zero values (`n` a multiple of [`QK`]).
    pub fn new(ty: KvQuant, n: usize) -> QuantRows {
        assert_eq!(n % QK, 0, "quantized KV rows come in blocks of {QK}");
        let zero = match ty {
            KvQuant::Q8_0 => 0,
            KvQuant::Q4_0 => 0x88,
        };
        QuantRows {
            ty,
            q: vec![zero; ty.quant_bytes(n)],
            d: vec![f16::ZERO; n / QK],
        }
    }

    pub fn kind(&self) -> KvQuant {
        self.ty
    }

    /// The quant bytes and the scales, for the SIMD kernels.
    pub(crate) fn raw(&self) -> (&[u8], &[f16]) {
        (&self.q, &self.d)
    }

    /// Values held.
    pub fn len(&self) -> usize {
        self.d.len() * QK
    }

    pub fn is_empty(&self) -> bool {
        self.d.is_empty()
    }

    pub fn n_bytes(&self) -> usize {
        self.q.len() + self.d.len() * 2
    }

    fn set(&mut self, e: usize, q: i8) {
        match self.ty {
            KvQuant::Q8_0 => self.q[e] = q as u8,
            KvQuant::Q4_0 => {
                let (b, nib) = (&mut self.q[e / 2], (q + 8) as u8 & 15);
                *b = if e.is_multiple_of(2) {
                    (*b & 0xf0) | nib
                } else {
                    (*b & 0x0f) | nib << 4
                };
            }
        }
    }

    fn get(&self, e: usize) -> i8 {
        match self.ty {
            KvQuant::Q8_0 => self.q[e] as i8,
            KvQuant::Q4_0 => ((self.q[e / 2] >> (4 * (e % 2))) & 15) as i8 - 8,
        }
    }

    /// Stores `x` (a multiple of 32 values) as a row from value `at` (a multiple of 32).
    pub fn write_row(&mut self, at: usize, x: &[f32]) {
        for (c, x) in x.chunks_exact(QK).enumerate() {
            let (d, q) = self.ty.quantize(x.try_into().expect("32 values"));
            self.d[at / QK + c] = d;
            for (i, &q) in q.iter().enumerate() {
                self.set(at + c * QK + i, q);
            }
        }
    }

    /// Stores `x` (a multiple of 32 values) as a column: `x[i]` at value `at + i * lanes`, the
    /// scale of `x[32c..32c + 32]` at `scale_at + c * lanes`.
    pub fn write_col(&mut self, at: usize, lanes: usize, scale_at: usize, x: &[f32]) {
        for (c, x) in x.chunks_exact(QK).enumerate() {
            let (d, q) = self.ty.quantize(x.try_into().expect("32 values"));
            self.d[scale_at + c * lanes] = d;
            for (i, &q) in q.iter().enumerate() {
                self.set(at + (c * QK + i) * lanes, q);
            }
        }
    }

    /// The quant bytes of values `a..b` (`a`, `b` even) and the scales of values `a..b`
    /// (multiples of 32), for copying a block out and back (the disk tier).
    pub fn bytes(&self, a: usize, b: usize) -> (&[u8], &[f16]) {
        let (qa, qb) = (self.ty.quant_bytes(a), self.ty.quant_bytes(b));
        (&self.q[qa..qb], &self.d[a / QK..b / QK])
    }

    /// [`QuantRows::bytes`], writable.
    pub fn bytes_mut(&mut self, a: usize, b: usize) -> (&mut [u8], &mut [f16]) {
        let (qa, qb) = (self.ty.quant_bytes(a), self.ty.quant_bytes(b));
        (&mut self.q[qa..qb], &mut self.d[a / QK..b / QK])
    }
}

/// Where rows lie in a [`QuantRows`]: `n_rows` rows of `width` values (multiples of 32), row `r`
/// from value `at + r * stride` (`at` and `stride` multiples of 32).
#[derive(Debug, Clone, Copy)]
pub struct RowsAt {
    pub at: usize,
    pub n_rows: usize,
    pub stride: usize,
    pub width: usize,
}

/// Where a transposed block's rows lie in a [`QuantRows`]: `n_rows` (a multiple of 32) rows of
/// `lanes` values, row `r` from value `at + r * lanes`, lane `j` of rows `32c..32c + 32` scaled
/// by scale `scale_at + c * lanes + j`.
#[derive(Debug, Clone, Copy)]
pub struct ColsAt {
    pub at: usize,
    pub n_rows: usize,
    pub lanes: usize,
    pub scale_at: usize,
}

/// Widens the rows `w` says into `out[r * width..]`.
pub fn widen_rows(src: &QuantRows, w: RowsAt, out: &mut [f32]) {
    widen_rows_at(Isa::best(), src, w, out)
}

/// [`widen_rows`] with the kernel of `isa` (or the best level below it); every level gives the
/// same bits.
pub fn widen_rows_at(isa: Isa, src: &QuantRows, w: RowsAt, out: &mut [f32]) {
    assert!(
        w.at.is_multiple_of(QK)
            && w.width.is_multiple_of(QK)
            && (w.stride.is_multiple_of(QK) || w.n_rows <= 1),
        "rows are whole blocks of {QK}"
    );
    assert!(out.len() >= w.n_rows * w.width);
    if w.n_rows > 0 {
        assert!(w.at + (w.n_rows - 1) * w.stride + w.width <= src.len());
    }
    let isa = isa.min(Isa::best_available());
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2 {
        crate::simd::kv_quant::widen_rows(isa, src, w, out);
        return;
    }
    let _ = isa;
    widen_rows_ref(src, w, out);
}

/// The scalar reference of [`widen_rows`].
pub fn widen_rows_ref(src: &QuantRows, w: RowsAt, out: &mut [f32]) {
    for r in 0..w.n_rows {
        let base = w.at + r * w.stride;
        for (i, o) in out[r * w.width..(r + 1) * w.width].iter_mut().enumerate() {
            let e = base + i;
            *o = src.get(e) as f32 * src.d[e / QK].to_f32();
        }
    }
}

/// Widens the transposed rows `c` says into `out[r * lanes..]`.
pub fn widen_cols(src: &QuantRows, c: ColsAt, out: &mut [f32]) {
    widen_cols_at(Isa::best(), src, c, out)
}

/// [`widen_cols`] with the kernel of `isa` (or the best level below it); every level gives the
/// same bits.
pub fn widen_cols_at(isa: Isa, src: &QuantRows, c: ColsAt, out: &mut [f32]) {
    assert_eq!(c.n_rows % QK, 0, "columns are whole blocks of {QK} rows");
    assert!(out.len() >= c.n_rows * c.lanes);
    assert!(c.at + c.n_rows * c.lanes <= src.len());
    assert!(c.n_rows == 0 || c.scale_at + (c.n_rows / QK) * c.lanes <= src.d.len());
    let isa = isa.min(Isa::best_available());
    // The SIMD kernels take 16 (8) lanes at a time from an even value index.
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2 && c.lanes.is_multiple_of(16) && c.at.is_multiple_of(2) {
        crate::simd::kv_quant::widen_cols(isa, src, c, out);
        return;
    }
    let _ = isa;
    widen_cols_ref(src, c, out);
}

/// The scalar reference of [`widen_cols`].
pub fn widen_cols_ref(src: &QuantRows, c: ColsAt, out: &mut [f32]) {
    for r in 0..c.n_rows {
        for j in 0..c.lanes {
            let d = src.d[c.scale_at + (r / QK) * c.lanes + j].to_f32();
            out[r * c.lanes + j] = src.get(c.at + r * c.lanes + j) as f32 * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn row_at(at: usize, n_rows: usize, stride: usize, width: usize) -> RowsAt {
        RowsAt {
            at,
            n_rows,
            stride,
            width,
        }
    }

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.gen_range(-3.0..3.0)).collect()
    }

    #[test]
    fn quantization_is_ggmls() {
        let x = random(QK, 1);
        let x: [f32; QK] = x.try_into().unwrap();
        for (ty, gt) in [
            (KvQuant::Q8_0, crate::GgmlType::Q8_0),
            (KvQuant::Q4_0, crate::GgmlType::Q4_0),
        ] {
            let mut block = vec![0u8; ty.bytes_for(QK)];
            crate::quantize::quantize_weights(gt, &x, &mut block).unwrap();
            let mut want = [0f32; QK];
            crate::dequant::dequantize_row(gt, &block, &mut want);
            let mut rows = QuantRows::new(ty, QK);
            rows.write_row(0, &x);
            let mut got = [0f32; QK];
            widen_rows_ref(&rows, row_at(0, 1, QK, QK), &mut got);
            assert_eq!(got, want, "{ty:?}");
        }
    }

    #[test]
    fn every_level_widens_as_the_reference_does() {
        for ty in [KvQuant::Q8_0, KvQuant::Q4_0] {
            // Rows: 3 rows of 64 values, 96 apart.
            let mut rows = QuantRows::new(ty, 96 * 3);
            for r in 0..3 {
                rows.write_row(r * 96, &random(96, r as u64));
            }
            let mut want = vec![0f32; 3 * 64];
            let rw = row_at(32, 2, 96, 64);
            widen_rows_ref(&rows, rw, &mut want);
            // Columns: 64 rows of 16 and of 32 lanes, after an offset of one block.
            for lanes in [16, 32, 6] {
                let mut cols = QuantRows::new(ty, 2 * 64 * lanes);
                for j in 0..lanes {
                    let at = 64 * lanes + j;
                    cols.write_col(at, lanes, 2 * lanes + j, &random(64, 10 + j as u64));
                }
                let mut want_c = vec![0f32; 64 * lanes];
                let cw = ColsAt {
                    at: 64 * lanes,
                    n_rows: 64,
                    lanes,
                    scale_at: 2 * lanes,
                };
                widen_cols_ref(&cols, cw, &mut want_c);
                for isa in Isa::available() {
                    let mut got = vec![0f32; 64 * lanes];
                    widen_cols_at(isa, &cols, cw, &mut got);
                    assert_eq!(got, want_c, "{ty:?} columns of {lanes} at {isa:?}");
                }
            }
            for isa in Isa::available() {
                let mut got = vec![0f32; 3 * 64];
                widen_rows_at(isa, &rows, rw, &mut got);
                assert_eq!(got, want, "{ty:?} rows at {isa:?}");
            }
        }
    }

    #[test]
    fn a_column_write_reads_back_as_its_row_would() {
        for ty in [KvQuant::Q8_0, KvQuant::Q4_0] {
            let x = random(64, 7);
            let mut as_row = QuantRows::new(ty, 64);
            as_row.write_row(0, &x);
            let mut row = vec![0f32; 64];
            widen_rows_ref(&as_row, row_at(0, 1, 64, 64), &mut row);
            let lanes = 16;
            let mut as_col = QuantRows::new(ty, 64 * lanes);
            as_col.write_col(5, lanes, 5, &x);
            let mut cols = vec![0f32; 64 * lanes];
            let cw = ColsAt {
                at: 0,
                n_rows: 64,
                lanes,
                scale_at: 0,
            };
            widen_cols_ref(&as_col, cw, &mut cols);
            let col: Vec<f32> = (0..64).map(|r| cols[r * lanes + 5]).collect();
            assert_eq!(col, row, "{ty:?}");
        }
    }
}
