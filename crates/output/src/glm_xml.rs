//! GLM-4.5, 4.6 and 4.7 tool calls: the function name after `<tool_call>`, then key/value pairs
//! in tags, values as plain text:
//!
//! ```text
//! <tool_call>get_weather
//! <arg_key>location</arg_key>
//! <arg_value>Paris, France</arg_value>
//! <arg_key>days</arg_key>
//! <arg_value>3</arg_value>
//! </tool_call>
//! ```
//!
//! GLM-4.5/4.6 templates put a newline after the name and after each tag pair (the
//! [`GlmLayout::Lines`] layout); GLM-4.7 writes it all on one line ([`GlmLayout::Compact`]). The
//! parser takes either, with any whitespace between tags. A value is the text between
//! `<arg_value>` and `</arg_value>` as written (the templates print strings raw, other values as
//! JSON), typed by the tool's schema exactly as [`crate::qwen_xml`] types its parameters.

use crate::grammar::{json_rule, lark_str};
use crate::qwen_xml::{string_literals, with_defs, Event, Outcome, ParamTypes, Types, ValueState};
use crate::reasoning::partial_suffix;
use crate::tools::hermes;
use serde_json::Value;

pub const ARG_KEY_OPEN: &str = "<arg_key>";
pub const ARG_KEY_CLOSE: &str = "</arg_key>";
pub const ARG_VALUE_OPEN: &str = "<arg_value>";
pub const ARG_VALUE_CLOSE: &str = "</arg_value>";

/// Longest function name or key waited for: a longer run of text is no name.
const MAX_NAME: usize = 256;

/// Where a template puts newlines in a call (only the grammar cares: it writes the model's own
/// layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlmLayout {
    /// `<tool_call>f\n<arg_key>k</arg_key>\n<arg_value>v</arg_value>\n</tool_call>` (GLM-4.5/4.6).
    Lines,
    /// `<tool_call>f<arg_key>k</arg_key><arg_value>v</arg_value></tool_call>` (GLM-4.7).
    Compact,
}

impl GlmLayout {
    /// The layout a template teaches: the one-line form shows `{function-name}<arg_key>`.
    pub fn detect(template_source: &str) -> GlmLayout {
        if template_source.contains("}<arg_key>") || template_source.contains("-}<arg_key>") {
            GlmLayout::Compact
        } else {
            GlmLayout::Lines
        }
    }

    fn sep(self) -> &'static str {
        match self {
            GlmLayout::Lines => "\n",
            GlmLayout::Compact => "",
        }
    }
}

#[derive(Debug, Clone)]
enum GState {
    /// The function name right after `<tool_call>`.
    Name,
    /// Between key/value pairs: `<arg_key>` or `</tool_call>`.
    Params,
    /// Inside `<arg_key>`…`</arg_key>`.
    Key,
    /// After `</arg_key>`, before `<arg_value>`.
    BeforeValue(Types),
    Value(ValueState),
}

/// One `<tool_call>` block after its opening tag, parsed from a buffer of text.
#[derive(Debug, Clone)]
pub(crate) struct GlmCall {
    state: GState,
    name: String,
    params: usize,
}

impl GlmCall {
    pub(crate) fn new() -> Self {
        GlmCall {
            state: GState::Name,
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
            let outcome = match &self.state {
                GState::Name => self.name(buf, last, ev),
                GState::Params => self.params(buf, last, ev),
                GState::Key => self.key(buf, last, types, ev),
                GState::BeforeValue(_) => self.before_value(buf, last, ev),
                GState::Value(_) => self.value(buf, last, ev),
            };
            if let Some(o) = outcome {
                return o;
            }
        }
    }

    /// The function name, ended by a newline or a tag; `None` when it was taken.
    fn name(&mut self, buf: &mut String, last: bool, ev: &mut Vec<Event>) -> Option<Outcome> {
        let t = buf.trim_start();
        let skipped = buf.len() - t.len();
        let Some(end) = t.find(['\n', '<']) else {
            let hopeless = last || t.len() > MAX_NAME;
            return Some(if hopeless {
                Outcome::NotACall
            } else {
                Outcome::More
            });
        };
        let name = t[..end].trim();
        let plausible = !name.is_empty()
            && !name.contains(char::is_whitespace)
            && !name.starts_with(['{', '"', '[']);
        if !plausible {
            return Some(Outcome::NotACall);
        }
        self.name = name.to_string();
        ev.push(Event::Start(self.name.clone()));
        let newline = t[end..].starts_with('\n');
        buf.drain(..skipped + end + usize::from(newline));
        self.state = GState::Params;
        None
    }

    /// The arguments object's end.
    fn close_args(&self) -> Event {
        Event::Args(if self.params == 0 { "{}" } else { "}" }.to_string())
    }

    /// Between pairs: the next `<arg_key>`, or `</tool_call>`; other text ends the call.
    fn params(&mut self, buf: &mut String, last: bool, ev: &mut Vec<Event>) -> Option<Outcome> {
        let t = buf.trim_start();
        if let Some(rest) = t.strip_prefix(ARG_KEY_OPEN) {
            let taken = buf.len() - rest.len();
            buf.drain(..taken);
            self.state = GState::Key;
            return None;
        }
        if let Some(rest) = t.strip_prefix(hermes::CALL_END) {
            ev.push(self.close_args());
            let taken = buf.len() - rest.len();
            buf.drain(..taken);
            return Some(Outcome::Done);
        }
        if !last && (ARG_KEY_OPEN.starts_with(t) || hermes::CALL_END.starts_with(t)) {
            return Some(Outcome::More);
        }
        ev.push(self.close_args());
        if last {
            // Cut off inside the call: the rest belongs to it.
            buf.clear();
        }
        Some(Outcome::Done)
    }

