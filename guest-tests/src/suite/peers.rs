//! libaio's own test harness (issue 14), built by the host (xtask
//! `peers.rs`) into the root image under `/opt/libaio`: `cases.txt` lists
//! the cases, `wait/N` is every case with `sync_submit()` waiting for its
//! event (`io_getevents(min_nr = 1)`), `asis/N` the cases that use
//! `sync_submit()` as shipped (`min_nr = 0`: the event must already be
//! there when `io_submit()` returns).
//!
//! - `soak/libaio@fs`: every case, waiting: correctness only; both kernels
//!   must pass.
//! - `soak/libaio_inline@fs`: the `sync_submit()` cases as shipped. A case
//!   that fails as shipped but passes waiting, with no device read during
//!   it (`/proc/diskstats`), means a request that needed no device IO did
//!   not complete inside `io_submit()`: a fast-path regression (fails the
//!   test). With device reads (10.t on a freshly mounted filesystem reads
//!   its block bitmap) the request completed later because it waited for
//!   the device: what the series is for (reported, passes).
//!
//! Each case runs as upstream's `make partcheck` runs it: in a fresh
//! directory with `testdir/{rofile,wofile,rwfile}` (modes 0400, 0200,
//! 0600), `testdir.ext2/` for 8.t (the limit it probes is this
//! filesystem's) and, for 10.t, `testdir.enospc/` with the host's ENOSPC
//! image (label `bufaio-enospc`, exactly 17 free 4 KiB blocks) mounted on
//! it. Exit 0 passes, 3 skips, anything else fails.
//!
//! Without `bufaio.soak_ops`/`bufaio.soak_secs` (the normal suite) the
//! cases that take over 2 s under TCG are skipped by name; `cargo xtask
//! soak` runs them all.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::write_limits::find_disk_by_label;
use super::{Ctx, Stop, TestResult};
use crate::cmdline;
use crate::sys;

const DIR: &str = "/opt/libaio";

/// Keep in sync with xtask `peers::ENOSPC_LABEL`.
const ENOSPC_LABEL: &str = "bufaio-enospc";

/// Cases the normal suite skips (seconds under TCG, 2 vCPUs): 6 (huge
/// reads and writes: needs 768 MiB free), 11 (12 s), 14 (3 s), 18 (100
/// threads x 1,000 io_setup/io_destroy: 37 s), 20 (aio-max-nr contexts:
/// 16 s).
const HEAVY: &[u32] = &[6, 11, 14, 18, 20];

/// What 6.t writes and reads back: 768 MiB.
const CASE6_BYTES: u64 = 768 << 20;

/// Per-case limit.
const CASE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Case {
    number: u32,
    sync: bool,
}

fn parse_manifest(text: &str) -> Result<Vec<Case>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let bad = || format!("{DIR}/cases.txt:{}: {l:?}", i + 1);
        let (n, kind) = l.split_once(' ').ok_or_else(bad)?;
        out.push(Case {
            number: n.parse().map_err(|_| bad())?,
            sync: match kind {
                "sync" => true,
                "plain" => false,
                _ => return Err(bad()),
            },
        });
    }
    Ok(out)
}

fn manifest() -> Result<(String, Vec<Case>), Stop> {
    let path = Path::new(DIR).join("cases.txt");
    let text = fs::read_to_string(&path).map_err(|e| {
        Stop::Skip(format!(
            "{}: {e}: the libaio harness is not in the root image (the host needs libaio-dev and the libaio source: see the run's warnings)",
            path.display()
        ))
    })?;
    let version = text
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("# ")
        .to_string();
    Ok((version, parse_manifest(&text).map_err(Stop::Fail)?))
}

fn full_run() -> bool {
    let text = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    cmdline::parse(&text)
        .map(|c| c.soak.ops.is_some() || c.soak.secs.is_some())
        .unwrap_or(false)
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Pass,
    Skip(String),
    Fail(String),
}

