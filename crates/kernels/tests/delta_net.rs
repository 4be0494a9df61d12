//! The Gated DeltaNet recurrence (`delta_net::gated_delta_net`) against an independent f64
//! transcription of its definition (one head at a time), its SIMD form (`gated_delta_net_at`)
//! against it bit for bit at every level this CPU has (widths that leave partial registers), and
//! the properties the engine relies on: a sequence split into several calls gives the same bits
//! as one call (the state carries everything), and a fully decayed state forgets the past.

mod common;

use frugal_kernels::delta_net::{
    forward, gated_delta_net, gated_delta_net_at, gated_delta_net_chunked_at, DeltaHeads, Tokens,
    CHUNKED_FROM,
};
use frugal_kernels::Isa;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct Inputs {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    g: Vec<f32>,
    beta: Vec<f32>,
}

impl Inputs {
    /// Tokens `a..b`.
    fn tokens(&self, h: DeltaHeads, a: usize, b: usize) -> Tokens<'_> {
        let (qk, v, g) = (h.k_heads * h.dim, h.v_heads * h.dim, h.v_heads);
        Tokens {
            n: b - a,
            q: &self.q[a * qk..b * qk],
            k: &self.k[a * qk..b * qk],
            v: &self.v[a * v..b * v],
            g: &self.g[a * g..b * g],
            beta: &self.beta[a * g..b * g],
        }
    }
}

fn random(rng: &mut StdRng, h: DeltaHeads, n: usize) -> Inputs {
    let mut r = |len: usize, lo: f32, hi: f32| -> Vec<f32> {
        (0..len).map(|_| rng.gen_range(lo..hi)).collect()
    };
    // Keys normalized as the model does (L2 per head), so the state stays bounded.
    let mut unit = |len: usize| -> Vec<f32> {
        let mut x = r(len, -1.0, 1.0);
        for head in x.chunks_exact_mut(h.dim) {
            let norm = head.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-6);
            head.iter_mut().for_each(|v| *v /= norm);
        }
        x
    };
    let q = unit(n * h.k_heads * h.dim);
    let k = unit(n * h.k_heads * h.dim);
    Inputs {
        q,
        k,
        v: r(n * h.v_heads * h.dim, -1.0, 1.0),
        g: r(n * h.v_heads, -2.0, 0.0),
        beta: r(n * h.v_heads, 0.0, 1.0),
    }
}

/// The definition in f64, returning the outputs and the final state.
fn reference(h: DeltaHeads, n: usize, x: &Inputs, s0: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let d = h.dim;
    let mut out = vec![0.0f64; n * h.v_heads * d];
    let mut state = vec![0.0f64; h.state_len()];
    for hv in 0..h.v_heads {
        let kh = hv % h.k_heads;
        // s[i][j] = state[hv][i][j]
        let mut s = vec![vec![0.0f64; d]; d];
        for (i, row) in s.iter_mut().enumerate() {
            for (j, x) in row.iter_mut().enumerate() {
                *x = s0[(hv * d + i) * d + j] as f64;
            }
        }
        for t in 0..n {
            let q = &x.q[(t * h.k_heads + kh) * d..][..d];
            let k = &x.k[(t * h.k_heads + kh) * d..][..d];
            let v = &x.v[(t * h.v_heads + hv) * d..][..d];
            let decay = (x.g[t * h.v_heads + hv] as f64).exp();
            let beta = x.beta[t * h.v_heads + hv] as f64;
            s.iter_mut().flatten().for_each(|x| *x *= decay);
            let delta: Vec<f64> = (0..d)
                .map(|j| {
                    let sk: f64 = (0..d).map(|i| s[i][j] * k[i] as f64).sum();
                    (v[j] as f64 - sk) * beta
                })
                .collect();
            for i in 0..d {
                for j in 0..d {
                    s[i][j] += k[i] as f64 * delta[j];
                }
            }
            for j in 0..d {
                let sq: f64 = (0..d).map(|i| s[i][j] * q[i] as f64).sum();
                out[(t * h.v_heads + hv) * d + j] = sq / (d as f64).sqrt();
            }
        }
        for i in 0..d {
            for j in 0..d {
                state[(hv * d + i) * d + j] = s[i][j];
            }
        }
    }
    (out, state)
}

