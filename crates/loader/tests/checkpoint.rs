//! Safetensors checkpoints (../shared/fixtures/hf: the bf16 checkpoints that llama.cpp's
//! converter turned into models/<arch>-f32.gguf) opened through `ModelFile::open(dir)`:
//!
//! - dequantized, the logits equal those of the F32 GGUF opened the same way, bit for bit, and
//!   are within tolerance 1 of the fixtures' README (max |Δ| <= 1e-3) of transformers' logits;
//! - weights kept as stored (BF16), the logits are held to transformers' within the BF16
//!   tolerance below;
//! - `--quantize q8_0` gives, tensor for tensor, the bytes and types `llama-quantize` wrote into
//!   models/<arch>-Q8_0.gguf, so its logits meet llama.cpp's Q8_0 references' tolerances (3);
//! - the tokenizer from `tokenizer.json` gives the GGUF's ids.

use frugal_fixtures::{ids, Set};
use frugal_kernels::{GgmlType, ThreadPool};
use frugal_loader::{ModelFile, ModelOptions};
use frugal_models::{Logits, Model, SeqChunk};
use std::path::PathBuf;

/// The shared fixtures' checkpoints (`hf/`), and those of the other shared architectures when
/// `$FRUGAL_SHARED_HF` names a folder of them (regenerated with the shared set's
/// `tools/hf_tiny.py`, whose reference logits then equal `expected/<arch>.hf.f32` bit for bit;
/// not committed, for size).
fn checkpoints() -> Vec<(&'static str, PathBuf)> {
    let mut found: Vec<(&str, PathBuf)> = ["qwen2", "qwen3moe", "deepseek2"]
        .into_iter()
        .map(|a| (a, frugal_fixtures::dir().join("hf").join(a)))
        .collect();
    if let Some(extra) = std::env::var_os("FRUGAL_SHARED_HF") {
        for arch in ["llama", "qwen3", "qwen2moe"] {
            let dir = PathBuf::from(&extra).join(arch);
            if dir.is_dir() {
                found.push((arch, dir));
            }
        }
    }
    found
}

fn open(path: &std::path::Path, dequantize: bool, quantize: Option<GgmlType>) -> ModelFile {
    let opts = ModelOptions {
        threads: Some(2),
        dequantize,
        quantize,
        ..ModelOptions::default()
    };
    ModelFile::open(path, &opts).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Logits at every position of the fixtures' token sequence, in one batch.
fn logits(model: &Model, tokens: &[u32]) -> Vec<f32> {
    let pool = ThreadPool::new(2);
    let blocks: Vec<u32> = (0..8).collect();
    let mut kv = model.new_kv_store(blocks.len(), 16, 1);
    let chunk = SeqChunk {
        tokens,
        pos: 0,
        blocks: &blocks,
        window_blocks: &[],
        state: 0,
        logits: Logits::All,
    };
    model.forward(&pool, &mut kv, &[chunk]).unwrap()
}

fn max_mean(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let mut max = 0.0f32;
    let mut sum = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        let d = (x - y).abs();
        assert!(d.is_finite(), "non-finite logit");
        max = max.max(d);
        sum += f64::from(d);
    }
    (max, (sum / a.len() as f64) as f32)
}

fn tokens(arch: &str) -> Vec<u32> {
    ids(&Set::shared().expected_json(&format!("{arch}-f32"))["token_ids"])
}

#[test]
fn dequantized_checkpoints_equal_their_f32_gguf_bit_for_bit() {
    for (arch, dir) in checkpoints() {
        let tokens = tokens(arch);
        let ckpt = open(&dir, true, None).load(None).unwrap();
        let gguf_path = Set::shared().model(&format!("{arch}-f32"));
        let gguf = open(&gguf_path, true, None).load(None).unwrap();
        let ours = logits(&ckpt, &tokens);
        let theirs = logits(&gguf, &tokens);
        let same = ours
            .iter()
            .zip(&theirs)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        let hf = Set::shared().expected_f32(&format!("{arch}.hf.f32"));
        let (max, mean) = max_mean(&ours, &hf);
        eprintln!("{arch} dequantized vs transformers: max |Δ| {max:.2e}, mean {mean:.2e}");
        assert!(
            same,
            "{arch}: logits differ from the F32 GGUF's: {:?}",
            max_mean(&ours, &theirs)
        );
        assert!(max <= 1e-3, "{arch}: max |Δ| {max} against transformers");
    }
}

