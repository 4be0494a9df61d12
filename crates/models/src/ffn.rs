//! The feed-forward half of a layer: a dense SwiGLU/GeGLU block, or a mixture of experts (the
//! router's choice per token, the chosen experts' blocks, an optional shared expert).
//!
//! Every block of one layer runs through the same two parallel regions (`ffn_blocks`): all
//! gate and up products, then all down products. A MoE decode step is a dozen small matrices,
//! and one region for all of them streams their weights back to back instead of starting and
//! joining the threads around each.

use crate::config::{Gating, ModelConfig, MoeConfig, SharedGate};
use crate::transformer::SharedInput;
use crate::weights::{FfnWeights, MoeWeights};
use frugal_kernels::activation::{geglu, softmax, swiglu};
use frugal_kernels::matmul::{matmul_batch, Product};
use frugal_kernels::ops::{add, geglu_fp16, silu};
use frugal_kernels::parallel::par_chunks_mut;
use frugal_kernels::storage::zeros;
use frugal_kernels::{matmul, GgmlType, ThreadPool};

/// One feed-forward block applied to `n` rows of `x`, its result in `out` (`n` rows of the
/// model's width).
pub(crate) struct Block<'a> {
    pub w: &'a FfnWeights,
    pub x: &'a [f32],
    pub n: usize,
    pub out: &'a mut [f32],
}

