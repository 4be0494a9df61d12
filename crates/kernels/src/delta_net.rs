//! Gated DeltaNet, the linear attention of Qwen3.5 and Qwen3-Next, in its plain recurrent form:
//! the scalar reference ([`gated_delta_net`]) that the chunked (prompt) and SIMD forms are
//! checked against, and the SIMD recurrence ([`gated_delta_net_at`]), equal to it bit for bit.
//!
//! Per value head, with a `dim × dim` state `S` carried from token to token:
//!
//! ```text
//! S ← exp(g) · S            (scalar gate per head and token)
//! δ = (v − Sᵀk) · β
//! S ← S + k δᵀ
//! o = Sᵀq / √dim
//! ```
//!
//! A Qwen3.5 linear-attention layer (llama.cpp's `qwen35` graph) around it: `qkv = W_qkv·x`,
//! `z = W_gate·x`; `β = σ(W_β·x)`; `g = softplus(W_α·x + dt_bias) · ssm_a` (the GGUF's `ssm_a` is
//! `-exp(A_log)`); `qkv ← silu(causal_conv(qkv))` split into q, k, v; q and k through
//! [`l2_norm`] (eps = the RMS-norm eps); the recurrence; `rms_norm(o, ssm_norm) · silu(z)` per
//! head; `W_out`.
//!
//! The state is `state[h][i][j]` = `S[i][j]`, row-major. Each token makes two passes over it: decay
//! it and form `Sᵀk`, then add `k δᵀ` and form `Sᵀq`; both sums run down the rows `i` for every
//! column `j` at once, so SIMD lanes take columns and each lane's fused multiply-adds happen in the
//! reference's order.

use crate::simd::Passes;

/// Head counts and width of one Gated DeltaNet layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaHeads {
    /// Value heads (the state has one `dim × dim` matrix per value head).
    pub v_heads: usize,
    /// Query/key heads; value head `h` reads query/key head `h % k_heads` (ggml's tiled
    /// broadcast). Divides `v_heads`.
    pub k_heads: usize,
    /// Width of every head (ggml requires the key and value widths to be equal).
    pub dim: usize,
}

impl DeltaHeads {
    /// Values in one sequence's state.
    pub fn state_len(&self) -> usize {
        self.v_heads * self.dim * self.dim
    }
}

/// `n` tokens of one sequence: `q`, `k`: `[n][k_heads][dim]`; `v`: `[n][v_heads][dim]`; `g` (log
/// of the decay) and `beta`: `[n][v_heads]`.
#[derive(Clone, Copy, Debug)]
pub struct Tokens<'a> {
    pub n: usize,
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub g: &'a [f32],
    pub beta: &'a [f32],
}

impl Tokens<'_> {
    /// The query row value head `h` reads at token `t`.
    fn q_row(&self, heads: DeltaHeads, t: usize, h: usize) -> &[f32] {
        let kh = h % heads.k_heads;
        &self.q[(t * heads.k_heads + kh) * heads.dim..][..heads.dim]
    }

    /// The key row value head `h` reads at token `t`.
    fn k_row(&self, heads: DeltaHeads, t: usize, h: usize) -> &[f32] {
        let kh = h % heads.k_heads;
        &self.k[(t * heads.k_heads + kh) * heads.dim..][..heads.dim]
    }

    /// The value row of head `h` at token `t`.
    fn v_row(&self, heads: DeltaHeads, t: usize, h: usize) -> &[f32] {
        &self.v[(t * heads.v_heads + h) * heads.dim..][..heads.dim]
    }

    /// The gate (log decay) and `β` of head `h` at token `t`.
    fn gate_beta(&self, heads: DeltaHeads, t: usize, h: usize) -> (f32, f32) {
        let i = t * heads.v_heads + h;
        (self.g[i], self.beta[i])
    }
}

/// Runs the tokens `x` of one sequence through the recurrence, in order, updating `state`
/// (`[v_heads][dim][dim]`, module docs) in place and writing `out` (`[n][v_heads][dim]`).
///
/// # Panics
/// If a slice length does not match the shapes, or `k_heads` does not divide `v_heads`.
pub fn gated_delta_net(heads: DeltaHeads, x: &Tokens, state: &mut [f32], out: &mut [f32]) {
    check(heads, x, state, out);
    run(SCALAR, heads, x, state, out)
}

