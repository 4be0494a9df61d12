//! Elementwise and row ops of a transformer (scalar), matching ggml's CPU ops.

use crate::kv_elem::KvElem;

/// RMS norm: `out = x / sqrt(mean(x²) + eps) * weight`, the mean of squares summed in f64 as ggml does.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    assert!(
        x.len() == weight.len() && x.len() == out.len(),
        "rms_norm: length mismatch"
    );
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = v * scale * w;
    }
}

/// [`rms_norm`] in place.
pub fn rms_norm_inplace(x: &mut [f32], weight: &[f32], eps: f32) {
    assert_eq!(x.len(), weight.len(), "rms_norm: length mismatch");
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for (v, &w) in x.iter_mut().zip(weight) {
        *v = *v * scale * w;
    }
}

/// `log2(e)`, and `ln(2)` split in two so that `n · LN2_HI` is exact for `|n| ≤ 255`.
pub(crate) const LOG2E: f32 = std::f32::consts::LOG2_E;
pub(crate) const LN2_HI: f32 = 0.693_145_75; // 0x3F317200
pub(crate) const LN2_LO: f32 = 1.428_606_8e-6; // ln 2 - LN2_HI
/// Taylor coefficients `1/k!` of `e^r`, `k = 0..=7`: under 2 ulp for `|r| ≤ ln(2)/2`.
pub(crate) const EXP_POLY: [f32; 8] = [
    1.0,
    1.0,
    0.5,
    0.166_666_67,
    0.041_666_668,
    0.008_333_334,
    0.001_388_888_9,
    0.000_198_412_7,
];
/// Above this `e^x` overflows f32; below this it is under the smallest normal and taken as 0.
pub(crate) const EXP_HI: f32 = 88.722_83;
pub(crate) const EXP_LO: f32 = -87.336_55;

/// `e^x` as the SIMD kernels compute it (this is their scalar reference): `2^n · p(r)` with
/// `n = round(x · log2 e)` (clamped to the normal exponents), `r = x - n · ln 2` by two fused
/// steps, `p` the degree-7 Taylor polynomial by Horner's rule in fused multiply-adds. Within 2 ulp
/// of `e^x` (up to 20 ulp for `x` in 88.38..88.72, where `n` is clamped), 0 below
/// [`EXP_LO`] (no subnormal results), `inf` above [`EXP_HI`], NaN for NaN. ggml's vector softmax
/// and SiLU use an approximation of the same kind.
pub fn exp(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x > EXP_HI {
        return f32::INFINITY;
    }
    if x < EXP_LO {
        return 0.0;
    }
    let n = (x * LOG2E).round_ties_even().clamp(-126.0, 127.0);
    let r = (-n).mul_add(LN2_HI, x);
    let r = (-n).mul_add(LN2_LO, r);
    let mut p = EXP_POLY[7];
    for &c in EXP_POLY[..7].iter().rev() {
        p = p.mul_add(r, c);
    }
    p * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

/// The sum of 16 values as the SIMD kernels reduce a register: lane `l` plus lane `l + 8`, then
/// `+ 4`, `+ 2`, `+ 1`.
pub(crate) fn sum16(v: &[f32]) -> f32 {
    let mut s: [f32; 16] = v.try_into().expect("sum16: 16 values");
    for half in [8, 4, 2, 1] {
        for l in 0..half {
            s[l] += s[l + half];
        }
    }
    s[0]
}

/// Softmax of `scale · x` in place, as ggml's `soft_max` computes it: scale, subtract the max,
/// exponentiate ([`exp`]), divide by the sum. The sum is kept in f64, each 16 values added to it
/// as one f32 [`sum16`] (one register of the SIMD kernels), the last `len % 16` one by one.
pub fn softmax(x: &mut [f32], scale: f32) {
    let mut max = f32::NEG_INFINITY;
    for v in x.iter_mut() {
        *v *= scale;
        max = max.max(*v);
    }
    let mut sum = 0.0f64;
    let mut chunks = x.chunks_exact_mut(16);
    for c in &mut chunks {
        c.iter_mut().for_each(|v| *v = exp(*v - max));
        sum += sum16(c) as f64;
    }
    for v in chunks.into_remainder() {
        *v = exp(*v - max);
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    x.iter_mut().for_each(|v| *v *= inv);
}

/// SiLU: `x / (1 + e^-x)` (ggml's `ggml_silu_f32`), with [`exp`].
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// `gate[i] = silu(gate[i]) * up[i]`.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "swiglu: length mismatch");
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * u;
    }
}

