//! The exec-path workload: fork, execve a program, waitpid, timed one by one.

use anyhow::{Context as _, bail};
use std::ffi::CString;

use crate::wire::ExecLoop;

/// Runs `program` with `argv` (its path when empty) `warmup + count` times; returns the times
/// of the last `count`.
pub fn run(
    program: &str,
    argv: &[String],
    warmup: usize,
    count: usize,
) -> anyhow::Result<ExecLoop> {
    let path = CString::new(program).context("program path has a NUL")?;
    let args: Vec<CString> = if argv.is_empty() {
        vec![path.clone()]
    } else {
        argv.iter()
            .map(|a| CString::new(a.as_str()))
            .collect::<Result<_, _>>()
            .context("an argument has a NUL")?
    };
    let mut arg_ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    arg_ptrs.push(std::ptr::null());
    let env_ptrs: [*const libc::c_char; 1] = [std::ptr::null()];

    let mut samples_ns = Vec::with_capacity(count);
    for i in 0..warmup + count {
        let started = now_ns();
        // SAFETY: this process is single-threaded; the child only calls execve and _exit, which
        // are async-signal-safe, on pointers prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: NUL-terminated strings and NULL-terminated pointer arrays built above.
            unsafe {
                libc::execve(path.as_ptr(), arg_ptrs.as_ptr(), env_ptrs.as_ptr());
                libc::_exit(127);
            }
        }
        if pid < 0 {
            bail!("fork failed: {}", std::io::Error::last_os_error());
        }
        let mut status = 0;
        // SAFETY: waiting for our own child with a valid status pointer.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        let elapsed = now_ns() - started;
        if waited != pid {
            bail!("waitpid failed: {}", std::io::Error::last_os_error());
        }
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) == 127 {
            bail!("{program} did not run (wait status {status:#x})");
        }
        if i >= warmup {
            samples_ns.push(elapsed);
        }
    }
    Ok(ExecLoop { samples_ns })
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
