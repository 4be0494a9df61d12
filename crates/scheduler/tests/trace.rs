//! Simulated request traces: the budget is never exceeded, block tables always cover what a step
//! computes, every request finishes or is rejected, and no block leaks. Half the traces are of a
//! hybrid model: each state slot's contents are simulated (the tokens it has consumed) through
//! the step's restores, chunks and snapshots, so a sequence that runs from a state that is not
//! exactly its own prefix fails the trace. Half the traces (independently) are of a model with
//! sliding-window layers, whose blocks come from a group of their own: every block's contents
//! are simulated in both groups (the token prefix each position was computed for), so a chunk
//! that reads a key that is not its own — a stale or released block, a wrong prefix hit — fails
//! the trace, and the window group's blocks per sequence must stay bounded by the window.
//! Non-hybrid traces also speculate: decoding sequences get positions for guessed tokens, the
//! simulated forward writes the guesses' keys there, and a random prefix of them is accepted, so
//! a rejected guess's key that is ever read (or cached) fails the trace.

use frugal_scheduler::{
    window_pool_blocks, FinishReason, Rejected, Sampled, Scheduler, SchedulerConfig,
    SnapshotConfig, Step, RELEASED,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};

#[test]
fn random_traces() {
    let (mut preemptions, mut resumed, mut windows, mut guessed) = (0, 0, [0; 2], [0; 2]);
    for seed in 0..200 {
        let t = Trace::new(seed);
        let (p, r, g) = t.run(&mut windows);
        preemptions += p;
        resumed += r;
        guessed[0] += g[0];
        guessed[1] += g[1];
    }
    assert!(guessed[0] > 1000, "the traces must verify guesses");
    assert!(guessed[1] > 100, "hybrid traces must roll a state back");
    assert!(preemptions > 0, "the traces must exercise preemption");
    assert!(resumed > 0, "the traces must resume from state snapshots");
    assert!(
        windows[0] > 0,
        "the traces must release blocks leaving a window"
    );
    assert!(windows[1] > 0, "the traces must resume with a window");
}

/// One simulated trace: requests arriving at random, steps run, tokens sampled, clients leaving.
struct Trace {
    seed: u64,
    rng: StdRng,
    sch: Scheduler,
    budget: usize,
    block_size: usize,
    /// A shared prefix that half the prompts start with.
    system: Vec<u32>,
    accepted: HashSet<u64>,
    finished: HashSet<u64>,
    next_id: u64,
    /// Every sequence's tokens so far (prompt and sampled).
    tokens: HashMap<u64, Vec<u32>>,
    /// Hybrid traces: what each state slot holds, as the tokens it has consumed.
    slots: Option<HashMap<u32, Vec<u32>>>,
    /// Sequences that started from a snapshot.
    resumed: u64,
    /// Models with sliding-window layers: the window.
    window: Option<usize>,
    /// What each position of each block holds, per group (full, window): the token prefix it
    /// was computed for.
    contents: [HashMap<(u32, usize), Vec<u32>>; 2],
    /// The tokens guessed for each chunk of the current step.
    guesses: HashMap<u64, Vec<u32>>,
    /// The furthest position each sequence's window table was grown to.
    reserved: HashMap<u64, usize>,
    /// Guessed tokens verified so far, and hybrid chunks whose guesses were partly rejected.
    guessed: [u64; 2],
}

