//! Owned, validated forms of the ring-buffer records defined in `nodetrace-common`.

use nodetrace_common::{
    ARGV_MAX_ARGS, CRI_FLAG_ERROR, CRI_STR_SLOTS, CniOutputEvent, CriEvent, CriMethod,
    EXEC_FLAG_ARGV_IS_CNI_ENV, EXEC_FLAG_ARGV_TRUNCATED, EventHeader, EventKind, ExecEvent,
    ExecRole, ExitEvent, KubeletFn, TrackedKind,
};

use super::EbpfError;

/// A process the kernel side follows called execve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecRecord {
    pub tgid: u32,
    pub ppid: u32,
    pub role: ExecRole,
    pub cgroup_id: u64,
    pub ktime_ns: u64,
    /// The path given to execve.
    pub filename: String,
    /// At most `ARGV_MAX_ARGS` arguments. For [`ExecRole::CniPlugin`], the `CNI_*` entries of
    /// the process's environment instead (`CNI_COMMAND=ADD`, ...; a plugin's argv is only its
    /// path): text the runtime chose, decoded lossily, to be parsed as untrusted.
    pub argv: Vec<String>,
    /// Arguments were cut, by the kernel's byte bound or the argument-count bound.
    pub argv_truncated: bool,
}

/// A followed process exited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitRecord {
    pub tgid: u32,
    pub ktime_ns: u64,
    /// Exit status (0-255) when the process exited normally.
    pub exit_status: Option<i32>,
    /// Signal number when a signal ended the process.
    pub signal: Option<i32>,
    pub tracked: TrackedKind,
}

/// The entry or the return of a CRI handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CriRecord {
    /// The runtime process.
    pub tgid: u32,
    /// The goroutine that ran the call (keys entry to return).
    pub goroutine: u64,
    pub ktime_ns: u64,
    pub method: CriMethod,
    /// The handler returned an error (return records only).
    pub error: bool,
    /// String fields by `nodetrace_common::cri_slots` slot; empty when not read.
    pub strings: [String; CRI_STR_SLOTS],
    pub numbers: [u64; 2],
}

/// The entry or the return of a probed kubelet function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeletRecord {
    /// The kubelet process.
    pub tgid: u32,
    /// The goroutine (a pod worker's, for the sync functions).
    pub goroutine: u64,
    pub ktime_ns: u64,
    pub function: KubeletFn,
    /// The function returned an error (return records only).
    pub error: bool,
    /// Pod UID, name, namespace and the extra string (`nodetrace_common::kubelet_slots`).
    pub strings: [String; 4],
}

/// A CNI plugin wrote to its standard output (its result or its error, as JSON).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniOutputRecord {
    pub tgid: u32,
    pub ktime_ns: u64,
    /// What was written, at most `nodetrace_common::CNI_OUTPUT_MAX_BYTES`: bytes the plugin
    /// chose, not text yet.
    pub data: Vec<u8>,
    /// The write was longer than `data`.
    pub cut: bool,
}

/// One decoded ring-buffer record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelEvent {
    Exec(ExecRecord),
    Exit(ExitRecord),
    CriStart(CriRecord),
    CriEnd(CriRecord),
    KubeletStart(KubeletRecord),
    KubeletEnd(KubeletRecord),
    CniOutput(CniOutputRecord),
}

impl KernelEvent {
    /// About how many bytes the event takes in memory (its struct and its strings), for byte
    /// bounds on queues.
    pub fn approx_bytes(&self) -> usize {
        let strings = match self {
            Self::Exec(exec) => exec.strings_bytes(),
            Self::Exit(_) => 0,
            Self::CriStart(cri) | Self::CriEnd(cri) => cri.strings.iter().map(String::len).sum(),
            Self::KubeletStart(k) | Self::KubeletEnd(k) => k.strings.iter().map(String::len).sum(),
            Self::CniOutput(output) => output.data.len(),
        };
        size_of::<Self>() + strings
    }
}

