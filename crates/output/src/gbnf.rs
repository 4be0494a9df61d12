//! llama.cpp's GBNF grammars converted to llguidance's Lark dialect ([`gbnf_to_lark`]).
//!
//! GBNF describes characters with a nondeterministic pushdown automaton: any split of the text
//! between symbols is tried. llguidance instead cuts the text into lexemes greedily (a lexeme
//! goes on while any lexeme allowed there can go on) and parses the lexemes with Earley. A naive
//! conversion therefore rejects text that GBNF accepts: with `num ::= [0-9]+ ws` as one lexeme
//! in `num "\n"`, the lexeme swallows the newline the rule needs. So the conversion keeps the
//! lexemes apart where greed could change the outcome:
//!
//! - every character class, `.` and every character of a literal can be a lexeme of its own
//!   (one character long: nothing to be greedy about), so any GBNF grammar converts exactly;
//! - a regular part of the grammar (a literal, a group, a repetition, a rule that refers to no
//!   rule on a cycle) becomes one lexeme, which llguidance matches far faster, only when no
//!   text the grammar accepts can make the lexer run past the lexeme's end (checked against
//!   what may follow the lexeme and what other lexemes may start where it starts; see
//!   [`Lexemes`]).
//!
//! Whole grammars that are regular (chess, lists, one-line formats) become a single lexeme.
//! Nothing is ever skipped between lexemes: GBNF has no `%ignore`.

mod analysis;
mod charset;
mod emit;
mod parse;

use std::fmt;

/// One thing wrong with a grammar, at a 1-based line and column (in characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GbnfProblem {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for GbnfProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

/// Why a GBNF grammar cannot be converted: every problem found, in source order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", list(.problems))]
pub struct GbnfError {
    pub problems: Vec<GbnfProblem>,
}

fn list(problems: &[GbnfProblem]) -> String {
    let parts: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    parts.join("; ")
}

/// Converts a GBNF grammar (llama.cpp's `grammar` field) to llguidance's Lark dialect, `root`
/// being the start. Errors name each construct that cannot be converted and where.
pub fn gbnf_to_lark(src: &str) -> Result<String, GbnfError> {
    let grammar = parse::parse(src)?;
    let lexemes = analysis::Lexemes::choose(&grammar);
    Ok(emit::emit(&grammar, &lexemes))
}

#[cfg(test)]
mod tests;
