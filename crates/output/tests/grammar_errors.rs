//! Schemas that cannot be compiled, or that no answer of reasonable length can meet, are
//! request errors with a one-line reason (no llguidance state or grammar dump), found before
//! decoding starts, and naming the request field at fault.

use frugal_fixtures::dir as fixtures;
use frugal_formats::GgufFile;
use frugal_output::{Grammar, OutputError, OutputPlan, OutputRequest, TokenEnv};
use frugal_tokenizer::Tokenizer;
use serde_json::{json, Value};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

fn env() -> &'static TokenEnv {
    static E: OnceLock<TokenEnv> = OnceLock::new();
    E.get_or_init(|| {
        let gguf = GgufFile::open(fixtures().join("models/qwen3-Q8_0.gguf")).unwrap();
        TokenEnv::new(Arc::new(Tokenizer::from_gguf(&gguf).unwrap())).unwrap()
    })
}

/// The cases and their relatives, with a word the reason must contain.
fn bad_schemas() -> Vec<(Value, &'static str)> {
    vec![
        // A required property whose schema is its own: no finite document.
        (
            json!({"$ref": "#/$defs/n", "$defs": {"n": {"type": "object",
                "properties": {"next": {"$ref": "#/$defs/n"}}, "required": ["next"]}}}),
            "forces more than",
        ),
        // A `$ref` loop with nothing in between.
        (
            json!({"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}}),
            "admits no output",
        ),
        (
            json!({"type": "string", "pattern": "^a{1000000}$"}),
            "1000000",
        ),
        (
            json!({"type": "string", "minLength": 10000000}),
            "minLength",
        ),
        (json!({"$ref": "#/$defs/missing"}), "does not exist"),
        (json!({"type": "string", "pattern": "(("}), "unclosed group"),
    ]
}

fn assert_one_line(msg: &str, ctx: &str) {
    assert!(!msg.contains('\n'), "{ctx}: not one line: {msg:?}");
    assert!(
        !msg.contains("<state>") && !msg.contains("x-guidance"),
        "{ctx}: internals leak: {msg}"
    );
    assert!(msg.len() < 600, "{ctx}: too long: {msg}");
}

#[test]
fn bad_schemas_fail_to_compile_with_a_one_line_reason() {
    for (schema, word) in bad_schemas() {
        let t = Instant::now();
        let r = Grammar::json_schema(&schema).and_then(|g| env().matcher(&g));
        let ctx = schema.to_string();
        match r {
            Err(OutputError::Grammar(msg)) => {
                assert!(msg.contains(word), "{ctx}: {msg:?} should say {word:?}");
                assert_one_line(&msg, &ctx);
            }
            Err(e) => panic!("{ctx}: wrong error kind {e:?}"),
            Ok(_) => panic!("{ctx}: compiled"),
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{ctx}: took {:?}",
            t.elapsed()
        );
    }
}

fn request<'a>(
    tools: &'a [Value],
    rf: Option<&'a Value>,
    choice: Option<&'a Value>,
) -> OutputRequest<'a> {
    OutputRequest {
        template_source: "{{ '<tool_call>' }}",
        prompt: "<|im_start|>assistant\n",
        tools,
        tool_choice: choice,
        parallel_tool_calls: true,
        response_format: rf,
        grammar: None,
        reasoning_effort: None,
        max_tokens: Some(100),
    }
}

fn tool(name: Value, params: Value) -> Value {
    json!({"type": "function", "function": {"name": name, "parameters": params}})
}

fn param_of(r: Result<OutputPlan, OutputError>) -> (String, String) {
    let e = r.expect_err("an error");
    let msg = e.to_string();
    assert_one_line(&msg, &msg);
    (e.param().unwrap_or("(none)").to_string(), msg)
}

#[test]
fn errors_name_the_request_field() {
    let good = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
    let required = json!("required");
    for (schema, _) in bad_schemas() {
        // In response_format.
        let rf = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}});
        let (param, msg) = param_of(OutputPlan::new(env(), &request(&[], Some(&rf), None)));
        assert_eq!(param, "response_format.json_schema.schema", "{msg}");
        // In the third tool, both in the model's format and in the generic one.
        let tools = [
            tool(json!("a"), good.clone()),
            tool(json!("b"), good.clone()),
            tool(json!("c"), schema),
        ];
        for generic in [false, true] {
            let req = request(&tools, None, Some(&required));
            let r = if generic {
                OutputPlan::generic(env(), &req)
            } else {
                OutputPlan::new(env(), &req)
            };
            let (param, msg) = param_of(r);
            assert_eq!(
                param, "tools[2].function.parameters",
                "generic {generic}: {msg}"
            );
            assert!(msg.contains("'c'"), "{msg}");
        }
    }
    let tools = [
        tool(json!("a"), good.clone()),
        tool(json!("b"), good.clone()),
        tool(json!(null), good.clone()),
    ];
    let (param, _) = param_of(OutputPlan::new(env(), &request(&tools, None, None)));
    assert_eq!(param, "tools[2].function.name");
    let tools = [
        tool(json!("a"), good.clone()),
        tool(json!("a"), good.clone()),
    ];
    let (param, msg) = param_of(OutputPlan::new(env(), &request(&tools, None, None)));
    assert_eq!(param, "tools[1].function.name", "{msg}");
    let tools = [tool(json!("a"), json!("not a schema"))];
    let (param, _) = param_of(OutputPlan::new(env(), &request(&tools, None, None)));
    assert_eq!(param, "tools[0].function.parameters");
    let tools = [tool(json!("a"), good.clone())];
    for choice in [
        json!("sometimes"),
        json!({"type": "function", "function": {"name": "zzz"}}),
        json!(3),
    ] {
        for generic in [false, true] {
            let req = request(&tools, None, Some(&choice));
            let r = if generic {
                OutputPlan::generic(env(), &req)
            } else {
                OutputPlan::new(env(), &req)
            };
            let (param, msg) = param_of(r);
            assert_eq!(param, "tool_choice", "{choice}: {msg}");
        }
    }
}
