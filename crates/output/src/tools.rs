//! Parsing tool calls out of the answer text, streaming, in the formats chat templates teach
//! models: Hermes/Qwen `<tool_call>` blocks, Qwen3-Coder/Qwen3.5 `<tool_call>` blocks of XML-like
//! parameters ([`crate::qwen_xml`]), DeepSeek V3/R1 and V3.1 `<｜tool▁call▁begin｜>` sections, and
//! Llama 3.1's bare JSON object.
//!
//! [`ToolCallParser::push`] returns [`ToolDelta`]s as soon as they are certain: answer text, the
//! start of a call (index, id, name), and pieces of its arguments JSON exactly as the model wrote
//! them (their concatenation is the call's `arguments` string; for the XML format, the JSON object
//! built from the parameters). Text that looks like the start of a
//! tag is held back only while it still could be one. Whitespace around tool calls and at the ends
//! of the content is dropped.

use crate::glm_xml::{self, GlmCall, GlmLayout};
use crate::qwen_xml::{self, Event, Outcome, ParamTypes, XmlCall};
use crate::reasoning::partial_suffix;
use rand::Rng;
use serde_json::Value;
use std::sync::Arc;

/// DeepSeek's markers (V3, R1 and V3.1 share them).
pub mod deepseek {
    pub const CALLS_BEGIN: &str = "<｜tool▁calls▁begin｜>";
    pub const CALLS_END: &str = "<｜tool▁calls▁end｜>";
    pub const CALL_BEGIN: &str = "<｜tool▁call▁begin｜>";
    pub const CALL_END: &str = "<｜tool▁call▁end｜>";
    pub const SEP: &str = "<｜tool▁sep｜>";
}

/// Hermes/Qwen markers.
pub mod hermes {
    pub const CALL_BEGIN: &str = "<tool_call>";
    pub const CALL_END: &str = "</tool_call>";
}

/// Kimi K2's markers (Instruct and Thinking).
pub mod kimi {
    pub const CALLS_BEGIN: &str = "<|tool_calls_section_begin|>";
    pub const CALLS_END: &str = "<|tool_calls_section_end|>";
    pub const CALL_BEGIN: &str = "<|tool_call_begin|>";
    pub const CALL_END: &str = "<|tool_call_end|>";
    pub const ARGS_BEGIN: &str = "<|tool_call_argument_begin|>";
    /// The prefix of a call id, `functions.NAME:IDX`.
    pub const ID_PREFIX: &str = "functions.";
}

/// Llama 3.1's marker for tool calls (optional before the JSON object).
pub const PYTHON_TAG: &str = "<|python_tag|>";

/// How a model writes tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    /// `<tool_call>\n{"name": "f", "arguments": {..}}\n</tool_call>`, several allowed (Hermes 2/3,
    /// Qwen 2.5, Qwen3, QwQ).
    Hermes,
    /// `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{..}\n```<｜tool▁call▁end｜>`
    /// (more calls after `\n`), then `<｜tool▁calls▁end｜>` (DeepSeek V3, R1 and its distills).
    DeepSeekR1,
    /// `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>{..}<｜tool▁call▁end｜>…<｜tool▁calls▁end｜>`
    /// (DeepSeek V3.1).
    DeepSeekV31,
    /// `{"name": "f", "parameters": {..}}` as the whole answer, optionally after `<|python_tag|>`
    /// (Llama 3.1/3.2/3.3).
    Llama3Json,
    /// `<tool_call>\n<function=f>\n<parameter=a>\nvalue\n</parameter>\n</function>\n</tool_call>`,
    /// several allowed (Qwen3-Coder, Qwen3.5); see [`crate::qwen_xml`].
    QwenXml,
    /// `<tool_call>f\n<arg_key>a</arg_key>\n<arg_value>v</arg_value>\n</tool_call>`, several
    /// allowed (GLM-4.5/4.6; GLM-4.7 without the newlines); see [`crate::glm_xml`].
    Glm(GlmLayout),
    /// `<|tool_calls_section_begin|><|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>{..}<|tool_call_end|>…<|tool_calls_section_end|>`
    /// (Kimi K2 Instruct and Thinking); the call id is `functions.f:0` as written.
    KimiK2,
}

impl ToolFormat {
    /// The format a chat template teaches, from its source; `None` when it renders no tool calls.
    pub fn detect(template_source: &str) -> Option<ToolFormat> {
        let t = template_source;
        if t.contains(kimi::CALLS_BEGIN) && t.contains(kimi::CALL_BEGIN) {
            Some(ToolFormat::KimiK2)
        } else if t.contains(hermes::CALL_BEGIN) && t.contains(glm_xml::ARG_KEY_OPEN) {
            Some(ToolFormat::Glm(GlmLayout::detect(t)))
        } else if t.contains(deepseek::CALL_BEGIN) {
            if t.contains("```json") {
                Some(ToolFormat::DeepSeekR1)
            } else {
                Some(ToolFormat::DeepSeekV31)
            }
        } else if t.contains(hermes::CALL_BEGIN)
            && t.contains(qwen_xml::FUNCTION_OPEN)
            && t.contains(qwen_xml::PARAM_OPEN)
        {
            // As llama.cpp tells them apart: Hermes templates never show `<function=`.
            Some(ToolFormat::QwenXml)
        } else if t.contains(hermes::CALL_BEGIN) {
            Some(ToolFormat::Hermes)
        } else if t.contains("\"parameters\": ") && t.contains("tool_call") {
            Some(ToolFormat::Llama3Json)
        } else {
            None
        }
    }

