//! Constrained decoding with llguidance: a [`TokenEnv`] built once per model from its tokenizer,
//! and per request a [`Grammar`] (JSON object, JSON schema, or tool calls in the model's format)
//! compiled into a [`GrammarMatcher`] that yields token masks.
//!
//! Every grammar is Lark text with inline JSON schemas (`%json {..}`). JSON is generated in one
//! fixed layout, the one Python's `json.dumps` and the chat templates use: `", "` between items,
//! `": "` after keys, no other whitespace. That keeps the output close to what models were
//! trained on and leaves no room for endless whitespace.

use crate::tools::{deepseek, hermes, kimi, ToolFormat};
use crate::OutputError;
use crate::{glm_xml, qwen_xml};
use frugal_tokenizer::Tokenizer;
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{SimpleVob, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;

/// The tokenizer as llguidance sees it: every token's bytes, control tokens marked special
/// (`0xFF` + text, so grammar text never matches them), user-defined tokens such as Qwen's
/// `<tool_call>` as plain text (so grammar text can use them).
struct FrugalTokEnv {
    tokenizer: Arc<Tokenizer>,
    trie: TokTrie,
    canonical: bool,
}

impl TokenizerEnv for FrugalTokEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        if self.canonical {
            if let Ok(text) = std::str::from_utf8(s) {
                if let Ok(ids) = self.tokenizer.encode(text, false, false) {
                    return ids;
                }
            }
        }
        self.trie.greedy_tokenize(s)
    }

    fn tokenize_is_canonical(&self) -> bool {
        self.canonical
    }
}

/// Everything constrained decoding needs from one model's tokenizer. Building it walks the whole
/// vocabulary (tens of milliseconds for 150k tokens): build it once per model and share it with
/// an `Arc`.
pub struct TokenEnv {
    tokenizer: Arc<Tokenizer>,
    factory: ParserFactory,
    vocab: usize,
    /// Control tokens (special in the trie).
    control: HashSet<u32>,
    eog: Vec<u32>,
    think_open: Vec<u32>,
    think_close: Vec<u32>,
    /// Tokens that are nothing but ASCII whitespace.
    whitespace: Vec<u32>,
}

impl std::fmt::Debug for TokenEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEnv")
            .field("vocab", &self.vocab)
            .field("eog", &self.eog)
            .field("think_close", &self.think_close)
            .finish_non_exhaustive()
    }
}

