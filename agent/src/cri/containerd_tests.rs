//! Tests against the real Debian containerd 1.6.20 (Go 1.19.8, non-PIE, `.dynsym` with the Go
//! functions, no `.symtab`): they skip, saying why, when it is not installed.

use std::path::Path;

use iced_x86::Mnemonic;
use object::read::elf::{FileHeader, SectionHeader};

use super::*;

const CONTAINERD: &str = "/usr/bin/containerd";

/// The binary read from every source, shared by the tests of one thread (a binary read on
/// demand is not `Sync`); `None` when not installed.
fn containerd() -> Option<&'static GoBinary> {
    thread_local! {
        static BINARY: Option<&'static GoBinary> = {
            if Path::new(CONTAINERD).exists() {
                Some(&*Box::leak(Box::new(GoBinary::open(CONTAINERD).unwrap())))
            } else {
                eprintln!("SKIP: {CONTAINERD} is not installed (apt-get install containerd)");
                None
            }
        };
    }
    BINARY.with(|binary| *binary)
}

fn pclntab_only() -> Option<&'static GoBinary> {
    thread_local! {
        static BINARY: Option<&'static GoBinary> = containerd().map(|_| {
            &*Box::leak(Box::new(
                GoBinary::open_with(CONTAINERD, &[SymbolSource::Gopclntab]).unwrap(),
            ))
        });
    }
    BINARY.with(|binary| *binary)
}

#[test]
fn handlers_resolve_to_criservice_through_dynsym() {
    let Some(binary) = containerd() else { return };
    assert_eq!(
        binary.pcln_version(),
        Some(PclnVersion::Go118),
        "Go 1.19 table"
    );
    let resolved = resolve(binary).unwrap();
    assert_eq!(resolved.runtime, RuntimeKind::Containerd16);
    let streaming: Vec<CriMethod> = CriMethod::ALL
        .into_iter()
        .filter(|m| m.is_optional())
        .collect();
    assert_eq!(
        resolved.missing, streaming,
        "1.6 has every method but the streaming lists of cri-api v0.36"
    );
    assert_eq!(
        resolved.handlers.len(),
        CriMethod::ALL.len() - streaming.len(),
        "no sbserver in 1.6"
    );
    for handler in &resolved.handlers {
        let f = &handler.function;
        println!(
            "{:<20} {:#x} size {:>6} file offset {:#x} ({:?})",
            handler.method.name(),
            f.address,
            f.size,
            f.file_offset,
            f.source
        );
        assert_eq!(
            f.source,
            SymbolSource::Dynsym,
            "dynsym is preferred to the pclntab"
        );
        // The thin v1 wrapper is probed; the service handler it calls exists too.
        assert!(
            f.name.starts_with(
                "github.com/containerd/containerd/pkg/cri/server.(*instrumentedService)."
            ),
            "{}",
            f.name
        );
        let service = f.name.replace("(*instrumentedService)", "(*criService)");
        assert!(binary.lookup(&service).is_some(), "{service}");
    }
}

#[test]
fn pclntab_agrees_with_dynsym_on_every_handler() {
    let (Some(full), Some(pcln)) = (containerd(), pclntab_only()) else {
        return;
    };
    assert!(
        pcln.functions()
            .iter()
            .all(|f| f.source == SymbolSource::Gopclntab)
    );
    let from_dynsym = resolve(full).unwrap();
    let from_pcln = resolve(pcln).unwrap();
    assert_eq!(from_pcln.missing, from_dynsym.missing);
    for (d, p) in from_dynsym.handlers.iter().zip(&from_pcln.handlers) {
        assert_eq!(d.function.name, p.function.name);
        assert_eq!(
            d.function.address, p.function.address,
            "{}",
            d.function.name
        );
        assert_eq!(d.function.file_offset, p.function.file_offset);
        // The pclntab size runs to the next function: the symbol's size plus INT3 padding
        // up to the 32-byte function alignment.
        let padding = p.function.size - d.function.size;
        assert!(padding < 32, "{}: {padding} bytes", d.function.name);
        assert_eq!((p.function.address + p.function.size) % 32, 0);
        let code = pcln.code(&p.function).unwrap();
        let tail = &code[d.function.size as usize..];
        assert!(
            tail.iter().all(|&b| b == 0xcc),
            "padding of {}",
            d.function.name
        );
    }
}

#[test]
fn every_dynsym_go_function_is_at_its_pclntab_address() {
    let (Some(full), Some(pcln)) = (containerd(), pclntab_only()) else {
        return;
    };
    let dynsym = GoBinary::open_with(CONTAINERD, &[SymbolSource::Dynsym]).unwrap();
    let mut compared = 0;
    let mut differ = Vec::new();
    for f in dynsym.functions() {
        if let Some(p) = pcln.lookup(&f.name) {
            compared += 1;
            if p.address != f.address {
                differ.push((&f.name, f.address, p.address));
            }
        }
    }
    println!(
        "dynsym {} functions, pclntab {}, merged {}; {compared} in both, {} at other addresses",
        dynsym.functions().len(),
        pcln.functions().len(),
        full.functions().len(),
        differ.len()
    );
    assert!(compared > 45_000, "{compared}");
    // Only assembly functions differ: the pclntab has two functions of that name, the ABI0
    // body (`<name>.abi0` in the ELF symbols) and its ABIInternal wrapper, and keeps the first.
    for (name, _, pcln_address) in &differ {
        let abi0 = dynsym.lookup(&format!("{name}.abi0"));
        assert_eq!(abi0.map(|f| f.address), Some(*pcln_address), "{name}");
    }
}

