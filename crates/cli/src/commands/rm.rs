//! `frugal rm REF`: takes a model out of the Hugging Face cache — a whole repository
//! (`ORG/REPO`), or one quant or file of it (`ORG/REPO:QUANT`, `ORG/REPO/FILE.gguf`): its snapshot
//! entries, then the blobs no snapshot points at, then the refs of emptied snapshots.

use super::list::human_size;
use anyhow::Result;
use frugal_hub::inventory;
use frugal_hub::{Cache, HubRef};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// ORG/REPO (all of it), ORG/REPO:QUANT or ORG/REPO/FILE.gguf; with @REVISION, from that
    /// revision's snapshot only (else from every snapshot).
    pub reference: String,
}

pub fn run(a: Args) -> Result<()> {
    let cache = Cache::from_env();
    let reference = HubRef::parse(&a.reference)?;
    let removed = if inventory::names_whole_repo(&a.reference, &reference) {
        inventory::remove_repo(&cache, &reference.repo)?
    } else {
        inventory::remove_files(&cache, &reference)?
    };
    for entry in &removed.entries {
        println!("removed {entry}");
    }
    println!(
        "{} blob{} deleted, {} freed{}",
        removed.blobs,
        if removed.blobs == 1 { "" } else { "s" },
        human_size(removed.bytes),
        if removed.repo_gone {
            format!("; {} is no longer in the cache", reference.repo)
        } else {
            String::new()
        }
    );
    Ok(())
}
