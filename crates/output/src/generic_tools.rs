//! Tool calls for models whose chat template cannot render tools (ChatML, SmolLM2, Zephyr-style
//! templates), after llama.cpp's "generic" chat format.
//!
//! **The format.** The tools are described in a system message ([`tools_system_prompt`]: merged
//! into the conversation's first system message, or prepended as one). The whole answer is one
//! JSON object, constrained by a grammar ([`answer_schema`]), either
//!
//! ```text
//! {"tool_calls": [{"name": "get_weather", "arguments": {"location": "Paris"}}, ...]}
//! ```
//!
//! (one call at most when `parallel_tool_calls` is false; `arguments` follows the tool's
//! `parameters` schema), or, unless `tool_choice` requires a call,
//!
//! ```text
//! {"response": "the answer to the user"}
//! ```
//!
//! (`response` follows the `response_format` schema when the request has one). The answer is
//! parsed back ([`GenericToolParser`]) into OpenAI `tool_calls`, or into `content` (the
//! `response` string, or the JSON text of a structured response).
//!
//! Earlier turns are rewritten the same way ([`rewrite_history`]), so the model sees its own
//! format: an assistant message with `tool_calls` becomes the JSON object above as its content,
//! and a `tool` message becomes a `user` message whose content is
//! `{"tool_response": {"tool_call_id": ..., "content": ...}}`.
//!
//! Templates that cannot render tools but do have a native call syntax (DeepSeek's templates
//! render calls and results, never the tool list) keep that syntax: only the system message is
//! added, with that syntax as the example ([`native_call_example`]).

use crate::grammar::{Grammar, ToolChoice};
use crate::tools::{deepseek, kimi, new_call_id, ToolCall, ToolDelta, ToolFormat};
use crate::OutputError;
use frugal_chat::python_json;
use serde_json::{json, Map, Value};

/// The system-message text that describes `tools` and how to call them: in the generic JSON
/// format when `native` is `None`, else in the template's own call syntax.
pub fn tools_system_prompt(tools: &[Value], native: Option<ToolFormat>) -> String {
    let list: Vec<String> = tools.iter().map(python_json).collect();
    let mut s = format!(
        "You can call the following tools. Each is described by a JSON object with its name, \
         what it does and the JSON schema of its arguments:\n{}\n\n",
        list.join("\n")
    );
    match native.and_then(native_call_example) {
        Some(example) => s.push_str(&format!(
            "To call tools, answer with the calls and nothing else, in this exact format:\n{example}"
        )),
        None => s.push_str(
            "Answer with one JSON object and nothing else: either\n\
             {\"tool_calls\": [{\"name\": <tool name>, \"arguments\": <arguments object>}]}\n\
             to call one or more tools, or\n\
             {\"response\": <your answer to the user>}\n\
             to answer the user directly.",
        ),
    }
    s
}

/// An example call in a template's own syntax, for formats whose templates show none.
pub fn native_call_example(format: ToolFormat) -> Option<String> {
    let args = "{\"argument\": \"value\"}";
    match format {
        ToolFormat::DeepSeekR1 => Some(format!(
            "{}{}function{}<tool name>\n```json\n{args}\n```{}{}",
            deepseek::CALLS_BEGIN,
            deepseek::CALL_BEGIN,
            deepseek::SEP,
            deepseek::CALL_END,
            deepseek::CALLS_END
        )),
        ToolFormat::DeepSeekV31 => Some(format!(
            "{}{}<tool name>{}{args}{}{}",
            deepseek::CALLS_BEGIN,
            deepseek::CALL_BEGIN,
            deepseek::SEP,
            deepseek::CALL_END,
            deepseek::CALLS_END
        )),
        ToolFormat::Hermes => Some(format!(
            "{}\n{{\"name\": <tool name>, \"arguments\": {args}}}\n{}",
            crate::tools::hermes::CALL_BEGIN,
            crate::tools::hermes::CALL_END
        )),
        ToolFormat::Llama3Json => {
            Some(format!("{{\"name\": <tool name>, \"parameters\": {args}}}"))
        }
        ToolFormat::Glm(_) => Some(format!(
            "{}<tool name>\n{}argument{}\n{}value{}\n{}",
            crate::tools::hermes::CALL_BEGIN,
            crate::glm_xml::ARG_KEY_OPEN,
            crate::glm_xml::ARG_KEY_CLOSE,
            crate::glm_xml::ARG_VALUE_OPEN,
            crate::glm_xml::ARG_VALUE_CLOSE,
            crate::tools::hermes::CALL_END
        )),
        ToolFormat::KimiK2 => Some(format!(
            "{}{}functions.<tool name>:0{}{args}{}{}",
            kimi::CALLS_BEGIN,
            kimi::CALL_BEGIN,
            kimi::ARGS_BEGIN,
            kimi::CALL_END,
            kimi::CALLS_END
        )),
        ToolFormat::QwenXml => Some(format!(
            "{}\n{}<tool name>>\n{}argument>\nvalue\n{}\n{}\n{}",
            crate::tools::hermes::CALL_BEGIN,
            crate::qwen_xml::FUNCTION_OPEN,
            crate::qwen_xml::PARAM_OPEN,
            crate::qwen_xml::PARAM_CLOSE,
            crate::qwen_xml::FUNCTION_CLOSE,
            crate::tools::hermes::CALL_END
        )),
    }
}

