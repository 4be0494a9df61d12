//! Chat requests into prompts and output plans: the conversation as the model's template renders
//! it (earlier reasoning dropped, a `prefix` assistant message continued rather than closed), and
//! what the answer must look like (reasoning split and budget, tool calls, response format).

use crate::api::ChatRequest;
use crate::error::ApiError;
use crate::{ModelState, ReasoningFormat};
use frugal_chat::ChatTemplate;
use frugal_constraint::Constraint;
use frugal_output::{
    generic_tools, reasoning_mode, OutputError, OutputParser, OutputPlan, OutputRequest,
    ReasoningMode, TokenEnv, ToolFormat,
};
use serde_json::Value;
use std::sync::Arc;

/// How a request's tools reach the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ToolPrompt {
    /// No tools, or `tool_choice` `none` on a template that cannot render them.
    Absent,
    /// The template renders them.
    Template,
    /// The template cannot render them: they are described in a system message, and the calls
    /// are asked for in the template's own syntax (`Some`, DeepSeek) or in the generic JSON
    /// format (`None`, see `frugal_output::generic_tools`).
    SystemMessage(Option<ToolFormat>),
}

fn tool_prompt(template: &ChatTemplate, req: &ChatRequest) -> ToolPrompt {
    if req.tools.as_ref().is_none_or(Vec::is_empty) {
        return ToolPrompt::Absent;
    }
    if template.renders_tools() {
        return ToolPrompt::Template;
    }
    if req.tool_choice.as_ref().and_then(Value::as_str) == Some("none") {
        return ToolPrompt::Absent;
    }
    ToolPrompt::SystemMessage(ToolFormat::detect(template.source()))
}

/// The prompt text of a chat request.
/// The server's template variables apply, under the request's own.
pub fn render(st: &ModelState, req: &ChatRequest) -> Result<String, ApiError> {
    let defaults = &st.cfg.chat_template_kwargs;
    if defaults.is_empty() {
        return render_prompt(&st.template, req);
    }
    let mut req = req.clone();
    let mut kwargs = defaults.clone();
    kwargs.extend(req.chat_template_kwargs.take().unwrap_or_default());
    req.chat_template_kwargs = Some(kwargs);
    render_prompt(&st.template, &req)
}

/// The prompt text of a chat request with `template`: messages checked and normalized, tools
/// the template cannot render described in a system message, a final `prefix` assistant message
/// left open.
pub fn render_prompt(template: &ChatTemplate, req: &ChatRequest) -> Result<String, ApiError> {
    let (mut messages, prefix) = prepare_messages(&continued(req)?)?;
    let extra = req.chat_template_kwargs.clone().unwrap_or_default();
    let mut tools = req.tools.as_deref().filter(|t| !t.is_empty());
    if let ToolPrompt::SystemMessage(native) = tool_prompt(template, req) {
        let described = tools.unwrap_or_default();
        messages = frugal_chat::normalize_messages(&messages);
        if native.is_none() {
            generic_tools::rewrite_history(&mut messages);
        }
        let prompt = generic_tools::tools_system_prompt(described, native);
        generic_tools::add_tools_to_system(&mut messages, &prompt);
        tools = None;
    }
    let render = |msgs: &[Value], add_generation_prompt: bool| {
        template
            .render(msgs, tools, add_generation_prompt, &extra)
            .map_err(|e| {
                ApiError::invalid_param("messages", format!("Cannot apply the chat template: {e}"))
            })
    };
    match prefix {
        None => render(&messages, req.add_generation_prompt.unwrap_or(true)),
        Some(content) => {
            // Render the whole conversation and cut it right after the assistant's text, so the
            // template's own assistant framing is kept and only the end of the turn is dropped.
            let full = render(&messages, false)?;
            if !content.is_empty() {
                if let Some(i) = full.rfind(content.as_str()) {
                    return Ok(full[..i + content.len()].to_string());
                }
            }
            // The template rewrote the text: open a new assistant turn and append it as is.
            Ok(render(&messages[..messages.len() - 1], true)? + &content)
        }
    }
}

/// The messages, the last one marked as a prefix to continue with vLLM's
/// `continue_final_message` (which cannot go with `add_generation_prompt`).
fn continued(req: &ChatRequest) -> Result<Vec<Value>, ApiError> {
    let mut messages = req.messages.clone();
    if req.continue_final_message != Some(true) {
        return Ok(messages);
    }
    if req.add_generation_prompt == Some(true) {
        return Err(ApiError::invalid_param(
            "continue_final_message",
            "'continue_final_message' and 'add_generation_prompt' cannot both be true.",
        ));
    }
    match messages.last_mut() {
        Some(last) if last.get("role").and_then(Value::as_str) == Some("assistant") => {
            last["prefix"] = Value::Bool(true);
            Ok(messages)
        }
        _ => Err(ApiError::invalid_param(
            "continue_final_message",
            "'continue_final_message' needs an assistant message last.",
        )),
    }
}

