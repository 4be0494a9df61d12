use super::*;
use crate::blocks::BlockQ8_0;
use crate::quant::decoded::dot_32_q8_0;
use crate::quant::decoded::sum_in_kernel_order;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Random MXFP4 blocks with exponents that keep values finite.
fn random_row(rng: &mut StdRng, nb: usize) -> Vec<u8> {
    let mut w = vec![0u8; nb * 17];
    for b in w.chunks_exact_mut(17) {
        rng.fill(b);
        b[0] = rng.gen_range(0..=250);
    }
    w
}

fn random_q8_0(rng: &mut StdRng, n: usize) -> Vec<u8> {
    let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let mut a = vec![0u8; GgmlType::Q8_0.row_bytes(n).unwrap()];
    crate::quantize::quantize_row(GgmlType::Q8_0, &x, &mut a);
    a
}

/// ggml's `ggml_vec_dot_mxfp4_q8_0_generic`, transcribed.
fn ggml_mxfp4(x: &[BlockMXFP4], y: &[BlockQ8_0]) -> f32 {
    let kv = |n: u8| KVALUES_MXFP4[n as usize] as i32;
    let mut terms = vec![];
    for (x, y) in x.iter().zip(y) {
        let d = y.d.to_f32() * e8m0_to_fp32_half(x.e);
        let (mut s1, mut s2) = (0i32, 0i32);
        for j in 0..16 {
            s1 += y.qs[j] as i32 * kv(x.qs[j] & 0xF);
            s2 += y.qs[j + 16] as i32 * kv(x.qs[j] >> 4);
        }
        terms.push(d * (s1 + s2) as f32);
    }
    sum_in_kernel_order(&terms)
}

fn decode(isa: Isa, w: &[u8]) -> Vec<Decoded32> {
    let Some(Decoder::B32(f)) = decoder(GgmlType::MXFP4, isa) else {
        panic!("MXFP4 has a 32-value decoder")
    };
    let mut out = vec![Decoded32::ZERO; w.len() / 17];
    f(w, &mut out);
    out
}

/// The decoded form's dot product is ggml's per-block arithmetic, bit for bit (summed in the
/// kernels' block order) (same integer sum, same `d * a.d`).
#[test]
fn decoded_dot_is_ggml_generic_dot() {
    let mut rng = StdRng::seed_from_u64(3);
    for nb in [1, 5, 64] {
        let w = random_row(&mut rng, nb);
        let a = random_q8_0(&mut rng, 32 * nb);
        let want = ggml_mxfp4(&blocks_of(&w), &blocks_of(&a));
        let got = dot_32_q8_0(&decode(Isa::Scalar, &w), &a);
        assert_eq!(got.to_bits(), want.to_bits(), "nb={nb}: {got} vs {want}");
    }
}

/// `e8m0_to_fp32_half(e)` is `2^(e - 128)` for every byte, subnormals and 255 included.
#[test]
fn e8m0_half_is_a_power_of_two() {
    for e in 0..=255u8 {
        let want = 2f64.powi(e as i32 - 128) as f32;
        assert_eq!(e8m0_to_fp32_half(e).to_bits(), want.to_bits(), "e = {e}");
    }
    assert_eq!(e8m0_to_fp32_half(0).to_bits(), 0x0020_0000);
    assert_eq!(e8m0_to_fp32_half(255).to_bits(), 0x7F00_0000);
}

/// Every byte in every position, every exponent: the SIMD decoder equals the scalar one.
#[test]
fn every_byte_decodes_alike_at_every_level() {
    let w: Vec<u8> = (0..256 * 17).map(|i| (i * 5 + i / 17) as u8).collect();
    let want = decode(Isa::Scalar, &w);
    for isa in Isa::available() {
        assert_eq!(decode(isa, &w), want, "{isa:?}");
    }
}

/// Rough decode speed at each level (ns per 256 values): `cargo test --release -- --ignored`.
#[test]
#[ignore]
fn decode_speed() {
    let mut rng = StdRng::seed_from_u64(4);
    let nb = 8 * 4096;
    let w = random_row(&mut rng, nb);
    let mut out = vec![Decoded32::ZERO; nb];
    for isa in Isa::available() {
        let Some(Decoder::B32(f)) = decoder(GgmlType::MXFP4, isa) else {
            panic!()
        };
        let reps = 200;
        let t = std::time::Instant::now();
        for _ in 0..reps {
            f(std::hint::black_box(&w), &mut out);
        }
        let ns = t.elapsed().as_nanos() as f64 / (reps * nb / 8) as f64;
        println!("MXFP4 {isa:?}: {ns:.1} ns per 256 values");
    }
}
