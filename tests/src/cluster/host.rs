//! What the cluster changes on the host, each undone on drop: the node's address (the kubelet
//! refuses a loopback node IP, so one of the testbed's own on `lo`), the pod bridge the
//! CNI plugin makes, and the kernel settings the kubelet sets when it starts
//! (`kernel.panic=10`, `kernel.panic_on_oops=1`: an oops would then reboot the machine).

use std::path::PathBuf;
use std::process::Command;

/// The node's address, added to the loopback device (this kernel has no dummy interfaces;
/// the address itself is not a loopback one, which the kubelet refuses); removed on drop.
#[derive(Debug)]
pub struct NodeAddress {
    cidr: String,
}

impl NodeAddress {
    /// Adds `cidr` (e.g. `10.254.0.1/32`) to `lo`. Fails when it is there already (another
    /// testbed's).
    pub fn add(cidr: &str) -> std::io::Result<Self> {
        let shown = Command::new("ip")
            .args(["-o", "addr", "show", "dev", "lo"])
            .output()?;
        if String::from_utf8_lossy(&shown.stdout).contains(&format!(" {cidr} ")) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{cidr} is on lo already: another testbed runs, or remove it"),
            ));
        }
        ip(&["addr", "add", cidr, "dev", "lo"])?;
        Ok(Self {
            cidr: cidr.to_owned(),
        })
    }
}

impl Drop for NodeAddress {
    fn drop(&mut self) {
        if let Err(e) = ip(&["addr", "del", &self.cidr, "dev", "lo"]) {
            tracing::warn!(address = %self.cidr, error = %e, "remove the node address");
        }
    }
}

/// Deletes interface `name` when it exists (the CNI bridge, after the pods are gone).
pub fn delete_link(name: &str) {
    if PathBuf::from("/sys/class/net").join(name).exists()
        && let Err(e) = ip(&["link", "delete", name])
    {
        tracing::warn!(interface = name, error = %e, "delete an interface");
    }
}

fn ip(args: &[&str]) -> std::io::Result<()> {
    let output = Command::new("ip").args(args).output()?;
    if output.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Kernel settings saved when made and written back on [`SavedSysctls::restore`] and drop.
#[derive(Debug)]
pub struct SavedSysctls {
    saved: Vec<(PathBuf, String)>,
}

/// The settings the kubelet changes at start.
pub const KUBELET_SYSCTLS: [&str; 2] = ["kernel/panic", "kernel/panic_on_oops"];

impl SavedSysctls {
    /// Reads `names` (paths below /proc/sys).
    pub fn save(names: &[&str]) -> std::io::Result<Self> {
        let mut saved = Vec::new();
        for name in names {
            let path = PathBuf::from("/proc/sys").join(name);
            saved.push((path.clone(), std::fs::read_to_string(&path)?));
        }
        Ok(Self { saved })
    }

    /// Writes the saved values back (the kubelet may have changed them).
    pub fn restore(&self) {
        for (path, value) in &self.saved {
            if std::fs::read_to_string(path).is_ok_and(|now| now != *value)
                && let Err(e) = std::fs::write(path, value)
            {
                tracing::warn!(path = %path.display(), error = %e, "restore a kernel setting");
            }
        }
    }
}

impl Drop for SavedSysctls {
    fn drop(&mut self) {
        self.restore();
    }
}
