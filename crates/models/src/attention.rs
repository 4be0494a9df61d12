//! Causal multi-head attention with grouped-query heads over the KV store.

use crate::kv_store::KvStore;
use frugal_kernels::{dot, parallel::par_chunks_mut, ThreadPool};

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
}

/// For every query row and head, attends over positions `0..=pos` of the row's sequence in layer
/// `layer` of `kv`, writing `out[row][head][..dim_v]`. `q` is `[rows][n_head][dim_k]`.
pub(crate) fn attend(
    pool: &ThreadPool,
    kv: &KvStore,
    layer: usize,
    rows: &[QueryRow<'_>],
    q: &[f32],
    heads: &Heads,
    out: &mut [f32],
) {
    let Heads {
        n_head,
        n_head_kv,
        dim_k: head_dim,
        dim_v,
        scale,
    } = *heads;
    let group = n_head / n_head_kv;
    par_chunks_mut(pool, out, dim_v, &|item, out_h| {
        let (row, h) = (item / n_head, item % n_head);
        let r = &rows[row];
        let g = h / group;
        let qh = &q[(row * n_head + h) * head_dim..][..head_dim];
        let mut scores = Vec::with_capacity(r.pos + 1);
        let mut max = f32::NEG_INFINITY;
        for p in 0..=r.pos {
            let (k, _) = kv.read(layer, r.blocks, p);
            let s = dot::dot_f32(qh, &k[g * head_dim..][..head_dim]) * scale;
            max = max.max(s);
            scores.push(s);
        }
        // Softmax with the sum in f64, as ggml does.
        let mut sum = 0.0f64;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s as f64;
        }
        let inv = (1.0 / sum) as f32;
        out_h.fill(0.0);
        for (p, s) in scores.iter().enumerate() {
            let (k, v) = kv.read(layer, r.blocks, p);
            let v = if v.is_empty() {
                &k[g * head_dim..][..dim_v]
            } else {
                &v[g * dim_v..][..dim_v]
            };
            dot::axpy_f32(out_h, s * inv, v);
        }
    });
}
