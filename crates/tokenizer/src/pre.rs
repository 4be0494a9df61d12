//! Pre-tokenizers of byte-level BPE vocabularies, by their `tokenizer.ggml.pre` name.
//!
//! Each is the list of regexes llama.cpp (src/llama-vocab.cpp) applies one after the other: every
//! regex splits each piece left by the previous ones into its matches and the text between them.
//! That is exactly a `tokenizers` `Sequence` of `Split(.., Isolated)` steps, followed by the GPT-2
//! byte-to-character mapping. Where a model's tokenizer.json has `(?i:'s|'t|...)`, llama.cpp (and
//! we) spell the contractions out as `'[sS]|'[tT]|...`: case-insensitive matching would also accept
//! characters such as U+017F (long s) that the original tokenizers never produced.

use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

// Non-ASCII characters in the regexes are written as escapes: some of llama.cpp's ranges end in
// characters that Unicode normalization would change (e.g. U+1F7D), which would break the range.
//
// llama.cpp runs regexes without `\p{..}` through `std::wregex` after replacing every non-ASCII
// whitespace character with a vertical tab, so such characters (U+3000, U+2028, ...) match `\s`
// but never a written range that contains them. Those ranges are intersected with `\S` (`&&\S`)
// here to behave the same.

/// The GPT-2 split, also the second step of the default pre-tokenizer.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const CONTRACTIONS: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])";

/// One pre-tokenizer: the names that select it and how it behaves.
pub struct PreTokenizer {
    /// `tokenizer.ggml.pre` values that select it; the first is the canonical name.
    pub names: &'static [&'static str],
    /// Regexes applied in order, each as an isolating split.
    regexes: fn() -> Vec<String>,
    /// A pre-tokenized word that is itself a vocabulary entry becomes that token without running
    /// the merges (Llama 3's tiktoken heritage).
    pub ignore_merges: bool,
    /// BOS is added when `tokenizer.ggml.add_bos_token` is absent.
    pub default_add_bos: bool,
}

/// Every supported pre-tokenizer. The names mirror llama.cpp's, including its aliases.
pub static PRE_TOKENIZERS: &[PreTokenizer] = &[
    PreTokenizer {
        names: &["default"],
        regexes: || {
            vec![
                r"[\p{P}\$\+<=>\^~\|]+".into(),
                GPT2.into(),
                r"\p{N}+".into(),
                "[0-9][0-9][0-9]".into(),
            ]
        },
        ignore_merges: false,
        default_add_bos: false,
    },
    PreTokenizer {
        names: &[
            "llama-bpe",
            "llama3",
            "llama-v3",
            "falcon3",
            "falcon-h1",
            "pixtral",
            "midm-2.0",
            "lfm2",
        ],
        regexes: || vec![llama3_regex()],
        ignore_merges: true,
        default_add_bos: true,
    },
    PreTokenizer {
        // GLM-4.5 and later: Llama 3's split, words that are vocabulary entries taken whole, and
        // no BOS unless the metadata asks for one.
        names: &["glm4", "glm5"],
        regexes: || vec![llama3_regex()],
        ignore_merges: true,
        default_add_bos: false,
    },
    PreTokenizer {
        names: &["dbrx", "smaug-bpe", "chatglm-bpe"],
        regexes: || vec![llama3_regex()],
        ignore_merges: false,
        default_add_bos: false,
    },
    PreTokenizer {
        names: &[
            "qwen2",
            "deepseek-r1-qwen",
            "megrez",
            "kormo",
            "f2llmv2",
            "hunyuan",
        ],
        regexes: || {
            vec![format!(
                r"{CONTRACTIONS}|[^\r\n\p{{L}}\p{{N}}]?\p{{L}}+|\p{{N}}| ?[^\s\p{{L}}\p{{N}}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
            )]
        },
        ignore_merges: false,
        default_add_bos: false,
    },
    PreTokenizer {
        names: &["qwen35"],
        regexes: || {
            vec![format!(
                r"{CONTRACTIONS}|[^\r\n\p{{L}}\p{{N}}]?[\p{{L}}\p{{M}}]+|\p{{N}}| ?[^\s\p{{L}}\p{{M}}\p{{N}}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
            )]
        },
        ignore_merges: false,
        default_add_bos: false,
    },
    PreTokenizer {
        names: &["deepseek-llm"],
        regexes: || {
            vec![
                "[\r\n]".into(),
                "\\s?[A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}\u{1C4}-\u{293}\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-\u{37D}\u{37F}\u{386}\u{388}-\u{38A}\u{38C}\u{38E}-\u{3A1}\u{3A3}-\u{3F5}\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}\u{10A0}-\u{10C5}\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}\u{1D00}-\u{1D2B}\u{1D6B}-\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}\u{1F18}-\u{1F1D}\u{1F20}-\u{1F45}\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}\u{1F5B}\u{1F5D}\u{1F5F}-\u{1F7D}\u{1F80}-\u{1FB4}\u{1FB6}-\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}\u{1FD6}-\u{1FDB}\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}-\u{1FFC}\u{2102}\u{2107}\u{210A}-\u{2113}\u{2115}\u{2119}-\u{211D}\u{2124}\u{2126}\u{2128}\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}\u{213C}-\u{213F}\u{2145}-\u{2149}\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}\u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\u{A680}-\u{A69B}\u{A722}-\u{A76F}\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}\u{FB13}-\u{FB17}\u{FF21}-\u{FF3A}\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}]+".into(),
                "\\s?[!-/:-~\u{FF01}-\u{FF0F}\u{FF1A}-\u{FF5E}\u{2018}-\u{201F}\u{3000}-\u{3002}&&\\S]+".into(),
                r"\s+$".into(),
                "[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}&&\\S]+".into(),
                r"\p{N}+".into(),
            ]
        },
        ignore_merges: false,
        default_add_bos: false,
    },
    PreTokenizer {
        names: &["deepseek-coder"],
        regexes: || {
            vec![
                "[\r\n]".into(),
                r"\s?\p{L}+".into(),
                r"\s?\p{P}+".into(),
                "[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}&&\\S]+".into(),
                r"\p{N}".into(),
            ]
        },
        ignore_merges: false,
        default_add_bos: false,
    },
    PreTokenizer {
        names: &["deepseek-v3"],
        regexes: || {
            vec![
                r"\p{N}{1,3}".into(),
                "[\u{4E00}-\u{9FA5}\u{3040}-\u{309F}\u{30A0}-\u{30FF}]+".into(),
                "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+".into(),
            ]
        },
        ignore_merges: false,
        default_add_bos: false,
    },
    PreTokenizer {
        names: &["kimi-k2"],
        regexes: || vec![kimi_k2_regex()],
        ignore_merges: false,
        default_add_bos: false,
    },
    PreTokenizer {
        names: &["falcon"],
        regexes: || {
            vec![
                r"[\p{P}\$\+<=>\^~\|`]+".into(),
                GPT2.into(),
                "[0-9][0-9][0-9]".into(),
            ]
        },
        ignore_merges: false,
        default_add_bos: false,
    },
    PreTokenizer {
        names: &[
            "starcoder",
            "refact",
            "command-r",
            "smollm",
            "codeshell",
            "exaone",
            "minerva-7b",
        ],
        regexes: || vec![r"\p{N}".into(), GPT2.into()],
        ignore_merges: false,
        default_add_bos: false,
    },
    PreTokenizer {
        names: &[
            "gpt-2",
            "phi-2",
            "mpt",
            "olmo",
            "jais",
            "jina-es",
            "jina-de",
            "jina-v2-es",
            "jina-v2-de",
            "gigachat",
            "exaone4",
            "trillion",
        ],
        regexes: || vec![GPT2.into()],
        ignore_merges: false,
        default_add_bos: false,
    },
];