/// `-2 sqrt(2/π)`: GELU's tanh form as a sigmoid, `0.5 x (1 + tanh(z)) = x / (1 + exp(-2z))`.
pub const GELU_NEG_2C: f32 = -1.595_769_2;
/// The cubic term's coefficient of GELU's tanh form.
pub const GELU_A: f32 = 0.044_715;

/// GELU, tanh approximation (Gemma's `gelu_pytorch_tanh`), computed in f32 as a sigmoid.
pub fn gelu(x: f32) -> f32 {
    x / (1.0 + exp((x * x * GELU_A + 1.0) * x * GELU_NEG_2C))
}

/// `gate[i] = gelu(gate[i]) * up[i]`.
pub fn geglu(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "geglu: length mismatch");
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = gelu(*g) * u;
    }
}

/// ggml's CPU GeGLU (`GGML_GELU_FP16`, the default): `gelu(gate[i]) * up[i]` with `gelu` read
/// from a table of fp16 values indexed by the fp16 rounding of its input, 0 at or below -10 and
/// the identity at or above 10. Coarser than [`geglu`] (fp16's 11 bits), far finer than the 8-bit
/// activations of a quantized matrix product, and what llama.cpp computes: quantized models use
/// it to stay comparable with llama.cpp.
pub fn geglu_fp16(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "geglu_fp16: length mismatch");
    let table = gelu_fp16_table();
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        *g = if x <= -10.0 {
            0.0
        } else if x >= 10.0 {
            x * u
        } else {
            let i = half::f16::from_f32(x).to_bits() as usize;
            half::f16::from_bits(table[i]).to_f32() * u
        };
    }
}

/// `fp16(gelu(x))` for every fp16 `x`, with gelu's tanh form in f32 as ggml writes it.
fn gelu_fp16_table() -> &'static [u16] {
    static TABLE: std::sync::OnceLock<Vec<u16>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        const SQRT_2_OVER_PI: f32 = 0.797_884_6;
        (0..=u16::MAX)
            .map(|i| {
                let x = half::f16::from_bits(i).to_f32();
                let y = 0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + GELU_A * x * x)).tanh());
                half::f16::from_f32(y).to_bits()
            })
            .collect()
    })
}

/// `acc[i] += x[i]`.
/// Multiplies each run of `n` values of `x` (`n` a power of two) by the orthonormal
/// Walsh-Hadamard matrix of size `n` (Sylvester's order, scaled by 1/sqrt(n)): a fast transform,
/// its own inverse. llama.cpp rotates keys and values so before quantizing them into the KV
/// cache, which spreads a head's outlying dimensions over all of them.
pub fn hadamard(x: &mut [f32], n: usize) {
    assert!(
        n.is_power_of_two() && x.len().is_multiple_of(n),
        "runs of a power of two"
    );
    let s = 1.0 / (n as f32).sqrt();
    for run in x.chunks_exact_mut(n) {
        let mut h = 1;
        while h < n {
            for i in (0..n).step_by(2 * h) {
                for j in i..i + h {
                    let (a, b) = (run[j], run[j + h]);
                    run[j] = a + b;
                    run[j + h] = a - b;
                }
            }
            h *= 2;
        }
        run.iter_mut().for_each(|v| *v *= s);
    }
}

pub fn add(acc: &mut [f32], x: &[f32]) {
    assert_eq!(acc.len(), x.len(), "add: length mismatch");
    acc.iter_mut().zip(x).for_each(|(a, b)| *a += b);
}

/// `acc[i] *= x[i]`.
pub fn mul(acc: &mut [f32], x: &[f32]) {
    assert_eq!(acc.len(), x.len(), "mul: length mismatch");
    acc.iter_mut().zip(x).for_each(|(a, b)| *a *= b);
}

/// `x[i] *= s`.
pub fn scale(x: &mut [f32], s: f32) {
    x.iter_mut().for_each(|v| *v *= s);
}

/// f32 dot product, summed in f32 in order (the portable fallback of `dot::dot_f32`).
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f32: length mismatch");
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `y += alpha * x`.
pub fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    assert_eq!(y.len(), x.len(), "axpy: length mismatch");
    y.iter_mut().zip(x).for_each(|(y, x)| *y += alpha * x);
}

