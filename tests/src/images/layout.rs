//! Writes an OCI image-layout archive (`oci-layout`, `index.json`, `blobs/sha256/...`)
//! holding one linux/amd64 image: its layers, its config and its manifest, with the image
//! name in the index annotations so that `ctr images import` names it.

use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};

use super::{ImageError, LayerBuilder, io_error};

const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// The annotation containerd takes an imported image's name from.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI reference-name annotation.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What goes into an image.
#[derive(Debug, Clone)]
pub struct ImageDefinition {
    /// Full reference, e.g. `docker.io/nodetrace/pause:test`.
    pub name: String,
    /// Uncompressed layer tars, lowest first (see [`LayerBuilder`]).
    pub layers: Vec<Vec<u8>>,
    /// Default entrypoint.
    pub entrypoint: Vec<String>,
    /// Default command (arguments to the entrypoint).
    pub cmd: Vec<String>,
    /// Default environment, `KEY=value`.
    pub env: Vec<String>,
    /// Default working directory.
    pub working_dir: String,
}

/// An archive on disk and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageArchive {
    /// The image reference it is imported under.
    pub name: String,
    /// The archive file.
    pub path: PathBuf,
    /// `sha256:<hex>` of the manifest.
    pub manifest_digest: String,
    /// `sha256:<hex>` of the config, i.e. the image id containerd reports.
    pub config_digest: String,
}

/// A blob and its descriptor fields.
struct Blob {
    digest: String,
    bytes: Vec<u8>,
}

impl Blob {
    fn new(bytes: Vec<u8>) -> Self {
        let digest = format!("sha256:{:x}", Sha256::digest(&bytes));
        Self { digest, bytes }
    }

    fn descriptor(&self, media_type: &str) -> serde_json::Value {
        json!({ "mediaType": media_type, "digest": self.digest, "size": self.bytes.len() })
    }

    fn archive_path(&self) -> String {
        format!("blobs/sha256/{}", self.digest.trim_start_matches("sha256:"))
    }
}

/// Writes `image` as an OCI image-layout tar at `path`.
pub fn write_oci_archive(image: &ImageDefinition, path: &Path) -> Result<ImageArchive, ImageError> {
    let layers: Vec<Blob> = image.layers.iter().cloned().map(Blob::new).collect();
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
    let mut runtime_config = serde_json::Map::new();
    runtime_config.insert("Env".into(), json!(image.env));
    runtime_config.insert("WorkingDir".into(), json!(image.working_dir));
    if !image.entrypoint.is_empty() {
        runtime_config.insert("Entrypoint".into(), json!(image.entrypoint));
    }
    if !image.cmd.is_empty() {
        runtime_config.insert("Cmd".into(), json!(image.cmd));
    }
    let config = Blob::new(to_json(
        "image config",
        &json!({
            "created": "1970-01-01T00:00:00Z",
            "architecture": "amd64",
            "os": "linux",
            "config": runtime_config,
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": [{ "created": "1970-01-01T00:00:00Z", "created_by": "nodetrace-testbed" }],
        }),
    )?);
    let manifest = Blob::new(to_json(
        "manifest",
        &json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": config.descriptor(MEDIA_CONFIG),
            "layers": layers.iter().map(|l| l.descriptor(MEDIA_LAYER)).collect::<Vec<_>>(),
        }),
    )?);
    let mut manifest_descriptor = manifest.descriptor(MEDIA_MANIFEST);
    manifest_descriptor["platform"] = json!({ "architecture": "amd64", "os": "linux" });
    manifest_descriptor["annotations"] = json!({
        ANNOTATION_CONTAINERD_NAME: image.name,
        ANNOTATION_REF_NAME: image.name,
    });
    let index = to_json(
        "index",
        &json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [manifest_descriptor],
        }),
    )?;

    let mut archive = LayerBuilder::new();
    archive.file("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    archive.file("index.json", 0o644, &index)?;
    archive.dir("blobs", 0o755)?;
    archive.dir("blobs/sha256", 0o755)?;
    for blob in layers.iter().chain([&config, &manifest]) {
        archive.file(&blob.archive_path(), 0o644, &blob.bytes)?;
    }
    std::fs::write(path, archive.finish()?).map_err(io_error("write", path))?;
    Ok(ImageArchive {
        name: image.name.clone(),
        path: path.to_path_buf(),
        manifest_digest: manifest.digest,
        config_digest: config.digest,
    })
}

fn to_json(what: &'static str, value: &serde_json::Value) -> Result<Vec<u8>, ImageError> {
    serde_json::to_vec(value).map_err(|source| ImageError::Json { what, source })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn archive_names_the_image_and_links_its_blobs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut layer = LayerBuilder::new();
        layer.file("hello", 0o644, b"hi").expect("file");
        let archive = write_oci_archive(
            &ImageDefinition {
                name: "docker.io/example/x:1".into(),
                layers: vec![layer.finish().expect("layer")],
                entrypoint: vec!["/hello".into()],
                cmd: vec![],
                env: vec![],
                working_dir: "/".into(),
            },
            &dir.path().join("x.tar"),
        )
        .expect("archive");

        let mut files = std::collections::BTreeMap::new();
        let bytes = std::fs::read(&archive.path).expect("read");
        let mut tar = tar::Archive::new(&bytes[..]);
        for entry in tar.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let path = entry.path().expect("path").display().to_string();
            let mut contents = Vec::new();
            entry.read_to_end(&mut contents).expect("contents");
            files.insert(path, contents);
        }
        for (path, contents) in &files {
            if let Some(hex) = path.strip_prefix("blobs/sha256/")
                && !hex.is_empty()
            {
                assert_eq!(format!("{:x}", Sha256::digest(contents)), hex);
            }
        }
        let index: serde_json::Value =
            serde_json::from_slice(&files["index.json"]).expect("index json");
        let entry = &index["manifests"][0];
        assert_eq!(
            entry["annotations"][ANNOTATION_CONTAINERD_NAME],
            "docker.io/example/x:1"
        );
        assert_eq!(entry["digest"], archive.manifest_digest.as_str());
        let manifest_path = format!(
            "blobs/sha256/{}",
            archive.manifest_digest.trim_start_matches("sha256:")
        );
        let manifest: serde_json::Value =
            serde_json::from_slice(&files[&manifest_path]).expect("manifest json");
        assert_eq!(manifest["config"]["digest"], archive.config_digest.as_str());
        let config_path = format!(
            "blobs/sha256/{}",
            archive.config_digest.trim_start_matches("sha256:")
        );
        let config: serde_json::Value =
            serde_json::from_slice(&files[&config_path]).expect("config json");
        assert_eq!(config["os"], "linux");
        assert_eq!(config["architecture"], "amd64");
        assert_eq!(config["config"]["Entrypoint"][0], "/hello");
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            manifest["layers"][0]["digest"]
        );
    }
}
