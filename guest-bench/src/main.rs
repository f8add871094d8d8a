//! bufaio guest benchmark. Runs inside the test VM (via `cargo xtask exec`
//! or `cargo xtask bench`), or on any Linux machine with `--dir`.
//! Prints one JSON object per line on stdout (see README.md); progress goes
//! to stderr.

mod engines;
mod fio;
mod point;
mod prng;
mod stats;
mod sys;

use bufaio_contract::aiostats;
use bufaio_contract::bench::Line;
use engines::{Engine, Io, Op};
use serde_json::json;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

const USAGE: &str =
    "usage: guest-bench [--fs ext2,ext3 | --dir DIR [--dev NAME]] [--full] [--qd 1,8,32]
  [--engines sync,pool,aio,uring] [--workloads rand4k,seq1m,warm4k,write4k,write4k-dsync]
  [--reads N] [--warm-reads N] [--writes N] [--write-qd 1,32] [--file-mib M] [--seed S] [--seq-qd N] [--fio-dir DIR] [--fio-only] [--no-drop] [--fadv-random]";

const WORKLOADS: [&str; 5] = ["rand4k", "seq1m", "warm4k", "write4k", "write4k-dsync"];

/// Set from --fadv-random before any point runs.
static FADV_RANDOM: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[derive(Debug, Clone)]
pub struct Opts {
    fs: Vec<String>,
    dir: Option<PathBuf>,
    dev: String,
    qds: Vec<usize>,
    engines: Vec<Engine>,
    workloads: Vec<String>,
    reads: usize,
    warm_reads: usize,
    /// Writes per point of the write workloads.
    writes: usize,
    /// Queue depths of the write workloads.
    write_qds: Vec<usize>,
    file_mib: u64,
    seed: u64,
    seq_qd: usize,
    fio_dir: Option<PathBuf>,
    fio_only: bool,
    drop: bool,
    /// POSIX_FADV_RANDOM on every benchmark fd (what fio does for random
    /// workloads by default: fadvise_hint=1).
    fadv_random: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            fs: vec!["ext2".into(), "ext3".into()],
            dir: None,
            dev: String::new(),
            qds: vec![1, 8, 32],
            engines: Engine::ALL.to_vec(),
            workloads: WORKLOADS.iter().map(|w| w.to_string()).collect(),
            reads: 2000,
            warm_reads: 100000,
            writes: 1000,
            write_qds: vec![1, 32],
            file_mib: 128,
            seed: 0x6275_6661_696f,
            seq_qd: 1,
            fio_dir: None,
            fio_only: false,
            drop: true,
            fadv_random: false,
        }
    }
}

fn list<T>(v: &str, f: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, String> {
    v.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| f(s).ok_or_else(|| format!("bad list item {s:?}")))
        .collect()
}

pub fn parse_args(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        let num = |s: String| {
            s.parse::<u64>()
                .map_err(|_| format!("{a}: not a number: {s}"))
        };
        match a.as_str() {
            "--fs" => o.fs = list(&val()?, |s| Some(s.to_string()))?,
            "--dir" => o.dir = Some(PathBuf::from(val()?)),
            "--dev" => o.dev = val()?,
            "--full" => o.qds = vec![1, 2, 4, 8, 16, 32, 64],
            "--qd" => o.qds = list(&val()?, |s| s.parse().ok().filter(|&q: &usize| q > 0))?,
            "--engines" => o.engines = list(&val()?, Engine::parse)?,
            "--workloads" => {
                o.workloads = list(&val()?, |s| WORKLOADS.contains(&s).then(|| s.to_string()))?
            }
            "--reads" => o.reads = num(val()?)? as usize,
            "--warm-reads" => o.warm_reads = num(val()?)? as usize,
            "--writes" => o.writes = num(val()?)? as usize,
            "--write-qd" => {
                o.write_qds = list(&val()?, |s| s.parse().ok().filter(|&q: &usize| q > 0))?
            }
            "--file-mib" => o.file_mib = num(val()?)?.max(1),
            "--seed" => o.seed = num(val()?)?,
            "--seq-qd" => o.seq_qd = num(val()?)?.max(1) as usize,
            "--fio-dir" => o.fio_dir = Some(PathBuf::from(val()?)),
            "--fio-only" => o.fio_only = true,
            "--no-drop" => o.drop = false,
            "--fadv-random" => o.fadv_random = true,
            "--help" | "-h" => return Err(USAGE.into()),
            _ => return Err(format!("unknown argument {a}\n{USAGE}")),
        }
    }
    Ok(o)
}

