//! The forward pass of Llama-family transformers (llama, qwen2, qwen3 and their MoE variants,
//! DeepSeek, GLM-4.5, ERNIE 4.5, Gemma 3, and the hybrids' shared parts), in one readable place.
//!
//! Per layer: RMS norm → Q/K/V projections (+ bias for qwen2 and GLM, per-head RMS norm for qwen3
//! and Gemma) → RoPE (Gemma's sliding layers with their own base) → keys and values into the KV
//! store → grouped-query attention (over the last window only, in sliding layers) → output
//! projection (+ Gemma's post-norm) → residual → RMS norm → SwiGLU or GeGLU feed-forward (dense,
//! or routed experts; + Gemma's post-norm) → residual. All tokens of all chunks share each
//! matrix product.

use crate::attention::{attend, Heads, KvRotation, QueryRow};
use crate::config::ModelConfig;
use crate::delta_net::SeqSpan;
use crate::ffn::{ffn, moe, FfnScratch};
use crate::kv_store::KvStore;
use crate::weights::{Attention, Ffn, GqaWeights, LayerWeights, MlaWeights, Weights};
use crate::{Logits, SeqChunk};
use frugal_kernels::matmul::{matmul_quantized, quantize_activations, QuantizedActivations};
use frugal_kernels::ops::{add, rms_norm, rms_norm_inplace};
use frugal_kernels::parallel::par_chunks_mut;
use frugal_kernels::storage::zeros;
use frugal_kernels::{matmul, Matrix, ThreadPool};

/// What a forward pass returns.
pub(crate) struct Output {
    /// The requested logits, `[rows][n_vocab]`, in chunk order.
    pub logits: Vec<f32>,
    /// Every token's hidden state after the final norm, `[n][n_embd]`, when asked for (the
    /// multi-token-prediction head's input); else empty.
    pub hidden: Vec<f32>,
}

pub(crate) fn forward(
    c: &ModelConfig,
    w: &Weights,
    pool: &ThreadPool,
    kv: &mut KvStore,
    chunks: &[SeqChunk<'_>],
    hidden: bool,
) -> Output {
    let batch = Batch::new(c, chunks);
    let n = batch.rows.len();
    if n == 0 {
        return Output {
            logits: Vec::new(),
            hidden: Vec::new(),
        };
    }
    let mut x = embed(c, &w.token_embd, chunks.iter().flat_map(|ch| ch.tokens));
    let mut scratch = Scratch::new(n, c.n_embd);
    for (il, lw) in w.layers.iter().enumerate() {
        layer(c, lw, pool, kv, il, &batch, &mut x, &mut scratch);
    }
    let head = Head {
        norm: &w.output_norm,
        output: w.output(),
    };
    let wanted = wanted_rows(chunks);
    match hidden {
        false => Output {
            logits: head.logits(c, pool, &x, &wanted),
            hidden: Vec::new(),
        },
        true => {
            let all: Vec<usize> = (0..n).collect();
            let h = head.norm_rows(c, pool, &x, &all);
            Output {
                logits: head.project(c, pool, &gather(&h, &wanted, c.n_embd)),
                hidden: h,
            }
        }
    }
}

/// The tokens of a batch of chunks: where each one's keys and values live, in the layers that
/// attend to the whole context and in the sliding-window ones, and each chunk's span.
pub(crate) struct Batch<'a> {
    rows: Vec<QueryRow<'a>>,
    window_rows: Vec<QueryRow<'a>>,
    spans: Vec<SeqSpan>,
}

