//! The decoded form computes ggml's dot products: each type's generic `ggml_vec_dot_*_q8_K`
//! transcribed from ggml-cpu/quants.c against `quant::vec_dot` at every level, on random blocks.

use super::grids::{IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, KSIGNS_IQ2XS};
use super::{BlockIq2S, BlockIq2Xs, BlockIq2Xxs};
use crate::blocks::BlockQ8K;
use crate::view::blocks_of;
use crate::{GgmlType, Isa};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// `grid[j] * q8[j] * (sign j ? -1 : 1)` summed over a group of 8.
fn group(grid: u64, signs: u8, q8: &[i8]) -> i32 {
    let g = grid.to_le_bytes();
    (0..8)
        .map(|j| g[j] as i32 * q8[j] as i32 * if signs & (1 << j) != 0 { -1 } else { 1 })
        .sum()
}

fn ggml_iq2_xxs(x: &[BlockIq2Xxs], y: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        let d = x.d.to_f32() * y.d;
        let mut bsum = 0i32;
        for ib32 in 0..8 {
            let q2 = &x.qs[4 * ib32..];
            let aux0 = q2[0] as u32 | (q2[1] as u32) << 16;
            let aux1 = q2[2] as u32 | (q2[3] as u32) << 16;
            let ls = 2 * (aux1 >> 28) as i32 + 1;
            let mut sumi = 0;
            for l in 0..4 {
                let grid = IQ2XXS_GRID[(aux0 >> (8 * l) & 0xFF) as usize];
                let signs = KSIGNS_IQ2XS[(aux1 >> (7 * l) & 127) as usize];
                sumi += group(grid, signs, &y.qs[32 * ib32 + 8 * l..]);
            }
            bsum += sumi * ls;
        }
        sumf += d * bsum as f32;
    }
    0.125 * sumf
}

fn ggml_iq2_xs(x: &[BlockIq2Xs], y: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        let d = x.d.to_f32() * y.d;
        let mut bsum = 0i32;
        for ib32 in 0..8 {
            let ls = [
                2 * (x.scales[ib32] & 0xF) as i32 + 1,
                2 * (x.scales[ib32] >> 4) as i32 + 1,
            ];
            for (h, ls) in ls.iter().enumerate() {
                let mut sumi = 0;
                for l in 2 * h..2 * h + 2 {
                    let q2 = x.qs[4 * ib32 + l];
                    let grid = IQ2XS_GRID[(q2 & 511) as usize];
                    let signs = KSIGNS_IQ2XS[(q2 >> 9) as usize];
                    sumi += group(grid, signs, &y.qs[32 * ib32 + 8 * l..]);
                }
                bsum += sumi * ls;
            }
        }
        sumf += d * bsum as f32;
    }
    0.125 * sumf
}

fn ggml_iq2_s(x: &[BlockIq2S], y: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        let d = x.d.to_f32() * y.d;
        let mut bsum = 0i32;
        for ib32 in 0..8 {
            let ls1 = 1 + 2 * (x.scales[ib32] & 0xF) as i32;
            let ls2 = 1 + 2 * (x.scales[ib32] >> 4) as i32;
            let mut sumi = [0i32; 2];
            for l in 0..4 {
                let idx =
                    x.qs[4 * ib32 + l] as usize | ((x.qh[ib32] as usize) << (8 - 2 * l) & 0x300);
                let signs = x.qs[32 + 4 * ib32 + l];
                sumi[l / 2] += group(IQ2S_GRID[idx], signs, &y.qs[32 * ib32 + 8 * l..]);
            }
            bsum += ls1 * sumi[0] + ls2 * sumi[1];
        }
        sumf += d * bsum as f32;
    }
    0.125 * sumf
}

/// A random row of `ty` (every bit pattern) whose values are finite and below 1e4.
pub(crate) fn random_row(rng: &mut StdRng, ty: GgmlType, blocks: usize) -> Vec<u8> {
    let bb = ty.block_bytes();
    let mut out = vec![0u8; blocks * bb];
    let mut vals = vec![0.0f32; ty.block_len()];
    for block in out.chunks_exact_mut(bb) {
        loop {
            rng.fill(block);
            crate::dequant::dequantize_row(ty, block, &mut vals);
            if vals.iter().all(|v| v.is_finite() && v.abs() < 1e4) {
                break;
            }
        }
    }
    out
}

