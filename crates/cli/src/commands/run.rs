//! `frugal run`: generate text in the terminal, from a prompt or as an interactive chat. Both go
//! through the engine's one generation loop ([`Session`]), like the server's requests.

use crate::commands::chat_input::{ChatInput, Line};
use crate::load::{load_weights, warn, ModelArgs};
use crate::spec::SpecArgs;
use anyhow::{Context, Result};
use frugal_engine::sampler::SamplingParams;
use frugal_engine::session::{GenerateParams, GenerationStats, Session};
use frugal_engine::spec::Speculator;
use frugal_engine::FinishReason;
use frugal_loader::{ModelFile, ModelOptions, Warning};
use frugal_models::KvType;
use frugal_server::SpecMethod;
use serde_json::{json, Value};
use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

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
    /// A Jinja chat template file to use instead of the model's own (--chat).
    #[arg(long)]
    pub chat_template_file: Option<PathBuf>,
    /// Maximum tokens to generate (per turn in --chat).
    #[arg(short = 'n', long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Context size in tokens (default: the model's training context, at most 4096).
    #[arg(short = 'c', long)]
    pub ctx_size: Option<usize>,
    /// How the KV cache stores keys and values: f16 (the default), bf16, f32 (exact), q8_0 or
    /// q4_0.
    #[arg(long, default_value = "f16")]
    pub kv_type: KvType,
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
    #[command(flatten)]
    pub spec: SpecArgs,
}

pub fn run(a: Args) -> Result<()> {
    let chat_template = match &a.chat_template_file {
        Some(f) => Some(
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?,
        ),
        None => None,
    };
    let file = a.model.open(ModelOptions {
        ctx_size: a.ctx_size,
        chat_template,
        ..ModelOptions::default()
    })?;
    file.check_kv_type(a.kv_type)?;
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
        .validate(file.config.n_vocab)
        .context("invalid sampling parameters")?;
    let speculation = a.spec.speculation()?;
    let model = load_weights(&file)?;
    let draft = match speculation.as_ref().map(|s| &s.method) {
        Some(SpecMethod::Draft(path)) => {
            let draft = a.model.open_other(path)?;
            let weights = load_weights(&draft)?;
            Some((draft, weights))
        }
        _ => None,
    };
    let pool = file.thread_pool();
    let mut session =
        Session::new(&model, &file.tokenizer, &pool, file.n_ctx).with_kv_type(a.kv_type);
    if let Some(s) = speculation {
        let (n_blocks, block) = session.kv_blocks();
        let spec = match (&s.method, &draft) {
            (SpecMethod::Ngram, _) => Speculator::ngram(s.config),
            (SpecMethod::Draft(path), Some((d, weights))) => Speculator::draft_model(
                s.config,
                &model,
                &file.tokenizer,
                weights,
                &d.tokenizer,
                n_blocks,
                block,
            )
            .with_context(|| format!("--draft-model {}", path.display()))?,
            (SpecMethod::Mtp, _) => Speculator::mtp(s.config, &model, n_blocks, block)
                .with_context(|| format!("--spec mtp: {}", file.path.display()))?,
            (SpecMethod::Draft(_), None) => anyhow::bail!("--spec draft needs --draft-model FILE"),
        };
        session = session.with_speculation(spec);
    }
    if a.chat {
        chat(&a, &file, &mut session, &params)
    } else {
        complete(&a, &file, &mut session, &params)
    }
}

