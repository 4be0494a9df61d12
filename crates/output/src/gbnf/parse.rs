//! The GBNF parser: llama.cpp's syntax (`llama-grammar.cpp`) into a tree of [`Node`]s.
//!
//! Layout follows llama.cpp: a rule is `name ::= alternatives` ending at a newline; newlines
//! may also follow `::=` and `|`, and appear anywhere inside parentheses; `#` comments run to
//! the end of the line. Names are `[a-zA-Z0-9-]+`.

use super::charset::{CharSet, MAX_CHAR};
use super::{GbnfError, GbnfProblem};
use std::collections::HashMap;

pub(super) type Id = usize;

/// llama.cpp refuses more repetitions than this, and reads a larger maximum as no maximum.
const MAX_REPETITIONS: u32 = 2000;

#[derive(Debug, Clone)]
pub(super) enum Kind {
    /// One character: a class, `.`, or a character of a literal (`literal`).
    Char {
        set: CharSet,
        literal: bool,
    },
    /// Items in order; `literal`: the characters of one string literal.
    Seq {
        items: Vec<Id>,
        literal: bool,
    },
    Alt(Vec<Id>),
    Rep {
        item: Id,
        min: u32,
        max: Option<u32>,
    },
    Ref(usize),
}

#[derive(Debug, Clone)]
pub(super) struct Node {
    pub kind: Kind,
}

#[derive(Debug, Clone)]
pub(super) struct Rule {
    pub name: String,
    pub body: Id,
}

#[derive(Debug, Clone)]
pub(super) struct Grammar {
    pub nodes: Vec<Node>,
    /// In order of first mention.
    pub rules: Vec<Rule>,
    pub root: usize,
}

impl Grammar {
    pub(super) fn kind(&self, id: Id) -> &Kind {
        &self.nodes[id].kind
    }
}

/// A rule as the parser sees it: mentioned somewhere, maybe defined.
struct RuleSlot {
    name: String,
    body: Option<Id>,
    /// Where it was first referred to (for "undefined rule").
    first_use: Option<usize>,
}

struct Parser {
    text: Vec<char>,
    pos: usize,
    line_starts: Vec<usize>,
    nodes: Vec<Node>,
    rules: Vec<RuleSlot>,
    names: HashMap<String, usize>,
    /// Constructs that cannot be converted; parsing goes on past them to find them all.
    problems: Vec<GbnfProblem>,
}

/// A syntax error: parsing cannot go on.
struct Fatal(GbnfProblem);

type Parsed<T> = Result<T, Fatal>;

pub(super) fn parse(src: &str) -> Result<Grammar, GbnfError> {
    let text: Vec<char> = src.chars().collect();
    let mut line_starts = vec![0];
    line_starts.extend(
        text.iter()
            .enumerate()
            .filter(|(_, &c)| c == '\n')
            .map(|(i, _)| i + 1),
    );
    let mut p = Parser {
        text,
        pos: 0,
        line_starts,
        nodes: Vec::new(),
        rules: Vec::new(),
        names: HashMap::new(),
        problems: Vec::new(),
    };
    if let Err(Fatal(problem)) = p.grammar() {
        p.problems.push(problem);
        return Err(GbnfError {
            problems: p.problems,
        });
    }
    p.finish()
}

impl Parser {
    fn problem_at(&self, at: usize, message: String) -> GbnfProblem {
        let line = self.line_starts.partition_point(|&s| s <= at);
        GbnfProblem {
            line,
            column: at - self.line_starts[line - 1] + 1,
            message,
        }
    }

    fn fatal<T>(&self, at: usize, message: impl Into<String>) -> Parsed<T> {
        Err(Fatal(self.problem_at(at, message.into())))
    }

    fn unconvertible(&mut self, at: usize, message: String) {
        let p = self.problem_at(at, message);
        self.problems.push(p);
    }

