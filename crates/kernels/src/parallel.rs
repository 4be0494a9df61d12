//! Safe data-parallel helpers on top of the thread pool.

use crate::pool::ThreadPool;
use std::sync::Mutex;

/// A group of chunks handed to one thread at a time: (chunk index, chunk).
type Group<'a, T> = Mutex<Vec<(usize, &'a mut [T])>>;

/// Groups per thread: enough that threads which lose their core to another process leave only a
/// small part of the work for the others to wait on.
const GROUPS_PER_THREAD: usize = 4;

/// Calls `f(i, chunk)` for every `chunk_len`-sized chunk `i` of `data` (the last may be shorter),
/// spreading contiguous ranges of chunks over the pool's threads.
pub fn par_chunks_mut<T: Send>(
    pool: &ThreadPool,
    data: &mut [T],
    chunk_len: usize,
    f: &(dyn Fn(usize, &mut [T]) + Sync),
) {
    let n_chunks = data.len().div_ceil(chunk_len.max(1));
    let n_groups = (pool.n_threads() * GROUPS_PER_THREAD).min(n_chunks);
    let per = n_chunks.div_ceil(n_groups.max(1));
    par_groups(pool, data, chunk_len, n_groups, &|i| i / per, f);
}

/// Like [`par_chunks_mut`], but chunk `i` goes to group `i % n_groups`: neighbouring chunks land
/// in different groups, which balances work that grows or shrinks along the data (causal
/// attention rows).
pub fn par_chunks_mut_interleaved<T: Send>(
    pool: &ThreadPool,
    data: &mut [T],
    chunk_len: usize,
    f: &(dyn Fn(usize, &mut [T]) + Sync),
) {
    let n_chunks = data.len().div_ceil(chunk_len.max(1));
    let n_groups = (pool.n_threads() * GROUPS_PER_THREAD).min(n_chunks);
    par_groups(pool, data, chunk_len, n_groups, &|i| i % n_groups, f);
}

/// Puts chunk `i` in group `group_of(i)` and runs the groups as the pool's items. Each group is
/// handed over through its own mutex, locked once, so the split needs no `unsafe`.
fn par_groups<T: Send>(
    pool: &ThreadPool,
    data: &mut [T],
    chunk_len: usize,
    n_groups: usize,
    group_of: &dyn Fn(usize) -> usize,
    f: &(dyn Fn(usize, &mut [T]) + Sync),
) {
    assert!(chunk_len > 0, "chunk_len must be positive");
    if pool.n_threads() == 1 || n_groups <= 1 {
        for (i, c) in data.chunks_mut(chunk_len).enumerate() {
            f(i, c);
        }
        return;
    }
    let mut groups: Vec<Group<T>> = (0..n_groups).map(|_| Mutex::new(Vec::new())).collect();
    for (i, c) in data.chunks_mut(chunk_len).enumerate() {
        groups[group_of(i)]
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .push((i, c));
    }
    pool.for_each(n_groups, &|g| {
        let mut work = groups[g].lock().unwrap_or_else(|e| e.into_inner());
        for (i, c) in work.iter_mut() {
            f(*i, c);
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
            for len in [0usize, 1, 5, 16, 17, 100] {
                for interleaved in [false, true] {
                    let mut data = vec![0usize; len];
                    let split = if interleaved {
                        par_chunks_mut_interleaved
                    } else {
                        par_chunks_mut
                    };
                    split(&pool, &mut data, 3, &|i, c| {
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
}
