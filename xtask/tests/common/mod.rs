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
    xtask_cmd(args, None)
}

/// [`xtask`] on a cache of the test's own (`BUFAIO_CACHE_DIR`).
pub fn xtask_in_cache(args: &[&str], cache: &Path) -> (i32, String, Output) {
    xtask_cmd(args, Some(cache))
}

/// [`xtask`], also returning how long the command itself ran (not the
/// wait for this binary's one-at-a-time lock, which another test may hold
/// for a whole build).
pub fn xtask_timed(args: &[&str]) -> (i32, String, std::time::Duration) {
    let _g = serial();
    let t0 = std::time::Instant::now();
    let (code, text, _) = xtask_locked(args, None);
    (code, text, t0.elapsed())
}

fn xtask_cmd(args: &[&str], cache: Option<&Path>) -> (i32, String, Output) {
    let _g = serial();
    xtask_locked(args, cache)
}

fn xtask_locked(args: &[&str], cache: Option<&Path>) -> (i32, String, Output) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.args(args)
        .current_dir(root())
        .env_remove("GITHUB_ACTIONS");
    if let Some(d) = cache {
        c.env("BUFAIO_CACHE_DIR", d);
    }
    // One kernel target (6.12) unless the test process says otherwise; a
    // test of several targets passes --target, which beats the variable.
    if std::env::var_os("BUFAIO_TARGET").is_none() {
        c.env("BUFAIO_TARGET", "6.12");
    }
    let out = c.output().expect("run xtask");
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

/// PIDs of processes whose argv[0] starts with `prog` and whose command
/// line mentions `needle` (what `ps` would show; to check that no child
/// outlived a run).
pub fn pids(prog: &str, needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.starts_with(prog) && cmd.contains(needle) {
            out.push(pid);
        }
    }
    out
}

/// Waits up to 10 s for `f` to return nothing; returns what it last did.
pub fn wait_none(f: impl Fn() -> Vec<u32>) -> Vec<u32> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut left = f();
    while !left.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        left = f();
    }
    left
}

/// A cache of the test's own under `dir` whose downloads are the real
/// cache's (hard-linked, copied across filesystems), after `xtask fetch`
/// made sure they are there.
pub fn linked_cache(dir: &Path) -> PathBuf {
    let (code, text, _) = xtask(&["fetch"]);
    assert_eq!(code, 0, "{text}");
    let real = std::env::var_os("BUFAIO_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/bufaio"));
    let cache = dir.join("cache");
    std::fs::create_dir_all(cache.join("downloads")).unwrap();
    for e in std::fs::read_dir(real.join("downloads")).unwrap().flatten() {
        let to = cache.join("downloads").join(e.file_name());
        if std::fs::hard_link(e.path(), &to).is_err() {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
    cache
}
