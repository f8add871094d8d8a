//! Soak workloads (issue 14): the fsx-style model checker ([`crate::fsx`])
//! on each filesystem, on the plain disk and on the slow device, alone or
//! under pressure profiles that force the slow and retry paths.
//!
//! Sizes come from the kernel command line (`bufaio.soak_ops`,
//! `bufaio.soak_seed`, `bufaio.soak_secs`, `bufaio.soak_profile`; see
//! README "Soak"); without them every test runs a short default so the
//! normal suite exercises the checker too.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{adversarial, Ctx, Stop, TestResult};
use crate::cmdline::{self, SoakConfig};
use crate::fsx::{self, Fsx, Heartbeat, Params};
use crate::sys;

/// Default seed when the command line gives none (a run is reproducible
/// by default; `cargo xtask soak` picks a fresh one unless `--seed`).
pub(super) const DEFAULT_SEED: u64 = 0x00B0_FA10;

/// A pressure profile (README "Soak").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `vm.dirty_bytes` 256 KiB: writers are throttled mid-write; appends
    /// grow to 1 MiB so one write spans many throttling points.
    Dirty,
    /// Another process `FIFREEZE`s and `FITHAW`s the filesystem in a loop.
    Freeze,
    /// Another process drops the page cache every 20 ms.
    DropCaches,
    /// A busy loop pinned to the submitter's CPU.
    CpuHog,
    /// Another process reads and readaheads the same file (page locks).
    Contender,
    /// Another process sends the submitter SIGUSR1 every 0.5 ms (handler
    /// installed without SA_RESTART: every interruptible wait is broken).
    Signals,
    /// Another process stops the submitter (SIGSTOP) for 5 ms every 25 ms:
    /// completions and retries must not depend on it running.
    Stop,
    /// Another process holds and keeps touching anonymous memory, 60 % of
    /// what was available: reclaim takes page cache from under the IO.
    Memory,
}

pub const PROFILES: &[(&str, Profile)] = &[
    ("dirty", Profile::Dirty),
    ("freeze", Profile::Freeze),
    ("drop_caches", Profile::DropCaches),
    ("cpu_hog", Profile::CpuHog),
    ("contender", Profile::Contender),
    ("signals", Profile::Signals),
    ("stop", Profile::Stop),
    ("memory", Profile::Memory),
];

/// Parses profile names (`all` = every profile).
pub fn parse_profiles(names: &[String]) -> Result<Vec<Profile>, String> {
    let mut out = Vec::new();
    for n in names {
        if n == "all" {
            out.extend(PROFILES.iter().map(|(_, p)| *p));
            continue;
        }
        match PROFILES.iter().find(|(k, _)| k == n) {
            Some((_, p)) => out.push(*p),
            None => {
                let known: Vec<&str> = PROFILES.iter().map(|(k, _)| *k).collect();
                return Err(format!(
                    "unknown soak profile {n:?} (known: {}, all)",
                    known.join(", ")
                ));
            }
        }
    }
    out.dedup();
    Ok(out)
}

pub(super) fn soak_config() -> Result<SoakConfig, Stop> {
    let text = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    // In host mode /proc/cmdline is the host's: no bufaio keys, defaults.
    cmdline::parse(&text)
        .map(|c| c.soak)
        .map_err(|e| Stop::Fail(format!("/proc/cmdline: {e}")))
}

/// soak/fsx: the model checker alone.
pub fn fsx(ctx: &Ctx) -> TestResult {
    run_fsx(ctx, "soak/fsx", 3000, &[])
}

/// soak/fsx_slow: the model checker on the slow device (every device IO
/// takes 1 ms: cold reads and writeback stay in flight).
pub fn fsx_slow(ctx: &Ctx) -> TestResult {
    run_fsx(ctx, "soak/fsx_slow", 1000, &[])
}

/// soak/fsx_pressure: the model checker on the slow device under the
/// profiles of the command line, or all of them.
pub fn fsx_pressure(ctx: &Ctx) -> TestResult {
    let all: Vec<Profile> = PROFILES.iter().map(|(_, p)| *p).collect();
    run_fsx(ctx, "soak/fsx_pressure", 300, &all)
}

