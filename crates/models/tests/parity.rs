//! Logits parity against llama.cpp on the fixture models (../shared/fixtures, see its README for
//! where every reference comes from and the tolerances used here). The checks and tolerances live in
//! `common` (shared with `quant_parity.rs`):
//!
//! - F32 models: max |Δ| <= 1e-3 against the batched and step references, same argmax everywhere
//!   (unless the reference's own top-1 margin is below twice our max |Δ|), same 16 greedy tokens.
//! - Quantized models, exact path (weights dequantized to f32): max |Δ| <= 1e-3 against llama.cpp
//!   on the dequantized copy, same argmax and greedy tokens as that copy.
//! - Quantized models, ggml path (activations quantized like ggml): mean |Δ| <= 0.06, top-1
//!   agreement >= 90 %, max |Δ| <= 0.5 (dense), and the quantization-error sanity bound.

mod common;

use common::{check_f32, check_quantized, dist, load, logits};
use frugal_fixtures::{ids, Set};
use frugal_formats::GgufFile;
use frugal_kernels::ThreadPool;
use frugal_models::{LoadOptions, Logits, Model, SeqChunk};

fn shared() -> Set {
    Set::shared()
}

fn expected(model: &str) -> serde_json::Value {
    shared().expected_json(model)
}

macro_rules! parity {
    ($($name:ident => $check:ident($file:literal);)*) => {
        $(#[test] fn $name() { $check(&shared(), $file); })*
    };
}

parity! {
    llama_f32 => check_f32("llama-f32");
    qwen2_f32 => check_f32("qwen2-f32");
    qwen3_f32 => check_f32("qwen3-f32");
    llama_q8_0 => check_quantized("llama-Q8_0");
    llama_q4_k_m => check_quantized("llama-Q4_K_M");
    qwen2_q4_0 => check_quantized("qwen2-Q4_0");
    qwen2_q4_k_m => check_quantized("qwen2-Q4_K_M");
    qwen2_q6_k => check_quantized("qwen2-Q6_K");
    qwen2_q8_0 => check_quantized("qwen2-Q8_0");
    qwen3_q8_0 => check_quantized("qwen3-Q8_0");
    qwen3_q4_k_m => check_quantized("qwen3-Q4_K_M");
    qwen2moe_f32 => check_f32("qwen2moe-f32");
    qwen2moe_q8_0 => check_quantized("qwen2moe-Q8_0");
    qwen2moe_q4_k_m => check_quantized("qwen2moe-Q4_K_M");
    qwen3moe_f32 => check_f32("qwen3moe-f32");
    qwen3moe_q8_0 => check_quantized("qwen3moe-Q8_0");
    qwen3moe_q4_k_m => check_quantized("qwen3moe-Q4_K_M");
    deepseek2_f32 => check_f32("deepseek2-f32");
    deepseek2_q8_0 => check_quantized("deepseek2-Q8_0");
    deepseek2_q4_k_m => check_quantized("deepseek2-Q4_K_M");
}

#[test]
fn mla_caches_the_latent_not_full_keys_and_values() {
    let model = load(&shared(), "deepseek2-f32", false);
    let c = model.config();
    use frugal_models::KvType;
    // Per layer: latent 256 + RoPE key 32, kept twice (transposed for the scores, as rows for
    // the values), as f32 or f16.
    assert_eq!(c.kv_bytes_per_token(KvType::F32), 2 * 2 * (256 + 32) * 4);
    assert_eq!(c.kv_bytes_per_token(KvType::F16), 2 * 2 * (256 + 32) * 2);
    // Full keys (4 heads x (32 + 32)) and values (4 x 32) would take 384 floats per layer.
    assert_eq!(
        c.kv_bytes_per_token_unabsorbed(KvType::F32),
        2 * 4 * (32 + 32 + 32) * 4
    );
}

#[test]
fn unknown_architecture_is_a_clear_error() {
    let mut w = frugal_formats::GgufWriter::new();
    w.add_metadata(
        "general.architecture",
        frugal_formats::Value::String("mamba9".into()),
    );
    let gguf = GgufFile::from_bytes(w.to_bytes(), "mamba9.gguf").unwrap();
    let err = Model::load(&gguf, &LoadOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("mamba9") && err.contains("qwen2") && err.contains("llama"),
        "{err}"
    );
}

#[test]
fn out_of_range_token_is_an_error() {
    let model = load(&shared(), "qwen2-f32", false);
    let pool = ThreadPool::new(1);
    let blocks = [0u32];
    let mut kv = model.new_kv_store(1, 16, 1);
    let c = SeqChunk {
        tokens: &[576],
        pos: 0,
        blocks: &blocks,
        window_blocks: &[],
        state: 0,
        logits: Logits::Last,
    };
    assert!(model.forward(&pool, &mut kv, &[c]).is_err());
    let c = SeqChunk {
        tokens: &[1; 17],
        pos: 0,
        blocks: &blocks,
        window_blocks: &[],
        state: 0,
        logits: Logits::Last,
    };
    assert!(
        model.forward(&pool, &mut kv, &[c]).is_err(),
        "KV overflow must be an error"
    );
}

/// The llama fixture rewritten with a `rope_freqs.weight` tensor of the given factor.
fn llama_with_rope_freqs(factor: f32) -> Model {
    let src = GgufFile::open(shared().model("llama-f32")).unwrap();
    let mut w = frugal_formats::GgufWriter::new();
    for (k, v) in src.metadata() {
        w.add_metadata(k.clone(), v.clone());
    }
    for t in src.tensors() {
        w.add_tensor(t.name.clone(), &t.dims, t.ty, src.tensor_data(t).to_vec());
    }
    let ff: Vec<u8> = std::iter::repeat_n(factor.to_le_bytes(), 32)
        .flatten()
        .collect();
    w.add_tensor(
        "rope_freqs.weight",
        &[32],
        frugal_kernels::GgmlType::F32,
        ff,
    );
    let g = GgufFile::from_bytes(w.to_bytes(), "llama-rope-freqs.gguf").unwrap();
    Model::load(&g, &LoadOptions::default()).unwrap()
}

#[test]
fn rope_frequency_factors_are_applied() {
    let e = expected("llama-f32");
    let tokens = ids(&e["token_ids"]);
    let pool = ThreadPool::new(2);
    let base = logits(&load(&shared(), "llama-f32", false), &pool, &tokens, false);
    let ones = logits(&llama_with_rope_freqs(1.0), &pool, &tokens, false);
    assert_eq!(base, ones, "factors of 1 change nothing");
    let twos = logits(&llama_with_rope_freqs(2.0), &pool, &tokens, false);
    assert!(
        dist(&base, &twos).max > 1e-3,
        "factors of 2 must change the result"
    );
}

/// A fixture model with extra metadata (the same keys scripts/gen_yarn_reference.py adds).
fn with_metadata(model: &str, extra: &[(&str, frugal_formats::Value)]) -> Model {
    let src = GgufFile::open(shared().model(model)).unwrap();
    let mut w = frugal_formats::GgufWriter::new();
    for (k, v) in src.metadata() {
        w.add_metadata(k.clone(), v.clone());
    }
    for (k, v) in extra {
        w.add_metadata(*k, v.clone());
    }
    for t in src.tensors() {
        w.add_tensor(t.name.clone(), &t.dims, t.ty, src.tensor_data(t).to_vec());
    }
    let g = GgufFile::from_bytes(w.to_bytes(), model).unwrap();
    Model::load(&g, &LoadOptions::default()).unwrap()
}

#[test]
fn yarn_rope_scaling_matches_llama_cpp() {
    use frugal_formats::Value::{String as S, F32, U32};
    for (model, arch, log_mul) in [
        ("llama-f32", "llama", None),
        ("deepseek2-f32", "deepseek2", Some(0.0707)),
    ] {
        let mut extra = vec![
            (format!("{arch}.rope.scaling.type"), S("yarn".into())),
            (format!("{arch}.rope.scaling.factor"), F32(4.0)),
            (
                format!("{arch}.rope.scaling.original_context_length"),
                U32(32),
            ),
        ];
        if let Some(m) = log_mul {
            extra.push((format!("{arch}.rope.scaling.yarn_log_multiplier"), F32(m)));
        }
        let extra: Vec<(&str, frugal_formats::Value)> =
            extra.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let m = with_metadata(model, &extra);
        let tokens = ids(&expected(model)["token_ids"]);
        let pool = ThreadPool::new(2);
        let reference: Vec<f32> = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("tests/data/{model}-yarn.batched.f32")),
        )
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
        for step in [false, true] {
            let d = dist(&logits(&m, &pool, &tokens, step), &reference);
            eprintln!(
                "{model} yarn (step={step}): max |Δ| {:.2e}, mean |Δ| {:.2e}",
                d.max, d.mean
            );
            assert!(d.max <= 1e-3, "{model} yarn step={step}: max |Δ| {}", d.max);
        }
    }
}
