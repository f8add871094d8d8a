//! Stage 4, build: `make bzImage` out of tree, with ccache when present and
//! reproducible build identity. make is skipped entirely when the tree has not
//! changed since the last successful build of this build directory.

use crate::cache::{sha256_file, Cache};
use crate::error::untestable;
use crate::fetch::which;
use crate::kconfig::Configured;
use crate::patch::Tree;
use crate::ui::Ui;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Serialize)]
pub struct Built {
    pub bzimage: PathBuf,
    pub sha256: String,
    /// make ran (false: skipped, nothing changed).
    pub rebuilt: bool,
    pub seconds: f64,
    pub log: PathBuf,
    pub ccache: bool,
}

#[derive(Serialize, Deserialize, Default)]
struct Stamp {
    steps: u64,
    sha256: String,
}

const STAMP: &str = ".bufaio-build.json";

/// Newest mtime of any file in the tree, skipping build dirs and our markers.
pub fn newest_source_mtime(tree: &Path) -> Result<SystemTime> {
    let mut newest = SystemTime::UNIX_EPOCH;
    let mut stack = vec![tree.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for e in rd {
            let e = e?;
            let name = e.file_name();
            let n = name.to_string_lossy();
            if dir == tree && (n.starts_with(".b-") || n.starts_with(".bufaio")) {
                continue;
            }
            let m = e.metadata()?;
            if let Ok(t) = m.modified() {
                newest = newest.max(t);
            }
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok(newest)
}

pub fn build(
    tree: &Tree,
    cfg: &Configured,
    cache: &Cache,
    log_dir: &Path,
    ui: &Ui,
) -> Result<Built> {
    let bz = cfg.build_dir.join("arch/x86/boot/bzImage");
    let stamp_path = cfg.build_dir.join(STAMP);
    let log = log_dir.join(format!("build-{}.log", cfg.flavor));
    let use_ccache = which("ccache").is_some();
    let stamp: Option<Stamp> = fs::read_to_string(&stamp_path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok());
    if let (Some(st), Ok(meta)) = (&stamp, fs::metadata(&stamp_path)) {
        let built_at = meta.modified()?;
        if bz.is_file() && newest_source_mtime(&tree.path)? <= built_at {
            return Ok(Built {
                bzimage: bz,
                sha256: st.sha256.clone(),
                rebuilt: false,
                seconds: 0.0,
                log,
                ccache: use_ccache,
            });
        }
    }
    let expected = stamp.as_ref().map(|s| s.steps).filter(|&n| n > 0);
    let stage = ui.stage(
        "build",
        format!("make bzImage ({})", cfg.build_dir.display()),
    );
    if let Some(n) = expected {
        stage.set_length(n, false);
    }
    fs::create_dir_all(log_dir)?;
    let mut logf =
        fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let jobs = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let o = format!(
        "O={}",
        cfg.build_dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
    );
    let mut cmd = Command::new("make");
    cmd.current_dir(&tree.path)
        .arg(&o)
        .arg(format!("-j{jobs}"))
        .arg("bzImage")
        .env("KBUILD_BUILD_TIMESTAMP", "@0")
        .env("KBUILD_BUILD_USER", "bufaio")
        .env("KBUILD_BUILD_HOST", "bufaio")
        .env("KBUILD_BUILD_VERSION", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if use_ccache {
        cmd.arg("CC=ccache gcc")
            .env("CCACHE_DIR", cache.ccache())
            .env("CCACHE_NOHASHDIR", "1")
            .env("CCACHE_BASEDIR", &tree.path);
    }
    crate::proc::die_with_parent(&mut cmd);
    let mut child = cmd.spawn().context("cannot start make")?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx2.send(format!("E {l}"));
        }
    });
    let stdout = child.stdout.take().context("no stdout pipe")?;
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(format!("O {l}"));
        }
    });
    let mut steps = 0u64;
    let mut last_note = std::time::Instant::now();
    for l in rx {
        let line = &l[2..];
        writeln!(logf, "{line}").ok();
        if l.starts_with('O') && line.starts_with("  ") {
            steps += 1;
            stage.set_position(steps);
            if last_note.elapsed() > Duration::from_secs(if ui.is_tty() { 0 } else { 30 }) {
                let of = expected.map(|n| format!("/~{n}")).unwrap_or_default();
                stage.note(format!("{steps}{of} steps: {}", line.trim()));
                last_note = std::time::Instant::now();
            }
        }
    }
    let status = child.wait().context("make did not finish")?;
    if !status.success() {
        drop(logf);
        let text = fs::read_to_string(&log).unwrap_or_default();
        let errs: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.contains("error:") || l.contains("Error ") || l.contains("undefined reference")
            })
            .take(20)
            .collect();
        let tail: Vec<&str> = text
            .lines()
            .rev()
            .take(25)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let shown = if errs.is_empty() { tail } else { errs };
        return Err(untestable(format!(
            "the kernel does not build ({}):\n{}\nfull log: {}",
            status,
            shown.join("\n"),
            log.display()
        )));
    }
    let sha256 = sha256_file(&bz)?;
    fs::write(
        &stamp_path,
        serde_json::to_string(&Stamp {
            steps,
            sha256: sha256.clone(),
        })?,
    )
    .context("cannot write build stamp")?;
    let secs = stage.finish(format!("bzImage {} ({steps} steps)", &sha256[..12]));
    Ok(Built {
        bzimage: bz,
        sha256,
        rebuilt: true,
        seconds: secs.as_secs_f64(),
        log,
        ccache: use_ccache,
    })
}
