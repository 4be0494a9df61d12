//! The reference dot products against the definition: for every weight type, the dot product of
//! the dequantized weights with the dequantized (quantized) activations, summed in f64. The integer
//! kernels sum exactly per block and scale in f32, so they agree to ~1e-6 of the sum of |terms|.

use frugal_kernels::dequant::dequantize_row;
use frugal_kernels::dot_scalar::{self, vec_dot};
use frugal_kernels::quantize::{quantize_row, quantize_weights};
use frugal_kernels::GgmlType;
use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const WEIGHT_TYPES: [GgmlType; 15] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_K,
];

/// Random weights: random bytes with sane scales, so every bit pattern of the quants occurs.
fn random_weights(rng: &mut StdRng, ty: GgmlType, n: usize) -> Vec<u8> {
    let mut out: Vec<u8> = (0..ty.row_bytes(n).unwrap()).map(|_| rng.gen()).collect();
    let f16_scales: &[usize] = match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
            let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            quantize_row(ty, &x, &mut out);
            return out;
        }
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q8_1 => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q6_K => &[208],
        GgmlType::Q8_K => &[],
        t => panic!("{t}: no random weights here (not in TYPES)"),
    };
    for block in out.chunks_exact_mut(ty.block_bytes()) {
        for &o in f16_scales {
            let d = f16::from_f32(rng.gen_range(-0.05..0.05));
            block[o..o + 2].copy_from_slice(&d.to_le_bytes());
        }
        if ty == GgmlType::Q8_K {
            block[..4].copy_from_slice(&rng.gen_range(-0.01f32..0.01).to_le_bytes());
        }
    }
    out
}

fn dequant(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; n];
    dequantize_row(ty, bytes, &mut out);
    out
}

/// The per-pair function that `vec_dot` dispatches to.
fn pair_fn(ty: GgmlType) -> fn(&[u8], &[u8]) -> f32 {
    match ty {
        GgmlType::F32 => dot_scalar::vec_dot_f32,
        GgmlType::F16 => dot_scalar::vec_dot_f16,
        GgmlType::BF16 => dot_scalar::vec_dot_bf16,
        GgmlType::Q4_0 => dot_scalar::vec_dot_q4_0_q8_0,
        GgmlType::Q4_1 => dot_scalar::vec_dot_q4_1_q8_1,
        GgmlType::Q5_0 => dot_scalar::vec_dot_q5_0_q8_0,
        GgmlType::Q5_1 => dot_scalar::vec_dot_q5_1_q8_1,
        GgmlType::Q8_0 => dot_scalar::vec_dot_q8_0_q8_0,
        GgmlType::Q8_1 => dot_scalar::vec_dot_q8_1_q8_1,
        GgmlType::Q2_K => dot_scalar::vec_dot_q2_k_q8_k,
        GgmlType::Q3_K => dot_scalar::vec_dot_q3_k_q8_k,
        GgmlType::Q4_K => dot_scalar::vec_dot_q4_k_q8_k,
        GgmlType::Q5_K => dot_scalar::vec_dot_q5_k_q8_k,
        GgmlType::Q6_K => dot_scalar::vec_dot_q6_k_q8_k,
        GgmlType::Q8_K => dot_scalar::vec_dot_q8_k_q8_k,
        t => panic!("{t}: not in TYPES"),
    }
}

/// Checks `vec_dot(ty, w, a)` against the f64 dot product of the dequantized rows.
fn check(ty: GgmlType, n: usize, w: &[u8], x: &[f32], what: &str) {
    let vdt = ty.vec_dot_type();
    let mut a = vec![0u8; vdt.row_bytes(n).unwrap()];
    quantize_row(vdt, x, &mut a);
    let got = vec_dot(ty, n, w, &a);
    assert_eq!(
        got.to_bits(),
        pair_fn(ty)(w, &a).to_bits(),
        "{ty}: dispatch"
    );

    let (wd, ad) = (dequant(ty, w, n), dequant(vdt, &a, n));
    let want: f64 = wd.iter().zip(&ad).map(|(&p, &q)| p as f64 * q as f64).sum();
    let mut scale: f64 = wd
        .iter()
        .zip(&ad)
        .map(|(&p, &q)| (p as f64 * q as f64).abs())
        .sum();
    if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
        // Q4_1/Q5_1: the min term uses the activation block's stored sum s = f16(d * sum(q)),
        // not f16(d) * sum(q): up to two f16 roundings (2^-10) of |m * s| per block.
        let wb = ty.block_bytes();
        for (wblk, ablk) in w.chunks_exact(wb).zip(a.chunks_exact(36)) {
            let m = f16::from_le_bytes([wblk[2], wblk[3]]).to_f32() as f64;
            let s = f16::from_le_bytes([ablk[2], ablk[3]]).to_f32() as f64;
            scale += (m * s).abs() * 10.0; // 1e-4 * 10 > 2^-10
        }
    }
    let tol = 1e-4 * scale + 1e-30;
    assert!(
        (got as f64 - want).abs() <= tol,
        "{ty} {what} n={n}: {got} vs {want} (tolerance {tol})"
    );
}

