use super::*;
use crate::blocks::BlockQ8K;
use crate::quant::decoded::dot_k;
use crate::quant::decoded::sum_in_kernel_order;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Random blocks of `ty` with a finite `d` (the last two bytes of both block types).
fn random_row(rng: &mut StdRng, ty: GgmlType, nb: usize) -> Vec<u8> {
    let bb = ty.block_bytes();
    let mut w = vec![0u8; nb * bb];
    for b in w.chunks_exact_mut(bb) {
        rng.fill(b);
        let d = f16::from_f32(rng.gen_range(-1.0..1.0));
        b[bb - 2..].copy_from_slice(&d.to_le_bytes());
    }
    w
}

fn random_q8k(rng: &mut StdRng, nb: usize) -> Vec<u8> {
    let x: Vec<f32> = (0..nb * QK_K).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let mut a = vec![0u8; GgmlType::Q8_K.row_bytes(x.len()).unwrap()];
    crate::quantize::quantize_row(GgmlType::Q8_K, &x, &mut a);
    a
}

/// ggml's `ggml_vec_dot_tq1_0_q8_K_generic`, transcribed.
fn ggml_tq1_0(x: &[BlockTQ1_0], y: &[BlockQ8K]) -> f32 {
    let pow3 = [1u8, 3, 9, 27, 81, 243];
    let t = |b: u8, l: usize| ((b.wrapping_mul(pow3[l]) as u16 * 3) >> 8) as i32 - 1;
    let mut terms = vec![];
    for (x, y) in x.iter().zip(y) {
        let mut sum = 0i32;
        for l in 0..5 {
            for m in 0..32 {
                sum += t(x.qs[m], l) * y.qs[l * 32 + m] as i32;
            }
        }
        for l in 0..5 {
            for m in 0..16 {
                sum += t(x.qs[32 + m], l) * y.qs[160 + l * 16 + m] as i32;
            }
        }
        for l in 0..4 {
            for j in 0..4 {
                sum += t(x.qh[j], l) * y.qs[240 + l * 4 + j] as i32;
            }
        }
        terms.push(sum as f32 * (x.d.to_f32() * y.d));
    }
    sum_in_kernel_order(&terms)
}

/// ggml's `ggml_vec_dot_tq2_0_q8_K_generic`, transcribed.
fn ggml_tq2_0(x: &[BlockTQ2_0], y: &[BlockQ8K]) -> f32 {
    let mut terms = vec![];
    for (x, y) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for j in (0..64).step_by(32) {
            for l in 0..4 {
                for k in 0..32 {
                    let t = ((x.qs[j + k] >> (l * 2)) & 3) as i32 - 1;
                    sumi += y.qs[j * 4 + l * 32 + k] as i32 * t;
                }
            }
        }
        terms.push(sumi as f32 * (y.d * x.d.to_f32()));
    }
    sum_in_kernel_order(&terms)
}

fn decode(ty: GgmlType, isa: Isa, w: &[u8]) -> Vec<DecodedK> {
    let Some(Decoder::K(f)) = decoder(ty, isa) else {
        panic!("{ty} has a K decoder")
    };
    let mut out = vec![DecodedK::ZERO; w.len() / ty.block_bytes()];
    f(w, &mut out);
    out
}

/// The decoded form's dot product is ggml's per-block arithmetic, bit for bit (summed in the
/// kernels' block order): the same exact integer sum times the
/// same `d * a.d`, minus an exact zero.
#[test]
fn decoded_dot_is_ggml_generic_dot() {
    let mut rng = StdRng::seed_from_u64(1);
    for ty in [GgmlType::TQ1_0, GgmlType::TQ2_0] {
        for nb in [1, 3, 8] {
            let w = random_row(&mut rng, ty, nb);
            let a = random_q8k(&mut rng, nb);
            let y = blocks_of::<BlockQ8K>(&a);
            let want = match ty {
                GgmlType::TQ1_0 => ggml_tq1_0(&blocks_of(&w), &y),
                _ => ggml_tq2_0(&blocks_of(&w), &y),
            };
            let got = dot_k(&decode(ty, Isa::Scalar, &w), &a);
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "{ty} nb={nb}: {got} vs {want}"
            );
        }
    }
}

/// Every byte value at every trit position: the SIMD decoders equal the scalar one.
#[test]
fn every_byte_decodes_alike_at_every_level() {
    for ty in [GgmlType::TQ1_0, GgmlType::TQ2_0] {
        let bb = ty.block_bytes();
        // 256 blocks; block `i` holds byte `i + j` at position `j` (payload bytes only).
        let mut w = vec![0u8; 256 * bb];
        for (i, b) in w.chunks_exact_mut(bb).enumerate() {
            for (j, v) in b[..bb - 2].iter_mut().enumerate() {
                *v = (i + 7 * j) as u8;
            }
            b[bb - 2..].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        }
        let want = decode(ty, Isa::Scalar, &w);
        for isa in Isa::available() {
            assert_eq!(decode(ty, isa, &w), want, "{ty} {isa:?}");
        }
    }
}

/// Scalar decoding of every byte is ggml's trit arithmetic (and the packing is base 3: each
/// byte 0..=242 quantized by gguf-py round-trips).
#[test]
fn trits_are_base_3_digits() {
    for v in 0u16..243 {
        let b = (v * 256).div_ceil(243) as u8;
        let mut r = v;
        for k in (0..5).rev() {
            assert_eq!(trit(b, k) as u16, r % 3, "value {v} digit {k}");
            r /= 3;
        }
    }
}

/// Rough decode speed at each level (ns per 256 values): `cargo test --release -- --ignored`.
#[test]
#[ignore]
fn decode_speed() {
    let mut rng = StdRng::seed_from_u64(2);
    for ty in [GgmlType::TQ1_0, GgmlType::TQ2_0] {
        let nb = 4096;
        let w = random_row(&mut rng, ty, nb);
        let mut out = vec![DecodedK::ZERO; nb];
        for isa in Isa::available() {
            let Some(Decoder::K(f)) = decoder(ty, isa) else {
                panic!()
            };
            let t = std::time::Instant::now();
            let reps = 200;
            for _ in 0..reps {
                f(std::hint::black_box(&w), &mut out);
            }
            let ns = t.elapsed().as_nanos() as f64 / (reps * nb) as f64;
            println!("{ty} {isa:?}: {ns:.1} ns per 256 values");
        }
    }
}
