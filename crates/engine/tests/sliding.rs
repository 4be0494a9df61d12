//! Sliding-window layers (Gemma 3) in the one generation loop: their blocks live in a pool of
//! their own, given back as they leave each sequence's window, yet greedy tokens equal those of
//! one forward pass over the whole text with full block tables (`frugal logits`' way); the
//! window pool's blocks in use stay bounded by the window while the sequence grows; a prompt
//! resumes from the prefix cache only where the window's blocks are still cached.

use frugal_engine::sampler::SamplingParams;
use frugal_engine::{BatchEngine, Request};
use frugal_fixtures::{ids, Set};
use frugal_formats::GgufFile;
use frugal_kernels::ThreadPool;
use frugal_models::{LoadOptions, Logits, Model, SeqChunk};
use frugal_scheduler::{window_pool_blocks, SchedulerConfig};
use frugal_tokenizer::Tokenizer;
use std::collections::HashMap;

const BLOCK: usize = 4;
const N_CTX: usize = 256;

struct Fixture {
    model: Model,
    tokenizer: Tokenizer,
    prompt: Vec<u32>,
}

fn fixture() -> Fixture {
    let set = Set::labs();
    let name = "gemma3-Q4_K_M";
    let gguf = GgufFile::open(set.model(name)).unwrap();
    Fixture {
        model: Model::load(&gguf, &LoadOptions::default()).unwrap(),
        tokenizer: Tokenizer::from_gguf(&gguf).unwrap(),
        prompt: ids(&set.expected_json(name)["token_ids"]),
    }
}

fn config(max_seqs: usize, budget: usize) -> SchedulerConfig {
    SchedulerConfig {
        max_seqs,
        token_budget: budget,
        max_waiting: 16,
        n_ctx: N_CTX,
        snapshots: Default::default(),
    }
}

/// Greedy tokens as one forward pass over `text` computes them, with full block tables for
/// every layer: row `i` is the token after `text[..=i]`.
fn one_chunk(f: &Fixture, pool: &ThreadPool, text: &[u32]) -> Vec<u32> {
    let n_blocks = text.len().div_ceil(BLOCK);
    let mut kv = f.model.new_kv_store(n_blocks, BLOCK, 0);
    let blocks: Vec<u32> = (0..n_blocks as u32).collect();
    let chunk = SeqChunk {
        tokens: text,
        pos: 0,
        blocks: &blocks,
        window_blocks: &[],
        state: 0,
        logits: Logits::All,
    };
    let logits = f.model.forward(pool, &mut kv, &[chunk]).unwrap();
    let n_vocab = f.model.config().n_vocab;
    logits
        .chunks_exact(n_vocab)
        .map(|row| {
            let best = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1));
            best.map_or(0, |(i, _)| i as u32)
        })
        .collect()
}

/// Runs the requests (id, prompt, max_tokens) until the engine is idle: each one's tokens and
/// cached prompt tokens, and the most window-pool blocks in use at once.
fn run(
    eng: &mut BatchEngine,
    reqs: &[(u64, Vec<u32>, usize)],
) -> (HashMap<u64, (Vec<u32>, usize)>, usize) {
    for (id, p, n) in reqs {
        let mut req = Request::new(p.clone(), Some(*n), SamplingParams::greedy());
        req.ignore_eos = true;
        eng.add(*id, req).unwrap();
    }
    let mut out: HashMap<u64, (Vec<u32>, usize)> = HashMap::new();
    let mut most = 0;
    while !eng.is_idle() {
        for e in eng.step().unwrap().events {
            let o = out.entry(e.id).or_default();
            o.0.push(e.token);
            if let Some(f) = e.finish {
                o.1 = f.usage.cached_tokens;
            }
        }
        let window = eng
            .scheduler()
            .window_blocks()
            .expect("gemma3 has a window");
        most = most.max(window.pool().n_used());
    }
    let window = eng.scheduler().window_blocks().unwrap();
    assert_eq!(eng.scheduler().blocks().n_used(), 0, "blocks leaked");
    assert_eq!(window.pool().n_used(), 0, "window blocks leaked");
    (out, most)
}

