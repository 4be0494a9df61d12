//! Model output for chat requests: reasoning blocks, tool calls and structured output.
//!
//! - [`reasoning`] splits generated text into reasoning and answer (`<think>`…`</think>`), streaming.
//! - [`tools`] parses tool calls out of the answer in the model's own format, streaming
//!   ([`qwen_xml`]: Qwen3-Coder and Qwen3.5's XML-like calls, [`glm_xml`]: GLM-4.5/4.6/4.7's
//!   key/value calls, their arguments built as JSON; Kimi K2's call sections in [`tools`]).
//! - [`generic_tools`] is the JSON tool-call format for templates that cannot render tools.
//! - [`grammar`] builds llguidance grammars (JSON object, JSON schema, tool calls) over a model's
//!   vocabulary; [`gbnf`] converts llama.cpp's GBNF grammars to them.
//! - [`machine`] is the per-sequence [`frugal_constraint::Constraint`]: reasoning (with a
//!   budget), then the constrained answer, then the end.
//!
//! A server wires a chat request like this (see [`OutputPlan`]):
//!
//! ```ignore
//! // Once per model:
//! let env = Arc::new(TokenEnv::new(tokenizer.clone())?);
//! // Per request, after rendering the prompt with the template:
//! let plan = OutputPlan::new(&env, &OutputRequest {
//!     template_source: template.source(),
//!     prompt: &prompt,
//!     tools: &tools,
//!     tool_choice: body.get("tool_choice"),
//!     parallel_tool_calls: true,
//!     response_format: body.get("response_format"),
//!     grammar: body.get("grammar").and_then(|g| g.as_str()),
//!     reasoning_effort: None,
//!     max_tokens: Some(max_tokens),
//! })?;                                           // Err → HTTP 400
//! let constraint = plan.constraint(&env);        // Option<OutputConstraint>, attach to the sequence
//! let mut parser = plan.parser();                // feed it decoded text (special tokens rendered)
//! for piece in decoded_pieces { for d in parser.push(&piece) { /* stream OutputDelta */ } }
//! parser.finish();
//! let message = parser.into_message();           // reasoning_content, content, tool_calls
//! ```

#![forbid(unsafe_code)]

pub mod gbnf;
pub mod generic_tools;
pub mod glm_xml;
pub mod grammar;
pub mod machine;
pub mod qwen_xml;
pub mod reasoning;
pub mod tools;

pub use gbnf::{gbnf_to_lark, GbnfError};
pub use generic_tools::GenericToolParser;
pub use grammar::{Grammar, GrammarMatcher, TokenEnv, ToolChoice};
pub use machine::{reasoning_budget, OutputConstraint};
pub use reasoning::{reasoning_mode, ReasoningDelta, ReasoningMode, ReasoningParser};
pub use tools::{ToolCall, ToolCallParser, ToolDelta, ToolFormat};

use qwen_xml::ParamTypes;
use serde_json::Value;
use std::sync::Arc;

/// The one error type of this crate.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The request asks for something wrong or unsupported (HTTP 400).
    #[error("{0}")]
    InvalidRequest(String),
    /// The grammar or JSON schema cannot be compiled, e.g. a JSON-schema keyword that is not
    /// supported (HTTP 400); the message names it.
    #[error("unsupported or invalid schema: {0}")]
    Grammar(String),
    /// A request field is wrong; `param` names it as OpenAI's errors do
    /// (`tools[2].function.parameters`, `response_format.json_schema.schema`).
    #[error("{message}")]
    Param { param: String, message: String },
    /// The tokenizer cannot serve constrained decoding.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

impl OutputError {
    pub(crate) fn tool_choice(message: String) -> OutputError {
        OutputError::Param {
            param: "tool_choice".into(),
            message,
        }
    }

    /// The request field the error is about, when known.
    pub fn param(&self) -> Option<&str> {
        match self {
            OutputError::Param { param, .. } => Some(param),
            _ => None,
        }
    }
}

/// An error about the `grammar` field (GBNF), named as such.
pub(crate) fn grammar_param_error(message: String) -> OutputError {
    OutputError::Param {
        param: "grammar".into(),
        message: format!("grammar: {message}"),
    }
}

/// Errors compiling the converted `grammar` name the field.
fn grammar_error(e: OutputError) -> OutputError {
    match e {
        OutputError::Grammar(m) => grammar_param_error(format!("cannot be compiled: {m}")),
        e => e,
    }
}

