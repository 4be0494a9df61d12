//! Gated DeltaNet, the linear attention of Qwen3.5 and Qwen3-Next: the plain recurrence
//! ([`gated_delta_net`], the scalar reference every other form is checked against) and its SIMD
//! form ([`gated_delta_net_at`], equal to it bit for bit) for decode; the chunked form for prompts
//! ([`gated_delta_net_chunked`], scalar, and [`gated_delta_net_chunked_at`], SIMD, equal to it bit
//! for bit, both equal to the recurrence up to rounding); and [`forward`], which the model calls
//! and which picks between them.
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
    let kernels = passes(isa.min(crate::Isa::best_available()));
    run(kernels, heads, x, state, out)
}

/// Runs of fewer tokens than this take the recurrence in [`forward`], longer ones the chunked
/// form: from 4 tokens the chunked form is the faster at both SIMD levels, about as fast at 3,
/// slower at 1 and 2 (`bench_recurrence_against_chunked` in `tests/delta_net.rs`, 16 heads of 128
/// on Zen 4: at 4 tokens 25.9 against 32.1 µs per token at AVX-512, 31.8 against 38.8 at AVX2).
pub const CHUNKED_FROM: usize = 4;

/// The chunk [`forward`] gives the chunked form: on a CPU the cost per token grows with the
/// chunk (the triangular part of the work), and below 32 the fixed cost of each chunk takes that
/// back (the same bench: 16, 24 and 32 tie; 64 costs about 10% more per token, 128 over 30%).
pub const CHUNK: usize = 32;

/// Gated DeltaNet over `x`, as the model runs it: [`gated_delta_net_at`] for fewer than
/// [`CHUNKED_FROM`] tokens (decode), else [`gated_delta_net_chunked_at`] in chunks of [`CHUNK`],
/// both at [`crate::Isa::best`]. Equal to [`gated_delta_net`] up to the chunked form's rounding.
/// Keeps nothing between calls but each thread's working buffers, so threads may call it at once
/// on disjoint `state` and `out`.
///
/// # Panics
/// As [`gated_delta_net`].
pub fn forward(heads: DeltaHeads, x: &Tokens, state: &mut [f32], out: &mut [f32]) {
    let isa = crate::Isa::best();
    if x.n < CHUNKED_FROM {
        gated_delta_net_at(isa, heads, x, state, out)
    } else {
        gated_delta_net_chunked_at(isa, heads, CHUNK, x, state, out)
    }
}

/// The scalar kernels: the reference the SIMD ones equal bit for bit.
const SCALAR: Passes = Passes {
    decay_project,
    update_read,
    weighted_rows: crate::ops::weighted_rows,
};

/// The kernels of `isa` (available).
fn passes(isa: crate::Isa) -> Passes {
    crate::simd::delta_net_passes(isa).unwrap_or(SCALAR)
}

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
/// each other, so the work is matrix products (`KKᵀ`, `QKᵀ`, `S₀ᵀK`, `S₀ᵀQ`, `Kδᵀ`) rather than
/// a matrix-vector pass per token. With `S₀` the state before the chunk, `a_t = e^(g_t)`,
/// `A_t = a_0⋯a_t` (the decay from the chunk's start through token `t`) and
/// `D_ts = a_(s+1)⋯a_t` (from token `s` to token `t`; `D_tt = 1`):
///
/// ```text
/// δ_t = β_t (v_t − A_t S₀ᵀk_t − Σ_{s<t} D_ts (k_t·k_s) δ_s)     (forward substitution)
/// o_t = (A_t S₀ᵀq_t + Σ_{s≤t} D_ts (q_t·k_s) δ_s) / √dim
/// S ← A_l S₀ + Σ_s D_ls k_s δ_sᵀ                                 (l: the chunk's last token)
/// ```
///
/// Decays are running products of the per-token factors, never ratios, so nothing overflows
/// however long the chunk or strong the gates (a gate of −∞ forgets the past, as in the
/// recurrence). Every sum over tokens or over the key dimension is a chain of fused
/// multiply-adds in index order (`ops::scores_t`, `ops::weighted_rows`), so
/// [`gated_delta_net_chunked_at`] equals this scalar reference bit for bit. The same numbers as
/// the recurrence up to rounding (a different order of operations), which the tests bound; the
/// bits depend on where chunks start, so calls that split a sequence at multiples of `chunk`
/// give those of one call.
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
    chunked(crate::Isa::Scalar, heads, chunk, x, state, out)
}

