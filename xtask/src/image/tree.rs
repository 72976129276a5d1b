//! A file tree to become one image layer: paths, modes and contents only. Owners, times and
//! the order of entries are fixed when the tree is written, so the same tree always gives the
//! same tar bytes.

use std::collections::BTreeMap;
use std::path::Path;

use super::ImageError;

/// One entry of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32 },
    File { mode: u32, contents: Vec<u8> },
    Symlink { target: String },
}

/// The entries of a layer by path (relative, no leading `/`, no trailing `/`).
#[derive(Debug, Default, Clone)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

impl Tree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory. A directory that is already there keeps its first mode: packages
    /// all own `usr/`, `etc/`... and must not fight over it.
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<(), ImageError> {
        let path = normalize(path)?;
        if path.is_empty() {
            return Ok(());
        }
        self.parents(&path)?;
        match self.nodes.get(&path) {
            None => {
                self.nodes.insert(path, Node::Dir { mode });
                Ok(())
            }
            Some(Node::Dir { .. }) => Ok(()),
            Some(_) => Err(ImageError::Conflict(path)),
        }
    }

    /// Adds a regular file; a second, different entry at the same path is an error (two
    /// packages shipping one file would make the image depend on their order).
    pub fn file(&mut self, path: &str, mode: u32, contents: Vec<u8>) -> Result<(), ImageError> {
        self.leaf(path, Node::File { mode, contents })
    }

    /// Adds a symbolic link `path -> target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), ImageError> {
        self.leaf(
            path,
            Node::Symlink {
                target: target.to_string(),
            },
        )
    }

    /// The entry at `path`, if any.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes
            .get(path.trim_start_matches("./").trim_matches('/'))
    }

    /// Every entry, sorted by path.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.nodes.iter().map(|(p, n)| (p.as_str(), n))
    }

    /// Adds every entry of `other`, with the same conflict rules.
    pub fn merge(&mut self, other: Tree) -> Result<(), ImageError> {
        for (path, node) in other.nodes {
            match node {
                Node::Dir { mode } => self.dir(&path, mode)?,
                leaf => self.leaf(&path, leaf)?,
            }
        }
        Ok(())
    }

    /// The tree as an uncompressed tar: entries sorted by path (a directory sorts before everything
    /// under it, since a string sorts before the strings it is a prefix of), owner 0:0, every mtime
    /// `mtime`, modes as given. No user names, no device numbers, no extended headers.
    pub fn to_tar(&self, mtime: u64) -> Result<Vec<u8>, ImageError> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, node) in &self.nodes {
            let mut header = tar::Header::new_ustar();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(mtime);
            let tar_err = |source| ImageError::Tar {
                path: path.clone(),
                source,
            };
            match node {
                Node::Dir { mode } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    header.set_size(0);
                    tar.append_data(&mut header, format!("{path}/"), &[][..])
                        .map_err(tar_err)?;
                }
                Node::File { mode, contents } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(contents.len() as u64);
                    tar.append_data(&mut header, path, &contents[..])
                        .map_err(tar_err)?;
                }
                Node::Symlink { target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    tar.append_link(&mut header, path, target)
                        .map_err(tar_err)?;
                }
            }
        }
        tar.into_inner().map_err(|source| ImageError::Tar {
            path: "<end of archive>".into(),
            source,
        })
    }

    /// Writes the tree into `root` (which must not exist yet) as files on disk, with the
    /// tree's modes. Directory modes are set last, deepest first, so that a read-only
    /// directory is filled before it becomes read-only.
    pub fn write_to(&self, root: &Path) -> Result<(), ImageError> {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::create_dir(root).map_err(ImageError::io("create", root))?;
        let mut dirs = Vec::new();
        for (path, node) in &self.nodes {
            let target = root.join(path);
            match node {
                Node::Dir { mode } => {
                    std::fs::create_dir(&target).map_err(ImageError::io("create", &target))?;
                    dirs.push((target, *mode));
                }
                Node::File { mode, contents } => {
                    std::fs::write(&target, contents).map_err(ImageError::io("write", &target))?;
                    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode))
                        .map_err(ImageError::io("set the mode of", &target))?;
                }
                Node::Symlink { target: link } => std::os::unix::fs::symlink(link, &target)
                    .map_err(ImageError::io("create the link", &target))?,
            }
        }
        for (dir, mode) in dirs.into_iter().rev() {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
                .map_err(ImageError::io("set the mode of", &dir))?;
        }
        Ok(())
    }

    fn leaf(&mut self, path: &str, node: Node) -> Result<(), ImageError> {
        let path = normalize(path)?;
        if path.is_empty() {
            return Err(ImageError::Conflict("/".into()));
        }
        self.parents(&path)?;
        match self.nodes.get(&path) {
            None => {
                self.nodes.insert(path, node);
                Ok(())
            }
            Some(existing) if *existing == node => Ok(()),
            Some(_) => Err(ImageError::Conflict(path)),
        }
    }

    /// Makes every ancestor of `path` a directory (0755 unless one is there already), so the
    /// tar never holds a file whose directory the runtime would have to invent.
    fn parents(&mut self, path: &str) -> Result<(), ImageError> {
        let mut end = 0;
        while let Some(slash) = path[end..].find('/') {
            let parent = &path[..end + slash];
            match self.nodes.get(parent) {
                None => {
                    self.nodes
                        .insert(parent.to_string(), Node::Dir { mode: 0o755 });
                }
                Some(Node::Dir { .. }) => {}
                Some(_) => return Err(ImageError::Conflict(parent.to_string())),
            }
            end += slash + 1;
        }
        Ok(())
    }
}