impl TokenEnv {
    pub fn new(tokenizer: Arc<Tokenizer>) -> Result<TokenEnv, OutputError> {
        let vocab = tokenizer.vocab_size();
        let mut eog: Vec<u32> = tokenizer
            .eog_ids()
            .iter()
            .copied()
            .filter(|&i| (i as usize) < vocab)
            .collect();
        if eog.is_empty() {
            eog.extend(tokenizer.eos().filter(|&i| (i as usize) < vocab));
        }
        if eog.is_empty() {
            return Err(OutputError::Tokenizer(
                "the tokenizer has no end-of-generation token".into(),
            ));
        }
        let mut control = HashSet::new();
        let mut whitespace = Vec::new();
        let mut words = Vec::with_capacity(vocab);
        for id in 0..vocab as u32 {
            let bytes = tokenizer.token_bytes(id);
            // `decode(.., skip_special)` drops control and unknown tokens only.
            let is_control = eog.contains(&id)
                || (tokenizer.is_special(id) && tokenizer.decode(&[id], true).is_empty());
            if is_control && !bytes.is_empty() {
                control.insert(id);
                let mut w = Vec::with_capacity(bytes.len() + 1);
                w.push(TokTrie::SPECIAL_TOKEN_MARKER);
                w.extend_from_slice(&bytes);
                words.push(w);
            } else {
                if !bytes.is_empty() && bytes.iter().all(|b| b" \t\r\n".contains(b)) {
                    whitespace.push(id);
                }
                words.push(bytes);
            }
        }
        let mut info = TokRxInfo::new(vocab as u32, eog[0]);
        info.tok_bos = tokenizer.bos().filter(|&i| (i as usize) < vocab);
        let trie = TokTrie::from(&info, &words).with_eos_tokens(&eog);
        // SentencePiece models put a space before text: their `encode` is not the canonical
        // tokenization of a piece in the middle of the output.
        let canonical = tokenizer
            .encode("a", false, false)
            .map(|ids| ids.iter().flat_map(|&i| tokenizer.token_bytes(i)).eq(*b"a"))
            .unwrap_or(false);
        let enc = |s: &str| tokenizer.encode(s, false, true).map_err(OutputError::from);
        let think_open = enc(crate::reasoning::THINK_OPEN)?;
        let think_close = enc(crate::reasoning::THINK_CLOSE)?;
        let env: llguidance::toktrie::TokEnv = Arc::new(FrugalTokEnv {
            tokenizer: tokenizer.clone(),
            trie,
            canonical,
        });
        let mut factory =
            ParserFactory::new_simple(&env).map_err(|e| OutputError::Tokenizer(e.to_string()))?;
        factory.quiet();
        Ok(TokenEnv {
            tokenizer,
            factory,
            vocab,
            control,
            eog,
            think_open,
            think_close,
            whitespace,
        })
    }

    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }

    /// The tokenizer's vocabulary size (logits past it are always masked).
    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    /// The tokens of `</think>` in this vocabulary.
    pub fn think_close_tokens(&self) -> &[u32] {
        &self.think_close
    }

    /// The tokens of `<think>` in this vocabulary.
    pub fn think_open_tokens(&self) -> &[u32] {
        &self.think_open
    }

    pub(crate) fn whitespace_tokens(&self) -> &[u32] {
        &self.whitespace
    }

    /// The bytes llguidance knows for a token (control tokens: `0xFF` + text).
    pub(crate) fn trie_bytes(&self, id: u32) -> &[u8] {
        if (id as usize) < self.vocab {
            self.factory.tok_env().tok_trie().token(id)
        } else {
            &[]
        }
    }

    /// A Lark expression for a marker text: the control token `<[id]>` when the vocabulary has
    /// one spelled so (grammar text cannot produce those), else the literal text.
    fn marker(&self, text: &str) -> String {
        match self.tokenizer.token_id(text) {
            Some(id) if self.control.contains(&id) => format!("<[{id}]>"),
            _ => lark_str(text),
        }
    }

    /// Compiles a grammar for one sequence. Errors name what is wrong or unsupported (JSON
    /// schema keywords llguidance does not implement, bad patterns, unsatisfiable schemas):
    /// answer them with HTTP 400.
    pub fn matcher(&self, grammar: &Grammar) -> Result<GrammarMatcher, OutputError> {
        let g = TopLevelGrammar::from_lark(grammar.lark.clone());
        let parser = self
            .factory
            .create_parser(g)
            .map_err(|e| OutputError::Grammar(clean_error(&e.to_string())))?;
        let mut m = Matcher::new(Ok(parser));
        if let Some(e) = m_error(&m) {
            return Err(OutputError::Grammar(clean_error(&e)));
        }
        // Some schemas only fail once decoding starts: find out now, while the request can
        // still get a 400.
        if let Err(e) = m.compute_mask() {
            let e = clean_error(&e.to_string());
            return Err(OutputError::Grammar(format!(
                "the schema admits no output ({e})"
            )));
        }
        if m.compute_ff_tokens().len() >= MAX_FORCED_TOKENS {
            return Err(OutputError::Grammar(format!(
                "the schema admits no document of reasonable length: it forces more than \
                 {MAX_FORCED_TOKENS} tokens of output (a required property that refers back to \
                 its own schema, or a huge repetition count in a pattern?)"
            )));
        }
        Ok(GrammarMatcher { m })
    }
}

fn m_error(m: &Matcher) -> Option<String> {
    if m.is_error() {
        m.get_error()
    } else {
        None
    }
}

/// Longest error message passed on (schemas can be quoted at length).
const MAX_ERROR_CHARS: usize = 300;

/// Most tokens a grammar may force before the model has any choice. Past it the schema has no
/// document of reasonable length: a required property that refers back to its own schema, or a
/// pattern like `^a{1000000}$`.
const MAX_FORCED_TOKENS: usize = 8192;

/// llguidance appends the whole grammar to some errors; the first line says what is wrong.
/// Its "at 1(8)" position is inside that generated grammar, and a state dump (`<state>`) may
/// follow: keep the message lines before either, on one line.
fn clean_error(e: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for line in e.lines() {
        let t = line.trim();
        let grammar_echo = t
            .split_once(" | ")
            .is_some_and(|(n, _)| n.parse::<u32>().is_ok());
        if grammar_echo || t.starts_with("<state>") {
            break;
        }
        if !t.is_empty() && !t.chars().all(|c| c == '^') {
            parts.push(t);
        }
    }
    let mut s = parts.join(" ");
    if let Some(rest) = s.strip_prefix("at ").and_then(|r| r.split_once(": ")) {
        s = rest.1.to_string();
    }
    if s.chars().count() > MAX_ERROR_CHARS {
        s = s.chars().take(MAX_ERROR_CHARS).collect::<String>() + "…";
    }
    if s.is_empty() {
        "the grammar cannot be compiled".into()
    } else {
        s
    }
}

