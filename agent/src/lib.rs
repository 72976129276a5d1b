//! nodetrace: turns CRI calls and OCI runtime execs on a Kubernetes node into pod traces.
//!
//! One module per stage: `ebpf` (load programs, read the ring buffer), `oci` (runtime command
//! lines and bundles), `correlate` (events to spans), `store` (LMDB), `api` (HTTP), `query`
//! (the CLI's client side). `model` holds the span types they share.

pub mod api;
pub mod ebpf;
pub mod model;
pub mod oci;
pub mod store;
