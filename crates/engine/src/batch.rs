//! The continuous-batching step: the scheduler decides which sequences run, one forward pass runs
//! all their chunks together (decode tokens and prefill chunks in the same matrix products), and
//! each sequence samples with its own sampler. A server drives this from its engine thread.

use crate::constraint::{Constraint, ConstraintError};
use crate::sampler::{Sampler, SamplingParams};
use frugal_kernels::ThreadPool;
use frugal_models::{KvStore, Logits, Model, ModelError, SeqChunk};
use frugal_scheduler::{Finish, Rejected, Scheduler, SchedulerConfig, SeqId};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A token produced for a sequence, and whether the sequence ended with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: SeqId,
    pub token: u32,
    pub finish: Option<Finish>,
    /// The token's log-probability under the model (before sampling transforms) and the most
    /// likely alternatives, when the sequence asked for them.
    pub logprobs: Option<TokenLogprobs>,
}

/// What one step produced.
#[derive(Debug, Default)]
pub struct StepOutput {
    /// One token per sequence that sampled in this step.
    pub events: Vec<Event>,
    /// Sequences whose constraint failed (or panicked) in this step: they are aborted, their
    /// blocks freed; the other sequences of the step are unaffected.
    pub failed: Vec<(SeqId, ConstraintError)>,
}

