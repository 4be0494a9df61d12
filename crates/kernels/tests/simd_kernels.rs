//! The SIMD dot kernels and activation quantizers against the scalar references, at every
//! instruction-set level this CPU has (each called explicitly, so `FRUGAL_ISA` does not matter):
//! random blocks with every bit pattern of the quants, odd block counts, ragged float rows,
//! integer-exact cases, four-row kernels bit for bit, and quantizers byte for byte.

mod common;

use frugal_kernels::dequant::dequantize_row;
use frugal_kernels::dot::{self, quantize_row_fn, vec_dot4_fn, vec_dot_fn};
use frugal_kernels::dot_scalar;
use frugal_kernels::quantize::{quantize_row, quantize_weights};
use frugal_kernels::GgmlType;
use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Every weight type: those with SIMD kernels, and the ones that fall back to scalar.
const WEIGHT_TYPES: [GgmlType; 14] = [
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

/// Types whose kernels at every level equal the scalar reference bit for bit (their reference
/// sums in the kernels' order).
const BIT_EXACT: [GgmlType; 1] = [GgmlType::NVFP4];

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

/// Random weights of `n` values: either random bytes (every quant bit pattern) with sane scales of
/// either sign, or real quantized weights from ggml's reference quantizer.
fn random_weights(rng: &mut StdRng, ty: GgmlType, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; ty.row_bytes(n).unwrap()];
    if !ty.is_quantized() || rng.gen_bool(0.25) {
        let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        quantize_weights(ty, &x, &mut out).unwrap();
        return out;
    }
    rng.fill(&mut out[..]);
    for block in out.chunks_exact_mut(ty.block_bytes()) {
        for &o in scale_offsets(ty) {
            let d = f16::from_f32(rng.gen_range(-0.05..0.05));
            block[o..o + 2].copy_from_slice(&d.to_le_bytes());
        }
    }
    out
}

/// Activations of `n` values quantized into `ty`; sometimes skewed (one large value per row).
fn random_activations(rng: &mut StdRng, ty: GgmlType, n: usize) -> Vec<u8> {
    let mut x: Vec<f32> = (0..n).map(|_| rng.gen_range(-3.0..3.0)).collect();
    if n > 0 && rng.gen_bool(0.3) {
        let i = rng.gen_range(0..n);
        x[i] *= 40.0;
    }
    let mut a = vec![0u8; ty.row_bytes(n).unwrap()];
    quantize_row(ty, &x, &mut a);
    a
}

/// Σ |w_i · a_i| of the dequantized rows: the scale of the float rounding a kernel may add.
fn magnitude(ty: GgmlType, w: &[u8], a: &[u8], n: usize) -> f64 {
    let (mut wf, mut af) = (vec![0.0f32; n], vec![0.0f32; n]);
    dequantize_row(ty, w, &mut wf);
    dequantize_row(ty.vec_dot_type(), a, &mut af);
    wf.iter().zip(&af).map(|(p, q)| (p * q).abs() as f64).sum()
}

/// Row lengths to test: ragged ones for the float types, odd block counts for the quantized ones.
fn sizes(rng: &mut StdRng, ty: GgmlType) -> Vec<usize> {
    let block = ty.block_len();
    if block == 1 {
        let mut v = vec![
            0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 127, 129, 257, 1000,
        ];
        v.extend((0..6).map(|_| rng.gen_range(1..3000)));
        v
    } else {
        let mut v: Vec<usize> = [1, 2, 3, 4, 5, 7, 8, 9, 11, 15, 17, 33]
            .iter()
            .map(|b| b * block)
            .collect();
        v.extend((0..4).map(|_| (2 * rng.gen_range(0..40) + 1) * block));
        v
    }
}

#[test]
fn every_kernel_matches_the_scalar_reference_at_every_level() {
    let levels = common::levels("every_kernel_matches_the_scalar_reference_at_every_level");
    let mut rng = StdRng::seed_from_u64(11);
    let mut checked = 0;
    for ty in WEIGHT_TYPES {
        for n in sizes(&mut rng, ty) {
            for _ in 0..4 {
                let w = random_weights(&mut rng, ty, n);
                let a = random_activations(&mut rng, ty.vec_dot_type(), n);
                let want = dot_scalar::vec_dot(ty, n, &w, &a);
                let tol = 1e-5 * magnitude(ty, &w, &a, n) + 1e-30;
                for isa in levels.clone() {
                    let got = vec_dot_fn(ty, isa)(n, &w, &a);
                    assert!(
                        ((got - want) as f64).abs() <= tol,
                        "{ty} n={n} {}: {got} vs scalar {want} (tolerance {tol})",
                        isa.name()
                    );
                    if BIT_EXACT.contains(&ty) {
                        assert_eq!(got.to_bits(), want.to_bits(), "{ty} n={n} {}", isa.name());
                    }
                    checked += 1;
                }
            }
        }
    }
    eprintln!("{checked} comparisons on {:?}", levels.clone());
}

