//! Chat templates: a conversation of OpenAI-shaped messages (and tools) rendered into the prompt
//! text the model was trained on, with the model's own Jinja template.
//!
//! Rendering follows Hugging Face transformers' `apply_chat_template`: `trim_blocks`,
//! `lstrip_blocks`, loop controls, Python string/dict methods, `tojson` like Python's
//! `json.dumps` (", " and ": " separators, non-ASCII kept), values printed as Python's `str()`
//! prints them and Jinja2's `iterable` and `sequence` tests (`python`), lists kept in a
//! `namespace` changed in place (`append`, `pop`: `mutable`), and the globals `raise_exception`
//! and `strftime_now`.

#![forbid(unsafe_code)]

mod mutable;
mod python;

use minijinja::{Environment, Error as JinjaError, ErrorKind, Value};
use serde::Serialize;
use serde_json::{Map, Value as Json};
use std::sync::OnceLock;

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("invalid chat template: {0}")]
    Template(String),
    #[error("chat template error: {0}")]
    Render(String),
}

/// ChatML, the documented fallback for models that carry no template.
const CHATML: &str = "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

/// A compiled chat template plus the special-token texts it may reference.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos: Option<String>,
    eos: Option<String>,
    pad: Option<String>,
    renders_tools: OnceLock<bool>,
}

