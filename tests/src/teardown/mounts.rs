//! Finds the mounts below a directory in `/proc/self/mountinfo` and unmounts them,
//! deepest first, falling back to a lazy unmount.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The path inside the filesystem that is mounted (`root` field).
    pub root: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The filesystem type, e.g. `overlay`, `cgroup`, `cgroup2`.
    pub fs_type: String,
    /// Per-superblock options, e.g. the controllers of a cgroup v1 mount.
    pub super_options: String,
}

/// All mounts of this process's mount namespace.
pub fn read_mountinfo() -> std::io::Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text.lines().filter_map(parse_mountinfo_line).collect())
}

/// Parses `36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue`.
pub fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let (before, after) = line.split_once(" - ")?;
    let fields: Vec<&str> = before.split(' ').collect();
    let mut tail = after.split(' ');
    let fs_type = tail.next()?;
    let _source = tail.next()?;
    let super_options = tail.next().unwrap_or("");
    Some(MountEntry {
        root: unescape(fields.get(3)?),
        mount_point: PathBuf::from(unescape(fields.get(4)?)),
        fs_type: fs_type.to_string(),
        super_options: super_options.to_string(),
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(value) = u8::try_from(value) {
                    out.push(value);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points strictly below `dir`, deepest (and most recently mounted) first.
pub fn mounts_below(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut points: Vec<(usize, usize, PathBuf)> = read_mountinfo()?
        .into_iter()
        .enumerate()
        .filter(|(_, m)| m.mount_point.starts_with(dir) && m.mount_point != dir)
        .map(|(order, m)| (m.mount_point.components().count(), order, m.mount_point))
        .collect();
    points.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
    Ok(points.into_iter().map(|(_, _, p)| p).collect())
}

/// Unmounts everything below `dir`. Returns what was unmounted, or the problems with
/// what could not be.
pub fn unmount_all_below(dir: &Path) -> Result<Vec<PathBuf>, (Vec<PathBuf>, Vec<String>)> {
    let mut unmounted = Vec::new();
    let mut problems = Vec::new();
    for _pass in 0..8 {
        let points = match mounts_below(dir) {
            Ok(points) => points,
            Err(e) => {
                problems.push(format!("read /proc/self/mountinfo: {e}"));
                return Err((unmounted, problems));
            }
        };
        if points.is_empty() {
            return Ok(unmounted);
        }
        problems.clear();
        for point in points {
            match unmount(&point) {
                Ok(()) => unmounted.push(point),
                Err(problem) => problems.push(problem),
            }
        }
    }
    match mounts_below(dir) {
        Ok(left) if left.is_empty() => Ok(unmounted),
        Ok(left) => {
            problems.push(format!("still mounted: {left:?}"));
            Err((unmounted, problems))
        }
        Err(e) => {
            problems.push(format!("read /proc/self/mountinfo: {e}"));
            Err((unmounted, problems))
        }
    }
}

/// `umount2(point, 0)`, then `umount2(point, MNT_DETACH)` if that fails.
fn unmount(point: &Path) -> Result<(), String> {
    let c_path = CString::new(point.as_os_str().as_bytes())
        .map_err(|_| format!("mount point {} contains NUL", point.display()))?;
    // SAFETY: c_path is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::umount2(c_path.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let first = std::io::Error::last_os_error();
    // SAFETY: as above.
    if unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) } == 0 {
        tracing::debug!(mount = %point.display(), error = %first, "lazily unmounted");
        return Ok(());
    }
    let lazy = std::io::Error::last_os_error();
    Err(format!(
        "umount {}: {first}; lazy umount: {lazy}",
        point.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines() {
        let line = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue";
        let entry = parse_mountinfo_line(line).expect("parse");
        assert_eq!(entry.root, "/mnt1");
        assert_eq!(entry.mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(entry.fs_type, "ext3");
        assert_eq!(entry.super_options, "rw,errors=continue");
        let cgroup = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu";
        let entry = parse_mountinfo_line(cgroup).expect("parse");
        assert_eq!(entry.fs_type, "cgroup");
        assert_eq!(entry.super_options, "rw,cpu");
    }

    #[test]
    fn unescape_leaves_plain_backslashes() {
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("a\\9"), "a\\9");
        assert_eq!(unescape("end\\"), "end\\");
    }

    #[test]
    fn nothing_is_mounted_below_a_fresh_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(mounts_below(dir.path()).expect("mountinfo").is_empty());
    }
}
