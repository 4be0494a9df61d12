//! Downloads from a local fake Hub (tests/support/fake_hub.rs) into a temporary cache: quant
//! choice, split sets, file references, revisions, resume, checksums, offline use, errors, tokens,
//! concurrent pulls and the cache layout itself. No network.

mod support;

use frugal_hub::{resolve, HubError, Options};
use std::path::{Path, PathBuf};
use support::fake_hub::{Blob, FakeHub, Repo};
use support::{bytes, options, TempDir};

const C1: &str = "1111111111111111111111111111111111111111";
const C2: &str = "2222222222222222222222222222222222222222";
const SIZE: usize = 300_000;

fn quiet() -> impl Fn(frugal_hub::Progress<'_>) + Sync {
    |_| {}
}

/// `org/model`: two quants, a split set in a folder, a projector and a README; `v1` is an older
/// commit with another Q8_0.
fn gguf_repo() -> Repo {
    let mut repo = Repo::with_files(
        C2,
        vec![
            ("README.md", Blob::memory(b"# model\n".to_vec(), false)),
            ("model-Q4_K_M.gguf", Blob::memory(bytes(SIZE, 1), true)),
            ("model-Q8_0.gguf", Blob::memory(bytes(SIZE, 2), true)),
            ("mmproj-model-Q8_0.gguf", Blob::memory(bytes(1000, 3), true)),
            (
                "Q2_K/model-Q2_K-00001-of-00002.gguf",
                Blob::memory(bytes(SIZE, 4), true),
            ),
            (
                "Q2_K/model-Q2_K-00002-of-00002.gguf",
                Blob::memory(bytes(SIZE, 5), true),
            ),
        ],
    );
    repo.add_commit(
        C1,
        vec![("model-Q8_0.gguf", Blob::memory(bytes(SIZE, 6), true))],
    );
    repo.refs.insert("v1".into(), C1.into());
    repo
}

fn setup(name: &str) -> (FakeHub, TempDir, Options) {
    let hub = FakeHub::start();
    hub.add_repo("org/model", gguf_repo());
    let dir = TempDir::new(name);
    let opts = options(&hub.url, dir.path());
    (hub, dir, opts)
}

fn get(reference: &str, opts: &Options) -> Result<PathBuf, HubError> {
    resolve(reference, opts, &quiet())
}

fn snapshot(opts: &Options, commit: &str) -> PathBuf {
    opts.cache.snapshot_dir("org/model", commit)
}

#[test]
fn a_quant_tag_picks_its_file_and_downloads_it() {
    let (_hub, _dir, opts) = setup("quant");
    let path = get("org/model:q8_0", &opts).unwrap();
    assert_eq!(path, snapshot(&opts, C2).join("model-Q8_0.gguf"));
    assert_eq!(std::fs::read(&path).unwrap(), bytes(SIZE, 2));
    let default = get("org/model", &opts).unwrap();
    assert_eq!(default, snapshot(&opts, C2).join("model-Q4_K_M.gguf"));
    assert_eq!(std::fs::read(&default).unwrap(), bytes(SIZE, 1));
}