/// Messages as the template should see them, and the text of a final assistant message marked
/// `"prefix": true` (DeepSeek's chat prefix completion).
fn prepare_messages(messages: &[Value]) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let mut out = Vec::with_capacity(messages.len());
    let mut prefix = None;
    let last = messages.len().saturating_sub(1);
    for (i, m) in messages.iter().enumerate() {
        let mut m = m.clone();
        let Some(obj) = m.as_object_mut() else {
            return Err(ApiError::invalid_param(
                format!("messages[{i}]"),
                format!("messages[{i}] must be an object."),
            ));
        };
        check_content(i, obj.get("content"))?;
        let is_prefix = obj.remove("prefix").is_some_and(|p| p == Value::Bool(true));
        if obj.get("role").and_then(Value::as_str) == Some("assistant") {
            // Earlier reasoning is not fed back, as DeepSeek's API does.
            obj.remove("reasoning_content");
            if is_prefix {
                if i != last {
                    return Err(ApiError::invalid_param(
                        format!("messages[{i}].prefix"),
                        "Only the last message may be an assistant prefix.",
                    ));
                }
                let text = match obj.get("content") {
                    Some(Value::String(s)) => s.clone(),
                    None | Some(Value::Null) => String::new(),
                    Some(_) => {
                        return Err(ApiError::invalid_param(
                            format!("messages[{i}].content"),
                            "An assistant prefix must be a string.",
                        ))
                    }
                };
                obj.insert("content".into(), Value::String(text.clone()));
                prefix = Some(text);
            } else if let Some(Value::String(s)) = obj.get_mut("content") {
                *s = strip_reasoning(s);
            }
        } else if is_prefix {
            return Err(ApiError::invalid_param(
                format!("messages[{i}].prefix"),
                "'prefix' applies to assistant messages only.",
            ));
        }
        out.push(m);
    }
    Ok((out, prefix))
}

/// Message content must be text: a string, null, or a list of `text` parts. Images, audio and
/// files are refused rather than dropped, since the model would answer without them.
fn check_content(i: usize, content: Option<&Value>) -> Result<(), ApiError> {
    let parts = match content {
        None | Some(Value::Null) | Some(Value::String(_)) => return Ok(()),
        Some(Value::Array(parts)) => parts,
        Some(_) => {
            return Err(ApiError::invalid_param(
                format!("messages[{i}].content"),
                format!("messages[{i}].content must be a string or a list of content parts."),
            ))
        }
    };
    for (j, part) in parts.iter().enumerate() {
        let param = format!("messages[{i}].content[{j}]");
        let kind = part.get("type").and_then(Value::as_str);
        match kind {
            Some("text") => {
                if !part.get("text").is_some_and(Value::is_string) {
                    return Err(ApiError::invalid_param(
                        format!("{param}.text"),
                        format!("{param} is a text part without a 'text' string."),
                    ));
                }
            }
            Some(t @ ("image_url" | "input_image" | "image" | "input_audio" | "audio" | "file")) => {
                return Err(ApiError::invalid_param(
                    param.clone(),
                    format!(
                        "{param} is a '{t}' part, but this model takes text only: \
                         send the content as text parts."
                    ),
                ))
            }
            Some(t) => {
                return Err(ApiError::invalid_param(
                    param.clone(),
                    format!("{param} has the unknown content part type '{t}' (this model takes 'text' parts)."),
                ))
            }
            None => {
                return Err(ApiError::invalid_param(
                    format!("{param}.type"),
                    format!("{param} must be an object with a 'type' (this model takes 'text' parts)."),
                ))
            }
        }
    }
    Ok(())
}

/// An assistant answer without a leading `<think>…</think>` block (clients that keep raw text).
fn strip_reasoning(s: &str) -> String {
    // Either the block opens the text, or the template opened it and only the close is here.
    let t = s.trim_start();
    match t.find("</think>") {
        Some(end) if t.starts_with("<think>") || !t[..end].contains("<think>") => {
            t[end + "</think>".len()..].trim_start().to_string()
        }
        _ => s.to_string(),
    }
}

/// How a chat request's output is parsed and constrained.
pub struct ChatOutput {
    parser: OutputParser,
    plan: Option<(OutputPlan, Arc<TokenEnv>)>,
    /// The parser looks for tags (`<think>`, tool-call markers) that some vocabularies hold as
    /// control tokens: decode those as text.
    pub render_special: bool,
}

impl ChatOutput {
    /// A fresh parser for one choice.
    pub fn parser(&self) -> OutputParser {
        self.parser.clone()
    }

    /// A fresh constraint for one choice (`None`: nothing to enforce).
    pub fn constraint(&self) -> Option<Box<dyn Constraint>> {
        let (plan, env) = self.plan.as_ref()?;
        plan.constraint(env)
            .map(|c| Box::new(c) as Box<dyn Constraint>)
    }
}

