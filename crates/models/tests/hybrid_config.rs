//! `ModelConfig::from_gguf` on the hybrid fixtures (Qwen3.5, Qwen3.5 MoE, Qwen3-Next): the layer
//! pattern, the Gated DeltaNet shapes, the MTP layers; and the metadata that must be refused,
//! an unknown key of theirs first of all.

mod common;

use frugal_fixtures::Set;
use frugal_formats::{GgufFile, Value};
use frugal_models::{ModelConfig, SharedGate};

fn open(model: &str) -> GgufFile {
    GgufFile::open(Set::hybrid().model(model)).unwrap()
}

/// A fixture's metadata with `extra` keys added or replaced (tensors as they are).
fn with_metadata(model: &str, extra: &[(&str, Value)]) -> GgufFile {
    common::with_metadata(&open(model), extra)
}

fn config_error(model: &str, extra: &[(&str, Value)]) -> String {
    common::config_error(&open(model), extra)
}

#[test]
fn hybrid_fixture_configs() {
    for (model, grouped, moe) in [
        ("qwen35-Q4_K_M", false, false),
        ("qwen35moe-Q4_K_M", false, true),
        ("qwen3next-Q4_K_M", true, true),
    ] {
        let c = ModelConfig::from_gguf(&open(model)).unwrap();
        let d = c.delta_net.as_ref().expect("a hybrid config");
        assert_eq!(c.n_layer, 4, "{model}: the MTP layer is not a trunk layer");
        assert_eq!(c.n_nextn, 1, "{model}");
        assert_eq!(d.recurrent, [true, true, true, false], "{model}");
        assert_eq!(
            (d.n_k_heads, d.n_v_heads, d.head_dim),
            (2, 4, 128),
            "{model}"
        );
        assert_eq!(d.conv_kernel, 4, "{model}");
        assert_eq!(d.grouped_heads, grouped, "{model}");
        assert_eq!(c.n_kv_layers(), 1, "{model}");
        assert_eq!(
            c.rope.n_rot, 16,
            "{model}: a quarter of the 64-wide heads rotate"
        );
        assert!(c.rope.neox, "{model}");
        // State: 3 layers x (4 heads x 128 x 128 + 3 taps x 1024 channels) x 4 bytes.
        assert_eq!(c.state_bytes_per_seq(), 3 * (4 * 128 * 128 + 3 * 1024) * 4);
        assert_eq!(
            c.kv_bytes_per_token(frugal_models::KvType::F32),
            2 * 128 * 4,
            "{model}: one layer of K and V"
        );
        assert_eq!(c.moe.is_some(), moe, "{model}");
        if let Some(m) = &c.moe {
            assert_eq!(m.shared_gate, SharedGate::Sigmoid, "{model}");
            assert!(m.norm_weights, "{model}");
        }
    }
}

#[test]
fn unknown_hybrid_keys_are_refused_by_name() {
    let e = config_error(
        "qwen35-Q4_K_M",
        &[("qwen35.attention.sliding_window", Value::U32(4))],
    );
    assert!(e.contains("qwen35.attention.sliding_window"), "{e}");
    let e = config_error(
        "qwen3next-Q4_K_M",
        &[("qwen3next.ssm.dt_min", Value::F32(0.1))],
    );
    assert!(e.contains("qwen3next.ssm.dt_min"), "{e}");
    // Keys of other prefixes are ignored, as llama.cpp ignores them.
    let f = with_metadata("qwen35-Q4_K_M", &[("somebody.note", Value::U32(1))]);
    ModelConfig::from_gguf(&f).unwrap();
}

#[test]
fn inconsistent_hybrid_shapes_are_refused() {
    let e = config_error(
        "qwen35-Q4_K_M",
        &[("qwen35.ssm.inner_size", Value::U32(500))],
    );
    assert!(e.contains("ssm.inner_size"), "{e}");
    let e = config_error(
        "qwen35-Q4_K_M",
        &[("qwen35.ssm.group_count", Value::U32(3))],
    );
    assert!(e.contains("ssm.group_count"), "{e}");
    let short = Value::Array(vec![Value::Bool(true), Value::Bool(false)]);
    let e = config_error(
        "qwen35-Q4_K_M",
        &[("qwen35.attention.recurrent_layers", short)],
    );
    assert!(e.contains("recurrent_layers"), "{e}");
    // Rotary sections that leave a rotated pair to the fourth (non-text) axis.
    let sections = Value::Array(vec![
        Value::I32(2),
        Value::I32(2),
        Value::I32(2),
        Value::I32(2),
    ]);
    let e = config_error(
        "qwen35-Q4_K_M",
        &[("qwen35.rope.dimension_sections", sections)],
    );
    assert!(e.contains("dimension_sections"), "{e}");
    let e = config_error(
        "qwen35-Q4_K_M",
        &[("qwen35.nextn_predict_layers", Value::U32(5))],
    );
    assert!(e.contains("nextn_predict_layers"), "{e}");
}

#[test]
fn recurrent_layers_array_overrides_the_interval() {
    let layers = Value::Array(vec![
        Value::Bool(false),
        Value::Bool(true),
        Value::Bool(true),
        Value::Bool(false),
        Value::Bool(false),
    ]);
    let f = with_metadata(
        "qwen35-Q4_K_M",
        &[("qwen35.attention.recurrent_layers", layers)],
    );
    let c = ModelConfig::from_gguf(&f).unwrap();
    assert_eq!(c.delta_net.unwrap().recurrent, [false, true, true, false]);
}