/// A filesystem with the benchmark file on it.
struct Target {
    label: String,
    dir: PathBuf,
    /// Block device whose /sys/block/DEV/stat counts the reads ("" = none).
    dev: String,
    file: PathBuf,
    size: u64,
}

/// Where each label's fresh image comes from and where its slow copy goes
/// (guest-tests/README.md section 4; null_blk on the kernel command line).
fn slow_layout(label: &str) -> Option<(&'static str, &'static str, &'static str)> {
    match label {
        "ext2" => Some(("/dev/vdb", "nullb0", "ext2")),
        "ext3" => Some(("/dev/vdc", "nullb1", "ext3")),
        _ => None,
    }
}

fn out(v: &impl serde::Serialize) {
    let mut so = std::io::stdout().lock();
    let _ = writeln!(so, "{}", serde_json::to_string(v).unwrap_or_default());
    let _ = so.flush();
}

fn log(s: &str) {
    eprintln!("guest-bench: {s}");
}

fn sectors(dev: &str) -> Result<u64, String> {
    let p = format!("/sys/block/{dev}/size");
    std::fs::read_to_string(&p)
        .map_err(|e| format!("{p}: {e}"))?
        .trim()
        .parse::<u64>()
        .map_err(|e| format!("{p}: {e}"))
}

/// Raw copy of a freshly made, idle test disk onto the null_blk device
/// (all-zero chunks skipped: the memory-backed device reads as zeros).
fn copy_disk(src: &str, dst_dev: &str) -> Result<u64, String> {
    use std::os::unix::fs::FileExt;
    let size = sectors(src.trim_start_matches("/dev/"))? * 512;
    let room = sectors(dst_dev)? * 512;
    if room < size {
        return Err(format!(
            "/dev/{dst_dev} ({room} B) is smaller than {src} ({size} B)"
        ));
    }
    let s = File::open(src).map_err(|e| format!("open {src}: {e}"))?;
    let d = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/{dst_dev}"))
        .map_err(|e| format!("open /dev/{dst_dev}: {e}"))?;
    let mut buf = vec![0u8; 4 << 20];
    let mut off = 0u64;
    let mut written = 0u64;
    while off < size {
        let n = (size - off).min(buf.len() as u64) as usize;
        s.read_exact_at(&mut buf[..n], off)
            .map_err(|e| format!("read {src} at {off}: {e}"))?;
        if buf[..n].iter().any(|&b| b != 0) {
            d.write_all_at(&buf[..n], off)
                .map_err(|e| format!("write /dev/{dst_dev} at {off}: {e}"))?;
            written += n as u64;
        }
        off += n as u64;
    }
    d.sync_all()
        .map_err(|e| format!("fsync /dev/{dst_dev}: {e}"))?;
    Ok(written)
}

fn make_file(path: &Path, mib: u64, seed: u64) -> Result<(), String> {
    let mut f = File::create(path).map_err(|e| format!("create {}: {e}", path.display()))?;
    let mut r = prng::SplitMix64::new(seed ^ 0xf11e);
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for c in buf.chunks_mut(8) {
            c.copy_from_slice(&r.next_u64().to_le_bytes());
        }
        f.write_all(&buf)
            .map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    f.sync_all()
        .map_err(|e| format!("fsync {}: {e}", path.display()))
}

