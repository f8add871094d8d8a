//! `cargo xtask bisect series|git|run`: find the first bad patch of the series,
//! or the first bad upstream commit with the series re-applied on top, using
//! the same stages (patch, kconfig, build, vm, report) as `run`.
//!
//! Verdicts: a step whose run passes is good; a test failure or a kernel crash
//! is bad (only if every try fails, with `--retries`); a step where the series
//! does not apply or the kernel does not build is skipped in git mode and bad
//! in series mode (every prefix of the series must build). Infrastructure
//! errors abort the bisect and never mark a step.

use super::Common;
use crate::cache::{sha256_bytes, Cache};
use crate::error::{outcome_of, usage};
use crate::exitcode::Outcome;
use crate::patch::{self, Series, Tree};
use crate::pipeline::{self, BootOpts, Ctx, GuestJob, KernelBuild, Variant};
use crate::rootfs::RootImage;
use crate::vm::AccelChoice;
use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// First bad patch: binary search over prefixes of the series.
    Series(SeriesArgs),
    /// First bad upstream commit in a kernel git tree, series re-applied at each step.
    Git(GitArgs),
    /// One step for `git bisect run` (exit 0 good, 1 bad, 125 skip, 128 abort).
    Run(RunArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct Shared {
    #[command(flatten)]
    pub common: Common,
    /// Only tests matching these globs decide a step.
    #[arg(long = "test")]
    pub tests: Vec<String>,
    /// Rerun a failing step up to N more times; bad only if every try fails.
    #[arg(long, default_value_t = 0)]
    pub retries: u32,
}

#[derive(Debug, clap::Args)]
pub struct SeriesArgs {
    #[command(flatten)]
    pub shared: Shared,
    /// Continue the last interrupted series bisect with the same parameters.
    #[arg(long)]
    pub resume: bool,
}

#[derive(Debug, clap::Args)]
pub struct GitArgs {
    #[command(flatten)]
    pub shared: Shared,
    /// The kernel git tree (never modified: steps run in a worktree of its own).
    #[arg(long)]
    pub kernel_dir: PathBuf,
    #[arg(long)]
    pub good: String,
    #[arg(long)]
    pub bad: String,
    /// Continue the last interrupted git bisect with the same parameters.
    #[arg(long)]
    pub resume: bool,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub shared: Shared,
    /// The kernel git tree whose HEAD is tested (default: current directory).
    #[arg(long, default_value = ".")]
    pub kernel_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Good,
    Bad,
    Skip,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub label: String,
    pub verdict: Verdict,
    pub reason: String,
    /// One outcome label per try.
    pub tries: Vec<String>,
    pub failing_tests: Vec<String>,
    pub run_dir: Option<PathBuf>,
    pub bzimage_sha256: Option<String>,
    pub build_seconds: Option<f64>,
    pub reused: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    key: String,
    steps: BTreeMap<String, Step>,
}

/// Runs steps, keeps the log and state, reuses verdicts of identical kernels.
struct Bisector<'a> {
    ctx: &'a Ctx,
    filters: Vec<String>,
    retries: u32,
    append: Vec<String>,
    flavor: String,
    dir: PathBuf,
    log: fs::File,
    state: State,
    root: Option<RootImage>,
    accel: Option<AccelChoice>,
    builds: u32,
    start: Instant,
}

