//! `cargo xtask run`: the main job. Build the requested kernels, boot each with
//! fresh disks, run the guest suite, print the table, write the run dir.

use super::Common;
use crate::config::RunKernels;
use crate::error::usage;
use crate::exitcode::Outcome;
use crate::patch::Series;
use crate::pipeline::{self, BootOpts, Ctx, GuestJob, KernelSel};
use crate::report::{self, Manifest, RunRecord};
use anyhow::Result;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Which kernel(s): both compares unpatched and patched (the A/B).
    /// Default both, or the target's `run_kernels`.
    #[arg(long, value_enum)]
    pub kernel: Option<KernelSel>,
    /// Only tests matching these globs (over names like `read/*@ext2`);
    /// a glob starting with `!` excludes (`--filter '!soak/*'`).
    #[arg(long = "filter")]
    pub filters: Vec<String>,
    /// Repeat a previous run from its manifest.yaml (same config, kernel
    /// selection, flavor, filters); fails if the source or patches changed.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
}

pub fn main(a: Args) -> Result<i32> {
    crate::deps::check()?;
    if a.manifest.is_some() {
        // A manifest holds one target's whole configuration.
        let ctx = a.common.context()?;
        return run_target(a, ctx, None);
    }
    let targets = a.common.targets_of(true)?;
    if targets.len() == 1 {
        let t = targets
            .into_iter()
            .next()
            .ok_or_else(|| usage("no target"))?;
        let mut a = a;
        a.kernel = a.kernel.or(t.run_kernels.map(sel_of));
        return run_target(a, t.ctx, None);
    }
    // Several targets: one run (run dir, A/B table, outcome) per target.
    // A target whose series does not apply or whose kernel does not build
    // is untestable (125) on its own; the run's outcome is the worst of the
    // others, 125 only when no target could be tested.
    let mut lines = Vec::new();
    let mut worst: Option<Outcome> = None;
    for t in targets {
        let name = t.name.clone();
        let mut ta = Args {
            common: a.common.clone(),
            kernel: a.kernel.or(t.run_kernels.map(sel_of)),
            filters: a.filters.clone(),
            manifest: None,
        };
        ta.common.targets = vec![name.clone()];
        t.ctx
            .ui
            .info(format!("target {name}: {}", t.ctx.cfg.kernel.version));
        let (outcome, what) = match run_target(ta, t.ctx, Some(&name)) {
            Ok(code) => (Outcome::from_code(code), String::new()),
            Err(e) => {
                let o = crate::error::outcome_of(&e);
                eprintln!("target {name}: {e:#}");
                (
                    o,
                    format!(": {}", format!("{e:#}").lines().next().unwrap_or("")),
                )
            }
        };
        lines.push(format!(
            "target {name}: {} (exit {}){what}",
            outcome.label(),
            outcome.code()
        ));
        if outcome != Outcome::Untestable {
            worst = Some(worst.map_or(outcome, |w| Outcome::worst(w, outcome)));
        }
    }
    println!();
    for l in &lines {
        println!("{l}");
    }
    let o = worst.unwrap_or(Outcome::Untestable);
    println!("outcome of all targets: {} (exit {})", o.label(), o.code());
    Ok(o.code())
}

fn sel_of(k: RunKernels) -> KernelSel {
    match k {
        RunKernels::Both => KernelSel::Both,
        RunKernels::Unpatched => KernelSel::Unpatched,
        RunKernels::Patched => KernelSel::Patched,
    }
}

/// One target's run. `target`: its name when several run (printed with
/// the table).
fn run_target(mut a: Args, mut ctx: Ctx, target: Option<&str>) -> Result<i32> {
    let mut pinned: Option<Manifest> = None;
    if let Some(m) = &a.manifest {
        let man = Manifest::load(m).map_err(|e| usage(format!("{e:#}")))?;
        ctx.cfg = man.config.clone();
        a.kernel = Some(match man.kernel_selection.as_str() {
            "patched" => KernelSel::Patched,
            "unpatched" => KernelSel::Unpatched,
            _ => KernelSel::Both,
        });
        a.common.flavor = man.flavor.clone();
        a.filters = man.filters.clone();
        a.common.append = man.append.clone();
        pinned = Some(man);
    }
    let mut filters = ctx.cfg.tests.filter.clone();
    filters.extend(a.filters.iter().cloned());
    let series = Series::load(&ctx.cfg.series)?;
    if let Some(man) = &pinned {
        let now = report::patches_of(&series.patches);
        let same = now.len() == man.patches.len()
            && now
                .iter()
                .zip(&man.patches)
                .all(|(x, y)| x.sha256 == y.sha256);
        if !same {
            return Err(usage(format!(
                "patches changed since the manifest was written ({} then, {} now): restore them to repeat the run",
                man.patches.len(),
                now.len()
            )));
        }
    }
    pipeline::check_filters(&ctx, &filters)?;
    let (run_id, dir) = pipeline::new_run_dir(&ctx.root, "run")?;
    ctx.ui.info(format!("run {run_id}: {}", dir.display()));
    let kernel = a.kernel.unwrap_or(KernelSel::Both);
    let (src, builds) = pipeline::build_kernels(&ctx, &series, kernel, &a.common.flavor, &dir)?;
    if let Some(man) = &pinned {
        if man.source.id != src.id {
            return Err(usage(format!(
                "kernel source changed: manifest has {}, fetched {}",
                man.source.id, src.id
            )));
        }
    }
    let root = pipeline::guest_image(&ctx)?;
    let accel = pipeline::accel(&ctx, ctx.cfg.qemu.accel, &builds[0], &root)?;
    let job = GuestJob::Suite {
        filters: filters.clone(),
    };
    let opts = BootOpts {
        accel: &accel,
        append: a.common.append.clone(),
        echo_out: false,
        progress: None,
    };
    let mut results = Vec::new();
    for kb in &builds {
        let name: Vec<&str> = kb.variants.iter().map(|v| v.name()).collect();
        let sub = dir.join(name.join("+"));
        let r = pipeline::boot_and_test(&ctx, kb, &root, &job, &opts, &sub)?;
        results.push(r);
    }
    let outcome = report::finish_run(
        &dir,
        &RunRecord {
            run_id: &run_id,
            command: "run",
            kernel_selection: format!("{kernel:?}").to_lowercase(),
            flavor: &a.common.flavor,
            filters: &a.filters,
            append: &a.common.append,
            source: &src,
            patches: &series.patches,
            builds: &builds,
            results: &results,
            accel: &accel,
            config: &ctx.cfg,
        },
    )?;
    let table = report::table(&results);
    // Each kernel's outcome and reason too (e.g. why QEMU ended), not
    // only in console.log.
    std::fs::write(
        dir.join("summary.md"),
        format!("{table}\n{}", report::kernel_lines(&results)),
    )?;
    if let Some(t) = target {
        println!("\ntarget {t} (kernel {}):", ctx.cfg.kernel.version);
    }
    println!("\n{table}");
    print!("{}", report::kernel_lines(&results));
    println!(
        "outcome: {} (exit {}) — artifacts: {}",
        outcome.label(),
        outcome.code(),
        dir.display()
    );
    Ok(outcome.code())
}
