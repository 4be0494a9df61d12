//! The softmax, SwiGLU and GeGLU kernels (`activation::softmax_at`, `swiglu_at`, `geglu_at`) against
//! their scalar references (`ops::softmax`, `ops::swiglu`, `ops::geglu`) at every instruction-set
//! level this CPU has,
//! bit for bit, on random rows of ragged lengths (partial registers, tails of every size) and on the
//! edges of `exp`: masked (-inf) entries, values past its overflow and underflow limits, NaN.

mod common;

use frugal_kernels::{activation, ops};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|v| v.to_bits()).collect()
}

fn random(rng: &mut StdRng, n: usize, range: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-range..range)).collect()
}

#[test]
fn softmax_matches_the_reference_at_every_level() {
    let levels = common::levels("softmax_matches_the_reference_at_every_level");
    let mut rng = StdRng::seed_from_u64(11);
    for n in [1, 5, 8, 15, 16, 17, 31, 32, 33, 100, 257, 1024] {
        for (range, scale) in [(1.0f32, 1.0f32), (30.0, 0.125), (200.0, 1.0), (5.0, -2.0)] {
            let mut x = random(&mut rng, n, range);
            if n > 3 {
                x[n / 2] = f32::NEG_INFINITY;
            }
            let mut want = x.clone();
            ops::softmax(&mut want, scale);
            for &isa in &levels {
                let mut got = x.clone();
                activation::softmax_at(isa, &mut got, scale);
                assert_eq!(bits(&got), bits(&want), "{isa:?} n={n} range={range}");
            }
        }
    }
}

type GluFn = fn(&mut [f32], &[f32]);
type GluAtFn = fn(frugal_kernels::Isa, &mut [f32], &[f32]);

/// A gated activation's kernels against its reference, on random rows with `exp`'s edges.
fn glu_matches_the_reference(test: &str, seed: u64, reference: GluFn, kernel: GluAtFn) {
    let levels = common::levels(test);
    let mut rng = StdRng::seed_from_u64(seed);
    let edges = [
        0.0f32,
        -0.0,
        88.0,
        -88.0,
        87.4,
        -88.5,
        -90.0,
        100.0,
        -100.0,
        1e30,
        -1e30,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1e-40,
        -5.0,
        4.0,
    ];
    for n in [1, 7, 8, 9, 16, 23, 64, 4864 + 5] {
        let mut g = random(&mut rng, n, 20.0);
        for (i, &e) in edges.iter().enumerate().take(n) {
            g[(i * 7) % n] = e;
        }
        let u = random(&mut rng, n, 3.0);
        let mut want = g.clone();
        reference(&mut want, &u);
        for &isa in &levels {
            let mut got = g.clone();
            kernel(isa, &mut got, &u);
            assert_eq!(bits(&got), bits(&want), "{test}: {isa:?} n={n}");
        }
    }
}

#[test]
fn swiglu_matches_the_reference_at_every_level() {
    glu_matches_the_reference(
        "swiglu_matches_the_reference_at_every_level",
        12,
        ops::swiglu,
        activation::swiglu_at,
    );
}

#[test]
fn geglu_matches_the_reference_at_every_level() {
    glu_matches_the_reference(
        "geglu_matches_the_reference_at_every_level",
        13,
        ops::geglu,
        activation::geglu_at,
    );
}

/// `ops::gelu` (a sigmoid of the tanh form's argument) against the tanh form in f64.
#[test]
fn gelu_is_the_tanh_form() {
    let mut worst = 0f64;
    for i in -20_000..=20_000 {
        let x = i as f64 / 1000.0;
        let want = 0.5
            * x
            * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh());
        let got = ops::gelu(x as f32) as f64;
        worst = worst.max((got - want).abs() / want.abs().max(1e-3));
    }
    assert!(worst < 2e-6, "gelu: relative error {worst}");
    assert_eq!(ops::gelu(-200.0), -0.0);
    assert_eq!(ops::gelu(200.0), 200.0);
}

#[test]
fn exp_is_within_two_ulp_where_unclamped() {
    // Two million evenly spaced points between the limits (n unclamped): the polynomial's accuracy.
    let (lo, hi, steps) = (-87.3f64, 88.3f64, 2_000_000);
    let mut worst = 0u32;
    for i in 0..=steps {
        let x = (lo + (hi - lo) * i as f64 / steps as f64) as f32;
        let want = (x as f64).exp() as f32;
        worst = worst.max(ops::exp(x).to_bits().abs_diff(want.to_bits()));
    }
    assert!(worst <= 2, "exp: {worst} ulp");
    assert_eq!(ops::exp(0.0), 1.0);
    assert_eq!(ops::exp(-1000.0), 0.0);
    assert_eq!(ops::exp(f32::NEG_INFINITY), 0.0);
    assert_eq!(ops::exp(89.0), f32::INFINITY);
    assert!(ops::exp(f32::NAN).is_nan());
    let top = ops::exp(88.7) as f64 / 88.7f64.exp();
    assert!((top - 1.0).abs() < 1e-5, "exp(88.7) off by {top}");
}
