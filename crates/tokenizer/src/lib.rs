//! Tokenizers for frugal: built from GGUF metadata (`tokenizer.ggml.*`) or a Hugging Face
//! `tokenizer.json`, reproducing llama.cpp's tokenization; end-of-generation tokens; and a
//! streaming detokenizer that never splits a UTF-8 character.
//!
//! The pipeline is llama.cpp's (src/llama-vocab.cpp):
//! 1. special-token texts are cut out of the input first, longest first (`special`);
//! 2. every remaining stretch of text goes through the model: byte-level BPE (`gpt2`), run by the
//!    `tokenizers` crate with llama.cpp's pre-tokenizer regexes (`pre`), or SentencePiece-style
//!    score-driven merges (`llama`, `spm`);
//! 3. BOS/EOS are added as the metadata asks.
//!
//! Decoding maps each token to the bytes it stands for (GPT-2's byte alphabet undone, or `▁`
//! turned back into spaces) and converts to UTF-8 only at the very end.

#![forbid(unsafe_code)]

mod byte_level;
mod gguf;
mod hf;
mod pre;
mod special;
mod spm;
mod stream;

pub use stream::StreamDecoder;

use frugal_formats::{GgufError, GgufFile};
use special::{Fragment, SpecialTokens};
use std::collections::HashMap;
use std::path::Path;

/// Token attributes, after llama.cpp's `llama_token_attr` (only the bits we use).
pub(crate) mod attr {
    pub const NORMAL: u16 = 1 << 0;
    pub const UNKNOWN: u16 = 1 << 1;
    pub const CONTROL: u16 = 1 << 2;
    pub const USER_DEFINED: u16 = 1 << 3;
    pub const UNUSED: u16 = 1 << 4;
    pub const BYTE: u16 = 1 << 5;
    /// Matching this special token also eats the whitespace before / after it.
    pub const LSTRIP: u16 = 1 << 6;
    pub const RSTRIP: u16 = 1 << 7;
}

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{file}: tokenizer model '{model}' is not supported (supported: {supported})")]
    UnsupportedModel {
        file: String,
        model: String,
        supported: String,
    },
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

/// A token with a special role, for [`Tokenizer::special_token_id`] and
/// [`Tokenizer::special_token_text`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpecialToken {
    Bos,
    Eos,
    /// End of turn (e.g. `<|eot_id|>`, `<|im_end|>`).
    Eot,
    /// End of message (Llama 3.1's `<|eom_id|>`).
    Eom,
    Unk,
    Sep,
    Pad,
    Mask,
    /// Fill-in-the-middle: prefix, suffix, middle, pad, repository name, file separator.
    FimPre,
    FimSuf,
    FimMid,
    FimPad,
    FimRep,
    FimSep,
}

impl SpecialToken {
    pub(crate) const COUNT: usize = 14;
}

/// The ids of the tokens with special roles, indexed by [`SpecialToken`].
#[derive(Debug, Clone, Default)]
pub(crate) struct SpecialIds([Option<u32>; SpecialToken::COUNT]);

impl std::ops::Index<SpecialToken> for SpecialIds {
    type Output = Option<u32>;
    fn index(&self, which: SpecialToken) -> &Option<u32> {
        &self.0[which as usize]
    }
}

impl std::ops::IndexMut<SpecialToken> for SpecialIds {
    fn index_mut(&mut self, which: SpecialToken) -> &mut Option<u32> {
        &mut self.0[which as usize]
    }
}

