//! Golden-file comparison for tests: `NODETRACE_UPDATE_GOLDEN=1` rewrites the files.

use std::path::PathBuf;

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/api/testdata")
        .join(name)
}

/// Asserts that `actual` equals the golden file `name` (under `src/api/testdata/`).
pub fn assert_golden(name: &str, actual: &str) {
    let file = path(name);
    if std::env::var_os("NODETRACE_UPDATE_GOLDEN").is_some() {
        std::fs::write(&file, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "read {}: {e} (NODETRACE_UPDATE_GOLDEN=1 writes it)",
            file.display()
        )
    });
    assert!(
        expected == actual,
        "{} differs from the output (NODETRACE_UPDATE_GOLDEN=1 rewrites it)\n--- expected\n{expected}\n--- actual\n{actual}",
        file.display()
    );
}

/// The golden file's contents.
pub fn read(name: &str) -> String {
    std::fs::read_to_string(path(name)).expect("read golden file")
}

/// Strips the whitespace outside strings: the compact form of an indented JSON golden file.
pub fn minify_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for ch in text.chars() {
        if in_string {
            out.push(ch);
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_string = false;
            }
        } else if ch == '"' {
            in_string = true;
            out.push(ch);
        } else if !ch.is_whitespace() {
            out.push(ch);
        }
    }
    out
}
