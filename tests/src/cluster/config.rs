//! The files of the testbed's single-node cluster: static bearer tokens (no client
//! certificates: the API server's self-signed serving certificate is the only certificate),
//! kubeconfigs, the kubelet's configuration and the pod network's CNI conflist.

use std::path::Path;

/// The identities the components and the tests use, as `(token name, user, groups)`; the
/// token itself is `<name>-<random>`.
pub const IDENTITIES: [(&str, &str, &str); 4] = [
    ("admin", "nodetrace-admin", "system:masters"),
    ("kubelet", "system:node:nodetrace-node", "system:nodes"),
    ("controller-manager", "system:kube-controller-manager", ""),
    ("scheduler", "system:kube-scheduler", ""),
];

/// The node's name.
pub const NODE_NAME: &str = "nodetrace-node";

/// The API server's `--token-auth-file`: `token,user,uid,"groups"` lines.
pub fn token_file(tokens: &[(String, &str, &str)]) -> String {
    tokens
        .iter()
        .enumerate()
        .map(|(uid, (token, user, groups))| {
            if groups.is_empty() {
                format!("{token},{user},{}\n", uid + 1)
            } else {
                format!("{token},{user},{},\"{groups}\"\n", uid + 1)
            }
        })
        .collect()
}

/// A kubeconfig for `server` trusting `ca` and presenting `token`.
pub fn kubeconfig(server: &str, ca: &Path, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: nodetrace
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: nodetrace
  user:
    token: {token}
contexts:
- name: nodetrace
  context:
    cluster: nodetrace
    user: nodetrace
current-context: nodetrace
",
        ca = ca.display()
    )
}

/// What the kubelet's configuration names.
#[derive(Debug, Clone)]
pub struct KubeletInputs<'a> {
    pub runtime_socket: &'a Path,
    pub node_ip: &'a str,
    pub port: u16,
    pub healthz_port: u16,
    /// OTLP gRPC endpoint for the kubelet's own spans (ground truth), when wanted.
    pub tracing_endpoint: Option<&'a str>,
    /// Where the kubelet reads static pod manifests (pods it runs without the API server).
    pub static_pod_dir: &'a Path,
}

/// The KubeletConfiguration: cgroup v1 allowed (this machine is hybrid), cgroupfs (PID 1 is
/// not systemd), no iptables chains, anonymous read by the API server (logs, exec), eviction
/// and image GC thresholds low enough for a nearly full disk (so test images are not
/// collected).
pub fn kubelet_config(inputs: &KubeletInputs<'_>) -> String {
    let tracing = inputs
        .tracing_endpoint
        .map(|endpoint| {
            format!("tracing:\n  endpoint: {endpoint}\n  samplingRatePerMillion: 1000000\n")
        })
        .unwrap_or_default();
    format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://{socket}
address: {node_ip}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
makeIPTablesUtilChains: false
failSwapOn: false
evictionHard:
  memory.available: \"100Mi\"
  nodefs.available: \"1%\"
  nodefs.inodesFree: \"1%\"
  imagefs.available: \"1%\"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
staticPodPath: {static_pods}
fileCheckFrequency: 1s
{tracing}",
        socket = inputs.runtime_socket.display(),
        node_ip = inputs.node_ip,
        port = inputs.port,
        healthz = inputs.healthz_port,
        static_pods = inputs.static_pod_dir.display(),
    )
}

/// The pod network: a bridge of the testbed's own with host-local addresses kept in
/// `ipam_dir`, no masquerading (no iptables rule).
pub fn pod_network(bridge: &str, subnet: &str, ipam_dir: &Path) -> String {
    format!(
        r#"{{
  "cniVersion": "1.0.0",
  "name": "nodetrace-pods",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "{bridge}",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {{
        "type": "host-local",
        "ranges": [[{{ "subnet": "{subnet}" }}]],
        "dataDir": "{ipam}"
      }}
    }},
    {{ "type": "loopback" }}
  ]
}}
"#,
        ipam = ipam_dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_users_and_groups() {
        let text = token_file(&[
            ("a-1".to_owned(), "admin", "system:masters"),
            ("s-2".to_owned(), "system:kube-scheduler", ""),
        ]);
        assert_eq!(
            text,
            "a-1,admin,1,\"system:masters\"\ns-2,system:kube-scheduler,2\n"
        );
    }

    #[test]
    fn the_kubelet_config_allows_cgroup_v1_and_names_the_runtime() {
        let text = kubelet_config(&KubeletInputs {
            runtime_socket: Path::new("/w/containerd.sock"),
            node_ip: "10.254.0.1",
            port: 10250,
            healthz_port: 10248,
            tracing_endpoint: None,
            static_pod_dir: Path::new("/w/manifests"),
        });
        for needle in [
            "failCgroupV1: false",
            "containerRuntimeEndpoint: unix:///w/containerd.sock",
            "address: 10.254.0.1",
        ] {
            assert!(text.contains(needle), "{needle} in\n{text}");
        }
        assert!(!text.contains("tracing"));
    }

    #[test]
    fn the_pod_network_is_valid_json() {
        let text = pod_network("ntk8s0", "10.244.0.0/24", Path::new("/w/ipam"));
        let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(value["plugins"][0]["bridge"], "ntk8s0");
        assert_eq!(value["plugins"][0]["ipMasq"], false);
        assert_eq!(value["plugins"][0]["ipam"]["dataDir"], "/w/ipam");
    }
}
