//! `cargo xtask soak`: the soak workloads (`soak/*` guest tests: the fsx
//! model checker alone, on the slow device, under pressure profiles) at a
//! chosen size and seed, on one or both kernels; per-workload table,
//! `soak.json` (replay, aggregation), KTAP/JUnit/results.json like `run`.

use super::Common;
use crate::error::usage;
use crate::exitcode::Outcome;
use crate::patch::Series;
use crate::pipeline::{self, BootOpts, GuestJob, KernelSel};
use crate::report::{self, RunRecord};
use crate::soak::{self, SoakReport};
use anyhow::{Context, Result};
use bufaio_contract::param;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, value_enum, default_value = "both")]
    pub kernel: KernelSel,
    /// Operations per workload instance (an AIO batch is one operation).
    #[arg(long, conflicts_with = "duration")]
    pub ops: Option<u64>,
    /// Seconds per workload instance instead of an operation count.
    #[arg(long)]
    pub duration: Option<u64>,
    /// Base seed (decimal or 0x-hex); default: a fresh one, printed.
    #[arg(long)]
    pub seed: Option<String>,
    /// Pressure profile(s) for soak/fsx_pressure (and, given, for the other
    /// workloads too): dirty, freeze, drop_caches, cpu_hog, contender,
    /// signals, stop, memory, all. Default for soak/fsx_pressure: all.
    #[arg(long = "profile", value_delimiter = ',')]
    pub profiles: Vec<String>,
    /// This run is shard I of N: its base seed is derived from --seed and I.
    #[arg(long)]
    pub shard: Option<String>,
    /// Workloads (globs over `soak/fsx@ext2`-style names); default soak/*.
    #[arg(long = "filter")]
    pub filters: Vec<String>,
    /// Writes of one AIO batch never overlap (lets defects other than
    /// write ordering surface first).
    #[arg(long)]
    pub no_overlap: bool,
    /// Re-run the failed instances of a previous soak run (its run dir or
    /// its soak.json) with the same seed, size and profiles.
    #[arg(long, conflicts_with_all = ["ops", "duration", "seed", "shard", "filters", "profiles"])]
    pub replay: Option<PathBuf>,
    /// Test disk size (MiB, at least the config's `disks.size_mib`): 1024
    /// lets libaio's 6.t (768 MiB of writes) run in `soak/libaio*`.
    #[arg(long)]
    pub disk_mib: Option<u32>,
    /// Aggregate the soak.json files of several runs or shards; no boot.
    #[arg(long, num_args = 1.., conflicts_with = "replay")]
    pub aggregate: Vec<PathBuf>,
}