/// soak/destroy_race: `teardown/destroy_race` at soak scale (issue 12,
/// item 2): iterations of 4 cold 256 KiB reads (some past EOF) with
/// io_destroy() from another thread 0-5 ms, every fourth 0-50 ms, after
/// the submit, always under the CPU hog (a busy loop on the submitter's
/// CPU, so the parking thread is preempted between arming the wait and
/// unwinding) plus the profiles of the command line. `bufaio.soak_ops`
/// iterations (default 100, at most 10 s when unsized: the suite has
/// `teardown/destroy_race` for the short run); run it under the
/// debug flavor, where KASAN turns a use-after-free into a splat that
/// fails the run.
pub fn destroy_race(ctx: &Ctx) -> TestResult {
    run_destroy_race(ctx, "soak/destroy_race", false)
}

/// soak/destroy_race_bdev: the same on the slow device itself (its last
/// MiB, reads ending past the device end), the reproducer: block
/// devices take the same asynchronous read path (FOP_BUFFER_RASYNC).
pub fn destroy_race_bdev(ctx: &Ctx) -> TestResult {
    run_destroy_race(ctx, "soak/destroy_race_bdev", true)
}

fn run_destroy_race(ctx: &Ctx, test: &str, blkdev: bool) -> TestResult {
    let cfg = soak_config()?;
    let name = format!("{test}@{}", ctx.fs.as_deref().unwrap_or("host"));
    let base = cfg.seed.unwrap_or(DEFAULT_SEED);
    let seed = fsx::instance_seed(base, &name);
    let iterations = cfg.ops.unwrap_or(100);
    let mut profiles = vec![Profile::CpuHog];
    profiles.extend(parse_profiles(&cfg.profiles)?);
    profiles.dedup();
    if !(ctx.guest && ctx.root) {
        profiles.clear();
    }
    let unsized_run = cfg.ops.is_none() && cfg.secs.is_none();
    let p = adversarial::DestroyRace {
        seed,
        iterations: iterations as usize,
        budget: match cfg.secs {
            Some(s) => Some(Duration::from_secs(s)),
            None if unsized_run => Some(Duration::from_secs(10)),
            None => None,
        },
        wide_every: 4,
        blkdev,
    };
    let names: Vec<&str> = profiles
        .iter()
        .filter_map(|p| PROFILES.iter().find(|(_, q)| q == p).map(|(k, _)| *k))
        .collect();
    println!(
        "soak: test={name} base_seed={base:#x} seed={seed:#x} ops_target={iterations} profiles={}",
        if names.is_empty() {
            "-".to_string()
        } else {
            names.join(",")
        }
    );
    let pressure = Pressure::start(ctx, &ctx.path("data"), &profiles).map_err(Stop::Fail)?;
    let mut console = console(ctx);
    let mut progress = |done: usize, t: Duration| {
        if let Some(c) = console.as_mut() {
            let rate = done as f64 / t.as_secs_f64().max(0.001);
            let _ = writeln!(
                c,
                "{}",
                bufaio_contract::progress_line(&name, done as u64, iterations, rate)
            );
        }
    };
    let result = adversarial::run_destroy_race(ctx, &p, &mut progress);
    let stopped = pressure.stop();
    let st = result?;
    stopped.map_err(Stop::Fail)?;
    println!("{}", st.summary(&p));
    println!(
        "soak: seed={seed:#x} ops={} ops_per_s={:.0} elapsed_ms={}",
        st.done,
        st.done as f64 / st.elapsed.as_secs_f64().max(0.001),
        st.elapsed.as_millis()
    );
    if sized_by_ops(&cfg) && (st.done as u64) < iterations {
        return Err(Stop::Fail(format!(
            "ran {} of {iterations} iterations",
            st.done
        )));
    }
    Ok(())
}

/// The guest console, for progress lines the host turns into a bar.
pub(super) fn console(ctx: &Ctx) -> Option<File> {
    if ctx.guest {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/console")
            .ok()
    } else {
        None
    }
}

