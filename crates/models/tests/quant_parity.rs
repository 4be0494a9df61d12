//! Logits parity against llama.cpp for every GGUF weight type, on the project's own quantized
//! fixtures (crates/fixtures/data/quants, made by scripts/gen_quant_fixtures.sh; its README says
//! which tensors of each file have which type). The same checks and tolerances as `parity.rs`
//! applies to the shared quantized fixtures (`common::check_quantized`): the exact path against
//! llama.cpp on the dequantized copy, and the ggml path against llama.cpp on the file itself.
//!
//! Types frugal does not load yet are listed in [`PENDING`]: their files must exist, their tests
//! print a note and pass. Move a type out of the list when its kernels land.

mod common;

use frugal_fixtures::Set;

/// Files (stems under `models/`) whose weight types frugal cannot load yet.
const PENDING: &[&str] = &[];

fn check(model: &str) {
    let set = Set::quants();
    let path = set.model(model);
    assert!(path.is_file(), "missing fixture {}", path.display());
    assert!(
        set.expected(&format!("{model}.json")).is_file(),
        "missing expected/{model}.json"
    );
    if PENDING.contains(&model) {
        eprintln!("{model}: skipped, its weight types are PENDING in frugal (file present)");
        return;
    }
    common::check_quantized(&set, model);
}

macro_rules! quant_parity {
    ($($name:ident => $file:literal;)*) => {
        $(#[test] fn $name() { check($file); })*

        /// Every stored file has a test here, and every PENDING entry names one of them.
        #[test]
        fn every_stored_file_is_tested() {
            let tested = [$($file),*];
            let mut stored: Vec<String> = std::fs::read_dir(Set::quants().root().join("models"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter_map(|n| n.strip_suffix(".gguf").map(str::to_owned))
                .collect();
            stored.sort();
            let mut want: Vec<&str> = tested.to_vec();
            want.sort();
            assert_eq!(stored, want);
            for p in PENDING {
                assert!(tested.contains(p), "PENDING names no stored file: {p}");
            }
        }
    };
}

quant_parity! {
    qwen2_q4_1 => "qwen2-Q4_1";
    qwen2_q5_1 => "qwen2-Q5_1";
    qwen2_q2_k => "qwen2-Q2_K";
    qwen2_q3_k => "qwen2-Q3_K";
    qwen2_q5_k => "qwen2-Q5_K";
    qwen2_iq1_s => "qwen2-IQ1_S";
    qwen2_iq1_m => "qwen2-IQ1_M";
    qwen2_iq2_xxs => "qwen2-IQ2_XXS";
    qwen2_iq2_xs => "qwen2-IQ2_XS";
    qwen2_iq2_s => "qwen2-IQ2_S";
    qwen2_iq3_xxs => "qwen2-IQ3_XXS";
    qwen2_iq3_s => "qwen2-IQ3_S";
    qwen2_iq4_nl => "qwen2-IQ4_NL";
    qwen2_iq4_xs => "qwen2-IQ4_XS";
    qwen2_tq1_0 => "qwen2-TQ1_0";
    qwen2_tq2_0 => "qwen2-TQ2_0";
    qwen2_nvfp4 => "qwen2-NVFP4";
    qwen2_q1_0 => "qwen2-Q1_0";
    qwen2_q2_0 => "qwen2-Q2_0";
    qwen2_ud_mix => "qwen2-UD_MIX";
    qwen3moe_mxfp4_moe => "qwen3moe-MXFP4_MOE";
}