fn load_report(p: &std::path::Path) -> Result<SoakReport> {
    let file = if p.is_dir() {
        p.join("soak.json")
    } else {
        p.to_path_buf()
    };
    let text =
        std::fs::read_to_string(&file).map_err(|e| usage(format!("{}: {e}", file.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| usage(format!("{}: not a soak.json: {e}", file.display())))
}

pub fn main(mut a: Args) -> Result<i32> {
    if !a.aggregate.is_empty() {
        let reps = a
            .aggregate
            .iter()
            .map(|p| load_report(p))
            .collect::<Result<Vec<_>>>()?;
        let agg = soak::aggregate(&reps);
        println!("{}", soak::aggregate_table(&agg));
        let failed: u64 = agg.iter().map(|r| r.failures).sum();
        for r in agg.iter().filter(|r| r.failures > 0) {
            println!(
                "{} {} {}: failing: {}",
                r.workload,
                r.fs,
                r.kernel,
                r.failing.join(", ")
            );
        }
        println!(
            "{} runs, {} ops, {failed} failed instances",
            reps.len(),
            agg.iter().map(|r| r.ops).sum::<u64>()
        );
        return Ok(if failed == 0 {
            Outcome::Pass.code()
        } else {
            Outcome::TestFailed.code()
        });
    }
    let mut base_seed = match &a.seed {
        Some(s) => soak::parse_seed(s).map_err(usage)?,
        None => fresh_seed(),
    };
    let mut shard = None;
    if let Some(s) = &a.shard {
        let (i, n) = soak::parse_shard(s).map_err(usage)?;
        base_seed = soak::shard_seed(base_seed, i);
        shard = Some(format!("{i}/{n}"));
    }
    if let Some(r) = &a.replay {
        let rep = load_report(r)?;
        let failed: Vec<String> = rep
            .rows
            .iter()
            .filter(|r| r.verdict == "fail")
            .map(|r| r.test.clone())
            .collect();
        if failed.is_empty() {
            return Err(usage(format!(
                "{}: no failed soak instance to replay",
                r.display()
            )));
        }
        base_seed = soak::parse_seed(&rep.base_seed).map_err(usage)?;
        a.ops = rep.ops;
        a.duration = rep.duration_s;
        a.profiles = rep.profiles.clone();
        a.no_overlap = !rep.overlap;
        a.filters = failed;
        a.common.flavor = rep.flavor.clone();
        a.kernel = match rep.kernel_selection.as_str() {
            "patched" => KernelSel::Patched,
            "unpatched" => KernelSel::Unpatched,
            _ => KernelSel::Both,
        };
        if a.common.series.is_none() {
            a.common.series = Some(PathBuf::from(&rep.series));
        }
        shard = rep.shard.clone();
    }
    if a.ops == Some(0) || a.duration == Some(0) {
        return Err(usage("--ops and --duration must be positive"));
    }
    let ops = match (a.ops, a.duration) {
        (Some(n), _) => Some(n),
        (None, Some(_)) => None,
        (None, None) => Some(10_000),
    };
    let filters = soak_filters(&a.filters).map_err(usage)?;
    crate::deps::check()?;
    let mut ctx = a.common.context()?;
    if let Some(m) = a.disk_mib {
        ctx.cfg.disks.size_mib = ctx.cfg.disks.size_mib.max(m);
    }
    if !a.profiles.is_empty() {
        let known = pipeline::soak_profiles(&ctx)?;
        if let Some(p) = a.profiles.iter().find(|p| !known.contains(p)) {
            return Err(usage(format!(
                "--profile {p:?}: unknown (known: {})",
                known.join(", ")
            )));
        }
    }
    // The instances the filters select (the guest binary lists them).
    let instances = pipeline::check_filters(&ctx, &filters)?.len() as u64;
    // Timeouts sized to the work: the slowest workloads (the pressure
    // profiles on the slow device, soak/destroy_race) do about 40-50 ops/s
    // under TCG, and 5-15 under the debug flavor (KASAN, lockdep).
    let floor_rate = if a.common.flavor == "default" { 25 } else { 4 };
    let per_test = match (ops, a.duration) {
        (_, Some(d)) => d + 300,
        (Some(n), None) => n / floor_rate + 300,
        (None, None) => 600,
    };
    ctx.cfg.timeouts.test_s = ctx.cfg.timeouts.test_s.max(per_test);
    ctx.cfg.timeouts.overall_s = ctx.cfg.timeouts.overall_s.max(per_test * instances + 600);
    let mut append = a.common.append.clone();
    append.push(param::word(param::SOAK_SEED, format!("{base_seed:#x}")));
    if let Some(n) = ops {
        append.push(param::word(param::SOAK_OPS, n));
    } else if let Some(d) = a.duration {
        append.push(param::word(param::SOAK_OPS, u64::MAX / 2));
        append.push(param::word(param::SOAK_SECS, d));
    }
    if !a.profiles.is_empty() {
        append.push(param::word(param::SOAK_PROFILE, a.profiles.join(",")));
    }
    if a.no_overlap {
        append.push(param::word(param::SOAK_OVERLAP, 0));
    }
    let series = Series::load(&ctx.cfg.series)?;
    let (run_id, dir) = pipeline::new_run_dir(&ctx.root, "soak")?;
    ctx.ui.info(format!(
        "soak {run_id}: base seed {base_seed:#x}{}, {} per instance: {}",
        shard
            .as_deref()
            .map(|s| format!(" (shard {s})"))
            .unwrap_or_default(),
        match (ops, a.duration) {
            (Some(n), _) => format!("{n} ops"),
            (None, Some(d)) => format!("{d} s"),
            _ => "?".into(),
        },
        dir.display()
    ));
    let (src, builds) = pipeline::build_kernels(&ctx, &series, a.kernel, &a.common.flavor, &dir)?;
    let root = pipeline::guest_image(&ctx)?;
    let accel = pipeline::accel(&ctx, ctx.cfg.qemu.accel, &builds[0], &root)?;
    let job = GuestJob::Suite {
        filters: filters.clone(),
    };
    let opts = BootOpts {
        accel: &accel,
        append: append.clone(),
        echo_out: false,
        progress: ops.map(|n| n * instances),
    };
    let mut results = Vec::new();
    for kb in &builds {
        let name: Vec<&str> = kb.variants.iter().map(|v| v.name()).collect();
        let sub = dir.join(name.join("+"));
        results.push(pipeline::boot_and_test(&ctx, kb, &root, &job, &opts, &sub)?);
    }
    let outcome = report::finish_run(
        &dir,
        &RunRecord {
            run_id: &run_id,
            command: "soak",
            kernel_selection: format!("{:?}", a.kernel).to_lowercase(),
            flavor: &a.common.flavor,
            filters: &filters,
            append: &append,
            source: &src,
            patches: &series.patches,
            builds: &builds,
            results: &results,
            accel: &accel,
            config: &ctx.cfg,
        },
    )?;
    let rows = soak::rows(&results);
    let rep = SoakReport {
        bufaio_soak: 1,
        run_id: run_id.clone(),
        base_seed: format!("{base_seed:#x}"),
        shard,
        ops,
        duration_s: a.duration,
        profiles: a.profiles.clone(),
        overlap: !a.no_overlap,
        kernel_selection: format!("{:?}", a.kernel).to_lowercase(),
        flavor: a.common.flavor.clone(),
        series: ctx.cfg.series.display().to_string(),
        filters: filters.clone(),
        rows: rows.clone(),
    };
    std::fs::write(dir.join("soak.json"), serde_json::to_string_pretty(&rep)?)
        .context("cannot write soak.json")?;
    let table = soak::table(&rows);
    // Each kernel's outcome and reason too (e.g. why QEMU ended), not
    // only in console.log.
    std::fs::write(
        dir.join("summary.md"),
        format!("{table}\n{}", report::kernel_lines(&results)),
    )?;
    println!("\n{table}");
    for r in rows.iter().filter(|r| r.verdict == "fail") {
        println!(
            "{} on {}: FAILED after {} ops (seed {})\n{}\n  replay: cargo xtask soak --replay {}",
            r.test,
            r.kernel,
            r.ops,
            r.seed.as_deref().unwrap_or("?"),
            r.failure.as_deref().unwrap_or(""),
            dir.display()
        );
    }
    print!("{}", report::kernel_lines(&results));
    println!(
        "outcome: {} (exit {}) — base seed {base_seed:#x} — artifacts: {}",
        outcome.label(),
        outcome.code(),
        dir.display()
    );
    Ok(outcome.code())
}

/// A seed nobody chose: time and pid.
/// The guest filter of a soak: the given globs, `soak/*` when none
/// includes anything (no filter, or `!GLOB` exclusions only); any glob
/// outside `soak/` is refused, naming it.
fn soak_filters(given: &[String]) -> std::result::Result<Vec<String>, String> {
    let mut filters = given.to_vec();
    if filters.iter().all(|f| f.starts_with('!')) {
        filters.insert(0, "soak/*".to_string());
    }
    match filters
        .iter()
        .find(|f| !f.trim_start_matches('!').starts_with("soak/"))
    {
        Some(bad) => Err(format!(
            "--filter {bad:?}: soak runs soak/* workloads only (use `cargo xtask run` for the suite)"
        )),
        None => Ok(filters),
    }
}

fn fresh_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    soak::shard_seed(t ^ u64::from(std::process::id()), 1)
}

#[cfg(test)]
mod tests {
    use super::soak_filters;

    fn f(v: &[&str]) -> Result<Vec<String>, String> {
        soak_filters(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn filters_default_exclude_and_refuse() {
        assert_eq!(f(&[]).unwrap(), ["soak/*"]);
        assert_eq!(f(&["soak/fsx@*"]).unwrap(), ["soak/fsx@*"]);
        assert_eq!(f(&["!soak/fsx@*"]).unwrap(), ["soak/*", "!soak/fsx@*"]);
        assert_eq!(
            f(&["soak/libaio*", "!soak/libaio_inline@*"]).unwrap(),
            ["soak/libaio*", "!soak/libaio_inline@*"]
        );
        for bad in [&["read/*"][..], &["!read/*"], &["soak/fsx@*", "basic/*"]] {
            let e = f(bad).unwrap_err();
            assert!(e.contains("soak runs soak/* workloads only"), "{e}");
        }
    }
}
