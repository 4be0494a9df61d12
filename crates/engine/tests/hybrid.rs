//! Hybrid models (Gated DeltaNet layers with a recurrent state per sequence, beside attention
//! layers with paged KV) in the one generation loop: greedy tokens do not depend on the batch,
//! on chunked prefill, on resuming from a prefix snapshot, or on preemption; `cached_tokens`
//! counts the prefix resumed from a snapshot and nothing more; no block or state slot leaks.

use frugal_engine::sampler::SamplingParams;
use frugal_engine::{BatchEngine, Request};
use frugal_fixtures::{ids, Set};
use frugal_formats::GgufFile;
use frugal_kernels::ThreadPool;
use frugal_models::{LoadOptions, Model};
use frugal_scheduler::{SchedulerConfig, SnapshotConfig};
use frugal_tokenizer::Tokenizer;
use std::collections::HashMap;

const BLOCK: usize = 8;

struct Fixture {
    model: Model,
    tokenizer: Tokenizer,
    prompt: Vec<u32>,
}

fn fixture(name: &str) -> Fixture {
    let set = Set::hybrid();
    let gguf = GgufFile::open(set.model(name)).unwrap();
    Fixture {
        model: Model::load(&gguf, &LoadOptions::default()).unwrap(),
        tokenizer: Tokenizer::from_gguf(&gguf).unwrap(),
        prompt: ids(&set.expected_json(name)["token_ids"]),
    }
}

/// An engine with `n_blocks` KV blocks, a token budget per step and a snapshot interval.
fn engine<'a>(
    f: &'a Fixture,
    pool: &'a ThreadPool,
    budget: usize,
    n_blocks: usize,
    every: usize,
) -> BatchEngine<'a> {
    let cfg = SchedulerConfig {
        max_seqs: 4,
        token_budget: budget,
        max_waiting: 16,
        n_ctx: 160,
        snapshots: SnapshotConfig {
            every,
            budget_bytes: 64 << 20,
        },
    };
    BatchEngine::new(&f.model, &f.tokenizer, pool, cfg, n_blocks, BLOCK)
}

/// What one request produced: its tokens and its cached prompt tokens.
type Outcome = (Vec<u32>, usize);

/// Runs the requests (id, prompt, max_tokens) on `eng` until it is idle.
fn run(eng: &mut BatchEngine, reqs: &[(u64, Vec<u32>, usize)]) -> HashMap<u64, Outcome> {
    for (id, p, n) in reqs {
        let mut req = Request::new(p.clone(), Some(*n), SamplingParams::greedy());
        req.ignore_eos = true;
        eng.add(*id, req).unwrap();
    }
    let mut out: HashMap<u64, Outcome> = HashMap::new();
    let mut steps = 0;
    while !eng.is_idle() {
        for e in eng.step().unwrap().events {
            let o = out.entry(e.id).or_default();
            o.0.push(e.token);
            if let Some(f) = e.finish {
                o.1 = f.usage.cached_tokens;
            }
        }
        steps += 1;
        assert!(steps < 10_000, "no progress");
    }
    assert_eq!(eng.scheduler().blocks().n_used(), 0, "blocks leaked");
    eng.scheduler().check_states().unwrap();
    out
}

/// The sequence alone, in one chunk, no cache: the reference every other run must equal.
fn alone(f: &Fixture, prompt: &[u32], n: usize) -> Vec<u32> {
    let pool = ThreadPool::new(2);
    let mut eng = engine(f, &pool, 256, 64, 512);
    run(&mut eng, &[(1, prompt.to_vec(), n)])
        .remove(&1)
        .unwrap()
        .0
}