/// Roles llama.cpp assigns by token text when the metadata does not name the token (its
/// "auto-detect special tokens by text" pass); the chosen token also becomes a control token.
const ROLE_TEXTS: &[(SpecialToken, &[&str])] = &[
    (
        SpecialToken::Eot,
        &[
            "<|eot_id|>",
            "<|im_end|>",
            "<|end|>",
            "<end_of_turn>",
            "<|endoftext|>",
            "<|end_of_text|>",
            "<EOT>",
            "_<EOT>",
            "[EOT]",
            "<｜end▁of▁sentence｜>",
            "<end_of_utterance>",
        ],
    ),
    (SpecialToken::Eom, &["<|eom_id|>"]),
    (
        SpecialToken::FimPre,
        &[
            "<|fim_prefix|>",
            "<fim-prefix>",
            "<fim_prefix>",
            "<｜fim▁begin｜>",
            "<PRE>",
            "▁<PRE>",
            "<|code_prefix|>",
            "<|prefix|>",
        ],
    ),
    (
        SpecialToken::FimSuf,
        &[
            "<|fim_suffix|>",
            "<fim-suffix>",
            "<fim_suffix>",
            "<｜fim▁hole｜>",
            "<SUF>",
            "▁<SUF>",
            "<|code_suffix|>",
            "<|suffix|>",
        ],
    ),
    (
        SpecialToken::FimMid,
        &[
            "<|fim_middle|>",
            "<fim-middle>",
            "<fim_middle>",
            "<｜fim▁end｜>",
            "<MID>",
            "▁<MID>",
            "<|code_middle|>",
            "<|middle|>",
        ],
    ),
    (
        SpecialToken::FimPad,
        &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    ),
    (
        SpecialToken::FimRep,
        &[
            "<|fim_repo|>",
            "<|repo_name|>",
            "<fim-repo>",
            "<REPO>",
            "<reponame>",
        ],
    ),
    (SpecialToken::FimSep, &["<|file_sep|>"]),
];

/// Token texts that end generation wherever they are in the vocabulary (llama.cpp's list).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// gpt-oss's channel markers, which llama.cpp always renders (user-defined, not control).
const ALWAYS_RENDERED: &[&str] = &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

/// What runs on the plain text between special tokens.
pub(crate) enum Model {
    /// `tokenizers` with the normalizer, pre-tokenizer and model only (byte-level BPE for GGUF
    /// files); no added tokens: those are matched by `special` before.
    Hf(Box<tokenizers::Tokenizer>),
    /// SentencePiece-style merges by score.
    Spm(spm::Spm),
}

/// Everything a loader found, before the shared post-processing in [`Tokenizer::assemble`].
pub(crate) struct Parts {
    pub model: Model,
    pub texts: Vec<String>,
    pub attrs: Vec<u16>,
    pub ids: SpecialIds,
    /// Texts → ids of tokens the model's own vocabulary does not know (tokenizer.json's added
    /// tokens).
    pub added: HashMap<String, u32>,
    /// Token texts use GPT-2's byte alphabet (else: SentencePiece's `▁` for spaces).
    pub byte_encoded: bool,
    pub add_bos: bool,
    pub add_eos: bool,
    /// A space is put before the text (after every special token): SentencePiece's dummy prefix,
    /// taken off again when decoding.
    pub add_space_prefix: bool,
    /// More end-of-generation ids (generation_config.json's eos_token_id).
    pub extra_eog: Vec<u32>,
    pub kind: String,
    pub chat_template: Option<String>,
    /// llama.cpp's per-model whitespace stripping around special tokens.
    pub strip_rule: StripRule,
}

/// Special tokens llama.cpp makes eat adjacent whitespace, by model (its `_set_token_attr` calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum StripRule {
    #[default]
    None,
    /// Phi-3: every special token but `<unk>`, `<s>` and `<|endoftext|>` eats the whitespace
    /// after it.
    Phi3,
    /// Jina v2: `<mask>` eats the whitespace before it.
    MaskLstrip,
}

/// Roles the metadata left open, by text. llama.cpp takes whichever listed token its hash map
/// yields first; we take the one earliest in the list (then the lowest id), which is
/// deterministic and prefers e.g. <|im_end|> over <|endoftext|> as Qwen's end of turn.
fn assign_roles_by_text(texts: &[String], ids: &mut SpecialIds, attrs: &mut [u16]) {
    for &(role, names) in ROLE_TEXTS {
        if ids[role].is_some() {
            continue;
        }
        let best = texts
            .iter()
            .enumerate()
            .filter(|(_, t)| looks_special(t))
            .filter_map(|(i, t)| Some((names.iter().position(|n| n == t)?, i)))
            .min();
        if let Some((_, i)) = best {
            ids[role] = Some(i as u32);
            attrs[i] |= attr::CONTROL;
        }
    }
}