#[test]
fn recurrence_matches_the_f64_definition() {
    let mut rng = StdRng::seed_from_u64(1);
    for heads in [
        DeltaHeads {
            v_heads: 1,
            k_heads: 1,
            dim: 4,
        },
        DeltaHeads {
            v_heads: 4,
            k_heads: 2,
            dim: 16,
        },
        DeltaHeads {
            v_heads: 6,
            k_heads: 3,
            dim: 32,
        },
    ] {
        let n = 37;
        let x = random(&mut rng, heads, n);
        let s0: Vec<f32> = (0..heads.state_len())
            .map(|_| rng.gen_range(-0.5..0.5))
            .collect();
        let mut state = s0.clone();
        let mut out = vec![0.0f32; n * heads.v_heads * heads.dim];
        gated_delta_net(heads, &x.tokens(heads, 0, n), &mut state, &mut out);
        let (want_out, want_state) = reference(heads, n, &x, &s0);
        for (got, want) in out
            .iter()
            .zip(&want_out)
            .chain(state.iter().zip(&want_state))
        {
            assert!(
                (*got as f64 - want).abs() <= 1e-4 * want.abs().max(1.0),
                "{heads:?}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn split_calls_equal_one_call_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(2);
    let heads = DeltaHeads {
        v_heads: 4,
        k_heads: 2,
        dim: 8,
    };
    let n = 20;
    let x = random(&mut rng, heads, n);
    let v1 = heads.v_heads * heads.dim;
    let mut whole_state = vec![0.0f32; heads.state_len()];
    let mut whole = vec![0.0f32; n * v1];
    gated_delta_net(heads, &x.tokens(heads, 0, n), &mut whole_state, &mut whole);
    let mut state = vec![0.0f32; heads.state_len()];
    let mut parts = vec![0.0f32; n * v1];
    for (a, b) in [(0, 1), (1, 8), (8, 9), (9, 20)] {
        let out = &mut parts[a * v1..b * v1];
        gated_delta_net(heads, &x.tokens(heads, a, b), &mut state, out);
    }
    assert_eq!(parts, whole);
    assert_eq!(state, whole_state);
}

#[test]
fn a_fully_decayed_state_forgets_the_past() {
    let mut rng = StdRng::seed_from_u64(3);
    let heads = DeltaHeads {
        v_heads: 2,
        k_heads: 2,
        dim: 8,
    };
    let mut x = random(&mut rng, heads, 1);
    x.g.iter_mut().for_each(|g| *g = f32::NEG_INFINITY);
    let run = |s0: f32| {
        let mut state = vec![s0; heads.state_len()];
        let mut out = vec![0.0f32; heads.v_heads * heads.dim];
        gated_delta_net(heads, &x.tokens(heads, 0, 1), &mut state, &mut out);
        (out, state)
    };
    assert_eq!(run(0.0), run(0.75));
}

#[test]
#[should_panic(expected = "do not divide")]
fn key_heads_must_divide_value_heads() {
    let heads = DeltaHeads {
        v_heads: 3,
        k_heads: 2,
        dim: 4,
    };
    let mut state = vec![0.0; heads.state_len()];
    let none = Tokens {
        n: 0,
        q: &[],
        k: &[],
        v: &[],
        g: &[],
        beta: &[],
    };
    gated_delta_net(heads, &none, &mut state, &mut []);
}

#[test]
fn simd_recurrence_equals_the_reference_at_every_level() {
    let levels = common::levels("simd_recurrence_equals_the_reference_at_every_level");
    let mut rng = StdRng::seed_from_u64(4);
    for heads in [
        DeltaHeads {
            v_heads: 2,
            k_heads: 1,
            dim: 5,
        },
        DeltaHeads {
            v_heads: 4,
            k_heads: 2,
            dim: 16,
        },
        DeltaHeads {
            v_heads: 2,
            k_heads: 2,
            dim: 37,
        },
        DeltaHeads {
            v_heads: 2,
            k_heads: 1,
            dim: 128,
        },
        // A full AVX2 group and a partial one; a full AVX-512 group and a partial one.
        DeltaHeads {
            v_heads: 1,
            k_heads: 1,
            dim: 48,
        },
        DeltaHeads {
            v_heads: 1,
            k_heads: 1,
            dim: 200,
        },
    ] {
        let n = 9;
        let x = random(&mut rng, heads, n);
        let s0: Vec<f32> = (0..heads.state_len())
            .map(|_| rng.gen_range(-0.5..0.5))
            .collect();
        let (mut want_state, mut want) = (s0.clone(), vec![0.0f32; n * heads.v_heads * heads.dim]);
        gated_delta_net(heads, &x.tokens(heads, 0, n), &mut want_state, &mut want);
        for &isa in &levels {
            let (mut state, mut out) = (s0.clone(), vec![0.0f32; want.len()]);
            gated_delta_net_at(isa, heads, &x.tokens(heads, 0, n), &mut state, &mut out);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&out), bits(&want), "{isa:?} {heads:?} outputs");
            assert_eq!(bits(&state), bits(&want_state), "{isa:?} {heads:?} state");
        }
    }
}

#[test]
fn causal_conv_matches_the_definition_and_carries_its_state() {
    use frugal_kernels::delta_net::causal_conv;
    let mut rng = StdRng::seed_from_u64(5);
    let (channels, width, n) = (19, 4, 11);
    let mut r =
        |len: usize| -> Vec<f32> { (0..len).map(|_| rng.gen_range(-1.0f32..1.0)).collect() };
    let (x, w, s0) = (
        r(n * channels),
        r(width * channels),
        r((width - 1) * channels),
    );
    let mut state = s0.clone();
    let mut out = vec![0.0f32; n * channels];
    causal_conv(channels, width, n, &x, &w, &mut state, &mut out);
    // The padded input, and the sum in tap order.
    let xp: Vec<f32> = s0.iter().chain(&x).copied().collect();
    for t in 0..n {
        for c in 0..channels {
            let mut want = 0.0f32;
            for i in 0..width {
                want += xp[(t + i) * channels + c] * w[i * channels + c];
            }
            assert_eq!(
                out[t * channels + c].to_bits(),
                want.to_bits(),
                "t={t} c={c}"
            );
        }
    }
    assert_eq!(state, xp[n * channels..].to_vec());
    // Token by token gives the same bits.
    let mut state2 = s0.clone();
    for t in 0..n {
        let mut o = vec![0.0f32; channels];
        causal_conv(
            channels,
            width,
            1,
            &x[t * channels..(t + 1) * channels],
            &w,
            &mut state2,
            &mut o,
        );
        assert_eq!(o, out[t * channels..(t + 1) * channels].to_vec(), "t={t}");
    }
    assert_eq!(state2, state);
}

#[test]
fn softplus_and_l2_norm_by_their_definitions() {
    use frugal_kernels::delta_net::{l2_norm, softplus};
    for x in [-30.0f32, -1.0, 0.0, 0.5, 19.9, 20.0, 20.1, 50.0] {
        let want = if x > 20.0 {
            x as f64
        } else {
            (1.0 + (x as f64).exp()).ln()
        };
        assert!(
            (softplus(x) as f64 - want).abs() <= 1e-6 * want.abs().max(1e-3),
            "{x}"
        );
    }
    let mut rng = StdRng::seed_from_u64(6);
    let x: Vec<f32> = (0..128).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
    let mut y = x.clone();
    l2_norm(&mut y, 1e-6);
    let norm = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
    for (a, b) in y.iter().zip(&x) {
        assert!((*a as f64 - *b as f64 / norm).abs() < 1e-6);
    }
    let mut zeros = vec![0.0f32; 8];
    l2_norm(&mut zeros, 1e-6);
    assert_eq!(zeros, vec![0.0; 8]);
}

/// Gate ranges the chunked form is checked under: the model's usual; near 0 (the state forgets
/// nothing, so it carries the most and the solve's weights are largest); strongly negative (each
/// token nearly forgets, and the decays inside a chunk fall below f32's normal range to 0).
const GATES: [(f32, f32); 3] = [(-2.0, 0.0), (-1e-4, 0.0), (-80.0, -20.0)];

/// `random` with gates drawn from `lo..=hi`, and a random starting state.
fn with_gates(
    rng: &mut StdRng,
    h: DeltaHeads,
    n: usize,
    (lo, hi): (f32, f32),
) -> (Inputs, Vec<f32>) {
    let mut x = random(rng, h, n);
    x.g.iter_mut().for_each(|g| *g = rng.gen_range(lo..=hi));
    let s0 = (0..h.state_len())
        .map(|_| rng.gen_range(-0.5..0.5))
        .collect();
    (x, s0)
}

/// The recurrence's outputs and final state from `s0`.
fn recurrence(h: DeltaHeads, x: &Tokens, s0: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (mut state, mut out) = (s0.to_vec(), vec![0.0f32; x.n * h.v_heads * h.dim]);
    gated_delta_net(h, x, &mut state, &mut out);
    (out, state)
}

/// The chunked form's outputs and final state from `s0` at `isa`.
fn chunked(isa: Isa, h: DeltaHeads, chunk: usize, x: &Tokens, s0: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (mut state, mut out) = (s0.to_vec(), vec![0.0f32; x.n * h.v_heads * h.dim]);
    gated_delta_net_chunked_at(isa, h, chunk, x, &mut state, &mut out);
    (out, state)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The bound between the chunked form and the recurrence: `|chunked − recurrence| ≤ TOL ·
/// max(1, |recurrence|)` for every output and state value. Both are within about 3e-6 of the
/// f64 definition in these tests (the worst case: 1000 tokens that never decay, in the state);
/// the bound leaves room for that from each side.
const TOL: f32 = 1e-5;

fn assert_close(got: &(Vec<f32>, Vec<f32>), want: &(Vec<f32>, Vec<f32>), what: &str) {
    for (name, got, want) in [("out", &got.0, &want.0), ("state", &got.1, &want.1)] {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= TOL * w.abs().max(1.0),
                "{what}: {name}[{i}] = {g}, the recurrence gives {w}"
            );
        }
    }
}

