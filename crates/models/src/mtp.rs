//! The multi-token-prediction head (the `nextn` layer of GLM-4.5, Qwen3.5 and DeepSeek-style
//! files): from the trunk's hidden state at position `p - 1` (after its final norm) and the
//! embedding of token `p`, one decoder layer of the model's own kind predicts token `p + 1`.
//! Speculative decoding runs it as a draft, on the trunk's hidden states to fill its keys and
//! values, and on its own output to chain guesses.
//!
//! Per token: `x = eh_proj · [enorm(emb(token)) ; hnorm(h)]` (the embedding half first) → the
//! decoder layer (keys and values in a one-layer store, at the token's position) → `g =
//! norm(x)` (the head's own final norm, else the trunk's) → `logits = output · g`; `g` is the
//! hidden state the next chained guess starts from.

use crate::config::ModelConfig;
use crate::kv_store::KvStore;
use crate::transformer::{embed, layer, wanted_rows, Batch, Head, Output, Scratch};
use crate::weights::{NextnLayer, Weights};
use crate::SeqChunk;
use frugal_kernels::ops::rms_norm;
use frugal_kernels::parallel::par_chunks_mut;
use frugal_kernels::storage::zeros;
use frugal_kernels::{matmul, ThreadPool};

/// The configuration the head runs under: the model's, with one full-attention layer (its keys
/// and values at layer 0 of its own store; no recurrent state, no sliding window).
pub(crate) fn config(c: &ModelConfig) -> ModelConfig {
    ModelConfig {
        n_layer: 1,
        n_nextn: 0,
        delta_net: None,
        sliding: None,
        ..c.clone()
    }
}

/// Runs the head over `chunks` (under [`config`]), `h` holding one trunk hidden state per token:
/// the one before it. Returns the requested logits and, for the same rows, `g`.
pub(crate) fn forward(
    c: &ModelConfig,
    w: &Weights,
    m: &NextnLayer,
    pool: &ThreadPool,
    kv: &mut KvStore,
    chunks: &[SeqChunk<'_>],
    h: &[f32],
) -> Output {
    let e = c.n_embd;
    let batch = Batch::new(c, chunks);
    let tokens = chunks.iter().flat_map(|ch| ch.tokens);
    let n = tokens.clone().count();
    assert_eq!(h.len(), n * e, "one hidden state per token");
    let emb = embed(c, m.embed_tokens.as_ref().unwrap_or(&w.token_embd), tokens);
    let mut joined = zeros(n * 2 * e);
    par_chunks_mut(pool, &mut joined, 2 * e, &|t, row| {
        let (left, right) = row.split_at_mut(e);
        rms_norm(&emb[t * e..(t + 1) * e], &m.enorm, c.rms_eps, left);
        rms_norm(&h[t * e..(t + 1) * e], &m.hnorm, c.rms_eps, right);
    });
    let mut x = zeros(n * e);
    matmul(pool, &m.eh_proj, &joined, n, &mut x);
    layer(
        c,
        &m.layer,
        pool,
        kv,
        0,
        &batch,
        &mut x,
        &mut Scratch::new(n, e),
    );
    let head = Head {
        norm: m.shared_head_norm.as_deref().unwrap_or(&w.output_norm),
        output: m.shared_head_head.as_ref().unwrap_or(w.output()),
    };
    let g = head.norm_rows(c, pool, &x, &wanted_rows(chunks));
    Output {
        logits: head.project(c, pool, &g),
        hidden: g,
    }
}
