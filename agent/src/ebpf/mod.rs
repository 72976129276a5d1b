//! Kernel side plumbing: load and attach the eBPF programs, read their ring buffer, and turn
//! raw records into owned events.

mod clock;
mod events;
mod loader;
mod log;
mod offsets;
mod reader;
mod tracefs;
mod uprobes;

pub use clock::WallClock;
pub use events::{
    CniOutputRecord, CriRecord, ExecRecord, ExitRecord, KernelEvent, KubeletRecord, parse_record,
};
pub use loader::{CNI_OUTPUT_TRACEPOINT, KernelDrops, KernelProbes, TRACEPOINTS};
pub use log::{EbpfLogCounts, EbpfLogLevel, EbpfLogReader};
pub use offsets::{VMLINUX_BTF, kernel_offsets};
pub use reader::{ReaderStats, run_reader};
pub use tracefs::ensure_tracefs;
pub use uprobes::{CriAttachment, HandlerProbe, KubeletProbe};

use std::path::PathBuf;

/// Everything that can go wrong between the agent and the kernel.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("cannot read kernel BTF from {path}")]
    Btf {
        path: PathBuf,
        #[source]
        source: btf_rs::Error,
    },
    #[error("kernel BTF has no field {strukt}.{member}")]
    MissingField { strukt: String, member: String },
    #[error(
        "tracefs is not mounted and mounting it at {path} failed (the agent needs CAP_SYS_ADMIN, or mount tracefs there yourself)"
    )]
    MountTracefs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("loading the eBPF object failed (the agent needs root or CAP_BPF + CAP_PERFMON)")]
    Load {
        #[source]
        source: aya::EbpfError,
    },
    #[error("the eBPF object has no {what} named {name}")]
    Missing { what: &'static str, name: String },
    #[error("eBPF program {name} failed to load or attach")]
    Program {
        name: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map {name} cannot be used")]
    Map {
        name: String,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("cannot read the eBPF programs' log records")]
    Log {
        #[source]
        source: aya_log::Error,
    },
    #[error("waiting on the ring buffer failed")]
    Poll {
        #[source]
        source: std::io::Error,
    },
    #[error("malformed ring-buffer record: {reason}")]
    Record { reason: String },
}
