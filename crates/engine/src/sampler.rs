//! Choosing the next token from logits: logit bias → penalties → (greedy | top-k → top-p → min-p →
//! temperature → draw), the order llama.cpp's default sampler chain uses.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How to choose tokens. Defaults match llama.cpp's command line except the temperature (1.0, as
/// the OpenAI API defaults).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 disables.
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    /// Divides positive (multiplies negative) logits of recent tokens; 1 disables.
    pub repetition_penalty: f32,
    /// OpenAI's presence penalty: subtracted once from every recent token's logit.
    pub presence_penalty: f32,
    /// OpenAI's frequency penalty: subtracted per occurrence.
    pub frequency_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub penalty_last_n: usize,
    pub logit_bias: Vec<(u32, f32)>,
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            logit_bias: Vec::new(),
            seed: None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid {param}: {msg}")]
pub struct SamplingError {
    pub param: &'static str,
    pub msg: String,
}

impl SamplingParams {
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Checks every value; the error names the parameter.
    pub fn validate(&self, n_vocab: usize) -> Result<(), SamplingError> {
        let err = |param, msg: String| Err(SamplingError { param, msg });
        if !self.temperature.is_finite() || !(0.0..=100.0).contains(&self.temperature) {
            return err(
                "temperature",
                format!("{} is not in [0, 100]", self.temperature),
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return err("top_p", format!("{} is not in (0, 1]", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return err("min_p", format!("{} is not in [0, 1]", self.min_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return err(
                "repetition_penalty",
                format!("{} must be positive", self.repetition_penalty),
            );
        }
        if !(-2.0..=2.0).contains(&self.presence_penalty) {
            return err(
                "presence_penalty",
                format!("{} is not in [-2, 2]", self.presence_penalty),
            );
        }
        if !(-2.0..=2.0).contains(&self.frequency_penalty) {
            return err(
                "frequency_penalty",
                format!("{} is not in [-2, 2]", self.frequency_penalty),
            );
        }
        for &(id, bias) in &self.logit_bias {
            if id as usize >= n_vocab {
                return err(
                    "logit_bias",
                    format!("token id {id} is outside the vocabulary of {n_vocab}"),
                );
            }
            if !(-100.0..=100.0).contains(&bias) {
                return err(
                    "logit_bias",
                    format!("bias {bias} for token {id} is not in [-100, 100]"),
                );
            }
        }
        Ok(())
    }
}

/// A sampler with its own random state.
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    scratch: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Sampler, SamplingError> {
        if !params.temperature.is_finite() || params.temperature < 0.0 {
            return Err(SamplingError {
                param: "temperature",
                msg: format!("{} must be at least 0", params.temperature),
            });
        }
        let rng = match params.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        Ok(Sampler {
            params,
            rng,
            scratch: Vec::new(),
        })
    }

    /// Logits after logit bias and penalties (what every later step sees).
    fn adjusted(&self, logits: &[f32], history: &[u32]) -> Vec<f32> {
        let p = &self.params;
        let mut l = logits.to_vec();
        for &(id, bias) in &p.logit_bias {
            if let Some(v) = l.get_mut(id as usize) {
                *v += bias;
            }
        }
        let penalize =
            p.repetition_penalty != 1.0 || p.presence_penalty != 0.0 || p.frequency_penalty != 0.0;
        if penalize && p.penalty_last_n > 0 {
            let recent = &history[history.len().saturating_sub(p.penalty_last_n)..];
            let mut counts: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
            for &t in recent {
                *counts.entry(t).or_default() += 1;
            }
            for (&t, &c) in &counts {
                if let Some(v) = l.get_mut(t as usize) {
                    if *v > 0.0 {
                        *v /= p.repetition_penalty;
                    } else {
                        *v *= p.repetition_penalty;
                    }
                    *v -= c as f32 * p.frequency_penalty + p.presence_penalty;
                }
            }
        }
        l
    }

    /// Picks the next token. `history` is the sequence so far (prompt and generated tokens).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let l = self.adjusted(logits, history);
        if self.params.temperature == 0.0 || self.params.top_k == 1 {
            return argmax(&l);
        }
        let p = self.params.clone();
        let c = &mut self.scratch;
        c.clear();
        c.extend(
            l.iter()
                .enumerate()
                .map(|(i, &v)| (i as u32, v))
                .filter(|(_, v)| *v > f32::NEG_INFINITY),
        );
        if c.is_empty() {
            return argmax(&l);
        }
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if p.top_k > 0 && p.top_k < c.len() {
            c.select_nth_unstable_by(p.top_k - 1, by_logit);
            c.truncate(p.top_k);
        }
        c.sort_unstable_by(by_logit);
        // Probabilities at temperature 1 decide the nucleus and the min-p cut, as in llama.cpp.
        let max = c[0].1;
        let probs: Vec<f32> = c.iter().map(|(_, v)| (v - max).exp()).collect();
        let total: f32 = probs.iter().sum();
        let mut keep = c.len();
        if p.top_p < 1.0 {
            let mut cum = 0.0;
            for (i, pr) in probs.iter().enumerate() {
                cum += pr / total;
                if cum >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            let cut = p.min_p * probs[0];
            keep = keep.min(probs.iter().take_while(|&&pr| pr >= cut).count().max(1));
        }
        c.truncate(keep);
        self.draw(max, p.temperature)
    }

    /// Draws one of the candidates in `scratch` (the largest logit among them `max`) with
    /// probabilities softmax(logit / temperature).
    fn draw(&mut self, max: f32, temperature: f32) -> u32 {
        let c = &self.scratch;
        let weights: Vec<f32> = c
            .iter()
            .map(|(_, v)| ((v - max) / temperature).exp())
            .collect();
        let sum: f32 = weights.iter().sum();
        let mut r = self.rng.gen::<f32>() * sum;
        for ((id, _), w) in c.iter().zip(&weights) {
            if r < *w {
                return *id;
            }
            r -= w;
        }
        c.last().map_or(0, |(id, _)| *id)
    }

    /// Log-probability of `chosen` and the `top_n` most likely tokens (log-softmax of the raw logits).
    pub fn logprobs(logits: &[f32], chosen: u32, top_n: usize) -> (f32, Vec<(u32, f32)>) {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let lse = max
            + logits
                .iter()
                .map(|v| ((v - max) as f64).exp())
                .sum::<f64>()
                .ln() as f32;
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        let n = top_n.min(idx.len());
        let cmp = |a: &u32, b: &u32| {
            logits[*b as usize]
                .total_cmp(&logits[*a as usize])
                .then(a.cmp(b))
        };
        if n > 0 && n < idx.len() {
            idx.select_nth_unstable_by(n - 1, cmp);
        }
        idx.truncate(n);
        idx.sort_unstable_by(cmp);
        let chosen_lp = logits
            .get(chosen as usize)
            .map_or(f32::NEG_INFINITY, |v| v - lse);
        (
            chosen_lp,
            idx.into_iter()
                .map(|i| (i, logits[i as usize] - lse))
                .collect(),
        )
    }
}

/// Index of the largest value, lowest index on ties.
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_logits(seed: u64, n: usize) -> Vec<f32> {
        let mut r = StdRng::seed_from_u64(seed);
        (0..n).map(|_| r.gen_range(-5.0..5.0)).collect()
    }

    #[test]
    fn greedy_is_argmax_with_lowest_id_on_ties() {
        let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
        assert_eq!(s.sample(&[1.0, 3.0, 3.0, 2.0], &[]), 1);
        for seed in 0..20 {
            let l = random_logits(seed, 1000);
            assert_eq!(s.sample(&l, &[]), argmax(&l));
        }
    }

    #[test]
    fn top_k_one_is_greedy_at_any_temperature() {
        for seed in 0..20 {
            let l = random_logits(seed, 500);
            let mut s = Sampler::new(SamplingParams {
                temperature: 2.0,
                top_k: 1,
                seed: Some(seed),
                ..Default::default()
            })
            .unwrap();
            assert_eq!(s.sample(&l, &[]), argmax(&l));
        }
    }

    #[test]
    fn same_seed_same_tokens_different_seed_different() {
        let l = random_logits(7, 300);
        let run = |seed| {
            let mut s = Sampler::new(SamplingParams {
                seed: Some(seed),
                ..Default::default()
            })
            .unwrap();
            (0..50).map(|_| s.sample(&l, &[])).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn top_p_and_min_p_stay_in_the_nucleus() {
        for seed in 0..30 {
            let l = random_logits(seed, 200);
            let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut order: Vec<usize> = (0..l.len()).collect();
            order.sort_by(|&a, &b| l[b].total_cmp(&l[a]));
            let probs: Vec<f32> = l.iter().map(|v| (v - max).exp()).collect();
            let total: f32 = probs.iter().sum();
            let mut nucleus = Vec::new();
            let mut cum = 0.0;
            for &i in &order {
                nucleus.push(i as u32);
                cum += probs[i] / total;
                if cum >= 0.5 {
                    break;
                }
            }
            let mut s = Sampler::new(SamplingParams {
                top_p: 0.5,
                seed: Some(seed),
                ..Default::default()
            })
            .unwrap();
            for _ in 0..50 {
                assert!(nucleus.contains(&s.sample(&l, &[])));
            }
            let mut s = Sampler::new(SamplingParams {
                min_p: 0.3,
                seed: Some(seed),
                ..Default::default()
            })
            .unwrap();
            for _ in 0..50 {
                let t = s.sample(&l, &[]) as usize;
                assert!(probs[t] >= 0.3 * 1.0 - 1e-6, "min_p violated");
            }
        }
    }

    #[test]
    fn penalties_and_bias() {
        let s = Sampler::new(SamplingParams {
            repetition_penalty: 2.0,
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            logit_bias: vec![(3, -100.0)],
            ..Default::default()
        })
        .unwrap();
        let l = s.adjusted(&[2.0, -2.0, 1.0, 5.0], &[0, 0, 1]);
        assert_eq!(l[0], 2.0 / 2.0 - 2.0 * 0.25 - 0.5);
        assert_eq!(l[1], -2.0 * 2.0 - 0.25 - 0.5);
        assert_eq!(l[2], 1.0);
        assert_eq!(l[3], -95.0);
        let mut g = Sampler::new(SamplingParams {
            logit_bias: vec![(3, -100.0)],
            ..SamplingParams::greedy()
        })
        .unwrap();
        assert_ne!(g.sample(&[0.0, 0.0, 0.0, 50.0], &[]), 3);
    }

    #[test]
    fn validation_names_the_parameter() {
        let bad = |p: SamplingParams| p.validate(10).unwrap_err().param;
        assert_eq!(
            bad(SamplingParams {
                temperature: -1.0,
                ..Default::default()
            }),
            "temperature"
        );
        assert_eq!(
            bad(SamplingParams {
                top_p: 0.0,
                ..Default::default()
            }),
            "top_p"
        );
        assert_eq!(
            bad(SamplingParams {
                top_p: 1.5,
                ..Default::default()
            }),
            "top_p"
        );
        assert_eq!(
            bad(SamplingParams {
                min_p: 2.0,
                ..Default::default()
            }),
            "min_p"
        );
        assert_eq!(
            bad(SamplingParams {
                presence_penalty: 3.0,
                ..Default::default()
            }),
            "presence_penalty"
        );
        assert_eq!(
            bad(SamplingParams {
                logit_bias: vec![(10, 1.0)],
                ..Default::default()
            }),
            "logit_bias"
        );
        assert!(SamplingParams::default().validate(10).is_ok());
    }

    #[test]
    fn logprobs_are_normalized() {
        let l = [1.0f32, 2.0, 3.0];
        let (lp, top) = Sampler::logprobs(&l, 2, 2);
        let total: f32 = l.iter().map(|v| (v - 3.0f32).exp()).sum();
        assert!((lp - (-total.ln())).abs() < 1e-6);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![2, 1]);
    }
}
