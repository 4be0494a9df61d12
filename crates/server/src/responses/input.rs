//! A Responses request in chat's terms: `instructions` and `input` items as chat messages (after
//! the conversation a `previous_response_id` continues), function tools, `tool_choice`,
//! `text.format` and `reasoning.effort` as the chat endpoint takes them. Errors name the
//! Responses field, not the chat field it became.

use crate::error::ApiError;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

/// A Responses request as a chat request body.
#[derive(Debug)]
pub struct Translated {
    /// The chat body: messages (instructions first), sampling fields, tools and formats.
    pub chat: Value,
    /// The conversation without `instructions` (a continuation does not inherit them): the
    /// earlier conversation, then this input.
    pub conversation: Vec<Value>,
}

/// Chat fields and the Responses fields they come from, for error messages.
const RENAMED: [(&str, &str); 4] = [
    ("max_tokens", "max_output_tokens"),
    ("response_format", "text.format"),
    ("reasoning_effort", "reasoning.effort"),
    ("messages", "input"),
];

/// Fields that mean the same in both APIs (the last few are frugal's chat extensions).
const SAME: [&str; 12] = [
    "model",
    "temperature",
    "top_p",
    "stream",
    "user",
    "parallel_tool_calls",
    "top_k",
    "min_p",
    "seed",
    "max_reasoning_tokens",
    "chat_template_kwargs",
    "cache_salt",
];

/// The chat body for a Responses body; `history` is the conversation `previous_response_id`
/// names (empty without one).
pub fn to_chat(body: &Map<String, Value>, history: &[Value]) -> Result<Translated, ApiError> {
    let field = |k: &str| body.get(k).filter(|v| !v.is_null());
    let mut conversation = history.to_vec();
    match field("input") {
        Some(input) => input_to_chat(input, &mut conversation)?,
        None => {
            return Err(ApiError::invalid_param(
                "input",
                "'input' is required: a string or a list of input items.",
            ))
        }
    }
    let mut messages = Vec::new();
    if let Some(instructions) = field("instructions") {
        let Some(text) = instructions.as_str() else {
            return Err(ApiError::invalid_param(
                "instructions",
                "'instructions' must be a string.",
            ));
        };
        messages.push(json!({"role": "system", "content": text}));
    }
    messages.extend(conversation.iter().cloned());
    let mut out = Map::new();
    out.insert("messages".into(), Value::Array(messages));
    for k in SAME {
        if let Some(v) = field(k) {
            out.insert(k.into(), v.clone());
        }
    }
    if let Some(v) = field("max_output_tokens") {
        out.insert("max_tokens".into(), v.clone());
    }
    options_to_chat(body, &mut out)?;
    Ok(Translated {
        chat: Value::Object(out),
        conversation,
    })
}

/// `tools`, `tool_choice`, `text` and `reasoning`.
fn options_to_chat(
    body: &Map<String, Value>,
    out: &mut Map<String, Value>,
) -> Result<(), ApiError> {
    let field = |k: &str| body.get(k).filter(|v| !v.is_null());
    if let Some(tools) = field("tools") {
        out.insert("tools".into(), tools_to_chat(tools)?);
    }
    if let Some(choice) = field("tool_choice") {
        out.insert("tool_choice".into(), tool_choice_to_chat(choice)?);
    }
    if let Some(format) = field("text").and_then(|t| t.get("format")) {
        if let Some(f) = format_to_chat(format)? {
            out.insert("response_format".into(), f);
        }
    }
    if let Some(reasoning) = field("reasoning") {
        if !reasoning.is_object() {
            return Err(ApiError::invalid_param(
                "reasoning",
                "'reasoning' must be an object such as {\"effort\": \"low\"}.",
            ));
        }
        if let Some(effort) = reasoning.get("effort").filter(|e| !e.is_null()) {
            out.insert("reasoning_effort".into(), effort.clone());
            thinking_switch(effort.as_str() != Some("none"), out);
        }
    }
    Ok(())
}