/// [`gated_delta_net`] with the kernels of `isa` or the best level below it: the same bits.
pub fn gated_delta_net_at(
    isa: crate::Isa,
    heads: DeltaHeads,
    x: &Tokens,
    state: &mut [f32],
    out: &mut [f32],
) {
    check(heads, x, state, out);
    let passes = crate::simd::delta_net_passes(isa.min(crate::Isa::best_available()));
    let passes = passes.unwrap_or(SCALAR);
    run(passes, heads, x, state, out)
}

/// The scalar passes: the reference the SIMD ones equal bit for bit.
const SCALAR: Passes = Passes {
    decay_project,
    update_read,
};

fn run(p: Passes, heads: DeltaHeads, x: &Tokens, state: &mut [f32], out: &mut [f32]) {
    let dim = heads.dim;
    let scale = 1.0 / (dim as f32).sqrt();
    let mut delta = vec![0.0f32; dim];
    for t in 0..x.n {
        for h in 0..heads.v_heads {
            let s = &mut state[h * dim * dim..][..dim * dim];
            let (g, b) = x.gate_beta(heads, t, h);
            let kt = x.k_row(heads, t, h);
            (p.decay_project)(s, dim, g.exp(), kt, &mut delta);
            for (d, &vj) in delta.iter_mut().zip(x.v_row(heads, t, h)) {
                *d = (vj - *d) * b;
            }
            let o = &mut out[(t * heads.v_heads + h) * dim..][..dim];
            (p.update_read)(s, dim, kt, &delta, x.q_row(heads, t, h), o);
            o.iter_mut().for_each(|o| *o *= scale);
        }
    }
}

fn decay_project(s: &mut [f32], dim: usize, decay: f32, k: &[f32], acc: &mut [f32]) {
    acc.fill(0.0);
    for (row, &ki) in s.chunks_exact_mut(dim).zip(k) {
        for (x, a) in row.iter_mut().zip(acc.iter_mut()) {
            *x *= decay;
            *a = x.mul_add(ki, *a);
        }
    }
}

fn update_read(s: &mut [f32], dim: usize, k: &[f32], delta: &[f32], q: &[f32], o: &mut [f32]) {
    o.fill(0.0);
    for ((row, &ki), &qi) in s.chunks_exact_mut(dim).zip(k).zip(q) {
        for ((x, &d), o) in row.iter_mut().zip(delta).zip(o.iter_mut()) {
            *x = ki.mul_add(d, *x);
            *o = x.mul_add(qi, *o);
        }
    }
}

fn check(heads: DeltaHeads, x: &Tokens, state: &[f32], out: &[f32]) {
    let Tokens {
        n,
        q,
        k,
        v,
        g,
        beta,
    } = *x;
    let DeltaHeads {
        v_heads,
        k_heads,
        dim,
    } = heads;
    assert!(
        k_heads > 0 && v_heads.is_multiple_of(k_heads),
        "gated_delta_net: {k_heads} query/key heads do not divide {v_heads} value heads"
    );
    assert!(
        q.len() == n * k_heads * dim
            && k.len() == q.len()
            && v.len() == n * v_heads * dim
            && out.len() == v.len()
            && g.len() == n * v_heads
            && beta.len() == g.len()
            && state.len() == heads.state_len(),
        "gated_delta_net: slice lengths do not match the shapes"
    );
}

