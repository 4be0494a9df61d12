//! The arithmetic of `frugal perplexity`, as llama.cpp's `llama-perplexity` does it: how the text
//! is cut into chunks and batches, the negative log-likelihood of each scored token (f32
//! exponentials summed in f64, like llama.cpp's `log_softmax`), the running perplexity and its
//! uncertainty, the base model's log-probabilities quantized to 16 bits, and the KL-divergence
//! statistics. Pure functions over slices, tested on hand-computed answers.
//!
//! Where llama.cpp mixes `float` and `double`, so do these functions, in the same places, so that
//! the printed figures agree to the last digit on the same logits.

/// How a text of `n_tokens` tokens is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Tokens per chunk; each chunk starts from an empty cache.
    pub n_ctx: usize,
    /// Tokens per forward pass (over `n_seq` chunks at once when it covers several chunks).
    pub n_batch: usize,
    /// Chunks evaluated together in one batch.
    pub n_seq: usize,
    /// Chunks evaluated.
    pub n_chunk: usize,
    /// The first scored position of a chunk: only the second half is scored, so that every
    /// prediction has at least `first` tokens of context.
    pub first: usize,
}

impl Plan {
    /// llama.cpp's plan: `n_chunk = min(chunks, n_tokens / n_ctx)`; a batch of at least `n_ctx`
    /// tokens runs `n_batch / n_ctx` chunks side by side (at most `n_chunk`), and is then capped
    /// to whole chunks.
    pub fn new(
        n_tokens: usize,
        n_ctx: usize,
        n_batch: usize,
        chunks: Option<usize>,
    ) -> Result<Plan, String> {
        if chunks == Some(0) {
            return Err("--chunks must be at least 1".into());
        }
        if n_tokens < 2 * n_ctx {
            return Err(format!(
                "you need at least {} tokens to evaluate perplexity with a context of {n_ctx}; \
                 the text tokenizes to only {n_tokens} tokens",
                2 * n_ctx
            ));
        }
        let n_chunk_max = n_tokens / n_ctx.max(1);
        Plan::for_chunks(
            n_ctx,
            n_batch,
            chunks.map_or(n_chunk_max, |c| c.min(n_chunk_max)),
        )
    }

    /// The plan for exactly `n_chunk` chunks (those of a KL base file).
    pub fn for_chunks(n_ctx: usize, n_batch: usize, n_chunk: usize) -> Result<Plan, String> {
        if n_ctx < 4 {
            return Err(format!(
                "--ctx-size must be at least 4 (each chunk scores its second half), not {n_ctx}"
            ));
        }
        if n_batch == 0 {
            return Err("--batch-size must be at least 1".into());
        }
        // Never more side by side than there are chunks: the cache is sized for `n_seq`.
        let n_seq = (n_batch / n_ctx).clamp(1, n_chunk.max(1));
        Ok(Plan {
            n_ctx,
            n_batch: n_batch.min(n_seq * n_ctx),
            n_seq,
            n_chunk,
            first: n_ctx / 2,
        })
    }

    /// Scored positions per chunk: `first..n_ctx - 1`, each predicting the token after it.
    pub fn n_scored(&self) -> usize {
        self.n_ctx - 1 - self.first
    }

    /// The position ranges of one chunk's forward passes, in order: each batch is cut at `first`
    /// so that logits are asked for (`true`) only from there on. With several chunks side by side
    /// a batch spans whole chunks, so there is one pass with logits.
    pub fn passes(&self) -> Vec<(std::ops::Range<usize>, bool)> {
        let mut out = Vec::new();
        let mut a = 0;
        while a < self.n_ctx {
            let b = (a + self.n_batch).min(self.n_ctx);
            if a < self.first {
                out.push((a..b.min(self.first), false));
            }
            if b > self.first {
                out.push((a.max(self.first)..b, true));
            }
            a = b;
        }
        out
    }
}

/// The first index of the largest logit, and that logit (rows are never empty: `n_vocab > 0`).
fn argmax(logits: &[f32]) -> (usize, f32) {
    let mut best = (0, logits[0]);
    for (i, &l) in logits.iter().enumerate().skip(1) {
        if l > best.1 {
            best = (i, l);
        }
    }
    best
}

/// `sum(exp(l - max))`: f32 exponentials accumulated in f64, as llama.cpp does.
fn sum_exp(logits: &[f32], max: f32) -> f64 {
    logits.iter().map(|&l| f64::from((l - max).exp())).sum()
}

