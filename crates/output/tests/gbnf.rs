//! GBNF grammars converted to Lark and compiled by llguidance on a fixture vocabulary: text
//! the GBNF grammar accepts must get through the token masks to an accepting end, text it
//! rejects must not.
//!
//! llama.cpp's own sample grammars are not in this repository: `scripts/fetch_peer_grammars.sh`
//! downloads them into the model cache, where [`peer_grammars_convert_and_match`] finds them
//! (or in `$FRUGAL_PEER_GRAMMARS`). Without them it passes with a note, unless
//! `FRUGAL_REQUIRE_PEER_GRAMMARS=1` (as `scripts/test.sh` sets).

use frugal_fixtures::dir as fixtures;
use frugal_formats::GgufFile;
use frugal_output::gbnf::gbnf_to_lark;
use frugal_output::{
    grammar_constraint, Grammar, GrammarMatcher, OutputPlan, OutputRequest, TokenEnv,
};
use frugal_tokenizer::Tokenizer;
use serde_json::json;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

fn load_env(path: &str) -> Arc<TokenEnv> {
    let gguf = GgufFile::open(fixtures().join(path)).unwrap();
    Arc::new(TokenEnv::new(Arc::new(Tokenizer::from_gguf(&gguf).unwrap())).unwrap())
}

/// The toy vocabulary of the fixture models (512 byte-level tokens).
fn env() -> &'static Arc<TokenEnv> {
    static E: OnceLock<Arc<TokenEnv>> = OnceLock::new();
    E.get_or_init(|| load_env("models/qwen3-Q8_0.gguf"))
}

fn compile(env: &TokenEnv, gbnf: &str) -> GrammarMatcher {
    let lark = gbnf_to_lark(gbnf).unwrap_or_else(|e| panic!("{e}\n{gbnf}"));
    env.matcher(&Grammar::from_lark(lark.clone()))
        .unwrap_or_else(|e| panic!("{e}\n{lark}"))
}

/// Feeds `text`'s tokens through the masks; whether all are allowed and the grammar may end.
fn accepts(env: &TokenEnv, m: &GrammarMatcher, text: &str) -> bool {
    let mut m = m.clone();
    for t in env.tokenizer().encode(text, false, false).unwrap() {
        // A stopped grammar takes nothing more.
        if m.is_stopped() || !m.allowed().unwrap().is_allowed(t) {
            return false;
        }
        m.consume(t).unwrap();
    }
    m.is_accepting()
}

fn check(name: &str, gbnf: &str, good: &[&str], bad: &[&str]) {
    let m = compile(env(), gbnf);
    for s in good {
        assert!(accepts(env(), &m, s), "{name}: should accept {s:?}");
    }
    for s in bad {
        assert!(!accepts(env(), &m, s), "{name}: should reject {s:?}");
    }
}

/// Strings each of llama.cpp's sample grammars accepts and rejects.
fn samples(name: &str) -> Option<(Vec<&'static str>, Vec<&'static str>)> {
    Some(match name {
        "arithmetic" => (
            vec![
                "1+2*3=7\n",
                "(a +b) = c\n",
                "x=1\ny_2 = (x*3)\n",
                "12 =3 \n\n",
            ],
            vec!["1+2*3", "1++2=3\n", "=3\n", "A=1\n"],
        ),
        "c" => (
            vec![
                "int main(){return 0;}",
                "int f(int x){x = x+1;return x;}",
                "float g(){while(i<10){i = i+1;}if(i==10){return i;}else{return 0;}}",
                "char h(){// note\n/* a * b */return -c;}",
            ],
            vec!["int main(){return 0}", "int(){}", "main(){}"],
        ),
        "chess" => (
            vec![
                "1. e4 e5\n2. Nf3 Nc6\n",
                "1. d4 d5\n2. c4 dxc4\n3. O-O Qxd1+\n",
            ],
            vec![
                "1. e4 e5\n",
                "1. e9 e5\n2. Nf3 Nc6\n",
                "2. e4 e5\n3. d4 d5\n",
            ],
        ),
        "english" => (
            vec!["Hello, world! 123", "a\tb\nc"],
            vec!["héllo", "", "two  spaces"],
        ),
        "japanese" => (
            vec!["こんにちは 世界", "カタカナ、ひらがな。"],
            vec!["hello", "こんにちは  世界"],
        ),
        "json" => (
            vec![
                r#"{"a": [1, 2.5, -3e5], "b": {"c": null}, "d": "x\"y\u00e9"}"#,
                "{}",
                "{\n  \"k\": true\n}",
            ],
            vec![r#"{"a": 1,}"#, "[1]", r#"{"a" 1}"#, r#"{"a": 01x}"#],
        ),
        "json_arr" => (vec!["[\n{\"a\": 1},\n2\n]", "[\n]"], vec!["[1]", "{}"]),
        "list" => (
            vec!["- one\n- two\n", "- x\n"],
            vec!["- one", "one\n", "- a\rb\n"],
        ),
        _ => return None,
    })
}

/// Where `scripts/fetch_peer_grammars.sh` puts llama.cpp's grammars.
fn peer_grammar_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("FRUGAL_PEER_GRAMMARS") {
        return Some(PathBuf::from(d));
    }
    let cache = std::env::var_os("FRUGAL_MODEL_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/frugal/models"))
        })?;
    let dir = cache.join("llama-cpp-grammars");
    dir.is_dir().then_some(dir)
}

