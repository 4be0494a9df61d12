//! Keys and values stored as f16, bf16, q8_0 or q4_0 instead of f32: the logits move by what
//! rounding the cache costs, and no more. Measured against the f32 cache (the exact path the
//! parity tests hold to llama.cpp) on the fixtures' 103-token prompt, batched and one token at a
//! time: the cache's rounding is an error of at most u = 2^-11 (f16) or 2^-8 (bf16) of each
//! stored value, or of at most u = 2^-8 (q8_0: half of 1/127) or 2^-4 (q4_0: half of 1/8) of the
//! largest value of its block of 32; the logits stay within 8u of the largest logit, and the top
//! token is the same wherever f32's best two are not closer than the distance itself.

mod common;

use frugal_fixtures::{ids, Set};
use frugal_kernels::ThreadPool;
use frugal_models::BlockGroup::Full;
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
        let types = [
            (KvType::F16, 2f32.powi(-11)),
            (KvType::Bf16, 2f32.powi(-8)),
            (KvType::Q8_0, 2f32.powi(-8)),
            (KvType::Q4_0, 2f32.powi(-4)),
        ];
        for (ty, u) in types {
            model.config().check_kv_type(ty).unwrap();
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

/// Heads that are not whole blocks of 32 cannot be quantized: a clear refusal, before any store
/// is made.
#[test]
fn quantized_types_need_heads_in_blocks_of_32() {
    let model = common::load(&Set::shared(), "qwen2-f32", false);
    let mut c = model.config().clone();
    c.head_dim_k = 48;
    let err = c.check_kv_type(KvType::Q8_0).unwrap_err();
    assert!(err.contains("48") && err.contains("f16"), "{err}");
    assert!(c.check_kv_type(KvType::F16).is_ok());
}

/// A store's blocks copied out as bytes and into a fresh store (what the disk tier does) give
/// the same next logits, bit for bit, in every type.
#[test]
fn blocks_copied_through_bytes_are_the_same_cache() {
    let set = Set::shared();
    let tokens = ids(&set.expected_json("qwen2-f32")["token_ids"]);
    let model = common::load(&set, "qwen2-f32", false);
    let pool = ThreadPool::new(2);
    let blocks: Vec<u32> = (0..8).collect();
    let (head, last) = tokens.split_at(tokens.len() - 1);
    let chunk = |tokens, pos, logits| SeqChunk {
        tokens,
        pos,
        blocks: &blocks,
        window_blocks: &[],
        state: 0,
        logits,
    };
    for ty in KvType::ALL {
        let mut kv = model.new_kv_store_split(ty, 8, 8, 16, 1);
        model
            .forward(&pool, &mut kv, &[chunk(head, 0, Logits::None)])
            .unwrap();
        let mut copy = model.new_kv_store_split(ty, 8, 8, 16, 1);
        assert_eq!(copy.block_bytes(Full), kv.block_bytes(Full));
        for &b in &blocks {
            let mut bytes = Vec::new();
            kv.read_block(Full, b, &mut bytes);
            assert_eq!(bytes.len(), kv.block_bytes(Full));
            assert!(copy.write_block(Full, b, &bytes));
        }
        assert!(
            !copy.write_block(Full, 0, &[0; 3]),
            "a short block is refused"
        );
        let want = model
            .forward(&pool, &mut kv, &[chunk(last, head.len(), Logits::Last)])
            .unwrap();
        let got = model
            .forward(&pool, &mut copy, &[chunk(last, head.len(), Logits::Last)])
            .unwrap();
        assert_eq!(got, want, "{ty}");
    }
}
