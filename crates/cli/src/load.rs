//! The flags every model command shares, and loading with a progress bar (the loading itself is
//! `frugal-loader`'s, shared with the server).

use anyhow::Result;
use frugal_loader::{ModelFile, ModelOptions, Warning};
use frugal_models::Model;
use indicatif::{ProgressBar, ProgressStyle};

/// Options shared by every command that runs a model.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Path to a GGUF model file.
    pub model: std::path::PathBuf,
    /// Worker threads, for loading and running (default: all available cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Dequantize all weights to F32 at load and keep activations in f32 (the exact reference path).
    #[arg(long)]
    pub dequantize: bool,
}

impl ModelArgs {
    /// Opens the model with these flags and the command's own `opts` (context, template);
    /// prints the warnings that matter to every command.
    pub fn open(&self, mut opts: ModelOptions) -> Result<ModelFile> {
        opts.threads = self.threads;
        opts.dequantize = self.dequantize;
        let file = ModelFile::open(&self.model, &opts)?;
        for w in &file.warnings {
            if !matches!(w, Warning::NoChatTemplate { .. }) {
                warn(w);
            }
        }
        Ok(file)
    }
}

/// A warning on standard error (never fails: a closed stderr must not end the command).
pub fn warn(w: &dyn std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "warning: {w}");
}

/// Loads the weights, showing a progress bar on a terminal for files over 64 MiB.
pub fn load_weights(file: &ModelFile) -> Result<Model> {
    let size = file.gguf.file_size();
    let bar = (size > 64 << 20).then(|| {
        let b = ProgressBar::new(size);
        b.set_style(
            ProgressStyle::with_template("loading {bar:40} {bytes}/{total_bytes} {elapsed}")
                .expect("valid template"),
        );
        b
    });
    let progress = |done: u64, total: u64| {
        if let Some(b) = &bar {
            b.set_length(total);
            b.set_position(done);
        }
    };
    let model = file.load(Some(&progress))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(model)
}
