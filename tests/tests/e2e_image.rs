//! End to end, the image: the OCI archive `cargo xtask image` writes (without any container
//! engine) is imported into a private containerd with `ctr images import`, seen by its CRI
//! under the name the manifests use, and run as a pod's container with the image's own
//! entrypoint: `nodetrace --version` prints this workspace's version and `nodetrace agent
//! --help` the agent's flags, so the loader, glibc and libgcc_s in the image are what the
//! binary needs.
//! Also `skopeo` reads the archive (what `skopeo copy oci-archive:...` pushes from).
//!
//! The archive: `NODETRACE_IMAGE_ARCHIVE` (`cargo xtask test` builds it first and sets it, so
//! CI always runs this), or `<target dir>/nodetrace-image.tar` from `cargo xtask image`;
//! without either the tests say so and skip. Running pods needs root.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::skipped_unless_root;
use nodetrace_testbed::{
    BuiltRuntimes, ContainerdOptions, Testbed,
    cri::{ContainerSpec, PodIdentity, container_config, host_network_sandbox_config},
    images::{ImageArchive, ctr_image_names, ctr_import},
};

/// The name `ctr images import` gives the image: the index's `io.containerd.image.name`, the
/// full form of the manifests' `nodetrace:0.1.0`.
const IMAGE: &str = "docker.io/library/nodetrace:0.1.0";
/// The tag in the index (`org.opencontainers.image.ref.name`).
const REF_NAME: &str = "nodetrace:0.1.0";
/// How long the imported image may take to reach the CRI's cache.
const VISIBLE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a container running `--version` may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// The archive to test, or `None` (said on stderr) when there is none and none was required.
fn archive(test: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("NODETRACE_IMAGE_ARCHIVE") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "NODETRACE_IMAGE_ARCHIVE={} does not exist",
            path.display()
        );
        return Some(path);
    }
    // CARGO_TARGET_TMPDIR is <target dir>/tmp, wherever the target dir is.
    let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("nodetrace-image.tar");
    if path.is_file() {
        return Some(path);
    }
    eprintln!(
        "{test}: skipped: no image archive (run `cargo xtask image`, or `cargo xtask test`, \
         which builds it and sets NODETRACE_IMAGE_ARCHIVE)"
    );
    None
}

/// A JSON blob of the archive, by its `sha256:` digest.
fn blob(files: &std::collections::BTreeMap<String, Vec<u8>>, digest: &str) -> serde_json::Value {
    let path = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    serde_json::from_slice(&files[&path]).expect("blob JSON")
}

/// The archive's files by path.
fn archive_files(path: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    use std::io::Read as _;
    let bytes = std::fs::read(path).expect("read archive");
    let mut files = std::collections::BTreeMap::new();
    for entry in tar::Archive::new(&bytes[..]).entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").display().to_string();
        let mut contents = Vec::new();
        entry.read_to_end(&mut contents).expect("contents");
        files.insert(name, contents);
    }
    files
}

/// What the archive says about itself: manifest digest, config digest (the image id).
fn digests(path: &Path) -> (String, String) {
    let files = archive_files(path);
    let index: serde_json::Value =
        serde_json::from_slice(&files["index.json"]).expect("index.json");
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .expect("manifest digest")
        .to_string();
    let manifest = blob(&files, &manifest_digest);
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .expect("config digest")
        .to_string();
    (manifest_digest, config_digest)
}

/// The text a container wrote, from its CRI log (`<time> <stream> <tag> <text>` per line).
fn log_text(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.splitn(4, ' ').nth(3))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs the image's entrypoint with `args` in a pod; its exit code and output.
async fn run_in_pod(testbed: &Testbed, name: &str, args: &[&str]) -> (i32, String) {
    let cri = testbed.cri();
    let pod = PodIdentity::fresh("e2e-image", name);
    let log_dir = pod.log_directory(testbed.containerd().pod_log_root());
    let sandbox_config = host_network_sandbox_config(&pod, &log_dir);
    let mut spec = ContainerSpec::new("agent", IMAGE, &[]);
    spec.args = args.iter().map(|a| a.to_string()).collect();
    std::fs::create_dir_all(log_dir.join(&spec.name)).expect("log dir");
    let sandbox = cri
        .run_pod_sandbox(&sandbox_config)
        .await
        .expect("RunPodSandbox")
        .value;
    let container = cri
        .create_container(&sandbox, &container_config(&pod, &spec), &sandbox_config)
        .await
        .expect("CreateContainer with the image")
        .value;
    cri.start_container(&container)
        .await
        .expect("StartContainer");
    let status = cri
        .wait_for_container_exit(&container, EXIT_TIMEOUT)
        .await
        .expect("the container exits");
    let output = log_text(&log_dir.join(spec.log_path()));
    cri.remove_container(&container)
        .await
        .expect("RemoveContainer");
    cri.stop_pod_sandbox(&sandbox)
        .await
        .expect("StopPodSandbox");
    cri.remove_pod_sandbox(&sandbox)
        .await
        .expect("RemovePodSandbox");
    (status.exit_code, output)
}