/// The negative log-likelihood of `tok` under `softmax(logits)`, as `llama-perplexity` computes
/// it without a logits file.
pub fn nll(logits: &[f32], tok: usize) -> f64 {
    let (_, max) = argmax(logits);
    -(f64::from(logits[tok] - max) - sum_exp(logits, max).ln())
}

/// A row of the base model's log-probabilities in 16 bits: `log p[i] = scale * q[i] +
/// min_log_prob`, covering the 16 nats below the largest (lower ones are clamped to the bottom).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuantRow {
    pub scale: f32,
    pub min_log_prob: f32,
    pub q: Vec<u16>,
}

impl QuantRow {
    /// Quantizes the log-softmax of `logits` as llama.cpp's `--kl-divergence-base` does; also
    /// returns the negative log-likelihood of `tok` (computed in f32 there, so here too).
    pub fn new(logits: &[f32], tok: usize) -> (QuantRow, f64) {
        let (_, max) = argmax(logits);
        let min = logits
            .iter()
            .copied()
            .fold(logits[0], f32::min)
            .max(max - 16.0);
        let log_sum_exp = sum_exp(logits, max).ln() as f32;
        let scale = (max - min) / 65535.0;
        let q = if scale != 0.0 {
            let inv = 1.0 / scale;
            logits
                .iter()
                // Ties to even, like ggml's `nearest_int`; the cast saturates at 65535.
                .map(|&l| {
                    if l > min {
                        (inv * (l - min)).round_ties_even() as u16
                    } else {
                        0
                    }
                })
                .collect()
        } else {
            vec![0; logits.len()]
        };
        let row = QuantRow {
            scale,
            min_log_prob: min - max - log_sum_exp,
            q,
        };
        (row, f64::from(max + log_sum_exp - logits[tok]))
    }

    fn log_prob(&self, i: usize) -> f32 {
        self.scale * f32::from(self.q[i]) + self.min_log_prob
    }
}

/// One scored position compared with the base model.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KlSample {
    /// Negative log-likelihood of the token under this model and under the base model.
    pub nll: f32,
    pub nll_base: f32,
    /// KL(base || this model) at this position.
    pub kld: f64,
    /// Whether both models rank the same token first.
    pub same_top: bool,
    /// p(token) under this model minus under the base model.
    pub p_diff: f32,
}

impl KlSample {
    /// Compares `logits` with the base row at the position that predicts `tok`, as llama.cpp's
    /// `kl_divergence` does (base probabilities below e^-16 are left out of the sum).
    pub fn new(logits: &[f32], base: &QuantRow, tok: usize) -> KlSample {
        let (imax, max) = argmax(logits);
        let log_sum_exp = sum_exp(logits, max).ln() as f32;
        let nll = max + log_sum_exp - logits[tok];
        let nll_base = -base.log_prob(tok);
        let log_norm = max + log_sum_exp;
        let mut kld = 0.0f64;
        let mut imax_base = 0;
        let mut best_base = base.log_prob(0);
        for (i, &l) in logits.iter().enumerate() {
            let lp_base = base.log_prob(i);
            if lp_base > best_base {
                best_base = lp_base;
                imax_base = i;
            }
            if lp_base > -16.0 {
                kld += f64::from(lp_base.exp() * (lp_base - l + log_norm));
            }
        }
        KlSample {
            nll,
            nll_base,
            kld,
            same_top: imax == imax_base,
            p_diff: (-nll).exp() - (-nll_base).exp(),
        }
    }
}

/// Running sums of the negative log-likelihood.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PplStats {
    pub nll: f64,
    pub nll2: f64,
    pub count: usize,
}

impl PplStats {
    pub fn add(&mut self, nll: f64) {
        self.nll += nll;
        self.nll2 += nll * nll;
        self.count += 1;
    }

    /// `exp(mean nll)`.
    pub fn ppl(&self) -> f64 {
        (self.nll / self.count as f64).exp()
    }

    /// The perplexity and its uncertainty, `ppl * sqrt(var(nll) / (count - 1))` with the variance
    /// of the population, as llama.cpp's final estimate; `None` when the variance is not positive.
    pub fn estimate(&self) -> Option<(f64, f64)> {
        let n = self.count as f64;
        let mean = self.nll / n;
        let var = self.nll2 / n - mean * mean;
        let ppl = mean.exp();
        (var > 0.0 && self.count > 1).then(|| (ppl, (var / (n - 1.0)).sqrt() * ppl))
    }
}

