//! The GGUF reader on every fixture file, the writer round trip, and every kind of bad file.

use frugal_fixtures::dir as fixtures;
use frugal_formats::{GgufError, GgufFile, GgufWriter, Value};
use frugal_kernels::GgmlType;
use std::collections::BTreeMap;

fn type_counts(g: &GgufFile) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for t in g.tensors() {
        *m.entry(t.ty.name()).or_default() += 1;
    }
    m
}

#[test]
fn every_fixture_opens() {
    let mut n = 0;
    for dir in ["models", "tokenizer"] {
        for e in std::fs::read_dir(fixtures().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "gguf") {
                let g = GgufFile::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                assert!(g.get("general.architecture").is_some());
                for t in g.tensors() {
                    assert_eq!(g.tensor_data(t).len(), t.n_bytes);
                }
                n += 1;
            }
        }
    }
    assert_eq!(n, 23);
}

#[test]
fn fixture_facts() {
    let g = GgufFile::open(fixtures().join("models/llama-Q4_K_M.gguf")).unwrap();
    assert_eq!(g.version(), 3);
    assert_eq!(g.req_str("general.architecture").unwrap(), "llama");
    let want: BTreeMap<&str, usize> = [("F32", 5), ("Q4_K", 13), ("Q6_K", 3)]
        .into_iter()
        .collect();
    assert_eq!(type_counts(&g), want);
    let t = g.tensor("token_embd.weight").unwrap();
    assert_eq!(t.dims, vec![256, 576]);
    assert_eq!((t.cols(), t.rows()), (256, 576));

    let g = GgufFile::open(fixtures().join("models/deepseek2-Q4_K_M.gguf")).unwrap();
    let want: BTreeMap<&str, usize> = [("F32", 10), ("Q4_K", 16), ("Q5_0", 4), ("Q6_K", 3)]
        .into_iter()
        .collect();
    assert_eq!(type_counts(&g), want);

    let v = GgufFile::open(fixtures().join("tokenizer/ggml-vocab-qwen2.gguf")).unwrap();
    // 151643 BPE + 3 control tokens, padded to the embedding's 151936 rows.
    assert_eq!(v.req_array("tokenizer.ggml.tokens").unwrap().len(), 151936);
    assert!(v.tensors().is_empty());
    assert!(v.req_u32("no.such.key").is_err());
}

fn sample_writer() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("llama".into()));
    w.add_metadata("u8", Value::U8(7));
    w.add_metadata("i8", Value::I8(-7));
    w.add_metadata("u16", Value::U16(700));
    w.add_metadata("i16", Value::I16(-700));
    w.add_metadata("u32", Value::U32(70000));
    w.add_metadata("i32", Value::I32(-70000));
    w.add_metadata("u64", Value::U64(1 << 40));
    w.add_metadata("i64", Value::I64(-(1 << 40)));
    w.add_metadata("f32", Value::F32(1.5));
    w.add_metadata("f64", Value::F64(-2.25));
    w.add_metadata("bool", Value::Bool(true));
    w.add_metadata("str", Value::String("héllo 世界".into()));
    w.add_metadata(
        "nested",
        Value::Array(vec![
            Value::Array(vec![Value::I32(1), Value::I32(2)]),
            Value::Array(vec![Value::I32(3)]),
        ]),
    );
    w.add_metadata("empty", Value::Array(vec![]));
    w.add_tensor(
        "a",
        &[4, 2],
        GgmlType::F32,
        (0..32).map(|i| i as u8).collect(),
    );
    w.add_tensor("b", &[32], GgmlType::Q8_0, vec![1; 34]);
    w.add_tensor("c", &[256], GgmlType::Q4_K, vec![2; 144]);
    w
}

