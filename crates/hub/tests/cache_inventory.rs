//! `list` and `remove` over a cache the fake Hub filled: split sets as one model, quant tags,
//! removal of one quant (its blobs, not the others'), of one revision, and of a whole repository.

mod support;

use frugal_hub::inventory::{list, names_whole_repo, remove_files, remove_repo};
use frugal_hub::{resolve, HubRef};
use support::fake_hub::{Blob, FakeHub, Repo};
use support::{bytes, options, TempDir};

const C1: &str = "1111111111111111111111111111111111111111";
const C2: &str = "2222222222222222222222222222222222222222";

fn repo() -> Repo {
    let shared = Blob::memory(bytes(1000, 1), true);
    let mut repo = Repo::with_files(
        C2,
        vec![
            ("m-Q8_0.gguf", shared.clone()),
            ("m-Q4_K_M.gguf", Blob::memory(bytes(2000, 2), true)),
            (
                "Q2_K/m-Q2_K-00001-of-00002.gguf",
                Blob::memory(bytes(300, 3), true),
            ),
            (
                "Q2_K/m-Q2_K-00002-of-00002.gguf",
                Blob::memory(bytes(400, 4), true),
            ),
        ],
    );
    repo.add_commit(C1, vec![("m-Q8_0.gguf", shared)]);
    repo.refs.insert("v1".into(), C1.into());
    repo
}

#[test]
fn list_and_remove() {
    let hub = FakeHub::start();
    hub.add_repo("org/m", repo());
    let dir = TempDir::new("inventory");
    let opts = options(&hub.url, dir.path());
    let quiet = |_: frugal_hub::Progress<'_>| {};
    for r in ["org/m:Q8_0", "org/m:Q2_K", "org/m:Q4_K_M", "org/m:Q8_0@v1"] {
        resolve(r, &opts, &quiet).unwrap();
    }
    let models = list(&opts.cache);
    let summary: Vec<_> = models
        .iter()
        .map(|m| {
            (
                m.commit.as_str(),
                m.file.as_str(),
                m.files,
                m.size,
                m.quant.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (C1, "m-Q8_0.gguf", 1, 1000, Some("Q8_0")),
            (C2, "Q2_K/m-Q2_K-00001-of-00002.gguf", 2, 700, Some("Q2_K")),
            (C2, "m-Q4_K_M.gguf", 1, 2000, Some("Q4_K_M")),
            (C2, "m-Q8_0.gguf", 1, 1000, Some("Q8_0")),
        ]
    );
    assert_eq!(models[0].revisions, ["v1"]);
    assert_eq!(models[1].revisions, ["main"]);

    // Q8_0 at v1 only: the blob stays, main's snapshot still points at it.
    let r = remove_files(&opts.cache, &HubRef::parse("org/m:Q8_0@v1").unwrap()).unwrap();
    assert_eq!((r.entries.len(), r.blobs, r.repo_gone), (1, 0, false));
    assert!(
        !opts.cache.repo_dir("org/m").join("refs/v1").exists(),
        "the emptied snapshot's ref"
    );
    assert!(!opts.cache.snapshot_dir("org/m", C1).exists());
    // The split set: both parts and their blobs.
    let r = remove_files(&opts.cache, &HubRef::parse("org/m:Q2_K").unwrap()).unwrap();
    assert_eq!((r.entries.len(), r.blobs, r.bytes), (2, 2, 700));
    assert!(!opts.cache.snapshot_dir("org/m", C2).join("Q2_K").exists());
    let e = remove_files(&opts.cache, &HubRef::parse("org/m:Q2_K").unwrap()).unwrap_err();
    assert!(e.to_string().contains("not in the cache"), "{e}");
    // A file by path, then the rest with the repository.
    let r = remove_files(&opts.cache, &HubRef::parse("org/m/m-Q8_0.gguf").unwrap()).unwrap();
    assert_eq!((r.blobs, r.bytes), (1, 1000));
    assert!(names_whole_repo("org/m", &HubRef::parse("org/m").unwrap()));
    assert!(!names_whole_repo(
        "org/m:Q4_K_M",
        &HubRef::parse("org/m:Q4_K_M").unwrap()
    ));
    let r = remove_repo(&opts.cache, "org/m").unwrap();
    assert_eq!((r.blobs, r.bytes, r.repo_gone), (1, 2000, true));
    assert!(!opts.cache.repo_dir("org/m").exists());
    assert!(list(&opts.cache).is_empty());
    assert!(remove_repo(&opts.cache, "org/m").is_err());
}

#[test]
fn removing_the_last_file_removes_the_repository() {
    let hub = FakeHub::start();
    hub.add_repo("org/m", repo());
    let dir = TempDir::new("inventory-last");
    let opts = options(&hub.url, dir.path());
    resolve("org/m:Q4_K_M", &opts, &|_| {}).unwrap();
    let r = remove_files(&opts.cache, &HubRef::parse("org/m:Q4_K_M").unwrap()).unwrap();
    assert!(r.repo_gone);
    assert!(!opts.cache.repo_dir("org/m").exists());
    assert!(!dir.path().join(".locks/models--org--m").exists());
}
