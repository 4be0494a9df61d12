//! The decoded IQ3 forms against direct transcriptions of ggml's generic dot products
//! (`ggml_vec_dot_iq3_xxs_q8_K_generic`, `ggml_vec_dot_iq3_s_q8_K_generic`), and a decode timing.

use super::*;
use crate::blocks::BlockQ8K;
use crate::quant::iq4::tests::{acts, random_row, time};
use crate::quant::{vec_dot, Decoder};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// `Σ_j grid[j] * q8[j] * (±1)` over one grid point and its sign byte bits `signs >> shift`, and
/// its Σ|terms|.
fn point(p: u32, q8: &[i8], signs: u8, shift: usize) -> (i32, i32) {
    let p = p.to_le_bytes();
    (0..4).fold((0, 0), |(s, a), j| {
        let sign = if signs & (1 << (j + shift)) != 0 {
            -1
        } else {
            1
        };
        let t = p[j] as i32 * q8[j] as i32 * sign;
        (s + t, a + t.abs())
    })
}

/// ggml's generic IQ3_XXS dot product, and Σ|terms| for the tolerance.
fn ggml_iq3_xxs(w: &[u8], a: &[u8]) -> (f32, f32) {
    let (x, y) = (blocks_of::<BlockIq3Xxs>(w), blocks_of::<BlockQ8K>(a));
    let (mut sumf, mut abs) = (0.0f32, 0.0f32);
    for (x, y) in x.iter().zip(y.iter()) {
        let d = x.d.to_f32() * y.d;
        let (mut bsum, mut babs) = (0i32, 0i32);
        for ib in 0..8 {
            let aux = u32::from_le_bytes(x.qs[64 + 4 * ib..68 + 4 * ib].try_into().unwrap());
            let ls = 2 * (aux >> 28) as i32 + 1;
            let (q3, q8) = (&x.qs[8 * ib..], &y.qs[32 * ib..]);
            let (mut sumi, mut sabs) = (0, 0);
            for l in 0..4 {
                let signs = KSIGNS[((aux >> (7 * l)) & 127) as usize];
                let (s1, a1) = point(IQ3XXS_GRID[q3[2 * l] as usize], &q8[8 * l..], signs, 0);
                let (s2, a2) = point(
                    IQ3XXS_GRID[q3[2 * l + 1] as usize],
                    &q8[8 * l + 4..],
                    signs,
                    4,
                );
                (sumi, sabs) = (sumi + s1 + s2, sabs + a1 + a2);
            }
            (bsum, babs) = (bsum + sumi * ls, babs + sabs * ls);
        }
        sumf += d * bsum as f32;
        abs += d.abs() * babs as f32;
    }
    (0.25 * sumf, 0.25 * abs)
}

/// ggml's generic IQ3_S dot product, and Σ|terms| for the tolerance.
fn ggml_iq3_s(w: &[u8], a: &[u8]) -> (f32, f32) {
    let (x, y) = (blocks_of::<BlockIq3S>(w), blocks_of::<BlockQ8K>(a));
    let (mut sumf, mut abs) = (0.0f32, 0.0f32);
    for (x, y) in x.iter().zip(y.iter()) {
        let d = x.d.to_f32() * y.d;
        let (mut bsum, mut babs) = (0i32, 0i32);
        for ib in 0..8 {
            let sc = x.scales[ib / 2];
            let ls = 2 * (if ib % 2 == 0 { sc & 0xf } else { sc >> 4 }) as i32 + 1;
            let (qs, qh, q8) = (&x.qs[8 * ib..], x.qh[ib] as usize, &y.qs[32 * ib..]);
            let signs = &x.signs[4 * ib..];
            let (mut sumi, mut sabs) = (0, 0);
            for l in 0..4 {
                let i1 = qs[2 * l] as usize | ((qh << (8 - 2 * l)) & 256);
                let i2 = qs[2 * l + 1] as usize | ((qh << (7 - 2 * l)) & 256);
                let (s1, a1) = point(IQ3S_GRID[i1], &q8[8 * l..], signs[l], 0);
                let (s2, a2) = point(IQ3S_GRID[i2], &q8[8 * l + 4..], signs[l], 4);
                (sumi, sabs) = (sumi + s1 + s2, sabs + a1 + a2);
            }
            (bsum, babs) = (bsum + sumi * ls, babs + sabs * ls);
        }
        sumf += d * bsum as f32;
        abs += d.abs() * babs as f32;
    }
    (sumf, abs)
}

#[test]
fn decoded_dots_are_ggmls() {
    let mut rng = StdRng::seed_from_u64(51);
    for (ty, reference) in [
        (
            GgmlType::IQ3_XXS,
            ggml_iq3_xxs as fn(&[u8], &[u8]) -> (f32, f32),
        ),
        (GgmlType::IQ3_S, ggml_iq3_s),
    ] {
        for _ in 0..20 {
            let n = 4 * QK_K;
            let w = random_row(&mut rng, ty, n);
            let a = acts(&mut rng, GgmlType::Q8_K, n);
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

/// The sign table is ggml's rule: 7 bits and their parity as bit 7.
#[test]
fn ksigns_are_seven_bits_and_parity() {
    for (i, &s) in KSIGNS.iter().enumerate() {
        assert_eq!(s as u32, i as u32 | (i.count_ones() & 1) << 7);
    }
}

/// Decode time per 256 values at each level: `cargo test -p frugal-kernels --release --
/// --ignored --nocapture decode_speed`.
#[test]
#[ignore]
fn decode_speed() {
    let mut rng = StdRng::seed_from_u64(53);
    let n = 4096 * QK_K;
    for ty in [GgmlType::IQ3_XXS, GgmlType::IQ3_S] {
        let w = random_row(&mut rng, ty, n);
        for isa in Isa::available() {
            let Decoder::K(f) = super::decoder(ty, isa).unwrap() else {
                panic!()
            };
            let mut b = vec![DecodedK::ZERO; n / QK_K];
            let ns = time(|| f(&w, &mut b));
            println!(
                "{ty} {isa:?}: {:.1} ns / 256 values",
                ns / (n / QK_K) as f64
            );
        }
    }
}