#[test]
fn hybrid_greedy_tokens_do_not_depend_on_the_batch() {
    for name in ["qwen35-Q4_K_M", "qwen35moe-Q4_K_M"] {
        let f = fixture(name);
        let p = &f.prompt;
        let reference = alone(&f, p, 12);
        let short = vec![42, 43, 44, 45, 46];
        let short_alone = alone(&f, &short, 20);
        let pool = ThreadPool::new(2);
        // Budgets of at least one window of the delta rule's chunked form (32 tokens): chunks
        // cut short by the budget end at window boundaries.
        for budget in [64, 100, 160] {
            let mut eng = engine(&f, &pool, budget, 64, 512);
            let mut other = p[..20].to_vec();
            other.extend([5, 6, 7]);
            let out = run(
                &mut eng,
                &[
                    (2, other, 9),
                    (1, p.clone(), 12),
                    (3, short.clone(), 20),
                    (4, p[..33].to_vec(), 5),
                ],
            );
            assert_eq!(out[&1].0, reference, "{name}, budget {budget}");
            assert_eq!(out[&3].0, short_alone, "{name}, budget {budget}");
            assert_eq!(out[&4].0, alone(&f, &p[..33], 5), "{name}, budget {budget}");
        }
    }
}

#[test]
fn hybrid_prompts_resume_from_state_snapshots() {
    let f = fixture("qwen35-Q4_K_M");
    let p = &f.prompt;
    let reference = alone(&f, p, 8);
    let pool = ThreadPool::new(2);
    // Snapshots every 64 tokens (two windows) and at the prompt's last block boundary (96 of 103).
    let mut eng = engine(&f, &pool, 64, 64, 64);
    let first = run(&mut eng, &[(1, p.clone(), 8)]);
    assert_eq!(first[&1], (reference.clone(), 0));
    assert_eq!(eng.scheduler().states().unwrap().n_snapshots(), 2);
    // The same prompt again: resumed at 96, only 7 tokens recomputed, the same tokens.
    let again = run(&mut eng, &[(2, p.clone(), 8)]);
    assert_eq!(again[&2], (reference, 96));
    // A prompt sharing 70 tokens: resumed from the snapshot at 64.
    let mut branch = p[..70].to_vec();
    branch.extend([9, 10, 11]);
    let branched = run(&mut eng, &[(3, branch.clone(), 6)]);
    assert_eq!(branched[&3], (alone(&f, &branch, 6), 64));
}

#[test]
fn hybrid_snapshots_are_only_used_where_they_exist() {
    let f = fixture("qwen35-Q4_K_M");
    let p = &f.prompt;
    let pool = ThreadPool::new(2);
    // Snapshots only every 512 tokens, at prompt ends and at branch points: a prompt sharing 37
    // tokens with an earlier one finds its blocks cached but no state there, so it recomputes
    // from 0.
    let mut eng = engine(&f, &pool, 64, 64, 512);
    run(&mut eng, &[(1, p.clone(), 4)]);
    let mut branch = p[..37].to_vec();
    branch.extend([9, 10, 11]);
    let out = run(&mut eng, &[(2, branch.clone(), 6)]);
    assert_eq!(out[&2], (alone(&f, &branch, 6), 0));
    // That second prompt took a snapshot where its cached blocks ended (32: a shared prefix), so
    // a third prompt sharing it resumes there.
    let mut third = p[..37].to_vec();
    third.extend([12, 13]);
    let out = run(&mut eng, &[(3, third.clone(), 6)]);
    assert_eq!(out[&3], (alone(&f, &third, 6), 32));
}

#[test]
fn hybrid_preemption_recomputes_state_and_keeps_tokens() {
    let f = fixture("qwen35moe-Q4_K_M");
    let p = &f.prompt;
    let reqs: Vec<(u64, Vec<u32>, usize)> = (0..4)
        .map(|i| {
            let mut q = p[..40 + 9 * i].to_vec();
            q.push(100 + i as u32);
            (i as u64, q, 24)
        })
        .collect();
    let want: Vec<Vec<u32>> = reqs.iter().map(|(_, q, n)| alone(&f, q, *n)).collect();
    let pool = ThreadPool::new(2);
    // 28 blocks of 8 cannot hold four sequences of 65-92 positions: some are preempted.
    let mut eng = engine(&f, &pool, 64, 28, 16);
    let out = run(&mut eng, &reqs);
    assert!(eng.scheduler().preemptions() > 0, "no preemption happened");
    for (i, w) in want.iter().enumerate() {
        assert_eq!(&out[&(i as u64)].0, w, "request {i}");
    }
}
