//! The image's base: files of pinned Debian bookworm packages, the ones distroless/cc's Debian
//! 12 image is made of that the agent can use (glibc and the loader, libgcc_s, CA
//! certificates, the base files and network databases). Each .deb is fetched with
//! `apt-get download` into a cache outside the work tree only when it is missing, checked
//! against its pinned sha256, and unpacked with `dpkg-deb --fsys-tarfile` (no maintainer
//! scripts run: what they would generate, the CA bundle, is written here).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

use super::ImageError;
use super::tree::{Node, Tree};

/// Where the .debs are kept between builds, for root (beside the runtimes setup builds).
pub const ROOT_CACHE: &str = "/var/cache/nodetrace/image-debs";

/// The cache to use: [`ROOT_CACHE`] for root; anyone else cannot write there, and gets
/// `$XDG_CACHE_HOME/nodetrace/image-debs` (or `~/.cache/...`), so a non-root `cargo xtask
/// test` still builds the archive.
pub fn default_cache() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from(ROOT_CACHE);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("nodetrace/image-debs")
}

/// One pinned package. Pinning the version and the file's hash is what makes the base layer
/// the same on every machine; when bookworm's mirror drops a version (a security update),
/// `apt-get download` fails and the pins below are bumped (name=version from
/// `apt-cache policy`, sha256 of the downloaded file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deb {
    pub name: &'static str,
    pub version: &'static str,
    pub arch: &'static str,
    pub sha256: &'static str,
}

impl Deb {
    /// The file name `apt-get download` writes (an epoch's `:` would be `%3a`).
    pub fn file_name(&self) -> String {
        format!(
            "{}_{}_{}.deb",
            self.name,
            self.version.replace(':', "%3a"),
            self.arch
        )
    }
}

/// The packages, in the order they are unpacked (it does not change the result: a path two
/// packages both ship as a file is an error, see [`Tree`]).
pub const DEBS: &[Deb] = &[
    Deb {
        name: "base-files",
        version: "12.4+deb12u15",
        arch: "amd64",
        sha256: "3eb1ea6d85488f488cc2a163b98ad640ef88cee4c79287cf14e361aaf6206f47",
    },
    Deb {
        name: "netbase",
        version: "6.4",
        arch: "all",
        sha256: "29b23c48c0fe6f878e56c5ddc9f65d1c05d729360f3690a593a8c795031cd867",
    },
    Deb {
        name: "libc6",
        version: "2.36-9+deb12u14",
        arch: "amd64",
        sha256: "ba4f88f73dbc3ae9055f3c20f4523bfdbaf1ad13ff95e258924f77d20b4fbedf",
    },
    Deb {
        name: "libgcc-s1",
        version: "12.2.0-14+deb12u1",
        arch: "amd64",
        sha256: "3016e62cb4b7cd8038822870601f5ed131befe942774d0f745622cc77d8a88f7",
    },
    Deb {
        name: "ca-certificates",
        version: "20250419~deb12u2",
        arch: "all",
        sha256: "b9f76b5271a7ac373fd5e7e1b5b826a71ddd702b42a0d104955ecb1acfffc94b",
    },
];

/// Where the CA bundle goes (distroless's path, and `SSL_CERT_FILE` in the image).
pub const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

/// Makes sure every pinned .deb is in `cache` with the right hash; downloads the missing ones.
/// Returns their paths and whether anything was downloaded.
pub fn fetch(cache: &Path) -> Result<(Vec<PathBuf>, bool), ImageError> {
    std::fs::create_dir_all(cache).map_err(ImageError::io("create", cache))?;
    let mut paths = Vec::new();
    let mut downloaded = false;
    for deb in DEBS {
        let path = cache.join(deb.file_name());
        if !path.exists() {
            download(deb, cache)?;
            downloaded = true;
        }
        verify(deb, &path)?;
        paths.push(path);
    }
    Ok((paths, downloaded))
}