    /// The texts that open a tool call in answer text.
    fn openers(self) -> &'static [&'static str] {
        match self {
            ToolFormat::Hermes | ToolFormat::QwenXml | ToolFormat::Glm(_) => &[hermes::CALL_BEGIN],
            ToolFormat::DeepSeekR1 | ToolFormat::DeepSeekV31 => {
                &[deepseek::CALLS_BEGIN, deepseek::CALL_BEGIN]
            }
            ToolFormat::KimiK2 => &[kimi::CALLS_BEGIN, kimi::CALL_BEGIN],
            ToolFormat::Llama3Json => &[],
        }
    }

    /// The text that ends one call.
    fn call_end(self) -> &'static str {
        match self {
            ToolFormat::Hermes | ToolFormat::QwenXml | ToolFormat::Glm(_) => hermes::CALL_END,
            ToolFormat::DeepSeekR1 | ToolFormat::DeepSeekV31 => deepseek::CALL_END,
            ToolFormat::KimiK2 => kimi::CALL_END,
            ToolFormat::Llama3Json => "}",
        }
    }

    /// The markers of a calls section (begin, end, one call's begin), for formats with one.
    fn section(self) -> Option<(&'static str, &'static str, &'static str)> {
        match self {
            ToolFormat::DeepSeekR1 | ToolFormat::DeepSeekV31 => Some((
                deepseek::CALLS_BEGIN,
                deepseek::CALLS_END,
                deepseek::CALL_BEGIN,
            )),
            ToolFormat::KimiK2 => Some((kimi::CALLS_BEGIN, kimi::CALLS_END, kimi::CALL_BEGIN)),
            _ => None,
        }
    }
}

/// One parsed tool call, as OpenAI's `tool_calls[i]` (type `function`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text.
    pub arguments: String,
}

/// A piece of parsed answer text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolDelta {
    /// Plain answer text.
    Content(String),
    /// A new tool call: OpenAI's first `tool_calls` delta for `index` (with `id`, `type` and
    /// `function.name`).
    ToolCallStart {
        index: usize,
        id: String,
        name: String,
    },
    /// More of call `index`'s `function.arguments`.
    ToolCallArguments { index: usize, arguments: String },
}

/// A fresh OpenAI-style call id: `call_` and 24 random letters and digits.
pub fn new_call_id() -> String {
    let mut rng = rand::thread_rng();
    let tail: String = (0..24)
        .map(|_| rng.sample(rand::distributions::Alphanumeric) as char)
        .collect();
    format!("call_{tail}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Answer text; looking for a tool-call opener.
    Content,
    /// Llama 3.1: at the start of the answer or after a call; is a JSON call coming?
    LlamaStart,
    /// Llama 3.1: the answer is plain text.
    LlamaText,
    /// Inside a call before its arguments.
    Header,
    /// Streaming the arguments JSON.
    Args,
    /// Arguments that are not a JSON object: collected up to the end of the call.
    RawArgs,
    /// After the arguments, up to the end of the call.
    Tail,
    /// DeepSeek: inside the calls section, between calls.
    Between,
    /// Hermes: a call whose JSON is not `{"name": .., "arguments": ..}` in that order: read it
    /// whole, up to `</tool_call>`.
    Buffered,
    /// Qwen XML: inside a `<tool_call>` block.
    Xml,
    /// GLM: inside a `<tool_call>` block.
    Glm,
}

/// Tracks where a JSON value ends (strings and escapes aware).
#[derive(Debug, Clone, Copy, Default)]
struct JsonScan {
    depth: u32,
    in_str: bool,
    esc: bool,
}

impl JsonScan {
    /// Feeds one character of a value that starts with `{` or `[`; true when it closes.
    fn feed(&mut self, c: char) -> bool {
        if self.in_str {
            if self.esc {
                self.esc = false;
            } else if c == '\\' {
                self.esc = true;
            } else if c == '"' {
                self.in_str = false;
            }
            return false;
        }
        match c {
            '"' => self.in_str = true,
            '{' | '[' => self.depth += 1,
            '}' | ']' => {
                self.depth = self.depth.saturating_sub(1);
                return self.depth == 0;
            }
            _ => {}
        }
        false
    }
}

/// The streaming tool-call parser for one answer.
#[derive(Debug, Clone)]
pub struct ToolCallParser {
    format: ToolFormat,
    state: State,
    buf: String,
    /// The text that opened the current call, to give back as content if it is no call after all.
    opener: String,
    scan: JsonScan,
    /// Content already emitted (leading whitespace is dropped until then).
    content_started: bool,
    /// Whitespace held back: it is dropped if a tool call or the end follows.
    ws: String,
    content: String,
    calls: Vec<ToolCall>,
    /// Qwen XML: the block being parsed, and the parameter types that decide its values' JSON.
    xml: XmlCall,
    glm: GlmCall,
    param_types: Arc<ParamTypes>,
    /// The id the model gave the call being opened (Kimi K2), else a fresh one is made.
    next_id: Option<String>,
}

/// The result of parsing a whole answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedToolCalls {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
}

impl ToolCallParser {
    pub fn new(format: ToolFormat) -> Self {
        ToolCallParser {
            format,
            state: if format == ToolFormat::Llama3Json {
                State::LlamaStart
            } else {
                State::Content
            },
            buf: String::new(),
            opener: String::new(),
            scan: JsonScan::default(),
            content_started: false,
            ws: String::new(),
            content: String::new(),
            calls: Vec::new(),
            xml: XmlCall::new(),
            glm: GlmCall::new(),
            param_types: Arc::default(),
            next_id: None,
        }
    }

    /// Types XML parameter values by these tools' `parameters` schemas (see
    /// [`crate::qwen_xml`]); other formats take arguments as written.
    pub fn with_tools(self, tools: &[Value]) -> Self {
        self.with_param_types(Arc::new(ParamTypes::from_tools(tools)))
    }

    pub(crate) fn with_param_types(mut self, types: Arc<ParamTypes>) -> Self {
        self.param_types = types;
        self
    }

    pub fn format(&self) -> ToolFormat {
        self.format
    }