/// Turns the template's thinking on or off (Qwen3's `enable_thinking`, DeepSeek's `thinking`), as
/// a reasoning effort asks, unless `chat_template_kwargs` already says.
fn thinking_switch(on: bool, out: &mut Map<String, Value>) {
    let kwargs = out
        .entry("chat_template_kwargs")
        .or_insert_with(|| json!({}));
    if let Some(k) = kwargs.as_object_mut() {
        for name in ["enable_thinking", "thinking"] {
            k.entry(name).or_insert(json!(on));
        }
    }
}

/// `input`: a string (one user message) or a list of items, appended to `out` as chat messages.
pub fn input_to_chat(input: &Value, out: &mut Vec<Value>) -> Result<(), ApiError> {
    match input {
        Value::String(s) => {
            out.push(json!({"role": "user", "content": s}));
            Ok(())
        }
        Value::Array(items) => items_to_chat(items, "input", out),
        _ => Err(ApiError::invalid_param(
            "input",
            "'input' must be a string or a list of input items.",
        )),
    }
}

/// Input items (or a response's output items) as chat messages; `param` names the list.
pub fn items_to_chat(items: &[Value], param: &str, out: &mut Vec<Value>) -> Result<(), ApiError> {
    for (i, item) in items.iter().enumerate() {
        let param = format!("{param}[{i}]");
        match item.get("type").and_then(Value::as_str) {
            None | Some("message") => out.push(message_to_chat(&param, item)?),
            Some("function_call") => add_call(&param, item, out)?,
            Some("function_call_output") => out.push(call_output_to_chat(&param, item)?),
            // Earlier reasoning is not fed back, as the chat endpoint drops it.
            Some("reasoning") => {}
            Some(other) => {
                return Err(ApiError::invalid_param(
                    format!("{param}.type"),
                    format!(
                        "{param} is a '{other}' item; supported are 'message', 'function_call', \
                         'function_call_output' and 'reasoning'."
                    ),
                ))
            }
        }
    }
    Ok(())
}

fn message_to_chat(param: &str, item: &Value) -> Result<Value, ApiError> {
    let role = match item.get("role").and_then(Value::as_str) {
        Some(r @ ("user" | "assistant" | "system")) => r,
        // Chat templates know `system`; `developer` is OpenAI's newer name for it.
        Some("developer") => "system",
        _ => {
            return Err(ApiError::invalid_param(
                format!("{param}.role"),
                format!("{param}.role must be 'user', 'assistant', 'system' or 'developer'."),
            ))
        }
    };
    let content = text_of(item.get("content"), &format!("{param}.content"))?;
    Ok(json!({"role": role, "content": content}))
}

/// Message content or a tool's output: a string, or a list of text parts. Images and files are
/// refused rather than dropped, since the model would answer without them.
fn text_of(content: Option<&Value>, param: &str) -> Result<String, ApiError> {
    let parts = match content {
        Some(Value::String(s)) => return Ok(s.clone()),
        Some(Value::Array(parts)) => parts,
        _ => {
            return Err(ApiError::invalid_param(
                param,
                format!("{param} must be a string or a list of content parts."),
            ))
        }
    };
    let mut text = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        let p = format!("{param}[{j}]");
        let field = match part.get("type").and_then(Value::as_str) {
            Some("input_text" | "output_text" | "text") => "text",
            Some("refusal") => "refusal",
            Some(t @ ("input_image" | "input_file" | "input_audio")) => {
                return Err(ApiError::invalid_param(
                    p.clone(),
                    format!("{p} is an '{t}' part, but this model takes text only: send the content as 'input_text' parts."),
                ))
            }
            other => {
                return Err(ApiError::invalid_param(
                    p.clone(),
                    format!("{p} has the unknown content part type {other:?} (this model takes 'input_text' parts)."),
                ))
            }
        };
        match part.get(field).and_then(Value::as_str) {
            Some(t) => text.push(t),
            None => {
                return Err(ApiError::invalid_param(
                    format!("{p}.{field}"),
                    format!("{p} needs a '{field}' string."),
                ))
            }
        }
    }
    Ok(text.join("\n"))
}