/// Q8_0 activations with scale 1 and quants in -lim..=lim (`lim` <= 127).
fn unit_q8_0(rng: &mut StdRng, n: usize, lim: i8) -> Vec<u8> {
    let mut a = Vec::new();
    for _ in 0..n / 32 {
        a.extend_from_slice(&f16::ONE.to_le_bytes());
        a.extend((0..32).map(|_| rng.gen_range(-lim..=lim) as u8));
    }
    a
}

/// Q8_K activations with scale 1, quants in -lim..=lim and consistent bsums.
fn unit_q8_k(rng: &mut StdRng, n: usize, lim: i8) -> Vec<u8> {
    let mut a = Vec::new();
    for _ in 0..n / 256 {
        let q: Vec<i8> = (0..256).map(|_| rng.gen_range(-lim..=lim)).collect();
        a.extend_from_slice(&1.0f32.to_le_bytes());
        a.extend(q.iter().map(|&v| v as u8));
        for c in q.chunks_exact(16) {
            a.extend_from_slice(&c.iter().map(|&v| v as i16).sum::<i16>().to_le_bytes());
        }
    }
    a
}

/// With every scale a power of two and sums below 2^24, every float operation is exact: the SIMD
/// kernels must then return exactly the scalar result, which checks their integer parts (nibble
/// and bit unpacking, offsets, sub-block scales and mins) independently of rounding.
#[test]
fn integer_parts_are_exact() {
    let levels = common::levels("integer_parts_are_exact");
    let mut rng = StdRng::seed_from_u64(12);
    let mut checked = 0;
    for ty in WEIGHT_TYPES.into_iter().filter(|t| t.is_quantized()) {
        for blocks in [1usize, 2, 3, 5, 7] {
            let n = blocks * ty.block_len();
            for _ in 0..20 {
                let mut w: Vec<u8> = (0..ty.row_bytes(n).unwrap()).map(|_| rng.gen()).collect();
                for block in w.chunks_exact_mut(ty.block_bytes()) {
                    for &o in scale_offsets(ty) {
                        let d = f16::from_f32([1.0, 0.5, 2.0, -1.0][rng.gen_range(0..4)]);
                        block[o..o + 2].copy_from_slice(&d.to_le_bytes());
                    }
                    if ty == GgmlType::Q6_K {
                        // Keep |scale| <= 63 so a block's sum stays below 2^24.
                        for s in &mut block[192..208] {
                            *s = (*s as i8 / 2) as u8;
                        }
                    }
                }
                let a = match ty.vec_dot_type() {
                    GgmlType::Q8_K => unit_q8_k(&mut rng, n, 15),
                    GgmlType::Q8_0 => unit_q8_0(&mut rng, n, if blocks > 3 { 63 } else { 127 }),
                    _ => random_activations(&mut rng, ty.vec_dot_type(), n),
                };
                let want = dot_scalar::vec_dot(ty, n, &w, &a);
                let exact = ty.vec_dot_type() != GgmlType::Q8_1;
                for isa in levels.clone() {
                    let got = vec_dot_fn(ty, isa)(n, &w, &a);
                    if exact {
                        assert_eq!(got, want, "{ty} n={n} {}", isa.name());
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 0);
}

#[test]
fn four_row_kernels_equal_the_one_row_kernels_bit_for_bit() {
    let levels = common::levels("four_row_kernels_equal_the_one_row_kernels_bit_for_bit");
    let mut rng = StdRng::seed_from_u64(13);
    let mut checked = 0;
    for ty in WEIGHT_TYPES {
        for isa in levels.clone() {
            let Some(dot4) = vec_dot4_fn(ty, isa) else {
                continue;
            };
            let one = vec_dot_fn(ty, isa);
            for n in sizes(&mut rng, ty) {
                let w = random_weights(&mut rng, ty, n);
                let acts: Vec<Vec<u8>> = (0..4)
                    .map(|_| random_activations(&mut rng, ty.vec_dot_type(), n))
                    .collect();
                let got = dot4(n, &w, &[&acts[0], &acts[1], &acts[2], &acts[3]]);
                for (j, a) in acts.iter().enumerate() {
                    // A token's result must not depend on the batch it is computed in.
                    assert_eq!(
                        got[j].to_bits(),
                        one(n, &w, a).to_bits(),
                        "{ty} n={n} {} row {j}",
                        isa.name()
                    );
                    let want = dot_scalar::vec_dot(ty, n, &w, a);
                    let tol = 1e-5 * magnitude(ty, &w, a, n) + 1e-30;
                    assert!(((got[j] - want) as f64).abs() <= tol, "{ty} n={n}");
                    checked += 1;
                }
            }
        }
    }
    let simd = levels.clone().len() > 1;
    assert!(checked > 0 || !simd);
}

/// Rows that stress the activation quantizers: exact .5 ties after scaling, zeros, signed zeros,
/// a repeated maximum of either sign, subnormals, huge values and non-finite values.
fn tricky_rows(rng: &mut StdRng, block: usize) -> Vec<Vec<f32>> {
    let mut rows = Vec::new();
    let n = 4 * block;
    // Q8_0: amax = 127 gives an inverse scale of exactly 1, so k + 0.5 is a tie.
    // Q8_K: a first maximum of -127 gives iscale = 1 likewise.
    for sign in [1.0f32, -1.0] {
        let mut x: Vec<f32> = (0..n)
            .map(|_| (rng.gen_range(-126..126) as f32 + 0.5) * if rng.gen() { 1.0 } else { -1.0 })
            .collect();
        for b in 0..n / block {
            x[b * block + rng.gen_range(0..block)] = -127.0 * sign;
        }
        rows.push(x);
    }
    // Ties at other scales: amax = 127 * 2^k.
    let mut x: Vec<f32> = (0..n)
        .map(|_| (rng.gen_range(-126..126) as f32 + 0.5) * 0.25)
        .collect();
    for b in 0..n / block {
        x[b * block] = -127.0 * 0.25;
    }
    rows.push(x);
    rows.push(vec![0.0; n]);
    rows.push(
        (0..n)
            .map(|i| if i % 3 == 0 { -0.0 } else { 0.0 })
            .collect(),
    );
    // The same magnitude with both signs: the first one decides Q8_K's sign.
    rows.push(
        (0..n)
            .map(|i| if i % 2 == 0 { 2.5 } else { -2.5 })
            .collect(),
    );
    rows.push(
        (0..n)
            .map(|i| if i % 2 == 0 { -2.5 } else { 2.5 })
            .collect(),
    );
    rows.push((0..n).map(|_| rng.gen_range(-1e-40f32..1e-40)).collect());
    rows.push((0..n).map(|_| rng.gen_range(-1e-30f32..1e-30)).collect());
    rows.push((0..n).map(|_| rng.gen_range(-1e30f32..1e30)).collect());
    rows.push((0..n).map(|_| rng.gen_range(-1.0f32..1.0) * 3e38).collect());
    for special in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x: Vec<f32> = (0..n).map(|_| rng.gen_range(-2.0..2.0)).collect();
        x[rng.gen_range(0..n)] = special;
        rows.push(x);
    }
    rows
}

#[test]
fn simd_quantizers_are_byte_identical_to_the_scalar_ones() {
    let levels = common::levels("simd_quantizers_are_byte_identical_to_the_scalar_ones");
    let mut rng = StdRng::seed_from_u64(14);
    let types = [
        GgmlType::Q8_0,
        GgmlType::Q8_K,
        GgmlType::Q8_1,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::F32,
    ];
    let mut checked = 0;
    for ty in types {
        let block = ty.block_len().max(32);
        let mut rows = tricky_rows(&mut rng, block);
        for _ in 0..300 {
            let blocks = rng.gen_range(1..6);
            let scale = 10f32.powi(rng.gen_range(-3..4));
            rows.push(
                (0..blocks * block)
                    .map(|_| rng.gen_range(-1.0..1.0) * scale)
                    .collect(),
            );
        }
        if ty.block_len() == 1 {
            // Ragged lengths and values around the f16 range limits.
            for n in [1, 7, 9, 15, 17, 100] {
                rows.push((0..n).map(|_| rng.gen_range(-70000.0..70000.0)).collect());
                rows.push((0..n).map(|_| rng.gen_range(-1e-7..1e-7)).collect());
            }
        }
        for x in &rows {
            let mut want = vec![0u8; ty.row_bytes(x.len()).unwrap()];
            quantize_row(ty, x, &mut want);
            for isa in levels.clone() {
                let mut got = vec![0xAAu8; want.len()];
                quantize_row_fn(ty, isa)(x, &mut got);
                if ty == GgmlType::F16 && x.iter().any(|v| v.is_nan()) {
                    // NaN payloads may differ between F16C and software conversion; only check
                    // that NaN stays NaN and everything else is identical.
                    for (g, w) in got.chunks_exact(2).zip(want.chunks_exact(2)) {
                        let (g, w) = (
                            f16::from_le_bytes([g[0], g[1]]),
                            f16::from_le_bytes([w[0], w[1]]),
                        );
                        assert!(
                            g.is_nan() == w.is_nan() && (w.is_nan() || g.to_bits() == w.to_bits())
                        );
                    }
                } else {
                    assert_eq!(
                        got,
                        want,
                        "{ty} {} on {:?}",
                        isa.name(),
                        &x[..x.len().min(8)]
                    );
                }
                checked += 1;
            }
        }
    }
    eprintln!("{checked} quantizer comparisons");
}

#[test]
fn best_level_entry_points_agree_with_the_reference() {
    let mut rng = StdRng::seed_from_u64(15);
    for ty in [GgmlType::Q4_K, GgmlType::Q8_0, GgmlType::F16] {
        let n = 3 * ty.block_len().max(256);
        let w = random_weights(&mut rng, ty, n);
        let a = random_activations(&mut rng, ty.vec_dot_type(), n);
        let want = dot_scalar::vec_dot(ty, n, &w, &a);
        let got = dot::vec_dot(ty, n, &w, &a);
        assert!(((got - want) as f64).abs() <= 1e-5 * magnitude(ty, &w, &a, n));
        let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let vdt = ty.vec_dot_type();
        let (mut p, mut q) = (
            vec![0u8; vdt.row_bytes(n).unwrap()],
            vec![0u8; vdt.row_bytes(n).unwrap()],
        );
        dot::quantize_row(vdt, &x, &mut p);
        quantize_row(vdt, &x, &mut q);
        assert_eq!(p, q);
    }
}

#[test]
fn f32_helpers_match_f64_with_ragged_tails() {
    let levels = common::levels("f32_helpers_match_f64_with_ragged_tails");
    let mut rng = StdRng::seed_from_u64(16);
    for n in [0, 1, 3, 8, 15, 16, 17, 31, 63, 64, 65, 130, 1000, 4097] {
        let a: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let mag: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (*x as f64 * *y as f64).abs())
            .sum();
        let got = dot::dot_f32(&a, &b);
        assert!((got as f64 - want).abs() <= 1e-6 * mag + 1e-30, "n={n}");
        // The F32 weight kernels at every level, on the same data as bytes.
        let (wb, ab): (Vec<u8>, Vec<u8>) = (
            a.iter().flat_map(|v| v.to_le_bytes()).collect(),
            b.iter().flat_map(|v| v.to_le_bytes()).collect(),
        );
        for isa in levels.clone() {
            let got = vec_dot_fn(GgmlType::F32, isa)(n, &wb, &ab);
            assert!(
                (got as f64 - want).abs() <= 1e-6 * mag + 1e-30,
                "n={n} {}",
                isa.name()
            );
        }
        let mut y = b.clone();
        dot::axpy_f32(&mut y, 0.75, &a);
        for i in 0..n {
            // One rounding (fused) or two: within an ulp or two of the exact value.
            let exact = b[i] as f64 + 0.75 * a[i] as f64;
            assert!((y[i] as f64 - exact).abs() <= 2.5e-7 * (b[i].abs() + a[i].abs()) as f64);
        }
    }
}

#[test]
#[should_panic(expected = "weight row size")]
fn mismatched_row_sizes_are_caught() {
    let levels = common::levels("mismatched_row_sizes_are_caught");
    let isa = *levels.clone().last().unwrap();
    vec_dot_fn(GgmlType::Q4_0, isa)(64, &[0u8; 18], &[0u8; 68]);
}
