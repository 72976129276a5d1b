//! One layer blob: the tree's tar, gzipped reproducibly, with the two digests an image needs
//! (the diff id of the uncompressed tar for the config, the blob digest for the manifest).

use std::io::Write as _;

use flate2::{Compression, GzBuilder};
use sha2::{Digest as _, Sha256};

use super::{ImageError, tree::Tree};

/// The gzip level: fixed, because another level gives other bytes and so another digest.
const GZIP_LEVEL: u32 = 6;

/// A compressed layer and its digests (`sha256:<hex>`).
#[derive(Debug, Clone)]
pub struct Layer {
    pub gzip: Vec<u8>,
    pub digest: String,
    pub diff_id: String,
    /// What it holds, for the history entry of the config.
    pub comment: String,
}

impl Layer {
    /// Writes `tree` with every mtime at `mtime` and compresses it. The gzip header has no
    /// file name and a zero mtime, so only the tree decides the bytes.
    pub fn build(tree: &Tree, mtime: u64, comment: &str) -> Result<Self, ImageError> {
        let tar = tree.to_tar(mtime)?;
        let diff_id = sha256(&tar);
        let mut encoder = GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), Compression::new(GZIP_LEVEL));
        encoder.write_all(&tar).map_err(ImageError::Gzip)?;
        let gzip = encoder.finish().map_err(ImageError::Gzip)?;
        Ok(Self {
            digest: sha256(&gzip),
            gzip,
            diff_id,
            comment: comment.to_string(),
        })
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    #[test]
    fn layer_is_reproducible_and_its_diff_id_is_the_tar() {
        let mut tree = Tree::new();
        tree.file("nodetrace", 0o755, vec![7; 4096]).expect("file");
        let one = Layer::build(&tree, 0, "x").expect("one");
        let two = Layer::build(&tree, 0, "x").expect("two");
        assert_eq!(one.gzip, two.gzip);
        assert_eq!(one.digest, sha256(&one.gzip));
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&one.gzip[..])
            .read_to_end(&mut tar)
            .expect("gunzip");
        assert_eq!(one.diff_id, sha256(&tar));
        assert_eq!(tar, tree.to_tar(0).expect("tar"));
        // Another mtime is another layer.
        assert_ne!(Layer::build(&tree, 1, "x").expect("t1").digest, one.digest);
    }
}
