//! OCI runtime runs (runc, crun, youki): their command lines, and the container and pod each
//! one was about, from the bundle's `config.json`, the process's cgroup, or what was learnt
//! before.
//!
//! - [`argv`]: parses a runtime's argv into an [`OciInvocation`] (flag grammar in `flags`,
//!   signals in [`signal`]).
//! - [`bundle`]: reads a bundle's `config.json` into a [`ContainerInfo`].
//! - [`cgroup`]: tells the pod UID and container id from a cgroup path.
//! - [`cache`]: remembers containers for the runs that come after their bundle is gone.
//! - [`attribution`]: [`attribute`] ties a run to its container: cache, bundle, then cgroup.
//! - [`binaries`]: which files are the runtime binaries the kernel side follows.

pub mod argv;
pub mod attribution;
pub mod binaries;
pub mod bundle;
pub mod cache;
pub mod cgroup;
mod flags;
pub mod info;
pub mod signal;

pub use argv::{
    ArgvError, CreateArgs, ExecArgs, GlobalFlags, OciCommand, OciInvocation, OtherFlag, Runtime,
};
pub use attribution::{Attribution, AttributionError, AttributionSource, CgroupMiss, attribute};
pub use bundle::{BundleConfig, BundleError, bundle_dir, container_info, read_bundle, read_config};
pub use cache::{ContainerCache, KnownPod};
pub use cgroup::{CgroupError, CgroupLine, PodCgroup, parse_cgroup_path, parse_proc_cgroup};
pub use info::{ContainerInfo, ContainerKind};
pub use signal::Signal;
