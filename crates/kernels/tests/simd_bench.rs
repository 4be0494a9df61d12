//! Micro-benchmarks of the dot kernels, activation quantization and matmul at every instruction-set
//! level (ignored by default; run with
//! `cargo test --release -p frugal-kernels --test simd_bench -- --ignored --nocapture`).
//!
//! Dot kernels run on rows of 4864 values (Qwen2.5-0.5B's FFN width): "hot" repeats 16 rows that
//! stay in L2 (compute-bound, like prefill), "stream" walks 16 MiB of rows (like decode). The
//! matmul uses a 4096 x 1536 matrix; `FRUGAL_BENCH_THREADS` sets its thread count.

use frugal_kernels::dot::{quantize_row_fn, vec_dot4_fn, vec_dot_fn};
use frugal_kernels::matmul::{matmul, Matrix};
use frugal_kernels::quantize::quantize_row;
use frugal_kernels::{GgmlType, Isa, ThreadPool};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::hint::black_box;
use std::time::Instant;

fn random_row_bytes(rng: &mut StdRng, ty: GgmlType, n: usize) -> Vec<u8> {
    let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let mut out = vec![0u8; ty.row_bytes(n).unwrap()];
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => quantize_row(ty, &x, &mut out),
        _ => {
            // Random bytes with small positive f16 scales where the format has them.
            for b in out.iter_mut() {
                *b = rng.gen();
            }
            let offs: &[usize] = match ty {
                GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
                GgmlType::Q4_K => &[0, 2],
                GgmlType::Q6_K => &[208],
                _ => &[],
            };
            for block in out.chunks_exact_mut(ty.block_bytes()) {
                for &o in offs {
                    block[o..o + 2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
                }
            }
        }
    }
    out
}

/// Best-of-5 seconds of `f`.
/// `FRUGAL_BENCH_THREADS`, or `default`.
fn bench_threads(default: usize) -> usize {
    std::env::var("FRUGAL_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn time(mut f: impl FnMut()) -> f64 {
    f();
    (0..25)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

#[test]
#[ignore]
fn bench_dot_kernels() {
    let mut rng = StdRng::seed_from_u64(7);
    let types = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::IQ2_XXS,
        GgmlType::NVFP4,
    ];
    // FRUGAL_BENCH_TYPES=Q4_0,Q8_0 limits the run to those types.
    let only = std::env::var("FRUGAL_BENCH_TYPES").ok();
    let n = 4864;
    for ty in types {
        if let Some(only) = &only {
            if !only.split(',').any(|t| t.eq_ignore_ascii_case(ty.name())) {
                continue;
            }
        }
        let row_bytes = ty.row_bytes(n).unwrap();
        // 16 MiB of weights for the streaming case, 16 rows for the hot case.
        let rows_stream = (16 << 20) / row_bytes;
        let w: Vec<u8> = (0..rows_stream)
            .flat_map(|_| random_row_bytes(&mut rng, ty, n))
            .collect();
        let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let vdt = ty.vec_dot_type();
        let acts: Vec<Vec<u8>> = (0..4)
            .map(|_| {
                let mut a = vec![0u8; vdt.row_bytes(n).unwrap()];
                quantize_row(vdt, &x, &mut a);
                a
            })
            .collect();
        for isa in Isa::available() {
            let dot = vec_dot_fn(ty, isa);
            let hot = time(|| {
                for _ in 0..64 {
                    for r in 0..16 {
                        black_box(dot(n, &w[r * row_bytes..(r + 1) * row_bytes], &acts[0]));
                    }
                }
            }) / (64.0 * 16.0);
            let stream = time(|| {
                for r in 0..rows_stream {
                    black_box(dot(n, &w[r * row_bytes..(r + 1) * row_bytes], &acts[0]));
                }
            }) / rows_stream as f64;
            let mut line = format!(
                "{:5} {:10} n={n}: hot {:7.1} ns/row ({:5.1} GB/s)  stream {:7.1} ns/row ({:5.1} GB/s)",
                ty.name(),
                isa.name(),
                hot * 1e9,
                row_bytes as f64 / hot / 1e9,
                stream * 1e9,
                row_bytes as f64 / stream / 1e9
            );
            if let Some(dot4) = vec_dot4_fn(ty, isa) {
                let a4 = [&acts[0][..], &acts[1][..], &acts[2][..], &acts[3][..]];
                let hot4 = time(|| {
                    for _ in 0..64 {
                        for r in 0..16 {
                            black_box(dot4(n, &w[r * row_bytes..(r + 1) * row_bytes], &a4));
                        }
                    }
                }) / (64.0 * 16.0 * 4.0);
                line += &format!("  x4 hot {:7.1} ns/row", hot4 * 1e9);
            }
            eprintln!("{line}");
        }
    }
}

#[test]
#[ignore]
fn bench_quantize_activations() {
    let mut rng = StdRng::seed_from_u64(8);
    for n in [1536, 8960 / 256 * 256] {
        let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        for ty in [GgmlType::Q8_0, GgmlType::Q8_K, GgmlType::F16] {
            let mut out = vec![0u8; ty.row_bytes(n).unwrap()];
            for isa in Isa::available() {
                let quantize = quantize_row_fn(ty, isa);
                let t = time(|| {
                    for _ in 0..1000 {
                        quantize(black_box(&x), &mut out);
                        black_box(&out);
                    }
                }) / 1000.0;
                eprintln!(
                    "quantize_row {:5} {:10} n={n}: {:7.1} ns",
                    ty.name(),
                    isa.name(),
                    t * 1e9
                );
            }
        }
    }
}

#[test]
#[ignore]
fn bench_matmul() {
    let mut rng = StdRng::seed_from_u64(9);
    let threads = bench_threads(1);
    let pool = ThreadPool::new(threads);
    let (rows, cols) = (4096, 1536);
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::BF16,
    ] {
        let bytes: Vec<u8> = (0..rows)
            .flat_map(|_| random_row_bytes(&mut rng, ty, cols))
            .collect();
        let w = Matrix::from_bytes(ty, rows, cols, &bytes).unwrap();
        for n_tokens in [1usize, 64, 256] {
            let x: Vec<f32> = (0..n_tokens * cols)
                .map(|_| rng.gen_range(-1.0..1.0))
                .collect();
            let mut y = vec![0.0f32; n_tokens * rows];
            let t = time(|| matmul(&pool, &w, &x, n_tokens, &mut y));
            let gops = 2.0 * (rows * cols * n_tokens) as f64 / t / 1e9;
            eprintln!(
                "matmul {:5} {rows}x{cols} tokens={n_tokens:3} threads={threads}: {:8.1} us ({gops:6.1} GOP/s) [{}]",
                ty.name(),
                t * 1e6,
                frugal_kernels::cpu::level_name()
            );
        }
    }
}

