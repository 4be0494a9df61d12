//! Qwen3-Coder and Qwen3.5 tool calls, XML-like blocks whose parameters are plain text:
//!
//! ```text
//! <tool_call>
//! <function=get_weather>
//! <parameter=location>
//! Paris, France
//! </parameter>
//! <parameter=days>
//! 3
//! </parameter>
//! </function>
//! </tool_call>
//! ```
//!
//! The arguments become one JSON object, built as the parameters arrive: `{"location":"Paris,
//! France","days":3}`. A value is JSON when its tool's schema allows a non-string type and the
//! text parses as such (numbers, booleans, `null`, objects, arrays; also Python's `True`, `False`
//! and `None` where the schema allows booleans or null, since the templates print arguments with
//! Python's `str()`); otherwise it is a string of the text. Without a schema for the parameter any
//! JSON value but a string counts. This is how llama.cpp (common/parsers/qwen3-coder.cpp) and
//! Qwen's own parser type the values. A string value is streamed as it comes once its first
//! character rules out every other type; other values are sent whole at `</parameter>`.

use crate::grammar::{json_rule, lark_str};
use crate::reasoning::partial_suffix;
use crate::tools::hermes;
use serde_json::Value;
use std::collections::HashMap;

pub const FUNCTION_OPEN: &str = "<function=";
pub const FUNCTION_CLOSE: &str = "</function>";
pub const PARAM_OPEN: &str = "<parameter=";
pub const PARAM_CLOSE: &str = "</parameter>";

/// Longest function or parameter name waited for: a longer run of text without `>` is no name.
const MAX_NAME: usize = 256;

/// The JSON types a parameter's schema allows, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Types(u8);

impl Types {
    const STRING: u8 = 1;
    const INTEGER: u8 = 2;
    const NUMBER: u8 = 4;
    const BOOLEAN: u8 = 8;
    const NULL: u8 = 16;
    const OBJECT: u8 = 32;
    const ARRAY: u8 = 64;
    /// No schema, or one that does not say.
    pub(crate) const ANY: Types = Types(127);
    pub(crate) const STRING_ONLY: Types = Types(Types::STRING);

    fn has(self, bits: u8) -> bool {
        self.0 & bits != 0
    }

    /// Whether a value may be a string (then free text is a valid value).
    pub(crate) fn allows_string(self) -> bool {
        self.has(Types::STRING)
    }

    /// The types of a JSON schema: its `type`, else those of its `enum`/`const` values, else
    /// the union of its `anyOf`/`oneOf` branches; anything else allows everything.
    pub(crate) fn of_schema(schema: &Value) -> Types {
        Types::of_schema_at(schema, 0)
    }

    fn of_schema_at(schema: &Value, depth: usize) -> Types {
        let bits = match schema {
            _ if depth > 8 => 0,
            Value::Object(o) => match (o.get("type"), o.get("enum"), o.get("const")) {
                (Some(Value::String(t)), _, _) => Types::of_name(t),
                (Some(Value::Array(ts)), _, _) => ts
                    .iter()
                    .filter_map(Value::as_str)
                    .fold(0, |acc, t| acc | Types::of_name(t)),
                (_, Some(Value::Array(vs)), _) => vs.iter().fold(0, |acc, v| acc | value_bits(v)),
                (_, _, Some(v)) => value_bits(v),
                _ => ["anyOf", "oneOf"]
                    .iter()
                    .filter_map(|k| o.get(*k).and_then(Value::as_array))
                    .flatten()
                    .fold(0, |acc, s| acc | Types::of_schema_at(s, depth + 1).0),
            },
            _ => 0,
        };
        if bits == 0 {
            Types::ANY
        } else {
            Types(bits)
        }
    }

    fn of_name(name: &str) -> u8 {
        match name {
            "string" => Types::STRING,
            "integer" => Types::INTEGER,
            "number" => Types::NUMBER,
            "boolean" => Types::BOOLEAN,
            "null" => Types::NULL,
            "object" => Types::OBJECT,
            "array" => Types::ARRAY,
            _ => 0,
        }
    }