/// What a plain text completion (no chat template, no reasoning) must match.
#[derive(Debug, Clone, PartialEq)]
pub enum TextFormat {
    /// A GBNF grammar (llama.cpp's `grammar` field).
    Gbnf(String),
    /// A JSON schema (llama.cpp's `json_schema`).
    JsonSchema(Value),
    /// OpenAI's `response_format` object (not `text`, which constrains nothing).
    ResponseFormat(Value),
}

/// The constraint for a plain text completion under a GBNF grammar, steered to end within
/// `max_tokens`. Errors name the `grammar` field (HTTP 400).
pub fn grammar_constraint(
    env: &Arc<TokenEnv>,
    gbnf: &str,
    max_tokens: Option<usize>,
) -> Result<OutputConstraint, OutputError> {
    let grammar = Grammar::from_gbnf(gbnf)?;
    let compiled = env.matcher(&grammar).map_err(grammar_error)?;
    Ok(text_constraint(env, &grammar, compiled, max_tokens))
}

/// The constraint for a plain text completion under `format`; errors name the field (`grammar`
/// or `json_schema`).
pub fn format_constraint(
    env: &Arc<TokenEnv>,
    format: &TextFormat,
    max_tokens: Option<usize>,
) -> Result<OutputConstraint, OutputError> {
    match format {
        TextFormat::Gbnf(g) => grammar_constraint(env, g, max_tokens),
        TextFormat::JsonSchema(schema) => {
            let named = |e: OutputError| OutputError::Param {
                param: "json_schema".into(),
                message: format!("json_schema: unsupported or invalid schema: {e}"),
            };
            let grammar = Grammar::json_schema(schema).map_err(named)?;
            let compiled = env.matcher(&grammar).map_err(named)?;
            Ok(text_constraint(env, &grammar, compiled, max_tokens))
        }
        TextFormat::ResponseFormat(rf) => {
            // Every error names `response_format` (its schema where that is the cause).
            let named = |e: OutputError| match response_format_error(e) {
                e @ OutputError::Param { .. } => e,
                e => OutputError::Param {
                    param: "response_format".into(),
                    message: e.to_string(),
                },
            };
            let grammar = Grammar::from_response_format(rf)
                .map_err(named)?
                .ok_or_else(|| {
                    named(OutputError::InvalidRequest(
                        "response_format.type 'text' constrains nothing".into(),
                    ))
                })?;
            let compiled = env.matcher(&grammar).map_err(named)?;
            Ok(text_constraint(env, &grammar, compiled, max_tokens))
        }
    }
}

fn text_constraint(
    env: &Arc<TokenEnv>,
    grammar: &Grammar,
    compiled: GrammarMatcher,
    max_tokens: Option<usize>,
) -> OutputConstraint {
    let c = OutputConstraint::compiled(
        env.clone(),
        ReasoningMode::None,
        Some((grammar, compiled)),
        None,
    );
    match max_tokens {
        Some(m) => c.with_max_tokens(m),
        None => c,
    }
}

/// The `response_format` schema with its field named; other `response_format` errors as they are.
fn response_format_error(e: OutputError) -> OutputError {
    match e {
        OutputError::Grammar(m) => OutputError::Param {
            param: "response_format.json_schema.schema".into(),
            message: format!(
                "response_format.json_schema.schema: unsupported or invalid schema: {m}"
            ),
        },
        OutputError::InvalidRequest(m) if m.starts_with("response_format.json_schema") => {
            OutputError::Param {
                param: "response_format.json_schema.schema".into(),
                message: m,
            }
        }
        e => e,
    }
}

/// The JSON schema `response_format` asks for (`None` for text), for a generic answer's
/// `response`.
fn response_schema(rf: &Value) -> Result<Option<Value>, OutputError> {
    Ok(Grammar::from_response_format(rf)
        .map_err(response_format_error)?
        .map(|_| {
            rf.pointer("/json_schema/schema")
                .or_else(|| rf.get("schema"))
                .cloned()
                .map(|s| {
                    if s == Value::Bool(true) {
                        serde_json::json!({})
                    } else {
                        s
                    }
                })
                .unwrap_or_else(|| serde_json::json!({"type": "object"}))
        }))
}

/// Compiles each tool's `parameters` alone, so that a schema at fault is named
/// (`tools[2].function.parameters`) even where the tools' combined grammar would hide it (a choice
/// between tools is no error while one of them is still possible).
fn check_tool_schemas(env: &TokenEnv, fns: &[(String, Value)]) -> Result<(), OutputError> {
    for (i, (name, params)) in fns.iter().enumerate() {
        let compiled = Grammar::json_schema(params).and_then(|g| env.matcher(&g));
        if let Err(OutputError::Grammar(m)) = compiled {
            return Err(OutputError::Param {
                param: format!("tools[{i}].function.parameters"),
                message: format!(
                    "tools[{i}].function.parameters (tool '{name}'): unsupported or invalid schema: {m}"
                ),
            });
        }
    }
    Ok(())
}

