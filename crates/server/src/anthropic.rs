//! Anthropic's Messages API (`POST /v1/messages`, `POST /v1/messages/count_tokens`), as coding
//! agents speak it to local models: the request is translated into the chat request the OpenAI
//! endpoint takes (so templates, reasoning, tools and constraints are the same code), and the
//! answer back into Anthropic's message, its streamed events and its error shape.

use crate::api::{parse_body, ChatRequest, Common};
use crate::error::ApiError;
use crate::jobs::{self, Answer, Choice, Prompt, Update};
use crate::request_id::RequestId;
use crate::routes::{model_of, prepare_chat_request, request_id, RequestBody};
use crate::sse::{sse_response, SseSink};
use crate::worker::Done;
use crate::AppState;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use frugal_engine::FinishReason;
use frugal_output::{OutputDelta, ParsedMessage};
use serde_json::{json, Map, Value};
use std::sync::Arc;

type Shared = State<Arc<AppState>>;

/// An [`ApiError`] in Anthropic's shape: `{"type":"error","error":{"type","message"}}`.
pub struct AnthropicError(pub ApiError);

impl From<ApiError> for AnthropicError {
    fn from(e: ApiError) -> Self {
        AnthropicError(e)
    }
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let body = error_body(&self.0);
        let mut r = self.0.into_response();
        let json = axum::Json(body).into_response();
        *r.body_mut() = json.into_body();
        r
    }
}

/// Anthropic's error object for an error of ours, its type following the status.
pub fn error_body(e: &ApiError) -> Value {
    let kind = match e.status.as_u16() {
        400 | 405 | 408 | 415 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 => "overloaded_error",
        _ => "api_error",
    };
    let message = match &e.param {
        Some(p) if !e.message.contains(p.as_str()) => format!("{p}: {}", e.message),
        _ => e.message.clone(),
    };
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// `POST /v1/messages`.
pub async fn messages(
    State(app): Shared,
    Extension(request): Extension<RequestId>,
    RequestBody(b): RequestBody,
) -> Result<Response, AnthropicError> {
    let st = model_of(&app, &b).await?;
    let (gen, _, tokens, output) = crate::prep::offload(&st, move |st| {
        let (req, common) = chat_request(&b, true)?;
        prepare_chat_request(st, &req, &common)
    })
    .await??;
    let prompts = [Prompt { tokens, echo: None }];
    let id = format!("msg_{}", request_id());
    let mut choices = jobs::submit(&st, &request.0, &prompts, &gen, None, Some(&output)).await?;
    let choice = choices.pop().expect("one prompt, one choice");
    let model = st.model_id.clone();
    if gen.stream {
        let head = message_head(&id, &model, prompts[0].tokens.len());
        let timeout = st.cfg.write_timeout;
        return Ok(sse_response(id, timeout, move |sink| {
            stream_message(sink, head, choice)
        }));
    }
    let called_tools = choice.called_tools;
    let answer = choice.collect().await?;
    Ok(axum::Json(message(&id, &model, answer, called_tools)).into_response())
}

/// `POST /v1/messages/count_tokens`: the prompt's tokens, as the template renders it.
pub async fn count_tokens(
    State(app): Shared,
    RequestBody(b): RequestBody,
) -> Result<Response, AnthropicError> {
    let st = model_of(&app, &b).await?;
    let n = crate::prep::offload(&st, move |st| {
        let (req, _) = chat_request(&b, false)?;
        let rendered = crate::chat::render(st, &req)?;
        Ok::<_, ApiError>(crate::routes::tokenize(st, &rendered, false)?.len())
    })
    .await??;
    Ok(axum::Json(json!({"input_tokens": n})).into_response())
}

/// A Messages request as the chat request and common fields the OpenAI endpoint parses.
fn chat_request(b: &[u8], generate: bool) -> Result<(ChatRequest, Common), ApiError> {
    let body: Map<String, Value> = parse_body(b)?;
    let chat = to_chat(&body, generate)?;
    // Anthropic's fields keep their names in the chat request (`max_tokens`, `temperature`, …).
    let req = crate::api::from_value(chat.clone(), &str::to_string)?;
    let common = crate::api::from_value(chat, &str::to_string)?;
    Ok((req, common))
}

/// The OpenAI chat body for a Messages body. `generate`: a request that generates (which needs
/// `max_tokens`), not a token count.
pub fn to_chat(body: &Map<String, Value>, generate: bool) -> Result<Value, ApiError> {
    let field = |k: &str| body.get(k).filter(|v| !v.is_null());
    let mut out = Map::new();
    let mut messages = Vec::new();
    if let Some(system) = field("system") {
        messages.push(json!({"role": "system", "content": text_of(system, "system")?}));
    }
    let Some(Value::Array(msgs)) = field("messages") else {
        return Err(ApiError::invalid_param(
            "messages",
            "'messages' is required and must be a list.",
        ));
    };
    for (i, m) in msgs.iter().enumerate() {
        messages.extend(message_to_chat(i, m)?);
    }
    out.insert("messages".into(), Value::Array(messages));
    match field("max_tokens") {
        Some(v) => {
            out.insert("max_tokens".into(), v.clone());
        }
        None if generate => {
            return Err(ApiError::invalid_param(
                "max_tokens",
                "'max_tokens' is required.",
            ))
        }
        None => {}
    }
    for k in ["model", "temperature", "top_p", "top_k", "stream"] {
        if let Some(v) = field(k) {
            out.insert(k.into(), v.clone());
        }
    }
    if let Some(stop) = field("stop_sequences") {
        // Checked here: OpenAI's `stop` also takes a bare string, and its errors name `stop`.
        let strings = stop
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_string));
        if !strings {
            return Err(ApiError::invalid_param(
                "stop_sequences",
                "'stop_sequences' must be an array of strings.",
            ));
        }
        out.insert("stop".into(), stop.clone());
    }
    if let Some(tools) = field("tools") {
        out.insert("tools".into(), tools_to_chat(tools)?);
    }
    if let Some(choice) = field("tool_choice") {
        tool_choice_to_chat(choice, &mut out)?;
    }
    if let Some(thinking) = field("thinking") {
        thinking_to_chat(thinking, &mut out)?;
    }
    if let Some(config) = field("output_config") {
        output_config_to_chat(config, &mut out)?;
    }
    Ok(Value::Object(out))
}

