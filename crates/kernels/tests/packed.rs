//! The packed (row-interleaved) GEMM against the scalar reference dot products, bit for bit: every
//! packed type, ragged row counts (partial last group), one to many blocks per row, token counts
//! that leave remainders after every tile size, one to three threads. Runs the packed kernels when
//! this CPU (and `FRUGAL_ISA`) selects them; otherwise only the reuse of quantized activations is
//! checked here (`matmul`'s other paths are held to the reference by the other suites).

use frugal_kernels::dequant::dequantize_row;
use frugal_kernels::dot_scalar;
use frugal_kernels::matmul::{matmul, matmul_quantized, quantize_activations, Matrix};
use frugal_kernels::packed::packs;
use frugal_kernels::quantize::{quantize_row, quantize_weights};
use frugal_kernels::{GgmlType, Isa, ThreadPool};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TYPES: [GgmlType; 13] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
    GgmlType::Q5_1,
    GgmlType::Q5_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::MXFP4,
];

fn random_matrix(rng: &mut StdRng, ty: GgmlType, rows: usize, cols: usize) -> Matrix {
    let rb = ty.row_bytes(cols).unwrap();
    let mut bytes = vec![0u8; rb * rows];
    for dst in bytes.chunks_exact_mut(rb) {
        // Rows of varied scale, some with large outliers, so scales and mins vary per block.
        let scale = rng.gen_range(0.01f32..3.0);
        let src: Vec<f32> = (0..cols)
            .map(|_| {
                let v: f32 = rng.gen_range(-1.0..1.0);
                if rng.gen_range(0..50) == 0 {
                    v * 20.0 * scale
                } else {
                    v * scale
                }
            })
            .collect();
        if quantize_weights(ty, &src, dst).is_err() {
            random_blocks(rng, ty, dst);
        }
    }
    Matrix::from_bytes(ty, rows, cols, &bytes).unwrap()
}

/// Random bytes for a type without a quantizer here (IQ4_NL, IQ4_XS: every byte pattern is a
/// valid block), the f16 scale of each block (at offset 0) set to a finite value of varied size.
fn random_blocks(rng: &mut StdRng, ty: GgmlType, dst: &mut [u8]) {
    rng.fill(dst);
    let bb = ty.row_bytes(ty.block_len()).unwrap();
    for block in dst.chunks_exact_mut(bb) {
        let d = half::f16::from_f32(rng.gen_range(-0.05f32..0.05));
        block[..2].copy_from_slice(&d.to_le_bytes());
    }
}

/// Σ|w·a| over a row: the scale of the rounding error any summation order may make.
fn magnitude(ty: GgmlType, w: &[u8], a: &[u8], n: usize) -> f64 {
    let (mut wf, mut af) = (vec![0.0f32; n], vec![0.0f32; n]);
    dequantize_row(ty, w, &mut wf);
    dequantize_row(ty.vec_dot_type(), a, &mut af);
    wf.iter().zip(&af).map(|(p, q)| (p * q).abs() as f64).sum()
}

fn check(ty: GgmlType, rows: usize, cols: usize, n: usize, pool: &ThreadPool, rng: &mut StdRng) {
    let w = random_matrix(rng, ty, rows, cols);
    let x: Vec<f32> = (0..n * cols)
        .map(|i| rng.gen_range(-2.0f32..2.0) * if i % 7 == 0 { 5.0 } else { 1.0 })
        .collect();
    let mut y = vec![0.0f32; n * rows];
    matmul(pool, &w, &x, n, &mut y);
    assert_eq!(w.is_repacked(), packs(ty), "{ty}: packed layout built");
    // The same through shared quantized activations (the aux data is computed once).
    let qa = quantize_activations(pool, ty.vec_dot_type(), &x, n);
    let mut y2 = vec![0.0f32; n * rows];
    matmul_quantized(pool, &w, &qa, &mut y2);
    matmul_quantized(pool, &w, &qa, &mut y2);
    let vdt = ty.vec_dot_type();
    let mut q = vec![0u8; vdt.row_bytes(cols).unwrap()];
    for t in 0..n {
        quantize_row(vdt, &x[t * cols..(t + 1) * cols], &mut q);
        for r in 0..rows {
            let want = dot_scalar::vec_dot(ty, cols, w.row(r), &q);
            let (got, got2) = (y[t * rows + r], y2[t * rows + r]);
            if packs(ty) {
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{ty} {rows}x{cols} n={n} t={t} r={r}: {got} vs {want}"
                );
            } else {
                let tol = 1e-4 * want.abs().max(1.0);
                assert!(
                    (got - want).abs() <= tol,
                    "{ty} t={t} r={r}: {got} vs {want}"
                );
            }
            assert_eq!(got.to_bits(), got2.to_bits(), "{ty}: shared activations");
        }
    }
}