fn setup(o: &Opts) -> Result<Vec<Target>, String> {
    let size = o.file_mib << 20;
    if let Some(d) = &o.dir {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        let file = d.join("bench.dat");
        if std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) != size {
            make_file(&file, o.file_mib, o.seed)?;
        }
        return Ok(vec![Target {
            label: "dir".into(),
            dir: d.clone(),
            dev: o.dev.clone(),
            file,
            size,
        }]);
    }
    let mut v = Vec::new();
    for label in &o.fs {
        let (src, dev, fstype) =
            slow_layout(label).ok_or_else(|| format!("unknown filesystem {label}"))?;
        let t0 = Instant::now();
        // Whatever PID 1 wrote when mounting the test disk reaches it first.
        // SAFETY: no arguments.
        unsafe { libc::sync() };
        let copied = copy_disk(src, dev)?;
        let dir = PathBuf::from(format!("/mnt/bench-{label}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        sys::mount(&format!("/dev/{dev}"), &dir, fstype)
            .map_err(|e| format!("mount /dev/{dev} on {} ({fstype}): {e}", dir.display()))?;
        let file = dir.join("bench.dat");
        make_file(&file, o.file_mib, o.seed)?;
        let bsz = sys::block_size(&dir);
        log(&format!(
            "{label}: {src} copied to /dev/{dev} ({} MiB non-zero), mounted on {}, {} MiB file, block size {bsz}, {} ms",
            copied >> 20,
            dir.display(),
            o.file_mib,
            t0.elapsed().as_millis()
        ));
        out(
            &json!({"kind": "fs", "fs": label, "dev": dev, "fstype": fstype, "source": src,
            "block_size": bsz, "file_mib": o.file_mib, "setup_ms": t0.elapsed().as_millis() as u64}),
        );
        v.push(Target {
            label: label.clone(),
            dir,
            dev: dev.into(),
            file,
            size,
        });
    }
    Ok(v)
}

fn cold(o: &Opts) {
    if o.drop {
        if let Err(e) = sys::drop_caches() {
            log(&format!("drop_caches: {e}"));
        }
    }
}

/// How a point opens the file: read-only, or for writing (optionally O_DSYNC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Read,
    Write,
    WriteDsync,
}

impl Mode {
    fn op(self) -> Op {
        match self {
            Mode::Read => Op::Read,
            Mode::Write | Mode::WriteDsync => Op::Write,
        }
    }

    fn open(self, p: &Path) -> std::io::Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut o = std::fs::OpenOptions::new();
        match self {
            Mode::Read => o.read(true),
            Mode::Write => o.write(true),
            Mode::WriteDsync => o.write(true).custom_flags(libc::O_DSYNC),
        };
        o.open(p)
    }
}

/// The write workloads' requests: `count` distinct 4 KiB blocks of the
/// preallocated file in random order (fixed seed, not the reads' offsets);
/// even-numbered requests overwrite the whole block (4096 B, aligned, so
/// nothing has to be read), odd-numbered ones write 512 B at a 512-aligned
/// offset 512…3584 inside the block, so the old block has to be read
/// first (the file is cold).
fn write_ios(seed: u64, blocks: u64, count: usize) -> Vec<Io> {
    prng::distinct_blocks(seed ^ 0x0077_7269_7465, blocks, count)
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            if i % 2 == 0 {
                Io {
                    off: b * 4096,
                    len: 4096,
                }
            } else {
                Io {
                    off: b * 4096 + 512 * (1 + b % 7),
                    len: 512,
                }
            }
        })
        .collect()
}

/// One engine × QD point: open, run, close, print.
fn point(t: &Target, workload: &str, e: Engine, qd: usize, mode: Mode, ios: &[Io]) -> u64 {
    let bs = ios.iter().map(|i| i.len).max().unwrap_or(0);
    let f = match mode.open(&t.file) {
        Ok(f) => f,
        Err(err) => {
            log(&format!("open {}: {err}", t.file.display()));
            return 1;
        }
    };
    if FADV_RANDOM.load(std::sync::atomic::Ordering::Relaxed) {
        // SAFETY: plain syscall on an fd we own.
        let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
        if r != 0 {
            log(&format!("posix_fadvise(RANDOM): error {r}"));
        }
    }
    let raw = match engines::run(e, mode.op(), f.as_raw_fd(), ios, qd, &t.dev) {
        Ok(r) => r,
        Err(err) => {
            out(
                &json!({"kind": "error", "fs": t.label, "workload": workload,
                "engine": e.name(), "qd": qd, "error": err.to_string()}),
            );
            return 1;
        }
    };
    let p = point::build(
        &point::Meta {
            fs: &t.label,
            workload,
            engine: e.name(),
            qd,
            bs,
        },
        raw,
    );
    log(&format!(
        "{} {workload} {} qd{qd}: {:.0} IOPS, submit p99 {} us, {:.2} ctx/IO, {:.2} sys ctx/IO, {:.2} dev reads/IO, {:.2} dev writes/IO{}",
        t.label,
        e.name(),
        p.iops,
        p.submit.map(|s| format!("{:.0}", s.p99_us)).unwrap_or("-".into()),
        p.ctx_per_io,
        p.sys_ctx_per_io,
        p.dev_reads_per_io,
        p.dev_writes_per_io,
        p.aio_stats
            .as_ref()
            .map(|m| {
                let nz: Vec<String> = m
                    .iter()
                    .filter(|(_, v)| **v != 0)
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                format!(", aio/stats: {}", nz.join(" "))
            })
            .unwrap_or_default()
    ));
    let errs = p.errors;
    out(&Line::point(&p));
    errs
}

