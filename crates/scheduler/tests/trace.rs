//! Simulated request traces: the budget is never exceeded, block tables always cover what a step
//! computes, every request finishes or is rejected, and no block leaks. Half the traces are of a
//! hybrid model: each state slot's contents are simulated (the tokens it has consumed) through
//! the step's restores, chunks and snapshots, so a sequence that runs from a state that is not
//! exactly its own prefix fails the trace.

use frugal_scheduler::{
    FinishReason, Rejected, Sampled, Scheduler, SchedulerConfig, SnapshotConfig, Step,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};

#[test]
fn random_traces() {
    let (mut preemptions, mut resumed) = (0, 0);
    for seed in 0..150 {
        let (p, r) = Trace::new(seed).run();
        preemptions += p;
        resumed += r;
    }
    assert!(preemptions > 0, "the traces must exercise preemption");
    assert!(resumed > 0, "the traces must resume from state snapshots");
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
        let mut sch = Scheduler::new(cfg, n_blocks, block_size);
        let hybrid = seed % 2 == 1;
        if hybrid {
            // One byte per state: the budget above is the number of snapshot slots.
            sch = sch.with_states(1, 1 + seed as usize % 7);
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
        }
    }

    /// Runs the trace to the end, checking every step; the number of preemptions and of
    /// sequences resumed from a snapshot.
    fn run(mut self) -> (u64, u64) {
        let seed = self.seed;
        for round in 0..2000 {
            if round < 400 && self.rng.gen_bool(0.3) {
                self.add_request();
            }
            let step = self.sch.schedule();
            self.check_step(&step);
            self.run_states(&step);
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
        (self.sch.preemptions(), self.resumed)
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
        }
        for &(from, to) in &step.snapshots {
            let state = slots[&from].clone();
            slots.insert(to, state);
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
                table.len() * self.block_size >= c.pos + c.tokens.len(),
                "seed {seed}: blocks do not cover the chunk"
            );
        }
    }

    /// Samples a token for each chunk that asks for one and completes the step; then a client
    /// sometimes disconnects.
    fn complete(&mut self, step: &Step) {
        let rng = &mut self.rng;
        // The engine sometimes ends a sequence with the token it sampled (EOS, stop string).
        let sampled: Vec<Sampled> = step
            .chunks
            .iter()
            .filter(|c| c.sample)
            .map(|c| Sampled {
                id: c.id,
                token: rng.gen_range(0..50),
                stop: rng.gen_bool(0.03),
            })
            .collect();
        for x in &sampled {
            self.tokens.get_mut(&x.id).expect("known").push(x.token);
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
    Sampled {
        id,
        token,
        stop: false,
    }
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
