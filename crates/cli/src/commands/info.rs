//! `frugal info`: what a model file holds, without running it.

use anyhow::Result;
use frugal_formats::GgufFile;
use frugal_models::{Gating, KvType, ModelConfig, ModelError, MoeConfig};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A GGUF model file, a safetensors checkpoint folder (described as converted at load), or a
    /// Hugging Face Hub reference (ORG/REPO[:QUANT][@REVISION], ORG/REPO/FILE.gguf), downloaded
    /// into the Hugging Face cache on first use.
    pub model: std::path::PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// The KV cache type the per-token figures are for (f32, f16, bf16, q8_0, q4_0).
    #[arg(long, default_value = "f16")]
    pub kv_type: KvType,
}

pub fn run(a: Args) -> Result<()> {
    let model = crate::load::resolve_model(&a.model.to_string_lossy())?;
    let gguf = match frugal_checkpoint::is_checkpoint(&model) {
        true => frugal_checkpoint::open(&model, &frugal_checkpoint::Options::default())?,
        false => GgufFile::open(&model)?,
    };
    let mut summary = Summary::of(&gguf)?;
    if frugal_checkpoint::is_checkpoint(&model) {
        checkpoint_summary(&model, &mut summary)?;
    }
    if a.json {
        print_json(&model, &gguf, &summary, a.kv_type)
    } else {
        print_text(&model, &gguf, &summary, a.kv_type);
        Ok(())
    }
}

/// What both output forms say about a file.
struct Summary {
    arch: String,
    /// Tensor count per type name.
    types: BTreeMap<String, usize>,
    n_params: u64,
    /// `GGUF vN`, or what else the model was read from.
    format: String,
    tokenizer: String,
    chat_template: bool,
    /// For a file without a chat template: the built-in one chats use (loader's choice).
    built_in_template: Option<&'static str>,
    /// The config parse fails for architectures we cannot run; info still describes the file.
    config: std::result::Result<ModelConfig, ModelError>,
}

impl Summary {
    fn of(gguf: &GgufFile) -> Result<Summary> {
        let arch = gguf.req_str("general.architecture")?.to_string();
        let mut types: BTreeMap<String, usize> = BTreeMap::new();
        let mut n_params = 0u64;
        for t in gguf.tensors() {
            *types.entry(t.ty.name().to_string()).or_default() += 1;
            n_params += t.n_elements();
        }
        let tokenizer = match gguf.opt_str("tokenizer.ggml.model")? {
            Some(m) => format!(
                "{m} (pre-tokenizer {}), {} tokens",
                gguf.opt_str("tokenizer.ggml.pre")?.unwrap_or("default"),
                gguf.opt_array("tokenizer.ggml.tokens")?
                    .map_or(0, |a| a.len())
            ),
            None => "none".to_string(),
        };
        let chat_template = gguf.opt_str("tokenizer.chat_template")?.is_some();
        let built_in_template = match chat_template {
            true => None,
            false => frugal_tokenizer::Tokenizer::from_gguf(gguf)
                .ok()
                .map(|t| frugal_loader::built_in_template(&t).0),
        };
        Ok(Summary {
            format: format!("GGUF v{}", gguf.version()),
            arch,
            types,
            n_params,
            tokenizer,
            chat_template,
            built_in_template,
            config: ModelConfig::from_gguf(gguf),
        })
    }
}

/// A checkpoint's format, and its tokenizer and chat template (from `tokenizer.json` and its
/// companions rather than GGUF metadata).
fn checkpoint_summary(dir: &Path, s: &mut Summary) -> Result<()> {
    let t = frugal_tokenizer::Tokenizer::from_file(&dir.join("tokenizer.json"))?;
    s.format = "safetensors checkpoint, converted at load".into();
    s.tokenizer = t.kind();
    s.chat_template = t.chat_template().is_some();
    s.built_in_template = (!s.chat_template).then(|| frugal_loader::built_in_template(&t).0);
    Ok(())
}

