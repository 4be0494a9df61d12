//! Opening a model file and loading it with a progress bar.

use anyhow::Result;
use frugal_formats::GgufFile;
use frugal_kernels::ThreadPool;
use frugal_models::{LoadOptions, Model};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;

/// Options shared by every command that runs a model.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Path to a GGUF model file.
    pub model: std::path::PathBuf,
    /// Worker threads (default: all available cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Dequantize all weights to F32 at load and keep activations in f32 (the exact reference path).
    #[arg(long)]
    pub dequantize: bool,
}

impl ModelArgs {
    pub fn pool(&self) -> Result<ThreadPool> {
        let n = match self.threads {
            Some(0) => anyhow::bail!("--threads must be at least 1"),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        Ok(ThreadPool::new(n))
    }
}

pub fn open(path: &Path) -> Result<GgufFile> {
    // The error already names the file.
    Ok(GgufFile::open(path)?)
}

/// Loads the model, showing a progress bar on a terminal for files over 64 MiB.
pub fn load_model(gguf: &GgufFile, args: &ModelArgs) -> Result<Model> {
    let bar = if gguf.file_size() > 64 << 20 {
        let b = ProgressBar::new(gguf.file_size());
        b.set_style(
            ProgressStyle::with_template("loading {bar:40} {bytes}/{total_bytes} {elapsed}")
                .expect("valid template"),
        );
        Some(b)
    } else {
        None
    };
    let progress = |done: u64, total: u64| {
        if let Some(b) = &bar {
            b.set_length(total);
            b.set_position(done);
        }
    };
    let opts = LoadOptions {
        dequantize: args.dequantize,
        progress: Some(&progress),
    };
    let model = Model::load(gguf, &opts)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(model)
}