/// Weights kept as stored: BF16 matrices multiply activations rounded to BF16, as ggml does for a
/// BF16 GGUF (`vec_dot_type` BF16). That is activation quantization, so the fixtures' tolerance
/// for such a path applies (README, tolerance 3: mean |Δ| <= 0.06, top-1 agreement >= 90 %, max
/// |Δ| <= 0.5 dense / 3.0 MoE), here against transformers' f32 logits of the same weights.
#[test]
fn bf16_checkpoints_stay_within_the_activation_rounding_tolerance() {
    for (arch, dir) in checkpoints() {
        let tokens = tokens(arch);
        let file = open(&dir, false, None);
        assert!(
            file.gguf.tensors().iter().any(|t| t.ty == GgmlType::BF16),
            "{arch}: matrices are kept as BF16"
        );
        let model = file.load(None).unwrap();
        let hf = Set::shared().expected_f32(&format!("{arch}.hf.f32"));
        let ours = logits(&model, &tokens);
        let (max, mean) = max_mean(&ours, &hf);
        let agree = top1_agreement(&ours, &hf, 576);
        eprintln!(
            "{arch} BF16 as stored vs transformers: max |Δ| {max:.2e}, mean {mean:.2e}, top-1 {:.0}%",
            agree * 100.0
        );
        let max_allowed = if matches!(arch, "qwen2" | "qwen3" | "llama") {
            0.5
        } else {
            3.0
        };
        assert!(mean <= 0.06 && max <= max_allowed && agree >= 0.9, "{arch}");
    }
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

fn top1_agreement(a: &[f32], b: &[f32], n_vocab: usize) -> f32 {
    let rows = a.len() / n_vocab;
    let same = a
        .chunks_exact(n_vocab)
        .zip(b.chunks_exact(n_vocab))
        .filter(|(x, y)| argmax(x) == argmax(y))
        .count();
    same as f32 / rows as f32
}

/// `--quantize q8_0` quantizes with ggml's reference quantizer and llama-quantize's choices:
/// every tensor has the type and bytes of the fixtures' `<arch>-Q8_0.gguf`, so the logits are
/// llama.cpp's Q8_0 model's (tolerance 3 against its references, as `parity.rs` holds them).
#[test]
fn quantized_checkpoints_equal_llama_quantize_output() {
    for (arch, dir) in checkpoints() {
        let ours = open(&dir, false, Some(GgmlType::Q8_0));
        let q8_path = Set::shared().model(&format!("{arch}-Q8_0"));
        let theirs = frugal_formats::GgufFile::open(&q8_path).unwrap();
        assert_eq!(ours.gguf.tensors().len(), theirs.tensors().len(), "{arch}");
        for t in theirs.tensors() {
            let o = ours
                .gguf
                .tensor(&t.name)
                .unwrap_or_else(|| panic!("{arch}: no {}", t.name));
            assert_eq!((&o.dims, o.ty), (&t.dims, t.ty), "{arch}: {}", t.name);
            let same = ours.gguf.tensor_data(o) == theirs.tensor_data(t);
            assert!(same, "{arch}: {} differs from llama-quantize's", t.name);
        }
        let e = Set::shared().expected_json(&format!("{arch}-Q8_0"));
        let reference = Set::shared().expected_f32(e["logits"]["batched"].as_str().unwrap());
        let model = ours.load(None).unwrap();
        let (max, mean) = max_mean(&logits(&model, &tokens(arch)), &reference);
        eprintln!("{arch} --quantize q8_0 vs llama.cpp Q8_0: max |Δ| {max:.2e}, mean {mean:.2e}");
        let max_allowed = if matches!(arch, "qwen2" | "qwen3" | "llama") {
            0.5
        } else {
            3.0
        };
        assert!(mean <= 0.06 && max <= max_allowed, "{arch}: {max} {mean}");
    }
}

/// The metadata the checkpoint converts to is what llama.cpp's converter wrote (tokenizer and
/// file-description keys aside), so `ModelConfig` reads the same hyper-parameters.
#[test]
fn checkpoint_metadata_is_the_converters() {
    for (arch, dir) in checkpoints() {
        let ours = open(&dir, false, None);
        let theirs =
            frugal_formats::GgufFile::open(Set::shared().model(&format!("{arch}-f32"))).unwrap();
        let model_keys = |g: &frugal_formats::GgufFile| {
            let mut kv: Vec<(String, String)> = g
                .metadata()
                .iter()
                .filter(|(k, _)| !k.starts_with("tokenizer.") && !k.starts_with("general."))
                .map(|(k, v)| (k.clone(), format!("{v:?}")))
                .collect();
            kv.sort();
            kv
        };
        assert_eq!(model_keys(&ours.gguf), model_keys(&theirs), "{arch}");
        let gguf_file = open(&Set::shared().model(&format!("{arch}-f32")), false, None);
        let config = |f: &ModelFile| format!("{:?}", f.config);
        assert_eq!(config(&ours), config(&gguf_file), "{arch}");
    }
}

/// `tokenizer.json` (with `tokenizer_config.json` and `generation_config.json`) gives the ids the
/// converted GGUF's vocabulary gives, special tokens included.
#[test]
fn the_checkpoint_tokenizer_gives_the_ggufs_ids() {
    let text = "Hello, world! The quick brown fox jumps over the lazy dog. 12345 <|im_end|>\
                <|im_start|>user\n  tabs\tand ünïcödé 😀<|endoftext|>";
    for (arch, dir) in checkpoints() {
        let ours = open(&dir, false, None);
        let theirs = open(&Set::shared().model(&format!("{arch}-f32")), false, None);
        for add_special in [false, true] {
            let a = ours.tokenizer.encode(text, add_special, true).unwrap();
            let b = theirs.tokenizer.encode(text, add_special, true).unwrap();
            if arch == "llama" && add_special {
                // The fixture's GGUF was converted with the pre-tokenizer name forced to
                // llama-bpe, for which llama.cpp adds BOS by default; the toy tokenizer's own
                // files (no post-processor, `bos_token` null) add none, as transformers does.
                assert_eq!(b[1..], a[..], "llama: all but the GGUF's BOS");
                continue;
            }
            assert_eq!(a, b, "{arch} add_special={add_special}");
        }
        let expected = ids(&Set::shared().expected_json(&format!("{arch}-f32"))["token_ids"]);
        let hello = ours.tokenizer.encode(
            "Hello, world! The quick brown fox jumps over the lazy dog. 12345 <|im_end|>",
            false,
            true,
        );
        assert_eq!(hello.unwrap()[..], expected[..48], "{arch}");
        assert_eq!(
            ours.tokenizer.eog_ids(),
            theirs.tokenizer.eog_ids(),
            "{arch}"
        );
    }
}

/// The labs fixtures' checkpoints (crates/fixtures/data/labs/hf: the transformers checkpoints that
/// `scripts/gen_labs_fixtures.sh` made and llama.cpp converted; gemma3 and glm4moe are committed,
/// and a folder of regenerated ones, `$FRUGAL_LABS_HF/<arch>`, adds ernie4_5 and ernie4_5-moe).
fn labs_checkpoint(arch: &str) -> Option<PathBuf> {
    Set::labs().checkpoint(arch).or_else(|| {
        let dir = PathBuf::from(std::env::var_os("FRUGAL_LABS_HF")?).join(arch);
        dir.is_dir().then_some(dir)
    })
}

/// Tolerance 1 against transformers, and against llama.cpp on the f32 GGUF of the same weights
/// (for Gemma 3 at llama.cpp's fp16-GELU distance, as `labs_parity.rs` holds it): max, mean |Δ|.
fn llama_tolerance(arch: &str) -> (f32, f32) {
    match arch {
        "gemma3" => (1e-2, 2e-3),
        _ => (1e-3, f32::INFINITY),
    }
}

#[test]
fn labs_checkpoints_match_transformers_and_llama_cpp() {
    for arch in ["gemma3", "glm4moe", "ernie4_5", "ernie4_5-moe"] {
        let Some(dir) = labs_checkpoint(arch) else {
            eprintln!("{arch}: no checkpoint (set FRUGAL_LABS_HF to a folder of regenerated ones)");
            continue;
        };
        let set = Set::labs();
        let tokens = ids(&set.expected_json(&format!("{arch}-Q4_K_M"))["token_ids"]);
        let file = open(&dir, true, None);
        check_names_and_metadata(arch, &file);
        let ours = logits(&file.load(None).unwrap(), &tokens);
        if arch == "gemma3" {
            // The one labs model whose F32 GGUF is shipped: the same bits.
            let gguf = open(&set.model("gemma3-f32"), true, None)
                .load(None)
                .unwrap();
            let theirs = logits(&gguf, &tokens);
            let same = ours
                .iter()
                .zip(&theirs)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "gemma3: logits differ from the F32 GGUF's");
        }
        let hf = set.expected_f32(&format!("{arch}.hf.f32"));
        let llama = set.expected_f32(&format!("{arch}-f32.batched.f32"));
        let (hf_max, hf_mean) = max_mean(&ours, &hf);
        let (l_max, l_mean) = max_mean(&ours, &llama);
        eprintln!(
            "{arch} dequantized: vs transformers max |Δ| {hf_max:.2e} mean {hf_mean:.2e}; \
             vs llama.cpp f32 max {l_max:.2e} mean {l_mean:.2e}"
        );
        assert!(hf_max <= 1e-3, "{arch}: {hf_max} from transformers");
        let (max_tol, mean_tol) = llama_tolerance(arch);
        assert!(
            l_max <= max_tol && l_mean <= mean_tol,
            "{arch}: {l_max} {l_mean} from llama.cpp"
        );
        let bf16 = logits(&open(&dir, false, None).load(None).unwrap(), &tokens);
        let (max, mean) = max_mean(&bf16, &hf);
        let agree = top1_agreement(&bf16, &hf, 576);
        eprintln!("{arch} BF16 as stored vs transformers: max |Δ| {max:.2e}, mean {mean:.2e}, top-1 {:.0}%", agree * 100.0);
        let max_allowed = if arch.contains("moe") { 3.0 } else { 0.5 };
        assert!(
            mean <= 0.06 && max <= max_allowed && agree >= 0.9,
            "{arch} BF16"
        );
    }
}

