//! Finds the processes a private containerd left behind (its shims and runc calls, by
//! their command lines naming its directories; container processes, by their cgroup or
//! a bundle's `init.pid`) and kills them with SIGKILL.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Programs that belong to the runtime stack; only these are matched by command line.
const RUNTIME_PROGRAMS: &[&str] = &[
    "containerd",
    "containerd-shim",
    "containerd-shim-runc-v1",
    "containerd-shim-runc-v2",
    "runc",
    "ctr",
];

/// The pid of every runtime process (see `RUNTIME_PROGRAMS`) with an argument that
/// names `dir` or a path below it. Never includes this process.
pub fn runtime_processes_naming(dir: &Path) -> Vec<i32> {
    let dir = dir.to_string_lossy().into_owned();
    all_pids()
        .into_iter()
        .filter(|&pid| {
            let argv = cmdline(pid);
            let Some(program) = argv.first() else {
                return false;
            };
            let name = Path::new(program)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default();
            (RUNTIME_PROGRAMS.contains(&name.as_str()) || RUNTIME_PROGRAMS.contains(&exe.as_str()))
                && argv.iter().any(|arg| names_path_below(arg, &dir))
        })
        .collect()
}

/// Whether `arg` contains `dir` followed by `/` or the end of a path.
fn names_path_below(arg: &str, dir: &str) -> bool {
    arg.match_indices(dir).any(|(at, _)| {
        let rest = &arg[at + dir.len()..];
        rest.is_empty() || rest.starts_with('/') || rest.starts_with('"') || rest.starts_with(',')
    })
}

/// Every pid listed in `cgroup.procs` of `dir` and of the cgroups below it.
pub fn processes_in_cgroup_tree(dir: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(cgroup) = stack.pop() {
        if let Ok(text) = std::fs::read_to_string(cgroup.join("cgroup.procs")) {
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        stack.extend(subdirectories(&cgroup));
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// The pid in `<bundle>/init.pid`, if that process is still in a cgroup named after the
/// bundle's id (so a reused pid is never taken for it).
pub fn bundle_init_process(bundle: &Path) -> Option<i32> {
    let id = bundle.file_name()?.to_string_lossy().into_owned();
    let pid: i32 = std::fs::read_to_string(bundle.join("init.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    cgroups
        .lines()
        .any(|line| line.ends_with(&format!("/{id}")))
        .then_some(pid)
}

/// Sends SIGKILL to each pid (never to this process) and waits until all are gone or
/// zombies, at most `timeout`. Returns the pids still alive.
pub fn kill_and_wait(pids: &[i32], timeout: Duration) -> Vec<i32> {
    let me = std::process::id() as i32;
    let targets: Vec<i32> = pids.iter().copied().filter(|&p| p > 1 && p != me).collect();
    for &pid in &targets {
        // SAFETY: kill(2) with a specific positive pid has no memory-safety concerns.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    let started = Instant::now();
    loop {
        let alive: Vec<i32> = targets.iter().copied().filter(|&p| is_alive(p)).collect();
        if alive.is_empty() || started.elapsed() >= timeout {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// A process's argv (empty for kernel threads and vanished processes).
pub fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            bytes
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn all_pids() -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .filter(|&pid| pid != me)
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn subdirectories(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| {
                    let e = e.ok()?;
                    e.file_type().ok()?.is_dir().then(|| e.path())
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_matching_respects_component_boundaries() {
        assert!(names_path_below("/tmp/ntb-a/containerd.sock", "/tmp/ntb-a"));
        assert!(names_path_below("/tmp/ntb-a", "/tmp/ntb-a"));
        assert!(names_path_below("--root=/tmp/ntb-a/runc", "/tmp/ntb-a"));
        assert!(!names_path_below(
            "/tmp/ntb-ab/containerd.sock",
            "/tmp/ntb-a"
        ));
    }

    #[test]
    fn this_process_is_alive_and_never_matched() {
        assert!(is_alive(std::process::id() as i32));
        let exe = std::env::current_exe().expect("exe");
        let dir = exe.parent().expect("parent");
        assert!(!runtime_processes_naming(dir).contains(&(std::process::id() as i32)));
    }

    #[test]
    fn killing_a_child_reports_it_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        let left = kill_and_wait(&[pid], Duration::from_secs(5));
        assert!(left.is_empty(), "still alive: {left:?}");
        let _ = child.wait();
    }
}
