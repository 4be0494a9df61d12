//! llama.cpp's tokenizer test vectors (../shared/fixtures/tokenizer) on real Qwen2, Llama 3 and
//! DeepSeek vocabularies, from the vocabulary GGUFs and from the equivalent tokenizer.json files.

use frugal_fixtures::dir as fixtures;
use frugal_formats::GgufFile;
use frugal_tokenizer::{StreamDecoder, Tokenizer};
use std::io::Read;

fn cases(vocab: &str) -> Vec<(String, Vec<u32>)> {
    let dir = fixtures().join("tokenizer");
    let inp = std::fs::read_to_string(dir.join(format!("ggml-vocab-{vocab}.gguf.inp"))).unwrap();
    let out = std::fs::read_to_string(dir.join(format!("ggml-vocab-{vocab}.gguf.out"))).unwrap();
    let texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    // One line per input, the last input being the empty string (its line is empty too).
    let ids: Vec<Vec<u32>> = out
        .split('\n')
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect();
    assert!(
        texts.len() >= ids.len(),
        "{vocab}: {} inputs, {} outputs",
        texts.len(),
        ids.len()
    );
    texts.into_iter().map(str::to_string).zip(ids).collect()
}

fn check(tok: &Tokenizer, vocab: &str, source: &str) {
    let cases = cases(vocab);
    let mut failures = Vec::new();
    for (text, want) in &cases {
        let got = tok.encode(text, false, false).unwrap();
        if &got != want {
            failures.push(format!("{text:?}: got {got:?}, want {want:?}"));
        }
    }
    eprintln!(
        "{vocab} ({source}): {}/{} pass",
        cases.len() - failures.len(),
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{vocab} ({source}):\n{}",
        failures.join("\n")
    );
}

fn from_gguf(vocab: &str) -> Tokenizer {
    let path = fixtures()
        .join("tokenizer")
        .join(format!("ggml-vocab-{vocab}.gguf"));
    Tokenizer::from_gguf(&GgufFile::open(path).unwrap()).unwrap()
}

fn from_json(vocab: &str) -> Tokenizer {
    let dir = fixtures().join("tokenizer").join(vocab);
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(dir.join("tokenizer.json.gz")).unwrap())
        .read_to_end(&mut json)
        .unwrap();
    let tmp = std::env::temp_dir().join(format!("frugal-tok-{vocab}-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("tokenizer.json"), json).unwrap();
    std::fs::copy(
        dir.join("tokenizer_config.json"),
        tmp.join("tokenizer_config.json"),
    )
    .unwrap();
    let t = Tokenizer::from_file(&tmp.join("tokenizer.json")).unwrap();
    std::fs::remove_dir_all(&tmp).ok();
    t
}

#[test]
fn qwen2_gguf_vectors() {
    check(&from_gguf("qwen2"), "qwen2", "gguf");
}

#[test]
fn llama_bpe_gguf_vectors() {
    check(&from_gguf("llama-bpe"), "llama-bpe", "gguf");
}

#[test]
fn deepseek_llm_gguf_vectors() {
    check(&from_gguf("deepseek-llm"), "deepseek-llm", "gguf");
}

#[test]
fn tokenizer_json_vectors() {
    for vocab in ["qwen2", "llama-bpe", "deepseek-llm"] {
        check(&from_json(vocab), vocab, "tokenizer.json");
    }
}

#[test]
fn decode_round_trips_and_streams_whole_characters() {
    let tok = from_gguf("qwen2");
    for text in [
        "Hello, world! 你好，世界。 🦀🚀 naïve café — ß∑ 12345",
        "日本語のテキスト and emoji 👩‍👩‍👧‍👦",
        "  leading spaces\n\ttabs\r\n",
    ] {
        let ids = tok.encode(text, false, false).unwrap();
        assert_eq!(tok.decode(&ids, false), text);
        let mut dec = StreamDecoder::new(&tok, false);
        let mut streamed = String::new();
        for &id in &ids {
            let piece = dec.push(id);
            assert!(!piece.contains('\u{FFFD}'), "broken UTF-8 in {piece:?}");
            streamed.push_str(&piece);
        }
        streamed.push_str(&dec.finish());
        assert_eq!(streamed, text);
    }
}

#[test]
fn special_tokens_parse_only_when_asked() {
    let tok = from_gguf("qwen2");
    let im_start = tok.token_id("<|im_start|>").unwrap();
    let with = tok.encode("<|im_start|>user", false, true).unwrap();
    assert_eq!(with[0], im_start);
    let without = tok.encode("<|im_start|>user", false, false).unwrap();
    assert!(!without.contains(&im_start));
    assert!(tok.eog_ids().contains(&tok.token_id("<|im_end|>").unwrap()));
    assert!(tok
        .eog_ids()
        .contains(&tok.token_id("<|endoftext|>").unwrap()));
}

#[test]
fn fixture_model_vocab_matches_reference_ids() {
    let e: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("expected/qwen2-f32.json")).unwrap(),
    )
    .unwrap();
    let text = e["text"].as_str().unwrap();
    let ids: Vec<u32> = e["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let tok =
        Tokenizer::from_gguf(&GgufFile::open(fixtures().join("models/qwen2-f32.gguf")).unwrap())
            .unwrap();
    assert_eq!(tok.encode(text, false, true).unwrap(), ids[..48]);
}

#[test]
fn bad_metadata_is_a_clear_error() {
    use frugal_formats::{GgufWriter, Value};
    let mut w = GgufWriter::new();
    w.add_metadata("tokenizer.ggml.model", Value::String("gpt2".into()));
    w.add_metadata("tokenizer.ggml.pre", Value::String("klingon".into()));
    w.add_metadata(
        "tokenizer.ggml.tokens",
        Value::Array(vec![Value::String("a".into())]),
    );
    let err = Tokenizer::from_gguf(&GgufFile::from_bytes(w.to_bytes(), "k.gguf").unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("klingon") && err.contains("qwen2"), "{err}");

    let mut w = GgufWriter::new();
    w.add_metadata("tokenizer.ggml.model", Value::String("gpt2".into()));
    let err = Tokenizer::from_gguf(&GgufFile::from_bytes(w.to_bytes(), "m.gguf").unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("tokenizer.ggml.tokens"), "{err}");

    let mut w = GgufWriter::new();
    w.add_metadata("tokenizer.ggml.model", Value::String("gpt2".into()));
    w.add_metadata("tokenizer.ggml.tokens", Value::U32(3));
    let err = Tokenizer::from_gguf(&GgufFile::from_bytes(w.to_bytes(), "t.gguf").unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("tokenizer.ggml.tokens") && err.contains("array"),
        "{err}"
    );
}
