//! A Hugging Face `tokenizer.json` (plus `tokenizer_config.json`, `chat_template.jinja` and
//! `generation_config.json` beside it, when present).
//!
//! The normalizer, pre-tokenizer and model run in `tokenizers`; the added tokens are taken out of
//! it and matched by [`crate::special`] like a GGUF vocabulary's control and user-defined tokens
//! (`special: true` → control, otherwise user-defined). That keeps their ids exactly as the file
//! says: `tokenizers` renumbers added tokens it does not find in the model's vocabulary.

use crate::{
    attr, parse_byte_token, Model, Parts, SpecialIds, SpecialToken, StripRule, TokenizerError,
};
use serde_json::value::RawValue;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::Path;
use tokenizers::models::bpe::BPE;
use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;

/// The parts of a tokenizer.json we look at. The model (the bulk of the file) stays raw JSON
/// text until `tokenizers` deserializes it, without an intermediate `serde_json::Value` tree.
#[derive(serde::Deserialize)]
struct Spec {
    #[serde(default)]
    added_tokens: Vec<AddedToken>,
    #[serde(default)]
    normalizer: Option<Box<RawValue>>,
    #[serde(default)]
    pre_tokenizer: Option<Box<RawValue>>,
    #[serde(default)]
    post_processor: Option<Json>,
    #[serde(default)]
    decoder: Option<Json>,
    model: Box<RawValue>,
}

#[derive(serde::Deserialize)]
struct AddedToken {
    id: u32,
    content: String,
    #[serde(default)]
    special: bool,
    #[serde(default)]
    lstrip: bool,
    #[serde(default)]
    rstrip: bool,
}

pub(crate) fn load(path: &Path) -> Result<Parts, TokenizerError> {
    let err = |msg: String| TokenizerError::Load {
        file: path.display().to_string(),
        msg,
    };
    let spec = read_spec(path).map_err(err)?;
    let normalizer_json = part_json("normalizer", &spec.normalizer).map_err(err)?;
    let pre_tokenizer_json = part_json("pre_tokenizer", &spec.pre_tokenizer).map_err(err)?;
    let byte_encoded = mentions_byte_level(spec.decoder.as_ref().unwrap_or(&Json::Null))
        || mentions_byte_level(&pre_tokenizer_json);
    let add_space_prefix =
        !byte_encoded && (prepends_space(&normalizer_json) || prepends_space(&pre_tokenizer_json));
    let template = template_specials(spec.post_processor.as_ref().unwrap_or(&Json::Null));

    let (tok, model) = build_tokenizer(&spec).map_err(err)?;
    let vocab = Vocab::new(
        tok.get_vocab(false),
        &spec.added_tokens,
        model.byte_fallback,
    )
    .map_err(err)?;

    let dir = path.parent().unwrap_or(Path::new("."));
    let config = read_json(&dir.join("tokenizer_config.json")).map_err(err)?;
    let token_map = read_json(&dir.join("special_tokens_map.json")).map_err(err)?;
    let token_config = with_token_map(&config, &token_map);
    let mut specials = read_specials(&token_config, &vocab, template, model.unk.as_deref());
    let model_config = read_json(&dir.join("config.json")).map_err(err)?;
    ids_from_model_config(&mut specials.ids, &model_config, vocab.texts.len());
    let chat_template = read_chat_template(&config, dir);
    let generation = read_json(&dir.join("generation_config.json")).map_err(err)?;

    let level = if byte_encoded { ", byte-level" } else { "" };
    let n = vocab.texts.len();
    Ok(Parts {
        model: Model::Hf(Box::new(tok)),
        texts: vocab.texts,
        attrs: vocab.attrs,
        ids: specials.ids,
        added: vocab.added_ids,
        byte_encoded,
        add_bos: specials.add_bos,
        add_eos: specials.add_eos,
        add_space_prefix,
        extra_eog: extra_eog_ids(&generation),
        kind: format!("tokenizer.json ({}{level}), {n} tokens", model.kind),
        chat_template,
        // The file's own lstrip/rstrip flags say it all.
        strip_rule: StripRule::None,
    })
}