/// The end-of-generation ids, sorted, as llama.cpp collects them: FIM pad/rep/sep, tokens with
/// an end-of-generation text, EOS/EOT/EOM, and the loader's extra ids in the vocabulary. Marks
/// them control tokens (and the always-rendered ones user-defined) on the way.
fn end_of_generation_ids(
    texts: &[String],
    ids: &SpecialIds,
    attrs: &mut [u16],
    extra_eog: Vec<u32>,
) -> Vec<u32> {
    let mut eog: Vec<u32> = [
        ids[SpecialToken::FimPad],
        ids[SpecialToken::FimRep],
        ids[SpecialToken::FimSep],
    ]
    .into_iter()
    .flatten()
    .collect();
    for (i, t) in texts.iter().enumerate() {
        if !looks_special(t) {
            continue;
        }
        if EOG_TEXTS.contains(&t.as_str()) {
            eog.push(i as u32);
            attrs[i] |= attr::CONTROL;
        }
        if ALWAYS_RENDERED.contains(&t.as_str()) {
            attrs[i] = attr::USER_DEFINED;
        }
    }
    eog.extend(
        [
            ids[SpecialToken::Eos],
            ids[SpecialToken::Eot],
            ids[SpecialToken::Eom],
        ]
        .into_iter()
        .flatten(),
    );
    eog.extend(
        extra_eog
            .into_iter()
            .filter(|&i| (i as usize) < texts.len()),
    );
    eog.sort_unstable();
    eog.dedup();
    // gpt-oss (and Solar Open) end a message with <|end|> but keep generating after it, ending
    // the turn with <|return|> or <|call|>: there <|end|> must not stop generation.
    let has = |s: &str| eog.iter().any(|&i| texts[i as usize] == s);
    if (has("<|return|>") || has("<|flush|>")) && (has("<|call|>") || has("<|calls|>")) {
        if let Some(pos) = eog.iter().position(|&i| texts[i as usize] == "<|end|>") {
            attrs[eog[pos] as usize] = attr::USER_DEFINED;
            eog.remove(pos);
        }
    }
    eog
}

impl StripRule {
    /// Sets the LSTRIP/RSTRIP attributes this rule gives special tokens.
    fn apply(self, texts: &[String], attrs: &mut [u16]) {
        match self {
            StripRule::None => {}
            StripRule::Phi3 => {
                for (t, a) in texts.iter().zip(attrs.iter_mut()) {
                    let special = *a & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0;
                    if (special || t == "</s>")
                        && !matches!(t.as_str(), "<unk>" | "<s>" | "<|endoftext|>")
                    {
                        *a |= attr::RSTRIP;
                    }
                }
            }
            StripRule::MaskLstrip => {
                if let Some(i) = texts.iter().position(|t| t == "<mask>") {
                    attrs[i] |= attr::LSTRIP;
                }
            }
        }
    }
}

/// Strings stored back to back, indexed by id (one allocation instead of one per token).
#[derive(Default)]
struct Pool {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl Pool {
    fn push(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
        self.ends.push(self.data.len());
    }

    fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.data[start..end])
    }
}

/// A tokenizer: text to ids and back. `Send + Sync`; share it with an `Arc`.
pub struct Tokenizer {
    model: Model,
    /// Token texts as the vocabulary spells them (valid UTF-8: built from `String`s).
    texts: Pool,
    /// The bytes each token stands for (special tokens: their text), llama.cpp's
    /// `token_to_piece(special = true)`.
    pieces: Pool,
    attrs: Vec<u16>,
    added: HashMap<String, u32>,
    specials: SpecialTokens,
    ids: SpecialIds,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    eog: Vec<u32>,
    kind: String,
    chat_template: Option<String>,
}

