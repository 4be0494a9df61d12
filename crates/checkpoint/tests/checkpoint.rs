//! Checkpoint conversion: FP8 block-scaled weights decoded exactly (against values ml_dtypes
//! computed, `scripts/gen_fp8_checkpoint.py`), and clear errors for checkpoints that cannot be
//! converted. Logits parity of the shared fixtures' checkpoints is in
//! `crates/loader/tests/checkpoint.rs`.

use frugal_checkpoint::config::Arch;
use frugal_checkpoint::names::{target, Target};
use frugal_checkpoint::{convert::e4m3_to_f32, open, CheckpointError, Options};
use frugal_formats::SafetensorsFile;
use frugal_kernels::GgmlType;
use std::path::{Path, PathBuf};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

#[test]
fn e4m3_decoding_matches_ml_dtypes_for_every_byte() {
    let text = std::fs::read_to_string(data("fp8/e4m3.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let bits = json["f32_bits"].as_array().unwrap();
    assert_eq!(bits.len(), 256);
    for (b, want) in bits.iter().enumerate() {
        let got = e4m3_to_f32(b as u8);
        match want.as_u64() {
            None => assert!(got.is_nan(), "byte {b:#04x}: {got}"),
            Some(w) => assert_eq!(got.to_bits(), w as u32, "byte {b:#04x}: {got}"),
        }
    }
}

/// Every FP8 weight of the generated checkpoint, decoded and scaled per 128 x 128 block
/// (partial blocks at the edges), is ml_dtypes' value rounded to BF16.
#[test]
fn fp8_block_scaled_weights_decode_to_the_reference_values() {
    let model = open(&data("fp8"), &Options::default()).unwrap();
    let expected = SafetensorsFile::open(data("fp8/expected.safetensors")).unwrap();
    assert_eq!(expected.tensors().len(), 7);
    for e in expected.tensors() {
        let Some(Target::Tensor(name)) = target(&e.name, Arch::Qwen2, 1) else {
            panic!("{} has no GGUF name", e.name)
        };
        let t = model.tensor(&name).unwrap();
        let dims: Vec<u64> = e.shape.iter().rev().copied().collect();
        assert_eq!((t.ty, &t.dims), (GgmlType::BF16, &dims), "{name}");
        assert!(
            model.tensor_data(t) == expected.data(e),
            "{name}: values differ"
        );
    }
    assert!(model
        .tensors()
        .iter()
        .all(|t| !t.name.contains("scale_inv")));
}

/// `--quantize` takes FP8 weights straight to the type asked (rows that are not whole blocks of
/// it fall back as llama-quantize does: F16 for Q8_0).
#[test]
fn fp8_weights_quantize_at_load() {
    let opts = Options {
        quantize: Some(GgmlType::Q8_0),
    };
    let model = open(&data("fp8"), &opts).unwrap();
    let ty = |n: &str| model.tensor(n).unwrap().ty;
    assert_eq!(ty("blk.0.attn_q.weight"), GgmlType::Q8_0);
    assert_eq!(ty("blk.0.ffn_down.weight"), GgmlType::F16, "136 columns");
    assert_eq!(ty("blk.0.attn_norm.weight"), GgmlType::F32);
    assert_eq!(ty("token_embd.weight"), GgmlType::Q8_0);
}

/// A scratch checkpoint folder: `config.json` and the given safetensors files.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str, config: &serde_json::Value, files: &[(&str, Vec<u8>)]) -> Scratch {
        let dir = std::env::temp_dir().join(format!("frugal-ckpt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        for (f, bytes) in files {
            std::fs::write(dir.join(f), bytes).unwrap();
        }
        Scratch(dir)
    }

    fn error(&self) -> String {
        match open(&self.0, &Options::default()) {
            Ok(_) => panic!("{} was accepted", self.0.display()),
            Err(e) => e.to_string(),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fp8_config() -> serde_json::Value {
    let text = std::fs::read_to_string(data("fp8/config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn fp8_model() -> Vec<u8> {
    std::fs::read(data("fp8/model.safetensors")).unwrap()
}

/// A safetensors image of BF16 tensors of the given shapes (zeros).
fn safetensors(tensors: &[(&str, &[u64])]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for (name, shape) in tensors {
        let n = 2 * shape.iter().product::<u64>();
        let entry = serde_json::json!({"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + n]});
        header.insert(name.to_string(), entry);
        offset += n;
    }
    let header = serde_json::Value::Object(header).to_string();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.resize(out.len() + offset as usize, 0);
    out
}

#[test]
fn config_errors_name_the_file_and_the_key() {
    let mut c = fp8_config();
    c.as_object_mut().unwrap().remove("hidden_size");
    let e = Scratch::new("nokey", &c, &[("model.safetensors", fp8_model())]).error();
    assert!(
        e.contains("config.json") && e.contains("'hidden_size'"),
        "{e}"
    );

    let mut c = fp8_config();
    c["num_attention_heads"] = serde_json::json!("two");
    let e = Scratch::new("badtype", &c, &[("model.safetensors", fp8_model())]).error();
    assert!(
        e.contains("'num_attention_heads'") && e.contains("integer"),
        "{e}"
    );

    let mut c = fp8_config();
    c["model_type"] = serde_json::json!("mamba9");
    let e = Scratch::new("arch", &c, &[("model.safetensors", fp8_model())]).error();
    assert!(e.contains("'mamba9'") && e.contains("qwen2, "), "{e}");

    let mut c = fp8_config();
    c["quantization_config"]["quant_method"] = serde_json::json!("gptq");
    let e = Scratch::new("gptq", &c, &[("model.safetensors", fp8_model())]).error();
    assert!(e.contains("quant_method") && e.contains("gptq"), "{e}");
}

#[test]
fn checkpoint_file_errors_are_clear() {
    let c = fp8_config();
    let e = Scratch::new("nofiles", &c, &[]).error();
    assert!(e.contains("no *.safetensors"), "{e}");

    let mut truncated = fp8_model();
    truncated.truncate(truncated.len() - 100);
    let e = Scratch::new("trunc", &c, &[("model.safetensors", truncated)]).error();
    assert!(
        e.contains("model.safetensors") && e.contains("outside"),
        "{e}"
    );

    let odd = safetensors(&[("model.layers.0.mlp.w9.weight", &[4, 4])]);
    let e = Scratch::new("odd", &c, &[("model.safetensors", odd)]).error();
    assert!(
        e.contains("'model.layers.0.mlp.w9.weight'") && e.contains("no GGUF"),
        "{e}"
    );

    let mut model = fp8_model();
    // The scale of q_proj removed: rename it in the header (same length) so it no longer pairs.
    let pos = find(&model, b"q_proj.weight_scale_inv").unwrap();
    model[pos..pos + 6].copy_from_slice(b"qXproj");
    let e = Scratch::new("noscale", &c, &[("model.safetensors", model)]).error();
    assert!(
        e.contains("without") && e.contains("q_proj.weight_scale_inv"),
        "{e}"
    );
}

#[test]
fn incomplete_experts_and_duplicate_shards_are_errors() {
    let mut c = fp8_config();
    c["model_type"] = serde_json::json!("qwen3_moe");
    c["num_experts"] = serde_json::json!(2);
    c.as_object_mut().unwrap().remove("quantization_config");
    let one = safetensors(&[("model.layers.0.mlp.experts.1.up_proj.weight", &[8, 160])]);
    let e = Scratch::new("experts", &c, &[("model.safetensors", one)]).error();
    assert!(e.contains("up experts [1]") && e.contains("says 2"), "{e}");

    let t = safetensors(&[("model.norm.weight", &[160])]);
    let e = Scratch::new(
        "dup",
        &c,
        &[("a.safetensors", t.clone()), ("b.safetensors", t)],
    )
    .error();
    assert!(
        e.contains("'model.norm.weight'") && e.contains("two shards"),
        "{e}"
    );
}

#[test]
fn a_sharded_checkpoint_reads_its_index() {
    let c = fp8_config();
    let index = serde_json::json!({"weight_map": {"model.norm.weight": "../outside.safetensors"}});
    let s = Scratch::new(
        "index",
        &c,
        &[(
            "model.safetensors.index.json",
            index.to_string().into_bytes(),
        )],
    );
    let e = s.error();
    assert!(
        e.contains("weight_map") && e.contains("file name beside the index"),
        "{e}"
    );
    let index = serde_json::json!({"weight_map": {"a": "part-2.safetensors", "b": "part-1.safetensors", "c": "part-2.safetensors"}});
    let paths = frugal_formats::safetensors::read_index(&{
        let p = s.0.join("model.safetensors.index.json");
        std::fs::write(&p, index.to_string()).unwrap();
        p
    })
    .unwrap();
    let names: Vec<_> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["part-2.safetensors", "part-1.safetensors"]);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn the_error_type_says_which_part_failed() {
    let e = open(Path::new("/nonexistent-frugal-ckpt"), &Options::default())
        .err()
        .expect("an error");
    assert!(matches!(e, CheckpointError::Config { .. }), "{e}");
}

/// Llama 3.1's RoPE frequency factors (`rope_type: llama3`) as the converter computes them with
/// torch (tests/data/llama3_rope.json: its code run on three parameter sets), bit for bit.
#[test]
fn llama3_rope_factors_are_the_converters() {
    let text = std::fs::read_to_string(data("llama3_rope.json")).unwrap();
    let cases: serde_json::Value = serde_json::from_str(&text).unwrap();
    for (name, case) in cases.as_object().unwrap() {
        let p: Vec<f64> = case["params"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let config = serde_json::json!({
            "model_type": "llama", "hidden_size": p[1] as u64 * 4, "num_attention_heads": 4,
            "rope_parameters": {"rope_type": "llama3", "rope_theta": p[0], "factor": p[2],
                "low_freq_factor": p[3], "high_freq_factor": p[4],
                "original_max_position_embeddings": p[5]},
        });
        let c = frugal_checkpoint::config::HfConfig::new("config.json".into(), config).unwrap();
        let ours = frugal_checkpoint::config::llama3_rope_factors(&c)
            .unwrap()
            .unwrap();
        let want: Vec<u32> = case["f32_bits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap() as u32)
            .collect();
        let ours: Vec<u32> = ours.iter().map(|f| f.to_bits()).collect();
        assert_eq!(ours, want, "{name}");
    }
}