#[test]
fn simd_chunked_equals_the_scalar_chunked_at_every_level() {
    let levels = common::levels("simd_chunked_equals_the_scalar_chunked_at_every_level");
    let mut rng = StdRng::seed_from_u64(7);
    let shapes = [(2, 1, 5), (4, 2, 16), (2, 2, 37), (2, 1, 128)];
    for (i, (v_heads, k_heads, dim)) in shapes.into_iter().enumerate() {
        let heads = DeltaHeads {
            v_heads,
            k_heads,
            dim,
        };
        // Every gate range for one shape; 47 tokens leave a ragged last chunk for every size.
        let gates = if i == 1 { &GATES[..] } else { &GATES[..1] };
        for &range in gates {
            let n = 47;
            let (x, s0) = with_gates(&mut rng, heads, n, range);
            let x = x.tokens(heads, 0, n);
            for chunk in [1, 3, 8, 16, 64] {
                let want = chunked(Isa::Scalar, heads, chunk, &x, &s0);
                for &isa in &levels[1..] {
                    let got = chunked(isa, heads, chunk, &x, &s0);
                    let what = format!("{isa:?} {heads:?} chunk={chunk} gates {range:?}");
                    assert_eq!(bits(&got.0), bits(&want.0), "{what}: outputs");
                    assert_eq!(bits(&got.1), bits(&want.1), "{what}: state");
                }
            }
        }
    }
}

