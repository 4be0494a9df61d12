//! The OpenAI request bodies as Rust types, and their validation into sampling parameters.
//! Unknown fields are accepted and ignored, as OpenAI's own server does for most clients' extras.

use crate::error::ApiError;
use frugal_engine::sampler::SamplingParams;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// A chat request's prompt with a given template (what the chat endpoint renders), public for
/// the fuzz target in fuzz/.
pub use crate::chat::render_prompt;

/// Parses a JSON body; wrong types name the field (`param`).
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        if e.inner().is_syntax() || e.inner().is_eof() {
            ApiError::invalid(format!(
                "The request body is not valid JSON: {}",
                e.into_inner()
            ))
        } else {
            field_error(e, &str::to_string)
        }
    })
}

/// A request another API's body was translated into, parsed into `T`; a wrong type names the
/// field as `name` maps the chat request's field to the client's.
pub fn from_value<T: DeserializeOwned>(
    v: Value,
    name: &dyn Fn(&str) -> String,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(v).map_err(|e| field_error(e, name))
}

/// A 400 naming the field whose value has the wrong type (none for the whole request).
fn field_error(
    e: serde_path_to_error::Error<serde_json::Error>,
    name: &dyn Fn(&str) -> String,
) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if path == "." || path.is_empty() {
        return ApiError::invalid(format!("Invalid request: {inner}"));
    }
    let param = name(&path);
    ApiError::invalid_param(
        param.clone(),
        format!("Invalid value for '{param}': {inner}"),
    )
}

/// `"stop": "x"` or `"stop": ["x", "y"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Fields shared by chat and text completions, parsed from the same body as the endpoint's own
/// fields (not `#[serde(flatten)]`, which would lose the name of a field with a wrong type).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Common {
    pub model: Option<String>,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// -1 or 0 disables (vLLM's and llama.cpp's conventions).
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub n: Option<u32>,
    pub stop: Option<OneOrMany>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub logit_bias: Option<BTreeMap<String, f32>>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    /// Accepted and ignored (but see the `fault-injection` feature).
    pub user: Option<String>,
    /// `false`: no speculative decoding for this request (when the server speculates).
    pub speculative: Option<bool>,
    /// llama.cpp's per-request draft length; 0 opts out like `"speculative": false`.
    #[serde(rename = "speculative.n_max")]
    pub speculative_n_max: Option<u64>,
    /// `false`: neither reuse nor offer cached prompt prefixes (llama.cpp's `cache_prompt`).
    pub cache_prompt: Option<bool>,
    /// Share cached prompt prefixes only with requests of the same salt (vLLM's `cache_salt`).
    pub cache_salt: Option<String>,
    /// Keep generating past end-of-generation tokens (vLLM's `ignore_eos`; benchmarks).
    #[serde(default)]
    pub ignore_eos: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<Value>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u32>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    pub response_format: Option<Value>,
    /// Extra template variables (e.g. Qwen3's `enable_thinking`), as vLLM and llama.cpp accept.
    pub chat_template_kwargs: Option<serde_json::Map<String, Value>>,
    pub parallel_tool_calls: Option<bool>,
    /// `none`, `minimal`, `low`, `medium` or `high`: a reasoning budget.
    pub reasoning_effort: Option<String>,
    /// Most reasoning tokens before `</think>` is forced (overrides `reasoning_effort`).
    pub max_reasoning_tokens: Option<u64>,
    /// `false`: render without opening the assistant's turn (vLLM's and llama.cpp's field).
    pub add_generation_prompt: Option<bool>,
    /// Continue the last (assistant) message instead of closing it (vLLM's field; DeepSeek's
    /// `"prefix": true` on the message does the same).
    pub continue_final_message: Option<bool>,
    /// A GBNF grammar the answer (after any reasoning) must match (llama.cpp's field).
    pub grammar: Option<String>,
    /// A JSON schema the answer must match (llama.cpp's field; `response_format` is OpenAI's).
    pub json_schema: Option<Value>,
}

/// `prompt`: a string, several strings, token ids, or several token-id lists.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    pub prompt: Prompt,
    pub logprobs: Option<u32>,
    #[serde(default)]
    pub echo: bool,
    pub suffix: Option<String>,
    /// What the text must match: a GBNF grammar, a JSON schema (llama.cpp's fields), or
    /// `response_format` (vLLM's).
    pub grammar: Option<String>,
    pub json_schema: Option<Value>,
    pub response_format: Option<Value>,
}

/// Most alternatives a client may ask for per token (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: u32 = 20;
/// Most choices per request.
pub const MAX_N: u32 = 16;

