//! Helpers shared by the end-to-end test files: the workspace root, running
//! the real `xtask` binary (one at a time per test binary: a 2-core host
//! cannot run two TCG guests well), and the run dir a command printed.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::new(());

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Holds the one-VM-at-a-time lock of this test binary.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `xtask ARGS` in the workspace root (outside GitHub Actions mode);
/// returns its exit code, stdout+stderr, and the raw output.
pub fn xtask(args: &[&str]) -> (i32, String, Output) {
    let _g = serial();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .current_dir(root())
        .env_remove("GITHUB_ACTIONS")
        .output()
        .expect("run xtask");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("--- xtask {args:?}\n{text}");
    (out.status.code().unwrap_or(-1), text, out)
}

/// The run directory from a command's `artifacts: DIR` line.
pub fn artifacts(text: &str) -> PathBuf {
    let line = text
        .lines()
        .find_map(|l| l.split("artifacts: ").nth(1))
        .expect("the command printed its artifacts dir");
    PathBuf::from(line.trim())
}
