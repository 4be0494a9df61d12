//! Log-probabilities reported with sampled tokens (OpenAI's `logprobs` / `top_logprobs`).

/// Log-probabilities of a sampled token and of the `top` most likely tokens at its position.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

impl TokenLogprobs {
    /// The log-probability of `token` and of the `top` most likely tokens under `logits` (the
    /// model's, before any sampling transform or constraint).
    pub fn new(logits: &[f32], token: u32, top: usize) -> TokenLogprobs {
        let lse = log_sum_exp(logits);
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        let top = top.min(idx.len());
        let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);
        if top > 0 && top < idx.len() {
            idx.select_nth_unstable_by(top - 1, by_logit);
        }
        idx.truncate(top);
        idx.sort_by(by_logit);
        TokenLogprobs {
            logprob: (logits[token as usize] as f64 - lse) as f32,
            top: idx
                .into_iter()
                .map(|i| (i, (logits[i as usize] as f64 - lse) as f32))
                .collect(),
        }
    }
}

/// `log Σ exp(logits)`, in f64 for a stable sum over a large vocabulary.
fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    max + logits
        .iter()
        .map(|&l| (l as f64 - max).exp())
        .sum::<f64>()
        .ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprobs_are_normalized_and_ordered() {
        let logits = [1.0f32, 3.0, 2.0, -1.0];
        let lp = TokenLogprobs::new(&logits, 2, 2);
        let total: f64 = logits
            .iter()
            .map(|&l| TokenLogprobs::new(&logits, 0, 0).logprob as f64 + (l - logits[0]) as f64)
            .map(f64::exp)
            .sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert_eq!(lp.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(lp.top[1].1, lp.logprob);
    }
}