    /// Feeds answer text; returns what is certain now.
    pub fn push(&mut self, text: &str) -> Vec<ToolDelta> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        while self.step(&mut out, false) {}
        out
    }

    /// Ends the answer: releases held-back text; a call cut off in its arguments keeps what it
    /// has.
    pub fn finish(&mut self) -> Vec<ToolDelta> {
        let mut out = Vec::new();
        while self.step(&mut out, true) {}
        self.ws.clear();
        out
    }

    /// The calls parsed so far.
    pub fn tool_calls(&self) -> &[ToolCall] {
        &self.calls
    }

    /// The content emitted so far.
    pub fn content(&self) -> &str {
        &self.content
    }

    /// Content and calls (call after [`ToolCallParser::finish`]).
    pub fn into_result(self) -> ParsedToolCalls {
        ParsedToolCalls {
            content: self.content,
            tool_calls: self.calls,
        }
    }

    /// Emits answer text, dropping leading whitespace and holding back trailing whitespace.
    fn emit_content(&mut self, out: &mut Vec<ToolDelta>, text: &str) {
        let text = if self.content_started {
            text
        } else {
            text.trim_start()
        };
        if text.is_empty() {
            return;
        }
        let core = text.trim_end();
        if core.is_empty() {
            self.ws.push_str(text);
            return;
        }
        let mut s = std::mem::take(&mut self.ws);
        s.push_str(core);
        self.ws = text[core.len()..].to_string();
        self.content_started = true;
        self.content.push_str(&s);
        match out.last_mut() {
            Some(ToolDelta::Content(c)) => c.push_str(&s),
            _ => out.push(ToolDelta::Content(s)),
        }
    }

    fn start_call(&mut self, out: &mut Vec<ToolDelta>, name: String) {
        self.ws.clear();
        let index = self.calls.len();
        let id = self.next_id.take().unwrap_or_else(new_call_id);
        self.calls.push(ToolCall {
            id: id.clone(),
            name: name.clone(),
            arguments: String::new(),
        });
        out.push(ToolDelta::ToolCallStart { index, id, name });
    }

    fn emit_args(&mut self, out: &mut Vec<ToolDelta>, text: &str) {
        if text.is_empty() {
            return;
        }
        let index = self.calls.len() - 1;
        self.calls[index].arguments.push_str(text);
        match out.last_mut() {
            Some(ToolDelta::ToolCallArguments {
                index: i,
                arguments,
            }) if *i == index => arguments.push_str(text),
            _ => out.push(ToolDelta::ToolCallArguments {
                index,
                arguments: text.to_string(),
            }),
        }
    }

    /// Gives back an aborted call's text as content.
    fn abort_call(&mut self, out: &mut Vec<ToolDelta>) {
        let mut text = std::mem::take(&mut self.opener);
        text.push_str(&std::mem::take(&mut self.buf));
        self.emit_content(out, &text);
        self.state = self.text_state();
    }

    fn text_state(&self) -> State {
        if self.format == ToolFormat::Llama3Json {
            State::LlamaText
        } else {
            State::Content
        }
    }

    /// One transition; false when more text is needed.
    fn step(&mut self, out: &mut Vec<ToolDelta>, last: bool) -> bool {
        match self.state {
            State::Content => self.step_content(out, last),
            State::LlamaText => self.step_llama_text(out),
            State::LlamaStart => self.step_llama_start(out, last),
            State::Between => self.step_between(out, last),
            State::Header => self.step_header(out, last),
            State::Args => self.step_args(out, last),
            State::RawArgs => self.step_raw_args(out, last),
            State::Tail => self.step_tail(last),
            State::Buffered => self.step_buffered(out, last),
            State::Xml => self.step_xml(out, last),
            State::Glm => self.step_glm(out, last),
        }
    }

    /// Answer text up to the first opener; a possible opener's start is held back.
    fn step_content(&mut self, out: &mut Vec<ToolDelta>, last: bool) -> bool {
        let openers = self.format.openers();
        let found = openers
            .iter()
            .filter_map(|o| self.buf.find(o).map(|i| (i, *o)))
            .min();
        if let Some((i, opener)) = found {
            let before = self.buf[..i].to_string();
            self.emit_content(out, &before);
            self.buf.drain(..i + opener.len());
            self.opener = opener.to_string();
            self.state = if opener == deepseek::CALLS_BEGIN || opener == kimi::CALLS_BEGIN {
                State::Between
            } else if self.format == ToolFormat::QwenXml {
                self.xml = XmlCall::new();
                State::Xml
            } else if matches!(self.format, ToolFormat::Glm(_)) {
                self.glm = GlmCall::new();
                State::Glm
            } else {
                State::Header
            };
            return true;
        }
        let keep = if last {
            0
        } else {
            openers
                .iter()
                .map(|o| partial_suffix(&self.buf, o))
                .max()
                .unwrap_or(0)
        };
        let text: String = self.buf.drain(..self.buf.len() - keep).collect();
        self.emit_content(out, &text);
        false
    }

    /// Llama 3.1 plain answer: everything is content.
    fn step_llama_text(&mut self, out: &mut Vec<ToolDelta>) -> bool {
        let text = std::mem::take(&mut self.buf);
        self.emit_content(out, &text);
        false
    }

    /// Llama 3.1: a JSON call (optionally after `<|python_tag|>`) or plain text?
    fn step_llama_start(&mut self, out: &mut Vec<ToolDelta>, last: bool) -> bool {
        let t = self
            .buf
            .trim_start_matches(|c: char| c.is_whitespace() || c == ';');
        let t = t.strip_prefix(PYTHON_TAG).unwrap_or(t).trim_start();
        if t.is_empty() || (PYTHON_TAG.starts_with(t) && !last) {
            if last {
                self.buf.clear();
            }
            return false;
        }
        if !t.starts_with('{') {
            self.state = State::LlamaText;
            return true;
        }
        match match_json_header(t, &["parameters", "arguments"]) {
            Header::Incomplete if !last => false,
            Header::Incomplete | Header::NoMatch => {
                self.state = State::LlamaText;
                true
            }
            Header::Match { name, consumed } => {
                let skip = self.buf.len() - t.len() + consumed;
                self.open_call(out, name, skip);
                true
            }
        }
    }

    /// DeepSeek and Kimi, inside the calls section: another call, the section's end, or text.
    fn step_between(&mut self, out: &mut Vec<ToolDelta>, last: bool) -> bool {
        let Some((_, calls_end, call_begin)) = self.format.section() else {
            self.state = State::Content;
            return true;
        };
        let t = self.buf.trim_start();
        if let Some(rest) = t.strip_prefix(call_begin) {
            self.buf = rest.to_string();
            self.opener = call_begin.to_string();
            self.state = State::Header;
            true
        } else if let Some(rest) = t.strip_prefix(calls_end) {
            self.buf = rest.to_string();
            self.state = State::Content;
            true
        } else if !last && (call_begin.starts_with(t) || calls_end.starts_with(t)) {
            false
        } else if t.is_empty() {
            self.buf.clear();
            false
        } else {
            // Not a call after all: answer text.
            if self.calls.is_empty() {
                self.abort_call(out);
            } else {
                self.state = State::Content;
            }
            true
        }
    }

    /// A call's header, up to its arguments.
    fn step_header(&mut self, out: &mut Vec<ToolDelta>, last: bool) -> bool {
        match self.match_header() {
            Header::Incomplete if !last => false,
            Header::Match { name, consumed } => {
                let name = if self.format == ToolFormat::KimiK2 {
                    let (id, name) = kimi_call_id(&name, self.calls.len());
                    self.next_id = Some(id);
                    name
                } else {
                    name
                };
                self.open_call(out, name, consumed);
                true
            }
            Header::Incomplete | Header::NoMatch => {
                if self.format == ToolFormat::Hermes {
                    self.state = State::Buffered;
                } else {
                    self.abort_call(out);
                }
                true
            }
        }
    }

    /// Matches the buffered text against this format's call header; a header still incomplete
    /// when the call's end has arrived is no header.
    fn match_header(&self) -> Header {
        let (header, call_end) = match self.format {
            ToolFormat::Hermes => (
                match_json_header(&self.buf, &["arguments", "parameters"]),
                hermes::CALL_END,
            ),
            ToolFormat::DeepSeekR1 | ToolFormat::DeepSeekV31 => (
                match_deepseek_header(&self.buf, self.format),
                deepseek::CALL_END,
            ),
            ToolFormat::KimiK2 => (match_kimi_header(&self.buf), kimi::CALL_END),
            ToolFormat::Llama3Json | ToolFormat::QwenXml | ToolFormat::Glm(_) => {
                unreachable!("Llama calls start in LlamaStart, XML calls in Xml or Glm")
            }
        };
        if matches!(header, Header::Incomplete) && self.buf.contains(call_end) {
            Header::NoMatch
        } else {
            header
        }
    }

    /// Starts call `name` whose arguments follow the first `skip` bytes of the buffer.
    fn open_call(&mut self, out: &mut Vec<ToolDelta>, name: String, skip: usize) {
        self.buf.drain(..skip);
        self.start_call(out, name);
        self.scan = JsonScan::default();
        self.state = State::Args;
    }

    /// Streams a JSON object or array of arguments up to where it closes.
    fn step_args(&mut self, out: &mut Vec<ToolDelta>, last: bool) -> bool {
        match self.scan_args() {
            (Some(s), Some(e)) => {
                let args = self.buf[s..e].to_string();
                self.emit_args(out, &args);
                self.buf.drain(..e);
                self.state = State::Tail;
                true
            }
            (Some(s), None) => {
                let args = self.buf[s..].to_string();
                self.emit_args(out, &args);
                self.buf.clear();
                if last {
                    self.state = self.text_state();
                }
                false
            }
            (None, _) => {
                let ws_only = self.buf.trim_start().is_empty();
                if ws_only && !last {
                    return false;
                }
                if ws_only {
                    self.buf.clear();
                    return false;
                }
                self.state = State::RawArgs;
                true
            }
        }
    }

    /// Where the arguments start in the buffer (`None`: not a JSON object or array, or only
    /// whitespace so far) and where they end (`None`: not yet).
    fn scan_args(&mut self) -> (Option<usize>, Option<usize>) {
        // Mid-arguments (the scanner is inside the value) the text continues them.
        let mut start = (self.scan.depth > 0).then_some(0);
        for (i, c) in self.buf.char_indices() {
            if start.is_none() {
                if c.is_whitespace() {
                    continue;
                }
                if c != '{' && c != '[' {
                    break;
                }
                start = Some(i);
            }
            if self.scan.feed(c) {
                return (start, Some(i + c.len_utf8()));
            }
        }
        (start, None)
    }

    /// Arguments that are not JSON: everything up to the end of the call (or DeepSeek R1's
    /// closing fence).
    fn step_raw_args(&mut self, out: &mut Vec<ToolDelta>, last: bool) -> bool {
        let end = self.format.call_end();
        let fence = (self.format == ToolFormat::DeepSeekR1)
            .then(|| self.buf.find("```"))
            .flatten();
        let found = match (fence, self.buf.find(end)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Without the end in sight, wait for more text (until the answer ends): emitting what
        // has arrived would cut the arguments at a piece boundary.
        let stop = match found {
            Some(i) => Some(i),
            None if last => Some(self.buf.len()),
            None => None,
        };
        let Some(i) = stop else { return false };
        let mut raw = self.buf[..i].trim();
        if self.format == ToolFormat::Hermes {
            // The object around the arguments closes before `</tool_call>`.
            raw = raw.strip_suffix('}').unwrap_or(raw).trim_end();
        }
        let raw = raw.to_string();
        self.emit_args(out, &raw);
        self.buf.drain(..i);
        self.state = State::Tail;
        true
    }

    /// After the arguments: skips to the end of the call.
    fn step_tail(&mut self, last: bool) -> bool {
        let end = self.format.call_end();
        if let Some(i) = self.buf.find(end) {
            self.buf.drain(..i + end.len());
            self.state = match self.format {
                ToolFormat::Hermes | ToolFormat::QwenXml | ToolFormat::Glm(_) => State::Content,
                ToolFormat::DeepSeekR1 | ToolFormat::DeepSeekV31 | ToolFormat::KimiK2 => {
                    State::Between
                }
                ToolFormat::Llama3Json => State::LlamaStart,
            };
            return true;
        }
        if last {
            self.buf.clear();
            self.state = self.text_state();
            return false;
        }
        let keep = partial_suffix(&self.buf, end);
        self.buf.drain(..self.buf.len() - keep);
        false
    }

    /// Hermes: a whole call body up to `</tool_call>`, parsed as JSON in any key order; if it
    /// is no call, its text goes back to the content.
    fn step_buffered(&mut self, out: &mut Vec<ToolDelta>, last: bool) -> bool {
        let end = self.buf.find(hermes::CALL_END);
        if end.is_none() && !last {
            return false;
        }
        let body_end = end.unwrap_or(self.buf.len());
        let parsed = parse_call_json(&self.buf[..body_end]);
        let mut text = self.buf[..body_end].to_string();
        if end.is_some() {
            text.push_str(hermes::CALL_END);
        }
        self.buf
            .drain(..(body_end + hermes::CALL_END.len()).min(self.buf.len()));
        match parsed {
            Some((name, args)) => {
                self.start_call(out, name);
                self.emit_args(out, &args);
            }
            None => {
                let mut whole = std::mem::take(&mut self.opener);
                whole.push_str(&text);
                self.emit_content(out, &whole);
            }
        }
        self.state = State::Content;
        true
    }

    /// Qwen XML: a `<tool_call>` block, up to its end.
    fn step_xml(&mut self, out: &mut Vec<ToolDelta>, last: bool) -> bool {
        let mut events = Vec::new();
        let outcome = self
            .xml
            .step(&mut self.buf, last, &self.param_types, &mut events);
        self.xml_events(out, events, outcome)
    }

    /// GLM: a `<tool_call>` block, up to its end.
    fn step_glm(&mut self, out: &mut Vec<ToolDelta>, last: bool) -> bool {
        let mut events = Vec::new();
        let outcome = self
            .glm
            .step(&mut self.buf, last, &self.param_types, &mut events);
        self.xml_events(out, events, outcome)
    }

    /// Passes on what an XML-like block parser found; true when parsing goes on.
    fn xml_events(
        &mut self,
        out: &mut Vec<ToolDelta>,
        events: Vec<Event>,
        outcome: Outcome,
    ) -> bool {
        for e in events {
            match e {
                Event::Start(name) => self.start_call(out, name),
                Event::Args(a) => self.emit_args(out, &a),
            }
        }
        match outcome {
            Outcome::More => false,
            Outcome::Done => {
                self.state = State::Content;
                true
            }
            Outcome::NotACall => {
                // Only the opener is text for sure: what follows may hold a real call.
                let opener = std::mem::take(&mut self.opener);
                self.emit_content(out, &opener);
                self.state = State::Content;
                true
            }
        }
    }
}

