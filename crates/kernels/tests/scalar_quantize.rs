//! Activation and weight quantizers: bit-exactness with the ggml build that produced the fixtures,
//! hand-checked vectors for the rounding rules, and round trips.
//!
//! The golden hashes below come from a small C program linked against that llama.cpp build
//! (ggml 0.25.3, x86-64 with AVX-512): it fills the input with the generator of this file
//! (written identically in C), quantizes it with `ggml_quantize_chunk` (no importance matrix, so
//! ggml's `quantize_row_*_ref`), `quantize_row_q8_1_ref` and the CPU backend's `from_float` (what
//! ggml runs on activations), and prints the FNV-1a 64 hash of the output bytes.

use frugal_kernels::blocks::{BlockQ8K, BlockQ8_0, BlockQ8_1};
use frugal_kernels::dequant::dequantize_row;
use frugal_kernels::quantize::{f32_to_bf16, quantize_row, quantize_weights};
use frugal_kernels::GgmlType;

/// ggml's FNV-1a over bytes.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The C program's input: 18 blocks of 256 values cycling through nine patterns (uniform,
/// positive only, all zero, tiny with an outlier, bell-shaped, constant, large, negative only,
/// and half-integers with amax 127 so activation quantization hits exact ties).
fn golden_input(seed: u64) -> Vec<f32> {
    let mut state = seed;
    let mut uni = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 40) as u32) as f32 / 16_777_216.0
    };
    let mut x = vec![0.0f32; 256 * 18];
    for (b, y) in x.chunks_exact_mut(256).enumerate() {
        let p = b % 9;
        for v in y.iter_mut() {
            let u = uni();
            *v = match p {
                0 => (u - 0.5) * 2.0,
                1 => u * 2.0,
                2 => 0.0,
                3 => (u - 0.5) * 0.001,
                4 => {
                    let a = uni();
                    let c = uni();
                    (u + a + c - 1.5) * 0.25
                }
                5 => 0.37,
                6 => (u - 0.5) * 100.0,
                7 => -u,
                _ => ((u * 253.0) as i32 - 126) as f32 + 0.5,
            };
        }
        match p {
            3 => y[17] = 8.0,
            6 => y[200] = -0.0,
            8 => y[0] = 127.0,
            _ => {}
        }
    }
    x
}

/// NVFP4's pair came from the same build's `quantize_row_nvfp4_ref` (its `from_float_ref`), called
/// through Python's ctypes on this generator written in numpy float32 (which reproduced Q8_0's pair
/// here first).
const WEIGHT_HASHES: [(GgmlType, [u64; 2]); 14] = [
    (GgmlType::Q4_0, [0xbb7a2a944a76af2e, 0xeea2bbb55cdd99c3]),
    (GgmlType::Q4_1, [0x1efaab11a04cb2f2, 0xe0749ddc92f6ac74]),
    (GgmlType::Q5_0, [0x90b3474a65bc6b41, 0x8e8f50324bb17239]),
    (GgmlType::Q5_1, [0xe34e0e7fa6c531b5, 0x11223d7d01721681]),
    (GgmlType::Q8_0, [0xb90c366db8e7cd38, 0x111ed8d0adb2bc23]),
    (GgmlType::Q8_1, [0x33d315b61f2933ee, 0x5c2cc39117cd3b1d]),
    (GgmlType::Q2_K, [0x9f5c0361fbc90c6e, 0x35b28f67ea7082ef]),
    (GgmlType::Q3_K, [0xe012e497eaf76154, 0x27fcf11d1879e023]),
    (GgmlType::Q4_K, [0x50abda8a1fbd0461, 0x726a20cc7bc34cf6]),
    (GgmlType::Q5_K, [0x3eb77c65e4bb2edf, 0x4a7f8290094e75a0]),
    (GgmlType::Q6_K, [0x4682bdbb53099eeb, 0xae12b7b59bbf2bdd]),
    (GgmlType::F16, [0x51a51ad9a17ac674, 0x3a509390e257290b]),
    (GgmlType::BF16, [0xb04adf223c884561, 0x011e3a550922e7c6]),
    (GgmlType::NVFP4, [0xeeaab712217c206c, 0x52d1e1e08e287392]),
];

const ACTIVATION_HASHES: [(GgmlType, [u64; 2]); 5] = [
    (GgmlType::Q8_0, [0xfc9d865d2f45c2d8, 0xf716c9eb4e2a728e]),
    (GgmlType::Q8_1, [0x6d570ee1101a04ad, 0x1dbc8323edf10550]),
    (GgmlType::Q8_K, [0xb18f04e1a45627f8, 0xacf1f03d8c6e4459]),
    (GgmlType::F16, [0x51a51ad9a17ac674, 0x3a509390e257290b]),
    (GgmlType::BF16, [0xb04adf223c884561, 0x011e3a550922e7c6]),
];

