//! `frugal perplexity` against llama.cpp's `llama-perplexity` on the same text and settings.
//! The reference figures (and the commands that printed them) are in
//! `tests/data/perplexity-llama-cpp.json`, made by `tests/data/perplexity-llama-cpp.py`.

use std::path::PathBuf;
use std::process::{Command, Output};

fn model(name: &str) -> String {
    frugal_fixtures::dir()
        .join("models")
        .join(format!("{name}.gguf"))
        .display()
        .to_string()
}

fn data(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
        .display()
        .to_string()
}

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(data("perplexity-llama-cpp.json")).unwrap())
        .unwrap()
}

fn frugal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_frugal"))
        .arg("perplexity")
        .args(args)
        .output()
        .unwrap()
}

/// stdout of a run that must succeed.
fn ok(args: &[&str]) -> String {
    let r = frugal(args);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "frugal perplexity {args:?}: {err}");
    String::from_utf8(r.stdout).unwrap()
}

/// The settings of every reference run.
fn ppl_args<'a>(model: &'a str, text: &'a str, batch: &'a str) -> Vec<&'a str> {
    vec![
        model, "-f", text, "-c", "128", "-b", batch, "-t", "2", "--chunks", "4",
    ]
}

/// The running perplexities `[1]a,[2]b,...` and the final estimate with its uncertainty.
fn parse_ppl(out: &str) -> (Vec<f64>, f64, f64) {
    let chunks = out
        .lines()
        .find(|l| l.starts_with("[1]"))
        .unwrap_or_else(|| panic!("no per-chunk line in\n{out}"))
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.split(']').nth(1).unwrap().parse().unwrap())
        .collect();
    let fin = out
        .lines()
        .find_map(|l| l.strip_prefix("Final estimate: PPL = "))
        .unwrap_or_else(|| panic!("no final estimate in\n{out}"));
    let (ppl, err) = fin.split_once(" +/- ").unwrap();
    (chunks, ppl.parse().unwrap(), err.parse().unwrap())
}

fn rel(a: f64, b: f64) -> f64 {
    ((a - b) / b).abs()
}

#[test]
fn perplexity_matches_llama_cpp() {
    let reference = reference();
    let text = data("perplexity.txt");
    // llama.cpp keeps keys and values in f16, frugal in f32: on these random-weight models
    // (PPL near 45000, so large logits) that moves the f32 figures by about 1e-4 of themselves;
    // Q8_0 adds the two programs' own activation rounding on top.
    for (name, tol) in [
        ("qwen2-f32", 5e-4),
        ("llama-f32", 5e-4),
        ("qwen2-Q8_0", 5e-3),
    ] {
        let want = &reference["perplexity"][name];
        let (chunks, ppl, err) = parse_ppl(&ok(&ppl_args(&model(name), &text, "128")));
        let want_chunks: Vec<f64> = want["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(chunks.len(), want_chunks.len(), "{name}");
        for (c, (got, exp)) in chunks.iter().zip(&want_chunks).enumerate() {
            assert!(
                rel(*got, *exp) < tol,
                "{name} chunk {}: {got} vs {exp}",
                c + 1
            );
        }
        let want_ppl = want["ppl"].as_f64().unwrap();
        let want_err = want["uncertainty"].as_f64().unwrap();
        assert!(rel(ppl, want_ppl) < tol, "{name}: PPL {ppl} vs {want_ppl}");
        assert!(rel(err, want_err) < tol, "{name}: ± {err} vs {want_err}");
    }
}

#[test]
fn batch_size_does_not_change_the_figures() {
    let text = data("perplexity.txt");
    let m = model("qwen2-f32");
    let (_, one, _) = parse_ppl(&ok(&ppl_args(&m, &text, "128")));
    // 48: several passes per chunk, one of them cut at the first scored position; 512: four
    // chunks side by side in one pass.
    for batch in ["48", "512"] {
        let (_, ppl, _) = parse_ppl(&ok(&ppl_args(&m, &text, batch)));
        assert!(rel(ppl, one) < 1e-6, "-b {batch}: {ppl} vs {one}");
    }
}

/// A `label: value` figure of the KL summary (the value before any `±` or `%`).
fn figure(out: &str, label: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} in\n{out}"));
    let value = line[label.len()..].trim_start_matches([' ', ':']);
    value
        .split([' ', '%'])
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("{line}: {e}"))
}

fn temp(name: &str) -> String {
    std::env::temp_dir()
        .join(format!("frugal-ppl-{}-{name}", std::process::id()))
        .display()
        .to_string()
}