#[test]
fn the_cache_is_laid_out_as_huggingface_hub_lays_it_out() {
    let (_hub, dir, opts) = setup("layout");
    get("org/model/README.md", &opts).unwrap();
    get("org/model:Q8_0", &opts).unwrap();
    let repo_dir = dir.path().join("models--org--model");
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        C2
    );
    let sha = support::fake_hub::sha256_hex(&bytes(SIZE, 2));
    let pointer = repo_dir.join("snapshots").join(C2).join("model-Q8_0.gguf");
    let target = std::fs::read_link(&pointer).unwrap();
    assert_eq!(target, Path::new("../../blobs").join(&sha));
    assert!(repo_dir.join("blobs").join(&sha).is_file());
    assert!(dir
        .path()
        .join(".locks/models--org--model")
        .join(format!("{sha}.lock"))
        .exists());
    // A small (non-LFS) file is named by its git etag.
    let readme = std::fs::read_link(repo_dir.join("snapshots").join(C2).join("README.md")).unwrap();
    assert_eq!(readme.parent().unwrap(), Path::new("../../blobs"));
    assert_eq!(readme.file_name().unwrap().len(), 40);
    assert!(dir.path().join("CACHEDIR.TAG").is_file());
    let leftovers: Vec<_> = std::fs::read_dir(repo_dir.join("blobs"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".incomplete"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn a_split_set_downloads_every_part_and_names_the_first() {
    let (_hub, _dir, opts) = setup("split");
    let path = get("org/model:Q2_K", &opts).unwrap();
    let dir = snapshot(&opts, C2).join("Q2_K");
    assert_eq!(path, dir.join("model-Q2_K-00001-of-00002.gguf"));
    assert_eq!(
        std::fs::read(dir.join("model-Q2_K-00002-of-00002.gguf")).unwrap(),
        bytes(SIZE, 5)
    );
    let link = std::fs::read_link(&path).unwrap();
    assert!(link.starts_with("../../../blobs"), "{}", link.display());
    // Naming the second part directly brings the set too, and names the first part.
    let (_hub2, _dir2, opts2) = setup("split-part");
    let path2 = get("org/model/Q2_K/model-Q2_K-00002-of-00002.gguf", &opts2).unwrap();
    assert!(path2.ends_with("Q2_K/model-Q2_K-00001-of-00002.gguf"));
}

#[test]
fn file_references_and_revisions() {
    let (hub, _dir, opts) = setup("revisions");
    let path = get("org/model/model-Q8_0.gguf@v1", &opts).unwrap();
    assert_eq!(path, snapshot(&opts, C1).join("model-Q8_0.gguf"));
    assert_eq!(std::fs::read(&path).unwrap(), bytes(SIZE, 6));
    assert_eq!(
        std::fs::read_to_string(opts.cache.repo_dir("org/model").join("refs/v1")).unwrap(),
        C1
    );
    let by_commit = get(&format!("org/model:Q8_0@{C1}"), &opts).unwrap();
    assert_eq!(by_commit, path);
    // A commit is not looked up through the revision API.
    assert!(!hub
        .seen()
        .iter()
        .any(|s| s.target.contains(&format!("revision/{C1}"))));
    let main = get("org/model:Q8_0", &opts).unwrap();
    assert_eq!(std::fs::read(main).unwrap(), bytes(SIZE, 2));
}

#[test]
fn a_cut_connection_is_resumed_where_it_broke() {
    let (hub, _dir, opts) = setup("resume");
    hub.cut_next_download_after(100_000);
    let path = get("org/model:Q8_0", &opts).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), bytes(SIZE, 2));
    assert_eq!(
        hub.bytes_served(),
        SIZE as u64,
        "only the rest was fetched again"
    );
    assert!(hub
        .seen()
        .iter()
        .any(|s| s.range.as_deref() == Some("bytes=100000-")));
}

#[test]
fn a_later_run_resumes_what_an_earlier_one_left() {
    let (hub, _dir, mut opts) = setup("resume-runs");
    opts.hub.retries = 0;
    hub.cut_next_download_after(123_456);
    let e = get("org/model:Q8_0", &opts).unwrap_err();
    assert!(matches!(e, HubError::Network { .. }), "{e}");
    let sha = support::fake_hub::sha256_hex(&bytes(SIZE, 2));
    let partial = opts.cache.incomplete_path("org/model", &sha);
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), 123_456);
    let path = get("org/model:Q8_0", &opts).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), bytes(SIZE, 2));
    assert_eq!(hub.bytes_served(), SIZE as u64);
    assert!(!partial.exists());
}

#[test]
fn a_server_that_ignores_range_restarts_the_file_cleanly() {
    let (hub, _dir, opts) = setup("no-range");
    hub.set_ignore_range(true);
    hub.cut_next_download_after(50_000);
    let path = get("org/model:Q8_0", &opts).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), bytes(SIZE, 2));
    assert_eq!(hub.bytes_served(), 50_000 + SIZE as u64);
}

#[test]
fn a_checksum_mismatch_is_an_error_and_leaves_nothing_behind() {
    let (hub, dir, opts) = setup("checksum");
    hub.set_corrupt(true);
    let e = get("org/model:Q8_0", &opts).unwrap_err();
    assert!(matches!(e, HubError::Checksum { .. }), "{e}");
    assert!(e.to_string().contains("model-Q8_0.gguf"), "{e}");
    let blobs: Vec<_> = std::fs::read_dir(dir.path().join("models--org--model/blobs"))
        .unwrap()
        .flatten()
        .collect();
    assert!(blobs.is_empty(), "{blobs:?}");
    assert!(!snapshot(&opts, C2).join("model-Q8_0.gguf").exists());
    hub.set_corrupt(false);
    get("org/model:Q8_0", &opts).unwrap();
}