/// `messages` with the tools described in the first system message (a new one first when there
/// is none). Messages that are not objects are left for the caller's validation.
pub fn add_tools_to_system(messages: &mut Vec<Value>, prompt: &str) {
    if let Some(Value::Object(first)) = messages.first_mut() {
        if first.get("role").and_then(Value::as_str) == Some("system") {
            let text = match first.get("content") {
                Some(Value::String(s)) if !s.is_empty() => format!("{s}\n\n{prompt}"),
                _ => prompt.to_string(),
            };
            first.insert("content".into(), Value::String(text));
            return;
        }
    }
    messages.insert(0, json!({"role": "system", "content": prompt}));
}

/// Earlier turns in the generic format: assistant `tool_calls` become the answer's JSON text,
/// `tool` results become `user` messages (templates without tools support know no `tool` role).
/// Content is expected normalized already (text, not parts).
pub fn rewrite_history(messages: &mut [Value]) {
    for m in messages.iter_mut() {
        let Some(obj) = m.as_object_mut() else {
            continue;
        };
        match obj.get("role").and_then(Value::as_str) {
            Some("assistant") => {
                let Some(Value::Array(calls)) = obj.remove("tool_calls") else {
                    continue;
                };
                let calls: Vec<Value> = calls.iter().map(generic_call).collect();
                obj.insert(
                    "content".into(),
                    Value::String(python_json(&json!({ "tool_calls": calls }))),
                );
            }
            Some("tool") => {
                let mut response = Map::new();
                if let Some(id) = obj.get("tool_call_id") {
                    response.insert("tool_call_id".into(), id.clone());
                }
                let content = obj.get("content").cloned().unwrap_or(Value::Null);
                response.insert("content".into(), content);
                let text = python_json(&json!({ "tool_response": response }));
                *obj = Map::new();
                obj.insert("role".into(), json!("user"));
                obj.insert("content".into(), Value::String(text));
            }
            _ => {}
        }
    }
}

/// `{"name": .., "arguments": {..}}` from an OpenAI call (arguments parsed when given as text).
fn generic_call(call: &Value) -> Value {
    let f = call.get("function").unwrap_or(call);
    let args = match f.get("arguments") {
        Some(Value::String(s)) if s.trim().is_empty() => json!({}),
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or_else(|_| json!(s)),
        Some(v) => v.clone(),
        None => json!({}),
    };
    json!({"name": f.get("name").cloned().unwrap_or(Value::Null), "arguments": args})
}