fn run_fsx(ctx: &Ctx, test: &str, default_ops: u64, default_profiles: &[Profile]) -> TestResult {
    let cfg = soak_config()?;
    let name = format!("{test}@{}", ctx.fs.as_deref().unwrap_or("host"));
    let base = cfg.seed.unwrap_or(DEFAULT_SEED);
    let seed = fsx::instance_seed(base, &name);
    let ops = cfg.ops.unwrap_or(default_ops);
    let mut profiles = if test == "soak/fsx_pressure" && !cfg.profiles.is_empty() {
        parse_profiles(&cfg.profiles)?
    } else if test == "soak/fsx_pressure" {
        default_profiles.to_vec()
    } else {
        parse_profiles(&cfg.profiles)?
    };
    if !(ctx.guest && ctx.root) {
        // Host mode: profiles need root in the guest (sysctls, freeze).
        profiles.clear();
    }
    let mut p = Params::new(seed, ops);
    // Unsized (the normal suite): the default operation count, but at most
    // 30 s, so a slow (debug, TCG) kernel does not run into the test
    // timeout; the operations done are reported either way.
    let unsized_run = cfg.ops.is_none() && cfg.secs.is_none();
    p.max_time = match cfg.secs {
        Some(s) => Some(Duration::from_secs(s)),
        None if unsized_run => Some(Duration::from_secs(30)),
        None => None,
    };
    p.drop_caches = ctx.guest && ctx.root;
    p.big_appends = profiles.contains(&Profile::Dirty);
    p.overlapping_writes = !cfg.no_overlap;
    let path = ctx.path("fsx.dat");
    let names: Vec<&str> = profiles
        .iter()
        .filter_map(|p| PROFILES.iter().find(|(_, q)| q == p).map(|(k, _)| *k))
        .collect();
    println!(
        "soak: test={name} base_seed={base:#x} seed={seed:#x} ops_target={ops} profiles={}",
        if names.is_empty() {
            "-".to_string()
        } else {
            names.join(",")
        }
    );
    let fsx = Fsx::new(&path, p).map_err(Stop::Fail)?;
    let heartbeat = Arc::clone(&fsx.heartbeat);
    // Children first (fork while single-threaded), then the watchdog.
    let pressure = Pressure::start(ctx, &path, &profiles).map_err(Stop::Fail)?;
    let stall = Duration::from_secs(cfg.stall_secs.unwrap_or(60));
    start_watchdog(
        Arc::clone(&heartbeat),
        stall,
        pressure.freeze_dir.clone(),
        pressure.children.clone(),
    );
    let mut console = console(ctx);
    let mut progress = |done: u64, t: Duration| {
        if let Some(c) = console.as_mut() {
            let rate = done as f64 / t.as_secs_f64().max(0.001);
            let _ = writeln!(
                c,
                "{}",
                bufaio_contract::progress_line(&name, done, ops, rate)
            );
        }
    };
    let result = fsx.run(&mut progress);
    let stopped = pressure.stop();
    match result {
        Ok(st) => {
            println!("{}", st.summary(seed));
            stopped.map_err(Stop::Fail)?;
            if sized_by_ops(&cfg) && st.ops < ops {
                return Err(Stop::Fail(format!("ran {} of {ops} ops", st.ops)));
            }
            Ok(())
        }
        Err(report) => {
            let _ = stopped;
            Err(Stop::Fail(format!(
                "{report}\nreplay: cargo xtask soak --seed {base:#x} --ops {ops} --filter '{name}'{}",
                if names.is_empty() {
                    String::new()
                } else {
                    format!(" --profile {}", names.join(","))
                }
            )))
        }
    }
}

