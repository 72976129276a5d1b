//! What a Go binary says about how it was built: the Go version and the module of its main
//! package, from the `.go.buildinfo` section (Go 1.18 and later, the only layout this reads).
//!
//! The section starts with a 32-byte header: the magic `\xff Go buildinf:`, the pointer size,
//! and flags; with flag bit 1 set the version and the module information follow inline, each
//! as a varint length and the bytes. The module information is the text `go version -m`
//! prints (`path`, `mod`, `dep`, `build` lines, tab-separated) between two 16-byte markers.

use object::{Object as _, ObjectSection as _};

const MAGIC: &[u8; 14] = b"\xff Go buildinf:";
const HEADER_LEN: usize = 32;
const FLAG_INLINE_STRINGS: u8 = 0x2;
/// The markers around the module information.
const MODINFO_MARKER_LEN: usize = 16;
/// Longest Go version string and module information read (the module information of
/// containerd lists ~150 modules in ~20 KiB).
const MAX_STRING_LEN: u64 = 256 * 1024;

/// How a Go binary was built, as far as it tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildInfo {
    /// The Go release that built it, e.g. `go1.26.8`.
    pub go_version: String,
    /// The main package, e.g. `github.com/containerd/containerd/v2/cmd/containerd`.
    pub main_package: Option<String>,
    /// The module the main package belongs to and its version, e.g.
    /// (`github.com/containerd/containerd/v2`, `v2.4.2`): the main module, or the dependency
    /// holding the main package when a wrapper module built it.
    pub module: Option<(String, String)>,
}

impl BuildInfo {
    /// The version of the module holding the main package, when it is a release.
    pub fn module_version(&self) -> Option<&str> {
        self.module
            .as_ref()
            .map(|(_, version)| version.as_str())
            .filter(|v| *v != "(devel)")
    }
}

/// Reads the build information of an ELF Go binary; `None` when it has none this can read.
pub fn read<'data, R: object::ReadRef<'data>>(data: R) -> Option<BuildInfo> {
    let file = object::File::parse(data).ok()?;
    let section = file.section_by_name(".go.buildinfo")?;
    let bytes = section.data().ok()?;
    parse(bytes)
}

/// Parses the content of a `.go.buildinfo` section.
pub fn parse(section: &[u8]) -> Option<BuildInfo> {
    if section.len() < HEADER_LEN || &section[..MAGIC.len()] != MAGIC {
        return None;
    }
    if section[15] & FLAG_INLINE_STRINGS == 0 {
        return None;
    }
    let rest = &section[HEADER_LEN..];
    let (version, rest) = inline_string(rest)?;
    let (modinfo, _) = inline_string(rest)?;
    let go_version = std::str::from_utf8(version).ok()?.to_owned();
    let modinfo = strip_markers(modinfo);
    let modinfo = String::from_utf8_lossy(modinfo);
    let (main_package, module) = main_module(&modinfo);
    Some(BuildInfo {
        go_version,
        main_package,
        module,
    })
}

/// A varint-length-prefixed string and what follows it.
fn inline_string(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut len: u64 = 0;
    let mut used = 0;
    for (i, byte) in data.iter().enumerate().take(10) {
        len |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            used = i + 1;
            break;
        }
    }
    if used == 0 || len > MAX_STRING_LEN {
        return None;
    }
    let rest = &data[used..];
    let len = usize::try_from(len).ok()?;
    (rest.len() >= len).then(|| rest.split_at(len))
}

fn strip_markers(modinfo: &[u8]) -> &[u8] {
    if modinfo.len() > 2 * MODINFO_MARKER_LEN && modinfo[modinfo.len() - 17] == b'\n' {
        &modinfo[MODINFO_MARKER_LEN..modinfo.len() - MODINFO_MARKER_LEN]
    } else {
        modinfo
    }
}