/// The JSON schema of a generic answer (see the module docs). `tools` must have been checked
/// (names and parameters) by the caller; `response` is the `response_format` schema, if any.
pub fn answer_schema(
    tools: &[(String, Value)],
    choice: &ToolChoice,
    parallel: bool,
    response: Option<&Value>,
) -> Result<Value, OutputError> {
    let chosen: Vec<&(String, Value)> = match choice {
        ToolChoice::Function(name) => {
            let f: Vec<_> = tools.iter().filter(|(n, _)| n == name).take(1).collect();
            if f.is_empty() {
                return Err(OutputError::tool_choice(format!(
                    "tool_choice names function '{name}', which is not in tools"
                )));
            }
            f
        }
        _ => tools.iter().collect(),
    };
    let one_call: Vec<Value> = chosen
        .iter()
        .map(|(name, params)| {
            json!({"type": "object", "properties": {
                "name": {"const": name}, "arguments": params},
                "required": ["name", "arguments"], "additionalProperties": false})
        })
        .collect();
    let items = match one_call.len() {
        1 => one_call[0].clone(),
        _ => json!({ "anyOf": one_call }),
    };
    let single = !parallel || matches!(choice, ToolChoice::Function(_));
    let mut calls = json!({"type": "array", "items": items, "minItems": 1});
    if single {
        calls["maxItems"] = json!(1);
    }
    let call_answer = json!({"type": "object", "properties": {"tool_calls": calls},
        "required": ["tool_calls"], "additionalProperties": false});
    Ok(match choice {
        ToolChoice::Required | ToolChoice::Function(_) => call_answer,
        ToolChoice::Auto | ToolChoice::None => {
            let response = response.cloned().unwrap_or(json!({"type": "string"}));
            json!({"anyOf": [call_answer, {"type": "object",
                "properties": {"response": response},
                "required": ["response"], "additionalProperties": false}]})
        }
    })
}

/// The grammar of a generic answer.
pub fn answer_grammar(
    tools: &[(String, Value)],
    choice: &ToolChoice,
    parallel: bool,
    response: Option<&Value>,
) -> Result<Grammar, OutputError> {
    Grammar::json_schema(&answer_schema(tools, choice, parallel, response)?)
}

/// How the answer opens when it is a text response (the grammar's fixed layout).
const RESPONSE_OPEN: &str = "{\"response\": \"";

/// Parses a generic answer. A text `response` streams as content while it is generated; tool
/// calls (and structured responses) are one JSON document, emitted when it is complete. Text
/// that is not a generic answer (no grammar held the model to it) is passed on as content.
#[derive(Debug, Clone, Default)]
pub struct GenericToolParser {
    buf: String,
    /// Where the undecoded text of a streaming `response` string starts in `buf`.
    response_at: Option<usize>,
    /// The `response` string has closed.
    response_done: bool,
    content: String,
    calls: Vec<ToolCall>,
}

impl GenericToolParser {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, text: &str) -> Vec<ToolDelta> {
        self.buf.push_str(text);
        if self.response_at.is_none() {
            let lead = self.buf.len() - self.buf.trim_start().len();
            if self.buf[lead..].starts_with(RESPONSE_OPEN) {
                self.response_at = Some(lead + RESPONSE_OPEN.len());
            }
        }
        self.stream_response(false)
    }

    /// Decodes what is certain of the `response` string so far (`last`: all of what is left).
    fn stream_response(&mut self, last: bool) -> Vec<ToolDelta> {
        let Some(at) = self.response_at.filter(|_| !self.response_done) else {
            return Vec::new();
        };
        let rest = &self.buf[at..];
        let (end, closed) = string_prefix(rest);
        let end = if last && !closed { rest.len() } else { end };
        let piece = &rest[..end];
        let text: String =
            serde_json::from_str(&format!("\"{piece}\"")).unwrap_or_else(|_| piece.to_string());
        self.response_at = Some(at + end);
        self.response_done = closed;
        if text.is_empty() {
            return Vec::new();
        }
        self.content.push_str(&text);
        vec![ToolDelta::Content(text)]
    }

    pub fn finish(&mut self) -> Vec<ToolDelta> {
        if self.response_at.is_some() {
            return self.stream_response(true);
        }
        let text = std::mem::take(&mut self.buf);
        let parsed: Option<Map<String, Value>> = serde_json::from_str(text.trim()).ok();
        let mut out = Vec::new();
        match parsed {
            Some(obj) if obj.get("tool_calls").is_some_and(Value::is_array) => {
                for call in obj["tool_calls"].as_array().into_iter().flatten() {
                    out.extend(self.add_call(call));
                }
            }
            Some(obj) if obj.contains_key("response") => {
                self.content = match &obj["response"] {
                    Value::String(s) => s.clone(),
                    other => python_json(other),
                };
            }
            _ => self.content = text,
        }
        if !self.content.is_empty() {
            out.insert(0, ToolDelta::Content(self.content.clone()));
        }
        out
    }

    fn add_call(&mut self, call: &Value) -> [ToolDelta; 2] {
        let name = call.get("name").and_then(Value::as_str).unwrap_or_default();
        let arguments = call.get("arguments").cloned().unwrap_or(json!({}));
        let call = ToolCall {
            id: new_call_id(),
            name: name.to_string(),
            arguments: python_json(&arguments),
        };
        let index = self.calls.len();
        let deltas = [
            ToolDelta::ToolCallStart {
                index,
                id: call.id.clone(),
                name: call.name.clone(),
            },
            ToolDelta::ToolCallArguments {
                index,
                arguments: call.arguments.clone(),
            },
        ];
        self.calls.push(call);
        deltas
    }

    /// The content and calls (call after [`GenericToolParser::finish`]).
    pub fn into_result(self) -> (String, Vec<ToolCall>) {
        (self.content, self.calls)
    }
}

