//! `ModelConfig::from_gguf` on the fixture models and on metadata that must be refused.

mod common;

use frugal_fixtures::dir as fixtures;
use frugal_formats::{GgufFile, Value};
use frugal_models::{ModelConfig, SharedGate};

const MODELS: &[&str] = &[
    "llama-f32",
    "qwen2-f32",
    "qwen3-f32",
    "qwen2moe-f32",
    "qwen3moe-f32",
    "deepseek2-f32",
];

fn open(model: &str) -> GgufFile {
    GgufFile::open(fixtures().join("models").join(format!("{model}.gguf"))).unwrap()
}

/// A fixture model's metadata with `extra` keys added or replaced (tensors as they are).
fn with_metadata(model: &str, extra: &[(&str, Value)]) -> GgufFile {
    common::with_metadata(&open(model), extra)
}

fn config_error(model: &str, extra: &[(&str, Value)]) -> String {
    common::config_error(&open(model), extra)
}

#[test]
fn fixture_configs() {
    for model in MODELS {
        let c = ModelConfig::from_gguf(&open(model)).unwrap();
        // With FRUGAL_DUMP_CONFIG set, prints every field, to compare two versions of the code.
        if std::env::var_os("FRUGAL_DUMP_CONFIG").is_some() {
            println!("{model}: {c:?}");
        }
        assert_eq!(c.arch.name(), model.trim_end_matches("-f32"));
        assert!(c.n_head.is_multiple_of(c.n_head_kv));
        assert_eq!(c.kq_scale_mult, 1.0, "{model}: no YaRN, no score scaling");
        assert!(c.rope.yarn.is_none(), "{model}");
        let moe_arch = model.contains("moe") || model.starts_with("deepseek2");
        assert_eq!(c.moe.is_some(), moe_arch, "{model}");
        assert_eq!(c.mla.is_some(), model.starts_with("deepseek2"), "{model}");
    }
    let c = ModelConfig::from_gguf(&open("deepseek2-f32")).unwrap();
    let mla = c.mla.unwrap();
    assert_eq!((mla.kv_lora, mla.qk_rope), (256, 32));
    let moe = ModelConfig::from_gguf(&open("qwen2moe-f32"))
        .unwrap()
        .moe
        .unwrap();
    assert!(moe.shared_gate == SharedGate::SiluRatio && moe.n_ff_shared.is_some());
    let moe = ModelConfig::from_gguf(&open("qwen3moe-f32"))
        .unwrap()
        .moe
        .unwrap();
    assert!(moe.norm_weights && moe.shared_gate == SharedGate::None && moe.n_ff_shared.is_none());
}

#[test]
fn yarn_sets_the_rope_and_deepseek_score_scale() {
    let yarn = [
        ("deepseek2.rope.scaling.type", Value::String("yarn".into())),
        ("deepseek2.rope.scaling.factor", Value::F32(4.0)),
        (
            "deepseek2.rope.scaling.yarn_log_multiplier",
            Value::F32(0.0707),
        ),
    ];
    let c = ModelConfig::from_gguf(&with_metadata("deepseek2-f32", &yarn)).unwrap();
    if std::env::var_os("FRUGAL_DUMP_CONFIG").is_some() {
        println!("deepseek2 yarn: {c:?}");
    }
    assert_eq!(c.rope.freq_scale, 0.25);
    let y = c.rope.yarn.unwrap();
    assert_eq!(y.ext_factor, 1.0);
    assert!(c.kq_scale_mult > 1.0, "mscale² {}", c.kq_scale_mult);

    let yarn = [
        ("llama.rope.scaling.type", Value::String("yarn".into())),
        ("llama.rope.scaling.factor", Value::F32(4.0)),
        ("llama.rope.scaling.original_context_length", Value::U32(32)),
    ];
    let c = ModelConfig::from_gguf(&with_metadata("llama-f32", &yarn)).unwrap();
    if std::env::var_os("FRUGAL_DUMP_CONFIG").is_some() {
        println!("llama yarn: {c:?}");
    }
    assert_eq!(c.kq_scale_mult, 1.0, "only deepseek2 scales its scores");
    assert!(c.rope.yarn.is_some());

    let linear = [
        ("llama.rope.scaling.type", Value::String("linear".into())),
        ("llama.rope.scaling.factor", Value::F32(2.0)),
        ("llama.rope.scaling.attn_factor", Value::F32(0.5)),
    ];
    let c = ModelConfig::from_gguf(&with_metadata("llama-f32", &linear)).unwrap();
    if std::env::var_os("FRUGAL_DUMP_CONFIG").is_some() {
        println!("llama linear: {c:?}");
    }
    assert_eq!(c.rope.freq_scale, 0.5);
    let y = c.rope.yarn.unwrap();
    assert_eq!((y.ext_factor, y.attn_factor), (0.0, 0.5));
}

#[test]
fn inconsistent_metadata_is_refused_with_the_key_named() {
    use Value::{String as S, F32, U32};
    let cases = [
        ("llama-f32", "llama.block_count", U32(0), "must be positive"),
        (
            "llama-f32",
            "llama.attention.head_count_kv",
            U32(3),
            "head_count_kv 3",
        ),
        (
            "llama-f32",
            "llama.rope.dimension_count",
            U32(3),
            "rope.dimension_count 3",
        ),
        (
            "llama-f32",
            "llama.rope.scaling.type",
            S("ntk".into()),
            "'ntk' is not supported",
        ),
        (
            "llama-f32",
            "llama.rope.scaling.factor",
            F32(-1.0),
            "factor -1",
        ),
        (
            "qwen2-f32",
            "qwen2.attention.value_length",
            U32(7),
            "value_length 7",
        ),
        (
            "qwen3moe-f32",
            "qwen3moe.expert_used_count",
            U32(0),
            "expert_used_count 0",
        ),
        (
            "qwen3moe-f32",
            "qwen3moe.expert_gating_func",
            U32(9),
            "expert_gating_func 9",
        ),
        (
            "qwen3moe-f32",
            "qwen3moe.expert_group_count",
            U32(3),
            "expert groups 3",
        ),
        (
            "deepseek2-f32",
            "deepseek2.attention.kv_lora_rank",
            U32(8),
            "MLA shapes",
        ),
    ];
    for (model, key, value, want) in cases {
        let err = config_error(model, &[(key, value)]);
        assert!(err.contains(want), "{model} {key}: {err}");
        assert!(err.contains(model), "the file is named: {err}");
    }
}