#[test]
fn peer_grammars_convert_and_match() {
    let Some(dir) = peer_grammar_dir().filter(|d| d.is_dir()) else {
        assert!(
            std::env::var("FRUGAL_REQUIRE_PEER_GRAMMARS").as_deref() != Ok("1"),
            "llama.cpp's grammars are missing: run scripts/fetch_peer_grammars.sh"
        );
        println!("skipped: run scripts/fetch_peer_grammars.sh");
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gbnf"))
        .collect();
    files.sort();
    let mut checked = Vec::new();
    for path in &files {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let src = std::fs::read_to_string(path).unwrap();
        let t = Instant::now();
        match samples(&name) {
            Some((good, bad)) => check(&name, &src, &good, &bad),
            None => drop(compile(env(), &src)),
        }
        println!(
            "{name}: converted, compiled and checked in {:?}",
            t.elapsed()
        );
        checked.push(name);
    }
    for expected in [
        "arithmetic",
        "c",
        "chess",
        "english",
        "japanese",
        "json",
        "list",
    ] {
        assert!(
            checked.iter().any(|n| n == expected),
            "{expected}.gbnf is missing from {}",
            dir.display()
        );
    }
}

/// Grammars written here, each construct once, and the text they take.
#[test]
fn hand_written_grammars_match() {
    check(
        "dashes, comments, CRLF, use before definition",
        "# a comment\r\nroot ::= first-part \"-\" second-part # trailing\r\nfirst-part ::= [a-c]+\r\nsecond-part ::= (\"x\" |\r\n  \"yy\")\r\n",
        &["a-x", "abc-yy"],
        &["a-y", "-x", "d-x"],
    );
    check(
        "repetition counts",
        "root ::= \"a\"{2} \"b\"{1,} \"c\"{0,2} \"d\"?\n",
        &["aab", "aabbbcc", "aabcd"],
        &["ab", "aabccc", "aa"],
    );
    check(
        "escapes and negation",
        "root ::= \"\\x41\\u00e9\\U0001F600\\t\\\"\\\\\" [^\\n\\]x] [\\-\\[]\n",
        &["Aé😀\t\"\\y-", "Aé😀\t\"\\é["],
        &["Aé😀\t\"\\x-", "Aé😀\t\"\\]-", "Aé😀\t\"\\\n-"],
    );
    check(
        "any character, nested groups",
        "root ::= . ((\"a\" | [0-9])+ \".\")?\n",
        &["\n", "z", "!a1a.", "é0."],
        &["", "ab", "!a1a"],
    );
    check(
        "recursion",
        "root ::= paren\nparen ::= \"(\" paren* \")\"\n",
        &["()", "(()())", "((()))"],
        &["(()", ")(", ""],
    );
    // Greedy lexing must not change the language: a lexeme that could run into what follows
    // it stays apart.
    check(
        "lexeme boundaries",
        "root ::= (num \"\\n\" | [a-z] \"bc\" | \"ab\" \"d\" | \"aa\" \"x\" | \"a\" \"ab\") root?\nnum ::= [0-9]+ ws\nws ::= [ \\t\\n]*\n",
        &["12\n", "12 \n\n", "abc", "abd", "aax", "aab", "12\nabcaab3\n"],
        &["12", "ab", "aa"],
    );
    check(
        "empty alternative in a rule",
        "root ::= | \"a\" root \"b\"\n",
        &["", "ab", "aabb"],
        &["a", "abb", "ba"],
    );
    check(
        "empty alternatives",
        "root ::= \"<\" ws \">\"\nws ::= | \" \" | \"\\n\"\n",
        &["<>", "< >", "<\n>"],
        &["<  >"],
    );
}

/// A large vocabulary: JSON inside a string allows most tokens; the mask must stay fast.
#[test]
fn json_masks_on_a_large_vocabulary_are_fast() {
    let env = load_env("tokenizer/ggml-vocab-llama-bpe.gguf");
    let src = concat!(
        "root ::= object\nvalue ::= object | array | string | number | (\"true\" | \"false\" | \"null\") ws\n",
        "object ::= \"{\" ws ( string \":\" ws value (\",\" ws string \":\" ws value)* )? \"}\" ws\n",
        "array ::= \"[\" ws ( value (\",\" ws value)* )? \"]\" ws\n",
        "string ::= \"\\\"\" ( [^\"\\\\\\x7F\\x00-\\x1F] | \"\\\\\" ([\"\\\\bfnrt] | \"u\" [0-9a-fA-F]{4}) )* \"\\\"\" ws\n",
        "number ::= (\"-\"? ([0-9] | [1-9] [0-9]{0,15})) (\".\" [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws\n",
        "ws ::= | \" \" | \"\\n\" [ \\t]{0,20}\n",
    );
    let mut m = compile(&env, src);
    let text = r#"{"name": "a long string value with words"#;
    let t = Instant::now();
    for tok in env.tokenizer().encode(text, false, false).unwrap() {
        assert!(m.allowed().unwrap().is_allowed(tok));
        m.consume(tok).unwrap();
    }
    let mask = m.allowed().unwrap();
    println!("{} masks in {:?}", text.len(), t.elapsed());
    assert!(mask.num_set() > 100_000, "{}", mask.num_set());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

/// A plain completion under a grammar: the constraint ends the output once the grammar does.
#[test]
fn grammar_constraint_for_completions() {
    use frugal_constraint::Constraint;
    let env = env();
    let mut c = grammar_constraint(env, "root ::= \"yes\" | \"no\"\n", Some(10)).unwrap();
    let tokens = env.tokenizer().encode("yes", false, false).unwrap();
    for &t in &tokens {
        let mut logits = vec![0.0f32; env.vocab_size()];
        c.mask(&mut logits).unwrap();
        assert!(logits[t as usize].is_finite());
        c.accept(t).unwrap();
    }
    let mut logits = vec![0.0f32; env.vocab_size()];
    c.mask(&mut logits).unwrap();
    let allowed: Vec<usize> = (0..logits.len())
        .filter(|&i| logits[i].is_finite())
        .collect();
    assert!(
        allowed.iter().all(|&i| env.eog_ids().contains(&(i as u32))),
        "{allowed:?}"
    );
    let Err(e) = grammar_constraint(env, "root ::= missing\n", None) else {
        panic!("an undefined rule converted");
    };
    assert_eq!(e.param(), Some("grammar"));
}

/// `grammar` in a chat request: the answer must match it; errors name the field.
#[test]
fn chat_plan_with_a_grammar() {
    use frugal_constraint::Constraint;
    let env = env();
    let req = OutputRequest {
        template_source: "{{ messages }}",
        prompt: "user: hi\nassistant: ",
        tools: &[],
        tool_choice: None,
        parallel_tool_calls: true,
        response_format: None,
        grammar: Some("root ::= \"yes\" | \"no\"\n"),
        reasoning_effort: None,
        max_tokens: Some(20),
    };
    let plan = OutputPlan::new(env, &req).unwrap();
    assert!(plan.grammar.is_some());
    let mut c = plan.constraint(env).unwrap();
    for t in env.tokenizer().encode("no", false, false).unwrap() {
        let mut logits = vec![0.0f32; env.vocab_size()];
        c.mask(&mut logits).unwrap();
        assert!(logits[t as usize].is_finite());
        c.accept(t).unwrap();
    }
    let y = env.tokenizer().encode("y", false, false).unwrap()[0];
    let mut logits = vec![0.0f32; env.vocab_size()];
    c.mask(&mut logits).unwrap();
    assert!(!logits[y as usize].is_finite());

    let json_format = json!({"type": "json_object"});
    let text_format = json!({"type": "text"});
    let both = OutputRequest {
        response_format: Some(&json_format),
        ..req
    };
    let e = OutputPlan::new(env, &both).unwrap_err();
    assert_eq!(e.param(), Some("grammar"), "{e}");
    assert!(e.to_string().contains("response_format"), "{e}");
    let text = OutputRequest {
        response_format: Some(&text_format),
        ..req
    };
    assert!(OutputPlan::new(env, &text).is_ok());
    for (bad, says) in [
        ("root ::= <[5]>\n", "1:10: token reference `<[5]>`"),
        (
            "root ::= \"a\" b\n",
            "1:14: rule `b` is used but never defined",
        ),
    ] {
        let e = OutputPlan::new(
            env,
            &OutputRequest {
                grammar: Some(bad),
                ..req
            },
        )
        .unwrap_err();
        assert_eq!(e.param(), Some("grammar"), "{e}");
        assert!(e.to_string().contains(says), "{e}");
    }
}