/// The short causal convolution in front of a Gated DeltaNet layer (ggml's `ssm_conv`), for `n`
/// tokens of one sequence: `out[t][c] = Σ_i xp[t + i][c] · w[i][c]` over the `width` taps in
/// order (products then sums, as ggml adds them), where `xp` is the `width - 1` rows of `state`
/// followed by the rows of `x`; `state` becomes the last `width - 1` rows of `xp`.
///
/// `x`, `out`: `[n][channels]`; `weight`: `[width][channels]` (the GGUF tensor's `[channels][width]`,
/// transposed at load so that every tap is one contiguous row); `state`: `[width - 1][channels]`.
/// Rows are processed whole, so the compiler's vectorized loop does the reference's arithmetic.
///
/// # Panics
/// If a slice length does not match, or `width` is 0.
pub fn causal_conv(
    channels: usize,
    width: usize,
    n: usize,
    x: &[f32],
    weight: &[f32],
    state: &mut [f32],
    out: &mut [f32],
) {
    assert!(
        width > 0
            && x.len() == n * channels
            && out.len() == x.len()
            && weight.len() == width * channels
            && state.len() == (width - 1) * channels,
        "causal_conv: slice lengths do not match the shapes"
    );
    let hist = width - 1;
    for (t, o) in out.chunks_exact_mut(channels.max(1)).enumerate().take(n) {
        o.fill(0.0);
        for (i, w) in weight.chunks_exact(channels.max(1)).enumerate() {
            let r = t + i;
            let src = if r < hist {
                &state[r * channels..(r + 1) * channels]
            } else {
                &x[(r - hist) * channels..(r - hist + 1) * channels]
            };
            for ((o, &s), &w) in o.iter_mut().zip(src).zip(w) {
                *o += s * w;
            }
        }
    }
    // The new state: the last `hist` rows of [state; x].
    if hist > 0 {
        let total = hist + n;
        let mut next = vec![0.0f32; hist * channels];
        for (k, dst) in next.chunks_exact_mut(channels.max(1)).enumerate() {
            let r = total - hist + k;
            let src = if r < hist {
                &state[r * channels..(r + 1) * channels]
            } else {
                &x[(r - hist) * channels..(r - hist + 1) * channels]
            };
            dst.copy_from_slice(src);
        }
        state.copy_from_slice(&next);
    }
}

/// ggml's `softplus`: `x` above 20, else `ln(1 + eˣ)`.
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        (1.0 + x.exp()).ln()
    }
}

/// The L2 normalization of Gated DeltaNet's queries and keys, as llama.cpp builds it
/// (`build_gdn_l2_norm`): an RMS norm with `eps / n` (mean of squares summed in f64), then a scale
/// by `1/√n`, i.e. `x / √(Σx² + eps)`.
pub fn l2_norm(x: &mut [f32], eps: f32) {
    let n = x.len() as f32;
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps / n).sqrt();
    let post = 1.0 / n.sqrt();
    for v in x.iter_mut() {
        *v = *v * scale * post;
    }
}

/// [`gated_delta_net`] in its chunked form, for prompts: tokens go through in chunks of `chunk`,
/// and within a chunk the updates `δ` solve one lower-triangular system instead of following
/// each other, so the work is matrix products (`KKᵀ`, `QKᵀ`, `S₀ᵀK`, `S₀ᵀQ`) rather than a
/// matrix-vector pass per token. With `Γ` the running sum of the gates inside the chunk and
/// `S₀` the state before it:
///
/// ```text
/// δ_t + β_t Σ_{s<t} e^(Γ_t − Γ_s) (k_t·k_s) δ_s = β_t (v_t − e^(Γ_t) S₀ᵀk_t)
/// o_t = (e^(Γ_t) S₀ᵀq_t + Σ_{s≤t} e^(Γ_t − Γ_s) (q_t·k_s) δ_s) / √dim
/// S ← e^(Γ_C) S₀ + Σ_s e^(Γ_C − Γ_s) k_s δ_sᵀ
/// ```
///
/// Decays are taken as differences of log sums, so nothing overflows however long the chunk.
/// The same numbers as the recurrence up to rounding (a different order of operations), which
/// the tests bound.
///
/// # Panics
/// As [`gated_delta_net`], or if `chunk` is 0.
pub fn gated_delta_net_chunked(
    heads: DeltaHeads,
    chunk: usize,
    x: &Tokens,
    state: &mut [f32],
    out: &mut [f32],
) {
    check(heads, x, state, out);
    assert!(chunk > 0, "gated_delta_net_chunked: chunk of 0 tokens");
    let dim = heads.dim;
    let scale = 1.0 / (dim as f32).sqrt();
    for t0 in (0..x.n).step_by(chunk) {
        let ts = t0..(t0 + chunk).min(x.n);
        for h in 0..heads.v_heads {
            let rows = |row: &dyn Fn(usize) -> Vec<f32>| ts.clone().map(row).collect();
            // Γ_t: the gates summed through token t of the chunk.
            let log_decay = ts
                .clone()
                .scan(0.0f32, |acc, t| {
                    *acc += x.gate_beta(heads, t, h).0;
                    Some(*acc)
                })
                .collect();
            let ch = Chunk {
                q: rows(&|t| x.q_row(heads, t, h).to_vec()),
                k: rows(&|t| x.k_row(heads, t, h).to_vec()),
                log_decay,
            };
            let v: Vec<Vec<f32>> = rows(&|t| x.v_row(heads, t, h).to_vec());
            let betas: Vec<f32> = ts.clone().map(|t| x.gate_beta(heads, t, h).1).collect();
            let s = &mut state[h * dim * dim..][..dim * dim];
            let deltas = ch.deltas(s, &v, &betas);
            for (t, o) in ts.clone().zip(ch.outputs(s, &deltas)) {
                let dst = &mut out[(t * heads.v_heads + h) * dim..][..dim];
                for (d, o) in dst.iter_mut().zip(&o) {
                    *d = o * scale;
                }
            }
            ch.advance(s, &deltas);
        }
    }
}