/// Why a case is not run here, if it is not.
fn not_here(ctx: &Ctx, case: u32, full: bool) -> Option<String> {
    if !full && HEAVY.contains(&case) {
        return Some("heavy: `cargo xtask soak` runs it".into());
    }
    let fs_ = ctx.fs.as_deref().unwrap_or("");
    if case == 10 && fs_ != "ext2" {
        return Some("its ENOSPC image is ext2 (as upstream's): runs in the @ext2 instance".into());
    }
    if case == 6 {
        if let Ok(f) = fs::File::open(&ctx.dir) {
            if let Ok((bsize, bfree, _)) = sys::fstatvfs(&f) {
                let free = bsize * bfree;
                if free < CASE6_BYTES + (CASE6_BYTES >> 4) {
                    return Some(format!(
                        "writes 768 MiB; this filesystem has {} MiB free",
                        free >> 20
                    ));
                }
            }
        }
    }
    None
}

/// Upstream's `testdir` files, fresh.
fn prepare(dir: &Path) -> Result<(), String> {
    let td = dir.join("testdir");
    let _ = fs::remove_dir_all(&td);
    fs::create_dir_all(&td).map_err(|e| format!("mkdir {}: {e}", td.display()))?;
    for (name, mode) in [("rofile", 0o400), ("wofile", 0o200), ("rwfile", 0o600)] {
        let p = td.join(name);
        fs::write(&p, "test\n").map_err(|e| format!("{}: {e}", p.display()))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
            .map_err(|e| format!("chmod {}: {e}", p.display()))?;
    }
    for d in ["testdir.ext2", "testdir.enospc"] {
        fs::create_dir_all(dir.join(d)).map_err(|e| format!("mkdir {d}: {e}"))?;
    }
    Ok(())
}

/// The ENOSPC image mounted on `testdir.enospc` for 10.t.
struct Enospc(PathBuf);

impl Enospc {
    fn mount(dir: &Path) -> Result<Enospc, String> {
        let dev = find_disk_by_label(ENOSPC_LABEL)?.ok_or_else(|| {
            format!("no disk labelled {ENOSPC_LABEL} (the host adds one with the harness)")
        })?;
        let mnt = dir.join("testdir.enospc");
        let d = dev.to_string_lossy().into_owned();
        sys::mount(&d, &mnt, "ext2", 0)
            .map_err(|e| format!("mount {d} on {}: {e}", mnt.display()))?;
        Ok(Enospc(mnt))
    }
}

impl Drop for Enospc {
    fn drop(&mut self) {
        if let Err(e) = sys::umount(&self.0) {
            println!("warning: umount {}: {e}", self.0.display());
        }
    }
}

