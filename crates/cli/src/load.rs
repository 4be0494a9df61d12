//! The flags every model command shares, and loading with a progress bar (the loading itself is
//! `frugal-loader`'s, shared with the server).

use anyhow::Result;
use frugal_loader::{ModelFile, ModelOptions, Warning};
use frugal_models::Model;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;

/// Options shared by every command that runs a model.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// A GGUF model file (any part of a split set), a Hugging Face safetensors checkpoint folder
    /// (config.json, *.safetensors, tokenizer.json, converted at load), or a Hugging Face Hub
    /// reference: ORG/REPO[:QUANT][@REVISION] (Q4_K_M by default) or ORG/REPO/FILE.gguf[@REVISION],
    /// downloaded into the Hugging Face cache on first use.
    pub model: std::path::PathBuf,
    /// Worker threads, for loading and running (default: all available cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Dequantize all weights to F32 at load and keep activations in f32 (the exact reference path).
    #[arg(long)]
    pub dequantize: bool,
    /// Quantize a safetensors checkpoint's weight matrices at load into TYPE (q8_0, q4_0, q4_k,
    /// q5_k, q6_k, …; ggml's reference quantizers, norms and routers kept in F32).
    #[arg(long, value_name = "TYPE", value_parser = parse_quant_type)]
    pub quantize: Option<frugal_kernels::GgmlType>,
    /// Run only on these CPUs: a hexadecimal mask, bit i for CPU i (e.g. 0x5 for CPUs 0 and 2),
    /// as llama.cpp's --cpu-mask. The default thread count follows it.
    #[arg(long, value_name = "HEX", value_parser = parse_cpu_mask)]
    pub cpu_mask: Option<CpuMask>,
    /// Keep the weights in RAM (mlock), never swapped out or dropped from the page cache, as
    /// llama.cpp's --mlock; an error when the locked-memory limit (ulimit -l) is too low.
    #[arg(long)]
    pub mlock: bool,
}

impl ModelArgs {
    /// Applies `--cpu-mask` to this thread and the threads it starts from now on.
    pub fn pin(&self) -> Result<()> {
        match &self.cpu_mask {
            Some(CpuMask(cpus)) => pin_to_cpus(cpus),
            None => Ok(()),
        }
    }

    /// Opens the model with these flags and the command's own `opts` (context, template);
    /// prints the warnings that matter to every command.
    pub fn open(&self, mut opts: ModelOptions) -> Result<ModelFile> {
        self.pin()?;
        opts.threads = self.threads;
        opts.dequantize = self.dequantize;
        opts.quantize = self.quantize;
        opts.mlock = self.mlock;
        let file = ModelFile::open(&resolve_model(&self.model.to_string_lossy())?, &opts)?;
        for w in &file.warnings {
            if !matches!(w, Warning::NoChatTemplate { .. }) {
                warn(w);
            }
        }
        Ok(file)
    }

    /// Another model file (a draft model; a Hub reference too) opened with the same threads and
    /// weight options.
    pub fn open_other(&self, path: &std::path::Path) -> Result<ModelFile> {
        let path = resolve_model(&path.to_string_lossy())?;
        let opts = ModelOptions {
            threads: self.threads,
            dequantize: self.dequantize,
            mlock: self.mlock,
            ..ModelOptions::default()
        };
        Ok(ModelFile::open(&path, &opts)?)
    }
}

/// The local path a model reference names: an existing path as it is; a Hugging Face Hub
/// reference (`ORG/REPO[:QUANT][@REV]`, `ORG/REPO/FILE.gguf`) once its files are in the
/// Hugging Face cache (downloaded first unless `HF_HUB_OFFLINE` is set). For a split GGUF set, its
/// first part; for a safetensors checkpoint, its snapshot directory. A progress bar per file on
/// a terminal. May be called from async code (the downloads run on a thread of their own).
pub fn resolve_model(reference: &str) -> Result<std::path::PathBuf> {
    let bars = DownloadBars::new();
    let options = frugal_hub::Options::from_env();
    Ok(frugal_hub::resolve(reference, &options, &|p| bars.show(p))?)
}

/// One progress bar per file being downloaded, drawn only when stderr is a terminal.
pub struct DownloadBars {
    bars: Option<(
        indicatif::MultiProgress,
        std::sync::Mutex<HashMap<String, ProgressBar>>,
    )>,
}

impl DownloadBars {
    pub fn new() -> DownloadBars {
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        DownloadBars {
            bars: terminal.then(|| (indicatif::MultiProgress::new(), Default::default())),
        }
    }

    pub fn show(&self, p: frugal_hub::Progress<'_>) {
        let Some((multi, bars)) = &self.bars else {
            return;
        };
        let mut bars = bars.lock().unwrap_or_else(|e| e.into_inner());
        let bar = bars.entry(p.file.to_string()).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new(p.total));
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_message(p.file.to_string());
            bar
        });
        bar.set_position(p.done);
        if p.done >= p.total {
            bar.finish();
        }
    }
}

impl Default for DownloadBars {
    fn default() -> Self {
        DownloadBars::new()
    }
}

fn parse_quant_type(s: &str) -> Result<frugal_kernels::GgmlType, String> {
    frugal_checkpoint::quant_type(s)
}

/// The CPUs a `--cpu-mask` names, lowest first.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuMask(pub Vec<usize>);

fn parse_cpu_mask(s: &str) -> Result<CpuMask, String> {
    let hex = s.trim().trim_start_matches("0x").trim_start_matches("0X");
    let mut cpus = Vec::new();
    for (i, c) in hex.chars().rev().enumerate() {
        let nibble = c
            .to_digit(16)
            .ok_or_else(|| format!("'{s}' is not a hexadecimal CPU mask"))?;
        cpus.extend((0..4).filter(|b| nibble >> b & 1 == 1).map(|b| 4 * i + b));
    }
    if cpus.is_empty() {
        return Err(format!("the CPU mask '{s}' names no CPU"));
    }
    Ok(CpuMask(cpus))
}

/// Restricts this thread, and the threads it starts from now on (the pool's workers, the
/// server's), to `cpus`.
fn pin_to_cpus(cpus: &[usize]) -> Result<()> {
    use nix::sched::{sched_setaffinity, CpuSet};
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c).map_err(|_| {
            anyhow::anyhow!("--cpu-mask: CPU {c} is beyond what this system can name")
        })?;
    }
    sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .map_err(|e| anyhow::anyhow!("--cpu-mask: the system refused CPUs {cpus:?}: {e}"))
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

#[cfg(test)]
mod tests {
    use super::{parse_cpu_mask, CpuMask};

    #[test]
    fn cpu_masks_name_cpus_by_bit() {
        assert_eq!(parse_cpu_mask("0x5"), Ok(CpuMask(vec![0, 2])));
        assert_eq!(parse_cpu_mask("1"), Ok(CpuMask(vec![0])));
        assert_eq!(parse_cpu_mask("F0"), Ok(CpuMask(vec![4, 5, 6, 7])));
        assert_eq!(parse_cpu_mask("0x100"), Ok(CpuMask(vec![8])));
        assert!(parse_cpu_mask("0x0").is_err());
        assert!(parse_cpu_mask("").is_err());
        assert!(parse_cpu_mask("0xg").is_err());
    }
}
