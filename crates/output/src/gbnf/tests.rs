//! The converter on small grammars: what each construct becomes, and errors with positions.
//! (Matching text through llguidance is in `tests/gbnf.rs`.)

use super::*;

fn lark(src: &str) -> String {
    gbnf_to_lark(src).unwrap_or_else(|e| panic!("{e}\n{src}"))
}

fn problems(src: &str) -> Vec<String> {
    match gbnf_to_lark(src) {
        Ok(l) => panic!("converted:\n{l}"),
        Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn a_regular_grammar_is_one_terminal() {
    let l = lark("root ::= \"1. \" move ( \" \" move )*\nmove ::= [a-h] [1-8]\n");
    assert_eq!(
        l,
        "start: root\nroot: ROOT\nROOT: (\"1. \" MOVE ((\" \" MOVE))*)\nMOVE: (/[a-h]/ /[1-8]/)\n"
    );
    assert!(!l.contains("%ignore"));
}

#[test]
fn recursion_gives_rules_and_names_become_lark_names() {
    let l = lark("root ::= list-of-x\nlist-of-x ::= \"[\" (list-of-x | \"x\")* \"]\"\n");
    assert!(l.starts_with("start: root\n"), "{l}");
    assert!(
        l.contains("list_of_x: (\"[\" ((list_of_x | \"x\"))* \"]\")"),
        "{l}"
    );
    // Names differing only in case or dash stay apart; names from digits get a letter.
    let l = lark("root ::= dataType datatype 9lives\ndataType ::= \"a\" root?\ndatatype ::= \"b\"\n9lives ::= \"c\"\n");
    for name in ["datatype:", "DATATYPE_2: \"b\"", "R9LIVES: \"c\""] {
        assert!(l.contains(name), "{name} in\n{l}");
    }
}

#[test]
fn repetitions_and_classes() {
    let l = lark("root ::= [^a-c\\n]{2} \"x\"{1,} [\\x41-\\u0043]{0,3} .+ [-] [a\\-z]\n");
    for part in [
        "(/[\\x{0}-\\x{9}\\x{b}-\\x{60}d-\\x{d7ff}\\x{e000}-\\x{10ffff}]/){2}",
        "(\"x\")+",
        "(/[A-C]/){0,3}",
        "(/[\\x{0}-\\x{d7ff}\\x{e000}-\\x{10ffff}]/)+",
        "/[\\x{2d}]/",
        "/[\\x{2d}az]/",
    ] {
        assert!(l.contains(part), "{part} in\n{l}");
    }
}

#[test]
fn literals_and_escapes() {
    let l = lark("root ::= \"a\\\"b\\\\c\\n\\t\\r\\x7e\\u00e9\\U0001F600\" \"\"\n");
    assert!(l.contains(r#""a\"b\\c\n\t\r~é😀""#), "{l}");
}

#[test]
fn layout_rules_of_llama_cpp() {
    // Newlines after `::=` and `|` and inside parentheses continue a rule; comments anywhere.
    let l =
        lark("root ::=\n  \"a\" | # first\n  \"b\" (\n \"c\" # in a group\n | \"d\")\n\n# end\n");
    assert!(l.contains("(\"a\" | (\"b\" (\"c\" | \"d\")))"), "{l}");
    // A later definition replaces an earlier one, as in llama.cpp.
    assert!(lark("root ::= \"a\"\nroot ::= \"b\"\n").contains("\"b\""));
}

#[test]
fn greedy_lexemes_are_split_where_they_would_run_on() {
    // `[0-9]+ ws` as one lexeme would swallow the newline the rule needs next.
    let l = lark("root ::= num \"\\n\" root | \".\"\nnum ::= [0-9]+ ws\nws ::= [ \\t\\n]*\n");
    assert!(l.contains("num: (NUM_LEX ws)"), "{l}");
    assert!(l.contains("ws: (/[\\x{9}-\\x{a}\\x{20}]/)*"), "{l}");
    // A literal that a class may also start: kept as characters.
    let l = lark("root ::= [a-z] \"bc\" root | \"ab\" \"d\" root | \".\"\n");
    assert!(l.contains("(\"a\" \"b\")"), "{l}");
}

#[test]
fn errors_have_positions() {
    assert_eq!(
        problems("root ::= a b\na ::= \"x\"\n"),
        ["1:12: rule `b` is used but never defined"]
    );
    assert_eq!(
        problems("item ::= \"x\"\n"),
        ["2:1: the grammar has no `root` rule"]
    );
    assert_eq!(
        problems("root ::= \"abc\n"),
        ["1:10: unterminated string literal (no closing `\"`)"]
    );
    assert_eq!(
        problems("root ::= \"a\"\n  x ::= [a-z\n"),
        ["2:9: unterminated character class (no closing `]`)"]
    );
    assert_eq!(
        problems("root ::= \"\\q\"\n"),
        ["1:11: unknown escape `\\q`"]
    );
    assert_eq!(
        problems("root ::= ( \"a\" \n"),
        ["2:1: expected `)` to close the `(` at 1:10, found the end of the grammar"]
    );
    assert_eq!(
        problems("root := \"a\"\n"),
        ["1:6: expected `::=` after `root`, found `:= \"a\"`"]
    );
    assert_eq!(
        problems("root ::= * \"a\"\n"),
        ["1:10: `*` has nothing before it to repeat"]
    );
    assert_eq!(
        problems("root ::= \"a\" ; \"b\"\n"),
        ["1:14: expected the end of rule `root` (a newline), found `; \"b\"`"]
    );
    assert_eq!(
        problems("root ::= \"a\"{3,1} \"b\"{2001}\n"),
        [
            "1:13: repetition `{3,1}` has its maximum below its minimum",
            "1:22: 2001 repetitions are more than llama.cpp allows (2000)"
        ]
    );
    assert_eq!(
        problems("root ::= \"\\uD800\" [b-a] []\n"),
        [
            "1:11: escape `\\u` gives 0xD800, which is not a Unicode character",
            "1:22: a range in a character class ends before it starts",
            "1:25: this character class matches no character"
        ]
    );
}

#[test]
fn token_references_are_named_as_unconvertible() {
    let e =
        gbnf_to_lark("root ::= <think> body </think>\nbody ::= !<[1001]>* <[7]>\n").unwrap_err();
    let msgs: Vec<String> = e.problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(msgs.len(), 4, "{msgs:?}");
    for (m, (at, token)) in msgs.iter().zip([
        ("1:10:", "<think>"),
        ("1:23:", "</think>"),
        ("2:10:", "!<[1001]>"),
        ("2:21:", "<[7]>"),
    ]) {
        assert!(
            m.starts_with(at) && m.contains(&format!("`{token}`")),
            "{m}"
        );
        assert!(m.contains("cannot be converted"), "{m}");
    }
    // The error's text lists every problem.
    assert!(
        e.to_string().contains("; 2:21: token reference `<[7]>`"),
        "{e}"
    );
}

#[test]
fn nothing_panics_on_odd_input() {
    for src in [
        "",
        "root",
        "root ::=",
        "root ::= \"",
        "root ::= [",
        "root ::= [^",
        "root ::= \"\\x4\"",
        "root ::= \"a\"{",
        "root ::= \"a\"{1,",
        "root ::= \"a\"{99999999999999999999}",
        "root ::= !",
        "root ::= <abc",
        "root ::= (((",
        "root ::= )",
        "::= \"a\"",
        "root ::= root",
        "root ::= \"\"*",
        "root ::= (\"a\"?)*",
        "root ::= x{0}\nx ::= \"a\"",
        "root ::= |",
        "root ::= \"é\" [é-ü] .\r\n",
    ] {
        let _ = gbnf_to_lark(src);
    }
}
