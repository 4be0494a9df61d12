//! The generation loop, for one sequence or many: the scheduler decides which sequences run, one
//! forward pass runs all their chunks together (decode tokens and prefill chunks in the same
//! matrix products), and each sequence samples its token and turns it into text (streaming
//! detokenization, stop strings) with its own state. `frugal run` drives it with one sequence
//! ([`crate::session`]), the server with many.

use crate::logprobs::TokenLogprobs;
use crate::sampler::{Sampler, SamplingParams};
use crate::sequence::{Choice, Sequence};
use frugal_constraint::{Constraint, ConstraintError};
use frugal_kernels::ThreadPool;
use frugal_models::{KvStore, Logits, Model, ModelError, SeqChunk};
use frugal_scheduler::{
    window_pool_blocks, FinishReason, Rejected, Sampled, Scheduler, SchedulerConfig, SeqId, Step,
};
use frugal_tokenizer::Tokenizer;
use std::collections::HashMap;

/// What to generate for one sequence.
pub struct Request {
    pub prompt: Vec<u32>,
    /// `None`: up to the end of the context.
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    /// Strings that end the generation; the text is cut before them.
    pub stop: Vec<String>,
    /// Report log-probabilities with this many alternatives (0: the sampled token's only).
    pub logprobs: Option<usize>,
    /// Masks the logits before sampling (grammars, reasoning budgets).
    pub constraint: Option<Box<dyn Constraint>>,
    /// Decode control tokens as their text (end-of-generation tokens aside), for output parsers
    /// that look for tags such as `<think>` or `<｜tool▁calls▁begin｜>`.
    pub render_special: bool,
    /// Keep going past end-of-generation tokens (vLLM's `ignore_eos`; benchmarks, reference runs).
    pub ignore_eos: bool,
}

impl Request {
    /// Plain text generation: no stop strings, logprobs, constraint or special-token text.
    pub fn new(prompt: Vec<u32>, max_tokens: Option<usize>, sampling: SamplingParams) -> Self {
        Request {
            prompt,
            max_tokens,
            sampling,
            stop: Vec::new(),
            logprobs: None,
            constraint: None,
            render_special: false,
            ignore_eos: false,
        }
    }
}

/// A token produced for a sequence, the text it released, and the end if it came.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: SeqId,
    pub token: u32,
    /// Text this token completed (possibly empty: held back for a stop string or an
    /// incomplete character).
    pub text: String,
    /// When the sequence asked for them.
    pub logprobs: Option<TokenLogprobs>,
    pub finish: Option<Finished>,
}

/// How a sequence ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub reason: FinishReason,
    /// Text released at the end (held back until the sequence ended).
    pub text: String,
    pub usage: Usage,
}

/// Token counts of one sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: usize,
    /// Prompt tokens found in the prefix cache and not recomputed.
    pub cached_tokens: usize,
    pub completion_tokens: usize,
}

/// What one step produced.
#[derive(Debug, Default)]
pub struct StepOutput {
    /// One event per sequence that sampled in this step.
    pub events: Vec<Event>,
    /// Sequences admitted in this step, with their prompt tokens found in the prefix cache.
    pub admitted: Vec<(SeqId, usize)>,
    /// Sequences whose constraint failed (or panicked) in this step: they are ended, their
    /// blocks freed; the other sequences of the step are unaffected.
    pub failed: Vec<(SeqId, ConstraintError)>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Rejected(#[from] Rejected),
    #[error(transparent)]
    Sampling(#[from] crate::sampler::SamplingError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("sequence id {0} is already in use")]
    DuplicateId(SeqId),
}

/// Many sequences sharing one model, one KV store and one scheduler.
pub struct BatchEngine<'a> {
    model: &'a Model,
    tokenizer: &'a Tokenizer,
    pool: &'a ThreadPool,
    kv: KvStore,
    scheduler: Scheduler,
    seqs: HashMap<SeqId, Sequence<'a>>,
}

impl<'a> BatchEngine<'a> {
    /// An engine whose KV cache holds `n_blocks` blocks of `block_size` positions (and, for a
    /// model with sliding-window layers, as many blocks for those layers as the running
    /// sequences' windows need: [`BatchEngine::window_blocks_for`]).
    pub fn new(
        model: &'a Model,
        tokenizer: &'a Tokenizer,
        pool: &'a ThreadPool,
        cfg: SchedulerConfig,
        n_blocks: usize,
        block_size: usize,
    ) -> Self {
        let n_window_blocks = Self::window_blocks_for(model, &cfg, n_blocks, block_size);
        Self::new_split(
            model,
            tokenizer,
            pool,
            cfg,
            n_blocks,
            n_window_blocks,
            block_size,
        )
    }