    /// Whether a value starting with `c` may be of a type other than string.
    fn could_be_typed(self, c: char) -> bool {
        let explicit = self != Types::ANY;
        match c {
            '{' => self.has(Types::OBJECT),
            '[' => self.has(Types::ARRAY),
            '-' | '0'..='9' => self.has(Types::INTEGER | Types::NUMBER),
            't' | 'f' => self.has(Types::BOOLEAN),
            'n' => self.has(Types::NULL),
            'T' | 'F' => explicit && self.has(Types::BOOLEAN),
            'N' => explicit && self.has(Types::NULL),
            _ => false,
        }
    }
}

/// The type bit of a JSON value (integral numbers count as integers).
fn value_bits(v: &Value) -> u8 {
    match v {
        Value::Null => Types::NULL,
        Value::Bool(_) => Types::BOOLEAN,
        Value::Number(n) if n.is_i64() || n.is_u64() => Types::INTEGER,
        Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => Types::INTEGER,
        Value::Number(_) => Types::NUMBER,
        Value::String(_) => Types::STRING,
        Value::Array(_) => Types::ARRAY,
        Value::Object(_) => Types::OBJECT,
    }
}

/// Every tool's parameters and the types their schemas allow.
#[derive(Debug, Clone, Default)]
pub struct ParamTypes(HashMap<String, HashMap<String, Types>>);

impl ParamTypes {
    /// From OpenAI-shaped `tools`; tools or parameters without a usable schema allow any type.
    pub fn from_tools(tools: &[Value]) -> ParamTypes {
        let mut all = HashMap::new();
        for t in tools {
            let f = t.get("function").unwrap_or(t);
            let Some(name) = f.get("name").and_then(Value::as_str) else {
                continue;
            };
            let params = f
                .pointer("/parameters/properties")
                .and_then(Value::as_object)
                .map(|props| {
                    props
                        .iter()
                        .map(|(k, s)| (k.clone(), Types::of_schema(s)))
                        .collect()
                })
                .unwrap_or_default();
            all.insert(name.to_string(), params);
        }
        ParamTypes(all)
    }

    pub(crate) fn get(&self, tool: &str, param: &str) -> Types {
        self.0
            .get(tool)
            .and_then(|p| p.get(param))
            .copied()
            .unwrap_or(Types::ANY)
    }
}

/// A JSON string's text without its quotes.
fn escape_inner(s: &str) -> String {
    let q = serde_json::to_string(s).expect("strings serialize");
    q[1..q.len() - 1].to_string()
}

/// The JSON text of a parameter's whole value (see the module docs).
pub(crate) fn value_json(text: &str, types: Types) -> String {
    if types != Types::STRING_ONLY {
        if let Some(json) = typed_json(text.trim(), types) {
            return json;
        }
    }
    serde_json::to_string(text).expect("strings serialize")
}

/// `t` as a JSON value of a type other than string that `types` allows, as written.
fn typed_json(t: &str, types: Types) -> Option<String> {
    if types != Types::ANY {
        let python = match t {
            "True" if types.has(Types::BOOLEAN) => Some("true"),
            "False" if types.has(Types::BOOLEAN) => Some("false"),
            "None" if types.has(Types::NULL) => Some("null"),
            _ => None,
        };
        if let Some(p) = python {
            return Some(p.to_string());
        }
    }
    let v: Value = serde_json::from_str(t).ok()?;
    let bits = match value_bits(&v) {
        Types::STRING => 0,
        Types::INTEGER => Types::INTEGER | Types::NUMBER,
        b => b,
    };
    types.has(bits).then(|| t.to_string())
}

/// What a parameter's value has become so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Nothing decided: the text so far is held.
    Undecided,
    /// A string: the opening quote and the text so far went out.
    Streaming,
    /// Possibly another type: held until `</parameter>`.
    Buffered,
}

#[derive(Debug, Clone)]
pub(crate) struct ValueState {
    types: Types,
    /// The newline after `<parameter=NAME>` was dealt with.
    started: bool,
    mode: Mode,
    held: String,
}

