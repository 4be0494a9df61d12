//! Forced Qwen3-Coder/Qwen3.5 XML tool calls (`tool_choice` required or named) on the Qwen2
//! vocabulary, which Qwen3.5 shares: the grammar takes calls as the template writes them and
//! refuses what breaks the tools' schemas, and decoding under it with random logits always gives
//! calls that parse, with arguments valid against their schemas, closed in time near
//! `max_tokens`; a request on the Qwen3.5 template is planned and parsed as such.

use frugal_fixtures::dir as fixtures;
use frugal_formats::GgufFile;
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
        json!({"type": "function", "function": {"name": "search", "parameters": {
            "type": "object", "properties": {
                "query": {"type": "string"},
                "filters": {"type": "object", "properties": {"lang": {"type": "string"}},
                    "additionalProperties": false},
                "limit": {"type": ["integer", "null"]}},
            "required": ["query"]}}}),
        json!({"type": "function", "function": {"name": "now"}}),
    ]
}

fn grammar(choice: &ToolChoice) -> Grammar {
    Grammar::tool_calls(env(), ToolFormat::QwenXml, &tools(), choice, true)
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

fn call(name: &str, params: &[(&str, &str)]) -> String {
    let mut s = format!("<tool_call>\n<function={name}>\n");
    for (k, v) in params {
        s.push_str(&format!("<parameter={k}>\n{v}\n</parameter>\n"));
    }
    s + "</function>\n</tool_call>"
}

#[test]
fn forced_calls_take_template_calls() {
    let g = grammar(&ToolChoice::Required);
    let weather = call(
        "get_weather",
        &[("location", "Paris, France"), ("unit", "celsius")],
    );
    let add = call("add", &[("a", "3"), ("b", "-4"), ("exact", "true")]);
    let search = call(
        "search",
        &[
            ("query", "a < b and \"quotes\"\nover two lines"),
            ("filters", "{\"lang\": \"fr\"}"),
            ("limit", "null"),
        ],
    );
    for ok in [
        weather.clone(),
        call("get_weather", &[("location", "Paris")]),
        add.clone(),
        search,
        call("now", &[]),
        format!("{weather}\n{add}"),
        // A value without the format's newline before `</parameter>`.
        "<tool_call>\n<function=get_weather>\n<parameter=location>\nParis</parameter>\n</function>\n</tool_call>".into(),
    ] {
        assert!(accepts(&g, &ok), "{ok:?}");
    }
    for bad in [
        call("get_time", &[("location", "Paris")]),
        call("add", &[("a", "3")]),
        call("add", &[("a", "three"), ("b", "4")]),
        call("add", &[("a", "3"), ("b", "4000")]),
        call("add", &[("a", "3"), ("b", "4"), ("exact", "yes")]),
        call("get_weather", &[("location", "Paris"), ("unit", "kelvin")]),
        call("get_weather", &[("unit", "celsius")]),
        call("search", &[("query", "x"), ("filters", "{\"lang\": 1}")]),
        call("now", &[("x", "1")]),
        "<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>".into(),
        format!("Sure. {}", call("now", &[])),
    ] {
        assert!(!accepts(&g, &bad), "{bad:?}");
    }
    // One call of the named function only.
    let g = grammar(&ToolChoice::Function("add".into()));
    assert!(accepts(&g, &add));
    assert!(!accepts(&g, &weather));
    assert!(!accepts(&g, &format!("{add}\n{add}")));
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
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for choice in [ToolChoice::Required, ToolChoice::Function("search".into())] {
        let g = grammar(&choice);
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
                let ctx = format!("{choice:?} {mode:?}: {text:?}");
                let p = parse_tool_calls_with(ToolFormat::QwenXml, &tools(), &answer);
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

/// A request on the Qwen3.5 template: XML calls, reasoning opened by the prompt, and the parser
/// types values by the request's tools.
#[test]
fn qwen35_request_plan() {
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../chat/tests/data/templates/Qwen-Qwen3.5-4B.jinja"),
    )
    .unwrap();
    let tools = tools();
    let choice = json!("required");
    let req = OutputRequest {
        template_source: &source,
        prompt: "<|im_start|>user\nAdd 3 and 4<|im_end|>\n<|im_start|>assistant\n<think>\n",
        tools: &tools,
        tool_choice: Some(&choice),
        parallel_tool_calls: true,
        response_format: None,
        grammar: None,
        reasoning_effort: None,
        max_tokens: Some(200),
    };
    let plan = OutputPlan::new(env(), &req).unwrap();
    assert_eq!(plan.tool_format, Some(ToolFormat::QwenXml));
    assert_eq!(plan.reasoning, ReasoningMode::Open);
    assert!(plan
        .grammar
        .as_ref()
        .unwrap()
        .lark()
        .contains("<function=add>"));
    let mut p = plan.parser();
    let answer = format!(
        "Simple.\n</think>\n\n{}",
        call("add", &[("a", "3"), ("b", "4"), ("exact", "True")])
    );
    for piece in answer.as_bytes().chunks(3) {
        p.push(std::str::from_utf8(piece).unwrap());
    }
    p.finish();
    let m = p.into_message();
    assert_eq!(m.reasoning_content.as_deref(), Some("Simple."));
    assert_eq!(m.content, "");
    assert_eq!(m.tool_calls.len(), 1);
    assert_eq!(m.tool_calls[0].arguments, r#"{"a":3,"b":4,"exact":true}"#);
}
