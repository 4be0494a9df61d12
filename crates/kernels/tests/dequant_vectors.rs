//! Dequantization bit for bit against gguf-py (itself bit-identical to ggml), on random blocks of
//! every type with a vector file in tests/data/dequant (made by scripts/gen_dequant_vectors.py).

use frugal_kernels::dequant::dequantize_row;
use frugal_kernels::GgmlType;
use std::path::Path;

#[test]
fn dequantization_matches_gguf_py_bit_for_bit() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dequant");
    let (mut checked, mut pending) = (vec![], vec![]);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "blocks") {
            continue;
        }
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let Some(ty) = GgmlType::ALL.into_iter().find(|t| t.name() == name) else {
            pending.push(name);
            continue;
        };
        let blocks = std::fs::read(&path).unwrap();
        let want: Vec<f32> = std::fs::read(path.with_extension("f32"))
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let mut got = vec![0.0f32; want.len()];
        dequantize_row(ty, &blocks, &mut got);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{name} value {i}: {g} vs {w}");
        }
        checked.push(name);
    }
    checked.sort();
    pending.sort();
    println!("bit-exact: {checked:?}; not supported in this build: {pending:?}");
    assert!(
        checked.len() >= 5,
        "too few vector files checked: {checked:?}"
    );
}
