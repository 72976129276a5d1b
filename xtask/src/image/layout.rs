//! The OCI image documents (config, manifest, index) and the image-layout tar holding them
//! with the layers (`oci-layout`, `index.json`, `blobs/sha256/<hex>`).
//!
//! The documents are typed structs, not `serde_json::Value`: a struct serializes its fields
//! in declaration order whatever features serde_json is built with, and maps are `BTreeMap`s,
//! so the JSON bytes, and with them the digests, depend only on the values.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{ImageError, layer::Layer, layer::sha256, tree::Tree};

pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The name `ctr images import` gives the image (a full reference).
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI tag annotation: what `skopeo copy oci-archive:<file>:<ref>` selects by.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What the image runs, as `deploy/Containerfile` says it (see `super::runtime_config`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RuntimeConfig {
    #[serde(rename = "User")]
    pub user: String,
    #[serde(rename = "ExposedPorts")]
    pub exposed_ports: BTreeMap<String, Empty>,
    #[serde(rename = "Env")]
    pub env: Vec<String>,
    #[serde(rename = "Entrypoint")]
    pub entrypoint: Vec<String>,
    #[serde(rename = "WorkingDir")]
    pub working_dir: String,
    #[serde(rename = "Labels")]
    pub labels: BTreeMap<String, String>,
}

/// `{}`, the value of each exposed port.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct Empty {}

#[derive(Serialize)]
struct Config<'a> {
    created: &'a str,
    architecture: &'static str,
    os: &'static str,
    config: &'a RuntimeConfig,
    rootfs: RootFs,
    history: Vec<History<'a>>,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
struct History<'a> {
    created: &'a str,
    created_by: &'static str,
    comment: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: &'static str,
    digest: String,
    size: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<Platform>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
struct Platform {
    architecture: &'static str,
    os: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    media_type: &'static str,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<Descriptor>,
}

/// A finished image: the archive bytes and what identifies it.
#[derive(Debug, Clone)]
pub struct Image {
    pub archive: Vec<u8>,
    /// `sha256:` of the manifest: the digest a registry and `ctr images ls` show.
    pub manifest_digest: String,
    /// `sha256:` of the config: the image id.
    pub config_digest: String,
}

fn descriptor(media_type: &'static str, bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type,
        digest: sha256(bytes),
        size: bytes.len(),
        platform: None,
        annotations: BTreeMap::new(),
    }
}

fn to_json(what: &'static str, value: &impl Serialize) -> Result<Vec<u8>, ImageError> {
    serde_json::to_vec(value).map_err(|source| ImageError::Json { what, source })
}

/// The config JSON of an image made of `layers`, created at `created` (RFC 3339).
pub fn config_json(
    runtime: &RuntimeConfig,
    layers: &[Layer],
    created: &str,
) -> Result<Vec<u8>, ImageError> {
    to_json(
        "image config",
        &Config {
            created,
            architecture: "amd64",
            os: "linux",
            config: runtime,
            rootfs: RootFs {
                kind: "layers",
                diff_ids: layers.iter().map(|l| l.diff_id.clone()).collect(),
            },
            history: layers
                .iter()
                .map(|l| History {
                    created,
                    created_by: "cargo xtask image",
                    comment: &l.comment,
                })
                .collect(),
        },
    )
}

