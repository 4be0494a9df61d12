//! The tests' fake Hugging Face Hub as a program, for `bench/pull_throughput.sh`: serves one
//! file of a one-commit repository, as the Hub does (resolve redirected to a CDN path, Range),
//! until killed.
//!
//! `cargo run --release -p frugal-hub --example fake_hub -- FILE ORG/REPO NAME_IN_REPO`
//! prints the endpoint (for `HF_ENDPOINT`) and the resolve URL, one per line.

#[path = "../tests/support/fake_hub.rs"]
mod fake_hub;

use fake_hub::{Blob, FakeHub, Repo};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [file, repo, name] = args.as_slice() else {
        eprintln!("usage: fake_hub FILE ORG/REPO NAME_IN_REPO");
        std::process::exit(2);
    };
    let blob = match Blob::disk(file.into()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{file}: {e}");
            std::process::exit(1);
        }
    };
    let blob = Blob {
        lfs: std::env::var_os("FAKE_HUB_NOT_LFS").is_none(),
        ..blob
    };
    let hub = FakeHub::start();
    let commit = "b".repeat(40);
    hub.add_repo(repo, Repo::with_files(&commit, vec![(name.as_str(), blob)]));
    println!("{}", hub.url);
    println!("{}/{repo}/resolve/main/{name}", hub.url);
    loop {
        std::thread::park();
    }
}
