//! The parsers on the real chat templates in ../shared/fixtures/templates (and Qwen3.5's and
//! Qwen3-Coder's, kept with frugal-chat's tests): an assistant turn with
//! tool calls (and with or without reasoning) is rendered by the template, the part the model
//! would have generated is cut out of the rendering, and parsing it must give back the turn —
//! whole, and streamed in pieces of every size from 1 to 7 characters.

use frugal_chat::ChatTemplate;
use frugal_fixtures::dir as fixtures;
use frugal_output::glm_xml::GlmLayout;
use frugal_output::{
    reasoning_mode, OutputDelta, OutputParser, ParsedMessage, ReasoningMode, ToolFormat,
};
use serde_json::{json, Map, Value};

const TEMPLATES: &[(&str, Option<ToolFormat>)] = &[
    ("Qwen-Qwen2.5-7B-Instruct", Some(ToolFormat::Hermes)),
    ("Qwen-Qwen3-0.6B", Some(ToolFormat::Hermes)),
    ("Qwen-QwQ-32B", Some(ToolFormat::Hermes)),
    (
        "NousResearch-Hermes-3-Llama-3.1-8B-tool_use",
        Some(ToolFormat::Hermes),
    ),
    (
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B",
        Some(ToolFormat::DeepSeekR1),
    ),
    ("deepseek-ai-DeepSeek-V3.1", Some(ToolFormat::DeepSeekV31)),
    (
        "meta-llama-Llama-3.1-8B-Instruct",
        Some(ToolFormat::Llama3Json),
    ),
    ("Qwen-Qwen3.5-4B", Some(ToolFormat::QwenXml)),
    ("Qwen-Qwen3-Coder", Some(ToolFormat::QwenXml)),
    ("zai-org-GLM-4.6", Some(ToolFormat::Glm(GlmLayout::Lines))),
    (
        "zai-org-GLM-4.7-Flash",
        Some(ToolFormat::Glm(GlmLayout::Compact)),
    ),
    ("moonshotai-Kimi-K2-Instruct", Some(ToolFormat::KimiK2)),
    ("moonshotai-Kimi-K2-Thinking", Some(ToolFormat::KimiK2)),
    ("moonshotai-Kimi-K2-old", Some(ToolFormat::KimiK2)),
];

/// Templates kept in frugal-chat's test data rather than the shared fixtures (their special
/// tokens: no BOS, `<|im_end|>`).
const CHAT_DATA_TEMPLATES: &[&str] = &[
    "Qwen-Qwen3.5-4B",
    "Qwen-Qwen3-Coder",
    "zai-org-GLM-4.6",
    "zai-org-GLM-4.7-Flash",
    "moonshotai-Kimi-K2-Instruct",
    "moonshotai-Kimi-K2-Thinking",
    "moonshotai-Kimi-K2-old",
];

/// Texts that end an assistant turn in these templates.
const END_OF_TURN: &[&str] = &[
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<｜end▁of▁sentence｜>",
];

fn template(name: &str) -> (String, ChatTemplate) {
    if CHAT_DATA_TEMPLATES.contains(&name) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../chat/tests/data/templates")
            .join(format!("{name}.jinja"));
        let source = std::fs::read_to_string(path).unwrap();
        let t =
            ChatTemplate::new(&source, None, Some("<|im_end|>"), Some("<|endoftext|>")).unwrap();
        return (source, t);
    }
    let dir = fixtures().join("templates");
    let source = std::fs::read_to_string(dir.join(format!("{name}.jinja"))).unwrap();
    let exp: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("expected").join(format!("{name}.json"))).unwrap(),
    )
    .unwrap();
    let st = &exp["special_tokens"];
    let t = ChatTemplate::new(
        &source,
        st["bos_token"].as_str(),
        st["eos_token"].as_str(),
        st["pad_token"].as_str(),
    )
    .unwrap();
    (source, t)
}

