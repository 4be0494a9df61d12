//! Anthropic's Messages API: the message, its streamed events, token counting, errors and
//! authentication in Anthropic's shapes, stop sequences, tool round trips and thinking.

use crate::common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The text of a streamed message, checking the event grammar on the way: `message_start`,
/// `ping`, then blocks opened, filled and closed in index order, `message_delta`,
/// `message_stop`. Returns the message as the events build it.
fn assemble(events: &[(String, Value)]) -> Value {
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[..2], ["message_start", "ping"], "{names:?}");
    assert_eq!(names[names.len() - 2..], ["message_delta", "message_stop"]);
    let mut message = events[0].1["message"].clone();
    assert_eq!(message["content"], json!([]));
    let mut blocks: Vec<Value> = Vec::new();
    let mut open = None;
    for (name, e) in events {
        assert_eq!(e["type"], name.as_str(), "{e}");
        match name.as_str() {
            "content_block_start" => {
                assert_eq!(open, None, "a block opened inside another");
                assert_eq!(e["index"], blocks.len());
                open = Some(blocks.len());
                let mut b = e["content_block"].clone();
                if b["type"] == "tool_use" {
                    b["partial"] = json!("");
                }
                blocks.push(b);
            }
            "content_block_delta" => {
                let i = e["index"].as_u64().unwrap() as usize;
                assert_eq!(open, Some(i));
                let d = &e["delta"];
                let b = &mut blocks[i];
                match d["type"].as_str().unwrap() {
                    "text_delta" => append(&mut b["text"], &d["text"]),
                    "thinking_delta" => append(&mut b["thinking"], &d["thinking"]),
                    "input_json_delta" => append(&mut b["partial"], &d["partial_json"]),
                    "signature_delta" => assert_eq!(b["type"], "thinking"),
                    other => panic!("unknown delta {other}"),
                }
            }
            "content_block_stop" => {
                assert_eq!(open, e["index"].as_u64().map(|i| i as usize));
                open = None;
            }
            "message_delta" => {
                assert_eq!(open, None);
                message["stop_reason"] = e["delta"]["stop_reason"].clone();
                message["stop_sequence"] = e["delta"]["stop_sequence"].clone();
                message["usage"] = e["usage"].clone();
            }
            _ => {}
        }
    }
    for b in &mut blocks {
        if let Some(p) = b.as_object_mut().unwrap().remove("partial") {
            b["input"] = serde_json::from_str(p.as_str().unwrap()).expect("input JSON");
        }
        if b["type"] == "thinking" {
            b["signature"] = json!("");
        }
    }
    message["content"] = Value::Array(blocks);
    message
}

fn append(into: &mut Value, more: &Value) {
    *into = json!(format!(
        "{}{}",
        into.as_str().unwrap(),
        more.as_str().unwrap()
    ));
}

