//! Compiles the pause program (`assets/pause.c`, embedded in the library) into a static
//! binary with the host's gcc.

use std::path::Path;
use std::process::Command;

use super::{ImageError, elf::is_static_executable, io_error};

/// The C source of the pause program.
pub const PAUSE_SOURCE: &str = include_str!("../../assets/pause.c");

/// Writes the source to `build_dir`, runs `gcc -static -O2` there and returns the binary.
pub fn compile_pause(build_dir: &Path) -> Result<Vec<u8>, ImageError> {
    std::fs::create_dir_all(build_dir).map_err(io_error("create", build_dir))?;
    let source = build_dir.join("pause.c");
    let binary = build_dir.join("pause");
    std::fs::write(&source, PAUSE_SOURCE).map_err(io_error("write", &source))?;
    let mut command = Command::new("gcc");
    command
        .args(["-static", "-O2", "-s", "-Wall", "-o"])
        .arg(&binary)
        .arg(&source);
    super::run_tool(&mut command, "gcc", " (install gcc and libc6-dev)")?;
    let bytes = std::fs::read(&binary).map_err(io_error("read", &binary))?;
    if !is_static_executable(&bytes) {
        return Err(ImageError::NotStatic(binary));
    }
    Ok(bytes)
}
