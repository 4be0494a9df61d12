//! Round trips, streaming, special tokens and errors, on the fixture vocabularies and on small
//! GGUF vocabularies written here (SentencePiece byte fallback, user-defined tokens, odd merges).

use frugal_fixtures::dir as fixtures;
use frugal_formats::{GgufFile, GgufWriter, Value};
use frugal_tokenizer::{SpecialToken, StreamDecoder, Tokenizer};

fn from_gguf(vocab: &str) -> Tokenizer {
    let path = fixtures()
        .join("tokenizer")
        .join(format!("ggml-vocab-{vocab}.gguf"));
    Tokenizer::from_gguf(&GgufFile::open(path).unwrap()).unwrap()
}

fn strings(v: &[&str]) -> Value {
    Value::Array(v.iter().map(|s| Value::String(s.to_string())).collect())
}

fn load(w: &GgufWriter, name: &str) -> Result<Tokenizer, String> {
    Tokenizer::from_gguf(&GgufFile::from_bytes(w.to_bytes(), name).unwrap())
        .map_err(|e| e.to_string())
}

/// Streams `ids` one at a time; checks that no piece carries a replacement character and that
/// the pieces add up to `decode`.
fn stream(tok: &Tokenizer, ids: &[u32], skip_special: bool) -> String {
    let mut dec = StreamDecoder::new(tok, skip_special);
    let mut out = String::new();
    for &id in ids {
        let piece = dec.push(id);
        assert!(!piece.contains('\u{FFFD}'), "broken UTF-8 in {piece:?}");
        out.push_str(&piece);
    }
    out.push_str(&dec.finish());
    assert_eq!(out, tok.decode(ids, skip_special));
    out
}

const TEXTS: &[&str] = &[
    "Hello, world! 你好，世界。 🦀🚀 naïve café — ß∑ 12345",
    "日本語のテキスト and emoji 👩‍👩‍👧‍👦 (a family: one character, many code points)",
    "  leading spaces\n\ttabs\r\n and trailing   ",
    "Ελληνικά, русский, עברית, العربية, हिन्दी, ภาษาไทย, 한국어",
    "e\u{301} decomposed, \u{1F1FA}\u{1F1F3} flags, \0 and \u{7F} controls",
];

#[test]
fn decode_round_trips_and_streams_whole_characters() {
    for vocab in ["qwen2", "llama-bpe", "deepseek-llm"] {
        let tok = from_gguf(vocab);
        for text in TEXTS {
            let ids = tok.encode(text, false, false).unwrap();
            assert_eq!(tok.decode(&ids, false), *text, "{vocab}");
            assert_eq!(stream(&tok, &ids, false), *text, "{vocab}");
        }
    }
}

#[test]
fn stream_holds_back_partial_characters() {
    let tok = from_gguf("qwen2");
    // The byte-level tokens of '🦀' (F0 9F A6 80), one byte each.
    let bytes: Vec<u32> = "🦀"
        .bytes()
        .map(|b| {
            (0..tok.vocab_size() as u32)
                .find(|&id| tok.token_bytes(id) == [b])
                .unwrap()
        })
        .collect();
    let mut dec = StreamDecoder::new(&tok, false);
    assert_eq!(dec.push(bytes[0]), "");
    assert_eq!(dec.push(bytes[1]), "");
    assert_eq!(dec.push(bytes[2]), "");
    assert_eq!(dec.push(bytes[3]), "🦀");
    // A cut character comes out replaced only at the end.
    assert_eq!(dec.push(bytes[0]), "");
    assert_eq!(dec.finish(), "\u{FFFD}");
    assert_eq!(tok.decode(&bytes[..2], false), "\u{FFFD}");
}

