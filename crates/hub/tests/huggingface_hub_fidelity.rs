//! The cache is shared with the real `huggingface_hub` Python package, both ways: what it
//! downloaded, frugal finds offline with no request; what frugal downloaded, it finds with
//! `HF_HUB_OFFLINE=1`, and its cache scanner reports without warnings. Both against the fake Hub.
//!
//! The Python is `FRUGAL_HF_PYTHON`, else `.venv-test/bin/python` (scripts/test.sh installs the
//! pinned huggingface_hub there). Without it the test says so loudly and passes, except in CI
//! (`CI` or `FRUGAL_REQUIRE_HF_PYTHON` set), where it fails.

mod support;

use frugal_hub::{resolve, Options};
use std::path::{Path, PathBuf};
use std::process::Command;
use support::fake_hub::{Blob, FakeHub, Repo};
use support::{bytes, options, TempDir};

const COMMIT: &str = "3333333333333333333333333333333333333333";

fn python() -> Option<PathBuf> {
    let candidate = std::env::var_os("FRUGAL_HF_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv-test/bin/python")
        });
    let works = Command::new(&candidate)
        .args(["-c", "import huggingface_hub"])
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Some(candidate);
    }
    let required =
        std::env::var_os("CI").is_some() || std::env::var_os("FRUGAL_REQUIRE_HF_PYTHON").is_some();
    assert!(
        !required,
        "{} cannot import huggingface_hub: run scripts/test.sh, which installs it",
        candidate.display()
    );
    // Straight to stderr, past the test harness's capture: a skip must be seen.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!(
            "\n\n*** SKIPPED: the huggingface_hub fidelity checks: {} cannot import huggingface_hub \
             (scripts/test.sh installs it into .venv-test; or set FRUGAL_HF_PYTHON) ***\n\n",
            candidate.display()
        )
        .as_bytes(),
    );
    None
}

/// Runs `script` with huggingface_hub pointed at `hub` and `cache`; returns its stdout.
fn run_python(python: &Path, hub: &FakeHub, cache: &Path, offline: bool, script: &str) -> String {
    let out = Command::new(python)
        .args(["-c", script])
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_HUB_CACHE", cache)
        .env("HF_HUB_OFFLINE", if offline { "1" } else { "0" })
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .env_remove("HF_TOKEN")
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn repo() -> Repo {
    Repo::with_files(
        COMMIT,
        vec![
            ("README.md", Blob::memory(b"# m\n".to_vec(), false)),
            ("model-Q8_0.gguf", Blob::memory(bytes(200_000, 11), true)),
            (
                "Q2_K/model-Q2_K-00001-of-00002.gguf",
                Blob::memory(bytes(100_000, 12), true),
            ),
            (
                "Q2_K/model-Q2_K-00002-of-00002.gguf",
                Blob::memory(bytes(100_000, 13), true),
            ),
        ],
    )
}

#[test]
fn python_downloads_are_found_by_frugal_offline() {
    let Some(python) = python() else { return };
    let hub = FakeHub::start();
    hub.add_repo("org/model", repo());
    let dir = TempDir::new("py-to-frugal");
    let script = r#"
from huggingface_hub import hf_hub_download, snapshot_download
print(hf_hub_download("org/model", "model-Q8_0.gguf"))
print(snapshot_download("org/model", allow_patterns=["Q2_K/*"]))
"#;
    let printed = run_python(&python, &hub, dir.path(), false, script);
    let python_file = PathBuf::from(printed.lines().next().unwrap());
    let mut opts: Options = options(&hub.url, dir.path());
    opts.hub.offline = true;
    let before = hub.requests();
    let quiet = |_: frugal_hub::Progress<'_>| {};
    assert_eq!(
        resolve("org/model:Q8_0", &opts, &quiet).unwrap(),
        python_file
    );
    let split = resolve("org/model:Q2_K", &opts, &quiet).unwrap();
    assert_eq!(std::fs::read(split).unwrap(), bytes(100_000, 12));
    assert_eq!(hub.requests(), before, "frugal offline made requests");
    // And online, the cached files are not fetched again.
    opts.hub.offline = false;
    let served = hub.bytes_served();
    resolve("org/model:Q8_0", &opts, &quiet).unwrap();
    assert_eq!(hub.bytes_served(), served);
}

#[test]
fn frugal_downloads_are_found_by_python_offline() {
    let Some(python) = python() else { return };
    let hub = FakeHub::start();
    hub.add_repo("org/model", repo());
    let dir = TempDir::new("frugal-to-py");
    let opts = options(&hub.url, dir.path());
    let quiet = |_: frugal_hub::Progress<'_>| {};
    let file = resolve("org/model:Q8_0", &opts, &quiet).unwrap();
    let split = resolve("org/model:Q2_K", &opts, &quiet).unwrap();
    let before = hub.requests();
    let script = r#"
import json
from huggingface_hub import hf_hub_download, scan_cache_dir
a = hf_hub_download("org/model", "model-Q8_0.gguf", local_files_only=True)
b = hf_hub_download("org/model", "Q2_K/model-Q2_K-00001-of-00002.gguf", local_files_only=True)
info = scan_cache_dir()
repos = [{"id": r.repo_id, "size": r.size_on_disk, "files": r.nb_files,
          "refs": sorted(ref for rev in r.revisions for ref in rev.refs)} for r in info.repos]
print(json.dumps({"a": a, "b": b, "repos": repos, "warnings": [str(w) for w in info.warnings]}))
"#;
    let printed = run_python(&python, &hub, dir.path(), true, script);
    let v: serde_json::Value = serde_json::from_str(printed.trim()).unwrap();
    assert_eq!(v["a"].as_str().unwrap(), file.to_str().unwrap());
    assert_eq!(v["b"].as_str().unwrap(), split.to_str().unwrap());
    assert_eq!(v["warnings"], serde_json::json!([]));
    assert_eq!(
        v["repos"],
        serde_json::json!([{"id": "org/model", "size": 400_000, "files": 3, "refs": ["main"]}])
    );
    assert_eq!(hub.requests(), before, "python offline made requests");
}