/// A `system` value or a tool result's `content`: a string, or a list of text blocks.
fn text_of(v: &Value, param: &str) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut text = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => text.push(b.get("text").and_then(Value::as_str).unwrap_or("")),
                    Some("image" | "document") => {
                        return Err(image_error(&format!("{param}[{j}]")))
                    }
                    _ => {
                        return Err(ApiError::invalid_param(
                            format!("{param}[{j}]"),
                            format!("{param}[{j}] must be a text block."),
                        ))
                    }
                }
            }
            Ok(text.join("\n"))
        }
        _ => Err(ApiError::invalid_param(
            param,
            format!("'{param}' must be a string or a list of text blocks."),
        )),
    }
}

fn image_error(param: &str) -> ApiError {
    ApiError::invalid_param(
        param,
        format!("{param}: image input is not supported: this model takes text only."),
    )
}

/// One Messages message as chat messages: tool results become `tool` messages (before the rest
/// of the turn), tool uses an assistant's `tool_calls`, thinking its `reasoning_content`.
fn message_to_chat(i: usize, m: &Value) -> Result<Vec<Value>, ApiError> {
    let role = match m.get("role").and_then(Value::as_str) {
        Some(r @ ("user" | "assistant")) => r,
        _ => {
            return Err(ApiError::invalid_param(
                format!("messages[{i}].role"),
                format!("messages[{i}].role must be 'user' or 'assistant'."),
            ))
        }
    };
    let blocks = match m.get("content") {
        Some(Value::String(s)) => return Ok(vec![json!({"role": role, "content": s})]),
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(ApiError::invalid_param(
                format!("messages[{i}].content"),
                format!("messages[{i}].content must be a string or a list of content blocks."),
            ))
        }
    };
    let mut out = Vec::new();
    let (mut text, mut thinking, mut calls) = (Vec::new(), Vec::new(), Vec::new());
    for (j, b) in blocks.iter().enumerate() {
        let param = format!("messages[{i}].content[{j}]");
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("thinking") => {
                thinking.push(b.get("thinking").and_then(Value::as_str).unwrap_or(""))
            }
            Some("redacted_thinking") => {}
            Some("tool_use") => calls.push(json!({
                "id": b.get("id").and_then(Value::as_str).unwrap_or(""),
                "type": "function",
                "function": {
                    "name": b.get("name").and_then(Value::as_str).unwrap_or(""),
                    "arguments": b.get("input").unwrap_or(&json!({})).to_string(),
                },
            })),
            Some("tool_result") => {
                let content = match b.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(c) => text_of(c, &format!("{param}.content"))?,
                };
                out.push(json!({
                    "role": "tool",
                    "tool_call_id": b.get("tool_use_id").and_then(Value::as_str).unwrap_or(""),
                    "content": content,
                }));
            }
            Some("image" | "document") => return Err(image_error(&param)),
            other => {
                return Err(ApiError::invalid_param(
                    param.clone(),
                    format!("{param} has an unknown block type {other:?}."),
                ))
            }
        }
    }
    if !text.is_empty() || !calls.is_empty() || (out.is_empty() && role == "user") {
        let mut msg = json!({"role": role, "content": text.join("\n")});
        if !calls.is_empty() {
            msg["tool_calls"] = Value::Array(calls);
        }
        if !thinking.is_empty() {
            msg["reasoning_content"] = json!(thinking.join("\n"));
        }
        out.push(msg);
    }
    Ok(out)
}

