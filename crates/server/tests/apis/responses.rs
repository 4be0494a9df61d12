//! OpenAI's Responses API: the response object, its streamed events (assembled the way the
//! openai SDK assembles them), instructions, the length limit, structured output, a function-call
//! round trip, reasoning, conversations continued by `previous_response_id`, the stored
//! responses' GET and DELETE, and errors naming the field.

use crate::common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

const R1: &str = "templates/deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja";

/// The response a stream of events builds, as the SDK's `ResponseStreamState` builds it, checking
/// on the way: event names and `type`s agree, sequence numbers count from 0, the lifecycle
/// events come first and last, deltas go to the item (and part) announced last and each `done`
/// repeats what the deltas built. Returns the final event's response, checked against the
/// assembled items.
fn assemble(events: &[(String, Value)]) -> Value {
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names[..2],
        ["response.created", "response.in_progress"],
        "{names:?}"
    );
    let last = *names.last().unwrap();
    assert!(
        ["response.completed", "response.incomplete"].contains(&last),
        "{names:?}"
    );
    let created = &events[0].1["response"];
    assert_eq!(created["status"], "in_progress");
    assert_eq!(created["output"], json!([]));
    let mut output: Vec<Value> = Vec::new();
    for (i, (name, e)) in events.iter().enumerate() {
        assert_eq!(e["type"], name.as_str(), "{e}");
        assert_eq!(e["sequence_number"], i, "{e}");
        if name.starts_with("response.") && e.get("response").is_some() {
            assert_eq!(e["response"]["id"], created["id"]);
            continue;
        }
        apply(&mut output, name, e);
    }
    let fin = events.last().unwrap().1["response"].clone();
    assert_eq!(
        fin["output"],
        json!(output),
        "the final output is the assembled one"
    );
    fin
}

/// One item event, applied to the output so far.
fn apply(output: &mut Vec<Value>, name: &str, e: &Value) {
    let oi = e["output_index"].as_u64().unwrap() as usize;
    if name == "response.output_item.added" {
        assert_eq!(oi, output.len(), "items are added in order");
        output.push(e["item"].clone());
        return;
    }
    let item = &mut output[oi];
    assert_eq!(e.get("item_id").unwrap_or(&e["item"]["id"]), &item["id"]);
    let ci = e["content_index"].as_u64().unwrap_or(0) as usize;
    match name {
        "response.content_part.added" => {
            let parts = item["content"].as_array_mut().unwrap();
            assert_eq!(ci, parts.len());
            parts.push(e["part"].clone());
        }
        "response.output_text.delta" | "response.reasoning_text.delta" => {
            let want = if name.contains("output_text") {
                "message"
            } else {
                "reasoning"
            };
            assert_eq!(item["type"], want);
            append(&mut item["content"][ci]["text"], &e["delta"]);
        }
        "response.output_text.done" | "response.reasoning_text.done" => {
            assert_eq!(e["text"], item["content"][ci]["text"]);
        }
        "response.content_part.done" => assert_eq!(e["part"], item["content"][ci]),
        "response.function_call_arguments.delta" => append(&mut item["arguments"], &e["delta"]),
        "response.function_call_arguments.done" => assert_eq!(e["arguments"], item["arguments"]),
        "response.output_item.done" => {
            // The SDK keeps the item as `done` gives it; only the status may have moved on.
            let mut built = item.clone();
            if let Some(s) = e["item"].get("status") {
                built["status"] = s.clone();
            }
            assert_eq!(built, e["item"], "output_item.done repeats the item");
            *item = e["item"].clone();
        }
        other => panic!("unexpected event {other}: {e}"),
    }
}

fn append(into: &mut Value, more: &Value) {
    *into = json!(format!(
        "{}{}",
        into.as_str().unwrap(),
        more.as_str().unwrap()
    ));
}

/// A response without what differs between two requests for the same answer: ids, the time,
/// and how much of the prompt the prefix cache held.
fn comparable(r: &Value) -> Value {
    let mut r = r.clone();
    r["id"] = json!("resp");
    r["created_at"] = json!(0);
    r["usage"]["input_tokens_details"] = json!(null);
    for item in r["output"].as_array_mut().unwrap() {
        item["id"] = json!("item");
        if item.get("call_id").is_some() {
            item["call_id"] = json!("call");
        }
    }
    r
}

