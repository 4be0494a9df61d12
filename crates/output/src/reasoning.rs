//! Splitting generated text into reasoning and answer: a streaming parser for `<think>`…`</think>`
//! blocks, and [`reasoning_mode`], which tells from the rendered prompt whether the output starts
//! inside such a block.
//!
//! Whitespace is normalised the way chat templates render it back: reasoning loses the newlines
//! right after `<think>` and right before `</think>`, and the answer loses the whitespace after
//! `</think>` (Qwen writes `<think>\n…\n</think>\n\n`). The result does not depend on how the text
//! is cut into pieces.

/// The opening tag of a reasoning block.
pub const THINK_OPEN: &str = "<think>";
/// The closing tag of a reasoning block.
pub const THINK_CLOSE: &str = "</think>";

/// Where the model's output starts with respect to a reasoning block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasoningMode {
    /// The model does not reason (or the prompt closed the block already, e.g.
    /// `<think>\n\n</think>` for Qwen3 with `enable_thinking=false`): all output is answer.
    None,
    /// The model may open a `<think>` block at the very start of its output (Qwen3 with thinking
    /// on: the prompt ends with `<|im_start|>assistant\n`).
    Optional,
    /// The prompt opened `<think>`: output starts inside the reasoning block (DeepSeek-R1
    /// distills, QwQ, DeepSeek-V3.1 with `thinking=true`).
    Open,
}

/// Which [`ReasoningMode`] applies to a prompt rendered with a template: [`ReasoningMode::Open`]
/// when the prompt ends (trailing whitespace aside) with `<think>`; [`ReasoningMode::None`] when it
/// ends with `</think>` or the template never mentions `<think>`; [`ReasoningMode::Optional`]
/// otherwise.
pub fn reasoning_mode(template_source: &str, rendered_prompt: &str) -> ReasoningMode {
    let end = rendered_prompt.trim_end();
    if end.ends_with(THINK_OPEN) {
        ReasoningMode::Open
    } else if end.ends_with(THINK_CLOSE) || !template_source.contains(THINK_OPEN) {
        ReasoningMode::None
    } else {
        ReasoningMode::Optional
    }
}

/// A piece of parsed output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReasoningDelta {
    /// Text inside the reasoning block (`reasoning_content`).
    Reasoning(String),
    /// Answer text (`content`).
    Content(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Optional mode before the first non-whitespace text: is it `<think>`?
    Start,
    /// Inside the block; `emitted` once any reasoning text went out.
    Reasoning { emitted: bool },
    /// After the block (or without one); leading whitespace is dropped until `emitted`.
    Content { emitted: bool },
    /// [`ReasoningMode::None`]: text passes through untouched.
    Plain,
}

/// The streaming parser: feed it pieces of generated text with [`ReasoningParser::push`], then
/// call [`ReasoningParser::finish`] once at the end.
#[derive(Debug, Clone)]
pub struct ReasoningParser {
    state: State,
    /// Text held back: a possible partial tag, or whitespace that may turn out to be trailing.
    pending: String,
    /// A reasoning block was entered (even an empty one, `<think></think>`).
    opened: bool,
    /// Texts that end the reasoning without `</think>` and start the answer (see
    /// [`ReasoningParser::with_answer_markers`]).
    answer_markers: &'static [&'static str],
}

impl ReasoningParser {
    pub fn new(mode: ReasoningMode) -> Self {
        let state = match mode {
            ReasoningMode::None => State::Plain,
            ReasoningMode::Optional => State::Start,
            ReasoningMode::Open => State::Reasoning { emitted: false },
        };
        ReasoningParser {
            state,
            pending: String::new(),
            opened: mode == ReasoningMode::Open,
            answer_markers: &[],
        }
    }