impl From<frugal_tokenizer::TokenizerError> for OutputError {
    fn from(e: frugal_tokenizer::TokenizerError) -> Self {
        OutputError::Tokenizer(e.to_string())
    }
}

/// A piece of a streamed assistant message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputDelta {
    /// `reasoning_content`.
    Reasoning(String),
    /// `content`.
    Content(String),
    /// The first delta of tool call `index`: its id and function name.
    ToolCallStart {
        index: usize,
        id: String,
        name: String,
    },
    /// More of tool call `index`'s arguments JSON text.
    ToolCallArguments { index: usize, arguments: String },
}

/// A finished assistant message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedMessage {
    /// `None` when the model did not reason.
    pub reasoning_content: Option<String>,
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
}

/// How the answer's tool calls are written.
#[derive(Debug, Clone)]
enum ToolParsing {
    /// In the model's own format.
    Native(ToolCallParser),
    /// As one JSON object ([`generic_tools`]).
    Generic(GenericToolParser),
}

impl ToolParsing {
    fn push(&mut self, text: &str) -> Vec<ToolDelta> {
        match self {
            ToolParsing::Native(p) => p.push(text),
            ToolParsing::Generic(p) => p.push(text),
        }
    }

    fn finish(&mut self) -> Vec<ToolDelta> {
        match self {
            ToolParsing::Native(p) => p.finish(),
            ToolParsing::Generic(p) => p.finish(),
        }
    }

    fn into_result(self) -> (String, Vec<ToolCall>) {
        match self {
            ToolParsing::Native(p) => {
                let r = p.into_result();
                (r.content, r.tool_calls)
            }
            ToolParsing::Generic(p) => p.into_result(),
        }
    }
}

/// Reasoning and tool-call parsing chained: generated text in, message deltas out.
#[derive(Debug, Clone)]
pub struct OutputParser {
    reasoning: ReasoningParser,
    tools: Option<ToolParsing>,
    reasoning_text: String,
    saw_reasoning: bool,
    content: String,
}

impl OutputParser {
    /// `tools`: the format to parse tool calls in, `None` when the request has no tools (then
    /// the whole answer is content).
    pub fn new(mode: ReasoningMode, tools: Option<ToolFormat>) -> Self {
        let mut reasoning = ReasoningParser::new(mode);
        if tools == Some(ToolFormat::KimiK2) {
            reasoning =
                reasoning.with_answer_markers(&[tools::kimi::CALLS_BEGIN, tools::kimi::CALL_BEGIN]);
        }
        OutputParser {
            reasoning,
            tools: tools.map(|f| ToolParsing::Native(ToolCallParser::new(f))),
            reasoning_text: String::new(),
            saw_reasoning: mode == ReasoningMode::Open,
            content: String::new(),
        }
    }

    /// Types the values of XML tool calls by these tools' `parameters` schemas (see
    /// [`qwen_xml`]); without it any value that parses as JSON (but a string) is JSON.
    pub fn with_tools(self, tools: &[Value]) -> Self {
        self.with_param_types(Arc::new(ParamTypes::from_tools(tools)))
    }

    fn with_param_types(mut self, types: Arc<ParamTypes>) -> Self {
        if let Some(ToolParsing::Native(p)) = self.tools.take() {
            self.tools = Some(ToolParsing::Native(p.with_param_types(types)));
        }
        self
    }

    /// A parser for answers in the generic JSON tool-call format ([`generic_tools`]).
    pub fn generic(mode: ReasoningMode) -> Self {
        OutputParser {
            tools: Some(ToolParsing::Generic(GenericToolParser::new())),
            ..OutputParser::new(mode, None)
        }
    }

    pub fn push(&mut self, text: &str) -> Vec<OutputDelta> {
        let ds = self.reasoning.push(text);
        self.route(ds, false)
    }

    pub fn finish(&mut self) -> Vec<OutputDelta> {
        let ds = self.reasoning.finish();
        self.route(ds, true)
    }