fn string_field<'a>(param: &str, item: &'a Value, key: &str) -> Result<&'a str, ApiError> {
    item.get(key).and_then(Value::as_str).ok_or_else(|| {
        ApiError::invalid_param(
            format!("{param}.{key}"),
            format!("{param} needs a '{key}' string."),
        )
    })
}

/// A `function_call` item: a tool call of the assistant turn it follows (the text and calls of
/// one answer are separate items), or of a new assistant turn.
fn add_call(param: &str, item: &Value, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let call = json!({
        "id": string_field(param, item, "call_id")?,
        "type": "function",
        "function": {
            "name": string_field(param, item, "name")?,
            "arguments": string_field(param, item, "arguments")?,
        },
    });
    match out.last_mut() {
        Some(last) if last["role"] == "assistant" => match last.get_mut("tool_calls") {
            Some(Value::Array(calls)) => calls.push(call),
            _ => last["tool_calls"] = json!([call]),
        },
        _ => out.push(json!({"role": "assistant", "content": "", "tool_calls": [call]})),
    }
    Ok(())
}

fn call_output_to_chat(param: &str, item: &Value) -> Result<Value, ApiError> {
    let call_id = string_field(param, item, "call_id")?;
    let output = text_of(item.get("output"), &format!("{param}.output"))?;
    Ok(json!({"role": "tool", "tool_call_id": call_id, "content": output}))
}

/// Function tools (`{"type": "function", "name", "description", "parameters", "strict"}`) as
/// chat's; the hosted tools (web search, file search, ...) do not exist here.
fn tools_to_chat(tools: &Value) -> Result<Value, ApiError> {
    let Some(tools) = tools.as_array() else {
        return Err(ApiError::invalid_param("tools", "'tools' must be a list."));
    };
    let mut out = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        match t.get("type").and_then(Value::as_str) {
            Some("function") => {}
            kind => {
                return Err(ApiError::invalid_param(
                    format!("tools[{i}].type"),
                    format!("tools[{i}].type is {kind:?}; only 'function' tools are supported."),
                ))
            }
        }
        let param = format!("tools[{i}]");
        let mut function = json!({
            "name": string_field(&param, t, "name")?,
            "parameters": t.get("parameters").filter(|p| !p.is_null()).cloned()
                .unwrap_or(json!({"type": "object", "properties": {}})),
        });
        for k in ["description", "strict"] {
            if let Some(v) = t.get(k).filter(|v| !v.is_null()) {
                function[k] = v.clone();
            }
        }
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(Value::Array(out))
}

/// `auto`, `none`, `required`, or `{"type": "function", "name"}`.
fn tool_choice_to_chat(choice: &Value) -> Result<Value, ApiError> {
    match choice {
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => Ok(choice.clone()),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            match o.get("name").and_then(Value::as_str) {
                Some(name) => Ok(json!({"type": "function", "function": {"name": name}})),
                None => Err(ApiError::invalid_param(
                    "tool_choice.name",
                    "A tool_choice of type 'function' needs a 'name'.",
                )),
            }
        }
        _ => Err(ApiError::invalid_param(
            "tool_choice",
            "tool_choice must be 'auto', 'none', 'required' or {\"type\": \"function\", \"name\": ...}.",
        )),
    }
}

