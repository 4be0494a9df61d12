//! The speculative-decoding flags `frugal serve` and `frugal run` share.

use anyhow::{bail, Result};
use frugal_engine::spec::SpecConfig;
use frugal_server::{SpecMethod, Speculation};
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct SpecArgs {
    /// Speculative decoding: guess several tokens and verify them in one forward pass.
    /// `ngram`: guesses from the text so far (and other requests' text); `draft`: a smaller
    /// model of the same vocabulary (--draft-model); `mtp`: the model's own
    /// multi-token-prediction layer (GLM-4.5, Qwen3.5, DeepSeek-style files that keep it).
    /// Output is the same as without it.
    #[arg(long, value_enum)]
    pub spec: Option<SpecKind>,
    /// The draft model (GGUF) for `--spec draft` (implies it).
    #[arg(long, alias = "model-draft")]
    pub draft_model: Option<PathBuf>,
    /// Most guessed tokens verified per step (each sequence's length follows its acceptance).
    #[arg(long, alias = "draft-max", default_value_t = 8)]
    pub spec_max: usize,
    /// Fewer guesses than this are not verified.
    #[arg(long, default_value_t = 1)]
    pub draft_min: usize,
    /// A draft model (or MTP head) stops guessing where its best token's probability is below
    /// this.
    #[arg(long, default_value_t = 0.75)]
    pub draft_p_min: f32,
    /// Always verify as many guesses as the proposer has, up to --spec-max, instead of
    /// following each sequence's acceptance (for measuring a proposer).
    #[arg(long)]
    pub spec_fixed: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecKind {
    Ngram,
    Draft,
    Mtp,
}

impl SpecArgs {
    /// What the flags ask for, checked; `None` without `--spec` or `--draft-model`.
    pub fn speculation(&self) -> Result<Option<Speculation>> {
        let kind = match (self.spec, &self.draft_model) {
            (None, None) => return Ok(None),
            (None, Some(_)) => SpecKind::Draft,
            (Some(k), _) => k,
        };
        let method = match (kind, &self.draft_model) {
            (SpecKind::Draft, Some(p)) => SpecMethod::Draft(p.clone()),
            (SpecKind::Draft, None) => bail!("--spec draft needs --draft-model FILE"),
            (_, Some(_)) => bail!("--draft-model is for --spec draft"),
            (SpecKind::Ngram, None) => SpecMethod::Ngram,
            (SpecKind::Mtp, None) => SpecMethod::Mtp,
        };
        if self.spec_max == 0 || self.draft_min > self.spec_max {
            bail!("--spec-max must be at least 1 and at least --draft-min");
        }
        if !(0.0..=1.0).contains(&self.draft_p_min) {
            bail!("--draft-p-min must be between 0 and 1");
        }
        Ok(Some(Speculation {
            method,
            config: SpecConfig {
                max: self.spec_max,
                min: self.draft_min,
                p_min: self.draft_p_min,
                fixed: self.spec_fixed,
            },
        }))
    }
}