/// The engine's tokens for `prompt` must be the argmax of one forward pass over the text.
fn assert_matches_one_chunk(f: &Fixture, pool: &ThreadPool, prompt: &[u32], tokens: &[u32]) {
    let mut text = prompt.to_vec();
    text.extend(&tokens[..tokens.len() - 1]);
    let want = one_chunk(f, pool, &text);
    assert_eq!(tokens, &want[prompt.len() - 1..]);
}

#[test]
fn paged_window_blocks_give_the_tokens_of_full_tables() {
    let f = fixture();
    let window = f.model.sliding_window().expect("gemma3 has sliding layers");
    let pool = ThreadPool::new(2);
    // Chunks of 8 tokens: the 103-token prompt in 13 chunks, then 100 decodes, 203 positions.
    let cfg = config(1, 8);
    let n_window = window_pool_blocks(&cfg, window, BLOCK);
    let n_blocks = N_CTX / BLOCK;
    assert!(n_window * 4 < n_blocks, "a small window pool");
    let mut eng = BatchEngine::new_split(
        &f.model,
        &f.tokenizer,
        &pool,
        cfg,
        n_blocks,
        n_window,
        BLOCK,
    );
    let (out, most) = run(&mut eng, &[(1, f.prompt.clone(), 100)]);
    assert_eq!(out[&1].0.len(), 100);
    assert_matches_one_chunk(&f, &pool, &f.prompt, &out[&1].0);
    // One window (16) plus a chunk (8) spans at most 7 blocks of 4, whatever the context.
    assert!(
        most <= (window - 1 + 8).div_ceil(BLOCK) + 1,
        "{most} window blocks in use"
    );
}

#[test]
fn prompts_resume_only_where_the_window_is_cached() {
    let f = fixture();
    let window = f.model.sliding_window().unwrap();
    let pool = ThreadPool::new(2);
    let cfg = config(2, 8);
    let n_window = window_pool_blocks(&cfg, window, BLOCK);
    let mut eng = BatchEngine::new_split(
        &f.model,
        &f.tokenizer,
        &pool,
        cfg,
        N_CTX / BLOCK,
        n_window,
        BLOCK,
    );
    let p = &f.prompt;
    let (first, _) = run(&mut eng, &[(1, p.clone(), 6)]);
    assert_eq!(first[&1].1, 0);
    assert_matches_one_chunk(&f, &pool, p, &first[&1].0);
    // The same prompt: its last window (positions 85..100) is still in the window pool, so it
    // resumes at 100 (the last token is always recomputed) and gives the same tokens.
    let (again, _) = run(&mut eng, &[(2, p.clone(), 6)]);
    assert_eq!(again[&2], (first[&1].0.clone(), 100));
    // A prompt sharing 60 tokens: the full group still has them, but the window of position 60
    // (45..60) left the small window pool long ago, so nothing is resumed.
    let mut branch = p[..60].to_vec();
    branch.extend([5, 6, 7]);
    assert_eq!(eng.scheduler().blocks().cached_prefix_len(&branch), 60);
    let (branched, _) = run(&mut eng, &[(3, branch.clone(), 6)]);
    assert_eq!(branched[&3].1, 0);
    assert_matches_one_chunk(&f, &pool, &branch, &branched[&3].0);
}

#[test]
fn a_window_pool_too_small_for_every_sequence_preempts_and_keeps_tokens() {
    let f = fixture();
    let window = f.model.sliding_window().unwrap();
    let pool = ThreadPool::new(2);
    let p = &f.prompt;
    let reqs: Vec<(u64, Vec<u32>, usize)> = (0..3)
        .map(|i| {
            let mut q = p[..40 + 9 * i].to_vec();
            q.push(100 + i as u32);
            (i as u64, q, 24)
        })
        .collect();
    // Room for every sequence in the full pool, for one and a bit in the window pool.
    let one = window_pool_blocks(&config(1, 8), window, BLOCK);
    let mut eng = BatchEngine::new_split(
        &f.model,
        &f.tokenizer,
        &pool,
        config(3, 8),
        3 * N_CTX / BLOCK,
        one + 2,
        BLOCK,
    );
    let (out, most) = run(&mut eng, &reqs);
    assert!(eng.scheduler().preemptions() > 0, "no preemption happened");
    assert!(most <= one + 2);
    for (id, q, _) in &reqs {
        assert_matches_one_chunk(&f, &pool, q, &out[id].0);
    }
}