impl<'a> Bisector<'a> {
    fn new(ctx: &'a Ctx, shared: &Shared, kind: &str, key: String, resume: bool) -> Result<Self> {
        // A --test glob that selects nothing would make every step "good"
        // (no test failed) and conclude that the regression is not there.
        pipeline::check_filters_named(ctx, "--test", &shared.tests)?;
        let base = ctx.root.join("target/bisect");
        fs::create_dir_all(&base)?;
        let latest = base.join(format!("latest-{kind}"));
        let mut state = State {
            key: key.clone(),
            ..State::default()
        };
        let dir = if resume {
            let d = fs::read_link(&latest)
                .map(|l| base.join(l))
                .map_err(|_| usage(format!("--resume: no previous {kind} bisect")))?;
            state = load_state(&d, &key, kind)?;
            d
        } else {
            let (id, _) = (std::process::id(), ());
            let stamp = time::OffsetDateTime::now_utc()
                .format(time::macros::format_description!(
                    "[year][month][day]-[hour][minute][second]"
                ))
                .unwrap_or_default();
            let name = format!("{stamp}-{kind}-{id}");
            let d = base.join(&name);
            fs::create_dir_all(&d)?;
            let tmp = base.join(format!(".latest-{id}"));
            let _ = fs::remove_file(&tmp);
            std::os::unix::fs::symlink(&name, &tmp)?;
            fs::rename(&tmp, &latest)?;
            d
        };
        pipeline::hold_active(&dir)?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("bisect.log"))?;
        let mut filters = ctx.cfg.tests.filter.clone();
        filters.extend(shared.tests.iter().cloned());
        Ok(Bisector {
            ctx,
            filters,
            retries: shared.retries,
            append: shared.common.append.clone(),
            flavor: shared.common.flavor.clone(),
            dir,
            log,
            state,
            root: None,
            accel: None,
            builds: 0,
            start: Instant::now(),
        })
    }

    fn say(&mut self, msg: &str) {
        let line = format!("[{:>6.0}s] {msg}", self.start.elapsed().as_secs_f64());
        eprintln!("{line}");
        let _ = writeln!(self.log, "{line}");
    }

    fn save(&self) -> Result<()> {
        crate::cache::write_atomic(
            &self.dir.join("state.json"),
            serde_json::to_string_pretty(&self.state)?.as_bytes(),
        )
    }

    fn known(&self, label: &str) -> Option<Step> {
        self.state.steps.get(label).cloned()
    }

    fn record(&mut self, step: Step) -> Result<Step> {
        self.say(&format!(
            "{}: {:?} — {}{}",
            step.label,
            step.verdict,
            step.reason,
            if step.tries.len() > 1 {
                format!(" (tries: {})", step.tries.join(", "))
            } else {
                String::new()
            }
        ));
        self.state.steps.insert(step.label.clone(), step.clone());
        self.save()?;
        Ok(step)
    }

    /// A step that could not be built or patched.
    fn unbuildable(&mut self, label: &str, verdict: Verdict, e: &anyhow::Error) -> Result<Step> {
        let first = format!("{e:#}")
            .lines()
            .take(3)
            .collect::<Vec<_>>()
            .join(" | ");
        self.record(Step {
            label: label.into(),
            verdict,
            reason: format!("untestable: {first}"),
            tries: vec![Outcome::Untestable.label().into()],
            failing_tests: vec![],
            run_dir: None,
            bzimage_sha256: None,
            build_seconds: None,
            reused: false,
        })
    }

    /// Boot and judge a built kernel, with retries and verdict reuse.
    fn judge(&mut self, label: &str, kb: &KernelBuild) -> Result<Step> {
        if kb.built.rebuilt {
            self.builds += 1;
            self.say(&format!(
                "{label}: build #{} took {:.0}s",
                self.builds, kb.built.seconds
            ));
        }
        let sha = kb.built.sha256.clone();
        if let Some(prev) = self
            .state
            .steps
            .values()
            .find(|s| s.bzimage_sha256.as_deref() == Some(&sha) && s.verdict != Verdict::Skip)
            .cloned()
        {
            let mut s = prev.clone();
            s.label = label.into();
            s.reused = true;
            s.reason = format!("bzImage identical to {}: verdict reused", prev.label);
            return self.record(s);
        }
        if self.root.is_none() {
            self.root = Some(pipeline::guest_image(self.ctx)?);
        }
        let root = self.root.clone().context("no root image")?;
        if self.accel.is_none() {
            self.accel = Some(pipeline::accel(
                self.ctx,
                self.ctx.cfg.qemu.accel,
                kb,
                &root,
            )?);
        }
        let accel = self.accel.clone().context("no accel")?;
        let job = GuestJob::Suite {
            filters: self.filters.clone(),
        };
        let opts = BootOpts {
            accel: &accel,
            append: self.append.clone(),
            echo_out: false,
            progress: None,
        };
        let mut tries = Vec::new();
        let mut last = None;
        for t in 0..=self.retries {
            let safe: String = label
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            let run_dir = self.dir.join(format!("{safe}-try{}", t + 1));
            let r = pipeline::boot_and_test(self.ctx, kb, &root, &job, &opts, &run_dir)?;
            tries.push(r.outcome.label().to_string());
            match try_verdict(r.outcome) {
                TryVerdict::Good => {
                    let flaky = if t > 0 {
                        format!(" (flaky: failed {t} of {} tries)", t + 1)
                    } else {
                        String::new()
                    };
                    return self.record(Step {
                        label: label.into(),
                        verdict: Verdict::Good,
                        reason: format!("{}{flaky}", r.reason),
                        tries,
                        failing_tests: vec![],
                        run_dir: Some(run_dir),
                        bzimage_sha256: Some(sha),
                        build_seconds: kb.built.rebuilt.then_some(kb.built.seconds),
                        reused: false,
                    });
                }
                TryVerdict::Bad => last = Some((r, run_dir)),
                TryVerdict::Abort => {
                    return Err(crate::error::classified(
                        r.outcome,
                        format!("{label}: {} — bisect aborted", r.reason),
                    ))
                }
            }
        }
        let (r, run_dir) = last.context("no try ran")?;
        let failing = r
            .tests
            .iter()
            .filter(|t| {
                matches!(
                    t.verdict,
                    pipeline::Verdict::Fail | pipeline::Verdict::XPass
                )
            })
            .map(|t| t.name.clone())
            .collect();
        self.record(Step {
            label: label.into(),
            verdict: Verdict::Bad,
            reason: r.reason.clone(),
            tries,
            failing_tests: failing,
            run_dir: Some(run_dir),
            bzimage_sha256: Some(sha),
            build_seconds: kb.built.rebuilt.then_some(kb.built.seconds),
            reused: false,
        })
    }
}