#[test]
fn packed_matmul_equals_the_scalar_reference_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(7);
    let pools: Vec<ThreadPool> = [1, 2, 3].into_iter().map(ThreadPool::new).collect();
    for ty in TYPES {
        let bl = ty.block_len();
        for (rows, blocks) in [(16, 1), (37, 3), (5, 2), (48, 7), (33, 1), (29, 2)] {
            // 20, 37, 70 and 117 tokens cover every AMX tile (64, 32, 16) and the AVX-512 tiles of
            // the remainders.
            for n in [1, 2, 3, 4, 5, 8, 9, 13, 20, 37, 70, 117] {
                let pool = &pools[(rows + n) % 3];
                check(ty, rows, blocks * bl, n, pool, &mut rng);
            }
        }
    }
}

#[test]
fn packed_matmul_handles_many_tokens_and_wide_rows() {
    // More tokens than one L2 token block, and rows wide enough for many blocks.
    let mut rng = StdRng::seed_from_u64(8);
    let pool = ThreadPool::new(2);
    for ty in TYPES {
        let cols = if ty.block_len() == 256 { 1024 } else { 3200 };
        check(ty, 24, cols, 150, &pool, &mut rng);
    }
}

/// Offsets of the f16 scale fields (`d`, `dmin`) in a block of `ty`.
fn scale_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_K => &[0, 2],
        GgmlType::Q6_K => &[208],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        // Q4_1/Q5_1's `m`: an all-ones fill would make it NaN.
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q5_K => &[0, 2],
        _ => &[0],
    }
}

#[test]
fn packed_matmul_is_exact_at_extreme_quants() {
    // Every quant byte (and Q4_K/Q6_K sub-block scale byte) the same, activations of full
    // magnitude with one sign: the largest integer sums the kernels' narrow intermediates meet.
    let pool = ThreadPool::new(2);
    for ty in TYPES {
        let (rows, cols) = (21, 2 * ty.block_len());
        let rb = ty.row_bytes(cols).unwrap();
        let bb = rb / 2;
        for fill in [0x00u8, 0xFF, 0x80, 0x81, 0x7F, 0x88, 0x77, 0x0F, 0xF0] {
            let mut bytes = vec![fill; rb * rows];
            for block in bytes.chunks_exact_mut(bb) {
                for &at in scale_fields(ty) {
                    block[at..at + 2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
                }
            }
            let w = Matrix::from_bytes(ty, rows, cols, &bytes).unwrap();
            for sign in [1.0f32, -1.0] {
                // One AMX tile of 16 and an AVX-512 remainder.
                let n = 21;
                let x: Vec<f32> = (0..n * cols)
                    .map(|i| sign * if i / cols == 3 { 0.5 } else { 1.0 })
                    .collect();
                let mut y = vec![0.0f32; n * rows];
                matmul(&pool, &w, &x, n, &mut y);
                let vdt = ty.vec_dot_type();
                let mut q = vec![0u8; vdt.row_bytes(cols).unwrap()];
                for t in 0..n {
                    quantize_row(vdt, &x[t * cols..(t + 1) * cols], &mut q);
                    for r in 0..rows {
                        let want = dot_scalar::vec_dot(ty, cols, w.row(r), &q);
                        let got = y[t * rows + r];
                        if packs(ty) {
                            assert_eq!(
                                got.to_bits(),
                                want.to_bits(),
                                "{ty} fill {fill:#x}: {got} vs {want}"
                            );
                        } else {
                            let tol = 1e-5 * magnitude(ty, w.row(r), &q, cols) + 1e-30;
                            assert!(((got - want) as f64).abs() <= tol, "{ty} fill {fill:#x}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn packed_matmul_runs_at_every_simd_level() {
    // This process runs the kernels of `Isa::best()` (AVX-512 VNNI here when the CPU has it); the
    // other tests of this file run again in a child process under `FRUGAL_ISA=avx2`, so the AVX2
    // kernels (`gemm256`) are checked too. A child (FRUGAL_ISA set) does not recurse.
    let best = Isa::best();
    let avail = Isa::available();
    let child = std::env::var_os("FRUGAL_ISA").is_some();
    let mut ran = vec![frugal_kernels::cpu::level_name()];
    // With AMX, the AVX-512 tiles run alone (every token count) in a child too.
    if !child && frugal_kernels::cpu::amx() {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .env("FRUGAL_ISA", "avx512")
            .args(["--skip", "every_simd_level", "--test-threads", "2"])
            .status()
            .unwrap();
        assert!(
            status.success(),
            "the packed tests under FRUGAL_ISA=avx512 failed"
        );
        ran.push(Isa::Avx512Vnni.name());
    }
    if !child && best > Isa::Avx2 && avail.contains(&Isa::Avx2) {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .env("FRUGAL_ISA", "avx2")
            .args(["--skip", "every_simd_level", "--test-threads", "2"])
            .status()
            .unwrap();
        assert!(
            status.success(),
            "the packed tests under FRUGAL_ISA=avx2 failed"
        );
        ran.push(Isa::Avx2.name());
    }
    let skipped: Vec<&str> = ["avx2", "avx512vnni", "amx"]
        .into_iter()
        .filter(|i| !ran.contains(i))
        .collect();
    println!("packed: ran {ran:?}, skipped {skipped:?} (CPU or FRUGAL_ISA)");
}