/// Attention scores against keys stored transposed: for each of the `q.len() / dim` query rows
/// `h`, `out[h * out_stride + j] = Σ_d q[h * dim + d] · kt[d * kt_stride + j]` for `j < len`, summed
/// over `d` in order with fused multiply-adds (the reference of `dot::scores_t`).
pub fn scores_t<E: KvElem>(
    q: &[f32],
    dim: usize,
    kt: &[E],
    kt_stride: usize,
    len: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    check_scores_t(q, dim, kt, kt_stride, len, out, out_stride);
    for h in 0..q.len() / dim {
        for j in 0..len {
            let mut acc = 0.0f32;
            for d in 0..dim {
                acc = q[h * dim + d].mul_add(kt[d * kt_stride + j].to_f32(), acc);
            }
            out[h * out_stride + j] = acc;
        }
    }
}

/// Panics unless every index [`scores_t`] touches is in bounds.
pub(crate) fn check_scores_t<E>(
    q: &[f32],
    dim: usize,
    kt: &[E],
    kt_stride: usize,
    len: usize,
    out: &[f32],
    out_stride: usize,
) {
    assert!(
        dim > 0 && q.len().is_multiple_of(dim),
        "scores_t: q is not whole rows"
    );
    let nq = q.len() / dim;
    assert!(len <= kt_stride, "scores_t: len exceeds the key stride");
    assert!(
        len == 0 || kt.len() >= (dim - 1) * kt_stride + len,
        "scores_t: keys too short"
    );
    assert!(
        nq == 0 || len == 0 || (len <= out_stride && out.len() >= (nq - 1) * out_stride + len),
        "scores_t: out too short"
    );
}

/// Attention-weighted value rows: for each of the `out.len() / dv` output rows `h`,
/// `out[h][..] += Σ_j w[h * w_stride + j] · v[j * v_stride..][..dv]` for `j < len`, one fused
/// multiply-add per `j` in order (the reference of `dot::weighted_rows`).
pub fn weighted_rows<E: KvElem>(
    out: &mut [f32],
    dv: usize,
    w: &[f32],
    w_stride: usize,
    v: &[E],
    v_stride: usize,
    len: usize,
) {
    check_weighted_rows(out, dv, w, w_stride, v, v_stride, len);
    for h in 0..out.len() / dv {
        for j in 0..len {
            let a = w[h * w_stride + j];
            for (o, &x) in out[h * dv..(h + 1) * dv]
                .iter_mut()
                .zip(&v[j * v_stride..j * v_stride + dv])
            {
                *o = a.mul_add(x.to_f32(), *o);
            }
        }
    }
}

/// Panics unless every index [`weighted_rows`] touches is in bounds.
pub(crate) fn check_weighted_rows<E>(
    out: &[f32],
    dv: usize,
    w: &[f32],
    w_stride: usize,
    v: &[E],
    v_stride: usize,
    len: usize,
) {
    assert!(
        dv > 0 && out.len().is_multiple_of(dv),
        "weighted_rows: out is not whole rows"
    );
    let nh = out.len() / dv;
    assert!(
        nh == 0 || len == 0 || (len <= w_stride && w.len() >= (nh - 1) * w_stride + len),
        "weighted_rows: weights too short"
    );
    assert!(
        len == 0 || (dv <= v_stride && v.len() >= (len - 1) * v_stride + dv),
        "weighted_rows: values too short"
    );
}

/// Rotary position embedding, as ggml_rope_ext computes it (YaRN included).
#[derive(Clone, Debug, PartialEq)]
pub struct Rope {
    /// Rotated dimensions at the start of each head.
    pub n_rot: usize,
    pub freq_base: f32,
    /// Linear position scaling (1 / rope scaling factor).
    pub freq_scale: f32,
    /// NeoX ordering rotates pairs `(i, i + n_rot/2)`; the original (GPT-J/llama) ordering
    /// rotates `(2i, 2i+1)`.
    pub neox: bool,
    /// Per-pair frequency divisors (Llama 3.1's `rope_freqs`): pair `i` uses `theta_i / f[i]`.
    pub freq_factors: Option<std::sync::Arc<[f32]>>,
    /// YaRN, when scaling a model past its original context; `None` for plain RoPE.
    pub yarn: Option<Yarn>,
}

