//! Fuzzes the OCI runtime command-line parser: the input is an argument block as the kernel
//! copies it (NUL-separated words, decoded lossily like the ring-buffer decoder does).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodetrace::oci::{OciInvocation, Runtime, bundle_dir};

fn check(argv: &[String], parsed: Result<OciInvocation, nodetrace::oci::ArgvError>) {
    let inv = match parsed {
        Ok(inv) => inv,
        Err(err) => {
            assert!(!err.to_string().is_empty());
            return;
        }
    };
    if let Some(id) = inv.command.container_id() {
        assert!(!id.is_empty(), "empty container id from {argv:?}");
        assert!(
            argv[1..].iter().any(|w| w == id),
            "id not a word of {argv:?}"
        );
    }
    let _ = (inv.span_name(), inv.attributes(), bundle_dir(&inv));
}

fuzz_target!(|data: &[u8]| {
    let argv: Vec<String> = data
        .split(|b| *b == 0)
        .map(|word| String::from_utf8_lossy(word).into_owned())
        .collect();
    // As the runtime argv[0] names, then in the other flag syntax (Go's for runc and youki,
    // argp's for crun), so both scanners see every input once.
    check(&argv, OciInvocation::parse(&argv));
    let other = match argv.first().and_then(|p| Runtime::from_program(p)) {
        Some(Runtime::Crun) => Runtime::Runc,
        _ => Runtime::Crun,
    };
    check(&argv, OciInvocation::parse_as(other, &argv));
});