/// Decides the output plan of a chat request whose prompt is `prompt`.
pub fn output(
    st: &ModelState,
    req: &ChatRequest,
    prompt: &str,
    max_tokens: usize,
) -> Result<ChatOutput, ApiError> {
    let tools = req.tools.as_deref().unwrap_or_default();
    let template = st.template.source();
    let generic = tool_prompt(&st.template, req) == ToolPrompt::SystemMessage(None);
    let needs_env = req.tool_choice.is_some()
        || req.response_format.is_some()
        || req.grammar.is_some()
        || req.json_schema.is_some()
        || req.reasoning_effort.is_some()
        || req.max_reasoning_tokens.is_some()
        || st.cfg.reasoning_budget.is_some();
    let raw = st.cfg.reasoning_format == ReasoningFormat::Raw;
    let env = match &st.output {
        Ok(env) => env.clone(),
        Err(e) if needs_env => {
            return Err(ApiError::invalid(format!(
                "Constrained decoding is unavailable for this model: {e}"
            )))
        }
        Err(_) => {
            // Parse only: no grammar, no budget.
            let mode = if raw {
                ReasoningMode::None
            } else {
                reasoning_mode(template, prompt)
            };
            let format = (!tools.is_empty())
                .then(|| ToolFormat::detect(template).unwrap_or(ToolFormat::Hermes));
            let parser = if generic {
                OutputParser::generic(mode)
            } else {
                OutputParser::new(mode, format).with_tools(tools)
            };
            return Ok(ChatOutput {
                parser,
                plan: None,
                render_special: reasoning_mode(template, prompt) != ReasoningMode::None
                    || format.is_some(),
            });
        }
    };
    // llama.cpp's `json_schema` is `response_format`'s schema under another name.
    let schema_format = req.json_schema.as_ref().map(|schema| {
        serde_json::json!({"type": "json_schema", "json_schema": {"name": "json_schema", "schema": schema}})
    });
    let output_req = OutputRequest {
        template_source: template,
        prompt,
        tools,
        tool_choice: req.tool_choice.as_ref(),
        parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
        response_format: req.response_format.as_ref().or(schema_format.as_ref()),
        grammar: req.grammar.as_deref(),
        reasoning_effort: req.reasoning_effort.as_deref(),
        max_tokens: Some(max_tokens),
    };
    let plan = if generic {
        OutputPlan::generic(&env, &output_req)
    } else {
        OutputPlan::new(&env, &output_req)
    };
    let mut plan = plan.map_err(|e| output_error(req, e))?;
    tracing::debug!(reasoning = ?plan.reasoning, tools = ?plan.tool_format,
        generic_tools = plan.generic_tools, budget = ?plan.budget, "output plan");
    match req.max_reasoning_tokens {
        Some(n) => plan.budget = Some(n.min(usize::MAX as u64) as usize),
        None if req.reasoning_effort.is_none() => plan.budget = st.cfg.reasoning_budget,
        None => {}
    }
    let parser = if raw && plan.generic_tools {
        OutputParser::generic(ReasoningMode::None)
    } else if raw {
        OutputParser::new(ReasoningMode::None, plan.tool_format).with_tools(tools)
    } else {
        plan.parser()
    };
    Ok(ChatOutput {
        parser,
        render_special: plan.reasoning != ReasoningMode::None || plan.tool_format.is_some(),
        plan: Some((plan, env)),
    })
}

/// A 400 naming the request field the problem comes from.
fn output_error(req: &ChatRequest, e: OutputError) -> ApiError {
    let msg = e.to_string();
    if let Some(param) = e.param() {
        return ApiError::invalid_param(param, msg);
    }
    let named = [
        "tool_choice",
        "parallel_tool_calls",
        "reasoning_effort",
        "response_format",
        "tools",
    ]
    .into_iter()
    .find(|f| msg.contains(f));
    let param = named.unwrap_or(match e {
        OutputError::Grammar(_) if req.response_format.is_none() => "tools",
        OutputError::Grammar(_) => "response_format",
        _ => "messages",
    });
    ApiError::invalid_param(param, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn earlier_reasoning_is_dropped_and_a_prefix_is_kept_open() {
        let msgs = vec![
            json!({"role": "user", "content": "hi"}),
            json!({"role": "assistant", "content": "<think>hmm</think>\n\nHello", "reasoning_content": "hmm"}),
            json!({"role": "user", "content": "more"}),
            json!({"role": "assistant", "content": "Sure, ", "prefix": true}),
        ];
        let (out, prefix) = prepare_messages(&msgs).unwrap();
        assert_eq!(out[1], json!({"role": "assistant", "content": "Hello"}));
        assert_eq!(out[3], json!({"role": "assistant", "content": "Sure, "}));
        assert_eq!(prefix.as_deref(), Some("Sure, "));
    }

    #[test]
    fn a_prefix_must_be_the_last_assistant_message() {
        let msgs = vec![
            json!({"role": "assistant", "content": "x", "prefix": true}),
            json!({"role": "user", "content": "hi"}),
        ];
        assert!(prepare_messages(&msgs).is_err());
        let msgs = vec![json!({"role": "user", "content": "x", "prefix": true})];
        assert!(prepare_messages(&msgs).is_err());
    }

    #[test]
    fn answers_without_reasoning_are_left_alone() {
        assert_eq!(strip_reasoning("plain <b>text</b>"), "plain <b>text</b>");
        assert_eq!(strip_reasoning("a</think>b"), "b");
        assert_eq!(strip_reasoning("x <think>y</think>"), "x <think>y</think>");
    }
}
