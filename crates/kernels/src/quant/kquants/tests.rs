//! The decoded form of each type means what ggml's generic `vec_dot_*_q8_K` computes: its dot
//! product (reference and every SIMD level) equals the transcription in `dot_scalar` within float
//! rounding relative to `Σ |w * a|` (the integer parts are exact; only the float order differs).

use super::*;
use crate::dequant::dequantize_row;
use crate::quant::{decoded, dot_k_fn};
use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TYPES: [GgmlType; 3] = [GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q5_K];

/// Random blocks of `ty` with every bit pattern except in `d` / `dmin`, which get finite values.
fn random_row(rng: &mut StdRng, ty: GgmlType, nb: usize, fill: Option<u8>) -> Vec<u8> {
    let bb = ty.block_bytes();
    let mut w = vec![0u8; nb * bb];
    match fill {
        Some(f) => w.fill(f),
        None => rng.fill(&mut w[..]),
    }
    let f16_offsets: &[usize] = match ty {
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        _ => &[0, 2],
    };
    for b in w.chunks_exact_mut(bb) {
        for &off in f16_offsets {
            let v = f16::from_f32(rng.gen_range(-0.05..0.05))
                .to_bits()
                .to_le_bytes();
            b[off..off + 2].copy_from_slice(&v);
        }
    }
    w
}

fn q8k_row(rng: &mut StdRng, n: usize) -> (Vec<u8>, Vec<f32>) {
    let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-3.0..3.0)).collect();
    let mut a = vec![0u8; GgmlType::Q8_K.row_bytes(n).unwrap()];
    crate::quantize::quantize_row(GgmlType::Q8_K, &x, &mut a);
    let mut xa = vec![0.0f32; n];
    dequantize_row(GgmlType::Q8_K, &a, &mut xa);
    (a, xa)
}

fn ggml_dot(ty: GgmlType) -> fn(&[u8], &[u8]) -> f32 {
    match ty {
        GgmlType::Q2_K => crate::dot_scalar::vec_dot_q2_k_q8_k,
        GgmlType::Q3_K => crate::dot_scalar::vec_dot_q3_k_q8_k,
        _ => crate::dot_scalar::vec_dot_q5_k_q8_k,
    }
}

#[test]
fn decoded_dot_is_ggml_generic_dot() {
    let mut rng = StdRng::seed_from_u64(21);
    for ty in TYPES {
        for (trial, fill) in [None, None, None, Some(0x00), Some(0xFF), Some(0xAA)]
            .into_iter()
            .enumerate()
        {
            let nb = 1 + trial % 4;
            let n = 256 * nb;
            let w = random_row(&mut rng, ty, nb, fill);
            let (a, xa) = q8k_row(&mut rng, n);
            let mut xw = vec![0.0f32; n];
            dequantize_row(ty, &w, &mut xw);
            let mag: f32 = xw.iter().zip(&xa).map(|(p, q)| (p * q).abs()).sum();
            let want = ggml_dot(ty)(&w, &a);
            for isa in Isa::available() {
                let Some(Decoder::K(decode)) = decoder(ty, isa) else {
                    panic!("{ty} has no K decoder at {isa:?}")
                };
                let mut buf = vec![DecodedK::ZERO; nb];
                decode(&w, &mut buf);
                for got in [decoded::dot_k(&buf, &a), dot_k_fn(isa)(&buf, &a)] {
                    assert!(
                        (got - want).abs() <= 1e-5 * mag.max(1e-6),
                        "{ty} {isa:?} fill {fill:?}: {got} vs ggml {want} (Σ|wa| {mag})"
                    );
                }
            }
        }
    }
}

/// Every decoded integer stays in the type's range and within the contract's bounds.
#[test]
fn decoded_integers_stay_in_range() {
    let mut rng = StdRng::seed_from_u64(22);
    for (ty, q, sc, m) in [
        (GgmlType::Q2_K, 0..=3, 0..=15, 0..=15),
        (GgmlType::Q3_K, -4..=3, -32..=31, 0..=0),
        (GgmlType::Q5_K, 0..=31, 0..=63, 0..=63),
    ] {
        let w = random_row(&mut rng, ty, 8, None);
        for isa in Isa::available() {
            let Some(Decoder::K(decode)) = decoder(ty, isa) else {
                panic!()
            };
            let mut buf = vec![DecodedK::ZERO; 8];
            decode(&w, &mut buf);
            for x in &buf {
                assert!(x.q.iter().all(|v| q.contains(v)), "{ty} {isa:?} q");
                assert!(x.sc.iter().all(|v| sc.contains(v)), "{ty} {isa:?} sc");
                assert!(x.m.iter().all(|v| m.contains(v)), "{ty} {isa:?} m");
            }
        }
    }
}