/// What the `fault-injection` feature lets a test make a request do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `user: "frugal-fault-injection:panic"`: its constraint panics inside the engine step.
    Panic,
    /// `user: "frugal-fault-injection:slow"`: its constraint sleeps 20 ms per token.
    Slow,
}

/// What the handlers need from a request's common fields.
#[derive(Debug, Clone)]
pub struct Generation {
    /// `None`: up to the end of the context.
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub n: usize,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    /// Tests only (`fault-injection` feature): a constraint that panics, or that takes a while
    /// over every token (a request that stays in flight).
    pub fault: Option<Fault>,
    /// Speculative decoding allowed (when the server speculates).
    pub speculate: bool,
    pub cache_prompt: bool,
    pub cache_salt: Option<String>,
    /// Keep generating past end-of-generation tokens (llama-server's `ignore_eos`).
    pub ignore_eos: bool,
    /// What a plain completion's text must match (`grammar`, `json_schema`).
    pub text_output: Option<std::sync::Arc<crate::text_output::TextOutput>>,
}

impl Common {
    /// Validates the values and turns them into engine parameters.
    pub fn generation(&self, n_vocab: usize) -> Result<Generation, ApiError> {
        let max_tokens = match (self.max_completion_tokens, self.max_tokens) {
            (Some(m), _) => Some(("max_completion_tokens", m)),
            (None, Some(m)) => Some(("max_tokens", m)),
            (None, None) => None,
        };
        if let Some((name, 0)) = max_tokens {
            return Err(ApiError::invalid_param(
                name,
                format!("'{name}' must be at least 1."),
            ));
        }
        let n = self.n.unwrap_or(1);
        if !(1..=MAX_N).contains(&n) {
            return Err(ApiError::invalid_param(
                "n",
                format!("'n' must be between 1 and {MAX_N}, got {n}."),
            ));
        }
        let top_k = match self.top_k {
            None => 0,
            Some(k) if k <= 0 => 0,
            Some(k) => k as usize,
        };
        if matches!(self.top_k, Some(k) if k < -1) {
            return Err(ApiError::invalid_param(
                "top_k",
                "'top_k' must be -1 (disabled) or at least 0.",
            ));
        }
        let mut logit_bias = Vec::new();
        for (k, &v) in self.logit_bias.iter().flatten() {
            let id: u32 = k.parse().map_err(|_| {
                ApiError::invalid_param(
                    "logit_bias",
                    format!("logit_bias keys must be token ids, got '{k}'."),
                )
            })?;
            logit_bias.push((id, v));
        }
        let sampling = SamplingParams {
            temperature: self.temperature.unwrap_or(1.0),
            top_k,
            top_p: self.top_p.unwrap_or(1.0),
            min_p: self.min_p.unwrap_or(0.0),
            repetition_penalty: self.repetition_penalty.unwrap_or(1.0),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            logit_bias,
            seed: self.seed.map(|s| s as u64),
            ..SamplingParams::default()
        };
        sampling.validate(n_vocab).map_err(|e| {
            ApiError::invalid_param(e.param, format!("Invalid '{}': {}.", e.param, e.msg))
        })?;
        let stop = self
            .stop
            .clone()
            .map(OneOrMany::into_vec)
            .unwrap_or_default();
        if stop.len() > 16 {
            return Err(ApiError::invalid_param(
                "stop",
                "At most 16 stop sequences are allowed.",
            ));
        }
        Ok(Generation {
            max_tokens: max_tokens.map(|(_, m)| m.min(usize::MAX as u64) as usize),
            sampling,
            n: n as usize,
            stop,
            stream: self.stream,
            include_usage: self.include_usage(),
            fault: self.fault(),
            speculate: self.speculative != Some(false) && self.speculative_n_max != Some(0),
            cache_prompt: self.cache_prompt != Some(false),
            cache_salt: self.cache_salt()?,
            ignore_eos: self.ignore_eos,
            text_output: None,
        })
    }

    /// The fault a test asks for in `user` (never without the `fault-injection` feature).
    fn fault(&self) -> Option<Fault> {
        if !cfg!(feature = "fault-injection") {
            return None;
        }
        match self.user.as_deref() {
            Some("frugal-fault-injection:panic") => Some(Fault::Panic),
            Some("frugal-fault-injection:slow") => Some(Fault::Slow),
            _ => None,
        }
    }

    /// `stream_options.include_usage`.
    fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }

    /// `cache_salt`, which must not be empty.
    fn cache_salt(&self) -> Result<Option<String>, ApiError> {
        match self.cache_salt.as_deref() {
            Some("") => Err(ApiError::invalid_param(
                "cache_salt",
                "cache_salt must be a non-empty string.",
            )),
            salt => Ok(salt.map(str::to_string)),
        }
    }
}