impl Trace {
    fn new(seed: u64) -> Trace {
        let mut rng = StdRng::seed_from_u64(seed);
        let block_size = rng.gen_range(1..8);
        let n_blocks = rng.gen_range(8..64);
        let cfg = SchedulerConfig {
            max_seqs: rng.gen_range(1..6),
            token_budget: rng.gen_range(1..40),
            max_waiting: rng.gen_range(1..20),
            n_ctx: 64,
            snapshots: SnapshotConfig {
                every: rng.gen_range(1..24),
                budget_bytes: rng.gen_range(0..6),
            },
        };
        let budget = cfg.token_budget;
        let pool_for = |w: usize| window_pool_blocks(&cfg, w, block_size);
        let mut sch = Scheduler::new(cfg.clone(), n_blocks, block_size);
        let hybrid = seed % 2 == 1;
        if hybrid {
            // One byte per state: the budget above is the number of snapshot slots.
            sch = sch.with_states(1, 1 + seed as usize % 7);
            if !seed.is_multiple_of(3) {
                sch.enable_rollback();
            }
        }
        let window = (seed % 4 >= 2).then(|| rng.gen_range(1..20));
        if let Some(w) = window {
            let needed = pool_for(w);
            // Sometimes a pool too small for every running sequence (preemptions, refusals).
            sch = sch.with_window(w, rng.gen_range(1..=needed));
        }
        let system: Vec<u32> = (0..rng.gen_range(0..16)).collect();
        Trace {
            seed,
            rng,
            sch,
            budget,
            block_size,
            system,
            accepted: HashSet::new(),
            finished: HashSet::new(),
            next_id: 0,
            tokens: HashMap::new(),
            slots: hybrid.then(HashMap::new),
            resumed: 0,
            window,
            contents: Default::default(),
            guesses: HashMap::new(),
            reserved: HashMap::new(),
            guessed: [0; 2],
        }
    }

    /// Runs the trace to the end, checking every step; the number of preemptions and of
    /// sequences resumed from a snapshot and of guessed tokens.
    fn run(mut self, windows: &mut [u64; 2]) -> (u64, u64, [u64; 2]) {
        let seed = self.seed;
        for round in 0..2000 {
            if round < 400 && self.rng.gen_bool(0.3) {
                self.add_request();
            }
            let salt = self.rng.gen_range(0..5u64);
            let step = self
                .sch
                .schedule_with_drafts(&|id| ((id + salt) % 5) as usize);
            self.check_step(&step);
            self.guess(&step);
            self.run_states(&step);
            self.run_blocks(&step, windows);
            self.complete(&step);
            self.sch.blocks().check().unwrap();
            self.sch.check_states().unwrap();
            if round > 400 && self.sch.is_idle() {
                break;
            }
        }
        assert!(self.sch.is_idle(), "seed {seed}: work left after the trace");
        assert_eq!(
            self.finished, self.accepted,
            "seed {seed}: every accepted request finishes"
        );
        assert_eq!(self.sch.blocks().n_used(), 0, "seed {seed}: blocks leaked");
        if let Some(w) = self.sch.window_blocks() {
            assert_eq!(w.pool().n_used(), 0, "seed {seed}: window blocks leaked");
        }
        (self.sch.preemptions(), self.resumed, self.guessed)
    }

    /// Makes up the guesses of each chunk with room for them (sometimes fewer than the room).
    fn guess(&mut self, step: &Step) {
        self.guesses.clear();
        for c in &step.chunks {
            assert!(
                c.draft == 0 || (c.sample && (self.slots.is_some() || c.tokens.len() == 1)),
                "seed {}: guesses after anything but a decode token",
                self.seed
            );
            let n = c.draft.saturating_sub(self.rng.gen_range(0..2));
            let guesses: Vec<u32> = (0..n).map(|_| self.rng.gen_range(0..50)).collect();
            self.guessed[0] += guesses.len() as u64;
            self.guesses.insert(c.id, guesses);
        }
    }

    /// Hybrid traces: plays the step on the simulated slots, checking that every chunk starts
    /// from its own sequence's state (its tokens before the chunk).
    fn run_states(&mut self, step: &Step) {
        let seed = self.seed;
        let Some(slots) = self.slots.as_mut() else {
            return;
        };
        for &(from, to) in &step.restores {
            let state = slots.get(&from).cloned().expect("restored snapshots exist");
            slots.insert(to, state);
            self.resumed += 1;
        }
        for &(from, to) in &step.saves {
            let state = slots.get(&from).cloned().unwrap_or_default();
            slots.insert(to, state);
        }
        let mut used = HashSet::new();
        for c in &step.chunks {
            assert!(used.insert(c.state), "seed {seed}: two chunks share a slot");
            let state = slots.entry(c.state).or_default();
            if c.pos == 0 {
                state.clear();
            }
            let tokens = &self.tokens[&c.id];
            assert_eq!(
                state[..],
                tokens[..c.pos],
                "seed {seed}: sequence {} runs from a wrong state",
                c.id
            );
            state.extend_from_slice(&c.tokens);
            // The forward pass takes the guesses into the state too.
            state.extend_from_slice(&self.guesses[&c.id]);
        }
        for &(from, to) in &step.snapshots {
            let state = slots[&from].clone();
            slots.insert(to, state);
        }
    }