    fn route(&mut self, ds: Vec<ReasoningDelta>, last: bool) -> Vec<OutputDelta> {
        let mut out = Vec::new();
        if self.reasoning.opened_block() {
            self.saw_reasoning = true;
        }
        for d in ds {
            match d {
                ReasoningDelta::Reasoning(t) => {
                    self.saw_reasoning = true;
                    self.reasoning_text.push_str(&t);
                    out.push(OutputDelta::Reasoning(t));
                }
                ReasoningDelta::Content(t) => match &mut self.tools {
                    Some(p) => out.extend(p.push(&t).into_iter().map(OutputDelta::from)),
                    None => {
                        self.content.push_str(&t);
                        out.push(OutputDelta::Content(t));
                    }
                },
            }
        }
        if last {
            if let Some(p) = &mut self.tools {
                out.extend(p.finish().into_iter().map(OutputDelta::from));
            }
        }
        out
    }

    /// The whole message (call after [`OutputParser::finish`]).
    pub fn into_message(self) -> ParsedMessage {
        let (content, tool_calls) = match self.tools {
            Some(p) => p.into_result(),
            None => (self.content, Vec::new()),
        };
        ParsedMessage {
            reasoning_content: self.saw_reasoning.then_some(self.reasoning_text),
            content,
            tool_calls,
        }
    }
}

impl From<ToolDelta> for OutputDelta {
    fn from(d: ToolDelta) -> Self {
        match d {
            ToolDelta::Content(t) => OutputDelta::Content(t),
            ToolDelta::ToolCallStart { index, id, name } => {
                OutputDelta::ToolCallStart { index, id, name }
            }
            ToolDelta::ToolCallArguments { index, arguments } => {
                OutputDelta::ToolCallArguments { index, arguments }
            }
        }
    }
}

/// The output-related fields of a chat request.
#[derive(Debug, Clone, Copy)]
pub struct OutputRequest<'a> {
    /// The chat template's source (`ChatTemplate::source`).
    pub template_source: &'a str,
    /// The rendered prompt.
    pub prompt: &'a str,
    /// `tools` (OpenAI shape); empty when absent.
    pub tools: &'a [Value],
    pub tool_choice: Option<&'a Value>,
    /// OpenAI's `parallel_tool_calls` (default true).
    pub parallel_tool_calls: bool,
    pub response_format: Option<&'a Value>,
    /// llama.cpp's `grammar`: a GBNF grammar the answer must match, like a `response_format`
    /// schema (not together with a JSON one, nor with tool calls a grammar enforces).
    pub grammar: Option<&'a str>,
    /// `reasoning_effort`: `none`, `minimal`, `low`, `medium`, `high` (see
    /// [`reasoning_budget`]).
    pub reasoning_effort: Option<&'a str>,
    /// The request's token limit, to close structured output in time.
    pub max_tokens: Option<usize>,
}

/// What one chat request needs from this crate, decided up front.
#[derive(Debug, Clone)]
pub struct OutputPlan {
    pub reasoning: ReasoningMode,
    /// The tool-call format to parse (when the request has tools and `tool_choice` is not
    /// `none`).
    pub tool_format: Option<ToolFormat>,
    /// Tool calls are asked for and parsed in the generic JSON format ([`OutputPlan::generic`]).
    pub generic_tools: bool,
    /// The answer grammar: tool calls for `required`/named `tool_choice`, else the
    /// `response_format` schema or the GBNF `grammar`.
    pub grammar: Option<Grammar>,
    pub budget: Option<usize>,
    pub max_tokens: Option<usize>,
    /// The grammar compiled (cloned for each sequence).
    compiled: Option<GrammarMatcher>,
    /// The tools' parameter types, for XML tool calls.
    param_types: Arc<ParamTypes>,
}

impl OutputPlan {
    /// Validates the request's output options and compiles its grammar once (errors are HTTP
    /// 400). Tool calls fall back to the Hermes format when the template shows none.
    pub fn new(env: &TokenEnv, req: &OutputRequest) -> Result<OutputPlan, OutputError> {
        let choice = ToolChoice::from_json(req.tool_choice)?;
        let has_tools = !req.tools.is_empty() && choice != ToolChoice::None;
        let format = ToolFormat::detect(req.template_source).unwrap_or(ToolFormat::Hermes);
        let tool_format = has_tools.then_some(format);
        let fns = if has_tools {
            grammar::tool_signatures(req.tools)?
        } else {
            Vec::new()
        };
        let tool_grammar = if has_tools {
            Grammar::tool_calls(env, format, req.tools, &choice, req.parallel_tool_calls)?
        } else {
            None
        };
        if let Some(gbnf) = req.grammar {
            return OutputPlan::with_gbnf(env, req, gbnf, tool_grammar.is_some(), tool_format);
        }
        let mut plan = match (tool_grammar, req.response_format) {
            (Some(g), _) => {
                check_tool_schemas(env, &fns)?;
                OutputPlan::with_grammar(env, req, Some(g))?
            }
            (None, Some(rf)) => {
                let g = Grammar::from_response_format(rf).map_err(response_format_error)?;
                OutputPlan::with_grammar(env, req, g).map_err(response_format_error)?
            }
            (None, None) => OutputPlan::with_grammar(env, req, None)?,
        };
        plan.tool_format = tool_format;
        plan.param_types = Arc::new(ParamTypes::from_tools(req.tools));
        Ok(plan)
    }

