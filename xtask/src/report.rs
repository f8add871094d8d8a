//! Stage 8, report: the run directory's `manifest.yaml` (every input, enough
//! to repeat the run), the combined `results.json`, and the result table.

use crate::config::Config;
use crate::exitcode::Outcome;
use crate::fetch::Fetched;
use crate::patch::PatchInfo;
use crate::pipeline::{KernelBuild, KernelResult, Verdict};
use crate::yaml;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub bufaio_manifest: u32,
    pub run_id: String,
    pub command: String,
    pub kernel_selection: String,
    pub flavor: String,
    pub filters: Vec<String>,
    pub append: Vec<String>,
    pub source: ManifestSource,
    pub patches: Vec<ManifestPatch>,
    pub kernels: Vec<ManifestKernel>,
    pub toolchain: BTreeMap<String, String>,
    pub accel: String,
    pub config: Config,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestSource {
    pub id: String,
    pub description: String,
    pub tarball_sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestPatch {
    pub name: String,
    pub sha256: String,
    pub subject: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestKernel {
    pub variants: Vec<String>,
    pub tree_key: String,
    pub fragments_hash: String,
    pub config_hash: String,
    pub bzimage_sha256: String,
    pub qemu_command: String,
}

pub fn patches_of(p: &[PatchInfo]) -> Vec<ManifestPatch> {
    p.iter()
        .map(|p| ManifestPatch {
            name: p.name.clone(),
            sha256: p.sha256.clone(),
            subject: p.subject.clone(),
        })
        .collect()
}

pub fn source_of(f: &Fetched) -> ManifestSource {
    ManifestSource {
        id: f.id.clone(),
        description: f.description.clone(),
        tarball_sha256: f.tarball_sha256.clone(),
    }
}

pub fn kernels_of(builds: &[KernelBuild], results: &[KernelResult]) -> Vec<ManifestKernel> {
    builds
        .iter()
        .map(|b| ManifestKernel {
            variants: b.variants.iter().map(|v| v.name().to_string()).collect(),
            tree_key: b.tree.key.clone(),
            fragments_hash: b.configured.fragments_hash.clone(),
            config_hash: b.configured.config_hash.clone(),
            bzimage_sha256: b.built.sha256.clone(),
            qemu_command: results
                .iter()
                .find(|r| r.bzimage_sha256 == b.built.sha256)
                .map(|r| r.qemu_command.clone())
                .unwrap_or_default(),
        })
        .collect()
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "not found".into())
}

pub fn toolchain(qemu: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("gcc".into(), first_line("gcc", &["--version"]));
    m.insert("make".into(), first_line("make", &["--version"]));
    m.insert("qemu".into(), first_line(qemu, &["--version"]));
    m.insert("rustc".into(), first_line("rustc", &["--version"]));
    m.insert("ccache".into(), first_line("ccache", &["--version"]));
    m.insert("mke2fs".into(), {
        let o = Command::new("mke2fs").arg("-V").output().ok();
        o.map(|o| {
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
    });
    m
}

impl Manifest {
    pub fn write(&self, dir: &Path) -> Result<()> {
        let text = yaml::to_string(self)?;
        std::fs::write(dir.join("manifest.yaml"), text).context("cannot write manifest.yaml")
    }

    pub fn load(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read manifest {}", path.display()))?;
        yaml::from_str(&text, path)
    }
}

/// What a boot-and-test command (`run`, `soak`) records at its end.
pub struct RunRecord<'a> {
    pub run_id: &'a str,
    pub command: &'a str,
    pub kernel_selection: String,
    pub flavor: &'a str,
    pub filters: &'a [String],
    pub append: &'a [String],
    pub source: &'a Fetched,
    pub patches: &'a [PatchInfo],
    pub builds: &'a [KernelBuild],
    pub results: &'a [KernelResult],
    pub accel: &'a crate::vm::AccelChoice,
    pub config: &'a Config,
}

/// Writes `manifest.yaml` and `results.json` into `dir`, publishes the
/// summary to GitHub Actions when running there; returns the worst outcome.
pub fn finish_run(dir: &Path, rec: &RunRecord) -> Result<Outcome> {
    let outcome = rec
        .results
        .iter()
        .map(|r| r.outcome)
        .fold(Outcome::Pass, Outcome::worst);
    let manifest = Manifest {
        bufaio_manifest: 1,
        run_id: rec.run_id.to_string(),
        command: rec.command.to_string(),
        kernel_selection: rec.kernel_selection.clone(),
        flavor: rec.flavor.to_string(),
        filters: rec.filters.to_vec(),
        append: rec.append.to_vec(),
        source: source_of(rec.source),
        patches: patches_of(rec.patches),
        kernels: kernels_of(rec.builds, rec.results),
        toolchain: toolchain(&rec.config.qemu.binary),
        accel: format!("{:?}: {}", rec.accel.accel, rec.accel.reason),
        config: rec.config.clone(),
    };
    manifest.write(dir)?;
    let summary = RunSummary {
        run_id: rec.run_id,
        outcome,
        exit_code: outcome.code(),
        kernels: rec.results,
    };
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&summary)?,
    )
    .context("cannot write results.json")?;
    crate::gha::publish(&serde_json::to_value(&summary)?);
    crate::proc::clear_run_dir();
    Ok(outcome)
}