#[test]
fn offline_resolves_from_the_cache_without_a_request() {
    let (hub, _dir, mut opts) = setup("offline");
    let online = get("org/model:Q2_K", &opts).unwrap();
    opts.hub.offline = true;
    let before = hub.requests();
    assert_eq!(get("org/model:Q2_K", &opts).unwrap(), online);
    assert_eq!(
        get("org/model/Q2_K/model-Q2_K-00001-of-00002.gguf", &opts).unwrap(),
        online
    );
    assert_eq!(hub.requests(), before, "offline made a request");
    let e = get("org/model:Q8_0", &opts).unwrap_err().to_string();
    assert!(
        e.contains("HF_HUB_OFFLINE") && e.contains("Q8_0") && e.contains("model-Q2_K-00001"),
        "{e}"
    );
    let e = get("org/other:Q8_0", &opts).unwrap_err().to_string();
    assert!(
        e.contains("org/other@main") && e.contains("refs/main"),
        "{e}"
    );
    let e = get("org/model:Q2_K@v1", &opts).unwrap_err().to_string();
    assert!(e.contains("refs/v1"), "{e}");
    assert_eq!(hub.requests(), before);
}

#[test]
fn missing_repositories_files_quants_and_revisions_are_named() {
    let (_hub, _dir, opts) = setup("missing");
    let e = get("org/nope:Q8_0", &opts).unwrap_err();
    assert!(matches!(e, HubError::RepoNotFound { .. }), "{e}");
    assert!(e.to_string().contains("org/nope"), "{e}");
    let e = get("org/model/nope.gguf", &opts).unwrap_err();
    assert!(matches!(e, HubError::EntryNotFound { .. }), "{e}");
    assert!(e.to_string().contains("nope.gguf"), "{e}");
    let e = get("org/model:Q5_K_M", &opts).unwrap_err().to_string();
    assert!(e.contains("Q5_K_M") && e.contains("model-Q8_0.gguf"), "{e}");
    let e = get("org/model:Q8_0@v9", &opts).unwrap_err();
    assert!(matches!(e, HubError::RevisionNotFound { .. }), "{e}");
    assert!(e.to_string().contains("v9"), "{e}");
}

#[test]
fn a_gated_repository_needs_the_token_and_gets_it() {
    let (hub, _dir, mut opts) = setup("gated");
    let mut gated = gguf_repo();
    gated.gated = true;
    hub.add_repo("org/gated", gated);
    hub.require_token("hf_secret");
    let e = get("org/gated:Q8_0", &opts).unwrap_err();
    assert!(
        matches!(
            e,
            HubError::Gated {
                token_sent: false,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("HF_TOKEN"), "{e}");
    opts.hub.token = Some("hf_wrong".into());
    let e = get("org/gated:Q8_0", &opts).unwrap_err();
    assert!(
        matches!(
            e,
            HubError::Gated {
                token_sent: true,
                ..
            }
        ),
        "{e}"
    );
    opts.hub.token = Some("hf_secret".into());
    get("org/gated:Q8_0", &opts).unwrap();
    let heads: Vec<_> = hub
        .seen()
        .into_iter()
        .filter(|s| s.method == "HEAD")
        .collect();
    assert_eq!(
        heads.last().unwrap().authorization.as_deref(),
        Some("Bearer hf_secret")
    );
}

#[test]
fn concurrent_pulls_of_one_file_download_it_once() {
    let (hub, _dir, opts) = setup("concurrent");
    hub.set_slow(true);
    let paths: Vec<PathBuf> = std::thread::scope(|s| {
        let pulls: Vec<_> = (0..3)
            .map(|_| s.spawn(|| get("org/model:Q8_0", &opts).unwrap()))
            .collect();
        pulls.into_iter().map(|p| p.join().unwrap()).collect()
    });
    assert!(paths.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(std::fs::read(&paths[0]).unwrap(), bytes(SIZE, 2));
    assert_eq!(hub.bytes_served(), SIZE as u64);
}

#[test]
fn a_checkpoint_repository_resolves_to_its_snapshot_directory() {
    let (hub, _dir, opts) = setup("checkpoint");
    let files = vec![
        ("README.md", Blob::memory(b"x".to_vec(), false)),
        ("config.json", Blob::memory(b"{}".to_vec(), false)),
        (
            "generation_config.json",
            Blob::memory(b"{}".to_vec(), false),
        ),
        (
            "model.safetensors.index.json",
            Blob::memory(b"{}".to_vec(), false),
        ),
        (
            "model-00001-of-00002.safetensors",
            Blob::memory(bytes(5000, 7), true),
        ),
        (
            "model-00002-of-00002.safetensors",
            Blob::memory(bytes(5000, 8), true),
        ),
        ("tokenizer.json", Blob::memory(b"{}".to_vec(), false)),
        ("tokenizer_config.json", Blob::memory(b"{}".to_vec(), false)),
        (
            "original/consolidated.pth",
            Blob::memory(bytes(5000, 9), true),
        ),
    ];
    hub.add_repo("org/ckpt", Repo::with_files(C1, files));
    let path = get("org/ckpt", &opts).unwrap();
    assert_eq!(path, opts.cache.snapshot_dir("org/ckpt", C1));
    let mut got: Vec<String> = std::fs::read_dir(&path)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "config.json",
            "generation_config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "tokenizer.json",
            "tokenizer_config.json"
        ]
    );
    let e = get("org/ckpt:Q8_0", &opts).unwrap_err().to_string();
    assert!(e.contains("safetensors checkpoint"), "{e}");
}

#[test]
fn a_renamed_repository_is_followed_through_relative_redirects() {
    let (hub, _dir, opts) = setup("renamed");
    hub.rename("org/old-name", "org/model");
    let path = get("org/old-name:Q8_0", &opts).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes(SIZE, 2));
    assert!(path.starts_with(opts.cache.repo_dir("org/old-name")));
}

