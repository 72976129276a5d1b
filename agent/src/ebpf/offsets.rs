//! Byte offsets of the kernel structure fields the eBPF programs read, from the kernel's BTF.
//!
//! aya-ebpf programs have no CO-RE relocations, so the agent looks the offsets up in
//! `/sys/kernel/btf/vmlinux` and hands them to the programs as a read-only global.

use btf_rs::{Btf, BtfType, Type};
use nodetrace_common::KernelOffsets;
use std::path::Path;

use super::EbpfError;

/// Where the running kernel describes its types.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Reads the offsets of every field in [`KernelOffsets`] from a BTF file.
pub fn kernel_offsets(btf_path: &Path) -> Result<KernelOffsets, EbpfError> {
    let btf = Btf::from_file(btf_path).map_err(|source| EbpfError::Btf {
        path: btf_path.to_owned(),
        source,
    })?;
    let field = |strukt: &str, member: &str| field_offset(&btf, strukt, member);
    Ok(KernelOffsets {
        task_real_parent: field("task_struct", "real_parent")?,
        task_tgid: field("task_struct", "tgid")?,
        task_mm: field("task_struct", "mm")?,
        task_exit_code: field("task_struct", "exit_code")?,
        mm_arg_start: field("mm_struct", "arg_start")?,
        mm_arg_end: field("mm_struct", "arg_end")?,
        mm_env_start: field("mm_struct", "env_start")?,
        mm_env_end: field("mm_struct", "env_end")?,
        mm_exe_file: field("mm_struct", "exe_file")?,
        file_inode: field("file", "f_inode")?,
        inode_ino: field("inode", "i_ino")?,
        inode_sb: field("inode", "i_sb")?,
        sb_dev: field("super_block", "s_dev")?,
        task_nsproxy: field("task_struct", "nsproxy")?,
        nsproxy_mnt_ns: field("nsproxy", "mnt_ns")?,
        mnt_ns_inum: field("mnt_namespace", "ns")? + field("ns_common", "inum")?,
    })
}

/// Byte offset of `member` in the struct named `strukt`, looking into anonymous members.
fn field_offset(btf: &Btf, strukt: &str, member: &str) -> Result<u32, EbpfError> {
    let missing = || EbpfError::MissingField {
        strukt: strukt.to_owned(),
        member: member.to_owned(),
    };
    let types = btf.resolve_types_by_name(strukt).map_err(|_| missing())?;
    types
        .iter()
        .find_map(|ty| match ty {
            Type::Struct(s) => find_member(btf, s, member, 0),
            _ => None,
        })
        .ok_or_else(missing)
}

fn find_member(btf: &Btf, strukt: &btf_rs::Struct, wanted: &str, base_bits: u32) -> Option<u32> {
    for m in &strukt.members {
        let bits = base_bits + m.bit_offset();
        let name = m.get_name_offset().and_then(|_| btf.resolve_name(m).ok());
        match name.as_deref() {
            Some(n) if n == wanted => return bits.is_multiple_of(8).then_some(bits / 8),
            Some(n) if !n.is_empty() => continue,
            _ => {
                // Anonymous struct or union: its members belong to the outer struct.
                if let Ok(Type::Struct(inner) | Type::Union(inner)) = btf.resolve_chained_type(m)
                    && let Some(found) = find_member(btf, &inner, wanted, bits)
                {
                    return Some(found);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_of_the_running_kernel_are_found_and_distinct() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            eprintln!("skipped: {VMLINUX_BTF} does not exist (kernel without BTF)");
            return;
        }
        let off = kernel_offsets(path).expect("offsets from vmlinux BTF");
        assert_ne!(off.task_real_parent, off.task_tgid);
        assert_ne!(off.task_mm, 0);
        assert_ne!(off.mm_arg_start, 0);
        assert_eq!(
            off.mm_arg_end,
            off.mm_arg_start + 8,
            "arg_end follows arg_start"
        );
    }

    #[test]
    fn a_missing_field_is_a_clear_error() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            eprintln!("skipped: {VMLINUX_BTF} does not exist (kernel without BTF)");
            return;
        }
        let btf = Btf::from_file(path).expect("vmlinux BTF");
        let err = field_offset(&btf, "task_struct", "no_such_field").unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel BTF has no field task_struct.no_such_field"
        );
    }
}
