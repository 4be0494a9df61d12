//! Tokenizers for frugal: built from GGUF metadata (`tokenizer.ggml.*`) or a Hugging Face
//! `tokenizer.json`, reproducing llama.cpp's tokenization; end-of-generation tokens; and a
//! streaming detokenizer that never splits a UTF-8 character.
//!
//! Byte-level BPE is run by the `tokenizers` crate. From GGUF we assemble the equivalent
//! `tokenizer.json` (vocabulary, merges, and the pre-tokenizer that `tokenizer.ggml.pre` names),
//! so both sources share one well-tested implementation.

mod byte_level;
mod stream;

pub use stream::StreamDecoder;

use frugal_formats::{GgufError, GgufFile, Value};
use serde_json::{json, Map, Value as Json};
use std::path::Path;

/// Pre-tokenizer names (`tokenizer.ggml.pre`) and their HF configuration.
const PRE_TOKENIZERS: &[(&[&str], &str)] = &[
    (&["qwen2"], include_str!("pre/qwen2.json")),
    (
        &["llama-bpe", "llama3", "llama-v3"],
        include_str!("pre/llama-bpe.json"),
    ),
    (&["deepseek-llm"], include_str!("pre/deepseek-llm.json")),
    (&["deepseek-v3"], include_str!("pre/deepseek-v3.json")),
    (
        &["gpt-2", "gpt2", "default"],
        include_str!("pre/gpt-2.json"),
    ),
];

/// Token texts llama.cpp treats as end of generation besides the eos/eot/eom ids.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<｜end▁of▁sentence｜>",
];

// GGUF token types.
const TOKEN_UNKNOWN: i64 = 2;
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{file}: tokenizer model '{model}' is not supported (supported: gpt2)")]
    UnsupportedModel { file: String, model: String },
    #[error("{file}: pre-tokenizer '{pre}' is not supported (supported: {supported})")]
    UnsupportedPre {
        file: String,
        pre: String,
        supported: String,
    },
    #[error("{file}: metadata key '{key}': {msg}")]
    BadMetadata {
        file: String,
        key: String,
        msg: String,
    },
    #[error("{file}: {msg}")]
    Load { file: String, msg: String },
    #[error("tokenization failed: {0}")]
    Encode(String),
}

/// Which special token's text to look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialToken {
    Bos,
    Eos,
    Pad,
}

/// A tokenizer: text to ids and back.
pub struct Tokenizer {
    /// Matches control and user-defined token texts in the input (parse_special = true).
    with_special: tokenizers::Tokenizer,
    /// Matches only user-defined tokens, like llama.cpp with parse_special = false.
    plain: tokenizers::Tokenizer,
    /// Token text by id.
    texts: Vec<String>,
    /// Raw bytes by id.
    bytes: Vec<Vec<u8>>,
    special: Vec<bool>,
    bos: Option<u32>,
    eos: Option<u32>,
    pad: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    eog: Vec<u32>,
    kind: String,
    chat_template: Option<String>,
}

