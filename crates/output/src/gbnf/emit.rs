//! Writes the chosen layout as llguidance Lark text: GBNF rules kept as rules become lowercase
//! Lark rules, lexemes are string literals, `/regex/` classes or uppercase terminals.

use super::analysis::Lexemes;
use super::charset::CharSet;
use super::parse::{Grammar, Id, Kind};
use crate::grammar::lark_str;
use std::collections::{HashMap, HashSet};
use std::fmt::Write;

struct Emitter<'g> {
    g: &'g Grammar,
    lex: &'g Lexemes,
    lower: Vec<String>,
    upper: Vec<String>,
    used: HashSet<String>,
    /// Rules needed as terminals, and whether their definition is written.
    terminal_rules: Vec<bool>,
    /// Terminals made for lexemes that are no whole rule: (name, definition).
    extra: Vec<(String, String)>,
    /// The rule whose body each node is.
    body_of: HashMap<Id, usize>,
}

pub(super) fn emit(g: &Grammar, lex: &Lexemes) -> String {
    let mut used: HashSet<String> = HashSet::from(["start".to_string()]);
    let mut lower = Vec::with_capacity(g.rules.len());
    for r in &g.rules {
        let name = unique(&mut used, &lark_name(&r.name));
        lower.push(name);
    }
    let upper: Vec<String> = lower.iter().map(|n| n.to_uppercase()).collect();
    used.extend(upper.iter().cloned());
    let mut e = Emitter {
        g,
        lex,
        lower,
        upper,
        used,
        terminal_rules: vec![false; g.rules.len()],
        extra: Vec::new(),
        body_of: g
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| (r.body, i))
            .collect(),
    };
    let mut out = format!("start: {}\n", e.lower[g.root]);
    for (r, rule) in g.rules.iter().enumerate() {
        if lex.rule_level[r] {
            let body = e.rule_body(rule.body);
            let _ = writeln!(out, "{}: {body}", e.lower[r]);
        }
    }
    out.push_str(&e.terminals());
    out
}

