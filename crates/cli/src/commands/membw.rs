//! `frugal membw`: the memory read bandwidth of this machine at a thread count, the ceiling that
//! decode speed is measured against (decode reads every weight once per token).

use anyhow::Result;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Reader threads.
    #[arg(short = 't', long, default_value_t = 1)]
    pub threads: usize,
    /// Buffer size in MiB (far larger than the caches).
    #[arg(long, default_value_t = 1024)]
    pub mib: usize,
    /// Passes over the buffer; the fastest is reported.
    #[arg(short = 'r', long, default_value_t = 5)]
    pub reps: usize,
    /// Print a JSON object instead of a line of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    anyhow::ensure!(
        a.threads >= 1 && a.mib >= 1 && a.reps >= 1,
        "arguments must be at least 1"
    );
    let words = a.mib << 17; // u64 words
                             // Distinct values so no page is shared (a zeroed buffer could map one page many times).
    let buf: Vec<u64> = (0..words as u64).collect();
    let chunk = words.div_ceil(a.threads);
    let mut best = f64::MAX;
    let mut sink = 0u64;
    for _ in 0..a.reps {
        let t0 = Instant::now();
        sink ^= std::thread::scope(|s| {
            let handles: Vec<_> = buf.chunks(chunk).map(|c| s.spawn(move || sum(c))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0, u64::wrapping_add)
        });
        best = best.min(t0.elapsed().as_secs_f64());
    }
    let gbs = (words * 8) as f64 / best / 1e9;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"threads": a.threads, "mib": a.mib, "read_gb_per_s": gbs, "checksum": sink})
        );
    } else {
        println!(
            "read bandwidth: {gbs:.2} GB/s ({} threads, {} MiB, best of {})",
            a.threads, a.mib, a.reps
        );
    }
    Ok(())
}

/// Sums with four independent accumulators so the adds keep up with the loads.
fn sum(c: &[u64]) -> u64 {
    let mut acc = [0u64; 4];
    let mut it = c.chunks_exact(4);
    for q in &mut it {
        for (a, v) in acc.iter_mut().zip(q) {
            *a = a.wrapping_add(*v);
        }
    }
    let tail: u64 = it.remainder().iter().fold(0, |x, v| x.wrapping_add(*v));
    acc.iter().fold(tail, |x, v| x.wrapping_add(*v))
}