impl<'a> Batch<'a> {
    pub(crate) fn new(c: &ModelConfig, chunks: &[SeqChunk<'a>]) -> Batch<'a> {
        Batch {
            rows: query_rows(chunks, |ch| ch.blocks),
            window_rows: match c.sliding {
                Some(_) => query_rows(chunks, |ch| match ch.window_blocks.is_empty() {
                    true => ch.blocks,
                    false => ch.window_blocks,
                }),
                None => Vec::new(),
            },
            spans: seq_spans(chunks),
        }
    }
}

/// Buffers reused by every layer.
pub(crate) struct Scratch {
    xn: Vec<f32>,
    proj: Vec<f32>,
    ffn: FfnScratch,
}

impl Scratch {
    pub(crate) fn new(n: usize, n_embd: usize) -> Scratch {
        Scratch {
            xn: zeros(n * n_embd),
            proj: zeros(n * n_embd),
            ffn: FfnScratch::default(),
        }
    }
}

/// One decoder layer on the residual stream `x` (`[n][n_embd]`), its keys and values (or
/// recurrent state) at layer `il` of `kv`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn layer(
    c: &ModelConfig,
    lw: &LayerWeights,
    pool: &ThreadPool,
    kv: &mut KvStore,
    il: usize,
    batch: &Batch<'_>,
    x: &mut [f32],
    s: &mut Scratch,
) {
    let (e, n) = (c.n_embd, batch.rows.len());
    norm_rows(pool, x, &lw.attn_norm, c.rms_eps, e, &mut s.xn);
    let layer_rows = match c.is_sliding(il) {
        true => &batch.window_rows,
        false => &batch.rows,
    };
    let att = match &lw.attn {
        Attention::Gqa(a) => gqa(c, a, pool, kv, il, layer_rows, &s.xn),
        Attention::Mla(a) => mla(c, a, pool, kv, il, &batch.rows, &s.xn),
        Attention::DeltaNet(d) => crate::delta_net::layer(c, d, pool, kv, il, &batch.spans, &s.xn),
    };
    matmul(pool, &lw.wo, &att, n, &mut s.proj);
    add_bias(&mut s.proj, lw.wo_bias.as_deref());
    post_norm(
        pool,
        lw.attn_post_norm.as_deref(),
        c.rms_eps,
        e,
        &mut s.proj,
    );
    par_add(pool, x, &s.proj);

    norm_rows(pool, x, &lw.ffn_norm, c.rms_eps, e, &mut s.xn);
    match &lw.ffn {
        Ffn::Dense(f) => ffn(pool, f, c.ffn_gelu(), &s.xn, n, &mut s.proj, &mut s.ffn),
        Ffn::Moe(m) => moe(pool, c, m, &s.xn, n, &mut s.proj, &mut s.ffn),
    }
    post_norm(pool, lw.ffn_post_norm.as_deref(), c.rms_eps, e, &mut s.proj);
    par_add(pool, x, &s.proj);
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

/// The tokens' embeddings (scaled, for Gemma), `[n][n_embd]`.
pub(crate) fn embed<'t>(
    c: &ModelConfig,
    table: &Matrix,
    tokens: impl Iterator<Item = &'t u32> + Clone,
) -> Vec<f32> {
    let e = c.n_embd;
    let mut x = zeros(tokens.clone().count() * e);
    for (row, &t) in x.chunks_exact_mut(e).zip(tokens) {
        table.dequantize_row(t as usize, row);
        if c.embd_scale != 1.0 {
            row.iter_mut().for_each(|v| *v *= c.embd_scale);
        }
    }
    x
}

/// The rows of a batch whose logits its chunks asked for.
pub(crate) fn wanted_rows(chunks: &[SeqChunk<'_>]) -> Vec<usize> {
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
    wanted
}

/// A final norm and vocabulary projection.
pub(crate) struct Head<'w> {
    pub norm: &'w [f32],
    pub output: &'w Matrix,
}

impl Head<'_> {
    /// Logits of the rows `wanted` of the residual stream `x`.
    pub(crate) fn logits(
        &self,
        c: &ModelConfig,
        pool: &ThreadPool,
        x: &[f32],
        wanted: &[usize],
    ) -> Vec<f32> {
        self.project(c, pool, &self.norm_rows(c, pool, x, wanted))
    }

    /// The rows `wanted` of `x`, normalized, `[wanted][n_embd]`.
    pub(crate) fn norm_rows(
        &self,
        c: &ModelConfig,
        pool: &ThreadPool,
        x: &[f32],
        wanted: &[usize],
    ) -> Vec<f32> {
        let e = c.n_embd;
        let mut xs = zeros(wanted.len() * e);
        par_chunks_mut(pool, &mut xs, e, &|j, out| {
            let i = wanted[j];
            rms_norm(&x[i * e..(i + 1) * e], self.norm, c.rms_eps, out)
        });
        xs
    }

    /// Logits of normalized rows `h`, `[rows][n_vocab]`.
    pub(crate) fn project(&self, c: &ModelConfig, pool: &ThreadPool, h: &[f32]) -> Vec<f32> {
        let n = h.len() / c.n_embd;
        let mut logits = zeros(n * c.n_vocab);
        if n > 0 {
            matmul(pool, self.output, h, n, &mut logits);
        }
        logits
    }
}

/// The rows `wanted` of `x` (`width` wide), in that order.
pub(crate) fn gather(x: &[f32], wanted: &[usize], width: usize) -> Vec<f32> {
    wanted
        .iter()
        .flat_map(|&i| &x[i * width..(i + 1) * width])
        .copied()
        .collect()
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
    let rot = KvRotation::new(kv.kv_type(), hd, Some(hd));
    rot.keys(&mut q);
    rot.keys(&mut k);
    rot.values(&mut v);
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
    rot.values(&mut att);
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
    let rot = KvRotation::new(kv.kv_type(), kdim, None);

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
        rot.keys(key);
        kv.write(il, r.blocks, r.pos, key, &[]);
    }
    rot.keys(&mut qfull);
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
    rot.values(&mut latent);

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
