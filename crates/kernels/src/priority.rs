//! Thread priority for background work: a model loading beside models that serve.

/// The lowest CPU priority (nice 19) for the calling thread and the threads it starts from now
/// on (they inherit it): under contention it gets only what normal threads leave. Linux keeps
/// the nice value per thread, so the process's other threads keep theirs. Elsewhere a no-op.
pub fn lower_this_thread() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority reads and writes no memory of ours; with PRIO_PROCESS and 0 it
        // changes the nice value of the calling thread only (Linux's per-thread nice).
        let r = unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, 19) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// The nice value of the calling thread, from /proc (field 19 of its stat line).
    fn nice() -> i64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[test]
    fn only_the_thread_and_its_children_are_lowered() {
        let before = nice();
        let (own, child) = std::thread::spawn(|| {
            super::lower_this_thread().unwrap();
            (nice(), std::thread::spawn(nice).join().unwrap())
        })
        .join()
        .unwrap();
        assert_eq!((own, child), (19, 19));
        assert_eq!(nice(), before);
    }
}
