//! The APIs beside OpenAI's chat and completions, over real HTTP on fixture models: Anthropic's
//! Messages, OpenAI's Responses, and llama.cpp's and vLLM's extras.

#[path = "../common/mod.rs"]
mod common;

mod anthropic;
mod compat;
mod responses;