/// Parses a whole answer.
pub fn parse_tool_calls(format: ToolFormat, text: &str) -> ParsedToolCalls {
    parse_tool_calls_with(format, &[], text)
}

/// Parses a whole answer, typing XML parameter values by `tools`' schemas.
pub fn parse_tool_calls_with(format: ToolFormat, tools: &[Value], text: &str) -> ParsedToolCalls {
    let mut p = ToolCallParser::new(format).with_tools(tools);
    p.push(text);
    p.finish();
    p.into_result()
}

/// `{"name": .., "arguments"|"parameters": ..}` in any key order → (name, arguments text).
fn parse_call_json(body: &str) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
    let name = v.get("name")?.as_str()?.to_string();
    let args = v.get("arguments").or_else(|| v.get("parameters"))?;
    let args = match args {
        serde_json::Value::String(s) => s.clone(),
        other => serde_json::to_string(other).ok()?,
    };
    Some((name, args))
}

/// The outcome of matching a call's header against the text so far.
#[derive(Debug, PartialEq, Eq)]
enum Header {
    /// The text so far is a prefix of a header.
    Incomplete,
    /// It cannot be a header.
    NoMatch,
    /// A header naming `name`; the arguments start after `consumed` bytes.
    Match { name: String, consumed: usize },
}

