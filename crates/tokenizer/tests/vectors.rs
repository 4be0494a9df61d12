//! llama.cpp's tokenizer test vectors (../shared/fixtures/tokenizer; Qwen3.5's in tests/data) on
//! real Qwen2, Qwen3.5, Llama 3 and DeepSeek vocabularies, from the vocabulary GGUFs and from the
//! equivalent tokenizer.json files; the fixture models' own toy vocabulary against llama.cpp's
//! token ids.

use frugal_fixtures::dir as fixtures;
use frugal_formats::{GgufFile, GgufWriter, Value};
use frugal_tokenizer::{Tokenizer, TokenizerError};
use std::io::Read;
use std::path::Path;

/// llama.cpp's `ggml-vocab-<vocab>.gguf.inp/.out` pairs in `dir`.
fn cases_in(dir: &Path, vocab: &str) -> Vec<(String, Vec<u32>)> {
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

/// The cases `tok` gets wrong (add_special = false, parse_special = false, as llama.cpp's
/// test-tokenizer-0), with a pass count on stderr.
fn failures(tok: &Tokenizer, cases: &[(String, Vec<u32>)], what: &str) -> Vec<String> {
    let mut failures = Vec::new();
    for (text, want) in cases {
        let got = tok.encode(text, false, false).unwrap();
        if &got != want {
            failures.push(format!("{text:?}: got {got:?}, want {want:?}"));
        }
    }
    eprintln!(
        "{what}: {}/{} pass",
        cases.len() - failures.len(),
        cases.len()
    );
    failures
}

fn check(tok: &Tokenizer, vocab: &str, source: &str) {
    let cases = cases_in(&fixtures().join("tokenizer"), vocab);
    assert_eq!(cases.len(), 47, "{vocab}: test vectors changed?");
    let what = format!("{vocab} ({source})");
    let failures = failures(tok, &cases, &what);
    assert!(failures.is_empty(), "{what}:\n{}", failures.join("\n"));
}

fn from_gguf(vocab: &str) -> Tokenizer {
    let path = fixtures()
        .join("tokenizer")
        .join(format!("ggml-vocab-{vocab}.gguf"));
    Tokenizer::from_gguf(&GgufFile::open(path).unwrap()).unwrap()
}

/// The gzipped tokenizer.json of `vocab`, unpacked into a temporary folder with its
/// tokenizer_config.json.
fn from_json(vocab: &str) -> Tokenizer {
    let dir = fixtures().join("tokenizer").join(vocab);
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(dir.join("tokenizer.json.gz")).unwrap())
        .read_to_end(&mut json)
        .unwrap();
    // One directory per call: tests run in parallel threads of one process.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp =
        std::env::temp_dir().join(format!("frugal-tok-{vocab}-{}-{call}", std::process::id()));
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

/// Both sources describe the same vocabulary: same ids for the same texts, same BOS/EOS. (The
/// sizes may differ: the Qwen2 GGUF pads its vocabulary to the embedding's 151936 rows. Whether BOS
/// is added may too: these rebuilt tokenizer.json files have no post-processor template.)
#[test]
fn gguf_and_tokenizer_json_agree() {
    for vocab in ["qwen2", "llama-bpe", "deepseek-llm"] {
        let (g, j) = (from_gguf(vocab), from_json(vocab));
        assert_eq!(g.bos(), j.bos(), "{vocab}");
        assert_eq!(g.eos(), j.eos(), "{vocab}");
        let text = "<|im_start|>user\nHello <|endoftext|> 你好 <|begin_of_text|>";
        for parse_special in [false, true] {
            assert_eq!(
                g.encode(text, false, parse_special).unwrap(),
                j.encode(text, false, parse_special).unwrap(),
                "{vocab} parse_special={parse_special}"
            );
        }
    }
}

/// A copy of the Qwen2 vocabulary GGUF whose `tokenizer.ggml.pre` says `pre`. llama.cpp's
/// ggml-vocab-qwen35.gguf is exactly that for `qwen35` (every other key is identical), so the
/// fixtures need not carry a second 6 MB vocabulary.
fn qwen2_vocab_with_pre(pre: &str) -> Tokenizer {
    let src = GgufFile::open(fixtures().join("tokenizer/ggml-vocab-qwen2.gguf")).unwrap();
    assert!(src.tensors().is_empty());
    let mut w = GgufWriter::new();
    for (key, value) in src.metadata() {
        let value = match key.as_str() {
            "tokenizer.ggml.pre" => Value::String(pre.into()),
            _ => value.clone(),
        };
        w.add_metadata(key.clone(), value);
    }
    Tokenizer::from_gguf(&GgufFile::from_bytes(w.to_bytes(), pre).unwrap()).unwrap()
}

/// Qwen3.5's pre-tokenizer (letters joined by combining marks) on llama.cpp's qwen35 vectors,
/// kept in tests/data (the vocabulary is the Qwen2 one, see [`qwen2_vocab_with_pre`]).
#[test]
fn qwen35_vectors() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let cases = cases_in(&data, "qwen35");
    assert_eq!(cases.len(), 51, "qwen35: test vectors changed?");
    let tok = qwen2_vocab_with_pre("qwen35");
    let failed = failures(&tok, &cases, "qwen35 (gguf)");
    assert!(failed.is_empty(), "qwen35:\n{}", failed.join("\n"));
}