/// One head's queries, keys and running log decays over one chunk (see
/// [`gated_delta_net_chunked`]).
struct Chunk {
    q: Vec<Vec<f32>>,
    k: Vec<Vec<f32>>,
    log_decay: Vec<f32>,
}

impl Chunk {
    /// `e^(Γ_t − Γ_s)`.
    fn decay(&self, t: usize, s: usize) -> f32 {
        (self.log_decay[t] - self.log_decay[s]).exp()
    }

    /// The updates `δ_t`, by forward substitution.
    fn deltas(&self, s0: &[f32], v: &[Vec<f32>], betas: &[f32]) -> Vec<Vec<f32>> {
        let mut deltas: Vec<Vec<f32>> = Vec::with_capacity(v.len());
        for t in 0..v.len() {
            let sk = transposed_product(s0, &self.k[t]);
            let decay = self.log_decay[t].exp();
            let mut d: Vec<f32> = v[t].iter().zip(&sk).map(|(v, sk)| v - decay * sk).collect();
            for (s, ds) in deltas.iter().enumerate() {
                let w = self.decay(t, s) * dot(&self.k[t], &self.k[s]);
                d.iter_mut().zip(ds).for_each(|(d, &x)| *d -= w * x);
            }
            d.iter_mut().for_each(|d| *d *= betas[t]);
            deltas.push(d);
        }
        deltas
    }

    /// `o_t` before the `1/√dim` scale.
    fn outputs(&self, s0: &[f32], deltas: &[Vec<f32>]) -> Vec<Vec<f32>> {
        (0..deltas.len())
            .map(|t| {
                let decay = self.log_decay[t].exp();
                let mut o: Vec<f32> = transposed_product(s0, &self.q[t])
                    .iter()
                    .map(|x| decay * x)
                    .collect();
                for (s, ds) in deltas.iter().enumerate().take(t + 1) {
                    let w = self.decay(t, s) * dot(&self.q[t], &self.k[s]);
                    o.iter_mut().zip(ds).for_each(|(o, &x)| *o += w * x);
                }
                o
            })
            .collect()
    }

    /// The state after the chunk, in place of `s`.
    fn advance(&self, s: &mut [f32], deltas: &[Vec<f32>]) {
        let last = deltas.len() - 1;
        let decay = self.log_decay[last].exp();
        s.iter_mut().for_each(|x| *x *= decay);
        let dim = self.k[0].len();
        for (t, ds) in deltas.iter().enumerate() {
            let w = self.decay(last, t);
            for (row, &ki) in s.chunks_exact_mut(dim).zip(&self.k[t]) {
                row.iter_mut().zip(ds).for_each(|(x, &d)| *x += w * ki * d);
            }
        }
    }
}

/// `Sᵀx` for a key-space vector `x`: `Σ_i S[i][j] x[i]` for every `j`.
fn transposed_product(s: &[f32], x: &[f32]) -> Vec<f32> {
    let dim = x.len();
    let mut r = vec![0.0f32; dim];
    for (row, &xi) in s.chunks_exact(dim).zip(x) {
        r.iter_mut().zip(row).for_each(|(r, &sv)| *r += sv * xi);
    }
    r
}

/// `Σ a·b` in order, in f32.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