/// A copy of the binary whose `.dynsym` and `.symtab` section headers are turned into
/// `SHT_NULL`, as if stripped: only `.gopclntab` names the functions.
fn without_symbol_tables(mut data: Vec<u8>) -> Vec<u8> {
    let header = object::elf::FileHeader64::<object::Endianness>::parse(&*data).unwrap();
    let endian = header.endian().unwrap();
    let table_offset = header.e_shoff(endian) as usize;
    let entry_size = header.e_shentsize(endian) as usize;
    let sections = header.sections(endian, &*data).unwrap();
    let mut patched = Vec::new();
    for (index, section) in sections.iter().enumerate() {
        let kind = section.sh_type(endian);
        if kind == object::elf::SHT_DYNSYM || kind == object::elf::SHT_SYMTAB {
            patched.push(table_offset + index * entry_size + 4);
        }
    }
    assert!(!patched.is_empty());
    for at in patched {
        data[at..at + 4].copy_from_slice(&object::elf::SHT_NULL.to_le_bytes());
    }
    data
}

#[test]
fn a_stripped_copy_still_resolves() {
    let Some(full) = containerd() else { return };
    let stripped = without_symbol_tables(std::fs::read(CONTAINERD).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("containerd-stripped");
    std::fs::write(&path, stripped).unwrap();

    let binary = GoBinary::open(&path).unwrap();
    assert!(
        binary
            .functions()
            .iter()
            .all(|f| f.source == SymbolSource::Gopclntab)
    );
    let resolved = resolve(&binary).unwrap();
    let expected = resolve(full).unwrap();
    assert_eq!(resolved.runtime, RuntimeKind::Containerd16);
    assert_eq!(resolved.missing, expected.missing);
    let addresses = |r: &ResolvedRuntime| {
        r.handlers
            .iter()
            .map(|h| (h.method, h.function.address, h.function.file_offset))
            .collect::<Vec<_>>()
    };
    assert_eq!(addresses(&resolved), addresses(&expected));
    assert_eq!(
        cri_types(&binary).unwrap().offsets,
        cri_types(full).unwrap().offsets
    );
}

#[test]
fn every_handler_has_rets_before_its_stack_growth_epilogue() {
    let (Some(binary), Some(pcln)) = (containerd(), pclntab_only()) else {
        return;
    };
    let morestack = binary.lookup("runtime.morestack_noctxt").unwrap().address;
    for handler in &resolve(binary).unwrap().handlers {
        let f = &handler.function;
        let rets = ret_offsets(binary, f).unwrap();
        println!(
            "{:<20} {} RET at {:x?}",
            handler.method.name(),
            rets.len(),
            rets.iter().map(|r| r.offset).collect::<Vec<_>>()
        );
        assert!(!rets.is_empty(), "{}", f.name);
        for ret in &rets {
            assert_eq!(ret.file_offset, f.file_offset + ret.offset);
            assert_eq!(binary.code(f).unwrap()[ret.offset as usize], 0xc3);
        }

        let instructions = disasm::decode_function(binary, f).unwrap();
        let epilogue = instructions
            .iter()
            .rposition(|i| i.mnemonic() == Mnemonic::Call && i.near_branch_target() == morestack)
            .unwrap_or_else(|| panic!("{} has no morestack call", f.name));
        let back = instructions[epilogue..]
            .iter()
            .find(|i| i.mnemonic() == Mnemonic::Jmp)
            .unwrap();
        assert_eq!(
            back.near_branch_target(),
            f.address,
            "{} jumps back to its entry",
            f.name
        );
        let epilogue_ip = instructions[epilogue].ip();
        assert!(rets.iter().all(|r| r.address < epilogue_ip));

        // The pclntab's padded size finds the same RETs.
        let padded = pcln.lookup(&f.name).unwrap();
        assert_eq!(ret_offsets(pcln, padded).unwrap(), rets);
    }
}

#[test]
fn offsets_come_from_the_gogo_getters() {
    let Some(binary) = containerd() else { return };
    let types = cri_types(binary).unwrap();
    println!("package {} generator {:?}", types.package, types.generator);
    for (field, offset) in super::offsets::named_fields(&types.offsets) {
        println!("{field:<40} {offset}");
    }
    assert_eq!(
        types.package,
        "github.com/containerd/containerd/vendor/k8s.io/cri-api/pkg/apis/runtime/v1."
    );
    assert_eq!(types.generator, Generator::Gogo);
    assert_eq!(types.unknown, Vec::<String>::new());
    assert!(super::offsets::is_complete(&types.offsets));
    let o = types.offsets;
    // Measured with bpftrace on this binary (RUNTIME-FACTS.md).
    assert_eq!(o.run_pod_sandbox_request_config, 0);
    assert_eq!(o.pod_sandbox_config_metadata, 0);
    assert_eq!(o.pod_sandbox_metadata_name, 0);
    assert_eq!(o.pod_sandbox_metadata_uid, 16);
    assert_eq!(o.pod_sandbox_metadata_namespace, 32);
    assert_eq!(o.pod_sandbox_metadata_attempt, 48);
    assert_eq!(o.run_pod_sandbox_response_pod_sandbox_id, 0);
    assert_eq!(o.create_container_request_pod_sandbox_id, 0);
    assert_eq!(o.create_container_request_config, 16);
}