    /// Plays the step on the simulated blocks: each chunk reads its own keys (every earlier
    /// position in the full group, the window in the window group), then writes its positions.
    /// Counts chunks with released blocks and those resuming from a cached prefix in `windows`.
    fn run_blocks(&mut self, step: &Step, windows: &mut [u64; 2]) {
        let bs = self.block_size;
        let mut writes = Vec::new();
        for c in &step.chunks {
            // The guesses' keys are written like the chunk's own.
            let mut tokens = self.tokens[&c.id].clone();
            tokens.extend_from_slice(&self.guesses[&c.id]);
            let tokens = &tokens;
            let end = c.pos + c.tokens.len() + self.guesses[&c.id].len();
            let full = self.sch.block_table(c.id).expect("running");
            self.check_reads(0, full, tokens, 0..c.pos);
            writes.push((0, full.to_vec(), tokens.clone(), c.pos..end));
            let Some(w) = self.window else {
                assert!(self.sch.window_table(c.id).is_none());
                continue;
            };
            let table = self.sch.window_table(c.id).expect("running");
            self.check_reads(
                1,
                table,
                tokens,
                (c.pos + 1).saturating_sub(w)..end.min(c.pos),
            );
            let first = (c.pos + 1).saturating_sub(w) / bs;
            assert!(
                table[first..end.div_ceil(bs)]
                    .iter()
                    .all(|&b| b != RELEASED),
                "seed {}: the window is not covered",
                self.seed
            );
            let held = table.iter().filter(|&&b| b != RELEASED).count();
            // Positions an earlier step reserved for guesses that were rejected stay held.
            let reserved = self.reserved.entry(c.id).or_default();
            *reserved = (*reserved).max(end);
            let span = *reserved - (c.pos + 1).saturating_sub(w);
            assert!(
                held <= span.div_ceil(bs) + 1,
                "seed {}: the window group grows with the context",
                self.seed
            );
            windows[0] += u64::from(table.contains(&RELEASED));
            windows[1] += u64::from(self.sch.cached_tokens(c.id).unwrap_or(0) > 0);
            writes.push((1, table.to_vec(), tokens.clone(), c.pos..end));
        }
        for (group, table, tokens, positions) in writes {
            for q in positions {
                let key = (table[q / bs], q % bs);
                self.contents[group].insert(key, tokens[..=q].to_vec());
            }
        }
    }

    /// Checks that positions `range` of a table in `group` hold `tokens`' own keys.
    fn check_reads(
        &self,
        group: usize,
        table: &[u32],
        tokens: &[u32],
        range: std::ops::Range<usize>,
    ) {
        let bs = self.block_size;
        for q in range {
            assert_eq!(
                self.contents[group]
                    .get(&(table[q / bs], q % bs))
                    .map(Vec::as_slice),
                Some(&tokens[..=q]),
                "seed {}: group {group} position {q} holds another prefix's key",
                self.seed
            );
        }
    }

    fn add_request(&mut self) {
        let rng = &mut self.rng;
        let mut prompt = if rng.gen_bool(0.5) {
            self.system.clone()
        } else {
            Vec::new()
        };
        prompt.extend((0..rng.gen_range(1..20)).map(|_| rng.gen_range(0..50)));
        let max_tokens = rng.gen_range(1..16);
        match self.sch.add(self.next_id, prompt.clone(), Some(max_tokens)) {
            Ok(()) => {
                self.accepted.insert(self.next_id);
                self.tokens.insert(self.next_id, prompt);
            }
            Err(Rejected::QueueFull(_) | Rejected::TooLong { .. } | Rejected::TooBig { .. }) => {}
            Err(e) => panic!("{e}"),
        }
        self.next_id += 1;
    }

