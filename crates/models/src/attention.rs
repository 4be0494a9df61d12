//! Causal multi-head attention with grouped-query heads over the KV store.

use crate::kv_store::{KvStore, KvType, Stored};
use frugal_kernels::activation::softmax;
use frugal_kernels::storage::zeros;
use frugal_kernels::{dot, parallel::par_chunks_mut_interleaved, ThreadPool};
use half::{bf16, f16};

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
/// each key and value is read once per group. Groups go to threads interleaved, which balances
/// the causal rows' growing lengths.
pub(crate) fn attend(
    pool: &ThreadPool,
    kv: &KvStore,
    layer: usize,
    rows: &[QueryRow<'_>],
    q: &[f32],
    heads: &Heads,
    out: &mut [f32],
) {
    match kv.kv_type() {
        KvType::F32 => attend_as::<f32>(pool, kv, layer, rows, q, heads, out),
        KvType::F16 => attend_as::<f16>(pool, kv, layer, rows, q, heads, out),
        KvType::Bf16 => attend_as::<bf16>(pool, kv, layer, rows, q, heads, out),
    }
}

/// [`attend`] over keys and values stored as `E`.
fn attend_as<E: Stored>(
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
        window,
    } = *heads;
    let group = n_head / n_head_kv;
    let bs = kv.block_size();
    par_chunks_mut_interleaved(pool, out, group * dim_v, &|item, out_g| {
        let (row, g) = (item / n_head_kv, item % n_head_kv);
        let r = &rows[row];
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
            let kt = &kv.keys_t::<E>(layer, block)[g * head_dim * bs..];
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
            let (v, stride) = kv.values::<E>(layer, block);
            let off = if kv.has_values() {
                g * dim_v
            } else {
                g * head_dim
            };
            dot::weighted_rows(
                out_g,
                dim_v,
                &scores[bi * bs..],
                n_pos,
                &v[off..],
                stride,
                len,
            );
        }
    });
}
