//! What the fuzz targets run, as a library so that `cargo test` in fuzz/ can replay the corpus
//! on a stable toolchain too (tests/replay.rs).

pub mod chat_request {
    use frugal_chat::ChatTemplate;
    use frugal_output::generic_tools;
    use frugal_output::{GenericToolParser, ToolFormat};
    use frugal_server::api::{parse_body, render_prompt, ChatRequest, Common, CompletionRequest};
    use std::sync::OnceLock;

    /// Templates with different habits: tools rendered (Qwen3, Llama 3.1), tools ignored with a
    /// native call syntax (DeepSeek R1), none at all (ChatML, SmolLM2).
    fn templates() -> &'static [ChatTemplate] {
        static T: OnceLock<Vec<ChatTemplate>> = OnceLock::new();
        T.get_or_init(|| {
            let load = |src: &str, bos: Option<&str>, eos: &str| {
                ChatTemplate::new(src, bos, Some(eos), None).expect("fixture templates compile")
            };
            vec![
                ChatTemplate::chatml(),
                load(
                    include_str!("../../crates/chat/tests/data/templates/HuggingFaceTB-SmolLM2-135M-Instruct.jinja"),
                    None,
                    "<|im_end|>",
                ),
                load(include_str!("../../../shared/fixtures/templates/Qwen-Qwen3-0.6B.jinja"), None, "<|im_end|>"),
                load(
                    include_str!("../../../shared/fixtures/templates/meta-llama-Llama-3.1-8B-Instruct.jinja"),
                    Some("<|begin_of_text|>"),
                    "<|eot_id|>",
                ),
                load(
                    include_str!("../../../shared/fixtures/templates/deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"),
                    Some("<｜begin▁of▁sentence｜>"),
                    "<｜end▁of▁sentence｜>",
                ),
            ]
        })
    }

    /// One input: a request body, and a generic tool-call answer.
    pub fn exercise(data: &[u8]) {
        if let Ok(common) = parse_body::<Common>(data) {
            let _ = common.generation(151_936);
        }
        if let Ok(req) = parse_body::<CompletionRequest>(data) {
            let _ = (req.prompt, req.suffix);
        }
        if let Ok(req) = parse_body::<ChatRequest>(data) {
            for t in templates() {
                let _ = render_prompt(t, &req);
            }
            let tools = req.tools.as_deref().unwrap_or_default();
            for native in [None, Some(ToolFormat::DeepSeekR1)] {
                let _ = generic_tools::tools_system_prompt(tools, native);
            }
            let mut msgs = frugal_chat::normalize_messages(&req.messages);
            generic_tools::rewrite_history(&mut msgs);
            generic_tools::add_tools_to_system(&mut msgs, "tools");
        }
        if let Ok(text) = std::str::from_utf8(data) {
            let mut p = GenericToolParser::new();
            // Two pieces, as a stream delivers them.
            let mut mid = text.len() / 2;
            while !text.is_char_boundary(mid) {
                mid -= 1;
            }
            let (a, b) = text.split_at(mid);
            p.push(a);
            p.push(b);
            p.finish();
            let _ = p.into_result();
        }
    }
}
