//! The runtimes `cargo xtask setup` built from the Go module proxy, found in their cache
//! (`NODETRACE_RUNTIMES_DIR`, laid out `<name>-<version>/<binary>`).

use std::path::{Path, PathBuf};

/// The cache of built runtimes.
#[derive(Debug, Clone)]
pub struct BuiltRuntimes {
    dir: PathBuf,
}

/// One containerd release and its shim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerdBuild {
    /// e.g. `v2.4.2`.
    pub version: String,
    /// The `containerd` executable.
    pub containerd: PathBuf,
    /// Its `containerd-shim-runc-v2`.
    pub shim: PathBuf,
}

impl BuiltRuntimes {
    /// The cache named by `NODETRACE_RUNTIMES_DIR`, when set (`cargo xtask test` sets it).
    pub fn from_env() -> Option<Self> {
        std::env::var_os("NODETRACE_RUNTIMES_DIR").map(|dir| Self::at(Path::new(&dir)))
    }

    /// The cache at `dir`.
    pub fn at(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// The newest built version of `name` whose version starts with `prefix` (`v2.4`), and
    /// its directory.
    pub fn newest(&self, name: &str, prefix: &str) -> Option<(String, PathBuf)> {
        let mut found: Vec<(Vec<u64>, String, PathBuf)> = std::fs::read_dir(&self.dir)
            .ok()?
            .flatten()
            .filter_map(|entry| {
                let file_name = entry.file_name().to_string_lossy().into_owned();
                let version = file_name.strip_prefix(&format!("{name}-"))?.to_owned();
                if !version.starts_with(prefix) || file_name.ends_with(".partial") {
                    return None;
                }
                Some((version_key(&version), version, entry.path()))
            })
            .collect();
        found.sort();
        found.pop().map(|(_, version, dir)| (version, dir))
    }

    /// The newest containerd `prefix`.x with its shim.
    pub fn containerd(&self, prefix: &str) -> Option<ContainerdBuild> {
        let (version, dir) = self.newest("containerd", prefix)?;
        let build = ContainerdBuild {
            version,
            containerd: dir.join("containerd"),
            shim: dir.join("containerd-shim-runc-v2"),
        };
        (build.containerd.is_file() && build.shim.is_file()).then_some(build)
    }

    /// The newest runc `prefix`.x.
    pub fn runc(&self, prefix: &str) -> Option<(String, PathBuf)> {
        let (version, dir) = self.newest("runc", prefix)?;
        let runc = dir.join("runc");
        runc.is_file().then_some((version, runc))
    }
}

/// `v2.10.1` → [2, 10, 1], so that versions sort as numbers.
fn version_key(version: &str) -> Vec<u64> {
    version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|part| part.parse().unwrap_or(0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_build_of_a_line_is_found_by_numbers() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, files) in [
            (
                "containerd-v2.2.9",
                &["containerd", "containerd-shim-runc-v2"][..],
            ),
            (
                "containerd-v2.2.10",
                &["containerd", "containerd-shim-runc-v2"],
            ),
            ("containerd-v2.4.2", &["containerd"]),
            (
                "containerd-v2.3.1.partial",
                &["containerd", "containerd-shim-runc-v2"],
            ),
            ("runc-v1.5.3", &["runc"]),
        ] {
            std::fs::create_dir(dir.path().join(name)).expect("dir");
            for file in files {
                std::fs::write(dir.path().join(name).join(file), b"").expect("file");
            }
        }
        let built = BuiltRuntimes::at(dir.path());
        let two_two = built.containerd("v2.2").expect("2.2");
        assert_eq!(two_two.version, "v2.2.10");
        assert_eq!(
            two_two.shim,
            dir.path()
                .join("containerd-v2.2.10/containerd-shim-runc-v2")
        );
        assert_eq!(built.containerd("v2.4"), None, "no shim: not a whole build");
        assert_eq!(built.containerd("v2.3"), None, "a partial build is none");
        assert_eq!(
            built.runc("v1.5").map(|(v, _)| v).as_deref(),
            Some("v1.5.3")
        );
        assert_eq!(built.runc("v1.4"), None);
    }
}
