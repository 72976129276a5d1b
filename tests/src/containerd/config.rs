//! Where a private containerd keeps everything inside its work directory, and the
//! `config.toml` that points containerd, its CRI plugin, its shim and runc there: version 2
//! for containerd 1.x, version 3 for 2.x (whose CRI is split into the images and runtime
//! plugins, and which would otherwise open NRI's and CDI's host-wide paths).

use std::path::{Path, PathBuf};

/// Longest path a unix socket address can carry (`sun_path` minus the NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// The files and directories of one private containerd, all below `work_dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerdLayout {
    /// The directory everything lives in (absolute, symlinks resolved).
    pub work_dir: PathBuf,
    /// containerd's `root` (content store, snapshots, metadata).
    pub root: PathBuf,
    /// containerd's `state` (bundles, fifos, sandbox files).
    pub state: PathBuf,
    /// The gRPC socket (containerd API and CRI).
    pub socket: PathBuf,
    /// The ttrpc socket.
    pub ttrpc_socket: PathBuf,
    /// The `Root` handed to the runc shim; runc's `--root` is `<runc_root>/k8s.io`.
    pub runc_root: PathBuf,
    /// The generated config file.
    pub config: PathBuf,
    /// containerd's stdout and stderr.
    pub log: PathBuf,
    /// Parent of the pods' log directories.
    pub pod_logs: PathBuf,
    /// Where local image archives are built.
    pub images: PathBuf,
    /// Empty CNI directories (pods use the host network).
    pub cni: PathBuf,
    /// Registry host configurations (`<host>/hosts.toml`), containerd 2.x's way to name
    /// plain-HTTP registries.
    pub registry_hosts: PathBuf,
}

/// Which config file format a containerd reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigVersion {
    /// containerd 1.6 and 1.7.
    V2,
    /// containerd 2.x.
    V3,
}

/// What the config names besides the layout.
#[derive(Debug, Clone, Copy)]
pub struct ConfigInputs<'a> {
    /// The CRI's sandbox (pause) image.
    pub sandbox_image: &'a str,
    /// Registries (`host:port`) pulled from over plain HTTP.
    pub insecure_registries: &'a [String],
    /// The `containerd-shim-runc-v2` to run, when not the one on the PATH.
    pub shim: Option<&'a Path>,
    /// The runc to run, when not the one on the PATH.
    pub runc: Option<&'a Path>,
    /// The CNI plugins' directory, when pods get a network (else an empty private one).
    pub cni_bin: Option<&'a Path>,
    /// Whether the version 3 config names it in the list `bin_dirs` (containerd 2.1 and
    /// later, which ignore a version 3 config's `bin_dir`) or in `bin_dir` (2.0).
    pub cni_bin_dirs: bool,
}

impl ContainerdLayout {
    /// The layout below `work_dir`, which must be absolute.
    pub fn new(work_dir: &Path) -> Self {
        let at = |name: &str| work_dir.join(name);
        Self {
            work_dir: work_dir.to_path_buf(),
            root: at("root"),
            state: at("state"),
            socket: at("containerd.sock"),
            ttrpc_socket: at("containerd.sock.ttrpc"),
            runc_root: at("runc"),
            config: at("config.toml"),
            log: at("containerd.log"),
            pod_logs: at("pods"),
            images: at("images"),
            cni: at("cni"),
            registry_hosts: at("certs.d"),
        }
    }

    /// The layout whose gRPC socket is `socket`, when `socket` is absolute, named as
    /// [`new`](Self::new) names it, and next to a generated config file (so a node's own
    /// `/run/containerd/containerd.sock` is not taken for one): how a helper that was handed
    /// only the CRI socket finds the state directory (`--runtime-state-root` of the agent).
    pub fn of_socket(socket: &Path) -> Option<Self> {
        let layout = Self::new(socket.parent()?);
        (socket.is_absolute() && layout.socket == socket && layout.config.is_file())
            .then_some(layout)
    }

    /// The directory holding the bundles of the CRI's tasks.
    pub fn bundles_dir(&self) -> PathBuf {
        self.state
            .join("io.containerd.runtime.v2.task")
            .join("k8s.io")
    }

