//! The stages wired together with typed inputs and outputs, shared by every
//! subcommand (run, exec, bench, bisect, CI): config → fetch → patch → kconfig
//! → build → rootfs → vm → guest protocol → report.

use crate::cache::Cache;
use crate::config::Config;
use crate::exitcode::{self, Outcome, VmEnd};
use crate::fetch::{self, Fetched};
use crate::kbuild::{self, Built};
use crate::kconfig::{self, Configured};
use crate::ktap;
use crate::patch::{self, Series, Tree};
use crate::qemu::{self, VmSpec};
use crate::rootfs::{self, Disk, RootImage};
use crate::scan;
use crate::ui::Ui;
use crate::vm::{self, AccelChoice, Limits};
use anyhow::{Context, Result};
use bufaio_contract::param;
use serde::Serialize;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which kernel(s) to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelSel {
    Patched,
    Unpatched,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    Unpatched,
    Patched,
    /// A kernel given with `--bzimage`; judged like the patched kernel.
    Prebuilt,
    /// Part of the series (bisect steps): new-behaviour tests may fail or
    /// pass, only the other tests count.
    Partial,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Unpatched => "unpatched",
            Variant::Patched => "patched",
            Variant::Prebuilt => "prebuilt",
            Variant::Partial => "partial",
        }
    }
}

impl KernelSel {
    pub fn variants(self) -> Vec<Variant> {
        match self {
            KernelSel::Patched => vec![Variant::Patched],
            KernelSel::Unpatched => vec![Variant::Unpatched],
            KernelSel::Both => vec![Variant::Unpatched, Variant::Patched],
        }
    }
}

/// Everything a stage needs from the outside world.
pub struct Ctx {
    /// The bufaio checkout (workspace root).
    pub root: PathBuf,
    pub cfg: Config,
    pub cache: Cache,
    pub ui: Ui,
    /// `--bzimage`: boot this kernel instead of building one.
    pub prebuilt: Option<PathBuf>,
    /// `--keep-disks`: leave the disk images in the run dir.
    pub keep_disks: bool,
}

/// A built kernel, ready to boot.
#[derive(Debug, Clone, Serialize)]
pub struct KernelBuild {
    /// The variants this build serves (both, when the series is empty).
    pub variants: Vec<Variant>,
    pub tree: Tree,
    pub configured: Configured,
    pub built: Built,
}

/// fetch → patch → kconfig → build for the requested variants, under the
/// cache lock. Variants whose trees are identical share one build.
pub fn build_kernels(
    ctx: &Ctx,
    series: &Series,
    sel: KernelSel,
    flavor: &str,
    log_dir: &Path,
) -> Result<(Fetched, Vec<KernelBuild>)> {
    build_kernels_with(ctx, series, sel, flavor, log_dir, &[])
}

/// [`build_kernels`] with `extra` fragments merged after the flavor's (e.g.
/// `kconfigs/net.config` for `cargo xtask vm`). The build dir is keyed by the
/// fragments' content, so such a kernel gets a build dir of its own.
pub fn build_kernels_with(
    ctx: &Ctx,
    series: &Series,
    sel: KernelSel,
    flavor: &str,
    log_dir: &Path,
    extra: &[PathBuf],
) -> Result<(Fetched, Vec<KernelBuild>)> {
    if let Some(bz) = &ctx.prebuilt {
        return prebuilt(bz, flavor);
    }
    let mut fragments = ctx
        .cfg
        .fragments(flavor)
        .map_err(|e| crate::error::usage(format!("{e:#}")))?;
    fragments.extend(extra.iter().cloned());
    let _lock = ctx.cache.lock()?;
    let src = fetch::fetch(&ctx.cfg.kernel.sources, &ctx.cache, &ctx.ui)?;
    let mut out: Vec<KernelBuild> = Vec::new();
    for v in sel.variants() {
        let s = match v {
            Variant::Unpatched => Series::empty(&series.file),
            Variant::Patched | Variant::Prebuilt | Variant::Partial => series.clone(),
        };
        let key = patch::tree_key(&src.id, &s.patches);
        if let Some(kb) = out.iter_mut().find(|k| k.tree.key == key) {
            kb.variants.push(v);
            continue;
        }
        let tree = patch::prepare(&src, &s, &ctx.cache, &ctx.ui)?;
        out.push(build_tree(ctx, tree, v, &fragments, flavor, log_dir)?);
    }
    Ok((src, out))
}

