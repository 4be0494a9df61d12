//! The AMX tile unit: detection agrees with what the kernel reports, and the BF16 tile GEMM agrees
//! with the scalar reference (within the SIMD kernels' tolerance: f32 sums in another order). The
//! int8 tile GEMM of the packed types is held bit for bit to the references by `packed.rs`. On a
//! CPU without AMX these run the other kernels, and say so.

use frugal_kernels::cpu;
use frugal_kernels::dot_scalar;
use frugal_kernels::matmul::{matmul, Matrix};
use frugal_kernels::quantize::quantize_row;
use frugal_kernels::{GgmlType, ThreadPool};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[test]
fn amx_is_used_only_where_the_cpu_and_kernel_grant_it() {
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
        return;
    };
    let flags = info.lines().find(|l| l.starts_with("flags")).unwrap_or("");
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    // Linux lists amx_tile/amx_int8 where the CPU has them; a kernel too old to enable their state
    // (before 5.16) may list them and still refuse, so only one direction is a rule: AMX is never
    // used where the CPU lacks it.
    let offered = has("amx_tile") && has("amx_int8");
    let available = cpu::amx_available();
    assert!(
        !available || offered,
        "AMX detected but /proc/cpuinfo lacks it"
    );
    if std::env::var_os("FRUGAL_ISA").is_none() {
        let vector = frugal_kernels::Isa::best() == frugal_kernels::Isa::Avx512Vnni;
        assert_eq!(cpu::amx(), available && vector);
    }
    assert!(!cpu::amx() || available);
    assert!(!cpu::amx_bf16() || (cpu::amx() && has("amx_bf16")));
    println!(
        "amx offered: {offered}, granted: {available}, kernel level: {}",
        cpu::level_name()
    );
}

#[test]
fn bf16_matmul_agrees_with_the_reference() {
    let mut rng = StdRng::seed_from_u64(11);
    let pool = ThreadPool::new(2);
    let ty = GgmlType::BF16;
    for (rows, cols) in [(16, 32), (37, 96), (21, 896)] {
        let wf: Vec<f32> = (0..rows * cols).map(|_| rng.gen_range(-2.0..2.0)).collect();
        let mut bytes = vec![0u8; ty.row_bytes(cols).unwrap() * rows];
        for (src, dst) in wf.chunks_exact(cols).zip(bytes.chunks_exact_mut(2 * cols)) {
            quantize_row(ty, src, dst);
        }
        let w = Matrix::from_bytes(ty, rows, cols, &bytes).unwrap();
        for n in [16, 37, 70] {
            let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-3.0..3.0)).collect();
            let mut y = vec![0.0f32; n * rows];
            matmul(&pool, &w, &x, n, &mut y);
            let mut q = vec![0u8; 2 * cols];
            for t in 0..n {
                quantize_row(ty, &x[t * cols..(t + 1) * cols], &mut q);
                for r in 0..rows {
                    let want = dot_scalar::vec_dot(ty, cols, w.row(r), &q);
                    let mag: f64 = (0..cols)
                        .map(|k| (wf[r * cols + k] * x[t * cols + k]).abs() as f64)
                        .sum();
                    let tol = 2e-5 * mag + 1e-6;
                    let got = y[t * rows + r];
                    assert!(
                        ((got - want) as f64).abs() <= tol,
                        "{rows}x{cols} n={n} t={t} r={r}: {got} vs {want} (tol {tol})"
                    );
                }
            }
        }
    }
    println!("bf16 matmul at kernel level {}", cpu::level_name());
}