impl Tokenizer {
    /// Builds the tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata (a
    /// vocabulary-only file works).
    pub fn from_gguf(gguf: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        gguf::load(gguf).map(Tokenizer::assemble)
    }

    /// Loads a Hugging Face `tokenizer.json`, with `tokenizer_config.json` (BOS/EOS, whether to
    /// add them, the chat template; or `chat_template.jinja`) and `generation_config.json`
    /// (end-of-generation ids) beside it when present.
    pub fn from_file(tokenizer_json: &Path) -> Result<Tokenizer, TokenizerError> {
        hf::load(tokenizer_json).map(Tokenizer::assemble)
    }

    /// The post-processing both loaders share: llama.cpp's detection of special roles by token
    /// text, the end-of-generation set, and the decoded bytes of every token.
    fn assemble(p: Parts) -> Tokenizer {
        let Parts {
            model,
            texts,
            mut attrs,
            mut ids,
            added,
            byte_encoded,
            add_bos,
            add_eos,
            add_space_prefix,
            extra_eog,
            kind,
            chat_template,
            strip_rule,
        } = p;
        assign_roles_by_text(&texts, &mut ids, &mut attrs);
        let eog = end_of_generation_ids(&texts, &ids, &mut attrs, extra_eog);
        strip_rule.apply(&texts, &mut attrs);

        let mut text_pool = Pool::default();
        let mut pieces = Pool::default();
        for (t, &a) in texts.iter().zip(&attrs) {
            text_pool.push(t.as_bytes());
            pieces.push(&piece_of(t, a, byte_encoded));
        }
        let specials = SpecialTokens::new(
            texts
                .iter()
                .zip(&attrs)
                .enumerate()
                .map(|(i, (t, &a))| (i as u32, t.as_str(), a)),
        );
        Tokenizer {
            model,
            texts: text_pool,
            pieces,
            attrs,
            added,
            specials,
            ids,
            add_bos,
            add_eos,
            add_space_prefix,
            eog,
            kind,
            chat_template,
        }
    }

