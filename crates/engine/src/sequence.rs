//! One sequence's generation state inside the batch: how it chooses its next token (sampler and
//! constraint) and how its tokens become text (streaming detokenization and stop strings).

use crate::logprobs::TokenLogprobs;
use crate::sampler::Sampler;
use crate::spec::SeqSpec;
use crate::stop::{StopMatcher, StopResult};
use frugal_constraint::{Constraint, ConstraintError};
use frugal_tokenizer::{StreamDecoder, Tokenizer};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A sampled token as the sequence sees it.
pub(crate) struct Choice {
    pub token: u32,
    pub logprobs: Option<TokenLogprobs>,
    /// The constraint says the output is complete.
    pub complete: bool,
}

pub(crate) struct Sequence<'t> {
    sampler: Sampler,
    /// Prompt and generated tokens (repetition penalties look at them).
    history: Vec<u32>,
    pub n_prompt: usize,
    logprobs: Option<usize>,
    constraint: Option<Box<dyn Constraint>>,
    render_special: bool,
    pub ignore_eos: bool,
    decoder: StreamDecoder<'t>,
    stop: StopMatcher,
    /// Prompt tokens found in the prefix cache, once admitted.
    pub cached: Option<usize>,
    /// What the disk tier's fill found before the sequence was queued.
    pub filled: crate::disk_tier::Filled,
    pub spec: SeqSpec,
}

/// A token a sequence produced in a step, with its text and whether it ends the sequence.
pub(crate) struct Emitted {
    pub token: u32,
    pub logprobs: Option<TokenLogprobs>,
    pub text: String,
    /// The stop string that ended the sequence (its text is cut before it; nothing is held
    /// back).
    pub stop_string: Option<String>,
    /// The sequence ends with this token: end of generation, a stop string, or a complete
    /// constraint.
    pub stop: bool,
}

impl<'t> Sequence<'t> {
    pub fn new(
        tokenizer: &'t Tokenizer,
        sampler: Sampler,
        req: crate::batch::Request,
    ) -> (Self, Vec<u32>) {
        let seq = Sequence {
            sampler,
            history: req.prompt.clone(),
            n_prompt: req.prompt.len(),
            logprobs: req.logprobs,
            constraint: req.constraint,
            render_special: req.render_special,
            ignore_eos: req.ignore_eos,
            decoder: StreamDecoder::new(tokenizer, !req.render_special),
            stop: StopMatcher::new(req.stop),
            cached: None,
            filled: Default::default(),
            spec: SeqSpec::new(req.speculate),
        };
        (seq, req.prompt)
    }

    pub fn n_generated(&self) -> usize {
        self.history.len() - self.n_prompt
    }

    /// Prompt and generated tokens.
    pub fn history(&self) -> &[u32] {
        &self.history
    }