/// Anthropic's tools (`name`, `description`, `input_schema`) as OpenAI function tools.
fn tools_to_chat(tools: &Value) -> Result<Value, ApiError> {
    let Some(tools) = tools.as_array() else {
        return Err(ApiError::invalid_param("tools", "'tools' must be a list."));
    };
    let mut out = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        let Some(name) = t.get("name").and_then(Value::as_str) else {
            return Err(ApiError::invalid_param(
                format!("tools[{i}].name"),
                format!("tools[{i}] needs a 'name'."),
            ));
        };
        if let Some(kind) = t.get("type").and_then(Value::as_str) {
            if kind != "custom" {
                return Err(ApiError::invalid_param(
                    format!("tools[{i}].type"),
                    format!("tools[{i}] is a server tool ('{kind}'); only client tools with an 'input_schema' are supported."),
                ));
            }
        }
        let mut function = json!({
            "name": name,
            "parameters": t.get("input_schema").cloned().unwrap_or(json!({"type": "object"})),
        });
        if let Some(d) = t.get("description") {
            function["description"] = d.clone();
        }
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(Value::Array(out))
}

/// `tool_choice` (`auto`, `any`, `tool`, `none`, and `disable_parallel_tool_use`) in OpenAI's
/// terms.
fn tool_choice_to_chat(choice: &Value, out: &mut Map<String, Value>) -> Result<(), ApiError> {
    let choice_of = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => match choice.get("name").and_then(Value::as_str) {
            Some(name) => json!({"type": "function", "function": {"name": name}}),
            None => {
                return Err(ApiError::invalid_param(
                    "tool_choice.name",
                    "tool_choice of type 'tool' needs a 'name'.",
                ))
            }
        },
        _ => {
            return Err(ApiError::invalid_param(
                "tool_choice.type",
                "tool_choice.type must be 'auto', 'any', 'tool' or 'none'.",
            ))
        }
    };
    out.insert("tool_choice".into(), choice_of);
    if choice.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
        out.insert("parallel_tool_calls".into(), json!(false));
    }
    Ok(())
}

