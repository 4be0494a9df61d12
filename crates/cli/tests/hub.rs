//! `frugal pull`, `info`, `list` and `rm` on Hugging Face Hub references, against the hub crate's
//! fake Hub serving a fixture model; the cache in a temporary folder.

#[path = "../../hub/tests/support/fake_hub.rs"]
mod fake_hub;

use fake_hub::{Blob, FakeHub, Repo};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn frugal(hub: &FakeHub, cache: &Path, offline: bool, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_frugal"))
        .args(args)
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_HUB_CACHE", cache)
        .env("HF_HUB_OFFLINE", if offline { "1" } else { "0" })
        .env_remove("HF_TOKEN")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `tokenize` then `detokenize` on a cached Hub reference, offline.
fn tokenize_round_trip_offline(hub: &FakeHub, cache: &Path, reference: &str) {
    let r = frugal(
        hub,
        cache,
        true,
        &["tokenize", reference, "--text", "hello"],
    );
    assert!(r.status.success(), "{}", text(&r.stderr));
    let ids = text(&r.stdout).trim().trim_matches(['[', ']']).to_string();
    let r = frugal(hub, cache, true, &["detokenize", reference, "--ids", &ids]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    assert_eq!(text(&r.stdout).trim_end(), "hello");
}

#[test]
fn pull_info_list_rm() {
    let fixture = frugal_fixtures::dir().join("models/qwen2-Q8_0.gguf");
    let hub = FakeHub::start();
    let commit = "c".repeat(40);
    let blob = Blob::disk(fixture.clone()).unwrap();
    hub.add_repo(
        "test/qwen2",
        Repo::with_files(&commit, vec![("qwen2-Q8_0.gguf", blob)]),
    );
    let cache = std::env::temp_dir().join(format!("frugal-cli-hub-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);

    let r = frugal(&hub, &cache, false, &["pull", "test/qwen2:Q8_0"]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    let path = PathBuf::from(text(&r.stdout).trim());
    assert_eq!(
        path,
        cache
            .join("models--test--qwen2/snapshots")
            .join(&commit)
            .join("qwen2-Q8_0.gguf")
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(&fixture).unwrap()
    );

    let served = hub.requests();
    let r = frugal(&hub, &cache, true, &["info", "test/qwen2:q8_0", "--json"]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    let info: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(info["architecture"], "qwen2");
    assert_eq!(hub.requests(), served, "offline info made requests");
    tokenize_round_trip_offline(&hub, &cache, "test/qwen2:Q8_0");

    let r = frugal(&hub, &cache, false, &["list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(list[0]["repo"], "test/qwen2");
    assert_eq!(list[0]["quant"], "Q8_0");
    assert_eq!(list[0]["revisions"], serde_json::json!(["main"]));
    let r = frugal(&hub, &cache, false, &["list"]);
    assert!(
        text(&r.stdout).contains("test/qwen2  main"),
        "{}",
        text(&r.stdout)
    );

    for (args, needle) in [
        (vec!["pull", "test/qwen2:Q4_0"], "qwen2-Q8_0.gguf"),
        (vec!["pull", "test/missing"], "not found"),
        (vec!["info", "test/qwen2:Q4_0"], "Q4_0"),
    ] {
        let r = frugal(&hub, &cache, false, &args);
        let err = text(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{args:?}");
        assert!(
            err.starts_with("error:") && err.contains(needle),
            "{args:?}: {err}"
        );
    }

    let r = frugal(&hub, &cache, false, &["rm", "test/qwen2:Q8_0"]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    assert!(
        text(&r.stdout).contains("no longer in the cache"),
        "{}",
        text(&r.stdout)
    );
    let r = frugal(&hub, &cache, true, &["pull", "test/qwen2:Q8_0"]);
    assert!(
        text(&r.stderr).contains("HF_HUB_OFFLINE"),
        "{}",
        text(&r.stderr)
    );
    let _ = std::fs::remove_dir_all(&cache);
}
