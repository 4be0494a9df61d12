//! The per-sequence output state machine, a [`Constraint`] for the engine: free reasoning (with an
//! optional budget, after which `</think>` is forced token by token), then the answer under a
//! grammar, then the end.
//!
//! Phases:
//! 1. *Start* ([`ReasoningMode::Optional`] only): the model may open `<think>`; with a grammar,
//!    the tokens allowed are the grammar's plus those that continue `<think>`.
//! 2. *Reasoning*: nothing is masked except end-of-generation when an answer grammar must follow.
//!    After `budget` reasoning tokens only the tokens of `</think>` are allowed, one by one.
//! 3. *After* `</think>`: up to two whitespace-only tokens (the usual `\n\n`), or the grammar.
//! 4. *Answer*: the grammar's mask; when the grammar is complete and cannot go on, only
//!    end-of-generation is allowed and [`Constraint::accept`] returns `true`.
//!
//! With neither a grammar nor a budget nothing is ever masked ([`OutputConstraint::is_noop`]).
//!
//! **Finishing within `max_tokens`.** With [`OutputConstraint::with_max_tokens`], once at most
//! `close_margin` tokens (default [`DEFAULT_CLOSE_MARGIN`]) remain, the answer is steered to its
//! end, taking the first of these that the grammar allows:
//! 1. end-of-generation;
//! 2. the next token of text the grammar forces (canonically tokenized: keys, markers);
//!    inside the grammar's free text (an XML tool call's parameter value), tokens that spell on
//!    the text that ends it (`</parameter>`);
//! 3. tokens that close what is open: inside a JSON string (quotes counted over the answer),
//!    tokens made of `"` then only `}` and `]`; outside, tokens made only of `}` and `]`;
//! 4. tokens that spell on one of the grammar's closing texts (`<｜tool▁calls▁end｜>` for
//!    DeepSeek tool calls, `</function>` and `</tool_call>` for XML ones, so that no further
//!    call or parameter starts), those that end within it first;
//! 5. as 3, with `,`, `:` and spaces allowed too (a required member must come first);
//! 6. anything the grammar allows.
//!
//! That closes strings, arrays and objects within a few tokens per nesting level; the margin
//! must cover the longest text the grammar may still force (required keys, tool-call markers).
//! The reasoning budget is also capped at `max_tokens - 2 * close_margin` when there is a
//! grammar, so the answer always has room.

use crate::grammar::{Grammar, GrammarMatcher, TokenEnv};
use crate::reasoning::{ReasoningMode, THINK_CLOSE, THINK_OPEN};
use crate::OutputError;
use frugal_constraint::{Constraint, ConstraintError};
use llguidance::toktrie::SimpleVob;
use std::sync::Arc;

/// Tokens before `max_tokens` at which the answer is steered to close (plus twice the tokens of
/// the grammar's closing texts).
pub const DEFAULT_CLOSE_MARGIN: usize = 32;

