//! `frugal pull REF`: a Hugging Face Hub model into the Hugging Face cache (shared with
//! `huggingface_hub`); prints the path to load.

use crate::load::DownloadBars;
use anyhow::{bail, Result};
use frugal_hub::{ModelRef, Options};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// ORG/REPO[:QUANT][@REVISION] (the GGUF file or split set with that quant, Q4_K_M by default;
    /// a safetensors checkpoint repository whole) or ORG/REPO/FILE.gguf[@REVISION].
    pub reference: String,
}

pub fn run(a: Args) -> Result<()> {
    let hub_ref = match ModelRef::parse(&a.reference)? {
        ModelRef::Hub(h) => h,
        ModelRef::Local(p) => bail!("'{}' is a local path: nothing to pull", p.display()),
    };
    let options = Options::from_env();
    let bars = DownloadBars::new();
    let resolved = frugal_hub::resolve_hub(&hub_ref, &options, &|p| bars.show(p))?;
    eprintln!(
        "{} at {}: {} file{} in {}",
        hub_ref.repo,
        &resolved.commit[..resolved.commit.len().min(12)],
        resolved.files.len(),
        if resolved.files.len() == 1 { "" } else { "s" },
        options.cache.root().display()
    );
    println!("{}", resolved.path.display());
    Ok(())
}
