//! Split GGUF sets (`NAME-0000K-of-0000N.gguf`, as llama.cpp's `gguf-split` writes them: the first
//! part holds the metadata, every part some tensors and the `split.*` keys) load as one model,
//! from any of their parts, with the same logits as the one-file model.

use frugal_formats::{part_name, GgufFile, GgufWriter, Value};
use frugal_loader::{ModelFile, ModelOptions};
use frugal_models::{Logits, Model, SeqChunk};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    frugal_fixtures::dir().join("models").join(name)
}

/// A fresh directory for one test's files.
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("frugal-split-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The parts of `src` split into `count` files the way `gguf-split --split-max-tensors` does.
fn split(src: &GgufFile, count: usize) -> Vec<GgufWriter> {
    let tensors = src.tensors();
    let per_part = tensors.len().div_ceil(count);
    (0..count)
        .map(|k| {
            let mut w = GgufWriter::new();
            if k == 0 {
                for (key, value) in src.metadata() {
                    if key != "general.alignment" {
                        w.add_metadata(key.clone(), value.clone());
                    }
                }
            }
            w.add_metadata("split.no", Value::U16(k as u16));
            w.add_metadata("split.count", Value::U16(count as u16));
            w.add_metadata("split.tensors.count", Value::I32(tensors.len() as i32));
            for t in tensors.iter().skip(k * per_part).take(per_part) {
                w.add_tensor(t.name.clone(), &t.dims, t.ty, src.tensor_data(t).to_vec());
            }
            w
        })
        .collect()
}

/// Writes the parts as `dir/m-0000K-of-0000N.gguf`; returns their paths.
fn write_parts(dir: &Path, parts: &[GgufWriter]) -> Vec<PathBuf> {
    let n = parts.len() as u32;
    (1..=n)
        .zip(parts)
        .map(|(i, w)| {
            let path = dir.join(part_name("m", i, n));
            w.write(&path).unwrap();
            path
        })
        .collect()
}

fn logits(model: &Model, file: &ModelFile) -> Vec<f32> {
    let pool = file.thread_pool();
    let blocks: Vec<u32> = (0..2).collect();
    let mut kv = model.new_kv_store(blocks.len(), 16, 1);
    let prompt: Vec<u32> = (0..7).map(|i| (i * 31 + 5) % 500).collect();
    let chunk = SeqChunk {
        tokens: &prompt,
        pos: 0,
        blocks: &blocks,
        window_blocks: &[],
        state: 0,
        logits: Logits::All,
    };
    model.forward(&pool, &mut kv, &[chunk]).unwrap()
}

fn open(path: &Path) -> ModelFile {
    let opts = ModelOptions {
        threads: Some(1),
        ..ModelOptions::default()
    };
    ModelFile::open(path, &opts).unwrap()
}

#[test]
fn a_split_set_loads_from_any_part_with_the_one_file_models_logits() {
    let whole = open(&fixture("qwen2-Q4_K_M.gguf"));
    let expected = logits(&whole.load(None).unwrap(), &whole);
    let dir = temp_dir("any-part");
    let paths = write_parts(&dir, &split(&whole.gguf, 3));
    for path in [&paths[0], &paths[2]] {
        let file = open(path);
        assert_eq!(file.gguf.n_parts(), 3);
        assert_eq!(file.gguf.tensors().len(), whole.gguf.tensors().len());
        assert_eq!(file.gguf.name(), paths[0].display().to_string());
        let sizes: u64 = paths.iter().map(|p| p.metadata().unwrap().len()).sum();
        assert_eq!(file.gguf.file_size(), sizes);
        for t in whole.gguf.tensors() {
            let u = file.gguf.tensor(&t.name).unwrap();
            assert_eq!(
                file.gguf.tensor_data(u),
                whole.gguf.tensor_data(t),
                "{}",
                t.name
            );
        }
        assert_eq!(logits(&file.load(None).unwrap(), &file), expected);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The error opening `path` gives, as text.
fn open_error(path: &Path) -> String {
    match ModelFile::open(path, &ModelOptions::default()) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_broken_split_set_is_an_error_naming_what_is_wrong() {
    let whole = open(&fixture("qwen2-Q4_0.gguf"));
    let dir = temp_dir("broken");
    let parts = split(&whole.gguf, 3);
    let paths = write_parts(&dir, &parts);

    // A missing part.
    std::fs::rename(&paths[1], dir.join("aside")).unwrap();
    let e = open_error(&paths[0]);
    assert!(e.contains("part 2") && e.contains("missing"), "{e}");

    // A part that says it is another (a file renamed).
    std::fs::copy(&paths[2], &paths[1]).unwrap();
    let e = open_error(&paths[0]);
    assert!(e.contains("expected part 2 of 3"), "{e}");

    // A set whose files are not named as gguf-split names them.
    let renamed = dir.join("first.gguf");
    std::fs::copy(&paths[0], &renamed).unwrap();
    let e = open_error(&renamed);
    assert!(e.contains("one of 3 parts"), "{e}");

    // The parts together hold fewer tensors than the first says.
    std::fs::rename(dir.join("aside"), &paths[1]).unwrap();
    let mut short = split(&whole.gguf, 3);
    short[2] = GgufWriter::new();
    short[2].add_metadata("split.no", Value::U16(2));
    short[2].add_metadata("split.count", Value::U16(3));
    write_parts(&dir, &short);
    let e = open_error(&paths[0]);
    assert!(e.contains("split.tensors.count"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
