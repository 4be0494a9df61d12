//! Continuous batching as plain data: which sequences run in the next forward step and how many
//! of their tokens, under a per-step token budget, with KV blocks from [`BlockManager`].
//!
//! Each step, running sequences go first (a decoding sequence needs one token, a prefilling one
//! gets a chunk of its prompt), then waiting requests are admitted while budget, sequence slots
//! and blocks last. When blocks run out, the most recently admitted sequence is preempted: its
//! blocks are released and it goes back to the front of the queue to be recomputed later (its
//! prefix may still be in the cache). Nothing here touches a tensor; the engine turns a
//! [`Step`] into a forward pass and reports back with [`Scheduler::complete`].
//!
//! For hybrid models ([`Scheduler::with_states`]) each running sequence also holds a recurrent-
//! state slot, and prefix caching needs a snapshot of that state where the cached prefix ends:
//! prefill chunks are cut at snapshot points (every `snapshot_every` tokens, the last block
//! boundary of the prompt, and where a prompt's cached blocks end), the step says which states
//! to copy into snapshot slots after the forward pass ([`Step::snapshots`]) and which snapshots
//! to copy into a sequence's slot before it ([`Step::restores`]); a prefix is reused only up to
//! its last snapshot.
//!
//! For models with sliding-window layers ([`Scheduler::with_window`]) each running sequence also
//! holds a table in the window group: before each chunk the blocks that left the window are
//! given back, and a prefix is reused only where that group still holds the next token's window.

#![forbid(unsafe_code)]

pub use frugal_kvcache::RELEASED;
pub use frugal_kvcache::{cache_seed, chain_hashes, private_seed, CacheEvent, Committed};
use frugal_kvcache::{prefix_hash, BlockManager, SeqBlocks, SlotId, StateSlots, WindowBlocks};
use std::collections::VecDeque;

pub type SeqId = u64;

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Sequences running at once.
    pub max_seqs: usize,
    /// Tokens through the model per step (decode tokens plus prefill chunks).
    pub token_budget: usize,
    /// Requests allowed to wait; more are rejected.
    pub max_waiting: usize,
    /// Context length: prompt plus generated tokens may not exceed it.
    pub n_ctx: usize,
    /// Recurrent-state snapshots for prefix caching (hybrid models only).
    pub snapshots: SnapshotConfig,
}

/// Where and how many recurrent-state snapshots a hybrid model's prefix cache keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotConfig {
    /// Snapshot every this many tokens (rounded down to a multiple of the block size and of the
    /// model's window, at least one of each), besides at the prompt's last block boundary.
    pub every: usize,
    /// Bytes of memory the snapshots may take.
    pub budget_bytes: usize,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            every: 512,
            budget_bytes: 1 << 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("the queue is full ({0} requests waiting)")]
    QueueFull(usize),
    #[error("prompt ({prompt} tokens) plus max_tokens ({max_tokens}) exceeds the context of {n_ctx} tokens")]
    TooLong {
        prompt: usize,
        max_tokens: usize,
        n_ctx: usize,
    },
    #[error("the prompt ({prompt} tokens) needs more KV blocks than the cache has ({blocks})")]
    TooBig { prompt: usize, blocks: usize },
    #[error("the prompt is empty")]
    Empty,
}

/// One sequence's share of a step: run `tokens` at positions `pos..`, using `blocks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub id: SeqId,
    pub pos: usize,
    pub tokens: Vec<u32>,
    /// Whether this chunk ends at the sequence's last token, so a new token is sampled from it.
    pub sample: bool,
    /// Positions reserved after `tokens` for guessed tokens (speculative decoding): the engine
    /// appends up to this many, verifies them in the same forward pass and reports what it
    /// accepted in [`Sampled::tokens`]. Only decode chunks get any.
    pub draft: usize,
    /// The sequence's recurrent-state slot (hybrid models; 0 otherwise).
    pub state: SlotId,
}

/// The tokens a sequence produced in a step, and whether the engine ends the sequence with the
/// last of them (end of generation, a stop string, a completed constraint). Without guesses
/// that is one token; with them, the accepted guesses followed by the token sampled after them,
/// at most [`Chunk::draft`]` + 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sampled {
    pub id: SeqId,
    pub tokens: Vec<u32>,
    pub stop: bool,
    /// Guesses the forward pass ran after the chunk (at most [`Chunk::draft`]); fewer accepted
    /// (`tokens.len() - 1`) means the rest were rejected.
    pub guessed: usize,
}

