//! The generation loop, for one sequence or many: the scheduler decides which sequences run, one
//! forward pass runs all their chunks together (decode tokens and prefill chunks in the same
//! matrix products), and each sequence samples its token and turns it into text (streaming
//! detokenization, stop strings) with its own state. `frugal run` drives it with one sequence
//! ([`crate::session`]), the server with many.

use crate::disk_tier::DiskTier;
use crate::logprobs::TokenLogprobs;
use crate::sampler::{Sampler, SamplingParams};
use crate::sequence::{Emitted, Sequence};
use crate::spec::draft::DraftRequest;
use crate::spec::mtp::{Computed, MtpRequest};
use crate::spec::{Proposer, Speculator};
use frugal_constraint::{Constraint, ConstraintError};
use frugal_diskcache::DiskCache;
use frugal_kernels::ThreadPool;
use frugal_models::{KvStore, KvType, Logits, Model, ModelError, Output, SeqChunk};
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
    /// Guess and verify several tokens per step when the engine speculates (the default; a
    /// request may opt out).
    pub speculate: bool,
    /// Share cached prompt prefixes with other requests (the default); `false` neither reuses
    /// nor offers any (llama.cpp's `cache_prompt: false`).
    pub cache_prompt: bool,
    /// Share cached prefixes only with requests of the same salt (vLLM's `cache_salt`).
    pub cache_salt: Option<String>,
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
            speculate: true,
            cache_prompt: true,
            cache_salt: None,
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
    /// The stop string that ended the sequence, if one did.
    pub stop_string: Option<String>,
    pub usage: Usage,
}

/// Token counts of one sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: usize,
    /// Prompt tokens found in the prefix cache and not recomputed.
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    /// Guessed tokens verified (speculative decoding), and those accepted.
    pub draft_tokens: usize,
    pub accepted_tokens: usize,
}

/// A sequence admitted in a step: its prompt tokens found in the prefix cache, and how many of
/// those were read from the disk tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    pub id: SeqId,
    pub cached: usize,
    pub from_disk: usize,
}

/// Guesses a sequence verified in a step, and how many of them it accepted (speculative
/// decoding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub id: SeqId,
    pub guesses: Vec<u32>,
    pub accepted: usize,
}