impl ValueState {
    pub(crate) fn new(types: Types) -> Self {
        ValueState {
            types,
            started: false,
            mode: Mode::Undecided,
            held: String::new(),
        }
    }

    /// More of the value's text; what can go out now.
    pub(crate) fn feed(&mut self, text: &str) -> Option<String> {
        match self.mode {
            Mode::Streaming => return Some(escape_inner(text)),
            Mode::Buffered => {
                self.held.push_str(text);
                return None;
            }
            Mode::Undecided => self.held.push_str(text),
        }
        let first = self.held.trim_start().chars().next();
        let string = match first {
            _ if self.types == Types::STRING_ONLY => !self.held.is_empty(),
            None => false,
            Some(c) => self.types.allows_string() && !self.types.could_be_typed(c),
        };
        if string {
            self.mode = Mode::Streaming;
            return Some(format!(
                "\"{}",
                escape_inner(&std::mem::take(&mut self.held))
            ));
        }
        if first.is_some() {
            self.mode = Mode::Buffered;
        }
        None
    }

    /// The rest of the value's text: the end of its JSON.
    pub(crate) fn finish(&mut self, text: &str) -> String {
        match self.mode {
            Mode::Streaming => format!("{}\"", escape_inner(text)),
            Mode::Undecided | Mode::Buffered => {
                self.held.push_str(text);
                value_json(&std::mem::take(&mut self.held), self.types)
            }
        }
    }
}

#[derive(Debug, Clone)]
enum XState {
    /// Before `<function=NAME>`; `continued` after an earlier function in the same block.
    Function {
        continued: bool,
    },
    /// Between parameters.
    Params,
    Value(ValueState),
    /// After `</function>`, up to `</tool_call>`.
    Close,
}

/// What [`XmlCall::step`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// A call of this function starts.
    Start(String),
    /// More of its arguments' JSON text.
    Args(String),
}

/// Where [`XmlCall::step`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Needs more text.
    More,
    /// The block ended; the buffer holds what follows it.
    Done,
    /// The text after `<tool_call>` is no call (nothing was taken from the buffer).
    NotACall,
}

/// One `<tool_call>` block after its opening tag, parsed from a buffer of text.
#[derive(Debug, Clone)]
pub(crate) struct XmlCall {
    state: XState,
    name: String,
    params: usize,
}

impl XmlCall {
    pub(crate) fn new() -> Self {
        XmlCall {
            state: XState::Function { continued: false },
            name: String::new(),
            params: 0,
        }
    }

    /// Consumes what it can of `buf`; `last` when no more text will come (a call cut off is
    /// closed so that its arguments are valid JSON).
    pub(crate) fn step(
        &mut self,
        buf: &mut String,
        last: bool,
        types: &ParamTypes,
        ev: &mut Vec<Event>,
    ) -> Outcome {
        loop {
            let outcome = match &mut self.state {
                XState::Function { continued } => {
                    let continued = *continued;
                    self.function(buf, last, continued, ev)
                }
                XState::Params => self.params(buf, last, types, ev),
                XState::Value(_) => self.value(buf, last, ev),
                XState::Close => close(buf, last, &mut self.state),
            };
            if let Some(o) = outcome {
                return o;
            }
        }
    }

    /// `<function=NAME>`; `None` when it was taken and parsing goes on.
    fn function(
        &mut self,
        buf: &mut String,
        last: bool,
        continued: bool,
        ev: &mut Vec<Event>,
    ) -> Option<Outcome> {
        let fail = if continued {
            Outcome::Done
        } else {
            Outcome::NotACall
        };
        let t = buf.trim_start();
        let skipped = buf.len() - t.len();
        let Some(rest) = t.strip_prefix(FUNCTION_OPEN) else {
            let wait = !last && FUNCTION_OPEN.starts_with(t);
            return Some(if wait { Outcome::More } else { fail });
        };
        let Some(end) = rest.find('>') else {
            let hopeless = last || rest.len() > MAX_NAME || rest.contains(['\n', '<']);
            return Some(if hopeless { fail } else { Outcome::More });
        };
        let name = rest[..end].trim();
        if name.is_empty() || name.contains(['\n', '<']) {
            return Some(fail);
        }
        self.name = name.to_string();
        self.params = 0;
        ev.push(Event::Start(self.name.clone()));
        buf.drain(..skipped + FUNCTION_OPEN.len() + end + 1);
        self.state = XState::Params;
        None
    }

