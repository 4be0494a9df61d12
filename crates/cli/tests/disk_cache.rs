//! `frugal serve --cache-dir` killed with SIGKILL while it writes blocks, again and again, then
//! restarted: it answers exactly as a server without the disk tier, whatever the kills left
//! behind (no damaged block is ever used, no temporary file outlives its writer).

mod common;

use common::{body_of, model, request, Serve};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Prompts long enough to write dozens of blocks each, greedy.
fn bodies() -> Vec<String> {
    (0..3u32)
        .map(|k| {
            let prompt: Vec<u32> = (0..700u32).map(|i| 3 + (i * 31 + k * 101) % 500).collect();
            format!(r#"{{"prompt": {prompt:?}, "max_tokens": 8, "temperature": 0}}"#)
        })
        .collect()
}

/// The choices of each answer (usage differs with the cache, the text must not).
fn answers(s: &Serve) -> Vec<String> {
    bodies()
        .iter()
        .map(|b| {
            let (status, raw) = request(s.addr, "POST", "/v1/completions", b).unwrap();
            assert_eq!(status, 200, "{raw}");
            let v: serde_json::Value = serde_json::from_str(body_of(&raw)).unwrap();
            v["choices"].to_string()
        })
        .collect()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                todo.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn kill_9_during_cache_writes_never_leaves_a_block_that_is_used_wrongly() {
    let m = model("qwen2-Q8_0.gguf");
    let plain = Serve::start(&m, &["-c", "1024"]);
    let want = answers(&plain);
    drop(plain);

    let dir = std::env::temp_dir().join(format!("frugal-kill9-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let args = ["-c", "1024", "--cache-dir", dir.to_str().unwrap()];
    for (round, delay_ms) in [1u64, 3, 6, 10, 15, 20, 30, 45].into_iter().enumerate() {
        let s = Serve::start(&m, &args);
        let addr = s.addr;
        let body = bodies()[round % 3].clone();
        let client = std::thread::spawn(move || request(addr, "POST", "/v1/completions", &body));
        // Kill at a different point of the prefill and its writes each round.
        std::thread::sleep(Duration::from_millis(delay_ms));
        drop(s); // SIGKILL
        let _ = client.join();
        eprintln!("round {round}: {} files", files_under(&dir).len());
    }
    // Damage what the kills left, as a crash of the machine might: the server must notice.
    for f in files_under(&dir)
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "kv"))
        .step_by(5)
    {
        let len = std::fs::metadata(f).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(f)
            .unwrap()
            .set_len(len - 1)
            .unwrap();
    }
    let s = Serve::start(&m, &args);
    assert_eq!(answers(&s), want);
    let tmp = files_under(&dir)
        .into_iter()
        .filter(|f| {
            f.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".tmp.")
        })
        .count();
    assert_eq!(tmp, 0, "temporary files of killed writers are removed");
    // And again, now from a directory the last run filled in peace.
    drop(s);
    let s = Serve::start(&m, &args);
    assert_eq!(answers(&s), want);
    assert!(s.metric("frugal_prefix_cache_disk_hit_tokens_total") > 0.0);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
