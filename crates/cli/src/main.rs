//! `frugal`: the command-line front end. Parses arguments, loads models, and hands work to the
//! library crates; errors are printed as one line and exit with status 1.

#![forbid(unsafe_code)]

mod commands;
mod load;
mod spec;

use clap::{Parser, Subcommand};
use std::io::Write;

/// jemalloc, tuned by [`return_freed_memory`] to give freed memory back to the OS within about a
/// second: a server's large transient buffers (8 MB prompts) otherwise stay in its RSS.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Purges freed pages after `DIRTY_DECAY_MS` from a background thread, rather than only when the
/// process happens to allocate again. Best effort: a failure leaves jemalloc's defaults.
#[cfg(not(target_env = "msvc"))]
fn return_freed_memory() {
    use tikv_jemalloc_ctl::{Access, AsName};
    const DIRTY_DECAY_MS: isize = 1000;
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
    let _ = b"arenas.dirty_decay_ms\0".name().write(DIRTY_DECAY_MS);
    // Arenas that exist already keep their setting; change theirs too.
    let arenas = tikv_jemalloc_ctl::arenas::narenas::read().unwrap_or(0);
    for i in 0..arenas {
        let key = format!("arena.{i}.dirty_decay_ms\0");
        let _ = key.as_bytes().name().write(DIRTY_DECAY_MS);
    }
}

#[derive(Parser)]
#[command(
    name = "frugal",
    version,
    about = "Run open-weight language models on CPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the logits of every position of a token sequence to a file.
    Logits(commands::logits::Args),
    /// Describe a model file: architecture, sizes, tensor types, tokenizer, KV bytes per token.
    Info(commands::info::Args),
    /// Measure prompt processing (pp) and generation (tg) speed like llama-bench.
    Bench(commands::bench::Args),
    /// Measure this machine's memory read bandwidth (the ceiling for decode speed).
    Membw(commands::membw::Args),
    /// Perplexity of a text, or KL divergence from a base model, like llama-perplexity.
    Perplexity(commands::perplexity::Args),
    /// Generate text from a prompt, or chat interactively with --chat.
    Run(commands::run::Args),
    /// Serve one model, or several, over an OpenAI-compatible HTTP API.
    Serve(Box<commands::serve::Args>),
    /// Download a model from the Hugging Face Hub into its cache; print the path to load.
    Pull(commands::pull::Args),
    /// The models in the Hugging Face cache: repository, revision, file, size, quant.
    List(commands::list::Args),
    /// Remove a model (a repository, or one quant or file of it) from the Hugging Face cache.
    Rm(commands::rm::Args),
    /// Print the token ids of a text as a JSON array.
    Tokenize(commands::tokenize::TokenizeArgs),
    /// Print the text of comma-separated token ids.
    Detokenize(commands::tokenize::DetokenizeArgs),
}

#[cfg(target_env = "msvc")]
fn return_freed_memory() {}

fn main() {
    return_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FRUGAL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,frugal_server=info")),
        )
        .with_writer(|| LossyStderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Logits(a) => commands::logits::run(a),
        Command::Info(a) => commands::info::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Membw(a) => commands::membw::run(a),
        Command::Perplexity(a) => commands::perplexity::run(a),
        Command::Run(a) => commands::run::run(a),
        Command::Serve(a) => commands::serve::run(*a),
        Command::Pull(a) => commands::pull::run(a),
        Command::List(a) => commands::list::run(a),
        Command::Rm(a) => commands::rm::run(a),
        Command::Tokenize(a) => commands::tokenize::run_tokenize(a),
        Command::Detokenize(a) => commands::tokenize::run_detokenize(a),
    };
    if let Err(e) = result {
        let _ = writeln!(std::io::stderr(), "error: {e:#}");
        std::process::exit(1);
    }
}

/// Standard error for the log, dropping what cannot be written: a full disk or a closed pipe
/// must not stop (or panic) a server over its log.
struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}