/// Reasoning budgets for OpenAI's `reasoning_effort`: `none` 0, `minimal` 256, `low` 1024,
/// `medium` 4096, `high` 16384 tokens.
pub fn reasoning_budget(effort: &str) -> Result<usize, OutputError> {
    match effort {
        "none" => Ok(0),
        "minimal" => Ok(256),
        "low" => Ok(1024),
        "medium" => Ok(4096),
        "high" => Ok(16384),
        other => Err(OutputError::InvalidRequest(format!(
            "reasoning_effort '{other}' is not supported (none, minimal, low, medium, high)"
        ))),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    Reasoning,
    AfterThink,
    Answer,
    /// No grammar: nothing to enforce any more.
    Free,
    Done,
}

/// The output constraint of one sequence.
pub struct OutputConstraint {
    env: Arc<TokenEnv>,
    phase: Phase,
    grammar: Option<GrammarMatcher>,
    /// The mask the grammar gave for the token being chosen (kept from `mask` for `accept`).
    last_mask: Option<SimpleVob>,
    /// Start: the grammar can still take the output so far.
    grammar_alive: bool,
    /// Start: tokens the grammar took (rolled back if `<think>` comes after all).
    grammar_fed: usize,
    /// Start: output bytes so far (leading whitespace left out), to recognise `<think>`.
    start_bytes: Vec<u8>,
    budget: Option<usize>,
    reasoning_tokens: usize,
    /// How many tokens of `</think>` were forced so far.
    forced: usize,
    /// The last bytes of the reasoning, to recognise `</think>`.
    tail: Vec<u8>,
    ws_after: usize,
    generated: usize,
    max_tokens: Option<usize>,
    close_margin: usize,
    /// The grammar's closing texts and the last bytes of the answer, to finish them.
    closers: Vec<Vec<u8>>,
    answer_tail: Vec<u8>,
    /// Whether the answer is inside a JSON string now (and after a backslash in one): quotes
    /// counted over the answer, which is right for every grammar of this crate.
    in_string: bool,
    escaped: bool,
    /// The grammar's free text: the texts that open it, the one that ends it, and whether the
    /// answer is inside it now (quotes there are no JSON).
    text_openers: Vec<Vec<u8>>,
    text_close: Vec<u8>,
    in_text: bool,
}

impl OutputConstraint {
    /// A machine for a sequence whose prompt puts it in `mode`, with an optional answer grammar
    /// and reasoning budget (tokens). Grammar errors are the request's fault (HTTP 400).
    pub fn new(
        env: Arc<TokenEnv>,
        mode: ReasoningMode,
        grammar: Option<&Grammar>,
        budget: Option<usize>,
    ) -> Result<OutputConstraint, OutputError> {
        let compiled = grammar
            .map(|g| Ok::<_, OutputError>((g, env.matcher(g)?)))
            .transpose()?;
        Ok(OutputConstraint::compiled(env, mode, compiled, budget))
    }

    /// [`OutputConstraint::new`] with the grammar compiled already (a clone of a compiled
    /// matcher is as good as a fresh one).
    pub fn compiled(
        env: Arc<TokenEnv>,
        mode: ReasoningMode,
        grammar: Option<(&Grammar, GrammarMatcher)>,
        budget: Option<usize>,
    ) -> OutputConstraint {
        let closers: Vec<Vec<u8>> = grammar
            .as_ref()
            .map(|(g, _)| g.closers().iter().map(|c| c.as_bytes().to_vec()).collect())
            .unwrap_or_default();
        // Room for the closing texts themselves, twice (a call's end and the calls' end): one
        // token each in real vocabularies, many in small ones that spell markers byte by byte.
        let closer_tokens: usize = grammar
            .as_ref()
            .map(|(g, _)| {
                g.closers()
                    .iter()
                    .map(|c| {
                        env.tokenizer()
                            .encode(c, false, true)
                            .map_or(c.len(), |t| t.len())
                    })
                    .sum()
            })
            .unwrap_or(0);
        let (text_openers, text_close) = grammar
            .as_ref()
            .and_then(|(g, _)| g.free_text())
            .map(|(o, c)| {
                let o = o.iter().map(|t| t.as_bytes().to_vec()).collect();
                (o, c.as_bytes().to_vec())
            })
            .unwrap_or_default();
        let grammar = grammar.map(|(_, m)| m);
        let phase = match mode {
            ReasoningMode::Open => Phase::Reasoning,
            ReasoningMode::Optional => Phase::Start,
            ReasoningMode::None if grammar.is_some() => Phase::Answer,
            ReasoningMode::None => Phase::Free,
        };
        OutputConstraint {
            env,
            phase,
            grammar,
            last_mask: None,
            grammar_alive: true,
            grammar_fed: 0,
            start_bytes: Vec::new(),
            budget,
            reasoning_tokens: 0,
            forced: 0,
            tail: Vec::new(),
            ws_after: 0,
            generated: 0,
            max_tokens: None,
            close_margin: DEFAULT_CLOSE_MARGIN + 2 * closer_tokens,
            closers,
            answer_tail: Vec::new(),
            in_string: false,
            escaped: false,
            text_openers,
            text_close,
            in_text: false,
        }
    }

    /// Steers the answer to a valid end before `max_tokens` generated tokens (see the module
    /// docs).
    pub fn with_max_tokens(mut self, max_tokens: usize) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// How many tokens before `max_tokens` closing starts.
    pub fn with_close_margin(mut self, margin: usize) -> Self {
        self.close_margin = margin;
        self
    }

    /// Neither a grammar nor a budget: the machine never masks anything, and the server need
    /// not attach it.
    pub fn is_noop(&self) -> bool {
        self.grammar.is_none() && self.budget.is_none()
    }

    /// Reasoning tokens generated so far (forced `</think>` tokens not counted).
    pub fn reasoning_tokens(&self) -> usize {
        self.reasoning_tokens
    }

    /// Whether the output is complete.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    fn effective_budget(&self) -> Option<usize> {
        let cap = match (self.grammar.is_some(), self.max_tokens) {
            (true, Some(m)) => Some(m.saturating_sub(2 * self.close_margin)),
            _ => None,
        };
        match (self.budget, cap) {
            (Some(b), Some(c)) => Some(b.min(c)),
            (b, c) => b.or(c),
        }
    }

    fn is_eog(&self, token: u32) -> bool {
        self.env.eog_ids().contains(&token)
    }

    fn grammar_mask(&mut self) -> Result<SimpleVob, ConstraintError> {
        let g = self.grammar.as_mut().expect("a grammar");
        let m = g.allowed().map_err(ConstraintError)?;
        self.last_mask = Some(m.clone());
        Ok(m)
    }

    /// Whether the grammar allows `token` now (from the last mask, or a fresh one).
    fn grammar_allows(&mut self, token: u32) -> Result<bool, ConstraintError> {
        if (token as usize) >= self.env.vocab_size() {
            return Ok(false);
        }
        let m = match self.last_mask.take() {
            Some(m) => m,
            None => self.grammar_mask()?,
        };
        Ok(m.is_allowed(token))
    }

    fn near_limit(&self) -> bool {
        self.max_tokens
            .is_some_and(|m| self.generated + self.close_margin >= m)
    }

    /// Keeps the tokens the closing rule prefers (see the module docs).
    fn closing(&mut self, mask: &mut SimpleVob) {
        let eog = self.env.eog_ids();
        if eog.iter().any(|&t| mask.is_allowed(t)) {
            let allowed: Vec<u32> = eog
                .iter()
                .copied()
                .filter(|&t| mask.is_allowed(t))
                .collect();
            mask.set_all(false);
            for t in allowed {
                mask.allow_token(t);
            }
            return;
        }
        let forced = self
            .grammar
            .as_mut()
            .map(|g| g.forced_tokens())
            .unwrap_or_default();
        if let Some(&t) = forced.first().filter(|&&t| mask.is_allowed(t)) {
            mask.set_all(false);
            mask.allow_token(t);
            return;
        }
        if self.in_text {
            let rest = [rest_of(&self.text_close, &self.answer_tail)];
            if self.keep_closing(mask, &rest) {
                return;
            }
        }
        // Close the open string, then the open arrays and objects.
        let in_string = self.in_string;
        let closes = |b: &[u8], set: &[u8]| {
            let b = if in_string {
                match b.strip_prefix(b"\"") {
                    Some(rest) => rest,
                    None => return false,
                }
            } else {
                b
            };
            b.iter().all(|c| set.contains(c))
        };
        if self.keep_only(mask, |b| closes(b, b"}]")) {
            return;
        }
        // What is left to write of each closing text (the answer may have begun one).
        let rests: Vec<Vec<u8>> = self
            .closers
            .iter()
            .map(|c| rest_of(c, &self.answer_tail))
            .collect();
        if self.keep_closing(mask, &rests) {
            return;
        }
        self.keep_only(mask, |b| closes(b, b"}],: "));
    }

    /// Keeps the tokens that spell on one of `rests`: those that end within one first (so that
    /// `>` ends `</tool_call>` rather than `>\n` running on into another call), else those that
    /// run past one. True if any.
    fn keep_closing(&self, mask: &mut SimpleVob, rests: &[Vec<u8>]) -> bool {
        self.keep_only(mask, |b| continues(b, rests, true))
            || self.keep_only(mask, |b| continues(b, rests, false))
    }

    /// Restricts `mask` to the allowed tokens whose (non-empty) bytes satisfy `pred`, if any;
    /// true if it did.
    fn keep_only(&self, mask: &mut SimpleVob, pred: impl Fn(&[u8]) -> bool) -> bool {
        let mut keep = Vec::new();
        mask.iter_set_entries(|i| {
            let b = self.env.trie_bytes(i as u32);
            if !b.is_empty() && pred(b) {
                keep.push(i as u32);
            }
        });
        if keep.is_empty() {
            return false;
        }
        mask.set_all(false);
        for t in keep {
            mask.allow_token(t);
        }
        true
    }

    /// Start: tokens that continue `<think>` from the output so far (no leading whitespace).
    fn think_continuations(&self, mask: &mut SimpleVob) {
        let Some(rest) = THINK_OPEN.as_bytes().strip_prefix(&self.start_bytes[..]) else {
            return;
        };
        for id in 0..self.env.vocab_size() as u32 {
            let b = self.env.trie_bytes(id);
            if !b.is_empty() && (rest.starts_with(b) || b.starts_with(rest)) {
                mask.allow_token(id);
            }
        }
    }

    fn enter_after_think(&mut self) -> Result<bool, ConstraintError> {
        self.tail.clear();
        self.phase = if self.grammar.is_some() {
            Phase::AfterThink
        } else {
            Phase::Free
        };
        Ok(false)
    }

    /// Tracks the answer's last bytes, whether it is inside a JSON string, and whether inside
    /// the grammar's free text.
    fn record_answer(&mut self, token: u32) {
        let b = self.env.trie_bytes(token);
        let b = b.strip_prefix(&[0xFF]).unwrap_or(b).to_vec();
        let track = !self.closers.is_empty() || !self.text_openers.is_empty();
        for c in b {
            if self.in_text {
                // Free text, not JSON.
            } else if self.escaped {
                self.escaped = false;
            } else if self.in_string && c == b'\\' {
                self.escaped = true;
            } else if c == b'"' {
                self.in_string = !self.in_string;
            }
            if !track {
                continue;
            }
            self.answer_tail.push(c);
            if self.in_text {
                self.in_text = !self.answer_tail.ends_with(&self.text_close);
            } else if !self.in_string {
                self.in_text = self
                    .text_openers
                    .iter()
                    .any(|o| self.answer_tail.ends_with(o));
            }
        }
        let longest = self.text_openers.iter().map(Vec::len).max().unwrap_or(0);
        let excess = self.answer_tail.len().saturating_sub(64.max(longest));
        self.answer_tail.drain(..excess);
    }

    /// Feeds an answer token to the grammar; true when the output is complete.
    fn feed_grammar(&mut self, token: u32) -> Result<bool, ConstraintError> {
        self.phase = Phase::Answer;
        if !self.grammar_allows(token)? {
            return Err(ConstraintError(format!(
                "token {token} is not allowed by the grammar"
            )));
        }
        let eog = self.is_eog(token);
        self.record_answer(token);
        let g = self.grammar.as_mut().expect("a grammar");
        g.consume(token).map_err(ConstraintError)?;
        if eog || g.is_stopped() {
            self.phase = Phase::Done;
            return Ok(true);
        }
        Ok(false)
    }
}