#[test]
fn chunked_form_matches_the_recurrence() {
    let levels = common::levels("chunked_form_matches_the_recurrence");
    let mut rng = StdRng::seed_from_u64(8);
    for (v_heads, k_heads, dim) in [(2, 1, 8), (4, 2, 32), (2, 2, 48)] {
        let heads = DeltaHeads {
            v_heads,
            k_heads,
            dim,
        };
        for range in GATES {
            let n = 45;
            let (x, s0) = with_gates(&mut rng, heads, n, range);
            let x = x.tokens(heads, 0, n);
            let want = recurrence(heads, &x, &s0);
            for chunk in [1, 4, 7, 16, 64] {
                for &isa in &levels {
                    let got = chunked(isa, heads, chunk, &x, &s0);
                    assert_close(
                        &got,
                        &want,
                        &format!("{isa:?} {heads:?} chunk={chunk} {range:?}"),
                    );
                }
            }
        }
    }
}

#[test]
fn chunked_form_does_not_drift_over_1000_tokens() {
    let levels = common::levels("chunked_form_does_not_drift_over_1000_tokens");
    let mut rng = StdRng::seed_from_u64(9);
    let heads = DeltaHeads {
        v_heads: 2,
        k_heads: 1,
        dim: 128,
    };
    for range in GATES {
        let n = 1000;
        let (x, s0) = with_gates(&mut rng, heads, n, range);
        let x = x.tokens(heads, 0, n);
        let want = recurrence(heads, &x, &s0);
        for chunk in [16, 64] {
            for &isa in &levels {
                let got = chunked(isa, heads, chunk, &x, &s0);
                assert!(got.0.iter().chain(&got.1).all(|v| v.is_finite()));
                assert_close(&got, &want, &format!("{isa:?} chunk={chunk} {range:?}"));
            }
        }
    }
}