/// [`gated_delta_net_chunked`] with the kernels of `isa` or the best level below it: the same
/// bits. Lanes run over the head's dimension (products with the state, `δ` and outputs) or over
/// the chunk's tokens (`KKᵀ`, `QKᵀ`), any `dim` (a partial last register runs masked).
pub fn gated_delta_net_chunked_at(
    isa: crate::Isa,
    heads: DeltaHeads,
    chunk: usize,
    x: &Tokens,
    state: &mut [f32],
    out: &mut [f32],
) {
    let isa = isa.min(crate::Isa::best_available());
    chunked(isa, heads, chunk, x, state, out)
}

/// Rows of the triangular products done together: the terms of the tokens before a block of
/// `BLOCK` rows go in one call of `ops::weighted_rows` (whose tiles share each load among rows),
/// the triangle inside the block row by row.
const BLOCK: usize = 8;

fn chunked(
    isa: crate::Isa,
    heads: DeltaHeads,
    chunk: usize,
    x: &Tokens,
    state: &mut [f32],
    out: &mut [f32],
) {
    check(heads, x, state, out);
    assert!(chunk > 0, "gated_delta_net_chunked: chunk of 0 tokens");
    let dim = heads.dim;
    if dim == 0 {
        return;
    }
    SCRATCH.with_borrow_mut(|w| {
        w.prepare(isa, chunk.min(x.n), dim);
        for t0 in (0..x.n).step_by(chunk) {
            for h in 0..heads.v_heads {
                let s = &mut state[h * dim * dim..][..dim * dim];
                w.load(heads, x, t0..(t0 + chunk).min(x.n), h);
                w.products();
                w.weights();
                w.solve(s);
                w.outputs(s);
                w.write(heads, t0, h, out);
                w.advance(s);
            }
        }
    })
}

thread_local! {
    /// This thread's working buffers, kept from call to call (the model calls once per head and
    /// layer, so allocating per call would be per head).
    static SCRATCH: std::cell::RefCell<ChunkScratch> = std::cell::RefCell::new(ChunkScratch::default());
}

/// The working buffers of one head's chunk (see [`gated_delta_net_chunked`]), reused from head to
/// head, chunk to chunk and call to call. `c` tokens; rows of `dim`, and `[c][c]` matrices with
/// rows `c` apart.
struct ChunkScratch {
    isa: crate::Isa,
    /// `ops::weighted_rows` at `isa`.
    rows: crate::simd::WeightedRowsFn,
    dim: usize,
    c: usize,
    /// `[c][dim]`: the keys, then `−A_t k_t`.
    k: Vec<f32>,
    /// `[c][dim]`: the queries, then `A_t q_t`.
    q: Vec<f32>,
    /// `[dim][c]`: the keys transposed, then `D_ls k_s`.
    kt: Vec<f32>,
    /// `[c][c]`: `k_t·k_s`, then `−D_ts (k_t·k_s)` for `s < t`.
    kk: Vec<f32>,
    /// `[c][c]`: `q_t·k_s`, then `D_ts (q_t·k_s)` for `s ≤ t`.
    qk: Vec<f32>,
    /// `a_t`.
    gate: Vec<f32>,
    /// `A_t`.
    start: Vec<f32>,
    /// `D_ts` for the row `t` last built by `weights`, in the end `D_ls`.
    decay: Vec<f32>,
    beta: Vec<f32>,
    /// `[c][dim]`: `v_t`, then `δ_t`.
    delta: Vec<f32>,
    /// `[c][dim]`: `o_t` before the `1/√dim` scale.
    o: Vec<f32>,
}