/// A Lark string literal (Lark strings use JSON string syntax).
pub(crate) fn lark_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// One sequence's grammar state (an llguidance `Matcher`). Cloning is cheap and gives an
/// independent state: compile once per request, clone per sequence.
#[derive(Clone)]
pub struct GrammarMatcher {
    m: Matcher,
}

impl std::fmt::Debug for GrammarMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarMatcher")
            .field("stopped", &self.m.is_stopped())
            .finish_non_exhaustive()
    }
}

impl GrammarMatcher {
    /// The tokens allowed next (end-of-generation ids when the grammar may end here).
    pub fn allowed(&mut self) -> Result<SimpleVob, String> {
        self.m
            .compute_mask()
            .map_err(|e| clean_error(&e.to_string()))
    }

    pub fn consume(&mut self, token: u32) -> Result<(), String> {
        self.m
            .consume_token(token)
            .map_err(|e| clean_error(&e.to_string()))
    }

    /// The tokens the grammar forces next (the canonical tokenization of the bytes it forces),
    /// possibly none.
    pub fn forced_tokens(&mut self) -> Vec<u32> {
        self.m.compute_ff_tokens()
    }

    /// Takes back the last `n` tokens.
    pub fn rollback(&mut self, n: usize) -> Result<(), String> {
        self.m.rollback(n).map_err(|e| clean_error(&e.to_string()))
    }

    /// The grammar cannot go on: only end-of-generation may follow.
    pub fn is_stopped(&self) -> bool {
        self.m.is_stopped()
    }

    /// The output so far is a complete sentence of the grammar.
    pub fn is_accepting(&mut self) -> bool {
        self.m.is_accepting().unwrap_or(false)
    }
}

/// A grammar for the answer, as Lark text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grammar {
    lark: String,
    /// Texts that end the grammar's repeated parts (e.g. `<｜tool▁calls▁end｜>`), preferred when
    /// the answer must close.
    closers: Vec<String>,
    /// Free text: the texts that open it and the one text that ends it (XML tool calls'
    /// `<parameter=x>\n` … `</parameter>`), which the answer must reach when it must close.
    free_text: Option<(Vec<String>, String)>,
}

/// OpenAI's `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    None,
    Auto,
    /// At least one call of any tool.
    Required,
    /// Exactly one call of this function.
    Function(String),
}

impl ToolChoice {
    /// Parses `"none" | "auto" | "required" | {"type": "function", "function": {"name": ..}}`;
    /// absent means `auto`.
    pub fn from_json(v: Option<&Value>) -> Result<ToolChoice, OutputError> {
        let bad =
            |v: &Value| OutputError::tool_choice(format!("tool_choice: unsupported value {v}"));
        match v {
            None | Some(Value::Null) => Ok(ToolChoice::Auto),
            Some(Value::String(s)) => match s.as_str() {
                "none" => Ok(ToolChoice::None),
                "auto" => Ok(ToolChoice::Auto),
                "required" => Ok(ToolChoice::Required),
                _ => Err(bad(v.unwrap())),
            },
            Some(o @ Value::Object(_)) => o
                .pointer("/function/name")
                .and_then(Value::as_str)
                .map(|n| ToolChoice::Function(n.to_string()))
                .ok_or_else(|| bad(o)),
            Some(other) => Err(bad(other)),
        }
    }
}

