//! The prefix cache's disk tier through the server (`--cache-dir`): prompts served before a
//! restart are read back from disk (usage and `/metrics` say so) and answered exactly as a
//! server without the tier answers them; damaged files are never used; requests that opt out
//! write nothing; a full disk fails no request.

mod common;

use common::{start, usage_ok, Running};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("frugal-disk-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Prompts of a few hundred tokens sharing a long prefix, greedy, with log-probabilities.
fn requests() -> Vec<Value> {
    let prefix: Vec<u32> = (0..200u32).map(|i| 3 + (i * 37) % 500).collect();
    (0..3u32)
        .map(|k| {
            let mut p = prefix.clone();
            p.extend((0..20 + k * 7).map(|i| 11 + (i * 13 + k) % 400));
            json!({"prompt": p, "max_tokens": 12, "temperature": 0, "logprobs": 2})
        })
        .collect()
}

/// The answers, one request after another (so the later ones can hit what the first wrote),
/// and the usage of each.
async fn answers(s: &Running, reqs: &[Value]) -> (Vec<Value>, Vec<Value>) {
    let (mut out, mut usage) = (Vec::new(), Vec::new());
    for r in reqs {
        let (status, body) = s.post("/v1/completions", r.clone()).await;
        assert!(status.is_success(), "{body}");
        usage_ok(&body["usage"]);
        out.push(body["choices"].clone());
        usage.push(body["usage"].clone());
    }
    (out, usage)
}

async fn with_cache(dir: &Path) -> Running {
    let dir = dir.to_path_buf();
    start(move |c| {
        c.ctx_size = Some(512);
        c.cache_dir = Some(dir);
    })
    .await
}

async fn expected() -> Vec<Value> {
    let plain = start(|c| c.ctx_size = Some(512)).await;
    let (want, _) = answers(&plain, &requests()).await;
    plain.shutdown().await;
    want
}

fn block_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for model in std::fs::read_dir(dir).unwrap().flatten() {
        for sub in std::fs::read_dir(model.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if sub.path().is_dir() {
                out.extend(
                    std::fs::read_dir(sub.path())
                        .unwrap()
                        .flatten()
                        .map(|f| f.path()),
                );
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_reads_prefixes_back_from_disk_and_answers_the_same() {
    let want = expected().await;
    let dir = temp_dir("restart");
    let first = with_cache(&dir).await;
    assert_eq!(answers(&first, &requests()).await.0, want);
    first.shutdown().await;
    assert!(!block_files(&dir).is_empty(), "blocks were written");

    let second = with_cache(&dir).await;
    let (got, usage) = answers(&second, &requests()).await;
    assert_eq!(got, want);
    let cached: Vec<u64> = usage
        .iter()
        .map(|u| u["prompt_cache_hit_tokens"].as_u64().unwrap())
        .collect();
    // The first prompt's 13 full blocks (208 tokens) come from disk; the others share its
    // prefix (12 blocks) from RAM by then, and their own tails from disk.
    assert_eq!(cached[0], 208, "{usage:?}");
    assert!(cached.iter().all(|&c| c >= 192), "{cached:?}");
    let disk = second
        .metric("frugal_prefix_cache_disk_hit_tokens_total")
        .await;
    let all = second.metric("frugal_prefix_cache_hit_tokens_total").await;
    assert!(disk >= 208.0 && disk <= all, "{disk} of {all}");
    assert!(second.metric("frugal_disk_cache_blocks_read_total").await >= 13.0);
    second.shutdown().await;

    // Damage every block file: each is refused and removed, and the answers stay the same.
    for (i, f) in block_files(&dir).iter().enumerate() {
        let mut bytes = std::fs::read(f).unwrap();
        match i % 3 {
            0 => bytes[200] ^= 1,
            1 => bytes.truncate(bytes.len() / 2),
            _ => bytes.clear(),
        }
        std::fs::write(f, bytes).unwrap();
    }
    let third = with_cache(&dir).await;
    let (got, usage) = answers(&third, &requests()).await;
    assert_eq!(got, want);
    assert_eq!(
        usage[0]["prompt_cache_hit_tokens"], 0,
        "nothing damaged is used"
    );
    assert!(
        third
            .metric("frugal_disk_cache_blocks_rejected_total")
            .await
            >= 1.0
    );
    third.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_opt_out_write_nothing_and_salts_stay_apart() {
    let dir = temp_dir("private");
    let s = with_cache(&dir).await;
    let mut r = requests()[0].clone();
    r["cache_prompt"] = json!(false);
    let (status, body) = s.post("/v1/completions", r).await;
    assert!(status.is_success(), "{body}");
    assert_eq!(
        s.metric("frugal_disk_cache_blocks_written_total").await,
        0.0
    );
    let mut salted = requests()[0].clone();
    salted["cache_salt"] = json!("tenant-a");
    let (status, _) = s.post("/v1/completions", salted.clone()).await;
    assert!(status.is_success());
    s.shutdown().await;
    let written = block_files(&dir).len();
    assert!(
        written >= 13,
        "the salted prompt's blocks are written: {written}"
    );

    // After a restart, the salt finds its blocks and nobody else does.
    let s = with_cache(&dir).await;
    let (_, body) = s.post("/v1/completions", requests()[0].clone()).await;
    assert_eq!(body["usage"]["prompt_cache_hit_tokens"], 0);
    let (_, body) = s.post("/v1/completions", salted).await;
    assert_eq!(body["usage"]["prompt_cache_hit_tokens"], 208);
    s.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_writes_not_the_server() {
    let Some(fs) = frugal_fixtures::Tmpfs::mount("full-disk", "64k") else {
        eprintln!("skipped: this machine cannot mount a tmpfs (not root)");
        return;
    };
    let want = expected().await;
    let s = with_cache(fs.path()).await;
    assert_eq!(answers(&s, &requests()).await.0, want);
    // Blocks keep coming after the disk filled up; the server keeps answering.
    assert_eq!(answers(&s, &requests()).await.0, want);
    assert!(s.metric("frugal_disk_cache_write_errors_total").await >= 1.0);
    s.shutdown().await;
}

/// `model` served twice on one cache directory answers as without it, the second time with
/// the first prompt's 13 blocks (208 tokens) from disk.
async fn restarts_from_disk(model: std::path::PathBuf, name: &str) {
    let m = model.clone();
    let plain = start(move |c| {
        c.model = m;
        c.ctx_size = Some(512);
    })
    .await;
    let (want, _) = answers(&plain, &requests()).await;
    plain.shutdown().await;
    let dir = temp_dir(name);
    for round in 0..2 {
        let (m, d) = (model.clone(), dir.clone());
        let s = start(move |c| {
            c.model = m;
            c.ctx_size = Some(512);
            c.cache_dir = Some(d);
        })
        .await;
        let (got, usage) = answers(&s, &requests()).await;
        assert_eq!(got, want, "{name}, round {round}");
        if round == 1 {
            assert_eq!(
                usage[0]["prompt_cache_hit_tokens"], 208,
                "{name}: {usage:?}"
            );
            assert!(s.metric("frugal_prefix_cache_disk_hit_tokens_total").await >= 208.0);
        }
        s.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A hybrid model (Qwen3.5's shape) resumes a prefix only from a state snapshot: the snapshot
/// goes to disk with the blocks and comes back with them after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hybrid_model_resumes_from_a_state_snapshot_read_back_from_disk() {
    let model = frugal_fixtures::hybrid_dir().join("models/qwen35-Q4_K_M.gguf");
    restarts_from_disk(model, "hybrid").await;
}

/// Gemma 3's sliding-window layers keep their blocks in a pool of their own: those of the
/// window before the resume point go to disk and come back too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sliding_window_model_reads_its_window_blocks_back_from_disk() {
    let model = frugal_fixtures::labs_dir().join("models/gemma3-Q4_K_M.gguf");
    restarts_from_disk(model, "sliding").await;
}

/// A cache directory that cannot be one (a file is in the way) stops the server before it serves,
/// naming the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_cache_dir_is_refused_at_start() {
    let file = temp_dir("not-a-dir");
    std::fs::write(&file, b"a file").unwrap();
    let mut cfg = frugal_server::ServerConfig::new(frugal_fixtures::dir().join(common::MODEL));
    cfg.port = 0;
    cfg.cache_dir = Some(file.clone());
    let server = frugal_server::Server::bind(cfg).await.unwrap();
    let err = server
        .run(std::future::pending())
        .await
        .expect_err("refused")
        .to_string();
    assert!(err.contains("--cache-dir"), "{err}");
    let _ = std::fs::remove_file(&file);
}
