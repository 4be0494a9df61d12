//! Request semantics: conversations sent back the way the openai SDK and LangChain send them,
//! content the model cannot take, tools on templates that cannot render them (the generic
//! JSON format), and schema errors as 400s naming the field.

mod common;

use common::*;
use frugal_chat::ChatTemplate;
use frugal_server::api::{parse_body, render_prompt, ChatRequest};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn tools() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                       "required": ["city"], "additionalProperties": false}}},
        {"type": "function", "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 20}},
                       "required": ["zone"], "additionalProperties": false}}}])
}

/// `messages.append(resp.choices[0].message)` with the openai SDK, then the tool result.
fn sdk_round_trip() -> Value {
    json!([
        {"role": "system", "content": "You are a weather bot."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "refusal": null, "audio": null, "function_call": null,
         "tool_calls": [{"id": "call_0", "type": "function",
                         "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": "18 C, cloudy"},
        {"role": "assistant", "content": "It is 18 C and cloudy.", "tool_calls": null},
        {"role": "user", "content": "And the time?"}
    ])
}

/// LangChain's shapes: text parts, an assistant message without `content`, parallel calls.
fn langchain_round_trip() -> Value {
    json!([
        {"role": "user", "content": [{"type": "text", "text": "Weather and time in Paris?"}]},
        {"role": "assistant", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
            {"id": "b", "type": "function", "function": {"name": "get_time", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "a", "content": [{"type": "text", "text": "18 C"}]},
        {"role": "tool", "tool_call_id": "b", "content": "14:05"},
        {"role": "user", "content": "Thanks"}
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_round_trips_are_accepted_on_every_kind_of_template() {
    for template in [
        "templates/Qwen-Qwen3-0.6B.jinja",
        "templates/Qwen-QwQ-32B.jinja",
        "templates/deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
    ] {
        let s = start(with_template(template)).await;
        for messages in [sdk_round_trip(), langchain_round_trip()] {
            let body = json!({"messages": messages, "tools": tools(), "max_tokens": 4});
            let (status, v) = s.post("/v1/chat/completions", body).await;
            assert_eq!(status, StatusCode::OK, "{template}: {v}");
        }
        s.shutdown().await;
    }
    // The fixture's own (ChatML) template, which renders no tools.
    let s = start(|cfg| cfg.ctx_size = Some(1024)).await;
    for messages in [sdk_round_trip(), langchain_round_trip()] {
        let body = json!({"messages": messages, "tools": tools(), "max_tokens": 4});
        let (status, v) = s.post("/v1/chat/completions", body).await;
        assert_eq!(status, StatusCode::OK, "chatml: {v}");
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_text_content_is_refused_naming_the_part() {
    let s = start(|_| {}).await;
    let parts = [
        (
            json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}),
            "image_url",
        ),
        (
            json!({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}),
            "input_audio",
        ),
        (json!({"type": "file", "file": {"file_id": "f"}}), "file"),
        (json!({"type": "hologram"}), "hologram"),
    ];
    for (part, kind) in parts {
        let body = json!({"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [part, {"type": "text", "text": "What is this?"}]}]});
        let (status, v) = s.post("/v1/chat/completions", body).await;
        assert_error(status, &v, StatusCode::BAD_REQUEST, kind);
        assert_eq!(v["error"]["param"], "messages[1].content[0]", "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    let body = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]});
    let (status, v) = s.post("/v1/chat/completions", body).await;
    assert_error(status, &v, StatusCode::BAD_REQUEST, "text");
    assert_eq!(v["error"]["param"], "messages[0].content[0].text");
    s.shutdown().await;
}

fn request(body: Value) -> ChatRequest {
    parse_body(body.to_string().as_bytes()).unwrap()
}

#[test]
fn the_generic_format_puts_tools_and_earlier_calls_in_the_prompt() {
    let chatml = ChatTemplate::chatml();
    let prompt = render_prompt(
        &chatml,
        &request(json!({"messages": sdk_round_trip(), "tools": tools()})),
    )
    .unwrap();
    let system = "<|im_start|>system\nYou are a weather bot.\n\nYou can call the following tools.";
    assert!(prompt.starts_with(system), "{prompt}");
    assert!(prompt.contains("\"name\": \"get_time\""), "{prompt}");
    assert!(prompt.contains("{\"tool_calls\": [{\"name\": <tool name>"));
    assert!(prompt.contains(
        "<|im_start|>assistant\n{\"tool_calls\": [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]}<|im_end|>"
    ), "{prompt}");
    assert!(prompt.contains(
        "<|im_start|>user\n{\"tool_response\": {\"tool_call_id\": \"call_0\", \"content\": \"18 C, cloudy\"}}<|im_end|>"
    ), "{prompt}");
    // `tool_choice: none`: no tools, as if none were sent.
    let none = render_prompt(
        &chatml,
        &request(json!({"messages": [{"role": "user", "content": "hi"}], "tools": tools(), "tool_choice": "none"})),
    )
    .unwrap();
    assert_eq!(
        none,
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    );
    // A template that renders tools gets them as they are.
    let qwen3 =
        std::fs::read_to_string(frugal_fixtures::dir().join("templates/Qwen-Qwen3-0.6B.jinja"))
            .unwrap();
    let qwen3 = ChatTemplate::new(&qwen3, None, Some("<|im_end|>"), None).unwrap();
    let p = render_prompt(
        &qwen3,
        &request(json!({"messages": sdk_round_trip(), "tools": tools()})),
    )
    .unwrap();
    assert!(
        p.contains("<tools>") && !p.contains("You can call the following tools"),
        "{p}"
    );
}

fn validate(schema: &Value, doc: &Value) {
    let v = jsonschema::validator_for(schema).unwrap();
    let errors: Vec<String> = v.iter_errors(doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{doc} does not validate: {errors:?}");
}

/// The one tool call of a streamed answer: name, arguments, finish reason.
async fn streamed_call(s: &Running, body: Value) -> (String, String, String) {
    let chunks = s.stream("/v1/chat/completions", body).await;
    let (mut name, mut args, mut finish) = (String::new(), String::new(), String::new());
    for c in &chunks {
        let Some(ch) = c["choices"].get(0) else {
            continue;
        };
        for tc in ch["delta"]["tool_calls"].as_array().into_iter().flatten() {
            assert_eq!(tc["index"], 0, "{c}");
            name.push_str(tc["function"]["name"].as_str().unwrap_or_default());
            args.push_str(tc["function"]["arguments"].as_str().unwrap_or_default());
        }
        if let Some(f) = ch["finish_reason"].as_str() {
            finish = f.to_string();
        }
    }
    (name, args, finish)
}

/// The one tool call of an answer in one body: name, arguments, finish reason.
async fn one_call(s: &Running, body: Value) -> (String, String, String) {
    let (status, v) = s.post("/v1/chat/completions", body).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let m = &v["choices"][0]["message"];
    let calls = m["tool_calls"]
        .as_array()
        .unwrap_or_else(|| panic!("no calls: {v}"));
    assert_eq!(calls.len(), 1, "{v}");
    assert!(m["content"].is_null() || m["content"] == "", "{v}");
    let f = &calls[0]["function"];
    let finish = v["choices"][0]["finish_reason"].as_str().unwrap();
    (
        f["name"].as_str().unwrap().to_string(),
        f["arguments"].as_str().unwrap().to_string(),
        finish.to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_on_a_template_without_tools_come_back_as_tool_calls() {
    let s = start(|cfg| cfg.ctx_size = Some(1024)).await;
    let tools = tools();
    let choices = [
        json!("required"),
        json!({"type": "function", "function": {"name": "get_time"}}),
    ];
    for choice in &choices {
        for (seed, stream) in [(1, false), (2, true), (3, false)] {
            let body = json!({"messages": [{"role": "user", "content": "Weather in Paris?"}],
                "tools": tools, "tool_choice": choice, "max_tokens": 200, "seed": seed,
                "stream": stream});
            let (name, args, finish) = if stream {
                streamed_call(&s, body).await
            } else {
                one_call(&s, body).await
            };
            let ctx = format!("{choice} seed {seed} stream {stream}");
            assert_eq!(finish, "tool_calls", "{ctx}");
            if let Some(want) = choice["function"]["name"].as_str() {
                assert_eq!(name, want, "{ctx}");
            }
            let tool = tools
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["function"]["name"] == name.as_str());
            let tool = tool.unwrap_or_else(|| panic!("{ctx}: unknown tool {name:?}"));
            let args: Value =
                serde_json::from_str(&args).unwrap_or_else(|e| panic!("{ctx}: {e}: {args}"));
            validate(&tool["function"]["parameters"], &args);
        }
    }
    // `auto`: a call or an answer, never the JSON wrapper as content.
    for seed in 1..4 {
        let body = json!({"messages": [{"role": "user", "content": "Hi"}], "tools": tools,
            "max_tokens": 120, "seed": seed});
        let (status, v) = s.post("/v1/chat/completions", body).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let m = &v["choices"][0]["message"];
        let content = m["content"].as_str().unwrap_or_default();
        assert!(!content.starts_with("{\"response\""), "{v}");
        if v["choices"][0]["finish_reason"] == "tool_calls" {
            assert!(!m["tool_calls"].as_array().unwrap().is_empty(), "{v}");
        }
    }
    // A text response streams the same text as it is generated.
    for seed in 1..4 {
        let body = json!({"messages": [{"role": "user", "content": "Hi"}], "tools": tools,
            "max_tokens": 60, "temperature": 0, "seed": seed,
            "response_format": {"type": "text"}});
        let (status, v) = s.post("/v1/chat/completions", body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let mut streamed = String::new();
        let mut streamed_calls = 0;
        let mut body = body;
        body["stream"] = json!(true);
        for c in s.stream("/v1/chat/completions", body).await {
            if let Some(ch) = c["choices"].get(0) {
                streamed.push_str(ch["delta"]["content"].as_str().unwrap_or_default());
                streamed_calls += ch["delta"]["tool_calls"].as_array().map_or(0, Vec::len);
            }
        }
        let m = &v["choices"][0]["message"];
        assert_eq!(streamed, m["content"].as_str().unwrap_or_default(), "{v}");
        if m["tool_calls"].is_array() {
            assert!(streamed_calls > 0, "{v}");
        }
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_and_tool_errors_are_400_naming_the_field() {
    let s = start(with_template("templates/Qwen-Qwen3-0.6B.jinja")).await;
    let user = json!([{"role": "user", "content": "hi"}]);
    let bad_schemas = [
        json!({"$ref": "#/$defs/n", "$defs": {"n": {"type": "object",
            "properties": {"next": {"$ref": "#/$defs/n"}}, "required": ["next"]}}}),
        json!({"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}}),
        json!({"type": "string", "pattern": "^a{1000000}$"}),
    ];
    let good = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
    let tool = |name: Value, params: &Value| json!({"type": "function", "function": {"name": name, "parameters": params}});
    let mut cases = Vec::new();
    for schema in &bad_schemas {
        cases.push((
            json!({"messages": user, "response_format": {"type": "json_schema",
                "json_schema": {"name": "x", "schema": schema}}}),
            "response_format.json_schema.schema",
        ));
        cases.push((
            json!({"messages": user, "tool_choice": "required", "tools": [
                tool(json!("a"), &good), tool(json!("b"), &good), tool(json!("c"), schema)]}),
            "tools[2].function.parameters",
        ));
    }
    cases.push((
        json!({"messages": user, "tools": [tool(json!("a"), &good), tool(json!("b"), &good), tool(json!(null), &good)]}),
        "tools[2].function.name",
    ));
    cases.push((
        json!({"messages": user, "tools": [tool(json!("a"), &good)],
               "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
        "tool_choice",
    ));
    cases.push((
        json!({"messages": user, "tools": [tool(json!("a"), &good)], "tool_choice": "sometimes"}),
        "tool_choice",
    ));
    for (body, param) in cases {
        let t = std::time::Instant::now();
        let (status, v) = s.post("/v1/chat/completions", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["error"]["param"], param, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            !msg.contains('\n') && !msg.contains("<state>") && msg.len() < 600,
            "{msg}"
        );
        assert!(t.elapsed().as_secs() < 5, "{body}: took {:?}", t.elapsed());
    }
    // The server is fine afterwards.
    let (status, v) = s
        .post(
            "/v1/chat/completions",
            json!({"messages": user, "max_tokens": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    s.shutdown().await;
}
