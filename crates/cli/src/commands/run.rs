//! `frugal run`: generate text in the terminal, from a prompt or as an interactive chat.

use crate::commands::tokenize::load_tokenizer;
use crate::load::{load_model, open, ModelArgs};
use anyhow::{Context, Result};
use frugal_chat::ChatTemplate;
use frugal_engine::sampler::SamplingParams;
use frugal_engine::session::{GenerateParams, GenerationStats, Session};
use std::io::{BufRead, Write};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt (raw text completion, no chat template).
    #[arg(short = 'p', long, conflicts_with_all = ["chat", "prompt_tokens"])]
    pub prompt: Option<String>,
    /// The prompt as comma-separated token ids (no BOS is added).
    #[arg(long, value_delimiter = ',', conflicts_with = "chat")]
    pub prompt_tokens: Option<Vec<u32>>,
    /// Interactive chat through the model's chat template (reads turns from standard input).
    #[arg(long)]
    pub chat: bool,
    /// System message for --chat.
    #[arg(long)]
    pub system: Option<String>,
    /// Maximum tokens to generate (per turn in --chat).
    #[arg(short = 'n', long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Context size in tokens (default: the model's training context, at most 4096).
    #[arg(short = 'c', long)]
    pub ctx_size: Option<usize>,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    pub temp: f32,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Random seed (default: random).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop strings (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Do not prepend the BOS token to a raw prompt even if the model asks for it.
    #[arg(long)]
    pub no_bos: bool,
}

pub fn run(a: Args) -> Result<()> {
    let gguf = open(&a.model.model)?;
    let tokenizer = load_tokenizer(&a.model.model)?;
    let model = load_model(&gguf, &a.model)?;
    let pool = a.model.pool()?;
    let n_ctx = a
        .ctx_size
        .unwrap_or_else(|| model.config().n_ctx_train.min(4096));
    anyhow::ensure!(n_ctx > 0, "--ctx-size must be positive");
    let params = GenerateParams {
        max_tokens: a.max_tokens,
        sampling: SamplingParams {
            temperature: a.temp,
            top_k: a.top_k,
            top_p: a.top_p,
            min_p: a.min_p,
            repetition_penalty: a.repeat_penalty,
            seed: a.seed,
            ..SamplingParams::default()
        },
        stop: a.stop.clone(),
    };
    params
        .sampling
        .validate(model.config().n_vocab)
        .context("invalid sampling parameters")?;
    let mut session = Session::new(&model, &tokenizer, &pool, n_ctx);
    let stdout = std::io::stdout();
    let mut print = |s: &str| {
        let mut out = stdout.lock();
        let _ = out.write_all(s.as_bytes());
        let _ = out.flush();
    };

    if !a.chat {
        let (prompt, ids) = match (&a.prompt, &a.prompt_tokens) {
            (Some(p), _) => (p.clone(), tokenizer.encode(p, !a.no_bos, true)?),
            (None, Some(ids)) => {
                let n_vocab = model.config().n_vocab;
                if let Some(bad) = ids.iter().find(|&&t| t as usize >= n_vocab) {
                    anyhow::bail!("token id {bad} is outside the vocabulary of {n_vocab}");
                }
                (tokenizer.decode(ids, false), ids.clone())
            }
            (None, None) => {
                anyhow::bail!("give a prompt with -p or --prompt-tokens, or use --chat")
            }
        };
        anyhow::ensure!(
            ids.len() <= n_ctx,
            "the prompt has {} tokens but the context holds {n_ctx}",
            ids.len()
        );
        print(&prompt);
        let stats = session.generate(&ids, &params, &mut print)?;
        println!();
        report(&stats);
        return Ok(());
    }

    let template = match tokenizer.chat_template() {
        Some(src) => ChatTemplate::new(
            src,
            tokenizer.special_token_text(frugal_tokenizer::SpecialToken::Bos),
            tokenizer.special_token_text(frugal_tokenizer::SpecialToken::Eos),
            tokenizer.special_token_text(frugal_tokenizer::SpecialToken::Pad),
        )?,
        None => {
            eprintln!("warning: the model has no chat template; using ChatML");
            ChatTemplate::chatml()
        }
    };
    let mut messages = Vec::new();
    if let Some(s) = &a.system {
        messages.push(serde_json::json!({"role": "system", "content": s}));
    }
    let stdin = std::io::stdin();
    let interactive = std::io::IsTerminal::is_terminal(&stdin);
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
        }
        let Some(line) = lines.next() else { break };
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        if matches!(line.trim(), "/exit" | "/quit") {
            break;
        }
        messages.push(serde_json::json!({"role": "user", "content": line}));
        let rendered = template.render(&messages, None, true, &serde_json::Map::new())?;
        let ids = tokenizer.encode(&rendered, false, true)?;
        let mut reply = String::new();
        let stats = session.generate(&ids, &params, &mut |s: &str| {
            reply.push_str(s);
            print(s);
        })?;
        println!();
        report(&stats);
        messages.push(serde_json::json!({"role": "assistant", "content": reply}));
    }
    Ok(())
}

fn report(s: &GenerationStats) {
    let new = s.prompt_tokens - s.cached_tokens;
    eprintln!(
        "prompt: {} tokens ({} cached), {:.1} tokens/s | generation: {} tokens, {:.1} tokens/s | finish: {}",
        s.prompt_tokens,
        s.cached_tokens,
        new as f64 / s.prefill_seconds.max(1e-9),
        s.generated_tokens,
        s.generated_tokens as f64 / s.decode_seconds.max(1e-9),
        s.finish_reason.as_str(),
    );
}
