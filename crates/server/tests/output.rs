//! Reasoning, tool calls, structured output and DeepSeek's extras through the HTTP API, on
//! fixture models with real chat templates (`--chat-template-file`): every answer is checked the
//! way a client would read it, streamed and not. The models have random weights, so anything
//! that must hold (valid JSON, a parseable tool call, a budget) holds because it is enforced.

mod common;

use common::*;
use frugal_server::ReasoningFormat;
use reqwest::StatusCode;
use serde_json::{json, Value};

const R1_TEMPLATE: &str = "templates/deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja";
const QWEN3_TEMPLATE: &str = "templates/Qwen-Qwen3-0.6B.jinja";

fn validate(schema: &Value, doc: &Value, ctx: &str) {
    let v = jsonschema::validator_for(schema).unwrap_or_else(|e| panic!("{ctx}: schema: {e}"));
    let errors: Vec<String> = v.iter_errors(doc).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{ctx}: {doc} does not validate: {errors:?}"
    );
}

fn weather_tools() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
        }, "required": ["city"]}
    }}, {"type": "function", "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}
    }}])
}

fn params_of(tools: &Value, name: &str) -> Value {
    tools
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["function"]["name"] == name)
        .unwrap_or_else(|| panic!("no tool {name}"))["function"]["parameters"]
        .clone()
}

/// What a client assembles from a chat stream: reasoning, content, tool calls (by index) and
/// the finish reason.
#[derive(Debug, Default, PartialEq)]
struct Streamed {
    reasoning: Option<String>,
    content: String,
    calls: Vec<(String, String, String)>,
    finish: String,
}

fn assemble(chunks: &[Value]) -> Streamed {
    let mut s = Streamed::default();
    for c in chunks {
        let Some(choice) = c["choices"].get(0) else {
            continue;
        };
        let d = &choice["delta"];
        if let Some(r) = d["reasoning_content"].as_str() {
            s.reasoning.get_or_insert_with(String::new).push_str(r);
        }
        if let Some(t) = d["content"].as_str() {
            s.content.push_str(t);
        }
        for tc in d["tool_calls"].as_array().into_iter().flatten() {
            let i = tc["index"].as_u64().unwrap() as usize;
            if let Some(id) = tc["id"].as_str() {
                assert_eq!(i, s.calls.len(), "tool call indexes count up from 0");
                assert_eq!(tc["type"], "function");
                let name = tc["function"]["name"].as_str().unwrap().to_string();
                s.calls.push((id.to_string(), name, String::new()));
            }
            let args = tc["function"]["arguments"].as_str().unwrap_or_default();
            s.calls[i].2.push_str(args);
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            s.finish = f.to_string();
        }
    }
    s
}

/// The same shape from a non-streamed response.
fn message_of(body: &Value) -> Streamed {
    let choice = &body["choices"][0];
    let m = &choice["message"];
    Streamed {
        reasoning: m["reasoning_content"].as_str().map(str::to_string),
        content: m["content"].as_str().unwrap_or_default().to_string(),
        calls: m["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|tc| {
                assert_eq!(tc["type"], "function");
                (
                    tc["id"].as_str().unwrap().to_string(),
                    tc["function"]["name"].as_str().unwrap().to_string(),
                    tc["function"]["arguments"].as_str().unwrap().to_string(),
                )
            })
            .collect(),
        finish: choice["finish_reason"].as_str().unwrap().to_string(),
    }
}