/// What one boot of a step says.
#[derive(Debug, PartialEq, Eq)]
pub enum TryVerdict {
    Good,
    Bad,
    /// Infrastructure or usage trouble: never a verdict on the kernel.
    Abort,
}

pub fn try_verdict(o: Outcome) -> TryVerdict {
    match o {
        Outcome::Pass => TryVerdict::Good,
        Outcome::TestFailed | Outcome::KernelCrash => TryVerdict::Bad,
        Outcome::Untestable | Outcome::Infrastructure | Outcome::Usage => TryVerdict::Abort,
    }
}

/// A step that does not apply or build: skipped between upstream commits
/// (like `git bisect`), bad inside the series (every prefix must build).
pub fn unbuildable_verdict(series_mode: bool) -> Verdict {
    if series_mode {
        Verdict::Bad
    } else {
        Verdict::Skip
    }
}

/// Exit code of `bisect run` for `git bisect run`.
pub fn run_exit_code(v: Verdict) -> i32 {
    match v {
        Verdict::Good => 0,
        Verdict::Bad => 1,
        Verdict::Skip => 125,
    }
}

/// Load the state of an interrupted bisect; its parameters must match.
fn load_state(dir: &Path, key: &str, kind: &str) -> Result<State> {
    let s: State =
        serde_json::from_str(&fs::read_to_string(dir.join("state.json")).map_err(|e| {
            usage(format!(
                "--resume: cannot read {}: {e}",
                dir.join("state.json").display()
            ))
        })?)
        .map_err(|e| {
            usage(format!(
                "--resume: {}: {e}",
                dir.join("state.json").display()
            ))
        })?;
    if s.key != key {
        return Err(usage(format!(
            "--resume: the last {kind} bisect ({}) had other parameters",
            dir.display()
        )));
    }
    Ok(s)
}

