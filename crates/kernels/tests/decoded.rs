//! The decoded-form kernels (`quant`): at every instruction-set level this CPU has, each decoder
//! gives exactly the scalar decoder's integers and scales, each generic dot product exactly the
//! scalar reference's bits, and `matmul` exactly the per-row products. Every test prints the levels
//! it ran and skipped (`common::levels`).

mod common;

use frugal_kernels::dequant::dequantize_row;
use frugal_kernels::matmul::{matmul_quantized, quantize_activations};
use frugal_kernels::quant::{self, Decoded32, DecodedK, Decoder};
use frugal_kernels::{GgmlType, Isa, Matrix, ThreadPool};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Every type computed through the decoded form in this build.
fn decoded_types() -> Vec<GgmlType> {
    GgmlType::ALL
        .into_iter()
        .filter(|&t| quant::decoder(t, Isa::Scalar).is_some())
        .collect()
}

/// Random blocks of `ty` (every bit pattern), resampled until they dequantize to finite values.
fn random_row(rng: &mut StdRng, ty: GgmlType, n: usize) -> Vec<u8> {
    let bb = ty.block_bytes();
    let mut out = vec![0u8; ty.row_bytes(n).unwrap()];
    let mut vals = vec![0.0f32; ty.block_len()];
    for block in out.chunks_exact_mut(bb) {
        loop {
            rng.fill(block);
            dequantize_row(ty, block, &mut vals);
            if vals.iter().all(|v| v.is_finite() && v.abs() < 1e4) {
                break;
            }
        }
    }
    out
}

fn random_acts(rng: &mut StdRng, ty: GgmlType, n: usize) -> Vec<u8> {
    let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let mut a = vec![0u8; ty.row_bytes(n).unwrap()];
    frugal_kernels::dot::quantize_row(ty, &x, &mut a);
    a
}

#[test]
fn decoders_agree_with_the_scalar_decoder() {
    let levels = common::levels("decoders_agree_with_the_scalar_decoder");
    let mut rng = StdRng::seed_from_u64(7);
    for ty in decoded_types() {
        let n = 3 * 256;
        for _ in 0..20 {
            let w = random_row(&mut rng, ty, n);
            let decode = |isa| quant::decoder(ty, isa).unwrap();
            match decode(Isa::Scalar) {
                Decoder::K(want) => {
                    let mut a = vec![DecodedK::ZERO; n / 256];
                    want(&w, &mut a);
                    for isa in levels.clone() {
                        let Decoder::K(f) = decode(isa) else { panic!() };
                        let mut b = vec![DecodedK::ZERO; n / 256];
                        f(&w, &mut b);
                        assert_eq!(a, b, "{ty} {isa:?}");
                    }
                }
                Decoder::B32(want) => {
                    let mut a = vec![Decoded32::ZERO; n / 32];
                    want(&w, &mut a);
                    for isa in levels.clone() {
                        let Decoder::B32(f) = decode(isa) else {
                            panic!()
                        };
                        let mut b = vec![Decoded32::ZERO; n / 32];
                        f(&w, &mut b);
                        assert_eq!(a, b, "{ty} {isa:?}");
                    }
                }
            }
        }
    }
}

/// The decoded form means the same values as the type's dequantization.
#[test]
fn decoded_values_match_dequantization() {
    let mut rng = StdRng::seed_from_u64(8);
    for ty in decoded_types() {
        let n = 2 * 256;
        let w = random_row(&mut rng, ty, n);
        let mut want = vec![0.0f32; n];
        dequantize_row(ty, &w, &mut want);
        let got: Vec<f32> = match quant::decoder(ty, Isa::Scalar).unwrap() {
            Decoder::K(f) => {
                let mut b = vec![DecodedK::ZERO; n / 256];
                f(&w, &mut b);
                b.iter()
                    .flat_map(|x| {
                        (0..256).map(move |j| {
                            x.d * (x.sc[j / 16] as f32 * x.q[j] as f32)
                                - x.dmin * x.m[j / 16] as f32
                        })
                    })
                    .collect()
            }
            Decoder::B32(f) => {
                let mut b = vec![Decoded32::ZERO; n / 32];
                f(&w, &mut b);
                b.iter()
                    .flat_map(|x| x.q.iter().map(move |&q| x.d * q as f32 + x.m))
                    .collect()
            }
        };
        for (j, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1e-3),
                "{ty} value {j}: decoded {g} vs dequantized {w}"
            );
        }
    }
}

