//! Weights borrowed from the memory map ([`Mmap::Always`], MoE experts kept in the map and never
//! repacked) give exactly the logits of weights copied into memory ([`Mmap::Never`]), and a tensor
//! whose data lies outside the file is an error, not a panic.

use frugal_fixtures::dir as fixtures;
use frugal_formats::GgufFile;
use frugal_kernels::{GgmlType, Matrix, ThreadPool};
use frugal_models::{LoadOptions, Logits, Mmap, Model, SeqChunk};
use std::sync::Arc;

fn open(model: &str) -> GgufFile {
    GgufFile::open(fixtures().join("models").join(format!("{model}.gguf"))).unwrap()
}

/// All-position logits of a short prompt in one batch, then two single-token steps.
fn logits(model: &Model, pool: &ThreadPool) -> Vec<f32> {
    let blocks: Vec<u32> = (0..4).collect();
    let mut kv = model.new_kv_store(blocks.len(), 16, 1);
    let n_vocab = model.config().n_vocab as u32;
    let prompt: Vec<u32> = (0..9).map(|i| (i * 7919 + 11) % n_vocab).collect();
    let mut out = model
        .forward(
            pool,
            &mut kv,
            &[SeqChunk {
                tokens: &prompt,
                pos: 0,
                blocks: &blocks,
                window_blocks: &[],
                state: 0,
                logits: Logits::All,
            }],
        )
        .unwrap();
    for (i, t) in [5u32, 77].iter().enumerate() {
        out.extend(
            model
                .forward(
                    pool,
                    &mut kv,
                    &[SeqChunk {
                        tokens: std::slice::from_ref(t),
                        pos: prompt.len() + i,
                        blocks: &blocks,
                        window_blocks: &[],
                        state: 0,
                        logits: Logits::Last,
                    }],
                )
                .unwrap(),
        );
    }
    out
}

fn check_mapped_equals_copied(model: &str, modes: &[Mmap]) {
    let pool = ThreadPool::new(2);
    let gguf = open(model);
    let opts = LoadOptions::default();
    let want = logits(&Model::load_with(&gguf, &opts, Mmap::Never).unwrap(), &pool);
    assert!(want.iter().all(|v| v.is_finite()), "{model}");
    let loaded: Vec<Model> = modes
        .iter()
        .map(|&mode| Model::load_with(&gguf, &opts, mode).unwrap())
        .collect();
    drop(gguf); // mapped matrices keep the map alive
    for (mode, m) in modes.iter().zip(&loaded) {
        let got = logits(m, &pool);
        assert_eq!(got.len(), want.len(), "{model} {mode:?}");
        let diff = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(
            diff, 0,
            "{model} {mode:?}: {diff} logits differ from the copied path"
        );
    }
}

const MOE: [&str; 4] = [
    "qwen3moe-Q4_K_M",
    "qwen3moe-Q8_0",
    "qwen2moe-Q4_K_M",
    "deepseek2-Q4_K_M",
];

/// Dense weights mapped (and repacked where the CPU has a packed layout) equal copied ones; so do
/// MoE models under `Auto` with room to spare (experts mapped and repacked like dense weights).
#[test]
fn mapped_equals_copied() {
    check_mapped_equals_copied("qwen2-Q4_0", &[Mmap::Always, Mmap::Auto]);
    check_mapped_equals_copied("qwen2-Q4_K_M", &[Mmap::Always, Mmap::Auto]);
    for m in MOE {
        check_mapped_equals_copied(m, &[Mmap::Auto]);
    }
}

/// MoE experts kept in the map (never repacked) equal copied experts. Copied experts get the packed
/// GEMM on CPUs that have one, whose rounding differs from the one-row kernels that read experts in
/// place, so this runs in a child process at the instruction set without a packed layout (scalar:
/// AVX2 and AVX-512 both pack), where both paths run the same kernels on the same bytes.
#[test]
fn experts_in_map_equal_copied() {
    let isa = "scalar";
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "child_experts_in_map",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("FRUGAL_ISA", isa)
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "FRUGAL_ISA={isa}:\n{log}");
    assert!(
        log.contains("1 passed"),
        "FRUGAL_ISA={isa}: the child ran no test:\n{log}"
    );
}