/// A cursor over header text: each step fails with `Incomplete` (ran out) or `NoMatch`.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl Cursor<'_> {
    fn rest(&self) -> &str {
        &self.s[self.pos..]
    }

    fn ws(&mut self) {
        let r = self.rest();
        self.pos += r.len() - r.trim_start().len();
    }

    fn lit(&mut self, lit: &str) -> Result<(), Header> {
        let r = self.rest();
        if r.starts_with(lit) {
            self.pos += lit.len();
            Ok(())
        } else if lit.starts_with(r) {
            Err(Header::Incomplete)
        } else {
            Err(Header::NoMatch)
        }
    }

    /// A JSON string, decoded.
    fn string(&mut self) -> Result<String, Header> {
        self.lit("\"")?;
        let start = self.pos - 1;
        let mut esc = false;
        for (i, c) in self.rest().char_indices() {
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                let end = self.pos + i + 1;
                let s = serde_json::from_str(&self.s[start..end]).map_err(|_| Header::NoMatch)?;
                self.pos = end;
                return Ok(s);
            }
        }
        Err(Header::Incomplete)
    }

    /// One of `keys` as a JSON string.
    fn key(&mut self, keys: &[&str]) -> Result<(), Header> {
        let r = self.rest();
        for k in keys {
            let quoted = format!("\"{k}\"");
            if r.starts_with(&quoted) {
                self.pos += quoted.len();
                return Ok(());
            }
        }
        if keys.iter().any(|k| format!("\"{k}\"").starts_with(r)) {
            Err(Header::Incomplete)
        } else {
            Err(Header::NoMatch)
        }
    }
}

/// `{"name": "f", "arguments": ` (whitespace anywhere between).
fn match_json_header(s: &str, arg_keys: &[&str]) -> Header {
    let mut c = Cursor { s, pos: 0 };
    let r = (|| {
        c.ws();
        c.lit("{")?;
        c.ws();
        c.key(&["name"])?;
        c.ws();
        c.lit(":")?;
        c.ws();
        let name = c.string()?;
        c.ws();
        c.lit(",")?;
        c.ws();
        c.key(arg_keys)?;
        c.ws();
        c.lit(":")?;
        Ok(name)
    })();
    match r {
        Ok(name) => Header::Match {
            name,
            consumed: c.pos,
        },
        Err(h) => h,
    }
}