/// The mean of a quantity from its sum and sum of squares, and the uncertainty of that mean
/// (zero for fewer than 11 values), as llama.cpp's `mean_and_uncertainty`.
pub fn mean_and_uncertainty(sum: f64, sum2: f64, count: usize) -> (f64, f64) {
    if count < 1 {
        return (0.0, 0.0);
    }
    let n = count as f64;
    let f = sum / n;
    let df = sum2 / n - f * f;
    let df = if df > 0.0 && count > 10 {
        (df / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (f, df)
}

/// The covariance of two means (zero for fewer than 10 values), as llama.cpp's `covariance`.
pub fn covariance(sum_a: f64, sum_b: f64, sum_ab: f64, count: usize) -> f64 {
    if count < 10 {
        return 0.0;
    }
    let n = count as f64;
    (sum_ab / n - (sum_a / n) * (sum_b / n)) / (n - 1.0)
}

/// Linear interpolation between the sorted `values` at `fraction` of the way (f32, like
/// llama.cpp's `percentile`). `values` must not be empty.
pub fn percentile(values: &[f32], fraction: f32) -> f32 {
    if fraction <= 0.0 {
        return values[0];
    }
    if fraction >= 1.0 {
        return values[values.len() - 1];
    }
    let p = fraction * (values.len() - 1) as f32;
    let ip = p as usize;
    let p = p - ip as f32;
    (1.0 - p) * values[ip] + p * values[(ip + 1).min(values.len() - 1)]
}

/// The median of sorted `values` (the mean of the middle two for an even count).
pub fn median(values: &[f32]) -> f32 {
    let n = values.len();
    if n.is_multiple_of(2) {
        0.5 * (values[n / 2] + values[n / 2 - 1])
    } else {
        values[n / 2]
    }
}

/// Running sums over the positions compared with the base model, and every position's KLD and
/// Δp for the percentiles.
#[derive(Debug, Clone, Default)]
pub struct KlStats {
    pub sum_nll: f64,
    pub sum_nll2: f64,
    pub sum_nll_base: f64,
    pub sum_nll_base2: f64,
    pub sum_nll_nll_base: f64,
    pub sum_kld: f64,
    pub sum_kld2: f64,
    pub sum_p_diff: f64,
    pub sum_p_diff2: f64,
    pub sum_p_diff4: f64,
    pub max_p_diff: f32,
    pub n_same_top: usize,
    pub count: usize,
    pub kld_values: Vec<f32>,
    pub p_diff_values: Vec<f32>,
}

impl KlStats {
    pub fn add(&mut self, s: &KlSample) {
        // The products are f32 where llama.cpp's are `float`.
        self.sum_nll += f64::from(s.nll);
        self.sum_nll2 += f64::from(s.nll * s.nll);
        self.sum_nll_base += f64::from(s.nll_base);
        self.sum_nll_base2 += f64::from(s.nll_base * s.nll_base);
        self.sum_nll_nll_base += f64::from(s.nll * s.nll_base);
        self.sum_kld += s.kld;
        self.sum_kld2 += s.kld * s.kld;
        let p_diff2 = f64::from(s.p_diff * s.p_diff);
        self.sum_p_diff += f64::from(s.p_diff);
        self.sum_p_diff2 += p_diff2;
        self.sum_p_diff4 += p_diff2 * p_diff2;
        self.max_p_diff = self.max_p_diff.max(s.p_diff.abs());
        self.n_same_top += usize::from(s.same_top);
        self.count += 1;
        self.kld_values.push(s.kld as f32);
        self.p_diff_values.push(s.p_diff);
    }

    /// ln(PPL) of this model, with its uncertainty.
    pub fn log_ppl(&self) -> (f64, f64) {
        mean_and_uncertainty(self.sum_nll, self.sum_nll2, self.count)
    }

    /// ln(PPL) of the base model, with its uncertainty.
    pub fn log_ppl_base(&self) -> (f64, f64) {
        mean_and_uncertainty(self.sum_nll_base, self.sum_nll_base2, self.count)
    }

    /// The covariance of the two ln(PPL)s.
    pub fn log_ppl_cov(&self) -> f64 {
        covariance(
            self.sum_nll,
            self.sum_nll_base,
            self.sum_nll_nll_base,
            self.count,
        )
    }

    /// ln(PPL(Q)/PPL(base)) with its uncertainty.
    pub fn log_ppl_ratio(&self) -> (f64, f64) {
        let (a, da) = self.log_ppl();
        let (b, db) = self.log_ppl_base();
        (a - b, (da * da + db * db - 2.0 * self.log_ppl_cov()).sqrt())
    }

    /// Mean KL divergence with its uncertainty.
    pub fn kld(&self) -> (f64, f64) {
        mean_and_uncertainty(self.sum_kld, self.sum_kld2, self.count)
    }

    /// RMS of Δp with its uncertainty.
    pub fn p_diff_rms(&self) -> (f64, f64) {
        let (mse, dmse) = mean_and_uncertainty(self.sum_p_diff2, self.sum_p_diff4, self.count);
        let rms = mse.sqrt();
        (rms, 0.5 / rms * dmse)
    }

    /// The fraction of positions where both models rank the same token first, with its
    /// (binomial) uncertainty.
    pub fn same_top(&self) -> (f64, f64) {
        let p = self.n_same_top as f64 / self.count as f64;
        (p, (p * (1.0 - p) / (self.count as f64 - 1.0)).sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol, "{a} vs {b}");
    }

    #[test]
    fn plan_follows_llama_cpp() {
        let p = Plan::new(1000, 128, 2048, None).unwrap();
        assert_eq!((p.n_chunk, p.n_seq, p.n_batch, p.first), (7, 7, 896, 64));
        assert_eq!(p.n_scored(), 63);
        let p = Plan::new(1000, 128, 300, Some(3)).unwrap();
        assert_eq!((p.n_chunk, p.n_seq, p.n_batch), (3, 2, 256));
        assert_eq!(p.passes(), vec![(0..64, false), (64..128, true)]);
        let p = Plan::new(1000, 128, 100, Some(99)).unwrap();
        assert_eq!((p.n_chunk, p.n_seq, p.n_batch), (7, 1, 100));
        // Logits only from `first` on: the batch that straddles it is cut there.
        assert_eq!(
            p.passes(),
            vec![(0..64, false), (64..100, true), (100..128, true)]
        );
        let p = Plan::new(1000, 128, 128, None).unwrap();
        assert_eq!(p.passes(), vec![(0..64, false), (64..128, true)]);
    }

    #[test]
    fn plan_refuses_what_cannot_be_scored() {
        let e = Plan::new(255, 128, 512, None).unwrap_err();
        assert!(e.contains("you need at least 256 tokens"), "{e}");
        assert!(e.contains("only 255 tokens"), "{e}");
        assert!(Plan::new(1000, 128, 512, Some(0)).is_err());
        assert!(Plan::new(1000, 3, 512, None).is_err());
        assert!(Plan::new(1000, 128, 0, None).is_err());
    }

    #[test]
    fn nll_is_the_negative_log_softmax() {
        // -(1 - 3) + ln(e^-2 + e^-1 + 1)
        close(nll(&[1.0, 2.0, 3.0], 0), 2.407_605_964_444_380_6, 1e-6);
        close(nll(&[5.0, 5.0, 5.0, 5.0], 2), 4f64.ln(), 1e-12);
    }

    #[test]
    fn perplexity_and_its_uncertainty() {
        let mut s = PplStats::default();
        for v in [1.0, 2.0, 3.0, 4.0] {
            s.add(v);
        }
        // exp(2.5); sqrt(population variance 1.25 / 3) * exp(2.5)
        close(s.ppl(), 12.182_493_960_703_473, 1e-9);
        let (ppl, err) = s.estimate().unwrap();
        close(ppl, 12.182_493_960_703_473, 1e-9);
        close(err, 7.863_766_037_512_831, 1e-9);
        let mut flat = PplStats::default();
        flat.add(2.0);
        flat.add(2.0);
        assert_eq!(flat.estimate(), None);
    }

    #[test]
    fn quantized_log_probs_cover_16_nats() {
        let logits = [0.0, -1.0, -20.0, 5.0];
        let (row, nll_tok) = QuantRow::new(&logits, 1);
        // max 5, bottom max(-20, 5 - 16) = -11; 11/16 of the way for logit 0.
        assert_eq!(row.q, vec![45055, 40959, 0, 65535]);
        close(f64::from(row.scale), 16.0 / 65535.0, 1e-9);
        close(f64::from(row.min_log_prob), -16.009_174_484_605_495, 1e-5);
        close(nll_tok, nll(&logits, 1), 1e-5);
        // Within half a step (16 / 65535 / 2 = 1.2e-4 nats) of the exact log-softmax.
        for i in [0, 1, 3] {
            close(f64::from(row.log_prob(i)), -nll(&logits, i), 2e-4);
        }
        // A flat row has no scale: every log-probability is -ln(n).
        let (flat, _) = QuantRow::new(&[0.5, 0.5], 0);
        assert_eq!((flat.scale, flat.q.clone()), (0.0, vec![0, 0]));
        close(f64::from(flat.log_prob(1)), -(2f64.ln()), 1e-6);
    }

    #[test]
    fn kl_sample_against_a_known_pair() {
        // base p = (1/2, 1/2), model p = (3/4, 1/4); the token is 1.
        let (base, _) = QuantRow::new(&[0.0, 0.0], 1);
        let s = KlSample::new(&[3f32.ln(), 0.0], &base, 1);
        // 1/2 ln(2/3) + 1/2 ln 2
        close(s.kld, 0.143_841_036_225_890_42, 1e-6);
        close(f64::from(s.nll), 4f64.ln(), 1e-6);
        close(f64::from(s.nll_base), 2f64.ln(), 1e-6);
        close(f64::from(s.p_diff), -0.25, 1e-6);
        assert!(s.same_top, "both rank token 0 first (ties go to the first)");
        // The same distribution: no divergence beyond the 16-bit rounding (steps of 9.2 / 65535
        // nats here, so the base row's probabilities sum to 1 within about 1e-4).
        let logits = [0.3, -2.0, 1.7, 0.9, -7.5];
        let (base, _) = QuantRow::new(&logits, 2);
        let s = KlSample::new(&logits, &base, 2);
        assert!(
            s.kld.abs() < 1e-4 && s.p_diff.abs() < 1e-4 && s.same_top,
            "{s:?}"
        );
        let s = KlSample::new(&[0.0, 5.0, 0.0, 0.0, 0.0], &base, 2);
        assert!(!s.same_top && s.kld > 0.0);
    }

    #[test]
    fn means_covariances_percentiles() {
        // Under 11 values there is no uncertainty, as in llama.cpp.
        assert_eq!(mean_and_uncertainty(10.0, 30.0, 4), (2.5, 0.0));
        assert_eq!(mean_and_uncertainty(0.0, 0.0, 0), (0.0, 0.0));
        // 0..=10: mean 5, population variance 10, uncertainty sqrt(10 / 10).
        let (s, s2) = (0..=10).fold((0.0, 0.0), |(a, b), x| (a + x as f64, b + (x * x) as f64));
        let (m, dm) = mean_and_uncertainty(s, s2, 11);
        close(m, 5.0, 1e-12);
        close(dm, 1.0, 1e-12);
        // a = b = 0..=10: the covariance of the means is var / (n - 1) = 1.
        close(covariance(s, s, s2, 11), 1.0, 1e-12);
        assert_eq!(covariance(1.0, 1.0, 1.0, 9), 0.0);
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.5), 2.5);
        close(f64::from(percentile(&v, 0.9)), 3.7, 1e-6);
        assert_eq!((percentile(&v, 0.0), percentile(&v, 1.0)), (1.0, 4.0));
        assert_eq!((median(&v), median(&[1.0, 2.0, 9.0])), (2.5, 2.0));
    }

    #[test]
    fn kl_stats_accumulate() {
        let (base, _) = QuantRow::new(&[0.0, 0.0], 1);
        let mut k = KlStats::default();
        for _ in 0..20 {
            k.add(&KlSample::new(&[3f32.ln(), 0.0], &base, 1));
        }
        assert_eq!((k.count, k.n_same_top), (20, 20));
        let (kld, dkld) = k.kld();
        close(kld, 0.143_841_036_225_890_42, 1e-6);
        close(dkld, 0.0, 1e-9);
        let (ratio, _) = k.log_ppl_ratio();
        close(ratio, 2f64.ln(), 1e-6); // ln 4 - ln 2
        close(k.p_diff_rms().0, 0.25, 1e-6);
        assert_eq!(k.same_top(), (1.0, 0.0));
        assert_eq!(k.kld_values.len(), 20);
    }
}