/// Writes the image-layout archive of one linux/amd64 image named `name` (a full reference,
/// `docker.io/library/nodetrace:0.1.0`) and tagged `ref_name` in the index.
pub fn write(
    runtime: &RuntimeConfig,
    layers: &[Layer],
    created: &str,
    name: &str,
    ref_name: &str,
    mtime: u64,
) -> Result<Image, ImageError> {
    let config = config_json(runtime, layers, created)?;
    let manifest = to_json(
        "manifest",
        &Manifest {
            schema_version: 2,
            media_type: MEDIA_MANIFEST,
            config: descriptor(MEDIA_CONFIG, &config),
            layers: layers
                .iter()
                // The digest the layer computed when it compressed itself.
                .map(|l| Descriptor {
                    media_type: MEDIA_LAYER_GZIP,
                    digest: l.digest.clone(),
                    size: l.gzip.len(),
                    platform: None,
                    annotations: BTreeMap::new(),
                })
                .collect(),
        },
    )?;
    let mut manifest_descriptor = descriptor(MEDIA_MANIFEST, &manifest);
    manifest_descriptor.platform = Some(Platform {
        architecture: "amd64",
        os: "linux",
    });
    manifest_descriptor.annotations = BTreeMap::from([
        (ANNOTATION_CONTAINERD_NAME, name.to_string()),
        (ANNOTATION_REF_NAME, ref_name.to_string()),
    ]);
    let index = to_json(
        "index",
        &Index {
            schema_version: 2,
            media_type: MEDIA_INDEX,
            manifests: vec![manifest_descriptor],
        },
    )?;

    let mut tree = Tree::new();
    tree.file(
        "oci-layout",
        0o644,
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    )?;
    tree.file("index.json", 0o644, index)?;
    for blob in layers
        .iter()
        .map(|l| l.gzip.as_slice())
        .chain([config.as_slice(), manifest.as_slice()])
    {
        let hex = sha256(blob);
        let hex = hex.trim_start_matches("sha256:");
        tree.file(&format!("blobs/sha256/{hex}"), 0o644, blob.to_vec())?;
    }
    Ok(Image {
        archive: tree.to_tar(mtime)?,
        manifest_digest: sha256(&manifest),
        config_digest: sha256(&config),
    })
}

/// The full reference a runtime resolves `name` to, the way containerd's and the kubelet's
/// reference parsing does: no registry means `docker.io`, a single path element means
/// `library/`, no tag or digest means `:latest`. `nodetrace:0.1.0` →
/// `docker.io/library/nodetrace:0.1.0`.
pub fn full_reference(name: &str) -> String {
    let (first, rest) = name.split_once('/').unwrap_or(("", name));
    let has_domain =
        !first.is_empty() && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut full = if has_domain {
        name.to_string()
    } else if first.is_empty() {
        format!("docker.io/library/{rest}")
    } else {
        format!("docker.io/{name}")
    };
    let last = full.rsplit('/').next().unwrap_or_default();
    if !last.contains(':') && !last.contains('@') {
        full.push_str(":latest");
    }
    full
}

