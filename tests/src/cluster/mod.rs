//! A real single-node Kubernetes cluster for the tests: etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and a kubelet (built from the Go module proxy by
//! `cargo xtask setup`), on the testbed's private containerd 2.x with runc and a bridge pod
//! network, everything under one work directory, on loopback and a node address of its own.
//! Pods are made through the API with the built `kubectl`. Dropping it (or
//! [`Cluster::stop`]) stops every process by pid, removes the pods, mounts, cgroups, the
//! interfaces it made, and gives the kernel settings the kubelet changed their values back.
//!
//! No client certificates: the API server makes its own serving certificate (which the
//! kubeconfigs trust) and the components authenticate with static tokens. The node address is
//! put on `lo`; the pod network is Debian's bridge and host-local plugins without masquerading
//! (no iptables rule).

pub mod config;
pub mod host;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::containerd::{CniNetwork, ContainerdOptions};
use crate::runtimes::{BuiltRuntimes, ContainerdBuild};
use crate::testbed::{Testbed, TestbedError};
use config::{IDENTITIES, KubeletInputs, NODE_NAME};
use host::{KUBELET_SYSCTLS, NodeAddress, SavedSysctls};

/// The node's address (on `lo`, see [`host::NodeAddress`]).
pub const NODE_IP: &str = "10.254.0.1";
/// The pod bridge.
const POD_BRIDGE: &str = "ntk8s-br0";
const POD_SUBNET: &str = "10.244.0.0/24";
const SERVICE_RANGE: &str = "10.96.0.0/24";
/// How long each component may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The Kubernetes executables.
#[derive(Debug, Clone)]
pub struct ClusterBinaries {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kube_scheduler: PathBuf,
    pub kubelet: PathBuf,
    pub kubectl: PathBuf,
}

impl ClusterBinaries {
    /// The newest builds of Kubernetes `k8s_line` (`v1.37`) and etcd `etcd_line` (`v3.7`).
    pub fn from_built(built: &BuiltRuntimes, k8s_line: &str, etcd_line: &str) -> Option<Self> {
        let (_, k8s) = built.newest("kubernetes", k8s_line)?;
        let (_, etcd) = built.newest("etcd", etcd_line)?;
        let binaries = Self {
            etcd: etcd.join("etcd"),
            kube_apiserver: k8s.join("kube-apiserver"),
            kube_controller_manager: k8s.join("kube-controller-manager"),
            kube_scheduler: k8s.join("kube-scheduler"),
            kubelet: k8s.join("kubelet"),
            kubectl: k8s.join("kubectl"),
        };
        [
            &binaries.etcd,
            &binaries.kube_apiserver,
            &binaries.kube_controller_manager,
            &binaries.kube_scheduler,
            &binaries.kubelet,
            &binaries.kubectl,
        ]
        .iter()
        .all(|p| p.is_file())
        .then_some(binaries)
    }
}

/// What can go wrong starting the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the host: {0}")]
    Host(std::io::Error),
    #[error(transparent)]
    Testbed(#[from] TestbedError),
    #[error("cannot start {name}: {source}")]
    Spawn {
        name: &'static str,
        source: std::io::Error,
    },
    #[error("{name} was not ready within {waited:?} ({last}); end of its log:\n{log_tail}")]
    NotReady {
        name: &'static str,
        waited: Duration,
        last: String,
        log_tail: String,
    },
    #[error("kubectl {args}: {message}")]
    Kubectl { args: String, message: String },
}

/// One component process, its output in `<work>/logs/<name>.log`.
#[derive(Debug)]
struct Component {
    name: &'static str,
    binary: PathBuf,
    args: Vec<String>,
    child: Child,
    log: PathBuf,
}

