//! `matmul` against a naive matmul of the dequantized weights and the dequantized (quantized)
//! activations in f64, for every weight type, thread count and token count (one-row, four-row and
//! remainder paths); plus batch and thread invariance, reuse of quantized activations, and the
//! `Matrix` accessors and errors.

use frugal_kernels::dequant::dequantize_row;
use frugal_kernels::matmul::{
    matmul, matmul_batch, matmul_quantized, quantize_activations, Matrix, Product,
};
use frugal_kernels::quantize::{quantize_row, quantize_weights};
use frugal_kernels::{GgmlType, KernelError, ThreadPool};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const WEIGHT_TYPES: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

fn random_matrix(rng: &mut StdRng, ty: GgmlType, rows: usize, cols: usize) -> Matrix {
    let values: Vec<f32> = (0..rows * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let mut bytes = vec![0u8; ty.row_bytes(cols).unwrap() * rows];
    for (src, dst) in values
        .chunks_exact(cols)
        .zip(bytes.chunks_exact_mut(ty.row_bytes(cols).unwrap()))
    {
        quantize_weights(ty, src, dst).unwrap();
    }
    Matrix::from_bytes(ty, rows, cols, &bytes).unwrap()
}

/// The exact product of what `matmul` multiplies: dequantized weights times the activations
/// quantized into the weight type's `vec_dot_type` and dequantized, in f64; and Σ|terms| per
/// output for the tolerance.
fn reference(w: &Matrix, x: &[f32], n_tokens: usize) -> (Vec<f64>, Vec<f64>) {
    let (rows, cols) = (w.rows(), w.cols());
    let vdt = w.ty().vec_dot_type();
    let wf = w.to_f32();
    let mut want = vec![0.0f64; n_tokens * rows];
    let mut mag = vec![0.0f64; n_tokens * rows];
    let mut q = vec![0u8; vdt.row_bytes(cols).unwrap()];
    let mut xa = vec![0.0f32; cols];
    let mut wr = vec![0.0f32; cols];
    for t in 0..n_tokens {
        quantize_row(vdt, &x[t * cols..(t + 1) * cols], &mut q);
        dequantize_row(vdt, &q, &mut xa);
        for r in 0..rows {
            wf.dequantize_row(r, &mut wr);
            for (a, b) in wr.iter().zip(&xa) {
                want[t * rows + r] += *a as f64 * *b as f64;
                mag[t * rows + r] += (*a as f64 * *b as f64).abs();
            }
        }
    }
    (want, mag)
}

fn random_x(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-2.0..2.0)).collect()
}

#[test]
fn matmul_matches_a_naive_f64_matmul() {
    let mut rng = StdRng::seed_from_u64(21);
    let pools: Vec<ThreadPool> = [1, 2, 3].into_iter().map(ThreadPool::new).collect();
    for ty in WEIGHT_TYPES {
        // Odd row counts: uneven thread ranges and a partial last tile.
        let cols = if ty.block_len() == 256 { 512 } else { 96 };
        let rows = 37;
        let w = random_matrix(&mut rng, ty, rows, cols);
        for pool in &pools {
            // Q8_1 activations carry d·Σq rounded to f16, which ggml's Q4_1/Q5_1 dots use in
            // place of the exact sum: allow for that rounding there.
            let rel = if ty.vec_dot_type() == GgmlType::Q8_1 {
                2e-3
            } else {
                1e-5
            };
            for n_tokens in [1, 2, 3, 4, 5, 8, 9] {
                let x = random_x(&mut rng, n_tokens * cols);
                let mut y = vec![f32::NAN; n_tokens * rows];
                matmul(pool, &w, &x, n_tokens, &mut y);
                let (want, mag) = reference(&w, &x, n_tokens);
                for i in 0..y.len() {
                    assert!(
                        (y[i] as f64 - want[i]).abs() <= rel * mag[i] + 1e-30,
                        "{ty} threads={} tokens={n_tokens} [{i}]: {} vs {}",
                        pool.n_threads(),
                        y[i],
                        want[i]
                    );
                }
            }
        }
    }
}

/// A token's output must not depend on the batch it is in, on its position in the batch, or on
/// the number of threads (the engine's batch-invariance relies on this).
#[test]
fn matmul_is_batch_and_thread_invariant() {
    let mut rng = StdRng::seed_from_u64(22);
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q8_0,
        GgmlType::Q5_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::F16,
    ] {
        let cols = 512;
        let rows = 45;
        let w = random_matrix(&mut rng, ty, rows, cols);
        let n_tokens = 11;
        let x = random_x(&mut rng, n_tokens * cols);
        let one = ThreadPool::new(1);
        let mut batch = vec![0.0f32; n_tokens * rows];
        matmul(&one, &w, &x, n_tokens, &mut batch);
        for threads in [2, 3] {
            let pool = ThreadPool::new(threads);
            let mut y = vec![0.0f32; n_tokens * rows];
            matmul(&pool, &w, &x, n_tokens, &mut y);
            assert_eq!(y, batch, "{ty}: {threads} threads");
        }
        for t in 0..n_tokens {
            let mut alone = vec![0.0f32; rows];
            matmul(&one, &w, &x[t * cols..(t + 1) * cols], 1, &mut alone);
            assert_eq!(
                alone[..],
                batch[t * rows..(t + 1) * rows],
                "{ty}: token {t}"
            );
        }
    }
}

