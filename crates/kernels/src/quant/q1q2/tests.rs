use super::*;
use crate::blocks::BlockQ8_0;
use crate::quant::decoded::dot_32_q8_0;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TYPES: [GgmlType; 2] = [GgmlType::Q1_0, GgmlType::Q2_0];

/// Random blocks with a finite `d` (the first two bytes).
fn random_row(rng: &mut StdRng, ty: GgmlType, nb: usize) -> Vec<u8> {
    let mut w = vec![0u8; nb * 18];
    for b in w.chunks_exact_mut(18) {
        rng.fill(b);
        b[..2].copy_from_slice(&f16::from_f32(rng.gen_range(-1.0..1.0)).to_le_bytes());
    }
    assert_eq!(Some(w.len()), ty.row_bytes(nb * ty.block_len()));
    w
}

fn random_q8_0(rng: &mut StdRng, n: usize) -> Vec<u8> {
    let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let mut a = vec![0u8; GgmlType::Q8_0.row_bytes(n).unwrap()];
    crate::quantize::quantize_row(GgmlType::Q8_0, &x, &mut a);
    a
}

/// ggml's `ggml_vec_dot_q1_0_q8_0_generic` and `ggml_vec_dot_q2_0_q8_0_generic`, transcribed,
/// with `Σ|terms|` (each term `d * a.d * q * a`) for the tolerance.
fn ggml_dot(ty: GgmlType, w: &[u8], y: &[BlockQ8_0]) -> (f32, f32) {
    let x = blocks_of::<BlockQ1_0>(w); // same layout for both types: d, 16 bytes
    let per = ty.block_len() / QK;
    let (mut sumf, mut mag) = (0.0f32, 0.0f32);
    for (i, x) in x.iter().enumerate() {
        let d0 = x.d.to_f32();
        let mut sumi = 0.0f32;
        for k in 0..per {
            let yb = &y[i * per + k];
            let d1 = yb.d.to_f32();
            let mut sumi_block = 0i32;
            for j in 0..QK {
                let q = match ty {
                    GgmlType::Q1_0 => sign(&x.qs, QK * k + j),
                    _ => field(&x.qs, QK * k + j),
                };
                sumi_block += q as i32 * yb.qs[j] as i32;
                mag += (d0 * d1 * (q as f32) * yb.qs[j] as f32).abs();
            }
            sumi += d1 * sumi_block as f32;
        }
        sumf += d0 * sumi;
    }
    (sumf, mag)
}

fn decode(ty: GgmlType, isa: Isa, w: &[u8]) -> Vec<Decoded32> {
    let Some(Decoder::B32(f)) = decoder(ty, isa) else {
        panic!("{ty} has a 32-value decoder")
    };
    let mut out = vec![Decoded32::ZERO; w.len() / 18 * ty.block_len() / QK];
    f(w, &mut out);
    out
}

/// The decoded form's dot product is ggml's generic one up to float rounding (ggml multiplies by
/// `d` after summing the Q8_0 blocks, the decoded form before).
#[test]
fn decoded_dot_is_ggml_generic_dot() {
    let mut rng = StdRng::seed_from_u64(5);
    for ty in TYPES {
        for nb in [1, 3, 16] {
            let w = random_row(&mut rng, ty, nb);
            let a = random_q8_0(&mut rng, nb * ty.block_len());
            let (want, mag) = ggml_dot(ty, &w, &blocks_of(&a));
            let got = dot_32_q8_0(&decode(ty, Isa::Scalar, &w), &a);
            assert!(
                (got - want).abs() <= 1e-6 * mag,
                "{ty} nb={nb}: {got} vs {want} (Σ|terms| {mag})"
            );
        }
    }
}

/// Every byte in every position: the SIMD decoders equal the scalar one.
#[test]
fn every_byte_decodes_alike_at_every_level() {
    for ty in TYPES {
        let mut w = vec![0u8; 256 * 18];
        for (i, b) in w.chunks_exact_mut(18).enumerate() {
            for (j, v) in b[2..].iter_mut().enumerate() {
                *v = (i + 11 * j) as u8;
            }
            b[..2].copy_from_slice(&f16::from_f32(0.25).to_le_bytes());
        }
        let want = decode(ty, Isa::Scalar, &w);
        for isa in Isa::available() {
            assert_eq!(decode(ty, isa, &w), want, "{ty} {isa:?}");
        }
    }
}

/// Rough decode speed at each level (ns per 256 values): `cargo test --release -- --ignored`.
#[test]
#[ignore]
fn decode_speed() {
    let mut rng = StdRng::seed_from_u64(6);
    for ty in TYPES {
        let n = 256 * 4096;
        let w = random_row(&mut rng, ty, n / ty.block_len());
        let mut out = vec![Decoded32::ZERO; n / QK];
        for isa in Isa::available() {
            let Some(Decoder::B32(f)) = decoder(ty, isa) else {
                panic!()
            };
            let reps = 200;
            let t = std::time::Instant::now();
            for _ in 0..reps {
                f(std::hint::black_box(&w), &mut out);
            }
            let ns = t.elapsed().as_nanos() as f64 / (reps * n / 256) as f64;
            println!("{ty} {isa:?}: {ns:.1} ns per 256 values");
        }
    }
}
