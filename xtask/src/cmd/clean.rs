//! `cargo xtask clean [--runs-older-than DAYS] [--trees] [--dry-run]`:
//! reclaims the disk space runs leave behind. A run deletes its disk
//! images when it ends; one that was killed (SIGKILL, a crash of the
//! toolkit, a full disk) leaves them, and run dirs pile up.
//!
//! Always: disk images (`disk-*.img`, `payload/`) in run dirs that are
//! not active (no live process holds their `.active` lock, no QEMU names
//! them, not the dev-loop VM's), and downloads kept aside after failing
//! verification (`rejected-*`, `*.bad`). `--runs-older-than D`: whole
//! run dirs (and bisect dirs) whose last change is older than D days.
//! `--trees`: the cache's extracted and built trees (rebuilt on demand;
//! refused while any run is active).

use anyhow::{Context, Result};
use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also remove run dirs (target/runs, target/bisect) not changed for
    /// this many days.
    #[arg(long, value_name = "DAYS")]
    pub runs_older_than: Option<u64>,
    /// Also remove the cache's kernel trees and their builds.
    #[arg(long)]
    pub trees: bool,
    /// Only list what would be removed.
    #[arg(long)]
    pub dry_run: bool,
}

/// What to remove under `runs` (dirs of runs, each with kernel subdirs):
/// disk images of every run not in `busy`, and whole runs older than
/// `older_than` (by the newest mtime of the run dir and its direct
/// children). Pure over the listing it reads; no deletion.
pub fn plan(
    runs: &Path,
    now: SystemTime,
    older_than: Option<Duration>,
    busy: &HashSet<PathBuf>,
) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(runs) else {
        return out;
    };
    let mut dirs: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !p.is_symlink())
        .collect();
    dirs.sort();
    for run in dirs {
        if busy.iter().any(|b| b.starts_with(&run)) || crate::pipeline::is_active(&run) {
            continue;
        }
        let newest = newest_mtime(&run);
        let old = match (older_than, newest) {
            (Some(age), Some(t)) => now.duration_since(t).is_ok_and(|d| d >= age),
            _ => false,
        };
        if old {
            out.push(run);
            continue;
        }
        let mut kernel_dirs = vec![run.clone()];
        if let Ok(rd) = fs::read_dir(&run) {
            kernel_dirs.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
        for k in kernel_dirs {
            let Ok(rd) = fs::read_dir(&k) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                let disk = name.starts_with("disk-") && name.ends_with(".img");
                if disk || (name == "payload" && p.is_dir()) {
                    out.push(p);
                }
            }
        }
    }
    out
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut t = fs::metadata(dir).ok()?.modified().ok()?;
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                t = t.max(m);
            }
        }
    }
    Some(t)
}

/// Bytes a path really occupies (allocated blocks: images are sparse).
fn usage(p: &Path) -> u64 {
    let Ok(m) = fs::symlink_metadata(p) else {
        return 0;
    };
    if m.is_dir() {
        fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| usage(&e.path())).sum())
            .unwrap_or(0)
    } else {
        m.blocks() * 512
    }
}

/// Run dirs some QEMU has open: its command line names a file in them.
fn busy_run_dirs() -> HashSet<PathBuf> {
    let mut out = HashSet::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(cmd) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        // Any QEMU (qemu-system-*, qemu-kvm, a wrapper named so).
        if !args.first().is_some_and(|a| a.contains("qemu")) {
            continue;
        }
        for a in &args {
            for part in a.split([',', '=']) {
                if part.contains("/target/runs/") || part.contains("/target/bisect/") {
                    out.insert(PathBuf::from(part));
                }
            }
        }
    }
    out
}