#[test]
fn special_tokens_parse_only_when_asked() {
    let tok = from_gguf("qwen2");
    let im_start = tok.token_id("<|im_start|>").unwrap();
    let im_end = tok.token_id("<|im_end|>").unwrap();
    let text = "<|im_start|>user\nHi<|im_end|>";
    let with = tok.encode(text, false, true).unwrap();
    assert_eq!(with[0], im_start);
    assert_eq!(*with.last().unwrap(), im_end);
    let without = tok.encode(text, false, false).unwrap();
    assert!(!without.contains(&im_start) && !without.contains(&im_end));
    assert_eq!(tok.decode(&without, false), text);
    assert!(tok.is_special(im_start) && !tok.is_special(with[1]));
    // Control tokens print their text unless skipped.
    assert_eq!(tok.decode(&with, false), text);
    assert_eq!(tok.decode(&with, true), "user\nHi");
    assert_eq!(stream(&tok, &with, true), "user\nHi");
    assert_eq!(tok.token_bytes(im_start), b"<|im_start|>");
    assert!(tok.eog_ids().contains(&im_end));
    assert!(tok
        .eog_ids()
        .contains(&tok.token_id("<|endoftext|>").unwrap()));
    assert_eq!(
        tok.special_token_text(SpecialToken::Eos),
        Some("<|endoftext|>")
    );
    assert_eq!(tok.special_token_id(SpecialToken::Eot), Some(im_end));
}

#[test]
fn tokens_and_texts() {
    let tok = from_gguf("llama-bpe");
    assert_eq!(tok.vocab_size(), 128256);
    let id = tok.token_id("Ġhello").unwrap();
    assert_eq!(tok.token_text(id), Some("Ġhello"));
    assert_eq!(tok.token_bytes(id), b" hello");
    assert_eq!(tok.token_text(1 << 30), None);
    assert!(tok.token_bytes(1 << 30).is_empty());
    assert_eq!(tok.decode(&[1 << 30], false), "");
    assert!(!tok.is_special(1 << 30));
    assert_eq!(
        tok.kind(),
        "BPE (gpt2, pre-tokenizer llama-bpe), 128256 tokens"
    );
    assert_eq!(
        tok.special_token_text(SpecialToken::Bos),
        Some("<|begin_of_text|>")
    );
    assert!(tok.chat_template().is_none());
}

