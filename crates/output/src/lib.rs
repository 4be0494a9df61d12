//! Model output for chat requests: reasoning blocks, tool calls and structured output.
//!
//! - [`reasoning`] splits generated text into reasoning and answer (`<think>`…`</think>`), streaming.
//! - [`tools`] parses tool calls out of the answer in the model's own format, streaming.
//! - [`grammar`] builds llguidance grammars (JSON object, JSON schema, tool calls) over a model's
//!   vocabulary.
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

pub mod grammar;
pub mod machine;
pub mod reasoning;
pub mod tools;

pub use grammar::{Grammar, GrammarMatcher, TokenEnv, ToolChoice};
pub use machine::{reasoning_budget, OutputConstraint};
pub use reasoning::{reasoning_mode, ReasoningDelta, ReasoningMode, ReasoningParser};
pub use tools::{ToolCall, ToolCallParser, ToolDelta, ToolFormat};

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
    /// The tokenizer cannot serve constrained decoding.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
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

/// Reasoning and tool-call parsing chained: generated text in, message deltas out.
#[derive(Debug, Clone)]
pub struct OutputParser {
    reasoning: ReasoningParser,
    tools: Option<ToolCallParser>,
    reasoning_text: String,
    saw_reasoning: bool,
    content: String,
}

impl OutputParser {
    /// `tools`: the format to parse tool calls in, `None` when the request has no tools (then
    /// the whole answer is content).
    pub fn new(mode: ReasoningMode, tools: Option<ToolFormat>) -> Self {
        OutputParser {
            reasoning: ReasoningParser::new(mode),
            tools: tools.map(ToolCallParser::new),
            reasoning_text: String::new(),
            saw_reasoning: mode == ReasoningMode::Open,
            content: String::new(),
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
        if self.reasoning.in_reasoning() {
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
            Some(p) => {
                let r = p.into_result();
                (r.content, r.tool_calls)
            }
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
    /// The answer grammar: tool calls for `required`/named `tool_choice`, else the
    /// `response_format` schema.
    pub grammar: Option<Grammar>,
    pub budget: Option<usize>,
    pub max_tokens: Option<usize>,
    /// The grammar compiled (cloned for each sequence).
    compiled: Option<GrammarMatcher>,
}

impl OutputPlan {
    /// Validates the request's output options and compiles its grammar once (errors are HTTP
    /// 400). Tool calls fall back to the Hermes format when the template shows none.
    pub fn new(env: &TokenEnv, req: &OutputRequest) -> Result<OutputPlan, OutputError> {
        let reasoning = reasoning_mode(req.template_source, req.prompt);
        let choice = ToolChoice::from_json(req.tool_choice)?;
        let has_tools = !req.tools.is_empty() && choice != ToolChoice::None;
        let format = ToolFormat::detect(req.template_source).unwrap_or(ToolFormat::Hermes);
        let tool_format = has_tools.then_some(format);
        let mut grammar = if has_tools {
            Grammar::tool_calls(env, format, req.tools, &choice, req.parallel_tool_calls)?
        } else {
            None
        };
        if grammar.is_none() {
            if let Some(rf) = req.response_format {
                grammar = Grammar::from_response_format(rf)?;
            }
        }
        let compiled = grammar.as_ref().map(|g| env.matcher(g)).transpose()?;
        let budget = req.reasoning_effort.map(reasoning_budget).transpose()?;
        Ok(OutputPlan {
            reasoning,
            tool_format,
            grammar,
            budget,
            max_tokens: req.max_tokens,
            compiled,
        })
    }

    pub fn parser(&self) -> OutputParser {
        OutputParser::new(self.reasoning, self.tool_format)
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