impl ExecRecord {
    /// Bytes of its strings (filename and arguments, with their headers).
    pub fn strings_bytes(&self) -> usize {
        self.filename.len()
            + self
                .argv
                .iter()
                .map(|arg| arg.len() + size_of::<String>())
                .sum::<usize>()
    }
}

fn bad(reason: impl Into<String>) -> EbpfError {
    EbpfError::Record {
        reason: reason.into(),
    }
}

fn read<T: Copy>(bytes: &[u8]) -> Result<T, EbpfError> {
    if bytes.len() < size_of::<T>() {
        return Err(bad(format!(
            "{} bytes, expected at least {}",
            bytes.len(),
            size_of::<T>()
        )));
    }
    // SAFETY: length checked above; T is a #[repr(C)] plain-data type valid for any bytes.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Decodes one record as the eBPF programs wrote it.
pub fn parse_record(bytes: &[u8]) -> Result<KernelEvent, EbpfError> {
    let header: EventHeader = read(bytes)?;
    match header.kind {
        k if k == EventKind::Exec as u32 => {
            parse_exec(&read::<ExecEvent>(bytes)?).map(KernelEvent::Exec)
        }
        k if k == EventKind::Exit as u32 => {
            parse_exit(&read::<ExitEvent>(bytes)?).map(KernelEvent::Exit)
        }
        k if k == EventKind::CriStart as u32 => {
            parse_cri(&read::<CriEvent>(bytes)?).map(KernelEvent::CriStart)
        }
        k if k == EventKind::CriEnd as u32 => {
            parse_cri(&read::<CriEvent>(bytes)?).map(KernelEvent::CriEnd)
        }
        k if k == EventKind::KubeletStart as u32 => {
            parse_kubelet(&read::<CriEvent>(bytes)?).map(KernelEvent::KubeletStart)
        }
        k if k == EventKind::KubeletEnd as u32 => {
            parse_kubelet(&read::<CriEvent>(bytes)?).map(KernelEvent::KubeletEnd)
        }
        k if k == EventKind::CniOutput as u32 => {
            parse_cni_output(&read::<CniOutputEvent>(bytes)?).map(KernelEvent::CniOutput)
        }
        other => Err(bad(format!("unknown event kind {other}"))),
    }
}

fn parse_exec(e: &ExecEvent) -> Result<ExecRecord, EbpfError> {
    let role = match e.role {
        r if r == ExecRole::Runtime as u32 => ExecRole::Runtime,
        r if r == ExecRole::ContainerProcess as u32 => ExecRole::ContainerProcess,
        r if r == ExecRole::CniPlugin as u32 => ExecRole::CniPlugin,
        other => return Err(bad(format!("unknown exec role {other}"))),
    };
    // The role and the flag say the same: a record where they disagree comes from a mismatched
    // kernel side, and its argument buffer cannot be read either way.
    if (role == ExecRole::CniPlugin) != (e.flags & EXEC_FLAG_ARGV_IS_CNI_ENV != 0) {
        return Err(bad(format!(
            "exec role {} with flags {:#x}: the CNI environment flag goes with the CNI role only",
            e.role, e.flags
        )));
    }
    let argv_bytes = e
        .argv
        .get(..e.argv_len as usize)
        .ok_or_else(|| bad(format!("argv length {} out of bounds", e.argv_len)))?;
    let filename_bytes = e
        .filename
        .get(..e.filename_len as usize)
        .ok_or_else(|| bad(format!("filename length {} out of bounds", e.filename_len)))?;
    let (argv, cut) = split_args(argv_bytes);
    Ok(ExecRecord {
        tgid: e.header.tgid,
        ppid: e.ppid,
        role,
        cgroup_id: e.cgroup_id,
        ktime_ns: e.header.ktime_ns,
        filename: String::from_utf8_lossy(filename_bytes.split(|b| *b == 0).next().unwrap_or(&[]))
            .into_owned(),
        argv,
        argv_truncated: cut || e.flags & EXEC_FLAG_ARGV_TRUNCATED != 0,
    })
}

/// Splits a NUL-separated argument block; true when arguments beyond the bound were dropped.
fn split_args(block: &[u8]) -> (Vec<String>, bool) {
    let block = block.strip_suffix(&[0]).unwrap_or(block);
    if block.is_empty() {
        return (Vec::new(), false);
    }
    let mut args: Vec<String> = Vec::new();
    let mut cut = false;
    for arg in block.split(|b| *b == 0) {
        if args.len() == ARGV_MAX_ARGS {
            cut = true;
            break;
        }
        args.push(String::from_utf8_lossy(arg).into_owned());
    }
    (args, cut)
}

fn parse_exit(e: &ExitEvent) -> Result<ExitRecord, EbpfError> {
    let tracked = match e.tracked {
        t if t == TrackedKind::Runtime as u32 => TrackedKind::Runtime,
        t if t == TrackedKind::RuntimeChild as u32 => TrackedKind::RuntimeChild,
        t if t == TrackedKind::ContainerProcess as u32 => TrackedKind::ContainerProcess,
        t if t == TrackedKind::CriDaemon as u32 => TrackedKind::CriDaemon,
        t if t == TrackedKind::CriDaemonChild as u32 => TrackedKind::CriDaemonChild,
        t if t == TrackedKind::CniPlugin as u32 => TrackedKind::CniPlugin,
        other => return Err(bad(format!("unknown tracked kind {other}"))),
    };
    let signal = (e.exit_code & 0x7f) as i32;
    Ok(ExitRecord {
        tgid: e.header.tgid,
        ktime_ns: e.header.ktime_ns,
        exit_status: (signal == 0).then_some(((e.exit_code >> 8) & 0xff) as i32),
        signal: (signal != 0).then_some(signal),
        tracked,
    })
}

fn strings_of<const N: usize>(e: &CriEvent) -> Result<[String; N], EbpfError> {
    let mut strings: [String; N] = std::array::from_fn(|_| String::new());
    for (slot, out) in strings.iter_mut().enumerate() {
        let bytes = e.strs[slot]
            .get(..e.lens[slot] as usize)
            .ok_or_else(|| bad(format!("CRI string length {} out of bounds", e.lens[slot])))?;
        *out = String::from_utf8_lossy(bytes).into_owned();
    }
    Ok(strings)
}

fn parse_cni_output(e: &CniOutputEvent) -> Result<CniOutputRecord, EbpfError> {
    let data = e
        .data
        .get(..e.len as usize)
        .ok_or_else(|| bad(format!("CNI output length {} out of bounds", e.len)))?;
    Ok(CniOutputRecord {
        tgid: e.header.tgid,
        ktime_ns: e.header.ktime_ns,
        data: data.to_vec(),
        cut: e.count > u64::from(e.len),
    })
}

fn parse_kubelet(e: &CriEvent) -> Result<KubeletRecord, EbpfError> {
    let function = KubeletFn::from_u32(e.method)
        .ok_or_else(|| bad(format!("unknown kubelet function {}", e.method)))?;
    Ok(KubeletRecord {
        tgid: e.header.tgid,
        goroutine: e.goroutine,
        ktime_ns: e.header.ktime_ns,
        function,
        error: e.flags & CRI_FLAG_ERROR != 0,
        strings: strings_of(e)?,
    })
}

fn parse_cri(e: &CriEvent) -> Result<CriRecord, EbpfError> {
    let method = CriMethod::from_u32(e.method)
        .ok_or_else(|| bad(format!("unknown CRI method {}", e.method)))?;
    let strings: [String; CRI_STR_SLOTS] = strings_of(e)?;
    Ok(CriRecord {
        tgid: e.header.tgid,
        goroutine: e.goroutine,
        ktime_ns: e.header.ktime_ns,
        method,
        error: e.flags & CRI_FLAG_ERROR != 0,
        strings,
        numbers: e.numbers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodetrace_common::{ARGV_MAX_BYTES, FILENAME_MAX_BYTES};

    fn exec_bytes(argv: &[u8], filename: &[u8], flags: u32) -> Vec<u8> {
        let mut event = ExecEvent {
            header: EventHeader {
                kind: EventKind::Exec as u32,
                tgid: 42,
                ktime_ns: 7,
            },
            ppid: 1,
            role: ExecRole::Runtime as u32,
            cgroup_id: 99,
            flags,
            argv_len: argv.len() as u32,
            filename_len: filename.len() as u32,
            _pad: 0,
            filename: [0; FILENAME_MAX_BYTES],
            argv: [0; ARGV_MAX_BYTES],
        };
        event.argv[..argv.len()].copy_from_slice(argv);
        event.filename[..filename.len()].copy_from_slice(filename);
        // SAFETY: viewing a plain-data struct as bytes.
        unsafe {
            std::slice::from_raw_parts((&raw const event).cast::<u8>(), size_of::<ExecEvent>())
        }
        .to_vec()
    }

    #[test]
    fn decodes_an_exec_record() {
        let bytes = exec_bytes(b"runc\0--root\0/run/x\0delete\0abc\0", b"/usr/bin/runc", 0);
        let KernelEvent::Exec(e) = parse_record(&bytes).expect("valid record") else {
            panic!("not an exec");
        };
        assert_eq!(e.argv, ["runc", "--root", "/run/x", "delete", "abc"]);
        assert_eq!(e.filename, "/usr/bin/runc");
        assert_eq!((e.tgid, e.ppid, e.cgroup_id, e.ktime_ns), (42, 1, 99, 7));
        assert!(!e.argv_truncated);
    }

    #[test]
    fn keeps_at_most_the_bounded_number_of_args() {
        let many: Vec<u8> = (0..40)
            .flat_map(|i| format!("a{i}\0").into_bytes())
            .collect();
        let KernelEvent::Exec(e) = parse_record(&exec_bytes(&many, b"x", 0)).expect("valid") else {
            panic!("not an exec");
        };
        assert_eq!(e.argv.len(), ARGV_MAX_ARGS);
        assert!(e.argv_truncated);
    }

    #[test]
    fn the_kernel_truncation_flag_is_kept() {
        let KernelEvent::Exec(e) =
            parse_record(&exec_bytes(b"runc\0cre", b"x", EXEC_FLAG_ARGV_TRUNCATED)).expect("valid")
        else {
            panic!("not an exec");
        };
        assert!(e.argv_truncated);
        assert_eq!(e.argv, ["runc", "cre"]);
    }

    #[test]
    fn a_cni_plugin_record_carries_its_variables_and_says_so() {
        let variables = b"CNI_COMMAND=ADD\0CNI_IFNAME=eth0\0";
        let mut bytes = exec_bytes(variables, b"/opt/cni/bin/bridge", EXEC_FLAG_ARGV_IS_CNI_ENV);
        let role_at = std::mem::offset_of!(ExecEvent, role);
        bytes[role_at..role_at + 4].copy_from_slice(&(ExecRole::CniPlugin as u32).to_ne_bytes());
        let KernelEvent::Exec(e) = parse_record(&bytes).expect("valid") else {
            panic!("not an exec");
        };
        assert_eq!(e.role, ExecRole::CniPlugin);
        assert_eq!(e.argv, ["CNI_COMMAND=ADD", "CNI_IFNAME=eth0"]);
        // The role without the flag, or the flag without the role, is a mismatched kernel side.
        let unflagged = exec_bytes(variables, b"x", 0);
        let mut unflagged_plugin = unflagged.clone();
        unflagged_plugin[role_at..role_at + 4]
            .copy_from_slice(&(ExecRole::CniPlugin as u32).to_ne_bytes());
        assert!(parse_record(&unflagged_plugin).is_err());
        let flagged_runtime = exec_bytes(variables, b"x", EXEC_FLAG_ARGV_IS_CNI_ENV);
        assert!(parse_record(&flagged_runtime).is_err());
        assert!(parse_record(&unflagged).is_ok());
    }

    #[test]
    fn decodes_a_cni_plugins_output_and_whether_it_was_cut() {
        let mut event = CniOutputEvent {
            header: EventHeader {
                kind: EventKind::CniOutput as u32,
                tgid: 8,
                ktime_ns: 3,
            },
            count: 5000,
            len: 4,
            _pad: 0,
            data: [0; nodetrace_common::CNI_OUTPUT_MAX_BYTES],
        };
        event.data[..4].copy_from_slice(b"{}\n\0");
        let bytes = |e: &CniOutputEvent| {
            // SAFETY: viewing a plain-data struct as bytes.
            unsafe {
                std::slice::from_raw_parts(
                    (&raw const *e).cast::<u8>(),
                    size_of::<CniOutputEvent>(),
                )
            }
            .to_vec()
        };
        let KernelEvent::CniOutput(output) = parse_record(&bytes(&event)).expect("valid") else {
            panic!("not CNI output");
        };
        assert_eq!((output.tgid, output.ktime_ns), (8, 3));
        assert_eq!(output.data, b"{}\n\0");
        assert!(output.cut, "5000 bytes written, 4 copied");
        event.count = 4;
        let KernelEvent::CniOutput(output) = parse_record(&bytes(&event)).expect("valid") else {
            panic!("not CNI output");
        };
        assert!(!output.cut);
        event.len = nodetrace_common::CNI_OUTPUT_MAX_BYTES as u32 + 1;
        assert!(
            parse_record(&bytes(&event)).is_err(),
            "a length beyond the buffer"
        );
    }

    #[test]
    fn decodes_exit_status_and_signal() {
        let exit = |code| ExitEvent {
            header: EventHeader {
                kind: EventKind::Exit as u32,
                tgid: 5,
                ktime_ns: 9,
            },
            exit_code: code,
            tracked: TrackedKind::Runtime as u32,
        };
        let bytes = |e: ExitEvent| {
            // SAFETY: viewing a plain-data struct as bytes.
            unsafe {
                std::slice::from_raw_parts((&raw const e).cast::<u8>(), size_of::<ExitEvent>())
            }
            .to_vec()
        };
        let KernelEvent::Exit(normal) = parse_record(&bytes(exit(1 << 8))).expect("valid") else {
            panic!("not an exit");
        };
        assert_eq!((normal.exit_status, normal.signal), (Some(1), None));
        let KernelEvent::Exit(killed) = parse_record(&bytes(exit(9))).expect("valid") else {
            panic!("not an exit");
        };
        assert_eq!((killed.exit_status, killed.signal), (None, Some(9)));
    }

    #[test]
    fn decodes_a_cri_record() {
        let mut event = CriEvent {
            header: EventHeader {
                kind: EventKind::CriStart as u32,
                tgid: 3,
                ktime_ns: 11,
            },
            goroutine: 0xc000_1000,
            method: CriMethod::RunPodSandbox as u32,
            flags: CRI_FLAG_ERROR,
            numbers: [2, 0],
            lens: [3, 0, 0, 0, 0],
            _pad: 0,
            strs: [[0; nodetrace_common::CRI_STR_MAX]; CRI_STR_SLOTS],
        };
        event.strs[0][..3].copy_from_slice(b"web");
        // SAFETY: viewing a plain-data struct as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const event).cast::<u8>(), size_of::<CriEvent>())
        };
        let KernelEvent::CriStart(cri) = parse_record(bytes).expect("valid") else {
            panic!("not a CRI start");
        };
        assert_eq!(cri.method, CriMethod::RunPodSandbox);
        assert_eq!(cri.strings[0], "web");
        assert!(cri.strings[1].is_empty());
        assert!(cri.error);
        assert_eq!((cri.goroutine, cri.numbers[0]), (0xc000_1000, 2));
        event.lens[1] = 9999;
        // SAFETY: as above.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const event).cast::<u8>(), size_of::<CriEvent>())
        };
        assert!(
            parse_record(bytes).is_err(),
            "a length beyond the slot is rejected"
        );
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert!(parse_record(&[1, 0, 0]).is_err());
        let mut bytes = exec_bytes(b"x\0", b"x", 0);
        bytes[0] = 77;
        assert!(parse_record(&bytes).is_err());
    }
}