/// `text.format` as chat's `response_format`; `None` for plain text.
fn format_to_chat(format: &Value) -> Result<Option<Value>, ApiError> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let Some(schema) = format.get("schema").filter(|s| s.is_object()) else {
                return Err(ApiError::invalid_param(
                    "text.format.schema",
                    "A 'json_schema' text.format needs a 'schema' object.",
                ));
            };
            let mut json_schema = json!({
                "name": format.get("name").and_then(Value::as_str).unwrap_or("response"),
                "schema": schema,
            });
            for k in ["strict", "description"] {
                if let Some(v) = format.get(k).filter(|v| !v.is_null()) {
                    json_schema[k] = v.clone();
                }
            }
            Ok(Some(
                json!({"type": "json_schema", "json_schema": json_schema}),
            ))
        }
        _ => Err(ApiError::invalid_param(
            "text.format.type",
            "text.format.type must be 'text', 'json_object' or 'json_schema'.",
        )),
    }
}

/// A chat request type (`ChatRequest`, `Common`) from the chat body, a wrong type naming the
/// Responses field.
pub fn from_chat<T: DeserializeOwned>(chat: &Value) -> Result<T, ApiError> {
    crate::api::from_value(chat.clone(), &responses_param)
}

/// An error about a chat field, about the Responses field it came from instead.
pub fn rename_param(mut e: ApiError) -> ApiError {
    if let Some(p) = &e.param {
        e.param = Some(responses_param(p));
    }
    e
}

