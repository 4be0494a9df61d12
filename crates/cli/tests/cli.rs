//! End-to-end checks of the `frugal` binary on the fixture models.

use frugal_fixtures::{dir as fixtures, ids};
use std::process::{Command, Stdio};

fn model(name: &str) -> String {
    fixtures().join("models").join(name).display().to_string()
}

fn frugal(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_frugal"))
        .args(args)
        .output()
        .unwrap()
}

fn expected(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected").join(name)).unwrap())
        .unwrap()
}

fn join(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

fn read_f32(p: &std::path::Path) -> Vec<f32> {
    std::fs::read(p)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
fn logits_command_matches_llama_cpp() {
    let e = expected("qwen2-f32.json");
    let tokens = join(&ids(&e["token_ids"]));
    let m = model("qwen2-f32.gguf");
    for (flag, reference) in [
        (None, "qwen2-f32.batched.f32"),
        (Some("--step"), "qwen2-f32.step.f32"),
    ] {
        let out = std::env::temp_dir().join(format!(
            "frugal-logits-{}-{}.f32",
            std::process::id(),
            flag.is_some()
        ));
        let o = out.display().to_string();
        let mut args = vec![
            "logits", &m as &str, "--tokens", &tokens, "--out", &o, "-t", "2",
        ];
        args.extend(flag);
        let r = frugal(&args);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let ours = read_f32(&out);
        let theirs = read_f32(&fixtures().join("expected").join(reference));
        assert_eq!(ours.len(), 52 * 576);
        let max = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(max <= 1e-3, "{reference}: max |Δ| {max}");
        std::fs::remove_file(out).ok();
    }
}

#[test]
fn greedy_run_equals_llama_cpp_continuation() {
    for name in ["qwen2-f32", "llama-f32", "qwen3-f32"] {
        let e = expected(&format!("{name}.json"));
        let prompt = ids(&e["token_ids"]);
        let greedy = ids(&e["greedy"]["tokens"]);
        let m = model(&format!("{name}.gguf"));
        let want = frugal(&["detokenize", &m, "--ids", &join(&greedy)]);
        let want = String::from_utf8(want.stdout).unwrap();
        let want = want.strip_suffix('\n').unwrap();
        let prefix = frugal(&["detokenize", &m, "--ids", &join(&prompt)]);
        let prefix = String::from_utf8(prefix.stdout).unwrap();
        let r = frugal(&[
            "run",
            &m,
            "--prompt-tokens",
            &join(&prompt),
            "--temp",
            "0",
            "-n",
            "16",
        ]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let out = String::from_utf8(r.stdout).unwrap();
        let generated = out
            .strip_prefix(prefix.strip_suffix('\n').unwrap())
            .unwrap();
        assert_eq!(generated.strip_suffix('\n').unwrap(), want, "{name}");
        let stats = String::from_utf8_lossy(&r.stderr);
        assert!(stats.contains("generation: 16 tokens"), "{stats}");
    }
}

#[test]
fn chat_keeps_the_cache_between_turns() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_frugal"))
        .args([
            "run",
            &model("qwen2-Q8_0.gguf"),
            "--chat",
            "--system",
            "Be brief.",
            "-n",
            "8",
            "--seed",
            "3",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"Hello there\nAnd again\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("no chat template; using ChatML"), "{err}");
    let turns: Vec<&str> = err.lines().filter(|l| l.starts_with("prompt:")).collect();
    assert_eq!(turns.len(), 2, "{err}");
    assert!(turns[0].contains("(0 cached)"), "{err}");
    assert!(
        !turns[1].contains("(0 cached)"),
        "second turn must reuse the cache: {err}"
    );
}

/// `frugal run --spec ngram|draft` prints what it would print without, and how many guesses
/// stood; flags that cannot work are refused in one line.
#[test]
fn run_speculates_without_changing_the_text() {
    let m = model("qwen2-f32.gguf");
    let draft = model("qwen2-Q4_0.gguf");
    let prompt = "one two three one two three one two three one two";
    let base = ["run", &m as &str, "-p", prompt, "--temp", "0", "-n", "32"];
    let plain = frugal(&base);
    assert!(
        plain.status.success(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    for extra in [
        vec!["--spec", "ngram", "--spec-fixed"],
        vec!["--draft-model", &draft as &str, "--draft-p-min", "0"],
    ] {
        let r = frugal(&[&base[..], &extra[..]].concat());
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(r.status.success(), "{extra:?}: {err}");
        assert_eq!(r.stdout, plain.stdout, "{extra:?}");
        assert!(err.contains("guessed tokens accepted"), "{extra:?}: {err}");
    }
    // GLM-4.5's MTP head (the labs fixture).
    let glm = frugal_fixtures::labs_dir().join("models/glm4moe-Q4_K_M.gguf");
    let glm = glm.display().to_string();
    let base_glm = ["run", &glm as &str, "-p", prompt, "--temp", "0", "-n", "24"];
    let plain = frugal(&base_glm);
    assert!(plain.status.success());
    let extra = ["--spec", "mtp", "--spec-fixed", "--draft-p-min", "0"];
    let r = frugal(&[&base_glm[..], &extra[..]].concat());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert_eq!(r.stdout, plain.stdout, "--spec mtp");
    assert!(err.contains("guessed tokens accepted"), "{err}");
    for (extra, needle) in [
        (vec!["--spec", "draft"], "--draft-model"),
        (vec!["--spec", "mtp"], "multi-token-prediction"),
        (vec!["--spec", "ngram", "--spec-max", "0"], "--spec-max"),
    ] {
        let r = frugal(&[&base[..], &extra[..]].concat());
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{extra:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(needle),
            "{extra:?}: {err}"
        );
    }
}

#[test]
fn tokenize_and_detokenize() {
    let vocab = fixtures()
        .join("tokenizer/ggml-vocab-qwen2.gguf")
        .display()
        .to_string();
    let r = frugal(&["tokenize", &vocab, "--text", "Hello 世界"]);
    assert!(r.status.success());
    let ids: Vec<u32> = serde_json::from_slice(&r.stdout).unwrap();
    let r = frugal(&["detokenize", &vocab, "--ids", &join(&ids)]);
    assert_eq!(String::from_utf8(r.stdout).unwrap(), "Hello 世界\n");
}

#[test]
fn info_describes_the_model() {
    let r = frugal(&["info", &model("qwen3-Q4_K_M.gguf"), "--json"]);
    assert!(r.status.success());
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["architecture"], "qwen3");
    assert_eq!(v["tensor_types"]["Q4_K"], 13);
    assert_eq!(v["head_dim"], 128);
    // 2 layers x K and V of 2 KV heads of 128, as f16 (the default) and the other types.
    assert_eq!(v["kv_type"], "f16");
    assert_eq!(v["kv_bytes_per_token"], 2 * 2 * (2 * 128) * 2);
    assert_eq!(
        v["kv_bytes_per_token_by_type"]["f32"],
        2 * 2 * (2 * 128) * 4
    );
    assert_eq!(
        v["kv_bytes_per_token_by_type"]["bf16"],
        2 * 2 * (2 * 128) * 2
    );
    let r = frugal(&["info", &model("qwen3-Q4_K_M.gguf"), "--kv-type", "f32"]);
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(
        text.contains("KV cache:        4096 bytes per token as f32 (f16: 2048, bf16: 2048"),
        "{text}"
    );
    let eog = v["eog_token_ids"].as_array().unwrap();
    assert!(!eog.is_empty() && eog.contains(&v["eos_token_id"]), "{v}");
    // A file without a chat template: info names the built-in one chats will use.
    let r = frugal(&["info", &model("qwen2-Q8_0.gguf")]);
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(
        text.contains("chat template:   no (chats use the built-in ChatML)"),
        "{text}"
    );
}

#[test]
fn info_shows_what_a_sliding_window_saves() {
    let m = frugal_fixtures::labs_dir().join("models/gemma3-Q4_K_M.gguf");
    let m = m.display().to_string();
    let r = frugal(&["info", &m, "--json"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["sliding_window"], 16);
    let per_seq = v["kv_bytes_per_sequence"].as_array().unwrap();
    let at_32k = per_seq.iter().find(|m| m["context"] == 32768).unwrap();
    let (window, full) = (
        at_32k["with_window"].as_u64().unwrap(),
        at_32k["full_attention"].as_u64().unwrap(),
    );
    // One global layer in six keeps the whole context; the five sliding ones 16 positions.
    assert_eq!(full, 32768 * v["kv_bytes_per_token"].as_u64().unwrap());
    assert!(window * 4 <= full, "{window} of {full}");
    let r = frugal(&["info", &m]);
    let text = String::from_utf8(r.stdout).unwrap();
    assert!(
        text.contains("KV per sequence:") && text.contains("at 32768 tokens"),
        "{text}"
    );
}

#[test]
fn bad_input_is_one_line_and_exit_1() {
    let tmp = std::env::temp_dir().join(format!("frugal-bad-{}.gguf", std::process::id()));
    let bytes = std::fs::read(model("qwen2-Q4_0.gguf")).unwrap();
    for (len, what) in [
        (3usize, "not a GGUF"),
        (bytes.len() / 2, "outside the file"),
    ] {
        std::fs::write(&tmp, &bytes[..len]).unwrap();
        let t = tmp.display().to_string();
        let r = frugal(&["logits", &t, "--tokens", "1", "--out", "/dev/null"]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{err}");
        assert!(
            err.starts_with("error: ") && err.contains(what) && err.lines().count() == 1,
            "{err}"
        );
    }
    std::fs::remove_file(&tmp).ok();
    let m = model("qwen2-Q4_0.gguf");
    for args in [
        vec![
            "logits",
            &m as &str,
            "--tokens",
            "999999",
            "--out",
            "/dev/null",
        ],
        vec!["run", &m, "-p", "hi", "--temp=-1"],
        vec!["run", &m, "-p", "hello hello hello", "-c", "2"],
        vec!["bench", &m, "-p", "100000"],
    ] {
        let r = frugal(&args);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
}

/// `--cpu-mask` pins the process, and the default thread count follows the CPUs it may use (as it
/// follows a cgroup CPU limit: both go through the standard library's available parallelism).
#[test]
fn cpu_mask_pins_and_sets_the_default_threads() {
    let m = model("qwen2-Q4_0.gguf");
    let r = frugal(&[
        "bench",
        &m,
        "--cpu-mask",
        "0x1",
        "-p",
        "8",
        "-n",
        "2",
        "-r",
        "1",
        "--json",
    ]);
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    for line in out.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["threads"], 1, "{line}");
    }
    for mask in ["0x0", "zz"] {
        let r = frugal(&["bench", &m, "--cpu-mask", mask, "-p", "8", "-n", "2"]);
        assert_eq!(r.status.code(), Some(2), "--cpu-mask {mask}");
    }
}

/// `bench -d N` runs its tests after N tokens of context, with each KV type, and names them as
/// llama-bench does.
#[test]
fn bench_runs_after_a_given_depth() {
    let m = model("qwen2-Q4_0.gguf");
    for ty in ["f32", "f16", "bf16"] {
        let args = ["bench", &m, "-p", "8", "-n", "2", "-d", "40", "-r", "1"];
        let r = frugal(&[&args[..], &["--kv-type", ty, "--json"]].concat());
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let tests: Vec<String> = String::from_utf8_lossy(&r.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["test"].to_string())
            .collect();
        assert_eq!(tests, ["\"pp8 @ d40\"", "\"tg2 @ d40\""], "{ty}");
    }
}

/// `--mlock` locks the weights, or says plainly that the locked-memory limit is too low (a
/// process with CAP_IPC_LOCK, such as root, is not held to that limit).
#[test]
fn mlock_locks_the_weights_or_names_the_limit() {
    let m = model("qwen2-Q4_0.gguf");
    let bench = format!(
        "exec '{}' bench '{m}' --mlock -p 8 -n 2 -r 1",
        env!("CARGO_BIN_EXE_frugal")
    );
    for limit in ["", "ulimit -l 0 && "] {
        let r = Command::new("sh")
            .args(["-c", &format!("{limit}{bench}")])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(
            r.status.success() || (r.status.code() == Some(1) && err.contains("ulimit -l")),
            "{limit}: {err}"
        );
    }
}

/// A safetensors checkpoint folder is a model argument like a GGUF file: `logits` (dequantized:
/// the F32 GGUF's bits; `--quantize q8_0`: llama.cpp's Q8_0 model), `run`, and `info`, which
/// says what it was read from.
#[test]
fn checkpoint_folders_are_models() {
    let e = expected("deepseek2-f32.json");
    let tokens = join(&ids(&e["token_ids"]));
    let ckpt = fixtures().join("hf/deepseek2").display().to_string();
    let out = |tag: &str| {
        std::env::temp_dir().join(format!("frugal-ckpt-{}-{tag}.f32", std::process::id()))
    };
    let logits = |m: &str, extra: &[&str], tag: &str| {
        let o = out(tag).display().to_string();
        let mut args = vec!["logits", m, "--tokens", &tokens, "--out", &o, "-t", "2"];
        args.extend(extra);
        let r = frugal(&args);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let v = read_f32(&out(tag));
        std::fs::remove_file(out(tag)).ok();
        v
    };
    let ours = logits(&ckpt, &["--dequantize"], "ckpt");
    let gguf = logits(&model("deepseek2-f32.gguf"), &["--dequantize"], "gguf");
    assert!(ours
        .iter()
        .zip(&gguf)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    let q8 = logits(&ckpt, &["--quantize", "q8_0"], "q8");
    let q8_gguf = logits(&model("deepseek2-Q8_0.gguf"), &[], "q8gguf");
    assert!(q8
        .iter()
        .zip(&q8_gguf)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    let r = frugal(&[
        "run", &ckpt, "-p", "Hello", "-n", "4", "--temp", "0", "-t", "2",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let r = frugal(&["info", &ckpt]);
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(
        text.contains("safetensors checkpoint") && text.contains("tokenizer.json"),
        "{text}"
    );
    let r = frugal(&[
        "logits",
        &ckpt,
        "--quantize",
        "q9_9",
        "--tokens",
        "1",
        "--out",
        "/dev/null",
    ]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        !r.status.success() && err.contains("unknown type 'q9_9'"),
        "{err}"
    );
    let r = frugal(&[
        "logits",
        &model("qwen2-f32.gguf"),
        "--quantize",
        "q8_0",
        "--tokens",
        "1",
        "--out",
        "/dev/null",
    ]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        !r.status.success() && err.contains("applies to safetensors checkpoint"),
        "{err}"
    );
}
