//! Elementwise ops against straightforward f64 formulas and against ggml's exact order of f32
//! operations; RoPE's geometry (identity at 0, inverse rotation, pair orderings, scaling, YaRN).

use frugal_kernels::ops::{
    add, axpy, dot_f32, mul, rms_norm, rms_norm_inplace, scale, silu, softmax, swiglu, Rope, Yarn,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random(rng: &mut StdRng, n: usize, r: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-r..r)).collect()
}

#[test]
fn rms_norm_matches_f64_and_ggml_order() {
    let mut rng = StdRng::seed_from_u64(1);
    for n in [1, 7, 64, 896, 4096] {
        for r in [1e-3f32, 1.0, 300.0] {
            let x = random(&mut rng, n, r);
            let w = random(&mut rng, n, 2.0);
            let eps = 1e-6f32;
            let mut out = vec![0.0; n];
            rms_norm(&x, &w, eps, &mut out);

            // ggml: f64 sum of the f32 squares, mean rounded to f32, scale = 1 / sqrtf(mean + eps),
            // y = x * scale, then the separate multiplication by the weight.
            let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
            let mean = (sum / n as f64) as f32;
            let s = 1.0f32 / (mean + eps).sqrt();
            for i in 0..n {
                assert_eq!(out[i].to_bits(), (x[i] * s * w[i]).to_bits(), "n={n} i={i}");
            }
            // And the plain formula, in f64.
            let ms: f64 = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / n as f64;
            let rms = (ms + eps as f64).sqrt();
            for i in 0..n {
                let want = x[i] as f64 / rms * w[i] as f64;
                assert!(
                    (out[i] as f64 - want).abs() <= 1e-6 * want.abs() + 1e-30,
                    "n={n} i={i}"
                );
            }
            let mut inplace = x.clone();
            rms_norm_inplace(&mut inplace, &w, eps);
            assert_eq!(inplace, out);
        }
    }
}

#[test]
fn rms_norm_of_zeros_is_zero() {
    let mut out = [1.0f32; 8];
    rms_norm(&[0.0; 8], &[1.0; 8], 1e-6, &mut out);
    assert_eq!(out, [0.0; 8]);
}

