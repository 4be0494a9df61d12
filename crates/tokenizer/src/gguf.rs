//! The tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata.

use crate::pre::{self, PreTokenizer};
use crate::{attr, spm::Spm, Model, Parts, SpecialIds, SpecialToken, StripRule, TokenizerError};
use frugal_formats::GgufFile;
use std::collections::HashMap;
use tokenizers::models::bpe::BPE;

const SUPPORTED_MODELS: &str = "gpt2 (byte-level BPE), llama (SentencePiece)";

/// Metadata keys of the tokens with special roles, in llama.cpp's order (a later key overrides an
/// earlier one for the same role, as there).
const ROLE_KEYS: &[(SpecialToken, &str)] = &[
    (SpecialToken::Bos, "tokenizer.ggml.bos_token_id"),
    (SpecialToken::Eos, "tokenizer.ggml.eos_token_id"),
    (SpecialToken::Eot, "tokenizer.ggml.eot_token_id"),
    (SpecialToken::Eom, "tokenizer.ggml.eom_token_id"),
    (SpecialToken::Unk, "tokenizer.ggml.unknown_token_id"),
    (SpecialToken::Sep, "tokenizer.ggml.seperator_token_id"),
    (SpecialToken::Pad, "tokenizer.ggml.padding_token_id"),
    (SpecialToken::Mask, "tokenizer.ggml.mask_token_id"),
    (SpecialToken::FimPre, "tokenizer.ggml.fim_pre_token_id"),
    (SpecialToken::FimSuf, "tokenizer.ggml.fim_suf_token_id"),
    (SpecialToken::FimMid, "tokenizer.ggml.fim_mid_token_id"),
    (SpecialToken::FimPad, "tokenizer.ggml.fim_pad_token_id"),
    (SpecialToken::FimRep, "tokenizer.ggml.fim_rep_token_id"),
    (SpecialToken::FimSep, "tokenizer.ggml.fim_sep_token_id"),
    (SpecialToken::FimPre, "tokenizer.ggml.prefix_token_id"),
    (SpecialToken::FimSuf, "tokenizer.ggml.suffix_token_id"),
    (SpecialToken::FimMid, "tokenizer.ggml.middle_token_id"),
];

pub(crate) fn load(gguf: &GgufFile) -> Result<Parts, TokenizerError> {
    let is_bpe = read_is_bpe(gguf)?;
    // Checked before the vocabulary is read so that an unsupported model fails fast.
    let pre_name = match gguf.opt_str("tokenizer.ggml.pre")? {
        None | Some("") => "default",
        Some(name) => name,
    };
    let pre = if is_bpe {
        Some(find_pre(gguf, pre_name)?)
    } else {
        None
    };
    let texts = read_texts(gguf)?;
    let n = texts.len();
    let attrs = read_attrs(gguf, n)?;
    let ids = read_special_ids(gguf, n, is_bpe)?;

    let add_bos_default = pre.is_some_and(|p| p.default_add_bos) || !is_bpe;
    let add_bos = gguf
        .opt_bool("tokenizer.ggml.add_bos_token")?
        .unwrap_or(add_bos_default);
    let add_eos = gguf
        .opt_bool("tokenizer.ggml.add_eos_token")?
        .unwrap_or(false);
    let add_space_prefix = gguf
        .opt_bool("tokenizer.ggml.add_space_prefix")?
        .unwrap_or(!is_bpe);
    let chat_template = gguf.opt_str("tokenizer.chat_template")?.map(str::to_string);

    let (model, kind) = match pre {
        Some(pre) => (
            bpe_model(gguf, &texts, pre)?,
            format!("BPE (gpt2, pre-tokenizer {pre_name}), {n} tokens"),
        ),
        None => (
            spm_model(gguf, &texts, ids[SpecialToken::Unk])?,
            format!("SentencePiece BPE (llama), {n} tokens"),
        ),
    };
    let strip_rule = read_strip_rule(gguf, pre_name)?;

    Ok(Parts {
        model,
        texts,
        attrs,
        ids,
        added: HashMap::new(),
        byte_encoded: is_bpe,
        add_bos,
        add_eos,
        add_space_prefix,
        extra_eog: Vec::new(),
        kind,
        chat_template,
        strip_rule,
    })
}

/// An error in the value of metadata `key`.
fn bad(gguf: &GgufFile, key: &str, msg: String) -> TokenizerError {
    TokenizerError::BadMetadata {
        file: gguf.name().to_string(),
        key: key.to_string(),
        msg,
    }
}

