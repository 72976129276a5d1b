//! Attaches the CRI uprobes to a runtime binary (entry + every RET of each handler, the method
//! in the attach cookie) and detaches them when the runtime goes away.

use aya::{
    maps::{Array, PerCpuArray},
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLink, UProbeScope},
    },
};
use nodetrace_common::{CRI_COOKIE_COUNT_ONLY, CRI_COOKIE_RETURN, CriMethod, CriOffsets};
use std::path::{Path, PathBuf};

use super::{EbpfError, KernelProbes};

/// Where to probe one handler, as file offsets into the runtime binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerProbe {
    pub method: CriMethod,
    pub entry_offset: u64,
    pub ret_offsets: Vec<u64>,
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

        let mut attachment = CriAttachment {
            binary: binary.to_owned(),
            links: Vec::new(),
        };
        for handler in handlers {
            let count_only = if handler.method.is_traced() {
                0
            } else {
                CRI_COOKIE_COUNT_ONLY
            };
            let method = handler.method as u64 | count_only;
            let mut points = vec![("cri_entry", handler.entry_offset, method)];
            points.extend(
                handler
                    .ret_offsets
                    .iter()
                    .map(|off| ("cri_return", *off, method | CRI_COOKIE_RETURN)),
            );
            for (name, offset, cookie) in points {
                if name == "cri_entry" && count_only != 0 {
                    continue;
                }
                let attached =
                    super::loader::program::<UProbe>(self.ebpf_mut(), name).and_then(|p| {
                        let failed = |source| EbpfError::Program {
                            name: format!("{name} at {}+{offset:#x}", binary.display()),
                            source,
                        };
                        let id = p
                            .attach(
                                UProbeAttachPoint {
                                    location: UProbeAttachLocation::AbsoluteOffset(offset),
                                    cookie: Some(cookie),
                                },
                                binary,
                                UProbeScope::AllProcesses,
                            )
                            .map_err(failed)?;
                        // Owned by the attachment, so it can detach them all at once.
                        p.take_link(id).map_err(failed)
                    });
                match attached {
                    Ok(link) => attachment.links.push(link),
                    // Dropping the attachment detaches what was attached.
                    Err(err) => return Err(err),
                }
            }
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