/// Each tool's function name and `parameters` schema (an empty object schema when absent), with
/// errors naming the field (`tools[2].function.name`).
pub(crate) fn tool_signatures(tools: &[Value]) -> Result<Vec<(String, Value)>, OutputError> {
    let bad = |param: String, message: String| OutputError::Param { param, message };
    let mut fns: Vec<(String, Value)> = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        let f = t.get("function").unwrap_or(t);
        let name = match f.get("name") {
            Some(Value::String(n)) if !n.is_empty() => n.as_str(),
            _ => {
                let p = format!("tools[{i}].function.name");
                return Err(bad(p.clone(), format!("{p} must be a non-empty string")));
            }
        };
        if fns.iter().any(|(n, _)| n == name) {
            let p = format!("tools[{i}].function.name");
            return Err(bad(
                p.clone(),
                format!("{p}: the name '{name}' is used twice"),
            ));
        }
        let params = match f.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object"}),
            Some(p @ Value::Object(_)) => p.clone(),
            Some(_) => {
                let p = format!("tools[{i}].function.parameters");
                return Err(bad(
                    p.clone(),
                    format!("{p} (tool '{name}') must be a JSON schema object"),
                ));
            }
        };
        if let Err(OutputError::Grammar(m)) = check_limits(&params) {
            let p = format!("tools[{i}].function.parameters");
            return Err(bad(
                p.clone(),
                format!("{p} (tool '{name}'): unsupported or invalid schema: {m}"),
            ));
        }
        fns.push((name.to_string(), params));
    }
    Ok(fns)
}

/// Largest repetition count allowed in a `pattern` (`a{N}`): beyond it the compiled automaton and
/// the forced output become unreasonably large.
const MAX_PATTERN_REPEAT: u64 = 10_000;
/// Largest `minLength` / `minItems` / `minProperties`: no answer that long fits a context.
const MAX_MIN_SIZE: u64 = 100_000;

/// Rejects, before compiling, sizes no answer can meet (compiling them first would take seconds).
fn check_limits(schema: &Value) -> Result<(), OutputError> {
    match schema {
        Value::Object(o) => {
            if let Some(Value::String(p)) = o.get("pattern") {
                if let Some(n) = largest_repeat(p).filter(|&n| n > MAX_PATTERN_REPEAT) {
                    return Err(OutputError::Grammar(format!(
                        "pattern {p:?} repeats {n} times; at most {MAX_PATTERN_REPEAT} are supported"
                    )));
                }
            }
            for key in ["minLength", "minItems", "minProperties"] {
                if let Some(n) = o.get(key).and_then(Value::as_u64) {
                    if n > MAX_MIN_SIZE {
                        return Err(OutputError::Grammar(format!(
                            "{key} {n} is larger than any answer can be (at most {MAX_MIN_SIZE})"
                        )));
                    }
                }
            }
            o.values().try_for_each(check_limits)
        }
        Value::Array(a) => a.iter().try_for_each(check_limits),
        _ => Ok(()),
    }
}

/// The largest `N` of the `{N}`, `{N,}` and `{N,M}` quantifiers in a regex (escapes skipped).
fn largest_repeat(pattern: &str) -> Option<u64> {
    let b = pattern.as_bytes();
    let mut best = None;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'{' => {
                let digits: String = pattern[i + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == ',')
                    .collect();
                let max = digits
                    .split(',')
                    .filter_map(|d| d.parse::<u64>().ok().or((d.len() > 18).then_some(u64::MAX)))
                    .max();
                best = best.max(max);
                i += 1;
            }
            _ => i += 1,
        }
    }
    best
}

/// The JSON layout options every schema is compiled with.
fn with_layout(schema: &Value) -> Value {
    let mut s = schema.clone();
    if let Value::Object(o) = &mut s {
        o.insert(
            "x-guidance".into(),
            json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}),
        );
    }
    s
}

pub(crate) fn json_rule(schema: &Value) -> String {
    format!("%json {}", with_layout(schema))
}

impl Grammar {
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    pub fn json_object() -> Grammar {
        Grammar::json_schema(&json!({"type": "object"})).expect("a valid schema")
    }

    /// A JSON document matching `schema` (`true`/`false` schemas allowed). Unsupported keywords
    /// are reported by [`TokenEnv::matcher`].
    pub fn json_schema(schema: &Value) -> Result<Grammar, OutputError> {
        let schema = match schema {
            Value::Object(_) => schema.clone(),
            Value::Bool(true) => json!({}),
            Value::Bool(false) => {
                return Err(OutputError::Grammar(
                    "the schema `false` matches nothing".into(),
                ))
            }
            _ => {
                return Err(OutputError::InvalidRequest(
                    "json_schema.schema must be a JSON object".into(),
                ))
            }
        };
        check_limits(&schema)?;
        Ok(Grammar {
            lark: format!("start: {}\n", json_rule(&schema)),
            closers: Vec::new(),
            free_text: None,
        })
    }

