//! Safe data-parallel helpers on top of the thread pool.

use crate::pool::ThreadPool;
use std::sync::Mutex;

/// One thread's share of the chunks: (chunk index, chunk).
type Share<'a, T> = Mutex<Vec<(usize, &'a mut [T])>>;

/// Calls `f(i, chunk)` for every `chunk_len`-sized chunk `i` of `data` (the last may be shorter),
/// spreading contiguous ranges of chunks over the pool's threads.
///
/// Each thread's chunks are handed over through its own mutex, locked once per call, so the split
/// needs no `unsafe` and costs one uncontended lock per thread.
pub fn par_chunks_mut<T: Send>(
    pool: &ThreadPool,
    data: &mut [T],
    chunk_len: usize,
    f: &(dyn Fn(usize, &mut [T]) + Sync),
) {
    assert!(chunk_len > 0, "chunk_len must be positive");
    let n_chunks = data.len().div_ceil(chunk_len);
    let nth = pool.n_threads().min(n_chunks).max(1);
    if nth == 1 {
        for (i, c) in data.chunks_mut(chunk_len).enumerate() {
            f(i, c);
        }
        return;
    }
    let per = n_chunks.div_ceil(nth);
    let mut groups: Vec<Share<T>> = (0..nth).map(|_| Mutex::new(Vec::new())).collect();
    for (i, c) in data.chunks_mut(chunk_len).enumerate() {
        groups[i / per]
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .push((i, c));
    }
    pool.run(&|tid, _| {
        if let Some(g) = groups.get(tid) {
            let mut work = g.lock().unwrap_or_else(|e| e.into_inner());
            for (i, c) in work.iter_mut() {
                f(*i, c);
            }
        }
    });
}

/// Like [`par_chunks_mut`], but chunk `i` goes to thread `i % n_threads`: neighbouring chunks land
/// on different threads, which balances work that grows or shrinks along the data (causal
/// attention rows).
pub fn par_chunks_mut_interleaved<T: Send>(
    pool: &ThreadPool,
    data: &mut [T],
    chunk_len: usize,
    f: &(dyn Fn(usize, &mut [T]) + Sync),
) {
    assert!(chunk_len > 0, "chunk_len must be positive");
    let n_chunks = data.len().div_ceil(chunk_len);
    let nth = pool.n_threads().min(n_chunks).max(1);
    if nth == 1 {
        for (i, c) in data.chunks_mut(chunk_len).enumerate() {
            f(i, c);
        }
        return;
    }
    let mut groups: Vec<Share<T>> = (0..nth).map(|_| Mutex::new(Vec::new())).collect();
    for (i, c) in data.chunks_mut(chunk_len).enumerate() {
        groups[i % nth]
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .push((i, c));
    }
    pool.run(&|tid, _| {
        if let Some(g) = groups.get(tid) {
            let mut work = g.lock().unwrap_or_else(|e| e.into_inner());
            for (i, c) in work.iter_mut() {
                f(*i, c);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chunk_is_visited_once_with_its_index() {
        for n_threads in 1..4 {
            let pool = ThreadPool::new(n_threads);
            for len in [0usize, 1, 5, 16, 17] {
                let mut data = vec![0usize; len];
                par_chunks_mut_interleaved(&pool, &mut data, 3, &|i, c| {
                    for (k, v) in c.iter_mut().enumerate() {
                        *v += 3 * i + k + 1;
                    }
                });
                let want: Vec<usize> = (1..=len).collect();
                assert_eq!(data, want);
            }
        }
    }
}
