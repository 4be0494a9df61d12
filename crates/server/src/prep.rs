//! Turning a request body into prompts off the async runtime: parsing, template rendering and
//! tokenizing run on tokio's blocking pool, a few at a time, so that `/health` and streaming stay
//! responsive while large prompts are prepared; and a bound from a prompt's byte length that
//! rejects prompts that cannot fit without tokenizing them.

use crate::error::ApiError;
use crate::ModelState;
use frugal_tokenizer::Tokenizer;
use std::sync::Arc;
use tokio::sync::Semaphore;

pub(crate) struct Prep {
    permits: Arc<Semaphore>,
    /// The most input bytes one token can stand for: a prompt of `b` bytes has at least
    /// `ceil(b / max_token_bytes)` tokens.
    max_token_bytes: usize,
}

/// The blocking pool's permits: a few at a time, shared by every model.
pub(crate) fn permits() -> Arc<Semaphore> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
    Arc::new(Semaphore::new(workers))
}

impl Prep {
    pub fn new(tokenizer: &Tokenizer, permits: Arc<Semaphore>) -> Prep {
        Prep {
            permits,
            max_token_bytes: max_token_bytes(tokenizer),
        }
    }

    /// The fewest tokens a text of `bytes` bytes can encode to.
    pub fn min_tokens(&self, bytes: usize) -> usize {
        bytes.div_ceil(self.max_token_bytes)
    }
}

/// The longest text a token stands for, in bytes, and at least 4. Every token the tokenizers emit
/// covers at most its own decoded bytes of the input: byte-level BPE tokens decode to exactly
/// the bytes they cover; SentencePiece tokens cover their text with `▁` read as one space (their
/// decoded bytes), byte-fallback tokens one byte and the unknown token one byte or character;
/// special tokens their own text. (A `tokenizer.json` whose normalizer shortens text or that
/// fuses unknown characters could break this; the server reads GGUF tokenizers, which cannot.)
fn max_token_bytes(tokenizer: &Tokenizer) -> usize {
    (0..tokenizer.vocab_size() as u32)
        .map(|id| tokenizer.token_bytes(id).len())
        .max()
        .unwrap_or(0)
        .max(4)
}

/// Runs `work` on the blocking pool once one of the pool's few permits is free; the permit is
/// held until `work` returns, even if the client has gone away meanwhile.
pub async fn offload<T: Send + 'static>(
    st: &Arc<ModelState>,
    work: impl FnOnce(&ModelState) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let permit = st
        .prep
        .permits
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::unavailable("The server is shutting down."))?;
    let st = st.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work(&st)
    })
    .await
    .map_err(|e| ApiError::internal(format!("Preparing the prompt failed: {e}")))
}

/// The 400 `context_length_exceeded` for a prompt of `n_prompt` tokens (`at_least`: a lower bound
/// from its length, not tokenized) and `max_tokens` to generate.
pub fn context_exceeded(
    n_ctx: usize,
    n_prompt: usize,
    max_tokens: usize,
    at_least: bool,
) -> ApiError {
    let max_tokens = max_tokens.max(1);
    let q = if at_least { "at least " } else { "" };
    ApiError::invalid(format!(
        "This model's maximum context length is {n_ctx} tokens. However, you requested {q}{} tokens ({q}{n_prompt} in the prompt, {max_tokens} for the completion). Please reduce the prompt or the completion length.",
        n_prompt.saturating_add(max_tokens),
    ))
    .with_code("context_length_exceeded")
}

/// Rejects token ids outside the model's vocabulary (a 400 naming `param`).
pub fn check_token_ids(st: &ModelState, ids: &[u32], param: &'static str) -> Result<(), ApiError> {
    match ids.iter().find(|&&t| t as usize >= st.n_vocab) {
        Some(bad) => Err(ApiError::invalid_param(
            param,
            format!(
                "Token id {bad} is outside the vocabulary of {}.",
                st.n_vocab
            ),
        )),
        None => Ok(()),
    }
}

/// Rejects a prompt text that cannot fit the context with `max_tokens` (at least one) to
/// generate, from its length alone; `extra` tokens (BOS, FIM tokens) come on top of the text's.
pub fn check_length(
    st: &ModelState,
    text_bytes: usize,
    extra: usize,
    max_tokens: Option<usize>,
) -> Result<(), ApiError> {
    let at_least = st.prep.min_tokens(text_bytes).saturating_add(extra);
    let max_tokens = max_tokens.unwrap_or(1).max(1);
    if at_least.saturating_add(max_tokens) > st.n_ctx {
        return Err(context_exceeded(st.n_ctx, at_least, max_tokens, true));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use frugal_formats::GgufFile;

    #[test]
    fn the_bound_never_exceeds_the_real_count() {
        for name in ["qwen2-Q8_0.gguf", "llama-Q8_0.gguf"] {
            let path = frugal_fixtures::dir().join("models").join(name);
            let gguf = GgufFile::open(&path).unwrap();
            let tok = Tokenizer::from_gguf(&gguf).unwrap();
            let max = max_token_bytes(&tok);
            for text in [
                "Hello, world! ".repeat(50),
                "ééé 日本語 🦀🦀 ".repeat(40),
                "<|im_start|>user\nhi<|im_end|>".repeat(20),
                "                                                    x".into(),
                "\u{0}\u{1}\u{7f}".repeat(30),
            ] {
                let n = tok.encode(&text, false, true).unwrap().len();
                assert!(
                    text.len().div_ceil(max) <= n,
                    "{name}: {} bytes / {max} > {n} tokens",
                    text.len()
                );
            }
        }
    }
}
