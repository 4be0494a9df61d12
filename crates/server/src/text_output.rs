//! What a plain completion's text must match (llama.cpp's `grammar` in GBNF, its `json_schema`,
//! or `response_format`), checked once when the request arrives, then a constraint per choice.

use crate::error::ApiError;
use crate::ModelState;
use frugal_constraint::Constraint;
use frugal_output::{format_constraint, Grammar, TextFormat, TokenEnv};
use serde_json::Value;
use std::sync::Arc;

pub struct TextOutput {
    env: Arc<TokenEnv>,
    format: TextFormat,
    max_tokens: Option<usize>,
}

impl std::fmt::Debug for TextOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextOutput")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl TextOutput {
    /// The format a request asks for (`grammar`, then `json_schema`, then `response_format`),
    /// compiled once to refuse what cannot be (a 400 naming the field); `None` for free text.
    pub(crate) fn from_request(
        st: &ModelState,
        grammar: Option<&str>,
        json_schema: Option<&Value>,
        response_format: Option<&Value>,
        max_tokens: Option<usize>,
    ) -> Result<Option<Arc<TextOutput>>, ApiError> {
        let format = match (grammar, json_schema, response_format) {
            (Some(g), None, None) => TextFormat::Gbnf(g.to_string()),
            (None, Some(s), None) => TextFormat::JsonSchema(s.clone()),
            // `text` constrains nothing; anything else is compiled (and its errors reported) below.
            (None, None, Some(rf)) => match Grammar::from_response_format(rf) {
                Ok(None) => return Ok(None),
                _ => TextFormat::ResponseFormat(rf.clone()),
            },
            (None, None, None) => return Ok(None),
            _ => {
                return Err(ApiError::invalid_param(
                    "grammar",
                    "Give at most one of 'grammar', 'json_schema' and 'response_format'.",
                ))
            }
        };
        let env = st.output.clone().map_err(|e| {
            ApiError::invalid(format!(
                "Constrained decoding is unavailable for this model: {e}"
            ))
        })?;
        let out = TextOutput {
            env,
            format,
            max_tokens,
        };
        out.compile()?;
        Ok(Some(Arc::new(out)))
    }

    fn compile(&self) -> Result<Box<dyn Constraint>, ApiError> {
        format_constraint(&self.env, &self.format, self.max_tokens)
            .map(|c| Box::new(c) as Box<dyn Constraint>)
            .map_err(|e| {
                let msg = e.to_string();
                ApiError::invalid_param(e.param().unwrap_or("grammar").to_string(), msg)
            })
    }

    /// A fresh constraint for one choice (the format compiled when the request came in, so
    /// this does not fail; if it did, the choice would run unconstrained and say so in the log).
    pub(crate) fn constraint(&self) -> Option<Box<dyn Constraint>> {
        self.compile()
            .map_err(|e| tracing::error!("a checked grammar failed to compile again: {e}"))
            .ok()
    }
}
