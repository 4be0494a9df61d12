//! Keys and values stored as f16 or bf16 instead of f32: the logits move by what rounding the
//! cache costs, and no more. Measured against the f32 cache (the exact path the parity tests
//! hold to llama.cpp) on the fixtures' 103-token prompt, batched and one token at a time: the
//! cache's rounding is a relative error of at most u = 2^-11 (f16) or 2^-8 (bf16) per stored
//! value; the logits stay within 8u of the largest logit (measured: about 1.3u on every fixture
//! here), and the top token is the same wherever f32's best two are not closer than the distance
//! itself.

mod common;

use frugal_fixtures::{ids, Set};
use frugal_kernels::ThreadPool;
use frugal_models::{KvType, Logits, Model, SeqChunk};

fn logits(model: &Model, ty: KvType, tokens: &[u32], step: bool) -> Vec<f32> {
    let pool = ThreadPool::new(2);
    let blocks: Vec<u32> = (0..8).collect();
    let mut kv = model.new_kv_store_split(ty, 8, 8, 16, 1);
    let chunk = |tokens, pos, logits| SeqChunk {
        tokens,
        pos,
        blocks: &blocks,
        window_blocks: &[],
        state: 0,
        logits,
    };
    if !step {
        return model
            .forward(&pool, &mut kv, &[chunk(tokens, 0, Logits::All)])
            .unwrap();
    }
    let mut out = Vec::new();
    for (pos, t) in tokens.iter().enumerate() {
        let c = chunk(std::slice::from_ref(t), pos, Logits::Last);
        out.extend(model.forward(&pool, &mut kv, &[c]).unwrap());
    }
    out
}

fn check(set: &Set, name: &str) {
    let tokens = ids(&set.expected_json(name)["token_ids"]);
    let model = common::load(set, name, false);
    let n_vocab = model.config().n_vocab;
    for step in [false, true] {
        let exact = logits(&model, KvType::F32, &tokens, step);
        let scale = exact.iter().fold(0f32, |m, x| m.max(x.abs()));
        for (ty, u) in [(KvType::F16, 2f32.powi(-11)), (KvType::Bf16, 2f32.powi(-8))] {
            let got = logits(&model, ty, &tokens, step);
            let d = common::dist(&got, &exact);
            eprintln!(
                "{name} {ty} (step={step}): max |Δ| {:.2e}, mean {:.2e}, largest logit {scale:.1}",
                d.max, d.mean
            );
            assert!(d.max <= 8.0 * u * scale, "{name} {ty}: max |Δ| {}", d.max);
            let bad = common::argmax_mismatches(&got, &exact, d.max, n_vocab);
            assert!(bad.is_empty(), "{name} {ty}: argmax differs at {bad:?}");
        }
    }
}

#[test]
fn dense_gqa() {
    check(&Set::shared(), "qwen2-f32");
}

#[test]
fn mla_latent() {
    check(&Set::shared(), "deepseek2-f32");
}

#[test]
fn sliding_window_and_hybrid() {
    check(&Set::labs(), "gemma3-f32");
    check(&Set::hybrid(), "qwen35-f32");
}