/// `./usr/lib/` → `usr/lib`; refuses `..` so nothing a package ships escapes the tree.
fn normalize(path: &str) -> Result<String, ImageError> {
    let trimmed = path.trim_start_matches("./").trim_matches('/');
    let parts: Vec<&str> = trimmed
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(ImageError::BadPath(path.to_string()));
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(tar_bytes: &[u8]) -> Vec<(String, u64, u64, u32)> {
        let mut archive = tar::Archive::new(tar_bytes);
        archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                let h = e.header();
                (
                    e.path().expect("path").display().to_string(),
                    h.uid().expect("uid"),
                    h.mtime().expect("mtime"),
                    h.mode().expect("mode"),
                )
            })
            .collect()
    }

    #[test]
    fn entries_are_sorted_with_parents_and_fixed_owner_and_time() {
        let mut tree = Tree::new();
        tree.file("./usr/lib/b", 0o644, b"b".to_vec()).expect("b");
        tree.file("usr/lib/a", 0o755, b"a".to_vec()).expect("a");
        tree.symlink("lib64/ld.so", "/usr/lib/a").expect("link");
        tree.dir("tmp", 0o1777).expect("tmp");
        let got = entries(&tree.to_tar(7).expect("tar"));
        assert_eq!(
            got,
            vec![
                ("lib64/".into(), 0, 7, 0o755),
                ("lib64/ld.so".into(), 0, 7, 0o777),
                ("tmp/".into(), 0, 7, 0o1777),
                ("usr/".into(), 0, 7, 0o755),
                ("usr/lib/".into(), 0, 7, 0o755),
                ("usr/lib/a".into(), 0, 7, 0o755),
                ("usr/lib/b".into(), 0, 7, 0o644),
            ]
        );
    }

    #[test]
    fn same_tree_in_any_order_gives_same_bytes() {
        let mut one = Tree::new();
        one.file("etc/a", 0o644, b"1".to_vec()).expect("a");
        one.file("bin/x", 0o755, b"2".to_vec()).expect("x");
        let mut two = Tree::new();
        two.file("bin/x", 0o755, b"2".to_vec()).expect("x");
        two.file("etc/a", 0o644, b"1".to_vec()).expect("a");
        assert_eq!(one.to_tar(0).expect("1"), two.to_tar(0).expect("2"));
    }

    #[test]
    fn tree_written_to_disk_has_its_modes_and_links() {
        use std::os::unix::fs::PermissionsExt as _;
        let mut tree = Tree::new();
        tree.file("usr/bin/x", 0o750, b"x".to_vec()).expect("x");
        tree.symlink("bin", "usr/bin").expect("link");
        tree.dir("tmp", 0o1777).expect("tmp");
        let dir = std::env::temp_dir().join(format!("xtask-tree-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        tree.write_to(&dir).expect("write");
        let mode = |p: &str| {
            std::fs::symlink_metadata(dir.join(p))
                .expect("metadata")
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("usr/bin/x"), 0o750);
        assert_eq!(mode("tmp"), 0o1777);
        assert_eq!(
            std::fs::read_link(dir.join("bin")).expect("link"),
            Path::new("usr/bin")
        );
        assert_eq!(std::fs::read(dir.join("bin/x")).expect("read"), b"x");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn conflicting_files_and_escapes_are_refused() {
        let mut tree = Tree::new();
        tree.file("etc/x", 0o644, b"1".to_vec()).expect("x");
        tree.file("etc/x", 0o644, b"1".to_vec())
            .expect("the same file twice is fine");
        assert!(matches!(
            tree.file("etc/x", 0o644, b"2".to_vec()),
            Err(ImageError::Conflict(_))
        ));
        assert!(matches!(
            tree.file("etc/x/y", 0o644, b"2".to_vec()),
            Err(ImageError::Conflict(_))
        ));
        assert!(matches!(
            tree.file("../etc/passwd", 0o644, vec![]),
            Err(ImageError::BadPath(_))
        ));
    }
}