/// If the checker makes no progress for `stall`, print where every thread
/// of the process sleeps, thaw the filesystem, stop the pressure children
/// and exit: a hung submitter becomes a failure with a diagnosis, and the
/// filesystem is not left frozen for the tests after it.
pub(super) fn start_watchdog(
    hb: Arc<Heartbeat>,
    stall: Duration,
    freeze_dir: Option<PathBuf>,
    children: Vec<i32>,
) {
    std::thread::spawn(move || {
        let mut last = hb.ops.load(Ordering::Relaxed);
        let mut since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let now = hb.ops.load(Ordering::Relaxed);
            if now != last {
                last = now;
                since = Instant::now();
                continue;
            }
            if since.elapsed() < stall {
                continue;
            }
            let current = hb.current.lock().map(|c| c.clone()).unwrap_or_default();
            let mut msg = format!(
                "fsx: no progress for {} s in op #{now}: {current}",
                stall.as_secs()
            );
            msg.push_str(&task_states());
            for c in &children {
                let _ = sys::kill(*c, libc::SIGKILL);
            }
            if let Some(d) = &freeze_dir {
                if let Ok(f) = File::open(d) {
                    match sys::fithaw(&f) {
                        Ok(()) => msg.push_str("\nfsx: the filesystem was frozen: thawed it"),
                        Err(e) => msg.push_str(&format!("\nfsx: FITHAW: {e} (was not frozen)")),
                    }
                }
            }
            println!("{msg}");
            let _ = std::io::stdout().flush();
            sys::exit_now(1);
        }
    });
}

/// `wchan` and kernel stack of every thread of this process.
fn task_states() -> String {
    let mut s = String::new();
    let Ok(rd) = std::fs::read_dir("/proc/self/task") else {
        return s;
    };
    for t in rd.flatten() {
        let p = t.path();
        let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(") ")
            .map(|(_, r)| r.chars().next().unwrap_or('?'))
            .unwrap_or('?');
        let wchan = std::fs::read_to_string(p.join("wchan")).unwrap_or_default();
        s.push_str(&format!(
            "\n  task {} state {state} wchan {}",
            t.file_name().to_string_lossy(),
            if wchan.is_empty() { "?" } else { wchan.trim() }
        ));
        if let Ok(stack) = std::fs::read_to_string(p.join("stack")) {
            for l in stack.lines().take(24) {
                s.push_str("\n    ");
                s.push_str(l);
            }
        }
    }
    s
}

/// The running pressure: helper processes and sysctls to restore.
pub(crate) struct Pressure {
    pub(super) children: Vec<i32>,
    /// Closing it tells the children to stop (they poll the read end).
    stop_w: Option<OwnedFd>,
    restore: Vec<(PathBuf, String)>,
    pub(super) freeze_dir: Option<PathBuf>,
    signals: bool,
}

extern "C" fn on_sigusr1(_: libc::c_int) {}

fn write_sysctl(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, format!("{value}\n")).map_err(|e| format!("write {}: {e}", path.display()))
}