/// Imports the archive into a private containerd started with `options` and runs the image.
async fn import_and_run(test: &str, archive: &Path, options: ContainerdOptions) {
    let started = Instant::now();
    let (manifest_digest, config_digest) = digests(archive);
    let work = tempfile::tempdir().expect("work dir");
    let testbed = Testbed::start_with(work.path(), options)
        .await
        .expect("private containerd");
    let socket = testbed.containerd().socket().to_path_buf();
    ctr_import(
        &socket,
        &ImageArchive {
            name: IMAGE.into(),
            path: archive.to_path_buf(),
            manifest_digest: manifest_digest.clone(),
            config_digest: config_digest.clone(),
        },
    )
    .expect("ctr images import of the archive");
    let names = ctr_image_names(&socket).expect("ctr images ls");
    assert!(
        names.iter().any(|n| n == IMAGE),
        "ctr names the image {IMAGE}: {names:?}"
    );
    let id = testbed
        .cri()
        .wait_for_image(IMAGE, VISIBLE_TIMEOUT)
        .await
        .expect("the CRI sees the image");
    assert_eq!(id, config_digest, "the CRI's image id is the config digest");

    let (code, output) = run_in_pod(&testbed, "version", &["--version"]).await;
    assert_eq!(code, 0, "`nodetrace --version` in the image: {output}");
    assert_eq!(
        output.trim(),
        format!("nodetrace {}", env!("CARGO_PKG_VERSION")),
        "the image's binary is this workspace's agent"
    );

    let (code, output) = run_in_pod(&testbed, "help", &["agent", "--help"]).await;
    assert_eq!(code, 0, "`nodetrace agent --help` in the image: {output}");
    assert!(
        output.contains("--listen") && output.contains("--data-dir"),
        "the agent's help: {output}"
    );
    testbed.stop().expect("the testbed leaves nothing behind");
    eprintln!(
        "{test}: image {manifest_digest} imported and run in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_runs_on_debian_containerd_1_6() {
    const TEST: &str = "image_runs_on_debian_containerd_1_6";
    let Some(archive) = archive(TEST) else { return };
    if skipped_unless_root(TEST, "a private containerd running pods") {
        return;
    }
    import_and_run(TEST, &archive, ContainerdOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_runs_on_containerd_2_4() {
    const TEST: &str = "image_runs_on_containerd_2_4";
    let Some(archive) = archive(TEST) else { return };
    if skipped_unless_root(TEST, "a private containerd running pods") {
        return;
    }
    let Some(built) = BuiltRuntimes::from_env() else {
        eprintln!("{TEST}: skipped: NODETRACE_RUNTIMES_DIR is not set (cargo xtask test sets it)");
        return;
    };
    let containerd = built
        .containerd("v2.4")
        .expect("containerd 2.4 (cargo xtask setup)");
    import_and_run(
        TEST,
        &archive,
        ContainerdOptions {
            containerd_binary: containerd.containerd,
            shim_binary: Some(containerd.shim),
            ..ContainerdOptions::default()
        },
    )
    .await;
}

/// skopeo (what pushes the archive to a registry) reads it by its tag and finds the same
/// manifest. Needs no root.
#[test]
fn skopeo_reads_the_archive_by_its_tag() {
    const TEST: &str = "skopeo_reads_the_archive_by_its_tag";
    let Some(archive) = archive(TEST) else { return };
    let (manifest_digest, _) = digests(&archive);
    let output = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{}:{REF_NAME}", archive.display()))
        .output()
        .expect("skopeo (cargo xtask setup installs it)");
    assert!(
        output.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let inspect: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(inspect["Digest"], manifest_digest.as_str());
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Os"], "linux");
    assert_eq!(
        inspect["Labels"]["org.opencontainers.image.title"],
        "nodetrace"
    );
}

/// One entry of a layer: path, type, mode, uid, gid, mtime, link target.
type LayerEntry = (String, tar::EntryType, u32, u64, u64, u64, Option<String>);

/// The entries of a gzip layer, in archive order.
fn layer_entries(gz: &[u8]) -> Vec<LayerEntry> {
    let mut tar = tar::Archive::new(gunzip(gz));
    tar.entries()
        .expect("layer entries")
        .map(|e| {
            let e = e.expect("entry");
            let h = e.header();
            (
                e.path().expect("path").display().to_string(),
                h.entry_type(),
                h.mode().expect("mode"),
                h.uid().expect("uid"),
                h.gid().expect("gid"),
                h.mtime().expect("mtime"),
                e.link_name()
                    .expect("link")
                    .map(|l| l.display().to_string()),
            )
        })
        .collect()
}

/// gunzip with the system's `gzip` (the testbed has no gzip crate; Debian always has it).
fn gunzip(gz: &[u8]) -> std::io::Cursor<Vec<u8>> {
    use std::io::Write as _;
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = gz.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().expect("gzip output");
    writer.join().expect("writer").expect("write to gzip");
    assert!(output.status.success(), "gzip -dc");
    std::io::Cursor::new(output.stdout)
}

/// The layers hold distroless/cc's layout (the loader, glibc, libgcc_s, the CA bundle, the
/// user database, the packages' status files) and the agent, with what makes them
/// reproducible: entries sorted by path, owner 0:0, one mtime. Needs no root.
#[test]
fn archive_has_the_base_layout_and_reproducible_entries() {
    const TEST: &str = "archive_has_the_base_layout_and_reproducible_entries";
    let Some(archive) = archive(TEST) else { return };
    let files = archive_files(&archive);
    let (manifest_digest, _) = digests(&archive);
    let manifest = blob(&files, &manifest_digest);
    let layers: Vec<Vec<LayerEntry>> = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            let digest = l["digest"].as_str().expect("digest");
            layer_entries(&files[&format!("blobs/sha256/{}", &digest[7..])])
        })
        .collect();
    assert_eq!(layers.len(), 2, "the Debian base and the agent");
    for layer in &layers {
        // Directories end in `/` in the tar; the order is that of the paths without it.
        let paths: Vec<&str> = layer.iter().map(|e| e.0.trim_end_matches('/')).collect();
        let mut sorted = paths.clone();
        sorted.sort_unstable();
        assert_eq!(paths, sorted, "entries sorted by path");
        let mtime = layer[0].5;
        for (path, _, _, uid, gid, entry_mtime, _) in layer {
            assert_eq!((*uid, *gid), (0, 0), "{path} owned by root");
            assert_eq!(*entry_mtime, mtime, "{path} has the layer's one mtime");
        }
    }
    let base = &layers[0];
    let find = |path: &str| {
        base.iter()
            .find(|e| e.0 == path)
            .unwrap_or_else(|| panic!("the base has {path}"))
    };
    let loader = find("lib64/ld-linux-x86-64.so.2");
    assert_eq!(loader.1, tar::EntryType::Symlink);
    assert_eq!(
        loader.6.as_deref(),
        Some("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    );
    for path in [
        "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        "lib/x86_64-linux-gnu/libc.so.6",
        "lib/x86_64-linux-gnu/libm.so.6",
        "lib/x86_64-linux-gnu/libgcc_s.so.1",
        "etc/ssl/certs/ca-certificates.crt",
        "etc/passwd",
        "etc/group",
        "etc/nsswitch.conf",
        "etc/services",
        "usr/lib/os-release",
        "var/lib/dpkg/status.d/libc6",
        "usr/share/doc/libc6/copyright",
    ] {
        assert_eq!(find(path).1, tar::EntryType::Regular, "{path} is a file");
    }
    assert_eq!(find("tmp/").2, 0o1777, "/tmp is sticky and world-writable");
    assert!(
        !base
            .iter()
            .any(|e| e.0.starts_with("usr/share/man/") || e.0.ends_with("changelog.Debian.gz")),
        "no manuals or changelogs"
    );
    let agent = &layers[1];
    assert_eq!(agent.len(), 1, "the agent layer is the binary alone");
    assert_eq!(
        (agent[0].0.as_str(), agent[0].1, agent[0].2),
        ("nodetrace", tar::EntryType::Regular, 0o755)
    );
}
