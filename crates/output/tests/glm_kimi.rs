//! Forced GLM-4.5/4.6/4.7 and Kimi K2 tool calls (`tool_choice` required or named) on the Qwen2
//! vocabulary: each grammar takes calls as the templates write them and refuses what breaks the
//! tools' schemas; decoding under it with random logits always gives calls that parse, with
//! arguments valid against their schemas; requests on the real templates are planned (format,
//! reasoning mode) and parsed as such.

use frugal_fixtures::dir as fixtures;
use frugal_formats::GgufFile;
use frugal_output::glm_xml::GlmLayout;
use frugal_output::reasoning::split_reasoning;
use frugal_output::tools::parse_tool_calls_with;
use frugal_output::{
    Grammar, OutputConstraint, OutputPlan, OutputRequest, ReasoningMode, TokenEnv, ToolChoice,
    ToolFormat,
};
use frugal_tokenizer::Tokenizer;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::sync::{Arc, OnceLock};

const LINES: ToolFormat = ToolFormat::Glm(GlmLayout::Lines);
const COMPACT: ToolFormat = ToolFormat::Glm(GlmLayout::Compact);

fn env() -> &'static Arc<TokenEnv> {
    static E: OnceLock<Arc<TokenEnv>> = OnceLock::new();
    E.get_or_init(|| {
        let gguf = GgufFile::open(fixtures().join("tokenizer/ggml-vocab-qwen2.gguf")).unwrap();
        Arc::new(TokenEnv::new(Arc::new(Tokenizer::from_gguf(&gguf).unwrap())).unwrap())
    })
}

fn tools() -> Vec<Value> {
    vec![
        json!({"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {
                "location": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["location"]}}}),
        json!({"type": "function", "function": {"name": "add", "parameters": {
            "type": "object", "properties": {
                "a": {"type": "integer", "minimum": -1000, "maximum": 1000},
                "b": {"type": "integer", "minimum": -1000, "maximum": 1000},
                "exact": {"type": "boolean"}},
            "required": ["a", "b"]}}}),
        json!({"type": "function", "function": {"name": "now"}}),
    ]
}

fn grammar(format: ToolFormat, choice: &ToolChoice) -> Grammar {
    Grammar::tool_calls(env(), format, &tools(), choice, true)
        .unwrap()
        .unwrap()
}

/// Whether the grammar takes `text`, token by token, and may end after it.
fn accepts(g: &Grammar, text: &str) -> bool {
    let env = env();
    let mut m = env.matcher(g).unwrap();
    for t in env.tokenizer().encode(text, false, true).unwrap() {
        if !m.allowed().unwrap().is_allowed(t) {
            return false;
        }
        m.consume(t).unwrap();
    }
    m.is_accepting()
}

/// A call as the GLM templates write it.
fn glm_call(layout: GlmLayout, name: &str, params: &[(&str, &str)]) -> String {
    let nl = if layout == GlmLayout::Lines { "\n" } else { "" };
    let mut s = format!("<tool_call>{name}{nl}");
    for (k, v) in params {
        s.push_str(&format!(
            "<arg_key>{k}</arg_key>{nl}<arg_value>{v}</arg_value>{nl}"
        ));
    }
    s + "</tool_call>"
}

fn kimi_call(name: &str, index: usize, args: &str) -> String {
    format!("<|tool_call_begin|>functions.{name}:{index}<|tool_call_argument_begin|>{args}<|tool_call_end|>")
}

fn kimi_section(calls: &[String]) -> String {
    format!(
        "<|tool_calls_section_begin|>{}<|tool_calls_section_end|>",
        calls.concat()
    )
}

#[test]
fn forced_glm_calls_take_template_calls() {
    for (format, layout, sep) in [
        (LINES, GlmLayout::Lines, "\n"),
        (COMPACT, GlmLayout::Compact, ""),
    ] {
        let call = |name: &str, params: &[(&str, &str)]| glm_call(layout, name, params);
        let g = grammar(format, &ToolChoice::Required);
        let weather = call(
            "get_weather",
            &[("location", "Paris, France"), ("unit", "celsius")],
        );
        let add = call("add", &[("a", "3"), ("b", "-4"), ("exact", "true")]);
        for ok in [
            weather.clone(),
            call("get_weather", &[("location", "a < b \"q\"\nline")]),
            add.clone(),
            call("now", &[]),
            format!("{weather}{sep}{add}"),
        ] {
            assert!(accepts(&g, &ok), "{format:?} {ok:?}");
        }
        for bad in [
            call("get_time", &[("location", "Paris")]),
            call("add", &[("a", "3")]),
            call("add", &[("a", "three"), ("b", "4")]),
            call("add", &[("a", "3"), ("b", "4000")]),
            call("get_weather", &[("location", "Paris"), ("unit", "kelvin")]),
            call("now", &[("x", "1")]),
            format!("Sure. {}", call("now", &[])),
        ] {
            assert!(!accepts(&g, &bad), "{format:?} {bad:?}");
        }
        let g = grammar(format, &ToolChoice::Function("add".into()));
        assert!(accepts(&g, &add));
        assert!(!accepts(&g, &weather));
        assert!(!accepts(&g, &format!("{add}{sep}{add}")));
    }
}