fn responses_param(chat: &str) -> String {
    for (from, to) in RENAMED {
        let rest = chat.strip_prefix(from);
        if rest.is_some_and(|r| r.is_empty() || r.starts_with(['.', '['])) {
            return to.to_string();
        }
    }
    chat.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: Value) -> Translated {
        to_chat(body.as_object().unwrap(), &[]).unwrap()
    }

    fn err(body: Value) -> ApiError {
        to_chat(body.as_object().unwrap(), &[]).unwrap_err()
    }

    #[test]
    fn a_string_input_and_instructions_become_system_and_user_messages() {
        let t = chat(
            json!({"model": "m", "input": "Hi", "instructions": "Be brief.",
            "max_output_tokens": 9, "temperature": 0, "store": false, "metadata": {"a": "b"}}),
        );
        assert_eq!(
            t.chat["messages"],
            json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
        );
        assert_eq!(t.chat["max_tokens"], 9);
        assert_eq!(t.chat["temperature"], 0);
        assert!(t.chat.get("store").is_none() && t.chat.get("metadata").is_none());
        assert_eq!(
            t.conversation,
            vec![json!({"role": "user", "content": "Hi"})]
        );
    }

    #[test]
    fn items_become_a_tool_round_trip_without_earlier_reasoning() {
        let t = chat(json!({"input": [
            {"role": "developer", "content": "Use tools."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "hmm"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
            {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call", "call_id": "call_2", "name": "weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "rain"}]},
        ]}));
        let m = t.chat["messages"].as_array().unwrap();
        assert_eq!(m.len(), 5, "{m:?}");
        assert_eq!(m[0], json!({"role": "system", "content": "Use tools."}));
        assert_eq!(m[1], json!({"role": "user", "content": "Weather?"}));
        assert_eq!(m[2]["content"], "Checking.");
        assert_eq!(m[2]["tool_calls"][1]["id"], "call_2");
        assert_eq!(
            m[2]["tool_calls"][0]["function"],
            json!({"name": "weather", "arguments": "{\"city\":\"Paris\"}"})
        );
        assert_eq!(
            m[4],
            json!({"role": "tool", "tool_call_id": "call_2", "content": "rain"})
        );
    }

    #[test]
    fn a_continuation_puts_the_history_after_the_new_instructions() {
        let history = vec![
            json!({"role": "user", "content": "a"}),
            json!({"role": "assistant", "content": "b"}),
        ];
        let body = json!({"input": "c", "instructions": "new"});
        let t = to_chat(body.as_object().unwrap(), &history).unwrap();
        let m = t.chat["messages"].as_array().unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[0]["content"], "new");
        assert_eq!(m[1]["content"], "a");
        assert_eq!(m[3], json!({"role": "user", "content": "c"}));
        assert_eq!(t.conversation.len(), 3, "instructions are not inherited");
    }

    #[test]
    fn tools_choice_format_and_effort_take_chat_shapes() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let t = chat(json!({"input": "x",
            "tools": [{"type": "function", "name": "f", "description": "d", "parameters": schema, "strict": true}],
            "tool_choice": {"type": "function", "name": "f"}, "parallel_tool_calls": false,
            "text": {"format": {"type": "json_schema", "name": "out", "schema": schema, "strict": true}},
            "reasoning": {"effort": "low", "summary": "auto"}}));
        let c = &t.chat;
        assert_eq!(
            c["tools"][0],
            json!({"type": "function", "function": {"name": "f", "parameters": schema,
                   "description": "d", "strict": true}})
        );
        assert_eq!(
            c["tool_choice"],
            json!({"type": "function", "function": {"name": "f"}})
        );
        assert_eq!(c["parallel_tool_calls"], false);
        assert_eq!(
            c["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": true}})
        );
        assert_eq!(c["reasoning_effort"], "low");
        assert_eq!(
            c["chat_template_kwargs"],
            json!({"enable_thinking": true, "thinking": true})
        );
        let t = chat(json!({"input": "x", "reasoning": {"effort": "none"},
            "chat_template_kwargs": {"enable_thinking": true}}));
        assert_eq!(
            t.chat["chat_template_kwargs"],
            json!({"enable_thinking": true, "thinking": false}),
            "what the client set wins"
        );
        let t = chat(
            json!({"input": "x", "text": {"format": {"type": "text"}}, "tool_choice": "required"}),
        );
        assert!(t.chat.get("response_format").is_none());
        assert_eq!(t.chat["tool_choice"], "required");
    }

    #[test]
    fn unsupported_fields_are_400s_naming_them() {
        for (body, param) in [
            (json!({}), "input"),
            (json!({"input": 3}), "input"),
            (
                json!({"input": "x", "tools": [{"type": "web_search"}]}),
                "tools[0].type",
            ),
            (
                json!({"input": "x", "tools": [{"type": "function"}]}),
                "tools[0].name",
            ),
            (
                json!({"input": "x", "tool_choice": {"type": "file_search"}}),
                "tool_choice",
            ),
            (
                json!({"input": "x", "text": {"format": {"type": "xml"}}}),
                "text.format.type",
            ),
            (
                json!({"input": "x", "text": {"format": {"type": "json_schema"}}}),
                "text.format.schema",
            ),
            (
                json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "u"}]}]}),
                "input[0].content[0]",
            ),
            (
                json!({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}),
                "input[0].content[0]",
            ),
            (
                json!({"input": [{"role": "tool", "content": "x"}]}),
                "input[0].role",
            ),
            (
                json!({"input": [{"type": "web_search_call"}]}),
                "input[0].type",
            ),
            (
                json!({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}),
                "input[0].call_id",
            ),
            (json!({"input": "x", "instructions": 1}), "instructions"),
        ] {
            let e = err(body.clone());
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }
        let e = err(json!({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}));
        assert!(e.message.contains("text only"), "{}", e.message);
    }

    #[test]
    fn chat_errors_name_the_responses_fields() {
        let t = chat(json!({"input": "x", "max_output_tokens": "many"}));
        let e = from_chat::<crate::api::Common>(&t.chat).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("max_output_tokens"));
        let e = rename_param(ApiError::invalid_param(
            "response_format.json_schema",
            "bad",
        ));
        assert_eq!(e.param.as_deref(), Some("text.format"));
        let e = rename_param(ApiError::invalid_param("messages[2].content", "bad"));
        assert_eq!(e.param.as_deref(), Some("input"));
        let e = rename_param(ApiError::invalid_param("temperature", "bad"));
        assert_eq!(e.param.as_deref(), Some("temperature"));
    }
}