/// One more patched kernel with another series (e.g. `bench
/// --also-series patches/6.12/v1/series`): fetch → patch → kconfig → build under
/// the cache lock, as [`build_kernels`] does for the configured series.
pub fn build_series_kernel(
    ctx: &Ctx,
    series: &Series,
    flavor: &str,
    log_dir: &Path,
) -> Result<KernelBuild> {
    let fragments = ctx
        .cfg
        .fragments(flavor)
        .map_err(|e| crate::error::usage(format!("{e:#}")))?;
    let _lock = ctx.cache.lock()?;
    let src = fetch::fetch(&ctx.cfg.kernel.sources, &ctx.cache, &ctx.ui)?;
    let tree = patch::prepare(&src, series, &ctx.cache, &ctx.ui)?;
    build_tree(ctx, tree, Variant::Patched, &fragments, flavor, log_dir)
}

/// kconfig → build for one prepared tree (the caller holds the cache lock).
pub fn build_tree(
    ctx: &Ctx,
    tree: Tree,
    v: Variant,
    fragments: &[PathBuf],
    flavor: &str,
    log_dir: &Path,
) -> Result<KernelBuild> {
    let configured = kconfig::configure(&tree, flavor, fragments, &ctx.ui)?;
    let built = kbuild::build(&tree, &configured, &ctx.cache, log_dir, &ctx.ui)?;
    if !built.rebuilt {
        ctx.ui.info(format!(
            "build: {} {} up to date (make skipped)",
            v.name(),
            &built.sha256[..12]
        ));
    }
    Ok(KernelBuild {
        variants: vec![v],
        tree,
        configured,
        built,
    })
}

/// `--bzimage PATH`: a kernel built elsewhere (a developer's own tree).
fn prebuilt(bz: &Path, flavor: &str) -> Result<(Fetched, Vec<KernelBuild>)> {
    let sha = crate::cache::sha256_file(bz)
        .map_err(|e| crate::error::usage(format!("--bzimage: {e:#}")))?;
    let dir = bz.parent().unwrap_or(Path::new(".")).to_path_buf();
    let fetched = Fetched {
        id: format!("prebuilt-{sha}"),
        tarball: bz.to_path_buf(),
        description: format!("prebuilt {}", bz.display()),
        tarball_sha256: sha.clone(),
    };
    let kb = KernelBuild {
        variants: vec![Variant::Prebuilt],
        tree: Tree {
            path: dir.clone(),
            key: fetched.id.clone(),
            patches: vec![],
            fuzz: vec![],
            fuzz_unknown: false,
        },
        configured: Configured {
            flavor: flavor.to_string(),
            build_dir: dir,
            fragments_hash: String::new(),
            config_hash: String::new(),
            fragments: vec![],
        },
        built: Built {
            bzimage: bz.to_path_buf(),
            sha256: sha,
            rebuilt: false,
            seconds: 0.0,
            log: PathBuf::new(),
            ccache: false,
        },
    };
    Ok((fetched, vec![kb]))
}

/// The guest binary and the root image holding it.
pub fn guest_image(ctx: &Ctx) -> Result<RootImage> {
    let bin = rootfs::build_guest(&ctx.root, &ctx.ui)?;
    let libaio = match &ctx.cfg.peers.libaio {
        Some(peer) => match crate::peers::libaio_harness(&ctx.root, peer, &ctx.cache, &ctx.ui) {
            Ok(h) => Some(h),
            Err(e) => {
                ctx.ui.warn(format!(
                    "libaio harness unavailable, soak/libaio* will SKIP: {e:#}"
                ));
                None
            }
        },
        None => None,
    };
    let fio = match crate::peers::fio_files(&ctx.root.join("target/bufaio/fio-shim")) {
        Ok(Some(files)) => Some(files),
        Ok(None) => {
            ctx.ui.warn(
                "fio not found on the host, soak/fio_verify will SKIP (cargo xtask deps --install)",
            );
            None
        }
        Err(e) => {
            ctx.ui
                .warn(format!("fio unavailable, soak/fio_verify will SKIP: {e:#}"));
            None
        }
    };
    let stress_ng = match crate::peers::stress_ng_files(
        &ctx.root.join("target/bufaio/stress-ng-shim"),
    ) {
        Ok(Some(files)) => Some(files),
        Ok(None) => {
            ctx.ui.warn("stress-ng not found on the host, soak/stress_ng_aio will SKIP (cargo xtask deps --install)");
            None
        }
        Err(e) => {
            ctx.ui.warn(format!(
                "stress-ng unavailable, soak/stress_ng_aio will SKIP: {e:#}"
            ));
            None
        }
    };
    let peers = crate::peers::Peers {
        libaio,
        fio,
        stress_ng,
    };
    rootfs::root_image(&ctx.root, &bin, &peers, &ctx.ui)
}

