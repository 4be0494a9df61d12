//! Constrained decoding end to end: the fixture models (random weights, so only the constraint
//! makes the output valid) generate under [`OutputConstraint`] with the engine's sampler; every
//! output must parse and validate against its JSON schema, tool calls must parse and their
//! arguments validate, and a reasoning budget of N must give at most N reasoning tokens, then a
//! valid answer. Real vocabularies (Llama 3, Qwen2, DeepSeek) are exercised with random logits.

use frugal_constraint::Constraint;
use frugal_engine::sampler::{Sampler, SamplingParams};
use frugal_fixtures::dir as fixtures;
use frugal_formats::GgufFile;
use frugal_kernels::ThreadPool;
use frugal_models::{LoadOptions, Logits, Model, SeqChunk};
use frugal_output::tools::parse_tool_calls;
use frugal_output::{
    reasoning::split_reasoning, Grammar, OutputConstraint, OutputError, OutputPlan, OutputRequest,
    ReasoningMode, TokenEnv, ToolChoice, ToolFormat,
};
use frugal_tokenizer::Tokenizer;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::sync::{Arc, OnceLock};

const BLOCK: usize = 16;

/// The toy vocabulary of the fixture models (512 byte-level BPE tokens) spells text in short
/// pieces: start closing earlier than the default.
const TOY_MARGIN: usize = 80;

struct Fixture {
    model: Model,
    env: Arc<TokenEnv>,
    pool: ThreadPool,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let gguf = GgufFile::open(fixtures().join("models/qwen3-Q8_0.gguf")).unwrap();
        let model = Model::load(&gguf, &LoadOptions::default()).unwrap();
        let tok = Arc::new(Tokenizer::from_gguf(&gguf).unwrap());
        let env = Arc::new(TokenEnv::new(tok).unwrap());
        Fixture {
            model,
            env,
            pool: ThreadPool::new(1),
        }
    })
}

/// Generates from `prompt` under `c`, sampling at temperature 1 with `seed`; the constraint must
/// end the output before `max` tokens.
fn generate(c: &mut OutputConstraint, prompt: &str, seed: u64, max: usize) -> Vec<u32> {
    run(c, prompt, seed, max, true)
}

fn run(c: &mut OutputConstraint, prompt: &str, seed: u64, max: usize, must_end: bool) -> Vec<u32> {
    let f = fixture();
    let tok = f.env.tokenizer();
    let prompt = tok.encode(prompt, false, true).unwrap();
    let n_blocks = (prompt.len() + max + 1).div_ceil(BLOCK);
    let blocks: Vec<u32> = (0..n_blocks as u32).collect();
    let mut kv = f.model.new_kv_store(n_blocks, BLOCK, 1);
    let mut sampler = Sampler::new(SamplingParams {
        seed: Some(seed),
        ..SamplingParams::default()
    })
    .unwrap();
    let chunk = SeqChunk {
        tokens: &prompt,
        pos: 0,
        blocks: &blocks,
        window_blocks: &[],
        state: 0,
        logits: Logits::Last,
    };
    let mut logits = f.model.forward(&f.pool, &mut kv, &[chunk]).unwrap();
    let mut history = prompt.clone();
    let mut out = Vec::new();
    loop {
        c.mask(&mut logits).unwrap();
        let t = sampler.sample(&logits, &history);
        let done = c.accept(t).unwrap();
        out.push(t);
        history.push(t);
        if done || f.env.eog_ids().contains(&t) {
            break;
        }
        if !must_end && out.len() == max {
            break;
        }
        assert!(
            out.len() < max,
            "no end after {max} tokens: {:?}",
            f.env.tokenizer().decode(&out, false)
        );
        let chunk = SeqChunk {
            tokens: std::slice::from_ref(&t),
            pos: history.len() - 1,
            blocks: &blocks,
            window_blocks: &[],
            state: 0,
            logits: Logits::Last,
        };
        logits = f.model.forward(&f.pool, &mut kv, &[chunk]).unwrap();
    }
    out
}

/// The text of generated tokens, end-of-generation left out.
fn text(tokens: &[u32]) -> String {
    let env = &fixture().env;
    let body: Vec<u32> = tokens
        .iter()
        .copied()
        .filter(|t| !env.eog_ids().contains(t))
        .collect();
    env.tokenizer().decode(&body, false)
}