impl Tokenizer {
    /// Builds the tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata (a
    /// vocabulary-only file works).
    pub fn from_gguf(gguf: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        let file = gguf.name().to_string();
        let bad = |key: &str, msg: String| TokenizerError::BadMetadata {
            file: file.clone(),
            key: key.to_string(),
            msg,
        };
        let model = gguf.req_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel {
                file,
                model: model.to_string(),
            });
        }
        let pre = gguf.opt_str("tokenizer.ggml.pre")?.unwrap_or("default");
        let pre_config = PRE_TOKENIZERS
            .iter()
            .find(|(names, _)| names.contains(&pre))
            .map(|(_, cfg)| *cfg)
            .ok_or_else(|| TokenizerError::UnsupportedPre {
                file: file.clone(),
                pre: pre.to_string(),
                supported: PRE_TOKENIZERS
                    .iter()
                    .flat_map(|(n, _)| n.iter().copied())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let texts: Vec<String> =
            strings(gguf.req_array("tokenizer.ggml.tokens")?).map_err(|i| {
                bad(
                    "tokenizer.ggml.tokens",
                    format!("entry {i} is not a string"),
                )
            })?;
        if texts.is_empty() {
            return Err(bad("tokenizer.ggml.tokens", "is empty".into()));
        }
        let types: Vec<i64> = match gguf.opt_array("tokenizer.ggml.token_type")? {
            Some(a) => a
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_i64().ok_or_else(|| {
                        bad(
                            "tokenizer.ggml.token_type",
                            format!("entry {i} is not an integer"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
            None => vec![1; texts.len()],
        };
        if types.len() != texts.len() {
            return Err(bad(
                "tokenizer.ggml.token_type",
                format!("has {} entries for {} tokens", types.len(), texts.len()),
            ));
        }
        let merges: Vec<Json> = match gguf.opt_array("tokenizer.ggml.merges")? {
            Some(a) => strings(a)
                .map_err(|i| {
                    bad(
                        "tokenizer.ggml.merges",
                        format!("entry {i} is not a string"),
                    )
                })?
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    m.split_once(' ')
                        .map(|(a, b)| json!([a, b]))
                        .ok_or_else(|| {
                            bad(
                                "tokenizer.ggml.merges",
                                format!("entry {i} '{m}' is not 'a b'"),
                            )
                        })
                })
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let id = |key: &str| -> Result<Option<u32>, TokenizerError> {
            match gguf.opt_u32(key)? {
                Some(v) if (v as usize) < texts.len() => Ok(Some(v)),
                Some(v) => Err(bad(
                    key,
                    format!("id {v} is outside the vocabulary of {}", texts.len()),
                )),
                None => Ok(None),
            }
        };
        let bos = id("tokenizer.ggml.bos_token_id")?;
        let eos = id("tokenizer.ggml.eos_token_id")?;
        let pad = id("tokenizer.ggml.padding_token_id")?;
        let mut eog: Vec<u32> = [
            eos,
            id("tokenizer.ggml.eot_token_id")?,
            id("tokenizer.ggml.eom_token_id")?,
        ]
        .into_iter()
        .flatten()
        .collect();
        let llama3 = matches!(pre, "llama-bpe" | "llama3" | "llama-v3");
        let add_bos = gguf
            .opt_bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(llama3);
        let add_eos = gguf
            .opt_bool("tokenizer.ggml.add_eos_token")?
            .unwrap_or(false);

        let special: Vec<bool> = types
            .iter()
            .map(|&t| t == TOKEN_CONTROL || t == TOKEN_USER_DEFINED || t == TOKEN_UNKNOWN)
            .collect();
        for (i, t) in texts.iter().enumerate() {
            if EOG_TEXTS.contains(&t.as_str()) && !eog.contains(&(i as u32)) {
                eog.push(i as u32);
            }
        }
        let mut vocab = Map::new();
        for (i, t) in texts.iter().enumerate() {
            vocab.entry(t.clone()).or_insert(json!(i));
        }
        let added = |include_control: bool| -> Vec<Json> {
            types
                .iter()
                .enumerate()
                .filter(|(_, &t)| {
                    t == TOKEN_USER_DEFINED || (include_control && t == TOKEN_CONTROL)
                })
                .map(|(i, &t)| {
                    json!({"id": i, "content": texts[i], "single_word": false, "lstrip": false,
                           "rstrip": false, "normalized": false, "special": t == TOKEN_CONTROL})
                })
                .collect()
        };
        let pre_json: Json =
            serde_json::from_str(pre_config).expect("embedded pre-tokenizer JSON is valid");
        let build = |include_control: bool| -> Result<tokenizers::Tokenizer, TokenizerError> {
            let spec = json!({
                "version": "1.0", "truncation": null, "padding": null,
                "added_tokens": added(include_control),
                "normalizer": pre_json["normalizer"],
                "pre_tokenizer": pre_json["pre_tokenizer"],
                "post_processor": null,
                "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
                "model": {"type": "BPE", "dropout": null, "unk_token": null,
                          "continuing_subword_prefix": null, "end_of_word_suffix": null,
                          "fuse_unk": false, "byte_fallback": false, "ignore_merges": llama3,
                          "vocab": vocab, "merges": merges},
            });
            spec.to_string()
                .parse::<tokenizers::Tokenizer>()
                .map_err(|e| TokenizerError::Load {
                    file: file.clone(),
                    msg: format!("cannot build the tokenizer: {e}"),
                })
        };
        let bytes = texts
            .iter()
            .zip(&special)
            .map(|(t, &s)| {
                if s {
                    t.as_bytes().to_vec()
                } else {
                    byte_level::decode(t)
                }
            })
            .collect();
        Ok(Tokenizer {
            with_special: build(true)?,
            plain: build(false)?,
            kind: format!(
                "byte-level BPE (gpt2, pre-tokenizer {pre}), {} tokens",
                texts.len()
            ),
            texts,
            bytes,
            special,
            bos,
            eos,
            pad,
            add_bos,
            add_eos,
            eog,
            chat_template: gguf.opt_str("tokenizer.chat_template")?.map(str::to_string),
        })
    }

    /// Loads a Hugging Face `tokenizer.json`, with `tokenizer_config.json` beside it (if present)
    /// for the BOS/EOS tokens and the chat template.
    pub fn from_file(path: &Path) -> Result<Tokenizer, TokenizerError> {
        let file = path.display().to_string();
        let load_err = |msg: String| TokenizerError::Load {
            file: file.clone(),
            msg,
        };
        let text = std::fs::read_to_string(path).map_err(|e| load_err(e.to_string()))?;
        let mut spec: Json =
            serde_json::from_str(&text).map_err(|e| load_err(format!("invalid JSON: {e}")))?;
        let with_special: tokenizers::Tokenizer = text
            .parse()
            .map_err(|e| load_err(format!("cannot load the tokenizer: {e}")))?;
        // The plain variant keeps only non-special added tokens.
        if let Some(Json::Array(added)) = spec.get_mut("added_tokens") {
            added.retain(|t| t["special"] != Json::Bool(true));
        }
        let plain: tokenizers::Tokenizer = spec
            .to_string()
            .parse()
            .map_err(|e| load_err(format!("cannot load the tokenizer: {e}")))?;
        let n = with_special.get_vocab_size(true);
        let mut texts = vec![String::new(); n];
        for (t, i) in with_special.get_vocab(true) {
            if let Some(slot) = texts.get_mut(i as usize) {
                *slot = t;
            }
        }
        let mut special = vec![false; n];
        for (i, t) in with_special.get_added_tokens_decoder() {
            if let Some(s) = special.get_mut(i as usize) {
                *s = t.special || !t.normalized;
            }
        }
        let byte_level = matches!(spec["decoder"]["type"].as_str(), Some("ByteLevel"));
        let bytes = texts
            .iter()
            .zip(&special)
            .enumerate()
            .map(|(i, (t, &s))| {
                if s {
                    t.as_bytes().to_vec()
                } else if byte_level {
                    byte_level::decode(t)
                } else {
                    with_special
                        .decode(&[i as u32], false)
                        .unwrap_or_default()
                        .into_bytes()
                }
            })
            .collect();
        let config: Json = path
            .parent()
            .map(|d| d.join("tokenizer_config.json"))
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Json::Null);
        let token_of = |key: &str| -> Option<u32> {
            let v = &config[key];
            let s = v.as_str().or_else(|| v["content"].as_str())?;
            with_special.token_to_id(s)
        };
        let bos = token_of("bos_token");
        let eos = token_of("eos_token");
        let pad = token_of("pad_token");
        let mut eog: Vec<u32> = eos.into_iter().collect();
        for (i, t) in texts.iter().enumerate() {
            if EOG_TEXTS.contains(&t.as_str()) && !eog.contains(&(i as u32)) {
                eog.push(i as u32);
            }
        }
        Ok(Tokenizer {
            kind: format!("tokenizer.json ({} tokens)", n),
            with_special,
            plain,
            texts,
            bytes,
            special,
            bos,
            eos,
            pad,
            add_bos: config["add_bos_token"].as_bool().unwrap_or(false),
            add_eos: config["add_eos_token"].as_bool().unwrap_or(false),
            eog,
            chat_template: config["chat_template"].as_str().map(str::to_string),
        })
    }

    /// Text to token ids. `add_special` adds BOS/EOS as the model asks; `parse_special` matches
    /// control-token texts such as `<|im_start|>` in `text` (user-defined tokens always match).
    pub fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let tok = if parse_special {
            &self.with_special
        } else {
            &self.plain
        };
        let enc = tok
            .encode(text, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.get_ids().len() + 2);
        if add_special && self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        if add_special && self.add_eos {
            ids.extend(self.eos);
        }
        Ok(ids)
    }

    /// Token ids to text; invalid UTF-8 (only possible at the very end of a cut sequence) is
    /// replaced.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            if skip_special && self.is_special(id) {
                continue;
            }
            bytes.extend_from_slice(self.token_bytes_ref(id));
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn token_bytes_ref(&self, id: u32) -> &[u8] {
        self.bytes.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// The bytes a token stands for (for special tokens, their text).
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        self.token_bytes_ref(id).to_vec()
    }

    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.texts.get(id as usize).map(String::as_str)
    }

    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.with_special.token_to_id(text)
    }

    pub fn vocab_size(&self) -> usize {
        self.texts.len()
    }

    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Ids that end a generation.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    /// Control, user-defined and unknown tokens.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// A one-line description, e.g. for `frugal info`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The text of a special token, for chat templates.
    pub fn special_token_text(&self, which: SpecialToken) -> Option<&str> {
        let id = match which {
            SpecialToken::Bos => self.bos,
            SpecialToken::Eos => self.eos,
            SpecialToken::Pad => self.pad,
        }?;
        self.token_text(id)
    }
}

/// All strings of an array, or the index of the first non-string.
fn strings(a: &[Value]) -> Result<Vec<String>, usize> {
    a.iter()
        .enumerate()
        .map(|(i, v)| v.as_str().map(str::to_string).ok_or(i))
        .collect()
}