/// Binary search over candidates 0..n (index -1 is the known-good end, n-1
/// the known-bad end). Skipped steps are stepped around, preferring the
/// candidate nearest the midpoint (later one on ties). Returns (first bad
/// index, skipped indexes between the last good and the first bad).
pub fn search(
    n: usize,
    mut eval: impl FnMut(usize, usize, usize) -> Result<Verdict>,
) -> Result<(usize, Vec<usize>)> {
    let mut lo: isize = -1;
    let mut hi: isize = n as isize - 1;
    let mut skipped: Vec<usize> = Vec::new();
    let mut step = 0;
    loop {
        let cands: Vec<isize> = (lo + 1..hi)
            .filter(|c| !skipped.contains(&(*c as usize)))
            .collect();
        if cands.is_empty() {
            let between: Vec<usize> = skipped
                .iter()
                .copied()
                .filter(|&s| (s as isize) > lo && (s as isize) < hi)
                .collect();
            return Ok((hi as usize, between));
        }
        let mid = (lo + hi).div_euclid(2);
        let c = *cands
            .iter()
            .min_by_key(|&&c| ((c - mid).abs(), -c))
            .context("no candidate")?;
        step += 1;
        let remaining = ((hi - lo) as f64).log2().ceil() as usize;
        match eval(c as usize, step, step + remaining.saturating_sub(1))? {
            Verdict::Good => lo = c,
            Verdict::Bad => hi = c,
            Verdict::Skip => skipped.push(c as usize),
        }
    }
}

fn series_of(ctx: &Ctx) -> Result<Series> {
    Series::load(&ctx.cfg.series)
}

fn params_key(parts: &[&str]) -> String {
    sha256_bytes(parts.join("\n").as_bytes())
}

pub fn main(cmd: Cmd) -> Result<i32> {
    crate::deps::check()?;
    match cmd {
        Cmd::Series(a) => series(a),
        Cmd::Git(a) => git(a),
        Cmd::Run(a) => run_step(a),
    }
}

