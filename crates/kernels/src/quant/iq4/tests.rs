//! The decoded IQ4 forms against direct transcriptions of ggml's generic dot products
//! (`ggml_vec_dot_iq4_nl_q8_0_generic`, `ggml_vec_dot_iq4_xs_q8_K_generic`), and a decode timing.

use super::*;
use crate::blocks::{BlockQ8K, BlockQ8_0};
use crate::quant::{vec_dot, Decoder};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Random blocks with a finite scale `d` (the first two bytes) of moderate size.
pub(in crate::quant) fn random_row(rng: &mut StdRng, ty: GgmlType, n: usize) -> Vec<u8> {
    let mut w = vec![0u8; ty.row_bytes(n).unwrap()];
    rng.fill(&mut w[..]);
    for b in w.chunks_exact_mut(ty.block_bytes()) {
        let d = f16::from_f32(rng.gen_range(-0.01..0.01));
        b[..2].copy_from_slice(&d.to_le_bytes());
    }
    w
}

pub(in crate::quant) fn acts(rng: &mut StdRng, ty: GgmlType, n: usize) -> Vec<u8> {
    let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let mut a = vec![0u8; ty.row_bytes(n).unwrap()];
    crate::dot::quantize_row(ty, &x, &mut a);
    a
}

/// ggml's generic IQ4_NL dot product, and Σ|terms| for the tolerance.
fn ggml_iq4_nl(w: &[u8], a: &[u8]) -> (f32, f32) {
    let (x, y) = (blocks_of::<BlockIq4Nl>(w), blocks_of::<BlockQ8_0>(a));
    let (mut sumf, mut abs) = (0.0f32, 0.0f32);
    for (x, y) in x.iter().zip(y.iter()) {
        let d = y.d.to_f32() * x.d.to_f32();
        let (mut s1, mut s2, mut sa) = (0i32, 0i32, 0i32);
        for j in 0..16 {
            let (v1, v2) = (
                KVALUES[(x.qs[j] & 0xF) as usize],
                KVALUES[(x.qs[j] >> 4) as usize],
            );
            s1 += y.qs[j] as i32 * v1 as i32;
            s2 += y.qs[j + 16] as i32 * v2 as i32;
            sa += (y.qs[j] as i32 * v1 as i32).abs() + (y.qs[j + 16] as i32 * v2 as i32).abs();
        }
        sumf += d * (s1 + s2) as f32;
        abs += d.abs() * sa as f32;
    }
    (sumf, abs)
}

/// ggml's generic IQ4_XS dot product, and Σ|terms| for the tolerance.
fn ggml_iq4_xs(w: &[u8], a: &[u8]) -> (f32, f32) {
    let (x, y) = (blocks_of::<BlockIq4Xs>(w), blocks_of::<BlockQ8K>(a));
    let (mut sumf, mut abs) = (0.0f32, 0.0f32);
    for (x, y) in x.iter().zip(y.iter()) {
        let d4d8 = x.d.to_f32() * y.d;
        let mut h = x.scales_h;
        for ib in 0..8 {
            let l = x.scales_l[ib / 2];
            let ls = if ib % 2 == 0 {
                (l & 0xF) | ((h << 4) & 0x30) as u8
            } else {
                let v = (l >> 4) | ((h << 2) & 0x30) as u8;
                h >>= 4;
                v
            };
            let dl = d4d8 * (ls as i32 - 32) as f32;
            let (qs, q8) = (&x.qs[16 * ib..], &y.qs[32 * ib..]);
            let (mut s, mut sa) = (0i32, 0i32);
            for j in 0..16 {
                let p1 = q8[j] as i32 * KVALUES[(qs[j] & 0xF) as usize] as i32;
                let p2 = q8[j + 16] as i32 * KVALUES[(qs[j] >> 4) as usize] as i32;
                s += p1 + p2;
                sa += p1.abs() + p2.abs();
            }
            sumf += dl * s as f32;
            abs += dl.abs() * sa as f32;
        }
    }
    (sumf, abs)
}

#[test]
fn decoded_dots_are_ggmls() {
    let mut rng = StdRng::seed_from_u64(41);
    for (ty, reference) in [
        (
            GgmlType::IQ4_NL,
            ggml_iq4_nl as fn(&[u8], &[u8]) -> (f32, f32),
        ),
        (GgmlType::IQ4_XS, ggml_iq4_xs),
    ] {
        for _ in 0..20 {
            let n = 4 * QK_K;
            let w = random_row(&mut rng, ty, n);
            let a = acts(&mut rng, ty.vec_dot_type(), n);
            let (want, abs) = reference(&w, &a);
            for isa in Isa::available() {
                let got = vec_dot(ty, isa, n, &w, &a);
                assert!(
                    (got - want).abs() <= 1e-5 * abs,
                    "{ty} {isa:?}: {got} vs ggml {want} (Σ|terms| {abs})"
                );
            }
        }
    }
}

/// The IQ4_XS scales' bit layout, value by value against ggml's expression.
#[test]
fn iq4_xs_scales_follow_ggml() {
    let mut rng = StdRng::seed_from_u64(42);
    for _ in 0..100 {
        let w = random_row(&mut rng, GgmlType::IQ4_XS, QK_K);
        let x: BlockIq4Xs = bytemuck::pod_read_unaligned(&w);
        for ib in 0..8 {
            let ls = ((x.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xf) as i32
                | ((((x.scales_h >> (2 * ib)) & 3) << 4) as i32);
            assert_eq!(x.scale(ib) as i32, ls - 32);
        }
    }
}

/// Decode time per 256 values at each level: `cargo test -p frugal-kernels --release --
/// --ignored --nocapture decode_speed`.
#[test]
#[ignore]
fn decode_speed() {
    let mut rng = StdRng::seed_from_u64(43);
    let n = 4096 * QK_K;
    for ty in [GgmlType::IQ4_NL, GgmlType::IQ4_XS] {
        let w = random_row(&mut rng, ty, n);
        for isa in Isa::available() {
            let ns = match super::decoder(ty, isa).unwrap() {
                Decoder::K(f) => {
                    let mut b = vec![DecodedK::ZERO; n / QK_K];
                    time(|| f(&w, &mut b))
                }
                Decoder::B32(f) => {
                    let mut b = vec![Decoded32::ZERO; n / QK];
                    time(|| f(&w, &mut b))
                }
            };
            println!(
                "{ty} {isa:?}: {:.1} ns / 256 values",
                ns / (n / QK_K) as f64
            );
        }
    }
}

/// Best of 20 runs of `f`, in ns.
pub(in crate::quant) fn time(mut f: impl FnMut()) -> f64 {
    (0..20)
        .map(|_| {
            let t = std::time::Instant::now();
            f();
            t.elapsed().as_nanos() as f64
        })
        .fold(f64::INFINITY, f64::min)
}
