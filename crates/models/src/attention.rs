//! Causal multi-head attention with grouped-query heads over the KV store.

use crate::kv_store::KvStore;
use frugal_kernels::{dot, parallel::par_chunks_mut, ThreadPool};

/// One query row: which sequence (its blocks) and which position it sits at.
pub(crate) struct QueryRow<'a> {
    pub blocks: &'a [u32],
    pub pos: usize,
}

/// For every query row and head, attends over positions `0..=pos` of the row's sequence in layer
/// `layer` of `kv`, writing `out[row][head][..head_dim]`. `q` is `[rows][n_head][head_dim]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend(
    pool: &ThreadPool,
    kv: &KvStore,
    layer: usize,
    rows: &[QueryRow<'_>],
    q: &[f32],
    n_head: usize,
    n_head_kv: usize,
    head_dim: usize,
    out: &mut [f32],
) {
    let group = n_head / n_head_kv;
    let scale = 1.0 / (head_dim as f32).sqrt();
    par_chunks_mut(pool, out, head_dim, &|item, out_h| {
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
            let (_, v) = kv.read(layer, r.blocks, p);
            dot::axpy_f32(out_h, s * inv, &v[g * head_dim..][..head_dim]);
        }
    });
}