#[test]
fn forced_kimi_calls_take_template_calls() {
    let g = grammar(ToolFormat::KimiK2, &ToolChoice::Required);
    let weather = kimi_call(
        "get_weather",
        0,
        r#"{"location": "Paris", "unit": "celsius"}"#,
    );
    let add = kimi_call("add", 12, r#"{"a": 3, "b": 4}"#);
    for ok in [
        kimi_section(std::slice::from_ref(&weather)),
        kimi_section(&[weather.clone(), add.clone()]),
        kimi_section(&[kimi_call("now", 1, "{}")]),
    ] {
        assert!(accepts(&g, &ok), "{ok:?}");
    }
    for bad in [
        kimi_section(&[kimi_call("add", 0, r#"{"a": 3}"#)]),
        kimi_section(&[kimi_call("get_time", 0, "{}")]),
        kimi_section(&[]),
        kimi_section(&[add.replace(":12", ":x")]),
        weather.clone(),
    ] {
        assert!(!accepts(&g, &bad), "{bad:?}");
    }
    let g = grammar(ToolFormat::KimiK2, &ToolChoice::Function("add".into()));
    assert!(accepts(&g, &kimi_section(std::slice::from_ref(&add))));
    assert!(!accepts(&g, &kimi_section(&[add.clone(), add])));
}

fn validate(schema: &Value, doc: &Value, ctx: &str) {
    let v = jsonschema::validator_for(schema).unwrap_or_else(|e| panic!("{ctx}: schema: {e}"));
    let errors: Vec<String> = v.iter_errors(doc).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{ctx}: {doc} does not validate: {errors:?}"
    );
}

fn params_of(name: &str) -> Value {
    let tools = tools();
    let f = tools
        .iter()
        .find(|t| t["function"]["name"] == name)
        .unwrap_or_else(|| panic!("no tool {name}"));
    match &f["function"]["parameters"] {
        Value::Null => json!({"type": "object"}),
        p => p.clone(),
    }
}

/// Decodes under `c` with random logits (the highest allowed one wins); the tokens.
fn decode(c: &mut OutputConstraint, rng: &mut rand::rngs::StdRng, max: usize) -> Vec<u32> {
    use frugal_constraint::Constraint;
    let vocab = env().tokenizer().vocab_size();
    let mut out = Vec::new();
    loop {
        let mut logits: Vec<f32> = (0..vocab).map(|_| rng.gen_range(0.0..8.0)).collect();
        c.mask(&mut logits).unwrap();
        let t = (0..vocab)
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap() as u32;
        out.push(t);
        if c.accept(t).unwrap() {
            return out;
        }
        assert!(
            out.len() < max,
            "no end after {max} tokens: {:?}",
            env().tokenizer().decode(&out, false)
        );
    }
}

#[test]
fn random_decoding_gives_valid_calls_in_time() {
    let env = env();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for format in [LINES, COMPACT, ToolFormat::KimiK2] {
        for choice in [
            ToolChoice::Required,
            ToolChoice::Function("get_weather".into()),
        ] {
            let g = grammar(format, &choice);
            for (mode, budget) in [(ReasoningMode::None, None), (ReasoningMode::Open, Some(4))] {
                for _ in 0..3 {
                    let mut c = OutputConstraint::new(env.clone(), mode, Some(&g), budget)
                        .unwrap()
                        .with_max_tokens(160)
                        .with_close_margin(64);
                    let out = decode(&mut c, &mut rng, 160);
                    let body: Vec<u32> = out
                        .iter()
                        .copied()
                        .filter(|t| !env.eog_ids().contains(t))
                        .collect();
                    let text = env.tokenizer().decode(&body, false);
                    let (_, answer) = split_reasoning(mode, &text);
                    let ctx = format!("{format:?} {choice:?} {mode:?}: {text:?}");
                    let p = parse_tool_calls_with(format, &tools(), &answer);
                    assert!(!p.tool_calls.is_empty(), "{ctx}");
                    assert_eq!(p.content, "", "{ctx}");
                    for call in p.tool_calls {
                        let args: Value = serde_json::from_str(&call.arguments)
                            .unwrap_or_else(|e| panic!("{ctx}: {}: {e}", call.arguments));
                        validate(&params_of(&call.name), &args, &ctx);
                    }
                }
            }
        }
    }
}

fn template(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../chat/tests/data/templates")
            .join(format!("{name}.jinja")),
    )
    .unwrap()
}

fn plan(source: &str, prompt: &str, choice: &str) -> OutputPlan {
    let tools = tools();
    let choice = json!(choice);
    let req = OutputRequest {
        template_source: source,
        prompt,
        tools: &tools,
        tool_choice: Some(&choice),
        parallel_tool_calls: true,
        response_format: None,
        grammar: None,
        reasoning_effort: None,
        max_tokens: Some(200),
    };
    OutputPlan::new(env(), &req).unwrap()
}

/// Parses `answer` in pieces of 3 bytes with the plan's parser.
fn parse(plan: &OutputPlan, answer: &str) -> frugal_output::ParsedMessage {
    let mut p = plan.parser();
    let chars: Vec<char> = answer.chars().collect();
    for piece in chars.chunks(3) {
        p.push(&piece.iter().collect::<String>());
    }
    p.finish();
    p.into_message()
}

/// GLM-4.7 opens `<think>` in the prompt (thinking on) or closes it (off); GLM-4.6 lets the
/// model open it, or writes `<think></think>` when thinking is off.
#[test]
fn glm_request_plans() {
    let s47 = template("zai-org-GLM-4.7-Flash");
    let p = plan(
        &s47,
        "[gMASK]<sop><|user|>Add 3 and 4<|assistant|><think>",
        "required",
    );
    assert_eq!(p.tool_format, Some(COMPACT));
    assert_eq!(p.reasoning, ReasoningMode::Open);
    assert!(p.grammar.as_ref().unwrap().lark().contains("add"));
    let m = parse(
        &p,
        "Simple.</think><tool_call>add<arg_key>a</arg_key><arg_value>3</arg_value><arg_key>b</arg_key><arg_value>4</arg_value></tool_call>",
    );
    assert_eq!(m.reasoning_content.as_deref(), Some("Simple."));
    assert_eq!(m.content, "");
    assert_eq!(m.tool_calls[0].arguments, r#"{"a":3,"b":4}"#);
    let p = plan(&s47, "[gMASK]<sop><|user|>Hi<|assistant|></think>", "auto");
    assert_eq!(p.reasoning, ReasoningMode::None);

    let s46 = template("zai-org-GLM-4.6");
    let p = plan(&s46, "[gMASK]<sop><|user|>\nHi<|assistant|>", "auto");
    assert_eq!(p.tool_format, Some(LINES));
    assert_eq!(p.reasoning, ReasoningMode::Optional);
    let m = parse(
        &p,
        "<think>Look it up.</think>\nLet me check.\n<tool_call>get_weather\n<arg_key>location</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call>",
    );
    assert_eq!(m.reasoning_content.as_deref(), Some("Look it up."));
    assert_eq!(m.content, "Let me check.");
    assert_eq!(m.tool_calls[0].name, "get_weather");
    assert_eq!(m.tool_calls[0].arguments, r#"{"location":"Paris"}"#);
    let p = plan(
        &s46,
        "[gMASK]<sop><|user|>\nHi/nothink<|assistant|>\n<think></think>",
        "auto",
    );
    assert_eq!(p.reasoning, ReasoningMode::None);
}

/// Kimi K2 Thinking may open `<think>`; the ids are the model's `functions.NAME:IDX`.
#[test]
fn kimi_request_plans() {
    for name in ["moonshotai-Kimi-K2-Thinking", "moonshotai-Kimi-K2-Instruct"] {
        let source = template(name);
        let p = plan(
            &source,
            "<|im_user|>user<|im_middle|>Hi<|im_end|><|im_assistant|>assistant<|im_middle|>",
            "auto",
        );
        assert_eq!(p.tool_format, Some(ToolFormat::KimiK2), "{name}");
        let thinking = name.ends_with("Thinking");
        let want = if thinking {
            ReasoningMode::Optional
        } else {
            ReasoningMode::None
        };
        assert_eq!(p.reasoning, want, "{name}");
        let answer = format!(
            "{}Checking.{}",
            if thinking {
                "<think>Weather.</think>"
            } else {
                ""
            },
            kimi_section(&[kimi_call("get_weather", 3, r#"{"location": "Paris"}"#)])
        );
        let m = parse(&p, &answer);
        assert_eq!(m.content, "Checking.");
        assert_eq!(m.tool_calls[0].id, "functions.get_weather:3");
        assert_eq!(m.tool_calls[0].arguments, r#"{"location": "Paris"}"#);
        if thinking {
            assert_eq!(m.reasoning_content.as_deref(), Some("Weather."));
        }
    }
    // K2 Thinking may call tools without closing its reasoning (llama.cpp's parser allows it).
    let source = template("moonshotai-Kimi-K2-Thinking");
    let p = plan(&source, "<|im_assistant|>assistant<|im_middle|>", "auto");
    for tail in ["", "<|tool_call_end|>"] {
        let answer = format!(
            "<think>Need the weather.\n<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{{\"location\": \"Paris\"}}{tail}"
        );
        let m = parse(&p, &answer);
        assert_eq!(m.reasoning_content.as_deref(), Some("Need the weather."));
        assert_eq!(m.content, "");
        assert_eq!(m.tool_calls.len(), 1, "{answer}");
        assert_eq!(m.tool_calls[0].arguments, r#"{"location": "Paris"}"#);
    }
}
