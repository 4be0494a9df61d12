//! Every SIMD kernel against its scalar reference, on random blocks and activations, at every
//! instruction-set level this CPU has, with ragged tails where the type allows them.

mod common;

use frugal_kernels::dequant::dequantize_row;
use frugal_kernels::dot::{scalar_fn, vec_dot_fn};
use frugal_kernels::quantize::quantize_row;
use frugal_kernels::{GgmlType, Isa};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Offsets of the f16 scale fields inside one block of `ty`.
fn scale_offsets(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q6_K => &[208],
        _ => &[],
    }
}

/// Random weights of `n` values: random bytes, with every block scale a sane f16.
fn random_weights(rng: &mut StdRng, ty: GgmlType, n: usize) -> Vec<u8> {
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
            let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let mut out = vec![0u8; ty.row_bytes(n).unwrap()];
            quantize_row(ty, &x, &mut out);
            out
        }
        _ => {
            let mut out: Vec<u8> = (0..ty.row_bytes(n).unwrap()).map(|_| rng.gen()).collect();
            for block in out.chunks_exact_mut(ty.block_bytes()) {
                for &o in scale_offsets(ty) {
                    let d = half::f16::from_f32(rng.gen_range(0.001..0.05));
                    block[o..o + 2].copy_from_slice(&d.to_le_bytes());
                }
            }
            out
        }
    }
}

#[test]
fn simd_dots_match_scalar() {
    let levels = common::levels("simd_dots_match_scalar");
    let mut rng = StdRng::seed_from_u64(1);
    let types = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::Q4_1,
        GgmlType::Q5_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q5_K,
        GgmlType::NVFP4,
    ];
    let mut checked = 0;
    for ty in types {
        let block = ty.block_len().max(1);
        let sizes: Vec<usize> = if block == 1 {
            vec![1, 7, 8, 9, 31, 33, 100, 257, 1000]
        } else {
            [1, 2, 3, 5, 7]
                .iter()
                .map(|b| b * block.max(32) / block * block)
                .collect()
        };
        for &n in &sizes {
            if n % block != 0 {
                continue;
            }
            for _ in 0..20 {
                let w = random_weights(&mut rng, ty, n);
                let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-3.0..3.0)).collect();
                let vdt = ty.vec_dot_type();
                let mut a = vec![0u8; vdt.row_bytes(n).unwrap()];
                quantize_row(vdt, &x, &mut a);
                // Tolerance relative to the sum of |terms| (float accumulation order differs).
                let (mut wf, mut af) = (vec![0.0f32; n], vec![0.0f32; n]);
                dequantize_row(ty, &w, &mut wf);
                dequantize_row(vdt, &a, &mut af);
                let mag: f64 = wf.iter().zip(&af).map(|(p, q)| (p * q).abs() as f64).sum();
                let want = scalar_fn(ty)(n, &w, &a);
                for isa in levels.clone() {
                    let got = vec_dot_fn(ty, isa)(n, &w, &a);
                    let tol = 2e-5 * mag + 1e-6;
                    assert!(
                        ((got - want) as f64).abs() <= tol,
                        "{ty} n={n} {isa:?}: simd {got} vs scalar {want} (tol {tol})"
                    );
                    checked += 1;
                }
            }
        }
    }
    eprintln!("{checked} SIMD/scalar comparisons on {:?}", levels.clone());
}

#[test]
fn f32_helpers_match_scalar_with_ragged_tails() {
    let mut rng = StdRng::seed_from_u64(2);
    for n in [0, 1, 3, 8, 15, 16, 31, 64, 65, 130] {
        let a: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((frugal_kernels::dot::dot_f32(&a, &b) - want).abs() < 1e-4);
        let mut y1 = b.clone();
        let mut y2 = b.clone();
        frugal_kernels::dot::axpy_f32(&mut y1, 0.5, &a);
        frugal_kernels::ops::axpy(&mut y2, 0.5, &a);
        for (p, q) in y1.iter().zip(&y2) {
            assert!((p - q).abs() < 1e-6);
        }
    }
}

#[test]
fn four_row_kernels_match_scalar() {
    let levels = common::levels("four_row_kernels_match_scalar");
    let mut rng = StdRng::seed_from_u64(3);
    let mut checked = 0;
    for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q5_0] {
        for blocks in [1usize, 3, 8, 28] {
            let n = blocks * 32;
            for isa in levels.clone() {
                let Some(dot4) = frugal_kernels::dot::vec_dot4_fn(ty, isa) else {
                    continue;
                };
                let w = random_weights(&mut rng, ty, n);
                let acts: Vec<Vec<u8>> = (0..4)
                    .map(|_| {
                        let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-3.0..3.0)).collect();
                        let mut a = vec![0u8; GgmlType::Q8_0.row_bytes(n).unwrap()];
                        quantize_row(GgmlType::Q8_0, &x, &mut a);
                        a
                    })
                    .collect();
                let got = dot4(n, &w, &[&acts[0], &acts[1], &acts[2], &acts[3]]);
                for (j, a) in acts.iter().enumerate() {
                    // Bit-identical to the one-row kernel: batching never changes a result.
                    assert_eq!(
                        got[j].to_bits(),
                        vec_dot_fn(ty, isa)(n, &w, a).to_bits(),
                        "{ty} {isa:?}"
                    );
                    let want = scalar_fn(ty)(n, &w, a);
                    let (mut wf, mut af) = (vec![0.0f32; n], vec![0.0f32; n]);
                    dequantize_row(ty, &w, &mut wf);
                    dequantize_row(GgmlType::Q8_0, a, &mut af);
                    let mag: f64 = wf.iter().zip(&af).map(|(p, q)| (p * q).abs() as f64).sum();
                    assert!(
                        ((got[j] - want) as f64).abs() <= 2e-5 * mag + 1e-6,
                        "{ty} {isa:?} row {j}: {} vs {want}",
                        got[j]
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 0 || levels.clone() == vec![Isa::Scalar]);
}