/// Decode-like matmuls (one token) over more weight bytes than the caches hold: per type, enough
/// 896 x 4864 matrices (Qwen2.5-0.5B's ffn_down) for 256 MiB, each multiplied once per pass, as
/// GB/s of weights read. `FRUGAL_BENCH_TYPES` (comma-separated names) picks the types.
#[test]
#[ignore]
fn bench_decode_matmul() {
    let mut rng = StdRng::seed_from_u64(10);
    let threads = bench_threads(2);
    let pool = ThreadPool::new(threads);
    let names = std::env::var("FRUGAL_BENCH_TYPES").unwrap_or_else(|_| {
        "Q4_0,Q8_0,IQ4_NL,Q2_K,Q3_K,Q4_K,Q6_K,IQ2_XXS,IQ3_XXS,IQ1_S,TQ2_0".into()
    });
    let (rows, cols) = (896, 4864);
    for name in names.split(',') {
        let ty = GgmlType::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .unwrap_or_else(|| panic!("unknown type {name}"));
        let row: Vec<u8> = random_row_bytes(&mut rng, ty, cols);
        let bytes: Vec<u8> = (0..rows).flat_map(|_| row.iter().copied()).collect();
        // FRUGAL_BENCH_HOT=1: one matrix, again and again (from the caches: compute-bound).
        let count = if std::env::var_os("FRUGAL_BENCH_HOT").is_some() {
            1
        } else {
            (256usize << 20).div_ceil(bytes.len())
        };
        let mats: Vec<Matrix> = (0..count)
            .map(|_| Matrix::from_bytes(ty, rows, cols, &bytes).unwrap())
            .collect();
        let x: Vec<f32> = (0..cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let mut y = vec![0.0f32; rows];
        let t = time(|| {
            for w in &mats {
                matmul(&pool, w, &x, 1, &mut y);
            }
        });
        let gbs = (bytes.len() * count) as f64 / t / 1e9;
        eprintln!(
            "decode {:8} {count:4} x {rows}x{cols} threads={threads}: {:8.1} us per matrix, {gbs:6.1} GB/s [{}]",
            ty.name(),
            t / count as f64 * 1e6,
            Isa::best().name()
        );
    }
}