/// A greedy request, plain and streamed: the same message both ways.
async fn both(s: &Running, body: Value) -> Value {
    let (status, plain) = s.post("/v1/messages", body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{plain}");
    let mut streamed_body = body;
    streamed_body["stream"] = json!(true);
    let events = s.named_events("/v1/messages", streamed_body).await;
    let mut streamed = assemble(&events);
    // Ids differ between two requests (the message's, the tool calls'); the rest must not.
    streamed["id"] = plain["id"].clone();
    let n = plain["content"].as_array().unwrap().len();
    for i in 0..n.min(streamed["content"].as_array().unwrap().len()) {
        if plain["content"][i]["type"] == "tool_use" {
            streamed["content"][i]["id"] = plain["content"][i]["id"].clone();
        }
    }
    let mut p = plain.clone();
    // The second request reads its prompt from the prefix cache.
    for m in [&mut p, &mut streamed] {
        m["usage"] = json!(
            m["usage"]["input_tokens"].as_u64().unwrap()
                + m["usage"]["cache_read_input_tokens"].as_u64().unwrap()
        );
    }
    assert_eq!(streamed, p, "streamed and plain messages differ");
    plain
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_stream_and_count_tokens() {
    let s = start(|_| {}).await;
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 6, "temperature": 0,
        "system": "Be brief.", "metadata": {"user_id": "u1"},
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]});
    let m = both(&s, body.clone()).await;
    assert_eq!(m["type"], "message");
    assert_eq!(m["role"], "assistant");
    assert_eq!(
        m["model"], "qwen2-Q8_0",
        "the response names the served model"
    );
    assert!(m["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(m["content"][0]["type"], "text");
    assert!(["end_turn", "max_tokens"].contains(&m["stop_reason"].as_str().unwrap()));
    let (status, counted) = s.post("/v1/messages/count_tokens", body).await;
    assert_eq!(status, StatusCode::OK, "{counted}");
    let n = counted["input_tokens"].as_u64().unwrap();
    assert!(n > 0);
    assert_eq!(counted.as_object().unwrap().len(), 1);
    // Without the /v1 prefix, as llama.cpp-style clients send it.
    let (status, _) = s
        .post(
            "/messages/count_tokens",
            json!({"messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // A stop sequence taken from the greedy answer ends it there.
    let free = json!({"max_tokens": 16, "temperature": 0,
        "messages": [{"role": "user", "content": "Hi"}]});
    let (_, m) = s.post("/v1/messages", free.clone()).await;
    let text = m["content"][0]["text"].as_str().unwrap().to_string();
    if let Some((cut, _)) = text.char_indices().nth(3) {
        let stop: String = text[cut..].chars().take(2).collect();
        let mut body = free;
        body["stop_sequences"] = json!([stop.clone()]);
        let m = both(&s, body).await;
        assert_eq!(m["stop_reason"], "stop_sequence", "{m}");
        assert_eq!(m["stop_sequence"], stop.as_str());
        assert_eq!(m["content"][0]["text"], &text[..text.find(&stop).unwrap()]);
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_keys_take_anthropic_shapes() {
    let s = start(|cfg| cfg.api_keys = vec!["sk-ant-test".into()]).await;
    let body = json!({"max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]});
    let send = |headers: Vec<(&'static str, &'static str)>, body: Value| {
        let mut r = s.client.post(s.url("/v1/messages")).json(&body);
        for (k, v) in headers {
            r = r.header(k, v);
        }
        async move {
            let r = r.send().await.unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let (status, e) = send(vec![("x-api-key", "wrong")], body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "authentication_error");
    let key = vec![
        ("x-api-key", "sk-ant-test"),
        ("anthropic-version", "2023-06-01"),
    ];
    let (status, m) = send(key.clone(), body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    // A missing max_tokens, an image, an unknown role: 400s naming the field.
    for (body, needle) in [
        (
            json!({"messages": [{"role": "user", "content": "Hi"}]}),
            "max_tokens",
        ),
        (
            json!({"max_tokens": 4, "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}}]}]}),
            "image input is not supported",
        ),
        (
            json!({"max_tokens": 4, "messages": [{"role": "system", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"max_tokens": 4, "temperature": "hot", "messages": [{"role": "user", "content": "x"}]}),
            "temperature",
        ),
        (
            json!({"max_tokens": 4, "stop_sequences": ["a", 3], "messages": [{"role": "user", "content": "x"}]}),
            "'stop_sequences' must be an array of strings",
        ),
        (
            json!({"max_tokens": 4, "stop_sequences": "END", "messages": [{"role": "user", "content": "x"}]}),
            "'stop_sequences' must be an array of strings",
        ),
    ] {
        let (status, e) = send(key.clone(), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
        assert_eq!(e["error"]["type"], "invalid_request_error");
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{msg}");
    }
    s.shutdown().await;
}

fn weather_tool() -> Value {
    json!([{"name": "get_weather", "description": "Current weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
                         "required": ["city"], "additionalProperties": false}}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_round_trip_and_thinking_on_a_reasoning_template() {
    let s = start(with_template("templates/Qwen-Qwen3-0.6B.jinja")).await;
    let user = json!({"role": "user", "content": "Weather in Paris?"});
    let body = json!({"max_tokens": 60, "temperature": 0, "messages": [user],
        "tools": weather_tool(), "tool_choice": {"type": "tool", "name": "get_weather"},
        "thinking": {"type": "disabled"}});
    let m = both(&s, body).await;
    assert_eq!(m["stop_reason"], "tool_use", "{m}");
    let call = m["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "tool_use")
        .expect("a tool_use block")
        .clone();
    assert_eq!(call["name"], "get_weather");
    assert!(call["input"]["city"].is_string(), "{call}");

    // The SDK's round trip: the assistant message as it came, then the tool's result.
    let body = json!({"max_tokens": 8, "messages": [user,
        {"role": "assistant", "content": m["content"]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"],
                                      "content": "18 C, cloudy"}]}],
        "tools": weather_tool()});
    let (status, m) = s.post("/v1/messages", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");

    s.shutdown().await;

    // Thinking with a budget, on a template that opens the block in the prompt: a thinking
    // block first, then the answer.
    let s = start(with_template(
        "templates/deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
    ))
    .await;
    let body = json!({"max_tokens": 40, "temperature": 0,
        "thinking": {"type": "enabled", "budget_tokens": 8},
        "messages": [{"role": "user", "content": "Why is the sky blue?"}]});
    let m = both(&s, body).await;
    assert_eq!(m["content"][0]["type"], "thinking", "{m}");
    assert!(!m["content"][0]["thinking"].as_str().unwrap().is_empty());
    s.shutdown().await;
}
