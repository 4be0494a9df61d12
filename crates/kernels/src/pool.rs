//! A persistent thread pool that hands out work items as threads come free.
//!
//! `for_each(n, f)` calls `f(i)` once for every item `i` in `0..n`: the caller and the workers
//! take the next item from one shared counter until none is left. A thread the OS has taken away
//! (another process on the core, a CPU quota) therefore delays only the item it holds, never a
//! fixed share of the job: the others take the rest. `run(f)` is `for_each` over one share per
//! thread, for work that splits itself.
//!
//! Idle workers spin for a short while after each job, because the next one usually follows
//! within microseconds (a forward pass issues hundreds); then they yield the core for a while, so
//! that a process beside them gets it, and then park on a condition variable so an idle pool
//! costs no CPU. rayon's per-call overhead is measurable at this granularity; this is not.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins, then yields, before it parks.
const SPIN: Duration = Duration::from_micros(200);
const YIELD: Duration = Duration::from_millis(2);

/// Items per thread a job is best cut into (`items`, used by `matmul_batch`): small enough that a thread which loses its core to another
/// process holds up little of the work, large enough that each streams its weights for a while.
const ITEMS_PER_THREAD: usize = 8;

/// The shared counter holds the job's generation above the next item's index.
const INDEX_BITS: u32 = 24;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
/// Items one job may have (the index must fit below the generation).
pub const MAX_ITEMS: usize = 1 << INDEX_BITS;

type Item = dyn Fn(usize) + Sync;

/// What a panicking job left behind, re-raised on the calling thread.
type Payload = Box<dyn Any + Send>;

/// The job being run: valid while its items are not all done.
struct Slot {
    generation: u64,
    item: Option<&'static Item>,
    n_items: usize,
}

struct Shared {
    n_threads: usize,
    slot: Mutex<Slot>,
    /// `generation << INDEX_BITS | next item`: taking an item is one compare-and-swap that also
    /// checks the item belongs to the job the taker read from `slot`.
    next: AtomicU64,
    /// Items of the current job finished (run or panicked).
    done: AtomicUsize,
    /// The first panic of an item in the current job.
    panic: Mutex<Option<Payload>>,
    shutdown: AtomicBool,
    /// Workers parked (or about to): the caller skips the wake-up lock when there are none.
    sleepers: AtomicUsize,
    park: Mutex<()>,
    wake: Condvar,
}

/// A fixed set of worker threads that run one job at a time on all of them (see the module docs).
/// Calls from several threads are serialized; a job must not call the pool it runs on.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serializes jobs from different threads sharing the pool.
    running: Mutex<()>,
}

impl ThreadPool {
    /// A pool of `n_threads` threads, counting the caller (so `n_threads - 1` are spawned).
    pub fn new(n_threads: usize) -> ThreadPool {
        let n_threads = n_threads.max(1);
        let shared = Arc::new(Shared {
            n_threads,
            slot: Mutex::new(Slot {
                generation: 0,
                item: None,
                n_items: 0,
            }),
            next: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            panic: Mutex::new(None),
            shutdown: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            park: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..n_threads)
            .map(|i| {
                let s = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("frugal-worker-{i}"))
                    .spawn(move || worker(&s))
                    .expect("failed to spawn a worker thread")
            })
            .collect();
        ThreadPool {
            shared,
            workers,
            running: Mutex::new(()),
        }
    }

    pub fn n_threads(&self) -> usize {
        self.shared.n_threads
    }

    /// Runs `f(share, n_threads)` once for every share in `0..n_threads`, each on whichever
    /// thread takes it (the caller takes the first), and waits for all of them.
    pub fn run(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        let n = self.shared.n_threads;
        self.for_each(n, &|i| f(i, n));
    }

    /// How many items a job is best cut into: several per thread (`ITEMS_PER_THREAD`).
    pub fn items(&self) -> usize {
        match self.shared.n_threads {
            1 => 1,
            n => n * ITEMS_PER_THREAD,
        }
    }

