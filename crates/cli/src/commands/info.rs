//! `frugal info`: what a model file holds, without running it.

use anyhow::Result;
use frugal_formats::GgufFile;
use frugal_models::ModelConfig;
use std::collections::BTreeMap;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Path to a GGUF model file.
    pub model: std::path::PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let gguf = GgufFile::open(&a.model)?;
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
    // The config parse fails for architectures we cannot run; info still describes the file.
    let config = ModelConfig::from_gguf(&gguf);
    if a.json {
        let mut v = serde_json::json!({
            "file": a.model.display().to_string(),
            "gguf_version": gguf.version(),
            "architecture": arch,
            "parameters": n_params,
            "file_bytes": gguf.file_size(),
            "tensor_types": types,
            "tokenizer": tokenizer,
            "chat_template": chat_template,
        });
        match &config {
            Ok(c) => {
                v["context_length"] = c.n_ctx_train.into();
                v["layers"] = c.n_layer.into();
                v["embedding"] = c.n_embd.into();
                v["heads"] = c.n_head.into();
                v["kv_heads"] = c.n_head_kv.into();
                v["head_dim"] = c.head_dim_k.into();
                v["ffn"] = c.n_ff.into();
                v["vocab"] = c.n_vocab.into();
                v["kv_bytes_per_token"] = c.kv_bytes_per_token().into();
                if c.mla.is_some() {
                    v["kv_bytes_per_token_without_mla"] = c.kv_bytes_per_token_unabsorbed().into();
                }
                if let Some(m) = &c.moe {
                    v["experts"] = m.n_expert.into();
                    v["experts_used"] = m.n_expert_used.into();
                }
            }
            Err(e) => v["unsupported"] = e.to_string().into(),
        }
        // Special-token ids, for clients that bias or stop on them (bench/serve_compare.py).
        if gguf.opt_str("tokenizer.ggml.model")?.is_some() {
            if let Ok(t) = frugal_tokenizer::Tokenizer::from_gguf(&gguf) {
                v["bos_token_id"] = t.bos().into();
                v["eos_token_id"] = t.eos().into();
                v["eog_token_ids"] = t.eog_ids().into();
            }
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "file:            {} ({})",
        a.model.display(),
        human_bytes(gguf.file_size())
    );
    println!("format:          GGUF v{}", gguf.version());
    println!("architecture:    {arch}");
    println!("parameters:      {} ({n_params})", human_count(n_params));
    let types: Vec<String> = types.iter().map(|(t, n)| format!("{t} {n}")).collect();
    println!("tensor types:    {}", types.join(", "));
    match &config {
        Ok(c) => {
            println!("context length:  {}", c.n_ctx_train);
            println!(
                "shape:           {} layers, embedding {}, {} heads / {} KV heads of {}, FFN {}, vocab {}",
                c.n_layer, c.n_embd, c.n_head, c.n_head_kv, c.head_dim_k, c.n_ff, c.n_vocab
            );
            if let Some(m) = &c.moe {
                println!(
                    "experts:         {} routed, {} used per token{}",
                    m.n_expert,
                    m.n_expert_used,
                    if m.n_ff_shared.is_some() {
                        ", plus a shared expert"
                    } else {
                        ""
                    }
                );
            }
            match &c.mla {
                Some(_) => println!(
                    "KV cache:        {} bytes per token (f32 latent + RoPE key, multi-head latent attention; full K/V would take {})",
                    c.kv_bytes_per_token(),
                    c.kv_bytes_per_token_unabsorbed()
                ),
                None => println!(
                    "KV cache:        {} bytes per token (f32 K and V)",
                    c.kv_bytes_per_token()
                ),
            }
        }
        Err(e) => println!("runnable:        no: {e}"),
    }
    println!("tokenizer:       {tokenizer}");
    println!(
        "chat template:   {}",
        if chat_template { "yes" } else { "no" }
    );
    Ok(())
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