/// The tensors (names and shapes) and hyper-parameters are those of llama.cpp's conversion of the
/// same checkpoint (the labs fixtures' Q4_K_M files, whose metadata the quantizer kept).
fn check_names_and_metadata(arch: &str, ours: &ModelFile) {
    let theirs = open(&Set::labs().model(&format!("{arch}-Q4_K_M")), false, None);
    let shapes = |g: &frugal_formats::GgufFile| {
        let mut v: Vec<(String, Vec<u64>)> = g
            .tensors()
            .iter()
            .map(|t| (t.name.clone(), t.dims.clone()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(shapes(&ours.gguf), shapes(&theirs.gguf), "{arch}: tensors");
    let config = |f: &ModelFile| format!("{:?}", f.config);
    assert_eq!(config(ours), config(&theirs), "{arch}: hyper-parameters");
}

/// Other types follow llama-quantize too: qwen2 (tied embeddings) quantized to Q4_0 gets Q6_K for
/// its token embedding (also the output matrix), and to Q6_K every matrix; both equal the
/// fixtures' files byte for byte.
#[test]
fn other_quantization_types_equal_llama_quantize_output() {
    for (ty, file) in [
        (GgmlType::Q4_0, "qwen2-Q4_0"),
        (GgmlType::Q6_K, "qwen2-Q6_K"),
    ] {
        let ours = open(&frugal_fixtures::dir().join("hf/qwen2"), false, Some(ty));
        let theirs = frugal_formats::GgufFile::open(Set::shared().model(file)).unwrap();
        assert_eq!(ours.gguf.tensors().len(), theirs.tensors().len(), "{file}");
        for t in theirs.tensors() {
            let o = ours.gguf.tensor(&t.name).unwrap();
            assert_eq!((&o.dims, o.ty), (&t.dims, t.ty), "{file}: {}", t.name);
            let same = ours.gguf.tensor_data(o) == theirs.tensor_data(t);
            assert!(same, "{file}: {} differs from llama-quantize's", t.name);
        }
    }
}

/// The hybrid fixtures' checkpoints (Qwen3.5, Qwen3.5-MoE, Qwen3-Next: Gated DeltaNet layers,
/// gated attention, an MTP block), regenerated by `scripts/hybrid_fixtures/hf_tiny_hybrid.py` into
/// `$FRUGAL_HYBRID_HF/<arch>` (not committed, for size; `scripts/gen_hf_checkpoints.sh` makes
/// them): dequantized, qwen35 gives its shipped F32 GGUF's logits bit for bit and all three are
/// within tolerance 1 of llama.cpp's f32 logits (and qwen35 of transformers'); their tensors and
/// hyper-parameters are those of llama.cpp's conversion.
#[test]
fn hybrid_checkpoints_match_llama_cpp() {
    let Some(root) = std::env::var_os("FRUGAL_HYBRID_HF").map(PathBuf::from) else {
        eprintln!("no hybrid checkpoints (set FRUGAL_HYBRID_HF to a folder of regenerated ones)");
        return;
    };
    let set = Set::hybrid();
    for arch in ["qwen35", "qwen35moe", "qwen3next"] {
        let quantized = open(&set.model(&format!("{arch}-Q4_K_M")), false, None);
        let file = open(&root.join(arch), true, None);
        let shapes = |g: &frugal_formats::GgufFile| {
            let mut v: Vec<(String, Vec<u64>)> = g
                .tensors()
                .iter()
                .map(|t| (t.name.clone(), t.dims.clone()))
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            shapes(&file.gguf),
            shapes(&quantized.gguf),
            "{arch}: tensors"
        );
        let config = |f: &ModelFile| format!("{:?}", f.config);
        assert_eq!(
            config(&file),
            config(&quantized),
            "{arch}: hyper-parameters"
        );
        let tokens = ids(&set.expected_json(&format!("{arch}-Q4_K_M"))["token_ids"]);
        let ours = logits(&file.load(None).unwrap(), &tokens);
        if arch == "qwen35" {
            let gguf = open(&set.model("qwen35-f32"), true, None)
                .load(None)
                .unwrap();
            let theirs = logits(&gguf, &tokens);
            let same = ours
                .iter()
                .zip(&theirs)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "qwen35: logits differ from the F32 GGUF's");
            let (max, mean) = max_mean(&ours, &set.expected_f32("qwen35.hf.f32"));
            eprintln!("qwen35 dequantized vs transformers: max |Δ| {max:.2e}, mean {mean:.2e}");
            assert!(max <= 1e-3, "qwen35: {max} from transformers");
        }
        let (max, mean) = max_mean(&ours, &set.expected_f32(&format!("{arch}-f32.batched.f32")));
        eprintln!("{arch} dequantized vs llama.cpp f32: max |Δ| {max:.2e}, mean {mean:.2e}");
        assert!(max <= 1e-3, "{arch}: {max} from llama.cpp");
    }
}

/// The disk cache keys a model by `GgufFile::headers`: a checkpoint's are the same on every
/// open, and change with what was built from it (`--quantize`).
#[test]
fn a_checkpoints_fingerprint_is_stable() {
    let dir = frugal_fixtures::dir().join("hf/qwen2");
    let headers = |q| -> Vec<Vec<u8>> {
        let f = open(&dir, false, q);
        f.gguf.headers().iter().map(|h| h.to_vec()).collect()
    };
    assert_eq!(headers(None), headers(None));
    assert_ne!(headers(None), headers(Some(GgmlType::Q8_0)));
}

/// The FP8 checkpoint of crates/checkpoint/tests/data/fp8 (block-scaled E4M3 weights, head size
/// 80, FFN 136) runs end to end: kept as BF16, dequantized, and quantized at load (136-column rows
/// falling back to F16), with finite logits; the BF16 path picks the exact path's top token.
#[test]
fn an_fp8_checkpoint_runs() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../checkpoint/tests/data/fp8");
    let dir = std::env::temp_dir().join(format!("frugal-fp8-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let tok = frugal_fixtures::dir().join("hf/qwen2");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(tok.join(f), dir.join(f)).unwrap();
    }
    let tokens = [1, 5, 9, 33, 2, 63, 0];
    let run = |dequantize, quantize| {
        logits(
            &open(&dir, dequantize, quantize).load(None).unwrap(),
            &tokens,
        )
    };
    let exact = run(true, None);
    assert!(exact.iter().all(|v| v.is_finite()));
    let (bf16, _) = max_mean(&run(false, None), &exact);
    let (q8, _) = max_mean(&run(false, Some(GgmlType::Q8_0)), &exact);
    eprintln!("fp8 checkpoint: BF16 path vs exact max |Δ| {bf16:.2e}, Q8_0 {q8:.2e}");
    assert!(top1_agreement(&run(false, None), &exact, 64) >= 0.85);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A multimodal checkpoint (Gemma 3's and Qwen3.5's releases are `*ForConditionalGeneration`):
/// the language model's settings in `text_config`, its tensors under `model.language_model.`,
/// the vision tower beside them. The labs Gemma 3 rewritten that way (same data, renamed
/// tensors, a vision tensor added) gives the same model, bit for bit.
#[test]
fn a_multimodal_wrapper_is_read_for_its_language_model() {
    let plain = labs_checkpoint("gemma3").expect("gemma3 is committed");
    let dir = std::env::temp_dir().join(format!("frugal-wrapped-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(plain.join(f), dir.join(f)).unwrap();
    }
    let text: serde_json::Value =
        serde_json::from_slice(&std::fs::read(plain.join("config.json")).unwrap()).unwrap();
    let config = serde_json::json!({
        "architectures": ["Gemma3ForConditionalGeneration"],
        "model_type": "gemma3",
        "text_config": text,
        "vision_config": {"hidden_size": 8},
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(
        dir.join("model.safetensors"),
        wrapped(&plain.join("model.safetensors")),
    )
    .unwrap();
    let tokens = ids(&Set::labs().expected_json("gemma3-Q4_K_M")["token_ids"]);
    let run = |d: &std::path::Path| logits(&open(d, true, None).load(None).unwrap(), &tokens);
    let same = run(&dir)
        .iter()
        .zip(&run(&plain))
        .all(|(a, b)| a.to_bits() == b.to_bits());
    let _ = std::fs::remove_dir_all(&dir);
    assert!(same, "the wrapped checkpoint's logits differ");
}

/// `file`'s tensors renamed `model.X` → `model.language_model.X`, and a vision tensor appended.
fn wrapped(file: &std::path::Path) -> Vec<u8> {
    let bytes = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut renamed: serde_json::Map<String, serde_json::Value> = header
        .into_iter()
        .map(|(k, v)| match k.strip_prefix("model.") {
            Some(rest) => (format!("model.language_model.{rest}"), v),
            None => (k, v),
        })
        .collect();
    let end = data.len() as u64;
    renamed.insert(
        "model.vision_tower.patch_embedding.weight".into(),
        serde_json::json!({"dtype": "F32", "shape": [2], "data_offsets": [end, end + 8]}),
    );
    let header = serde_json::Value::Object(renamed).to_string();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&[0u8; 8]);
    out
}

/// An F16 checkpoint (the qwen2 fixture's BF16 weights converted to F16, exact for all but the
/// few that fall below F16's normal range) is used as stored: F16 matrices, within the
/// activation-rounding tolerance (3) of transformers, and within tolerance 1 dequantized.
#[test]
fn an_f16_checkpoint_runs_as_stored() {
    let plain = frugal_fixtures::dir().join("hf/qwen2");
    let dir = std::env::temp_dir().join(format!("frugal-f16-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(plain.join(f), dir.join(f)).unwrap();
    }
    std::fs::write(
        dir.join("model.safetensors"),
        as_f16(&plain.join("model.safetensors")),
    )
    .unwrap();
    let tokens = tokens("qwen2");
    let hf = Set::shared().expected_f32("qwen2.hf.f32");
    let file = open(&dir, false, None);
    assert!(file.gguf.tensors().iter().any(|t| t.ty == GgmlType::F16));
    let stored = logits(&file.load(None).unwrap(), &tokens);
    let exact = logits(&open(&dir, true, None).load(None).unwrap(), &tokens);
    let _ = std::fs::remove_dir_all(&dir);
    let (max, mean) = max_mean(&stored, &hf);
    let agree = top1_agreement(&stored, &hf, 576);
    eprintln!(
        "qwen2 F16 as stored vs transformers: max |Δ| {max:.2e}, mean {mean:.2e}, top-1 {:.0}%",
        agree * 100.0
    );
    assert!(max <= 0.5 && mean <= 0.06 && agree >= 0.9);
    let (max, mean) = max_mean(&exact, &hf);
    eprintln!("qwen2 F16 dequantized vs transformers: max |Δ| {max:.2e}, mean {mean:.2e}");
    assert!(max <= 1e-3);
}

/// `file` with every BF16 tensor rewritten as F16 (same names and shapes).
fn as_f16(file: &std::path::Path) -> Vec<u8> {
    let bytes = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut out_data = Vec::with_capacity(data.len());
    for v in header.values_mut().filter(|v| v.get("dtype").is_some()) {
        assert_eq!(v["dtype"], "BF16");
        let (a, b) = (
            v["data_offsets"][0].as_u64().unwrap(),
            v["data_offsets"][1].as_u64().unwrap(),
        );
        let start = out_data.len() as u64;
        for c in data[a as usize..b as usize].chunks_exact(2) {
            let x = half::bf16::from_le_bytes([c[0], c[1]]).to_f32();
            out_data.extend_from_slice(&half::f16::from_f32(x).to_le_bytes());
        }
        v["dtype"] = "F16".into();
        v["data_offsets"] = serde_json::json!([start, out_data.len()]);
    }
    let header = serde_json::Value::Object(header).to_string();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&out_data);
    out
}

/// K-quants at load (no fixture has a plain Q4_K/Q5_K file, so no byte comparison): matrices in
/// the type asked, the output matrix Q6_K, and the quantization-error sanity check of the
/// fixtures' README (tolerance 4): mean |Δ| from llama.cpp's f32 logits at most 1.5 times that of
/// llama.cpp's own Q4_K_M file.
#[test]
fn k_quants_at_load_stay_within_the_quantization_error_bound() {
    for (arch, dir) in checkpoints().into_iter().take(3) {
        let q4km = Set::shared().expected_json(&format!("{arch}-Q4_K_M"));
        let bound = 1.5
            * q4km["distances"]["quant_vs_f32_batched"]["mean_abs"]
                .as_f64()
                .unwrap() as f32;
        let f32_ref = Set::shared().expected_f32(&format!("{arch}-f32.batched.f32"));
        for ty in [GgmlType::Q4_K, GgmlType::Q5_K] {
            let file = open(&dir, false, Some(ty));
            let output = if arch == "qwen2" {
                "token_embd.weight"
            } else {
                "output.weight"
            };
            assert_eq!(
                file.gguf.tensor(output).unwrap().ty,
                GgmlType::Q6_K,
                "{arch}"
            );
            assert_eq!(
                file.gguf
                    .tensor("blk.0.ffn_down.weight")
                    .map_or(ty, |t| t.ty),
                ty
            );
            let (max, mean) = max_mean(&logits(&file.load(None).unwrap(), &tokens(arch)), &f32_ref);
            eprintln!("{arch} --quantize {ty} vs llama.cpp f32: max |Δ| {max:.2e}, mean {mean:.2e} (bound {bound:.2e})");
            assert!(mean <= bound, "{arch} {ty}: mean |Δ| {mean} > {bound}");
        }
    }
}