/// The soak pressure profile names the guest knows (`all` included), from
/// the static guest binary run on the host: the guest's list is the one list.
pub fn soak_profiles(ctx: &Ctx) -> Result<Vec<String>> {
    guest_lines(ctx, &["--soak-profiles"])
}

/// The lines the static guest binary prints for `args`, run on the host.
fn guest_lines(ctx: &Ctx, args: &[&str]) -> Result<Vec<String>> {
    let bin = rootfs::build_guest(&ctx.root, &ctx.ui)?;
    let out = std::process::Command::new(&bin)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {} {}", bin.display(), args.join(" ")))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

/// Refuses (exit 129) a test filter that selects no test, before any
/// kernel is built: the static guest binary lists its tests on the host.
/// Returns the test instances the filters select (none for no filter).
pub fn check_filters(ctx: &Ctx, filters: &[String]) -> Result<Vec<String>> {
    check_filters_named(ctx, "--filter", filters)
}

/// [`check_filters`] for an option called `flag`.
pub fn check_filters_named(ctx: &Ctx, flag: &str, filters: &[String]) -> Result<Vec<String>> {
    if filters.is_empty() {
        return Ok(Vec::new());
    }
    let selected = guest_lines(ctx, &["--list", "--filter", &filters.join(",")])?;
    if !selected.is_empty() {
        return Ok(selected);
    }
    let all = guest_lines(ctx, &["--list"])?;
    Err(crate::error::usage(format!(
        "{flag} {}: matches no test; nearest: {}",
        filters.join(","),
        nearest(&filters[0], &all).join(", ")
    )))
}

/// Up to five test names sharing the longest prefix with `glob`'s literal
/// start.
pub fn nearest(glob: &str, names: &[String]) -> Vec<String> {
    let glob = glob.strip_prefix('!').unwrap_or(glob);
    let lit: &str = glob.split(['*', '?']).next().unwrap_or("");
    let common = |n: &str| {
        lit.chars()
            .zip(n.chars())
            .take_while(|(a, b)| a == b)
            .count()
    };
    let best = names.iter().map(|n| common(n)).max().unwrap_or(0);
    names
        .iter()
        .filter(|n| common(n) == best)
        .take(5)
        .cloned()
        .collect()
}

/// What to do in the guest.
#[derive(Debug, Clone)]
pub enum GuestJob {
    Suite {
        filters: Vec<String>,
    },
    Exec {
        argv: Vec<String>,
        files: Vec<PathBuf>,
    },
}

/// A test's verdict once the kernel's expectations are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Skip,
    /// A new-behaviour test failed on the unpatched kernel, as it must.
    XFail,
    /// A new-behaviour test passed on the unpatched kernel: the suite cannot
    /// tell the kernels apart (a failure).
    XPass,
    /// Failed with a `# TODO` directive: a known gap of the series, tracked
    /// in the test's reason; reported, not a failure.
    Todo,
}

/// The guest marks tests that assert the series' new behaviour with this
/// diagnostic line.
pub const EXPECT_PATCHED: &str = "expect: patched";