pub fn main(a: Args, ctx_root: &Path) -> Result<i32> {
    let mut busy = busy_run_dirs();
    // The dev-loop VM (`cargo xtask vm`) outlives the command that started
    // it; its run dir is busy until `vm --stop`.
    if let Ok(st) = crate::ssh::VmState::load(ctx_root) {
        busy.insert(st.run_dir);
    }
    let now = SystemTime::now();
    let age = a.runs_older_than.map(|d| Duration::from_secs(d * 86_400));
    let mut victims = Vec::new();
    for sub in ["target/runs", "target/bisect"] {
        victims.extend(plan(&ctx_root.join(sub), now, age, &busy));
    }
    let cache = crate::cache::Cache::open()?;
    let _lock = if a.trees { Some(cache.lock()?) } else { None };
    if a.trees {
        // A run copies its bzImage out of the tree after the build (and a
        // bisect builds step by step): trees go only when no run is active.
        let mut active = Vec::new();
        for sub in ["target/runs", "target/bisect"] {
            if let Ok(rd) = fs::read_dir(ctx_root.join(sub)) {
                active.extend(
                    rd.flatten()
                        .map(|e| e.path())
                        .filter(|p| !p.is_symlink() && crate::pipeline::is_active(p)),
                );
            }
        }
        active.extend(busy.iter().cloned());
        if !active.is_empty() {
            anyhow::bail!(
                "not removing the cached trees while runs are active: {}",
                active
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if let Ok(rd) = fs::read_dir(cache.trees()) {
            victims.extend(rd.flatten().map(|e| e.path()));
        }
    }
    // Cached files that failed verification, kept aside for inspection.
    if let Ok(rd) = fs::read_dir(cache.downloads()) {
        victims.extend(rd.flatten().map(|e| e.path()).filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with("rejected-") || n.ends_with(".bad")
        }));
    }
    let mut freed = 0u64;
    for v in &victims {
        let n = usage(v);
        freed += n;
        println!(
            "{} {} ({:.1} MiB)",
            if a.dry_run { "would remove" } else { "remove" },
            v.display(),
            n as f64 / (1 << 20) as f64
        );
        if a.dry_run {
            continue;
        }
        let r = if v.is_dir() && !v.is_symlink() {
            fs::remove_dir_all(v)
        } else {
            fs::remove_file(v)
        };
        r.with_context(|| format!("cannot remove {}", v.display()))?;
    }
    if !busy.is_empty() {
        println!("left alone: {} path(s) a running QEMU uses", busy.len());
    }
    println!(
        "{} {} item(s), {:.1} MiB",
        if a.dry_run { "would free" } else { "freed" },
        victims.len(),
        freed as f64 / (1 << 20) as f64
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_takes_disks_of_idle_runs_and_old_runs_whole() {
        let d = tempfile::tempdir().unwrap();
        let runs = d.path();
        for (run, files) in [
            (
                "r1-run",
                vec![
                    "patched/disk-ext2.img",
                    "patched/console.log",
                    "manifest.yaml",
                ],
            ),
            (
                "r2-run",
                vec!["unpatched/disk-slow-ext3.img", "unpatched/results.json"],
            ),
            ("r3-exec", vec!["disk-payload.img", "patched/console.log"]),
        ] {
            for f in files {
                let p = runs.join(run).join(f);
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::write(p, "x").unwrap();
            }
        }
        fs::create_dir_all(runs.join("r3-exec/payload")).unwrap();
        std::os::unix::fs::symlink("r1-run", runs.join("latest")).unwrap();
        let busy: HashSet<PathBuf> = [runs.join("r2-run/unpatched/disk-slow-ext3.img")].into();
        let now = SystemTime::now();
        // A run whose process lives (holds .active) is left alone too.
        fs::create_dir_all(runs.join("r4-run/patched")).unwrap();
        fs::write(runs.join("r4-run/patched/disk-ext2.img"), "x").unwrap();
        crate::pipeline::hold_active(&runs.join("r4-run")).unwrap();
        assert!(crate::pipeline::is_active(&runs.join("r4-run")));
        assert!(!crate::pipeline::is_active(&runs.join("r1-run")));
        let p = plan(runs, now, None, &busy);
        assert_eq!(
            p,
            vec![
                runs.join("r1-run/patched/disk-ext2.img"),
                runs.join("r3-exec/disk-payload.img"),
                runs.join("r3-exec/payload"),
            ],
            "disks of idle runs only, logs kept"
        );
        // Everything is older than 0 days: idle runs go whole.
        let p = plan(
            runs,
            now + Duration::from_secs(10),
            Some(Duration::ZERO),
            &busy,
        );
        assert_eq!(p, vec![runs.join("r1-run"), runs.join("r3-exec")]);
        // Nothing is older than a day.
        let p = plan(
            runs,
            now,
            Some(Duration::from_secs(86_400)),
            &HashSet::new(),
        );
        assert!(
            p.iter()
                .all(|x| x.to_string_lossy().contains("disk-") || x.ends_with("payload")),
            "{p:?}"
        );
    }
}