const SEEDS: [u64; 2] = [1, 0x9e37_79b9_7f4a_7c15];

#[test]
fn weight_quantizers_are_bit_exact_with_ggml() {
    for (s, &seed) in SEEDS.iter().enumerate() {
        let x = golden_input(seed);
        for (ty, hashes) in WEIGHT_HASHES {
            let mut q = vec![0u8; ty.row_bytes(x.len()).unwrap()];
            quantize_weights(ty, &x, &mut q).unwrap();
            assert_eq!(fnv1a(&q), hashes[s], "{ty}, seed {seed:#x}");
        }
    }
}

#[test]
fn activation_quantizers_are_bit_exact_with_ggml() {
    for (s, &seed) in SEEDS.iter().enumerate() {
        let x = golden_input(seed);
        for (ty, hashes) in ACTIVATION_HASHES {
            let mut q = vec![0u8; ty.row_bytes(x.len()).unwrap()];
            quantize_row(ty, &x, &mut q);
            assert_eq!(fnv1a(&q), hashes[s], "{ty}, seed {seed:#x}");
        }
    }
}

#[test]
fn weight_quantizers_work_row_by_row() {
    // ggml quantizes whole tensors at once; blocks are independent, so rows give the same bytes.
    let x = golden_input(7);
    for (ty, _) in WEIGHT_HASHES {
        let mut whole = vec![0u8; ty.row_bytes(x.len()).unwrap()];
        quantize_weights(ty, &x, &mut whole).unwrap();
        let row_bytes = ty.row_bytes(512).unwrap();
        for (r, xr) in x.chunks_exact(512).enumerate() {
            let mut q = vec![0u8; row_bytes];
            quantize_weights(ty, xr, &mut q).unwrap();
            assert_eq!(q, whole[r * row_bytes..(r + 1) * row_bytes], "{ty} row {r}");
        }
    }
}

fn q8_0(x: &[f32]) -> BlockQ8_0 {
    let mut out = [0u8; 34];
    quantize_row(GgmlType::Q8_0, x, &mut out);
    bytemuck::pod_read_unaligned(&out)
}

#[test]
fn q8_0_activation_ties_round_to_even() {
    // amax = 127 makes the inverse scale exactly 1, so every .5 is a tie.
    let mut x = [0.0f32; 32];
    x[0] = -127.0;
    for (i, v) in x.iter_mut().enumerate().skip(1) {
        *v = i as f32 - 16.5; // -15.5 ..= 14.5
    }
    let b = q8_0(&x);
    assert_eq!(b.d.to_f32(), 1.0);
    assert_eq!(b.qs[0], -127);
    for (i, (&q, &v)) in b.qs.iter().zip(&x).enumerate().skip(1) {
        assert_eq!(q as f32, v.round_ties_even(), "value {i}: {v}");
    }
}

#[test]
fn q8_0_activation_scale_is_amax_over_127() {
    let mut x = [0.0f32; 32];
    x[3] = -0.5;
    x[9] = 0.25;
    let b = q8_0(&x);
    assert_eq!(b.d, half::f16::from_f32(0.5 / 127.0));
    assert_eq!(b.qs[3], -127);
    // 0.25 * (127 / 0.5) = 63.5 → 64 (even).
    assert_eq!(b.qs[9], 64);
    assert!(b
        .qs
        .iter()
        .enumerate()
        .all(|(i, &q)| q == 0 || i == 3 || i == 9));
}

#[test]
fn q8_1_sum_is_d_times_the_quant_sum() {
    let x: Vec<f32> = (0..32).map(|i| (i as f32 - 10.0) * 0.3).collect();
    let mut out = [0u8; 36];
    quantize_row(GgmlType::Q8_1, &x, &mut out);
    let b: BlockQ8_1 = bytemuck::pod_read_unaligned(&out);
    let d = (21.0f32 * 0.3) / 127.0;
    assert_eq!(b.d, half::f16::from_f32(d));
    let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
    // The f32 d (not the f16 one) times the sum, rounded to f16 once.
    assert_eq!(b.s, half::f16::from_f32(d * sum as f32));
    assert_eq!(b.qs[31], 127);
}

fn q8_k(x: &[f32]) -> BlockQ8K {
    let mut out = [0u8; 292];
    quantize_row(GgmlType::Q8_K, x, &mut out);
    bytemuck::pod_read_unaligned(&out)
}