    /// Within the budget, each sequence once, its blocks covering what the step computes.
    fn check_step(&self, step: &Step) {
        let seed = self.seed;
        assert!(
            step.n_tokens() <= self.budget,
            "seed {seed}: budget exceeded"
        );
        let mut ids = HashSet::new();
        for c in &step.chunks {
            assert!(ids.insert(c.id), "a sequence twice in one step");
            let table = self
                .sch
                .block_table(c.id)
                .expect("scheduled sequences are running");
            assert!(
                table.len() * self.block_size >= c.pos + c.tokens.len() + c.draft,
                "seed {seed}: blocks do not cover the chunk"
            );
        }
    }

    /// Samples a token for each chunk that asks for one and completes the step; then a client
    /// sometimes disconnects.
    fn complete(&mut self, step: &Step) {
        let rng = &mut self.rng;
        // The engine sometimes ends a sequence with the token it sampled (EOS, stop string).
        // A random prefix of the guesses is accepted; the token after them is not the next guess.
        let sampled: Vec<Sampled> = step
            .chunks
            .iter()
            .filter(|c| c.sample)
            .map(|c| {
                let guesses = &self.guesses[&c.id];
                let mut tokens = guesses[..rng.gen_range(0..=guesses.len())].to_vec();
                let next = guesses.get(tokens.len()).map_or(50, |&g| g + 50);
                tokens.push(next);
                Sampled {
                    id: c.id,
                    tokens,
                    stop: rng.gen_bool(0.03),
                    guessed: guesses.len(),
                }
            })
            .collect();
        for x in &sampled {
            let tokens = self.tokens.get_mut(&x.id).expect("known");
            tokens.extend_from_slice(&x.tokens);
            if self.slots.is_some() && x.tokens.len() <= x.guessed {
                self.guessed[1] += 1;
            }
        }
        for (id, _) in self.sch.complete(step, &sampled) {
            assert!(self.finished.insert(id));
        }
        if self.rng.gen_bool(0.05) {
            if let Some(c) = step.chunks.first() {
                if self.sch.finish(c.id, FinishReason::Aborted) {
                    assert!(self.finished.insert(c.id));
                }
            }
        }
    }
}

#[test]
fn long_prompts_are_chunked_and_decodes_go_first() {
    let cfg = SchedulerConfig {
        max_seqs: 4,
        token_budget: 8,
        max_waiting: 8,
        n_ctx: 64,
        snapshots: Default::default(),
    };
    let mut sch = Scheduler::new(cfg, 32, 4);
    sch.add(1, vec![1, 2, 3], Some(4)).unwrap();
    let s = sch.schedule();
    assert_eq!(s.chunks.len(), 1);
    assert!(s.chunks[0].sample);
    sch.complete(&s, &[sampled(1, 9)]);
    sch.add(2, (0..20).collect(), Some(2)).unwrap();
    let s = sch.schedule();
    // Sequence 1 decodes one token; sequence 2 gets the remaining 7 of the budget.
    assert_eq!(s.chunks[0].id, 1);
    assert_eq!(s.chunks[0].tokens, vec![9]);
    assert_eq!(s.chunks[1].tokens.len(), 7);
    assert!(!s.chunks[1].sample);
    assert_eq!(s.n_tokens(), 8);
}

#[test]
fn shared_prefix_is_reported_as_cached() {
    let cfg = SchedulerConfig {
        max_seqs: 4,
        token_budget: 64,
        max_waiting: 8,
        n_ctx: 64,
        snapshots: Default::default(),
    };
    let mut sch = Scheduler::new(cfg, 32, 4);
    let system: Vec<u32> = (100..112).collect();
    let mut a = system.clone();
    a.push(1);
    sch.add(1, a, Some(1)).unwrap();
    let s = sch.schedule();
    sch.complete(&s, &[sampled(1, 7)]);
    let mut b = system.clone();
    b.push(2);
    sch.add(2, b, Some(1)).unwrap();
    let s = sch.schedule();
    let c = s.chunks.iter().find(|c| c.id == 2).unwrap();
    assert_eq!(c.pos, 12, "the system prompt's three blocks are reused");
    assert_eq!(sch.cached_tokens(2), Some(12));
}