#[test]
fn every_pair_matches_the_dequantized_dot_product_on_random_blocks() {
    let mut rng = StdRng::seed_from_u64(11);
    for ty in WEIGHT_TYPES {
        let block = ty.block_len();
        for blocks in [1, 2, 3, 8] {
            let n = if block == 1 {
                37 * blocks
            } else {
                block * blocks
            };
            for _ in 0..20 {
                let w = random_weights(&mut rng, ty, n);
                let scale = rng.gen_range(0.01f32..10.0);
                let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-scale..scale)).collect();
                check(ty, n, &w, &x, "random bytes");
            }
        }
    }
}

#[test]
fn every_pair_matches_on_quantized_weights_and_skewed_activations() {
    let mut rng = StdRng::seed_from_u64(12);
    for ty in WEIGHT_TYPES {
        let n = 4 * ty.block_len().max(64);
        for case in 0..10 {
            let wx: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let mut w = vec![0u8; ty.row_bytes(n).unwrap()];
            quantize_weights(ty, &wx, &mut w).unwrap();
            // All-positive and offset activations make the min/sum terms matter.
            let x: Vec<f32> = match case % 3 {
                0 => (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect(),
                1 => (0..n).map(|_| rng.gen_range(0.0..3.0)).collect(),
                _ => (0..n).map(|_| rng.gen_range(-5.0..-4.0)).collect(),
            };
            check(ty, n, &w, &x, "quantized weights");
        }
    }
}

#[test]
fn zero_activations_and_empty_rows_give_zero() {
    let mut rng = StdRng::seed_from_u64(13);
    for ty in WEIGHT_TYPES {
        let n = ty.block_len().max(32);
        let w = random_weights(&mut rng, ty, n);
        let vdt = ty.vec_dot_type();
        let mut a = vec![0u8; vdt.row_bytes(n).unwrap()];
        quantize_row(vdt, &vec![0.0; n], &mut a);
        assert_eq!(vec_dot(ty, n, &w, &a), 0.0, "{ty}");
        assert_eq!(vec_dot(ty, 0, &[], &[]), 0.0, "{ty}");
    }
}

#[test]
fn q8_0_dot_is_exact_for_small_integers() {
    // d = 1 on both sides (amax 127): the dot product is the exact integer sum.
    let mut x = [0.0f32; 32];
    let mut y = [0.0f32; 32];
    for i in 0..32 {
        x[i] = (i as f32 - 16.0) * 4.0;
        y[i] = 3.0 - (i % 7) as f32;
    }
    x[0] = 127.0;
    y[31] = -127.0;
    let (mut w, mut a) = ([0u8; 34], [0u8; 34]);
    quantize_weights(GgmlType::Q8_0, &x, &mut w).unwrap();
    quantize_row(GgmlType::Q8_0, &y, &mut a);
    let want: f32 = x.iter().zip(&y).map(|(p, q)| p * q).sum();
    assert_eq!(vec_dot(GgmlType::Q8_0, 32, &w, &a), want);
}

#[test]
fn float_dots_accumulate_in_f64() {
    // 1e8 + 1 - 1e8 loses the 1 in f32 but not in f64.
    let w = [1e8f32, 1.0, -1e8, 0.0];
    let a = [1.0f32; 4];
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    assert_eq!(vec_dot(GgmlType::F32, 4, &bytes(&w), &bytes(&a)), 1.0);
}

#[test]
#[should_panic(expected = "activation row size")]
fn wrong_activation_type_size_is_a_programmer_error() {
    let w = [0u8; 18];
    let a = [0u8; 36]; // a Q8_1 block for a Q4_0 weight
    vec_dot(GgmlType::Q4_0, 32, &w, &a);
}
