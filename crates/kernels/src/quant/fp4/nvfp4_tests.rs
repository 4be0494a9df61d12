use super::nvfp4::*;
use crate::blocks::BlockQ8_0;
use crate::cpu::Isa;
use crate::types::GgmlType;
use crate::view::blocks_of;
use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Random NVFP4 blocks: every byte pattern, scales included (0x7F and bit 7 too).
fn random_row(rng: &mut StdRng, nb: usize) -> Vec<u8> {
    let mut w = vec![0u8; nb * 36];
    rng.fill(&mut w[..]);
    w
}

/// Q8_0 activations: quantized floats, or (`raw`) every byte pattern of the quants (-128
/// included) with random f16 scales of either sign.
fn random_q8_0(rng: &mut StdRng, n: usize, raw: bool) -> Vec<u8> {
    let mut a = vec![0u8; GgmlType::Q8_0.row_bytes(n).unwrap()];
    if raw {
        rng.fill(&mut a[..]);
        for b in a.chunks_exact_mut(34) {
            b[..2].copy_from_slice(&f16::from_f32(rng.gen_range(-0.1..0.1)).to_le_bytes());
        }
    } else {
        let mut x: Vec<f32> = (0..n).map(|_| rng.gen_range(-2.0..2.0)).collect();
        if rng.gen_bool(0.3) {
            let i = rng.gen_range(0..n);
            x[i] *= 50.0;
        }
        crate::quantize::quantize_row(GgmlType::Q8_0, &x, &mut a);
    }
    a
}

/// ggml's `ggml_vec_dot_nvfp4_q8_0_generic`, transcribed: the same terms, summed one by one.
fn ggml_generic(w: &[u8], a: &[u8]) -> f32 {
    let (x, y) = (blocks_of::<BlockNVFP4>(w), blocks_of::<BlockQ8_0>(a));
    let mut sumf = 0.0f32;
    for (x, y) in x.iter().zip(y.chunks_exact(2)) {
        for s in 0..4 {
            sumf += sub_block_term(x, s, y);
        }
    }
    sumf
}

/// The dot product of the dequantized rows, in f64, and Σ |w a| (the rounding scale).
fn dequantized_dot(w: &[u8], a: &[u8], n: usize) -> (f64, f64) {
    let (mut wf, mut af) = (vec![0.0f32; n], vec![0.0f32; n]);
    crate::dequant::dequantize_row(GgmlType::NVFP4, w, &mut wf);
    crate::dequant::dequantize_row(GgmlType::Q8_0, a, &mut af);
    let dot = wf.iter().zip(&af).map(|(&p, &q)| p as f64 * q as f64).sum();
    let mag = wf
        .iter()
        .zip(&af)
        .map(|(&p, &q)| (p as f64 * q as f64).abs())
        .sum();
    (dot, mag)
}

/// `ue4m3_to_fp32` is ggml's formula for every byte; the SIMD kernels' route through f16
/// (`(x & 0x7F) << 7` as an f16, times 2^7, 0x7F → 0) gives the same value.
#[test]
fn ue4m3_every_byte() {
    for x in 0..=255u8 {
        let exp = ((x >> 3) & 0xF) as i32;
        let man = (x & 7) as f64;
        let want = if x == 0 || x == 0x7F {
            0.0
        } else if exp == 0 {
            man * 2f64.powi(-10)
        } else {
            (1.0 + man / 8.0) * 2f64.powi(exp - 8)
        };
        assert_eq!(ue4m3_to_fp32(x) as f64, want, "{x:#04x}");
        let via_f16 = if x == 0x7F {
            0.0
        } else {
            f16::from_bits(((x & 0x7F) as u16) << 7).to_f32() * 128.0
        };
        assert_eq!(via_f16.to_bits(), ue4m3_to_fp32(x).to_bits(), "{x:#04x}");
    }
}

/// `fp32_to_ue4m3` round-trips every byte's value below exponent 15 (ggml never writes exponent
/// 15: those values and anything larger become 0x7E, 448) and maps non-positive and NaN inputs to
/// 0.
#[test]
fn ue4m3_round_trip() {
    for x in 1..0x7Fu8 {
        let want = if x < 0x78 { x } else { 0x7E };
        assert_eq!(fp32_to_ue4m3(ue4m3_to_fp32(x) * 2.0), want, "{x:#04x}");
    }
    assert_eq!(fp32_to_ue4m3(0.0), 0);
    assert_eq!(fp32_to_ue4m3(-1.0), 0);
    assert_eq!(fp32_to_ue4m3(f32::NAN), 0);
    assert_eq!(fp32_to_ue4m3(1e9), 0x7E);
    assert_eq!(fp32_to_ue4m3(f32::INFINITY), 0x7E);
}