/// Runs `bin` in `dir`; its output goes to stdout (the test's diagnostics)
/// only when it does not pass.
fn run_case(ctx: &Ctx, case: u32, bin: &Path) -> Result<(Outcome, Duration), String> {
    prepare(&ctx.dir)?;
    let _enospc = if case == 10 {
        Some(Enospc::mount(&ctx.dir)?)
    } else {
        None
    };
    let t0 = Instant::now();
    // chdir ourselves: Command::current_dir takes std's fork path, which
    // fails on the tinyconfig kernel (see exec.rs); posix_spawn works.
    std::env::set_current_dir(&ctx.dir).map_err(|e| format!("chdir {}: {e}", ctx.dir.display()))?;
    let spawned = Command::new(bin)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let _ = std::env::set_current_dir("/");
    let mut child = spawned.map_err(|e| format!("{}: {e}", bin.display()))?;
    let mut out = child.stdout.take().ok_or("no stdout pipe")?;
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| format!("wait: {e}"))? {
            break Some(st);
        }
        if t0.elapsed() > CASE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = t0.elapsed();
    let text = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    // The first lines show where a case went wrong (a late completion
    // shifts every later result), the last ones how it ended.
    let tail = || {
        let lines: Vec<&str> = text.lines().collect();
        let pick: Vec<&str> = if lines.len() > 24 {
            let mut v = lines[..14].to_vec();
            v.push("…");
            v.extend_from_slice(&lines[lines.len() - 8..]);
            v
        } else {
            lines
        };
        pick.iter()
            .map(|l| format!("    | {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let outcome = match status {
        None => Outcome::Fail(format!(
            "timed out after {} s\n{}",
            CASE_TIMEOUT.as_secs(),
            tail()
        )),
        Some(st) => match st.code() {
            Some(0) => Outcome::Pass,
            Some(3) => Outcome::Skip(text.lines().last().unwrap_or("").to_string()),
            Some(c) => Outcome::Fail(format!("exit {c}\n{}", tail())),
            None => Outcome::Fail(format!("{st}\n{}", tail())),
        },
    };
    Ok((outcome, took))
}

/// Reads completed by the virtio disks and null_blk devices
/// (`/proc/diskstats` field 4, summed): nothing else runs in the guest,
/// so a change across a case is device IO the case needed.
fn device_reads() -> u64 {
    parse_device_reads(&fs::read_to_string("/proc/diskstats").unwrap_or_default())
}

fn parse_device_reads(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = f.get(2)?;
            let whole = (name.starts_with("vd")
                && !name[2..].contains(|c: char| c.is_ascii_digit()))
                || (name.starts_with("nullb") && !name.contains('p'));
            if whole {
                f.get(3)?.parse::<u64>().ok()
            } else {
                None
            }
        })
        .sum()
}

fn require(ctx: &Ctx) -> Result<(), Stop> {
    if !(ctx.guest && ctx.root) {
        return Err(Stop::Skip(
            "runs the root image's libaio harness in the guest".into(),
        ));
    }
    Ok(())
}

fn header(ctx: &Ctx, test: &str, version: &str, n: usize) -> String {
    let name = format!("{test}@{}", ctx.fs.as_deref().unwrap_or("host"));
    println!("soak: test={name} seed=- ops_target={n} profiles=- harness={version:?}");
    name
}

fn footer(done: usize, t: Duration) {
    println!(
        "soak: seed=- ops={done} ops_per_s={:.2} elapsed_ms={}",
        done as f64 / t.as_secs_f64().max(0.001),
        t.as_millis()
    );
}

/// soak/libaio: every case with `sync_submit()` waiting for its event.
pub fn libaio(ctx: &Ctx) -> TestResult {
    require(ctx)?;
    let (version, cases) = manifest()?;
    let full = full_run();
    header(ctx, "soak/libaio", &version, cases.len());
    let t0 = Instant::now();
    let (mut done, mut failed) = (0, Vec::new());
    for c in &cases {
        if let Some(why) = not_here(ctx, c.number, full) {
            println!("case {}: not run ({why})", c.number);
            continue;
        }
        let bin = Path::new(DIR).join("wait").join(c.number.to_string());
        let (o, took) = run_case(ctx, c.number, &bin)?;
        done += 1;
        match o {
            Outcome::Pass => println!("case {}: PASSED ({:.2} s)", c.number, took.as_secs_f64()),
            Outcome::Skip(why) => println!("case {}: SKIPPED by the case: {why}", c.number),
            Outcome::Fail(why) => {
                println!(
                    "case {}: FAILED ({:.2} s): {why}",
                    c.number,
                    took.as_secs_f64()
                );
                failed.push(c.number);
            }
        }
    }
    footer(done, t0.elapsed());
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Stop::Fail(format!(
            "libaio harness (waiting sync_submit) failed cases {failed:?} of {done} run"
        )))
    }
}

