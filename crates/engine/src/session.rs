//! One sequence generating text on one model: the loop behind `frugal run` and `frugal run --chat`.
//!
//! The session keeps its KV cache between calls: a new prompt that starts with the tokens already
//! in the cache (the next turn of a chat) only prefills what is new.

use crate::sampler::{Sampler, SamplingParams};
use crate::stop::{StopMatcher, StopResult};
use frugal_kernels::ThreadPool;
use frugal_models::{KvStore, Logits, Model, ModelError, SeqChunk};
use frugal_tokenizer::{StreamDecoder, Tokenizer};
use std::time::Instant;

/// Positions per KV block.
const BLOCK: usize = 16;

/// What stops a generation and how tokens are chosen.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
}

/// Why a generation ended (OpenAI's `finish_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` reached, or the context is full.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// Counts and timings of one generation.
#[derive(Debug, Clone)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    /// Prompt tokens found in the cache and not recomputed.
    pub cached_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    pub finish_reason: FinishReason,
    /// The generated token ids (including a final end-of-generation token, if any).
    pub tokens: Vec<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the prompt has {prompt} tokens but the context holds {n_ctx}")]
    PromptTooLong { prompt: usize, n_ctx: usize },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Sampling(#[from] crate::sampler::SamplingError),
}

/// A single sequence with its own KV cache.
pub struct Session<'a> {
    model: &'a Model,
    tokenizer: &'a Tokenizer,
    pool: &'a ThreadPool,
    kv: KvStore,
    blocks: Vec<u32>,
    /// Tokens whose keys and values are in the cache, in order.
    cached: Vec<u32>,
    n_ctx: usize,
}

impl<'a> Session<'a> {
    /// A session with room for `n_ctx` positions.
    pub fn new(
        model: &'a Model,
        tokenizer: &'a Tokenizer,
        pool: &'a ThreadPool,
        n_ctx: usize,
    ) -> Self {
        let n_blocks = n_ctx.div_ceil(BLOCK);
        Session {
            model,
            tokenizer,
            pool,
            kv: model.new_kv_store(n_blocks, BLOCK),
            blocks: (0..n_blocks as u32).collect(),
            cached: Vec::new(),
            n_ctx,
        }
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Tokens currently held in the cache.
    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached
    }

    /// Brings the cache to exactly `prompt`, recomputing only past the common prefix, and returns
    /// the logits after the last prompt token and the number of reused tokens.
    fn prefill(&mut self, prompt: &[u32]) -> Result<(Vec<f32>, usize), EngineError> {
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if prompt.len() > self.n_ctx {
            return Err(EngineError::PromptTooLong {
                prompt: prompt.len(),
                n_ctx: self.n_ctx,
            });
        }
        let mut common = self
            .cached
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        // The last prompt token must run to produce logits.
        common = common.min(prompt.len() - 1);
        self.cached.truncate(common);
        let chunk = SeqChunk {
            tokens: &prompt[common..],
            pos: common,
            blocks: &self.blocks,
            logits: Logits::Last,
        };
        let logits = self.model.forward(self.pool, &mut self.kv, &[chunk])?;
        self.cached.extend_from_slice(&prompt[common..]);
        Ok((logits, common))
    }

    /// Generates a continuation of `prompt`, calling `on_text` with each piece of text as soon as it
    /// is safe to show (complete UTF-8, not part of a possible stop string).
    pub fn generate(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<GenerationStats, EngineError> {
        let mut sampler = Sampler::new(params.sampling.clone())?;
        let t0 = Instant::now();
        let (mut logits, cached_tokens) = self.prefill(prompt)?;
        let prefill_seconds = t0.elapsed().as_secs_f64();

        let t1 = Instant::now();
        let mut decoder = StreamDecoder::new(self.tokenizer, true);
        let mut stops = StopMatcher::new(params.stop.clone());
        let mut history = prompt.to_vec();
        let mut generated = Vec::new();
        let eog = self.tokenizer.eog_ids();
        let mut finish = FinishReason::Length;
        while generated.len() < params.max_tokens {
            let token = sampler.sample(&logits, &history);
            generated.push(token);
            history.push(token);
            if eog.contains(&token) {
                finish = FinishReason::Stop;
                break;
            }
            let piece = decoder.push(token);
            match stops.push(&piece) {
                StopResult::Continue(text) => on_text(&text),
                StopResult::Stopped(text) => {
                    on_text(&text);
                    finish = FinishReason::Stop;
                    break;
                }
            }
            if self.cached.len() >= self.n_ctx || generated.len() >= params.max_tokens {
                break;
            }
            let pos = self.cached.len();
            let chunk = SeqChunk {
                tokens: std::slice::from_ref(&token),
                pos,
                blocks: &self.blocks,
                logits: Logits::Last,
            };
            logits = self.model.forward(self.pool, &mut self.kv, &[chunk])?;
            self.cached.push(token);
        }
        if finish == FinishReason::Length {
            let rest = decoder.finish();
            match stops.push(&rest) {
                StopResult::Continue(text) => {
                    on_text(&text);
                    on_text(&stops.flush());
                }
                StopResult::Stopped(text) => {
                    on_text(&text);
                    finish = FinishReason::Stop;
                }
            }
        }
        Ok(GenerationStats {
            prompt_tokens: prompt.len(),
            cached_tokens,
            generated_tokens: generated.len(),
            prefill_seconds,
            decode_seconds: t1.elapsed().as_secs_f64(),
            finish_reason: finish,
            tokens: generated,
        })
    }
}