/// The vectors above tokenize the same under the Qwen2 split; words with combining marks (Thai
/// vowels, Arabic harakat) do not. Ids from llama.cpp's llama-tokenize on both vocabularies.
#[test]
fn qwen35_keeps_combining_marks_in_words() {
    let (qwen35, qwen2) = (
        qwen2_vocab_with_pre("qwen35"),
        qwen2_vocab_with_pre("qwen2"),
    );
    let thai = "ภาษาไทย สวัสดี";
    assert_eq!(
        qwen35.encode(thai, false, false).unwrap(),
        [127382, 125451, 129328, 124294, 35648, 124311]
    );
    assert_eq!(
        qwen2.encode(thai, false, false).unwrap(),
        [127382, 125451, 129328, 37213, 23271, 125136, 28319]
    );
    let arabic = "مَرْحَبًا بِكُمْ";
    assert_eq!(
        qwen35.encode(arabic, false, false).unwrap(),
        [130531, 11071, 59397, 132078, 21360, 127837, 27846, 52704, 138632]
    );
    assert_eq!(
        qwen2.encode(arabic, false, false).unwrap(),
        [
            10176, 27910, 11071, 59397, 29825, 27910, 21360, 127837, 27846, 52704, 31073, 64604,
            10176, 59397
        ]
    );
}

/// End-of-generation ids as llama.cpp 0.3.36 lists them (`llama_vocab_is_eog` over the vocabulary).
#[test]
fn eog_ids_match_llama_cpp() {
    assert_eq!(from_gguf("qwen2").eog_ids(), [128247, 151643, 151645]);
    assert_eq!(from_gguf("llama-bpe").eog_ids(), [128001, 128009]);
    assert_eq!(from_gguf("deepseek-llm").eog_ids(), [100001]);
}

#[test]
fn add_special_follows_the_metadata() {
    // Llama 3 adds BOS (its pre-tokenizer's default); Qwen2 does not.
    let llama = from_gguf("llama-bpe");
    assert!(llama.add_bos());
    assert_eq!(llama.encode("Hi", true, false).unwrap(), [128000, 13347]);
    assert_eq!(llama.encode("", true, false).unwrap(), [128000]);
    let qwen = from_gguf("qwen2");
    assert!(!qwen.add_bos());
    assert_eq!(
        qwen.encode("Hi", true, false).unwrap(),
        qwen.encode("Hi", false, false).unwrap()
    );
}

