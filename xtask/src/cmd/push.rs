//! `cargo xtask push [--run GLOB]…`: rebuild guest-tests (static, as for the
//! root image), upload it to the running `vm` guest over SFTP and, with
//! `--run`, run the selected tests there without rebooting.
//!
//! The tests run as the ordinary suite: `guest-tests --init` in a private
//! mount namespace (`unshare -m`) whose `/proc/cmdline` is a bind mount of
//! `bufaio.mode=suite bufaio.filter=…` and where PID 1's mounts of the test
//! disks are dropped first (the same superblocks are mounted again), so the runner, the slow-device copy,
//! the mounts, the new-behaviour markers and the KTAP are exactly those of a
//! run. PID 1 holds the `bufaio.ktap` port, so KTAP comes back on stdout
//! with the `KTAP: ` console prefix; it is parsed by `ktap.rs` and judged by
//! `exitcode::classify` like a run, and the VM console is scanned for splats.

use crate::error::usage;
use crate::exitcode::{self, VmEnd};
use crate::ktap;
use crate::pipeline::{self, Variant};
use crate::rootfs;
use crate::scan;
use crate::ssh::{self, VmState};
use crate::ui::Ui;
use anyhow::{Context, Result};
use std::fs;
use std::io::Write;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// After the upload run the tests matching these globs (full names such
    /// as `read/*@ext2`; repeatable or comma-separated).
    #[arg(long = "run")]
    pub run: Vec<String>,
    /// Per-test timeout in seconds (in the guest).
    #[arg(long, default_value_t = 120)]
    pub test_timeout: u64,
    /// Seconds to keep trying to connect.
    #[arg(long, default_value_t = 30)]
    pub wait: u64,
}

/// Where the pushed binary lives in the guest (tmpfs).
pub const GUEST_BIN: &str = "/tmp/guest-tests";

/// The guest command running the selected tests as a suite.
pub fn run_command(filters: &[String], test_timeout: u64) -> String {
    format!(
        "printf '%s\\n' 'bufaio.mode=suite bufaio.filter={} bufaio.test_timeout={test_timeout}' > /tmp/bufaio-push.cmdline && sync && \
         exec unshare -m sh -c 'umount /mnt/ext2 /mnt/ext3; mount --bind /tmp/bufaio-push.cmdline /proc/cmdline && exec {GUEST_BIN} --init'",
        filters.join(",")
    )
}

fn variants(st: &VmState) -> Vec<Variant> {
    st.variants
        .iter()
        .map(|v| match v.as_str() {
            "unpatched" => Variant::Unpatched,
            _ => Variant::Patched,
        })
        .collect()
}

fn allowlist(root: &std::path::Path) -> Result<scan::Allowlist> {
    let cfg = crate::config::Config::load(&root.join(crate::config::DEFAULT_FILE))?;
    match &cfg.splat_allowlist {
        None => Ok(scan::Allowlist::empty()),
        Some(p) => {
            let p = if p.is_relative() {
                root.join(p)
            } else {
                p.clone()
            };
            scan::Allowlist::parse(&fs::read_to_string(&p)?)
        }
    }
}