    /// The grammar for an OpenAI `response_format` object; `None` for `{"type": "text"}`.
    pub fn from_response_format(rf: &Value) -> Result<Option<Grammar>, OutputError> {
        match rf.get("type").and_then(Value::as_str) {
            Some("text") => Ok(None),
            // llama.cpp and vLLM take a `schema` beside `json_object` too.
            Some("json_object") => match rf.get("schema") {
                Some(schema) => Grammar::json_schema(schema).map(Some),
                None => Ok(Some(Grammar::json_object())),
            },
            Some("json_schema") => {
                let schema = rf
                    .pointer("/json_schema/schema")
                    .or_else(|| rf.get("schema"))
                    .ok_or_else(|| {
                        OutputError::InvalidRequest(
                            "response_format.json_schema.schema is missing".into(),
                        )
                    })?;
                Grammar::json_schema(schema).map(Some)
            }
            other => Err(OutputError::InvalidRequest(format!(
                "response_format.type {} is not supported (text, json_object, json_schema)",
                other.map_or("(missing)".to_string(), |t| format!("'{t}'"))
            ))),
        }
    }

    /// Tool calls in the model's own format for `tool_choice` `required` (one or more calls of
    /// any tool, one if `parallel` is false) or a named function (exactly one call of it);
    /// `None` for `auto` and `none`. Arguments follow each tool's `parameters` schema.
    pub fn tool_calls(
        env: &TokenEnv,
        format: ToolFormat,
        tools: &[Value],
        choice: &ToolChoice,
        parallel: bool,
    ) -> Result<Option<Grammar>, OutputError> {
        let Some((fns, many)) = chosen_tools(tool_signatures(tools)?, choice, parallel)? else {
            return Ok(None);
        };
        let many = many && format != ToolFormat::Llama3Json;
        let calls: Vec<String> = (0..fns.len()).map(|i| format!("c{i}")).collect();
        let mut lark = format!(
            "start: {}\ncall: {}\n",
            calls_rule(env, format, many),
            calls.join(" | ")
        );
        let mut text_openers = Vec::new();
        for (i, (name, params)) in fns.iter().enumerate() {
            if format == ToolFormat::QwenXml {
                let (rules, openers) = qwen_xml::call_rules(i, name, params);
                lark.push_str(&rules);
                text_openers.extend(openers);
                continue;
            }
            if let ToolFormat::Glm(layout) = format {
                let marker = |t: &str| env.marker(t);
                let (rules, openers) = glm_xml::call_rules(i, name, params, layout, &marker);
                lark.push_str(&rules);
                text_openers.extend(openers);
                continue;
            }
            let body = call_rule(env, format, name, &format!("a{i}"));
            lark.push_str(&format!("c{i}: {body}\na{i}: {}\n", json_rule(params)));
        }
        let closers = match format {
            ToolFormat::DeepSeekR1 | ToolFormat::DeepSeekV31 => {
                vec![deepseek::CALLS_END.to_string()]
            }
            ToolFormat::QwenXml => vec![
                qwen_xml::FUNCTION_CLOSE.to_string(),
                hermes::CALL_END.to_string(),
            ],
            ToolFormat::Glm(_) => vec![hermes::CALL_END.to_string()],
            ToolFormat::KimiK2 => vec![kimi::CALLS_END.to_string()],
            ToolFormat::Hermes | ToolFormat::Llama3Json => Vec::new(),
        };
        let text_close = match format {
            ToolFormat::Glm(_) => glm_xml::ARG_VALUE_CLOSE,
            _ => qwen_xml::PARAM_CLOSE,
        };
        let free_text = (!text_openers.is_empty()).then(|| (text_openers, text_close.to_string()));
        Ok(Some(Grammar {
            lark,
            closers,
            free_text,
        }))
    }

    /// A grammar from llama.cpp's GBNF (the `grammar` request field), converted to Lark.
    /// Conversion errors name the field (`grammar`) and each construct at fault, with its line
    /// and column.
    pub fn from_gbnf(source: &str) -> Result<Grammar, OutputError> {
        crate::gbnf::gbnf_to_lark(source)
            .map(Grammar::from_lark)
            .map_err(|e| crate::grammar_param_error(e.to_string()))
    }

    /// A grammar from Lark source (llguidance's dialect), for callers with their own grammars.
    pub fn from_lark(source: impl Into<String>) -> Grammar {
        Grammar {
            lark: source.into(),
            closers: Vec::new(),
            free_text: None,
        }
    }

    pub(crate) fn closers(&self) -> &[String] {
        &self.closers
    }

    pub(crate) fn free_text(&self) -> Option<&(Vec<String>, String)> {
        self.free_text.as_ref()
    }