fn print_json(model: &Path, gguf: &GgufFile, s: &Summary, ty: KvType) -> Result<()> {
    let mut v = serde_json::json!({
        "file": model.display().to_string(),
        "format": s.format,
        "gguf_version": gguf.version(),
        "architecture": s.arch,
        "parameters": s.n_params,
        "file_bytes": gguf.file_size(),
        "tensor_types": s.types,
        "tokenizer": s.tokenizer,
        "chat_template": s.chat_template,
    });
    if let Some(name) = s.built_in_template {
        v["built_in_chat_template"] = name.into();
    }
    match &s.config {
        Ok(c) => add_config_json(&mut v, c, ty),
        Err(e) => v["unsupported"] = e.to_string().into(),
    }
    // Special-token ids, for clients that bias or stop on them (bench/serve_compare.py).
    if gguf.opt_str("tokenizer.ggml.model")?.is_some() {
        if let Ok(t) = frugal_tokenizer::Tokenizer::from_gguf(gguf) {
            v["bos_token_id"] = t.bos().into();
            v["eos_token_id"] = t.eos().into();
            v["eog_token_ids"] = t.eog_ids().into();
        }
    }
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

fn add_config_json(v: &mut serde_json::Value, c: &ModelConfig, ty: KvType) {
    v["context_length"] = c.n_ctx_train.into();
    v["layers"] = c.n_layer.into();
    v["embedding"] = c.n_embd.into();
    v["heads"] = c.n_head.into();
    v["kv_heads"] = c.n_head_kv.into();
    v["head_dim"] = c.head_dim_k.into();
    v["ffn"] = c.n_ff.into();
    v["vocab"] = c.n_vocab.into();
    v["kv_type"] = ty.name().into();
    v["kv_bytes_per_token"] = c.kv_bytes_per_token(ty).into();
    v["kv_bytes_per_token_by_type"] = KvType::ALL
        .iter()
        .map(|&t| (t.name().to_string(), c.kv_bytes_per_token(t).into()))
        .collect::<serde_json::Map<_, _>>()
        .into();
    if c.mla.is_some() {
        v["kv_bytes_per_token_without_mla"] = c.kv_bytes_per_token_unabsorbed(ty).into();
    }
    if let Some(window) = c.sliding_window() {
        let (full, sliding) = c.kv_bytes_per_token_split(ty);
        v["sliding_window"] = window.into();
        v["kv_bytes_per_token_full_layers"] = full.into();
        v["kv_bytes_per_token_sliding_layers"] = sliding.into();
        v["kv_bytes_per_sequence"] = window_memory(c, ty)
            .into_iter()
            .map(|m| {
                serde_json::json!({
                    "context": m.n_ctx,
                    "with_window": m.with_window,
                    "full_attention": m.full_attention,
                })
            })
            .collect();
    }
    if let Some(d) = &c.delta_net {
        v["linear_attention_layers"] = d.n_recurrent().into();
        v["state_bytes_per_sequence"] = c.state_bytes_per_seq().into();
        v["mtp_layers"] = c.n_nextn.into();
    }
    if let Some(m) = &c.moe {
        v["experts"] = m.n_expert.into();
        v["experts_used"] = m.n_expert_used.into();
    }
}

fn print_text(model: &Path, gguf: &GgufFile, s: &Summary, ty: KvType) {
    println!(
        "file:            {} ({})",
        model.display(),
        human_bytes(gguf.file_size())
    );
    println!("format:          {}", s.format);
    println!("architecture:    {}", s.arch);
    println!(
        "parameters:      {} ({})",
        human_count(s.n_params),
        s.n_params
    );
    let types: Vec<String> = s.types.iter().map(|(t, n)| format!("{t} {n}")).collect();
    println!("tensor types:    {}", types.join(", "));
    match &s.config {
        Ok(c) => print_config_text(c, ty),
        Err(e) => println!("runnable:        no: {e}"),
    }
    println!("tokenizer:       {}", s.tokenizer);
    match (s.chat_template, s.built_in_template) {
        (true, _) => println!("chat template:   yes"),
        (false, Some(name)) => println!("chat template:   no (chats use the built-in {name})"),
        (false, None) => println!("chat template:   no"),
    }
}

fn print_config_text(c: &ModelConfig, ty: KvType) {
    println!("context length:  {}", c.n_ctx_train);
    println!(
        "shape:           {} layers, embedding {}, {} heads / {} KV heads of {}, FFN {}, vocab {}",
        c.n_layer, c.n_embd, c.n_head, c.n_head_kv, c.head_dim_k, c.n_ff, c.n_vocab
    );
    if c.rope.n_rot < c.head_dim_k {
        println!(
            "rotary:          {} of {} dims per head",
            c.rope.n_rot, c.head_dim_k
        );
    }
    if let Some(m) = &c.moe {
        print_experts(m);
    }
    if c.n_nextn > 0 && c.delta_net.is_none() {
        println!(
            "MTP:             {} multi-token-prediction layer(s), loaded (draft head for speculative decoding)",
            c.n_nextn
        );
    }
    let others: Vec<String> = KvType::ALL
        .iter()
        .filter(|&&t| t != ty)
        .map(|&t| format!("{t}: {}", c.kv_bytes_per_token(t)))
        .collect();
    match &c.mla {
        Some(_) => println!(
            "KV cache:        {} bytes per token as {ty} ({}; latent + RoPE key, multi-head latent attention; full K/V would take {})",
            c.kv_bytes_per_token(ty),
            others.join(", "),
            c.kv_bytes_per_token_unabsorbed(ty)
        ),
        None => println!(
            "KV cache:        {} bytes per token as {ty} ({}; K and V{})",
            c.kv_bytes_per_token(ty),
            others.join(", "),
            match &c.delta_net {
                Some(_) => format!(", {} of {} layers", c.n_kv_layers(), c.n_layer),
                None => String::new(),
            }
        ),
    }
    for m in window_memory(c, ty) {
        println!(
            "KV per sequence: {} at {} tokens with the sliding window of {} ({:.0}% of the {} full attention would take)",
            human_bytes(m.with_window as u64),
            m.n_ctx,
            c.sliding_window().unwrap_or(0),
            100.0 * m.with_window as f64 / m.full_attention.max(1) as f64,
            human_bytes(m.full_attention as u64),
        );
    }
    if let Some(d) = &c.delta_net {
        println!(
            "linear attn:     {} Gated DeltaNet layers ({} key / {} value heads of {}, conv {}): {} bytes of state per sequence{}",
            d.n_recurrent(),
            d.n_k_heads,
            d.n_v_heads,
            d.head_dim,
            d.conv_kernel,
            c.state_bytes_per_seq(),
            match c.n_nextn {
                0 => String::new(),
                n => format!("; {n} multi-token-prediction layer(s)"),
            }
        );
    }
}

/// Routed experts: how many, how they are scored and weighted, and which layers are dense.
fn print_experts(m: &MoeConfig) {
    println!(
        "experts:         {} routed, {} used per token{} ({} scores{}{}){}",
        m.n_expert,
        m.n_expert_used,
        if m.n_ff_shared.is_some() {
            ", plus a shared expert"
        } else {
            ""
        },
        match m.gating {
            Gating::Softmax => "softmax",
            Gating::Sigmoid => "sigmoid",
        },
        if m.n_group > 1 {
            format!(", best {} of {} groups", m.n_group_used, m.n_group)
        } else {
            String::new()
        },
        if m.weights_scale != 0.0 && m.weights_scale != 1.0 {
            format!(", weights x{}", m.weights_scale)
        } else {
            String::new()
        },
        match m.n_dense_lead {
            0 => String::new(),
            n => format!("; first {n} layer(s) dense"),
        }
    );
}

/// A sequence's KV memory at one context length, for a model with sliding-window layers.
struct WindowMemory {
    n_ctx: usize,
    /// Full-attention layers for the whole context, sliding-window layers for their window.
    with_window: usize,
    /// Every attention layer for the whole context.
    full_attention: usize,
}

/// A sequence's KV memory at the model's trained context and at 32k tokens (what Gemma 3 is
/// judged at), with the sliding window and as full attention would take it; empty for a model
/// without sliding-window layers.
fn window_memory(c: &ModelConfig, ty: KvType) -> Vec<WindowMemory> {
    let Some(window) = c.sliding_window() else {
        return Vec::new();
    };
    let (full, sliding) = c.kv_bytes_per_token_split(ty);
    let mut contexts = vec![c.n_ctx_train, 32 << 10];
    contexts.dedup();
    contexts
        .into_iter()
        .map(|n_ctx| WindowMemory {
            n_ctx,
            with_window: full * n_ctx + sliding * n_ctx.min(window),
            full_attention: c.kv_bytes_per_token(ty) * n_ctx,
        })
        .collect()
}

pub fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.2} MB", b / 1e6)
    } else {
        format!("{:.1} kB", b / 1e3)
    }
}

pub fn human_count(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2}B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else {
        format!("{:.1}K", n / 1e3)
    }
}