/// Reads and parses the tokenizer.json itself (the file's text is dropped once parsed).
fn read_spec(path: &Path) -> Result<Spec, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| format!("invalid JSON: {e}"))
}

/// A raw part of the file as a JSON tree (`Null` when absent), to inspect its type.
fn part_json(what: &str, raw: &Option<Box<RawValue>>) -> Result<Json, String> {
    match raw {
        Some(r) => {
            serde_json::from_str(r.get()).map_err(|e| format!("invalid JSON in {what}: {e}"))
        }
        None => Ok(Json::Null),
    }
}

/// What the tokenizer's model says about itself.
struct ModelInfo {
    kind: &'static str,
    byte_fallback: bool,
    unk: Option<String>,
}

/// The `tokenizers` tokenizer: the model, normalizer and pre-tokenizer. Added tokens are
/// matched before the model runs (see the module comment), BOS/EOS are added by us and decoding
/// is ours: nothing else of the file is needed.
fn build_tokenizer(spec: &Spec) -> Result<(tokenizers::Tokenizer, ModelInfo), String> {
    let cannot = |what: &str, e: serde_json::Error| format!("cannot load the {what}: {e}");
    let model_type: ModelType =
        serde_json::from_str(spec.model.get()).map_err(|e| cannot("model", e))?;
    let model = match model_type.kind.as_deref() {
        Some("BPE") => {
            let bpe: BpeJson =
                serde_json::from_str(spec.model.get()).map_err(|e| cannot("model", e))?;
            ModelWrapper::BPE(
                bpe.build()
                    .map_err(|e| format!("cannot build the BPE model: {e}"))?,
            )
        }
        // Other models (and files too old to name their model type) are rare enough to go
        // through `tokenizers`' own, slower, deserializer.
        _ => serde_json::from_str(spec.model.get()).map_err(|e| cannot("model", e))?,
    };
    let (kind, byte_fallback, unk) = match &model {
        ModelWrapper::BPE(m) => ("BPE", m.byte_fallback, m.unk_token.clone()),
        ModelWrapper::WordPiece(m) => ("WordPiece", false, Some(m.unk_token.clone())),
        ModelWrapper::WordLevel(m) => ("WordLevel", false, Some(m.unk_token.clone())),
        ModelWrapper::Unigram(m) => ("Unigram", m.byte_fallback(), None),
    };
    let mut tok = tokenizers::Tokenizer::new(model);
    if let Some(raw) = &spec.normalizer {
        let n: Option<NormalizerWrapper> =
            serde_json::from_str(raw.get()).map_err(|e| cannot("normalizer", e))?;
        tok.with_normalizer(n);
    }
    if let Some(raw) = &spec.pre_tokenizer {
        let p: Option<PreTokenizerWrapper> =
            serde_json::from_str(raw.get()).map_err(|e| cannot("pre-tokenizer", e))?;
        tok.with_pre_tokenizer(p);
    }
    let info = ModelInfo {
        kind,
        byte_fallback,
        unk,
    };
    Ok((tok, info))
}

/// Every id's text and attributes, from the model's vocabulary and the added tokens.
struct Vocab {
    model_vocab: HashMap<String, u32>,
    texts: Vec<String>,
    attrs: Vec<u16>,
    /// Added tokens the model's vocabulary does not have under the same id.
    added_ids: HashMap<String, u32>,
}