    /// The Lark source.
    pub fn lark(&self) -> &str {
        &self.lark
    }
}

/// Tool names and their `parameters` schemas.
type Signatures = Vec<(String, Value)>;

/// The tools `tool_choice` allows and whether several calls may follow each other; `None` for
/// `auto` and `none` (no grammar).
fn chosen_tools(
    fns: Signatures,
    choice: &ToolChoice,
    parallel: bool,
) -> Result<Option<(Signatures, bool)>, OutputError> {
    let (fns, many) = match choice {
        ToolChoice::None | ToolChoice::Auto => return Ok(None),
        ToolChoice::Required => (fns, parallel),
        ToolChoice::Function(name) => {
            let f: Vec<_> = fns.into_iter().filter(|(n, _)| n == name).collect();
            if f.is_empty() {
                return Err(OutputError::tool_choice(format!(
                    "tool_choice names function '{name}', which is not in tools"
                )));
            }
            (f[..1].to_vec(), false)
        }
    };
    if fns.is_empty() {
        return Err(OutputError::tool_choice(
            "tool_choice 'required' needs at least one tool".into(),
        ));
    }
    Ok(Some((fns, many)))
}

/// The rule for the whole answer: one call, or several, in the format's wrapping.
fn calls_rule(env: &TokenEnv, format: ToolFormat, many: bool) -> String {
    match format {
        ToolFormat::Hermes | ToolFormat::Llama3Json | ToolFormat::QwenXml => {
            if many {
                "call (\"\\n\" call)*".to_string()
            } else {
                "call".to_string()
            }
        }
        ToolFormat::Glm(layout) => {
            // GLM-4.6 starts each further call on a new line, GLM-4.7 right after the last.
            if many && layout == glm_xml::GlmLayout::Lines {
                "call (\"\\n\" call)*".to_string()
            } else if many {
                "call+".to_string()
            } else {
                "call".to_string()
            }
        }
        ToolFormat::KimiK2 => format!(
            "{} call{} {}",
            env.marker(kimi::CALLS_BEGIN),
            if many { "+" } else { "" },
            env.marker(kimi::CALLS_END)
        ),
        ToolFormat::DeepSeekR1 => format!(
            "{} call {} {}",
            env.marker(deepseek::CALLS_BEGIN),
            if many { "(\"\\n\" call)*" } else { "" },
            env.marker(deepseek::CALLS_END)
        ),
        ToolFormat::DeepSeekV31 => format!(
            "{} call{} {}",
            env.marker(deepseek::CALLS_BEGIN),
            if many { "+" } else { "" },
            env.marker(deepseek::CALLS_END)
        ),
    }
}

/// The rule for one call of `name`, its arguments being the rule `args`.
fn call_rule(env: &TokenEnv, format: ToolFormat, name: &str, args: &str) -> String {
    let quoted_name = serde_json::to_string(name).expect("strings serialize");
    match format {
        ToolFormat::Hermes => format!(
            "{} {args} {}",
            lark_str(&format!(
                "{}\n{{\"name\": {quoted_name}, \"arguments\": ",
                hermes::CALL_BEGIN
            )),
            lark_str(&format!("}}\n{}", hermes::CALL_END)),
        ),
        ToolFormat::Llama3Json => format!(
            "{} {args} \"}}\"",
            lark_str(&format!("{{\"name\": {quoted_name}, \"parameters\": "))
        ),
        ToolFormat::DeepSeekR1 => format!(
            "{} \"function\" {} {} {args} \"\\n```\" {}",
            env.marker(deepseek::CALL_BEGIN),
            env.marker(deepseek::SEP),
            lark_str(&format!("{name}\n```json\n")),
            env.marker(deepseek::CALL_END),
        ),
        ToolFormat::DeepSeekV31 => format!(
            "{} {} {} {args} {}",
            env.marker(deepseek::CALL_BEGIN),
            lark_str(name),
            env.marker(deepseek::SEP),
            env.marker(deepseek::CALL_END),
        ),
        ToolFormat::KimiK2 => format!(
            "{} {} /[0-9]+/ {} {args} {}",
            env.marker(kimi::CALL_BEGIN),
            lark_str(&format!("{}{name}:", kimi::ID_PREFIX)),
            env.marker(kimi::ARGS_BEGIN),
            env.marker(kimi::CALL_END),
        ),
        ToolFormat::QwenXml | ToolFormat::Glm(_) => {
            unreachable!("XML calls have rules per parameter")
        }
    }
}