/// `apt-get download name=version` into a staging directory, then into the cache once the
/// hash matches, so an interrupted or wrong download never sits in the cache.
fn download(deb: &Deb, cache: &Path) -> Result<(), ImageError> {
    let staging = cache.join(".partial");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(ImageError::io("create", &staging))?;
    eprintln!(
        "[xtask image] apt-get download {}={} into {}",
        deb.name,
        deb.version,
        cache.display()
    );
    let output = Command::new("apt-get")
        // As root, apt drops to the `_apt` user, which cannot write the cache directory;
        // downloading as the caller is what `apt-get download` does for anyone else.
        .args(["-o", "APT::Sandbox::User=root", "-q", "download"])
        .arg(format!("{}={}", deb.name, deb.version))
        .current_dir(&staging)
        .output()
        .map_err(|source| ImageError::Spawn {
            program: "apt-get".into(),
            source,
        })?;
    if !output.status.success() {
        return Err(ImageError::Download {
            package: format!("{}={}", deb.name, deb.version),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    let file = staging.join(deb.file_name());
    verify(deb, &file)?;
    let target = cache.join(deb.file_name());
    std::fs::rename(&file, &target).map_err(ImageError::io("move into the cache", &target))?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(())
}

fn verify(deb: &Deb, path: &Path) -> Result<(), ImageError> {
    let bytes = std::fs::read(path).map_err(ImageError::io("read", path))?;
    let got = format!("{:x}", Sha256::digest(&bytes));
    if got != deb.sha256 {
        return Err(ImageError::DebHash {
            path: path.to_path_buf(),
            expected: deb.sha256,
            got,
        });
    }
    Ok(())
}

/// Whether a packaged path stays out of the image: manuals, info pages, lintian overrides
/// and documentation, except each package's `copyright` (its licence terms travel with it).
fn excluded(path: &str) -> bool {
    let path = path.trim_start_matches("./");
    for dir in ["usr/share/man/", "usr/share/info/", "usr/share/lintian/"] {
        if path.starts_with(dir) {
            return true;
        }
    }
    if let Some(rest) = path.strip_prefix("usr/share/doc/") {
        // `usr/share/doc/<pkg>/` itself and `usr/share/doc/<pkg>/copyright` stay.
        return match rest.trim_end_matches('/').split_once('/') {
            None => false,
            Some((_, file)) => file != "copyright",
        };
    }
    false
}

/// Unpacks one .deb's data into `tree`, and its control fields to
/// `var/lib/dpkg/status.d/<name>` (where distroless puts them, so that image scanners see which
/// packages, in which versions, the image holds).
pub fn unpack(deb: &Deb, path: &Path, tree: &mut Tree) -> Result<(), ImageError> {
    let data = dpkg_deb(&["--fsys-tarfile"], path)?;
    let mut archive = tar::Archive::new(&data[..]);
    let entries = archive
        .entries()
        .map_err(ImageError::io("read the data of", path))?;
    for entry in entries {
        let mut entry = entry.map_err(ImageError::io("read the data of", path))?;
        let name = entry
            .path()
            .map_err(ImageError::io("read the data of", path))?
            .display()
            .to_string();
        if excluded(&name) {
            continue;
        }
        let header = entry.header();
        let mode = header
            .mode()
            .map_err(ImageError::io("read a mode in", path))?
            & 0o7777;
        let kind = header.entry_type();
        match kind {
            tar::EntryType::Directory => tree.dir(&name, mode)?,
            tar::EntryType::Regular => {
                let mut contents = Vec::new();
                entry
                    .read_to_end(&mut contents)
                    .map_err(ImageError::io("read the data of", path))?;
                tree.file(&name, mode, contents)?;
            }
            tar::EntryType::Symlink => {
                let target = link_name(&entry, path)?;
                tree.symlink(&name, &target)?;
            }
            // A hard link becomes a copy: the layer then has no entry that depends on
            // another one being written first.
            tar::EntryType::Link => {
                let target = link_name(&entry, path)?;
                let Some(Node::File { contents, .. }) = tree.get(&target).cloned() else {
                    return Err(ImageError::Unsupported {
                        path: name,
                        what: format!("hard link to {target}, which is not a file before it"),
                    });
                };
                tree.file(&name, mode, contents)?;
            }
            other => {
                return Err(ImageError::Unsupported {
                    path: name,
                    what: format!("tar entry type {other:?}"),
                });
            }
        }
    }
    let control = dpkg_deb(&["--field"], path)?;
    tree.file(
        &format!("var/lib/dpkg/status.d/{}", deb.name),
        0o644,
        control,
    )?;
    Ok(())
}

fn link_name(entry: &tar::Entry<'_, &[u8]>, deb: &Path) -> Result<String, ImageError> {
    entry
        .link_name()
        .map_err(ImageError::io("read a link in", deb))?
        .map(|l| l.display().to_string())
        .ok_or_else(|| ImageError::Unsupported {
            path: deb.display().to_string(),
            what: "a link without a target".into(),
        })
}

fn dpkg_deb(args: &[&str], deb: &Path) -> Result<Vec<u8>, ImageError> {
    let output = Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .output()
        .map_err(|source| ImageError::Spawn {
            program: "dpkg-deb".into(),
            source,
        })?;
    if !output.status.success() {
        return Err(ImageError::Tool {
            command: format!("dpkg-deb {} {}", args.join(" "), deb.display()),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(output.stdout)
}

/// What `update-ca-certificates` would write to [`CA_BUNDLE`] with ca-certificates' default
/// configuration (every certificate it ships enabled): the certificates under
/// `usr/share/ca-certificates/`, in byte order of their paths, each ending in a newline.
pub fn ca_bundle(tree: &Tree) -> Vec<u8> {
    let mut bundle = Vec::new();
    for (path, node) in tree.iter() {
        if let (Some(_), Node::File { contents, .. }) =
            (path.strip_prefix("usr/share/ca-certificates/"), node)
            && path.ends_with(".crt")
        {
            bundle.extend_from_slice(contents);
            if !contents.ends_with(b"\n") {
                bundle.push(b'\n');
            }
        }
    }
    bundle
}

/// The files a package's maintainer scripts or distroless add: the users and groups (root
/// and nobody only; the agent runs as root), name-service order (files before DNS, so
/// `/etc/hosts` answers first, as on a Debian host), and the CA bundle.
pub fn add_generated(tree: &mut Tree) -> Result<(), ImageError> {
    tree.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
            .to_vec(),
    )?;
    tree.file("etc/group", 0o644, b"root:x:0:\nnobody:x:65534:\n".to_vec())?;
    tree.file(
        "etc/nsswitch.conf",
        0o644,
        b"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n"
            .to_vec(),
    )?;
    let bundle = ca_bundle(tree);
    tree.file(CA_BUNDLE, 0o644, bundle)
}

/// The base layer's tree: every pinned package unpacked, plus the generated files.
pub fn base_tree(cache: &Path) -> Result<(Tree, bool), ImageError> {
    let (paths, downloaded) = fetch(cache)?;
    let mut tree = Tree::new();
    for (deb, path) in DEBS.iter().zip(&paths) {
        unpack(deb, path, &mut tree)?;
    }
    add_generated(&mut tree)?;
    Ok((tree, downloaded))
}

/// `name=version` of every package, for the image's label.
pub fn versions() -> String {
    DEBS.iter()
        .map(|d| format!("{}={}", d.name, d.version))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_are_left_out_but_copyrights_stay() {
        assert!(excluded("./usr/share/man/man8/x.8.gz"));
        assert!(excluded("./usr/share/doc/libc6/changelog.gz"));
        assert!(excluded("./usr/share/doc/ca-certificates/examples/x/y"));
        assert!(!excluded("./usr/share/doc/libc6/copyright"));
        assert!(!excluded("./usr/share/doc/libc6/"));
        assert!(!excluded("./lib/x86_64-linux-gnu/libc.so.6"));
    }

    #[test]
    fn bundle_is_the_shipped_certificates_in_order_newline_terminated() {
        let mut tree = Tree::new();
        tree.file(
            "usr/share/ca-certificates/mozilla/B.crt",
            0o644,
            b"b".to_vec(),
        )
        .expect("b");
        tree.file(
            "usr/share/ca-certificates/mozilla/A.crt",
            0o644,
            b"a\n".to_vec(),
        )
        .expect("a");
        tree.file(
            "usr/share/ca-certificates/mozilla/README",
            0o644,
            b"x".to_vec(),
        )
        .expect("readme");
        assert_eq!(ca_bundle(&tree), b"a\nb\n");
    }

    #[test]
    fn file_names_are_what_apt_get_download_writes() {
        let deb = DEBS.iter().find(|d| d.name == "libc6").expect("libc6");
        assert_eq!(deb.file_name(), "libc6_2.36-9+deb12u14_amd64.deb");
        let epoch = Deb {
            version: "1:2.0",
            ..*deb
        };
        assert_eq!(epoch.file_name(), "libc6_1%3a2.0_amd64.deb");
    }
}
