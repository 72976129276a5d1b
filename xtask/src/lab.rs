//! Runs a workflow of `xtask-lab` (demo, bench) after setup: that binary links the testbed,
//! whose build needs tools setup installs, so it is built only once they are there.

use anyhow::{Context as _, bail};
use std::ffi::OsString;
use std::process::Command;

/// `cargo run` of `xtask-lab <workflow> <args>`, after setup unless only help is asked for.
pub fn run(workflow: &str, args: &[OsString]) -> anyhow::Result<()> {
    let help = args.iter().any(|a| a == "--help" || a == "-h");
    if !help {
        crate::setup::run()?;
    }
    // Ctrl-C reaches the whole process group: `xtask-lab` stops what it started, and this
    // process waits for it instead of returning the terminal early.
    wait_through_interrupts();
    let status = Command::new(env!("CARGO"))
        .args([
            "run",
            "--quiet",
            "--package",
            "xtask",
            "--features",
            "testbed",
            "--bin",
            "xtask-lab",
            "--",
            workflow,
        ])
        .args(args)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo xtask {workflow} failed ({status})");
    }
    Ok(())
}

/// Lets SIGINT no longer end this process. A handler, not SIG_IGN: children start with the
/// default disposition again (handlers are reset by exec, ignored signals are inherited).
fn wait_through_interrupts() {
    extern "C" fn note_interrupt(_: libc::c_int) {}
    // SAFETY: the handler does nothing, so it is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            note_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}