impl Pressure {
    pub(super) fn start(ctx: &Ctx, file: &Path, profiles: &[Profile]) -> Result<Pressure, String> {
        let mut p = Pressure {
            children: Vec::new(),
            stop_w: None,
            restore: Vec::new(),
            freeze_dir: None,
            signals: false,
        };
        if profiles.is_empty() {
            return Ok(p);
        }
        let (stop_r, stop_w) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
        p.stop_w = Some(stop_w);
        let mnt = ctx
            .dir
            .parent()
            .ok_or("scratch directory has no parent")?
            .to_path_buf();
        for prof in profiles {
            match prof {
                Profile::Dirty => {
                    let vm = Path::new("/proc/sys/vm");
                    for k in [
                        "dirty_ratio",
                        "dirty_background_ratio",
                        "dirty_bytes",
                        "dirty_background_bytes",
                    ] {
                        let v = std::fs::read_to_string(vm.join(k))
                            .map_err(|e| format!("read vm.{k}: {e}"))?;
                        p.restore.push((vm.join(k), v.trim().to_string()));
                    }
                    write_sysctl(&vm.join("dirty_bytes"), "262144")?;
                    write_sysctl(&vm.join("dirty_background_bytes"), "65536")?;
                }
                Profile::Signals => {
                    // SAFETY: installs an empty handler, no SA_RESTART.
                    unsafe {
                        let mut sa: libc::sigaction = std::mem::zeroed();
                        sa.sa_sigaction = on_sigusr1 as *const () as usize;
                        libc::sigemptyset(&mut sa.sa_mask);
                        sa.sa_flags = 0;
                        if libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()) != 0 {
                            return Err(format!("sigaction: {}", std::io::Error::last_os_error()));
                        }
                    }
                    p.signals = true;
                    let parent = sys::getpid();
                    p.spawn(&stop_r, "signals", move || {
                        let _ = sys::kill(parent, libc::SIGUSR1);
                        sleep_us(500);
                    })?;
                }
                Profile::Stop => {
                    let parent = sys::getpid();
                    p.spawn_with_exit(
                        &stop_r,
                        "stop",
                        move || {
                            let _ = sys::kill(parent, libc::SIGSTOP);
                            sleep_us(5000);
                            let _ = sys::kill(parent, libc::SIGCONT);
                            sleep_us(20_000);
                        },
                        move || {
                            let _ = sys::kill(parent, libc::SIGCONT);
                        },
                    )?;
                }
                Profile::Memory => {
                    let avail =
                        mem_available_kib().ok_or("cannot read MemAvailable from /proc/meminfo")?;
                    let len = (avail as usize * 1024 / 10 * 6) & !4095;
                    // SAFETY: a private anonymous mapping owned by the child
                    // (mapped after fork: not shared with the submitter).
                    p.spawn_with_init(&stop_r, "memory", move || unsafe {
                        let m = libc::mmap(
                            std::ptr::null_mut(),
                            len,
                            libc::PROT_READ | libc::PROT_WRITE,
                            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                            -1,
                            0,
                        );
                        if m == libc::MAP_FAILED {
                            sys::exit_now(3);
                        }
                        let base = m as *mut u8;
                        let mut round: u8 = 0;
                        move || {
                            round = round.wrapping_add(1);
                            let mut off = 0;
                            while off < len {
                                // SAFETY: inside the mapping made above.
                                *base.add(off) = round;
                                off += 4096;
                            }
                            sleep_us(100_000);
                        }
                    })?;
                }
                Profile::Freeze => {
                    p.freeze_dir = Some(mnt.clone());
                    let dir =
                        File::open(&mnt).map_err(|e| format!("open {}: {e}", mnt.display()))?;
                    p.spawn(&stop_r, "freeze", move || {
                        if sys::fifreeze(&dir).is_ok() {
                            sleep_us(3000);
                            let _ = sys::fithaw(&dir);
                        }
                        sleep_us(30_000);
                    })?;
                }
                Profile::DropCaches => {
                    // 4: the kernel stops logging every drop (sticky bit).
                    let _ = std::fs::write("/proc/sys/vm/drop_caches", "4\n");
                    p.spawn(&stop_r, "drop_caches", || {
                        let _ = std::fs::write("/proc/sys/vm/drop_caches", "1\n");
                        sleep_us(20_000);
                    })?;
                }
                Profile::CpuHog => {
                    // Pin the submitter and the hog to CPU 0.
                    // SAFETY: a zeroed cpu_set_t with CPU 0 set, for this process.
                    unsafe {
                        let mut set: libc::cpu_set_t = std::mem::zeroed();
                        libc::CPU_SET(0, &mut set);
                        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                    }
                    p.spawn(&stop_r, "cpu_hog", || {
                        let t = Instant::now();
                        while t.elapsed() < Duration::from_millis(5) {
                            std::hint::spin_loop();
                        }
                    })?;
                }
                Profile::Contender => {
                    let f =
                        File::open(file).map_err(|e| format!("open {}: {e}", file.display()))?;
                    let mut x: u64 = 0x1234_5678;
                    p.spawn(&stop_r, "contender", move || {
                        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                        if size > 0 {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            let off = (x % size) & !4095;
                            let mut b = [0u8; 1];
                            // SAFETY: reads one byte into `b`.
                            unsafe {
                                libc::pread(
                                    f.as_raw_fd(),
                                    b.as_mut_ptr() as *mut libc::c_void,
                                    1,
                                    off as i64,
                                )
                            };
                            let _ = sys::fadvise(&f, off, 65536, libc::POSIX_FADV_WILLNEED);
                        }
                        sleep_us(200);
                    })?;
                }
            }
        }
        Ok(p)
    }

    /// Forks a child that runs `step` until the stop pipe closes.
    fn spawn(&mut self, stop_r: &OwnedFd, what: &str, step: impl FnMut()) -> Result<(), String> {
        self.spawn_with_exit(stop_r, what, step, || {})
    }

    /// [`Pressure::spawn`] whose step is made in the child by `init`.
    fn spawn_with_init<S: FnMut()>(
        &mut self,
        stop_r: &OwnedFd,
        what: &str,
        init: impl FnOnce() -> S,
    ) -> Result<(), String> {
        let mut init = Some(init);
        let mut step: Option<S> = None;
        self.spawn_with_exit(
            stop_r,
            what,
            move || {
                if step.is_none() {
                    step = init.take().map(|f| f());
                }
                if let Some(s) = step.as_mut() {
                    s();
                }
            },
            || {},
        )
    }

    /// [`Pressure::spawn`] with `on_exit` run in the child when it stops.
    fn spawn_with_exit(
        &mut self,
        stop_r: &OwnedFd,
        what: &str,
        mut step: impl FnMut(),
        on_exit: impl FnOnce(),
    ) -> Result<(), String> {
        let pid = sys::fork().map_err(|e| format!("fork ({what}): {e}"))?;
        if pid == 0 {
            // Child: the stop pipe's write end is the parent's; on its
            // close (parent done or dead) poll reports the read end.
            if let Some(w) = &self.stop_w {
                // SAFETY: closing our inherited copy of the write end.
                unsafe { libc::close(w.as_raw_fd()) };
            }
            // SAFETY: no signal handlers of the parent in the child.
            unsafe { libc::signal(libc::SIGUSR1, libc::SIG_IGN) };
            loop {
                if sys::poll_readable(stop_r, Duration::ZERO).unwrap_or(true) {
                    on_exit();
                    sys::exit_now(0);
                }
                step();
            }
        }
        self.children.push(pid);
        Ok(())
    }

    /// Stops the children, thaws, restores the sysctls.
    pub(super) fn stop(mut self) -> Result<(), String> {
        self.cleanup()
    }

    fn cleanup(&mut self) -> Result<(), String> {
        self.stop_w = None;
        let mut errs = Vec::new();
        for &c in &self.children {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match sys::waitpid(c, true) {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = sys::kill(c, libc::SIGKILL);
                        let _ = sys::waitpid(c, false);
                        errs.push(format!("pressure child {c} did not stop within 10 s"));
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }
        self.children.clear();
        if let Some(d) = &self.freeze_dir {
            if let Ok(f) = File::open(d) {
                let _ = sys::fithaw(&f);
            }
        }
        // Restore in reverse: the *_bytes values (0) last would reset the
        // ratios, so write the non-zero one of each pair last.
        let mut restore = std::mem::take(&mut self.restore);
        restore.sort_by_key(|(_, v)| v != "0");
        for (k, v) in restore {
            if v != "0" {
                if let Err(e) = write_sysctl(&k, &v) {
                    errs.push(e);
                }
            }
        }
        if self.signals {
            self.signals = false;
            // SAFETY: back to the default disposition.
            unsafe { libc::signal(libc::SIGUSR1, libc::SIG_DFL) };
        }
        self.freeze_dir = None;
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    }
}

impl Drop for Pressure {
    /// A test that panics (the runner catches it) must not leave the
    /// filesystem frozen or the dirty limits tiny for the tests after it.
    fn drop(&mut self) {
        let _ = self.cleanup();
    }
}

/// Whether the run was sized by operations alone (then all must be done).
fn sized_by_ops(cfg: &SoakConfig) -> bool {
    cfg.secs.is_none() && cfg.ops.is_some()
}

fn mem_available_kib() -> Option<u64> {
    let t = std::fs::read_to_string("/proc/meminfo").ok()?;
    t.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn sleep_us(us: u64) {
    std::thread::sleep(Duration::from_micros(us));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse() {
        let all = parse_profiles(&["all".into()]).unwrap();
        assert_eq!(all.len(), PROFILES.len());
        assert_eq!(
            parse_profiles(&["dirty".into(), "freeze".into()]).unwrap(),
            vec![Profile::Dirty, Profile::Freeze]
        );
        let e = parse_profiles(&["dirt".into()]).unwrap_err();
        assert!(e.contains("unknown soak profile \"dirt\""), "{e}");
    }
}