fn series(a: SeriesArgs) -> Result<i32> {
    let ctx = a.shared.common.context()?;
    let series = series_of(&ctx)?;
    let n = series.patches.len();
    if n == 0 {
        return Err(usage(format!("{} lists no patches", series.file.display())));
    }
    let fragments = ctx
        .cfg
        .fragments(&a.shared.common.flavor)
        .map_err(|e| usage(format!("{e:#}")))?;
    let shas: Vec<&str> = series.patches.iter().map(|p| p.sha256.as_str()).collect();
    let key = params_key(&[
        "series",
        &shas.join(","),
        &a.shared.tests.join(","),
        &a.shared.common.flavor,
    ]);
    let mut b = Bisector::new(&ctx, &a.shared, "series", key, a.resume)?;
    b.say(&format!(
        "series bisect over {n} patches of {} (tests: {}), log {}",
        series.file.display(),
        if b.filters.is_empty() {
            "all".to_string()
        } else {
            b.filters.join(",")
        },
        b.dir.join("bisect.log").display()
    ));
    let src = {
        let _lock = ctx.cache.lock()?;
        crate::fetch::fetch(&ctx.cfg.kernel.sources, &ctx.cache, &ctx.ui)?
    };
    let eval_prefix = |b: &mut Bisector, k: usize| -> Result<Step> {
        let label = if k == 0 {
            "prefix 0 (unpatched)".to_string()
        } else {
            format!("prefix {k} ({})", series.patches[k - 1].name)
        };
        if let Some(s) = b.known(&label) {
            b.say(&format!("{label}: {:?} (from the resumed log)", s.verdict));
            return Ok(s);
        }
        let variant = match k {
            0 => Variant::Unpatched,
            k if k == n => Variant::Patched,
            _ => Variant::Partial,
        };
        let built = {
            let _lock = ctx.cache.lock()?;
            patch::prepare(&src, &series_prefix(&series, k), &ctx.cache, &ctx.ui)
                .and_then(|t| pipeline::build_tree(&ctx, t, variant, &fragments, &b.flavor, &b.dir))
        };
        match built {
            Ok(kb) => b.judge(&label, &kb),
            Err(e) if outcome_of(&e) == Outcome::Untestable => {
                b.unbuildable(&label, unbuildable_verdict(true), &e)
            }
            Err(e) => Err(e),
        }
    };
    let top = eval_prefix(&mut b, n)?;
    if top.verdict == Verdict::Good {
        b.say("the whole series passes: nothing to bisect");
        return Ok(0);
    }
    let bottom = eval_prefix(&mut b, 0)?;
    if bottom.verdict != Verdict::Good {
        b.say("the unpatched kernel already fails: the regression is not in the series");
        return Ok(Outcome::TestFailed.code());
    }
    // Candidates are prefixes 1..=n, i.e. index i = prefix i+1.
    let (first, _) = search(n, |i, step, of| {
        b.say(&format!("step {step} of ~{of}: prefix {}", i + 1));
        Ok(eval_prefix(&mut b, i + 1)?.verdict)
    })?;
    let k = first + 1;
    let bad = b.known(&format!("prefix {k} ({})", series.patches[k - 1].name));
    let good_label = if k == 1 {
        "prefix 0 (unpatched)".to_string()
    } else {
        format!("prefix {} ({})", k - 1, series.patches[k - 2].name)
    };
    let good = b.known(&good_label);
    let p = &series.patches[k - 1];
    let report = format!(
        "first bad patch: {k}/{n} {} — {}\n  failing: {}\n  reason: {}\n  last good run: {}\n  first bad run: {}\n  builds: {}",
        p.name,
        p.subject,
        bad.as_ref().map(|s| s.failing_tests.join(", ")).unwrap_or_default(),
        bad.as_ref().map(|s| s.reason.clone()).unwrap_or_default(),
        good.and_then(|s| s.run_dir).map(|d| d.display().to_string()).unwrap_or_else(|| "-".into()),
        bad.and_then(|s| s.run_dir).map(|d| d.display().to_string()).unwrap_or_else(|| "-".into()),
        b.builds
    );
    b.say(&report);
    println!("{report}");
    fs::write(b.dir.join("verdict.txt"), &report)?;
    Ok(0)
}

fn series_prefix(s: &Series, k: usize) -> Series {
    Series {
        file: s.file.clone(),
        patches: s.patches[..k].to_vec(),
    }
}