/// Kimi K2: `functions.f:0<|tool_call_argument_begin|>`, up to the arguments (the name as
/// written, id and all: see [`kimi_call_id`]).
fn match_kimi_header(s: &str) -> Header {
    let Some(sep) = s.find(kimi::ARGS_BEGIN) else {
        return Header::Incomplete;
    };
    let id = s[..sep].trim();
    if id.is_empty() || id.contains(char::is_whitespace) {
        return Header::NoMatch;
    }
    Header::Match {
        name: id.to_string(),
        consumed: sep + kimi::ARGS_BEGIN.len(),
    }
}

/// A Kimi call's id and function name from what the model wrote, `functions.NAME:IDX`; without
/// that form the text is the name and the id is made in that form from the call's index.
fn kimi_call_id(written: &str, index: usize) -> (String, String) {
    let name = written.strip_prefix(kimi::ID_PREFIX).and_then(|rest| {
        let (name, idx) = rest.rsplit_once(':')?;
        let numbered = !idx.is_empty() && idx.bytes().all(|b| b.is_ascii_digit());
        (numbered && !name.is_empty()).then_some(name)
    });
    match name {
        Some(name) => (written.to_string(), name.to_string()),
        None => {
            let name = written.strip_prefix(kimi::ID_PREFIX).unwrap_or(written);
            (
                format!("{}{name}:{index}", kimi::ID_PREFIX),
                name.to_string(),
            )
        }
    }
}