impl Vocab {
    fn new(
        model_vocab: HashMap<String, u32>,
        added: &[AddedToken],
        byte_fallback: bool,
    ) -> Result<Vocab, String> {
        let n = model_vocab
            .values()
            .chain(added.iter().map(|t| &t.id))
            .map(|&id| id as usize + 1)
            .max()
            .unwrap_or(0);
        if n == 0 {
            return Err("the vocabulary is empty".into());
        }
        let mut texts = vec![String::new(); n];
        // Ids nobody claims print nothing and are never produced.
        let mut attrs = vec![0u16; n];
        for (t, &id) in &model_vocab {
            let a = if byte_fallback && parse_byte_token(t).is_some() {
                attr::BYTE
            } else {
                attr::NORMAL
            };
            attrs[id as usize] = a;
            texts[id as usize] = t.clone();
        }
        let mut added_ids = HashMap::new();
        for t in added {
            let i = t.id as usize;
            texts[i] = t.content.clone();
            attrs[i] = if t.special {
                attr::CONTROL
            } else {
                attr::USER_DEFINED
            };
            if t.lstrip {
                attrs[i] |= attr::LSTRIP;
            }
            if t.rstrip {
                attrs[i] |= attr::RSTRIP;
            }
            if model_vocab.get(&t.content) != Some(&t.id) {
                added_ids.insert(t.content.clone(), t.id);
            }
        }
        Ok(Vocab {
            model_vocab,
            texts,
            attrs,
            added_ids,
        })
    }

    /// The id of a token text, an added token's first.
    fn id_of(&self, s: &str) -> Option<u32> {
        self.added_ids
            .get(s)
            .copied()
            .or_else(|| self.model_vocab.get(s).copied())
    }
}

/// The special tokens' ids and whether BOS and EOS are added.
struct Specials {
    ids: SpecialIds,
    add_bos: bool,
    add_eos: bool,
}

/// Special tokens from tokenizer_config.json, else from the post-processor's template (BOS,
/// and EOS when it is added) or the model's unknown token.
fn read_specials(
    config: &Json,
    vocab: &Vocab,
    (template_bos, template_eos): (Option<String>, Option<String>),
    model_unk: Option<&str>,
) -> Specials {
    let mut ids = SpecialIds::default();
    for (role, key) in [
        (SpecialToken::Bos, "bos_token"),
        (SpecialToken::Eos, "eos_token"),
        (SpecialToken::Unk, "unk_token"),
        (SpecialToken::Sep, "sep_token"),
        (SpecialToken::Pad, "pad_token"),
        (SpecialToken::Mask, "mask_token"),
    ] {
        let v = &config[key];
        if let Some(s) = v.as_str().or_else(|| v["content"].as_str()) {
            ids[role] = vocab.id_of(s);
        }
    }
    if ids[SpecialToken::Bos].is_none() {
        ids[SpecialToken::Bos] = template_bos.as_deref().and_then(|s| vocab.id_of(s));
    }
    if ids[SpecialToken::Unk].is_none() {
        ids[SpecialToken::Unk] = model_unk.and_then(|s| vocab.id_of(s));
    }
    // The post-processor's template is what adds BOS/EOS in `tokenizers`; the config's flags,
    // where present, are what transformers goes by.
    let add_bos = config["add_bos_token"]
        .as_bool()
        .unwrap_or(template_bos.is_some());
    let add_eos = config["add_eos_token"]
        .as_bool()
        .unwrap_or(template_eos.is_some());
    if ids[SpecialToken::Eos].is_none() && add_eos {
        ids[SpecialToken::Eos] = template_eos.as_deref().and_then(|s| vocab.id_of(s));
    }
    Specials {
        ids,
        add_bos,
        add_eos,
    }
}