/// GPT-2's byte alphabet: the character standing for byte `b`.
fn byte_char(b: u8) -> char {
    let mut extra = 0;
    for x in 0..=255u8 {
        let printable = matches!(x, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        if x == b {
            return if printable {
                char::from(b)
            } else {
                char::from_u32(256 + extra).unwrap()
            };
        }
        if !printable {
            extra += 1;
        }
    }
    unreachable!()
}

/// A small byte-level BPE vocabulary: the 256 byte tokens, "ab", "Ġa", a control token, a
/// user-defined token, and extra tokens given by the caller.
fn small_bpe(extra: &[(&str, i32)], merges: &[&str]) -> GgufWriter {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    let mut types = vec![1i32; 256];
    for (t, ty) in [("ab", 1), ("Ġa", 1), ("<|ctl|>", 3), ("<tool>", 4)]
        .iter()
        .chain(extra)
    {
        tokens.push(t.to_string());
        types.push(*ty);
    }
    let mut w = GgufWriter::new();
    w.add_metadata("tokenizer.ggml.model", Value::String("gpt2".into()));
    w.add_metadata("tokenizer.ggml.pre", Value::String("qwen2".into()));
    w.add_metadata(
        "tokenizer.ggml.tokens",
        Value::Array(tokens.into_iter().map(Value::String).collect()),
    );
    w.add_metadata(
        "tokenizer.ggml.token_type",
        Value::Array(types.into_iter().map(Value::I32).collect()),
    );
    let mut all = vec!["a b", "Ġ a"];
    all.extend_from_slice(merges);
    w.add_metadata("tokenizer.ggml.merges", strings(&all));
    w.add_metadata("tokenizer.ggml.eos_token_id", Value::U32(258));
    w
}

#[test]
fn user_defined_tokens_always_match_and_always_print() {
    let tok = load(&small_bpe(&[], &[]), "small.gguf").unwrap();
    let (ab, space_a, ctl, tool) = (256, 257, 258, 259);
    assert_eq!(tok.encode("ab a", false, false).unwrap(), [ab, space_a]);
    // User-defined: matched even without parse_special; control: only with it.
    assert_eq!(
        tok.encode("<tool>ab<|ctl|>", false, false).unwrap()[..2],
        [tool, ab]
    );
    assert_eq!(
        tok.encode("<tool>ab<|ctl|>", false, true).unwrap(),
        [tool, ab, ctl]
    );
    // Skipping specials hides control tokens only, as llama.cpp's detokenizer does.
    assert_eq!(tok.decode(&[tool, ab, ctl], true), "<tool>ab");
    assert!(tok.is_special(tool) && tok.is_special(ctl));
    assert_eq!(tok.eog_ids(), [ctl]);
}

#[test]
fn merges_that_cannot_apply_are_ignored() {
    // "b c" would make "bc", which is not a token: tokenizers refuses such a merge, llama.cpp
    // never produces it; either way "abc" is ab + c.
    let tok = load(&small_bpe(&[], &["b c"]), "odd.gguf").unwrap();
    assert_eq!(tok.encode("abc", false, false).unwrap(), [256, b'c' as u32]);
}

/// A SentencePiece vocabulary: <unk>, <s>, </s>, the 256 byte tokens, then pieces with scores.
fn small_spm() -> GgufWriter {
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut types = vec![2i32, 3, 3];
    let mut scores = vec![0.0f32; 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    for (t, s) in [
        ("▁", -1.0),
        ("▁H", -3.0),
        ("▁He", -2.0),
        ("▁Hel", -4.0),
        ("▁Hell", -5.0),
        ("▁Hello", -1.5),
        ("H", -6.0),
        ("e", -6.0),
        ("l", -6.0),
        ("o", -6.0),
        ("ll", -7.0),
        ("llo", -8.0),
        ("你", -5.0),
    ] {
        tokens.push(t.to_string());
        types.push(1);
        scores.push(s);
    }
    let mut w = GgufWriter::new();
    w.add_metadata("tokenizer.ggml.model", Value::String("llama".into()));
    w.add_metadata(
        "tokenizer.ggml.tokens",
        Value::Array(tokens.into_iter().map(Value::String).collect()),
    );
    w.add_metadata(
        "tokenizer.ggml.token_type",
        Value::Array(types.into_iter().map(Value::I32).collect()),
    );
    w.add_metadata(
        "tokenizer.ggml.scores",
        Value::Array(scores.into_iter().map(Value::F32).collect()),
    );
    w
}

#[test]
fn sentencepiece_with_byte_fallback() {
    let tok = load(&small_spm(), "spm.gguf").unwrap();
    let id = |t: &str| tok.token_id(t).unwrap();
    // BOS by default, a dummy-prefix space, merges by score.
    assert!(tok.add_bos());
    assert_eq!(tok.bos(), Some(1));
    assert_eq!(tok.eos(), Some(2));
    assert_eq!(tok.encode("Hello", true, false).unwrap(), [1, id("▁Hello")]);
    // Characters without a token become their UTF-8 bytes.
    let ids = tok.encode("Hello 你好🦀", false, false).unwrap();
    let byte = |b: u8| id(&format!("<0x{b:02X}>"));
    let mut want = vec![id("▁Hello"), id("▁"), id("你")];
    want.extend("好🦀".bytes().map(byte));
    assert_eq!(ids, want);
    // Decoding drops the dummy prefix again, and streaming agrees.
    assert_eq!(tok.decode(&ids, false), "Hello 你好🦀");
    assert_eq!(stream(&tok, &ids, false), "Hello 你好🦀");
    // After a special token the prefix is added again.
    assert_eq!(
        tok.encode("</s>Hello", false, true).unwrap(),
        [2, id("▁Hello")]
    );
    assert_eq!(tok.eog_ids(), [2]);
    assert_eq!(tok.kind(), "SentencePiece BPE (llama), 272 tokens");
}

#[test]
fn metadata_errors_name_the_key() {
    let mut w = GgufWriter::new();
    w.add_metadata("tokenizer.ggml.model", Value::String("gpt2".into()));
    w.add_metadata("tokenizer.ggml.pre", Value::String("klingon".into()));
    w.add_metadata("tokenizer.ggml.tokens", strings(&["a"]));
    let err = load(&w, "k.gguf").err().unwrap();
    assert!(
        err.contains("klingon") && err.contains("qwen2") && err.contains("llama-bpe"),
        "{err}"
    );

    let mut w = GgufWriter::new();
    w.add_metadata("tokenizer.ggml.model", Value::String("bert".into()));
    let err = load(&w, "b.gguf").err().unwrap();
    assert!(err.contains("'bert'") && err.contains("gpt2"), "{err}");

    let mut w = GgufWriter::new();
    w.add_metadata("tokenizer.ggml.model", Value::String("gpt2".into()));
    let err = load(&w, "m.gguf").err().unwrap();
    assert!(
        err.contains("m.gguf") && err.contains("tokenizer.ggml.tokens"),
        "{err}"
    );

    let mut w = GgufWriter::new();
    w.add_metadata("tokenizer.ggml.model", Value::String("gpt2".into()));
    w.add_metadata("tokenizer.ggml.tokens", Value::U32(3));
    let err = load(&w, "t.gguf").err().unwrap();
    assert!(
        err.contains("tokenizer.ggml.tokens") && err.contains("array"),
        "{err}"
    );

    let mut w = GgufWriter::new();
    w.add_metadata("tokenizer.ggml.model", Value::String("gpt2".into()));
    w.add_metadata("tokenizer.ggml.tokens", Value::Array(vec![Value::U32(1)]));
    let err = load(&w, "e.gguf").err().unwrap();
    assert!(
        err.contains("tokenizer.ggml.tokens") && err.contains("entry 0 is a u32"),
        "{err}"
    );

    let mut w2 = GgufWriter::new();
    w2.add_metadata("tokenizer.ggml.model", Value::String("gpt2".into()));
    w2.add_metadata("tokenizer.ggml.tokens", strings(&["a", "b"]));
    w2.add_metadata(
        "tokenizer.ggml.token_type",
        Value::Array(vec![Value::I32(1)]),
    );
    w2.add_metadata("tokenizer.ggml.merges", strings(&[]));
    let err = load(&w2, "n.gguf").err().unwrap();
    assert!(
        err.contains("tokenizer.ggml.token_type") && err.contains("1 entries for 2"),
        "{err}"
    );

    let mut w = GgufWriter::new();
    w.add_metadata("tokenizer.ggml.model", Value::String("gpt2".into()));
    w.add_metadata("tokenizer.ggml.tokens", strings(&["a", "b"]));
    let err = load(&w, "g.gguf").err().unwrap();
    assert!(err.contains("tokenizer.ggml.merges"), "{err}");

    let mut w = GgufWriter::new();
    w.add_metadata("tokenizer.ggml.model", Value::String("gpt2".into()));
    w.add_metadata("tokenizer.ggml.tokens", strings(&["a", "b"]));
    w.add_metadata("tokenizer.ggml.merges", strings(&["ab"]));
    let err = load(&w, "s.gguf").err().unwrap();
    assert!(
        err.contains("tokenizer.ggml.merges") && err.contains("\"ab\""),
        "{err}"
    );

    let mut w = small_bpe(&[], &[]);
    w.add_metadata("tokenizer.ggml.bos_token_id", Value::String("1".into()));
    let err = load(&w, "i.gguf").err().unwrap();
    assert!(err.contains("tokenizer.ggml.bos_token_id"), "{err}");
}

#[test]
fn tokenizer_json_errors() {
    let dir = std::env::temp_dir().join(format!("frugal-tok-err-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokenizer.json");
    let err = Tokenizer::from_file(&path).err().unwrap().to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
    std::fs::write(&path, "{not json").unwrap();
    let err = Tokenizer::from_file(&path).err().unwrap().to_string();
    assert!(err.contains("invalid JSON"), "{err}");
    std::fs::write(&path, r#"{"model": {"type": "Nonsense"}}"#).unwrap();
    let err = Tokenizer::from_file(&path).err().unwrap().to_string();
    assert!(err.contains("cannot load the model"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
