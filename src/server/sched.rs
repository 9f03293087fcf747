//! A short scheduler slice for the threads a reply waits on (Linux 6.12+, EEVDF).
//!
//! A thread woken from a sleep (an fdatasync completing, a condition variable, epoll) runs at
//! once only if a CPU is free or it may preempt the task running there. EEVDF lets a running
//! task finish its slice (3 ms by default) before a woken one of equal weight takes over, so
//! on a machine whose cores are busy (builds, other servers) each such wake-up waits up to a
//! scheduler tick: an fdatasync that takes ~110 µs quiet takes 4 ms at the p50 under load
//! (bench/README.md, *`-f 0` and the group commit*). Asking for a short slice (the
//! `sched_runtime` of `SCHED_OTHER`, no privilege needed) gives the thread an earlier virtual
//! deadline, so it preempts at its wake-up; it is also preempted sooner when it runs long,
//! which these threads do not.
#![allow(unsafe_code)]

/// The slice asked for: the least the kernel accepts (100 µs).
pub const SHORT_SLICE_NS: u64 = 100_000;

/// `struct sched_attr` (include/uapi/linux/sched/types.h, the first version: 48 bytes).
#[cfg(target_os = "linux")]
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// `SCHED_FLAG_RESET_ON_FORK` of `sched_attr.sched_flags`.
#[cfg(target_os = "linux")]
const RESET_ON_FORK: u64 = 1;

/// Asks for a slice of `ns` for the calling thread, if it runs under the default policy
/// (`SCHED_OTHER`, which it keeps, with its nice value); a thread an operator gave another
/// policy (`chrt`: real-time, batch, idle) is left as it is (`Ok(false)`). An error (an older
/// kernel: `EINVAL`) also leaves the thread as it was.
#[cfg(target_os = "linux")]
pub fn set_current_slice(ns: u64) -> std::io::Result<bool> {
    // SAFETY: sched_getscheduler(0) only reads the calling thread's policy; no memory passed.
    let policy = unsafe { libc::sched_getscheduler(0) };
    if policy < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if policy & !libc::SCHED_RESET_ON_FORK != libc::SCHED_OTHER {
        return Ok(false);
    }
    let nice = rustix::process::getpriority_process(None)?;
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: if policy & libc::SCHED_RESET_ON_FORK != 0 {
            RESET_ON_FORK
        } else {
            0
        },
        nice,
        priority: 0,
        runtime: ns,
        deadline: 0,
        period: 0,
    };
    // SAFETY: sched_setattr(pid 0 = the calling thread, attr, flags 0) reads `size` bytes of
    // `attr`, a live, initialised `#[repr(C)]` struct of exactly that size, and keeps no
    // pointer to it after the call returns.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if r == 0 {
        Ok(true)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
pub fn set_current_slice(_ns: u64) -> std::io::Result<bool> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// [`set_current_slice`] with [`SHORT_SLICE_NS`], logged (debug) if refused.
pub fn short_slice() {
    if let Err(e) = set_current_slice(SHORT_SLICE_NS) {
        tracing::debug!("short scheduler slice not set: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn the_attr_is_the_kernels_first_version() {
        assert_eq!(std::mem::size_of::<SchedAttr>(), 48);
    }

    /// The slice the scheduler reports for the calling thread (kernels with scheduler debug
    /// figures in /proc).
    fn reported_slice() -> Option<u64> {
        let text = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
        let line = text.lines().find(|l| l.starts_with("se.slice"))?;
        line.split(':').nth(1)?.trim().parse().ok()
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn the_slice_is_set_and_the_nice_value_kept() {
        std::thread::spawn(|| {
            // The default policy, also when the tests run under `chrt` (leaving a real-time
            // policy needs no privilege), and a nice value of 5 (raising it needs none).
            let other = libc::sched_param { sched_priority: 0 };
            // SAFETY: test only: sets the calling thread's policy, reading `other` during the
            // call.
            assert_eq!(
                unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &other) },
                0
            );
            rustix::process::setpriority_process(None, 5).unwrap();
            match set_current_slice(SHORT_SLICE_NS) {
                Ok(set) => {
                    assert!(set, "a SCHED_OTHER thread gets the slice");
                    if let Some(slice) = reported_slice() {
                        assert_eq!(slice, SHORT_SLICE_NS);
                    }
                }
                // Kernels before 6.12 take no slice for SCHED_OTHER: nothing changed.
                Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}"),
            }
            assert_eq!(rustix::process::getpriority_process(None).unwrap(), 5);
        })
        .join()
        .unwrap();
    }

    /// Run under `chrt -f 1`, the sync thread demoted itself to `SCHED_OTHER` and starved
    /// behind the real-time workers (765 cycles/s against 13k): another policy is kept.
    #[test]
    #[cfg(target_os = "linux")]
    fn a_thread_under_another_policy_keeps_it() {
        std::thread::spawn(|| {
            let batch = libc::sched_param { sched_priority: 0 };
            // SAFETY: test only: sets the calling thread's policy, reading `batch` during the
            // call (SCHED_BATCH needs no privilege).
            assert_eq!(
                unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &batch) },
                0
            );
            assert!(!set_current_slice(SHORT_SLICE_NS).unwrap());
            // SAFETY: reads the calling thread's policy.
            assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_BATCH);
        })
        .join()
        .unwrap();
    }
}
