//! The decoded form computes ggml's dot products (the ±1/8 delta folded into the integers): each
//! type's generic `ggml_vec_dot_*_q8_K` transcribed from ggml-cpu/quants.c against
//! `quant::vec_dot` at every level, on random blocks.

use super::grids::IQ1S_GRID;
use super::{BlockIq1M, BlockIq1S};
use crate::blocks::BlockQ8K;
use crate::quant::iq2::tests::check_against_ggml;
use crate::view::blocks_of;
use crate::GgmlType;
use half::f16;

/// `Σ grid[j] * q8[j]` over a group of 8 (grid values -1, 0, 1).
fn group(grid: u64, q8: &[i8]) -> i32 {
    let g = grid.to_le_bytes();
    (0..8).map(|j| g[j] as i8 as i32 * q8[j] as i32).sum()
}

fn ggml_iq1_s(x: &[BlockIq1S], y: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        let (mut sumi, mut sumi1) = (0i32, 0i32);
        for ib in 0..8 {
            let qh = x.qh[ib] as usize;
            let ls = 2 * ((qh >> 12) & 7) as i32 + 1;
            let delta = if qh & 0x8000 != 0 { -1 } else { 1 };
            let mut lsum = 0;
            for l in 0..4 {
                let idx = x.qs[4 * ib + l] as usize | ((qh >> (3 * l)) & 7) << 8;
                lsum += group(IQ1S_GRID[idx], &y.qs[32 * ib + 8 * l..]);
            }
            sumi += ls * lsum;
            sumi1 += ls * delta * (y.bsums[2 * ib] as i32 + y.bsums[2 * ib + 1] as i32);
        }
        sumf += x.d.to_f32() * y.d * (sumi as f32 + 0.125 * sumi1 as f32);
    }
    sumf
}

fn ggml_iq1_m(x: &[BlockIq1M], y: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        let sc: [u16; 4] =
            std::array::from_fn(|i| u16::from_le_bytes([x.scales[2 * i], x.scales[2 * i + 1]]));
        let scale =
            (sc[0] >> 12) | ((sc[1] >> 8) & 0xF0) | ((sc[2] >> 4) & 0xF00) | (sc[3] & 0xF000);
        let (mut sumi1, mut sumi2) = (0i32, 0i32);
        for ib in 0..8 {
            let qh = &x.qh[2 * ib..2 * ib + 2];
            let delta = [qh[0] & 0x08, qh[0] & 0x80, qh[1] & 0x08, qh[1] & 0x80].map(|b| {
                if b != 0 {
                    -1
                } else {
                    1
                }
            });
            let (mut sum1, mut sum2) = ([0i32; 2], [0i32; 2]);
            for l in 0..4 {
                let idx =
                    x.qs[4 * ib + l] as usize | ((qh[l / 2] as usize) << (8 - 4 * (l % 2)) & 0x700);
                let q8 = &y.qs[32 * ib + 8 * l..32 * ib + 8 * l + 8];
                sum1[l / 2] += group(IQ1S_GRID[idx], q8);
                sum2[l / 2] += q8.iter().map(|&v| v as i32).sum::<i32>() * delta[l];
            }
            let ls1 = 2 * ((sc[ib / 2] >> (6 * (ib % 2))) & 7) as i32 + 1;
            let ls2 = 2 * ((sc[ib / 2] >> (6 * (ib % 2) + 3)) & 7) as i32 + 1;
            sumi1 += sum1[0] * ls1 + sum1[1] * ls2;
            sumi2 += sum2[0] * ls1 + sum2[1] * ls2;
        }
        sumf += f16::from_bits(scale).to_f32() * y.d * (sumi1 as f32 + 0.125 * sumi2 as f32);
    }
    sumf
}

#[test]
fn iq1_s_dot_is_ggmls() {
    check_against_ggml(GgmlType::IQ1_S, |w, a| {
        ggml_iq1_s(&blocks_of(w), &blocks_of(a))
    });
}

#[test]
fn iq1_m_dot_is_ggmls() {
    check_against_ggml(GgmlType::IQ1_M, |w, a| {
        ggml_iq1_m(&blocks_of(w), &blocks_of(a))
    });
}
