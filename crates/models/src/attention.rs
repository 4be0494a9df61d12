//! Causal multi-head attention with grouped-query heads over the KV store.

use crate::kv_store::{KvStore, KvType, Stored};
use frugal_kernels::activation::softmax;
use frugal_kernels::kv_quant::{self, ColsAt, QuantRows, RowsAt, QK};
use frugal_kernels::storage::zeros;
use frugal_kernels::{dot, parallel::par_chunks_mut_interleaved, KvElem, ThreadPool};
use half::{bf16, f16};

/// llama.cpp's rotation of keys and values that are stored quantized: queries and keys by the
/// Walsh-Hadamard matrix of the largest power of two from 64 that divides the key head (dot
/// products unchanged), values by that of 64 and the attention output back. Quantizing the
/// rotated vectors spreads a head's outlying dimensions over the whole block, which keeps 4-bit
/// keys usable. None for unquantized stores and for heads that are not multiples of 64.
pub(crate) struct KvRotation {
    k: Option<usize>,
    v: Option<usize>,
}

impl KvRotation {
    /// For keys of `dim_k` and values of `dim_v` (`None`: values inside the keys, as MLA's
    /// latent, whose output is rotated back as the keys were).
    pub fn new(ty: KvType, dim_k: usize, dim_v: Option<usize>) -> KvRotation {
        let on = ty.quant().is_some();
        let k = (on && dim_k.is_multiple_of(64)).then(|| {
            let mut n = 64;
            while dim_k.is_multiple_of(2 * n) {
                n *= 2;
            }
            n
        });
        let v = match dim_v {
            Some(d) => (on && d.is_multiple_of(64)).then_some(64),
            None => k.map(|_| 64),
        };
        KvRotation { k, v }
    }

    /// Rotates queries or keys (whole heads, one after another).
    pub fn keys(&self, x: &mut [f32]) {
        if let Some(n) = self.k {
            frugal_kernels::ops::hadamard(x, n);
        }
    }

    /// Rotates values, or rotates the attention output back.
    pub fn values(&self, x: &mut [f32]) {
        if let Some(n) = self.v {
            frugal_kernels::ops::hadamard(x, n);
        }
    }
}

/// One query row: which sequence (its blocks) and which position it sits at.
pub(crate) struct QueryRow<'a> {
    pub blocks: &'a [u32],
    pub pos: usize,
}

/// Head shapes of one attention call.
pub(crate) struct Heads {
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Width of a query/key head.
    pub dim_k: usize,
    /// Width of a value head. When the store has no value rows (MLA), values are the first
    /// `dim_v` dims of each key head.
    pub dim_v: usize,
    /// Multiplies the scores (1/sqrt(head size) unless the model says otherwise).
    pub scale: f32,
    /// Sliding-window layers: a query at `pos` sees positions `pos - window + 1 ..= pos` only.
    pub window: Option<usize>,
}

/// For every query row and head, attends over positions `0..=pos` (the window's, in a sliding
/// layer) of the row's sequence in layer `layer` of `kv`, writing `out[row][head][..dim_v]`. `q` is
/// `[rows][n_head][dim_k]`. Blocks wholly before a window are not read.
///
/// The query heads that share a KV head are done together, block by block of the store: their
/// scores against the block's transposed keys, then their weighted sums of its value rows, so
/// each key and value is read once per group (a quantized block is widened to f32 once per
/// group). Groups go to threads interleaved, which balances the causal rows' growing lengths.
pub(crate) fn attend(
    pool: &ThreadPool,
    kv: &KvStore,
    layer: usize,
    rows: &[QueryRow<'_>],
    q: &[f32],
    heads: &Heads,
    out: &mut [f32],
) {
    let at = (pool, kv, layer, rows, q, heads, out);
    match kv.kv_type() {
        KvType::F32 => attend_with(at, &|g| Direct::<f32>::new(kv, layer, heads, g)),
        KvType::F16 => attend_with(at, &|g| Direct::<f16>::new(kv, layer, heads, g)),
        KvType::Bf16 => attend_with(at, &|g| Direct::<bf16>::new(kv, layer, heads, g)),
        KvType::Q8_0 | KvType::Q4_0 => attend_with(at, &|g| Widened::new(kv, layer, heads, g)),
    }
}

/// Where one KV head's keys and values come from, a block at a time.
trait Blocks {
    type E: KvElem;
    /// The transposed keys of `block` for this head: `[dim_k][block_size]`.
    fn keys(&mut self, block: u32) -> &[Self::E];
    /// The first `len` value rows of `block` for this head (from its first dimension), and
    /// their stride.
    fn values(&mut self, block: u32, len: usize) -> (&[Self::E], usize);
}

/// Keys and values the kernels read as stored (f32, f16, bf16).
struct Direct<'a, E> {
    kv: &'a KvStore,
    layer: usize,
    /// Offsets of the head in a key block and in a value row.
    k_off: usize,
    v_off: usize,
    _e: std::marker::PhantomData<E>,
}

impl<'a, E: Stored> Direct<'a, E> {
    fn new(kv: &'a KvStore, layer: usize, h: &Heads, g: usize) -> Self {
        let (k_off, v_off) = head_offsets(kv, h, g);
        Direct {
            kv,
            layer,
            k_off,
            v_off,
            _e: std::marker::PhantomData,
        }
    }
}