#[test]
fn a_stalled_server_is_an_error_not_a_hang() {
    let (hub, _dir, mut opts) = setup("stalled");
    hub.set_stall(true);
    opts.hub.request_timeout = std::time::Duration::from_millis(500);
    let start = std::time::Instant::now();
    let e = get("org/model:Q8_0", &opts).unwrap_err();
    assert!(matches!(e, HubError::Network { .. }), "{e}");
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn progress_is_reported_per_file_up_to_its_size() {
    let (_hub, _dir, opts) = setup("progress");
    let seen = std::sync::Mutex::new(Vec::new());
    let record = |p: frugal_hub::Progress<'_>| {
        seen.lock()
            .unwrap()
            .push((p.file.to_string(), p.done, p.total))
    };
    resolve("org/model:Q2_K", &opts, &record).unwrap();
    let seen = seen.into_inner().unwrap();
    for part in [
        "Q2_K/model-Q2_K-00001-of-00002.gguf",
        "Q2_K/model-Q2_K-00002-of-00002.gguf",
    ] {
        let last = seen.iter().rfind(|(f, _, _)| f == part).unwrap();
        assert_eq!((last.1, last.2), (SIZE as u64, SIZE as u64));
    }
}

#[test]
fn a_local_path_always_wins() {
    let (hub, dir, opts) = setup("local");
    let file = dir.path().join("org").join("model");
    std::fs::create_dir_all(&file).unwrap();
    let text = file.to_str().unwrap();
    assert_eq!(get(text, &opts).unwrap(), file);
    assert_eq!(hub.requests(), 0);
}

#[test]
fn resolve_works_from_inside_an_async_runtime() {
    let (_hub, _dir, opts) = setup("async");
    for runtime in [
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap(),
    ] {
        let path = runtime
            .block_on(async { get("org/model:Q8_0", &opts) })
            .unwrap();
        assert_eq!(std::fs::read(path).unwrap(), bytes(SIZE, 2));
    }
}

#[test]
fn a_hub_out_of_reach_falls_back_to_the_cache() {
    let (hub, _dir, mut opts) = setup("unreachable");
    let cached = get("org/model:Q8_0", &opts).unwrap();
    hub.set_stall(true);
    opts.hub.request_timeout = std::time::Duration::from_millis(300);
    assert_eq!(get("org/model:Q8_0", &opts).unwrap(), cached);
    let e = get("org/model:Q4_K_M", &opts).unwrap_err();
    assert!(matches!(e, HubError::Network { .. }), "{e}");
}