    /// Calls `f(i)` once for every `i` in `0..n_items`, items taken in order by the threads as
    /// they come free, and returns when all are done. A panic in any item is re-raised here after
    /// every item has finished. `n_items` is at most [`MAX_ITEMS`].
    pub fn for_each(&self, n_items: usize, f: &(dyn Fn(usize) + Sync)) {
        assert!(n_items <= MAX_ITEMS, "pool: {n_items} items in one job");
        if self.shared.n_threads == 1 || n_items <= 1 {
            (0..n_items).for_each(f);
            return;
        }
        let _guard = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // SAFETY: the reference is erased to 'static only to be stored in `slot`. A thread calls
        // it only for an item it took with the compare-and-swap in `take_items`, which succeeds
        // only while this job's generation is current and an item is left, that is before `done`
        // reaches `n_items`; this function waits for that below (items that panic count as done,
        // thanks to catch_unwind) and clears the slot before returning, so no thread calls `f`
        // after its lifetime ends.
        let item: &'static Item =
            unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync + '_), &'static Item>(f) };
        let generation = {
            let mut slot = s.slot.lock().unwrap_or_else(|e| e.into_inner());
            slot.generation += 1;
            slot.item = Some(item);
            slot.n_items = n_items;
            slot.generation
        };
        s.done.store(0, Ordering::SeqCst);
        s.next.store(generation << INDEX_BITS, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _p = s.park.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        take_items(s, generation, item, n_items);
        let start = Instant::now();
        while s.done.load(Ordering::Acquire) != n_items {
            // The last items are being run by threads that may have lost their core: let them
            // have this one.
            if start.elapsed() < SPIN {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        s.slot.lock().unwrap_or_else(|e| e.into_inner()).item = None;
        let panic = s.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(p) = panic {
            std::panic::resume_unwind(p);
        }
    }
}

/// Takes and runs items of job `generation` until none is left.
fn take_items(s: &Shared, generation: u64, item: &Item, n_items: usize) {
    loop {
        let v = s.next.load(Ordering::Acquire);
        let i = (v & INDEX_MASK) as usize;
        if v >> INDEX_BITS != generation || i >= n_items {
            return;
        }
        if s.next
            .compare_exchange_weak(v, v + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            continue;
        }
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| item(i))) {
            s.panic
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(p);
        }
        s.done.fetch_add(1, Ordering::AcqRel);
    }
}

fn worker(s: &Shared) {
    let mut seen = 0u64;
    loop {
        if !wait_for_job(s, seen) {
            return;
        }
        let (generation, item, n_items) = {
            let slot = s.slot.lock().unwrap_or_else(|e| e.into_inner());
            (slot.generation, slot.item, slot.n_items)
        };
        seen = generation;
        if let Some(item) = item {
            take_items(s, generation, item, n_items);
        }
    }
}