/// YaRN parameters as ggml takes them: with `ext_factor` 1, pairs up to `corr_dims[0]` extrapolate
/// (keep the unscaled angle), pairs from `corr_dims[1]` interpolate (angle × freq_scale), with a
/// linear ramp between, and cos/sin are scaled by `attn_factor * (1 + 0.1 ln(1/freq_scale))`.
/// With `ext_factor` 0 it is plain scaled RoPE with cos/sin times `attn_factor`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Yarn {
    pub ext_factor: f32,
    pub attn_factor: f32,
    pub corr_dims: [f32; 2],
}

impl Yarn {
    /// ggml's correction dims for `n_rot` rotated dims, original context `n_ctx_orig`.
    pub fn corr_dims(
        n_rot: usize,
        n_ctx_orig: usize,
        freq_base: f32,
        beta_fast: f32,
        beta_slow: f32,
    ) -> [f32; 2] {
        let dim = |n_rot_beta: f32| {
            n_rot as f32 * (n_ctx_orig as f32 / (n_rot_beta * 2.0 * std::f32::consts::PI)).ln()
                / (2.0 * freq_base.ln())
        };
        [
            dim(beta_fast).floor().max(0.0),
            dim(beta_slow).ceil().min(n_rot as f32 - 1.0),
        ]
    }
}

impl Rope {
    /// The (cos, sin) of each rotated pair at `pos`; theta grows by a constant factor per pair,
    /// computed iteratively in f32 like ggml's rope cache.
    pub fn cache(&self, pos: usize) -> Vec<(f32, f32)> {
        assert!(
            self.freq_factors
                .as_ref()
                .is_none_or(|f| f.len() >= self.n_rot / 2),
            "rope: fewer frequency factors than the {} rotated pairs",
            self.n_rot / 2
        );
        let theta_scale = self.freq_base.powf(-2.0 / self.n_rot as f32);
        let mut theta = pos as f32;
        (0..self.n_rot / 2)
            .map(|i| {
                let ff = self.freq_factors.as_ref().map_or(1.0, |f| f[i]);
                let extrap = theta / ff;
                let interp = self.freq_scale * extrap;
                theta *= theta_scale;
                match &self.yarn {
                    Some(y) if y.ext_factor != 0.0 => {
                        let [low, high] = y.corr_dims;
                        let ramp =
                            1.0 - ((i as f32 - low) / (high - low).max(0.001)).clamp(0.0, 1.0);
                        let mix = ramp * y.ext_factor;
                        let t = interp * (1.0 - mix) + extrap * mix;
                        let m = y.attn_factor * (1.0 + 0.1 * (1.0 / self.freq_scale).ln());
                        (t.cos() * m, t.sin() * m)
                    }
                    Some(y) => (interp.cos() * y.attn_factor, interp.sin() * y.attn_factor),
                    None => (interp.cos(), interp.sin()),
                }
            })
            .collect()
    }

    /// Rotates the first `n_rot` dims of each of the `n_heads` heads (`head_dim` apart) of `x`.
    pub fn apply(&self, x: &mut [f32], n_heads: usize, head_dim: usize, pos: usize) {
        assert!(
            x.len() >= n_heads * head_dim && self.n_rot <= head_dim,
            "rope: bad shape"
        );
        let cache = self.cache(pos);
        self.apply_cached(x, n_heads, head_dim, &cache);
    }