impl Default for ChunkScratch {
    fn default() -> Self {
        let e = Vec::new;
        ChunkScratch {
            isa: crate::Isa::Scalar,
            rows: crate::ops::weighted_rows,
            dim: 0,
            c: 0,
            k: e(),
            q: e(),
            kt: e(),
            kk: e(),
            qk: e(),
            gate: e(),
            start: e(),
            decay: e(),
            beta: e(),
            delta: e(),
            o: e(),
        }
    }
}

impl ChunkScratch {
    /// Makes room for chunks of up to `chunk` tokens of width `dim`, computed at `isa`. The
    /// buffers only grow; every value a step reads was written by an earlier step of the same
    /// head and chunk, so what is left from before does not matter.
    fn prepare(&mut self, isa: crate::Isa, chunk: usize, dim: usize) {
        (self.isa, self.rows, self.dim) = (isa, passes(isa).weighted_rows, dim);
        let grow = |v: &mut Vec<f32>, len: usize| {
            if v.len() < len {
                v.resize(len, 0.0)
            }
        };
        for v in [
            &mut self.k,
            &mut self.q,
            &mut self.kt,
            &mut self.delta,
            &mut self.o,
        ] {
            grow(v, chunk * dim);
        }
        grow(&mut self.kk, chunk * chunk);
        grow(&mut self.qk, chunk * chunk);
        for v in [
            &mut self.gate,
            &mut self.start,
            &mut self.decay,
            &mut self.beta,
        ] {
            grow(v, chunk);
        }
    }

    /// Copies head `h`'s rows of the tokens `ts` (at most the chunk the buffers were made for).
    fn load(&mut self, heads: DeltaHeads, x: &Tokens, ts: std::ops::Range<usize>, h: usize) {
        let (c, dim) = (ts.len(), self.dim);
        self.c = c;
        for (r, t) in ts.enumerate() {
            self.k[r * dim..][..dim].copy_from_slice(x.k_row(heads, t, h));
            self.q[r * dim..][..dim].copy_from_slice(x.q_row(heads, t, h));
            self.delta[r * dim..][..dim].copy_from_slice(x.v_row(heads, t, h));
            let (g, b) = x.gate_beta(heads, t, h);
            (self.gate[r], self.beta[r]) = (g.exp(), b);
        }
        for (s, row) in self.k[..c * dim].chunks_exact(dim).enumerate() {
            for (i, &v) in row.iter().enumerate() {
                self.kt[i * c + s] = v;
            }
        }
    }

    /// `KKᵀ` and `QKᵀ`, lanes over the keys `s`; only the blocks of rows on or below the
    /// diagonal.
    fn products(&mut self) {
        let (c, dim) = (self.c, self.dim);
        let kt = &self.kt[..dim * c];
        for t0 in (0..c).step_by(BLOCK) {
            let t1 = (t0 + BLOCK).min(c);
            for (rows, dst) in [(&self.k, &mut self.kk), (&self.q, &mut self.qk)] {
                let rows = &rows[t0 * dim..t1 * dim];
                crate::simd::scores_t(self.isa, rows, dim, kt, c, t1, &mut dst[t0 * c..], c);
            }
        }
    }

    /// The decays `A_t`, `D_ts` (row by row: `D_ts = D_(t−1)s · a_t`) and the weights of the
    /// solve and the outputs.
    fn weights(&mut self) {
        let c = self.c;
        let mut start = 1.0f32;
        for t in 0..c {
            let a = self.gate[t];
            start *= a;
            self.start[t] = start;
            self.decay[..t].iter_mut().for_each(|d| *d *= a);
            self.decay[t] = 1.0;
            let kk = &mut self.kk[t * c..][..t];
            kk.iter_mut()
                .zip(&self.decay)
                .for_each(|(w, &d)| *w = -(d * *w));
            let qk = &mut self.qk[t * c..][..=t];
            qk.iter_mut().zip(&self.decay).for_each(|(w, &d)| *w *= d);
        }
    }

