//! Speculative decoding: a proposer guesses a decoding sequence's next tokens, the scheduler
//! reserves positions for them, the model verifies them in the step's one forward pass (beside
//! other sequences' prefill chunks and decode steps), and the sequence samples each position in
//! turn, keeping guesses while they equal what it samples.
//!
//! The guesses are deterministic (n-gram lookup, or a draft model's most likely tokens), so
//! this is rejection sampling with a one-point proposal: a guess `g` stands with probability
//! `p(g)` and, when it falls, the token drawn instead follows `p` without `g`. Sampling each
//! position from the target and comparing does exactly that, with the sequence's own sampler,
//! constraint and random state, one draw per token produced: the output is the one the
//! sequence would have produced without speculation, token for token, greedy or seeded.
//!
//! Proposers: [`ngram`] (the sequence's own text, then a pool of every sequence's text),
//! [`draft`] (a smaller model of the same vocabulary), [`mtp`] (the model's own
//! multi-token-prediction head). How many guesses a sequence verifies follows its recent
//! acceptance ([`adapt`]).

pub mod adapt;
pub mod draft;
pub mod mtp;
pub mod ngram;

use adapt::DraftLength;
use draft::DraftModel;
use frugal_models::Model;
use frugal_tokenizer::Tokenizer;
use mtp::{MtpHead, MtpSeq};
use ngram::NgramPool;

/// What a verified guess costs against a decode step of one sequence, besides the proposer's
/// own work: a decode step reads every weight once, and a few more tokens in the same pass add
/// their arithmetic (the output projection's rows above all). Measured on the 0.5B shape at 2
/// threads (a step of 1 + 4 tokens with all their logits: 2.0 steps of one), see BENCHMARKS.md.
pub const VERIFY_COST: f32 = 0.25;

/// [`VERIFY_COST`] in a step that runs `batch` tokens without guesses: the fuller the step, the
/// more of it is arithmetic and the closer a guess comes to costing what a sequence's own token
/// does (with `c` the cost alone, a step of `b` tokens takes `1 + c(b - 1)` single steps, and a
/// guess `c` of them, against `b` tokens produced).
pub fn verify_cost(batch: usize) -> f32 {
    let b = batch.max(1) as f32;
    VERIFY_COST * b / (1.0 + VERIFY_COST * (b - 1.0))
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("the draft model's vocabulary differs from the model's: {0}")]
    Vocabulary(String),
    #[error("{0} cannot be used as a draft")]
    Unsupported(String),
    #[error("the model has no multi-token-prediction layer (nextn) to guess with")]
    NoMtpLayer,
}

/// How a server speculates.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecConfig {
    /// Most guesses verified in one step.
    pub max: usize,
    /// Fewer guesses than this are not verified.
    pub min: usize,
    /// A draft model (or head) stops guessing where its best token is less likely than this.
    pub p_min: f32,
    /// Verify as many guesses as the proposer has (up to `max`) whatever the acceptance,
    /// instead of following it: for measuring a proposer.
    pub fixed: bool,
}

impl Default for SpecConfig {
    fn default() -> Self {
        SpecConfig {
            max: 8,
            min: 1,
            p_min: 0.75,
            fixed: false,
        }
    }
}

/// Guesses proposed and accepted, and verifications made, since the engine started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpecCounts {
    pub proposed: u64,
    pub accepted: u64,
    pub verifications: u64,
}

/// Where guesses come from.
pub enum Proposer<'a> {
    Ngram(NgramPool),
    Draft(DraftModel<'a>),
    Mtp(MtpHead<'a>),
}

/// A proposer with its settings and counters: what the engine speculates with.
pub struct Speculator<'a> {
    pub(crate) cfg: SpecConfig,
    pub(crate) proposer: Proposer<'a>,
    /// What proposing one guess costs against a decode step.
    pub(crate) cost: f32,
    pub(crate) counts: SpecCounts,
}

impl<'a> Speculator<'a> {
    /// N-gram lookup over each sequence's text and a pool of all sequences' text.
    pub fn ngram(cfg: SpecConfig) -> Self {
        Speculator {
            cfg,
            proposer: Proposer::Ngram(NgramPool::default()),
            cost: 0.0,
            counts: SpecCounts::default(),
        }
    }

