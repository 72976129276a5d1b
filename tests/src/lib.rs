//! nodetrace-testbed: a real node runtime to test nodetrace against, with nothing from a
//! registry. It starts a private containerd (with runc) on private directories, builds
//! a pause and a busybox image locally and imports them, drives pods through the CRI as
//! a kubelet would (timing every call), and tears everything down afterwards.
//!
//! Needs root, `/usr/bin/containerd`, `runc`, `ctr`, gcc with a static libc and
//! `/bin/busybox` (Debian: containerd runc busybox-static gcc libc6-dev), and `protoc`
//! to build (protobuf-compiler). The private registry for PullImage tests needs
//! `docker-registry` and `skopeo` (Debian packages of those names). [`fake_apiserver`] stands
//! in for the Kubernetes API server (pods, list and watch), which cannot run here.

pub mod agreement;
pub mod cgroup_controllers;
pub mod clock;
pub mod cluster;
pub mod containerd;
pub mod cri;
pub mod fake_apiserver;
pub mod images;
pub mod lifecycle;
pub mod pod_cgroups;
pub mod registry;
pub mod rotel;
pub mod runtimes;
pub mod teardown;
pub mod testbed;

pub use cgroup_controllers::ControllersOnV1;
pub use clock::{CallWindow, Timed};
pub use containerd::{CniNetwork, ContainerdError, ContainerdOptions, PrivateContainerd};
pub use cri::{CriCall, CriClient, CriError};
pub use images::{BUSYBOX_IMAGE, LocalImages, PAUSE_IMAGE};
pub use lifecycle::{LifecycleReport, PodLifecycle};
pub use registry::{Registry, RegistryError};
pub use runtimes::{BuiltRuntimes, ContainerdBuild};
pub use teardown::{TeardownError, TeardownReport};
pub use testbed::{Testbed, TestbedError};
