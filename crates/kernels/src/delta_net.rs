//! Gated DeltaNet, the linear attention of Qwen3.5 and Qwen3-Next, in its plain recurrent form:
//! the scalar reference that the chunked (prompt) and SIMD (decode) forms are checked against.
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
//! The state is stored transposed, as ggml's `gated_delta_net` stores it: `state[h][j][i]` is
//! `S[i][j]`, so every product above walks contiguous rows.

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

/// Runs `n` tokens of one sequence through the recurrence, in order, updating `state` in place.
///
/// `q`, `k`: `[n][k_heads][dim]`; `v`, `out`: `[n][v_heads][dim]`; `g` (log of the decay) and
/// `beta`: `[n][v_heads]`; `state`: `[v_heads][dim][dim]`, transposed (module docs).
///
/// # Panics
/// If a slice length does not match the shapes, or `k_heads` does not divide `v_heads`.
#[allow(clippy::too_many_arguments)]
pub fn gated_delta_net(
    heads: DeltaHeads,
    n: usize,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: &[f32],
    beta: &[f32],
    state: &mut [f32],
    out: &mut [f32],
) {
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
    let scale = 1.0 / (dim as f32).sqrt();
    let mut delta = vec![0.0f32; dim];
    for t in 0..n {
        for h in 0..v_heads {
            let kh = h % k_heads;
            let qt = &q[(t * k_heads + kh) * dim..][..dim];
            let kt = &k[(t * k_heads + kh) * dim..][..dim];
            let vt = &v[(t * v_heads + h) * dim..][..dim];
            let s = &mut state[h * dim * dim..][..dim * dim];
            let decay = g[t * v_heads + h].exp();
            s.iter_mut().for_each(|x| *x *= decay);
            let b = beta[t * v_heads + h];
            for (j, d) in delta.iter_mut().enumerate() {
                *d = (vt[j] - dot(&s[j * dim..][..dim], kt)) * b;
            }
            for (j, &d) in delta.iter().enumerate() {
                for (x, &ki) in s[j * dim..][..dim].iter_mut().zip(kt) {
                    *x += d * ki;
                }
            }
            let o = &mut out[(t * v_heads + h) * dim..][..dim];
            for (j, o) in o.iter_mut().enumerate() {
                *o = dot(&s[j * dim..][..dim], qt) * scale;
            }
        }
    }
}

/// `Σ a·b` in order, in f32.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