/// The main package and the module holding it (the longest module path that is a prefix of
/// the package path, among `mod` and `dep` lines).
fn main_module(modinfo: &str) -> (Option<String>, Option<(String, String)>) {
    let mut package = None;
    let mut modules = Vec::new();
    for line in modinfo.lines() {
        let mut fields = line.split('\t');
        match fields.next() {
            Some("path") => package = fields.next().map(str::to_owned),
            Some(kind @ ("mod" | "dep")) => {
                if let (Some(path), Some(version)) = (fields.next(), fields.next()) {
                    modules.push((kind == "mod", path.to_owned(), version.to_owned()));
                }
            }
            _ => {}
        }
    }
    let holds = |module: &str, package: &str| {
        package == module
            || package
                .strip_prefix(module)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    let module = package.as_deref().and_then(|package| {
        modules
            .iter()
            .filter(|(_, path, _)| holds(path, package))
            .max_by_key(|(_, path, _)| path.len())
            .or_else(|| modules.iter().find(|(main, _, _)| *main))
            .map(|(_, path, version)| (path.clone(), version.clone()))
    });
    (package, module)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(version: &str, modinfo: &str) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.push(8);
        out.push(FLAG_INLINE_STRINGS);
        out.resize(HEADER_LEN, 0);
        for text in [version.as_bytes().to_vec(), {
            let mut m = vec![b'0'; MODINFO_MARKER_LEN];
            m.extend_from_slice(modinfo.as_bytes());
            m.extend_from_slice(&[b'1'; MODINFO_MARKER_LEN]);
            m
        }] {
            let mut len = text.len();
            loop {
                let byte = (len & 0x7f) as u8;
                len >>= 7;
                if len == 0 {
                    out.push(byte);
                    break;
                }
                out.push(byte | 0x80);
            }
            out.extend_from_slice(&text);
        }
        out
    }

    #[test]
    fn a_go_install_build_names_its_own_module() {
        let modinfo = "path\tgithub.com/containerd/containerd/v2/cmd/containerd\n\
                       mod\tgithub.com/containerd/containerd/v2\tv2.4.2\th1:x=\n\
                       dep\tgithub.com/containerd/ttrpc\tv1.2.7\th1:y=\n\
                       build\t-ldflags=-s -w\n";
        let info = parse(&section("go1.26.8", modinfo)).expect("build info");
        assert_eq!(info.go_version, "go1.26.8");
        assert_eq!(
            info.main_package.as_deref(),
            Some("github.com/containerd/containerd/v2/cmd/containerd")
        );
        assert_eq!(info.module_version(), Some("v2.4.2"));
    }

    #[test]
    fn a_wrapper_module_build_names_the_dependency_holding_main() {
        let modinfo = "path\tgithub.com/containerd/containerd/cmd/containerd\n\
                       mod\tnodetrace.dev/wrapper\t(devel)\t\n\
                       dep\tgithub.com/containerd/containerd\tv1.7.30\th1:x=\n\
                       dep\tgithub.com/containerd/containerd/api\tv1.8.0\th1:y=\n";
        let info = parse(&section("go1.26.8", modinfo)).expect("build info");
        assert_eq!(
            info.module,
            Some((
                "github.com/containerd/containerd".to_owned(),
                "v1.7.30".to_owned()
            ))
        );
    }

    #[test]
    fn a_local_build_has_no_release_version() {
        let modinfo = "path\tgithub.com/example/app\nmod\tgithub.com/example/app\t(devel)\t\n";
        let info = parse(&section("go1.19.8", modinfo)).expect("build info");
        assert_eq!(info.module_version(), None);
    }

    #[test]
    fn anything_else_is_not_read() {
        assert_eq!(parse(b""), None);
        assert_eq!(parse(&[0u8; 64]), None);
        let mut old = section("go1.17", "");
        old[15] = 0;
        assert_eq!(parse(&old), None, "pre-1.18 pointer layout");
        let mut cut = section("go1.26.8", "path\tx\n");
        cut.truncate(HEADER_LEN + 4);
        assert_eq!(parse(&cut), None, "a string longer than the section");
    }

    #[test]
    fn the_machines_go_binaries_tell_their_version() {
        for path in ["/usr/bin/containerd", "/usr/sbin/runc"] {
            let Ok(data) = std::fs::read(path) else {
                eprintln!("skipped: {path} is not installed");
                continue;
            };
            let info = read(data.as_slice()).unwrap_or_else(|| panic!("{path}: no build info"));
            assert!(info.go_version.starts_with("go1."), "{path}: {info:?}");
        }
    }
}