/// New-behaviour tests must fail on the unpatched kernel and pass on the
/// patched one. On a result that stands only for the unpatched kernel, turn
/// their expected failures into passes (XFAIL) and their passes into
/// failures (XPASS), so classification sees the contract. Returns the verdict
/// of every test, in order.
pub fn apply_expectations(report: &mut ktap::Report, variants: &[Variant]) -> Vec<Verdict> {
    let unpatched_only = variants == [Variant::Unpatched];
    let partial = variants == [Variant::Partial];
    report
        .tests
        .iter_mut()
        .map(|t| {
            let new = t.diagnostics.iter().any(|d| d.trim() == EXPECT_PATCHED);
            if t.todo && t.status == ktap::Status::Fail {
                t.status = ktap::Status::Pass;
                return Verdict::Todo;
            }
            if new && partial && t.status == ktap::Status::Fail {
                t.status = ktap::Status::Pass;
                t.directive = Some("XFAIL new behaviour, partial series".into());
                return Verdict::XFail;
            }
            match (&t.status, new && unpatched_only) {
                (ktap::Status::Pass, false) => Verdict::Pass,
                (ktap::Status::Fail, false) => Verdict::Fail,
                (ktap::Status::Skip, _) => Verdict::Skip,
                (ktap::Status::Fail, true) => {
                    t.status = ktap::Status::Pass;
                    t.directive = Some("XFAIL new behaviour, unpatched kernel".into());
                    Verdict::XFail
                }
                (ktap::Status::Pass, true) => {
                    t.status = ktap::Status::Fail;
                    t.diagnostics.push(
                        "new-behaviour test passed on the unpatched kernel: it cannot tell the kernels apart"
                            .into(),
                    );
                    Verdict::XPass
                }
            }
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct TestRow {
    pub name: String,
    pub status: ktap::Status,
    pub verdict: Verdict,
    pub duration_ms: Option<u64>,
    pub diagnostic: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SplatRow {
    pub kind: String,
    pub line: usize,
    pub title: String,
    pub excerpt: String,
    pub allowed: bool,
}

/// The outcome of booting one kernel once.
#[derive(Debug, Clone, Serialize)]
pub struct KernelResult {
    pub variants: Vec<Variant>,
    pub flavor: String,
    pub kernel_release: Option<String>,
    pub filesystems: Option<String>,
    pub series: Vec<String>,
    pub bzimage_sha256: String,
    pub accel: qemu::Accel,
    pub accel_reason: String,
    pub outcome: Outcome,
    pub exit_code: i32,
    pub reason: String,
    pub vm_end: String,
    pub tests: Vec<TestRow>,
    pub splats: Vec<SplatRow>,
    pub exec_status: Option<i32>,
    pub boot_to_ready_ms: Option<u64>,
    pub boot_to_ktap_ms: Option<u64>,
    pub vm_wall_ms: u64,
    pub qemu_exit_status: Option<i32>,
    pub dir: PathBuf,
    pub qemu_command: String,
}

pub struct BootOpts<'a> {
    pub accel: &'a AccelChoice,
    pub append: Vec<String>,
    pub echo_out: bool,
    /// Total operations the guest's workloads will report progress
    /// against (`bufaio-progress:` console lines): shows a bar of them.
    pub progress: Option<u64>,
}

pub use bufaio_contract::parse_progress;

/// rootfs disks → vm → guest protocol → classification for one kernel.
pub fn boot_and_test(
    ctx: &Ctx,
    kb: &KernelBuild,
    root: &RootImage,
    job: &GuestJob,
    opts: &BootOpts,
    dir: &Path,
) -> Result<KernelResult> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // The run keeps its own copy of the kernel: self-contained and immune to
    // a concurrent rebuild of the cache's build dir.
    let kernel = dir.join("bzImage");
    fs::copy(&kb.built.bzimage, &kernel).context("cannot copy bzImage into the run dir")?;
    let mut disks: Vec<Disk> = rootfs::test_disks(dir, ctx.cfg.disks.size_mib)?;
    let mut append = vec![param::word(param::TEST_TIMEOUT, ctx.cfg.timeouts.test_s)];
    let mode = match job {
        GuestJob::Suite { filters } => {
            if !filters.is_empty() {
                append.push(param::word(param::FILTER, filters.join(",")));
            }
            // slow-filesystem copies and tiny ENOSPC filesystems, fsck'd
            // below, and the scratch ext3 filesystem (corrupted on purpose
            // by read/corrupt_indirect, not fsck'd)
            disks.extend(rootfs::check_disks(
                dir,
                ctx.cfg.disks.size_mib,
                root.libaio_enospc.as_deref(),
            )?);
            "suite"
        }
        GuestJob::Exec { argv, files } => {
            disks.push(rootfs::payload_disk(dir, argv, files)?);
            "exec"
        }
    };
    if !ctx.cfg.qemu.append.trim().is_empty() {
        append.push(ctx.cfg.qemu.append.trim().to_string());
    }
    // Guest liveness for the silence timeout (a quiet `exec` command is
    // not a hang): a heartbeat line from PID 1 well inside the timeout.
    append.push(param::word(
        param::HEARTBEAT,
        (ctx.cfg.timeouts.silence_s / 4).max(1),
    ));
    append.extend(opts.append.iter().cloned());
    let clock = vm::tcg_clock_args(opts.accel.accel, &append);
    append.extend(clock);
    let spec = VmSpec {
        binary: ctx.cfg.qemu.binary.clone(),
        accel: opts.accel.accel,
        memory_mib: ctx.cfg.qemu.memory_mib,
        cpus: ctx.cfg.qemu.cpus,
        kernel,
        append: qemu::cmdline(mode, &append),
        root_image: root.image.clone(),
        disks: disks.clone(),
        ktap_path: dir.join("results.ktap"),
        out_path: dir.join("exec-output.txt"),
    };
    let t = &ctx.cfg.timeouts;
    let limits = Limits {
        boot: Duration::from_secs(t.boot_s),
        silence: Duration::from_secs(t.silence_s),
        overall: Duration::from_secs(t.overall_s),
    };
    let label = kb
        .variants
        .iter()
        .map(|v| v.name())
        .collect::<Vec<_>>()
        .join("+");
    let stage = ctx
        .ui
        .stage("vm", format!("{label}: booting ({:?})", opts.accel.accel));
    let mut done: std::collections::BTreeMap<String, u64> = Default::default();
    let mut noted: Option<std::time::Instant> = None;
    let quiet_for = if ctx.ui.is_tty() {
        Duration::ZERO
    } else {
        Duration::from_secs(30)
    };
    if let Some(total) = opts.progress {
        stage.set_length(total, false);
    }
    let r = vm::run_observed(
        &spec,
        limits,
        &dir.join("console.log"),
        opts.echo_out,
        &ctx.ui,
        &mut |line| {
            if opts.progress.is_none() {
                return;
            }
            if let Some((name, n, rate)) = parse_progress(line) {
                done.insert(name.clone(), n);
                stage.set_position(done.values().sum());
                if noted.is_none_or(|t| t.elapsed() >= quiet_for) {
                    noted = Some(std::time::Instant::now());
                    stage.note(format!("{label}: {name} {n} ops, {rate:.0} ops/s"));
                }
            }
        },
    )?;
    stage.finish(format!(
        "{label}: {:?} after {:.1}s (ready at {})",
        r.end,
        r.wall.as_secs_f64(),
        r.boot_to_ready
            .map(|d| format!("{:.2}s", d.as_secs_f64()))
            .unwrap_or_else(|| "never".into())
    ));
    let report = if r.ktap.trim().is_empty() {
        ktap::parse(&ktap::extract_from_console(&r.console))
    } else {
        ktap::parse(&r.ktap)
    };
    let mut report = report;
    let verdicts = apply_expectations(&mut report, &kb.variants);
    let allow = load_allowlist(ctx)?;
    let splats = scan::scan(&r.console, &allow);
    let exec = matches!(job, GuestJob::Exec { .. });
    let (mut outcome, mut reason) = exitcode::classify(&report, &splats, &r.end, exec);
    let mut tests: Vec<TestRow> = report
        .tests
        .iter()
        .zip(&verdicts)
        .map(|(t, v)| TestRow {
            name: t.name.clone(),
            status: t.status.clone(),
            verdict: *v,
            duration_ms: t.duration_ms,
            diagnostic: match &t.directive {
                Some(d) if t.diagnostics.is_empty() => d.clone(),
                _ => t.diagnostics.join("\n"),
            },
        })
        .collect();
    // Host-side check after every run: the test filesystems must be clean,
    // and so must what the slow-device and ENOSPC tests left behind.
    if matches!(r.end, VmEnd::Exited) {
        for d in &disks {
            let Some(name) = rootfs::fsck_test_name(d) else {
                continue;
            };
            let check = if name.starts_with("host/fsck-slow@") && rootfs::slowck_marker_left(d)? {
                FsckCheck::NotCopied
            } else {
                let (ok, text) = rootfs::fsck(d)?;
                FsckCheck::Ran { ok, text }
            };
            let row = fsck_row(&name, &check);
            if row.verdict == Verdict::Fail && outcome == Outcome::Pass && !exec {
                outcome = Outcome::TestFailed;
                reason = match check {
                    FsckCheck::NotCopied => {
                        format!("{name}: the slow filesystem was not copied back for e2fsck")
                    }
                    FsckCheck::Ran { .. } => format!(
                        "{name}: e2fsck -fn found errors on {}",
                        d.path
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default()
                    ),
                };
            }
            tests.push(row);
        }
    }
    // Disks are per run and large: drop them once checked (sparse, but
    // still), unless asked to keep them (`cargo xtask clean` removes them
    // from runs that were killed before getting here).
    if ctx.keep_disks {
        ctx.ui.info(format!(
            "disk images kept in {} (--keep-disks)",
            dir.display()
        ));
    } else {
        for d in &disks {
            let _ = fs::remove_file(&d.path);
        }
        let _ = fs::remove_dir_all(dir.join("payload"));
    }
    let splat_rows: Vec<SplatRow> = splats
        .iter()
        .map(|s| SplatRow {
            kind: format!("{:?}", s.kind),
            line: s.line,
            title: s.title.clone(),
            excerpt: s.excerpt.clone(),
            allowed: s.allowed,
        })
        .collect();
    if let Some(s) = scan::first_failing(&splats) {
        fs::write(dir.join("splat.txt"), &s.excerpt).ok();
    }
    let res = KernelResult {
        variants: kb.variants.clone(),
        flavor: kb.configured.flavor.clone(),
        kernel_release: report.header_value("kernel").map(str::to_string),
        filesystems: report.header_value("filesystems").map(str::to_string),
        series: kb.tree.patches.iter().map(|p| p.name.clone()).collect(),
        bzimage_sha256: kb.built.sha256.clone(),
        accel: opts.accel.accel,
        accel_reason: opts.accel.reason.clone(),
        exit_code: outcome.code(),
        outcome,
        reason,
        vm_end: format!("{:?}", r.end),
        tests,
        splats: splat_rows,
        exec_status: report.exec_status,
        boot_to_ready_ms: r.boot_to_ready.map(|d| d.as_millis() as u64),
        boot_to_ktap_ms: r.boot_to_ktap.map(|d| d.as_millis() as u64),
        vm_wall_ms: r.wall.as_millis() as u64,
        qemu_exit_status: r.qemu_status,
        dir: dir.to_path_buf(),
        qemu_command: qemu::render(&r.argv),
    };
    let junit = crate::junit::render(
        &format!("bufaio.{label}"),
        &report,
        scan::first_failing(&splats).map(|s| s.excerpt.as_str()),
    );
    fs::write(dir.join("junit.xml"), junit)?;
    fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&res)?,
    )?;
    Ok(res)
}

