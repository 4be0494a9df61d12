//! Chat templates: a conversation of OpenAI-shaped messages (and tools) rendered into the prompt
//! text the model was trained on, with the model's own Jinja template.
//!
//! Rendering follows Hugging Face transformers' `apply_chat_template`: `trim_blocks`,
//! `lstrip_blocks`, loop controls, Python string/dict methods, `tojson` like Python's
//! `json.dumps` (", " and ": " separators, non-ASCII kept), and the globals `raise_exception` and
//! `strftime_now`.

#![forbid(unsafe_code)]

use minijinja::{Environment, Error as JinjaError, ErrorKind, Value};
use serde::Serialize;
use serde_json::{Map, Value as Json};

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
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| ChatError::Template(describe(&e)))?;
        Ok(ChatTemplate {
            env,
            source: source.to_string(),
            bos: bos_token.map(str::to_string),
            eos: eos_token.map(str::to_string),
            pad: pad_token.map(str::to_string),
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
    /// variables such as `enable_thinking`.
    pub fn render(
        &self,
        messages: &[Json],
        tools: Option<&[Json]>,
        add_generation_prompt: bool,
        extra: &Map<String, Json>,
    ) -> Result<String, ChatError> {
        let messages: Vec<Json> = messages.iter().map(normalize_message).collect();
        let mut ctx = Map::new();
        for (k, v) in extra {
            ctx.insert(k.clone(), v.clone());
        }
        ctx.insert("messages".into(), Json::Array(messages));
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
}

/// Content given as an array of text parts becomes one string; tool-call arguments given as a JSON
/// string become an object (templates iterate over them or pass them to `tojson`).
fn normalize_message(m: &Json) -> Json {
    let mut m = m.clone();
    if let Some(Json::Array(parts)) = m.get("content") {
        let text: String = parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Json::as_str))
            .collect();
        m["content"] = Json::String(text);
    }
    if let Some(Json::Array(calls)) = m.get_mut("tool_calls") {
        for call in calls {
            if let Some(args) = call
                .get_mut("function")
                .and_then(|f| f.get_mut("arguments"))
            {
                if let Some(s) = args.as_str() {
                    if let Ok(parsed @ Json::Object(_)) = serde_json::from_str::<Json>(s) {
                        *args = parsed;
                    }
                }
            }
        }
    }
    m
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

/// Python's `json.dumps(x, ensure_ascii=False)`: ", " and ": " separators, or with `indent=N`
/// newlines and N-space indentation.
fn tojson(value: Value, kwargs: minijinja::value::Kwargs) -> Result<Value, JinjaError> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let json: Json = serde_json::to_value(&value)
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
        None => {
            let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
            json.serialize(&mut ser)
        }
    };
    result.map_err(|e| JinjaError::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let s = String::from_utf8(out).expect("serde_json writes UTF-8");
    Ok(Value::from_safe_string(s))
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