/// Products run together in one region (a MoE step's experts) give exactly what each gives
/// alone: packed, decoded and row-kernel types, one and many tokens, large and tiny matrices,
/// shared and requantized activations.
#[test]
fn a_batch_of_products_equals_each_product_alone() {
    let mut rng = StdRng::seed_from_u64(24);
    let cols = 512;
    let shapes = [
        (GgmlType::Q4_K, 96),
        (GgmlType::Q6_K, 40),
        (GgmlType::Q4_0, 3),
        (GgmlType::Q3_K, 33),
        (GgmlType::F16, 17),
        (GgmlType::Q8_0, 200),
    ];
    let mats: Vec<Matrix> = shapes
        .iter()
        .map(|&(ty, rows)| random_matrix(&mut rng, ty, rows, cols))
        .collect();
    for n_tokens in [1, 5] {
        let x = random_x(&mut rng, n_tokens * cols);
        // Q8_K activations: the Q4_0, Q8_0 and F16 products requantize them.
        let qa = quantize_activations(&ThreadPool::new(1), GgmlType::Q8_K, &x, n_tokens);
        for threads in [1, 2, 3] {
            let pool = ThreadPool::new(threads);
            let mut alone: Vec<Vec<f32>> = Vec::new();
            for w in &mats {
                let mut y = vec![0.0f32; n_tokens * w.rows()];
                matmul_quantized(&pool, w, &qa, &mut y);
                alone.push(y);
            }
            let mut together: Vec<Vec<f32>> = mats
                .iter()
                .map(|w| vec![f32::NAN; n_tokens * w.rows()])
                .collect();
            let mut products: Vec<Product> = mats
                .iter()
                .zip(&mut together)
                .map(|(w, y)| Product { w, qa: &qa, y })
                .collect();
            matmul_batch(&pool, &mut products);
            for (k, (a, t)) in alone.iter().zip(&together).enumerate() {
                assert_eq!(a, t, "product {k}: {n_tokens} tokens, {threads} threads");
            }
        }
    }
}

#[test]
fn quantized_activations_are_reusable() {
    let mut rng = StdRng::seed_from_u64(23);
    let pool = ThreadPool::new(2);
    let cols = 256;
    let n_tokens = 6;
    let x = random_x(&mut rng, n_tokens * cols);
    // Q4_K and Q6_K share Q8_K activations, Q5_0 needs Q8_0.
    let wq = random_matrix(&mut rng, GgmlType::Q4_K, 24, cols);
    let wk = random_matrix(&mut rng, GgmlType::Q6_K, 8, cols);
    let wv = random_matrix(&mut rng, GgmlType::Q5_0, 8, cols);
    let qa = quantize_activations(&pool, wq.ty().vec_dot_type(), &x, n_tokens);
    assert_eq!(qa.ty(), GgmlType::Q8_K);
    assert_eq!((qa.n_tokens(), qa.cols()), (n_tokens, cols));
    assert!(qa.fits(&wq) && qa.fits(&wk) && !qa.fits(&wv));
    for w in [&wq, &wk] {
        let mut direct = vec![0.0f32; n_tokens * w.rows()];
        let mut reused = vec![0.0f32; n_tokens * w.rows()];
        matmul(&pool, w, &x, n_tokens, &mut direct);
        matmul_quantized(&pool, w, &qa, &mut reused);
        assert_eq!(direct, reused, "{}", w.ty());
    }
    // A mismatched type is requantized: close to the direct result, within Q8_K's rounding.
    let mut direct = vec![0.0f32; n_tokens * wv.rows()];
    let mut fallback = vec![0.0f32; n_tokens * wv.rows()];
    matmul(&pool, &wv, &x, n_tokens, &mut direct);
    matmul_quantized(&pool, &wv, &qa, &mut fallback);
    let (_, mag) = reference(&wv, &x, n_tokens);
    for i in 0..direct.len() {
        assert!(((direct[i] - fallback[i]) as f64).abs() <= 0.02 * mag[i]);
    }
}

#[test]
fn matrix_accessors_and_errors() {
    let mut rng = StdRng::seed_from_u64(24);
    let w = random_matrix(&mut rng, GgmlType::Q4_0, 5, 64);
    assert_eq!((w.ty(), w.rows(), w.cols()), (GgmlType::Q4_0, 5, 64));
    assert_eq!(w.n_bytes(), 5 * 36);
    assert_eq!(w.row(3).len(), 36);
    let f = w.to_f32();
    assert_eq!((f.ty(), f.rows(), f.cols()), (GgmlType::F32, 5, 64));
    let mut a = vec![0.0f32; 64];
    let mut b = vec![0.0f32; 64];
    w.dequantize_row(2, &mut a);
    dequantize_row(GgmlType::Q4_0, w.row(2), &mut b);
    assert_eq!(a, b);
    f.dequantize_row(2, &mut b);
    assert_eq!(a, b);
    // The copy is 64-byte aligned whatever the source's alignment.
    let bytes: Vec<u8> = (0..5 * 36 + 1).map(|_| rng.gen()).collect();
    let m = Matrix::from_bytes(GgmlType::Q4_0, 5, 64, &bytes[1..]).unwrap();
    assert_eq!(m.row(0).as_ptr() as usize % 64, 0);
    assert_eq!(m.row(4), &bytes[1 + 4 * 36..]);
    assert!(matches!(
        Matrix::from_bytes(GgmlType::Q4_0, 5, 64, &bytes),
        Err(KernelError::SizeMismatch {
            expected: 180,
            actual: 181,
            ..
        })
    ));
    assert!(matches!(
        Matrix::from_bytes(GgmlType::Q4_K, 1, 100, &[0u8; 144]),
        Err(KernelError::RaggedRow { .. })
    ));
    let m = Matrix::from_f32(2, 3, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let pool = ThreadPool::new(2);
    let mut y = vec![0.0f32; 4];
    matmul(&pool, &m, &[1.0, 0.0, -1.0, 0.5, 0.5, 0.5], 2, &mut y);
    assert_eq!(y, vec![-2.0, -2.0, 3.0, 7.5]);
}