#[test]
fn impossible_requests_are_rejected() {
    let cfg = SchedulerConfig {
        max_seqs: 1,
        token_budget: 8,
        max_waiting: 1,
        n_ctx: 16,
        snapshots: Default::default(),
    };
    let mut sch = Scheduler::new(cfg, 2, 4);
    assert!(matches!(
        sch.add(1, vec![1; 10], Some(10)),
        Err(Rejected::TooLong { .. })
    ));
    assert!(matches!(
        sch.add(1, vec![1; 10], Some(2)),
        Err(Rejected::TooBig { .. })
    ));
    assert!(matches!(sch.add(1, vec![], Some(2)), Err(Rejected::Empty)));
    sch.add(1, vec![1, 2], Some(2)).unwrap();
    assert!(matches!(
        sch.add(2, vec![1, 2], Some(2)),
        Err(Rejected::QueueFull(1))
    ));
}

fn sampled(id: u64, token: u32) -> Sampled {
    Sampled::one(id, token, false)
}

#[test]
fn without_max_tokens_a_sequence_runs_to_the_end_of_the_context() {
    let cfg = SchedulerConfig {
        max_seqs: 1,
        token_budget: 16,
        max_waiting: 4,
        n_ctx: 8,
        snapshots: Default::default(),
    };
    let mut sch = Scheduler::new(cfg, 2, 4);
    assert!(matches!(
        sch.add(1, vec![1; 8], None),
        Err(Rejected::TooLong { max_tokens: 1, .. })
    ));
    sch.add(1, vec![1; 5], None).unwrap();
    let mut reasons = Vec::new();
    for token in 0.. {
        let s = sch.schedule();
        if s.chunks.is_empty() {
            break;
        }
        reasons.extend(sch.complete(&s, &[sampled(1, token)]));
    }
    assert_eq!(reasons, vec![(1, FinishReason::Length)]);
    assert_eq!(sch.n_finished(FinishReason::Length), 1);
    assert_eq!(sch.blocks().n_used(), 0);
}

#[test]
fn a_window_group_holds_the_window_not_the_context() {
    let cfg = SchedulerConfig {
        max_seqs: 1,
        token_budget: 4,
        max_waiting: 4,
        n_ctx: 64,
        snapshots: Default::default(),
    };
    let (window, bs) = (6, 4);
    let pool = window_pool_blocks(&cfg, window, bs);
    let mut sch = Scheduler::new(cfg, 16, bs).with_window(window, pool);
    sch.add(1, (0..20).collect(), Some(40)).unwrap();
    let mut most = 0;
    for token in 0.. {
        let s = sch.schedule();
        if s.chunks.is_empty() {
            break;
        }
        let (c, table) = (&s.chunks[0], sch.window_table(1).unwrap());
        assert!(table.len() * bs >= c.pos + c.tokens.len());
        most = most.max(sch.window_blocks().unwrap().pool().n_used());
        sch.complete(&s, &[sampled(1, token)]);
    }
    // Window 6 plus a chunk of 4 spans at most 3 blocks of 4, plus one for alignment.
    assert!(most <= 4, "{most} window blocks for 60 positions");
    assert_eq!(sch.n_finished(FinishReason::Length), 1);
    assert_eq!(sch.window_blocks().unwrap().pool().n_used(), 0);
}

#[test]
fn a_window_pool_too_small_for_one_window_refuses_long_requests() {
    let cfg = SchedulerConfig {
        max_seqs: 1,
        token_budget: 8,
        max_waiting: 4,
        n_ctx: 64,
        snapshots: Default::default(),
    };
    // Window 8 plus a chunk of 8 needs 5 blocks of 4; the pool has 2.
    let mut sch = Scheduler::new(cfg, 16, 4).with_window(8, 2);
    assert!(matches!(
        sch.add(1, vec![1; 10], Some(4)),
        Err(Rejected::TooBig { blocks: 2, .. })
    ));
    // A request that fits in 2 blocks altogether runs.
    sch.add(2, vec![1; 5], Some(3)).unwrap();
    for token in 0.. {
        let s = sch.schedule();
        if s.chunks.is_empty() {
            break;
        }
        sch.complete(&s, &[sampled(2, token)]);
    }
    assert_eq!(sch.n_finished(FinishReason::Length), 1);
}