/// tokenizer_config.json with the special tokens it does not name taken from
/// special_tokens_map.json, as transformers reads them.
fn with_token_map(config: &Json, token_map: &Json) -> Json {
    let mut merged = match config {
        Json::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    if let Json::Object(map) = token_map {
        for (k, v) in map {
            if merged.get(k).is_none_or(Json::is_null) {
                merged.insert(k.clone(), v.clone());
            }
        }
    }
    Json::Object(merged)
}

/// BOS and EOS that the tokenizer files leave unnamed, from a checkpoint's config.json
/// (`bos_token_id`, `eos_token_id`: one id or a list, the first), as llama.cpp's converter
/// takes them.
fn ids_from_model_config(ids: &mut SpecialIds, model_config: &Json, n_vocab: usize) {
    for (role, key) in [
        (SpecialToken::Bos, "bos_token_id"),
        (SpecialToken::Eos, "eos_token_id"),
    ] {
        let v = &model_config[key];
        let id = v.as_u64().or_else(|| v[0].as_u64());
        if ids[role].is_none() {
            ids[role] = id.filter(|&i| i < n_vocab as u64).map(|i| i as u32);
        }
    }
}

/// tokenizer_config.json's chat template (the default one of several), else
/// `chat_template.jinja` beside it.
fn read_chat_template(config: &Json, dir: &Path) -> Option<String> {
    match &config["chat_template"] {
        Json::String(s) => Some(s.clone()),
        // Several named templates: the default one.
        Json::Array(list) => list
            .iter()
            .find(|t| t["name"] == "default")
            .or_else(|| list.first())
            .and_then(|t| t["template"].as_str())
            .map(str::to_string),
        _ => std::fs::read_to_string(dir.join("chat_template.jinja")).ok(),
    }
}

/// generation_config.json's `eos_token_id` (one or a list): more end-of-generation ids.
fn extra_eog_ids(generation: &Json) -> Vec<u32> {
    match &generation["eos_token_id"] {
        Json::Number(v) => v.as_u64().into_iter().collect(),
        Json::Array(list) => list.iter().filter_map(Json::as_u64).collect(),
        _ => Vec::new(),
    }
    .into_iter()
    .filter_map(|v| u32::try_from(v).ok())
    .collect()
}

/// Just the model's type, to pick a deserializer.
#[derive(serde::Deserialize)]
struct ModelType {
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// A BPE model as tokenizer.json spells it. `tokenizers`' own deserializer buffers the whole
/// model several times over (untagged enums); reading it directly is several times faster.
#[derive(serde::Deserialize)]
struct BpeJson {
    vocab: ahash::AHashMap<String, u32>,
    merges: Vec<Merge>,
    #[serde(default)]
    dropout: Option<f32>,
    #[serde(default)]
    unk_token: Option<String>,
    #[serde(default)]
    continuing_subword_prefix: Option<String>,
    #[serde(default)]
    end_of_word_suffix: Option<String>,
    #[serde(default)]
    fuse_unk: bool,
    #[serde(default)]
    byte_fallback: bool,
    #[serde(default)]
    ignore_merges: bool,
}

impl BpeJson {
    fn build(self) -> tokenizers::Result<BPE> {
        let mut b = BPE::builder()
            .vocab_and_merges(
                self.vocab,
                self.merges.into_iter().map(|m| (m.0, m.1)).collect(),
            )
            .fuse_unk(self.fuse_unk)
            .byte_fallback(self.byte_fallback)
            .ignore_merges(self.ignore_merges);
        if let Some(p) = self.dropout {
            b = b.dropout(p);
        }
        if let Some(t) = self.unk_token {
            b = b.unk_token(t);
        }
        if let Some(p) = self.continuing_subword_prefix {
            b = b.continuing_subword_prefix(p);
        }
        if let Some(s) = self.end_of_word_suffix {
            b = b.end_of_word_suffix(s);
        }
        b.build()
    }
}

/// One merge: `["a", "b"]`, or `"a b"` in older files.
struct Merge(String, String);

impl<'de> serde::Deserialize<'de> for Merge {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Merge, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Merge;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a merge: [\"a\", \"b\"] or \"a b\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Merge, E> {
                match s.split_once(' ') {
                    Some((a, b)) if !b.contains(' ') => Ok(Merge(a.to_string(), b.to_string())),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(s), &self)),
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Merge, A::Error> {
                let a: String = seq
                    .next_element()?
                    .ok_or_else(|| serde::de::Error::invalid_length(0, &self))?;
                let b: String = seq
                    .next_element()?
                    .ok_or_else(|| serde::de::Error::invalid_length(1, &self))?;
                if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(serde::de::Error::invalid_length(3, &self));
                }
                Ok(Merge(a, b))
            }
        }
        d.deserialize_any(V)
    }
}