    /// Texts that, met inside the reasoning, end it and begin the answer themselves: Kimi K2
    /// Thinking may start its tool calls without closing `<think>` (as llama.cpp's parser
    /// allows).
    pub fn with_answer_markers(mut self, markers: &'static [&'static str]) -> Self {
        self.answer_markers = markers;
        self
    }

    /// Whether the parser is inside the reasoning block now.
    pub fn in_reasoning(&self) -> bool {
        matches!(self.state, State::Reasoning { .. })
    }

    /// Whether the output had a reasoning block so far, however the text was cut into pieces
    /// (an empty `<think></think>` counts).
    pub fn opened_block(&self) -> bool {
        self.opened
    }

    pub fn push(&mut self, text: &str) -> Vec<ReasoningDelta> {
        let mut out = Vec::new();
        if let State::Plain = self.state {
            if !text.is_empty() {
                out.push(ReasoningDelta::Content(text.to_string()));
            }
            return out;
        }
        self.pending.push_str(text);
        self.run(&mut out, false);
        out
    }

    /// Flushes held-back text: a partial tag is text after all; an unclosed block is reasoning.
    pub fn finish(&mut self) -> Vec<ReasoningDelta> {
        let mut out = Vec::new();
        self.run(&mut out, true);
        out
    }

    fn run(&mut self, out: &mut Vec<ReasoningDelta>, last: bool) {
        loop {
            match self.state {
                State::Plain => {
                    let t = std::mem::take(&mut self.pending);
                    emit(out, ReasoningDelta::Content(t));
                    return;
                }
                State::Start => {
                    let t = self.pending.trim_start();
                    if let Some(rest) = t.strip_prefix(THINK_OPEN) {
                        self.pending = rest.to_string();
                        self.state = State::Reasoning { emitted: false };
                        self.opened = true;
                    } else if !last && THINK_OPEN.starts_with(t) {
                        // Empty, or a prefix of `<think>`: wait.
                        return;
                    } else {
                        self.state = State::Content { emitted: false };
                    }
                }
                State::Reasoning { emitted } => {
                    if !self.step_reasoning(out, last, emitted) {
                        return;
                    }
                }
                State::Content { emitted } => {
                    let t = std::mem::take(&mut self.pending);
                    let t = if emitted { &t[..] } else { t.trim_start() };
                    if !t.is_empty() {
                        emit(out, ReasoningDelta::Content(t.to_string()));
                        self.state = State::Content { emitted: true };
                    }
                    return;
                }
            }
        }
    }

    /// Inside the block: up to `</think>` (or an answer marker), else what is certain now;
    /// true when the block ended and parsing goes on.
    fn step_reasoning(&mut self, out: &mut Vec<ReasoningDelta>, last: bool, emitted: bool) -> bool {
        let close = self
            .pending
            .find(THINK_CLOSE)
            .map(|i| (i, THINK_CLOSE.len()));
        let marker = self
            .answer_markers
            .iter()
            .filter_map(|m| self.pending.find(m))
            .min()
            .map(|i| (i, 0));
        let end = match (close, marker) {
            (Some(c), Some(m)) => Some(c.min(m)),
            (c, m) => c.or(m),
        };
        if let Some((i, skip)) = end {
            let text = &self.pending[..i];
            let text = if emitted { text } else { text.trim_start() };
            emit(out, ReasoningDelta::Reasoning(text.trim_end().to_string()));
            self.pending = self.pending[i + skip..].to_string();
            self.state = State::Content { emitted: false };
            return true;
        }
        let hold = if last {
            self.pending.len() - trailing_ws(&self.pending).len()
        } else {
            std::iter::once(THINK_CLOSE)
                .chain(self.answer_markers.iter().copied())
                .map(|tag| held_back(&self.pending, tag))
                .min()
                .unwrap_or(0)
        };
        let text = &self.pending[..hold];
        let text = if emitted { text } else { text.trim_start() };
        if !text.is_empty() {
            emit(out, ReasoningDelta::Reasoning(text.to_string()));
            self.state = State::Reasoning { emitted: true };
        }
        self.pending.drain(..hold);
        if last {
            self.pending.clear();
        }
        false
    }
}

/// Appends a delta, merging it into the previous one of the same kind; drops empty text.
fn emit(out: &mut Vec<ReasoningDelta>, d: ReasoningDelta) {
    match (out.last_mut(), d) {
        (_, ReasoningDelta::Reasoning(t) | ReasoningDelta::Content(t)) if t.is_empty() => {}
        (Some(ReasoningDelta::Reasoning(a)), ReasoningDelta::Reasoning(b))
        | (Some(ReasoningDelta::Content(a)), ReasoningDelta::Content(b)) => a.push_str(&b),
        (_, d) => out.push(d),
    }
}

/// The whitespace at the end of `s`.
fn trailing_ws(s: &str) -> &str {
    &s[s.trim_end().len()..]
}