#[test]
#[ignore = "run by experts_in_map_equal_copied with FRUGAL_ISA set"]
fn child_experts_in_map() {
    assert!(
        !frugal_kernels::packed::packs(GgmlType::Q4_K),
        "run with an FRUGAL_ISA without packed layouts"
    );
    for m in MOE {
        check_mapped_equals_copied(m, &[Mmap::Always]);
    }
}

/// Dequantized (`--dequantize`) loading reads the map too, and matches.
#[test]
fn dequantized_mapped_equals_copied() {
    let pool = ThreadPool::new(2);
    let gguf = open("qwen3moe-Q8_0");
    let opts = LoadOptions {
        dequantize: true,
        ..LoadOptions::default()
    };
    let copied = Model::load_with(&gguf, &opts, Mmap::Never).unwrap();
    let mapped = Model::load_with(&gguf, &opts, Mmap::Always).unwrap();
    assert_eq!(logits(&copied, &pool), logits(&mapped, &pool));
}

#[test]
fn mapped_region_outside_the_file_is_an_error() {
    let gguf = open("qwen2-Q4_0");
    let size = gguf.file_size() as usize;
    let t = gguf.tensor("blk.0.attn_q.weight").unwrap().clone();
    let (rows, cols) = (t.rows(), t.cols());
    let (image, at) = gguf.tensor_image(&t);
    // In bounds: borrowed, no copy.
    let m = Matrix::from_mapped(t.ty, rows, cols, image.clone(), at, t.n_bytes).unwrap();
    assert!(m.bytes().is_mapped());
    assert_eq!(m.bytes().as_ptr(), gguf.tensor_data(&t).as_ptr());
    // Past the end, or overflowing: errors.
    for (offset, len) in [
        (size - t.n_bytes + 1, t.n_bytes),
        (usize::MAX - 3, t.n_bytes),
    ] {
        let e = Matrix::from_mapped(t.ty, rows, cols, image.clone(), offset, len).err();
        assert!(
            matches!(
                e,
                Some(frugal_kernels::KernelError::RegionOutOfBounds { .. })
            ),
            "{e:?}"
        );
    }
    // A size that does not match the shape: error too.
    assert!(Matrix::from_mapped(t.ty, rows, cols, image, at, t.n_bytes - 1).is_err());
}

/// A misaligned region is copied rather than borrowed (the kernels keep their aligned fast paths).
#[test]
fn misaligned_region_is_copied() {
    let bytes: Vec<u8> = (0..=255u8).cycle().take(4 * 32 * 4 + 1).collect();
    let image: Arc<dyn frugal_kernels::SharedBytes> = Arc::new(bytes.clone());
    let m = Matrix::from_mapped(GgmlType::F32, 4, 32, image, 1, 4 * 32 * 4).unwrap();
    assert!(!m.bytes().is_mapped());
    assert_eq!(&**m.bytes(), &bytes[1..]);
}

/// A GGUF held in memory ([`GgufFile::from_bytes`]) lends its bytes the same way.
#[test]
fn in_memory_image_equals_file() {
    let pool = ThreadPool::new(2);
    let path = fixtures().join("models").join("qwen2moe-Q8_0.gguf");
    let from_file = Model::load_with(
        &open("qwen2moe-Q8_0"),
        &LoadOptions::default(),
        Mmap::Always,
    )
    .unwrap();
    let g = GgufFile::from_bytes(std::fs::read(path).unwrap(), "in-memory").unwrap();
    assert!(!g.is_mapped());
    let in_memory = Model::load_with(&g, &LoadOptions::default(), Mmap::Always).unwrap();
    drop(g);
    assert_eq!(logits(&from_file, &pool), logits(&in_memory, &pool));
}
