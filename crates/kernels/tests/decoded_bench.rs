//! Speed of the decoded types most published files use (Q2_K, Q3_K, Q5_K, Q4_1, Q5_1) next to the
//! packed Q4_0 / Q4_K kernels (ignored by default). Run once per level, e.g.
//! `FRUGAL_ISA=avx2 cargo test --release -p frugal-kernels --test decoded_bench -- --ignored --nocapture`
//! (`matmul` uses `Isa::best()`, fixed per process; the decoder timings cover every level).
//!
//! The matmul is Qwen2.5-0.5B's FFN down projection, 896 rows x 4864 columns, on one thread, for
//! 1 token (decode) and 64 (prefill).

use frugal_kernels::matmul::{matmul, Matrix};
use frugal_kernels::quant::{self, Decoded32, DecodedK, Decoder};
use frugal_kernels::{GgmlType, Isa, ThreadPool};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::hint::black_box;
use std::time::Instant;

const DECODED: [GgmlType; 7] = [
    GgmlType::Q2_K,
    GgmlType::TQ2_0,
    GgmlType::IQ2_XXS,
    GgmlType::Q3_K,
    GgmlType::Q5_K,
    GgmlType::Q4_1,
    GgmlType::Q5_1,
];

/// Random blocks with small finite f16 scales.
fn random_row(rng: &mut StdRng, ty: GgmlType, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; ty.row_bytes(n).unwrap()];
    rng.fill(&mut out[..]);
    let offs: &[usize] = match ty {
        GgmlType::Q4_0 => &[0],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::TQ2_0 => &[64],
        GgmlType::IQ2_XXS => &[0],
        _ => &[0, 2],
    };
    for block in out.chunks_exact_mut(ty.block_bytes()) {
        for &o in offs {
            let v = half::f16::from_f32(rng.gen_range(0.001..0.02));
            block[o..o + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// Best of `reps` timings of `f`, in seconds.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

#[test]
#[ignore]
fn bench_decoders() {
    let mut rng = StdRng::seed_from_u64(1);
    let n = 4864;
    for ty in DECODED {
        let w = random_row(&mut rng, ty, n);
        for isa in Isa::available() {
            let reps = 2000;
            let s = match quant::decoder(ty, isa).unwrap() {
                Decoder::K(f) => {
                    let mut buf = vec![DecodedK::ZERO; n / 256];
                    time(25, || {
                        for _ in 0..reps {
                            f(black_box(&w), &mut buf);
                            black_box(&mut buf);
                        }
                    })
                }
                Decoder::B32(f) => {
                    let mut buf = vec![Decoded32::ZERO; n / 32];
                    time(25, || {
                        for _ in 0..reps {
                            f(black_box(&w), &mut buf);
                            black_box(&mut buf);
                        }
                    })
                }
            };
            let ns = s * 1e9 / (reps * n / 256) as f64;
            println!("decode {ty:5} {:>10}: {ns:6.2} ns / 256 values", isa.name());
        }
    }
}

#[test]
#[ignore]
fn bench_ffn_matmul() {
    let mut rng = StdRng::seed_from_u64(2);
    let (rows, cols) = (896, 4864);
    let pool = ThreadPool::new(1);
    let types = [GgmlType::Q4_0, GgmlType::Q4_K];
    for ty in types.into_iter().chain(DECODED) {
        let bytes = random_row(&mut rng, ty, rows * cols);
        let w = Matrix::from_bytes(ty, rows, cols, &bytes).unwrap();
        for n_tokens in [1, 64, 256] {
            let x: Vec<f32> = (0..n_tokens * cols)
                .map(|_| rng.gen_range(-1.0..1.0))
                .collect();
            let mut y = vec![0.0f32; n_tokens * rows];
            let reps = if n_tokens == 1 { 50 } else { 15 };
            let s = time(reps, || matmul(&pool, &w, &x, n_tokens, &mut y));
            let gops = 2.0 * (rows * cols * n_tokens) as f64 / s / 1e9;
            println!(
                "matmul {ty:5} {rows}x{cols} tokens={n_tokens:2} [{}]: {:9.1} us ({gops:6.1} GOP/s)",
                Isa::best().name(),
                s * 1e6
            );
        }
    }
}
