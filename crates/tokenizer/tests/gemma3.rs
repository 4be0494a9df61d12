//! The real Gemma-3-270M vocabulary (SentencePiece, 262k pieces) against llama.cpp's token ids
//! (`tests/data/gemma3-270m.tokens.json`, made by `scripts/gen_gemma3_token_vectors.py`):
//! llama.cpp's tokenizer test texts (English, code, CJK, emoji, whitespace runs) and chat-shaped
//! prompts with Gemma's control tokens; and its end-of-generation ids.
//!
//! The model comes from `scripts/fetch_model.py gemma3-270m` (a cache outside the repository, as
//! for the CLI's real-model tests); `FRUGAL_SKIP_REAL_MODELS=1` skips the test when it cannot be
//! fetched.

use frugal_formats::GgufFile;
use frugal_tokenizer::Tokenizer;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The cached GGUF, fetched if need be; `None` when skipping is allowed and it cannot be had.
fn model() -> Option<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch_model.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg("gemma3-270m")
        .output();
    let skip = std::env::var("FRUGAL_SKIP_REAL_MODELS").is_ok_and(|v| v == "1");
    match out {
        Ok(o) if o.status.success() => Some(PathBuf::from(
            String::from_utf8_lossy(&o.stdout).trim().to_string(),
        )),
        _ if skip => {
            eprintln!("gemma3-270m not available: skipped (FRUGAL_SKIP_REAL_MODELS=1)");
            None
        }
        Ok(o) => panic!(
            "scripts/fetch_model.py gemma3-270m failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("cannot run python3: {e}"),
    }
}

#[test]
fn gemma3_matches_llama_cpp() {
    let Some(path) = model() else { return };
    let gguf = GgufFile::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gemma3-270m.tokens.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(data).unwrap()).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let want: Vec<u32> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let add = c["add_special"].as_bool().unwrap();
        let special = c["parse_special"].as_bool().unwrap();
        let got = tok.encode(text, add, special).unwrap();
        if got != want {
            failures.push(format!("{text:?}: got {got:?}, want {want:?}"));
        }
        if !special {
            // Detokenizing gives the text back (SentencePiece keeps every byte).
            assert_eq!(tok.decode(&got, false), text, "round trip of {text:?}");
        }
    }
    eprintln!("{}/{} match", cases.len() - failures.len(), cases.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // llama.cpp's end-of-generation ids for this file (its load log, `print_info: EOG token`):
    // <eos>, <end_of_turn>, and `</s>`, a control-looking piece it makes a control token.
    assert_eq!(tok.token_id("<end_of_turn>"), Some(106));
    let mut eog = tok.eog_ids().to_vec();
    eog.sort_unstable();
    assert_eq!(eog, [1, 106, 212]);
}