impl Sampled {
    /// One sampled token (no guesses).
    pub fn one(id: SeqId, token: u32, stop: bool) -> Self {
        Sampled {
            id,
            tokens: vec![token],
            stop,
            guessed: 0,
        }
    }
}

/// What the next forward pass runs.
#[derive(Debug, Clone, Default)]
pub struct Step {
    pub chunks: Vec<Chunk>,
    /// Sequences preempted while planning this step.
    pub preempted: Vec<SeqId>,
    /// State copies `(snapshot slot, sequence slot)` to make before the forward pass: sequences
    /// resuming from a cached prefix.
    pub restores: Vec<(SlotId, SlotId)>,
    /// State copies `(sequence slot, snapshot slot)` to make after the forward pass: snapshots
    /// of states at the end of this step's chunks.
    pub snapshots: Vec<(SlotId, SlotId)>,
    /// State copies `(sequence slot, rollback slot)` to make before the forward pass, after the
    /// restores: the states of hybrid sequences whose chunk carries guesses, kept in case one
    /// is rejected.
    pub saves: Vec<(SlotId, SlotId)>,
    /// Per entry of `snapshots`: its sequence and the prefix hash it will be registered under.
    pending: Vec<(SeqId, u64)>,
    /// Per entry of `saves`: its sequence.
    guarded: Vec<SeqId>,
}

impl Step {
    /// The state snapshots this step takes: (sequence, prefix hash, snapshot slot), valid once
    /// the step's state copies are made.
    pub fn snapshots_taken(&self) -> impl Iterator<Item = (SeqId, u64, SlotId)> + '_ {
        self.pending
            .iter()
            .zip(&self.snapshots)
            .map(|(&(id, hash), &(_, slot))| (id, hash, slot))
    }

    /// Tokens through the model, positions reserved for guesses included.
    pub fn n_tokens(&self) -> usize {
        self.chunks.iter().map(|c| c.tokens.len() + c.draft).sum()
    }
}

#[derive(Debug)]
struct Seq {
    id: SeqId,
    /// Prompt followed by the generated tokens.
    tokens: Vec<u32>,
    n_prompt: usize,
    max_tokens: usize,
    /// Tokens whose keys and values are in the cache.
    n_computed: usize,
    /// Prompt tokens found in the prefix cache at the last admission.
    cached: usize,
    blocks: Option<SeqBlocks>,
    /// Sliding-window layers' blocks while running (models with a window).
    window: Option<SeqBlocks>,
    /// Recurrent-state slot while running (hybrid models).
    slot: Option<SlotId>,
    /// Hybrid models: where the prompt's cached blocks ended at admission, if beyond the
    /// snapshot it resumed from: a prefix other prompts share, so a snapshot point.
    branch: usize,
    /// Hybrid models: a rollback slot holding the state at `n_computed`, to restore before the
    /// next chunk (a guess of the last step was rejected, and the state had taken it in).
    saved: Option<SlotId>,
    /// Where its prefix hashes start: which cached prefixes it may share (see
    /// [`Scheduler::add_seeded`]).
    seed: u64,
}

impl Seq {
    fn n_generated(&self) -> usize {
        self.tokens.len() - self.n_prompt
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Why a sequence stopped (OpenAI's `finish_reason`, plus cancellation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token, a stop string, or a constraint that completed.
    Stop,
    /// `max_tokens` reached (or the end of the context, when no `max_tokens` was given).
    Length,
    /// Cancelled: the client went away, or the caller gave up on it.
    Aborted,
}

impl FinishReason {
    pub const ALL: [FinishReason; 3] = [
        FinishReason::Stop,
        FinishReason::Length,
        FinishReason::Aborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Aborted => "abort",
        }
    }
}

pub struct Scheduler {
    cfg: SchedulerConfig,
    blocks: BlockManager,
    /// Recurrent-state slots (hybrid models).
    states: Option<StateSlots>,
    /// Hybrid models: prompt chunks end at multiples of this where they can.
    state_window: usize,
    /// The sliding-window layers' blocks (models with such layers).
    sliding: Option<WindowBlocks>,
    waiting: VecDeque<Seq>,
    running: Vec<Seq>,
    preemptions: u64,
    /// Finished sequences, by [`FinishReason`].
    finished: [u64; 3],
}

impl Scheduler {
    pub fn new(cfg: SchedulerConfig, n_blocks: usize, block_size: usize) -> Self {
        assert!(
            cfg.max_seqs > 0 && cfg.token_budget > 0,
            "max_seqs and token_budget must be positive"
        );
        Scheduler {
            cfg,
            blocks: BlockManager::new(n_blocks, block_size),
            states: None,
            state_window: 1,
            sliding: None,
            waiting: VecDeque::new(),
            running: Vec::new(),
            preemptions: 0,
            finished: [0; 3],
        }
    }

