//! `cargo xtask bench`: issue 5's performance suite. Builds the unpatched and
//! the patched kernel (one build when the series is empty), boots each in
//! exec mode with the static `guest-bench` (and, when the host has it, the
//! Debian fio with its libraries) on the payload disk, collects the JSON
//! lines, and writes `bench.json`, `bench.md` (also printed) and SVG plots
//! into `target/runs/<id>/`.

use super::Common;
use crate::bench::{self, report, GuestOutput};
use crate::exitcode::Outcome;
use crate::patch::Series;
use crate::peers::fio_files;
use crate::pipeline::{self, BootOpts, GuestJob, KernelSel};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// All queue depths (1, 2, 4, 8, 16, 32, 64) instead of 1, 8, 32.
    #[arg(long)]
    pub full: bool,
    /// Queue depths, comma-separated (overrides --full).
    #[arg(long)]
    pub qd: Option<String>,
    /// Cold random reads per point.
    #[arg(long, default_value_t = 2000)]
    pub reads: usize,
    /// Warm-cache reads per point.
    #[arg(long, default_value_t = 100000)]
    pub warm_reads: usize,
    /// Buffered writes per point of the write workloads (write4k,
    /// write4k-dsync: half whole 4 KiB blocks, half 512 B inside a block).
    #[arg(long, default_value_t = 500)]
    pub writes: usize,
    /// Queue depths of the write workloads, comma-separated.
    #[arg(long, default_value = "1,32")]
    pub write_qd: String,
    /// Size of the benchmark file on each filesystem (MiB).
    #[arg(long, default_value_t = 128)]
    pub file_mib: u64,
    /// Boots per kernel; points report the median run and the spread.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Small and quick (200 reads, 100 writes, 16 MiB file, QD 1 and 8, no
    /// fio): a check that the bench still works, not a measurement.
    #[arg(long)]
    pub smoke: bool,
    /// Skip the fio cross-check even when fio is installed.
    #[arg(long)]
    pub no_fio: bool,
    /// Test disk size (MiB). ≥ 512 makes mke2fs use 4 KiB blocks.
    #[arg(long, default_value_t = 512)]
    pub disk_mib: u32,
    /// Which kernels (default both).
    #[arg(long, value_enum, default_value = "both")]
    pub kernel: KernelSel,
    /// Another series to build and boot as one more patched kernel, interleaved
    /// with the others (e.g. `patches/6.12/v1/series`, labelled `v1`: the series
    /// file's directory, or its name when that is not `series`). Repeatable.
    /// Adds the series-comparison table (issue 12's regression targets).
    #[arg(long = "also-series", value_name = "FILE")]
    pub also_series: Vec<PathBuf>,
    /// Extra arguments for guest-bench (e.g. `--guest-arg=--engines=aio`). Repeatable.
    #[arg(long = "guest-arg", allow_hyphen_values = true)]
    pub guest_args: Vec<String>,
}

/// Build guest-bench as a static binary (same target dir and flags as the
/// guest suite).
fn build_guest_bench(root: &Path, ui: &crate::ui::Ui) -> Result<PathBuf> {
    crate::rootfs::build_static(root, "guest-bench", ui)
}

/// The column label of an `--also-series` file: `patches/6.12/v1/series` → `v1`,
/// `old.series` → `old`. Refuses labels the bench uses for its own kernels.
pub fn series_label(file: &Path, taken: &[String]) -> Result<String> {
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let label = if name == "series" {
        file.parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .unwrap_or("")
    } else {
        file.file_stem().and_then(|n| n.to_str()).unwrap_or("")
    };
    let label: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if label.is_empty() {
        return Err(crate::error::usage(format!(
            "--also-series {}: cannot name a column after this path",
            file.display()
        )));
    }
    if ["patched", "unpatched", "prebuilt", "partial"].contains(&label.as_str())
        || taken.contains(&label)
    {
        return Err(crate::error::usage(format!(
            "--also-series {}: its column would be called {label:?}, which is taken (rename its directory or file)",
            file.display()
        )));
    }
    Ok(label)
}

/// A comma-separated list of queue depths (each ≥ 1), as guest-bench takes it.
pub fn parse_qd_list(s: &str) -> Result<Vec<usize>> {
    let v = s
        .split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| {
            x.trim()
                .parse::<usize>()
                .ok()
                .filter(|&q| q > 0)
                .with_context(|| format!("queue depth {x:?} in {s:?} is not a number ≥ 1"))
        })
        .collect::<Result<Vec<usize>>>()?;
    if v.is_empty() {
        bail!("no queue depth in {s:?}");
    }
    Ok(v)
}