pub fn main(a: Args) -> Result<i32> {
    let root = super::project_root();
    let filters: Vec<String> = a
        .run
        .iter()
        .flat_map(|f| f.split(','))
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(String::from)
        .collect();
    if let Some(bad) = filters
        .iter()
        .find(|f| f.chars().any(|c| c.is_whitespace() || "'\"\\".contains(c)))
    {
        return Err(usage(format!(
            "--run {bad:?}: globs cannot contain spaces or quotes"
        )));
    }
    let st = VmState::load(&root)?;
    let ui = Ui::new();
    let bin = rootfs::build_guest(&root, &ui)?;
    let sess = super::ssh::session(&st, Duration::from_secs(a.wait))?;
    let t = Instant::now();
    let how = ssh::upload(&sess, &bin, GUEST_BIN)?;
    let size = fs::metadata(&bin)?.len();
    let sha = crate::cache::sha256_file(&bin)?;
    ui.info(format!(
        "push: {} ({} KiB, sha256 {}) → {GUEST_BIN} over {how} in {:.1}s",
        bin.display(),
        size / 1024,
        &sha[..12],
        t.elapsed().as_secs_f64()
    ));
    if filters.is_empty() {
        println!(
            "uploaded; run tests with `cargo xtask push --run 'read/*'` or `cargo xtask ssh -- {GUEST_BIN} --list`"
        );
        return Ok(0);
    }
    let console_start = fs::metadata(&st.console).map(|m| m.len()).unwrap_or(0);
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!("[hour][minute][second]"))
        .unwrap_or_default();
    let dir = st.run_dir.join(format!("push-{stamp}"));
    fs::create_dir_all(&dir)?;
    let stage = ui.stage(
        "push",
        format!("running {} in the guest", filters.join(",")),
    );
    let mut collected: Vec<u8> = Vec::new();
    let mut line = Vec::new();
    let mut echo = |b: &[u8], collected: &mut Vec<u8>| {
        collected.extend_from_slice(b);
        for &c in b {
            line.push(c);
            if c == b'\n' {
                // Human lines (per-test summaries) live; KTAP is parsed below.
                if !line.starts_with(ktap::CONSOLE_PREFIX.as_bytes()) {
                    let mut e = std::io::stderr();
                    e.write_all(&line).ok();
                    e.flush().ok();
                }
                line.clear();
            }
        }
    };
    let mut err_bytes = Vec::new();
    let cmd = run_command(&filters, a.test_timeout);
    let r = ssh::exec(
        &sess,
        &cmd,
        None,
        &mut |b| echo(b, &mut collected),
        &mut |b| err_bytes.extend_from_slice(b),
    );
    let status = match r {
        Ok(s) => Some(s),
        Err(e) => {
            ui.warn(format!("push: the guest command failed: {e:#}"));
            None
        }
    };
    stage.finish(format!(
        "exit {status:?} after {:.1}s",
        t.elapsed().as_secs_f64()
    ));
    let out = String::from_utf8_lossy(&collected).into_owned();
    fs::write(dir.join("output.txt"), &out)?;
    let text = ktap::extract_from_console(&out);
    fs::write(dir.join("results.ktap"), &text)?;
    let mut report = ktap::parse(&text);
    let vs = variants(&st);
    let verdicts = pipeline::apply_expectations(&mut report, &vs);
    let console = fs::read(&st.console).unwrap_or_default();
    let new_console =
        String::from_utf8_lossy(&console[(console_start as usize).min(console.len())..])
            .into_owned();
    let splats = scan::scan(&new_console, &allowlist(&root)?);
    let (mut outcome, mut reason) = exitcode::classify(&report, &splats, &VmEnd::Exited, false);
    let alive = st.qemu_alive();
    if alive && scan::first_failing(&splats).is_none() && !text.contains("KTAP version") {
        // The kernel is fine but the suite never started (unshare, mount or
        // guest-tests refused): not a kernel crash.
        outcome = crate::exitcode::Outcome::Infrastructure;
        let last: Vec<&str> = out.lines().rev().take(5).collect();
        reason = format!(
            "the guest command produced no KTAP (exit {status:?}): {}",
            last.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    println!();
    for (t, v) in report.tests.iter().zip(&verdicts) {
        println!(
            "{:<6} {:<45} {}",
            format!("{v:?}").to_lowercase(),
            t.name,
            t.duration_ms.map(|d| format!("{d} ms")).unwrap_or_default()
        );
        if matches!(v, pipeline::Verdict::Fail | pipeline::Verdict::XPass) {
            for d in t.diagnostics.iter().take(20) {
                println!("         # {d}");
            }
        }
    }
    let err_text = String::from_utf8_lossy(&err_bytes);
    if !err_text.trim().is_empty() {
        println!("guest stderr:\n{}", err_text.trim_end());
    }
    if let Some(s) = scan::first_failing(&splats) {
        println!("first splat ({}):\n{}", st.console.display(), s.excerpt);
    }
    if !alive {
        println!("{:#}", super::vm::dead_vm_error(&st));
    }
    let json = serde_json::json!({
        "outcome": outcome,
        "exit_code": outcome.code(),
        "reason": reason,
        "variants": st.variants,
        "guest_sha256": sha,
        "tests": report.tests.iter().zip(&verdicts).map(|(t, v)| serde_json::json!({
            "name": t.name, "status": t.status, "verdict": v, "duration_ms": t.duration_ms,
            "diagnostics": t.diagnostics,
        })).collect::<Vec<_>>(),
    });
    fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&json)?,
    )
    .context("cannot write results.json")?;
    println!(
        "push: {} — {} ({}; results: {})",
        outcome.label(),
        reason,
        st.variants.join("+"),
        dir.display()
    );
    Ok(outcome.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_command_fakes_the_cmdline_in_a_private_namespace() {
        let c = run_command(&["basic/*".into(), "read/x@ext2".into()], 60);
        assert!(
            c.contains(
                "'bufaio.mode=suite bufaio.filter=basic/*,read/x@ext2 bufaio.test_timeout=60'"
            ),
            "{c}"
        );
        assert!(c.contains("unshare -m sh -c 'umount /mnt/ext2 /mnt/ext3; mount --bind /tmp/bufaio-push.cmdline /proc/cmdline && exec /tmp/guest-tests --init'"));
    }
}