/// Log-probabilities of a sampled token and of the `top` most likely tokens at its position.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// Per-sequence options beyond sampling.
#[derive(Default)]
pub struct SeqOptions {
    /// Report log-probabilities with this many alternatives (0: the sampled token's only).
    pub logprobs: Option<usize>,
    /// Masks the logits before sampling (grammars, reasoning budgets).
    pub constraint: Option<Box<dyn Constraint>>,
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Rejected(#[from] Rejected),
    #[error(transparent)]
    Sampling(#[from] crate::sampler::SamplingError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("sequence id {0} is already in use")]
    DuplicateId(SeqId),
}

struct SeqState {
    sampler: Sampler,
    history: Vec<u32>,
    opts: SeqOptions,
}

/// Many sequences sharing one model, one KV store and one scheduler.
pub struct BatchEngine<'a> {
    model: &'a Model,
    pool: &'a ThreadPool,
    kv: KvStore,
    scheduler: Scheduler,
    seqs: HashMap<SeqId, SeqState>,
    eog: Vec<u32>,
}

impl<'a> BatchEngine<'a> {
    pub fn new(
        model: &'a Model,
        pool: &'a ThreadPool,
        cfg: SchedulerConfig,
        n_blocks: usize,
        block_size: usize,
        eog: Vec<u32>,
    ) -> Self {
        BatchEngine {
            model,
            pool,
            kv: model.new_kv_store(n_blocks, block_size),
            scheduler: Scheduler::new(cfg, n_blocks, block_size),
            seqs: HashMap::new(),
            eog,
        }
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// Queues a request; errors say why it can never run.
    pub fn add(
        &mut self,
        id: SeqId,
        prompt: Vec<u32>,
        max_tokens: usize,
        params: SamplingParams,
    ) -> Result<(), BatchError> {
        self.add_with(id, prompt, max_tokens, params, SeqOptions::default())
    }

    /// [`BatchEngine::add`] with log-probabilities or a constraint.
    pub fn add_with(
        &mut self,
        id: SeqId,
        prompt: Vec<u32>,
        max_tokens: usize,
        params: SamplingParams,
        opts: SeqOptions,
    ) -> Result<(), BatchError> {
        if self.seqs.contains_key(&id) {
            return Err(BatchError::DuplicateId(id));
        }
        params.validate(self.model.config().n_vocab)?;
        let sampler = Sampler::new(params)?;
        self.scheduler.add(id, prompt.clone(), max_tokens)?;
        self.seqs.insert(
            id,
            SeqState {
                sampler,
                history: prompt,
                opts,
            },
        );
        Ok(())
    }

    /// Cancels a sequence (a client went away) and frees its blocks.
    pub fn abort(&mut self, id: SeqId) {
        self.scheduler.finish(id, Finish::Aborted);
        self.seqs.remove(&id);
    }

    pub fn is_idle(&self) -> bool {
        self.scheduler.is_idle()
    }

    /// Runs one step; returns the tokens sampled in it and the sequences that failed.
    pub fn step(&mut self) -> Result<StepOutput, BatchError> {
        let plan = self.scheduler.schedule();
        if plan.chunks.is_empty() {
            return Ok(StepOutput::default());
        }
        let tables: Vec<Vec<u32>> = plan
            .chunks
            .iter()
            .map(|c| {
                self.scheduler
                    .block_table(c.id)
                    .expect("scheduled sequences have blocks")
                    .to_vec()
            })
            .collect();
        let chunks: Vec<SeqChunk> = plan
            .chunks
            .iter()
            .zip(&tables)
            .map(|(c, t)| SeqChunk {
                tokens: &c.tokens,
                pos: c.pos,
                blocks: t,
                logits: if c.sample { Logits::Last } else { Logits::None },
            })
            .collect();
        let logits = self.model.forward(self.pool, &mut self.kv, &chunks)?;
        let n_vocab = self.model.config().n_vocab;
        let mut sampled = Vec::new();
        let mut logprobs = HashMap::new();
        let mut constraint_done = Vec::new();
        let mut failed = Vec::new();
        for (c, row) in plan
            .chunks
            .iter()
            .filter(|c| c.sample)
            .zip(logits.chunks_exact(n_vocab))
        {
            let s = self
                .seqs
                .get_mut(&c.id)
                .expect("scheduled sequences are known");
            let lp = s.opts.logprobs.map(|top| token_logprobs(row, top));
            let t = match s.opts.constraint.as_mut() {
                None => s.sampler.sample(row, &s.history),
                Some(con) => {
                    let mut masked = row.to_vec();
                    // A constraint is code from outside the engine: a panic in it fails its own
                    // sequence only. Nothing of the engine's is borrowed inside the closure but
                    // the constraint (dropped with the aborted sequence), the sampler and the
                    // logits copy, so no engine state is left half-updated.
                    let t = catch_unwind(AssertUnwindSafe(|| {
                        con.mask(&mut masked)
                            .map(|()| s.sampler.sample(&masked, &s.history))
                            .and_then(|t| con.accept(t).map(|done| (t, done)))
                    }))
                    .unwrap_or_else(|panic| {
                        Err(ConstraintError(format!(
                            "the constraint panicked: {}",
                            panic_message(&*panic)
                        )))
                    });
                    match t {
                        Ok((t, done)) => {
                            if done {
                                constraint_done.push(c.id);
                            }
                            t
                        }
                        Err(e) => {
                            failed.push((c.id, e));
                            continue;
                        }
                    }
                }
            };
            if let Some(mut lp) = lp {
                lp.logprob = log_softmax_at(row, t);
                logprobs.insert(c.id, lp);
            }
            s.history.push(t);
            sampled.push((c.id, t));
        }
        let mut finished: HashMap<SeqId, Finish> = self
            .scheduler
            .complete(&plan, &sampled)
            .into_iter()
            .collect();
        for &(id, t) in &sampled {
            let end = self.eog.contains(&t) || constraint_done.contains(&id);
            if end && !finished.contains_key(&id) {
                self.scheduler.finish(id, Finish::Stop);
                finished.insert(id, Finish::Stop);
            }
        }
        for id in finished.keys() {
            self.seqs.remove(id);
        }
        // After `complete` (which skips them: they sampled nothing), so their computed prefix
        // is committed like everyone else's before the blocks are released.
        for (id, _) in &failed {
            self.abort(*id);
        }
        let events = sampled
            .into_iter()
            .map(|(id, token)| Event {
                id,
                token,
                finish: finished.get(&id).copied(),
                logprobs: logprobs.remove(&id),
            })
            .collect();
        Ok(StepOutput { events, failed })
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

/// `log softmax(logits)[t]`, computed in f64 for a stable sum over a large vocabulary.
fn log_softmax_at(logits: &[f32], t: u32) -> f32 {
    (logits[t as usize] as f64 - log_sum_exp(logits)) as f32
}

fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    max + logits
        .iter()
        .map(|&l| (l as f64 - max).exp())
        .sum::<f64>()
        .ln()
}

/// The `top` most likely tokens with their log-probabilities (the sampled token's is filled in
/// by the caller).
fn token_logprobs(logits: &[f32], top: usize) -> TokenLogprobs {
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
        logprob: 0.0,
        top: idx
            .into_iter()
            .map(|i| (i, (logits[i as usize] as f64 - lse) as f32))
            .collect(),
    }
}