#[test]
fn chunked_calls_split_at_chunk_boundaries_equal_one_call_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(10);
    let heads = DeltaHeads {
        v_heads: 4,
        k_heads: 2,
        dim: 16,
    };
    let (n, chunk, v1) = (40, 8, 4 * 16);
    let (x, s0) = with_gates(&mut rng, heads, n, GATES[0]);
    let isa = Isa::best();
    let whole = chunked(isa, heads, chunk, &x.tokens(heads, 0, n), &s0);
    let (mut state, mut parts) = (s0.clone(), vec![0.0f32; n * v1]);
    for (a, b) in [(0, 8), (8, 32), (32, 40)] {
        let out = &mut parts[a * v1..b * v1];
        gated_delta_net_chunked_at(isa, heads, chunk, &x.tokens(heads, a, b), &mut state, out);
    }
    assert_eq!(bits(&parts), bits(&whole.0));
    assert_eq!(bits(&state), bits(&whole.1));
}

#[test]
fn chunked_form_forgets_past_an_infinitely_negative_gate() {
    let mut rng = StdRng::seed_from_u64(11);
    let heads = DeltaHeads {
        v_heads: 2,
        k_heads: 1,
        dim: 16,
    };
    let (n, forget) = (20, 5);
    let (mut x, _) = with_gates(&mut rng, heads, n, GATES[0]);
    x.g[forget * heads.v_heads..(forget + 1) * heads.v_heads].fill(f32::NEG_INFINITY);
    let x = x.tokens(heads, 0, n);
    let from = forget * heads.v_heads * heads.dim;
    for isa in common::levels("chunked_form_forgets_past_an_infinitely_negative_gate") {
        let run = |s: f32| chunked(isa, heads, 8, &x, &vec![s; heads.state_len()]);
        let (a, b) = (run(0.0), run(0.75));
        assert_eq!(
            a.0[from..],
            b.0[from..],
            "{isa:?}: outputs from the gate on"
        );
        assert_eq!(a.1, b.1, "{isa:?}: state");
        assert!(a.0.iter().chain(&a.1).all(|v| v.is_finite()));
    }
}

#[test]
fn forward_takes_the_recurrence_for_decode_and_chunks_for_prompts() {
    let mut rng = StdRng::seed_from_u64(12);
    let heads = DeltaHeads {
        v_heads: 4,
        k_heads: 2,
        dim: 32,
    };
    let n = CHUNKED_FROM + 30;
    let (x, s0) = with_gates(&mut rng, heads, n, GATES[0]);
    let run = |a: usize, b: usize, s: &[f32]| {
        let (mut state, mut out) = (
            s.to_vec(),
            vec![0.0f32; (b - a) * heads.v_heads * heads.dim],
        );
        forward(heads, &x.tokens(heads, a, b), &mut state, &mut out);
        (out, state)
    };
    // A few tokens: the recurrence (every level equals the reference bit for bit).
    let short = x.tokens(heads, 0, CHUNKED_FROM - 1);
    let got = run(0, CHUNKED_FROM - 1, &s0);
    let want = recurrence(heads, &short, &s0);
    assert_eq!((bits(&got.0), bits(&got.1)), (bits(&want.0), bits(&want.1)));
    // A prompt, then decode steps: the chunked form, then the recurrence from its state.
    let prompt = run(0, n - 3, &s0);
    let mut state = prompt.1;
    let mut out = prompt.0;
    for t in n - 3..n {
        let step = run(t, t + 1, &state);
        out.extend(step.0);
        state = step.1;
    }
    assert_close(
        &(out, state),
        &recurrence(heads, &x.tokens(heads, 0, n), &s0),
        "forward",
    );
}