#[test]
fn softmax_matches_f64() {
    let mut rng = StdRng::seed_from_u64(2);
    for n in [1, 3, 100, 2048] {
        for r in [0.1f32, 10.0, 1000.0] {
            let x = random(&mut rng, n, r);
            let mut y = x.clone();
            softmax(&mut y, 1.0);
            let max = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let e: Vec<f64> = x.iter().map(|&v| (v as f64 - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            // f32 rounding of x - max (up to 2^-24 of |x - max|) moves exp's result by as much.
            for i in 0..n {
                let want = e[i] / sum;
                assert!(
                    (y[i] as f64 - want).abs() <= 4e-6 * want + 1e-38,
                    "n={n} r={r} i={i}: {} vs {want}",
                    y[i]
                );
            }
            let total: f64 = y.iter().map(|&v| v as f64).sum();
            assert!((total - 1.0).abs() < 1e-5);
        }
    }
}

#[test]
fn softmax_handles_masked_entries() {
    // -inf (masked attention scores) become exactly 0.
    let mut y = [1.0f32, f32::NEG_INFINITY, 1.0, f32::NEG_INFINITY];
    softmax(&mut y, 1.0);
    assert_eq!(y, [0.5, 0.0, 0.5, 0.0]);
}

#[test]
fn silu_and_swiglu_match_f64() {
    let mut rng = StdRng::seed_from_u64(3);
    let g = random(&mut rng, 1000, 20.0);
    let u = random(&mut rng, 1000, 3.0);
    for &v in &g {
        let want = v as f64 / (1.0 + (-v as f64).exp());
        assert!(
            (silu(v) as f64 - want).abs() <= 1e-6 * want.abs() + 1e-12,
            "{v}"
        );
    }
    assert_eq!(silu(0.0), 0.0);
    assert_eq!(silu(-100.0), -0.0);
    assert_eq!(silu(100.0), 100.0);
    let mut out = g.clone();
    swiglu(&mut out, &u);
    for i in 0..g.len() {
        assert_eq!(out[i], silu(g[i]) * u[i]);
    }
}

#[test]
fn vector_ops_by_hand() {
    let mut a = [1.0f32, 2.0, 3.0, 4.0];
    add(&mut a, &[0.5, -2.0, 1.0, 0.0]);
    assert_eq!(a, [1.5, 0.0, 4.0, 4.0]);
    mul(&mut a, &[2.0, 5.0, 0.25, -1.0]);
    assert_eq!(a, [3.0, 0.0, 1.0, -4.0]);
    scale(&mut a, -0.5);
    assert_eq!(a, [-1.5, -0.0, -0.5, 2.0]);
    axpy(&mut a, 2.0, &[1.0, 1.0, 1.0, 1.0]);
    assert_eq!(a, [0.5, 2.0, 1.5, 4.0]);
    assert_eq!(dot_f32(&a, &[2.0, 1.0, 2.0, 0.5]), 1.0 + 2.0 + 3.0 + 2.0);
    assert_eq!(dot_f32(&[], &[]), 0.0);
}

#[test]
fn dot_f32_matches_f64_on_long_rows() {
    let mut rng = StdRng::seed_from_u64(4);
    let x = random(&mut rng, 5000, 1.0);
    let y = random(&mut rng, 5000, 1.0);
    let want: f64 = x.iter().zip(&y).map(|(&a, &b)| a as f64 * b as f64).sum();
    let scale: f64 = x
        .iter()
        .zip(&y)
        .map(|(&a, &b)| (a as f64 * b as f64).abs())
        .sum();
    assert!((dot_f32(&x, &y) as f64 - want).abs() <= 1e-5 * scale);
}

#[test]
#[should_panic(expected = "length mismatch")]
fn mismatched_lengths_are_programmer_errors() {
    add(&mut [0.0; 3], &[0.0; 4]);
}

// ------------------------------------------------------------------------------------------------
// RoPE
// ------------------------------------------------------------------------------------------------

fn rope(n_rot: usize, neox: bool) -> Rope {
    Rope {
        n_rot,
        freq_base: 10000.0,
        freq_scale: 1.0,
        neox,
        freq_factors: None,
        yarn: None,
    }
}

/// The pairs a mode rotates together within one head.
fn pairs(n_rot: usize, neox: bool) -> Vec<(usize, usize)> {
    (0..n_rot / 2)
        .map(|i| {
            if neox {
                (i, i + n_rot / 2)
            } else {
                (2 * i, 2 * i + 1)
            }
        })
        .collect()
}

#[test]
fn rope_matches_ggml_cache_and_f64_angles() {
    let mut rng = StdRng::seed_from_u64(5);
    let (n_heads, head_dim) = (3, 64);
    for neox in [false, true] {
        for n_rot in [64, 32] {
            let r = Rope {
                freq_base: 1e6,
                ..rope(n_rot, neox)
            };
            for pos in [1usize, 5, 77, 300] {
                let x = random(&mut rng, n_heads * head_dim, 2.0);
                let mut y = x.clone();
                r.apply(&mut y, n_heads, head_dim, pos);

                // ggml's cache: theta_scale = base^(-2/n_rot), theta multiplied along in f32.
                let theta_scale = 1e6f32.powf(-2.0 / n_rot as f32);
                let mut theta = pos as f32;
                let mut cs = Vec::new();
                for _ in 0..n_rot / 2 {
                    cs.push((theta.cos(), theta.sin()));
                    theta *= theta_scale;
                }
                for h in 0..n_heads {
                    let o = h * head_dim;
                    for (i, &(a, b)) in pairs(n_rot, neox).iter().enumerate() {
                        let (c, s) = cs[i];
                        let (x0, x1) = (x[o + a], x[o + b]);
                        assert_eq!(y[o + a], x0 * c - x1 * s);
                        assert_eq!(y[o + b], x0 * s + x1 * c);
                        // f64 angle pos * base^(-2i/n_rot).
                        let t = pos as f64 * 1e6f64.powf(-2.0 * i as f64 / n_rot as f64);
                        let want0 = x0 as f64 * t.cos() - x1 as f64 * t.sin();
                        assert!((y[o + a] as f64 - want0).abs() < 1e-4, "pos {pos} pair {i}");
                    }
                    // Dimensions past n_rot pass through.
                    assert_eq!(&y[o + n_rot..o + head_dim], &x[o + n_rot..o + head_dim]);
                }
            }
        }
    }
}

#[test]
fn rope_position_zero_is_identity() {
    let mut rng = StdRng::seed_from_u64(6);
    for neox in [false, true] {
        let x = random(&mut rng, 4 * 128, 1.0);
        let mut y = x.clone();
        let r = Rope {
            freq_scale: 0.25,
            freq_factors: Some(vec![1.5f32; 64].into()),
            ..rope(128, neox)
        };
        r.apply(&mut y, 4, 128, 0);
        assert_eq!(x, y);
    }
}

#[test]
fn rope_inverse_rotation_restores_and_norms_are_kept() {
    let mut rng = StdRng::seed_from_u64(7);
    for neox in [false, true] {
        let r = rope(64, neox);
        let x = random(&mut rng, 2 * 80, 1.0);
        let mut y = x.clone();
        r.apply(&mut y, 2, 80, 1234);
        for (i, &(a, b)) in pairs(64, neox).iter().enumerate() {
            let n0 = x[a].hypot(x[b]);
            let n1 = y[a].hypot(y[b]);
            assert!((n0 - n1).abs() <= 1e-6 * n0.max(1.0), "pair {i}");
        }
        // Rotating by -pos: the conjugate angles.
        let inv: Vec<(f32, f32)> = r.cache(1234).iter().map(|&(c, s)| (c, -s)).collect();
        r.apply_cached(&mut y, 2, 80, &inv);
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}

#[test]
fn rope_orderings_rotate_different_pairs() {
    // A unit vector in dim 1 at pos 1, theta_0 = 1: normal mode rotates it with dim 0, NeoX with
    // dim 1 + n_rot/2 (pair 1, theta_1 = base^(-2/n_rot)).
    let n_rot = 8;
    let mut x = vec![0.0f32; n_rot];
    x[1] = 1.0;
    let mut normal = x.clone();
    rope(n_rot, false).apply(&mut normal, 1, n_rot, 1);
    assert_eq!(normal[0], -(1f32.sin()));
    assert_eq!(normal[1], 1f32.cos());
    assert!(normal[2..].iter().all(|&v| v == 0.0));

    let mut neox = x.clone();
    rope(n_rot, true).apply(&mut neox, 1, n_rot, 1);
    let t1 = 10000f32.powf(-2.0 / n_rot as f32);
    assert_eq!(neox[1], t1.cos());
    assert_eq!(neox[1 + n_rot / 2], t1.sin());
    assert!(neox
        .iter()
        .enumerate()
        .all(|(i, &v)| i == 1 || i == 1 + n_rot / 2 || v == 0.0));
}

#[test]
fn rope_freq_scale_compresses_positions() {
    // theta(2p) = 2 theta(p) exactly in binary floating point, so scale 1/2 at 2p is p unscaled.
    let half = Rope {
        freq_scale: 0.5,
        ..rope(64, true)
    };
    assert_eq!(half.cache(2 * 37), rope(64, true).cache(37));
}

#[test]
fn yarn_without_extrapolation_is_plain_rope_times_attn_factor() {
    let plain = Rope {
        freq_scale: 0.25,
        ..rope(64, true)
    };
    let yarn = Rope {
        yarn: Some(Yarn {
            ext_factor: 0.0,
            attn_factor: 1.0,
            corr_dims: [3.0, 20.0],
        }),
        ..plain.clone()
    };
    assert_eq!(plain.cache(99), yarn.cache(99));
}

#[test]
fn yarn_ramp_extrapolates_low_pairs_and_interpolates_high_pairs() {
    let fs = 0.25f32;
    let (low, high) = (2.0f32, 5.0f32);
    let yarn = Rope {
        freq_scale: fs,
        yarn: Some(Yarn {
            ext_factor: 1.0,
            attn_factor: 1.0,
            corr_dims: [low, high],
        }),
        ..rope(16, false)
    };
    let extrap = rope(16, false).cache(50);
    let interp = Rope {
        freq_scale: fs,
        ..rope(16, false)
    }
    .cache(50);
    let m = 1.0 + 0.1 * (1.0 / fs).ln();
    let got = yarn.cache(50);
    for i in 0..8 {
        let (c, s) = got[i];
        if i as f32 <= low {
            assert_eq!((c, s), (extrap[i].0 * m, extrap[i].1 * m), "pair {i}");
        } else if i as f32 >= high {
            assert_eq!((c, s), (interp[i].0 * m, interp[i].1 * m), "pair {i}");
        } else {
            // In between, the angle lies between the two (all angles here are below pi).
            let t = s.atan2(c);
            let (te, ti) = (
                extrap[i].1.atan2(extrap[i].0),
                interp[i].1.atan2(interp[i].0),
            );
            assert!(t >= te.min(ti) - 1e-5 && t <= te.max(ti) + 1e-5, "pair {i}");
            assert!((c.hypot(s) - m).abs() < 1e-5);
        }
    }
}

#[test]
fn yarn_corr_dims_match_the_formula() {
    // dim(beta) = n_rot ln(n_ctx_orig / (2 pi beta)) / (2 ln base); [floor(dim(32)), ceil(dim(1))].
    let dim = |beta: f64| {
        64.0 * (4096.0 / (2.0 * std::f64::consts::PI * beta)).ln() / (2.0 * 10000f64.ln())
    };
    assert_eq!(
        Yarn::corr_dims(64, 4096, 10000.0, 32.0, 1.0),
        [dim(32.0).floor() as f32, dim(1.0).ceil() as f32]
    );
    assert_eq!(Yarn::corr_dims(64, 4096, 10000.0, 32.0, 1.0), [10.0, 23.0]);
    // Clamped to [0, n_rot - 1].
    assert_eq!(Yarn::corr_dims(8, 100_000, 10.0, 1e6, 1e-6), [0.0, 7.0]);
}