impl ChatTemplate {
    pub fn new(
        source: &str,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
        pad_token: Option<&str>,
    ) -> Result<ChatTemplate, ChatError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_filter("string", |v: Value| python::string_filter(&v));
        env.set_formatter(python::formatter);
        env.add_test("iterable", |v: Value| python::is_iterable(&v));
        env.add_test("sequence", |v: Value| python::is_sequence(&v));
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_function("namespace", mutable::namespace);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| ChatError::Template(describe(&e)))?;
        Ok(ChatTemplate {
            env,
            source: source.to_string(),
            bos: bos_token.map(str::to_string),
            eos: eos_token.map(str::to_string),
            pad: pad_token.map(str::to_string),
            renders_tools: OnceLock::new(),
        })
    }

    /// The ChatML template (`<|im_start|>role\ncontent<|im_end|>`).
    pub fn chatml() -> ChatTemplate {
        ChatTemplate::new(CHATML, None, Some("<|im_end|>"), None).expect("ChatML compiles")
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages` (OpenAI-shaped JSON objects) with optional `tools`; `extra` adds template
    /// variables such as `enable_thinking`. Messages are normalized first ([`normalize_messages`]);
    /// null content is passed as null, and as `""` only when the template fails on null (it needs a
    /// string there).
    pub fn render(
        &self,
        messages: &[Json],
        tools: Option<&[Json]>,
        add_generation_prompt: bool,
        extra: &Map<String, Json>,
    ) -> Result<String, ChatError> {
        let mut messages = normalize_messages(messages);
        let first = self.render_normalized(&messages, tools, add_generation_prompt, extra);
        if first.is_ok() || !null_content_to_empty(&mut messages) {
            return first;
        }
        self.render_normalized(&messages, tools, add_generation_prompt, extra)
    }

    fn render_normalized(
        &self,
        messages: &[Json],
        tools: Option<&[Json]>,
        add_generation_prompt: bool,
        extra: &Map<String, Json>,
    ) -> Result<String, ChatError> {
        let mut ctx = Map::new();
        for (k, v) in extra {
            ctx.insert(k.clone(), v.clone());
        }
        ctx.insert("messages".into(), Json::Array(messages.to_vec()));
        ctx.insert(
            "tools".into(),
            tools.map_or(Json::Null, |t| Json::Array(t.to_vec())),
        );
        ctx.insert("documents".into(), Json::Null);
        ctx.insert(
            "add_generation_prompt".into(),
            Json::Bool(add_generation_prompt),
        );
        for (name, v) in [
            ("bos_token", &self.bos),
            ("eos_token", &self.eos),
            ("pad_token", &self.pad),
        ] {
            if let Some(v) = v {
                ctx.insert(name.into(), Json::String(v.clone()));
            }
        }
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| ChatError::Template(describe(&e)))?;
        tmpl.render(Value::from_serialize(&ctx))
            .map_err(|e| ChatError::Render(describe(&e)))
    }

    /// Whether the template renders `tools` at all: a probe conversation rendered with and without
    /// a probe tool gives different text. Templates that ignore tools (ChatML, SmolLM2) need the
    /// tools described some other way. Computed once.
    pub fn renders_tools(&self) -> bool {
        *self.renders_tools.get_or_init(|| {
            let tool = [serde_json::json!({"type": "function", "function": {
                "name": "frugal_probe_tool", "description": "probe",
                "parameters": {"type": "object", "properties": {}}}})];
            let none = Map::new();
            let system = serde_json::json!({"role": "system", "content": "s"});
            let user = serde_json::json!({"role": "user", "content": "u"});
            // With a system message, and without for templates that refuse one (Gemma).
            for probe in [vec![system, user.clone()], vec![user]] {
                let with = self.render(&probe, Some(&tool), true, &none);
                let without = self.render(&probe, None, true, &none);
                match (with, without) {
                    (Ok(a), Ok(b)) => return a != b,
                    // Templates that need tools (Hermes' tool_use variant) render them.
                    (Ok(_), Err(_)) => return true,
                    (Err(_), _) => {}
                }
            }
            false
        })
    }
}

/// Messages as clients send them, in the shape chat templates expect (as `transformers` users
/// pass them, and as llama.cpp normalizes them):
/// - null-valued fields other than `content` are dropped (the openai SDK sends back `refusal`,
///   `audio`, `function_call` and, without calls, `tool_calls` as null; templates test
///   `'tool_calls' in message`);
/// - a missing `content` becomes null (an assistant message with only `tool_calls`);
/// - content given as a list of parts becomes the text of its `text` parts joined with `"\n"`
///   (other parts are left out: callers reject them first if the model cannot take them);
/// - `function.arguments` given as a JSON string becomes the parsed value, which the Llama 3.1
///   and Hermes templates pass to `tojson` (an empty string becomes `{}`; text that is not JSON
///   stays a string).
pub fn normalize_messages(messages: &[Json]) -> Vec<Json> {
    messages.iter().map(normalize_message).collect()
}

fn normalize_message(m: &Json) -> Json {
    let Json::Object(obj) = m else {
        return m.clone();
    };
    let mut obj: Map<String, Json> = obj
        .iter()
        .filter(|(k, v)| !v.is_null() || *k == "content")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let content = obj.entry("content").or_insert(Json::Null);
    if let Json::Array(parts) = content {
        let texts: Vec<&str> = parts
            .iter()
            .filter(|p| p.get("type").is_none_or(|t| t == "text"))
            .filter_map(|p| p.get("text").and_then(Json::as_str))
            .collect();
        *content = Json::String(texts.join("\n"));
    }
    if let Some(Json::Array(calls)) = obj.get_mut("tool_calls") {
        for call in calls {
            if let Some(args) = call
                .get_mut("function")
                .and_then(|f| f.get_mut("arguments"))
            {
                if let Some(s) = args.as_str() {
                    if s.trim().is_empty() {
                        *args = Json::Object(Map::new());
                    } else if let Ok(parsed) = serde_json::from_str::<Json>(s) {
                        *args = parsed;
                    }
                }
            }
        }
    }
    Json::Object(obj)
}

/// Replaces null `content` with `""`; false when there was none to replace.
fn null_content_to_empty(messages: &mut [Json]) -> bool {
    let mut changed = false;
    for m in messages {
        if let Some(c @ Json::Null) = m.get_mut("content") {
            *c = Json::String(String::new());
            changed = true;
        }
    }
    changed
}

fn describe(e: &JinjaError) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn raise_exception(msg: String) -> Result<Value, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
}

fn strftime_now(fmt: String) -> String {
    chrono::Local::now().format(&fmt).to_string()
}

/// transformers' `tojson`, Python's `json.dumps(x, ensure_ascii=False)`: ", " and ": "
/// separators, or with `indent=N` newlines and N-space indentation; `ensure_ascii=True` writes
/// non-ASCII characters as `\uXXXX` escapes.
fn tojson(value: Value, kwargs: minijinja::value::Kwargs) -> Result<Value, JinjaError> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let text = json_text(&value, indent)?;
    Ok(Value::from_safe_string(if ensure_ascii == Some(true) {
        ascii_escaped(&text)
    } else {
        text
    }))
}

/// Non-ASCII characters as Python's `json.dumps` escapes them (they only occur inside strings).
fn ascii_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// The JSON text of a value, Python's layout.
fn json_text(value: &Value, indent: Option<usize>) -> Result<String, JinjaError> {
    let json: Json = serde_json::to_value(value)
        .map_err(|e| JinjaError::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let mut out = Vec::new();
    let result = match indent {
        Some(n) => {
            let pad = vec![b' '; n];
            let mut ser = serde_json::Serializer::with_formatter(
                &mut out,
                serde_json::ser::PrettyFormatter::with_indent(&pad),
            );
            json.serialize(&mut ser)
        }
        None => return Ok(python_json(&json)),
    };
    result.map_err(|e| JinjaError::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    Ok(String::from_utf8(out).expect("serde_json writes UTF-8"))
}

/// JSON text as Python's `json.dumps(x, ensure_ascii=False)` writes it: `", "` and `": "`
/// separators (what templates' `tojson` gives, and what the generic tool format shows models).
pub fn python_json(v: &Json) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    v.serialize(&mut ser).expect("JSON values serialize");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// serde_json formatter with Python's default separators.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}