    /// Blocks the sliding-window layers' pool needs so that it never limits the running
    /// sequences (no more than `n_blocks`, which hold any window); 0 for a model without them.
    pub fn window_blocks_for(
        model: &Model,
        cfg: &SchedulerConfig,
        n_blocks: usize,
        block_size: usize,
    ) -> usize {
        model
            .sliding_window()
            .map_or(0, |w| window_pool_blocks(cfg, w, block_size).min(n_blocks))
    }

    /// [`BatchEngine::new`] with the sliding-window layers' pool sized by the caller:
    /// `n_window_blocks` blocks, given back by each sequence as they leave its window (ignored
    /// by a model without such layers).
    pub fn new_split(
        model: &'a Model,
        tokenizer: &'a Tokenizer,
        pool: &'a ThreadPool,
        cfg: SchedulerConfig,
        n_blocks: usize,
        n_window_blocks: usize,
        block_size: usize,
    ) -> Self {
        let mut scheduler = Scheduler::new(cfg, n_blocks, block_size);
        let state_bytes = model.state_bytes_per_seq();
        if state_bytes > 0 {
            scheduler = scheduler.with_states(state_bytes, model.state_window());
        }
        let n_states = scheduler.states().map_or(0, |s| s.n_slots());
        let kv = match model.sliding_window() {
            Some(window) => {
                scheduler = scheduler.with_window(window, n_window_blocks);
                model.new_kv_store_split(n_blocks, n_window_blocks, block_size, n_states)
            }
            None => model.new_kv_store(n_blocks, block_size, n_states),
        };
        BatchEngine {
            model,
            tokenizer,
            pool,
            kv,
            scheduler,
            seqs: HashMap::new(),
        }
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    pub fn is_idle(&self) -> bool {
        self.scheduler.is_idle()
    }

    /// Queues a request; errors say why it can never run (the context length is checked here,
    /// by the scheduler, and nowhere else).
    pub fn add(&mut self, id: SeqId, req: Request) -> Result<(), EngineError> {
        if self.seqs.contains_key(&id) {
            return Err(EngineError::DuplicateId(id));
        }
        req.sampling.validate(self.model.config().n_vocab)?;
        let sampler = Sampler::new(req.sampling.clone())?;
        let max_tokens = req.max_tokens;
        let (seq, prompt) = Sequence::new(self.tokenizer, sampler, req);
        self.scheduler.add(id, prompt, max_tokens)?;
        self.seqs.insert(id, seq);
        Ok(())
    }

    /// Cancels a sequence (a client went away) and frees its blocks.
    pub fn abort(&mut self, id: SeqId) {
        self.scheduler.finish(id, FinishReason::Aborted);
        self.seqs.remove(&id);
    }

    /// Runs one step: one forward pass over every scheduled chunk, then one token per sequence
    /// that reached the end of its prompt.
    pub fn step(&mut self) -> Result<StepOutput, EngineError> {
        let plan = self.scheduler.schedule();
        if plan.chunks.is_empty() {
            return Ok(StepOutput::default());
        }
        let logits = self.forward(&plan)?;
        let mut out = StepOutput {
            admitted: self.record_admissions(&plan),
            ..StepOutput::default()
        };
        let choices = self.choose(&plan, &logits, &mut out.failed);
        // Each token's text, and whether it ends its sequence, before the scheduler records it.
        let mut decoded = Vec::with_capacity(choices.len());
        let mut sampled = Vec::with_capacity(choices.len());
        for (id, choice) in choices {
            let seq = self.seqs.get_mut(&id).expect("sampled sequences are known");
            let eog = !seq.ignore_eos && self.tokenizer.eog_ids().contains(&choice.token);
            let (text, stopped) = seq.text(choice.token, eog);
            sampled.push(Sampled {
                id,
                token: choice.token,
                stop: eog || stopped || choice.complete,
            });
            decoded.push((id, choice, text, stopped));
        }
        let finished: HashMap<SeqId, FinishReason> = self
            .scheduler
            .complete(&plan, &sampled)
            .into_iter()
            .collect();
        // After `complete` (which skips them: they sampled nothing), so their computed prefix
        // is committed like everyone else's before the blocks are released.
        for (id, _) in &out.failed {
            self.scheduler.finish(*id, FinishReason::Aborted);
            self.seqs.remove(id);
        }
        for (id, choice, text, stopped) in decoded {
            let finish = finished.get(&id).map(|&reason| {
                let mut seq = self.seqs.remove(&id).expect("finished sequences are known");
                Finished {
                    reason,
                    text: if stopped { String::new() } else { seq.tail() },
                    usage: Usage {
                        prompt_tokens: seq.n_prompt,
                        cached_tokens: seq.cached.unwrap_or(0),
                        completion_tokens: seq.n_generated(),
                    },
                }
            });
            out.events.push(Event {
                id,
                token: choice.token,
                text,
                logprobs: choice.logprobs,
                finish,
            });
        }
        Ok(out)
    }

    /// One forward pass over the step's chunks; logits of the chunks that sample, in order.
    fn forward(&mut self, plan: &Step) -> Result<Vec<f32>, EngineError> {
        let tables: Vec<(&[u32], &[u32])> = plan
            .chunks
            .iter()
            .map(|c| {
                let blocks = self
                    .scheduler
                    .block_table(c.id)
                    .expect("scheduled sequences have blocks");
                // No window group: the sliding layers (if any) share the full table.
                let window = self.scheduler.window_table(c.id).unwrap_or(&[]);
                (blocks, window)
            })
            .collect();
        let chunks: Vec<SeqChunk> = plan
            .chunks
            .iter()
            .zip(tables)
            .map(|(c, (blocks, window_blocks))| SeqChunk {
                tokens: &c.tokens,
                pos: c.pos,
                blocks,
                window_blocks,
                state: c.state,
                logits: if c.sample { Logits::Last } else { Logits::None },
            })
            .collect();
        // Sequences resuming from a cached prefix start from its state snapshot; states at the
        // end of chunks that reach a snapshot point are kept for later prompts.
        for &(from, to) in &plan.restores {
            self.kv.copy_state(from, to);
        }
        let logits = self.model.forward(self.pool, &mut self.kv, &chunks)?;
        for &(from, to) in &plan.snapshots {
            self.kv.copy_state(from, to);
        }
        Ok(logits)
    }

    /// Prefix-cache hits of sequences that ran for the first time in this step.
    fn record_admissions(&mut self, plan: &Step) -> Vec<(SeqId, usize)> {
        let mut admitted = Vec::new();
        for c in &plan.chunks {
            let seq = self
                .seqs
                .get_mut(&c.id)
                .expect("scheduled sequences are known");
            if seq.cached.is_none() {
                let cached = self.scheduler.cached_tokens(c.id).unwrap_or(0);
                seq.cached = Some(cached);
                admitted.push((c.id, cached));
            }
        }
        admitted
    }

    /// Each sampling chunk's token; sequences whose constraint fails go to `failed`.
    fn choose(
        &mut self,
        plan: &Step,
        logits: &[f32],
        failed: &mut Vec<(SeqId, ConstraintError)>,
    ) -> Vec<(SeqId, Choice)> {
        let n_vocab = self.model.config().n_vocab;
        let sampling = plan.chunks.iter().filter(|c| c.sample);
        let mut choices = Vec::new();
        for (c, row) in sampling.zip(logits.chunks_exact(n_vocab)) {
            let seq = self
                .seqs
                .get_mut(&c.id)
                .expect("scheduled sequences are known");
            match seq.choose(row) {
                Ok(choice) => choices.push((c.id, choice)),
                Err(e) => failed.push((c.id, e)),
            }
        }
        choices
    }
}