/// soak/libaio_inline: the `sync_submit()` cases as shipped; a failure
/// that the waiting build does not have is a request that did not
/// complete inside `io_submit()`.
pub fn libaio_inline(ctx: &Ctx) -> TestResult {
    require(ctx)?;
    let (version, cases) = manifest()?;
    let full = full_run();
    let sync: Vec<&Case> = cases.iter().filter(|c| c.sync).collect();
    header(ctx, "soak/libaio_inline", &version, sync.len());
    let t0 = Instant::now();
    let (mut done, mut late, mut cold, mut broken) = (0, Vec::new(), Vec::new(), Vec::new());
    for c in sync {
        if let Some(why) = not_here(ctx, c.number, full) {
            println!("case {}: not run ({why})", c.number);
            continue;
        }
        let asis = Path::new(DIR).join("asis").join(c.number.to_string());
        let reads0 = device_reads();
        let (o, took) = run_case(ctx, c.number, &asis)?;
        let reads = device_reads() - reads0;
        done += 1;
        match o {
            Outcome::Pass => println!(
                "case {}: PASSED as shipped ({:.2} s)",
                c.number,
                took.as_secs_f64()
            ),
            Outcome::Skip(why) => println!("case {}: SKIPPED by the case: {why}", c.number),
            Outcome::Fail(why) => {
                let wait = Path::new(DIR).join("wait").join(c.number.to_string());
                let (w, _) = run_case(ctx, c.number, &wait)?;
                if w == Outcome::Pass && reads > 0 {
                    println!(
                        "case {}: FAILED as shipped, PASSED waiting, {reads} device reads during it: a request that needed device IO completed after io_submit() returned — the series' asynchrony, not a fast-path loss: {why}",
                        c.number
                    );
                    cold.push(c.number);
                } else if w == Outcome::Pass {
                    println!(
                        "case {}: FAILED as shipped, PASSED waiting, no device reads during it: a request that needed no device IO completed after io_submit() returned (io_getevents(min_nr = 0) found no event): {why}",
                        c.number
                    );
                    late.push(c.number);
                } else {
                    println!("case {}: FAILED as shipped and waiting: {why}", c.number);
                    broken.push(c.number);
                }
            }
        }
    }
    footer(done, t0.elapsed());
    if !cold.is_empty() {
        println!("cases {cold:?}: completed later after device IO (cold metadata or data): expected of the series");
    }
    let mut why = Vec::new();
    if !late.is_empty() {
        why.push(format!(
            "cases {late:?}: requests that need no device IO did not complete inside io_submit() (fast path lost)"
        ));
    }
    if !broken.is_empty() {
        why.push(format!(
            "cases {broken:?} fail even when waiting for the event (see soak/libaio)"
        ));
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(Stop::Fail(why.join("; ")))
    }
}

/// fio in the root image (host: xtask `peers::fio_files`).
const FIO_DIR: &str = "/opt/fio";

/// fio's job file for `soak/fio_verify` (issue 14 item 2): buffered
/// libaio (`direct=0`), every written block verified with crc32c
/// (`verify_backlog` re-reads them while the job still writes), block
/// sizes 512 B-1 MiB unaligned included, iodepth 1-64, several jobs on one
/// file (disjoint regions) and on separate files, `fsync_on_close`, an
/// `O_DSYNC` job. All jobs run at once. `mib` is the size of each job.
pub fn fio_verify_jobs(dir: &Path, mib: u64, seed: u64) -> String {
    let d = dir.display();
    format!(
        "[global]
ioengine=libaio
direct=0
thread
directory={d}
size={mib}m
verify=crc32c
verify_fatal=1
verify_backlog=32
randrepeat=0
randseed={seed}
group_reporting=0

[randwrite-4k-qd16]
rw=randwrite
bs=4k
iodepth=16

[seqwrite-unaligned-512-1m-qd8]
rw=write
bsrange=512-1m
bs_unaligned=1
iodepth=8

[randrw-mix-64k-qd32]
rw=randrw
rwmixread=50
bs=64k
iodepth=32

[dsync-8k-qd4]
rw=randwrite
bs=8k
sync=dsync
iodepth=4

[qd1-1m]
rw=randwrite
bs=1m
iodepth=1

[shared-file-16k-qd64]
filename=shared.dat
rw=randwrite
bs=16k
iodepth=64
numjobs=4
size={quarter}k
offset_increment={quarter}k
fsync_on_close=1
",
        quarter = mib * 1024 / 4
    )
}