#[test]
fn writer_round_trip() {
    let w = sample_writer();
    let g = GgufFile::from_bytes(w.to_bytes(), "mem.gguf").unwrap();
    assert_eq!(g.metadata().len(), 15);
    assert_eq!(g.get("i8"), Some(&Value::I8(-7)));
    assert_eq!(g.req_u64("u64").unwrap(), 1 << 40);
    assert_eq!(g.opt_i64("i64").unwrap(), Some(-(1 << 40)));
    assert_eq!(g.req_f32("f64").unwrap(), -2.25);
    assert!(g.req_bool("bool").unwrap());
    assert_eq!(g.req_str("str").unwrap(), "héllo 世界");
    assert_eq!(g.req_u32("u16").unwrap(), 700);
    assert_eq!(
        g.get("nested").unwrap().as_array().unwrap()[0]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(g.get("empty").unwrap().as_array().unwrap().len(), 0);
    let a = g.tensor("a").unwrap();
    assert_eq!(
        g.tensor_data(a),
        &(0..32).map(|i| i as u8).collect::<Vec<_>>()[..]
    );
    assert_eq!(g.tensor_data(g.tensor("c").unwrap()), &[2u8; 144][..]);
    assert_eq!(g.tensor("b").unwrap().offset % 32, 0);
    // Alignment other than 32.
    let g = GgufFile::from_bytes(sample_writer().with_alignment(64).to_bytes(), "a64").unwrap();
    assert_eq!(g.alignment(), 64);
    assert!(g.tensors().iter().all(|t| t.offset % 64 == 0));
}

fn err(bytes: Vec<u8>) -> String {
    match GgufFile::from_bytes(bytes, "bad.gguf") {
        Ok(_) => panic!("expected an error"),
        Err(e) => {
            let s = e.to_string();
            assert!(s.contains("bad.gguf"), "error must name the file: {s}");
            s
        }
    }
}

/// A writer with the given metadata and zero-filled tensors.
fn header_with(
    meta: Vec<(&str, Value)>,
    tensors: &[(&str, &[u64], GgmlType, usize)],
) -> GgufWriter {
    let mut w = GgufWriter::new();
    for (k, v) in meta {
        w.add_metadata(k, v);
    }
    for (name, dims, ty, len) in tensors {
        w.add_tensor(*name, dims, *ty, vec![0; *len]);
    }
    w
}

#[test]
fn bad_magic_and_version() {
    assert!(err(b"GGML\x03\0\0\0".to_vec()).contains("not a GGUF"));
    assert!(err(vec![]).contains("not a GGUF"));
    let mut b = sample_writer().to_bytes();
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(err(b.clone()).contains("version 1"));
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert!(err(b).contains("big-endian"));
}

#[test]
fn truncation_anywhere_is_an_error() {
    let bytes = sample_writer().to_bytes();
    for len in 0..bytes.len() {
        let e = err(bytes[..len].to_vec());
        assert!(
            e.contains("truncated")
                || e.contains("outside the file")
                || e.contains("not a GGUF")
                || e.contains("remaining"),
            "cut at {len}: {e}"
        );
    }
    // A real model cut at many points, never a panic.
    let real = std::fs::read(fixtures().join("models/qwen2-Q4_K_M.gguf")).unwrap();
    for i in 1..100 {
        let _ = GgufFile::from_bytes(real[..real.len() * i / 100].to_vec(), "cut.gguf")
            .err()
            .unwrap();
    }
    for len in 0..4096 {
        let _ = GgufFile::from_bytes(real[..len].to_vec(), "cut.gguf")
            .err()
            .unwrap();
    }
}

#[test]
fn absurd_counts_and_lengths() {
    // Tensor count far larger than the file.
    let mut b = sample_writer().to_bytes();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(err(b).contains("tensor count"));
    // Metadata count too.
    let mut b = sample_writer().to_bytes();
    b[16..24].copy_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(err(b).contains("metadata count"));
    // First key's length absurd.
    let mut b = sample_writer().to_bytes();
    b[24..32].copy_from_slice(&(1u64 << 50).to_le_bytes());
    assert!(err(b).contains("exceeds"));
    // An array claiming 2^40 elements.
    let mut w = GgufWriter::new();
    w.add_metadata("arr", Value::Array(vec![Value::U8(1)]));
    let mut b = w.to_bytes();
    // header 24 + key (8 + 3) + value type 4 + element type 4 → the count.
    let pos = 24 + 11 + 4 + 4;
    b[pos..pos + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(err(b).contains("count"));
}

#[test]
fn bad_values() {
    // Unknown metadata value type.
    let mut w = GgufWriter::new();
    w.add_metadata("k", Value::U32(1));
    let mut b = w.to_bytes();
    let pos = 24 + 8 + 1; // after the key "k"
    b[pos..pos + 4].copy_from_slice(&99u32.to_le_bytes());
    assert!(err(b).contains("unknown value type 99"));
    // Invalid UTF-8 in a string.
    let mut w = GgufWriter::new();
    w.add_metadata("k", Value::String("ab".into()));
    let mut b = w.to_bytes();
    // header 24 + key (8 + 1) + type 4 + length 8 → "ab".
    b[24 + 9 + 4 + 8 + 1] = 0xFF;
    assert!(err(b).contains("UTF-8"));
    // Duplicate key.
    let w = header_with(vec![("k", Value::U8(1)), ("k", Value::U8(2))], &[]);
    assert!(err(w.to_bytes()).contains("duplicate"));
    // Bad alignment.
    let w = header_with(vec![("general.alignment", Value::U32(3))], &[]);
    assert!(err(w.to_bytes()).contains("general.alignment"));
    let w = header_with(vec![("general.alignment", Value::String("x".into()))], &[]);
    assert!(err(w.to_bytes()).contains("general.alignment"));
    // Too deeply nested arrays.
    let mut v = Value::U8(1);
    for _ in 0..10 {
        v = Value::Array(vec![v]);
    }
    let w = header_with(vec![("deep", v)], &[]);
    assert!(err(w.to_bytes()).contains("nested"));
}

/// Rewrites one field of the first tensor info: 0 = n_dims, 1 = dim0, 2 = type, 3 = offset.
fn patch_tensor(b: &mut [u8], name: &str, field: usize, value: u64) {
    let needle: Vec<u8> = [&(name.len() as u64).to_le_bytes()[..], name.as_bytes()].concat();
    let start = b.windows(needle.len()).position(|w| w == needle).unwrap() + needle.len();
    let n_dims = u32::from_le_bytes(b[start..start + 4].try_into().unwrap()) as usize;
    match field {
        0 => b[start..start + 4].copy_from_slice(&(value as u32).to_le_bytes()),
        1 => b[start + 4..start + 12].copy_from_slice(&value.to_le_bytes()),
        2 => {
            let o = start + 4 + 8 * n_dims;
            b[o..o + 4].copy_from_slice(&(value as u32).to_le_bytes())
        }
        _ => {
            let o = start + 4 + 8 * n_dims + 4;
            b[o..o + 8].copy_from_slice(&value.to_le_bytes())
        }
    }
}

#[test]
fn bad_tensors() {
    let base = header_with(
        vec![],
        &[
            ("x", &[32], GgmlType::Q8_0, 34),
            ("y", &[8], GgmlType::F32, 32),
        ],
    )
    .to_bytes();
    let with = |field, value, name: &str| {
        let mut b = base.clone();
        patch_tensor(&mut b, name, field, value);
        err(b)
    };
    assert!(with(2, 77, "x").contains("tensor 'x' has an unknown type (ggml type id 77)"));
    assert!(with(2, 24, "x").contains("has type I8 (ggml type id 24), which this build cannot"));
    assert!(with(0, 0, "x").contains("dimensions"));
    assert!(with(0, 5, "x").contains("dimensions"));
    assert!(with(1, 33, "x").contains("not a multiple"));
    assert!(with(1, 0, "y").contains("invalid dimensions"));
    assert!(with(3, 16, "y").contains("aligned"));
    assert!(with(3, 1 << 20, "y").contains("outside the file"));
    // An aligned offset so large that start = data offset + offset overflows (found by fuzzing).
    assert!(with(3, u64::MAX - 31, "y").contains("outside the file"));
    assert!(with(3, 0, "y").contains("overlap"));
    assert!(with(1, u64::MAX / 2, "y").contains("tensor 'y'"));
    // Duplicate tensor names.
    let dup = header_with(
        vec![],
        &[
            ("x", &[8], GgmlType::F32, 32),
            ("x", &[8], GgmlType::F32, 32),
        ],
    );
    assert!(err(dup.to_bytes()).contains("duplicate tensor"));
}

#[test]
fn typed_accessors_name_the_key() {
    let g = GgufFile::from_bytes(sample_writer().to_bytes(), "t.gguf").unwrap();
    let e = g.req_u32("missing.key").unwrap_err();
    assert!(matches!(e, GgufError::MissingKey { .. }));
    assert!(e.to_string().contains("missing.key") && e.to_string().contains("t.gguf"));
    let e = g.req_str("u32").unwrap_err().to_string();
    assert!(e.contains("'u32' is u32, expected a string"), "{e}");
    let e = g.req_u32("i8").unwrap_err().to_string();
    assert!(e.contains("'i8'"), "{e}");
    assert!(g.opt_u32("u64").is_err(), "2^40 does not fit a u32");
}

#[test]
fn open_reports_missing_files() {
    let e = GgufFile::open("/nonexistent/model.gguf")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("/nonexistent/model.gguf"), "{e}");
}

#[test]
fn open_refuses_directories_and_special_files() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("not-a-model");
    std::fs::create_dir_all(&dir).unwrap();
    let e = GgufFile::open(&dir).err().unwrap();
    assert!(matches!(e, GgufError::NotAFile { .. }), "{e:?}");
    let e = e.to_string();
    assert_eq!(
        e,
        format!("{} is a directory, not a GGUF file", dir.display())
    );
    // A FIFO must be refused, not waited on for a writer.
    let fifo = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("not-a-model.fifo");
    let _ = std::fs::remove_file(&fifo);
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if made.is_ok_and(|s| s.success()) {
        let e = GgufFile::open(&fifo).err().unwrap().to_string();
        assert!(e.contains("not-a-model.fifo is a special file"), "{e}");
        std::fs::remove_file(&fifo).unwrap();
    }
}

#[test]
fn version_2_files_read_like_version_3() {
    // v2 has the same layout as v3 (64-bit counts); only the version field differs.
    let mut b = sample_writer().to_bytes();
    b[4..8].copy_from_slice(&2u32.to_le_bytes());
    let g = GgufFile::from_bytes(b, "v2.gguf").unwrap();
    assert_eq!(g.version(), 2);
    assert_eq!(g.tensors().len(), 3);
    assert_eq!(g.req_str("str").unwrap(), "héllo 世界");
}