#[test]
fn fixture_model_vocab_matches_reference_ids() {
    let e: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("expected/qwen2-f32.json")).unwrap(),
    )
    .unwrap();
    let text = e["text"].as_str().unwrap();
    let ids = frugal_fixtures::ids(&e["token_ids"]);
    let gguf =
        Tokenizer::from_gguf(&GgufFile::open(fixtures().join("models/qwen2-f32.gguf")).unwrap())
            .unwrap();
    assert_eq!(gguf.encode(text, false, true).unwrap(), ids[..48]);
    // The same toy tokenizer as a Hugging Face checkpoint's tokenizer.json.
    let json = Tokenizer::from_file(&fixtures().join("hf/qwen2/tokenizer.json")).unwrap();
    assert_eq!(json.encode(text, false, true).unwrap(), ids[..48]);
    // llama.cpp: <|endoftext|> (EOS) and <|im_end|>; generation_config.json says the same.
    assert_eq!(gguf.eog_ids(), [512, 514]);
    assert_eq!(json.eog_ids(), [512, 514]);
    // The rows past the tokenizer are unused padding: they decode to nothing.
    assert_eq!(gguf.token_text(575), Some("[PAD575]"));
    assert_eq!(gguf.decode(&[513, 575], false), "<|im_start|>");
}

/// More of llama.cpp's vocabularies, from a llama.cpp checkout's `models/` folder named by
/// `FRUGAL_LLAMA_VOCABS` (skipped without it): every vocabulary whose model and pre-tokenizer are
/// supported must pass all its vectors.
#[test]
fn llama_cpp_vocabs_from_env() {
    let Some(dir) = std::env::var_os("FRUGAL_LLAMA_VOCABS") else {
        eprintln!("FRUGAL_LLAMA_VOCABS not set: skipped");
        return;
    };
    let dir = Path::new(&dir);
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let vocab = name
                .strip_prefix("ggml-vocab-")?
                .strip_suffix(".gguf.inp")?;
            Some(vocab.to_string())
        })
        .collect();
    names.sort();
    let mut failed = Vec::new();
    for vocab in names {
        let gguf = GgufFile::open(dir.join(format!("ggml-vocab-{vocab}.gguf"))).unwrap();
        let tok = match Tokenizer::from_gguf(&gguf) {
            Ok(t) => t,
            Err(
                e @ (TokenizerError::UnsupportedModel { .. }
                | TokenizerError::UnsupportedPre { .. }),
            ) => {
                eprintln!("{vocab}: skipped ({e})");
                continue;
            }
            Err(e) => panic!("{vocab}: {e}"),
        };
        let f = failures(&tok, &cases_in(dir, &vocab), &vocab);
        failed.extend(f.into_iter().map(|f| format!("{vocab}: {f}")));
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// Small byte-level vocabularies with GLM-4.5's (`glm4`), ChatGLM's (`chatglm-bpe`) and Kimi
/// K2's (`kimi-k2`) pre-tokenizers, whose merges span what the split must keep apart, against
/// llama.cpp's ids (tests/data, made by scripts/gen_synthetic_bpe_vectors.py).
#[test]
fn synthetic_vocab_vectors() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    for pre in ["glm4", "chatglm-bpe", "kimi-k2"] {
        let vocab = format!("synthetic-{pre}");
        let cases = cases_in(&data, &vocab);
        assert_eq!(cases.len(), 57, "{vocab}: test vectors changed?");
        let gguf = GgufFile::open(data.join(format!("ggml-vocab-{vocab}.gguf"))).unwrap();
        let tok = Tokenizer::from_gguf(&gguf).unwrap();
        let failed = failures(&tok, &cases, &vocab);
        assert!(failed.is_empty(), "{vocab}:\n{}", failed.join("\n"));
    }
}

/// End-of-generation ids of vocabularies shaped as GLM-4.5's, ChatGLM's, Kimi K2's and ERNIE
/// 4.5's converters write them (`<|user|>` as EOT and `<|observation|>` as EOM for GLM; `[EOS]`,
/// `<|im_end|>` and `[EOT]` for Kimi; `</s>` but not `<|end_of_sentence|>` for ERNIE), as
/// llama.cpp lists them (tests/data/synthetic-eog.json).
#[test]
fn synthetic_vocab_eog_ids() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("synthetic-eog.json")).unwrap())
            .unwrap();
    let eog = doc["eog"].as_object().unwrap();
    assert_eq!(eog.len(), 4);
    for (vocab, want) in eog {
        let gguf = GgufFile::open(data.join(format!("ggml-vocab-{vocab}.gguf"))).unwrap();
        let tok = Tokenizer::from_gguf(&gguf).unwrap();
        let want: Vec<u32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tok.eog_ids(), want, "{vocab}");
    }
}