    /// The bundle of the sandbox or container `id`.
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.bundles_dir().join(id)
    }

    /// What runc gets as `--root`.
    pub fn runtime_root(&self) -> PathBuf {
        self.runc_root.join("k8s.io")
    }

    /// The sections both formats share: containerd's own sockets (private), no debug or
    /// metrics listener.
    fn listeners(&self) -> String {
        let q = |p: &Path| toml_string(&p.display().to_string());
        format!(
            r#"[grpc]
  address = {socket}

[ttrpc]
  address = {ttrpc}

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""
"#,
            socket = q(&self.socket),
            ttrpc = q(&self.ttrpc_socket),
        )
    }

    /// The config file's text in `version`'s format.
    pub fn render(&self, version: ConfigVersion, inputs: &ConfigInputs<'_>) -> String {
        let q = |p: &Path| toml_string(&p.display().to_string());
        let mut text = match version {
            ConfigVersion::V2 => {
                let text = self.render_config(inputs.sandbox_image, inputs.insecure_registries);
                match inputs.cni_bin {
                    Some(bin) => text.replace(
                        &format!("bin_dir = {}", q(&self.cni.join("bin"))),
                        &format!("bin_dir = {}", q(bin)),
                    ),
                    None => text,
                }
            }
            ConfigVersion::V3 => self.render_config_v3(inputs),
        };
        let runtime_options = match version {
            ConfigVersion::V2 => {
                r#"[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]"#
            }
            ConfigVersion::V3 => {
                r#"[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]"#
            }
        };
        if let (ConfigVersion::V2, Some(shim)) = (version, inputs.shim) {
            let runtime_type = "runtime_type = \"io.containerd.runc.v2\"\n";
            let at = text.find(runtime_type).expect("runtime type") + runtime_type.len();
            text.insert_str(
                at,
                &format!(
                    "        runtime_path = {}\n",
                    toml_string(&shim.display().to_string())
                ),
            );
        }
        let mut extra = String::new();
        if let Some(runc) = inputs.runc {
            extra.push_str(&format!(
                "          BinaryName = {}\n",
                toml_string(&runc.display().to_string())
            ));
        }
        if !extra.is_empty() {
            let at =
                text.find(runtime_options).expect("runtime options table") + runtime_options.len();
            text.insert_str(at + 1, &extra);
        }
        text
    }

    /// The `hosts.toml` of a registry pulled from over plain HTTP (containerd 2.x).
    pub fn registry_hosts_file(&self, host: &str) -> (PathBuf, String) {
        let endpoint = toml_string(&format!("http://{host}"));
        (
            self.registry_hosts.join(host).join("hosts.toml"),
            format!(
                "# Generated by nodetrace-testbed.\nserver = {endpoint}\n\n[host.{endpoint}]\n  capabilities = [\"pull\", \"resolve\"]\n"
            ),
        )
    }

    /// The version 3 config (containerd 2.x): every path in the work directory, NRI off (its
    /// socket is host-wide), CDI specs and registry hosts read from the work directory, the
    /// shim named by `runtime_path` when given.
    fn render_config_v3(&self, inputs: &ConfigInputs<'_>) -> String {
        let q = |p: &Path| toml_string(&p.display().to_string());
        let runtime_path = inputs
            .shim
            .map(|shim| format!("        runtime_path = {}\n", q(shim)))
            .unwrap_or_default();
        format!(
            r#"# Generated by nodetrace-testbed: a private containerd 2.x for tests.
version = 3
root = {root}
state = {state}
oom_score = 0
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.erofs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

{listeners}
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = {opt}

  [plugins."io.containerd.nri.v1.nri"]
    disable = true

  [plugins."io.containerd.image-verifier.v1.bindir"]
    bin_dir = {verifiers}

  [plugins."io.containerd.cri.v1.images"]
    snapshotter = "overlayfs"

    [plugins."io.containerd.cri.v1.images".pinned_images]
      sandbox = {sandbox_image}

    [plugins."io.containerd.cri.v1.images".registry]
      config_path = {hosts}

  [plugins."io.containerd.cri.v1.runtime"]
    restrict_oom_score_adj = true
    disable_apparmor = true
    enable_selinux = false
    max_container_log_line_size = 16384
    cdi_spec_dirs = [{cdi}]

    [plugins."io.containerd.cri.v1.runtime".containerd]
      default_runtime_name = "runc"

      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
{runtime_path}
        [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = {runc_root}

    [plugins."io.containerd.cri.v1.runtime".cni]
      {cni_bin_key}
      conf_dir = {cni_conf}

  [plugins."io.containerd.grpc.v1.cri"]
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
"#,
            root = q(&self.root),
            state = q(&self.state),
            listeners = self.listeners(),
            opt = q(&self.root.join("opt")),
            sandbox_image = toml_string(inputs.sandbox_image),
            hosts = q(&self.registry_hosts),
            cdi = q(&self.work_dir.join("cdi")),
            verifiers = q(&self.work_dir.join("image-verifiers")),
            runc_root = q(&self.runc_root),
            cni_bin_key = {
                let dir = q(inputs.cni_bin.unwrap_or(&self.cni.join("bin")));
                if inputs.cni_bin_dirs {
                    format!("bin_dirs = [{dir}]")
                } else {
                    format!("bin_dir = {dir}")
                }
            },
            cni_conf = q(&self.cni.join("net.d")),
        )
    }

    /// The config file's text. The CRI pulls from each of `insecure_registries`
    /// (`host:port`) over plain HTTP, through a mirror entry naming that registry itself;
    /// without any, the config has no registry section at all.
    pub fn render_config(&self, sandbox_image: &str, insecure_registries: &[String]) -> String {
        let q = |p: &Path| toml_string(&p.display().to_string());
        let mut text = format!(
            r#"# Generated by nodetrace-testbed: a private containerd for tests.
version = 2
root = {root}
state = {state}
oom_score = 0
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

{listeners}
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = {opt}

  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = {sandbox_image}
    restrict_oom_score_adj = true
    disable_apparmor = true
    enable_selinux = false
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    max_container_log_line_size = 16384

    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"

        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = {runc_root}

    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = {cni_bin}
      conf_dir = {cni_conf}
"#,
            root = q(&self.root),
            state = q(&self.state),
            listeners = self.listeners(),
            opt = q(&self.root.join("opt")),
            sandbox_image = toml_string(sandbox_image),
            runc_root = q(&self.runc_root),
            cni_bin = q(&self.cni.join("bin")),
            cni_conf = q(&self.cni.join("net.d")),
        );
        if !insecure_registries.is_empty() {
            text.push_str(
                r#"
    [plugins."io.containerd.grpc.v1.cri".registry]
"#,
            );
            for host in insecure_registries {
                text.push_str(&format!(
                    r#"      [plugins."io.containerd.grpc.v1.cri".registry.mirrors.{key}]
        endpoint = [{endpoint}]
"#,
                    key = toml_string(host),
                    endpoint = toml_string(&format!("http://{host}")),
                ));
            }
        }
        text
    }
}