/// Kimi K2's split as llama.cpp's custom `kimi-k2` splitter makes it (it stands for
/// tokenization_kimi.py's regex, and differs from it): runs of Han characters (llama.cpp's CJK
/// ideograph blocks, not the whole Han script) apart, then words of any other letters (no
/// upper/lower-case boundaries inside, combining marks not part of words) with an optional
/// trailing contraction, then Llama 3's rules for digits, punctuation and whitespace.
fn kimi_k2_regex() -> String {
    const HAN: &str = r"\x{3400}-\x{4DBF}\x{4E00}-\x{9FFF}\x{F900}-\x{FAFF}\x{20000}-\x{2A6DF}\x{2A700}-\x{2EBEF}\x{2F800}-\x{2FA1F}";
    format!(
        r"[{HAN}]+|[^\r\n\p{{L}}\p{{N}}]?[\p{{L}}&&[^{HAN}]]+{CONTRACTIONS}?|\p{{N}}{{1,3}}| ?[^\s\p{{L}}\p{{N}}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
}

fn llama3_regex() -> String {
    format!(
        r"{CONTRACTIONS}|[^\r\n\p{{L}}\p{{N}}]?\p{{L}}+|\p{{N}}{{1,3}}| ?[^\s\p{{L}}\p{{N}}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
}

/// The pre-tokenizer `tokenizer.ggml.pre` names.
pub fn find(name: &str) -> Option<&'static PreTokenizer> {
    PRE_TOKENIZERS.iter().find(|p| p.names.contains(&name))
}

/// All accepted names, for error messages.
pub fn supported_names() -> String {
    PRE_TOKENIZERS
        .iter()
        .flat_map(|p| p.names.iter().copied())
        .collect::<Vec<_>>()
        .join(", ")
}

impl PreTokenizer {
    /// The `tokenizers` pre-tokenizer: the splits, then the byte-to-character mapping.
    pub fn build(&self) -> Result<PreTokenizerWrapper, String> {
        let mut steps = Vec::new();
        for re in (self.regexes)() {
            let split = Split::new(
                SplitPattern::Regex(re.clone()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| format!("pre-tokenizer regex {re:?}: {e}"))?;
            steps.push(PreTokenizerWrapper::Split(split));
        }
        steps.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
            false, true, false,
        )));
        Ok(PreTokenizerWrapper::Sequence(Sequence::new(steps)))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_pre_tokenizer_compiles() {
        for p in super::PRE_TOKENIZERS {
            p.build().unwrap_or_else(|e| panic!("{}: {e}", p.names[0]));
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = super::PRE_TOKENIZERS
            .iter()
            .flat_map(|p| p.names.iter())
            .collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