/// Waits until a job newer than `seen` is published (true) or the pool shuts down (false):
/// spinning, then yielding, then parked.
fn wait_for_job(s: &Shared, seen: u64) -> bool {
    let start = Instant::now();
    let published = || s.next.load(Ordering::SeqCst) >> INDEX_BITS != seen;
    loop {
        if s.shutdown.load(Ordering::Acquire) {
            return false;
        }
        if published() {
            return true;
        }
        let idle = start.elapsed();
        if idle < SPIN {
            for _ in 0..64 {
                std::hint::spin_loop();
            }
        } else if idle < YIELD {
            std::thread::yield_now();
        } else {
            let guard = s.park.lock().unwrap_or_else(|e| e.into_inner());
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            if !published() && !s.shutdown.load(Ordering::SeqCst) {
                drop(s.wake.wait(guard).unwrap_or_else(|e| e.into_inner()));
            }
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        {
            let _p = self.shared.park.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.shutdown.store(true, Ordering::SeqCst);
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ThreadPool>();
    }

    #[test]
    fn every_share_runs_once() {
        for n in 1..6 {
            let pool = ThreadPool::new(n);
            assert_eq!(pool.n_threads(), n);
            for _ in 0..50 {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.run(&|i, nth| {
                    assert_eq!(nth, n);
                    hits[i].fetch_add(1, Ordering::SeqCst);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::SeqCst) == 1));
            }
        }
    }

    #[test]
    fn every_item_runs_once() {
        for n in 1..4 {
            let pool = ThreadPool::new(n);
            for items in [0usize, 1, 2, 3, 17, 1000] {
                let hits: Vec<AtomicUsize> = (0..items).map(|_| AtomicUsize::new(0)).collect();
                pool.for_each(items, &|i| {
                    hits[i].fetch_add(1, Ordering::SeqCst);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::SeqCst) == 1));
            }
        }
    }

    /// What a busy machine does to a worker: one thread is stuck in its item. A pool that gave
    /// each thread a fixed share would wait for the stuck one's share; this one lets the other
    /// threads take every other item, which is what unblocks the stuck item here.
    #[test]
    fn a_stalled_thread_holds_up_only_its_own_item() {
        let pool = ThreadPool::new(2);
        let n = 64;
        let others_done = AtomicUsize::new(0);
        let stalled = AtomicBool::new(false);
        for _ in 0..20 {
            others_done.store(0, Ordering::SeqCst);
            stalled.store(false, Ordering::SeqCst);
            pool.for_each(n, &|_| {
                if !stalled.swap(true, Ordering::SeqCst) {
                    let start = Instant::now();
                    while others_done.load(Ordering::SeqCst) < n - 1 {
                        assert!(
                            start.elapsed() < Duration::from_secs(30),
                            "the other thread did not take the remaining items"
                        );
                        std::thread::yield_now();
                    }
                } else {
                    others_done.fetch_add(1, Ordering::SeqCst);
                }
            });
            assert_eq!(others_done.load(Ordering::SeqCst), n - 1);
        }
    }

    #[test]
    fn item_panic_propagates_after_all_items_finish() {
        let pool = ThreadPool::new(4);
        let finished = AtomicUsize::new(0);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(&|i, _| {
                if i == 2 {
                    panic!("boom in share {i}");
                }
                // The others are still busy when the item panics.
                std::thread::sleep(Duration::from_millis(20));
                finished.fetch_add(1, Ordering::SeqCst);
            })
        }));
        let payload = r.expect_err("the item's panic must reach the caller");
        assert_eq!(finished.load(Ordering::SeqCst), 3);
        // The original message survives.
        assert_eq!(
            payload.downcast_ref::<String>().map(|s| s.as_str()),
            Some("boom in share 2")
        );
        // The pool still works afterwards.
        let count = AtomicUsize::new(0);
        pool.run(&|_, _| {
            count.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(count.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn drop_joins_the_workers() {
        let pool = ThreadPool::new(4);
        pool.run(&|_, _| {});
        // Each worker thread owns a clone of `shared` until it exits.
        let shared = Arc::downgrade(&pool.shared);
        drop(pool);
        assert!(
            shared.upgrade().is_none(),
            "a worker outlived the pool's drop"
        );
    }

    #[test]
    fn drop_wakes_parked_workers() {
        let pool = ThreadPool::new(3);
        // Long enough for the workers to stop spinning and yielding, and park.
        std::thread::sleep(Duration::from_millis(100));
        let shared = Arc::downgrade(&pool.shared);
        drop(pool);
        assert!(shared.upgrade().is_none());
    }

    #[test]
    fn idle_pool_parks_and_wakes() {
        let pool = ThreadPool::new(2);
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(20));
            let count = AtomicUsize::new(0);
            pool.for_each(64, &|_| {
                count.fetch_add(1, Ordering::SeqCst);
            });
            assert_eq!(count.load(Ordering::SeqCst), 64);
        }
    }

    #[test]
    fn concurrent_callers_are_serialized() {
        let pool = ThreadPool::new(3);
        let total = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    for _ in 0..100 {
                        let hits: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
                        pool.run(&|i, _| {
                            hits[i].fetch_add(1, Ordering::SeqCst);
                        });
                        assert!(hits.iter().all(|h| h.load(Ordering::SeqCst) == 1));
                        total.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::SeqCst), 300);
    }
}