    /// A key up to `</arg_key>`.
    fn key(
        &mut self,
        buf: &mut String,
        last: bool,
        types: &ParamTypes,
        ev: &mut Vec<Event>,
    ) -> Option<Outcome> {
        let Some(end) = buf.find(ARG_KEY_CLOSE) else {
            if last || buf.len() > MAX_NAME + ARG_KEY_CLOSE.len() {
                // No key after all: the call ends with what it has.
                ev.push(self.close_args());
                if last {
                    buf.clear();
                }
                return Some(Outcome::Done);
            }
            return Some(Outcome::More);
        };
        let key = buf[..end].trim().to_string();
        let sep = if self.params == 0 { "{" } else { "," };
        let quoted = serde_json::to_string(&key).expect("strings serialize");
        ev.push(Event::Args(format!("{sep}{quoted}:")));
        self.params += 1;
        buf.drain(..end + ARG_KEY_CLOSE.len());
        self.state = GState::BeforeValue(types.get(&self.name, &key));
        None
    }

    /// `<arg_value>` after a key; a key without one gets `null`.
    fn before_value(
        &mut self,
        buf: &mut String,
        last: bool,
        ev: &mut Vec<Event>,
    ) -> Option<Outcome> {
        let GState::BeforeValue(types) = self.state else {
            return None;
        };
        let t = buf.trim_start();
        if let Some(rest) = t.strip_prefix(ARG_VALUE_OPEN) {
            let taken = buf.len() - rest.len();
            buf.drain(..taken);
            self.state = GState::Value(ValueState::new(types));
            return None;
        }
        if !last && ARG_VALUE_OPEN.starts_with(t) {
            return Some(Outcome::More);
        }
        ev.push(Event::Args("null".into()));
        self.state = GState::Params;
        None
    }

    /// A value up to `</arg_value>`, streamed when it is a string.
    fn value(&mut self, buf: &mut String, last: bool, ev: &mut Vec<Event>) -> Option<Outcome> {
        let GState::Value(v) = &mut self.state else {
            return None;
        };
        let end = buf.find(ARG_VALUE_CLOSE);
        if end.is_some() || last {
            let i = end.unwrap_or(buf.len());
            ev.push(Event::Args(v.finish(&buf[..i])));
            buf.drain(..end.map_or(buf.len(), |i| i + ARG_VALUE_CLOSE.len()));
            self.state = GState::Params;
            return None;
        }
        let keep = partial_suffix(buf, ARG_VALUE_CLOSE);
        let ready: String = buf.drain(..buf.len() - keep).collect();
        if let Some(a) = v.feed(&ready).filter(|a| !a.is_empty()) {
            ev.push(Event::Args(a));
        }
        Some(Outcome::More)
    }
}

/// The Lark rules of one call of tool `i` (`c{i}`, in the template's layout) and the openers of
/// its free-text values; `marker` spells a tag (a control token where the vocabulary has one).
/// As for [`crate::qwen_xml::call_rules`]: parameters in the schema's `properties` order,
/// required ones always, values free text up to `</arg_value>` when strings are allowed, one
/// of the literals for a string `enum`, JSON under their own schema otherwise.
pub(crate) fn call_rules(
    i: usize,
    name: &str,
    params: &Value,
    layout: GlmLayout,
    marker: &dyn Fn(&str) -> String,
) -> (String, Vec<String>) {
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
    let sep = layout.sep();
    let mut body = vec![
        marker(hermes::CALL_BEGIN),
        lark_str(&format!("{name}{sep}")),
    ];
    let mut rules = String::new();
    let mut openers = Vec::new();
    for (j, (param, schema)) in list.iter().enumerate() {
        let rule = format!("p{i}_{j}");
        let optional = if required.contains(param) { "" } else { "?" };
        body.push(format!("{rule}{optional}"));
        let value = value_rule(&format!("v{i}_{j}"), &with_defs(schema, params), marker);
        rules.push_str(&format!(
            "{rule}: {} {} {} {} v{i}_{j} {}\n{value}\n",
            marker(ARG_KEY_OPEN),
            lark_str(param),
            marker(ARG_KEY_CLOSE),
            lark_str(sep).replace("\"\"", ""),
            lark_str(sep).replace("\"\"", ""),
        ));
        if Types::of_schema(schema).allows_string() && string_literals(schema).is_none() {
            openers.push(format!(
                "{ARG_KEY_OPEN}{param}{ARG_KEY_CLOSE}{sep}{ARG_VALUE_OPEN}"
            ));
        }
    }
    body.push(marker(hermes::CALL_END));
    (format!("c{i}: {}\n{rules}", body.join(" ")), openers)
}

/// The rule `name` for one value between `<arg_value>` and `</arg_value>`.
fn value_rule(name: &str, schema: &Value, marker: &dyn Fn(&str) -> String) -> String {
    let open = marker(ARG_VALUE_OPEN);
    let close = marker(ARG_VALUE_CLOSE);
    if let Some(literals) = string_literals(schema) {
        let alts: Vec<String> = literals.iter().map(|l| lark_str(l)).collect();
        return format!("{name}: {open} ({}) {close}", alts.join(" | "));
    }
    if Types::of_schema(schema).allows_string() {
        // Lazy: the text ends at the first `</arg_value>`, as the parser reads it.
        return format!("{name}: {open} v_{name}\nv_{name}[suffix={close}]: /(?s:.*)/");
    }
    format!("{name}: {open} {} {close}", json_rule(schema))
}
