//! The hybrid models' linear-attention layer, Gated DeltaNet, over a batch of sequence chunks
//! (llama.cpp's `qwen35` / `qwen3next` graphs, `build_layer_attn_linear`):
//!
//! ```text
//! qkv = W_qkv·x, z = W_z·x, β = σ(W_β·x), g = softplus(W_α·x + dt_bias) · a
//! q, k, v = silu(causal_conv(qkv))          (per sequence, with its convolution history)
//! q, k ← l2_norm(q), l2_norm(k)             (per head)
//! o = delta_rule(q, k, v, g, β)             (per sequence and value head, with its state)
//! out = rms_norm(o, w_norm) · silu(z)       (per value head; W_out is applied by the caller)
//! ```
//!
//! The projections run on every token of the batch at once; the convolution and the recurrence
//! per sequence, the recurrence in parallel over (sequence, value head), in its chunked form for
//! the whole [`WINDOW`]s of prompts and token by token for the rest (decodes).

use crate::config::{DeltaNetConfig, ModelConfig};
use crate::kv_store::KvStore;
use crate::transformer::SharedInput;
use crate::weights::{BetaAlpha, DeltaNetWeights};
use frugal_kernels::activation::swiglu;
use frugal_kernels::delta_net::{self, causal_conv, l2_norm, softplus, DeltaHeads, Tokens};
use frugal_kernels::ops::rms_norm_inplace;
use frugal_kernels::parallel::par_chunks_mut;
use frugal_kernels::storage::zeros;
use frugal_kernels::ThreadPool;

/// One sequence's tokens in the batch: rows `start..start + len`, at positions `pos..`, state
/// in slot `slot`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SeqSpan {
    pub start: usize,
    pub len: usize,
    pub pos: usize,
    pub slot: u32,
}

/// The chunked form's windows: positions `[k·WINDOW, (k+1)·WINDOW)`. A window that a chunk holds
/// whole goes through the chunked form, the rest token by token, so a sequence's numbers depend
/// only on where its chunks are cut, and the scheduler cuts prompts at window boundaries (see
/// `Model::state_window`): the same tokens whatever the batch.
pub(crate) const WINDOW: usize = delta_net::CHUNK;

/// Runs layer `il` on the normalized rows `xn` (`[n][n_embd]`) of the batch's sequences `spans`,
/// reading and updating their states in `kv`. Returns `[n][value_dim]`, before `W_out`.
pub(crate) fn layer(
    c: &ModelConfig,
    w: &DeltaNetWeights,
    pool: &ThreadPool,
    kv: &mut KvStore,
    il: usize,
    spans: &[SeqSpan],
    xn: &[f32],
) -> Vec<f32> {
    let d = c
        .delta_net
        .as_ref()
        .expect("DeltaNet weights imply its config");
    let mut p = project(d, w, pool, xn, xn.len() / c.n_embd);
    let (states, state_len) = kv.states_mut(il);
    let mut slots: Vec<Option<&mut [f32]>> = states.chunks_exact_mut(state_len).map(Some).collect();
    let mut seq_states: Vec<&mut [f32]> = spans
        .iter()
        .map(|s| slots[s.slot as usize].take().expect("slots are distinct"))
        .collect();
    let qkv = convolve(c, d, w, pool, spans, &mut seq_states, &p.qkv);
    let mut o = recurrence(pool, d, spans, &mut seq_states, &qkv, &p.g, &p.beta);
    gated_norm(pool, d, &w.norm, c.rms_eps, &mut o, &mut p.z);
    p.z
}

/// What the input projections give, per token: the channels before the convolution, the output
/// gate, and each value head's update strength and log-decay.
struct Projections {
    qkv: Vec<f32>,
    z: Vec<f32>,
    beta: Vec<f32>,
    g: Vec<f32>,
}