#[test]
fn kl_divergence_matches_llama_cpp() {
    let text = data("perplexity.txt");
    let base = temp("base.kl");
    let f32_model = model("qwen2-f32");
    let mut args = ppl_args(&f32_model, &text, "128");
    args.extend(["--kl-divergence-base", &base]);
    ok(&args);
    let q8 = model("qwen2-Q8_0");
    let out = ok(&[
        &q8,
        "-t",
        "2",
        "--kl-divergence-base",
        &base,
        "--kl-divergence",
    ]);
    let want = &reference()["kl_divergence"]["qwen2-f32 -> qwen2-Q8_0"];
    let kld = figure(&out, "Mean    KLD");
    let same_top = figure(&out, "Same top p");
    let ratio = figure(&out, "Mean PPL(Q)/PPL(base)");
    assert!(kld > 0.0 && figure(&out, "Median  KLD") >= 0.0, "{out}");
    assert!((0.0..=100.0).contains(&same_top), "{out}");
    // The divergence of Q8_0 from f32 is about 2e-3 nats here; each program's own rounding
    // (llama.cpp's f16 cache, ~1e-4 of the logits) adds divergence of order 1e-4 to both runs,
    // so the means agree within 10 %. Same top p: 2 points is 5 of 252 tokens. RMS Δp is carried
    // by a handful of tokens the model gives real probability, so only its scale is checked.
    let near = |got: f64, key: &str, tol: f64| {
        let exp = want[key].as_f64().unwrap();
        assert!(
            (got - exp).abs() <= tol,
            "{key}: {got} vs llama.cpp {exp}\n{out}"
        );
    };
    near(kld, "mean_kld", 0.1 * want["mean_kld"].as_f64().unwrap());
    near(
        figure(&out, "Median  KLD"),
        "median_kld",
        0.1 * want["median_kld"].as_f64().unwrap(),
    );
    near(same_top, "same_top_p_percent", 2.0);
    near(ratio, "mean_ppl_ratio", 5e-3);
    near(
        figure(&out, "Mean PPL(Q)  "),
        "mean_ppl_q",
        5e-3 * want["mean_ppl_q"].as_f64().unwrap(),
    );
    near(figure(&out, "RMS Δp"), "rms_dp_percent", 0.05);

    // A model against its own base: nothing but the 16-bit rounding of the saved log-probs.
    let out = ok(&[
        &f32_model,
        "-f",
        &text,
        "--kl-divergence-base",
        &base,
        "--kl-divergence",
    ]);
    assert!(figure(&out, "Mean    KLD").abs() < 1e-4, "{out}");
    assert_eq!(figure(&out, "Same top p"), 100.0, "{out}");
    std::fs::remove_file(&base).unwrap();
}

/// stderr of a run that must fail with one `error:` line.
fn fails(args: &[&str]) -> String {
    let r = frugal(args);
    let err = String::from_utf8_lossy(&r.stderr).into_owned();
    assert_eq!(r.status.code(), Some(1), "{args:?}: {err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && !err.contains("panicked"),
        "{err}"
    );
    err
}

#[test]
fn refuses_what_it_cannot_evaluate() {
    let text = data("perplexity.txt");
    let m = model("qwen2-Q8_0");
    // 3242 tokens; a context of 2048 needs 4096. Past the trained 4096, a warning first.
    let err = fails(&[&m, "-f", &text, "-c", "2048"]);
    assert!(err.contains("you need at least 4096 tokens"), "{err}");
    assert!(err.contains("only 3242 tokens"), "{err}");
    let err = fails(&[&m, "-f", &text, "-c", "8192"]);
    assert!(err.contains("longer than the 4096"), "{err}");
    let err = fails(&[&m, "-f", "/nonexistent/text.txt"]);
    assert!(err.contains("cannot read /nonexistent/text.txt"), "{err}");
    let err = fails(&[&m]);
    assert!(err.contains("-f FILE"), "{err}");
    let err = fails(&[
        &m,
        "--kl-divergence-base",
        "/nonexistent/base",
        "--kl-divergence",
    ]);
    assert!(err.contains("cannot open /nonexistent/base"), "{err}");
    let not_kl = data("perplexity.txt");
    let err = fails(&[&m, "--kl-divergence-base", &not_kl, "--kl-divergence"]);
    assert!(err.contains("not a usable KL base file"), "{err}");

    // A base from another tokenizer, another text, another context.
    let base = temp("refuse.kl");
    let mut args = ppl_args(&m, &text, "128");
    args.extend(["--kl-divergence-base", &base]);
    ok(&args);
    let llama = model("llama-Q8_0");
    let err = fails(&[&llama, "--kl-divergence-base", &base, "--kl-divergence"]);
    assert!(err.contains("another tokenizer"), "{err}");
    let other = temp("other.txt");
    std::fs::write(
        &other,
        std::fs::read_to_string(&text)
            .unwrap()
            .replace("keeper", "warden"),
    )
    .unwrap();
    let err = fails(&[
        &m,
        "-f",
        &other,
        "--kl-divergence-base",
        &base,
        "--kl-divergence",
    ]);
    assert!(err.contains("does not tokenize to the text"), "{err}");
    let err = fails(&[
        &m,
        "-c",
        "64",
        "--kl-divergence-base",
        &base,
        "--kl-divergence",
    ]);
    assert!(
        err.contains("--ctx-size 64 differs from the KL base file's 128"),
        "{err}"
    );
    std::fs::remove_file(&base).unwrap();
    std::fs::remove_file(&other).unwrap();
}