    /// The arguments object's end.
    fn close_args(&self) -> Event {
        Event::Args(if self.params == 0 { "{}" } else { "}" }.to_string())
    }

    /// Between parameters: the next `<parameter=NAME>`, or `</function>`.
    fn params(
        &mut self,
        buf: &mut String,
        last: bool,
        types: &ParamTypes,
        ev: &mut Vec<Event>,
    ) -> Option<Outcome> {
        let t = buf.trim_start();
        let skipped = buf.len() - t.len();
        if let Some(rest) = t.strip_prefix(PARAM_OPEN) {
            match rest.find('>') {
                Some(end) if !rest[..end].contains('\n') => {
                    let name = rest[..end].trim().to_string();
                    let sep = if self.params == 0 { "{" } else { "," };
                    let key = serde_json::to_string(&name).expect("strings serialize");
                    ev.push(Event::Args(format!("{sep}{key}:")));
                    self.params += 1;
                    buf.drain(..skipped + PARAM_OPEN.len() + end + 1);
                    self.state = XState::Value(ValueState::new(types.get(&self.name, &name)));
                    return None;
                }
                None if !last && rest.len() <= MAX_NAME && !rest.contains('\n') => {
                    return Some(Outcome::More)
                }
                _ => {}
            }
        } else if let Some(rest) = t.strip_prefix(FUNCTION_CLOSE) {
            ev.push(self.close_args());
            let taken = buf.len() - rest.len();
            buf.drain(..taken);
            self.state = XState::Close;
            return None;
        } else if !last && (PARAM_OPEN.starts_with(t) || FUNCTION_CLOSE.starts_with(t)) {
            return Some(Outcome::More);
        }
        ev.push(self.close_args());
        if last {
            // Cut off inside the call: the rest belongs to it.
            buf.clear();
            return Some(Outcome::Done);
        }
        // Text that is no parameter: the call ends here.
        self.state = XState::Close;
        None
    }

    /// A parameter's value, up to `</parameter>` (a newline on either side is the format's).
    fn value(&mut self, buf: &mut String, last: bool, ev: &mut Vec<Event>) -> Option<Outcome> {
        let XState::Value(v) = &mut self.state else {
            return None;
        };
        if !v.started {
            if buf.is_empty() && !last {
                return Some(Outcome::More);
            }
            if buf.starts_with('\n') {
                buf.drain(..1);
            }
            v.started = true;
        }
        let end = buf.find(PARAM_CLOSE);
        if end.is_some() || last {
            let i = end.unwrap_or(buf.len());
            let text = &buf[..i];
            ev.push(Event::Args(
                v.finish(text.strip_suffix('\n').unwrap_or(text)),
            ));
            buf.drain(..end.map_or(buf.len(), |i| i + PARAM_CLOSE.len()));
            self.state = XState::Params;
            return None;
        }
        // Hold back what may be the start of `\n</parameter>`.
        let keep =
            partial_suffix(buf, &format!("\n{PARAM_CLOSE}")).max(partial_suffix(buf, PARAM_CLOSE));
        let ready: String = buf.drain(..buf.len() - keep).collect();
        if let Some(a) = v.feed(&ready).filter(|a| !a.is_empty()) {
            ev.push(Event::Args(a));
        }
        Some(Outcome::More)
    }
}