/// What the host found when checking one disk after the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsckCheck {
    /// `e2fsck -fn` ran: clean or not, with its output.
    Ran { ok: bool, text: String },
    /// A slow-copy disk still holds its marker: the guest did not copy the
    /// slow filesystem onto it (see the console's `bufaio: slow-<fs>:` line).
    NotCopied,
}

/// The result row for a host-side fsck check (`host/fsck…@fs`).
pub fn fsck_row(name: &str, check: &FsckCheck) -> TestRow {
    let (ok, diagnostic) = match check {
        FsckCheck::Ran { ok: true, .. } => (true, String::new()),
        FsckCheck::Ran { ok: false, text } => (false, format!("e2fsck -fn found errors:\n{}", text.trim_end())),
        FsckCheck::NotCopied => (
            false,
            "the guest did not copy the slow filesystem back for e2fsck (see the console line `bufaio: slow-…`)".to_string(),
        ),
    };
    TestRow {
        name: name.to_string(),
        status: if ok {
            ktap::Status::Pass
        } else {
            ktap::Status::Fail
        },
        verdict: if ok { Verdict::Pass } else { Verdict::Fail },
        duration_ms: None,
        diagnostic,
    }
}

pub fn load_allowlist(ctx: &Ctx) -> Result<scan::Allowlist> {
    match &ctx.cfg.splat_allowlist {
        None => Ok(scan::Allowlist::empty()),
        Some(p) => {
            let text = fs::read_to_string(p).map_err(|e| {
                crate::error::usage(format!("splat_allowlist {}: {e}", p.display()))
            })?;
            scan::Allowlist::parse(&text)
                .map_err(|e| crate::error::usage(format!("{}: {e:#}", p.display())))
        }
    }
}

