//! `frugal tokenize` and `frugal detokenize`: the model's own tokenizer, from the command line.

use anyhow::Result;
use frugal_tokenizer::Tokenizer;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct TokenizeArgs {
    /// A GGUF model (a vocabulary-only GGUF works), a tokenizer.json or a folder holding one, or a
    /// Hugging Face Hub reference (ORG/REPO[:QUANT][@REVISION]).
    pub model: PathBuf,
    /// The text to tokenize.
    #[arg(long)]
    pub text: String,
    /// Prepend BOS / append EOS as the model's metadata asks.
    #[arg(long)]
    pub add_special: bool,
    /// Treat special-token texts such as `<|im_start|>` as plain text instead of matching them.
    #[arg(long)]
    pub no_parse_special: bool,
}

#[derive(clap::Args, Debug)]
pub struct DetokenizeArgs {
    /// A GGUF model (a vocabulary-only GGUF works), a tokenizer.json or a folder holding one, or a
    /// Hugging Face Hub reference (ORG/REPO[:QUANT][@REVISION]).
    pub model: PathBuf,
    /// Comma-separated token ids.
    #[arg(long, value_delimiter = ',', required = true)]
    pub ids: Vec<u32>,
    /// Leave out the text of special tokens.
    #[arg(long)]
    pub skip_special: bool,
}

/// A GGUF model (a vocabulary-only one works), a tokenizer.json, or a folder holding one; or a
/// Hub reference to one (resolved, and downloaded if need be, first).
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    let path = crate::load::resolve_model(&path.to_string_lossy())?;
    // The errors name the file.
    Ok(frugal_loader::load_tokenizer(&path)?)
}

pub fn run_tokenize(a: TokenizeArgs) -> Result<()> {
    let tok = load_tokenizer(&a.model)?;
    let ids = tok.encode(&a.text, a.add_special, !a.no_parse_special)?;
    println!("{}", serde_json::to_string(&ids)?);
    Ok(())
}

pub fn run_detokenize(a: DetokenizeArgs) -> Result<()> {
    let tok = load_tokenizer(&a.model)?;
    if let Some(bad) = a.ids.iter().find(|&&id| id as usize >= tok.vocab_size()) {
        anyhow::bail!(
            "token id {bad} is out of range (vocabulary has {} entries)",
            tok.vocab_size()
        );
    }
    println!("{}", tok.decode(&a.ids, a.skip_special));
    Ok(())
}