/// A Lark name for a GBNF name (`[a-zA-Z0-9-]+`): lowercase, `_` for `-`, never starting with
/// a digit or `_` (a leading `_` means something else in Lark).
fn lark_name(gbnf: &str) -> String {
    let s: String = gbnf
        .chars()
        .map(|c| {
            if c == '-' {
                '_'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_lowercase()) {
        s
    } else {
        format!("r{s}")
    }
}

fn unique(used: &mut HashSet<String>, base: &str) -> String {
    let mut name = base.to_string();
    let mut k = 2;
    while used.contains(&name) {
        name = format!("{base}_{k}");
        k += 1;
    }
    used.insert(name.clone());
    name
}

impl Emitter<'_> {
    fn rule_body(&mut self, body: Id) -> String {
        match self.g.kind(body) {
            Kind::Alt(items) if !self.lex.lexemes.contains(&body) => {
                let alts: Vec<String> = items.iter().map(|&c| self.rule_expr(c)).collect();
                alts.join(" | ")
            }
            _ => self.rule_expr(body),
        }
    }

    /// A node where it stands in a Lark rule.
    fn rule_expr(&mut self, n: Id) -> String {
        if self.lex.lexemes.contains(&n) {
            return self.lexeme(n);
        }
        match self.g.kind(n) {
            Kind::Ref(r) => self.lower[*r].clone(),
            _ => self.compound(n, Emitter::rule_expr),
        }
    }

    /// A node inside a terminal's definition.
    fn term_expr(&mut self, n: Id) -> String {
        match self.g.kind(n) {
            Kind::Char { set, literal } => char_expr(set, *literal),
            Kind::Ref(r) => self.terminal_rule(*r),
            _ => self.compound(n, Emitter::term_expr),
        }
    }

    /// Sequences, alternatives and repetitions, their parts written by `part`.
    fn compound(&mut self, n: Id, part: fn(&mut Self, Id) -> String) -> String {
        match self.g.kind(n) {
            Kind::Seq { items, literal } => {
                if *literal && !self.split_literal(items) {
                    return lark_str(&literal_text(self.g, items));
                }
                if items.is_empty() {
                    return "\"\"".into();
                }
                let parts: Vec<String> = items.iter().map(|&c| part(self, c)).collect();
                format!("({})", parts.join(" "))
            }
            Kind::Alt(items) => {
                let parts: Vec<String> = items.iter().map(|&c| part(self, c)).collect();
                format!("({})", parts.join(" | "))
            }
            Kind::Rep { item, min, max } => {
                if *max == Some(0) {
                    return "\"\"".into();
                }
                let inner = part(self, *item);
                let op = match (*min, *max) {
                    (0, None) => "*".to_string(),
                    (1, None) => "+".to_string(),
                    (0, Some(1)) => "?".to_string(),
                    (m, None) => format!("{{{m},}}"),
                    (m, Some(x)) if m == x => format!("{{{m}}}"),
                    (m, Some(x)) => format!("{{{m},{x}}}"),
                };
                format!("({inner}){op}")
            }
            Kind::Char { .. } | Kind::Ref(_) => unreachable!("not compound"),
        }
    }

    /// A literal's characters are lexemes of their own when the literal is not one lexeme
    /// (only in rules: inside a terminal the literal is always whole).
    fn split_literal(&self, items: &[Id]) -> bool {
        items.first().is_some_and(|c| self.lex.lexemes.contains(c))
    }

    /// A lexeme where it stands in a Lark rule.
    fn lexeme(&mut self, n: Id) -> String {
        match self.g.kind(n) {
            Kind::Char { set, literal } => char_expr(set, *literal),
            Kind::Seq {
                items,
                literal: true,
            } => lark_str(&literal_text(self.g, items)),
            Kind::Ref(r) => self.terminal_rule(*r),
            _ => {
                if let Some(&r) = self.body_of.get(&n) {
                    return self.terminal_rule(r);
                }
                let base = self.lower[self.enclosing_rule(n)].to_uppercase();
                let name = unique(&mut self.used, &format!("{base}_LEX"));
                let def = self.term_expr(n);
                self.extra.push((name.clone(), def));
                name
            }
        }
    }

    /// The rule whose body contains `n` (for naming its terminals).
    fn enclosing_rule(&self, n: Id) -> usize {
        (0..self.g.rules.len())
            .find(|&r| contains(self.g, self.g.rules[r].body, n))
            .unwrap_or(self.g.root)
    }

    fn terminal_rule(&mut self, r: usize) -> String {
        self.terminal_rules[r] = true;
        self.upper[r].clone()
    }

    /// The definitions of every terminal used, rules' terminals in rule order.
    fn terminals(&mut self) -> String {
        let mut written = vec![false; self.g.rules.len()];
        let mut out = String::new();
        let next = |e: &Self, written: &[bool]| {
            (0..e.g.rules.len()).find(|&r| e.terminal_rules[r] && !written[r])
        };
        while let Some(r) = next(self, &written) {
            written[r] = true;
            let body = self.term_expr(self.g.rules[r].body);
            let _ = writeln!(out, "{}: {body}", self.upper[r]);
        }
        for (name, def) in &self.extra {
            let _ = writeln!(out, "{name}: {def}");
        }
        out
    }
}

fn contains(g: &Grammar, root: Id, n: Id) -> bool {
    root == n
        || match g.kind(root) {
            Kind::Seq { items, .. } | Kind::Alt(items) => items.iter().any(|&c| contains(g, c, n)),
            Kind::Rep { item, .. } => contains(g, *item, n),
            Kind::Char { .. } | Kind::Ref(_) => false,
        }
}

fn literal_text(g: &Grammar, items: &[Id]) -> String {
    items
        .iter()
        .filter_map(|&c| match g.kind(c) {
            Kind::Char { set, .. } => set.ranges().first().and_then(|r| char::from_u32(r.0)),
            _ => None,
        })
        .collect()
}

/// One character: a string for a literal's, a regex class otherwise.
fn char_expr(set: &CharSet, literal: bool) -> String {
    match set.ranges() {
        [(c, _)] if literal => lark_str(&char::from_u32(*c).map(String::from).unwrap_or_default()),
        _ => format!("/[{}]/", class_body(set)),
    }
}

/// The inside of a regex class; surrogates (no characters) are left out, every character
/// but letters and digits written as `\x{..}` so that nothing needs escaping.
fn class_body(set: &CharSet) -> String {
    let mut s = String::new();
    for &(lo, hi) in set.ranges() {
        for (a, b) in [(lo, hi.min(0xD7FF)), (lo.max(0xE000), hi)] {
            if a > b {
                continue;
            }
            s.push_str(&class_char(a));
            if b > a {
                s.push('-');
                s.push_str(&class_char(b));
            }
        }
    }
    s
}

fn class_char(c: u32) -> String {
    match char::from_u32(c) {
        Some(ch) if ch.is_ascii_alphanumeric() => ch.to_string(),
        _ => format!("\\x{{{c:x}}}"),
    }
}