/// The input projections of `n` tokens at once, and the gates made from them.
fn project(
    d: &DeltaNetConfig,
    w: &DeltaNetWeights,
    pool: &ThreadPool,
    xn: &[f32],
    n: usize,
) -> Projections {
    let nv = d.n_v_heads;
    let mut p = Projections {
        qkv: zeros(n * d.conv_dim()),
        z: zeros(n * d.value_dim()),
        beta: zeros(n * nv),
        g: zeros(n * nv),
    };
    let mut input = SharedInput::new(xn, n);
    input.matmul(pool, &w.qkv, &mut p.qkv);
    input.matmul(pool, &w.z, &mut p.z);
    match &w.beta_alpha {
        BetaAlpha::Split { beta, alpha } => {
            input.matmul(pool, beta, &mut p.beta);
            input.matmul(pool, alpha, &mut p.g);
        }
        BetaAlpha::Fused(m) => {
            let mut ba = zeros(n * 2 * nv);
            input.matmul(pool, m, &mut ba);
            split_fused_beta_alpha(d, &ba, &mut p.beta, &mut p.g);
        }
    }
    for (b, a) in p.beta.chunks_exact_mut(nv).zip(p.g.chunks_exact_mut(nv)) {
        gates(w, b, a);
    }
    p
}

/// The causal convolution of each sequence's channels (with its history, in the tail of its
/// state), then SiLU, and the L2 norm of every query and key head.
fn convolve(
    c: &ModelConfig,
    d: &DeltaNetConfig,
    w: &DeltaNetWeights,
    pool: &ThreadPool,
    spans: &[SeqSpan],
    states: &mut [&mut [f32]],
    qkv: &[f32],
) -> Vec<f32> {
    let conv_dim = d.conv_dim();
    let mut out = zeros(qkv.len());
    for (s, state) in spans.iter().zip(states.iter_mut()) {
        let rows = s.start * conv_dim..(s.start + s.len) * conv_dim;
        let history = &mut state[d.ssm_len()..];
        let (x, o) = (&qkv[rows.clone()], &mut out[rows]);
        causal_conv(conv_dim, d.conv_kernel, s.len, x, &w.conv, history, o);
    }
    let (hd, kd) = (d.head_dim, d.key_dim());
    // silu(x) as the SIMD SwiGLU computes it: silu(x) · 1.
    let ones = vec![1.0f32; conv_dim];
    par_chunks_mut(pool, &mut out, conv_dim, &|_, row| {
        swiglu(row, &ones);
        for head in row[..2 * kd].chunks_exact_mut(hd) {
            l2_norm(head, c.rms_eps);
        }
    });
    out
}

/// `β ← σ(β)`, `α ← softplus(α + dt_bias) · a` (the log of the decay), for one token's heads.
fn gates(w: &DeltaNetWeights, beta: &mut [f32], alpha: &mut [f32]) {
    for b in beta.iter_mut() {
        *b = 1.0 / (1.0 + (-*b).exp());
    }
    for ((x, &bias), &a) in alpha.iter_mut().zip(&w.dt_bias).zip(&w.a) {
        *x = softplus(*x + bias) * a;
    }
}

/// Qwen3-Next's fused projection: per key head, its value heads' betas then their alphas.
fn split_fused_beta_alpha(d: &DeltaNetConfig, ba: &[f32], beta: &mut [f32], alpha: &mut [f32]) {
    let (nv, r) = (d.n_v_heads, d.n_v_heads / d.n_k_heads);
    for ((row, b), a) in ba
        .chunks_exact(2 * nv)
        .zip(beta.chunks_exact_mut(nv))
        .zip(alpha.chunks_exact_mut(nv))
    {
        for (kh, group) in row.chunks_exact(2 * r).enumerate() {
            b[kh * r..(kh + 1) * r].copy_from_slice(&group[..r]);
            a[kh * r..(kh + 1) * r].copy_from_slice(&group[r..]);
        }
    }
}

/// One (sequence, value head) of the recurrence: its inputs gathered into rows of their own,
/// its part of the state, and its output rows.
struct HeadWork<'a> {
    span: SeqSpan,
    head: usize,
    state: &'a mut [f32],
    out: Vec<f32>,
}

