//! A persistent thread pool: `run(f)` calls `f(i, n)` on each of the n threads (the caller is
//! thread 0) and returns when all are done.
//!
//! Workers spin for a short while after each job, because the next one usually follows within
//! microseconds (a forward pass issues hundreds), and then park on a condition variable so an idle
//! pool costs no CPU. rayon's per-call overhead is measurable at this granularity; this is not.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Spin iterations before a worker parks.
const SPIN: usize = 1 << 16;

type Job = dyn Fn(usize, usize) + Sync;

/// What a panicking job left behind, re-raised on the calling thread.
type Payload = Box<dyn Any + Send>;

struct Shared {
    n_threads: usize,
    /// The current job, valid while `remaining > 0` for the generation it was published in.
    job: Mutex<Option<&'static Job>>,
    generation: AtomicUsize,
    remaining: AtomicUsize,
    /// The first panic of a worker in the current job.
    panic: Mutex<Option<Payload>>,
    shutdown: AtomicBool,
    park: Mutex<()>,
    wake: Condvar,
}

/// A fixed set of worker threads that run one job at a time on all of them (see the module docs).
/// `run` calls from several threads are serialized; a job must not call `run` on its own pool.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serializes `run` calls from different threads sharing the pool.
    running: Mutex<()>,
}

impl ThreadPool {
    /// A pool of `n_threads` threads, counting the caller (so `n_threads - 1` are spawned).
    pub fn new(n_threads: usize) -> ThreadPool {
        let n_threads = n_threads.max(1);
        let shared = Arc::new(Shared {
            n_threads,
            job: Mutex::new(None),
            generation: AtomicUsize::new(0),
            remaining: AtomicUsize::new(0),
            panic: Mutex::new(None),
            shutdown: AtomicBool::new(false),
            park: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..n_threads)
            .map(|i| {
                let s = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("frugal-worker-{i}"))
                    .spawn(move || worker(&s, i))
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

    /// Runs `f(thread_index, n_threads)` once on every thread and waits for all of them. A panic
    /// in any of them is re-raised here after all threads have finished.
    pub fn run(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        let n = self.shared.n_threads;
        if n == 1 {
            f(0, 1);
            return;
        }
        let _guard = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // SAFETY: the job reference is erased to 'static only to be stored in `Shared`. This
        // function does not return before every worker has finished with it (`remaining` reaches
        // 0 below, also when the caller's own part panics, thanks to catch_unwind), and it is
        // cleared before returning, so no worker can call it after `f`'s lifetime ends.
        let job: &'static Job =
            unsafe { std::mem::transmute::<&(dyn Fn(usize, usize) + Sync + '_), &'static Job>(f) };
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(job);
        s.remaining.store(n - 1, Ordering::SeqCst);
        {
            let _p = s.park.lock().unwrap_or_else(|e| e.into_inner());
            s.generation.fetch_add(1, Ordering::SeqCst);
            s.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| f(0, n)));
        let mut spins = 0usize;
        while s.remaining.load(Ordering::Acquire) != 0 {
            spins += 1;
            if spins < SPIN {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let theirs = s.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        // Every thread is done with the job: re-raise the caller's own panic first, else a
        // worker's, with its original payload (message).
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if let Some(p) = theirs {
            std::panic::resume_unwind(p);
        }
    }
}

fn worker(s: &Shared, index: usize) {
    let mut seen = 0usize;
    loop {
        let mut spins = 0usize;
        loop {
            if s.shutdown.load(Ordering::Acquire) {
                return;
            }
            let g = s.generation.load(Ordering::Acquire);
            if g != seen {
                seen = g;
                break;
            }
            spins += 1;
            if spins < SPIN {
                std::hint::spin_loop();
            } else {
                let guard = s.park.lock().unwrap_or_else(|e| e.into_inner());
                if s.generation.load(Ordering::Acquire) == seen
                    && !s.shutdown.load(Ordering::Acquire)
                {
                    drop(s.wake.wait(guard).unwrap_or_else(|e| e.into_inner()));
                }
                spins = 0;
            }
        }
        let job = *s.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(job) = job {
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| job(index, s.n_threads))) {
                s.panic
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(p);
            }
        }
        s.remaining.fetch_sub(1, Ordering::AcqRel);
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
    use std::time::Duration;

    #[test]
    fn pool_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ThreadPool>();
    }

    #[test]
    fn every_index_runs_once() {
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
    fn the_caller_is_thread_zero() {
        let pool = ThreadPool::new(3);
        let caller = std::thread::current().id();
        let zero = Mutex::new(None);
        pool.run(&|i, _| {
            if i == 0 {
                *zero.lock().unwrap() = Some(std::thread::current().id());
            }
        });
        assert_eq!(*zero.lock().unwrap(), Some(caller));
    }

    #[test]
    fn worker_panic_propagates_after_all_threads_finish() {
        let pool = ThreadPool::new(4);
        let finished = AtomicUsize::new(0);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(&|i, _| {
                if i == 2 {
                    panic!("boom in worker {i}");
                }
                // The others are still busy when the worker panics.
                std::thread::sleep(Duration::from_millis(20));
                finished.fetch_add(1, Ordering::SeqCst);
            })
        }));
        let payload = r.expect_err("the worker's panic must reach the caller");
        assert_eq!(finished.load(Ordering::SeqCst), 3);
        // The original message survives.
        assert_eq!(
            payload.downcast_ref::<String>().map(|s| s.as_str()),
            Some("boom in worker 2")
        );
        // The pool still works afterwards.
        let count = AtomicUsize::new(0);
        pool.run(&|_, _| {
            count.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(count.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn caller_panic_propagates_after_workers_finish() {
        let pool = ThreadPool::new(3);
        let finished = AtomicUsize::new(0);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(&|i, _| {
                if i == 0 {
                    panic!("boom in the caller");
                }
                std::thread::sleep(Duration::from_millis(20));
                finished.fetch_add(1, Ordering::SeqCst);
            })
        }));
        assert!(r.is_err());
        assert_eq!(finished.load(Ordering::SeqCst), 2);
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
        // Long enough for the workers to stop spinning and park.
        std::thread::sleep(Duration::from_millis(100));
        let shared = Arc::downgrade(&pool.shared);
        drop(pool);
        assert!(shared.upgrade().is_none());
    }

    #[test]
    fn idle_pool_parks_and_wakes() {
        let pool = ThreadPool::new(2);
        std::thread::sleep(Duration::from_millis(100));
        let count = AtomicUsize::new(0);
        pool.run(&|_, _| {
            count.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(count.load(Ordering::SeqCst), 2);
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
