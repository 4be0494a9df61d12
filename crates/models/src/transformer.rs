//! The forward pass of Llama-family transformers (llama, qwen2, qwen3 and their MoE variants), in
//! one readable place.
//!
//! Per layer: RMS norm → Q/K/V projections (+ bias for qwen2, per-head RMS norm for qwen3) → RoPE →
//! keys and values into the KV store → grouped-query attention → output projection → residual →
//! RMS norm → SwiGLU feed-forward (dense, or routed experts) → residual. All tokens of all chunks
//! share each matrix product.

use crate::attention::{attend, QueryRow};
use crate::config::ModelConfig;
use crate::kv_store::KvStore;
use crate::weights::{Ffn, FfnWeights, MoeWeights, Weights};
use crate::{Logits, SeqChunk};
use frugal_kernels::ops::{add, rms_norm, rms_norm_inplace, silu, softmax, swiglu};
use frugal_kernels::{matmul, ThreadPool};

pub(crate) fn forward(
    c: &ModelConfig,
    w: &Weights,
    pool: &ThreadPool,
    kv: &mut KvStore,
    chunks: &[SeqChunk<'_>],
) -> Vec<f32> {
    let (e, hd) = (c.n_embd, c.head_dim_k);
    let (qd, kvd) = (c.q_dim(), c.kv_dim());

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
    let (mut gate, mut up) = (Vec::new(), Vec::new());

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
        match &lw.ffn {
            Ffn::Dense(f) => ffn(pool, f, &xn, n, &mut gate, &mut up, &mut proj),
            Ffn::Moe(m) => moe(pool, c, m, &xn, n, &mut proj),
        }
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

/// `out = down(silu(gate(x)) * up(x))` for `n` rows; `gate`/`up` are scratch of `n * n_ff`.
fn ffn(
    pool: &ThreadPool,
    f: &FfnWeights,
    x: &[f32],
    n: usize,
    gate: &mut Vec<f32>,
    up: &mut Vec<f32>,
    out: &mut [f32],
) {
    let ff = f.gate.rows();
    gate.resize(n * ff, 0.0);
    up.resize(n * ff, 0.0);
    matmul(pool, &f.gate, x, n, gate);
    matmul(pool, &f.up, x, n, up);
    swiglu(gate, up);
    matmul(pool, &f.down, gate, n, out);
}

/// Mixture of experts: each token goes through its top-k experts (softmax router), weighted; the
/// tokens routed to one expert go through it together, so each expert's weights are read once.
fn moe(pool: &ThreadPool, c: &ModelConfig, m: &MoeWeights, x: &[f32], n: usize, out: &mut [f32]) {
    let cfg = c.moe.as_ref().expect("MoE weights imply a MoE config");
    let (e, k, n_exp) = (c.n_embd, cfg.n_expert_used, cfg.n_expert);
    let mut probs = vec![0.0f32; n * n_exp];
    matmul(pool, &m.router, x, n, &mut probs);
    // Per token: the selected experts in decreasing probability, and their weights.
    let mut chosen = vec![(0usize, 0.0f32); n * k];
    for (t, p) in probs.chunks_exact_mut(n_exp).enumerate() {
        softmax(p);
        let mut order: Vec<usize> = (0..n_exp).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        let sel = &mut chosen[t * k..(t + 1) * k];
        for (s, &i) in sel.iter_mut().zip(&order) {
            *s = (i, p[i]);
        }
        if cfg.norm_weights {
            let sum: f32 = sel.iter().map(|s| s.1).sum::<f32>().max(6.103_515_6e-5);
            sel.iter_mut().for_each(|s| s.1 /= sum);
        }
        if cfg.weights_scale != 0.0 && cfg.weights_scale != 1.0 {
            sel.iter_mut().for_each(|s| s.1 *= cfg.weights_scale);
        }
    }
    // Expert outputs per (token, slot), summed in slot order like llama.cpp.
    let mut slot_out = vec![0.0f32; n * k * e];
    let (mut xs, mut ys, mut gate, mut up) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (ei, expert) in m.experts.iter().enumerate() {
        let rows: Vec<(usize, usize)> = (0..n * k)
            .filter(|&r| chosen[r].0 == ei)
            .map(|r| (r / k, r))
            .collect();
        if rows.is_empty() {
            continue;
        }
        xs.clear();
        for &(t, _) in &rows {
            xs.extend_from_slice(&x[t * e..(t + 1) * e]);
        }
        ys.resize(rows.len() * e, 0.0);
        ffn(pool, expert, &xs, rows.len(), &mut gate, &mut up, &mut ys);
        for (j, &(_, r)) in rows.iter().enumerate() {
            let w = chosen[r].1;
            for (o, y) in slot_out[r * e..(r + 1) * e]
                .iter_mut()
                .zip(&ys[j * e..(j + 1) * e])
            {
                *o = y * w;
            }
        }
    }
    for t in 0..n {
        let o = &mut out[t * e..(t + 1) * e];
        o.copy_from_slice(&slot_out[t * k * e..(t * k + 1) * e]);
        for s in 1..k {
            add(o, &slot_out[(t * k + s) * e..(t * k + s + 1) * e]);
        }
    }
    if let Some((shared_gate, shared)) = &m.shared {
        let mut g = vec![0.0f32; n];
        matmul(pool, shared_gate, x, n, &mut g);
        let mut ys = vec![0.0f32; n * e];
        ffn(pool, shared, x, n, &mut gate, &mut up, &mut ys);
        for t in 0..n {
            // llama.cpp computes the sigmoid as silu(g) / g.
            let s = if g[t] == 0.0 { 0.5 } else { silu(g[t]) / g[t] };
            for (o, y) in out[t * e..(t + 1) * e]
                .iter_mut()
                .zip(&ys[t * e..(t + 1) * e])
            {
                *o += y * s;
            }
        }
    }
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
