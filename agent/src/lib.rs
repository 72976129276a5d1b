//! nodetrace: turns CRI calls and OCI runtime execs on a Kubernetes node into pod traces.
//!
//! One module per stage: `ebpf` (load programs, read the ring buffer), `oci` (runtime command
//! lines, bundles, cgroups), `correlate` (events to spans), `store` (LMDB), `api` (HTTP server,
//! formats, client). `model` holds the span types they share; `daemon` wires the agent and
//! `query` the `nodetrace trace` command.

pub mod api;
pub mod budget;
pub mod cli;
pub mod config_file;
pub mod correlate;
pub mod cri;
pub mod daemon;
pub mod ebpf;
pub mod explain;
pub mod export;
pub mod gateway;
pub mod hostfs;
pub mod k8s;
pub mod kubelet;
pub mod metrics;
pub mod model;
pub mod oci;
pub mod query;
pub mod redact;
pub mod runtime_state;
pub mod store;
pub mod supervise;
pub mod tls;