    /// For a hybrid model whose per-sequence state takes `state_bytes`: a live state slot per
    /// running sequence and as many snapshot slots as the snapshot budget holds. Prompt chunks
    /// are cut at multiples of `window` positions where the budget allows (the model computes
    /// whole windows differently from partial ones; aligned cuts make its numbers independent
    /// of the batch).
    pub fn with_states(mut self, state_bytes: usize, window: usize) -> Self {
        let n_snapshots = self.cfg.snapshots.budget_bytes / state_bytes.max(1);
        self.states = Some(StateSlots::new(self.cfg.max_seqs, n_snapshots));
        self.state_window = window.max(1);
        self
    }

    /// For a hybrid model that verifies guesses: a rollback slot per running sequence, so that
    /// its chunks may carry guesses (without it they get none). The store behind the slots must
    /// grow to [`StateSlots::n_slots`].
    pub fn enable_rollback(&mut self) {
        if let Some(states) = &mut self.states {
            states.add_rollback_slots();
        }
    }

    /// For a model whose sliding-window layers see the last `window` positions: their blocks
    /// come from a group of their own of `n_window_blocks` blocks (same block size), which each
    /// sequence gives back as they leave its window. [`window_pool_blocks`] is what the running
    /// sequences need at most.
    pub fn with_window(mut self, window: usize, n_window_blocks: usize) -> Self {
        self.sliding = Some(WindowBlocks::new(
            n_window_blocks,
            self.blocks.block_size(),
            window,
        ));
        self
    }

    /// The sliding-window layers' block group, for models with such layers.
    pub fn window_blocks(&self) -> Option<&WindowBlocks> {
        self.sliding.as_ref()
    }

    /// The full-attention layers' block group (every attention layer's, without a window).
    pub fn blocks(&self) -> &BlockManager {
        &self.blocks
    }

    /// Recurrent-state slots, for hybrid models.
    pub fn states(&self) -> Option<&StateSlots> {
        self.states.as_ref()
    }

    pub fn n_waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn n_running(&self) -> usize {
        self.running.len()
    }

    /// Tokens the next step would run without guesses (running sequences' next chunks and
    /// waiting prompts, within the budget): how full the step is.
    pub fn pending_tokens(&self) -> usize {
        let running: usize = self
            .running
            .iter()
            .map(|s| s.tokens.len() - s.n_computed)
            .sum();
        let waiting: usize = self.waiting.iter().map(|s| s.tokens.len()).sum();
        (running + waiting).min(self.cfg.token_budget)
    }

