//! A full tool round trip (system, user, assistant tool calls with null or missing content, tool
//! results, assistant answer, next user turn), in the shapes the openai SDK and LangChain send
//! back, and an agent loop (reasoning kept or in the content, arguments of every JSON type,
//! thinking on and off), through every template of ../shared/fixtures/templates and tests/data/templates: each
//! rendering must equal, byte for byte, what transformers' renderer gave for the same messages
//! (tests/data/round_trip.json, made by scripts/gen_template_renderings.py).

use frugal_chat::ChatTemplate;
use frugal_fixtures::dir as fixtures;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn template_path(key: &str) -> PathBuf {
    match key.split_once(':') {
        Some(("fixtures", name)) => fixtures().join("templates").join(format!("{name}.jinja")),
        Some(("data", name)) => data_dir().join("templates").join(format!("{name}.jinja")),
        _ => panic!("unknown template key {key}"),
    }
}

fn load_template(key: &str, tokens: &Value) -> ChatTemplate {
    let source = std::fs::read_to_string(template_path(key)).unwrap();
    ChatTemplate::new(
        &source,
        tokens["bos_token"].as_str(),
        tokens["eos_token"].as_str(),
        tokens["pad_token"].as_str(),
    )
    .unwrap_or_else(|e| panic!("{key}: {e}"))
}

/// Every template file on disk must have its expected renderings (new templates need the
/// generating script run again).
fn assert_every_template_covered(expected: &Map<String, Value>) {
    for (prefix, dir) in [
        ("fixtures", fixtures().join("templates")),
        ("data", data_dir().join("templates")),
    ] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "jinja") {
                let stem = path.file_stem().unwrap().to_str().unwrap();
                let key = format!("{prefix}:{stem}");
                assert!(
                    expected.contains_key(&key),
                    "{key} has no expected renderings: run scripts/gen_template_renderings.py"
                );
            }
        }
    }
}

#[test]
fn tool_round_trips_render_as_transformers_does() {
    let path = data_dir().join("round_trip.json");
    let data: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let templates = data["templates"].as_object().unwrap();
    assert_every_template_covered(templates);
    let mut checked = 0;
    let mut failures = Vec::new();
    for (key, rec) in templates {
        let tmpl = load_template(key, &rec["special_tokens"]);
        for (case, want) in rec["cases"].as_object().unwrap() {
            let conv = &data["conversations"][case];
            // Template variables such as `enable_thinking`.
            let kwargs = conv["kwargs"].as_object().cloned().unwrap_or_default();
            let got = tmpl.render(
                conv["messages"].as_array().unwrap(),
                conv["tools"].as_array().map(Vec::as_slice),
                conv["add_generation_prompt"].as_bool().unwrap(),
                &kwargs,
            );
            checked += 1;
            match (got, want.get("text").and_then(Value::as_str)) {
                (Ok(g), Some(w)) if g == w => {}
                (Ok(g), Some(w)) => {
                    failures.push(format!("{key} {case}:\n--- got\n{g}\n--- want\n{w}"))
                }
                (Err(e), Some(_)) => failures.push(format!("{key} {case}: {e}")),
                // The template itself refuses this conversation (Llama 3.1: one call per turn).
                (Err(e), None) => {
                    let w = want["error"].as_str().unwrap();
                    if !e.to_string().contains(w) {
                        failures.push(format!("{key} {case}: error {e}, want {w}"));
                    }
                }
                (Ok(g), None) => failures.push(format!("{key} {case}: rendered {g}, want error")),
            }
        }
    }
    eprintln!("{} / {checked} round trips match", checked - failures.len());
    assert!(checked >= 66, "only {checked} renderings found");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_builtin_chatml_is_the_one_tested() {
    let file = std::fs::read_to_string(data_dir().join("templates/chatml.jinja")).unwrap();
    assert_eq!(ChatTemplate::chatml().source(), file);
}

#[test]
fn templates_that_ignore_tools_are_detected() {
    let dir = fixtures().join("templates");
    for name in [
        "Qwen-Qwen2.5-7B-Instruct",
        "Qwen-Qwen3-0.6B",
        "Qwen-QwQ-32B",
        "meta-llama-Llama-3.1-8B-Instruct",
        "NousResearch-Hermes-3-Llama-3.1-8B-tool_use",
    ] {
        let src = std::fs::read_to_string(dir.join(format!("{name}.jinja"))).unwrap();
        let t = ChatTemplate::new(&src, Some("<s>"), Some("</s>"), None).unwrap();
        assert!(t.renders_tools(), "{name} renders tools");
    }
    // DeepSeek's templates render tool calls and results, but never the tools themselves.
    for name in [
        "deepseek-ai-DeepSeek-V3.1",
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B",
    ] {
        let src = std::fs::read_to_string(dir.join(format!("{name}.jinja"))).unwrap();
        let t = ChatTemplate::new(&src, Some("<s>"), Some("</s>"), None).unwrap();
        assert!(!t.renders_tools(), "{name} ignores tools");
    }
    assert!(!ChatTemplate::chatml().renders_tools());
    for name in ["Qwen-Qwen3.5-4B", "Qwen-Qwen3-Coder"] {
        let src =
            std::fs::read_to_string(data_dir().join(format!("templates/{name}.jinja"))).unwrap();
        let t = ChatTemplate::new(&src, None, Some("<|im_end|>"), None).unwrap();
        assert!(t.renders_tools(), "{name} renders tools");
    }
    let smol = std::fs::read_to_string(
        data_dir().join("templates/HuggingFaceTB-SmolLM2-135M-Instruct.jinja"),
    )
    .unwrap();
    let t = ChatTemplate::new(&smol, None, Some("<|im_end|>"), None).unwrap();
    assert!(!t.renders_tools());
}

#[test]
fn a_template_that_refuses_system_messages_is_probed_without_one() {
    let src = "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system') }}{% endif %}\
               {{ m.content }}{% endfor %}{% if tools %}{{ tools | length }}{% endif %}";
    let t = ChatTemplate::new(src, None, None, None).unwrap();
    assert!(t.renders_tools());
    let src = "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system') }}{% endif %}\
               {{ m.content }}{% endfor %}";
    let t = ChatTemplate::new(src, None, None, None).unwrap();
    assert!(!t.renders_tools());
}