/// Non-streamed and streamed answers to one greedy request; they must agree (tool-call ids
/// aside, which are fresh per response).
async fn both(s: &Running, mut body: Value) -> Streamed {
    body["temperature"] = json!(0);
    let (status, v) = s.post("/v1/chat/completions", body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let plain = message_of(&v);
    body["stream"] = json!(true);
    let mut streamed = assemble(&s.stream("/v1/chat/completions", body).await);
    // An empty reasoning block streams no reasoning delta.
    if plain.reasoning.as_deref() == Some("") && streamed.reasoning.is_none() {
        streamed.reasoning = Some(String::new());
    }
    for (a, b) in streamed.calls.iter_mut().zip(&plain.calls) {
        assert!(a.0.starts_with("call_"));
        a.0 = b.0.clone();
    }
    assert_eq!(streamed, plain, "streamed and non-streamed answers differ");
    plain
}

fn thinking() -> Value {
    json!({"enable_thinking": true})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasoning_is_split_from_the_answer() {
    let s = start(with_template(R1_TEMPLATE)).await;
    // The R1 template opens `<think>` in the prompt: the output starts inside the block.
    let m = both(
        &s,
        json!({"messages": [{"role": "user", "content": "Why is the sky blue?"}],
               "chat_template_kwargs": thinking(), "max_reasoning_tokens": 12, "max_tokens": 40}),
    )
    .await;
    let r = m.reasoning.expect("reasoning_content");
    assert!(!r.is_empty() && !r.contains("<think>") && !r.contains("</think>"));
    assert!(!m.content.contains("</think>"), "{:?}", m.content);
    // Thinking off: the template closes the block itself, so there is no reasoning.
    let m = both(
        &s,
        json!({"messages": [{"role": "user", "content": "Why?"}], "max_tokens": 10}),
    )
    .await;
    assert_eq!(m.reasoning, None);
    s.shutdown().await;

    // The raw format keeps everything in `content`.
    let s = start(|cfg| {
        with_template(R1_TEMPLATE)(cfg);
        cfg.reasoning_format = ReasoningFormat::Raw;
    })
    .await;
    let m = both(
        &s,
        json!({"messages": [{"role": "user", "content": "Why is the sky blue?"}],
               "chat_template_kwargs": thinking(), "max_reasoning_tokens": 12, "max_tokens": 40}),
    )
    .await;
    assert_eq!(m.reasoning, None);
    assert!(m.content.contains("</think>"), "{:?}", m.content);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reasoning_budget_of_n_closes_the_block_after_at_most_n_tokens() {
    let s = start(with_template(R1_TEMPLATE)).await;
    let schema = json!({"type": "object", "properties": {"answer": {"type": "string"}},
                        "required": ["answer"]});
    for (n, seed) in [(0u64, 1), (3, 2), (10, 3), (25, 4)] {
        let (status, v) = s
            .post(
                "/v1/chat/completions",
                json!({"messages": [{"role": "user", "content": "Think, then answer."}],
                       "chat_template_kwargs": thinking(), "max_reasoning_tokens": n,
                       "max_tokens": 200, "seed": seed, "logprobs": true,
                       "response_format": {"type": "json_schema",
                                           "json_schema": {"name": "a", "schema": schema}}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        // `</think>` starts at a token boundary no later than token n.
        let toks: Vec<Vec<u8>> = v["choices"][0]["logprobs"]["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                t["bytes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| b.as_u64().unwrap() as u8)
                    .collect()
            })
            .collect();
        let closes_at = (0..toks.len()).find(|&k| toks[k..].concat().starts_with(b"</think>"));
        let k = closes_at.expect("the block is closed");
        assert!(k as u64 <= n, "budget {n}: {k} reasoning tokens");
        let m = message_of(&v);
        assert_eq!(m.finish, "stop");
        let doc: Value = serde_json::from_str(m.content.trim())
            .unwrap_or_else(|e| panic!("budget {n}: answer is not JSON ({e}): {:?}", m.content));
        validate(&schema, &doc, "answer");
    }
    // reasoning_effort maps onto a budget too ("none": no reasoning at all).
    let m = both(
        &s,
        json!({"messages": [{"role": "user", "content": "Quick."}], "reasoning_effort": "none",
               "chat_template_kwargs": thinking(), "max_tokens": 30,
               "response_format": {"type": "json_object"}}),
    )
    .await;
    assert_eq!(m.reasoning.as_deref(), Some(""));
    assert!(serde_json::from_str::<Value>(m.content.trim()).is_ok_and(|v| v.is_object()));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_answers_after_reasoning_validate() {
    let s = start(with_template(R1_TEMPLATE)).await;
    let schemas = [
        json!({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
               "required": ["name", "age"], "additionalProperties": false}),
        json!({"type": "object", "properties": {"tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
               "score": {"type": "number"}}, "required": ["tags"]}),
        json!({"type": "object", "properties": {"ok": {"type": "boolean"},
               "inner": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}},
               "required": ["ok", "inner"]}),
    ];
    for (i, schema) in schemas.iter().enumerate() {
        let m = both(
            &s,
            json!({"messages": [{"role": "user", "content": "Fill the form."}],
                   "chat_template_kwargs": thinking(), "max_reasoning_tokens": 8,
                   "max_tokens": 300,
                   "response_format": {"type": "json_schema",
                                       "json_schema": {"name": format!("s{i}"), "schema": schema, "strict": true}}}),
        )
        .await;
        assert!(m.reasoning.is_some_and(|r| !r.is_empty()), "schema {i}");
        assert_eq!(m.finish, "stop", "schema {i}");
        let doc: Value = serde_json::from_str(m.content.trim())
            .unwrap_or_else(|e| panic!("schema {i}: not JSON ({e}): {:?}", m.content));
        validate(schema, &doc, &format!("schema {i}"));
    }
    s.shutdown().await;
}

/// `opened`: the template opens `<think>` itself, so every answer reasons first.
async fn check_tool_calls(template: &str, opened: bool) {
    let s = start(with_template(template)).await;
    let tools = weather_tools();
    let choices = [
        json!("required"),
        json!({"type": "function", "function": {"name": "get_time"}}),
    ];
    for choice in &choices {
        for seed in [1, 2] {
            let body = json!({"messages": [{"role": "user", "content": "Weather in Paris?"}],
                   "tools": tools, "tool_choice": choice, "parallel_tool_calls": false,
                   "chat_template_kwargs": thinking(),
                   "max_reasoning_tokens": 6, "max_tokens": 300, "seed": seed});
            let m = both(&s, body).await;
            let ctx = format!("{template} {choice} seed {seed}");
            if opened {
                assert!(
                    m.reasoning.is_some(),
                    "{ctx}: the call came after reasoning"
                );
            }
            assert_eq!(m.finish, "tool_calls", "{ctx}");
            assert_eq!(m.calls.len(), 1, "{ctx}: {m:?}");
            let (id, name, args) = &m.calls[0];
            assert!(id.starts_with("call_"));
            if let Some(want) = choice["function"]["name"].as_str() {
                assert_eq!(name, want, "{ctx}");
            }
            let args: Value = serde_json::from_str(args)
                .unwrap_or_else(|e| panic!("{ctx}: arguments are not JSON ({e}): {args:?}"));
            validate(&params_of(&tools, name), &args, &ctx);
            assert!(!m.content.contains("tool"), "{ctx}: markup left in content");
        }
    }
    // `none`: tools are rendered but never called.
    let m = both(
        &s,
        json!({"messages": [{"role": "user", "content": "Weather?"}], "tools": tools,
               "tool_choice": "none", "max_tokens": 20}),
    )
    .await;
    assert!(m.calls.is_empty());
    assert_ne!(m.finish, "tool_calls");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deepseek_tool_calls_after_reasoning() {
    check_tool_calls(R1_TEMPLATE, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hermes_tool_calls_with_qwen3_thinking() {
    // Qwen3 may open `<think>` or not; either way the call must come out whole.
    check_tool_calls(QWEN3_TEMPLATE, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_output_options_are_400_naming_the_field() {
    let s = start(with_template(QWEN3_TEMPLATE)).await;
    let user = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (
            json!({"messages": user, "response_format": {"type": "json_schema", "json_schema":
                {"name": "x", "schema": {"type": "array", "uniqueItems": true}}}}),
            "uniqueItems",
        ),
        (
            json!({"messages": user, "response_format": {"type": "xml"}}),
            "xml",
        ),
        (
            json!({"messages": user, "reasoning_effort": "extreme"}),
            "extreme",
        ),
        (
            json!({"messages": user, "tools": weather_tools(),
                   "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            "nope",
        ),
        (
            json!({"messages": [{"role": "assistant", "content": "x", "prefix": true},
                                {"role": "user", "content": "hi"}]}),
            "prefix",
        ),
    ];
    for (body, needle) in cases {
        let (status, v) = s.post("/v1/chat/completions", body).await;
        assert_error(status, &v, StatusCode::BAD_REQUEST, needle);
    }
    // FIM on a model without FIM tokens.
    let (status, v) = s
        .post(
            "/v1/completions",
            json!({"prompt": "def f(", "suffix": "return x", "max_tokens": 4}),
        )
        .await;
    assert_error(status, &v, StatusCode::BAD_REQUEST, "FIM");
    assert_eq!(v["error"]["param"], "suffix");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_prefix_completion_continues_the_assistant_message() {
    // ChatML (the fixture has no template): the continued turn is exactly this text.
    let s = start(|_| {}).await;
    let rendered = "<|im_start|>user\nWrite a list<|im_end|>\n<|im_start|>assistant\n1. apples";
    let (status, chat) = s
        .post(
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "Write a list"},
                                {"role": "assistant", "content": "1. apples", "prefix": true}],
                   "max_tokens": 12, "temperature": 0}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{chat}");
    let (status, text) = s
        .post(
            "/v1/completions",
            json!({"prompt": rendered, "max_tokens": 12, "temperature": 0}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(
        chat["usage"]["prompt_tokens"], text["usage"]["prompt_tokens"],
        "the prompt ends inside the assistant turn"
    );
    assert_eq!(
        chat["choices"][0]["message"]["content"],
        text["choices"][0]["text"]
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_inside_the_engine_fails_only_its_request() {
    let s = start(|_| {}).await;
    let user = json!([{"role": "user", "content": "hello"}]);
    let ok = s.post(
        "/v1/chat/completions",
        json!({"messages": user, "max_tokens": 40, "temperature": 0}),
    );
    let bad = s.post(
        "/v1/chat/completions",
        json!({"messages": user, "max_tokens": 40, "user": "frugal-fault-injection:panic"}),
    );
    let ((ok_status, ok_body), (bad_status, bad_body)) = tokio::join!(ok, bad);
    assert_eq!(ok_status, StatusCode::OK, "{ok_body}");
    assert_eq!(ok_body["usage"]["completion_tokens"], 40);
    assert_error(
        bad_status,
        &bad_body,
        StatusCode::INTERNAL_SERVER_ERROR,
        "panicked",
    );
    // Streamed: an error event, then [DONE].
    let chunks = s
        .stream(
            "/v1/chat/completions",
            json!({"messages": user, "max_tokens": 5, "stream": true,
                   "user": "frugal-fault-injection:panic"}),
        )
        .await;
    assert!(chunks.last().unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("panicked"));
    // The server goes on serving, and nothing leaked.
    let (status, again) = s
        .post(
            "/v1/chat/completions",
            json!({"messages": user, "max_tokens": 40, "temperature": 0}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["choices"], ok_body["choices"]);
    for _ in 0..100 {
        if s.metric("frugal_kv_blocks_used").await == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(s.metric("frugal_kv_blocks_used").await, 0.0);
    assert!(s.metric("frugal_requests_failed_total").await >= 2.0);
    s.shutdown().await;
}
