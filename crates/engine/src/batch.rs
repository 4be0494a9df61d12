//! The continuous-batching step: the scheduler decides which sequences run, one forward pass runs
//! all their chunks together (decode tokens and prefill chunks in the same matrix products), and
//! each sequence samples with its own sampler. A server drives this from its engine thread.

use crate::sampler::{Sampler, SamplingParams};
use frugal_kernels::ThreadPool;
use frugal_models::{KvStore, Logits, Model, ModelError, SeqChunk};
use frugal_scheduler::{Finish, Rejected, Scheduler, SchedulerConfig, SeqId};
use std::collections::HashMap;

/// A token produced for a sequence, and whether the sequence ended with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: SeqId,
    pub token: u32,
    pub finish: Option<Finish>,
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

    /// Runs one step; returns the tokens sampled in it.
    pub fn step(&mut self) -> Result<Vec<Event>, BatchError> {
        let plan = self.scheduler.schedule();
        if plan.chunks.is_empty() {
            return Ok(Vec::new());
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
            let t = s.sampler.sample(row, &s.history);
            s.history.push(t);
            sampled.push((c.id, t));
        }
        let mut finished: HashMap<SeqId, Finish> = self
            .scheduler
            .complete(&plan, &sampled)
            .into_iter()
            .collect();
        for &(id, t) in &sampled {
            if self.eog.contains(&t) && !finished.contains_key(&id) {
                self.scheduler.finish(id, Finish::Stop);
                finished.insert(id, Finish::Stop);
            }
        }
        for id in finished.keys() {
            self.seqs.remove(id);
        }
        Ok(sampled
            .into_iter()
            .map(|(id, token)| Event {
                id,
                token,
                finish: finished.get(&id).copied(),
            })
            .collect())
    }
}
