//! The forward pass of dense Llama-family transformers (llama, qwen2, qwen3), in one readable place.
//!
//! Per layer: RMS norm → Q/K/V projections (+ bias for qwen2, per-head RMS norm for qwen3) → RoPE →
//! keys and values into the KV store → grouped-query attention → output projection → residual →
//! RMS norm → SwiGLU feed-forward → residual. All tokens of all chunks share each matrix product.

use crate::attention::{attend, QueryRow};
use crate::config::ModelConfig;
use crate::kv_store::KvStore;
use crate::weights::Weights;
use crate::{Logits, SeqChunk};
use frugal_kernels::ops::{add, rms_norm, rms_norm_inplace, swiglu};
use frugal_kernels::{matmul, ThreadPool};

pub(crate) fn forward(
    c: &ModelConfig,
    w: &Weights,
    pool: &ThreadPool,
    kv: &mut KvStore,
    chunks: &[SeqChunk<'_>],
) -> Vec<f32> {
    let (e, hd) = (c.n_embd, c.head_dim_k);
    let (qd, kvd, ff) = (c.q_dim(), c.kv_dim(), c.n_ff);

    // One entry per token of the batch: where its keys and values live.
    let rows: Vec<QueryRow> = chunks
        .iter()
        .flat_map(|ch| {
            (0..ch.tokens.len()).map(move |i| QueryRow {
                blocks: ch.blocks,
                pos: ch.pos + i,
            })
        })
        .collect();
    let n = rows.len();
    if n == 0 {
        return Vec::new();
    }

    let mut x = vec![0.0f32; n * e];
    for (i, &t) in chunks.iter().flat_map(|ch| ch.tokens).enumerate() {
        w.token_embd
            .dequantize_row(t as usize, &mut x[i * e..(i + 1) * e]);
    }

    let mut xn = vec![0.0f32; n * e];
    let mut q = vec![0.0f32; n * qd];
    let mut k = vec![0.0f32; n * kvd];
    let mut v = vec![0.0f32; n * kvd];
    let mut att = vec![0.0f32; n * qd];
    let mut proj = vec![0.0f32; n * e];
    let mut gate = vec![0.0f32; n * ff];
    let mut up = vec![0.0f32; n * ff];

    for (il, lw) in w.layers.iter().enumerate() {
        norm_rows(&x, &lw.attn_norm, c.rms_eps, e, &mut xn);
        matmul(pool, &lw.wq, &xn, n, &mut q);
        matmul(pool, &lw.wk, &xn, n, &mut k);
        matmul(pool, &lw.wv, &xn, n, &mut v);
        add_bias(&mut q, lw.bq.as_deref());
        add_bias(&mut k, lw.bk.as_deref());
        add_bias(&mut v, lw.bv.as_deref());
        if let Some(qn) = &lw.q_norm {
            q.chunks_exact_mut(hd)
                .for_each(|h| rms_norm_inplace(h, qn, c.rms_eps));
        }
        if let Some(kn) = &lw.k_norm {
            k.chunks_exact_mut(hd)
                .for_each(|h| rms_norm_inplace(h, kn, c.rms_eps));
        }
        for (i, r) in rows.iter().enumerate() {
            c.rope
                .apply(&mut q[i * qd..(i + 1) * qd], c.n_head, hd, r.pos);
            c.rope
                .apply(&mut k[i * kvd..(i + 1) * kvd], c.n_head_kv, hd, r.pos);
            kv.write(
                il,
                r.blocks,
                r.pos,
                &k[i * kvd..(i + 1) * kvd],
                &v[i * kvd..(i + 1) * kvd],
            );
        }
        attend(pool, kv, il, &rows, &q, c.n_head, c.n_head_kv, hd, &mut att);
        matmul(pool, &lw.wo, &att, n, &mut proj);
        add(&mut x, &proj);

        norm_rows(&x, &lw.ffn_norm, c.rms_eps, e, &mut xn);
        matmul(pool, &lw.w_gate, &xn, n, &mut gate);
        matmul(pool, &lw.w_up, &xn, n, &mut up);
        swiglu(&mut gate, &up);
        matmul(pool, &lw.w_down, &gate, n, &mut proj);
        add(&mut x, &proj);
    }

    // Final norm and vocabulary projection, only for the rows whose logits were asked for.
    let mut wanted = Vec::new();
    let mut start = 0;
    for ch in chunks {
        let len = ch.tokens.len();
        match ch.logits {
            Logits::None => {}
            Logits::Last => wanted.push(start + len - 1),
            Logits::All => wanted.extend(start..start + len),
        }
        start += len;
    }
    let mut xs = vec![0.0f32; wanted.len() * e];
    for (j, &i) in wanted.iter().enumerate() {
        rms_norm(
            &x[i * e..(i + 1) * e],
            &w.output_norm,
            c.rms_eps,
            &mut xs[j * e..(j + 1) * e],
        );
    }
    let mut logits = vec![0.0f32; wanted.len() * c.n_vocab];
    if !wanted.is_empty() {
        matmul(pool, w.output(), &xs, wanted.len(), &mut logits);
    }
    logits
}

fn norm_rows(x: &[f32], weight: &[f32], eps: f32, width: usize, out: &mut [f32]) {
    for (xr, or) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        rms_norm(xr, weight, eps, or);
    }
}

fn add_bias(rows: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        rows.chunks_exact_mut(b.len()).for_each(|r| add(r, b));
    }
}