/// `thinking`: `enabled` turns the template's thinking on with `budget_tokens` as the reasoning
/// budget, `adaptive` without one; `disabled` turns it off.
fn thinking_to_chat(thinking: &Value, out: &mut Map<String, Value>) -> Result<(), ApiError> {
    let enabled = match thinking.get("type").and_then(Value::as_str) {
        Some("enabled" | "adaptive") => true,
        Some("disabled") => false,
        _ => {
            return Err(ApiError::invalid_param(
                "thinking.type",
                "thinking.type must be 'enabled', 'adaptive' or 'disabled'.",
            ))
        }
    };
    out.insert(
        "chat_template_kwargs".into(),
        json!({"enable_thinking": enabled, "thinking": enabled}),
    );
    if enabled {
        if let Some(budget) = thinking.get("budget_tokens").and_then(Value::as_u64) {
            out.insert("max_reasoning_tokens".into(), json!(budget));
        }
    }
    Ok(())
}

/// `output_config`: `format` (a JSON schema the answer must follow) as `response_format`,
/// `effort` as `reasoning_effort`.
fn output_config_to_chat(config: &Value, out: &mut Map<String, Value>) -> Result<(), ApiError> {
    if let Some(format) = config.get("format").filter(|f| !f.is_null()) {
        let (Some("json_schema"), Some(schema)) = (
            format.get("type").and_then(Value::as_str),
            format.get("schema"),
        ) else {
            return Err(ApiError::invalid_param(
                "output_config.format",
                "output_config.format must be {\"type\": \"json_schema\", \"schema\": {...}}.",
            ));
        };
        out.insert(
            "response_format".into(),
            json!({"type": "json_schema",
                   "json_schema": {"name": "output", "schema": schema, "strict": true}}),
        );
    }
    if let Some(effort) = config.get("effort").and_then(Value::as_str) {
        let effort = match effort {
            "xhigh" | "max" => "high",
            e => e,
        };
        out.insert("reasoning_effort".into(), json!(effort));
    }
    Ok(())
}

/// Why the message ended, and the stop sequence that ended it.
fn stop_reason(done: &Done, called_tools: bool) -> (&'static str, Option<String>) {
    match done.finish {
        FinishReason::Length => ("max_tokens", None),
        _ if done.stop_string.is_some() => ("stop_sequence", done.stop_string.clone()),
        _ if called_tools => ("tool_use", None),
        _ => ("end_turn", None),
    }
}

/// `usage`: Anthropic counts the cached part of the prompt apart from `input_tokens`.
fn usage(done: &Done) -> Value {
    json!({
        "input_tokens": done.prompt_tokens - done.cached_tokens,
        "output_tokens": done.completion_tokens,
        "cache_read_input_tokens": done.cached_tokens,
        "cache_creation_input_tokens": 0,
    })
}

/// The content blocks of a finished answer.
fn content_blocks(m: ParsedMessage) -> Vec<Value> {
    let mut blocks = Vec::new();
    if let Some(r) = m.reasoning_content.filter(|r| !r.is_empty()) {
        blocks.push(json!({"type": "thinking", "thinking": r, "signature": ""}));
    }
    if !m.content.is_empty() || m.tool_calls.is_empty() {
        blocks.push(json!({"type": "text", "text": m.content}));
    }
    for c in m.tool_calls {
        blocks.push(json!({
            "type": "tool_use",
            "id": c.id,
            "name": c.name,
            "input": serde_json::from_str::<Value>(&c.arguments).unwrap_or(json!({})),
        }));
    }
    blocks
}

fn message(id: &str, model: &str, answer: Answer, called_tools: bool) -> Value {
    let message = answer.message.unwrap_or(ParsedMessage {
        content: answer.text,
        ..Default::default()
    });
    let called_tools = called_tools || !message.tool_calls.is_empty();
    let (reason, sequence) = stop_reason(&answer.done, called_tools);
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content_blocks(message),
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage(&answer.done),
    })
}

/// The message as `message_start` announces it, before any content.
fn message_head(id: &str, model: &str, prompt_tokens: usize) -> Value {
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": null,
        "stop_sequence": null,
        "usage": {"input_tokens": prompt_tokens, "output_tokens": 0,
                  "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0},
    })
}

/// The kind of the content block a streamed answer is in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    Thinking,
    Text,
    /// Tool call number `usize` of the answer.
    ToolUse(usize),
}