#[derive(Serialize)]
struct KernelRun {
    label: String,
    repeat: usize,
    kernel_release: Option<String>,
    bzimage_sha256: String,
    outcome: String,
    exec_status: Option<i32>,
    vm_wall_ms: u64,
    dir: PathBuf,
    guest_errors: Vec<String>,
    complete: bool,
}

#[derive(Serialize)]
struct BenchJson<'a> {
    bufaio_bench: u32,
    run_id: &'a str,
    accel: String,
    accel_reason: String,
    device_latency_ns: Option<u64>,
    clocksource: Option<String>,
    kernel_append: &'a [String],
    repeats: usize,
    guest_argv: &'a [String],
    series: Vec<String>,
    shared_build: bool,
    runs: &'a [KernelRun],
    columns: &'a [report::Column],
    fio: &'a [report::FioRow],
    acceptance_qd: usize,
    acceptance: &'a [report::Check],
    /// `--also-series` columns: label → series file, and issue 12's checks.
    also_series: Vec<(String, PathBuf)>,
    series_checks: &'a [report::Check],
    plots: Vec<String>,
}

pub fn main(mut a: Args) -> Result<i32> {
    crate::deps::check()?;
    if a.smoke {
        a.reads = a.reads.min(200);
        a.warm_reads = a.warm_reads.min(2000);
        a.file_mib = a.file_mib.min(16);
        a.writes = a.writes.min(100);
        a.write_qd = "1,8".into();
        a.qd.get_or_insert_with(|| "1,8".into());
        a.no_fio = true;
    }
    // Validated and normalised here (guest-bench takes "1,8,32" only).
    let join = |v: Vec<usize>| v.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
    if let Some(q) = &a.qd {
        a.qd = Some(join(parse_qd_list(q).context("--qd")?));
    }
    a.write_qd = join(parse_qd_list(&a.write_qd).context("--write-qd")?);
    let mut ctx = a.common.context()?;
    ctx.cfg.disks.size_mib = ctx.cfg.disks.size_mib.max(a.disk_mib);
    let series = Series::load(&ctx.cfg.series)?;
    let (run_id, dir) = pipeline::new_run_dir(&ctx.root, "bench")?;
    ctx.ui.info(format!("bench {run_id}: {}", dir.display()));
    // Loaded and named before any build, so a bad file is refused at once.
    let mut also: Vec<(String, Series)> = Vec::new();
    for f in &a.also_series {
        let taken: Vec<String> = also.iter().map(|(l, _)| l.clone()).collect();
        let label = series_label(f, &taken)?;
        let s = Series::load(f)?;
        if s.patches.is_empty() {
            return Err(crate::error::usage(format!(
                "--also-series {}: the series is empty (that is the unpatched kernel)",
                f.display()
            )));
        }
        also.push((label, s));
    }
    let (src, mut builds) =
        pipeline::build_kernels(&ctx, &series, a.kernel, &a.common.flavor, &dir)?;
    let mut labels: Vec<String> = builds
        .iter()
        .map(|kb| {
            kb.variants
                .iter()
                .map(|v| v.name())
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    for (label, s) in &also {
        let kb = pipeline::build_series_kernel(&ctx, s, &a.common.flavor, &dir)?;
        if let Some(i) = builds.iter().position(|b| b.tree.key == kb.tree.key) {
            return Err(crate::error::usage(format!(
                "--also-series {}: the same patches as the {} kernel",
                s.file.display(),
                labels[i]
            )));
        }
        ctx.ui.info(format!(
            "bench: column {label} = {} ({} patches)",
            s.file.display(),
            s.patches.len()
        ));
        builds.push(kb);
        labels.push(label.clone());
    }
    let bench_bin = build_guest_bench(&ctx.root, &ctx.ui)?;
    let root = pipeline::guest_image(&ctx)?;
    let accel = pipeline::accel(&ctx, ctx.cfg.qemu.accel, &builds[0], &root)?;
    let mut argv: Vec<String> = vec![
        "./guest-bench".into(),
        "--reads".into(),
        a.reads.to_string(),
        "--warm-reads".into(),
        a.warm_reads.to_string(),
        "--file-mib".into(),
        a.file_mib.to_string(),
        "--writes".into(),
        a.writes.to_string(),
        "--write-qd".into(),
        a.write_qd.clone(),
    ];
    match (&a.qd, a.full) {
        (Some(q), _) => argv.extend(["--qd".into(), q.clone()]),
        (None, true) => argv.push("--full".into()),
        (None, false) => {}
    }
    let mut files = vec![bench_bin];
    if !a.no_fio {
        match fio_files(&dir.join("fio-shim"))? {
            Some(f) => {
                ctx.ui.info(format!(
                    "fio: cross-check on, {} files into the payload",
                    f.len()
                ));
                files.extend(f);
                argv.extend(["--fio-dir".into(), "/mnt/payload".into()]);
            }
            None => ctx
                .ui
                .warn("fio: not installed (apt-get install fio): no cross-check"),
        }
    }
    argv.extend(a.guest_args.iter().cloned());
    let job = GuestJob::Exec {
        argv: argv.clone(),
        files,
    };
    let mut append = a.common.append.clone();
    // The same TCG clock words boot_and_test would add (recorded here so
    // bench.json shows the exact kernel command line).
    let clock = crate::vm::tcg_clock_args(accel.accel, &append);
    if !clock.is_empty() {
        ctx.ui.info(format!(
            "clock: {} (TCG guests otherwise may fall back to jiffies)",
            clock.join(" ")
        ));
    }
    append.extend(clock);
    let opts = BootOpts {
        accel: &accel,
        append: append.clone(),
        echo_out: false,
        progress: None,
    };
    let mut runs: Vec<KernelRun> = Vec::new();
    let mut outputs: Vec<(String, Vec<GuestOutput>)> = Vec::new();
    let mut results = Vec::new();
    let mut worst = Outcome::Pass;
    for rep in 0..a.repeat.max(1) {
        for (kb, label) in builds.iter().zip(&labels) {
            let label = label.clone();
            let sub = if a.repeat > 1 {
                dir.join(&label).join(format!("rep-{rep}"))
            } else {
                dir.join(&label)
            };
            let r = pipeline::boot_and_test(&ctx, kb, &root, &job, &opts, &sub)?;
            let text = std::fs::read_to_string(sub.join("exec-output.txt")).unwrap_or_default();
            let out = bench::parse_output(&text);
            ctx.ui.info(format!(
                "{label}: {} points, {} fio, exec status {:?}{}",
                out.points.len(),
                out.fio.len(),
                r.exec_status,
                if out.errors.is_empty() {
                    String::new()
                } else {
                    format!(", guest errors: {}", out.errors.join("; "))
                }
            ));
            if r.outcome != Outcome::Pass {
                eprintln!("{label}: {} — {}", r.outcome.label(), r.reason);
                worst = Outcome::worst(worst, r.outcome);
            }
            runs.push(KernelRun {
                label: label.clone(),
                repeat: rep,
                kernel_release: out
                    .env
                    .as_ref()
                    .and_then(|e| e.get("kernel"))
                    .and_then(|k| k.as_str())
                    .map(str::to_string),
                bzimage_sha256: kb.built.sha256.clone(),
                outcome: r.outcome.label().to_string(),
                exec_status: r.exec_status,
                vm_wall_ms: r.vm_wall_ms,
                dir: sub.clone(),
                guest_errors: out.errors.clone(),
                complete: out.done,
            });
            match outputs.iter_mut().find(|(l, _)| *l == label) {
                Some((_, v)) => v.push(out),
                None => outputs.push((label, vec![out])),
            }
            if rep == 0 {
                results.push(r);
            }
        }
    }
    let lat_ns = outputs
        .iter()
        .flat_map(|(_, v)| v.iter())
        .find_map(|o| o.device_latency_ns());
    let columns: Vec<report::Column> = outputs
        .iter()
        .map(|(label, v)| report::Column {
            label: label.clone(),
            kernel_release: runs
                .iter()
                .find(|r| &r.label == label)
                .and_then(|r| r.kernel_release.clone()),
            points: bench::aggregate(v),
            fio: bench::aggregate_fio(v),
        })
        .collect();
    let has32 = columns
        .iter()
        .flat_map(|c| c.points.iter())
        .any(|p| p.point.workload == "rand4k" && p.point.qd == 32);
    let qd = if has32 {
        32
    } else {
        columns
            .iter()
            .flat_map(|c| c.points.iter())
            .filter(|p| p.point.workload == "rand4k")
            .map(|p| p.point.qd)
            .max()
            .unwrap_or(1)
    };
    let l_us = lat_ns.map(|n| n as f64 / 1000.0);
    let clocksource = outputs
        .iter()
        .flat_map(|(_, v)| v.iter())
        .filter_map(|o| {
            o.env
                .as_ref()?
                .get("clocksource")?
                .as_str()
                .map(str::to_string)
        })
        .reduce(|a, b| if a == b { a } else { format!("{a}, {b}") });
    let (checks, note) = match (report::pair(&columns), columns.first()) {
        (Some((u, p)), _) => (
            report::acceptance(u, p, l_us.unwrap_or(1000.0), qd),
            String::new(),
        ),
        (None, Some(c)) if c.label.contains('+') => (
            report::acceptance(c, c, l_us.unwrap_or(1000.0), qd),
            format!(
                " — {}: one kernel (the series is empty) stands for both sides",
                c.label
            ),
        ),
        (None, Some(c)) => {
            let mut v = report::acceptance(c, c, l_us.unwrap_or(1000.0), qd);
            report::restrict(&mut v, &c.label);
            (v, format!(" — only the {} kernel ran", c.label))
        }
        _ => (vec![], String::new()),
    };
    let fio_rows = report::fio_rows(&columns);
    // The plots tell two kernels apart (thin/thick): the first two columns.
    let plots = bench::plot::write_all(&dir, &columns[..columns.len().min(2)], qd, l_us)?;
    let others: Vec<String> = also.iter().map(|(l, _)| l.clone()).collect();
    let series_checks = if others.is_empty() {
        Vec::new()
    } else {
        report::series_checks(&columns, &others, qd)
    };
    let shared = builds.iter().any(|b| b.variants.len() > 1);
    let mut md = format!(
        "### bufaio bench {run_id}\n\n{} accel ({}), {} vCPU, {} MiB; slow device null_blk L = {}; {} cold reads per point, {} MiB file, {} warm reads, {} buffered writes per point (QD {}); repeats {}; kernels: {}{}\n",
        format!("{:?}", accel.accel).to_uppercase(),
        accel.reason.split(" (").next().unwrap_or(""),
        ctx.cfg.qemu.cpus,
        ctx.cfg.qemu.memory_mib,
        l_us.map(|l| format!("{l:.0} µs")).unwrap_or_else(|| "?".into()),
        a.reads,
        a.file_mib,
        a.warm_reads,
        a.writes,
        a.write_qd,
        a.repeat.max(1),
        columns
            .iter()
            .map(|c| format!("{} ({})", c.label, c.kernel_release.as_deref().unwrap_or("?")))
            .collect::<Vec<_>>()
            .join(", "),
        if shared {
            "; the series is empty, so one kernel serves both columns"
        } else {
            ""
        }
    );
    let online = outputs.iter().flat_map(|(_, v)| v.iter()).find_map(|o| {
        o.env
            .as_ref()?
            .get("online_cpus")?
            .as_str()
            .map(str::to_string)
    });
    if let Some(cpus) = &online {
        let _ = std::fmt::Write::write_fmt(
            &mut md,
            format_args!(
                "\nGuest CPUs online (/sys/devices/system/cpu/online): {cpus} — QEMU -smp {}\n",
                ctx.cfg.qemu.cpus
            ),
        );
    }
    if let Some(cs) = &clocksource {
        let _ = std::fmt::Write::write_fmt(
            &mut md,
            format_args!(
                "\nGuest clocksource: {cs}{}\n",
                if cs.contains("jiffies") {
                    " — WARNING: times and the null_blk timer are quantised to the 4 ms tick; these figures are not comparable"
                } else {
                    ""
                }
            ),
        );
    }
    md.push_str(&report::table(&columns));
    md.push_str(&report::aio_stats_table(&columns));
    md.push_str(&report::fio_table(&fio_rows));
    let note = format!(
        " — {}, L = {}, {} boot(s) per kernel{note}",
        format!("{:?}", accel.accel).to_uppercase(),
        l_us.map(|l| format!("{l:.0} µs"))
            .unwrap_or_else(|| "?".into()),
        a.repeat.max(1)
    );
    md.push_str(&report::acceptance_table(&checks, &note));
    if !series_checks.is_empty() {
        md.push_str(&report::checks_table(
            "Series comparison (issue 12 targets)",
            &series_checks,
            &format!(
                " — patched = {}, against {}; ratios pair the boots of one repeat",
                series.file.display(),
                also.iter()
                    .map(|(l, s)| format!("{l} = {}", s.file.display()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    std::fs::write(dir.join("bench.md"), &md)?;
    let j = BenchJson {
        bufaio_bench: 1,
        run_id: &run_id,
        accel: format!("{:?}", accel.accel),
        accel_reason: accel.reason.clone(),
        device_latency_ns: lat_ns,
        clocksource: clocksource.clone(),
        kernel_append: &append,
        repeats: a.repeat.max(1),
        guest_argv: &argv,
        series: series.patches.iter().map(|p| p.name.clone()).collect(),
        shared_build: shared,
        runs: &runs,
        columns: &columns,
        fio: &fio_rows,
        acceptance_qd: qd,
        acceptance: &checks,
        also_series: also
            .iter()
            .map(|(l, s)| (l.clone(), s.file.clone()))
            .collect(),
        series_checks: &series_checks,
        plots: plots.iter().map(|p| p.display().to_string()).collect(),
    };
    std::fs::write(dir.join("bench.json"), serde_json::to_string_pretty(&j)?)?;
    let manifest = crate::report::Manifest {
        bufaio_manifest: 1,
        run_id: run_id.clone(),
        command: format!("bench {}", argv[1..].join(" ")),
        kernel_selection: format!("{:?}", a.kernel).to_lowercase(),
        flavor: a.common.flavor.clone(),
        filters: vec![],
        append: append.clone(),
        source: crate::report::source_of(&src),
        patches: crate::report::patches_of(&series.patches),
        kernels: crate::report::kernels_of(&builds, &results),
        toolchain: crate::report::toolchain(&ctx.cfg.qemu.binary),
        accel: format!("{:?}: {}", accel.accel, accel.reason),
        config: ctx.cfg.clone(),
    };
    manifest.write(&dir)?;
    println!("\n{md}");
    println!(
        "plots: {}\nbench: {} — artifacts: {}",
        plots
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" "),
        worst.label(),
        dir.display()
    );
    let incomplete = runs.iter().any(|r| !r.complete || r.exec_status != Some(0));
    if worst == Outcome::Pass && incomplete {
        eprintln!("bench: a guest run did not finish cleanly (see runs[] in bench.json)");
        return Ok(Outcome::TestFailed.code());
    }
    Ok(worst.code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::parse_ldd;

    #[test]
    fn qd_lists() {
        assert_eq!(parse_qd_list("1,32").unwrap(), [1, 32]);
        assert_eq!(parse_qd_list(" 1, 8 ,").unwrap(), [1, 8]);
        for bad in ["", "0", "1,x", "-1"] {
            assert!(parse_qd_list(bad).is_err(), "{bad:?} accepted");
        }
        let e = format!("{:#}", parse_qd_list("1,x").unwrap_err());
        assert!(e.contains("\"x\""), "{e}");
    }

    #[test]
    fn also_series_labels() {
        let l = |p: &str, taken: &[&str]| {
            let t: Vec<String> = taken.iter().map(|s| s.to_string()).collect();
            series_label(Path::new(p), &t).map_err(|e| format!("{e:#}"))
        };
        assert_eq!(l("patches/6.12/v1/series", &[]).unwrap(), "v1");
        assert_eq!(l("/x/old.series", &[]).unwrap(), "old");
        assert_eq!(l("my series/series", &[]).unwrap(), "my_series");
        assert_eq!(l("patches/series", &[]).unwrap(), "patches");
        assert!(l("/", &[]).unwrap_err().contains("cannot name a column"));
        let e = l("x/patched/series", &[]).unwrap_err();
        assert!(e.contains("x/patched/series") && e.contains("taken"), "{e}");
        let e = l("a/v1/series", &["v1"]).unwrap_err();
        assert!(e.contains("\"v1\""), "{e}");
    }

    #[test]
    fn ldd_lines() {
        let t = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x1)\n\tlibaio.so.1 => /lib/x86_64-linux-gnu/libaio.so.1 (0x2)\n\t/lib64/ld-linux-x86-64.so.2 (0x3)\n\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x1)\n\tlibgone.so => not found\n";
        assert_eq!(
            parse_ldd(t),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libz.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libaio.so.1"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }
}