/// Sets every logit whose token `mask` does not allow (or past its vocabulary) to -inf.
fn apply(mask: &SimpleVob, logits: &mut [f32]) -> Result<(), ConstraintError> {
    let n = mask.len();
    let mut any = false;
    for (i, l) in logits.iter_mut().enumerate() {
        if i < n && mask.is_allowed(i as u32) {
            any = true;
        } else {
            *l = f32::NEG_INFINITY;
        }
    }
    if any {
        Ok(())
    } else {
        Err(ConstraintError("no token is allowed".into()))
    }
}

impl Constraint for OutputConstraint {
    fn mask(&mut self, logits: &mut [f32]) -> Result<(), ConstraintError> {
        self.last_mask = None;
        match self.phase {
            Phase::Free => Ok(()),
            Phase::Start => {
                if self.grammar.is_none() {
                    return Ok(());
                }
                let mut m = if self.grammar_alive {
                    self.grammar_mask()?
                } else {
                    let mut m = SimpleVob::alloc(self.env.vocab_size());
                    m.set_all(false);
                    m
                };
                if self.grammar_alive {
                    // Keep the grammar's own mask for `accept`.
                    self.last_mask = Some(m.clone());
                }
                self.think_continuations(&mut m);
                apply(&m, logits)
            }
            Phase::Reasoning => {
                let exhausted = self
                    .effective_budget()
                    .is_some_and(|b| self.reasoning_tokens >= b);
                if self.forced > 0 || exhausted {
                    let close = self.env.think_close_tokens();
                    let Some(&t) = close.get(self.forced) else {
                        return Err(ConstraintError("`</think>` has no tokens".into()));
                    };
                    for (i, l) in logits.iter_mut().enumerate() {
                        if i != t as usize {
                            *l = f32::NEG_INFINITY;
                        }
                    }
                    return Ok(());
                }
                if self.grammar.is_some() {
                    for &t in self.env.eog_ids() {
                        if let Some(l) = logits.get_mut(t as usize) {
                            *l = f32::NEG_INFINITY;
                        }
                    }
                }
                Ok(())
            }
            Phase::AfterThink | Phase::Answer => {
                let g = self.grammar.as_ref().expect("a grammar");
                if g.is_stopped() {
                    return mask_to_eog(&self.env, logits);
                }
                let mut m = self.grammar_mask()?;
                if self.near_limit() {
                    self.closing(&mut m);
                    self.last_mask = Some(m.clone());
                }
                if self.phase == Phase::AfterThink && self.ws_after < 2 {
                    for &t in self.env.whitespace_tokens() {
                        m.allow_token(t);
                    }
                }
                apply(&m, logits)
            }
            Phase::Done => mask_to_eog(&self.env, logits),
        }
    }