/// Writes to standard output, ignoring a closed pipe (`frugal run … | head`).
fn print(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

/// One raw completion of `-p` or `--prompt-tokens`.
fn complete(
    a: &Args,
    file: &ModelFile,
    session: &mut Session,
    params: &GenerateParams,
) -> Result<()> {
    let tokenizer = &file.tokenizer;
    let (prompt, ids) = match (&a.prompt, &a.prompt_tokens) {
        (Some(p), _) => (p.clone(), tokenizer.encode(p, !a.no_bos, true)?),
        (None, Some(ids)) => {
            let n_vocab = file.config.n_vocab;
            if let Some(bad) = ids.iter().find(|&&t| t as usize >= n_vocab) {
                anyhow::bail!("token id {bad} is outside the vocabulary of {n_vocab}");
            }
            (tokenizer.decode(ids, false), ids.clone())
        }
        (None, None) => anyhow::bail!("give a prompt with -p or --prompt-tokens, or use --chat"),
    };
    anyhow::ensure!(
        ids.len() < session.n_ctx(),
        "the prompt has {} tokens but the context holds {} (room is needed to generate)",
        ids.len(),
        session.n_ctx()
    );
    print(&prompt);
    let stats = session.generate(&ids, params, &mut |s: &str| {
        print(s);
        ControlFlow::Continue(())
    })?;
    print("\n");
    report(&stats);
    Ok(())
}

const CHAT_HELP: &str = "commands: /help this text, /clear forget the conversation, /exit quit \
(or Ctrl-D); Ctrl-C stops a reply";

/// The interactive chat: each turn renders the whole conversation with the chat template, and the
/// session's KV cache makes only the new tokens cost anything.
fn chat(a: &Args, file: &ModelFile, session: &mut Session, params: &GenerateParams) -> Result<()> {
    for w in &file.warnings {
        if matches!(w, Warning::NoChatTemplate { .. }) {
            warn(w);
        }
    }
    let system: Vec<Value> = a
        .system
        .iter()
        .map(|s| json!({"role": "system", "content": s}))
        .collect();
    let mut messages = system.clone();
    let mut input = ChatInput::new()?;
    if input.is_interactive() {
        eprintln!("{CHAT_HELP}");
    }
    loop {
        let line = match input.read_line()? {
            Line::Text(l) => l,
            Line::Interrupted => continue,
            Line::End => break,
        };
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/help" => eprintln!("{CHAT_HELP}"),
            "/clear" => {
                messages = system.clone();
                eprintln!("(conversation cleared)");
            }
            _ => {
                messages.push(json!({"role": "user", "content": line}));
                match reply(file, session, params, &messages, &input)? {
                    Some(text) => messages.push(json!({"role": "assistant", "content": text})),
                    // A cancelled turn is forgotten, question and all.
                    None => drop(messages.pop()),
                }
            }
        }
    }
    Ok(())
}

/// Generates the assistant's reply to `messages`, printing it as it comes; `None` when Ctrl-C
/// cancelled it.
fn reply(
    file: &ModelFile,
    session: &mut Session,
    params: &GenerateParams,
    messages: &[Value],
    input: &ChatInput,
) -> Result<Option<String>> {
    let rendered = file
        .template
        .render(messages, None, true, &serde_json::Map::new())?;
    let ids = file.tokenizer.encode(&rendered, false, true)?;
    let mut text = String::new();
    input.take_interrupt();
    let stats = session.generate(&ids, params, &mut |s: &str| {
        text.push_str(s);
        print(s);
        if input.take_interrupt() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    print("\n");
    report(&stats);
    Ok((stats.finish_reason != FinishReason::Aborted).then_some(text))
}

fn report(s: &GenerationStats) {
    let new = s.prompt_tokens - s.cached_tokens;
    // The first token comes with the prompt; decode speed is over the ones after it.
    let decode = match s.generated_tokens {
        0 | 1 => "-".to_string(),
        n => format!("{:.1}", (n - 1) as f64 / s.decode_seconds.max(1e-9)),
    };
    let _ = writeln!(
        std::io::stderr(),
        "prompt: {} tokens ({} cached), {:.1} tokens/s | generation: {} tokens, {decode} tokens/s | finish: {}",
        s.prompt_tokens,
        s.cached_tokens,
        new as f64 / s.prefill_seconds.max(1e-9),
        s.generated_tokens,
        s.finish_reason.as_str(),
    );
    if s.draft_tokens > 0 {
        let _ = writeln!(
            std::io::stderr(),
            "speculation: {} of {} guessed tokens accepted ({:.0} %)",
            s.accepted_tokens,
            s.draft_tokens,
            100.0 * s.accepted_tokens as f64 / s.draft_tokens as f64
        );
    }
}