    fn peek(&self) -> Option<char> {
        self.text.get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<char> {
        self.text.get(self.pos + ahead).copied()
    }

    /// What the text says from `at` on, for messages.
    fn found(&self, at: usize) -> String {
        match self.text.get(at) {
            None => "the end of the grammar".into(),
            Some('\n') | Some('\r') => "the end of the line".into(),
            Some(_) => {
                let s: String = self.text[at..]
                    .iter()
                    .take_while(|c| **c != '\n')
                    .take(12)
                    .collect();
                format!("`{s}`")
            }
        }
    }

    fn space(&mut self, newline_ok: bool) {
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' => self.pos += 1,
                '\r' | '\n' if newline_ok => self.pos += 1,
                '#' => {
                    while self.peek().is_some_and(|c| c != '\r' && c != '\n') {
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn grammar(&mut self) -> Parsed<()> {
        self.space(true);
        while self.peek().is_some() {
            self.rule()?;
        }
        Ok(())
    }

    fn is_word_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '-'
    }

    fn name(&mut self) -> Parsed<String> {
        let start = self.pos;
        while self.peek().is_some_and(Parser::is_word_char) {
            self.pos += 1;
        }
        if self.pos == start {
            return self.fatal(
                start,
                format!("expected a rule name, found {}", self.found(start)),
            );
        }
        Ok(self.text[start..self.pos].iter().collect())
    }

    fn rule_index(&mut self, name: &str) -> usize {
        if let Some(&i) = self.names.get(name) {
            return i;
        }
        self.rules.push(RuleSlot {
            name: name.to_string(),
            body: None,
            first_use: None,
        });
        self.names.insert(name.to_string(), self.rules.len() - 1);
        self.rules.len() - 1
    }

    fn rule(&mut self) -> Parsed<()> {
        let name = self.name()?;
        self.space(false);
        let at = self.pos;
        if self.text.get(at..at + 3) != Some(&[':', ':', '=']) {
            return self.fatal(
                at,
                format!("expected `::=` after `{name}`, found {}", self.found(at)),
            );
        }
        self.pos += 3;
        self.space(true);
        let body = self.alternatives(false)?;
        // As in llama.cpp, a later definition of a name replaces an earlier one.
        let i = self.rule_index(&name);
        self.rules[i].body = Some(body);
        match self.peek() {
            Some('\r') => {
                self.pos += 1;
                if self.peek() == Some('\n') {
                    self.pos += 1;
                }
            }
            Some('\n') => self.pos += 1,
            None => {}
            Some(_) => {
                return self.fatal(
                    self.pos,
                    format!(
                        "expected the end of rule `{name}` (a newline), found {}",
                        self.found(self.pos)
                    ),
                )
            }
        }
        self.space(true);
        Ok(())
    }

    fn push(&mut self, kind: Kind) -> Id {
        self.nodes.push(Node { kind });
        self.nodes.len() - 1
    }

    fn alternatives(&mut self, nested: bool) -> Parsed<Id> {
        let mut alts = vec![self.sequence(nested)?];
        while self.peek() == Some('|') {
            self.pos += 1;
            self.space(true);
            alts.push(self.sequence(nested)?);
        }
        Ok(if alts.len() == 1 {
            alts[0]
        } else {
            self.push(Kind::Alt(alts))
        })
    }

    fn sequence(&mut self, nested: bool) -> Parsed<Id> {
        let mut items: Vec<Id> = Vec::new();
        while let Some(c) = self.peek() {
            let at = self.pos;
            let item = match c {
                '"' => self.literal()?,
                '[' => self.class()?,
                '<' | '!' => self.token()?,
                '(' => self.group()?,
                '.' => {
                    self.pos += 1;
                    self.push(Kind::Char {
                        set: CharSet::all(),
                        literal: false,
                    })
                }
                '*' | '+' | '?' | '{' => {
                    let Some(last) = items.pop() else {
                        return self.fatal(at, format!("`{c}` has nothing before it to repeat"));
                    };
                    self.repetition(last)?
                }
                c if Parser::is_word_char(c) => {
                    let name = self.name()?;
                    let i = self.rule_index(&name);
                    self.rules[i].first_use.get_or_insert(at);
                    self.push(Kind::Ref(i))
                }
                _ => break,
            };
            items.push(item);
            self.space(nested);
        }
        Ok(if items.len() == 1 {
            items[0]
        } else {
            self.push(Kind::Seq {
                items,
                literal: false,
            })
        })
    }

    fn group(&mut self) -> Parsed<Id> {
        let open = self.pos;
        self.pos += 1;
        self.space(true);
        let inner = self.alternatives(true)?;
        if self.peek() != Some(')') {
            return self.fatal(
                self.pos,
                format!(
                    "expected `)` to close the `(` at {}, found {}",
                    self.where_(open),
                    self.found(self.pos)
                ),
            );
        }
        self.pos += 1;
        Ok(inner)
    }

    fn where_(&self, at: usize) -> String {
        let p = self.problem_at(at, String::new());
        format!("{}:{}", p.line, p.column)
    }

    /// One character of a literal or class, escapes decoded.
    fn char(&mut self, open: usize, what: &str) -> Parsed<u32> {
        let at = self.pos;
        let Some(c) = self.peek() else {
            return self.fatal(open, format!("unterminated {what}"));
        };
        self.pos += 1;
        if c != '\\' {
            return Ok(c as u32);
        }
        let Some(e) = self.peek() else {
            return self.fatal(open, format!("unterminated {what}"));
        };
        self.pos += 1;
        let value = match e {
            'x' => self.hex(at, 2)?,
            'u' => self.hex(at, 4)?,
            'U' => self.hex(at, 8)?,
            't' => '\t' as u32,
            'r' => '\r' as u32,
            'n' => '\n' as u32,
            '\\' | '"' | '[' | ']' | '-' => e as u32,
            _ => return self.fatal(at, format!("unknown escape `\\{e}`")),
        };
        if value > MAX_CHAR || (0xD800..=0xDFFF).contains(&value) {
            self.unconvertible(
                at,
                format!("escape `\\{e}` gives {value:#X}, which is not a Unicode character"),
            );
        }
        Ok(value)
    }

    fn hex(&mut self, at: usize, digits: usize) -> Parsed<u32> {
        let mut value = 0u32;
        for _ in 0..digits {
            let Some(d) = self.peek().and_then(|c| c.to_digit(16)) else {
                return self.fatal(at, format!("expected {digits} hex digits in this escape"));
            };
            value = value.wrapping_mul(16).wrapping_add(d);
            self.pos += 1;
        }
        Ok(value)
    }

    fn literal(&mut self) -> Parsed<Id> {
        let open = self.pos;
        self.pos += 1;
        let mut items = Vec::new();
        while self.peek() != Some('"') {
            let c = self.char(open, "string literal (no closing `\"`)")?;
            items.push(self.push(Kind::Char {
                set: CharSet::single(c),
                literal: true,
            }));
        }
        self.pos += 1;
        Ok(if items.len() == 1 {
            items[0]
        } else {
            self.push(Kind::Seq {
                items,
                literal: true,
            })
        })
    }

    fn class(&mut self) -> Parsed<Id> {
        let open = self.pos;
        self.pos += 1;
        let negated = self.peek() == Some('^');
        if negated {
            self.pos += 1;
        }
        let what = "character class (no closing `]`)";
        let mut ranges = Vec::new();
        while self.peek() != Some(']') {
            let lo = self.char(open, what)?;
            let mut hi = lo;
            if self.peek() == Some('-') && self.peek_at(1) != Some(']') {
                self.pos += 1;
                let at = self.pos;
                hi = self.char(open, what)?;
                if hi < lo {
                    self.unconvertible(
                        at,
                        "a range in a character class ends before it starts".into(),
                    );
                    hi = lo;
                }
            }
            ranges.push((lo, hi));
        }
        self.pos += 1;
        let mut set = CharSet::from_ranges(ranges);
        if negated {
            set = set.complement();
        }
        if set.is_empty() {
            self.unconvertible(open, "this character class matches no character".into());
            set = CharSet::single(0);
        }
        Ok(self.push(Kind::Char {
            set,
            literal: false,
        }))
    }

    /// `<[id]>`, `<text>` and their negations `!<...>`: tokens, not text. llguidance can only
    /// match special tokens by name, and this conversion has no vocabulary to look ids up in.
    fn token(&mut self) -> Parsed<Id> {
        let at = self.pos;
        if self.peek() == Some('!') {
            self.pos += 1;
        }
        if self.peek() != Some('<') {
            return self.fatal(at, "expected `<` after `!` (a token reference)");
        }
        while self.peek().is_some_and(|c| c != '>' && c != '\n') {
            self.pos += 1;
        }
        if self.peek() != Some('>') {
            return self.fatal(at, "unterminated token reference (no closing `>`)");
        }
        self.pos += 1;
        let text: String = self.text[at..self.pos].iter().collect();
        self.unconvertible(
            at,
            format!(
                "token reference `{text}` cannot be converted: frugal's grammars match text, \
                 not token ids"
            ),
        );
        Ok(self.push(Kind::Seq {
            items: Vec::new(),
            literal: true,
        }))
    }

    fn int(&mut self) -> Parsed<u64> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        if start == self.pos {
            return self.fatal(
                start,
                format!("expected a number, found {}", self.found(start)),
            );
        }
        let digits: String = self.text[start..self.pos].iter().collect();
        Ok(digits.parse().unwrap_or(u64::MAX))
    }

    fn repetition(&mut self, item: Id) -> Parsed<Id> {
        let at = self.pos;
        let op = self.peek().expect("a repetition operator");
        self.pos += 1;
        let (min, max) = match op {
            '*' => (0, None),
            '+' => (1, None),
            '?' => (0, Some(1)),
            _ => self.counts(at)?,
        };
        Ok(self.push(Kind::Rep { item, min, max }))
    }

    /// `{m}`, `{m,}`, `{m,n}` (the `{` read), with llama.cpp's limits.
    fn counts(&mut self, at: usize) -> Parsed<(u32, Option<u32>)> {
        self.space(true);
        let min = self.int()?;
        self.space(true);
        let max = match self.peek() {
            Some('}') => Some(min),
            Some(',') => {
                self.pos += 1;
                self.space(true);
                let max = if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    Some(self.int()?)
                } else {
                    None
                };
                self.space(true);
                if self.peek() != Some('}') {
                    return self.fatal(
                        self.pos,
                        format!("expected `}}`, found {}", self.found(self.pos)),
                    );
                }
                max
            }
            _ => {
                return self.fatal(
                    self.pos,
                    format!("expected `,` or `}}`, found {}", self.found(self.pos)),
                )
            }
        };
        self.pos += 1;
        if min > MAX_REPETITIONS as u64 {
            self.unconvertible(
                at,
                format!("{min} repetitions are more than llama.cpp allows ({MAX_REPETITIONS})"),
            );
        }
        if max.is_some_and(|m| m < min) {
            self.unconvertible(
                at,
                format!(
                    "repetition `{{{min},{}}}` has its maximum below its minimum",
                    max.unwrap()
                ),
            );
        }
        let min = min.min(MAX_REPETITIONS as u64) as u32;
        let max = max
            .filter(|&m| m <= MAX_REPETITIONS as u64)
            .map(|m| (m as u32).max(min));
        Ok((min, max))
    }

    fn finish(mut self) -> Result<Grammar, GbnfError> {
        let mut rules = Vec::with_capacity(self.rules.len());
        for i in 0..self.rules.len() {
            let name = self.rules[i].name.clone();
            let body = match self.rules[i].body {
                Some(body) => body,
                None => {
                    let at = self.rules[i].first_use.unwrap_or(0);
                    let message = format!("rule `{name}` is used but never defined");
                    self.unconvertible(at, message);
                    0
                }
            };
            rules.push(Rule { name, body });
        }
        let root = self.names.get("root").copied();
        if root.is_none() {
            let end = self.text.len();
            self.unconvertible(end, "the grammar has no `root` rule".into());
        }
        if !self.problems.is_empty() {
            self.problems.sort_by_key(|p| (p.line, p.column));
            return Err(GbnfError {
                problems: self.problems,
            });
        }
        Ok(Grammar {
            nodes: self.nodes,
            rules,
            root: root.expect("checked"),
        })
    }
}