    fn accept(&mut self, token: u32) -> Result<bool, ConstraintError> {
        self.generated += 1;
        match self.phase {
            Phase::Free => {
                self.last_mask = None;
                Ok(self.is_eog(token))
            }
            Phase::Done => Ok(true),
            Phase::Start => self.accept_at_start(token),
            Phase::Reasoning => self.accept_reasoning(token),
            Phase::AfterThink => self.accept_after_think(token),
            Phase::Answer => self.feed_grammar(token),
        }
    }
}

impl OutputConstraint {
    /// The first tokens: `<think>` opening after all, or the start of the answer.
    fn accept_at_start(&mut self, token: u32) -> Result<bool, ConstraintError> {
        let bytes = self.env.tokenizer().token_bytes(token);
        let mut s = std::mem::take(&mut self.start_bytes);
        s.extend_from_slice(&bytes);
        let trimmed_at = s
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(s.len());
        let s = s.split_off(trimmed_at);
        let t = &s[..];
        let open = THINK_OPEN.as_bytes();
        if t.starts_with(open) {
            // Reasoning after all: undo what the grammar took.
            if let Some(g) = self.grammar.as_mut() {
                if self.grammar_fed > 0 {
                    g.rollback(self.grammar_fed).map_err(ConstraintError)?;
                }
            }
            self.last_mask = None;
            self.answer_tail.clear();
            self.in_string = false;
            self.escaped = false;
            self.in_text = false;
            self.phase = Phase::Reasoning;
            self.tail = t[open.len()..].to_vec();
            if self.tail.ends_with(THINK_CLOSE.as_bytes()) {
                return self.enter_after_think();
            }
            return Ok(false);
        }
        let think_alive = open.starts_with(t) && !self.is_eog(token);
        if self.grammar.is_none() {
            self.last_mask = None;
            if think_alive {
                self.start_bytes = s;
                return Ok(false);
            }
            self.phase = Phase::Free;
            return Ok(self.is_eog(token));
        }
        if self.grammar_alive && self.grammar_allows(token)? {
            self.record_answer(token);
            let eog = self.is_eog(token);
            let g = self.grammar.as_mut().expect("a grammar");
            g.consume(token).map_err(ConstraintError)?;
            self.grammar_fed += 1;
            if !think_alive {
                self.phase = Phase::Answer;
                if eog || g.is_stopped() {
                    self.phase = Phase::Done;
                    return Ok(true);
                }
                return Ok(false);
            }
        } else {
            self.grammar_alive = false;
        }
        self.last_mask = None;
        if think_alive {
            self.start_bytes = s;
            return Ok(false);
        }
        Err(ConstraintError(format!(
            "token {token} is allowed neither by the grammar nor as `<think>`"
        )))
    }