#[test]
fn forward_runs_on_several_threads_at_once() {
    let mut rng = StdRng::seed_from_u64(13);
    let heads = DeltaHeads {
        v_heads: 2,
        k_heads: 1,
        dim: 16,
    };
    let n = 50;
    let seqs: Vec<(Inputs, Vec<f32>)> = (0..4)
        .map(|_| with_gates(&mut rng, heads, n, GATES[0]))
        .collect();
    let one = |(x, s0): &(Inputs, Vec<f32>)| {
        let (mut state, mut out) = (s0.clone(), vec![0.0f32; n * heads.v_heads * heads.dim]);
        forward(heads, &x.tokens(heads, 0, n), &mut state, &mut out);
        (out, state)
    };
    let alone: Vec<_> = seqs.iter().map(one).collect();
    let together: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = seqs.iter().map(|q| s.spawn(move || one(q))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(alone, together);
}

/// Per-token cost of the recurrence and of the chunked form (several chunk sizes) at every SIMD
/// level, one thread, Qwen3.5-like heads (16 × 128), for runs of 1 to 512 tokens. Every
/// configuration runs once per round and keeps its best round, so that a busy moment of the
/// machine does not land on one configuration only; the state is warm (in L2 where it fits).
/// Run with
/// `cargo test --release -p frugal-kernels --test delta_net -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_recurrence_against_chunked() {
    let heads = DeltaHeads {
        v_heads: 16,
        k_heads: 16,
        dim: 128,
    };
    let mut rng = StdRng::seed_from_u64(99);
    let x = random(&mut rng, heads, 512);
    let mut state = vec![0.0f32; heads.state_len()];
    let mut out = vec![0.0f32; 512 * heads.v_heads * heads.dim];
    let levels = common::levels("bench_recurrence_against_chunked");
    let (sizes, chunks) = ([1usize, 2, 3, 4, 8, 16, 32, 64, 512], [16, 32, 64, 128]);
    // (level, tokens, chunk; 0 for the recurrence) and its best seconds.
    let mut runs: Vec<((Isa, usize, usize), f64)> = Vec::new();
    for &isa in &levels[1..] {
        for n in sizes {
            for chunk in std::iter::once(0).chain(chunks) {
                runs.push(((isa, n, chunk), f64::INFINITY));
            }
        }
    }
    for _round in 0..15 {
        for ((isa, n, chunk), best) in runs.iter_mut() {
            let (isa, n, chunk) = (*isa, *n, *chunk);
            let (xs, o) = (x.tokens(heads, 0, n), &mut out[..n * 16 * 128]);
            let mut go = || {
                if chunk == 0 {
                    gated_delta_net_at(isa, heads, &xs, &mut state, o);
                } else {
                    gated_delta_net_chunked_at(isa, heads, chunk, &xs, &mut state, o);
                }
            };
            // Once untimed, so that the state (1 MiB) is as warm for every configuration.
            go();
            let t = std::time::Instant::now();
            go();
            *best = best.min(t.elapsed().as_secs_f64());
        }
    }
    println!("µs per token (16 heads of 128), best of 15; recurrence, then chunks {chunks:?}");
    for row in runs.chunks(1 + chunks.len()) {
        let ((isa, n, _), _) = row[0];
        let us: Vec<String> = row
            .iter()
            .map(|(_, s)| format!("{:6.1}", s * 1e6 / n as f64))
            .collect();
        println!("{:>10} n={n:3}: {}", isa.name(), us.join(" "));
    }
}