/// `tokenizer.ggml.model`: true for byte-level BPE (`gpt2`), false for SentencePiece (`llama`).
fn read_is_bpe(gguf: &GgufFile) -> Result<bool, TokenizerError> {
    match gguf.req_str("tokenizer.ggml.model")? {
        "gpt2" => Ok(true),
        "llama" => Ok(false),
        other => Err(TokenizerError::UnsupportedModel {
            file: gguf.name().to_string(),
            model: other.to_string(),
            supported: SUPPORTED_MODELS.to_string(),
        }),
    }
}

/// The pre-tokenizer named `pre_name`, if frugal knows it.
fn find_pre(gguf: &GgufFile, pre_name: &str) -> Result<&'static PreTokenizer, TokenizerError> {
    pre::find(pre_name).ok_or_else(|| TokenizerError::UnsupportedPre {
        file: gguf.name().to_string(),
        pre: pre_name.to_string(),
        supported: pre::supported_names(),
    })
}

/// `tokenizer.ggml.tokens`: every token's text, at least one and no more than ids can number.
fn read_texts(gguf: &GgufFile) -> Result<Vec<String>, TokenizerError> {
    const TOKENS: &str = "tokenizer.ggml.tokens";
    let texts: Vec<String> = gguf
        .req_array(TOKENS)?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str().map(str::to_string).ok_or_else(|| {
                bad(
                    gguf,
                    TOKENS,
                    format!("entry {i} is a {}, not a string", v.type_name()),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let n = texts.len();
    if n == 0 {
        return Err(bad(gguf, TOKENS, "is empty".into()));
    }
    if n > u32::MAX as usize {
        return Err(bad(
            gguf,
            TOKENS,
            format!("has {n} entries, more than token ids can number"),
        ));
    }
    Ok(texts)
}

/// `tokenizer.ggml.token_type` as token attributes (all normal when absent).
fn read_attrs(gguf: &GgufFile, n: usize) -> Result<Vec<u16>, TokenizerError> {
    const TYPES: &str = "tokenizer.ggml.token_type";
    let Some(types) = gguf.opt_array(TYPES)? else {
        return Ok(vec![attr::NORMAL; n]);
    };
    if types.len() != n {
        return Err(bad(
            gguf,
            TYPES,
            format!("has {} entries for {n} tokens", types.len()),
        ));
    }
    types
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let t = v.as_i64().ok_or_else(|| {
                bad(
                    gguf,
                    TYPES,
                    format!("entry {i} is a {}, not an integer", v.type_name()),
                )
            })?;
            Ok(match t {
                1 => attr::NORMAL,
                2 => attr::UNKNOWN,
                3 => attr::CONTROL,
                4 => attr::USER_DEFINED,
                5 => attr::UNUSED,
                6 => attr::BYTE,
                // Undefined: llama.cpp neither matches nor prints such tokens.
                _ => 0,
            })
        })
        .collect()
}

/// The ids of the tokens with special roles, from [`ROLE_KEYS`] over llama.cpp's defaults.
fn read_special_ids(gguf: &GgufFile, n: usize, is_bpe: bool) -> Result<SpecialIds, TokenizerError> {
    let mut ids = SpecialIds::default();
    if !is_bpe {
        // llama.cpp's SentencePiece defaults, for files that do not name them.
        for (role, id) in [
            (SpecialToken::Unk, 0),
            (SpecialToken::Bos, 1),
            (SpecialToken::Eos, 2),
        ] {
            if id < n as u32 {
                ids[role] = Some(id);
            }
        }
    }
    for &(role, key) in ROLE_KEYS {
        let Some(v) = gguf.get(key) else { continue };
        let id = v
            .as_i64()
            .ok_or_else(|| bad(gguf, key, format!("is a {}, not an integer", v.type_name())))?;
        // Like llama.cpp, an id outside the vocabulary keeps the default rather than failing.
        if let Some(id) = u32::try_from(id).ok().filter(|&id| (id as usize) < n) {
            ids[role] = Some(id);
        }
    }
    Ok(ids)
}

/// Byte-level BPE through `tokenizers`, with llama.cpp's pre-tokenizer.
fn bpe_model(
    gguf: &GgufFile,
    texts: &[String],
    pre: &PreTokenizer,
) -> Result<Model, TokenizerError> {
    let bpe = build_bpe(gguf, texts, pre.ignore_merges)?;
    let mut tok = tokenizers::Tokenizer::new(bpe);
    let pre_tokenizer = pre.build().map_err(|msg| TokenizerError::Load {
        file: gguf.name().to_string(),
        msg,
    })?;
    tok.with_pre_tokenizer(Some(pre_tokenizer));
    Ok(Model::Hf(Box::new(tok)))
}

/// SentencePiece BPE over the token texts and `tokenizer.ggml.scores` (all 0 when absent).
fn spm_model(gguf: &GgufFile, texts: &[String], unk: Option<u32>) -> Result<Model, TokenizerError> {
    const SCORES: &str = "tokenizer.ggml.scores";
    let n = texts.len();
    let scores: Vec<f32> = match gguf.opt_array(SCORES)? {
        None => vec![0.0; n],
        Some(a) if a.len() != n => {
            return Err(bad(
                gguf,
                SCORES,
                format!("has {} entries for {n} tokens", a.len()),
            ))
        }
        Some(a) => a
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_f32().ok_or_else(|| {
                    bad(
                        gguf,
                        SCORES,
                        format!("entry {i} is a {}, not a number", v.type_name()),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(Model::Spm(Spm::new(texts.iter().cloned(), scores, unk)))
}

/// llama.cpp's whitespace stripping around special tokens, chosen by pre-tokenizer or model
/// name.
fn read_strip_rule(gguf: &GgufFile, pre_name: &str) -> Result<StripRule, TokenizerError> {
    let model_lc = gguf
        .opt_str("general.name")?
        .unwrap_or_default()
        .to_lowercase();
    Ok(
        if matches!(pre_name, "jina-v2-de" | "jina-v2-es" | "jina-v2-code") {
            StripRule::MaskLstrip
        } else if model_lc.contains("phi-3") || model_lc.contains("phi3") {
            StripRule::Phi3
        } else {
            StripRule::None
        },
    )
}

/// The BPE model: every vocabulary entry (the last of duplicate texts wins, as in llama.cpp's
/// token map) and the merges in rank order.
fn build_bpe(
    gguf: &GgufFile,
    texts: &[String],
    ignore_merges: bool,
) -> Result<BPE, TokenizerError> {
    let build = |skip_unusable: bool| -> Result<BPE, TokenizerError> {
        let mut vocab: ahash::AHashMap<String, u32> = ahash::AHashMap::with_capacity(texts.len());
        for (i, t) in texts.iter().enumerate() {
            vocab.insert(t.clone(), i as u32);
        }
        let merges = read_merges(gguf, skip_unusable.then_some(&vocab))?;
        BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(ignore_merges)
            .build()
            .map_err(|e| TokenizerError::Load {
                file: gguf.name().to_string(),
                msg: format!("cannot build the BPE model: {e}"),
            })
    };
    // A merge whose parts or result are not tokens can never apply (llama.cpp would fall back to
    // bytes for such a piece anyway), but `tokenizers` refuses them: if there are any, build again
    // without them. Checking every merge up front would slow down the common case.
    build(false).or_else(|_| build(true))
}

/// `tokenizer.ggml.merges` as pairs; with `vocab`, only the merges whose parts and result are in
/// it.
fn read_merges(
    gguf: &GgufFile,
    vocab: Option<&ahash::AHashMap<String, u32>>,
) -> Result<Vec<(String, String)>, TokenizerError> {
    const MERGES: &str = "tokenizer.ggml.merges";
    let bad = |msg: String| TokenizerError::BadMetadata {
        file: gguf.name().to_string(),
        key: MERGES.to_string(),
        msg,
    };
    let raw = gguf.req_array(MERGES)?;
    let mut merges = Vec::with_capacity(raw.len());
    let mut joined = String::new();
    for (i, v) in raw.iter().enumerate() {
        let m = v
            .as_str()
            .ok_or_else(|| bad(format!("entry {i} is a {}, not a string", v.type_name())))?;
        let (a, b) = split_merge(m).ok_or_else(|| {
            bad(format!(
                "entry {i} {m:?} is not two tokens separated by a space"
            ))
        })?;
        if let Some(vocab) = vocab {
            joined.clear();
            joined.push_str(a);
            joined.push_str(b);
            if !(vocab.contains_key(a) && vocab.contains_key(b) && vocab.contains_key(&joined)) {
                continue;
            }
        }
        merges.push((a.to_string(), b.to_string()));
    }
    Ok(merges)
}

/// "a b" → ("a", "b"). Like llama.cpp, the separator is the first space after the first byte, so a
/// merge whose left part is a space still splits right.
fn split_merge(m: &str) -> Option<(&str, &str)> {
    let pos = m.as_bytes().iter().skip(1).position(|&b| b == b' ')? + 1;
    Some((&m[..pos], &m[pos + 1..]))
}

#[cfg(test)]
mod tests {
    #[test]
    fn merges_split_at_the_first_space_after_the_first_byte() {
        assert_eq!(super::split_merge("Ġ t"), Some(("Ġ", "t")));
        assert_eq!(super::split_merge("  x"), Some((" ", "x")));
        assert_eq!(super::split_merge("ab"), None);
    }
}