    /// The updates `δ_t` in place of `v_t`: first `v_t − A_t S₀ᵀk_t` for all rows, then forward
    /// substitution by blocks of rows (the rows before the block at once, then the triangle).
    fn solve(&mut self, s0: &[f32]) {
        let (c, dim) = (self.c, self.dim);
        for (row, &a) in self.k[..c * dim].chunks_exact_mut(dim).zip(&self.start) {
            row.iter_mut().for_each(|x| *x *= -a);
        }
        let delta = &mut self.delta[..c * dim];
        (self.rows)(delta, dim, &self.k, dim, s0, dim, dim);
        for t0 in (0..c).step_by(BLOCK) {
            let t1 = (t0 + BLOCK).min(c);
            let (done, rest) = delta.split_at_mut(t0 * dim);
            let block = &mut rest[..(t1 - t0) * dim];
            (self.rows)(block, dim, &self.kk[t0 * c..], c, done, dim, t0);
            for r in 0..t1 - t0 {
                let (prev, row) = block.split_at_mut(r * dim);
                let row = &mut row[..dim];
                let w = &self.kk[(t0 + r) * c + t0..];
                (self.rows)(row, dim, w, c, prev, dim, r);
                let b = self.beta[t0 + r];
                row.iter_mut().for_each(|x| *x *= b);
            }
        }
    }

    /// The outputs `o_t` (unscaled): `A_t S₀ᵀq_t`, then the updates by blocks of rows as in
    /// `solve`.
    fn outputs(&mut self, s0: &[f32]) {
        let (c, dim) = (self.c, self.dim);
        for (row, &a) in self.q[..c * dim].chunks_exact_mut(dim).zip(&self.start) {
            row.iter_mut().for_each(|x| *x *= a);
        }
        let o = &mut self.o[..c * dim];
        o.fill(0.0);
        (self.rows)(o, dim, &self.q, dim, s0, dim, dim);
        let delta = &self.delta[..c * dim];
        for t0 in (0..c).step_by(BLOCK) {
            let t1 = (t0 + BLOCK).min(c);
            let block = &mut o[t0 * dim..t1 * dim];
            (self.rows)(block, dim, &self.qk[t0 * c..], c, delta, dim, t0);
            for (r, row) in block.chunks_exact_mut(dim).enumerate() {
                let w = &self.qk[(t0 + r) * c + t0..];
                (self.rows)(row, dim, w, c, &delta[t0 * dim..], dim, r + 1);
            }
        }
    }

    /// The outputs, scaled, into head `h`'s rows of `out` from token `t0`.
    fn write(&self, heads: DeltaHeads, t0: usize, h: usize, out: &mut [f32]) {
        let dim = self.dim;
        let scale = 1.0 / (dim as f32).sqrt();
        for (r, o) in self.o[..self.c * dim].chunks_exact(dim).enumerate() {
            let dst = &mut out[((t0 + r) * heads.v_heads + h) * dim..][..dim];
            dst.iter_mut().zip(o).for_each(|(d, &o)| *d = o * scale);
        }
    }

    /// The state after the chunk, in place of `s` (`S₀` until now).
    fn advance(&mut self, s: &mut [f32]) {
        let (c, dim) = (self.c, self.dim);
        let last = self.start[c - 1];
        s.iter_mut().for_each(|x| *x *= last);
        for row in self.kt[..dim * c].chunks_exact_mut(c) {
            row.iter_mut().zip(&self.decay).for_each(|(x, &d)| *x *= d);
        }
        let (kt, delta) = (&self.kt[..dim * c], &self.delta[..c * dim]);
        (self.rows)(s, dim, kt, c, delta, dim, c);
    }
}