/// RFC 3339 (UTC) of a Unix time, for the config's `created`.
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a civil date (proleptic Gregorian), after H. Hinnant's
    // public-domain `civil_from_days`.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap as Map;
    use std::io::Read as _;

    use super::*;

    fn runtime() -> RuntimeConfig {
        RuntimeConfig {
            user: "0:0".into(),
            exposed_ports: Map::from([("9750/tcp".to_string(), Empty {})]),
            env: vec!["PATH=/bin".into()],
            entrypoint: vec!["/nodetrace".into()],
            working_dir: "/".into(),
            labels: Map::from([("a".to_string(), "b".to_string())]),
        }
    }

    fn layer() -> Layer {
        let mut tree = Tree::new();
        tree.file("nodetrace", 0o755, b"\x7fELF".to_vec())
            .expect("file");
        Layer::build(&tree, 0, "the agent").expect("layer")
    }

    /// The config, byte for byte: field order, key names and the empty-object port are what
    /// containerd and registries parse; a change here changes every digest.
    #[test]
    fn config_json_is_golden() {
        let layer = layer();
        let json = config_json(
            &runtime(),
            std::slice::from_ref(&layer),
            "1970-01-01T00:00:00Z",
        )
        .expect("config");
        let expected = format!(
            concat!(
                r#"{{"created":"1970-01-01T00:00:00Z","architecture":"amd64","os":"linux","#,
                r#""config":{{"User":"0:0","ExposedPorts":{{"9750/tcp":{{}}}},"Env":["PATH=/bin"],"#,
                r#""Entrypoint":["/nodetrace"],"WorkingDir":"/","Labels":{{"a":"b"}}}},"#,
                r#""rootfs":{{"type":"layers","diff_ids":["{}"]}},"#,
                r#""history":[{{"created":"1970-01-01T00:00:00Z","created_by":"cargo xtask image","comment":"the agent"}}]}}"#
            ),
            layer.diff_id
        );
        assert_eq!(String::from_utf8(json).expect("utf8"), expected);
    }

    fn files(archive: &[u8]) -> Map<String, Vec<u8>> {
        let mut tar = tar::Archive::new(archive);
        let mut files = Map::new();
        for entry in tar.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let path = entry.path().expect("path").display().to_string();
            let mut contents = Vec::new();
            entry.read_to_end(&mut contents).expect("read");
            files.insert(path, contents);
        }
        files
    }

    fn blob<'a>(files: &'a Map<String, Vec<u8>>, digest: &serde_json::Value) -> &'a [u8] {
        let digest = digest.as_str().expect("digest string");
        &files[&format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))]
    }

    /// The layout's structure: every descriptor points at a blob of that digest and size, the
    /// index names the image for containerd and skopeo, and the config's diff ids are the
    /// layers' uncompressed tars.
    #[test]
    fn layout_links_index_manifest_config_and_layers() {
        let layer = layer();
        let image = write(
            &runtime(),
            std::slice::from_ref(&layer),
            "1970-01-01T00:00:00Z",
            "docker.io/library/nodetrace:0.1.0",
            "nodetrace:0.1.0",
            0,
        )
        .expect("image");
        let files = files(&image.archive);
        // Three blobs (layer, config, manifest), then the two documents, in path order.
        let paths: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(paths.len(), 5, "{paths:?}");
        assert!(paths[..3].iter().all(|p| p.starts_with("blobs/sha256/")));
        assert_eq!(paths[3..], ["index.json", "oci-layout"]);
        for (path, contents) in &files {
            if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                assert_eq!(sha256(contents), format!("sha256:{hex}"));
            }
        }
        assert_eq!(files["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).expect("index");
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["mediaType"], MEDIA_INDEX);
        let entry = &index["manifests"][0];
        assert_eq!(entry["mediaType"], MEDIA_MANIFEST);
        assert_eq!(entry["digest"], image.manifest_digest.as_str());
        assert_eq!(entry["platform"]["architecture"], "amd64");
        assert_eq!(
            entry["annotations"][ANNOTATION_CONTAINERD_NAME],
            "docker.io/library/nodetrace:0.1.0"
        );
        assert_eq!(entry["annotations"][ANNOTATION_REF_NAME], "nodetrace:0.1.0");
        let manifest_bytes = blob(&files, &entry["digest"]);
        assert_eq!(entry["size"], manifest_bytes.len());
        let manifest: serde_json::Value = serde_json::from_slice(manifest_bytes).expect("manifest");
        assert_eq!(manifest["schemaVersion"], 2);
        assert_eq!(manifest["config"]["mediaType"], MEDIA_CONFIG);
        assert_eq!(manifest["config"]["digest"], image.config_digest.as_str());
        let config: serde_json::Value =
            serde_json::from_slice(blob(&files, &manifest["config"]["digest"])).expect("config");
        let layer_entry = &manifest["layers"][0];
        assert_eq!(layer_entry["mediaType"], MEDIA_LAYER_GZIP);
        let gz = blob(&files, &layer_entry["digest"]);
        assert_eq!(layer_entry["size"], gz.len());
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut tar)
            .expect("gunzip");
        assert_eq!(config["rootfs"]["diff_ids"][0], sha256(&tar).as_str());
        assert_eq!(config["config"]["Entrypoint"][0], "/nodetrace");

        let again = write(
            &runtime(),
            std::slice::from_ref(&layer),
            "1970-01-01T00:00:00Z",
            "docker.io/library/nodetrace:0.1.0",
            "nodetrace:0.1.0",
            0,
        )
        .expect("again");
        assert_eq!(again.archive, image.archive, "same input, same archive");
    }

    #[test]
    fn references_are_completed_like_the_kubelet_does() {
        assert_eq!(
            full_reference("nodetrace:0.1.0"),
            "docker.io/library/nodetrace:0.1.0"
        );
        assert_eq!(
            full_reference("nodetrace"),
            "docker.io/library/nodetrace:latest"
        );
        assert_eq!(full_reference("me/nodetrace:1"), "docker.io/me/nodetrace:1");
        assert_eq!(
            full_reference("registry.example.com/nodetrace:0.1.0"),
            "registry.example.com/nodetrace:0.1.0"
        );
        assert_eq!(
            full_reference("localhost:5000/nodetrace"),
            "localhost:5000/nodetrace:latest"
        );
    }

    #[test]
    fn rfc3339_of_unix_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_553_296), "2026-12-06T10:34:56Z");
    }
}