/// `out = down(act(gate(x)) * up(x))` for every block, `act` SiLU or (`gelu`) GELU; `scratch`
/// holds the gate and up rows of all blocks.
pub(crate) fn ffn_blocks(
    pool: &ThreadPool,
    gelu: bool,
    blocks: &mut [Block<'_>],
    scratch: &mut Vec<f32>,
) {
    let sizes: Vec<usize> = blocks.iter().map(|b| b.n * b.w.gate.rows()).collect();
    scratch.resize(2 * sizes.iter().sum::<usize>(), 0.0);
    let (mut gates, mut ups) = (Vec::new(), Vec::new());
    let mut rest = scratch.as_mut_slice();
    for &size in &sizes {
        let (g, r) = rest.split_at_mut(size);
        let (u, r) = r.split_at_mut(size);
        gates.push(g);
        ups.push(u);
        rest = r;
    }
    let mut inputs: Vec<SharedInput> = blocks.iter().map(|b| SharedInput::new(b.x, b.n)).collect();
    for (input, b) in inputs.iter_mut().zip(blocks.iter()) {
        input.prepare(pool, &b.w.gate);
        input.prepare(pool, &b.w.up);
    }
    let mut products = Vec::with_capacity(2 * blocks.len());
    for (((input, b), g), u) in inputs
        .iter()
        .zip(blocks.iter())
        .zip(&mut gates)
        .zip(&mut ups)
    {
        products.push(Product {
            w: &b.w.gate,
            qa: input.get(&b.w.gate),
            y: g,
        });
        products.push(Product {
            w: &b.w.up,
            qa: input.get(&b.w.up),
            y: u,
        });
    }
    matmul_batch(pool, &mut products);
    drop(products);
    let mut downs: Vec<SharedInput> = Vec::with_capacity(blocks.len());
    for ((b, g), u) in blocks.iter().zip(&mut gates).zip(&ups) {
        let ff = b.w.gate.rows();
        // GELU in the precision of the weights: f32 for f32 matrices (the exact path), ggml's
        // fp16 table for quantized ones (whose 8-bit activations dwarf its error), as llama.cpp.
        let act = match (gelu, b.w.gate.ty()) {
            (false, _) => swiglu,
            (true, GgmlType::F32) => geglu,
            (true, _) => geglu_fp16,
        };
        par_chunks_mut(pool, g, ff, &|t, g| act(g, &u[t * ff..(t + 1) * ff]));
        let mut down = SharedInput::new(g, b.n);
        down.prepare(pool, &b.w.down);
        downs.push(down);
    }
    let mut products: Vec<Product> = blocks
        .iter_mut()
        .zip(&downs)
        .map(|(b, d)| Product {
            w: &b.w.down,
            qa: d.get(&b.w.down),
            y: &mut *b.out,
        })
        .collect();
    matmul_batch(pool, &mut products);
}

/// Working memory of the feed-forward blocks, kept from layer to layer and step to step: the
/// allocator returns large freed buffers to the OS, and fresh pages cost a fault each.
#[derive(Default)]
pub(crate) struct FfnScratch {
    /// The gate and up rows of every block (`ffn_blocks`).
    gate_up: Vec<f32>,
    /// The routed experts' input rows, expert after expert, and their outputs.
    xs: Vec<f32>,
    ys: Vec<f32>,
    /// The shared expert's outputs.
    shared: Vec<f32>,
}

/// A dense feed-forward block on `n` rows of `x`: `out = down(act(gate(x)) * up(x))`.
pub(crate) fn ffn(
    pool: &ThreadPool,
    w: &FfnWeights,
    gelu: bool,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    scratch: &mut FfnScratch,
) {
    let block = Block { w, x, n, out };
    ffn_blocks(pool, gelu, &mut [block], &mut scratch.gate_up);
}

/// Mixture of experts: each token goes through its top-k experts (see `route`), weighted; the
/// tokens routed to one expert go through it together, so each expert's weights are read once,
/// and all chosen experts (and the shared one) run in the same parallel regions.
pub(crate) fn moe(
    pool: &ThreadPool,
    c: &ModelConfig,
    m: &MoeWeights,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    scratch: &mut FfnScratch,
) {
    let cfg = c.moe.as_ref().expect("MoE weights imply a MoE config");
    let (e, k, n_exp) = (c.n_embd, cfg.n_expert_used, cfg.n_expert);
    let mut probs = zeros(n * n_exp);
    matmul(pool, &m.router, x, n, &mut probs);
    let chosen = route(cfg, m.probs_bias.as_deref(), &mut probs, n);
    // The used experts with their number of rows; the rows (token, slot) expert after expert,
    // and where each slot's row is.
    let mut used: Vec<(usize, usize)> = Vec::new();
    let mut pos = vec![0usize; n * k];
    scratch.xs.clear();
    for ei in 0..n_exp {
        let first = scratch.xs.len() / e;
        for r in (0..n * k).filter(|&r| chosen[r].0 == ei) {
            pos[r] = scratch.xs.len() / e;
            let t = r / k;
            scratch.xs.extend_from_slice(&x[t * e..(t + 1) * e]);
        }
        let rows = scratch.xs.len() / e - first;
        if rows > 0 {
            used.push((ei, rows));
        }
    }
    scratch.ys.resize(scratch.xs.len(), 0.0);
    scratch
        .shared
        .resize(if m.shared.is_some() { n * e } else { 0 }, 0.0);
    let mut blocks: Vec<Block> = Vec::with_capacity(used.len() + 1);
    let (mut xs, mut ys) = (scratch.xs.as_slice(), scratch.ys.as_mut_slice());
    for &(ei, rows) in &used {
        let (bx, rx) = xs.split_at(rows * e);
        let (by, ry) = std::mem::take(&mut ys).split_at_mut(rows * e);
        blocks.push(Block {
            w: &m.experts[ei],
            x: bx,
            n: rows,
            out: by,
        });
        (xs, ys) = (rx, ry);
    }
    if let Some((_, shared)) = &m.shared {
        blocks.push(Block {
            w: shared,
            x,
            n,
            out: &mut scratch.shared,
        });
    }
    ffn_blocks(pool, false, &mut blocks, &mut scratch.gate_up);
    drop(blocks);
    // Expert outputs weighted and summed in slot order, like llama.cpp.
    let ys = &scratch.ys;
    for t in 0..n {
        let o = &mut out[t * e..(t + 1) * e];
        for s in 0..k {
            let r = t * k + s;
            let (y, w) = (&ys[pos[r] * e..(pos[r] + 1) * e], chosen[r].1);
            if s == 0 {
                o.iter_mut().zip(y).for_each(|(o, y)| *o = y * w);
            } else {
                o.iter_mut().zip(y).for_each(|(o, y)| *o += y * w);
            }
        }
    }
    if let Some((shared_gate, _)) = &m.shared {
        let mut g = zeros(n);
        if let Some(sg) = shared_gate {
            matmul(pool, sg, x, n, &mut g);
        }
        for t in 0..n {
            let s = match cfg.shared_gate {
                SharedGate::None => 1.0,
                // llama.cpp computes qwen2moe's sigmoid gate as silu(g) / g.
                SharedGate::SiluRatio if g[t] == 0.0 => 0.5,
                SharedGate::SiluRatio => silu(g[t]) / g[t],
                SharedGate::Sigmoid => 1.0 / (1.0 + (-g[t]).exp()),
            };
            let y = &scratch.shared[t * e..(t + 1) * e];
            out[t * e..(t + 1) * e]
                .iter_mut()
                .zip(y)
                .for_each(|(o, y)| *o += y * s);
        }
    }
}

/// Picks each token's experts from its router logits (overwritten with probabilities): softmax
/// or sigmoid scores, an optional selection bias, optional group-limited selection, top-k, then
/// the weights (renormalized and scaled as configured). Returns `n * k` (expert, weight) pairs,
/// best first.
fn route(cfg: &MoeConfig, bias: Option<&[f32]>, probs: &mut [f32], n: usize) -> Vec<(usize, f32)> {
    let (k, n_exp) = (cfg.n_expert_used, cfg.n_expert);
    let mut chosen = vec![(0usize, 0.0f32); n * k];
    let mut score = zeros(n_exp);
    for (t, p) in probs.chunks_exact_mut(n_exp).enumerate() {
        match cfg.gating {
            Gating::Softmax => softmax(p, 1.0),
            Gating::Sigmoid => p.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp())),
        }
        score.copy_from_slice(p);
        if let Some(b) = bias {
            add(&mut score, b);
        }
        if cfg.n_group > 1 {
            // Keep the n_group_used groups whose two best scores sum highest.
            let per = n_exp / cfg.n_group;
            let mut groups: Vec<(usize, f32)> = score
                .chunks_exact(per)
                .map(|g| {
                    let mut s: Vec<f32> = g.to_vec();
                    s.sort_by(|a, b| b.total_cmp(a));
                    s.iter().take(2).sum::<f32>()
                })
                .enumerate()
                .collect();
            groups.sort_by(|a, b| b.1.total_cmp(&a.1));
            for &(g, _) in &groups[cfg.n_group_used..] {
                score[g * per..(g + 1) * per].fill(f32::NEG_INFINITY);
            }
        }
        let mut order: Vec<usize> = (0..n_exp).collect();
        order.sort_by(|&a, &b| score[b].total_cmp(&score[a]));
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
    chosen
}