    /// The plan for a template that cannot render tools: the answer is a generic JSON tool call
    /// or response ([`generic_tools`]), `response_format` applying to the response. Without
    /// tools (or with `tool_choice` `none`) this is [`OutputPlan::new`].
    pub fn generic(env: &TokenEnv, req: &OutputRequest) -> Result<OutputPlan, OutputError> {
        let choice = ToolChoice::from_json(req.tool_choice)?;
        if req.tools.is_empty() || choice == ToolChoice::None {
            return OutputPlan::new(env, req);
        }
        if req.grammar.is_some() {
            // The generic format is a grammar of its own (a JSON call or response).
            return Err(grammar_param_error(
                "cannot be combined with tools on a chat template that cannot render them".into(),
            ));
        }
        let fns = grammar::tool_signatures(req.tools)?;
        check_tool_schemas(env, &fns)?;
        let response = match req.response_format {
            Some(rf) => response_schema(rf)?,
            None => None,
        };
        let grammar = generic_tools::answer_grammar(
            &fns,
            &choice,
            req.parallel_tool_calls,
            response.as_ref(),
        )?;
        if let Some(schema) = &response {
            // Alone, as for the tools: in the combined grammar a broken response is no error.
            Grammar::json_schema(schema)
                .and_then(|g| env.matcher(&g))
                .map_err(response_format_error)?;
        }
        let mut plan = OutputPlan::with_grammar(env, req, Some(grammar))?;
        plan.generic_tools = true;
        Ok(plan)
    }

    /// The plan for a GBNF `grammar`: it alone constrains the answer, so a JSON
    /// `response_format` or tool calls a grammar would enforce conflict with it.
    fn with_gbnf(
        env: &TokenEnv,
        req: &OutputRequest,
        gbnf: &str,
        tool_grammar: bool,
        tool_format: Option<ToolFormat>,
    ) -> Result<OutputPlan, OutputError> {
        let json_format = req
            .response_format
            .and_then(|rf| rf.get("type"))
            .and_then(Value::as_str)
            .is_some_and(|t| t != "text");
        if json_format {
            return Err(grammar_param_error(
                "cannot be combined with a JSON response_format; give one of them".into(),
            ));
        }
        if tool_grammar {
            return Err(grammar_param_error(
                "cannot be combined with tool_choice 'required' or a named function".into(),
            ));
        }
        let grammar = Grammar::from_gbnf(gbnf)?;
        let mut plan = OutputPlan::with_grammar(env, req, Some(grammar)).map_err(grammar_error)?;
        plan.tool_format = tool_format;
        plan.param_types = Arc::new(ParamTypes::from_tools(req.tools));
        Ok(plan)
    }

    fn with_grammar(
        env: &TokenEnv,
        req: &OutputRequest,
        grammar: Option<Grammar>,
    ) -> Result<OutputPlan, OutputError> {
        let compiled = grammar.as_ref().map(|g| env.matcher(g)).transpose()?;
        let budget = req.reasoning_effort.map(reasoning_budget).transpose()?;
        Ok(OutputPlan {
            reasoning: reasoning_mode(req.template_source, req.prompt),
            tool_format: None,
            generic_tools: false,
            grammar,
            budget,
            max_tokens: req.max_tokens,
            compiled,
            param_types: Arc::default(),
        })
    }

    pub fn parser(&self) -> OutputParser {
        if self.generic_tools {
            OutputParser::generic(self.reasoning)
        } else {
            OutputParser::new(self.reasoning, self.tool_format)
                .with_param_types(self.param_types.clone())
        }
    }

    /// The sequence's constraint; `None` when there is nothing to enforce.
    pub fn constraint(&self, env: &Arc<TokenEnv>) -> Option<OutputConstraint> {
        if self.grammar.is_none() && self.budget.is_none() {
            return None;
        }
        let grammar = self.grammar.as_ref().zip(self.compiled.clone());
        let mut c = OutputConstraint::compiled(env.clone(), self.reasoning, grammar, self.budget);
        if let Some(m) = self.max_tokens {
            c = c.with_max_tokens(m);
        }
        Some(c)
    }
}