    /// The tokens of one step: `rows` are the logits after the sequence's last token and after
    /// each of `guesses`; each position is sampled in turn, and the step goes on to the next
    /// one while the token sampled equals the guess there and does not end the sequence.
    pub fn verify(
        &mut self,
        rows: &[&[f32]],
        guesses: &[u32],
        eog_ids: &[u32],
    ) -> Result<Vec<Emitted>, ConstraintError> {
        let mut out = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let choice = self.choose(row)?;
            let eog = !self.ignore_eos && eog_ids.contains(&choice.token);
            let (text, stop_string) = self.text(choice.token, eog);
            let stop = eog || stop_string.is_some() || choice.complete;
            let guessed = guesses.get(i) == Some(&choice.token);
            out.push(Emitted {
                token: choice.token,
                logprobs: choice.logprobs,
                text,
                stop_string,
                stop,
            });
            if stop || !guessed {
                break;
            }
        }
        Ok(out)
    }

    /// Samples the next token from the model's `logits`, masked by the constraint if any.
    pub fn choose(&mut self, logits: &[f32]) -> Result<Choice, ConstraintError> {
        let (token, complete) = match self.constraint.as_mut() {
            None => (self.sampler.sample(logits, &self.history), false),
            Some(con) => {
                let mut masked = logits.to_vec();
                let (sampler, history) = (&mut self.sampler, &self.history);
                // A constraint is code from outside the engine: a panic in it fails this
                // sequence only. Nothing but the constraint (dropped with the failed sequence),
                // the sampler and the logits copy is touched inside, so nothing of the engine
                // is left half-updated.
                catch_unwind(AssertUnwindSafe(|| {
                    con.mask(&mut masked)?;
                    let t = sampler.sample(&masked, history);
                    Ok((t, con.accept(t)?))
                }))
                .unwrap_or_else(|panic| {
                    Err(ConstraintError(format!(
                        "the constraint panicked: {}",
                        panic_message(&*panic)
                    )))
                })?
            }
        };
        self.history.push(token);
        Ok(Choice {
            token,
            logprobs: self
                .logprobs
                .map(|top| TokenLogprobs::new(logits, token, top)),
            complete,
        })
    }

    /// The text `token` completes, and the stop string that ended the sequence with it, if one
    /// did. End-of-generation tokens add no text.
    pub fn text(&mut self, token: u32, eog: bool) -> (String, Option<String>) {
        let piece = if eog && self.render_special {
            String::new()
        } else {
            self.decoder.push(token)
        };
        match self.stop.push(&piece) {
            StopResult::Continue(t) => (t, None),
            StopResult::Stopped(t, stop) => (t, Some(stop)),
        }
    }

    /// What was held back (an incomplete character, a possible stop string's start), released
    /// when the sequence ends other than by a stop string.
    pub fn tail(&mut self) -> String {
        let rest = self.decoder.finish();
        match self.stop.push(&rest) {
            StopResult::Continue(t) => t + &self.stop.flush(),
            StopResult::Stopped(t, _) => t,
        }
    }
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Request;
    use crate::sampler::SamplingParams;

    fn tokenizer() -> Tokenizer {
        Tokenizer::from_file(&frugal_fixtures::dir().join("hf/qwen2/tokenizer.json")).unwrap()
    }

    /// Logits of a distribution over the first tokens (the rest impossible).
    fn logits(p: &[f64]) -> Vec<f32> {
        let mut l = vec![-1e4f32; 576];
        for (i, &pi) in p.iter().enumerate() {
            l[i] = pi.ln() as f32;
        }
        l
    }

    /// Pearson's statistic of `counts` against `p` (all of whose cells are expected ≥ 5).
    fn chi_square(counts: &[u64], p: &[f64]) -> f64 {
        let n: u64 = counts.iter().sum();
        let expect = |i: usize| p[i] * n as f64;
        (0..p.len())
            .map(|i| (counts[i] as f64 - expect(i)).powi(2) / expect(i))
            .sum()
    }

    /// Verifying guesses is rejection sampling from the target: over many seeds the first token
    /// follows the first row's distribution, a guess stands as often as the target would draw
    /// it, and the token after an accepted guess follows the second row's. The seeds are fixed,
    /// so the test cannot flake; the thresholds are chi-square's 0.1 % points (4 degrees of
    /// freedom: 18.47) and five standard deviations for the acceptance rate.
    #[test]
    fn verified_tokens_follow_the_target_distribution() {
        let tok = tokenizer();
        let p0 = [0.4, 0.3, 0.15, 0.1, 0.05];
        let p1 = [0.05, 0.1, 0.15, 0.3, 0.4];
        let (row0, row1) = (logits(&p0), logits(&p1));
        let guesses = [1u32, 4];
        let (mut first, mut second, mut accepted) = ([0u64; 5], [0u64; 5], 0u64);
        let n = 20_000u64;
        for seed in 0..n {
            let params = SamplingParams {
                seed: Some(seed),
                ..SamplingParams::default()
            };
            let sampler = Sampler::new(params.clone()).unwrap();
            let req = Request::new(vec![1, 2, 3], Some(8), params.clone());
            let (mut seq, _) = Sequence::new(&tok, sampler, req);
            let out = seq.verify(&[&row0, &row1, &row1], &guesses, &[]).unwrap();
            first[out[0].token as usize] += 1;
            if out[0].token == guesses[0] {
                accepted += 1;
                second[out[1].token as usize] += 1;
            }
            // The same seed without a guess draws the same first token.
            let req = Request::new(vec![1, 2, 3], Some(8), params.clone());
            let (mut plain, _) = Sequence::new(&tok, Sampler::new(params).unwrap(), req);
            assert_eq!(
                plain.verify(&[&row0], &[], &[]).unwrap()[0].token,
                out[0].token
            );
        }
        assert!(chi_square(&first, &p0) < 18.47, "{first:?}");
        assert!(chi_square(&second, &p1) < 18.47, "{second:?}");
        let sd = (n as f64 * p0[1] * (1.0 - p0[1])).sqrt();
        assert!(
            (accepted as f64 - n as f64 * p0[1]).abs() < 5.0 * sd,
            "{accepted}"
        );
    }
}
