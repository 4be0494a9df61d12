//! One sequence generating text on one model: `frugal run` and `frugal run --chat`, through the
//! same [`BatchEngine`] as the server, with a batch of one.
//!
//! The session's KV cache outlives each generation: its blocks stay in the prefix cache, so a new
//! prompt that starts with tokens already computed (the next turn of a chat) only prefills what
//! is new (from the last full block on).

use crate::batch::{Admitted, BatchEngine, EngineError, Request};
use crate::sampler::SamplingParams;
use crate::FinishReason;
use frugal_kernels::ThreadPool;
use frugal_models::Model;
use frugal_scheduler::{SchedulerConfig, SeqId};
use frugal_tokenizer::Tokenizer;
use std::ops::ControlFlow;
use std::time::Instant;

/// Positions per KV block.
const BLOCK: usize = 16;
/// Prompt tokens per forward pass.
const PREFILL_CHUNK: usize = 512;

/// What stops a generation and how tokens are chosen.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
}

/// Counts and timings of one generation.
#[derive(Debug, Clone)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    /// Prompt tokens found in the cache and not recomputed.
    pub cached_tokens: usize,
    pub generated_tokens: usize,
    /// Until the first token.
    pub prefill_seconds: f64,
    /// From the first token to the last.
    pub decode_seconds: f64,
    pub finish_reason: FinishReason,
    /// The generated token ids (including a final end-of-generation token, if any).
    pub tokens: Vec<u32>,
    /// Guessed tokens verified (speculative decoding), and those accepted.
    pub draft_tokens: usize,
    pub accepted_tokens: usize,
}

/// A single sequence at a time, with a KV cache kept between generations.
pub struct Session<'a> {
    engine: BatchEngine<'a>,
    n_ctx: usize,
    next_id: SeqId,
}

impl<'a> Session<'a> {
    /// A session with room for `n_ctx` positions.
    pub fn new(
        model: &'a Model,
        tokenizer: &'a Tokenizer,
        pool: &'a ThreadPool,
        n_ctx: usize,
    ) -> Self {
        let cfg = SchedulerConfig {
            max_seqs: 1,
            token_budget: PREFILL_CHUNK,
            max_waiting: 1,
            n_ctx,
            snapshots: Default::default(),
        };
        let n_blocks = n_ctx.div_ceil(BLOCK);
        Session {
            engine: BatchEngine::new(model, tokenizer, pool, cfg, n_blocks, BLOCK),
            n_ctx,
            next_id: 0,
        }
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// The KV cache's blocks and positions per block (a draft model's cache takes the same).
    pub fn kv_blocks(&self) -> (usize, usize) {
        (self.n_ctx.div_ceil(BLOCK), BLOCK)
    }

    /// Stores keys and values as `kv_type` (f32 unless this is called).
    pub fn with_kv_type(mut self, kv_type: frugal_models::KvType) -> Self {
        self.engine = self.engine.with_kv_type(kv_type);
        self
    }

    /// Speculates with `spec` from now on.
    pub fn with_speculation(mut self, spec: crate::spec::Speculator<'a>) -> Self {
        self.engine = self.engine.with_speculation(spec);
        self
    }

    /// Generates a continuation of `prompt`, calling `on_text` after every step with the text
    /// that is safe to show (complete UTF-8, not part of a possible stop string; often empty).
    /// `on_text` returning `Break` cancels the generation (finish reason `Aborted`). Generation
    /// ends at `max_tokens` or at the end of the context, whichever comes first.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<GenerationStats, EngineError> {
        let room = self.n_ctx.saturating_sub(prompt.len());
        let mut req = Request::new(
            prompt.to_vec(),
            Some(params.max_tokens.min(room)),
            params.sampling.clone(),
        );
        req.stop = params.stop.clone();
        let id = self.next_id;
        self.next_id += 1;
        self.engine.add(id, req)?;

        let t0 = Instant::now();
        let mut first_token = None;
        let mut tokens = Vec::new();
        let mut cached_tokens = 0;
        let mut usage = None;
        let mut finish = FinishReason::Aborted;
        while usage.is_none() {
            let out = match self.engine.step() {
                Ok(out) => out,
                Err(e) => {
                    self.engine.abort(id);
                    return Err(e);
                }
            };
            if let Some(&Admitted { cached: c, .. }) = out.admitted.first() {
                cached_tokens = c;
            }
            let mut text = String::new();
            for ev in out.events {
                first_token.get_or_insert_with(Instant::now);
                tokens.push(ev.token);
                text.push_str(&ev.text);
                if let Some(f) = ev.finish {
                    text.push_str(&f.text);
                    finish = f.reason;
                    usage = Some(f.usage);
                }
            }
            if on_text(&text).is_break() && usage.is_none() {
                self.engine.abort(id);
                break;
            }
            // Ended without a last event (a failed constraint): nothing more will come.
            if usage.is_none() && self.engine.is_idle() {
                break;
            }
        }
        let first_token = first_token.unwrap_or_else(Instant::now);
        Ok(GenerationStats {
            prompt_tokens: prompt.len(),
            cached_tokens,
            generated_tokens: tokens.len(),
            prefill_seconds: first_token.duration_since(t0).as_secs_f64(),
            decode_seconds: first_token.elapsed().as_secs_f64(),
            finish_reason: finish,
            tokens,
            draft_tokens: usage.map_or(0, |u| u.draft_tokens),
            accepted_tokens: usage.map_or(0, |u| u.accepted_tokens),
        })
    }
}
