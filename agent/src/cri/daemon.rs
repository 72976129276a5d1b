//! Puts the runtime daemon (the process serving the CRI socket) in the kernel's tracked map,
//! so that the exec program looks at its forks and follows the CNI plugins among them.
//!
//! Called on every look the watcher takes at the runtime: following a process already followed
//! is a no-op, and the kernel side forgets the pid when that process exits, so a restarted
//! runtime is followed again at the next look.

use std::sync::{
    Mutex,
    atomic::{AtomicU32, Ordering},
};

use crate::ebpf::KernelProbes;

use super::{ProcFs, RuntimeProcess};

/// The last pid a failure to follow was logged for, so that it is logged once, not at every
/// look.
static WARNED: AtomicU32 = AtomicU32::new(0);

/// Follows process `pid`, which started at `start_time` (clock ticks after boot), as the CRI
/// runtime daemon.
pub fn follow(probes: &Mutex<KernelProbes>, proc: &ProcFs, pid: u32, start_time: u64) {
    let Ok(mut probes) = probes.lock() else {
        return;
    };
    match probes.follow_cri_daemon(pid) {
        Ok(false) => {}
        Ok(true) => {
            // The runtime was found a moment ago. If it has exited since, the kernel saw its
            // exit before the pid was in the map and would keep the pid for whatever process
            // gets it next: only a process of the same start time is the runtime.
            let same_run =
                RuntimeProcess::read(proc.root(), pid).is_ok_and(|p| p.start_time == start_time);
            if !same_run {
                if let Err(err) = probes.unfollow_cri_daemon(pid) {
                    tracing::warn!(
                        pid,
                        error = %crate::correlate::error_chain(&err),
                        "cannot stop following a pid that is no longer the runtime"
                    );
                }
                return;
            }
            tracing::info!(
                pid,
                "following the CRI runtime's forks for the CNI plugins it runs"
            );
        }
        Err(err) => {
            if WARNED.swap(pid, Ordering::Relaxed) != pid {
                tracing::warn!(
                    pid,
                    error = %crate::correlate::error_chain(&err),
                    "cannot follow the CRI runtime's forks: CNI plugin runs are not traced"
                );
            }
        }
    }
}
