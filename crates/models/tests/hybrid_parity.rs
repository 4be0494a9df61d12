//! Logits parity against llama.cpp for the hybrid architectures (Qwen3.5 dense and MoE,
//! Qwen3-Next: Gated DeltaNet layers beside gated full attention), on the project's hybrid
//! fixtures (crates/fixtures/data/hybrid, made by scripts/gen_hybrid_fixtures.sh). The same
//! checks and tolerances as `parity.rs` applies to the shared quantized fixtures
//! (`common::check_quantized`): the exact path against llama.cpp on the dequantized copy, the
//! ggml path against llama.cpp on the file itself, batched and one token at a time.

mod common;

use frugal_fixtures::Set;

fn check(model: &str) {
    common::check_quantized(&Set::hybrid(), model);
}

#[test]
fn qwen35_q4_k_m() {
    check("qwen35-Q4_K_M");
}

#[test]
fn qwen35moe_q4_k_m() {
    check("qwen35moe-Q4_K_M");
}

#[test]
fn qwen3next_q4_k_m() {
    check("qwen3next-Q4_K_M");
}

/// The f32 model (stored gzip-compressed): within 1e-3 of llama.cpp, batched and one token at a
/// time, and of transformers' own Qwen3.5 (fp32 math), and llama.cpp's greedy tokens.
#[test]
fn qwen35_f32_against_llama_cpp_and_transformers() {
    common::check_f32(&Set::hybrid(), "qwen35-f32");
}

/// A MoE file whose experts' gate and up matrices are fused in one tensor (`ffn_gate_up_exps`,
/// the converter's `--fuse-gate-up-exps`) computes exactly what the separate tensors do.
#[test]
fn fused_gate_up_experts_load_as_separate_ones() {
    use frugal_formats::{GgufFile, GgufWriter};
    let set = Set::hybrid();
    let name = "qwen35moe-Q4_K_M";
    let src = GgufFile::open(set.model(name)).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in src.metadata() {
        w.add_metadata(k.clone(), v.clone());
    }
    for t in src.tensors() {
        if t.name.ends_with("ffn_up_exps.weight") {
            continue;
        }
        let Some(layer) = t.name.strip_suffix("ffn_gate_exps.weight") else {
            w.add_tensor(t.name.clone(), &t.dims, t.ty, src.tensor_data(t).to_vec());
            continue;
        };
        let up = src.tensor(&format!("{layer}ffn_up_exps.weight")).unwrap();
        assert_eq!(up.ty, t.ty, "a fused tensor has one type");
        let n_expert = t.dims[2] as usize;
        let (g, u) = (src.tensor_data(t), src.tensor_data(up));
        let per = g.len() / n_expert;
        let fused: Vec<u8> = (0..n_expert)
            .flat_map(|e| {
                g[e * per..(e + 1) * per]
                    .iter()
                    .chain(&u[e * per..(e + 1) * per])
            })
            .copied()
            .collect();
        let dims = [t.dims[0], 2 * t.dims[1], t.dims[2]];
        w.add_tensor(
            format!("{layer}ffn_gate_up_exps.weight"),
            &dims,
            t.ty,
            fused,
        );
    }
    let fused = GgufFile::from_bytes(w.to_bytes(), "fused.gguf").unwrap();
    let pool = frugal_kernels::ThreadPool::new(2);
    let tokens = frugal_fixtures::ids(&set.expected_json(name)["token_ids"]);
    let opts = frugal_models::LoadOptions::default();
    let a = frugal_models::Model::load(&src, &opts).unwrap();
    let b = frugal_models::Model::load(&fused, &opts).unwrap();
    assert_eq!(
        common::logits(&a, &pool, &tokens, false),
        common::logits(&b, &pool, &tokens, false)
    );
}

/// A state slot out of range, or shared by two chunks of one step, is an error, not a race.
#[test]
fn bad_state_slots_are_refused() {
    use frugal_models::{Logits, ModelError, SeqChunk};
    let model = common::load(&Set::hybrid(), "qwen35-Q4_K_M", false);
    let pool = frugal_kernels::ThreadPool::new(1);
    let mut kv = model.new_kv_store(2, 16, 2);
    let chunk = |blocks: &'static [u32], state| SeqChunk {
        tokens: &[1, 2, 3],
        pos: 0,
        blocks,
        window_blocks: &[],
        state,
        logits: Logits::Last,
    };
    for chunks in [vec![chunk(&[0], 2)], vec![chunk(&[0], 1), chunk(&[1], 1)]] {
        let err = model.forward(&pool, &mut kv, &chunks).unwrap_err();
        assert!(matches!(err, ModelError::BadStateSlot { .. }), "{err}");
    }
    model
        .forward(&pool, &mut kv, &[chunk(&[0], 0), chunk(&[1], 1)])
        .unwrap();
}