/// The special tokens a `TemplateProcessing` post-processor puts before and after a single
/// sequence (directly or inside a `Sequence` of processors).
fn template_specials(pp: &Json) -> (Option<String>, Option<String>) {
    let template = match pp["type"].as_str() {
        Some("TemplateProcessing") => pp,
        Some("Sequence") => match pp["processors"]
            .as_array()
            .and_then(|list| list.iter().find(|p| p["type"] == "TemplateProcessing"))
        {
            Some(t) => t,
            None => return (None, None),
        },
        _ => return (None, None),
    };
    let Some(single) = template["single"].as_array() else {
        return (None, None);
    };
    let special = |piece: Option<&Json>| {
        piece
            .and_then(|p| p["SpecialToken"]["id"].as_str())
            .map(str::to_string)
    };
    (special(single.first()), special(single.last()))
}

/// Whether a normalizer/pre-tokenizer/decoder (or a `Sequence` of them) is byte-level.
fn mentions_byte_level(v: &Json) -> bool {
    match v["type"].as_str() {
        Some("ByteLevel") => true,
        Some("Sequence") => ["pretokenizers", "decoders", "normalizers"]
            .iter()
            .filter_map(|k| v[*k].as_array())
            .flatten()
            .any(mentions_byte_level),
        _ => false,
    }
}

/// Whether SentencePiece's dummy prefix is added: a `Prepend("▁")` normalizer or a `Metaspace`
/// pre-tokenizer that prepends.
fn prepends_space(v: &Json) -> bool {
    match v["type"].as_str() {
        Some("Prepend") => v["prepend"] == "▁",
        Some("Metaspace") => {
            v["add_prefix_space"] == true
                || matches!(v["prepend_scheme"].as_str(), Some("always" | "first"))
        }
        Some("Sequence") => ["pretokenizers", "normalizers"]
            .iter()
            .filter_map(|k| v[*k].as_array())
            .flatten()
            .any(prepends_space),
        _ => false,
    }
}

/// A JSON file that may be absent (→ `Null`) but must be valid when present.
fn read_json(path: &Path) -> Result<Json, String> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            serde_json::from_str(&s).map_err(|e| format!("{}: invalid JSON: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Json::Null),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn template_bos_and_eos() {
        let pp = json!({"type": "Sequence", "processors": [
            {"type": "ByteLevel"},
            {"type": "TemplateProcessing", "single": [
                {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}}]}]});
        assert_eq!(
            super::template_specials(&pp),
            (Some("<|begin_of_text|>".to_string()), None)
        );
        assert_eq!(super::template_specials(&json!(null)), (None, None));
    }

    #[test]
    fn byte_level_and_dummy_prefix_detection() {
        assert!(super::mentions_byte_level(&json!({"type": "ByteLevel"})));
        assert!(super::mentions_byte_level(
            &json!({"type": "Sequence", "pretokenizers": [{"type": "Split"}, {"type": "ByteLevel"}]})
        ));
        assert!(!super::mentions_byte_level(&json!({"type": "Metaspace"})));
        assert!(super::prepends_space(
            &json!({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}]})
        ));
        assert!(super::prepends_space(
            &json!({"type": "Metaspace", "prepend_scheme": "first"})
        ));
        assert!(!super::prepends_space(
            &json!({"type": "Metaspace", "prepend_scheme": "never"})
        ));
    }
}