/// DeepSeek: `function<｜tool▁sep｜>f\n```json\n` (R1) or `f<｜tool▁sep｜>` (V3.1), up to the
/// arguments.
fn match_deepseek_header(s: &str, format: ToolFormat) -> Header {
    let Some(sep) = s.find(deepseek::SEP) else {
        return Header::Incomplete;
    };
    let after = sep + deepseek::SEP.len();
    let (name, mut pos) = if format == ToolFormat::DeepSeekR1 {
        let Some(nl) = s[after..].find('\n') else {
            return Header::Incomplete;
        };
        (s[after..after + nl].trim(), after + nl + 1)
    } else {
        (s[..sep].trim(), after)
    };
    if name.is_empty() {
        return Header::NoMatch;
    }
    // An optional ```json fence before the arguments.
    let mut c = Cursor { s, pos };
    c.ws();
    match c.lit("```") {
        Ok(()) => {
            if c.lit("json") == Err(Header::Incomplete) {
                return Header::Incomplete;
            }
            pos = c.pos;
        }
        Err(Header::Incomplete) => return Header::Incomplete,
        Err(_) => {}
    }
    Header::Match {
        name: name.to_string(),
        consumed: pos,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_headers() {
        let h = r#"{"name": "get_weather", "arguments": {"a": 1}}"#;
        assert_eq!(
            match_json_header(h, &["arguments"]),
            Header::Match {
                name: "get_weather".into(),
                consumed: 36
            }
        );
        assert_eq!(
            match_json_header(r#" {"na"#, &["arguments"]),
            Header::Incomplete
        );
        assert_eq!(
            match_json_header(r#"{"name": "a\"b"#, &["arguments"]),
            Header::Incomplete
        );
        assert_eq!(
            match_json_header(r#"{"arguments": {}, "name": "x"}"#, &["arguments"]),
            Header::NoMatch
        );
    }

    fn collect(
        format: ToolFormat,
        tools: &[Value],
        text: &str,
        n: usize,
    ) -> (String, Vec<(String, String)>) {
        let mut p = ToolCallParser::new(format).with_tools(tools);
        let chars: Vec<char> = text.chars().collect();
        let mut deltas = Vec::new();
        for c in chars.chunks(n) {
            deltas.extend(p.push(&c.iter().collect::<String>()));
        }
        deltas.extend(p.finish());
        // The deltas add up to the result.
        let mut content = String::new();
        let mut calls: Vec<(String, String)> = Vec::new();
        for d in deltas {
            match d {
                ToolDelta::Content(t) => content.push_str(&t),
                ToolDelta::ToolCallStart { index, name, id } => {
                    assert_eq!(index, calls.len());
                    assert!(id.starts_with("call_") || id.starts_with(kimi::ID_PREFIX));
                    calls.push((name, String::new()));
                }
                ToolDelta::ToolCallArguments { index, arguments } => {
                    calls[index].1.push_str(&arguments)
                }
            }
        }
        let r = p.into_result();
        assert_eq!(r.content, content);
        let got: Vec<(String, String)> = r
            .tool_calls
            .iter()
            .map(|c| (c.name.clone(), c.arguments.clone()))
            .collect();
        assert_eq!(got, calls);
        (content, calls)
    }

    fn check(format: ToolFormat, text: &str, content: &str, calls: &[(&str, &str)]) {
        check_with(format, &[], text, content, calls);
    }

    /// Parsed whole and in pieces of 1 to 7 characters, `text` gives `content` and `calls`.
    fn check_with(
        format: ToolFormat,
        tools: &[Value],
        text: &str,
        content: &str,
        calls: &[(&str, &str)],
    ) {
        let want: Vec<(String, String)> = calls
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        for n in [1, 2, 3, 4, 5, 6, 7, 1000] {
            assert_eq!(
                collect(format, tools, text, n),
                (content.to_string(), want.clone()),
                "{format:?} {text:?} in pieces of {n}"
            );
        }
    }

    #[test]
    fn hermes() {
        let f = ToolFormat::Hermes;
        check(
            f,
            "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"q\": \"a}\\\"{\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": {}}\n</tool_call>",
            "Let me look.",
            &[("get_weather", "{\"q\": \"a}\\\"{\"}"), ("b", "{}")],
        );
        check(
            f,
            "a < b <tool and <tool_cal",
            "a < b <tool and <tool_cal",
            &[],
        );
        check(
            f,
            "<tool_call>{\"arguments\": {\"x\": 1}, \"name\": \"f\"}</tool_call>",
            "",
            &[("f", "{\"x\":1}")],
        );
        check(
            f,
            "<tool_call>not json</tool_call> ok",
            "<tool_call>not json</tool_call> ok",
            &[],
        );
        check(
            f,
            "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": [1, {\"y\"",
            "",
            &[("f", "{\"x\": [1, {\"y\"")],
        );
    }

    #[test]
    fn deepseek() {
        let text = "Sure.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{\"a\": 1}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>g\n```json\n{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
        check(
            ToolFormat::DeepSeekR1,
            text,
            "Sure.",
            &[("f", "{\"a\": 1}"), ("g", "{}")],
        );
        let text = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>{\"a\": \"<｜tool▁call▁end｜>\"}<｜tool▁call▁end｜><｜tool▁call▁begin｜>g<｜tool▁sep｜>{}<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
        check(
            ToolFormat::DeepSeekV31,
            text,
            "",
            &[("f", "{\"a\": \"<｜tool▁call▁end｜>\"}"), ("g", "{}")],
        );
        check(
            ToolFormat::DeepSeekV31,
            "<｜tool▁calls▁begin｜>oops",
            "<｜tool▁calls▁begin｜>oops",
            &[],
        );
    }

    #[test]
    fn llama() {
        let f = ToolFormat::Llama3Json;
        check(
            f,
            "{\"name\": \"f\", \"parameters\": {\"a\": {\"b\": 2}}}",
            "",
            &[("f", "{\"a\": {\"b\": 2}}")],
        );
        check(
            f,
            "<|python_tag|>{\"name\": \"f\", \"parameters\": {}}",
            "",
            &[("f", "{}")],
        );
        check(f, "{\"answer\": 42}", "{\"answer\": 42}", &[]);
        check(f, "Paris {\"name\"", "Paris {\"name\"", &[]);
        check(f, "{\"name\": \"f\"}", "{\"name\": \"f\"}", &[]);
    }

    /// Arguments that are not a JSON object or array (the `RawArgs` state).
    #[test]
    fn raw_arguments() {
        check(
            ToolFormat::Hermes,
            "<tool_call>{\"name\": \"f\", \"arguments\": \"x=1\"}</tool_call> done",
            "done",
            &[("f", "\"x=1\"")],
        );
        check(
            ToolFormat::DeepSeekR1,
            "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\nx = 1\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
            "",
            &[("f", "x = 1")],
        );
        check(
            ToolFormat::DeepSeekV31,
            "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>x = 1<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
            "",
            &[("f", "x = 1")],
        );
        check(
            ToolFormat::Llama3Json,
            "{\"name\": \"f\", \"parameters\": \"xy\"} after",
            "after",
            &[("f", "\"xy\"")],
        );
    }

    #[test]
    fn qwen_xml() {
        let f = ToolFormat::QwenXml;
        check(
            f,
            "Let me check.\n\n<tool_call>\n<function=get_weather>\n<parameter=location>\nParis, France\n</parameter>\n<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>",
            "Let me check.",
            &[("get_weather", r#"{"location":"Paris, France","days":3}"#)],
        );
        // Several calls, whitespace around them, a multi-line value, no parameters, values
        // without the format's newlines, several functions in one block.
        check(
            f,
            "\n<tool_call>\n<function=a>\n</function>\n</tool_call>\n<tool_call>\n<function=b>\n<parameter=x>\nmulti\nline\n\n</parameter>\n<parameter=y>v</parameter></function></tool_call>\n",
            "",
            &[("a", "{}"), ("b", r#"{"x":"multi\nline\n","y":"v"}"#)],
        );
        check(
            f,
            "<tool_call>\n<function=a>\n</function>\n<function=b>\n<parameter=q>\n</parameter>\n</function>\n</tool_call> after",
            "after",
            &[("a", "{}"), ("b", r#"{"q":""}"#)],
        );
        // Quotes, backslashes and tags in a value are text.
        check(
            f,
            "<tool_call>\n<function=run>\n<parameter=code>\nif a < b: print(\"x\\y\") # </tool_call>\n</parameter>\n</function>\n</tool_call>",
            "",
            &[("run", r#"{"code":"if a < b: print(\"x\\y\") # </tool_call>"}"#)],
        );
    }

    #[test]
    fn qwen_xml_not_calls_and_cut_off_calls() {
        let f = ToolFormat::QwenXml;
        check(
            f,
            "<tool_call>\nnot xml</tool_call> ok",
            "<tool_call>\nnot xml</tool_call> ok",
            &[],
        );
        check(
            f,
            "a < b <tool and <tool_cal",
            "a < b <tool and <tool_cal",
            &[],
        );
        check(
            f,
            "<tool_call>\n<function=\n</tool_call><tool_call>\n<function=f>\n</function>\n</tool_call>",
            "<tool_call>\n<function=\n</tool_call>",
            &[("f", "{}")],
        );
        check(f, "<tool_call>\n<funct", "<tool_call>\n<funct", &[]);
        check(
            f,
            "<tool_call>\n<function=f>\n<parameter=q>\nhel",
            "",
            &[("f", r#"{"q":"hel"}"#)],
        );
        check(f, "<tool_call>\n<function=f>\n<param", "", &[("f", "{}")]);
        check(
            f,
            "<tool_call>\n<function=f>\n<parameter=n>\n[1, 2",
            "",
            &[("f", r#"{"n":"[1, 2"}"#)],
        );
        // Text where a parameter should be ends the call.
        check(
            f,
            "<tool_call>\n<function=f>\n<parameter=a>\n1\n</parameter>\noops</function>",
            "oops</function>",
            &[("f", r#"{"a":1}"#)],
        );
    }

    /// Values typed by the tool's schema, as the Qwen3.5 template prints arguments (Python's
    /// `str()`: `True`, `None`); without a schema only JSON that is not a string is JSON.
    #[test]
    fn qwen_xml_values_follow_the_schema() {
        let tools = [serde_json::json!({"type": "function", "function": {
            "name": "f", "parameters": {"type": "object", "properties": {
                "s": {"type": "string"}, "i": {"type": "integer"}, "x": {"type": "number"},
                "b": {"type": "boolean"}, "m": {"type": ["string", "integer"]},
                "o": {"type": "object"}, "a": {"type": "array"}, "e": {"enum": ["x", 2]},
                "n": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}}}})];
        let text = "<tool_call>\n<function=f>\n<parameter=s>\n3\n</parameter>\n<parameter=i>\n 42 \n</parameter>\n<parameter=x>\n0.5\n</parameter>\n<parameter=b>\nTrue\n</parameter>\n<parameter=m>\nNone\n</parameter>\n<parameter=o>\n{\"k\": [1, null]}\n</parameter>\n<parameter=a>\n[\"a\", \"b\"]\n</parameter>\n<parameter=e>\n2\n</parameter>\n<parameter=n>\nNone\n</parameter>\n<parameter=i>\n3 days\n</parameter>\n<parameter=u>\n007\n</parameter>\n<parameter=u>\nfalse\n</parameter>\n</function>\n</tool_call>";
        let typed = r#"{"s":"3","i":42,"x":0.5,"b":true,"m":"None","o":{"k": [1, null]},"a":["a", "b"],"e":2,"n":null,"i":"3 days","u":"007","u":false}"#;
        check_with(ToolFormat::QwenXml, &tools, text, "", &[("f", typed)]);
        let untyped = r#"{"s":3,"i":42,"x":0.5,"b":"True","m":"None","o":{"k": [1, null]},"a":["a", "b"],"e":2,"n":"None","i":"3 days","u":"007","u":false}"#;
        check(ToolFormat::QwenXml, text, "", &[("f", untyped)]);
    }

    /// GLM-4.6's layout, GLM-4.7's one-line layout, values typed by the schema.
    #[test]
    fn glm() {
        let f = ToolFormat::Glm(GlmLayout::Lines);
        let tools = [serde_json::json!({"type": "function", "function": {
            "name": "get_weather", "parameters": {"type": "object", "properties": {
                "location": {"type": "string"}, "days": {"type": "integer"}}}}})];
        check_with(
            f,
            &tools,
            "Let me check.\n<tool_call>get_weather\n<arg_key>location</arg_key>\n<arg_value>Paris, 3</arg_value>\n<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n</tool_call>\n<tool_call>get_weather\n</tool_call>",
            "Let me check.",
            &[
                ("get_weather", r#"{"location":"Paris, 3","days":3}"#),
                ("get_weather", "{}"),
            ],
        );
        check(
            ToolFormat::Glm(GlmLayout::Compact),
            "<tool_call>special_function<arg_key>arg1</arg_key><arg_value>1</arg_value></tool_call><tool_call>f<arg_key>s</arg_key><arg_value>a <b> \"c\"\n</arg_value><arg_key>o</arg_key><arg_value>{\"k\": [1]}</arg_value></tool_call>",
            "",
            &[
                ("special_function", r#"{"arg1":1}"#),
                ("f", r#"{"s":"a <b> \"c\"\n","o":{"k": [1]}}"#),
            ],
        );
        // Not calls, and calls cut off.
        check(
            f,
            "<tool_call>{\"name\": 1}</tool_call>",
            "<tool_call>{\"name\": 1}</tool_call>",
            &[],
        );
        check(f, "a <tool_call", "a <tool_call", &[]);
        check(f, "<tool_call>get_wea", "<tool_call>get_wea", &[]);
        check(
            f,
            "<tool_call>f\n<arg_key>q</arg_key>\n<arg_value>hel",
            "",
            &[("f", r#"{"q":"hel"}"#)],
        );
        check(f, "<tool_call>f\n<arg_ke", "", &[("f", "{}")]);
    }

    #[test]
    fn kimi() {
        let f = ToolFormat::KimiK2;
        let text = "Sure.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{\"city\": \"<|tool_call_end|>\"}<|tool_call_end|><|tool_call_begin|>functions.g:1<|tool_call_argument_begin|>{}<|tool_call_end|><|tool_calls_section_end|>";
        check(
            f,
            text,
            "Sure.",
            &[
                ("get_weather", r#"{"city": "<|tool_call_end|>"}"#),
                ("g", "{}"),
            ],
        );
        let r = parse_tool_calls(f, text);
        let ids: Vec<&str> = r.tool_calls.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["functions.get_weather:0", "functions.g:1"]);
        // A call without the section, and one named without the id form.
        let r = parse_tool_calls(
            f,
            "<|tool_call_begin|>h<|tool_call_argument_begin|>{\"a\": 1}<|tool_call_end|>",
        );
        assert_eq!(r.tool_calls.len(), 1);
        assert_eq!(r.tool_calls[0].name, "h");
        assert_eq!(r.tool_calls[0].id, "functions.h:0");
        check(
            f,
            "<|tool_calls_section_begin|>oops",
            "<|tool_calls_section_begin|>oops",
            &[],
        );
    }

    #[test]
    fn detects_formats() {
        assert_eq!(
            ToolFormat::detect("{{ '<tool_call>' }}"),
            Some(ToolFormat::Hermes)
        );
        assert_eq!(ToolFormat::detect("plain"), None);
        for (name, want) in [
            ("zai-org-GLM-4.6.jinja", ToolFormat::Glm(GlmLayout::Lines)),
            (
                "zai-org-GLM-4.7-Flash.jinja",
                ToolFormat::Glm(GlmLayout::Compact),
            ),
            ("moonshotai-Kimi-K2-Instruct.jinja", ToolFormat::KimiK2),
            ("moonshotai-Kimi-K2-Thinking.jinja", ToolFormat::KimiK2),
            ("moonshotai-Kimi-K2-old.jinja", ToolFormat::KimiK2),
        ] {
            let path = format!(
                "{}/../chat/tests/data/templates/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            let source = std::fs::read_to_string(&path).expect("template");
            assert_eq!(ToolFormat::detect(&source), Some(want), "{name}");
        }
        assert_eq!(
            ToolFormat::detect("'<tool_call>\n<function=' + name + '>\n<parameter=' + k"),
            Some(ToolFormat::QwenXml)
        );
    }
}
