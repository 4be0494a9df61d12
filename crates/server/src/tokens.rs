//! `/tokenize` and `/detokenize` in both llama-server's and vLLM's request shapes, answered with
//! the union of their fields.

use crate::api::{parse_body, ChatRequest};
use crate::error::ApiError;
use crate::routes::RequestBody;
use crate::{AppState, ModelState};
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

type Shared = State<Arc<AppState>>;

/// llama-server's `{content, add_special, parse_special, with_pieces}` or vLLM's `{prompt,
/// add_special_tokens, return_token_strs}` / `{messages, add_generation_prompt, …}`.
#[derive(Debug, Deserialize)]
struct TokenizeRequest {
    content: Option<String>,
    prompt: Option<String>,
    messages: Option<Vec<Value>>,
    add_special: Option<bool>,
    add_special_tokens: Option<bool>,
    parse_special: Option<bool>,
    #[serde(default)]
    with_pieces: bool,
    #[serde(default)]
    return_token_strs: bool,
}

/// `POST /tokenize`.
pub async fn tokenize(
    State(app): Shared,
    RequestBody(b): RequestBody,
) -> Result<Json<Value>, ApiError> {
    let st = crate::routes::model_of(&app, &b).await?;
    crate::prep::offload(&st, move |st| tokenize_body(st, &b)).await?
}

fn tokenize_body(st: &ModelState, b: &[u8]) -> Result<Json<Value>, ApiError> {
    let req: TokenizeRequest = parse_body(b)?;
    let (text, add_special) = match (&req.content, &req.prompt, &req.messages) {
        // llama-server adds no BOS unless asked; vLLM adds it to a prompt unless told not to.
        (Some(c), _, _) => (c.clone(), req.add_special.unwrap_or(false)),
        (None, Some(p), _) => (p.clone(), req.add_special_tokens.unwrap_or(true)),
        (None, None, Some(_)) => {
            let chat: ChatRequest = parse_body(b)?;
            let text = crate::chat::render(st, &chat)?;
            (text, req.add_special_tokens.unwrap_or(false))
        }
        (None, None, None) => {
            return Err(ApiError::invalid_param(
                "content",
                "Give the text as 'content' (llama.cpp), 'prompt' or 'messages' (vLLM).",
            ))
        }
    };
    let tok = &st.tokenizer;
    let ids = tok
        .encode(&text, add_special, req.parse_special.unwrap_or(true))
        .map_err(|e| ApiError::invalid(format!("Cannot tokenize the text: {e}")))?;
    let piece = |id: u32| {
        let bytes = tok.token_bytes(id);
        match String::from_utf8(bytes) {
            Ok(s) => json!(s),
            Err(e) => json!(e.into_bytes()),
        }
    };
    let tokens: Value = if req.with_pieces {
        ids.iter()
            .map(|&id| json!({"id": id, "piece": piece(id)}))
            .collect()
    } else {
        json!(ids)
    };
    let mut out = json!({"tokens": tokens, "count": ids.len(), "max_model_len": st.n_ctx});
    if req.return_token_strs {
        out["token_strs"] = ids.iter().map(|&id| piece(id)).collect();
    }
    Ok(Json(out))
}

#[derive(Debug, Deserialize)]
struct DetokenizeRequest {
    tokens: Vec<u32>,
}

/// `POST /detokenize`: the text as `content` (llama-server) and `prompt` (vLLM).
pub async fn detokenize(
    State(app): Shared,
    RequestBody(b): RequestBody,
) -> Result<Json<Value>, ApiError> {
    let st = crate::routes::model_of(&app, &b).await?;
    let req: DetokenizeRequest = parse_body(&b)?;
    crate::prep::check_token_ids(&st, &req.tokens, "tokens")?;
    let text = st.tokenizer.decode(&req.tokens, false);
    Ok(Json(json!({"content": text, "prompt": text})))
}
