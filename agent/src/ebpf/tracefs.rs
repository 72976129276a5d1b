//! Makes sure tracefs is mounted, since attaching a tracepoint needs it.

use std::{ffi::CString, path::Path};

use super::EbpfError;

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// Returns once tracefs is reachable, mounting it at /sys/kernel/tracing when it is not.
pub fn ensure_tracefs() -> Result<(), EbpfError> {
    if is_tracefs(Path::new(TRACEFS)) || is_tracefs(Path::new(DEBUGFS_TRACING)) {
        return Ok(());
    }
    tracing::info!(path = TRACEFS, "tracefs is not mounted; mounting it");
    let to_cstring = |s: &str| CString::new(s).expect("constant without NUL");
    let (source, target, fstype) = (
        to_cstring("tracefs"),
        to_cstring(TRACEFS),
        to_cstring("tracefs"),
    );
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(EbpfError::MountTracefs {
            path: TRACEFS.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn is_tracefs(path: &Path) -> bool {
    path.join("events").is_dir()
}