/// Accelerator for this host, probing KVM with the first kernel if needed.
pub fn accel(
    ctx: &Ctx,
    wanted: crate::config::Accel,
    kb: &KernelBuild,
    root: &RootImage,
) -> Result<AccelChoice> {
    let dummy = tempfile::tempdir()?;
    let spec = VmSpec {
        binary: ctx.cfg.qemu.binary.clone(),
        accel: qemu::Accel::Tcg,
        memory_mib: ctx.cfg.qemu.memory_mib,
        cpus: ctx.cfg.qemu.cpus,
        kernel: kb.built.bzimage.clone(),
        append: String::new(),
        root_image: root.image.clone(),
        disks: vec![],
        ktap_path: dummy.path().join("k"),
        out_path: dummy.path().join("o"),
    };
    let c = vm::choose_accel(wanted, &ctx.cache.probe(), &spec, &ctx.ui)?;
    ctx.ui.info(format!("accel: {:?} — {}", c.accel, c.reason));
    Ok(c)
}

/// A new run directory `target/runs/<id>` and the `latest` link to it.
/// Name of the lock file a run holds in its dir for as long as its
/// process lives (released by the kernel however the process ends):
/// `cargo xtask clean` leaves such dirs alone.
pub const ACTIVE_LOCK: &str = ".active";