/// After `</function>`: `</tool_call>` ends the block; another `<function=` continues it
/// (`None`: parsing goes on).
fn close(buf: &mut String, last: bool, state: &mut XState) -> Option<Outcome> {
    let t = buf.trim_start();
    if let Some(rest) = t.strip_prefix(hermes::CALL_END) {
        let taken = buf.len() - rest.len();
        buf.drain(..taken);
        return Some(Outcome::Done);
    }
    if t.starts_with(FUNCTION_OPEN) {
        *state = XState::Function { continued: true };
        return None;
    }
    if !last && (hermes::CALL_END.starts_with(t) || FUNCTION_OPEN.starts_with(t)) {
        return Some(Outcome::More);
    }
    // Anything else follows the call as answer text.
    Some(Outcome::Done)
}

/// The Lark rules of one call of tool `i` (`c{i}`, in the template's layout) and the openers of
/// its free-text values. Parameters come in the schema's `properties` order, the required ones
/// always (as do required names the properties lack, as free text), the others optionally.
/// A value is free text up to `</parameter>` when its schema allows strings (as llama.cpp does:
/// text can hold any other type too), one of its literal strings for a string `enum`/`const`,
/// and JSON under its own schema otherwise.
pub(crate) fn call_rules(i: usize, name: &str, params: &Value) -> (String, Vec<String>) {
    let props = params.get("properties").and_then(Value::as_object);
    let required: Vec<&str> = params
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut list: Vec<(&str, Value)> = props
        .map(|p| p.iter().map(|(k, s)| (k.as_str(), s.clone())).collect())
        .unwrap_or_default();
    for r in &required {
        if !list.iter().any(|(k, _)| k == r) {
            list.push((r, Value::Bool(true)));
        }
    }
    let mut body = vec![lark_str(&format!(
        "{}\n{FUNCTION_OPEN}{name}>\n",
        hermes::CALL_BEGIN
    ))];
    let mut rules = String::new();
    let mut openers = Vec::new();
    for (j, (param, schema)) in list.iter().enumerate() {
        let opener = format!("{PARAM_OPEN}{param}>\n");
        let rule = format!("p{i}_{j}");
        let optional = if required.contains(param) { "" } else { "?" };
        body.push(format!("{rule}{optional}"));
        let value = value_rule(&format!("v{i}_{j}"), &with_defs(schema, params));
        rules.push_str(&format!(
            "{rule}: {} v{i}_{j} \"\\n\"\n{value}\n",
            lark_str(&opener)
        ));
        if Types::of_schema(schema).allows_string() && string_literals(schema).is_none() {
            openers.push(opener);
        }
    }
    body.push(lark_str(&format!("{FUNCTION_CLOSE}\n{}", hermes::CALL_END)));
    (format!("c{i}: {}\n{rules}", body.join(" ")), openers)
}

/// The rule `name` for one parameter's value and its `</parameter>`.
fn value_rule(name: &str, schema: &Value) -> String {
    let close = lark_str(PARAM_CLOSE);
    if let Some(literals) = string_literals(schema) {
        let alts: Vec<String> = literals.iter().map(|l| lark_str(l)).collect();
        return format!("{name}: ({}) \"\\n\" {close}", alts.join(" | "));
    }
    if Types::of_schema(schema).allows_string() {
        // Lazy: the text ends at the first `</parameter>`, as the parser reads it.
        return format!("{name}[suffix={close}]: /(?s:.*)/");
    }
    format!("{name}: {} \"\\n\" {close}", json_rule(schema))
}

/// The values of a string-only schema's `enum` or `const`.
pub(crate) fn string_literals(schema: &Value) -> Option<Vec<String>> {
    let values = match (schema.get("enum"), schema.get("const")) {
        (Some(Value::Array(vs)), _) => vs.clone(),
        (_, Some(v)) => vec![v.clone()],
        _ => return None,
    };
    values
        .iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect::<Option<Vec<_>>>()
        .filter(|l| !l.is_empty())
}

/// A parameter's schema with the definitions of the whole `parameters` schema, which its
/// `$ref`s may point into once it is compiled on its own.
pub(crate) fn with_defs(schema: &Value, params: &Value) -> Value {
    let mut s = schema.clone();
    if let Value::Object(o) = &mut s {
        for key in ["$defs", "definitions"] {
            if let Some(d) = params.get(key) {
                o.entry(key).or_insert_with(|| d.clone());
            }
        }
    }
    s
}