fn validate(schema: &Value, doc: &Value, ctx: &str) {
    let v = jsonschema::validator_for(schema).unwrap_or_else(|e| panic!("{ctx}: schema: {e}"));
    let errors: Vec<String> = v.iter_errors(doc).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{ctx}: {doc} does not validate: {errors:?}"
    );
}

/// 33 schemas: nested objects, arrays, enums, numbers, optional fields, patterns, references.
fn schemas() -> Vec<Value> {
    vec![
        json!({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
               "required": ["name", "age"], "additionalProperties": false}),
        json!({"type": "object", "properties": {
                "user": {"type": "object", "properties": {
                    "id": {"type": "integer", "minimum": 1},
                    "email": {"type": "string"}},
                  "required": ["id", "email"], "additionalProperties": false},
                "active": {"type": "boolean"}},
               "required": ["user", "active"], "additionalProperties": false}),
        json!({"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3}),
        json!({"type": "string", "enum": ["red", "green", "blue"]}),
        json!({"type": "number", "minimum": -10.5, "maximum": 10.5}),
        json!({"type": "integer", "exclusiveMinimum": 0, "maximum": 1000}),
        json!({"type": "boolean"}),
        json!({"type": "null"}),
        json!({"type": "object", "properties": {
                "a": {"type": "string"}, "b": {"type": "integer"}, "c": {"type": "boolean"}},
               "additionalProperties": false}),
        json!({"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}},
               "required": ["code"], "additionalProperties": false}),
        json!({"type": "string", "minLength": 2, "maxLength": 5}),
        json!({"type": "array", "items": {"type": "object", "properties": {
                  "x": {"type": "number"}, "y": {"type": "number"}},
                "required": ["x", "y"], "additionalProperties": false},
               "maxItems": 4}),
        json!({"anyOf": [{"type": "string", "maxLength": 4}, {"type": "integer"}]}),
        json!({"type": "object", "properties": {"kind": {"const": "circle"}, "r": {"type": "number", "minimum": 0}},
               "required": ["kind", "r"], "additionalProperties": false}),
        json!({"$defs": {"point": {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                                    "required": ["x", "y"], "additionalProperties": false}},
               "type": "object", "properties": {"from": {"$ref": "#/$defs/point"}, "to": {"$ref": "#/$defs/point"}},
               "required": ["from", "to"], "additionalProperties": false}),
        json!({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}, {"type": "boolean"}],
               "items": false, "minItems": 3}),
        json!({"type": "array", "items": {"type": "array", "items": {"type": "integer"}, "maxItems": 3}, "maxItems": 3}),
        json!({"type": ["string", "null"]}),
        json!({"type": "object", "additionalProperties": {"type": "integer"}, "maxProperties": 3}),
        json!({"type": "object", "properties": {"when": {"type": "string", "format": "date"}},
               "required": ["when"], "additionalProperties": false}),
        json!({"enum": [1, "two", null, true, 3.5]}),
        json!({"allOf": [
                {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                {"type": "object", "properties": {"b": {"type": "string"}}, "required": ["b"]}]}),
        json!({"type": "object", "properties": {"l1": {"type": "object", "properties": {
                 "l2": {"type": "object", "properties": {"l3": {"type": "array", "items": {"type": "string", "enum": ["x", "y"]}}},
                        "required": ["l3"], "additionalProperties": false}},
                 "required": ["l2"], "additionalProperties": false}},
               "required": ["l1"], "additionalProperties": false}),
        json!({"type": "object", "properties": {
                "id": {"type": "integer"}, "title": {"type": "string", "maxLength": 20},
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
                "price": {"type": "number", "minimum": 0}, "currency": {"enum": ["EUR", "USD"]},
                "stock": {"type": "integer", "minimum": 0, "maximum": 99}, "draft": {"type": "boolean"}},
               "required": ["id", "title", "tags", "price", "currency", "stock", "draft"],
               "additionalProperties": false}),
        json!({"type": "integer", "multipleOf": 5, "minimum": 0, "maximum": 100}),
        json!({"type": "number", "exclusiveMaximum": 1, "minimum": 0}),
        json!({"$defs": {"node": {"type": "object", "properties": {
                  "v": {"type": "integer"},
                  "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}},
                "required": ["v"], "additionalProperties": false}},
               "$ref": "#/$defs/node"}),
        json!({"type": "object", "patternProperties": {"^x_[a-z]+$": {"type": "integer"}},
               "additionalProperties": false, "maxProperties": 2}),
        json!({"type": "object", "additionalProperties": {"type": "string", "maxLength": 3},
               "minProperties": 1, "maxProperties": 2}),
        json!({"type": "object"}),
        json!({}),
        json!({"type": "object", "properties": {}, "additionalProperties": false}),
        json!({"type": "object", "properties": {
                "status": {"type": "string", "enum": ["ok", "error"]},
                "data": {"anyOf": [{"type": "null"}, {"type": "object", "properties": {"n": {"type": "integer"}},
                                                        "required": ["n"], "additionalProperties": false}]},
                "note": {"type": "string", "pattern": "^[a-z ]{0,10}$"}},
               "required": ["status", "data"], "additionalProperties": false}),
    ]
}

const PROMPT: &str = "<|im_start|>user\nGive me JSON.<|im_end|>\n<|im_start|>assistant\n";

#[test]
fn every_schema_yields_valid_json() {
    let f = fixture();
    let schemas = schemas();
    assert!(schemas.len() >= 30);
    for (i, schema) in schemas.iter().enumerate() {
        let g = Grammar::json_schema(schema).unwrap();
        for seed in 0..2u64 {
            let mut c = OutputConstraint::new(f.env.clone(), ReasoningMode::None, Some(&g), None)
                .unwrap()
                .with_max_tokens(256)
                .with_close_margin(TOY_MARGIN);
            let toks = generate(&mut c, PROMPT, seed * 1000 + i as u64, 256);
            assert!(c.is_done(), "schema {i}: not finished");
            let out = text(&toks);
            let ctx = format!("schema {i} {schema}, seed {seed}, output {out:?}");
            let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            validate(schema, &doc, &ctx);
        }
    }
}

#[test]
fn json_object_mode_and_response_formats() {
    let f = fixture();
    let rf = json!({"type": "json_schema", "json_schema": {"name": "pt", "strict": true,
        "schema": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"], "additionalProperties": false}}});
    let g = Grammar::from_response_format(&rf).unwrap().unwrap();
    let mut c = OutputConstraint::new(f.env.clone(), ReasoningMode::None, Some(&g), None).unwrap();
    let out = text(&generate(&mut c, PROMPT, 7, 200));
    validate(
        &rf["json_schema"]["schema"],
        &serde_json::from_str(&out).unwrap(),
        &out,
    );

    let g = Grammar::from_response_format(&json!({"type": "json_object"}))
        .unwrap()
        .unwrap();
    for seed in 0..3 {
        let mut c = OutputConstraint::new(f.env.clone(), ReasoningMode::None, Some(&g), None)
            .unwrap()
            .with_max_tokens(160)
            .with_close_margin(TOY_MARGIN);
        let out = text(&generate(&mut c, PROMPT, seed, 160));
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out:?}: {e}"));
        assert!(v.is_object(), "{out}");
    }
    assert!(Grammar::from_response_format(&json!({"type": "text"}))
        .unwrap()
        .is_none());
    assert!(Grammar::from_response_format(&json!({"type": "yaml"})).is_err());
}

#[test]
fn unsupported_schema_features_are_named() {
    let env = &fixture().env;
    for (schema, word) in [
        (
            json!({"type": "array", "items": {"type": "integer"}, "uniqueItems": true}),
            "uniqueItems",
        ),
        (
            json!({"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}}),
            "if",
        ),
        (json!({"not": {"type": "string"}}), "not"),
        (json!({"type": "string", "pattern": "(unclosed"}), "pattern"),
    ] {
        let g = Grammar::json_schema(&schema).unwrap();
        match env.matcher(&g) {
            Err(OutputError::Grammar(msg)) => {
                assert!(
                    msg.contains(word) || msg.to_lowercase().contains("regex"),
                    "{schema}: {msg}"
                )
            }
            Err(e) => panic!("{schema}: wrong error {e}"),
            Ok(_) => panic!("{schema}: accepted"),
        }
    }
    assert!(matches!(
        Grammar::json_schema(&json!("string")),
        Err(OutputError::InvalidRequest(_))
    ));
}

fn weather_tools() -> Vec<Value> {
    vec![
        json!({"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {
                "location": {"type": "string", "maxLength": 30},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["location"], "additionalProperties": false}}}),
        json!({"type": "function", "function": {"name": "add", "parameters": {
            "type": "object", "properties": {
                "a": {"type": "integer", "minimum": -1000000, "maximum": 1000000},
                "b": {"type": "integer", "minimum": -1000000, "maximum": 1000000}},
            "required": ["a", "b"], "additionalProperties": false}}}),
        json!({"type": "function", "function": {"name": "now"}}),
    ]
}

fn params_of(tools: &[Value], name: &str) -> Value {
    tools
        .iter()
        .find(|t| t["function"]["name"] == name)
        .map(|t| {
            let p = &t["function"]["parameters"];
            if p.is_null() {
                json!({"type": "object"})
            } else {
                p.clone()
            }
        })
        .unwrap_or_else(|| panic!("no tool {name}"))
}

#[test]
fn tool_choice_required_always_yields_valid_calls() {
    let f = fixture();
    let tools = weather_tools();
    // DeepSeek's markers take dozens of byte tokens each in the toy vocabulary: a call can take
    // 100 tokens, hence the wide closing margin.
    for format in [
        ToolFormat::Hermes,
        ToolFormat::DeepSeekR1,
        ToolFormat::DeepSeekV31,
        ToolFormat::Llama3Json,
    ] {
        for (choice, seeds) in [
            (ToolChoice::Required, 0..6u64),
            (ToolChoice::Function("add".into()), 0..2),
        ] {
            let g = Grammar::tool_calls(&f.env, format, &tools, &choice, true)
                .unwrap()
                .unwrap();
            for seed in seeds {
                let mut c =
                    OutputConstraint::new(f.env.clone(), ReasoningMode::None, Some(&g), None)
                        .unwrap()
                        .with_max_tokens(500)
                        .with_close_margin(200);
                let out = text(&generate(&mut c, PROMPT, seed, 500));
                let ctx = format!("{format:?} {choice:?} seed {seed}: {out:?}");
                let parsed = parse_tool_calls(format, &out);
                assert!(!parsed.tool_calls.is_empty(), "{ctx}");
                assert_eq!(parsed.content, "", "{ctx}");
                for call in &parsed.tool_calls {
                    if let ToolChoice::Function(n) = &choice {
                        assert_eq!(&call.name, n, "{ctx}");
                    }
                    let args: Value = serde_json::from_str(&call.arguments)
                        .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    validate(&params_of(&tools, &call.name), &args, &ctx);
                }
            }
        }
    }
}

/// How many tokens come before the `</think>` that ends the reasoning.
fn reasoning_len(tokens: &[u32]) -> usize {
    let env = &fixture().env;
    let close = env.think_close_tokens();
    tokens
        .windows(close.len())
        .position(|w| w == close)
        .unwrap_or_else(|| panic!("no </think> in {:?}", text(tokens)))
}

#[test]
fn reasoning_budget_then_valid_answer() {
    let f = fixture();
    assert!(
        f.env.think_close_tokens().len() > 1,
        "the toy vocabulary spells </think> in several tokens"
    );
    let schema = json!({"type": "object", "properties": {"answer": {"type": "integer"}, "why": {"type": "string", "maxLength": 12}},
                        "required": ["answer", "why"], "additionalProperties": false});
    let g = Grammar::json_schema(&schema).unwrap();
    let prompt_open = format!("{PROMPT}<think>\n");
    for budget in [0usize, 1, 5, 33] {
        for seed in 0..2 {
            let mut c =
                OutputConstraint::new(f.env.clone(), ReasoningMode::Open, Some(&g), Some(budget))
                    .unwrap()
                    .with_max_tokens(300)
                    .with_close_margin(TOY_MARGIN);
            let toks = generate(&mut c, &prompt_open, seed, 300);
            let n = reasoning_len(&toks);
            assert!(n <= budget, "budget {budget}: {n} reasoning tokens");
            assert_eq!(n, c.reasoning_tokens());
            let (_, answer) = split_reasoning(ReasoningMode::Open, &text(&toks));
            let ctx = format!("budget {budget} seed {seed}: {:?}", text(&toks));
            let doc: Value = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            validate(&schema, &doc, &ctx);
        }
    }
    // Without a grammar: the budget alone, then free text.
    for budget in [0usize, 3, 20] {
        let mut c =
            OutputConstraint::new(f.env.clone(), ReasoningMode::Open, None, Some(budget)).unwrap();
        let toks = run(&mut c, &prompt_open, 9, 40 + budget, false);
        assert!(reasoning_len(&toks) <= budget);
    }
}

#[test]
fn optional_reasoning_with_grammar() {
    // Qwen3 with thinking on: the model may or may not open <think>; either way the answer
    // validates, and reasoning stays within the budget.
    let f = fixture();
    let schema = json!({"type": "array", "items": {"type": "integer"}, "maxItems": 4});
    let g = Grammar::json_schema(&schema).unwrap();
    let mut opened = 0;
    for seed in 0..8 {
        let mut c =
            OutputConstraint::new(f.env.clone(), ReasoningMode::Optional, Some(&g), Some(6))
                .unwrap()
                .with_max_tokens(200)
                .with_close_margin(TOY_MARGIN);
        let toks = generate(&mut c, PROMPT, seed, 200);
        let out = text(&toks);
        let (reasoning, answer) = split_reasoning(ReasoningMode::Optional, &out);
        if out.trim_start().starts_with("<think>") {
            opened += 1;
            assert!(c.reasoning_tokens() <= 6, "{out:?}");
        } else {
            assert_eq!(reasoning, "", "{out:?}");
        }
        let doc: Value = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{out:?}: {e}"));
        validate(&schema, &doc, &out);
    }
    eprintln!("opened <think> in {opened} of 8 runs");

    // Hermes tool calls start with `<` like `<think>` does: the machine follows both until the
    // text decides (and takes back what the grammar consumed if it was `<think>`).
    let tools = weather_tools();
    let g = Grammar::tool_calls(
        &f.env,
        ToolFormat::Hermes,
        &tools,
        &ToolChoice::Required,
        false,
    )
    .unwrap()
    .unwrap();
    let mut kinds = [0, 0];
    for seed in 0..10 {
        let mut c =
            OutputConstraint::new(f.env.clone(), ReasoningMode::Optional, Some(&g), Some(4))
                .unwrap()
                .with_max_tokens(300)
                .with_close_margin(150);
        let out = text(&generate(&mut c, PROMPT, 100 + seed, 300));
        let (_, answer) = split_reasoning(ReasoningMode::Optional, &out);
        kinds[usize::from(out.starts_with("<think>"))] += 1;
        let p = parse_tool_calls(ToolFormat::Hermes, &answer);
        assert_eq!(p.tool_calls.len(), 1, "{out:?}");
        let args: Value = serde_json::from_str(&p.tool_calls[0].arguments).unwrap();
        validate(&params_of(&tools, &p.tool_calls[0].name), &args, &out);
    }
    eprintln!("tool calls without / with <think>: {kinds:?}");
}

#[test]
fn no_grammar_no_budget_masks_nothing() {
    let f = fixture();
    for mode in [
        ReasoningMode::None,
        ReasoningMode::Optional,
        ReasoningMode::Open,
    ] {
        let mut c = OutputConstraint::new(f.env.clone(), mode, None, None).unwrap();
        assert!(c.is_noop());
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..50 {
            let logits: Vec<f32> = (0..f.model.config().n_vocab)
                .map(|_| rng.gen_range(-5.0..5.0))
                .collect();
            let mut masked = logits.clone();
            c.mask(&mut masked).unwrap();
            assert_eq!(masked, logits);
            let t = rng.gen_range(0..515);
            c.accept(t).unwrap();
        }
    }
}

#[test]
fn request_plan_wiring() {
    let f = fixture();
    let qwen3 =
        std::fs::read_to_string(fixtures().join("templates/Qwen-Qwen3-0.6B.jinja")).unwrap();
    let tools = weather_tools();
    let tc = json!("required");
    let req = OutputRequest {
        template_source: &qwen3,
        prompt: PROMPT,
        tools: &tools,
        tool_choice: Some(&tc),
        parallel_tool_calls: false,
        response_format: None,
        grammar: None,
        reasoning_effort: Some("low"),
        max_tokens: Some(300),
    };
    let plan = OutputPlan::new(&f.env, &req).unwrap();
    assert_eq!(plan.reasoning, ReasoningMode::Optional);
    assert_eq!(plan.tool_format, Some(ToolFormat::Hermes));
    assert_eq!(plan.budget, Some(1024));
    // One compiled plan serves several sequences: each constraint starts fresh.
    for seed in [3, 4, 5] {
        let mut c = plan.constraint(&f.env).unwrap();
        let out = text(&generate(&mut c, PROMPT, seed, 300));
        let mut parser = plan.parser();
        parser.push(&out);
        parser.finish();
        let msg = parser.into_message();
        assert_eq!(msg.tool_calls.len(), 1, "{out:?}");
        let args: Value = serde_json::from_str(&msg.tool_calls[0].arguments).unwrap();
        validate(&params_of(&tools, &msg.tool_calls[0].name), &args, &out);
    }

    // Bad requests are errors (HTTP 400), not panics.
    let bad_schema = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array", "uniqueItems": true}}});
    let bad = [
        OutputRequest {
            response_format: Some(&bad_schema),
            tools: &[],
            ..req
        },
        OutputRequest {
            reasoning_effort: Some("extreme"),
            ..req
        },
    ];
    for r in bad {
        assert!(OutputPlan::new(&f.env, &r).is_err());
    }
    let none = json!("none");
    let plain = OutputPlan::new(
        &f.env,
        &OutputRequest {
            tool_choice: Some(&none),
            reasoning_effort: None,
            ..req
        },
    )
    .unwrap();
    assert!(plain.constraint(&f.env).is_none());
    assert_eq!(plain.tool_format, None);
}

/// Real vocabularies with random logits: Llama 3 (128k), Qwen2 (151k), DeepSeek LLM (102k).
#[test]
fn real_vocabularies_with_random_logits() {
    let schema = json!({"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 16}, "n": {"type": "integer", "minimum": -1000, "maximum": 1000},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "ü"]}, "maxItems": 3}},
        "required": ["name", "n", "tags"], "additionalProperties": false});
    let g = Grammar::json_schema(&schema).unwrap();
    for vocab in [
        "ggml-vocab-llama-bpe",
        "ggml-vocab-qwen2",
        "ggml-vocab-deepseek-llm",
    ] {
        let gguf = GgufFile::open(fixtures().join(format!("tokenizer/{vocab}.gguf"))).unwrap();
        let tok = Arc::new(Tokenizer::from_gguf(&gguf).unwrap());
        let env = Arc::new(TokenEnv::new(tok.clone()).unwrap());
        let tools = weather_tools();
        let tg = Grammar::tool_calls(
            &env,
            ToolFormat::Hermes,
            &tools,
            &ToolChoice::Required,
            true,
        )
        .unwrap()
        .unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for (grammar, is_tool) in [(&g, false), (&tg, true)] {
            for mode in [ReasoningMode::None, ReasoningMode::Open] {
                let mut c = OutputConstraint::new(env.clone(), mode, Some(grammar), Some(4))
                    .unwrap()
                    .with_max_tokens(200)
                    .with_close_margin(64);
                let mut out = Vec::new();
                loop {
                    let mut logits: Vec<f32> = (0..tok.vocab_size())
                        .map(|_| rng.gen_range(0.0..8.0))
                        .collect();
                    c.mask(&mut logits).unwrap();
                    let t = Sampler::new(SamplingParams {
                        seed: Some(rng.gen()),
                        ..SamplingParams::default()
                    })
                    .unwrap()
                    .sample(&logits, &[]);
                    out.push(t);
                    if c.accept(t).unwrap() {
                        break;
                    }
                    assert!(out.len() < 200, "{vocab}: {:?}", tok.decode(&out, false));
                }
                let body: Vec<u32> = out
                    .iter()
                    .copied()
                    .filter(|t| !env.eog_ids().contains(t))
                    .collect();
                let s = tok.decode(&body, false);
                let (_, answer) = split_reasoning(mode, &s);
                let ctx = format!("{vocab} {mode:?}: {s:?}");
                if is_tool {
                    let p = parse_tool_calls(ToolFormat::Hermes, &answer);
                    assert!(!p.tool_calls.is_empty(), "{ctx}");
                    for call in p.tool_calls {
                        let args: Value = serde_json::from_str(&call.arguments).unwrap();
                        validate(&params_of(&tools, &call.name), &args, &ctx);
                    }
                } else {
                    let doc: Value =
                        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    validate(&schema, &doc, &ctx);
                }
            }
        }
    }
}

/// The toy tokenizer plus the markers real models have as single tokens: DeepSeek's tool-call
/// markers as control tokens (grammars must name them by id), `<think>`, `</think>`,
/// `<tool_call>` and `</tool_call>` as user-defined ones (grammars use them as text).
fn tokenizer_with_markers() -> Arc<Tokenizer> {
    let src = fixtures().join("hf/qwen2");
    let mut spec: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("tokenizer.json")).unwrap())
            .unwrap();
    let added = spec["added_tokens"].as_array_mut().unwrap();
    let markers = [
        ("<｜tool▁calls▁begin｜>", true),
        ("<｜tool▁calls▁end｜>", true),
        ("<｜tool▁call▁begin｜>", true),
        ("<｜tool▁call▁end｜>", true),
        ("<｜tool▁sep｜>", true),
        ("<think>", false),
        ("</think>", false),
        ("<tool_call>", false),
        ("</tool_call>", false),
    ];
    for (i, (text, special)) in markers.iter().enumerate() {
        added.push(
            json!({"id": 515 + i, "content": text, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": special}),
        );
    }
    let dir = std::env::temp_dir().join(format!("frugal-output-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tokenizer.json"), spec.to_string()).unwrap();
    for f in ["tokenizer_config.json", "generation_config.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let tok = Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    Arc::new(tok)
}

#[test]
fn single_token_markers() {
    let tok = tokenizer_with_markers();
    let env = Arc::new(TokenEnv::new(tok.clone()).unwrap());
    assert_eq!(env.think_close_tokens(), &[521]);
    assert_eq!(env.think_open_tokens(), &[520]);
    let tools = weather_tools();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for format in [
        ToolFormat::DeepSeekV31,
        ToolFormat::DeepSeekR1,
        ToolFormat::Hermes,
    ] {
        let g = Grammar::tool_calls(&env, format, &tools, &ToolChoice::Required, true)
            .unwrap()
            .unwrap();
        if format != ToolFormat::Hermes {
            assert!(g.lark().contains("<[515]>"), "{}", g.lark());
        }
        for (mode, budget) in [
            (ReasoningMode::None, None),
            (ReasoningMode::Open, Some(3)),
            (ReasoningMode::Optional, Some(2)),
        ] {
            for _ in 0..3 {
                let mut c = OutputConstraint::new(env.clone(), mode, Some(&g), budget)
                    .unwrap()
                    .with_max_tokens(400)
                    .with_close_margin(150);
                let mut out = Vec::new();
                loop {
                    let mut logits: Vec<f32> = (0..tok.vocab_size())
                        .map(|_| rng.gen_range(0.0..3.0))
                        .collect();
                    // A model that likes its markers.
                    for l in &mut logits[515..524] {
                        *l += 4.0;
                    }
                    c.mask(&mut logits).unwrap();
                    let t = Sampler::new(SamplingParams {
                        seed: Some(rng.gen()),
                        ..SamplingParams::default()
                    })
                    .unwrap()
                    .sample(&logits, &[]);
                    out.push(t);
                    if c.accept(t).unwrap() {
                        break;
                    }
                    assert!(out.len() < 400, "{:?}", tok.decode(&out, false));
                }
                let s = tok.decode(
                    &out.iter()
                        .copied()
                        .filter(|t| !env.eog_ids().contains(t))
                        .collect::<Vec<_>>(),
                    false,
                );
                let ctx = format!("{format:?} {mode:?}: {s:?} {out:?}");
                if format != ToolFormat::Hermes {
                    // The markers come as their control tokens, never spelled out.
                    assert!(out.contains(&515) && out.contains(&516), "{ctx}");
                }
                if mode == ReasoningMode::Open {
                    assert!(out.contains(&521), "{ctx}");
                }
                let (_, answer) = split_reasoning(mode, &s);
                let p = parse_tool_calls(format, &answer);
                assert!(!p.tool_calls.is_empty(), "{ctx}");
                assert_eq!(p.content, "", "{ctx}");
                for call in p.tool_calls {
                    let args: Value = serde_json::from_str(&call.arguments).unwrap();
                    validate(&params_of(&tools, &call.name), &args, &ctx);
                }
            }
        }
    }
}