static ACTIVE: std::sync::Mutex<Vec<fs::File>> = std::sync::Mutex::new(Vec::new());

/// Takes `dir/.active` (exclusive flock) for the rest of this process.
pub fn hold_active(dir: &Path) -> Result<()> {
    let p = dir.join(ACTIVE_LOCK);
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .with_context(|| format!("cannot create {}", p.display()))?;
    f.try_lock()
        .map_err(|e| anyhow::anyhow!("cannot lock {}: {e}", p.display()))?;
    if let Ok(mut v) = ACTIVE.lock() {
        v.push(f);
    }
    Ok(())
}

/// Whether some live process holds `dir/.active`.
pub fn is_active(dir: &Path) -> bool {
    let Ok(f) = fs::OpenOptions::new()
        .write(true)
        .open(dir.join(ACTIVE_LOCK))
    else {
        return false;
    };
    matches!(f.try_lock(), Err(fs::TryLockError::WouldBlock))
}

pub fn new_run_dir(root: &Path, tag: &str) -> Result<(String, PathBuf)> {
    let runs = root.join("target/runs");
    fs::create_dir_all(&runs).with_context(|| format!("cannot create {}", runs.display()))?;
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!("[year][month][day]-[hour][minute][second]");
    let stamp = now.format(&fmt).unwrap_or_else(|_| "run".into());
    let id = format!("{stamp}-{tag}-{}", std::process::id());
    let dir = runs.join(&id);
    fs::create_dir_all(&dir)?;
    hold_active(&dir)?;
    crate::proc::set_run_dir(&dir);
    let tmp_link = runs.join(format!(".latest-{}", std::process::id()));
    let _ = fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&id, &tmp_link)?;
    fs::rename(&tmp_link, runs.join("latest"))?;
    Ok((id, dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KTAP: &str = "KTAP version 1\n1..3\n# expect: patched\n# time_ms: 1\nnot ok 1 read/nonblocking@ext2\n# expect: patched\n# time_ms: 1\nok 2 read/batch@ext2\n# time_ms: 1\nok 3 read/warm@ext2\n";

    #[test]
    fn new_behaviour_split_on_unpatched() {
        let mut r = ktap::parse(KTAP);
        let v = apply_expectations(&mut r, &[Variant::Unpatched]);
        assert_eq!(v, [Verdict::XFail, Verdict::XPass, Verdict::Pass]);
        assert_eq!(r.tests[0].status, ktap::Status::Pass);
        assert_eq!(r.tests[1].status, ktap::Status::Fail);
        let (o, why) = exitcode::classify(&r, &[], &VmEnd::Exited, false);
        assert_eq!(o, Outcome::TestFailed, "{why}");
        assert!(why.contains("read/batch@ext2"), "{why}");
    }

    #[test]
    fn nearest_names() {
        let names: Vec<String> = [
            "read/nowait@ext2",
            "read/nowait@ext3",
            "write/eio@ext2",
            "soak/fsx@ext2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            nearest("read/nowiat*", &names),
            ["read/nowait@ext2", "read/nowait@ext3"]
        );
        assert_eq!(nearest("soak/fxs", &names), ["soak/fsx@ext2"]);
        assert_eq!(nearest("zzz", &names).len(), 4);
    }

    #[test]
    fn progress_lines() {
        assert_eq!(
            parse_progress("bufaio-progress: soak/fsx@ext2 1200/100000 ops 987 ops/s"),
            Some(("soak/fsx@ext2".to_string(), 1200, 987.0))
        );
        assert_eq!(
            parse_progress("[  3.1] x bufaio-progress: soak/fsx@ext3 5/9 ops 2 ops/s").map(|p| p.1),
            Some(5)
        );
        assert_eq!(parse_progress("bufaio-progress: soak/fsx@ext2 many"), None);
        assert_eq!(parse_progress("bufaio: ok 1 x"), None);
    }

    #[test]
    fn fsck_rows() {
        let ok = fsck_row(
            "host/fsck-slow@ext2",
            &FsckCheck::Ran {
                ok: true,
                text: "clean".into(),
            },
        );
        assert_eq!((ok.verdict, ok.diagnostic.as_str()), (Verdict::Pass, ""));
        let text =
            "Pass 2: Checking directory structure\nInode 2 ref count is 7, should be 3.  Fix? no\n";
        let bad = fsck_row(
            "host/fsck-tiny@ext3",
            &FsckCheck::Ran {
                ok: false,
                text: text.into(),
            },
        );
        assert_eq!(bad.verdict, Verdict::Fail);
        assert_eq!(bad.status, ktap::Status::Fail);
        assert_eq!(
            bad.diagnostic,
            "e2fsck -fn found errors:\nPass 2: Checking directory structure\nInode 2 ref count is 7, should be 3.  Fix? no"
        );
        let nc = fsck_row("host/fsck-slow@ext3", &FsckCheck::NotCopied);
        assert_eq!(nc.verdict, Verdict::Fail);
        assert!(
            nc.diagnostic.contains("did not copy the slow filesystem"),
            "{}",
            nc.diagnostic
        );
        assert_eq!(nc.name, "host/fsck-slow@ext3");
    }

    #[test]
    fn todo_failures_are_reported_not_fatal() {
        let text = "KTAP version 1\n1..2\n# expect: patched\n# time_ms: 1\nnot ok 1 read/meta@ext3 # TODO needs async indirect blocks\n# time_ms: 1\nok 2 read/x@ext3\n";
        let mut r = ktap::parse(text);
        let v = apply_expectations(&mut r, &[Variant::Patched]);
        assert_eq!(v, [Verdict::Todo, Verdict::Pass]);
        let (o, _) = exitcode::classify(&r, &[], &VmEnd::Exited, false);
        assert_eq!(o, Outcome::Pass);
    }

    #[test]
    fn patched_and_shared_builds_must_pass_new_tests() {
        for vs in [
            vec![Variant::Patched],
            vec![Variant::Unpatched, Variant::Patched],
        ] {
            let mut r = ktap::parse(KTAP);
            let v = apply_expectations(&mut r, &vs);
            assert_eq!(v, [Verdict::Fail, Verdict::Pass, Verdict::Pass]);
            let (o, _) = exitcode::classify(&r, &[], &VmEnd::Exited, false);
            assert_eq!(o, Outcome::TestFailed);
        }
    }
}