#[test]
fn q8_k_scale_follows_the_signed_maximum() {
    // Largest magnitude negative: iscale = -127 / max > 0, so the quants keep the signs of x.
    let mut x = [0.0f32; 256];
    x[0] = -2.0;
    x[1] = 1.0;
    x[2] = 0.5;
    let b = q8_k(&x);
    assert_eq!(b.d, 1.0 / (127.0 / 2.0));
    assert_eq!(&b.qs[..3], &[-127, 64, 32]); // 63.5 → 64 (even), 31.75 → 32
    assert_eq!(b.bsums[0], -127 + 64 + 32);
    // Largest magnitude positive: iscale < 0, the quants flip sign and d is negative.
    x[0] = 2.0;
    let b = q8_k(&x);
    assert_eq!(b.d, -2.0 / 127.0);
    assert_eq!(&b.qs[..3], &[-127, -64, -32]); // -63.5 → -64 (even)
    let mut back = [0.0f32; 256];
    let mut raw = [0u8; 292];
    quantize_row(GgmlType::Q8_K, &x, &mut raw);
    dequantize_row(GgmlType::Q8_K, &raw, &mut back);
    assert!((back[0] - 2.0).abs() < 1e-6 && (back[1] - 1.0).abs() < 0.02);
}

#[test]
fn q8_k_ties_round_to_even_and_bsums_add_up() {
    let mut x = [0.0f32; 256];
    x[0] = -127.0; // iscale = 1
    for (i, v) in x.iter_mut().enumerate().skip(1) {
        *v = ((i * 7) % 251) as f32 - 125.5;
    }
    let b = q8_k(&x);
    assert_eq!(b.d, 1.0);
    for (i, (&q, &v)) in b.qs.iter().zip(&x).enumerate().skip(1) {
        assert_eq!(q as f32, v.round_ties_even(), "value {i}");
    }
    for (j, s) in b.bsums.iter().enumerate() {
        let want: i32 = b.qs[16 * j..16 * j + 16].iter().map(|&q| q as i32).sum();
        assert_eq!(*s as i32, want, "bsum {j}");
    }
}

#[test]
fn all_zero_blocks_give_zero_scales() {
    let x = [0.0f32; 256];
    let b = q8_k(&x);
    assert_eq!(b.d, 0.0);
    assert!(b.qs.iter().all(|&q| q == 0) && b.bsums.iter().all(|&s| s == 0));
    let b = q8_0(&x[..32]);
    assert_eq!(b.d.to_f32(), 0.0);
    assert!(b.qs.iter().all(|&q| q == 0));
}

#[test]
fn f16_and_bf16_round_to_nearest_even() {
    // 1 + 2^-11 is halfway between two f16 values: it rounds to the even one (1.0).
    let x = [
        1.0 + 2f32.powi(-11),
        1.0 + 3.0 * 2f32.powi(-11),
        65520.0,
        1e-8,
    ];
    let mut out = [0u8; 8];
    quantize_row(GgmlType::F16, &x, &mut out);
    let h: Vec<u16> = out
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(h, [0x3c00, 0x3c02, 0x7c00, 0x0000]);

    let x = [
        f32::from_bits(0x3f80_8000), // tie → even (down)
        f32::from_bits(0x3f81_8000), // tie → even (up)
        f32::from_bits(0x3f80_8001), // above the tie → up
        f32::from_bits(0x7fa0_0000), // signalling NaN → quiet NaN
    ];
    quantize_row(GgmlType::BF16, &x, &mut out);
    let h: Vec<u16> = out
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(h, [0x3f80, 0x3f82, 0x3f81, 0x7fe0]);
    assert_eq!(f32_to_bf16(-0.0).to_bits(), 0x8000);
}

#[test]
fn weight_round_trips_stay_within_the_quantization_step() {
    let x = golden_input(3);
    // Bounds relative to the block's largest magnitude: half a quantization step (a whole one at
    // the short end of the symmetric types' range), plus slack for the rounded scales.
    for (ty, rel) in [
        (GgmlType::Q8_0, 0.005),
        (GgmlType::Q8_1, 0.005),
        (GgmlType::Q4_0, 0.13),
        (GgmlType::Q4_1, 0.07),
        (GgmlType::Q5_0, 0.07),
        (GgmlType::Q5_1, 0.035),
        (GgmlType::Q2_K, 0.4),
        (GgmlType::Q3_K, 0.3),
        (GgmlType::Q4_K, 0.1),
        (GgmlType::Q5_K, 0.05),
        (GgmlType::Q6_K, 0.02),
    ] {
        let mut q = vec![0u8; ty.row_bytes(x.len()).unwrap()];
        quantize_weights(ty, &x, &mut q).unwrap();
        let mut back = vec![0.0f32; x.len()];
        dequantize_row(ty, &q, &mut back);
        for (b, (xs, ys)) in x.chunks_exact(256).zip(back.chunks_exact(256)).enumerate() {
            let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let err = xs
                .iter()
                .zip(ys)
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                err <= rel * amax + 1e-6,
                "{ty} block {b}: max error {err}, amax {amax}"
            );
        }
    }
}