/// One streamed message: Anthropic's events from the choice's parsed deltas.
struct MessageStream {
    sink: SseSink,
    /// The open block and its index.
    open: Option<(Block, usize)>,
    next_index: usize,
}

async fn stream_message(sink: SseSink, head: Value, mut choice: Choice) {
    let mut s = MessageStream {
        sink,
        open: None,
        next_index: 0,
    };
    if !(s.event("message_start", json!({"message": head})).await
        && s.event("ping", json!({})).await)
    {
        return;
    }
    loop {
        let ok = match choice.next_update().await {
            Some(Update::Token { deltas, .. }) => s.deltas(deltas).await,
            Some(Update::Done { deltas, done, .. }) => {
                if s.deltas(deltas).await {
                    s.finish(&done, choice.called_tools).await;
                }
                return;
            }
            Some(Update::Failed(msg)) => {
                let e = error_body(&ApiError::internal(msg));
                s.sink.send_named("error", &e).await;
                return;
            }
            None => {
                let e = error_body(&ApiError::internal("The engine thread stopped."));
                s.sink.send_named("error", &e).await;
                return;
            }
        };
        if !ok {
            return;
        }
    }
}

impl MessageStream {
    /// An event of type `name`: `{"type": name, ..fields}`.
    async fn event(&self, name: &str, mut fields: Value) -> bool {
        fields["type"] = json!(name);
        self.sink.send_named(name, &fields).await
    }

    async fn deltas(&mut self, deltas: Vec<OutputDelta>) -> bool {
        for d in deltas {
            let ok = match d {
                OutputDelta::Reasoning(t) => self.delta(Block::Thinking, "thinking", t).await,
                OutputDelta::Content(t) => self.delta(Block::Text, "text", t).await,
                OutputDelta::ToolCallStart { index, id, name } => {
                    let block = json!({"type": "tool_use", "id": id, "name": name, "input": {}});
                    self.start(Block::ToolUse(index), block).await
                }
                OutputDelta::ToolCallArguments { index, arguments } => {
                    self.delta(Block::ToolUse(index), "partial_json", arguments)
                        .await
                }
            };
            if !ok {
                return false;
            }
        }
        true
    }

    /// More of a block's text, opening the block first if another is open.
    async fn delta(&mut self, block: Block, field: &str, text: String) -> bool {
        if text.is_empty() {
            return true;
        }
        if self.open.map(|(b, _)| b) != Some(block) {
            let start = match block {
                Block::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
                Block::Text => json!({"type": "text", "text": ""}),
                // Arguments come after their call's start, which opened the block.
                Block::ToolUse(_) => return true,
            };
            if !self.start(block, start).await {
                return false;
            }
        }
        let kind = match block {
            Block::Thinking => "thinking_delta",
            Block::Text => "text_delta",
            Block::ToolUse(_) => "input_json_delta",
        };
        let index = self.open.map_or(0, |(_, i)| i);
        let mut delta = json!({"type": kind});
        delta[field] = json!(text);
        self.event(
            "content_block_delta",
            json!({"index": index, "delta": delta}),
        )
        .await
    }

    async fn start(&mut self, block: Block, content_block: Value) -> bool {
        if !self.stop().await {
            return false;
        }
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((block, index));
        self.event(
            "content_block_start",
            json!({"index": index, "content_block": content_block}),
        )
        .await
    }

    /// Closes the open block, if any (a thinking block with its empty signature first).
    async fn stop(&mut self) -> bool {
        let Some((block, index)) = self.open.take() else {
            return true;
        };
        if block == Block::Thinking {
            let delta = json!({"type": "signature_delta", "signature": ""});
            if !self
                .event(
                    "content_block_delta",
                    json!({"index": index, "delta": delta}),
                )
                .await
            {
                return false;
            }
        }
        self.event("content_block_stop", json!({"index": index}))
            .await
    }

