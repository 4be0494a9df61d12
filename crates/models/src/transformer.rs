//! The forward pass of Llama-family transformers (llama, qwen2, qwen3 and their MoE variants,
//! DeepSeek, GLM-4.5, ERNIE 4.5, Gemma 3, and the hybrids' shared parts), in one readable place.
//!
//! Per layer: RMS norm → Q/K/V projections (+ bias for qwen2 and GLM, per-head RMS norm for qwen3
//! and Gemma) → RoPE (Gemma's sliding layers with their own base) → keys and values into the KV
//! store → grouped-query attention (over the last window only, in sliding layers) → output
//! projection (+ Gemma's post-norm) → residual → RMS norm → SwiGLU or GeGLU feed-forward (dense,
//! or routed experts; + Gemma's post-norm) → residual. All tokens of all chunks share each
//! matrix product.

use crate::attention::{attend, Heads, QueryRow};
use crate::config::ModelConfig;
use crate::delta_net::SeqSpan;
use crate::ffn::{ffn, moe, FfnScratch};
use crate::kv_store::KvStore;
use crate::weights::{Attention, Ffn, GqaWeights, MlaWeights, Weights};
use crate::{Logits, SeqChunk};
use frugal_kernels::matmul::{matmul_quantized, quantize_activations, QuantizedActivations};
use frugal_kernels::ops::{add, rms_norm, rms_norm_inplace};
use frugal_kernels::parallel::par_chunks_mut;
use frugal_kernels::storage::zeros;
use frugal_kernels::{matmul, Matrix, ThreadPool};