    /// Inside `<think>`: counts the budget, forces `</think>` once it is spent.
    fn accept_reasoning(&mut self, token: u32) -> Result<bool, ConstraintError> {
        if self.is_eog(token) {
            self.phase = Phase::Done;
            return Ok(true);
        }
        let bytes = self.env.tokenizer().token_bytes(token);
        let forcing = self.forced > 0
            || self
                .effective_budget()
                .is_some_and(|b| self.reasoning_tokens >= b);
        if forcing {
            let close = self.env.think_close_tokens();
            if close.get(self.forced) != Some(&token) {
                return Err(ConstraintError(format!(
                    "token {token} is not the forced `</think>` token"
                )));
            }
            self.forced += 1;
            if self.forced == close.len() {
                return self.enter_after_think();
            }
            return Ok(false);
        }
        self.reasoning_tokens += 1;
        self.tail.extend_from_slice(&bytes);
        let close = THINK_CLOSE.as_bytes();
        if self.tail.ends_with(close) {
            return self.enter_after_think();
        }
        let keep = close.len();
        if self.tail.len() > keep {
            self.tail.drain(..self.tail.len() - keep);
        }
        Ok(false)
    }

    /// Right after `</think>`: a little whitespace, then the answer.
    fn accept_after_think(&mut self, token: u32) -> Result<bool, ConstraintError> {
        let ws = self.env.whitespace_tokens().binary_search(&token).is_ok();
        if ws && self.ws_after < 2 {
            self.ws_after += 1;
            self.last_mask = None;
            return Ok(false);
        }
        self.feed_grammar(token)
    }
}

/// What is left to write of `closer` when the answer ends with `tail` (which may have begun it).
fn rest_of(closer: &[u8], tail: &[u8]) -> Vec<u8> {
    let k = (0..closer.len())
        .rev()
        .find(|&k| tail.ends_with(&closer[..k]))
        .unwrap_or(0);
    closer[k..].to_vec()
}

/// Whether a token's bytes (control tokens: `0xFF` + text) go on with one of `rests`: end
/// within it, or (`!within`) also run past it.
fn continues(b: &[u8], rests: &[Vec<u8>], within: bool) -> bool {
    let b = b.strip_prefix(&[0xFF]).unwrap_or(b);
    rests
        .iter()
        .any(|r| !b.is_empty() && (r.starts_with(b) || (!within && b.starts_with(r))))
}

fn mask_to_eog(env: &TokenEnv, logits: &mut [f32]) -> Result<(), ConstraintError> {
    let eog = env.eog_ids();
    for (i, l) in logits.iter_mut().enumerate() {
        if !eog.contains(&(i as u32)) {
            *l = f32::NEG_INFINITY;
        }
    }
    Ok(())
}