    /// The last events: the open block closed (an empty text block if the answer had none),
    /// then `message_delta` with the stop reason and usage, and `message_stop`.
    async fn finish(&mut self, done: &Done, called_tools: bool) {
        if self.next_index == 0
            && !self
                .start(Block::Text, json!({"type": "text", "text": ""}))
                .await
        {
            return;
        }
        if !self.stop().await {
            return;
        }
        let (reason, sequence) = stop_reason(done, called_tools);
        let delta = json!({"stop_reason": reason, "stop_sequence": sequence});
        if self
            .event(
                "message_delta",
                json!({"delta": delta, "usage": usage(done)}),
            )
            .await
        {
            self.event("message_stop", json!({})).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: Value) -> Value {
        to_chat(body.as_object().unwrap(), true).unwrap()
    }

    #[test]
    fn system_blocks_and_tool_round_trips_become_chat_messages() {
        let c = chat(json!({
            "model": "m", "max_tokens": 10,
            "system": [{"type": "text", "text": "Be brief."}],
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "use the tool", "signature": "x"},
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]},
                    {"type": "text", "text": "Thanks"}]},
            ],
            "stop_sequences": ["END"],
            "tools": [{"name": "weather", "description": "d", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        }));
        let m = c["messages"].as_array().unwrap();
        assert_eq!(m[0], json!({"role": "system", "content": "Be brief."}));
        assert_eq!(
            m[2]["tool_calls"][0]["function"]["arguments"],
            r#"{"city":"Paris"}"#
        );
        assert_eq!(m[2]["reasoning_content"], "use the tool");
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"})
        );
        assert_eq!(m[4], json!({"role": "user", "content": "Thanks"}));
        assert_eq!(c["stop"], json!(["END"]));
        assert_eq!(
            c["tools"][0]["function"]["parameters"],
            json!({"type": "object"})
        );
        assert_eq!(c["tool_choice"], "required");
        assert_eq!(c["parallel_tool_calls"], false);
    }

    #[test]
    fn missing_fields_and_images_are_400s_naming_the_field() {
        let e = to_chat(json!({"messages": []}).as_object().unwrap(), true).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        assert!(to_chat(json!({"messages": []}).as_object().unwrap(), false).is_ok());
        let e = to_chat(json!({"max_tokens": 1}).as_object().unwrap(), true).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages"));
        let img = json!({"max_tokens": 1, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "data": ""}}]}]});
        let e = to_chat(img.as_object().unwrap(), true).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0]"));
        assert!(e.message.contains("image input is not supported"));
    }

    #[test]
    fn thinking_sets_the_template_switch_and_the_budget() {
        let c = chat(json!({"max_tokens": 9, "messages": [],
            "thinking": {"type": "enabled", "budget_tokens": 1024}}));
        assert_eq!(c["chat_template_kwargs"]["enable_thinking"], true);
        assert_eq!(c["max_reasoning_tokens"], 1024);
    }

    #[test]
    fn finished_answers_become_content_blocks_and_stop_reasons() {
        let done = Done {
            finish: FinishReason::Stop,
            text: String::new(),
            stop_string: None,
            prompt_tokens: 10,
            completion_tokens: 4,
            cached_tokens: 6,
        };
        let m = ParsedMessage {
            reasoning_content: Some("hmm".into()),
            content: String::new(),
            tool_calls: vec![frugal_output::ToolCall {
                id: "call_1".into(),
                name: "f".into(),
                arguments: r#"{"a":1}"#.into(),
            }],
        };
        let answer = Answer {
            text: String::new(),
            message: Some(m),
            logprobs: Vec::new(),
            tokens: Vec::new(),
            done: done.clone(),
            first_token: None,
            finished: std::time::Instant::now(),
        };
        let v = message("msg_1", "m", answer, false);
        assert_eq!(v["stop_reason"], "tool_use");
        assert_eq!(v["content"][0]["type"], "thinking");
        assert_eq!(
            v["content"][1],
            json!({"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}})
        );
        assert_eq!(v["usage"]["input_tokens"], 4);
        assert_eq!(v["usage"]["cache_read_input_tokens"], 6);
        let stopped = Done {
            stop_string: Some("END".into()),
            ..done
        };
        assert_eq!(
            stop_reason(&stopped, false),
            ("stop_sequence", Some("END".into()))
        );
    }
}
