//! Where to put uprobes on a Go container runtime's CRI handlers, and how to read their
//! requests: everything the agent learns from the runtime's process and binary before it
//! attaches.
//!
//! - [`discover`]: the process serving a CRI socket, as a [`RuntimeProcess`] ([`process`]).
//! - [`symbols`]: a binary's functions by name and file offset ([`GoBinary`]), from the ELF
//!   symbol tables or Go's own function table ([`gopclntab`]; addresses to file offsets in
//!   `segments`).
//! - [`patterns`]: [`resolve`] finds the CRI handlers of containerd 1.6/1.7, 2.x or CRI-O.
//! - [`returns`]: the RET instructions of a function ([`ret_offsets`]), where the exit probes go
//!   instead of uretprobes.
//! - [`offsets`]: [`cri_types`] reads the CRI types' field offsets ([`CriOffsets`]) from the
//!   binary's own getters (instruction shapes in `getter`; decoding in `disasm`).
//! - [`daemon`]: the runtime process in the kernel's tracked map, for the CNI plugins it runs.
//! - [`plan`]: all of the above as the uprobes to attach; [`watch`] keeps them attached to the
//!   running runtime.

pub mod buildinfo;
pub mod daemon;
pub mod disasm;
pub mod discover;
pub(crate) mod getter;
pub mod gopclntab;
pub mod offsets;
pub mod patterns;
pub mod plan;
pub mod process;
pub(crate) mod prologue;
pub mod returns;
mod segments;
pub mod symbols;
pub mod watch;

#[cfg(test)]
mod containerd_tests;
#[cfg(test)]
mod go_built_tests;
#[cfg(test)]
mod layout_tests;

pub use buildinfo::BuildInfo;
pub use disasm::DisasmError;
pub use discover::{DEFAULT_SOCKETS, DiscoverError, ProcFs};
pub use gopclntab::{PclnVersion, PclntabError};
pub use offsets::{CriOffsets, CriTypes, Generator, OffsetError, UNKNOWN_OFFSET, cri_types};
pub use patterns::{CriMethod, Handler, ResolvedRuntime, RuntimeKind, resolve};
pub use plan::{PlanError, ProbePlan, plan};
pub use process::{BinaryIdentity, ProcessError, RuntimeProcess};
pub use returns::{RetSite, ret_offsets};
pub use symbols::{Function, GoBinary, SymbolError, SymbolSource, TextStart};
pub use watch::{CriWatcher, WatchConfig};
