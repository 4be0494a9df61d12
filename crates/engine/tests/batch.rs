//! Batch invariance: with greedy sampling a request yields the same tokens alone and inside a
//! batch of others (chunked prefill, decodes and prefills mixed in one forward pass), and those
//! tokens are llama.cpp's greedy continuation.

use frugal_engine::sampler::SamplingParams;
use frugal_engine::{BatchEngine, Request};
use frugal_fixtures::{dir as fixtures, ids};
use frugal_formats::GgufFile;
use frugal_kernels::ThreadPool;
use frugal_models::{LoadOptions, Model};
use frugal_scheduler::SchedulerConfig;
use frugal_tokenizer::Tokenizer;
use std::collections::HashMap;

fn expected(name: &str) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("expected").join(format!("{name}.json"))).unwrap(),
    )
    .unwrap()
}

/// Runs requests (id, prompt, max_tokens) to completion; returns the tokens of each.
fn run(
    model: &Model,
    tokenizer: &Tokenizer,
    budget: usize,
    reqs: &[(u64, Vec<u32>, usize)],
) -> HashMap<u64, Vec<u32>> {
    let pool = ThreadPool::new(2);
    let cfg = SchedulerConfig {
        max_seqs: 4,
        token_budget: budget,
        max_waiting: 16,
        n_ctx: 128,
        snapshots: Default::default(),
    };
    let mut eng = BatchEngine::new(model, tokenizer, &pool, cfg, 40, 8);
    for (id, p, n) in reqs {
        let mut req = Request::new(p.clone(), Some(*n), SamplingParams::greedy());
        // The fixtures' greedy runs ignore end-of-generation tokens too.
        req.ignore_eos = true;
        eng.add(*id, req).unwrap();
    }
    let mut out: HashMap<u64, Vec<u32>> = HashMap::new();
    let mut steps = 0;
    while !eng.is_idle() {
        for e in eng.step().unwrap().events {
            out.entry(e.id).or_default().push(e.token);
        }
        steps += 1;
        assert!(steps < 10_000, "no progress");
    }
    assert_eq!(eng.scheduler().blocks().n_used(), 0, "blocks leaked");
    out
}

#[test]
fn greedy_tokens_do_not_depend_on_the_batch() {
    for name in [
        "qwen2-f32",
        "qwen2-Q8_0",
        "qwen3moe-Q4_K_M",
        "deepseek2-Q8_0",
    ] {
        let gguf = GgufFile::open(fixtures().join("models").join(format!("{name}.gguf"))).unwrap();
        let model = Model::load(&gguf, &LoadOptions::default()).unwrap();
        let tokenizer = Tokenizer::from_gguf(&gguf).unwrap();
        let e = expected(name);
        let prompt = ids(&e["token_ids"]);
        let alone = run(&model, &tokenizer, 64, &[(1, prompt.clone(), 16)]);
        if name.ends_with("f32") {
            assert_eq!(
                alone[&1],
                ids(&e["greedy"]["tokens"]),
                "{name}: llama.cpp's greedy tokens"
            );
        }
        // Others share a prefix with it, or not; a small budget forces chunked prefill.
        let mut other = prompt[..20].to_vec();
        other.extend([5, 6, 7]);
        let reqs = vec![
            (2, other, 10),
            (1, prompt.clone(), 16),
            (3, vec![42, 43, 44, 45, 46], 24),
            (4, prompt[..33].to_vec(), 5),
        ];
        for budget in [5, 13, 64] {
            let batched = run(&model, &tokenizer, budget, &reqs);
            assert_eq!(batched[&1], alone[&1], "{name}, budget {budget}");
            assert_eq!(batched[&2].len(), 10);
            assert_eq!(batched[&3].len(), 24);
            let single = run(&model, &tokenizer, 64, &[(3, vec![42, 43, 44, 45, 46], 24)]);
            assert_eq!(batched[&3], single[&3], "{name}, budget {budget}");
        }
    }
}