fn tools() -> Vec<Value> {
    vec![
        json!({"type": "function", "function": {
            "name": "get_weather",
            "description": "Get the current weather for a city.",
            "parameters": {"type": "object", "properties": {
                "location": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                "required": ["location"]}}}),
        json!({"type": "function", "function": {
            "name": "search",
            "description": "Search the web.",
            "parameters": {"type": "object", "properties": {
                "query": {"type": "string"},
                "filters": {"type": "object"}},
                "required": ["query"]}}}),
    ]
}

fn calls(n: usize) -> Vec<(String, Value)> {
    let all = vec![
        (
            "get_weather".to_string(),
            json!({"location": "Paris, France", "unit": "celsius"}),
        ),
        (
            "search".to_string(),
            json!({"query": "a } tricky \"one\" with <tool_call> and </tool_call> and ``` inside", "filters": {"lang": ["fr", "en"], "n": 3, "deep": {"x": null, "y": true}}, "emoji": "🙂 é"}),
        ),
    ];
    all.into_iter().take(n).collect()
}

struct Case {
    prompt: String,
    /// What the model would generate.
    output: String,
    reasoning: Option<String>,
    content: String,
    calls: Vec<(String, Value)>,
}

/// Renders the conversation up to the generation prompt and with the assistant turn; the model's
/// part is the rendering past their common prefix, up to the end of the turn. For prompts that
/// open `<think>`, a reasoning text and `</think>` go before it (templates drop old reasoning).
fn case(
    t: &ChatTemplate,
    n_calls: usize,
    content: &str,
    reasoning: Option<&str>,
    extra: &Map<String, Value>,
) -> Case {
    let tools = tools();
    let before = vec![
        json!({"role": "system", "content": "You are a helpful bot."}),
        json!({"role": "user", "content": "What's the weather in Paris?"}),
    ];
    let calls = calls(n_calls);
    let mut assistant = json!({"role": "assistant", "content": content});
    if n_calls > 0 {
        assistant["tool_calls"] = Value::Array(
            calls
                .iter()
                .enumerate()
                .map(|(i, (name, args))| {
                    json!({"id": format!("call_{i}"), "type": "function",
                        "function": {"name": name, "arguments": args.to_string()}})
                })
                .collect(),
        );
    }
    if let Some(r) = reasoning {
        assistant["reasoning_content"] = json!(r);
    }
    let prompt = t.render(&before, Some(&tools), true, extra).unwrap();
    let mut all = before.clone();
    all.push(assistant);
    let full = t.render(&all, Some(&tools), false, extra).unwrap();
    let mut common = prompt
        .char_indices()
        .zip(full.chars())
        .find(|((_, a), b)| a != b)
        .map_or(prompt.len().min(full.len()), |((i, _), _)| i);
    if common < prompt.len() {
        // The generation prompt goes on differently (e.g. `<think>\n</think>`): the model's
        // part starts after the assistant header, at the last newline or `>` before.
        common = prompt[..common].rfind(['\n', '>']).map_or(0, |i| i + 1);
    }
    let mut output = full[common..].to_string();
    if let Some(end) = END_OF_TURN.iter().filter_map(|e| output.find(e)).min() {
        output.truncate(end);
    }
    let mode = reasoning_mode(t.source(), &prompt);
    let mut want_reasoning = None;
    let rendered_back = output.contains("</think>") && !output.trim_start().starts_with("</think>");
    if mode == ReasoningMode::Open && rendered_back {
        // The template renders this turn's reasoning back (Qwen3.5).
        want_reasoning = Some(reasoning.unwrap_or("").to_string());
    } else if mode == ReasoningMode::Open {
        let r = reasoning.unwrap_or("The user wants the weather.\nI should call a tool.");
        output = if output.trim_start().starts_with("</think>") {
            format!("\n{r}\n{output}")
        } else {
            format!("\n{r}\n</think>\n\n{output}")
        };
        want_reasoning = Some(r.to_string());
    } else if output.contains("<think></think>") {
        // The template drops this turn's reasoning (Kimi K2 Thinking's final answer).
        want_reasoning = Some(String::new());
    } else if output.contains("<think>") {
        want_reasoning = Some(reasoning.unwrap_or("").to_string());
    }
    // Some templates do not render content beside tool calls.
    let content = if output.contains(content) {
        content.to_string()
    } else {
        String::new()
    };
    if want_reasoning.as_deref() == Some("") && mode == ReasoningMode::Open {
        want_reasoning = Some(String::new());
    }
    Case {
        prompt,
        output,
        reasoning: want_reasoning,
        content,
        calls,
    }
}

/// Parses `text` in pieces of `n` characters; checks the deltas add up to the message.
fn parse(mode: ReasoningMode, format: Option<ToolFormat>, text: &str, n: usize) -> ParsedMessage {
    let mut p = OutputParser::new(mode, format);
    let chars: Vec<char> = text.chars().collect();
    let mut deltas = Vec::new();
    for c in chars.chunks(n) {
        deltas.extend(p.push(&c.iter().collect::<String>()));
    }
    deltas.extend(p.finish());
    let msg = p.into_message();
    let (mut r, mut c) = (String::new(), String::new());
    let mut calls: Vec<(String, String, String)> = Vec::new();
    for d in deltas {
        match d {
            OutputDelta::Reasoning(t) => r.push_str(&t),
            OutputDelta::Content(t) => c.push_str(&t),
            OutputDelta::ToolCallStart { index, id, name } => {
                assert_eq!(index, calls.len(), "tool-call indices count up");
                calls.push((id, name, String::new()));
            }
            OutputDelta::ToolCallArguments { index, arguments } => {
                calls[index].2.push_str(&arguments)
            }
        }
    }
    assert_eq!(msg.reasoning_content.clone().unwrap_or_default(), r);
    assert_eq!(msg.content, c);
    let got: Vec<(String, String, String)> = msg
        .tool_calls
        .iter()
        .map(|t| (t.id.clone(), t.name.clone(), t.arguments.clone()))
        .collect();
    assert_eq!(got, calls);
    msg
}

fn check_case(name: &str, format: Option<ToolFormat>, c: &Case) {
    let mode = reasoning_mode(&template(name).0, &c.prompt);
    let whole = parse(mode, format, &c.output, usize::MAX);
    let ctx = format!("{name}: output {:?}", c.output);
    assert_eq!(whole.content, c.content, "{ctx}");
    assert_eq!(
        whole.reasoning_content.as_deref().filter(|r| !r.is_empty()),
        c.reasoning.as_deref().filter(|r| !r.is_empty()),
        "{ctx}"
    );
    assert_eq!(whole.tool_calls.len(), c.calls.len(), "{ctx}");
    for (got, (name, args)) in whole.tool_calls.iter().zip(&c.calls) {
        assert_eq!(&got.name, name, "{ctx}");
        // Kimi K2's ids are the model's own, `functions.NAME:IDX`.
        let id_prefix = if format == Some(ToolFormat::KimiK2) {
            format!("functions.{name}:")
        } else {
            "call_".to_string()
        };
        assert!(got.id.starts_with(&id_prefix), "{ctx}: id {}", got.id);
        let parsed: Value = serde_json::from_str(&got.arguments)
            .unwrap_or_else(|e| panic!("{ctx}: arguments {:?}: {e}", got.arguments));
        assert_eq!(&parsed, args, "{ctx}");
    }
    let strip = |m: &ParsedMessage| {
        (
            m.reasoning_content.clone(),
            m.content.clone(),
            m.tool_calls
                .iter()
                .map(|t| (t.name.clone(), t.arguments.clone()))
                .collect::<Vec<_>>(),
        )
    };
    for n in 1..=7 {
        let streamed = parse(mode, format, &c.output, n);
        assert_eq!(strip(&streamed), strip(&whole), "{ctx}, pieces of {n}");
    }
}

#[test]
fn formats_are_detected_from_templates() {
    for &(name, want) in TEMPLATES {
        let (source, _) = template(name);
        assert_eq!(ToolFormat::detect(&source), want, "{name}");
    }
}

#[test]
fn tool_calls_round_trip_through_templates() {
    let mut checked = 0;
    for &(name, format) in TEMPLATES {
        let (_, t) = template(name);
        let n_calls = if format == Some(ToolFormat::Llama3Json) {
            1
        } else {
            2
        };
        for thinking in [false, true] {
            let mut extra = Map::new();
            extra.insert("enable_thinking".into(), json!(thinking));
            extra.insert("thinking".into(), json!(thinking));
            let reasoning = thinking.then_some("Paris is in France.\nCall get_weather.");
            for n in [1, n_calls] {
                for content in ["", "Let me check that for you."] {
                    let c = case(&t, n, content, reasoning, &extra);
                    check_case(name, format, &c);
                    checked += 1;
                }
            }
            // A plain answer, no tool call.
            let c = case(&t, 0, "It is sunny in Paris.", reasoning, &extra);
            assert!(!c.content.is_empty(), "{name}: {:?}", c.output);
            check_case(name, format, &c);
            checked += 1;
        }
    }
    assert!(checked >= 40);
}

#[test]
fn reasoning_modes_from_fixture_prompts() {
    let expect = [
        ("Qwen-Qwen3-0.6B", false, ReasoningMode::None),
        ("Qwen-Qwen3-0.6B", true, ReasoningMode::Optional),
        ("Qwen-QwQ-32B", true, ReasoningMode::Open),
        ("Qwen-QwQ-32B", false, ReasoningMode::None),
        (
            "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B",
            true,
            ReasoningMode::Open,
        ),
        ("deepseek-ai-DeepSeek-V3.1", true, ReasoningMode::Open),
        ("deepseek-ai-DeepSeek-V3.1", false, ReasoningMode::None),
        ("Qwen-Qwen3.5-4B", true, ReasoningMode::Open),
        ("Qwen-Qwen3.5-4B", false, ReasoningMode::None),
        ("Qwen-Qwen3-Coder", true, ReasoningMode::None),
        ("Qwen-Qwen2.5-7B-Instruct", true, ReasoningMode::None),
        (
            "meta-llama-Llama-3.1-8B-Instruct",
            true,
            ReasoningMode::None,
        ),
    ];
    for (name, thinking, want) in expect {
        let (source, t) = template(name);
        let mut extra = Map::new();
        extra.insert("enable_thinking".into(), json!(thinking));
        extra.insert("thinking".into(), json!(thinking));
        let prompt = t
            .render(
                &[json!({"role": "user", "content": "Hi"})],
                None,
                true,
                &extra,
            )
            .unwrap();
        assert_eq!(
            reasoning_mode(&source, &prompt),
            want,
            "{name} thinking={thinking}"
        );
    }
}

#[test]
fn reasoning_then_answer_in_pieces() {
    // A DeepSeek-R1-style output: the prompt opened <think>.
    let out = "Okay, 17 * 23 = 391.\nHalf of it is 195.5.\n</think>\n\n391 / 2 = **195.5**";
    for n in 1..=7 {
        let m = parse(ReasoningMode::Open, None, out, n);
        assert_eq!(
            m.reasoning_content.as_deref(),
            Some("Okay, 17 * 23 = 391.\nHalf of it is 195.5.")
        );
        assert_eq!(m.content, "391 / 2 = **195.5**");
        assert!(m.tool_calls.is_empty());
        // Without reasoning, the same text is all content.
        let m = parse(ReasoningMode::None, Some(ToolFormat::Hermes), out, n);
        assert_eq!(m.reasoning_content, None);
        assert_eq!(m.content, out);
    }
}
