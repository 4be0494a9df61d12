//! The safetensors reader: valid files read back, corrupt ones are errors naming the file and
//! the tensor (never panics); models built from borrowed and owned tensors.

use frugal_formats::{Dtype, GgufError, GgufFile, NewTensor, SafetensorsFile, TensorBytes, Value};
use frugal_kernels::GgmlType;

/// A safetensors image: the header JSON as given, then `data`.
fn image(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn open(header: &str, data: &[u8]) -> Result<SafetensorsFile, GgufError> {
    SafetensorsFile::from_bytes(image(header, data), "t.safetensors")
}

const GOOD: &str = r#"{"__metadata__":{"format":"pt"},
    "b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},
    "a":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]}}"#;

#[test]
fn a_valid_file_reads_back() {
    let data: Vec<u8> = (0..16).collect();
    let f = open(GOOD, &data).unwrap();
    assert_eq!(f.metadata(), &[("format".to_string(), "pt".to_string())]);
    let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "b"], "in data order");
    let a = f.tensor("a").unwrap();
    assert_eq!(
        (a.dtype, &a.shape[..], a.n_bytes),
        (Dtype::BF16, &[2, 2][..], 8)
    );
    assert_eq!(f.data(f.tensor("b").unwrap()), &data[8..16]);
}

/// The error for a corrupt file, as text; it must name the file.
fn error(header: &str, data: &[u8]) -> String {
    let e = open(header, data).err().expect("an error").to_string();
    assert!(e.contains("t.safetensors"), "{e}");
    e
}

#[test]
fn corrupt_files_are_errors_naming_file_and_tensor() {
    let cases: &[(&str, usize, &str)] = &[
        // (header, data bytes, what the message says)
        (
            r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            8,
            "'a'",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"#,
            8,
            "invalid JSON",
        ),
        (r#"[1, 2]"#, 0, "not a JSON object"),
        (
            r#"{"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}"#,
            8,
            "unknown dtype \"F33\"",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            12,
            "needs 12",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#,
            8,
            "\"shape\"",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#,
            8,
            "'a'",
        ),
        (r#"{"a":{"dtype":"F32","shape":[2]}}"#, 8, "data_offsets"),
        (
            r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#,
            8,
            "overflows",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                "b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            12,
            "'a' and 'b' overlap",
        ),
        (r#"{"__metadata__":{"n":1}}"#, 0, "__metadata__"),
    ];
    for &(header, n, says) in cases {
        let e = error(header, &vec![0u8; n]);
        assert!(e.contains(says), "{header}: {e}");
    }
}

#[test]
fn truncated_files_are_errors() {
    let full = image(GOOD, &[0u8; 16]);
    for len in [0, 5, 8, 20, full.len() - 1] {
        let e = SafetensorsFile::from_bytes(full[..len].to_vec(), "t.safetensors")
            .err()
            .unwrap_or_else(|| panic!("{len} bytes were accepted"));
        assert!(e.to_string().contains("t.safetensors"), "{e}");
    }
    let mut huge = image(GOOD, &[0u8; 16]);
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(SafetensorsFile::from_bytes(huge, "t.safetensors").is_err());
}

#[test]
fn a_model_built_from_borrowed_and_owned_tensors() {
    let data: Vec<u8> = (0..16).collect();
    let f = open(GOOD, &data).unwrap();
    let a = f.tensor("a").unwrap();
    let tensors = vec![
        NewTensor {
            name: "m.weight".into(),
            dims: vec![2, 2],
            ty: GgmlType::BF16,
            data: TensorBytes::Borrowed {
                file: 0,
                offset: a.offset,
            },
        },
        NewTensor {
            name: "v.weight".into(),
            dims: vec![3],
            ty: GgmlType::F32,
            data: TensorBytes::Owned(vec![7; 12]),
        },
    ];
    let meta = vec![(
        "general.architecture".to_string(),
        Value::String("x".into()),
    )];
    let g = GgufFile::build("ckpt", std::slice::from_ref(&f), meta, tensors).unwrap();
    assert_eq!(g.tensor_data(g.tensor("m.weight").unwrap()), &data[..8]);
    assert_eq!(g.tensor_data(g.tensor("v.weight").unwrap()), &[7; 12]);
    assert_eq!(g.req_str("general.architecture").unwrap(), "x");
    // The fingerprint: a GGUF header of the metadata and tensor table, then the file's header.
    let headers = g.headers();
    assert!(headers[0].starts_with(b"GGUF"));
    assert_eq!(headers[1], f.header());
}

#[test]
fn built_tensors_are_checked() {
    let f = open(GOOD, &[0u8; 16]).unwrap();
    let build = |t: NewTensor| {
        GgufFile::build("ckpt", std::slice::from_ref(&f), Vec::new(), vec![t])
            .err()
            .expect("an error")
            .to_string()
    };
    let borrowed = |dims: Vec<u64>, offset| NewTensor {
        name: "x".into(),
        dims,
        ty: GgmlType::F32,
        data: TensorBytes::Borrowed { file: 0, offset },
    };
    assert!(build(borrowed(vec![4], 4)).contains("outside"));
    assert!(build(borrowed(vec![0], 0)).contains("invalid dimensions"));
    let e = build(NewTensor {
        data: TensorBytes::Borrowed { file: 3, offset: 0 },
        ..borrowed(vec![1], 0)
    });
    assert!(e.contains("file #3"), "{e}");
    let e = build(NewTensor {
        data: TensorBytes::Owned(vec![0; 5]),
        ..borrowed(vec![2], 0)
    });
    assert!(e.contains("5 bytes given"), "{e}");
}

/// Thousands of corrupted copies of a valid file (bytes overwritten, cut short, header digits
/// changed): every one parses or fails with an error, and a parsed one's tensors are readable.
#[test]
fn mutated_files_never_panic() {
    let good = image(GOOD, &(0..16).collect::<Vec<u8>>());
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..5000 {
        let mut bytes = good.clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() % bytes.len() as u64) as usize;
            bytes[i] = match next() % 3 {
                0 => next() as u8,
                1 => b"0123456789"[(next() % 10) as usize],
                _ => b"[]{}\",:-"[(next() % 8) as usize],
            };
        }
        bytes.truncate(bytes.len() - (next() % 4) as usize);
        if let Ok(f) = SafetensorsFile::from_bytes(bytes, "m.safetensors") {
            for t in f.tensors() {
                assert_eq!(f.data(t).len(), t.n_bytes);
            }
        }
    }
}
