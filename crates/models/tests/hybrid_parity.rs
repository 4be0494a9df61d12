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