/// (engine, qd) pairs of a sweep: sync only at QD 1.
fn plan(engines: &[Engine], qds: &[usize]) -> Vec<(Engine, usize)> {
    let mut v = Vec::new();
    for &e in engines {
        if e == Engine::Sync {
            v.push((e, 1));
            continue;
        }
        for &q in qds {
            v.push((e, q));
        }
    }
    v
}

fn run(o: &Opts) -> Result<u64, String> {
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname fills the struct we own.
    unsafe { libc::uname(&mut uts) };
    let release = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    let clocksource =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
    if clocksource.contains("jiffies") {
        log("WARNING: clocksource is jiffies: times and the null_blk timer are quantised to the tick");
    }
    if o.dir.is_none() {
        mount_debugfs();
    }
    let aio_stats_available = match aiostats::read_at(Path::new(aiostats::DEBUGFS)) {
        Ok(s) => s.is_some(),
        Err(e) => {
            log(&format!("aio/stats: {e}"));
            false
        }
    };
    let lat_ns = std::fs::read_to_string("/sys/module/null_blk/parameters/completion_nsec")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    out(
        &json!({"kind": "env", "kernel": release, "device_latency_ns": lat_ns,
        "clocksource": clocksource, "fadv_random": o.fadv_random, "online_cpus": online_cpus(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "reads": o.reads, "warm_reads": o.warm_reads, "writes": o.writes,
        "write_qds": o.write_qds, "aio_stats": aio_stats_available,
        "file_mib": o.file_mib, "seed": o.seed,
        "qds": o.qds, "engines": o.engines.iter().map(|e| e.name()).collect::<Vec<_>>(),
        "workloads": o.workloads}),
    );
    let targets = setup(o)?;
    let mut errors = 0;
    for t in &targets {
        let pages = t.size / 4096;
        if !o.fio_only {
            for w in &o.workloads {
                match w.as_str() {
                    "rand4k" => {
                        let offs: Vec<u64> = prng::distinct_blocks(o.seed, pages, o.reads)
                            .into_iter()
                            .map(|b| b * 4096)
                            .collect();
                        let ios = engines::fixed(&offs, 4096);
                        for (e, qd) in plan(&o.engines, &o.qds) {
                            cold(o);
                            errors += point(t, w, e, qd, Mode::Read, &ios);
                        }
                    }
                    "seq1m" => {
                        let offs: Vec<u64> = (0..t.size >> 20).map(|i| i << 20).collect();
                        let ios = engines::fixed(&offs, 1 << 20);
                        for &e in &o.engines {
                            let qd = if e == Engine::Sync { 1 } else { o.seq_qd };
                            cold(o);
                            errors += point(t, w, e, qd, Mode::Read, &ios);
                        }
                    }
                    "warm4k" => {
                        let offs: Vec<u64> = prng::random_blocks(o.seed, pages, o.warm_reads)
                            .into_iter()
                            .map(|b| b * 4096)
                            .collect();
                        let ios = engines::fixed(&offs, 4096);
                        // Bring the whole file in once.
                        let all: Vec<u64> = (0..t.size >> 20).map(|i| i << 20).collect();
                        if let Ok(f) = File::open(&t.file) {
                            let all = engines::fixed(&all, 1 << 20);
                            let _ =
                                engines::run(Engine::Sync, Op::Read, f.as_raw_fd(), &all, 1, "");
                        }
                        let qds: Vec<usize> = o
                            .qds
                            .iter()
                            .copied()
                            .filter(|&q| q == 1 || q == 32)
                            .collect();
                        for (e, qd) in plan(&o.engines, &qds) {
                            errors += point(t, w, e, qd, Mode::Read, &ios);
                        }
                    }
                    "write4k" | "write4k-dsync" => {
                        let mode = if w == "write4k" {
                            Mode::Write
                        } else {
                            Mode::WriteDsync
                        };
                        let ios = write_ios(o.seed, pages, o.writes);
                        for (e, qd) in plan(&o.engines, &o.write_qds) {
                            // Also writes back the previous point's dirty pages.
                            cold(o);
                            errors += point(t, w, e, qd, mode, &ios);
                        }
                    }
                    _ => {}
                }
            }
        }
        if let Some(d) = &o.fio_dir {
            cold(o);
            let r = fio::run(d, t, o.reads, 32, o.seed);
            out(&Line::fio(&r));
        }
    }
    for t in &targets {
        if o.dir.is_none() {
            if let Err(e) = sys::umount(&t.dir) {
                log(&format!("umount {}: {e}", t.dir.display()));
            }
        }
    }
    out(&json!({"kind": "done", "errors": errors}));
    Ok(errors)
}

/// debugfs on /sys/kernel/debug, for the series' aio/stats counters (the
/// unpatched kernel has debugfs but not the file: points then report null).
fn mount_debugfs() {
    let dbg = Path::new(aiostats::DEBUGFS);
    if dbg.join(aiostats::STATS_REL).exists() {
        return;
    }
    if let Err(e) = sys::mount("debugfs", dbg, "debugfs") {
        if e.raw_os_error() != Some(libc::EBUSY) {
            log(&format!("mount debugfs on {}: {e}", dbg.display()));
        }
    }
}

/// /sys/devices/system/cpu/online, e.g. "0-1" (what the kernel brought up).
fn online_cpus() -> String {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    FADV_RANDOM.store(o.fadv_random, std::sync::atomic::Ordering::Relaxed);
    match run(&o) {
        Ok(0) => {}
        Ok(n) => {
            log(&format!("{n} request(s) failed"));
            std::process::exit(1);
        }
        Err(e) => {
            out(&json!({"kind": "error", "error": e}));
            log(&format!("error: {e}"));
            std::process::exit(3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn arguments() {
        let o = parse_args(&args("--full --engines aio,uring --reads 100 --fs ext3")).unwrap();
        assert_eq!(o.qds, [1, 2, 4, 8, 16, 32, 64]);
        assert_eq!(o.engines, [Engine::Aio, Engine::Uring]);
        assert_eq!(o.reads, 100);
        assert_eq!(o.fs, ["ext3"]);
        assert!(parse_args(&args("--qd 0")).is_err());
        assert!(parse_args(&args("--engines bogus")).is_err());
        assert!(parse_args(&args("--reads")).is_err());
        assert!(parse_args(&args("--workloads seq1m,nope")).is_err());
        let o = parse_args(&args(
            "--workloads write4k-dsync --writes 64 --write-qd 1,8",
        ))
        .unwrap();
        assert_eq!(o.workloads, ["write4k-dsync"]);
        assert_eq!((o.writes, o.write_qds.clone()), (64, vec![1, 8]));
        assert_eq!(Opts::default().write_qds, [1, 32]);
        assert!(parse_args(&args("--write-qd 0")).is_err());
    }

    #[test]
    fn write_requests() {
        let v = write_ios(7, 1024, 200);
        assert_eq!(v.len(), 200);
        assert_eq!(v, write_ios(7, 1024, 200), "fixed seed");
        let mut blocks: Vec<u64> = v.iter().map(|i| i.off / 4096).collect();
        blocks.sort_unstable();
        blocks.dedup();
        assert_eq!(blocks.len(), 200, "distinct blocks");
        for (i, io) in v.iter().enumerate() {
            assert!(io.off / 4096 < 1024);
            if i % 2 == 0 {
                assert_eq!((io.len, io.off % 4096), (4096, 0), "{io:?}");
            } else {
                assert_eq!(io.len, 512, "{io:?}");
                let inside = io.off % 4096;
                assert!(
                    inside % 512 == 0 && (512..=3584).contains(&inside),
                    "{io:?}"
                );
                // Within the block.
                assert!(inside + 512 <= 4096);
            }
        }
        let reads = prng::distinct_blocks(7, 1024, 200);
        let first: Vec<u64> = v.iter().take(10).map(|i| i.off / 4096).collect();
        assert_ne!(reads[..10], first[..], "not the reads' offsets");
        assert_eq!(write_ios(7, 4, 10).len(), 4, "capped at the file size");
    }

    #[test]
    fn sweep_plan() {
        let p = plan(&Engine::ALL, &[1, 32]);
        let names: Vec<String> = p.iter().map(|(e, q)| format!("{}{q}", e.name())).collect();
        assert_eq!(
            names,
            ["sync1", "pool1", "pool32", "aio1", "aio32", "uring1", "uring32"]
        );
    }
}