/// The reference sums ggml's terms in another order: it agrees with ggml's generic kernel and
/// with the dot product of the dequantized rows within float rounding.
#[test]
fn reference_is_ggml_within_rounding() {
    let mut rng = StdRng::seed_from_u64(40);
    for nb in [1, 2, 3, 5, 8, 13, 64] {
        for raw in [false, true] {
            let w = random_row(&mut rng, nb);
            let a = random_q8_0(&mut rng, 64 * nb, raw);
            let got = vec_dot_nvfp4_q8_0(&w, &a) as f64;
            let (exact, mag) = dequantized_dot(&w, &a, 64 * nb);
            let tol = 1e-5 * mag + 1e-30;
            assert!((got - exact).abs() <= tol, "nb={nb}: {got} vs {exact}");
            let ggml = ggml_generic(&w, &a) as f64;
            assert!((got - ggml).abs() <= tol, "nb={nb}: {got} vs ggml {ggml}");
        }
    }
}

/// With one block (each running sum gets one term) the reference is ggml's generic kernel up to
/// the order of the final additions; with power-of-two scales and small sums every float
/// operation is exact, so both agree exactly.
#[test]
fn reference_is_ggml_exactly_when_exact() {
    let mut rng = StdRng::seed_from_u64(41);
    for nb in [1, 3, 7] {
        let mut w = random_row(&mut rng, nb);
        for b in w.chunks_exact_mut(36) {
            for d in &mut b[..4] {
                *d = [0x38, 0x40, 0x30, 0x00][rng.gen_range(0..4)];
            }
        }
        let mut a = random_q8_0(&mut rng, 64 * nb, true);
        for b in a.chunks_exact_mut(34) {
            b[..2].copy_from_slice(
                &f16::from_f32([1.0, -0.5, 2.0][rng.gen_range(0..3)]).to_le_bytes(),
            );
        }
        assert_eq!(vec_dot_nvfp4_q8_0(&w, &a), ggml_generic(&w, &a), "nb={nb}");
    }
}

fn levels() -> Vec<Isa> {
    let ran = Isa::available();
    println!("NVFP4 kernels: ran {ran:?}");
    ran
}

/// Every level's one-row kernel equals the reference bit for bit, and its four-row kernel the
/// one-row kernel: every byte pattern of weights and activations, every block count mod 4.
#[test]
fn row_kernels_equal_the_reference_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(42);
    let mut checked = 0;
    for isa in levels() {
        let one = crate::dot::vec_dot_fn(GgmlType::NVFP4, isa);
        let four = crate::dot::vec_dot4_fn(GgmlType::NVFP4, isa);
        assert_eq!(four.is_some(), isa >= Isa::Avx2, "{isa:?}");
        for nb in (1..=13).chain([31, 64, 65]) {
            let n = 64 * nb;
            for raw in [false, true] {
                let w = random_row(&mut rng, nb);
                let acts: Vec<Vec<u8>> = (0..4).map(|_| random_q8_0(&mut rng, n, raw)).collect();
                for a in &acts {
                    let want = vec_dot_nvfp4_q8_0(&w, a);
                    let got = one(n, &w, a);
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{isa:?} nb={nb}: {got} vs {want}"
                    );
                    checked += 1;
                }
                if let Some(four) = four {
                    let got = four(n, &w, &[&acts[0], &acts[1], &acts[2], &acts[3]]);
                    for (g, a) in got.iter().zip(&acts) {
                        assert_eq!(g.to_bits(), one(n, &w, a).to_bits(), "{isa:?} nb={nb} x4");
                    }
                }
            }
        }
    }
    assert!(checked > 0);
}

/// The quantizer's blocks dequantize to values near the input (each within half a step of the
/// sub-block's scale, or clamped at ±6 d), and quantizing a dequantized block gives it back.
#[test]
fn quantizer_round_trips() {
    let mut rng = StdRng::seed_from_u64(43);
    let x: Vec<f32> = (0..64 * 9).map(|_| rng.gen_range(-3.0..3.0)).collect();
    let mut q = vec![0u8; GgmlType::NVFP4.row_bytes(x.len()).unwrap()];
    crate::quantize::quantize_weights(GgmlType::NVFP4, &x, &mut q).unwrap();
    let mut y = vec![0.0f32; x.len()];
    crate::dequant::dequantize_row(GgmlType::NVFP4, &q, &mut y);
    for (xs, ys) in x.chunks_exact(16).zip(y.chunks_exact(16)) {
        let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (a, b) in xs.iter().zip(ys) {
            assert!((a - b).abs() <= amax / 6.0 * 1.1 + 1e-6, "{a} vs {b}");
        }
    }
    let mut q2 = vec![0u8; q.len()];
    crate::quantize::quantize_weights(GgmlType::NVFP4, &y, &mut q2).unwrap();
    let mut y2 = vec![0.0f32; x.len()];
    crate::dequant::dequantize_row(GgmlType::NVFP4, &q2, &mut y2);
    assert_eq!(y, y2);
}