/// A TOML basic string with `"`, `\` and control characters escaped.
fn toml_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_points_everything_into_the_work_dir() {
        let layout = ContainerdLayout::new(Path::new("/tmp/ntb-x"));
        let text = layout.render_config("docker.io/nodetrace/pause:test", &[]);
        for needle in [
            r#"root = "/tmp/ntb-x/root""#,
            r#"state = "/tmp/ntb-x/state""#,
            r#"address = "/tmp/ntb-x/containerd.sock""#,
            r#"address = "/tmp/ntb-x/containerd.sock.ttrpc""#,
            r#"sandbox_image = "docker.io/nodetrace/pause:test""#,
            "restrict_oom_score_adj = true",
            "SystemdCgroup = false",
            r#"Root = "/tmp/ntb-x/runc""#,
            r#"snapshotter = "overlayfs""#,
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert_eq!(
            layout.bundle("abc"),
            Path::new("/tmp/ntb-x/state/io.containerd.runtime.v2.task/k8s.io/abc")
        );
    }

    #[test]
    fn the_state_directory_is_found_from_the_socket_alone() {
        let work = tempfile::tempdir().expect("tempdir");
        let layout = ContainerdLayout::new(work.path());
        assert!(
            ContainerdLayout::of_socket(&layout.socket).is_none(),
            "no config file yet"
        );
        std::fs::write(&layout.config, "version = 3\n").expect("write the config");
        let found = ContainerdLayout::of_socket(&layout.socket).expect("a testbed socket");
        assert_eq!(found.state, work.path().join("state"));
        let no_runtime = work.path().join("no-runtime.sock");
        for other in [
            Path::new("/run/containerd/containerd.sock.ttrpc"),
            no_runtime.as_path(),
            Path::new("containerd.sock"),
            Path::new("/"),
        ] {
            assert!(
                ContainerdLayout::of_socket(other).is_none(),
                "{}",
                other.display()
            );
        }
    }

    #[test]
    fn insecure_registries_are_plain_http_mirrors() {
        let layout = ContainerdLayout::new(Path::new("/tmp/ntb-x"));
        let plain = layout.render_config("p", &[]);
        assert!(
            !plain.contains("registry"),
            "no registry section by default:\n{plain}"
        );
        let text = layout.render_config(
            "p",
            &["127.0.0.1:5000".to_string(), "localhost:5001".to_string()],
        );
        assert!(
            text.starts_with(&plain),
            "the default config is kept as it is"
        );
        for needle in [
            r#"[plugins."io.containerd.grpc.v1.cri".registry.mirrors."127.0.0.1:5000"]"#,
            r#"endpoint = ["http://127.0.0.1:5000"]"#,
            r#"[plugins."io.containerd.grpc.v1.cri".registry.mirrors."localhost:5001"]"#,
            r#"endpoint = ["http://localhost:5001"]"#,
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    #[test]
    fn a_containerd_2_config_keeps_everything_private_too() {
        let layout = ContainerdLayout::new(Path::new("/tmp/ntb-x"));
        let text = layout.render(
            ConfigVersion::V3,
            &ConfigInputs {
                sandbox_image: "p:1",
                insecure_registries: &[],
                shim: Some(Path::new("/cache/containerd-shim-runc-v2")),
                runc: Some(Path::new("/cache/runc")),
                cni_bin: Some(Path::new("/usr/lib/cni")),
                cni_bin_dirs: true,
            },
        );
        let parsed: toml::Table = text.parse().expect("valid TOML");
        let runtime = &parsed["plugins"]["io.containerd.cri.v1.runtime"];
        let runc = &runtime["containerd"]["runtimes"]["runc"];
        assert_eq!(parsed["version"].as_integer(), Some(3));
        assert_eq!(
            runc["runtime_path"].as_str(),
            Some("/cache/containerd-shim-runc-v2")
        );
        assert_eq!(runc["options"]["BinaryName"].as_str(), Some("/cache/runc"));
        assert_eq!(runc["options"]["Root"].as_str(), Some("/tmp/ntb-x/runc"));
        assert_eq!(runtime["cdi_spec_dirs"][0].as_str(), Some("/tmp/ntb-x/cdi"));
        assert_eq!(runtime["cni"]["bin_dirs"][0].as_str(), Some("/usr/lib/cni"));
        assert_eq!(
            parsed["plugins"]["io.containerd.image-verifier.v1.bindir"]["bin_dir"].as_str(),
            Some("/tmp/ntb-x/image-verifiers")
        );
        assert_eq!(
            parsed["plugins"]["io.containerd.nri.v1.nri"]["disable"].as_bool(),
            Some(true)
        );
        let images = &parsed["plugins"]["io.containerd.cri.v1.images"];
        assert_eq!(images["pinned_images"]["sandbox"].as_str(), Some("p:1"));
        assert_eq!(
            images["registry"]["config_path"].as_str(),
            Some("/tmp/ntb-x/certs.d")
        );
        let (path, hosts) = layout.registry_hosts_file("127.0.0.1:5000");
        assert_eq!(
            path,
            Path::new("/tmp/ntb-x/certs.d/127.0.0.1:5000/hosts.toml")
        );
        let hosts: toml::Table = hosts.parse().expect("valid TOML");
        assert_eq!(hosts["server"].as_str(), Some("http://127.0.0.1:5000"));
    }

    #[test]
    fn a_containerd_1_config_names_the_runc_to_run() {
        let layout = ContainerdLayout::new(Path::new("/tmp/ntb-x"));
        let text = layout.render(
            ConfigVersion::V2,
            &ConfigInputs {
                sandbox_image: "p:1",
                insecure_registries: &[],
                shim: Some(Path::new("/cache/shim")),
                runc: Some(Path::new("/cache/runc")),
                cni_bin: Some(Path::new("/usr/lib/cni")),
                cni_bin_dirs: true,
            },
        );
        let parsed: toml::Table = text.parse().expect("valid TOML");
        let runc =
            &parsed["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["runc"];
        assert_eq!(runc["options"]["BinaryName"].as_str(), Some("/cache/runc"));
        assert_eq!(runc["runtime_path"].as_str(), Some("/cache/shim"));
        assert_eq!(
            parsed["plugins"]["io.containerd.grpc.v1.cri"]["cni"]["bin_dir"].as_str(),
            Some("/usr/lib/cni")
        );
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(toml_string("x\ny"), r#""x\u000Ay""#);
    }
}
