//! Opening a model: the context and thread options, the warnings, and loading the weights with
//! the options given.

use frugal_loader::{ModelFile, ModelOptions, Warning, DEFAULT_MAX_CTX};

fn model(name: &str) -> std::path::PathBuf {
    frugal_fixtures::dir().join("models").join(name)
}

#[test]
fn the_default_context_is_the_trained_one_at_most_4096() {
    let f = ModelFile::open(&model("qwen2-Q8_0.gguf"), &ModelOptions::default()).unwrap();
    assert_eq!(f.n_ctx, f.config.n_ctx_train.min(DEFAULT_MAX_CTX));
    // The fixture has no chat template of its own, nor Gemma's turn tokens.
    assert_eq!(
        f.warnings,
        vec![Warning::NoChatTemplate { fallback: "ChatML" }]
    );
}

#[test]
fn a_context_beyond_the_trained_one_is_allowed_with_a_warning() {
    let trained = ModelFile::open(&model("qwen2-Q8_0.gguf"), &ModelOptions::default())
        .unwrap()
        .config
        .n_ctx_train;
    let opts = ModelOptions {
        ctx_size: Some(trained * 2),
        chat_template: Some("{{ messages[0]['content'] }}".into()),
        ..ModelOptions::default()
    };
    let f = ModelFile::open(&model("qwen2-Q8_0.gguf"), &opts).unwrap();
    assert_eq!(f.n_ctx, trained * 2);
    let w = Warning::BeyondTrainedContext {
        n_ctx: trained * 2,
        trained,
    };
    assert_eq!(f.warnings, vec![w.clone()]);
    assert!(w.to_string().contains("RoPE scaling"), "{w}");
}

#[test]
fn bad_options_are_errors_naming_the_flag() {
    for (opts, flag) in [
        (
            ModelOptions {
                threads: Some(0),
                ..ModelOptions::default()
            },
            "--threads",
        ),
        (
            ModelOptions {
                ctx_size: Some(0),
                ..ModelOptions::default()
            },
            "--ctx-size",
        ),
    ] {
        let e = ModelFile::open(&model("qwen2-Q8_0.gguf"), &opts)
            .err()
            .expect("an error");
        assert!(e.to_string().contains(flag), "{e}");
    }
}

#[test]
fn weights_load_with_the_options_given() {
    let opts = ModelOptions {
        threads: Some(1),
        dequantize: true,
        ..ModelOptions::default()
    };
    let f = ModelFile::open(&model("qwen2-Q8_0.gguf"), &opts).unwrap();
    assert_eq!(f.threads, 1);
    assert_eq!(f.thread_pool().n_threads(), 1);
    let m = f.load(None).unwrap();
    // Dequantized: every matrix is f32.
    assert!(m.weight_bytes() > 3 * std::fs::metadata(model("qwen2-Q8_0.gguf")).unwrap().len());
}