/// The delta rule for every sequence and value head, in parallel; returns `[n][value_dim]`.
fn recurrence(
    pool: &ThreadPool,
    d: &DeltaNetConfig,
    spans: &[SeqSpan],
    states: &mut [&mut [f32]],
    qkv: &[f32],
    g: &[f32],
    beta: &[f32],
) -> Vec<f32> {
    let (hd, nv, kd) = (d.head_dim, d.n_v_heads, d.key_dim());
    let conv_dim = d.conv_dim();
    let mut work: Vec<HeadWork> = Vec::with_capacity(spans.len() * nv);
    for (span, state) in spans.iter().zip(states.iter_mut()) {
        let heads = state[..d.ssm_len()].chunks_exact_mut(hd * hd);
        for (head, state) in heads.enumerate() {
            work.push(HeadWork {
                span: *span,
                head,
                state,
                out: Vec::new(),
            });
        }
    }
    // The query/key head a value head reads.
    let k_head = |h: usize| match d.grouped_heads {
        true => h / (nv / d.n_k_heads),
        false => h % d.n_k_heads,
    };
    let one = DeltaHeads {
        v_heads: 1,
        k_heads: 1,
        dim: hd,
    };
    par_chunks_mut(pool, &mut work, 1, &|_, item| {
        let wk = &mut item[0];
        let (s, h, kh) = (wk.span, wk.head, k_head(wk.head));
        let rows = s.start..s.start + s.len;
        let gather = |off: usize| -> Vec<f32> {
            rows.clone()
                .flat_map(|t| &qkv[t * conv_dim + off..][..hd])
                .copied()
                .collect()
        };
        let (q, k, v) = (
            gather(kh * hd),
            gather(kd + kh * hd),
            gather(2 * kd + h * hd),
        );
        let gh: Vec<f32> = rows.clone().map(|t| g[t * nv + h]).collect();
        let bh: Vec<f32> = rows.clone().map(|t| beta[t * nv + h]).collect();
        let x = Tokens {
            n: s.len,
            q: &q,
            k: &k,
            v: &v,
            g: &gh,
            beta: &bh,
        };
        wk.out = vec![0.0; s.len * hd];
        run_windows(one, s.pos, &x, wk.state, &mut wk.out);
    });
    let n: usize = spans.iter().map(|s| s.len).sum();
    let mut o = zeros(n * d.value_dim());
    for wk in &work {
        for (i, row) in wk.out.chunks_exact(hd).enumerate() {
            let t = wk.span.start + i;
            o[(t * nv + wk.head) * hd..][..hd].copy_from_slice(row);
        }
    }
    o
}

/// One head's tokens from position `pos`: the whole windows inside them in the chunked form, the
/// partial ones at either end token by token.
fn run_windows(one: DeltaHeads, pos: usize, x: &Tokens, state: &mut [f32], out: &mut [f32]) {
    let isa = frugal_kernels::Isa::best();
    let lead = ((WINDOW - pos % WINDOW) % WINDOW).min(x.n);
    let whole = (x.n - lead) / WINDOW * WINDOW;
    for (range, chunked) in [
        (0..lead, false),
        (lead..lead + whole, true),
        (lead + whole..x.n, false),
    ] {
        if range.is_empty() {
            continue;
        }
        let d = one.dim;
        let part = Tokens {
            n: range.len(),
            q: &x.q[range.start * d..range.end * d],
            k: &x.k[range.start * d..range.end * d],
            v: &x.v[range.start * d..range.end * d],
            g: &x.g[range.clone()],
            beta: &x.beta[range.clone()],
        };
        let o = &mut out[range.start * d..range.end * d];
        match chunked {
            true => delta_net::gated_delta_net_chunked_at(isa, one, WINDOW, &part, state, o),
            false => delta_net::gated_delta_net_at(isa, one, &part, state, o),
        }
    }
}

/// `z ← silu(z) · rms_norm(o, w)` per value head (`o` is normalized in place): the gated
/// output, `rms_norm(o, w) · silu(z)` in ggml's terms, the same product.
fn gated_norm(
    pool: &ThreadPool,
    d: &DeltaNetConfig,
    w: &[f32],
    eps: f32,
    o: &mut [f32],
    z: &mut [f32],
) {
    let hd = d.head_dim;
    par_chunks_mut(pool, o, hd, &|_, oh| rms_norm_inplace(oh, w, eps));
    let o: &[f32] = o;
    par_chunks_mut(pool, z, hd, &|i, zh| swiglu(zh, &o[i * hd..(i + 1) * hd]));
}