/// One line per booted kernel (outcome, reason, release, filesystems,
/// accelerator, boot→ready) and the first splat's excerpt where there is one.
pub fn kernel_lines(results: &[KernelResult]) -> String {
    let mut s = String::new();
    for r in results {
        let v: Vec<&str> = r.variants.iter().map(|v| v.name()).collect();
        let _ = writeln!(
            s,
            "{}: {} — {} (kernel {}, {} on {:?}, boot→ready {})",
            v.join("+"),
            r.outcome.label(),
            r.reason,
            r.kernel_release.as_deref().unwrap_or("?"),
            r.filesystems.as_deref().unwrap_or("?"),
            r.accel,
            r.boot_to_ready_ms
                .map(|ms| format!("{:.2}s", ms as f64 / 1000.0))
                .unwrap_or_else(|| "never".into())
        );
        if let Some(sp) = r.splats.iter().find(|sp| !sp.allowed) {
            let _ = writeln!(
                s,
                "first splat ({}:{}):\n{}",
                r.dir.join("console.log").display(),
                sp.line,
                sp.excerpt
            );
        }
    }
    s
}

#[derive(Debug, Serialize)]
pub struct RunSummary<'a> {
    pub run_id: &'a str,
    pub outcome: Outcome,
    pub exit_code: i32,
    pub kernels: &'a [KernelResult],
}

fn mark(s: Option<Verdict>) -> &'static str {
    match s {
        Some(Verdict::Pass) => "ok",
        Some(Verdict::Fail) => "FAIL",
        Some(Verdict::Skip) => "skip",
        Some(Verdict::XFail) => "xfail",
        Some(Verdict::XPass) => "XPASS",
        Some(Verdict::Todo) => "todo",
        None => "-",
    }
}

/// The result table: one row per test, one column per booted kernel.
pub fn table(results: &[KernelResult]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for r in results {
        for t in &r.tests {
            if !names.contains(&t.name.as_str()) {
                names.push(&t.name);
            }
        }
    }
    let cols: Vec<String> = results
        .iter()
        .map(|r| {
            r.variants
                .iter()
                .map(|v| v.name())
                .collect::<Vec<_>>()
                .join(" = ")
        })
        .collect();
    let w = names.iter().map(|n| n.len()).max().unwrap_or(4).max(4);
    let mut out = String::new();
    let _ = write!(out, "| {:<w$} |", "test");
    for c in &cols {
        let _ = write!(out, " {c} |");
    }
    out.push('\n');
    let _ = write!(out, "|{}|", "-".repeat(w + 2));
    for c in &cols {
        let _ = write!(out, "{}|", "-".repeat(c.len() + 2));
    }
    out.push('\n');
    for n in &names {
        let _ = write!(out, "| {n:<w$} |");
        for (r, c) in results.iter().zip(&cols) {
            let t = r.tests.iter().find(|t| t.name == *n);
            let cell = match t.and_then(|t| t.duration_ms) {
                Some(ms) => format!("{} {ms}ms", mark(t.map(|t| t.verdict))),
                None => mark(t.map(|t| t.verdict)).to_string(),
            };
            let _ = write!(out, " {cell:<width$} |", width = c.len());
        }
        out.push('\n');
    }
    let _ = write!(out, "| {:<w$} |", "outcome");
    for (r, c) in results.iter().zip(&cols) {
        let _ = write!(out, " {:<width$} |", r.outcome.label(), width = c.len());
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ktap::Status;
    use crate::pipeline::{TestRow, Variant};

    fn result(variants: Vec<Variant>, tests: Vec<(&str, Status)>) -> KernelResult {
        KernelResult {
            variants,
            flavor: "default".into(),
            kernel_release: None,
            filesystems: None,
            series: vec![],
            bzimage_sha256: String::new(),
            accel: crate::qemu::Accel::Tcg,
            accel_reason: String::new(),
            outcome: Outcome::Pass,
            exit_code: 0,
            reason: String::new(),
            vm_end: String::new(),
            tests: tests
                .into_iter()
                .map(|(n, s)| TestRow {
                    name: n.into(),
                    verdict: match s {
                        Status::Pass => Verdict::Pass,
                        Status::Fail => Verdict::Fail,
                        Status::Skip => Verdict::Skip,
                    },
                    status: s,
                    duration_ms: Some(5),
                    diagnostic: String::new(),
                })
                .collect(),
            splats: vec![],
            exec_status: None,
            boot_to_ready_ms: None,
            boot_to_ktap_ms: None,
            vm_wall_ms: 0,
            qemu_exit_status: None,
            dir: "/x".into(),
            qemu_command: String::new(),
        }
    }

    #[test]
    fn table_has_a_column_per_kernel() {
        let a = result(
            vec![Variant::Unpatched],
            vec![("read/a@ext2", Status::Fail)],
        );
        let b = result(
            vec![Variant::Patched],
            vec![("read/a@ext2", Status::Pass), ("read/b@ext3", Status::Skip)],
        );
        let t = table(&[a, b]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "| test        | unpatched | patched |");
        assert_eq!(lines[2], "| read/a@ext2 | FAIL 5ms  | ok 5ms  |");
        assert_eq!(lines[3], "| read/b@ext3 | -         | skip 5ms |");
        assert!(lines[4].starts_with("| outcome"));
    }
}