/// How much of `s` may be released now when `tag` may follow: everything except a suffix that is
/// a proper prefix of `tag`, and the whitespace before that suffix (it would be trailing
/// whitespace if the tag comes). Always on a character boundary.
pub(crate) fn held_back(s: &str, tag: &str) -> usize {
    let partial = partial_suffix(s, tag);
    let before = &s[..s.len() - partial];
    before.trim_end().len()
}

/// The length of the longest suffix of `s` that is a proper, non-empty prefix of `tag`.
pub(crate) fn partial_suffix(s: &str, tag: &str) -> usize {
    let max = (tag.len() - 1).min(s.len());
    (1..=max)
        .rev()
        .find(|&n| s.is_char_boundary(s.len() - n) && tag.starts_with(&s[s.len() - n..]))
        .unwrap_or(0)
}

/// Parses a whole output at once: `(reasoning, content)`.
pub fn split_reasoning(mode: ReasoningMode, text: &str) -> (String, String) {
    let mut p = ReasoningParser::new(mode);
    let mut deltas = p.push(text);
    deltas.extend(p.finish());
    let (mut r, mut c) = (String::new(), String::new());
    for d in deltas {
        match d {
            ReasoningDelta::Reasoning(t) => r.push_str(&t),
            ReasoningDelta::Content(t) => c.push_str(&t),
        }
    }
    (r, c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(mode: ReasoningMode, text: &str, n: usize) -> (String, String) {
        let mut p = ReasoningParser::new(mode);
        let (mut r, mut c) = (String::new(), String::new());
        let chars: Vec<char> = text.chars().collect();
        let mut ds = Vec::new();
        for chunk in chars.chunks(n) {
            ds.extend(p.push(&chunk.iter().collect::<String>()));
        }
        ds.extend(p.finish());
        for d in ds {
            match d {
                ReasoningDelta::Reasoning(t) => r.push_str(&t),
                ReasoningDelta::Content(t) => c.push_str(&t),
            }
        }
        (r, c)
    }

    fn check(mode: ReasoningMode, text: &str, reasoning: &str, content: &str) {
        for n in 1..=7 {
            assert_eq!(
                pieces(mode, text, n),
                (reasoning.to_string(), content.to_string()),
                "{mode:?} {text:?} in pieces of {n}"
            );
        }
        assert_eq!(
            split_reasoning(mode, text),
            (reasoning.to_string(), content.to_string())
        );
    }

    #[test]
    fn open_block() {
        let m = ReasoningMode::Open;
        check(
            m,
            "\nLet me see.\n</think>\n\nParis.",
            "Let me see.",
            "Paris.",
        );
        check(m, "a < b </thin k</think>x", "a < b </thin k", "x");
        check(m, "still thinking </thi", "still thinking </thi", "");
        check(m, "</think>", "", "");
        check(m, "x\n\n y \n</think>\n\n\n z \n", "x\n\n y", "z \n");
    }

    #[test]
    fn optional_block() {
        let m = ReasoningMode::Optional;
        check(m, "<think>\nhmm\n</think>\n\nHi", "hmm", "Hi");
        check(m, "\n <think>hmm</think>Hi", "hmm", "Hi");
        check(m, "Hello <think>no</think>", "", "Hello <think>no</think>");
        check(m, "<thin", "", "<thin");
        check(m, "<thinking", "", "<thinking");
        check(m, "", "", "");
    }

    #[test]
    fn no_reasoning() {
        check(
            ReasoningMode::None,
            " <think>a</think> b",
            "",
            " <think>a</think> b",
        );
    }

    #[test]
    fn modes_from_prompts() {
        let t = "{{ '<think>' }}";
        assert_eq!(reasoning_mode(t, "x<think>\n"), ReasoningMode::Open);
        assert_eq!(
            reasoning_mode(t, "x<think>\n\n</think>\n\n"),
            ReasoningMode::None
        );
        assert_eq!(
            reasoning_mode(t, "<|im_start|>assistant\n"),
            ReasoningMode::Optional
        );
        assert_eq!(reasoning_mode("plain", "assistant\n"), ReasoningMode::None);
    }

    #[test]
    fn partial_suffixes() {
        assert_eq!(partial_suffix("abc</th", "</think>"), 4);
        assert_eq!(partial_suffix("abc<", "</think>"), 1);
        assert_eq!(partial_suffix("abc", "</think>"), 0);
        assert_eq!(partial_suffix("é", "</think>"), 0);
        assert_eq!(held_back("a \n</th", "</think>"), 1);
    }
}