/// The unsigned number after `"total_ios"` at the start of `s` (JSON
/// `: 123`), if there is one.
fn total_ios_value(s: &str) -> Option<u64> {
    let rest = s
        .strip_prefix("\"total_ios\"")?
        .trim_start()
        .strip_prefix(':')?;
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// `write`/`read` `total_ios` summed over the jobs of fio's JSON output.
fn fio_total_ios(json: &str) -> u64 {
    json.match_indices("\"total_ios\"")
        .filter_map(|(i, _)| total_ios_value(&json[i..]))
        .sum()
}

/// Jobs whose first (`read`) `total_ios` is 0: for a write-only job that
/// means fio verified nothing.
fn fio_unverified_jobs(json: &str) -> Vec<String> {
    let mut out = Vec::new();
    for chunk in json.split("\"jobname\"").skip(1) {
        let name: String = chunk
            .trim_start()
            .trim_start_matches(':')
            .trim_start()
            .trim_start_matches('"')
            .chars()
            .take_while(|&c| c != '"')
            .collect();
        let first = chunk
            .find("\"total_ios\"")
            .and_then(|i| total_ios_value(&chunk[i..]));
        if name.contains("write") && first == Some(0) {
            out.push(name);
        }
    }
    out
}

/// A dynamic host binary the host copied flat into the root image with its
/// libraries and the loader (xtask `peers::bundle`): SKIP when absent.
fn bundled(dir: &Path, exe: &str) -> Result<PathBuf, Stop> {
    let bin = dir.join(exe);
    if !bin.is_file() {
        return Err(Stop::Skip(format!(
            "{}: not in the root image (the host has no {exe}: cargo xtask deps --install)",
            bin.display()
        )));
    }
    Ok(bin)
}

/// `bin` started through the loader next to it (`--library-path` the
/// bundle, `--preload` a shim of the bundle's), or directly without one.
fn bundled_command(bin: &Path, preload: Option<&Path>) -> Command {
    let dir = bin.parent().unwrap_or(Path::new("/"));
    let loader = fs::read_dir(dir).ok().and_then(|rd| {
        rd.flatten().map(|e| e.path()).find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("ld-linux"))
        })
    });
    match loader {
        Some(l) => {
            let mut c = Command::new(l);
            c.arg("--library-path").arg(dir);
            if let Some(p) = preload.filter(|p| p.is_file()) {
                c.arg("--preload").arg(p);
            }
            c.arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

/// soak/fio_verify: fio's verify jobs on the filesystem; 0 verify errors.
pub fn fio_verify(ctx: &Ctx) -> TestResult {
    require(ctx)?;
    let fio = bundled(Path::new(FIO_DIR), "fio")?;
    let text = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let soak = cmdline::parse(&text).map(|c| c.soak).unwrap_or_default();
    let full = soak.ops.is_some() || soak.secs.is_some();
    // 6 files of `mib` on the 128 MiB test disk
    let mib = if full { 12 } else { 2 };
    let base = soak.seed.unwrap_or(0xB0FA10);
    let name = format!("soak/fio_verify@{}", ctx.fs.as_deref().unwrap_or("host"));
    let seed = crate::fsx::instance_seed(base, &name);
    println!(
        "soak: test={name} base_seed={base:#x} seed={seed:#x} ops_target={} profiles=- job_mib={mib}",
        soak.ops.map_or("-".to_string(), |n| n.to_string())
    );
    // Under `cargo xtask soak`, rounds with fresh seeds (files removed in
    // between) until the IO count reaches --ops or --duration is over.
    let t0 = Instant::now();
    let mut ios = 0;
    let mut round = 0u64;
    loop {
        let r = fio_round(ctx, &fio, mib, seed.wrapping_add(round));
        match r {
            Ok(n) => ios += n,
            Err(e) => {
                println!("fio: round {round} failed");
                footer_ios(seed, ios, t0.elapsed());
                return Err(e);
            }
        }
        round += 1;
        let more = match (soak.ops, soak.secs) {
            (_, Some(s)) => t0.elapsed() < Duration::from_secs(s),
            (Some(n), None) => ios < n,
            (None, None) => false,
        };
        if !more {
            break;
        }
    }
    footer_ios(seed, ios, t0.elapsed());
    println!("fio: {round} rounds; every write job read its blocks back (verify ran)");
    Ok(())
}

fn footer_ios(seed: u64, ios: u64, t: Duration) {
    println!(
        "soak: seed={seed:#x} ops={ios} ops_per_s={:.0} elapsed_ms={}",
        ios as f64 / t.as_secs_f64().max(0.001),
        t.as_millis()
    );
}

/// One run of the job file; the IOs fio reports.
fn fio_round(ctx: &Ctx, fio: &Path, mib: u64, seed: u64) -> Result<u64, Stop> {
    let work = ctx.path("fio");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| format!("mkdir {}: {e}", work.display()))?;
    let jobs = ctx.path("verify.fio");
    // fio parses randseed as a signed 64-bit number
    fs::write(&jobs, fio_verify_jobs(&work, mib, seed >> 1))
        .map_err(|e| format!("{}: {e}", jobs.display()))?;
    // No SysV IPC in the test kernel: fio's job table goes to anonymous
    // shared memory instead (xtask/src/bench/fio_shm_shim.c).
    let shim = Path::new(FIO_DIR).join("fio-shm-shim.so");
    let mut cmd = bundled_command(fio, Some(&shim));
    cmd.arg("--output-format=json").arg(&jobs);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run fio: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .chain(stdout.lines())
        .filter(|l| {
            l.contains("verify")
                && (l.contains("bad") || l.contains("fail") || l.contains("mismatch"))
        })
        .take(10)
        .collect();
    if !out.status.success() || !errors.is_empty() {
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        return Err(Stop::Fail(format!(
            "fio exited {}; verify errors: {}\n{}",
            out.status,
            if errors.is_empty() {
                "none reported".to_string()
            } else {
                errors.join("\n")
            },
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )));
    }
    let ios = fio_total_ios(&stdout);
    if ios == 0 {
        return Err(Stop::Fail(
            "fio reported no IO (no total_ios in its JSON)".into(),
        ));
    }
    let unverified = fio_unverified_jobs(&stdout);
    if !unverified.is_empty() {
        return Err(Stop::Fail(format!(
            "write jobs {unverified:?} read nothing back: fio verified nothing"
        )));
    }
    let _ = fs::remove_dir_all(&work);
    Ok(ios)
}

/// Free space below which soak/stress_ng_aio stops stress-ng (a round of
/// its 4 workers writes 4 x 64 x 4 KiB).
const STRESS_NG_MIN_FREE: u64 = 16 << 20;

/// stress-ng in the root image (host: xtask `peers::bundle`).
const STRESS_NG_DIR: &str = "/opt/stress-ng";

/// `bogo ops` of every stressor in stress-ng's `--metrics-brief` lines
/// (`stress-ng: metrc: [pid] aiol  14419  3.11 ...`), by stressor.
fn stress_ng_bogo_ops(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.split("metrc:").nth(1)?;
            let mut w = rest.split_whitespace().skip(1);
            let name = w.next()?;
            let ops = w.next()?.parse().ok()?;
            Some((name.to_string(), ops))
        })
        .collect()
}

