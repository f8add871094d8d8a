//! `cargo xtask check-series [--boot]`: the kernel's "patchcheck" done
//! properly. For every prefix of the series: does it apply, does it build,
//! is the new patch `scripts/checkpatch.pl --strict` clean, and (with
//! `--boot`) does a quick subset of the suite pass. Prints a patch × step table.

use super::Common;
use crate::error::outcome_of;
use crate::exitcode::Outcome;
use crate::patch::{self, Series};
use crate::pipeline::{self, BootOpts, GuestJob, Variant};
use anyhow::{Context, Result};
use std::process::Command;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Also boot each prefix and run a quick subset of the guest suite.
    #[arg(long)]
    pub boot: bool,
    /// Only apply and checkpatch each prefix (no build, no boot).
    #[arg(long, conflicts_with = "boot")]
    pub no_build: bool,
    /// Accept patches that apply only with fuzz (default: a patch that
    /// does not apply exactly fails its row, as `git am` would refuse it).
    #[arg(long)]
    pub fuzz: bool,
    /// The subset run with --boot.
    #[arg(long = "test", default_value = "basic/*")]
    pub tests: Vec<String>,
}

/// checkpatch summary line for one patch, and whether it is clean.
pub fn checkpatch(tree: &std::path::Path, patch: &std::path::Path) -> Result<(bool, String)> {
    let out = Command::new("perl")
        .arg(tree.join("scripts/checkpatch.pl"))
        .args(["--strict", "--no-signoff", "--color=never"])
        .arg(patch)
        .current_dir(tree)
        .output()
        .context("cannot run scripts/checkpatch.pl (perl missing?)")?;
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let total = text
        .lines()
        .find(|l| l.starts_with("total: "))
        .unwrap_or("no summary")
        .to_string();
    let clean = total.starts_with("total: 0 errors, 0 warnings, 0 checks");
    Ok((clean, if clean { total } else { text }))
}

pub fn main(a: Args) -> Result<i32> {
    crate::deps::check()?;
    let ctx = a.common.context()?;
    let series = Series::load(&ctx.cfg.series)?;
    let n = series.patches.len();
    if n == 0 {
        println!("{} lists no patches", series.file.display());
        return Ok(0);
    }
    let fragments = ctx
        .cfg
        .fragments(&a.common.flavor)
        .map_err(|e| crate::error::usage(format!("{e:#}")))?;
    let (_id, dir) = pipeline::new_run_dir(&ctx.root, "check-series")?;
    let src = {
        let _l = ctx.cache.lock()?;
        crate::fetch::fetch(&ctx.cfg.kernel.sources, &ctx.cache, &ctx.ui)?
    };
    let mut rows = Vec::new();
    let mut worst = Outcome::Pass;
    let mut root = None;
    let mut accel = None;
    for k in 1..=n {
        let p = &series.patches[k - 1];
        let prefix = Series {
            file: series.file.clone(),
            patches: series.patches[..k].to_vec(),
        };
        let (mut apply, mut build, mut cp, mut boot) = (
            "ok".to_string(),
            "-".to_string(),
            "-".to_string(),
            "-".to_string(),
        );
        let variant = if k == n {
            Variant::Patched
        } else {
            Variant::Partial
        };
        let built = {
            let _l = ctx.cache.lock()?;
            match patch::prepare(&src, &prefix, &ctx.cache, &ctx.ui) {
                Err(e) => {
                    apply = format!("FAIL: {}", format!("{e:#}").lines().next().unwrap_or(""));
                    worst = Outcome::worst(worst, outcome_of(&e));
                    None
                }
                Ok(tree) => {
                    if tree.fuzz_unknown {
                        apply = "ok (fuzz not recorded: tree cached before fuzz detection; `cargo xtask clean --trees` to re-check)".into();
                    }
                    if let Some((_, hunks)) = tree.fuzz.iter().find(|(n, _)| *n == p.name) {
                        apply = format!("FUZZ: {}", hunks.join("; "));
                        if !a.fuzz {
                            worst = Outcome::worst(worst, Outcome::TestFailed);
                        }
                    }
                    let (clean, text) = checkpatch(&tree.path, &p.path)?;
                    cp = if clean {
                        "clean".into()
                    } else {
                        "FINDINGS".into()
                    };
                    if !clean {
                        eprintln!("checkpatch {}:\n{text}", p.name);
                        worst = Outcome::worst(worst, Outcome::TestFailed);
                    }
                    if a.no_build {
                        None
                    } else {
                        match pipeline::build_tree(
                            &ctx,
                            tree,
                            variant,
                            &fragments,
                            &a.common.flavor,
                            &dir,
                        ) {
                            Ok(kb) => {
                                build = if kb.built.rebuilt {
                                    format!("ok {:.0}s", kb.built.seconds)
                                } else {
                                    "ok (cached)".into()
                                };
                                Some(kb)
                            }
                            Err(e) => {
                                build = "FAIL".into();
                                eprintln!("{e:#}");
                                worst = Outcome::worst(worst, outcome_of(&e));
                                None
                            }
                        }
                    }
                }
            }
        };
        if let (true, Some(kb)) = (a.boot, built) {
            if root.is_none() {
                root = Some(pipeline::guest_image(&ctx)?);
            }
            let r = root.clone().context("no root image")?;
            if accel.is_none() {
                accel = Some(pipeline::accel(&ctx, ctx.cfg.qemu.accel, &kb, &r)?);
            }
            let acc = accel.clone().context("no accel")?;
            let opts = BootOpts {
                accel: &acc,
                append: a.common.append.clone(),
                echo_out: false,
                progress: None,
            };
            let job = GuestJob::Suite {
                filters: a.tests.clone(),
            };
            let res = pipeline::boot_and_test(
                &ctx,
                &kb,
                &r,
                &job,
                &opts,
                &dir.join(format!("prefix-{k}")),
            )?;
            boot = res.outcome.label().to_string();
            worst = Outcome::worst(worst, res.outcome);
        }
        rows.push((format!("{k}/{n} {}", p.name), apply, build, cp, boot));
    }
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(5);
    let mut table = format!(
        "| {:<w$} | apply | build | checkpatch --strict | boot |\n|{}|---|---|---|---|\n",
        "patch",
        "-".repeat(w + 2)
    );
    for (name, apply, build, cp, boot) in &rows {
        table.push_str(&format!(
            "| {name:<w$} | {apply} | {build} | {cp} | {boot} |\n"
        ));
    }
    std::fs::write(dir.join("check-series.md"), &table)?;
    println!("\n{table}\noutcome: {} — {}", worst.label(), dir.display());
    Ok(worst.code())
}