fn git_out(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .context("cannot run git")?;
    if !out.status.success() {
        return Err(anyhow!(
            "git -C {} {}: {}",
            dir.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The bisect worktree of `kernel_dir`, in the cache: the user's checkout and
/// branches are never touched, and the build dir inside it makes builds
/// between steps incremental.
fn worktree(cache: &Cache, kernel_dir: &Path, commit: &str) -> Result<PathBuf> {
    let abs = fs::canonicalize(kernel_dir)
        .map_err(|e| usage(format!("--kernel-dir {}: {e}", kernel_dir.display())))?;
    let wt = cache
        .root
        .join("worktrees")
        .join(&sha256_bytes(abs.to_string_lossy().as_bytes())[..12]);
    if !wt.join(".git").exists() {
        fs::create_dir_all(wt.parent().context("no parent")?)?;
        let _ = git_out(&abs, &["worktree", "prune"]);
        git_out(
            &abs,
            &["worktree", "add", "--detach", &wt.to_string_lossy(), commit],
        )?;
    }
    git_out(&wt, &["checkout", "-q", "-f", "--detach", commit])?;
    git_out(
        &wt,
        &["clean", "-q", "-ffdx", "-e", "/.b-*", "-e", "/.bufaio*"],
    )?;
    Ok(wt)
}

/// Check out `commit` in the worktree, apply the series, build.
fn git_build(
    ctx: &Ctx,
    kernel_dir: &Path,
    commit: &str,
    series: &Series,
    fragments: &[PathBuf],
    flavor: &str,
    log_dir: &Path,
) -> Result<KernelBuild> {
    let _lock = ctx.cache.lock()?;
    let wt = worktree(&ctx.cache, kernel_dir, commit)?;
    let mut fuzz = Vec::new();
    for (i, p) in series.patches.iter().enumerate() {
        let hunks = patch::apply_one(&wt, p).map_err(|e| {
            crate::error::untestable(format!(
                "series does not apply at {}: patch {}/{} {}: {}",
                &commit[..12.min(commit.len())],
                i + 1,
                series.patches.len(),
                p.name,
                e.lines()
                    .find(|l| l.contains("FAILED"))
                    .or_else(|| e.lines().next())
                    .unwrap_or("")
            ))
        })?;
        if !hunks.is_empty() {
            ctx.ui.warn(format!(
                "patch {} applies at {} only with fuzz: {}",
                p.name,
                &commit[..12.min(commit.len())],
                hunks.join("; ")
            ));
            fuzz.push((p.name.clone(), hunks));
        }
    }
    let tree = Tree {
        path: wt,
        key: patch::tree_key(&format!("git-{commit}"), &series.patches),
        patches: series.patches.clone(),
        fuzz,
        fuzz_unknown: false,
    };
    pipeline::build_tree(ctx, tree, Variant::Patched, fragments, flavor, log_dir)
}

fn git(a: GitArgs) -> Result<i32> {
    let ctx = a.shared.common.context()?;
    let series = series_of(&ctx)?;
    let fragments = ctx
        .cfg
        .fragments(&a.shared.common.flavor)
        .map_err(|e| usage(format!("{e:#}")))?;
    let kd = &a.kernel_dir;
    let rev = |r: &str| {
        git_out(kd, &["rev-parse", "--verify", &format!("{r}^{{commit}}")])
            .map_err(|e| usage(format!("{e:#}")))
    };
    let good = rev(&a.good)?;
    let bad = rev(&a.bad)?;
    let head_before = git_out(kd, &["rev-parse", "HEAD"]).ok();
    let list: Vec<String> = git_out(
        kd,
        &[
            "rev-list",
            "--reverse",
            "--ancestry-path",
            &format!("{good}..{bad}"),
        ],
    )?
    .lines()
    .map(str::to_string)
    .collect();
    if list.is_empty() {
        return Err(usage(format!("{} is not an ancestor of {}", a.good, a.bad)));
    }
    let shas: Vec<&str> = series.patches.iter().map(|p| p.sha256.as_str()).collect();
    let key = params_key(&[
        "git",
        &good,
        &bad,
        &shas.join(","),
        &a.shared.tests.join(","),
        &a.shared.common.flavor,
    ]);
    let mut b = Bisector::new(&ctx, &a.shared, "git", key, a.resume)?;
    b.say(&format!(
        "git bisect {}..{} in {}: {} commits, series of {} patch(es) re-applied at each step",
        &good[..12],
        &bad[..12],
        kd.display(),
        list.len(),
        series.patches.len()
    ));
    let subject = |c: &str| git_out(kd, &["log", "-1", "--format=%s", c]).unwrap_or_default();
    let eval = |b: &mut Bisector, c: &str| -> Result<Step> {
        let label = format!("{} {}", &c[..12], subject(c));
        if let Some(s) = b.known(&label) {
            b.say(&format!("{label}: {:?} (from the resumed log)", s.verdict));
            return Ok(s);
        }
        match git_build(
            &ctx,
            kd,
            c,
            &series,
            &fragments,
            &b.flavor.clone(),
            &b.dir.clone(),
        ) {
            Ok(kb) => b.judge(&label, &kb),
            Err(e) if outcome_of(&e) == Outcome::Untestable => {
                b.unbuildable(&label, unbuildable_verdict(false), &e)
            }
            Err(e) => Err(e),
        }
    };
    let result = (|| -> Result<i32> {
        let top = eval(&mut b, &bad)?;
        if top.verdict != Verdict::Bad {
            b.say(&format!(
                "the bad end {} is not bad ({:?}): nothing to bisect",
                &bad[..12],
                top.verdict
            ));
            return Ok(Outcome::TestFailed.code());
        }
        let (first, skipped) = search(list.len(), |i, step, of| {
            b.say(&format!("step {step} of ~{of}: {}", &list[i][..12]));
            Ok(eval(&mut b, &list[i])?.verdict)
        })?;
        let c = &list[first];
        let mut report = format!("first bad commit: {} {}", c, subject(c));
        if !skipped.is_empty() {
            let s: Vec<String> = skipped.iter().map(|&i| list[i][..12].to_string()).collect();
            report.push_str(&format!(
                "\n  could also be one of the skipped commits before it: {}",
                s.join(", ")
            ));
        }
        let all_skipped: Vec<String> = b
            .state
            .steps
            .values()
            .filter(|s| s.verdict == Verdict::Skip)
            .map(|s| format!("{} ({})", s.label, s.reason))
            .collect();
        if !all_skipped.is_empty() {
            report.push_str(&format!("\n  skipped: {}", all_skipped.join("; ")));
        }
        report.push_str(&format!("\n  builds: {}", b.builds));
        b.say(&report);
        println!("{report}");
        fs::write(b.dir.join("verdict.txt"), &report)?;
        Ok(0)
    })();
    // Leave the user's repository as it was: drop our worktree.
    let wt = ctx
        .cache
        .root
        .join("worktrees")
        .join(&sha256_bytes(fs::canonicalize(kd)?.to_string_lossy().as_bytes())[..12]);
    if wt.exists() {
        let _ = git_out(
            kd,
            &["worktree", "remove", "--force", &wt.to_string_lossy()],
        );
        let _ = fs::remove_dir_all(&wt);
        let _ = git_out(kd, &["worktree", "prune"]);
    }
    if let (Some(before), Ok(after)) = (head_before, git_out(kd, &["rev-parse", "HEAD"])) {
        if before != after {
            return Err(anyhow!("internal error: HEAD of {} moved", kd.display()));
        }
    }
    result
}

/// One step for `git bisect run`: test HEAD of the kernel dir.
fn run_step(a: RunArgs) -> Result<i32> {
    let ctx = a.shared.common.context()?;
    let series = series_of(&ctx)?;
    let fragments = ctx
        .cfg
        .fragments(&a.shared.common.flavor)
        .map_err(|e| usage(format!("{e:#}")))?;
    let commit =
        git_out(&a.kernel_dir, &["rev-parse", "HEAD"]).map_err(|e| usage(format!("{e:#}")))?;
    let key = params_key(&["run", &commit, &a.shared.tests.join(",")]);
    let mut b = Bisector::new(&ctx, &a.shared, "run", key, false)?;
    let label = format!(
        "{} {}",
        &commit[..12],
        git_out(&a.kernel_dir, &["log", "-1", "--format=%s"]).unwrap_or_default()
    );
    let step = match git_build(
        &ctx,
        &a.kernel_dir,
        &commit,
        &series,
        &fragments,
        &b.flavor.clone(),
        &b.dir.clone(),
    ) {
        Ok(kb) => b.judge(&label, &kb)?,
        Err(e) if outcome_of(&e) == Outcome::Untestable => {
            b.unbuildable(&label, unbuildable_verdict(false), &e)?
        }
        Err(e) => return Err(e),
    };
    b.say(&format!(
        "worktree kept for incremental builds of the next steps: {} (drop it with `git -C {} worktree remove --force <path>` when done)",
        ctx.cache.root.join("worktrees").display(),
        a.kernel_dir.display()
    ));
    Ok(run_exit_code(step.verdict))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(n: usize, first_bad: usize, skip: &[usize]) -> (usize, Vec<usize>, Vec<usize>) {
        let mut seen = Vec::new();
        let (f, s) = search(n, |i, _, _| {
            seen.push(i);
            Ok(if skip.contains(&i) {
                Verdict::Skip
            } else if i >= first_bad {
                Verdict::Bad
            } else {
                Verdict::Good
            })
        })
        .unwrap();
        (f, s, seen)
    }

    #[test]
    fn finds_first_bad_in_log_steps() {
        for n in 1..40 {
            for fb in 0..n {
                let (f, s, seen) = run(n, fb, &[]);
                assert_eq!(f, fb, "n={n}");
                assert!(s.is_empty());
                let bound = (n as f64).log2().ceil() as usize;
                assert!(seen.len() <= bound, "n={n} fb={fb} steps={}", seen.len());
            }
        }
    }

    #[test]
    fn step_verdict_mapping() {
        assert_eq!(try_verdict(Outcome::Pass), TryVerdict::Good);
        assert_eq!(try_verdict(Outcome::TestFailed), TryVerdict::Bad);
        assert_eq!(try_verdict(Outcome::KernelCrash), TryVerdict::Bad);
        for o in [Outcome::Untestable, Outcome::Infrastructure, Outcome::Usage] {
            assert_eq!(
                try_verdict(o),
                TryVerdict::Abort,
                "{o:?} never marks a step"
            );
        }
        assert_eq!(unbuildable_verdict(true), Verdict::Bad);
        assert_eq!(unbuildable_verdict(false), Verdict::Skip);
        assert_eq!(run_exit_code(Verdict::Good), 0);
        assert_eq!(run_exit_code(Verdict::Bad), 1);
        assert_eq!(run_exit_code(Verdict::Skip), 125);
    }

    #[test]
    fn resume_state_round_trip_and_parameter_check() {
        let d = tempfile::tempdir().unwrap();
        let mut st = State {
            key: "k1".into(),
            ..State::default()
        };
        st.steps.insert(
            "prefix 2".into(),
            Step {
                label: "prefix 2".into(),
                verdict: Verdict::Bad,
                reason: "1 test failed".into(),
                tries: vec!["test_failed".into(), "test_failed".into()],
                failing_tests: vec!["errors/einval_opcode".into()],
                run_dir: None,
                bzimage_sha256: Some("ab".into()),
                build_seconds: Some(7.0),
                reused: false,
            },
        );
        fs::write(
            d.path().join("state.json"),
            serde_json::to_string(&st).unwrap(),
        )
        .unwrap();
        let back = load_state(d.path(), "k1", "series").unwrap();
        assert_eq!(back.steps["prefix 2"].verdict, Verdict::Bad);
        assert_eq!(back.steps["prefix 2"].tries.len(), 2);
        let e = load_state(d.path(), "k2", "series").unwrap_err();
        assert_eq!(outcome_of(&e), Outcome::Usage);
        assert!(format!("{e:#}").contains("other parameters"));
        let e = load_state(&d.path().join("nope"), "k1", "series").unwrap_err();
        assert!(format!("{e:#}").contains("--resume"));
    }

    #[test]
    fn steps_around_skips() {
        // The git e2e layout: C, D (skip), E, B (first bad), F.
        let (f, s, seen) = run(5, 3, &[1]);
        assert_eq!(f, 3);
        assert!(s.is_empty());
        assert_eq!(seen, [1, 2, 3]);
        // A skipped commit right before the first bad one is ambiguous.
        let (f, s, _) = run(5, 3, &[2]);
        assert_eq!(f, 3);
        assert_eq!(s, [2]);
    }
}
