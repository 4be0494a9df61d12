//! Logits parity against llama.cpp on the fixture models (../shared/fixtures, see its README for
//! where every reference comes from and the tolerances used here).
//!
//! - F32 models: max |Δ| <= 1e-3 against the batched and step references, same argmax everywhere
//!   (unless the reference's own top-1 margin is below twice our max |Δ|), same 16 greedy tokens.
//! - Quantized models, exact path (weights dequantized to f32): max |Δ| <= 1e-3 against llama.cpp
//!   on the dequantized copy, same argmax and greedy tokens as that copy.
//! - Quantized models, ggml path (activations quantized like ggml): mean |Δ| <= 0.06, top-1
//!   agreement >= 90 %, max |Δ| <= 0.5 (dense), and the quantization-error sanity bound.

use frugal_fixtures::{dir as fixtures, ids};
use frugal_formats::GgufFile;
use frugal_kernels::ThreadPool;
use frugal_models::{LoadOptions, Logits, Model, SeqChunk};
use serde_json::Value;

fn read_f32(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(fixtures().join("expected").join(name)).expect(name);
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn expected(model: &str) -> Value {
    let p = fixtures().join("expected").join(format!("{model}.json"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn load(model: &str, dequantize: bool) -> Model {
    let gguf = GgufFile::open(fixtures().join("models").join(format!("{model}.gguf"))).unwrap();
    Model::load(
        &gguf,
        &LoadOptions {
            dequantize,
            ..LoadOptions::default()
        },
    )
    .unwrap()
}

/// All-position logits, batched or one token per forward pass.
fn logits(model: &Model, pool: &ThreadPool, tokens: &[u32], step: bool) -> Vec<f32> {
    let blocks: Vec<u32> = (0..8).collect();
    let mut kv = model.new_kv_store(blocks.len(), 16);
    if step {
        let mut out = Vec::new();
        for (pos, t) in tokens.iter().enumerate() {
            let c = SeqChunk {
                tokens: std::slice::from_ref(t),
                pos,
                blocks: &blocks,
                logits: Logits::Last,
            };
            out.extend(model.forward(pool, &mut kv, &[c]).unwrap());
        }
        out
    } else {
        let c = SeqChunk {
            tokens,
            pos: 0,
            blocks: &blocks,
            logits: Logits::All,
        };
        model.forward(pool, &mut kv, &[c]).unwrap()
    }
}

/// Greedy continuation: the prompt in one batch, then one token per step (as the fixtures did).
fn greedy(model: &Model, pool: &ThreadPool, prompt: &[u32], n: usize) -> Vec<u32> {
    let blocks: Vec<u32> = (0..8).collect();
    let mut kv = model.new_kv_store(blocks.len(), 16);
    let c = SeqChunk {
        tokens: prompt,
        pos: 0,
        blocks: &blocks,
        logits: Logits::Last,
    };
    let mut last = model.forward(pool, &mut kv, &[c]).unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let t = argmax(&last);
        out.push(t);
        let c = SeqChunk {
            tokens: &[t],
            pos: prompt.len() + i,
            blocks: &blocks,
            logits: Logits::Last,
        };
        last = model.forward(pool, &mut kv, &[c]).unwrap();
    }
    out
}

/// Lowest id wins ties, like the fixtures.
fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

fn argmax_rows(logits: &[f32], n_vocab: usize) -> Vec<u32> {
    logits.chunks_exact(n_vocab).map(argmax).collect()
}

struct Dist {
    max: f32,
    mean: f32,
}

fn dist(a: &[f32], b: &[f32]) -> Dist {
    assert_eq!(a.len(), b.len());
    let mut max = 0.0f32;
    let mut sum = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        let d = (x - y).abs();
        assert!(d.is_finite(), "non-finite logit");
        max = max.max(d);
        sum += d as f64;
    }
    Dist {
        max,
        mean: (sum / a.len() as f64) as f32,
    }
}

/// Positions where our argmax differs from the reference's, ignoring near ties (the reference's
/// top-1 margin below twice our max |Δ|, where either id is acceptable).
fn argmax_mismatches(ours: &[f32], reference: &[f32], max_d: f32, n_vocab: usize) -> Vec<usize> {
    ours.chunks_exact(n_vocab)
        .zip(reference.chunks_exact(n_vocab))
        .enumerate()
        .filter(|(_, (row, want))| {
            let w = argmax(want) as usize;
            let second = want
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != w)
                .map(|(_, v)| *v)
                .fold(f32::NEG_INFINITY, f32::max);
            argmax(row) as usize != w && want[w] - second >= 2.0 * max_d
        })
        .map(|(i, _)| i)
        .collect()
}

fn check_f32(model_name: &str) {
    let e = expected(model_name);
    let tokens = ids(&e["token_ids"]);
    let n_vocab = e["n_vocab"].as_u64().unwrap() as usize;
    let model = load(model_name, false);
    let pool = ThreadPool::new(2);
    for step in [false, true] {
        let ours = logits(&model, &pool, &tokens, step);
        let file = if step { "step" } else { "batched" };
        let reference = read_f32(e["logits"][file].as_str().unwrap());
        let d = dist(&ours, &reference);
        eprintln!(
            "{model_name} {file}: max |Δ| {:.2e}, mean |Δ| {:.2e}",
            d.max, d.mean
        );
        assert!(
            d.max <= 1e-3,
            "{model_name} {file}: max |Δ| {} > 1e-3",
            d.max
        );
        let bad = argmax_mismatches(&ours, &reference, d.max, n_vocab);
        assert!(
            bad.is_empty(),
            "{model_name} {file}: argmax differs at {bad:?}"
        );
        if !step {
            assert_eq!(
                argmax_rows(&reference, n_vocab),
                ids(&e["argmax"]),
                "fixture self-check"
            );
        }
    }
    let hf = read_f32(e["hf_reference"]["logits"].as_str().unwrap());
    let d = dist(&logits(&model, &pool, &tokens, false), &hf);
    eprintln!(
        "{model_name} vs HF: max |Δ| {:.2e}, mean |Δ| {:.2e}",
        d.max, d.mean
    );
    assert!(d.max <= 1e-3, "{model_name} vs HF: max |Δ| {}", d.max);
    let g = greedy(&model, &pool, &tokens, 16);
    assert_eq!(
        g,
        ids(&e["greedy"]["tokens"]),
        "{model_name}: greedy tokens"
    );
}

fn check_quantized(model_name: &str) {
    let e = expected(model_name);
    let tokens = ids(&e["token_ids"]);
    let pool = ThreadPool::new(2);
    check_exact_path(model_name, &e, &tokens, &pool);
    check_ggml_path(model_name, &e, &tokens, &pool);
}

/// Exact path: dequantized weights against llama.cpp on the dequantized copy.
fn check_exact_path(model_name: &str, e: &Value, tokens: &[u32], pool: &ThreadPool) {
    let n_vocab = e["n_vocab"].as_u64().unwrap() as usize;
    let exact = load(model_name, true);
    let deq_ref = read_f32(e["logits"]["deq_batched"].as_str().unwrap());
    let deq = &e["deq_reference"];
    assert_eq!(
        argmax_rows(&deq_ref, n_vocab),
        ids(&deq["argmax"]),
        "fixture self-check"
    );
    for step in [false, true] {
        let ours = logits(&exact, pool, tokens, step);
        let d = dist(&ours, &deq_ref);
        eprintln!(
            "{model_name} exact (step={step}): max |Δ| {:.2e}, mean |Δ| {:.2e}",
            d.max, d.mean
        );
        assert!(
            d.max <= 1e-3,
            "{model_name} exact step={step}: max |Δ| {} > 1e-3",
            d.max
        );
        let bad = argmax_mismatches(&ours, &deq_ref, d.max, n_vocab);
        assert!(
            bad.is_empty(),
            "{model_name} exact: argmax differs at {bad:?}"
        );
    }
    let g = greedy(&exact, pool, tokens, 16);
    let want = ids(&deq["greedy"]["tokens"]);
    let margins = floats(&deq["greedy"]["top1_margin"]);
    // Identical up to the first near tie (margin below 2e-3, twice our tolerance).
    let first_tie = margins.iter().position(|&m| m < 2e-3).unwrap_or(want.len());
    assert_eq!(
        g[..first_tie],
        want[..first_tie],
        "{model_name} exact: greedy tokens"
    );
}

/// ggml path: quantized activations and integer dot products.
fn check_ggml_path(model_name: &str, e: &Value, tokens: &[u32], pool: &ThreadPool) {
    let n_vocab = e["n_vocab"].as_u64().unwrap() as usize;
    let model = load(model_name, false);
    let f32_ref = read_f32(&format!("{}-f32.batched.f32", e["arch"].as_str().unwrap()));
    let quant_vs_f32 = e["distances"]["quant_vs_f32_batched"]["mean_abs"]
        .as_f64()
        .unwrap() as f32;
    let argmax_ref = ids(&e["argmax"]);
    for step in [false, true] {
        let file = if step { "step" } else { "batched" };
        let ours = logits(&model, pool, tokens, step);
        let reference = read_f32(e["logits"][file].as_str().unwrap());
        let d = dist(&ours, &reference);
        let agree = ours
            .chunks_exact(n_vocab)
            .zip(&argmax_ref)
            .filter(|(row, &w)| argmax(row) == w)
            .count() as f32
            / tokens.len() as f32;
        let vs_f32 = dist(&ours, &f32_ref).mean;
        eprintln!(
            "{model_name} {file}: max |Δ| {:.3}, mean |Δ| {:.4}, top-1 {:.0}%, mean vs f32 {:.3} (llama.cpp {:.3})",
            d.max, d.mean, agree * 100.0, vs_f32, quant_vs_f32
        );
        assert!(d.mean <= 0.06, "{model_name} {file}: mean |Δ| {}", d.mean);
        // README tolerance: 0.5 for dense models, 3.0 for MoE (a flip can change the experts chosen).
        let moe = matches!(
            e["arch"].as_str().unwrap(),
            "qwen2moe" | "qwen3moe" | "deepseek2"
        );
        let max_allowed = if moe { 3.0 } else { 0.5 };
        assert!(
            d.max <= max_allowed,
            "{model_name} {file}: max |Δ| {}",
            d.max
        );
        assert!(agree >= 0.9, "{model_name} {file}: top-1 agreement {agree}");
        assert!(
            vs_f32 <= 1.5 * quant_vs_f32,
            "{model_name} {file}: quantization error {vs_f32}"
        );
    }
    let g = greedy(&model, pool, tokens, 16);
    let want = ids(&e["greedy"]["tokens"]);
    let common = g.iter().zip(&want).take_while(|(a, b)| a == b).count();
    eprintln!("{model_name} ggml path: greedy common prefix {common}/16");
}

macro_rules! parity {
    ($($name:ident => $check:ident($file:literal);)*) => {
        $(#[test] fn $name() { $check($file); })*
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
    let model = load("deepseek2-f32", false);
    let c = model.config();
    // Per layer: latent 256 + RoPE key 32, f32.
    assert_eq!(c.kv_bytes_per_token(), 2 * (256 + 32) * 4);
    // Full keys (4 heads x (32 + 32)) and values (4 x 32) would take 384 floats per layer.
    assert_eq!(
        c.kv_bytes_per_token_unabsorbed(),
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
    let model = load("qwen2-f32", false);
    let pool = ThreadPool::new(1);
    let blocks = [0u32];
    let mut kv = model.new_kv_store(1, 16);
    let c = SeqChunk {
        tokens: &[576],
        pos: 0,
        blocks: &blocks,
        logits: Logits::Last,
    };
    assert!(model.forward(&pool, &mut kv, &[c]).is_err());
    let c = SeqChunk {
        tokens: &[1; 17],
        pos: 0,
        blocks: &blocks,
        logits: Logits::Last,
    };
    assert!(
        model.forward(&pool, &mut kv, &[c]).is_err(),
        "KV overflow must be an error"
    );
}

/// The llama fixture rewritten with a `rope_freqs.weight` tensor of the given factor.
fn llama_with_rope_freqs(factor: f32) -> Model {
    let src = GgufFile::open(fixtures().join("models/llama-f32.gguf")).unwrap();
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
    let base = logits(&load("llama-f32", false), &pool, &tokens, false);
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
    let src = GgufFile::open(fixtures().join("models").join(format!("{model}.gguf"))).unwrap();
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