    /// A draft model of the same vocabulary as `target`, its KV store addressed by the
    /// engine's block tables (`n_blocks` blocks of `block_size`).
    #[allow(clippy::too_many_arguments)]
    pub fn draft_model(
        cfg: SpecConfig,
        target: &Model,
        target_tokens: &Tokenizer,
        draft: &'a Model,
        draft_tokens: &Tokenizer,
        n_blocks: usize,
        block_size: usize,
    ) -> Result<Self, SpecError> {
        let d = DraftModel::new(
            target,
            target_tokens,
            draft,
            draft_tokens,
            n_blocks,
            block_size,
            cfg.p_min,
        )?;
        Ok(Speculator {
            cost: d.cost(target),
            cfg,
            proposer: Proposer::Draft(d),
            counts: SpecCounts::default(),
        })
    }

    /// The multi-token-prediction head of `model`, its KV store addressed by the engine's block
    /// tables (`n_blocks` blocks of `block_size`); refused for a model without one.
    pub fn mtp(
        cfg: SpecConfig,
        model: &'a Model,
        n_blocks: usize,
        block_size: usize,
    ) -> Result<Self, SpecError> {
        let head = MtpHead::new(model, n_blocks, block_size, cfg.p_min)?;
        Ok(Speculator {
            cost: head.cost(),
            cfg,
            proposer: Proposer::Mtp(head),
            counts: SpecCounts::default(),
        })
    }

    /// Stores the draft model's or MTP head's keys and values as `kv_type` (the engine's).
    pub(crate) fn use_kv_type(&mut self, kv_type: frugal_models::KvType) {
        match &mut self.proposer {
            Proposer::Ngram(_) => {}
            Proposer::Draft(d) => d.use_kv_type(kv_type),
            Proposer::Mtp(h) => h.use_kv_type(kv_type),
        }
    }

    /// What proposing one guess costs against a decode step (0 for n-gram lookup).
    pub fn proposer_cost(&self) -> f32 {
        self.cost
    }

    pub fn config(&self) -> &SpecConfig {
        &self.cfg
    }

    pub fn counts(&self) -> SpecCounts {
        self.counts
    }

    /// Guesses a sequence wants to verify next, from its acceptance so far, in a step that runs
    /// `batch` tokens without guesses.
    pub(crate) fn length(&self, s: &mut SeqSpec, batch: usize) -> usize {
        let probe = matches!(self.proposer, Proposer::Ngram(_));
        let cost = self.cost + verify_cost(batch);
        let k = match self.cfg.fixed {
            true => self.cfg.max,
            false => s.length.choose(self.cfg.max, cost, probe),
        };
        if k < self.cfg.min.max(1) {
            0
        } else {
            k
        }
    }

    /// Records a verification: the sequence's acceptance and the counters.
    pub(crate) fn record(&mut self, s: &mut SeqSpec, proposed: usize, accepted: usize) {
        if proposed == 0 {
            return;
        }
        s.length.record(proposed, accepted, self.cost + VERIFY_COST);
        s.proposed += proposed;
        s.accepted += accepted;
        self.counts.proposed += proposed as u64;
        self.counts.accepted += accepted as u64;
        self.counts.verifications += 1;
    }
}

/// One sequence's speculation: whether it speculates, its recent acceptance, its totals, how
/// far the draft model's cache holds its tokens, and where the MTP head stands.
#[derive(Debug, Clone, Default)]
pub(crate) struct SeqSpec {
    pub on: bool,
    length: DraftLength,
    pub proposed: usize,
    pub accepted: usize,
    pub draft_computed: usize,
    pub mtp: MtpSeq,
}

impl SeqSpec {
    pub fn new(on: bool) -> Self {
        SeqSpec {
            on,
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guess_costs_more_as_the_step_fills() {
        assert_eq!(verify_cost(1), VERIFY_COST);
        assert!((verify_cost(8) - 2.0 / 2.75).abs() < 1e-6);
        assert!(verify_cost(512) > 0.99 && verify_cost(512) < 1.0);
        assert_eq!(verify_cost(0), verify_cost(1));
    }
}