/// Checks `quant::vec_dot` of `ty` at every level against `reference` (ggml's generic dot) on
/// random rows, within 1e-5 of `Σ |w_j * a_j|` (the two differ only in float summation order).
pub(crate) fn check_against_ggml(ty: GgmlType, reference: fn(&[u8], &[u8]) -> f32) {
    let mut rng = StdRng::seed_from_u64(ty as u64);
    for blocks in [1, 2, 5] {
        let n = 256 * blocks;
        for _ in 0..20 {
            let w = random_row(&mut rng, ty, blocks);
            let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-2.0..2.0)).collect();
            let mut a = vec![0u8; GgmlType::Q8_K.row_bytes(n).unwrap()];
            crate::dot::quantize_row(GgmlType::Q8_K, &x, &mut a);
            let mut wf = vec![0.0f32; n];
            crate::dequant::dequantize_row(ty, &w, &mut wf);
            let ab = blocks_of::<BlockQ8K>(&a);
            let mag: f64 = (0..n)
                .map(|j| {
                    (wf[j] as f64 * ab[j / 256].d as f64 * ab[j / 256].qs[j % 256] as f64).abs()
                })
                .sum();
            let want = reference(&w, &a);
            for isa in Isa::available() {
                let got = crate::quant::vec_dot(ty, isa, n, &w, &a);
                assert!(
                    ((got - want) as f64).abs() <= 1e-5 * mag.max(1e-30),
                    "{ty} {isa:?}: decoded {got} vs ggml {want} (Σ|terms| {mag})"
                );
            }
        }
    }
}

#[test]
fn iq2_xxs_dot_is_ggmls() {
    check_against_ggml(GgmlType::IQ2_XXS, |w, a| {
        ggml_iq2_xxs(&blocks_of(w), &blocks_of(a))
    });
}

#[test]
fn iq2_xs_dot_is_ggmls() {
    check_against_ggml(GgmlType::IQ2_XS, |w, a| {
        ggml_iq2_xs(&blocks_of(w), &blocks_of(a))
    });
}

#[test]
fn iq2_s_dot_is_ggmls() {
    check_against_ggml(GgmlType::IQ2_S, |w, a| {
        ggml_iq2_s(&blocks_of(w), &blocks_of(a))
    });
}

/// Decoding speed of this folder's and iq1's types at each level, in ns per 256 values:
/// `cargo test -p frugal-kernels --lib decode_speed -- --ignored --nocapture`.
#[test]
#[ignore]
fn decode_speed() {
    use crate::quant::{decoder, DecodedK, Decoder};
    let mut rng = StdRng::seed_from_u64(1);
    let blocks = 64;
    for ty in [
        GgmlType::IQ2_XXS,
        GgmlType::IQ2_XS,
        GgmlType::IQ2_S,
        GgmlType::IQ1_S,
        GgmlType::IQ1_M,
    ] {
        let w = random_row(&mut rng, ty, blocks);
        let mut out = vec![DecodedK::ZERO; blocks];
        for isa in Isa::available() {
            let Some(Decoder::K(f)) = decoder(ty, isa) else {
                panic!("{ty} has no decoder")
            };
            // The fastest of many short runs: robust against a loaded machine.
            let best = (0..3000)
                .map(|_| {
                    let t = std::time::Instant::now();
                    f(std::hint::black_box(&w), &mut out);
                    t.elapsed().as_nanos()
                })
                .min()
                .unwrap();
            let ns = best as f64 / blocks as f64;
            println!("{ty} {}: {ns:.1} ns / 256 values", isa.name());
        }
    }
}

/// The fused AVX-512 kernel adds 64 to signed grid values to make them unsigned bytes: every grid
/// byte must stay below 64.
#[test]
fn grid_values_are_below_64() {
    for grid in [&IQ2XXS_GRID[..], &IQ2XS_GRID[..], &IQ2S_GRID[..]] {
        assert!(grid.iter().flat_map(|g| g.to_le_bytes()).all(|b| b < 64));
    }
}