async fn create(s: &Running, body: Value) -> Value {
    let (status, r) = s.post("/v1/responses", body).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    r
}

/// A greedy request, plain and streamed: the same response both ways.
async fn both(s: &Running, body: Value) -> Value {
    let plain = create(s, body.clone()).await;
    let mut streamed_body = body;
    streamed_body["stream"] = json!(true);
    let events = s.named_events("/v1/responses", streamed_body).await;
    let streamed = assemble(&events);
    assert_eq!(
        comparable(&streamed),
        comparable(&plain),
        "streamed and plain responses differ"
    );
    plain
}

fn text_of(r: &Value) -> String {
    let message = r["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "message")
        .unwrap_or_else(|| panic!("no message item: {r}"));
    message["content"][0]["text"].as_str().unwrap().to_string()
}

fn usage(r: &Value, k: &str) -> u64 {
    r["usage"][k].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_plain_streamed_incomplete_and_instructed() {
    let s = start(|_| {}).await;
    let body = json!({"model": "gpt-4.1", "input": "Hello", "max_output_tokens": 6,
        "temperature": 0, "metadata": {"trace": "t1"}});
    let r = both(&s, body.clone()).await;
    assert!(r["id"].as_str().unwrap().starts_with("resp_"), "{r}");
    assert_eq!(r["object"], "response");
    assert_eq!(
        r["model"], "qwen2-Q8_0",
        "the response names the served model"
    );
    assert_eq!(r["metadata"], json!({"trace": "t1"}));
    assert_eq!(r["error"], Value::Null);
    assert_eq!(
        (r["temperature"].as_f64(), &r["max_output_tokens"]),
        (Some(0.0), &json!(6))
    );
    let m = &r["output"][0];
    assert_eq!(m["type"], "message");
    assert_eq!(m["role"], "assistant");
    assert!(m["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(m["content"][0]["type"], "output_text");
    assert_eq!(m["content"][0]["annotations"], json!([]));
    let (input, out) = (usage(&r, "input_tokens"), usage(&r, "output_tokens"));
    assert_eq!(usage(&r, "total_tokens"), input + out);
    assert_eq!(r["usage"]["output_tokens_details"]["reasoning_tokens"], 0);

    // The length limit: an incomplete response, the message marked so.
    let mut cut = body.clone();
    cut["max_output_tokens"] = json!(2);
    let r = both(&s, cut).await;
    assert_eq!(r["status"], "incomplete", "{r}");
    assert_eq!(
        r["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    assert_eq!(r["output"][0]["status"], "incomplete");
    assert_eq!(usage(&r, "output_tokens"), 2);
    let events = {
        let mut b = body.clone();
        b["max_output_tokens"] = json!(2);
        b["stream"] = json!(true);
        s.named_events("/responses", b).await
    };
    assert_eq!(
        events.last().unwrap().0,
        "response.incomplete",
        "without /v1 too"
    );

    // Instructions come first in the prompt, and are repeated in the response.
    let mut instructed = body;
    instructed["instructions"] = json!("Answer in one short sentence, politely.");
    let r = both(&s, instructed).await;
    assert_eq!(r["instructions"], "Answer in one short sentence, politely.");
    assert!(usage(&r, "input_tokens") > input + 5, "{r}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_continue_by_previous_response_id() {
    let s = start(|cfg| cfg.block_size = 16).await;
    let instructions = "You are a terse assistant. Remember every name you are told, and repeat \
                        it exactly when asked. Never answer with more than a few words.";
    let first = create(
        &s,
        json!({"input": "My name is Ann.", "instructions": instructions,
        "max_output_tokens": 4, "temperature": 0}),
    )
    .await;
    let id = first["id"].as_str().unwrap();
    let body = json!({"input": [{"role": "user", "content": [{"type": "input_text", "text": "My name?"}]}],
        "previous_response_id": id, "instructions": instructions,
        "max_output_tokens": 4, "temperature": 0});
    let second = both(&s, body).await;
    assert_eq!(second["previous_response_id"], id);
    // The whole conversation is in the prompt, and its start came from the prefix cache.
    let grown = usage(&first, "input_tokens") + usage(&first, "output_tokens");
    assert!(usage(&second, "input_tokens") >= grown, "{first}\n{second}");
    let cached = second["usage"]["input_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(
        cached >= 16,
        "the first prompt's blocks are reused: {second}"
    );

    // The same conversation sent whole renders the same prompt.
    let mut whole = vec![json!({"role": "user", "content": "My name is Ann."})];
    whole.extend(first["output"].as_array().unwrap().iter().cloned());
    whole.push(json!({"type": "message", "role": "user", "content": "My name?"}));
    let r = create(
        &s,
        json!({"input": whole, "instructions": instructions,
        "max_output_tokens": 4, "temperature": 0}),
    )
    .await;
    assert_eq!(usage(&r, "input_tokens"), usage(&second, "input_tokens"));
    assert_eq!(text_of(&r), text_of(&second));

    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_responses_are_read_deleted_and_streamed_ones_stored() {
    let s = start(|_| {}).await;
    let first = create(&s, json!({"input": "Hi", "max_output_tokens": 3})).await;
    let id = first["id"].as_str().unwrap();
    // GET returns the stored response; DELETE forgets it.
    let (status, got) = s.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_str::<Value>(&got).unwrap(), first);
    let r = s
        .client
        .delete(s.url(&format!("/v1/responses/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let deleted: Value = r.json().await.unwrap();
    assert_eq!(
        deleted,
        json!({"id": id, "object": "response.deleted", "deleted": true})
    );
    let (status, e) = s.get(&format!("/responses/{id}")).await;
    assert_error(
        status,
        &serde_json::from_str(&e).unwrap(),
        StatusCode::NOT_FOUND,
        id,
    );
    let r = s
        .client
        .delete(s.url(&format!("/v1/responses/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let (status, e) = s
        .post(
            "/v1/responses",
            json!({"input": "x", "previous_response_id": id}),
        )
        .await;
    assert_error(status, &e, StatusCode::NOT_FOUND, id);
    assert_eq!(e["error"]["param"], "previous_response_id");

    // `store: false` keeps nothing; a streamed response is stored as it completed.
    let r = create(
        &s,
        json!({"input": "x", "max_output_tokens": 2, "store": false}),
    )
    .await;
    assert_eq!(r["store"], false);
    let (status, _) = s
        .get(&format!("/v1/responses/{}", r["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let events = s
        .named_events(
            "/v1/responses",
            json!({"input": "y", "max_output_tokens": 2, "stream": true}),
        )
        .await;
    let done = &events.last().unwrap().1["response"];
    let (status, got) = s
        .get(&format!("/v1/responses/{}", done["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&serde_json::from_str::<Value>(&got).unwrap(), done);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_model_cannot_serve_are_400s_naming_the_field() {
    let s = start(|_| {}).await;
    for (body, param) in [
        (json!({"model": "m"}), "input"),
        (
            json!({"input": "x", "tools": [{"type": "web_search_preview"}]}),
            "tools[0].type",
        ),
        (
            json!({"input": [{"role": "user", "content": [
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "image_url": "https://example.com/a.png"}]}]}),
            "input[0].content[1]",
        ),
        (
            json!({"input": "x", "text": {"format": {"type": "xml"}}}),
            "text.format.type",
        ),
        (
            json!({"input": "x", "max_output_tokens": 0}),
            "max_output_tokens",
        ),
        (json!({"input": "x", "temperature": "hot"}), "temperature"),
        (
            json!({"input": "x", "reasoning": {"effort": "extreme"}}),
            "reasoning.effort",
        ),
        (
            json!({"input": "x", "previous_response_id": 7}),
            "previous_response_id",
        ),
    ] {
        let (status, e) = s.post("/v1/responses", body.clone()).await;
        assert_error(status, &e, StatusCode::BAD_REQUEST, "");
        assert_eq!(e["error"]["param"], param, "{body}: {e}");
    }
    let (status, e) = s.get("/v1/responses/resp_unknown").await;
    assert_error(
        status,
        &serde_json::from_str(&e).unwrap(),
        StatusCode::NOT_FOUND,
        "resp_unknown",
    );
    s.shutdown().await;
}

fn weather_tool() -> Value {
    json!([{"type": "function", "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
                       "required": ["city"], "additionalProperties": false},
        "strict": true}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_call_round_trip_on_a_tool_template() {
    let s = start(with_template("templates/Qwen-Qwen3-0.6B.jinja")).await;
    let body = json!({"input": "Weather in Paris?", "max_output_tokens": 60, "temperature": 0,
        "tools": weather_tool(), "tool_choice": {"type": "function", "name": "get_weather"},
        "reasoning": {"effort": "none"}});
    let r = both(&s, body).await;
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(r["tools"], weather_tool(), "tools are repeated as given");
    let calls: Vec<&Value> = r["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "function_call")
        .collect();
    assert!(!calls.is_empty(), "{r}");
    let call = calls[0];
    assert!(call["id"].as_str().unwrap().starts_with("fc_"));
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["status"], "completed");
    let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string(), "{call}");

    // The result goes back by previous_response_id, or with the whole conversation.
    let result = json!({"type": "function_call_output", "call_id": call["call_id"], "output": "18 C, cloudy"});
    let next = create(
        &s,
        json!({"previous_response_id": r["id"], "input": [result],
        "tools": weather_tool(), "max_output_tokens": 8, "temperature": 0}),
    )
    .await;
    let mut whole = vec![json!({"role": "user", "content": "Weather in Paris?"})];
    whole.extend(r["output"].as_array().unwrap().iter().cloned());
    whole.push(result);
    let again = create(
        &s,
        json!({"input": whole, "tools": weather_tool(),
        "max_output_tokens": 8, "temperature": 0}),
    )
    .await;
    assert_eq!(usage(&next, "input_tokens"), usage(&again, "input_tokens"));
    assert!(usage(&next, "input_tokens") > usage(&r, "input_tokens"));
    assert_eq!(comparable(&next)["output"], comparable(&again)["output"]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasoning_items_and_json_schema_output_on_a_reasoning_template() {
    let s = start(with_template(R1)).await;
    // The template opens `<think>`: a reasoning item first, then the answer.
    let body = json!({"input": "Why is the sky blue?", "max_output_tokens": 40, "temperature": 0,
        "reasoning": {"effort": "low"}, "max_reasoning_tokens": 8});
    let r = both(&s, body).await;
    let item = &r["output"][0];
    assert_eq!(item["type"], "reasoning", "{r}");
    assert!(item["id"].as_str().unwrap().starts_with("rs_"));
    assert_eq!(item["summary"], json!([]));
    assert_eq!(item["content"][0]["type"], "reasoning_text");
    assert!(!item["content"][0]["text"].as_str().unwrap().is_empty());
    assert_eq!(r["output"][1]["type"], "message");
    assert_eq!(r["reasoning"]["effort"], "low");
    let reasoned = r["usage"]["output_tokens_details"]["reasoning_tokens"]
        .as_u64()
        .unwrap();
    assert!((1..=8).contains(&reasoned), "{r}");

    // `effort: none` closes the block at once: no reasoning item. The schema holds the answer.
    let schema = json!({"type": "object", "properties": {"name": {"type": "string", "maxLength": 10},
        "age": {"type": "integer", "minimum": 0}}, "required": ["name", "age"], "additionalProperties": false});
    let body = json!({"input": "A person, please.", "max_output_tokens": 120, "temperature": 0,
        "reasoning": {"effort": "none"},
        "text": {"format": {"type": "json_schema", "name": "person", "schema": schema, "strict": true}}});
    let r = both(&s, body).await;
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(r["output"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["text"]["format"]["name"], "person");
    let doc: Value =
        serde_json::from_str(text_of(&r).trim()).unwrap_or_else(|e| panic!("{e}: {r}"));
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(validator.is_valid(&doc), "{doc} does not match the schema");
    s.shutdown().await;
}