/// soak/stress_ng_aio: stress-ng's `aio` (POSIX AIO, glibc's threads
/// doing buffered pread/pwrite) and `aiol` (Linux native AIO:
/// io_submit of buffered reads and writes, the series' path) stressors,
/// two instances each, `--verify` on, in a directory of the filesystem,
/// with O_DIRECT cleared by a preload shim (aiol asks for it). A data
/// mismatch (`unexpected data mismatch`, which stress-ng itself only logs)
/// fails the test. 3 s in `run`; under `cargo xtask soak`, `--duration` or 60 s.
pub fn stress_ng_aio(ctx: &Ctx) -> TestResult {
    require(ctx)?;
    let dir = Path::new(STRESS_NG_DIR);
    let bin = bundled(dir, "stress-ng")?;
    let text = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let soak = cmdline::parse(&text).map(|c| c.soak).unwrap_or_default();
    let secs = match (soak.secs, soak.ops) {
        (Some(s), _) => s,
        (None, Some(_)) => 60,
        (None, None) => 3,
    };
    let name = format!("soak/stress_ng_aio@{}", ctx.fs.as_deref().unwrap_or("host"));
    println!("soak: test={name} seed=- ops_target=- profiles=- secs={secs}");
    let work = ctx.path("stress");
    fs::create_dir_all(&work).map_err(|e| format!("mkdir {}: {e}", work.display()))?;
    // aiol opens its file O_DIRECT (ext2/ext3 accept it): the host's shim
    // clears O_DIRECT so the stressor takes the buffered path.
    let shim = dir.join("buffered-shim.so");
    if !shim.is_file() {
        return Err(Stop::Fail(format!(
            "{}: missing: aiol would run O_DIRECT, not buffered",
            shim.display()
        )));
    }
    // Rounds (each one new stress-ng, its files removed at its exit) until
    // `secs` are spent: a round ends early when the filesystem nears full.
    let t_all = Instant::now();
    let mut ops: Vec<(String, u64)> = Vec::new();
    let mut rounds = 0;
    loop {
        let left = Duration::from_secs(secs).saturating_sub(t_all.elapsed());
        let round_secs = left.as_secs().max(1);
        let mut cmd = bundled_command(&bin, Some(&shim));
        cmd.args([
            "--aio",
            "2",
            "--aio-requests",
            "16",
            "--aiol",
            "2",
            "--aiol-requests",
            "64",
        ])
        .args(["--verify", "--metrics-brief", "--timeout"])
        .arg(format!("{round_secs}s"))
        .arg("--temp-path")
        .arg(&work)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        // aiol writes 64 blocks at a random offset below 256 MiB per round and
        // checks what it reads back without looking at the writes' results:
        // once the filesystem is full, an ENOSPC write reads back as a hole
        // and stress-ng logs a false "data mismatch". Stop it (SIGINT: it
        // stops and prints its metrics) before the space runs out.
        let t0 = Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run stress-ng: {e}"))?;
        let pid = child.id() as libc::pid_t;
        let dirfd = fs::File::open(&work).map_err(|e| format!("{}: {e}", work.display()))?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || -> Option<u64> {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok((bsize, bfree, _)) = sys::fstatvfs(&dirfd) {
                        if bsize * bfree < STRESS_NG_MIN_FREE {
                            // SAFETY: kill(2) on our own child.
                            unsafe { libc::kill(pid, libc::SIGINT) };
                            return Some(bsize * bfree);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                None
            })
        };
        let out = child.wait_with_output();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let stopped_full = watcher.join().unwrap_or(None);
        let out = out.map_err(|e| format!("stress-ng: {e}"))?;
        let t = t0.elapsed();
        if let Some(free) = stopped_full {
            println!(
                "stress-ng: stopped after {:.1} s with {} KiB free (before ENOSPC)",
                t.as_secs_f64(),
                free >> 10
            );
        }
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        rounds += 1;
        let round_ops = stress_ng_bogo_ops(&all);
        let bad: Vec<&str> = all
            .lines()
            .filter(|l| l.contains("fail:") || l.contains("error:") || l.contains("unexpected"))
            .take(12)
            .collect();
        if !out.status.success() || !bad.is_empty() {
            return Err(Stop::Fail(format!(
                "stress-ng round {rounds} exited {}:\n{}",
                out.status,
                if bad.is_empty() {
                    all.lines().rev().take(12).collect::<Vec<_>>().join("\n")
                } else {
                    bad.join("\n")
                }
            )));
        }
        for want in ["aio", "aiol"] {
            if !round_ops.iter().any(|(k, n)| k == want && *n > 0) {
                return Err(Stop::Fail(format!(
                    "stress-ng round {rounds} reported no {want} bogo ops:\n{all}"
                )));
            }
        }
        for (k, n) in round_ops {
            match ops.iter_mut().find(|(q, _)| *q == k) {
                Some(e) => e.1 += n,
                None => ops.push((k, n)),
            }
        }
        if t_all.elapsed() + Duration::from_secs(1) >= Duration::from_secs(secs) {
            break;
        }
    }
    let t = t_all.elapsed();
    let total: u64 = ops.iter().map(|(_, n)| n).sum();
    for (k, n) in &ops {
        println!("stress-ng: {k}: {n} bogo ops");
    }
    println!("stress-ng: {rounds} rounds");
    println!(
        "soak: seed=- ops={total} ops_per_s={:.0} elapsed_ms={}",
        total as f64 / t.as_secs_f64().max(0.001),
        t.as_millis()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_parses_and_names_bad_lines() {
        let m = parse_manifest("# libaio 0.3.113-4 harness\n2 plain\n10 sync\n").unwrap();
        assert_eq!(
            m,
            vec![
                Case {
                    number: 2,
                    sync: false
                },
                Case {
                    number: 10,
                    sync: true
                }
            ]
        );
        let e = parse_manifest("2 plain\n3 odd\n").unwrap_err();
        assert!(e.contains("cases.txt:2"), "{e}");
    }

    #[test]
    fn fio_jobs_and_ios() {
        let j = fio_verify_jobs(Path::new("/mnt/ext2/x"), 2, 7);
        assert!(j.contains("directory=/mnt/ext2/x") && j.contains("verify=crc32c"));
        assert!(j.contains("size=512k\noffset_increment=512k"), "{j}");
        let json = r#"{"jobs":[{"read":{"total_ios" : 3},"write":{"total_ios":40}},{"write":{"total_ios":2}}]}"#;
        assert_eq!(fio_total_ios(json), 45);
        let json = r#"{"jobs":[{"jobname" : "randwrite-4k","read":{"total_ios":3},"write":{"total_ios":40}},{"jobname":"qd1-write","read":{"total_ios":0},"write":{"total_ios":2}},{"jobname":"randrw","read":{"total_ios":0}}]}"#;
        assert_eq!(fio_unverified_jobs(json), ["qd1-write"]);
    }

    #[test]
    fn stress_ng_metrics() {
        let t = "stress-ng: metrc: [11949] stressor       bogo ops real time  usr time\nstress-ng: metrc: [11949]                           (secs)    (secs)\nstress-ng: metrc: [11949] aiol              14419      3.11      0.49\nstress-ng: metrc: [11931] aio              155236      3.00      0.14\n";
        assert_eq!(
            stress_ng_bogo_ops(t),
            [("aiol".to_string(), 14419), ("aio".to_string(), 155236)]
        );
    }

    #[test]
    fn device_reads_sum_whole_disks_only() {
        let t = " 254       0 vda 100 0 800 10 0 0 0 0 0 10 10 0 0 0 0\n 254       1 vda1 90 0 700 10 0 0 0 0 0 10 10 0 0 0 0\n 254      16 vdb 7 0 56 1 3 0 24 1 0 2 2 0 0 0 0\n 252       0 nullb0 5 0 40 0 0 0 0 0 0 0 0 0 0 0 0\n   7       0 loop0 9 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        assert_eq!(parse_device_reads(t), 112);
    }
}