pub(crate) fn forward(
    c: &ModelConfig,
    w: &Weights,
    pool: &ThreadPool,
    kv: &mut KvStore,
    chunks: &[SeqChunk<'_>],
) -> Vec<f32> {
    let e = c.n_embd;

    // One entry per token of the batch: where its keys and values live, in the layers that
    // attend to the whole context and in the sliding-window ones.
    let rows = query_rows(chunks, |ch| ch.blocks);
    let window_rows = match c.sliding {
        Some(_) => query_rows(chunks, |ch| match ch.window_blocks.is_empty() {
            true => ch.blocks,
            false => ch.window_blocks,
        }),
        None => Vec::new(),
    };
    let n = rows.len();
    if n == 0 {
        return Vec::new();
    }
    let spans = seq_spans(chunks);
    let mut x = embed(c, w, chunks, n);

    let mut xn = zeros(n * e);
    let mut proj = zeros(n * e);
    let mut ffn_scratch = FfnScratch::default();

    for (il, lw) in w.layers.iter().enumerate() {
        norm_rows(pool, &x, &lw.attn_norm, c.rms_eps, e, &mut xn);
        let layer_rows = match c.is_sliding(il) {
            true => &window_rows,
            false => &rows,
        };
        let att = match &lw.attn {
            Attention::Gqa(a) => gqa(c, a, pool, kv, il, layer_rows, &xn),
            Attention::Mla(a) => mla(c, a, pool, kv, il, &rows, &xn),
            Attention::DeltaNet(d) => crate::delta_net::layer(c, d, pool, kv, il, &spans, &xn),
        };
        matmul(pool, &lw.wo, &att, n, &mut proj);
        add_bias(&mut proj, lw.wo_bias.as_deref());
        post_norm(pool, lw.attn_post_norm.as_deref(), c.rms_eps, e, &mut proj);
        par_add(pool, &mut x, &proj);

        norm_rows(pool, &x, &lw.ffn_norm, c.rms_eps, e, &mut xn);
        match &lw.ffn {
            Ffn::Dense(f) => ffn(pool, f, c.ffn_gelu(), &xn, n, &mut proj, &mut ffn_scratch),
            Ffn::Moe(m) => moe(pool, c, m, &xn, n, &mut proj, &mut ffn_scratch),
        }
        post_norm(pool, lw.ffn_post_norm.as_deref(), c.rms_eps, e, &mut proj);
        par_add(pool, &mut x, &proj);
    }

    output_logits(c, w, pool, chunks, &x)
}

/// One entry per chunk: its rows and its recurrent-state slot (hybrid models).
fn seq_spans(chunks: &[SeqChunk<'_>]) -> Vec<SeqSpan> {
    chunks
        .iter()
        .scan(0, |start, ch| {
            let span = SeqSpan {
                start: *start,
                len: ch.tokens.len(),
                pos: ch.pos,
                slot: ch.state,
            };
            *start += ch.tokens.len();
            Some(span)
        })
        .collect()
}

/// The `n` tokens' embeddings (scaled, for Gemma), `[n][n_embd]`.
fn embed(c: &ModelConfig, w: &Weights, chunks: &[SeqChunk<'_>], n: usize) -> Vec<f32> {
    let e = c.n_embd;
    let mut x = zeros(n * e);
    for (i, &t) in chunks.iter().flat_map(|ch| ch.tokens).enumerate() {
        let row = &mut x[i * e..(i + 1) * e];
        w.token_embd.dequantize_row(t as usize, row);
        if c.embd_scale != 1.0 {
            row.iter_mut().for_each(|v| *v *= c.embd_scale);
        }
    }
    x
}

/// Final norm and vocabulary projection, only for the rows whose logits were asked for.
fn output_logits(
    c: &ModelConfig,
    w: &Weights,
    pool: &ThreadPool,
    chunks: &[SeqChunk<'_>],
    x: &[f32],
) -> Vec<f32> {
    let e = c.n_embd;
    let mut wanted = Vec::new();
    let mut start = 0;
    for ch in chunks {
        let len = ch.tokens.len();
        match ch.logits {
            Logits::None => {}
            Logits::Last => wanted.push(start + len - 1),
            Logits::All => wanted.extend(start..start + len),
            Logits::Tail(n) => wanted.extend(start + len - n.min(len)..start + len),
        }
        start += len;
    }
    let mut xs = zeros(wanted.len() * e);
    for (j, &i) in wanted.iter().enumerate() {
        rms_norm(
            &x[i * e..(i + 1) * e],
            &w.output_norm,
            c.rms_eps,
            &mut xs[j * e..(j + 1) * e],
        );
    }
    let mut logits = zeros(wanted.len() * c.n_vocab);
    if !wanted.is_empty() {
        matmul(pool, w.output(), &xs, wanted.len(), &mut logits);
    }
    logits
}

/// One [`QueryRow`] per token of the chunks, with the block table `table` picks.
fn query_rows<'a>(
    chunks: &[SeqChunk<'a>],
    table: impl Fn(&SeqChunk<'a>) -> &'a [u32],
) -> Vec<QueryRow<'a>> {
    chunks
        .iter()
        .flat_map(|ch| {
            let blocks = table(ch);
            (0..ch.tokens.len()).map(move |i| QueryRow {
                blocks,
                pos: ch.pos + i,
            })
        })
        .collect()
}

/// Gemma's sandwich norm of a sublayer's output, in place, where the layer has one.
fn post_norm(pool: &ThreadPool, weight: Option<&[f32]>, eps: f32, width: usize, y: &mut [f32]) {
    if let Some(w) = weight {
        par_chunks_mut(pool, y, width, &|_, r| rms_norm_inplace(r, w, eps));
    }
}

/// Grouped-query attention: Q/K/V projections (+ bias, + per-head norm), RoPE, keys and values
/// into the store, attention. Returns `[n][n_head * head_dim]`.
fn gqa(
    c: &ModelConfig,
    a: &GqaWeights,
    pool: &ThreadPool,
    kv: &mut KvStore,
    il: usize,
    rows: &[QueryRow],
    xn: &[f32],
) -> Vec<f32> {
    let (n, hd) = (rows.len(), c.head_dim_k);
    let (qd, kvd) = (c.q_dim(), c.kv_dim());
    let (rope, window) = match &c.sliding {
        Some(s) if s.layers[il] => (&s.rope, Some(s.window)),
        _ => (&c.rope, None),
    };
    let mut q = zeros(n * qd);
    let mut k = zeros(n * kvd);
    let mut v = zeros(n * kvd);
    let mut input = SharedInput::new(xn, n);
    let gate = match a.output_gate {
        false => {
            input.matmul(pool, &a.wq, &mut q);
            None
        }
        true => {
            let mut qg = zeros(n * 2 * qd);
            input.matmul(pool, &a.wq, &mut qg);
            Some(split_query_gate(&qg, hd, &mut q))
        }
    };
    input.matmul(pool, &a.wk, &mut k);
    input.matmul(pool, &a.wv, &mut v);
    // Per token: bias, per-head norm, RoPE (in parallel over tokens).
    let post = |x: &mut [f32], t: usize, bias: Option<&[f32]>, norm: Option<&[f32]>, nh: usize| {
        if let Some(b) = bias {
            add(x, b);
        }
        if let Some(nw) = norm {
            x.chunks_exact_mut(hd)
                .for_each(|h| rms_norm_inplace(h, nw, c.rms_eps));
        }
        rope.apply(x, nh, hd, rows[t].pos);
    };
    par_chunks_mut(pool, &mut q, qd, &|t, x| {
        post(x, t, a.bq.as_deref(), a.q_norm.as_deref(), c.n_head)
    });
    par_chunks_mut(pool, &mut k, kvd, &|t, x| {
        post(x, t, a.bk.as_deref(), a.k_norm.as_deref(), c.n_head_kv)
    });
    add_bias(&mut v, a.bv.as_deref());
    for (i, r) in rows.iter().enumerate() {
        kv.write(
            il,
            r.blocks,
            r.pos,
            &k[i * kvd..(i + 1) * kvd],
            &v[i * kvd..(i + 1) * kvd],
        );
    }
    let mut att = zeros(n * qd);
    let heads = Heads {
        n_head: c.n_head,
        n_head_kv: c.n_head_kv,
        dim_k: hd,
        dim_v: hd,
        scale: c.kq_scale_mult / (hd as f32).sqrt(),
        window,
    };
    attend(pool, kv, il, rows, &q, &heads, &mut att);
    if let Some(gate) = gate {
        for (o, &g) in att.iter_mut().zip(&gate) {
            *o *= 1.0 / (1.0 + (-g).exp());
        }
    }
    att
}

/// Splits the gated attention's query projection, per head `[query | gate]`, into the queries
/// (written to `q`) and the gates (returned), both `[n][n_head * head_dim]`.
fn split_query_gate(qg: &[f32], hd: usize, q: &mut [f32]) -> Vec<f32> {
    let mut gate = zeros(q.len());
    for ((pair, qh), gh) in qg
        .chunks_exact(2 * hd)
        .zip(q.chunks_exact_mut(hd))
        .zip(gate.chunks_exact_mut(hd))
    {
        qh.copy_from_slice(&pair[..hd]);
        gh.copy_from_slice(&pair[hd..]);
    }
    gate
}

/// Multi-head latent attention with the key and value up-projections absorbed: the cache holds
/// one latent (`kv_lora`) plus one RoPE key (`qk_rope`) per token, shared by all heads; queries
/// are mapped into latent space per head (`k_b`), and attention outputs back out of it (`v_b`).
/// Returns `[n][n_head * v_head]`.
fn mla(
    c: &ModelConfig,
    m: &MlaWeights,
    pool: &ThreadPool,
    kv: &mut KvStore,
    il: usize,
    rows: &[QueryRow],
    xn: &[f32],
) -> Vec<f32> {
    let cfg = c.mla.as_ref().expect("MLA weights imply an MLA config");
    let (n, nh) = (rows.len(), c.n_head);
    let (nope, rope, lora, vh) = (cfg.qk_nope, cfg.qk_rope, cfg.kv_lora, cfg.v_head);
    let (hq, kdim) = (nope + rope, lora + rope);

    let mut q = zeros(n * nh * hq);
    match &m.q_a {
        Some((q_a, norm)) => {
            let mut t = zeros(n * q_a.rows());
            matmul(pool, q_a, xn, n, &mut t);
            t.chunks_exact_mut(q_a.rows())
                .for_each(|r| rms_norm_inplace(r, norm, c.rms_eps));
            matmul(pool, &m.q, &t, n, &mut q);
        }
        None => matmul(pool, &m.q, xn, n, &mut q),
    }
    let mut kvr = zeros(n * kdim);
    matmul(pool, &m.kv_a, xn, n, &mut kvr);

    // Per head: [k_b · q_nope (kv_lora) | RoPE(q_pe) (qk_rope)], the query in latent space.
    let mut qfull = zeros(n * nh * kdim);
    per_head_matmul(pool, &m.k_b, &q, hq, &mut qfull, kdim, n);
    let mut pe = zeros(nh * rope);
    for (t, r) in rows.iter().enumerate() {
        for h in 0..nh {
            pe[h * rope..(h + 1) * rope].copy_from_slice(&q[(t * nh + h) * hq + nope..][..rope]);
        }
        c.rope.apply(&mut pe, nh, rope, r.pos);
        for h in 0..nh {
            qfull[(t * nh + h) * kdim + lora..][..rope]
                .copy_from_slice(&pe[h * rope..(h + 1) * rope]);
        }
        // The cached key: normalized latent, then the RoPE key.
        let key = &mut kvr[t * kdim..(t + 1) * kdim];
        rms_norm_inplace(&mut key[..lora], &m.kv_a_norm, c.rms_eps);
        c.rope.apply(&mut key[lora..], 1, rope, r.pos);
        kv.write(il, r.blocks, r.pos, key, &[]);
    }
    let mut latent = zeros(n * nh * lora);
    let heads = Heads {
        n_head: nh,
        n_head_kv: 1,
        dim_k: kdim,
        dim_v: lora,
        scale: c.kq_scale_mult / (hq as f32).sqrt(),
        window: None,
    };
    attend(pool, kv, il, rows, &qfull, &heads, &mut latent);

    let mut out = zeros(n * nh * vh);
    per_head_matmul(pool, &m.v_b, &latent, lora, &mut out, vh, n);
    out
}

/// A different matrix per head: for every token `t` and head `h`, writes `mats[h] · x` to the
/// start of `out[t][h]` (heads `out_stride` apart), where `x` is the first `mats[h].cols()` values
/// of `inp[t][h]` (heads `in_stride` apart).
fn per_head_matmul(
    pool: &ThreadPool,
    mats: &[Matrix],
    inp: &[f32],
    in_stride: usize,
    out: &mut [f32],
    out_stride: usize,
    n: usize,
) {
    let nh = mats.len();
    for (h, w) in mats.iter().enumerate() {
        let (cols, rows) = (w.cols(), w.rows());
        let x: Vec<f32> = (0..n)
            .flat_map(|t| &inp[(t * nh + h) * in_stride..][..cols])
            .copied()
            .collect();
        let mut y = zeros(n * rows);
        matmul(pool, w, &x, n, &mut y);
        for t in 0..n {
            out[(t * nh + h) * out_stride..][..rows].copy_from_slice(&y[t * rows..(t + 1) * rows]);
        }
    }
}

fn norm_rows(
    pool: &ThreadPool,
    x: &[f32],
    weight: &[f32],
    eps: f32,
    width: usize,
    out: &mut [f32],
) {
    par_chunks_mut(pool, out, width, &|t, or| {
        rms_norm(&x[t * width..(t + 1) * width], weight, eps, or)
    });
}

/// `acc += x`, split over the pool's threads.
fn par_add(pool: &ThreadPool, acc: &mut [f32], x: &[f32]) {
    assert_eq!(acc.len(), x.len(), "add: length mismatch");
    const CHUNK: usize = 4096;
    par_chunks_mut(pool, acc, CHUNK, &|i, a| {
        add(a, &x[i * CHUNK..i * CHUNK + a.len()])
    });
}

/// One input of several matrix products, its activations quantized once per `vec_dot_type`
/// (e.g. for Q, K and V, or gate and up) instead of once per product: the same numbers as
/// `matmul`, which would quantize the same rows the same way each time.
pub(crate) struct SharedInput<'a> {
    x: &'a [f32],
    n: usize,
    quantized: Vec<QuantizedActivations>,
}

impl<'a> SharedInput<'a> {
    pub(crate) fn new(x: &'a [f32], n: usize) -> SharedInput<'a> {
        SharedInput {
            x,
            n,
            quantized: Vec::new(),
        }
    }

    pub(crate) fn matmul(&mut self, pool: &ThreadPool, w: &Matrix, y: &mut [f32]) {
        self.prepare(pool, w);
        matmul_quantized(pool, w, self.get(w), y);
    }

    /// Quantizes the rows for `w`'s `vec_dot_type` unless that is done already.
    pub(crate) fn prepare(&mut self, pool: &ThreadPool, w: &Matrix) {
        if !self.quantized.iter().any(|qa| qa.fits(w)) {
            let qa = quantize_activations(pool, w.ty().vec_dot_type(), self.x, self.n);
            self.quantized.push(qa);
        }
    }

    /// The rows quantized for `w` by [`SharedInput::prepare`].
    pub(crate) fn get(&self, w: &Matrix) -> &QuantizedActivations {
        self.quantized
            .iter()
            .find(|qa| qa.fits(w))
            .expect("SharedInput::prepare was called for this matrix")
    }
}

fn add_bias(rows: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        rows.chunks_exact_mut(b.len()).for_each(|r| add(r, b));
    }
}