    pub fn preemptions(&self) -> u64 {
        self.preemptions
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// Queues a request, or says why it can never run. This is the one place where a request is
    /// checked against the context length. `max_tokens: None` generates up to the end of the
    /// context.
    pub fn add(
        &mut self,
        id: SeqId,
        prompt: Vec<u32>,
        max_tokens: Option<usize>,
    ) -> Result<(), Rejected> {
        self.add_seeded(id, prompt, max_tokens, 0)
    }

    /// [`Scheduler::add`] for a sequence whose prefix-cache hashes start from `seed`: it shares
    /// cached blocks (and state snapshots) only with sequences of the same seed (0: everyone's;
    /// `frugal_kvcache::cache_seed` of a salt; `private_seed`: nobody's).
    pub fn add_seeded(
        &mut self,
        id: SeqId,
        prompt: Vec<u32>,
        max_tokens: Option<usize>,
        seed: u64,
    ) -> Result<(), Rejected> {
        if prompt.is_empty() {
            return Err(Rejected::Empty);
        }
        let max_tokens = max_tokens.unwrap_or(self.cfg.n_ctx.saturating_sub(prompt.len()));
        if max_tokens == 0 || prompt.len().saturating_add(max_tokens) > self.cfg.n_ctx {
            return Err(Rejected::TooLong {
                prompt: prompt.len(),
                max_tokens: max_tokens.max(1),
                n_ctx: self.cfg.n_ctx,
            });
        }
        let need = (prompt.len() + max_tokens).div_ceil(self.blocks.block_size());
        if need > self.blocks.n_blocks() {
            return Err(Rejected::TooBig {
                prompt: prompt.len(),
                blocks: self.blocks.n_blocks(),
            });
        }
        if let Some(w) = &self.sliding {
            // One window plus one chunk: what a sequence holds there at most while it runs.
            let window_need = w.blocks_for_chunk(w.window() - 1, self.cfg.token_budget) + 1;
            if need.min(window_need) > w.pool().n_blocks() {
                return Err(Rejected::TooBig {
                    prompt: prompt.len(),
                    blocks: w.pool().n_blocks(),
                });
            }
        }
        if self.waiting.len() >= self.cfg.max_waiting {
            return Err(Rejected::QueueFull(self.waiting.len()));
        }
        self.waiting.push_back(Seq {
            id,
            n_prompt: prompt.len(),
            tokens: prompt,
            max_tokens,
            n_computed: 0,
            cached: 0,
            blocks: None,
            window: None,
            slot: None,
            branch: 0,
            saved: None,
            seed,
        });
        Ok(())
    }

    /// Logs the blocks that enter the prefix cache from now on, for a disk tier
    /// ([`Scheduler::take_commits`]).
    pub fn log_commits(&mut self) {
        self.blocks.log_commits();
        if let Some(w) = &mut self.sliding {
            w.log_commits();
        }
    }

    /// The blocks that entered the prefix cache since the last call (when logging): the full
    /// group's, then the sliding-window group's.
    pub fn take_commits(&mut self) -> (Vec<Committed>, Vec<Committed>) {
        let window = self.sliding.as_mut().map(|w| w.take_commits());
        (self.blocks.take_commits(), window.unwrap_or_default())
    }

    /// Logs what enters and leaves the full-attention group's prefix cache from now on
    /// ([`Scheduler::take_cache_events`]), for KV-cache events.
    pub fn log_cache_events(&mut self) {
        self.blocks.log_events();
    }

    /// What entered and left the full-attention group's prefix cache since the last call (when
    /// logging), in order.
    pub fn take_cache_events(&mut self) -> Vec<CacheEvent> {
        self.blocks.take_events()
    }

    /// Fills the prefix cache from a disk tier for `prompt` before it is queued with `seed`:
    /// see [`BlockManager::import`]. Returns (blocks cached before, blocks filled).
    pub fn import_prefix(
        &mut self,
        prompt: &[u32],
        seed: u64,
        load: &mut dyn FnMut(u64, &[u32], u32) -> bool,
    ) -> (usize, usize) {
        self.blocks.import(prompt, seed, 0, load)
    }

    /// For a model with sliding-window layers: fills their group's cache from a disk tier with
    /// the blocks the window after the first `n_blocks` blocks of `prompt` reads (see
    /// `WindowBlocks::import`). Returns the blocks filled.
    pub fn import_window(
        &mut self,
        prompt: &[u32],
        seed: u64,
        n_blocks: usize,
        load: &mut dyn FnMut(u64, &[u32], u32) -> bool,
    ) -> usize {
        self.sliding
            .as_mut()
            .map_or(0, |w| w.import(prompt, seed, n_blocks, load).1)
    }

    /// Whether a state snapshot of the prefix with this hash is registered (hybrid models).
    pub fn has_snapshot(&self, hash: u64) -> bool {
        self.states.as_ref().is_some_and(|s| s.contains(hash))
    }

    /// Registers a state snapshot of the prefix `hash` that `fill(slot)` writes into the
    /// store (from a disk tier); see [`StateSlots::import`]. False for a model without states.
    pub fn import_snapshot(&mut self, hash: u64, fill: &mut dyn FnMut(SlotId) -> bool) -> bool {
        self.states.as_mut().is_some_and(|s| s.import(hash, fill))
    }

    /// The block table of a running sequence.
    pub fn block_table(&self, id: SeqId) -> Option<&[u32]> {
        self.running
            .iter()
            .find(|s| s.id == id)
            .and_then(|s| s.blocks.as_ref())
            .map(SeqBlocks::blocks)
    }

    /// The sliding-window layers' block table of a running sequence (`None` for a model without
    /// a window: the full table serves every layer). Entries before the window of the sequence's
    /// next chunk are [`RELEASED`].
    pub fn window_table(&self, id: SeqId) -> Option<&[u32]> {
        self.running
            .iter()
            .find(|s| s.id == id)
            .and_then(|s| s.window.as_ref())
            .map(SeqBlocks::blocks)
    }

    /// Checks the state slots' invariants (for tests): every live slot in use belongs to exactly
    /// one running sequence.
    pub fn check_states(&self) -> Result<(), String> {
        let Some(states) = &self.states else {
            return Ok(());
        };
        let live: Vec<SlotId> = self.running.iter().filter_map(|s| s.slot).collect();
        if live.len() != self.running.len() {
            return Err("a running sequence has no state slot".into());
        }
        let saved = self.running.iter().filter_map(|s| s.saved);
        states.check(&live.iter().copied().chain(saved).collect::<Vec<_>>())
    }

    /// Prompt tokens of a running sequence that came from the prefix cache.
    pub fn cached_tokens(&self, id: SeqId) -> Option<usize> {
        self.running.iter().find(|s| s.id == id).map(|s| s.cached)
    }

    /// Releases the newest running sequence back to the front of the queue.
    fn preempt_newest(&mut self, step: &mut Step) -> bool {
        let Some(mut s) = self.running.pop() else {
            return false;
        };
        self.free_blocks(&mut s);
        self.release_state(&mut s, step);
        s.n_computed = 0;
        step.chunks.retain(|c| c.id != s.id);
        step.preempted.push(s.id);
        self.preemptions += 1;
        self.waiting.push_front(s);
        true
    }

    /// Plans the next step.
    pub fn schedule(&mut self) -> Step {
        self.schedule_with_drafts(&|_| 0)
    }

    /// Plans the next step, reserving room for up to `draft(id)` guessed tokens after each
    /// decoding sequence's next token (within the token budget, the blocks, and the tokens the
    /// sequence may still produce). A hybrid model's sequences get some only with rollback
    /// slots ([`Scheduler::enable_rollback`]): their state is saved before such a chunk
    /// ([`Step::saves`]) and, if a guess is rejected, restored before the next one, which runs
    /// the accepted tokens again.
    pub fn schedule_with_drafts(&mut self, draft: &dyn Fn(SeqId) -> usize) -> Step {
        let mut step = Step::default();
        let mut budget = self.cfg.token_budget;
        let mut i = 0;
        while i < self.running.len() {
            let want = self.running[i].tokens.len() - self.running[i].n_computed;
            let n = self.cut(&self.running[i], want.min(budget));
            if n == 0 {
                i += 1;
                continue;
            }
            self.restore_saved(i, &mut step);
            let d = self.draft_room(&self.running[i], n, draft, budget - n);
            if d > 0 && self.reserve(i, n + d) && self.guard(i, &mut step) {
                self.plan_chunk(i, n, d, &mut step);
                budget -= n + d;
                i += 1;
                continue;
            }
            if !self.reserve(i, n) {
                // Out of blocks: preempt the newest sequence (maybe this one), give back the
                // budget of any chunk it already had in this step, and retry.
                let was_last = i + 1 == self.running.len();
                let victim = self.running.last().map(|s| s.id);
                budget += step
                    .chunks
                    .iter()
                    .filter(|c| Some(c.id) == victim)
                    .map(|c| c.tokens.len())
                    .sum::<usize>();
                self.preempt_newest(&mut step);
                if was_last {
                    break;
                }
                continue;
            }
            self.plan_chunk(i, n, 0, &mut step);
            budget -= n;
            i += 1;
        }
        // Admit waiting requests while there is room.
        while budget > 0 && self.running.len() < self.cfg.max_seqs && step.preempted.is_empty() {
            let Some(s) = self.waiting.pop_front() else {
                break;
            };
            let Some((s, n)) = self.admit(s, budget, &mut step) else {
                break;
            };
            self.running.push(s);
            self.plan_chunk(self.running.len() - 1, n, 0, &mut step);
            budget -= n;
        }
        step
    }

    /// Gives a waiting sequence its blocks (sharing the cached prefix) for a first chunk of at
    /// most `budget` tokens and, for hybrid models, a state slot, restored from the snapshot at
    /// the end of the cached prefix. Returns it with its first chunk's length, or puts it back
    /// and returns `None` when the blocks are not there.
    fn admit(&mut self, mut s: Seq, budget: usize, step: &mut Step) -> Option<(Seq, usize)> {
        if !self.allocate(&mut s) {
            self.waiting.push_front(s);
            return None;
        }
        let n = self.cut(&s, (s.tokens.len() - s.n_computed).min(budget));
        if let (Some(w), Some(table)) = (&mut self.sliding, &mut s.window) {
            if w.grow(table, s.n_computed + n).is_err() {
                self.free_blocks(&mut s);
                (s.n_computed, s.cached, s.branch) = (0, 0, 0);
                self.waiting.push_front(s);
                return None;
            }
        }
        if let Some(states) = &mut self.states {
            let slot = states
                .take_live()
                .expect("one live slot per running sequence");
            if s.n_computed > 0 {
                let hash = s
                    .blocks
                    .as_ref()
                    .and_then(SeqBlocks::last_hash)
                    .expect("a cached prefix has a hash");
                let snap = states.lookup(hash).expect("the prefix was resumable");
                step.restores.push((snap, slot));
            }
            s.slot = Some(slot);
        }
        Some((s, n))
    }

    /// Takes a waiting sequence's blocks in every group, sharing the longest cached prefix every
    /// group can resume from (hybrid models: one with a state snapshot at its end; models with
    /// a window: one whose window the window group still holds). False when blocks are short.
    fn allocate(&mut self, s: &mut Seq) -> bool {
        let states = &self.states;
        let resumable = |h: u64| states.as_ref().is_none_or(|st| st.contains(h));
        let allocated = match &mut self.sliding {
            None => self
                .blocks
                .allocate_with(&s.tokens, s.seed, &resumable)
                .map(|(full, cached, cached_blocks)| (full, None, cached, cached_blocks)),
            Some(w) => w
                .allocate(&mut self.blocks, &s.tokens, s.seed, &resumable)
                .map(|a| (a.full, Some(a.window), a.cached, a.cached_blocks)),
        };
        let Ok((full, window, cached, cached_blocks)) = allocated else {
            return false;
        };
        if self.states.is_some() {
            s.branch = cached_blocks;
        }
        s.blocks = Some(full);
        s.window = window;
        s.n_computed = cached;
        s.cached = cached;
        true
    }

    /// Makes room in every group for running sequence `i`'s next chunk of `n` tokens, after
    /// giving back the window blocks it no longer reads. False when blocks are short.
    fn reserve(&mut self, i: usize, n: usize) -> bool {
        let s = &mut self.running[i];
        let total = s.n_computed + n;
        let full = s.blocks.as_mut().expect("running sequences hold blocks");
        if self.blocks.grow(full, total).is_err() {
            return false;
        }
        match (&mut self.sliding, &mut s.window) {
            (Some(w), Some(table)) => {
                w.release_before(table, s.n_computed);
                w.grow(table, total).is_ok()
            }
            _ => true,
        }
    }

    /// Gives back a sequence's blocks in every group.
    fn free_blocks(&mut self, s: &mut Seq) {
        if let Some(b) = s.blocks.take() {
            self.blocks.free(b);
        }
        if let (Some(w), Some(table)) = (&mut self.sliding, s.window.take()) {
            w.free(table);
        }
    }

    /// The next snapshot point after `from` for a sequence: a multiple of `every`, the prompt's
    /// last block boundary (a prompt resumes at most from there, since its last token is always
    /// recomputed), or where its cached blocks ended at admission (a prefix shared with an
    /// earlier prompt, likely shared by later ones too: a system prompt, a document).
    fn next_snapshot_point(&self, s: &Seq, from: usize) -> usize {
        let bs = self.blocks.block_size();
        // A multiple of the block size (a snapshot sits where a cached block ends) and of the
        // window (so snapshot cuts do not split the model's windows).
        let unit = bs / gcd(bs, self.state_window) * self.state_window;
        let every = (self.cfg.snapshots.every / unit).max(1) * unit;
        let periodic = (from / every + 1) * every;
        let prompt_end = (s.n_prompt - 1) / bs * bs;
        [prompt_end, s.branch]
            .into_iter()
            .filter(|&p| p > from)
            .fold(periodic, usize::min)
    }

    /// How many of `n` tokens a sequence runs in this step: for hybrid models a chunk stops at
    /// the next snapshot point, so that the state there can be copied, and a chunk cut short by
    /// the budget ends at a window boundary if one is in reach.
    fn cut(&self, s: &Seq, n: usize) -> usize {
        if self.states.is_none() || n == 0 {
            return n;
        }
        let point = self.next_snapshot_point(s, s.n_computed);
        let n = n.min(point - s.n_computed);
        let end = s.n_computed + n;
        let aligned = end / self.state_window * self.state_window;
        if end == point || end == s.tokens.len() || aligned <= s.n_computed {
            n
        } else {
            aligned - s.n_computed
        }
    }

    /// Guessed tokens a sequence may verify after its next chunk of `n` tokens: none unless the
    /// chunk ends at its last token and it is generating (one token to run, or for a hybrid model
    /// the few a rejected guess left to recompute), at most what it may still produce after its
    /// next token, and within `budget`. A hybrid model's chunk with guesses needs a rollback
    /// slot, never holds a whole window of the delta rule (computed otherwise than token by
    /// token) and never ends at a snapshot point (the state there would include the guesses).
    fn draft_room(
        &self,
        s: &Seq,
        n: usize,
        draft: &dyn Fn(SeqId) -> usize,
        budget: usize,
    ) -> usize {
        let want = s.tokens.len() - s.n_computed;
        if n != want || s.n_generated() == 0 {
            return 0;
        }
        let left = s.max_tokens.saturating_sub(s.n_generated());
        let d = draft(s.id).min(left.saturating_sub(1)).min(budget);
        let Some(states) = &self.states else {
            return if n == 1 { d } else { 0 };
        };
        let at_snapshot = self.next_snapshot_point(s, s.n_computed) == s.n_computed + n;
        if !states.has_rollback() || at_snapshot {
            return 0;
        }
        d.min((self.state_window - 1).saturating_sub(n))
    }

    /// Hybrid models: plans the restore of running sequence `i`'s state from its rollback slot
    /// (the slot is free again once the restores, which come before the saves, have run).
    fn restore_saved(&mut self, i: usize, step: &mut Step) {
        let s = &mut self.running[i];
        let (Some(saved), Some(live), Some(states)) = (s.saved, s.slot, self.states.as_mut())
        else {
            return;
        };
        s.saved = None;
        step.restores.push((saved, live));
        states.free_rollback(saved);
    }

    /// Hybrid models: keeps running sequence `i`'s state in a rollback slot before a chunk with
    /// guesses. False when no slot is free (the chunk then carries none).
    fn guard(&mut self, i: usize, step: &mut Step) -> bool {
        let Some(states) = self.states.as_mut() else {
            return true;
        };
        let s = &self.running[i];
        let (Some(live), Some(slot)) = (s.slot, states.take_rollback()) else {
            return false;
        };
        step.saves.push((live, slot));
        step.guarded.push(s.id);
        true
    }

    /// Adds running sequence `i`'s chunk of `n` tokens (and `draft` positions for guesses after
    /// them) to the step and, if the chunk ends at a snapshot point whose prefix has no
    /// snapshot yet, reserves one.
    fn plan_chunk(&mut self, i: usize, n: usize, draft: usize, step: &mut Step) {
        let s = &self.running[i];
        let (start, end) = (s.n_computed, s.n_computed + n);
        step.chunks.push(Chunk {
            id: s.id,
            pos: start,
            tokens: s.tokens[start..end].to_vec(),
            sample: end == s.tokens.len(),
            draft,
            state: s.slot.unwrap_or(0),
        });
        let (Some(slot), true) = (s.slot, n > 0) else {
            return;
        };
        if self.next_snapshot_point(s, start) != end {
            return;
        }
        let hash = prefix_hash(s.seed, self.blocks.block_size(), &s.tokens[..end]);
        let id = s.id;
        let states = self.states.as_mut().expect("state slots imply states");
        if states.contains(hash) || step.pending.iter().any(|&(_, h)| h == hash) {
            return;
        }
        if let Some(snap) = states.reserve() {
            step.snapshots.push((slot, snap));
            step.pending.push((id, hash));
        }
    }

    /// Frees a sequence's state slot and drops the snapshots planned from it in `step`.
    fn release_state(&mut self, s: &mut Seq, step: &mut Step) {
        let (Some(slot), Some(states)) = (s.slot.take(), self.states.as_mut()) else {
            return;
        };
        states.free_live(slot);
        if let Some(saved) = s.saved.take() {
            states.free_rollback(saved);
        }
        while let Some(k) = step.guarded.iter().position(|&id| id == s.id) {
            states.free_rollback(step.saves[k].1);
            step.saves.remove(k);
            step.guarded.remove(k);
        }
        let mut k = 0;
        while k < step.snapshots.len() {
            if step.pending[k].0 == s.id {
                states.release(step.snapshots[k].1);
                step.snapshots.remove(k);
                step.pending.remove(k);
            } else {
                k += 1;
            }
        }
    }

    /// Records a finished step: every chunk's tokens are now computed (their full blocks enter
    /// the prefix cache), and `sampled` gives the new tokens of each chunk that had `sample` set:
    /// the accepted guesses are computed too, the rejected ones' positions are free again.
    /// Sequences the engine ends with their last token finish with `Stop`, those that reached
    /// max_tokens with `Length`; the finished ones are returned, their blocks released.
    pub fn complete(&mut self, step: &Step, sampled: &[Sampled]) -> Vec<(SeqId, FinishReason)> {
        if let Some(states) = &mut self.states {
            for (&(_, snap), &(_, hash)) in step.snapshots.iter().zip(&step.pending) {
                states.register(hash, snap);
            }
        }
        let mut done = Vec::new();
        for c in &step.chunks {
            let guard = step.guarded.iter().position(|&id| id == c.id);
            let guard = guard.map(|k| step.saves[k].1);
            let Some(s) = self.running.iter_mut().find(|s| s.id == c.id) else {
                if let (Some(slot), Some(states)) = (guard, self.states.as_mut()) {
                    states.free_rollback(slot);
                }
                continue;
            };
            s.n_computed = c.pos + c.tokens.len();
            let x = sampled.iter().find(|x| c.sample && x.id == c.id);
            if let Some(x) = x {
                assert!(
                    !x.tokens.is_empty() && x.guessed <= c.draft && x.tokens.len() <= x.guessed + 1,
                    "a sampling chunk yields one token and at most its guesses"
                );
                s.tokens.extend_from_slice(&x.tokens);
                // The accepted guesses' keys and values were computed with the chunk.
                s.n_computed += x.tokens.len() - 1;
                if guard.is_some() && x.tokens.len() <= x.guessed {
                    // The recurrent state took in a rejected guess: back to the state before
                    // the chunk, whose tokens run again with the next one.
                    (s.n_computed, s.saved) = (c.pos, guard);
                }
            }
            if let (Some(slot), None) = (guard, s.saved) {
                self.states
                    .as_mut()
                    .expect("guards imply states")
                    .free_rollback(slot);
            }
            if let Some(b) = s.blocks.as_mut() {
                self.blocks.commit(b, &s.tokens, s.n_computed);
            }
            if let (Some(w), Some(table)) = (&mut self.sliding, s.window.as_mut()) {
                w.commit(table, &s.tokens, s.n_computed);
            }
            if let Some(x) = x {
                if x.stop {
                    done.push((s.id, FinishReason::Stop));
                } else if s.n_generated() >= s.max_tokens {
                    done.push((s.id, FinishReason::Length));
                }
            }
        }
        for &(id, f) in &done {
            self.finish(id, f);
        }
        done
    }

    /// Ends a sequence (running or waiting) and releases its blocks.
    /// Returns false (and counts nothing) for an unknown or already finished id.
    pub fn finish(&mut self, id: SeqId, why: FinishReason) -> bool {
        if let Some(i) = self.running.iter().position(|s| s.id == id) {
            let mut s = self.running.remove(i);
            self.free_blocks(&mut s);
            if let (Some(slot), Some(states)) = (s.slot.take(), self.states.as_mut()) {
                states.free_live(slot);
                if let Some(saved) = s.saved.take() {
                    states.free_rollback(saved);
                }
            }
        } else if let Some(i) = self.waiting.iter().position(|s| s.id == id) {
            self.waiting.remove(i);
        } else {
            return false;
        }
        self.finished[why as usize] += 1;
        true
    }

    /// Sequences ended so far for this reason.
    pub fn n_finished(&self, why: FinishReason) -> u64 {
        self.finished[why as usize]
    }
}

/// Blocks the sliding-window group needs for `max_seqs` sequences that each hold one window and
/// one chunk of at most `token_budget` tokens (plus one block for a window that straddles a
/// block boundary): enough that a window group never preempts a sequence.
pub fn window_pool_blocks(cfg: &SchedulerConfig, window: usize, block_size: usize) -> usize {
    let bs = block_size.max(1);
    cfg.max_seqs * ((window + cfg.token_budget).div_ceil(bs) + 1)
}