    /// Text to token ids. `add_special` adds BOS/EOS as the model asks; `parse_special` matches
    /// control-token texts such as `<|im_start|>` in `text` (user-defined tokens always match).
    pub fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.ids[SpecialToken::Bos]);
        }
        let fragments = self.specials.partition(text, parse_special);
        match &self.model {
            Model::Hf(hf) => {
                for f in fragments {
                    match f {
                        Fragment::Token(id) => out.push(id),
                        Fragment::Text(r) => {
                            let enc = hf
                                .encode(&text[r], false)
                                .map_err(|e| TokenizerError::Encode(e.to_string()))?;
                            out.extend_from_slice(enc.get_ids());
                        }
                    }
                }
            }
            Model::Spm(spm) => {
                // The dummy prefix goes at the start and after every special token.
                let mut after_special = true;
                let mut buf = String::new();
                for f in fragments {
                    match f {
                        Fragment::Token(id) => {
                            out.push(id);
                            after_special = true;
                        }
                        Fragment::Text(r) => {
                            buf.clear();
                            if self.add_space_prefix && after_special {
                                buf.push('▁');
                            }
                            buf.extend(text[r].chars().map(|c| if c == ' ' { '▁' } else { c }));
                            spm.tokenize(&buf, &mut out).map_err(|b| {
                                TokenizerError::Encode(format!(
                                    "no token for byte 0x{b:02x} and no unknown token"
                                ))
                            })?;
                            after_special = false;
                        }
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.ids[SpecialToken::Eos]);
        }
        Ok(out)
    }

    /// Token ids to text, as llama.cpp's `llama_detokenize` (without its optional clean-up of
    /// spaces, so that it always equals the concatenated [`StreamDecoder`] output).
    /// `skip_special` leaves out control tokens. Invalid UTF-8 (only possible where a character
    /// is cut) is replaced, once, at the end.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let mut bytes = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            bytes.extend_from_slice(self.piece(id, skip_special, i == 0));
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The bytes token `id` contributes to decoded text at position `first`-or-not.
    pub(crate) fn piece(&self, id: u32, skip_special: bool, first: bool) -> &[u8] {
        let Some(&a) = self.attrs.get(id as usize) else {
            return &[];
        };
        if skip_special && a & (attr::CONTROL | attr::UNKNOWN) != 0 {
            return &[];
        }
        let p = self.pieces.get(id as usize).unwrap_or_default();
        if first && self.add_space_prefix {
            p.strip_prefix(b" ").unwrap_or(p)
        } else {
            p
        }
    }

    /// The bytes a token stands for (byte-level decoded; special tokens: their text; empty for
    /// unused tokens and ids outside the vocabulary).
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        self.pieces.get(id as usize).unwrap_or_default().to_vec()
    }

    /// The token as the vocabulary spells it (e.g. `Ġhello`).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        let bytes = self.texts.get(id as usize)?;
        // Always valid: the pool holds whole `String`s.
        std::str::from_utf8(bytes).ok()
    }

    /// The id of a vocabulary entry spelled exactly `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        if let Some(&id) = self.added.get(text) {
            return Some(id);
        }
        match &self.model {
            Model::Hf(hf) => hf.token_to_id(text),
            Model::Spm(spm) => spm.ids.get(text).copied(),
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.attrs.len()
    }

    pub fn bos(&self) -> Option<u32> {
        self.ids[SpecialToken::Bos]
    }

    pub fn eos(&self) -> Option<u32> {
        self.ids[SpecialToken::Eos]
    }

    /// Whether `encode(.., add_special = true, ..)` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos && self.ids[SpecialToken::Bos].is_some()
    }

    /// Ids that end a generation (sorted): EOS, EOT, EOM, the FIM pad/repo/file-separator tokens
    /// and every token llama.cpp recognises as an ending by its text.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    /// Control and user-defined tokens.
    pub fn is_special(&self, id: u32) -> bool {
        self.attrs
            .get(id as usize)
            .is_some_and(|a| a & (attr::CONTROL | attr::USER_DEFINED) != 0)
    }

    /// A one-line description, e.g. for `frugal info`.
    pub fn kind(&self) -> String {
        self.kind.clone()
    }

    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The id of a token with a special role.
    pub fn special_token_id(&self, which: SpecialToken) -> Option<u32> {
        self.ids[which]
    }

    /// The text of a special token, for chat templates.
    pub fn special_token_text(&self, which: SpecialToken) -> Option<&str> {
        self.token_text(self.special_token_id(which)?)
    }
}

/// A cheap filter before comparing against the role and EOG lists (all start like this).
fn looks_special(t: &str) -> bool {
    matches!(t.as_bytes().first(), Some(b'<' | b'[' | b'_' | 0xE2))
}

/// What llama.cpp's `token_to_piece(special = true)` gives for a token.
fn piece_of(text: &str, a: u16, byte_encoded: bool) -> Vec<u8> {
    if a & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0 {
        text.as_bytes().to_vec()
    } else if a & attr::NORMAL != 0 {
        if byte_encoded {
            byte_level::decode(text)
        } else {
            text.replace('▁', " ").into_bytes()
        }
    } else if a & attr::BYTE != 0 {
        match parse_byte_token(text) {
            Some(b) => vec![b],
            None if byte_encoded => byte_level::decode(text),
            None => text.as_bytes().to_vec(),
        }
    } else {
        // Unused and undefined tokens print nothing.
        Vec::new()
    }
}

/// The byte of a `<0xAB>` token.
pub(crate) fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokenizer_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<super::Tokenizer>();
    }

    #[test]
    fn special_token_count_covers_every_role() {
        use super::SpecialToken;
        assert_eq!(SpecialToken::FimSep as usize + 1, SpecialToken::COUNT);
    }

    #[test]
    fn byte_tokens() {
        assert_eq!(super::parse_byte_token("<0x0A>"), Some(10));
        assert_eq!(super::parse_byte_token("<0xff>"), Some(255));
        assert_eq!(super::parse_byte_token("<0x100>"), None);
        assert_eq!(super::parse_byte_token("0x41"), None);
    }
}
