//! One sequence's generation state inside the batch: how it chooses its next token (sampler and
//! constraint) and how its tokens become text (streaming detokenization and stop strings).

use crate::logprobs::TokenLogprobs;
use crate::sampler::Sampler;
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
        };
        (seq, req.prompt)
    }

    pub fn n_generated(&self) -> usize {
        self.history.len() - self.n_prompt
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

    /// The text `token` completes, and whether a stop string ended the sequence with it.
    /// End-of-generation tokens add no text.
    pub fn text(&mut self, token: u32, eog: bool) -> (String, bool) {
        let piece = if eog && self.render_special {
            String::new()
        } else {
            self.decoder.push(token)
        };
        match self.stop.push(&piece) {
            StopResult::Continue(t) => (t, false),
            StopResult::Stopped(t) => (t, true),
        }
    }

    /// What was held back (an incomplete character, a possible stop string's start), released
    /// when the sequence ends other than by a stop string.
    pub fn tail(&mut self) -> String {
        let rest = self.decoder.finish();
        match self.stop.push(&rest) {
            StopResult::Continue(t) => t + &self.stop.flush(),
            StopResult::Stopped(t) => t,
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