/// Where KV head `g` starts in a transposed key block and in a value row.
fn head_offsets(kv: &KvStore, h: &Heads, g: usize) -> (usize, usize) {
    let k_off = g * h.dim_k * kv.block_size();
    let v_off = if kv.has_values() {
        g * h.dim_v
    } else {
        g * h.dim_k
    };
    (k_off, v_off)
}

impl<E: Stored> Blocks for Direct<'_, E> {
    type E = E;
    fn keys(&mut self, block: u32) -> &[E] {
        &self.kv.keys_t::<E>(self.layer, block)[self.k_off..]
    }
    fn values(&mut self, block: u32, _len: usize) -> (&[E], usize) {
        let (v, stride) = self.kv.values::<E>(self.layer, block);
        (&v[self.v_off..], stride)
    }
}

/// Quantized keys and values, widened to f32 a block at a time.
struct Widened<'a> {
    keys: &'a QuantRows,
    values: &'a QuantRows,
    bs: usize,
    kv_dim: usize,
    v_stride: usize,
    dim_k: usize,
    dim_v: usize,
    k_off: usize,
    v_off: usize,
    k_buf: Vec<f32>,
    v_buf: Vec<f32>,
}

impl<'a> Widened<'a> {
    fn new(kv: &'a KvStore, layer: usize, h: &Heads, g: usize) -> Self {
        let (keys, values) = kv.quantized(layer).expect("a quantized store");
        let (k_off, v_off) = head_offsets(kv, h, g);
        let bs = kv.block_size();
        Widened {
            keys,
            values,
            bs,
            kv_dim: kv.kv_dim(),
            v_stride: kv.value_width(),
            dim_k: h.dim_k,
            dim_v: h.dim_v,
            k_off,
            v_off,
            k_buf: vec![0.0; h.dim_k * bs],
            v_buf: vec![0.0; h.dim_v * bs],
        }
    }
}

impl Blocks for Widened<'_> {
    type E = f32;
    fn keys(&mut self, block: u32) -> &[f32] {
        let at = block as usize * self.kv_dim * self.bs + self.k_off;
        let c = ColsAt {
            at,
            n_rows: self.dim_k,
            lanes: self.bs,
            scale_at: at / QK,
        };
        kv_quant::widen_cols(self.keys, c, &mut self.k_buf);
        &self.k_buf
    }
    fn values(&mut self, block: u32, len: usize) -> (&[f32], usize) {
        let w = RowsAt {
            at: block as usize * self.bs * self.v_stride + self.v_off,
            n_rows: len,
            stride: self.v_stride,
            width: self.dim_v,
        };
        kv_quant::widen_rows(self.values, w, &mut self.v_buf);
        (&self.v_buf, self.dim_v)
    }
}

/// [`attend`]'s arguments.
type Args<'a, 'r> = (
    &'a ThreadPool,
    &'a KvStore,
    usize,
    &'a [QueryRow<'r>],
    &'a [f32],
    &'a Heads,
    &'a mut [f32],
);

/// [`attend`] with keys and values from the blocks `source(g)` gives for KV head `g`.
fn attend_with<B: Blocks>(args: Args<'_, '_>, source: &(dyn Fn(usize) -> B + Sync)) {
    let (pool, kv, _, rows, q, heads, out) = args;
    let Heads {
        n_head,
        n_head_kv,
        dim_k: head_dim,
        dim_v,
        scale,
        window,
    } = *heads;
    let group = n_head / n_head_kv;
    let bs = kv.block_size();
    par_chunks_mut_interleaved(pool, out, group * dim_v, &|item, out_g| {
        let (row, g) = (item / n_head_kv, item % n_head_kv);
        let r = &rows[row];
        let mut src = source(g);
        // Positions `first..=pos` are seen; blocks from the one holding `first` are read.
        let first = window.map_or(0, |w| (r.pos + 1).saturating_sub(w));
        let (b0, end) = (first / bs, r.pos + 1);
        let n_pos = end - b0 * bs;
        let blocks = &r.blocks[b0..end.div_ceil(bs)];
        let qg = &q[(row * n_head + g * group) * head_dim..][..group * head_dim];
        // Scores, `[group][n_pos]`, from position `b0 * bs`.
        let mut scores = zeros(group * n_pos);
        for (bi, &block) in blocks.iter().enumerate() {
            let len = (n_pos - bi * bs).min(bs);
            let kt = src.keys(block);
            dot::scores_t(qg, head_dim, kt, bs, len, &mut scores[bi * bs..], n_pos);
        }
        for s in scores.chunks_exact_mut(n_pos) {
            // Positions of the first block before the window weigh nothing.
            s[..first - b0 * bs].fill(f32::NEG_INFINITY);
            softmax(s, scale);
        }
        out_g.fill(0.0);
        for (bi, &block) in blocks.iter().enumerate() {
            let len = (n_pos - bi * bs).min(bs);
            let (v, stride) = src.values(block, len);
            dot::weighted_rows(out_g, dim_v, &scores[bi * bs..], n_pos, v, stride, len);
        }
    });
}
