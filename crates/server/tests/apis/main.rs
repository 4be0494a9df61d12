//! The APIs beside OpenAI's chat and completions, over real HTTP on fixture models: Anthropic's
//! Messages, OpenAI's Responses, and llama.cpp's and vLLM's extras.

#[path = "../common/mod.rs"]
mod common;

mod anthropic;
mod compat;
mod responses;

use frugal_server::ServerConfig;

const QWEN3: &str = "models/qwen3-Q8_0.gguf";

/// The Qwen3 fixture with a real chat template (tools, `<think>`).
fn with_template(template: &'static str) -> impl FnOnce(&mut ServerConfig) {
    move |cfg| {
        let f = frugal_fixtures::dir();
        cfg.model = f.join(QWEN3);
        cfg.ctx_size = Some(1024);
        cfg.chat_template = Some(std::fs::read_to_string(f.join(template)).unwrap());
    }
}