/// The length of the body of a JSON string that can be decoded now, and whether the closing
/// quote follows it. An escape cut short, or a `\uD8xx` high surrogate whose pair may follow,
/// waits for more text.
fn string_prefix(s: &str) -> (usize, bool) {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => return (i, true),
            b'\\' => {
                let len = if b.get(i + 1) == Some(&b'u') { 6 } else { 2 };
                if i + len > b.len() {
                    return (i, false);
                }
                let high = len == 6
                    && s.get(i + 2..i + 4).is_some_and(|h| {
                        matches!(h.to_ascii_uppercase().as_str(), "D8" | "D9" | "DA" | "DB")
                    });
                if high && i + 12 > b.len() {
                    return (i, false);
                }
                i += if high { 12 } else { len };
            }
            _ => i += 1,
        }
    }
    (b.len().min(i), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_into_calls_or_content() {
        let mut p = GenericToolParser::new();
        assert!(p
            .push("{\"tool_calls\": [{\"name\": \"f\", \"arguments\": {\"a\": 1}}]}")
            .is_empty());
        let d = p.finish();
        assert_eq!(d.len(), 2, "{d:?}");
        let (content, calls) = p.into_result();
        assert_eq!(content, "");
        assert_eq!(calls[0].name, "f");
        assert_eq!(calls[0].arguments, "{\"a\": 1}");

        let mut p = GenericToolParser::new();
        let mut d = p.push("{\"response\": \"Hi \\\"there\\\"\"}");
        d.extend(p.finish());
        assert_eq!(d, vec![ToolDelta::Content("Hi \"there\"".into())]);

        // A text response streams as it comes, escapes split anywhere.
        let mut p = GenericToolParser::new();
        let answer = "{\"response\": \"a\\\"b\\u00e9\\ud83d\\ude00c\"}";
        let mut streamed = String::new();
        for ch in answer.chars() {
            for d in p.push(&ch.to_string()) {
                let ToolDelta::Content(t) = d else {
                    panic!("{d:?}")
                };
                streamed.push_str(&t);
            }
        }
        assert!(p.finish().is_empty());
        assert_eq!(streamed, "a\"bé😀c");
        assert_eq!(p.into_result().0, "a\"bé😀c");
        // Cut short by max_tokens: what there is.
        let mut p = GenericToolParser::new();
        p.push("{\"response\": \"abc\\");
        p.finish();
        assert_eq!(p.into_result().0, "abc\\");

        let mut p = GenericToolParser::new();
        p.push("not json");
        p.finish();
        assert_eq!(p.into_result().0, "not json");
    }

    #[test]
    fn history_is_rewritten_in_the_generic_format() {
        let mut msgs = vec![
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "f", "arguments": "{\"a\": 1}"}}]}),
            json!({"role": "tool", "tool_call_id": "c1", "content": "42"}),
        ];
        rewrite_history(&mut msgs);
        assert_eq!(
            msgs[0],
            json!({"role": "assistant", "content": "{\"tool_calls\": [{\"name\": \"f\", \"arguments\": {\"a\": 1}}]}"})
        );
        assert_eq!(
            msgs[1],
            json!({"role": "user", "content": "{\"tool_response\": {\"tool_call_id\": \"c1\", \"content\": \"42\"}}"})
        );
        let mut msgs = vec![json!({"role": "user", "content": "hi"})];
        add_tools_to_system(&mut msgs, "TOOLS");
        assert_eq!(msgs[0], json!({"role": "system", "content": "TOOLS"}));
        add_tools_to_system(&mut msgs, "MORE");
        assert_eq!(msgs[0]["content"], "TOOLS\n\nMORE");
    }
}
