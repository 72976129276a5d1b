//! Writes one image layer: an uncompressed, reproducible tar (owner root, mtime 0) of
//! directories, files and symlinks.

use super::ImageError;

/// Collects the entries of a layer in the order they are added.
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    /// An empty layer.
    pub fn new() -> Self {
        Self {
            tar: tar::Builder::new(Vec::new()),
        }
    }

    /// Adds a directory; `path` is relative to the image root (`"bin"`).
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<(), ImageError> {
        let mut header = header(tar::EntryType::Directory, mode, 0);
        self.append(
            &mut header,
            &format!("{}/", path.trim_end_matches('/')),
            &[][..],
        )
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, mode: u32, contents: &[u8]) -> Result<(), ImageError> {
        let mut header = header(tar::EntryType::Regular, mode, contents.len() as u64);
        self.append(&mut header, path, contents)
    }

    /// Adds a symbolic link at `path` pointing to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), ImageError> {
        let mut header = header(tar::EntryType::Symlink, 0o777, 0);
        self.tar
            .append_link(&mut header, path, target)
            .map_err(|source| ImageError::Tar {
                path: path.to_string(),
                source,
            })
    }

    /// The finished tar bytes.
    pub fn finish(self) -> Result<Vec<u8>, ImageError> {
        self.tar.into_inner().map_err(|source| ImageError::Tar {
            path: "<end of archive>".to_string(),
            source,
        })
    }

    fn append(
        &mut self,
        header: &mut tar::Header,
        path: &str,
        contents: &[u8],
    ) -> Result<(), ImageError> {
        self.tar
            .append_data(header, path, contents)
            .map_err(|source| ImageError::Tar {
                path: path.to_string(),
                source,
            })
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

#[cfg(test)]
mod tests {
    use super::LayerBuilder;

    #[test]
    fn layer_lists_its_entries() {
        let mut layer = LayerBuilder::new();
        layer.dir("bin", 0o755).expect("dir");
        layer.file("bin/tool", 0o755, b"abc").expect("file");
        layer.symlink("bin/alias", "tool").expect("symlink");
        let bytes = layer.finish().expect("finish");
        let mut archive = tar::Archive::new(&bytes[..]);
        let entries: Vec<(String, tar::EntryType, Option<String>)> = archive
            .entries()
            .expect("entries")
            .map(|entry| {
                let entry = entry.expect("entry");
                let path = entry.path().expect("path").display().to_string();
                let link = entry
                    .link_name()
                    .expect("link")
                    .map(|l| l.display().to_string());
                (path, entry.header().entry_type(), link)
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                ("bin/".to_string(), tar::EntryType::Directory, None),
                ("bin/tool".to_string(), tar::EntryType::Regular, None),
                (
                    "bin/alias".to_string(),
                    tar::EntryType::Symlink,
                    Some("tool".to_string())
                ),
            ]
        );
    }
}
