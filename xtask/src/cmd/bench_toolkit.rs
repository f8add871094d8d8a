//! `cargo xtask bench-toolkit`: how fast the toolkit itself is on this host.
//! Prints cold (empty cache), warm (nothing changed), edit→result (fs/aio.c
//! touched in the cached tree) and boot→first KTAP line, with the accel used.
//! Figures, not assertions: targets are compared and reported.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Skip the cold run (a full kernel build with an empty cache).
    #[arg(long)]
    pub skip_cold: bool,
    /// Extra arguments for each `run` (e.g. `--filter basic/*`).
    #[arg(last = true)]
    pub run_args: Vec<String>,
}

fn xtask_run(cache: Option<&Path>, extra: &[String]) -> Result<(Duration, serde_json::Value)> {
    let exe = std::env::current_exe().context("cannot find the xtask binary")?;
    let mut cmd = Command::new(exe);
    cmd.args(["run", "--kernel", "patched"]).args(extra);
    if let Some(c) = cache {
        cmd.env("BUFAIO_CACHE_DIR", c);
    }
    let t = Instant::now();
    let st = cmd.status().context("cannot run xtask run")?;
    let took = t.elapsed();
    let latest = super::project_root().join("target/runs/latest/results.json");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&latest)
            .with_context(|| format!("cannot read {}", latest.display()))?,
    )?;
    if !st.success() {
        bail!("run failed ({st}); see {}", latest.display());
    }
    Ok((took, json))
}

fn patched_tree(json: &serde_json::Value) -> Option<PathBuf> {
    let dir = json["kernels"][0]["dir"].as_str()?;
    let manifest = std::fs::read_to_string(Path::new(dir).parent()?.join("manifest.yaml")).ok()?;
    let key = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("tree_key: "))?
        .trim()
        .to_string();
    let cache = crate::cache::Cache::open().ok()?;
    Some(cache.trees().join(&key[..16]))
}

pub fn main(a: Args) -> Result<i32> {
    let mut rows: Vec<(String, f64, f64, String)> = Vec::new();
    if !a.skip_cold {
        let tmp = tempfile::tempdir().context("cannot create a cold cache dir")?;
        eprintln!("== cold run (empty cache at {})", tmp.path().display());
        let (d, _) = xtask_run(Some(tmp.path()), &a.run_args)?;
        rows.push((
            "cold (empty cache)".into(),
            d.as_secs_f64(),
            480.0,
            String::new(),
        ));
    }
    eprintln!("== priming run");
    let (_, _) = xtask_run(None, &a.run_args)?;
    eprintln!("== warm run (nothing changed)");
    let (d, json) = xtask_run(None, &a.run_args)?;
    let k = &json["kernels"][0];
    let accel = k["accel"].as_str().unwrap_or("?").to_string();
    rows.push((
        "warm (nothing changed)".into(),
        d.as_secs_f64(),
        15.0,
        accel.clone(),
    ));
    let boot_ktap = k["boot_to_ktap_ms"].as_f64().unwrap_or(f64::NAN) / 1000.0;
    let boot_ready = k["boot_to_ready_ms"].as_f64().unwrap_or(f64::NAN) / 1000.0;
    let tree = patched_tree(&json).context("cannot locate the patched tree from the run")?;
    eprintln!("== edit→result (touch {}/fs/aio.c)", tree.display());
    let aio = tree.join("fs/aio.c");
    let f = std::fs::File::options().append(true).open(&aio)?;
    f.set_modified(std::time::SystemTime::now())?;
    let (d, _) = xtask_run(None, &a.run_args)?;
    rows.push((
        "edit→result (fs/aio.c touched)".into(),
        d.as_secs_f64(),
        60.0,
        accel.clone(),
    ));
    rows.push((
        "boot→BUFAIO-READY".into(),
        boot_ready,
        f64::NAN,
        accel.clone(),
    ));
    rows.push(("boot→first KTAP line".into(), boot_ktap, 3.0, accel));
    println!("\n| measurement | seconds | target | accel |\n|---|---|---|---|");
    for (name, s, target, accel) in &rows {
        let t = if target.is_nan() {
            "—".to_string()
        } else {
            format!(
                "≤ {target:.0} s {}",
                if s <= target { "(met)" } else { "(MISSED)" }
            )
        };
        println!("| {name} | {s:.1} | {t} | {accel} |");
    }
    Ok(0)
}