/// What one step produced.
#[derive(Debug, Default)]
pub struct StepOutput {
    /// One event per token produced in this step, a sequence's in order (several for a
    /// sequence whose guesses were accepted).
    pub events: Vec<Event>,
    /// Sequences admitted in this step, with their prompt tokens found in the prefix cache.
    pub admitted: Vec<Admitted>,
    /// Sequences whose constraint failed (or panicked) in this step: they are ended, their
    /// blocks freed; the other sequences of the step are unaffected.
    pub failed: Vec<(SeqId, ConstraintError)>,
    /// Sequences that verified guesses in this step.
    pub verified: Vec<Verified>,
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

/// Guesses a sequence wants verified in the next step: how many, and those already made (the
/// n-gram proposer's; a draft model guesses after planning, when its positions are reserved).
type Proposal = (usize, Vec<u32>);

/// Many sequences sharing one model, one KV store and one scheduler.
pub struct BatchEngine<'a> {
    model: &'a Model,
    tokenizer: &'a Tokenizer,
    pool: &'a ThreadPool,
    kv: KvStore,
    scheduler: Scheduler,
    seqs: HashMap<SeqId, Sequence<'a>>,
    spec: Option<Speculator<'a>>,
    disk: Option<DiskTier>,
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
        // A model without a window has as many window blocks as blocks (the store ignores them).
        let n_window = match model.sliding_window() {
            Some(window) => {
                scheduler = scheduler.with_window(window, n_window_blocks);
                n_window_blocks
            }
            None => n_blocks,
        };
        let kv = model.new_kv_store_split(KvType::F32, n_blocks, n_window, block_size, n_states);
        BatchEngine {
            model,
            tokenizer,
            pool,
            kv,
            scheduler,
            seqs: HashMap::new(),
            spec: None,
            disk: None,
        }
    }

    /// Stores keys and values as `kv_type` (f32 unless this is called), the draft model's or
    /// MTP head's too.
    pub fn with_kv_type(mut self, kv_type: KvType) -> Self {
        self.kv = self.new_store(kv_type, self.kv.n_states());
        if let Some(spec) = &mut self.spec {
            spec.use_kv_type(kv_type);
        }
        self
    }

    /// Speculates with `spec` from now on (for a model with recurrent state, with a rollback
    /// slot per sequence: see [`Scheduler::enable_rollback`]).
    pub fn with_speculation(mut self, mut spec: Speculator<'a>) -> Self {
        spec.use_kv_type(self.kv.kv_type());
        self.spec = Some(spec);
        if self.model.state_bytes_per_seq() > 0 {
            // Hybrid models keep each sequence's state before a step with guesses: the store
            // grows by a rollback slot per sequence.
            self.scheduler.enable_rollback();
            let n_states = self.scheduler.states().map_or(0, |s| s.n_slots());
            self.kv = self.new_store(self.kv.kv_type(), n_states);
        }
        self
    }

    /// Keeps the prefix cache's full blocks in `cache` too, and reads prompts' prefixes back
    /// from it (after [`BatchEngine::with_kv_type`]: the cache's fingerprint must cover the KV
    /// type).
    pub fn set_disk_cache(&mut self, cache: DiskCache) {
        self.disk = Some(DiskTier::new(cache));
        self.scheduler.log_commits();
    }

    /// Logs what enters and leaves the prefix cache (full-attention blocks), for
    /// [`BatchEngine::take_cache_events`].
    pub fn log_cache_events(&mut self) {
        self.scheduler.log_cache_events();
    }

    /// What entered and left the prefix cache since the last call, in order.
    pub fn take_cache_events(&mut self) -> Vec<frugal_scheduler::CacheEvent> {
        self.scheduler.take_cache_events()
    }

    /// The prefix cache's disk tier, if any (its counters).
    pub fn disk_cache(&self) -> Option<&DiskCache> {
        self.disk.as_ref().map(DiskTier::cache)
    }

    /// A store of the same pools as the current one, in `kv_type`, with `n_states` slots.
    fn new_store(&self, kv_type: KvType, n_states: usize) -> KvStore {
        let kv = &self.kv;
        let (n_blocks, n_window, bs) = (kv.n_blocks(), kv.n_window_blocks(), kv.block_size());
        self.model
            .new_kv_store_split(kv_type, n_blocks, n_window, bs, n_states)
    }

    /// The speculation in use, if any (its counters).
    pub fn speculator(&self) -> Option<&Speculator<'a>> {
        self.spec.as_ref()
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
        let seed = match (req.cache_prompt, &req.cache_salt) {
            (false, _) => frugal_scheduler::private_seed(id),
            (true, Some(salt)) => frugal_scheduler::cache_seed(salt),
            (true, None) => 0,
        };
        let cache_prompt = req.cache_prompt;
        let (mut seq, prompt) = Sequence::new(self.tokenizer, sampler, req);
        // The disk is read only for a request the scheduler took (not for one refused, as a
        // full queue refuses many).
        let kept = self.disk.as_ref().map(|_| prompt.clone());
        self.scheduler.add_seeded(id, prompt, max_tokens, seed)?;
        if let (Some(disk), Some(prompt)) = (&mut self.disk, kept) {
            match cache_prompt {
                true => seq.filled = disk.fill(&mut self.scheduler, &mut self.kv, &prompt, seed),
                false => disk.set_private(seed, true),
            }
        }
        self.seqs.insert(id, seq);
        Ok(())
    }

    /// Cancels a sequence (a client went away) and frees its blocks.
    pub fn abort(&mut self, id: SeqId) {
        self.scheduler.finish(id, FinishReason::Aborted);
        self.forget(id);
    }

    /// Drops what the engine keeps of an ended sequence.
    fn forget(&mut self, id: SeqId) -> Option<Sequence<'a>> {
        if let Some(disk) = &mut self.disk {
            disk.set_private(frugal_scheduler::private_seed(id), false);
        }
        self.seqs.remove(&id)
    }

    /// Runs one step: one forward pass over every scheduled chunk (guesses to verify included),
    /// then the tokens of each sequence that reached the end of its prompt.
    pub fn step(&mut self) -> Result<StepOutput, EngineError> {
        let proposals = self.propose();
        let plan = self
            .scheduler
            .schedule_with_drafts(&|id| proposals.get(&id).map_or(0, |p| p.0));
        if plan.chunks.is_empty() {
            return Ok(StepOutput::default());
        }
        for id in &plan.preempted {
            if let Some(seq) = self.seqs.get_mut(id) {
                seq.spec.draft_computed = 0;
                seq.spec.mtp = Default::default();
            }
        }
        let guesses = self.guesses(&plan, proposals)?;
        let forward = self.forward(&plan, &guesses)?;
        let mut out = StepOutput {
            admitted: self.record_admissions(&plan),
            ..StepOutput::default()
        };
        let produced = self.verify(&plan, &guesses, &forward, &mut out);
        self.follow(&plan, &guesses, &out.verified, &forward.hidden, &out.failed)?;
        let sampled: Vec<Sampled> = produced
            .iter()
            .map(|(id, emitted, guessed)| Sampled {
                id: *id,
                tokens: emitted.iter().map(|e| e.token).collect(),
                stop: emitted.last().is_some_and(|e| e.stop),
                guessed: *guessed,
            })
            .collect();
        let finished: HashMap<SeqId, FinishReason> = self
            .scheduler
            .complete(&plan, &sampled)
            .into_iter()
            .collect();
        if let Some(disk) = &self.disk {
            disk.keep(&mut self.scheduler, &self.kv, &plan);
        }
        // After `complete` (which skips them: they sampled nothing), so their computed prefix
        // is committed like everyone else's before the blocks are released.
        for (id, _) in &out.failed {
            self.scheduler.finish(*id, FinishReason::Aborted);
            self.forget(*id);
        }
        for (id, emitted, _) in produced {
            let n = emitted.len();
            for (i, e) in emitted.into_iter().enumerate() {
                let finish = match (i + 1 == n, finished.get(&id)) {
                    (true, Some(&reason)) => Some(self.end(id, reason, e.stop_string.clone())),
                    _ => None,
                };
                out.events.push(Event {
                    id,
                    token: e.token,
                    text: e.text,
                    logprobs: e.logprobs,
                    finish,
                });
            }
        }
        Ok(out)
    }

    /// Removes a finished sequence: its held-back text and usage. Its text feeds the n-gram
    /// pool.
    fn end(&mut self, id: SeqId, reason: FinishReason, stop_string: Option<String>) -> Finished {
        let mut seq = self.forget(id).expect("finished sequences are known");
        if let Some(Speculator {
            proposer: Proposer::Ngram(pool),
            ..
        }) = &mut self.spec
        {
            pool.learn(seq.history());
        }
        Finished {
            reason,
            text: if stop_string.is_some() {
                String::new()
            } else {
                seq.tail()
            },
            stop_string,
            usage: Usage {
                prompt_tokens: seq.n_prompt,
                cached_tokens: seq.cached.unwrap_or(0),
                completion_tokens: seq.n_generated(),
                draft_tokens: seq.spec.proposed,
                accepted_tokens: seq.spec.accepted,
            },
        }
    }

    /// Before planning: the guesses each generating sequence wants to verify.
    fn propose(&mut self) -> HashMap<SeqId, Proposal> {
        let mut out = HashMap::new();
        let Some(spec) = &self.spec else {
            return out;
        };
        let batch = self.scheduler.pending_tokens();
        for (&id, seq) in &mut self.seqs {
            if !seq.spec.on || seq.n_generated() == 0 {
                continue;
            }
            let k = spec.length(&mut seq.spec, batch);
            let proposal = match &spec.proposer {
                _ if k == 0 => continue,
                Proposer::Ngram(pool) => {
                    let g = pool.propose(seq.history(), k);
                    (g.len(), g)
                }
                Proposer::Draft(_) | Proposer::Mtp(_) => (k, Vec::new()),
            };
            if proposal.0 >= spec.cfg.min.max(1) {
                out.insert(id, proposal);
            }
        }
        out
    }

    /// After planning: each chunk's guesses, within the positions the scheduler reserved (a
    /// draft model makes them now).
    fn guesses(
        &mut self,
        plan: &Step,
        mut proposals: HashMap<SeqId, Proposal>,
    ) -> Result<Vec<Vec<u32>>, EngineError> {
        let mut out: Vec<Vec<u32>> = plan
            .chunks
            .iter()
            .map(|c| {
                let mut g = proposals.remove(&c.id).map(|p| p.1).unwrap_or_default();
                g.truncate(c.draft);
                g
            })
            .collect();
        match &mut self.spec {
            Some(Speculator {
                proposer: Proposer::Draft(draft),
                ..
            }) => {
                let mut reqs = Vec::new();
                for c in plan.chunks.iter().filter(|c| c.draft > 0) {
                    let seq = &self.seqs[&c.id];
                    reqs.push(DraftRequest {
                        history: seq.history(),
                        computed: seq.spec.draft_computed,
                        want: c.draft,
                        blocks: self.scheduler.block_table(c.id).expect("running"),
                        guesses: Vec::new(),
                    });
                }
                draft.guess(self.pool, &mut reqs)?;
                let made: Vec<(usize, Vec<u32>)> =
                    reqs.into_iter().map(|r| (r.computed, r.guesses)).collect();
                let drafted = plan.chunks.iter().enumerate().filter(|(_, c)| c.draft > 0);
                for ((i, c), (computed, g)) in drafted.zip(made) {
                    self.seqs
                        .get_mut(&c.id)
                        .expect("running")
                        .spec
                        .draft_computed = computed;
                    out[i] = g;
                }
            }
            Some(Speculator {
                proposer: Proposer::Mtp(head),
                ..
            }) => {
                let drafted: Vec<usize> = (0..plan.chunks.len())
                    .filter(|&i| plan.chunks[i].draft > 0)
                    .collect();
                let (mut reqs, mut at) = (Vec::new(), Vec::new());
                for &i in &drafted {
                    let c = &plan.chunks[i];
                    reqs.push(MtpRequest {
                        last: *c.tokens.last().expect("chunks have tokens"),
                        pos: c.pos + c.tokens.len() - 1,
                        blocks: self.scheduler.block_table(c.id).expect("running"),
                        want: c.draft,
                        guesses: Vec::new(),
                        probs: Vec::new(),
                    });
                    at.push(&self.seqs[&c.id].spec.mtp);
                }
                head.guess(self.pool, &mut reqs, &at)?;
                for (i, r) in drafted.into_iter().zip(reqs) {
                    out[i] = r.guesses;
                }
            }
            _ => {}
        }
        let min = self.spec.as_ref().map_or(1, |s| s.cfg.min.max(1));
        for g in &mut out {
            if g.len() < min {
                g.clear();
            }
        }
        Ok(out)
    }

    /// One forward pass over the step's chunks, each followed by its guesses; logits of the
    /// chunks that sample (one row, or one per guess and one after them), in order, and every
    /// token's hidden state when the MTP head guesses.
    fn forward(&mut self, plan: &Step, guesses: &[Vec<u32>]) -> Result<Output, EngineError> {
        let joined: Vec<Vec<u32>> = plan
            .chunks
            .iter()
            .zip(guesses)
            .map(|(c, g)| match g.is_empty() {
                true => Vec::new(),
                false => [&c.tokens[..], g].concat(),
            })
            .collect();
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
            .zip(joined.iter().zip(guesses))
            .map(|((c, (blocks, window_blocks)), (joined, g))| SeqChunk {
                tokens: if g.is_empty() { &c.tokens } else { joined },
                pos: c.pos,
                blocks,
                window_blocks,
                state: c.state,
                logits: match (c.sample, g.len()) {
                    (false, _) => Logits::None,
                    (true, 0) => Logits::Last,
                    // The last token's row and each guess's.
                    (true, n) => Logits::Tail(n + 1),
                },
            })
            .collect();
        // Sequences resuming from a cached prefix start from its state snapshot; states at the
        // end of chunks that reach a snapshot point are kept for later prompts.
        for &(from, to) in plan.restores.iter().chain(&plan.saves) {
            self.kv.copy_state(from, to);
        }
        let out = match &self.spec {
            Some(Speculator {
                proposer: Proposer::Mtp(_),
                ..
            }) => self
                .model
                .forward_hidden(self.pool, &mut self.kv, &chunks)?,
            _ => Output {
                logits: self.model.forward(self.pool, &mut self.kv, &chunks)?,
                hidden: Vec::new(),
            },
        };
        for &(from, to) in &plan.snapshots {
            self.kv.copy_state(from, to);
        }
        Ok(out)
    }

    /// After verification, the MTP head follows what the model kept of each speculating
    /// sequence's chunk: its tokens and the guesses accepted.
    fn follow(
        &mut self,
        plan: &Step,
        guesses: &[Vec<u32>],
        verified: &[Verified],
        hidden: &[f32],
        failed: &[(SeqId, ConstraintError)],
    ) -> Result<(), EngineError> {
        let Some(Speculator {
            proposer: Proposer::Mtp(head),
            ..
        }) = &mut self.spec
        else {
            return Ok(());
        };
        let e = self.model.config().n_embd;
        let accepted: HashMap<SeqId, usize> = verified.iter().map(|v| (v.id, v.accepted)).collect();
        // Per speculating sequence: its first row in `hidden`, the tokens kept, where it stands.
        let mut spans = Vec::new();
        let mut start = 0;
        for (c, g) in plan.chunks.iter().zip(guesses) {
            let kept = accepted.get(&c.id).copied().unwrap_or(0);
            let ok = !failed.iter().any(|(id, _)| *id == c.id);
            if let Some(seq) = self.seqs.get_mut(&c.id).filter(|s| s.spec.on && ok) {
                let tokens = [&c.tokens[..], &g[..kept]].concat();
                spans.push((c, start, tokens, std::mem::take(&mut seq.spec.mtp)));
            }
            start += c.tokens.len() + g.len();
        }
        let mut computed: Vec<(Computed, &mut _)> = spans
            .iter_mut()
            .map(|(c, start, tokens, at)| {
                let rows = *start * e..(*start + tokens.len()) * e;
                let blocks = self.scheduler.block_table(c.id).expect("running");
                let computed = Computed {
                    tokens,
                    pos: c.pos,
                    blocks,
                    hidden: &hidden[rows],
                };
                (computed, at)
            })
            .collect();
        head.follow(self.pool, &mut computed)?;
        for (c, _, _, at) in spans {
            self.seqs.get_mut(&c.id).expect("running").spec.mtp = at;
        }
        Ok(())
    }

    /// Prefix-cache hits of sequences that ran for the first time in this step.
    fn record_admissions(&mut self, plan: &Step) -> Vec<Admitted> {
        let mut admitted = Vec::new();
        for c in &plan.chunks {
            let seq = self
                .seqs
                .get_mut(&c.id)
                .expect("scheduled sequences are known");
            if seq.cached.is_none() {
                let cached = self.scheduler.cached_tokens(c.id).unwrap_or(0);
                seq.cached = Some(cached);
                // What RAM lacked before the fill came from disk (unless evicted since).
                let f = seq.filled;
                admitted.push(Admitted {
                    id: c.id,
                    cached,
                    from_disk: cached.saturating_sub(f.in_ram).min(f.from_disk),
                });
            }
        }
        admitted
    }

    /// Each sampling chunk's tokens: its guesses verified in turn, then the token after the
    /// last one accepted. Sequences whose constraint fails go to `out.failed`, the guesses and
    /// how many stood to `out.verified`.
    fn verify(
        &mut self,
        plan: &Step,
        guesses: &[Vec<u32>],
        forward: &Output,
        out: &mut StepOutput,
    ) -> Vec<(SeqId, Vec<Emitted>, usize)> {
        let n_vocab = self.model.config().n_vocab;
        let mut rows = forward.logits.chunks_exact(n_vocab);
        let mut produced = Vec::new();
        for (c, g) in plan.chunks.iter().zip(guesses).filter(|(c, _)| c.sample) {
            let rows: Vec<&[f32]> = rows.by_ref().take(1 + g.len()).collect();
            let seq = self
                .seqs
                .get_mut(&c.id)
                .expect("scheduled sequences are known");
            match seq.verify(&rows, g, self.tokenizer.eog_ids()) {
                Ok(emitted) => {
                    // The guesses that equal the tokens produced, up to the first that does not.
                    let stood = emitted.iter().zip(g).take_while(|(e, &t)| e.token == t);
                    let accepted = stood.count();
                    if let Some(spec) = &mut self.spec {
                        spec.record(&mut seq.spec, g.len(), accepted);
                        let last = seq.history().len() - 1;
                        seq.spec.draft_computed = seq.spec.draft_computed.min(last);
                    }
                    if !g.is_empty() {
                        out.verified.push(Verified {
                            id: c.id,
                            guesses: g.clone(),
                            accepted,
                        });
                    }
                    produced.push((c.id, emitted, g.len()));
                }
                Err(e) => out.failed.push((c.id, e)),
            }
        }
        produced
    }
}