impl Component {
    fn spawn(
        name: &'static str,
        binary: &Path,
        args: &[String],
        logs: &Path,
    ) -> Result<Self, ClusterError> {
        use std::os::unix::process::CommandExt as _;
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|source| ClusterError::Io {
                action: "create",
                path: log.clone(),
                source,
            })?;
        let err = file.try_clone().map_err(|source| ClusterError::Io {
            action: "open",
            path: log.clone(),
            source,
        })?;
        let child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|source| ClusterError::Spawn { name, source })?;
        Ok(Self {
            name,
            binary: binary.to_path_buf(),
            args: args.to_vec(),
            child,
            log,
        })
    }

    fn log_tail(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b[b.len().saturating_sub(3000)..]).into_owned())
            .unwrap_or_default()
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then SIGKILL after `grace`.
    fn stop(mut self, grace: Duration) {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let started = Instant::now();
        while started.elapsed() < grace {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::warn!(component = self.name, pid, "ignored SIGTERM, killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running cluster; dropping it tears everything down.
#[derive(Debug)]
pub struct Cluster {
    work: PathBuf,
    binaries: ClusterBinaries,
    admin_kubeconfig: PathBuf,
    /// In start order; stopped in reverse.
    components: Vec<Component>,
    testbed: Option<Testbed>,
    sysctls: SavedSysctls,
    address: Option<NodeAddress>,
    /// The API server's command while it is stopped.
    stopped_api_server: Option<(PathBuf, Vec<String>, PathBuf)>,
    /// Whether /var/lib/kubelet existed before (the kubelet makes its device-plugins directory
    /// there whatever its root directory).
    kubelet_default_dir_existed: bool,
}

/// The directory the kubelet makes outside its root directory.
const KUBELET_DEFAULT_DIR: &str = "/var/lib/kubelet";

impl Cluster {
    /// Starts the whole cluster in `work` (created; deleted on teardown) on containerd
    /// `containerd` with `runc`, and waits until the node is Ready. With `kubelet_tracing`
    /// (an OTLP gRPC `host:port`), the kubelet sends every span it makes there.
    pub async fn start(
        work: &Path,
        binaries: ClusterBinaries,
        containerd: ContainerdBuild,
        runc: &Path,
        kubelet_tracing: Option<&str>,
    ) -> Result<Self, ClusterError> {
        let io = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| ClusterError::Io {
                action,
                path,
                source,
            }
        };
        std::fs::create_dir_all(work).map_err(io("create", work))?;
        let work = work.canonicalize().map_err(io("resolve", work))?;
        let logs = work.join("logs");
        std::fs::create_dir_all(&logs).map_err(io("create", &logs))?;
        let sysctls = SavedSysctls::save(&KUBELET_SYSCTLS).map_err(ClusterError::Host)?;
        let address = NodeAddress::add(&format!("{NODE_IP}/32")).map_err(ClusterError::Host)?;
        let testbed = Testbed::start_with(
            &work.join("node"),
            ContainerdOptions {
                containerd_binary: containerd.containerd,
                shim_binary: Some(containerd.shim),
                runc_binary: Some(runc.to_path_buf()),
                cni: Some(CniNetwork {
                    bin_dir: PathBuf::from("/usr/lib/cni"),
                    conflist: config::pod_network(POD_BRIDGE, POD_SUBNET, &work.join("ipam")),
                }),
                ..ContainerdOptions::default()
            },
        )
        .await?;
        let mut cluster = Self {
            admin_kubeconfig: work.join("admin.kubeconfig"),
            work,
            binaries,
            components: Vec::new(),
            testbed: Some(testbed),
            sysctls,
            address: Some(address),
            kubelet_default_dir_existed: Path::new(KUBELET_DEFAULT_DIR).exists(),
            stopped_api_server: None,
        };
        cluster
            .start_control_plane_and_node(&logs, kubelet_tracing)
            .await?;
        // The kubelet set kernel.panic and kernel.panic_on_oops as it started.
        cluster.sysctls.restore();
        Ok(cluster)
    }

    async fn start_control_plane_and_node(
        &mut self,
        logs: &Path,
        kubelet_tracing: Option<&str>,
    ) -> Result<(), ClusterError> {
        let work = self.work.clone();
        let write = |path: PathBuf, text: String| {
            std::fs::write(&path, text).map_err(|source| ClusterError::Io {
                action: "write",
                path,
                source,
            })
        };
        // Tokens and kubeconfigs; the API server makes its own serving certificate and CA.
        let tokens: Vec<(String, &str, &str)> = IDENTITIES
            .iter()
            .map(|(name, user, groups)| {
                (format!("{name}-{}", uuid::Uuid::new_v4()), *user, *groups)
            })
            .collect();
        write(work.join("tokens.csv"), config::token_file(&tokens))?;
        let apiserver_port = free_port()?;
        let server = format!("https://127.0.0.1:{apiserver_port}");
        let pki = work.join("apiserver-pki");
        let ca = pki.join("apiserver.crt");
        for ((name, _, _), (token, _, _)) in IDENTITIES.iter().zip(&tokens) {
            write(
                work.join(format!("{name}.kubeconfig")),
                config::kubeconfig(&server, &ca, token),
            )?;
        }
        let sa_key = work.join("sa.key");
        let status = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&sa_key)
            .arg("2048")
            .stderr(Stdio::null())
            .status()
            .map_err(|source| ClusterError::Spawn {
                name: "openssl",
                source,
            })?;
        if !status.success() {
            return Err(ClusterError::Host(std::io::Error::other(
                "openssl genrsa failed",
            )));
        }

        // etcd.
        let (client_port, peer_port, metrics_port) = (free_port()?, free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd = Component::spawn(
            "etcd",
            &self.binaries.etcd.clone(),
            &[
                "--name=nodetrace".to_owned(),
                format!("--data-dir={}", work.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=nodetrace={peer_url}"),
                format!("--listen-metrics-urls=http://127.0.0.1:{metrics_port}"),
            ],
            logs,
        )?;
        self.components.push(etcd);
        self.wait_ready("etcd", |_| http_ok(client_port, "/health"))
            .await?;

        // The API server.
        let apiserver = Component::spawn(
            "kube-apiserver",
            &self.binaries.kube_apiserver.clone(),
            &[
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".to_owned(),
                format!("--secure-port={apiserver_port}"),
                format!("--advertise-address={NODE_IP}"),
                format!("--cert-dir={}", pki.display()),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_owned(),
                format!("--service-account-key-file={}", sa_key.display()),
                format!("--service-account-signing-key-file={}", sa_key.display()),
                format!("--service-cluster-ip-range={SERVICE_RANGE}"),
                format!("--token-auth-file={}", work.join("tokens.csv").display()),
                "--authorization-mode=AlwaysAllow".to_owned(),
                "--kubelet-preferred-address-types=InternalIP".to_owned(),
            ],
            logs,
        )?;
        self.components.push(apiserver);
        self.wait_ready("kube-apiserver", |cluster| {
            cluster.kubectl(&["get", "--raw", "/readyz"]).map(drop)
        })
        .await?;

        // The controller manager and the scheduler.
        let cm_port = free_port()?;
        let cm = Component::spawn(
            "kube-controller-manager",
            &self.binaries.kube_controller_manager.clone(),
            &[
                format!(
                    "--kubeconfig={}",
                    work.join("controller-manager.kubeconfig").display()
                ),
                "--bind-address=127.0.0.1".to_owned(),
                format!("--secure-port={cm_port}"),
                format!("--root-ca-file={}", ca.display()),
                format!("--service-account-private-key-file={}", sa_key.display()),
                format!("--service-cluster-ip-range={SERVICE_RANGE}"),
                "--leader-elect=false".to_owned(),
                "--use-service-account-credentials=false".to_owned(),
            ],
            logs,
        )?;
        self.components.push(cm);
        let scheduler_port = free_port()?;
        let scheduler = Component::spawn(
            "kube-scheduler",
            &self.binaries.kube_scheduler.clone(),
            &[
                format!(
                    "--kubeconfig={}",
                    work.join("scheduler.kubeconfig").display()
                ),
                "--bind-address=127.0.0.1".to_owned(),
                format!("--secure-port={scheduler_port}"),
                "--leader-elect=false".to_owned(),
            ],
            logs,
        )?;
        self.components.push(scheduler);

        // The kubelet.
        let socket = self
            .testbed
            .as_ref()
            .map(|t| t.containerd().socket().to_path_buf())
            .unwrap_or_default();
        let kubelet_config = work.join("kubelet-config.yaml");
        let manifests = work.join("manifests");
        std::fs::create_dir_all(&manifests).map_err(|source| ClusterError::Io {
            action: "create",
            path: manifests.clone(),
            source,
        })?;
        write(
            kubelet_config.clone(),
            config::kubelet_config(&KubeletInputs {
                runtime_socket: &socket,
                node_ip: NODE_IP,
                port: 10250,
                healthz_port: free_port()?,
                tracing_endpoint: kubelet_tracing,
                static_pod_dir: &work.join("manifests"),
            }),
        )?;
        let kubelet = Component::spawn(
            "kubelet",
            &self.binaries.kubelet.clone(),
            &[
                format!("--config={}", kubelet_config.display()),
                format!("--kubeconfig={}", work.join("kubelet.kubeconfig").display()),
                format!("--root-dir={}", work.join("kubelet").display()),
                format!("--cert-dir={}", work.join("kubelet-pki").display()),
                format!("--node-ip={NODE_IP}"),
                format!("--hostname-override={NODE_NAME}"),
            ],
            logs,
        )?;
        self.components.push(kubelet);
        self.wait_ready("kubelet", Self::node_ready).await
    }

    /// Whether the node is Ready (its kubelet runs and reports).
    fn node_ready(&self) -> Result<(), String> {
        let ready = self.kubectl(&[
            "get",
            "node",
            NODE_NAME,
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
        ])?;
        if ready.trim() == "True" {
            Ok(())
        } else {
            Err(format!("node Ready={ready:?}"))
        }
    }

    /// Waits until `check` passes, failing early when the last component started exited.
    async fn wait_ready(
        &mut self,
        name: &'static str,
        check: impl Fn(&Self) -> Result<(), String>,
    ) -> Result<(), ClusterError> {
        let started = Instant::now();
        loop {
            let mut last = match check(self) {
                Ok(()) => {
                    tracing::info!(component = name, took = ?started.elapsed(), "ready");
                    return Ok(());
                }
                Err(e) => e,
            };
            let component = self.components.last_mut().expect("a component");
            if let Some(status) = component.exited() {
                last = format!("exited with {status}; {last}");
            }
            if started.elapsed() > READY_TIMEOUT || last.starts_with("exited") {
                return Err(ClusterError::NotReady {
                    name,
                    waited: started.elapsed(),
                    last,
                    log_tail: self
                        .components
                        .last()
                        .map(Component::log_tail)
                        .unwrap_or_default(),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Runs the built kubectl as the cluster's admin; its stdout, or the error it printed.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new(&self.binaries.kubectl)
            .arg(format!("--kubeconfig={}", self.admin_kubeconfig.display()))
            .args(args)
            .output()
            .map_err(|e| format!("cannot run kubectl: {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
        }
    }

    /// `kubectl apply -f -` of `manifest`.
    pub fn apply(&self, manifest: &str) -> Result<String, ClusterError> {
        use std::io::Write as _;
        let mut child = Command::new(&self.binaries.kubectl)
            .arg(format!("--kubeconfig={}", self.admin_kubeconfig.display()))
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| ClusterError::Spawn {
                name: "kubectl",
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(manifest.as_bytes());
        }
        let output = child
            .wait_with_output()
            .map_err(|source| ClusterError::Spawn {
                name: "kubectl",
                source,
            })?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(ClusterError::Kubectl {
                args: "apply -f -".to_owned(),
                message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }

    /// The testbed (containerd, images, CRI client) the node runs on.
    pub fn testbed(&self) -> &Testbed {
        self.testbed.as_ref().expect("running")
    }

    /// Stops the API server (SIGTERM), as an outage would; [`Cluster::start_api_server`]
    /// brings it back on the same state.
    pub fn stop_api_server(&mut self) {
        if let Some(at) = self
            .components
            .iter()
            .position(|c| c.name == "kube-apiserver")
        {
            let apiserver = self.components.remove(at);
            let (binary, args, log) = (
                apiserver.binary.clone(),
                apiserver.args.clone(),
                apiserver.log.clone(),
            );
            apiserver.stop(Duration::from_secs(10));
            self.stopped_api_server = Some((binary, args, log));
        }
    }

    /// Starts the API server stopped by [`Cluster::stop_api_server`] again and waits until it
    /// is ready.
    pub async fn start_api_server(&mut self) -> Result<(), ClusterError> {
        let Some((binary, args, log)) = self.stopped_api_server.take() else {
            return Ok(());
        };
        let logs = log.parent().map(Path::to_path_buf).unwrap_or_default();
        let apiserver = Component::spawn("kube-apiserver", &binary, &args, &logs)?;
        self.components.push(apiserver);
        self.wait_ready("kube-apiserver", |cluster| {
            cluster.kubectl(&["get", "--raw", "/readyz"]).map(drop)
        })
        .await
    }

    /// Restarts the kubelet from `binary` (an upgrade, or a restart when it is the same file)
    /// with the same flags, waits until the node is Ready again, and gives the kernel settings
    /// the kubelet changes at start their values back.
    pub async fn replace_kubelet(&mut self, binary: &Path) -> Result<(), ClusterError> {
        let Some(at) = self.components.iter().position(|c| c.name == "kubelet") else {
            return Ok(());
        };
        let kubelet = self.components.remove(at);
        let (args, log) = (kubelet.args.clone(), kubelet.log.clone());
        kubelet.stop(Duration::from_secs(10));
        let logs = log.parent().map(Path::to_path_buf).unwrap_or_default();
        self.components
            .push(Component::spawn("kubelet", binary, &args, &logs)?);
        let started = Instant::now();
        let result = self
            .wait_ready("kubelet", |cluster| {
                // The node stays Ready a while after the old kubelet stopped: give the new one
                // time to take over before asking.
                if started.elapsed() < Duration::from_secs(2) {
                    return Err("starting".to_owned());
                }
                cluster.node_ready()
            })
            .await;
        self.sysctls.restore();
        result
    }

    /// The pids of the component processes (etcd, API server, controller manager, scheduler,
    /// kubelet), for checking that teardown stops them.
    pub fn component_pids(&self) -> Vec<(&'static str, u32)> {
        self.components
            .iter()
            .map(|c| (c.name, c.child.id()))
            .collect()
    }

    /// The admin's kubeconfig.
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// Where a static pod's manifest goes: the kubelet runs it without the API server (its name
    /// gets the node's name appended: `<name>-nodetrace-node`).
    pub fn static_pod_dir(&self) -> PathBuf {
        self.work.join("manifests")
    }

    /// The kubelet's device-plugin registration socket, which tells the agent which process
    /// is the kubelet: the kubelet serves it in /var/lib/kubelet whatever its root directory.
    pub fn kubelet_socket(&self) -> PathBuf {
        PathBuf::from(KUBELET_DEFAULT_DIR).join("device-plugins/kubelet.sock")
    }

    /// Tears everything down (see the module doc).
    pub fn stop(mut self) {
        self.teardown();
    }

    fn teardown(&mut self) {
        // The kubelet first, so that it does not restart what the runtime's teardown removes.
        while let Some(component) = self.components.pop() {
            component.stop(Duration::from_secs(10));
        }
        if let Some(testbed) = self.testbed.take()
            && let Err(e) = testbed.stop()
        {
            tracing::error!(error = %e, "the node's containerd teardown");
        }
        match crate::teardown::mounts::unmount_all_below(&self.work) {
            Ok(_) => {}
            Err((_, problems)) => tracing::warn!(?problems, "unmount below the cluster"),
        }
        host::delete_link(POD_BRIDGE);
        if !self.kubelet_default_dir_existed
            && let Err(e) = std::fs::remove_dir_all(KUBELET_DEFAULT_DIR)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(error = %e, "remove {KUBELET_DEFAULT_DIR}");
        }
        self.address.take();
        self.sysctls.restore();
        if let Err(e) = std::fs::remove_dir_all(&self.work) {
            tracing::warn!(work = %self.work.display(), error = %e, "remove the cluster's work dir");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.testbed.is_some() || !self.components.is_empty() {
            self.teardown();
        }
    }
}

fn free_port() -> Result<u16, ClusterError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(ClusterError::Host)?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(ClusterError::Host)
}

/// Whether `GET path` on 127.0.0.1:`port` answers 200 (HTTP/1.0, no TLS).
fn http_ok(port: u16, path: &str) -> Result<(), String> {
    use std::io::{Read as _, Write as _};
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    if answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(answer.lines().next().unwrap_or("no answer").to_owned())
    }
}
