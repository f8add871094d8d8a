//! The one bless helper for golden-file tests: `check(name, got)` compares
//! `got` with `xtask/tests/golden/<name>`; `BUFAIO_BLESS=1 cargo test`
//! rewrites the file instead (then review the diff).

#![cfg(test)]

use std::path::PathBuf;

pub fn path(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/")).join(name)
}

/// Asserts `got` equals the golden file `name` (or blesses it).
pub fn check(name: &str, got: &str) {
    let p = path(name);
    if std::env::var_os("BUFAIO_BLESS").is_some() {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("create golden dir");
        }
        std::fs::write(&p, got).expect("bless golden file");
        return;
    }
    let want = std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e} (bless with BUFAIO_BLESS=1)", p.display()));
    assert_eq!(
        got,
        want,
        "golden file {} differs (bless with BUFAIO_BLESS=1 after review)",
        p.display()
    );
}