/// The generic dot products on random decoded rows (every integer in range), bit for bit.
#[test]
fn generic_dots_are_exact_at_every_level() {
    let levels = common::levels("generic_dots_are_exact_at_every_level");
    let mut rng = StdRng::seed_from_u64(9);
    for isa in levels.clone() {
        for nb in [1, 2, 3, 7] {
            let w: Vec<DecodedK> = (0..nb)
                .map(|_| {
                    let mut x = DecodedK::ZERO;
                    rng.fill(&mut x.q[..]);
                    x.sc = std::array::from_fn(|_| rng.gen_range(-255..=255));
                    x.m = std::array::from_fn(|_| rng.gen_range(-255..=255));
                    (x.d, x.dmin) = (rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0));
                    x
                })
                .collect();
            let a = random_acts(&mut rng, GgmlType::Q8_K, 256 * nb);
            let want = quant::decoded::dot_k(&w, &a);
            let got = quant::dot_k_fn(isa)(&w, &a);
            assert_eq!(got.to_bits(), want.to_bits(), "dot_k {isa:?} nb={nb}");
            let w32: Vec<Decoded32> = (0..8 * nb)
                .map(|_| {
                    let mut x = Decoded32::ZERO;
                    rng.fill(&mut x.q[..]);
                    (x.d, x.m) = (rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0));
                    x
                })
                .collect();
            for (act, reference) in [
                (
                    GgmlType::Q8_0,
                    quant::decoded::dot_32_q8_0 as quant::Dot32Fn,
                ),
                (GgmlType::Q8_1, quant::decoded::dot_32_q8_1),
            ] {
                let a = random_acts(&mut rng, act, 256 * nb);
                let got = quant::dot_32_fn(isa, act)(&w32, &a);
                let want = reference(&w32, &a);
                assert_eq!(got.to_bits(), want.to_bits(), "dot_32 {act} {isa:?}");
            }
        }
    }
}

/// `matmul` over a decoded type (unless this CPU packs it instead: Q4_1 at AVX-512) equals the per-row products at the same level, for one token
/// (decode) and many (prefill: the 16-row GEMM, across its token blocks), on ragged rows and
/// block counts that wrap the four running sums.
#[test]
fn matmul_equals_row_products() {
    let mut rng = StdRng::seed_from_u64(10);
    let pool = ThreadPool::new(2);
    for ty in decoded_types()
        .into_iter()
        .filter(|&t| !frugal_kernels::packed::packs(t))
    {
        let (rows, cols) = (21, 5 * 256);
        let bytes: Vec<u8> = (0..rows)
            .flat_map(|_| random_row(&mut rng, ty, cols))
            .collect();
        let w = Matrix::from_bytes(ty, rows, cols, &bytes).unwrap();
        for n in [1, 5, 70, 150] {
            let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let qa = quantize_activations(&pool, ty.vec_dot_type(), &x, n);
            let mut y = vec![0.0f32; rows * n];
            matmul_quantized(&pool, &w, &qa, &mut y);
            let vdt = ty.vec_dot_type();
            for t in 0..n {
                let mut a = vec![0u8; vdt.row_bytes(cols).unwrap()];
                frugal_kernels::dot::quantize_row(vdt, &x[t * cols..(t + 1) * cols], &mut a);
                for r in 0..rows {
                    let want = quant::vec_dot(ty, Isa::best(), cols, w.row(r), &a);
                    assert_eq!(
                        y[t * rows + r].to_bits(),
                        want.to_bits(),
                        "{ty} t={t} r={r}"
                    );
                }
            }
        }
    }
}

/// Q8_K activations with extreme quants: random bytes, -128 (which ggml's quantizer can write) and
/// 127 among them, the block sums recomputed.
fn extreme_q8k(rng: &mut StdRng, n: usize) -> Vec<u8> {
    use frugal_kernels::blocks::BlockQ8K;
    let mut blocks: Vec<BlockQ8K> = (0..n / 256)
        .map(|_| {
            let mut qs = [0i8; 256];
            for q in qs.iter_mut() {
                *q = match rng.gen_range(0..8) {
                    0 => -128,
                    1 => 127,
                    _ => rng.gen(),
                };
            }
            BlockQ8K {
                d: rng.gen_range(-0.1..0.1),
                qs,
                bsums: [0; 16],
            }
        })
        .collect();
    for b in blocks.iter_mut() {
        for s in 0..16 {
            b.bsums[s] = b.qs[16 * s..16 * s + 16].iter().map(|&q| q as i16).sum();
        }
    }
    bytemuck::cast_slice(&blocks).to_vec()
}

/// A decoded type's fused row kernels (`dot::vec_dot_fn`, where its family has them) equal its
/// decoded reference bit for bit at every level, on random blocks and extreme activations.
#[test]
fn fused_row_kernels_equal_the_decoded_reference() {
    let levels = common::levels("fused_row_kernels_equal_the_decoded_reference");
    let mut rng = StdRng::seed_from_u64(11);
    for ty in decoded_types()
        .into_iter()
        .filter(|&t| t.vec_dot_type() == GgmlType::Q8_K)
    {
        for nb in [1, 2, 3, 5, 9] {
            let n = 256 * nb;
            let w = random_row(&mut rng, ty, n);
            for a in [
                random_acts(&mut rng, GgmlType::Q8_K, n),
                extreme_q8k(&mut rng, n),
            ] {
                let want = quant::vec_dot(ty, Isa::Scalar, n, &w, &a);
                for &isa in &levels {
                    let got = frugal_kernels::dot::vec_dot_fn(ty, isa)(n, &w, &a);
                    assert_eq!(got.to_bits(), want.to_bits(), "{ty} {isa:?} nb={nb}");
                }
            }
        }
    }
}