    /// [`Rope::apply`] with a cache from [`Rope::cache`].
    pub fn apply_cached(
        &self,
        x: &mut [f32],
        n_heads: usize,
        head_dim: usize,
        cache: &[(f32, f32)],
    ) {
        let half = self.n_rot / 2;
        for h in 0..n_heads {
            let head = &mut x[h * head_dim..h * head_dim + self.n_rot];
            for (i, &(c, s)) in cache.iter().enumerate() {
                let (a, b) = if self.neox {
                    (i, i + half)
                } else {
                    (2 * i, 2 * i + 1)
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * c - x1 * s;
                head[b] = x0 * s + x1 * c;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hadamard_is_sylvesters_matrix_and_its_own_inverse() {
        // H_2 = [[1, 1], [1, -1]] / sqrt(2); H_4 = [[H_2, H_2], [H_2, -H_2]] (up to the scale).
        let mut e: Vec<f32> = vec![0.0; 16];
        for i in 0..4 {
            e[i * 4 + i] = 1.0;
        }
        hadamard(&mut e, 4);
        let want = [
            [1., 1., 1., 1.],
            [1., -1., 1., -1.],
            [1., 1., -1., -1.],
            [1., -1., -1., 1.],
        ];
        for i in 0..4 {
            for j in 0..4 {
                assert_eq!(e[i * 4 + j], want[i][j] / 2.0);
            }
        }
        let x: Vec<f32> = (0..128).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
        let mut y = x.clone();
        hadamard(&mut y, 64);
        hadamard(&mut y, 64);
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() < 1e-5, "{a} {b}");
        }
    }

    use super::*;

    #[test]
    fn rms_norm_matches_formula() {
        let x = [1.0f32, -2.0, 3.0, 0.5];
        let w = [1.0f32, 2.0, 0.5, 1.0];
        let mut out = [0.0; 4];
        rms_norm(&x, &w, 1e-6, &mut out);
        let rms = ((1.0 + 4.0 + 9.0 + 0.25) / 4.0f64 + 1e-6).sqrt();
        for i in 0..4 {
            assert!((out[i] as f64 - x[i] as f64 / rms * w[i] as f64).abs() < 1e-6);
        }
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut x = [1.0f32, 2.0, 3.0, -1000.0];
        softmax(&mut x, 1.0);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[3] == 0.0 && x[2] > x[1] && x[1] > x[0]);
    }

    #[test]
    fn rope_position_zero_is_identity_and_rotation_preserves_norm() {
        for neox in [false, true] {
            let rope = Rope {
                n_rot: 8,
                freq_base: 10000.0,
                freq_scale: 1.0,
                neox,
                freq_factors: None,
                yarn: None,
            };
            let orig: Vec<f32> = (0..16).map(|i| i as f32 * 0.3 - 2.0).collect();
            let mut x = orig.clone();
            rope.apply(&mut x, 2, 8, 0);
            assert_eq!(x, orig);
            rope.apply(&mut x, 2, 8, 17);
            let n0: f32 = orig.iter().map(|v| v * v).sum();
            let n1: f32 = x.iter().map(|v| v * v).sum();
            assert!((n0 - n1).abs() < 1e-3);
            // Undo with the inverse rotation.
            let inv: Vec<(f32, f32)> = rope.cache(17).iter().map(|&(c, s)| (c, -s)).collect();
            rope.apply_cached(&mut x, 2, 8, &inv);
            for (a, b) in x.iter().zip(&orig) {
                assert!((a - b).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn rope_pairs_follow_the_ordering() {
        let mut x = vec![0.0f32; 4];
        x[1] = 1.0;
        let normal = Rope {
            n_rot: 4,
            freq_base: 10000.0,
            freq_scale: 1.0,
            neox: false,
            freq_factors: None,
            yarn: None,
        };
        normal.apply(&mut x, 1, 4, 1);
        // (x0, x1) = (0, 1) rotated by theta = 1: (-sin 1, cos 1); the second pair stays 0.
        assert!((x[0] + 1f32.sin()).abs() < 1e-6 && (x[1] - 1f32.cos()).abs() < 1e-6);
        assert_eq!(&x[2..], &[0.0, 0.0]);
        let mut y = vec![0.0f32; 4];
        y[2] = 1.0;
        let neox = Rope {
            neox: true,
            ..normal
        };
        neox.apply(&mut y, 1, 4, 1);
        // NeoX pairs (0, 2): (0, 1) → (-sin 1, cos 1).
        assert!((y[0] + 1f32.sin()).abs() < 1e-6 && (y[2] - 1f32.cos()).abs() < 1e-6);
    }

    #[test]
    fn frequency_factors_divide_the_angle() {
        let plain = Rope {
            n_rot: 8,
            freq_base: 10000.0,
            freq_scale: 1.0,
            neox: true,
            freq_factors: None,
            yarn: None,
        };
        let halved = Rope {
            freq_factors: Some(vec![2.0f32; 4].into()),
            ..plain.clone()
        };
        // Factors of 2 at position 6 rotate like no factors at position 3.
        for (a, b) in halved.cache(6).iter().zip(plain.cache(3)) {
            assert!((a.0 - b.0).abs() < 1e-5 && (a.1 - b.1).abs() < 1e-5);
        }
    }
}
