//! The attention kernels (`dot::scores_t_at`, `dot::weighted_rows_at`) against their scalar
//! references (`ops::scores_t`, `ops::weighted_rows`) at every instruction-set level this CPU has,
//! bit for bit (every level runs the same fused multiply-adds in the same order), on random data
//! with ragged lengths, strides and row counts that leave partial tiles and partial vectors, with
//! keys and values stored as f32, f16 and bf16.

mod common;

use frugal_kernels::{dot, ops, KvElem};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-2.0f32..2.0)).collect()
}

fn stored<E: KvElem>(x: &[f32]) -> Vec<E> {
    x.iter().map(|&v| E::from_f32(v)).collect()
}

#[test]
fn scores_t_matches_the_reference_at_every_level() {
    scores_t_at_every_level::<f32>();
    scores_t_at_every_level::<f16>();
    scores_t_at_every_level::<bf16>();
}

#[test]
fn weighted_rows_matches_the_reference_at_every_level() {
    weighted_rows_at_every_level::<f32>();
    weighted_rows_at_every_level::<f16>();
    weighted_rows_at_every_level::<bf16>();
}

/// The stored keys widened: each element's exact value (so f16 and bf16 scores equal f32
/// scores over the rounded keys).
#[test]
fn reduced_keys_score_as_their_widened_values() {
    let mut rng = StdRng::seed_from_u64(5);
    let (dim, len) = (16, 24);
    let q = random(&mut rng, 3 * dim);
    let kt = random(&mut rng, dim * len);
    let half: Vec<f16> = stored(&kt);
    let widened: Vec<f32> = half.iter().map(|h| h.to_f32()).collect();
    let (mut a, mut b) = (vec![0.0; 3 * len], vec![0.0; 3 * len]);
    dot::scores_t(&q, dim, &half, len, len, &mut a, len);
    dot::scores_t(&q, dim, &widened, len, len, &mut b, len);
    assert_eq!(a, b);
}

fn scores_t_at_every_level<E: KvElem>() {
    let levels = common::levels("scores_t_matches_the_reference_at_every_level");
    let mut rng = StdRng::seed_from_u64(3);
    for &(nq, dim, len, stride) in &[
        (1, 1, 1, 1),
        (7, 64, 16, 16),
        (7, 64, 5, 16),
        (9, 33, 23, 31),
        (3, 128, 40, 48),
        (16, 8, 17, 17),
        (2, 4, 0, 4),
    ] {
        let q = random(&mut rng, nq * dim);
        let kt: Vec<E> = stored(&random(&mut rng, dim * stride));
        let out_stride = len + 3;
        let mut want = vec![0.5f32; nq * out_stride];
        ops::scores_t(&q, dim, &kt, stride, len, &mut want, out_stride);
        for isa in levels.clone() {
            let mut got = vec![0.5f32; nq * out_stride];
            dot::scores_t_at(isa, &q, dim, &kt, stride, len, &mut got, out_stride);
            let (g, w): (Vec<u32>, Vec<u32>) = (
                got.iter().map(|v| v.to_bits()).collect(),
                want.iter().map(|v| v.to_bits()).collect(),
            );
            assert_eq!(g, w, "{isa:?} nq={nq} dim={dim} len={len}");
        }
    }
}

fn weighted_rows_at_every_level<E: KvElem>() {
    let levels = common::levels("weighted_rows_matches_the_reference_at_every_level");
    let mut rng = StdRng::seed_from_u64(4);
    for &(nh, dv, len, v_stride) in &[
        (1, 1, 1, 1),
        (7, 64, 16, 128),
        (7, 64, 3, 64),
        (9, 37, 21, 40),
        (2, 512, 5, 576),
        (16, 8, 17, 9),
        (3, 5, 0, 5),
    ] {
        let w_stride = len + 2;
        let w = random(&mut rng, nh * w_stride);
        let v: Vec<E> = stored(&random(&mut rng, len.max(1) * v_stride));
        let init = random(&mut rng, nh * dv);
        let mut want = init.clone();
        ops::weighted_rows(&mut want, dv, &w, w_stride, &v, v_stride, len);
        for isa in levels.clone() {
            let mut got = init.clone();
            dot::weighted_rows_at(isa, &mut got, dv, &w, w_stride, &v, v_stride, len);
            let (g, wb): (Vec<u32>, Vec<u32>) = (
                got.iter().map(|v| v.to_bits()).collect(),
                want.iter().map(|v| v.to_bits()).collect(),
            );
            assert_eq!(g, wb, "{isa:?} nh={nh} dv={dv} len={len}");
        }
    }
}

#[test]
#[should_panic]
fn scores_t_checks_bounds() {
    let mut out = vec![0.0f32; 4];
    dot::scores_t(&[1.0; 8], 4, &[1.0; 10], 4, 4, &mut out, 4);
}
