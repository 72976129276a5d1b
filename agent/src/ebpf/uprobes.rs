//! Attaches the CRI uprobes to a runtime binary (entry + every RET of each handler, the method
//! in the attach cookie) and detaches them when the runtime goes away.

use aya::{
    maps::{Array, PerCpuArray},
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLink, UProbeScope},
    },
};
use nodetrace_common::{
    CRI_COOKIE_COUNT_ONLY, CRI_COOKIE_RETURN, CriMethod, CriOffsets, KubeletFn, KubeletOffsets,
};
use std::path::{Path, PathBuf};

use super::{EbpfError, KernelProbes};

/// Where to probe one handler, as file offsets into the runtime binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerProbe {
    pub method: CriMethod,
    pub entry_offset: u64,
    pub ret_offsets: Vec<u64>,
}

/// Where to probe one kubelet function, as file offsets into the kubelet binary, and the
/// cookies that tell the programs which registers hold what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeletProbe {
    pub function: KubeletFn,
    pub entry_offset: u64,
    pub ret_offsets: Vec<u64>,
    pub entry_cookie: u64,
    pub return_cookie: u64,
}

/// The uprobes attached to one runtime binary; detached when dropped.
#[derive(Debug)]
pub struct CriAttachment {
    pub binary: PathBuf,
    links: Vec<UProbeLink>,
}

impl CriAttachment {
    /// Number of uprobes attached.
    pub fn probes(&self) -> usize {
        self.links.len()
    }
}

/// Threads that close uprobe links at once.
const DETACH_THREADS: usize = 32;

impl Drop for CriAttachment {
    /// Closing a uprobe waits for the kernel (~0.1 s each on 6.18, mostly one at a time:
    /// measured, only the first of each thread overlaps). Closing from several threads still
    /// saves a little; callers that must not wait drop the attachment on a thread of their own.
    fn drop(&mut self) {
        let links = std::mem::take(&mut self.links);
        if links.is_empty() {
            return;
        }
        let per_thread = links.len().div_ceil(DETACH_THREADS);
        let mut groups: Vec<Vec<UProbeLink>> = Vec::new();
        let mut links = links.into_iter().peekable();
        while links.peek().is_some() {
            groups.push(links.by_ref().take(per_thread).collect());
        }
        std::thread::scope(|scope| {
            for group in groups {
                scope.spawn(move || drop(group));
            }
        });
    }
}

impl KernelProbes {
    /// Sets the field offsets and attaches the handlers' probes. On error, what was attached
    /// is detached again.
    pub fn attach_cri(
        &mut self,
        binary: &Path,
        offsets: CriOffsets,
        handlers: &[HandlerProbe],
    ) -> Result<CriAttachment, EbpfError> {
        let map_error = |source| EbpfError::Map {
            name: "CRI_OFFSETS".to_owned(),
            source,
        };
        let map = self
            .ebpf_mut()
            .map_mut("CRI_OFFSETS")
            .ok_or_else(|| EbpfError::Missing {
                what: "map",
                name: "CRI_OFFSETS".to_owned(),
            })?;
        let mut table: Array<_, CriOffsets> = Array::try_from(map).map_err(map_error)?;
        table.set(0, offsets, 0).map_err(map_error)?;

        let mut points = Vec::new();
        for handler in handlers {
            let count_only = if handler.method.is_traced() {
                0
            } else {
                CRI_COOKIE_COUNT_ONLY
            };
            let method = handler.method as u64 | count_only;
            if count_only == 0 {
                points.push(("cri_entry", handler.entry_offset, method));
            }
            points.extend(
                handler
                    .ret_offsets
                    .iter()
                    .map(|off| ("cri_return", *off, method | CRI_COOKIE_RETURN)),
            );
        }
        self.attach_points(binary, &points)
    }

    /// Sets kubelet's `v1.Pod` offsets and attaches the kubelet functions' probes. On error,
    /// what was attached is detached again.
    pub fn attach_kubelet(
        &mut self,
        binary: &Path,
        offsets: KubeletOffsets,
        functions: &[KubeletProbe],
    ) -> Result<CriAttachment, EbpfError> {
        let map_error = |source| EbpfError::Map {
            name: "KUBELET_OFFSETS".to_owned(),
            source,
        };
        let map = self
            .ebpf_mut()
            .map_mut("KUBELET_OFFSETS")
            .ok_or_else(|| EbpfError::Missing {
                what: "map",
                name: "KUBELET_OFFSETS".to_owned(),
            })?;
        let mut table: Array<_, KubeletOffsets> = Array::try_from(map).map_err(map_error)?;
        table.set(0, offsets, 0).map_err(map_error)?;
        let mut points = Vec::new();
        for function in functions {
            points.push((
                "kubelet_entry",
                function.entry_offset,
                function.entry_cookie,
            ));
            points.extend(function.ret_offsets.iter().map(|off| {
                (
                    "kubelet_return",
                    *off,
                    function.return_cookie | CRI_COOKIE_RETURN,
                )
            }));
        }
        self.attach_points(binary, &points)
    }

    /// Attaches program `name` at each file offset of `binary` with its cookie.
    fn attach_points(
        &mut self,
        binary: &Path,
        points: &[(&str, u64, u64)],
    ) -> Result<CriAttachment, EbpfError> {
        let mut attachment = CriAttachment {
            binary: binary.to_owned(),
            links: Vec::new(),
        };
        for &(name, offset, cookie) in points {
            let program = super::loader::program::<UProbe>(self.ebpf_mut(), name)?;
            let failed = |source| EbpfError::Program {
                name: format!("{name} at {}+{offset:#x}", binary.display()),
                source,
            };
            let id = program
                .attach(
                    UProbeAttachPoint {
                        location: UProbeAttachLocation::AbsoluteOffset(offset),
                        cookie: Some(cookie),
                    },
                    binary,
                    UProbeScope::AllProcesses,
                )
                .map_err(failed)?;
            // Owned by the attachment, so it can detach them all at once; dropping the
            // attachment on an error detaches what was attached.
            attachment
                .links
                .push(program.take_link(id).map_err(failed)?);
        }
        Ok(attachment)
    }

    /// Calls seen per CRI method since the programs were loaded (polled methods included).
    pub fn cri_calls(&self) -> Result<Vec<(CriMethod, u64)>, EbpfError> {
        let map_error = |source| EbpfError::Map {
            name: "CRI_CALLS".to_owned(),
            source,
        };
        let map = self
            .ebpf()
            .map("CRI_CALLS")
            .ok_or_else(|| EbpfError::Missing {
                what: "map",
                name: "CRI_CALLS".to_owned(),
            })?;
        let calls: PerCpuArray<_, u64> = PerCpuArray::try_from(map).map_err(map_error)?;
        CriMethod::ALL
            .into_iter()
            .map(|method| {
                let values = calls.get(&(method as u32), 0).map_err(map_error)?;
                Ok((method, values.iter().sum()))
            })
            .collect()
    }
}
