//! soak/truncate_race (issue 14, the truncate/punch racer): AIO reads and
//! writes on one file of the slow device while another process truncates
//! it down and up, punches and zeroes ranges of it and drops its page
//! cache, at random 0-2 ms intervals.
//!
//! No model of the contents can follow two processes, so the check is the
//! one every outcome allows: the submitter writes only the offset-encoded
//! pattern of one key ([`crate::pattern`]) and the racer only removes data,
//! so every byte any read returns is either the pattern byte of its own
//! offset or zero (a hole, a truncated and re-extended range, a punched or
//! zeroed one). Data of another offset (a write landing at the wrong place,
//! a freed block reused before its new data is written, a stale folio
//! surviving a truncate) breaks it, and the error says which offset the
//! bytes belong to. Also: every write completes whole (or with `ENOSPC` on
//! a nearly full filesystem), every read returns at most what it asked for,
//! the file never grows past the region the writes stay in, the shared
//! invariant checker holds (every iocb completed once, no internal errno),
//! and the whole file — as left, and read back cold through AIO — passes
//! the same byte check at checkpoints and at the end.
//!
//! Requests are parked on the slow device (a quarter of the batches start
//! with the file's page cache dropped) while the racer changes the file
//! under them: the retry paths of the series meet `i_size`,
//! `invalidate_lock` and freed blocks that changed since the park.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::soak::{self, Pressure, DEFAULT_SEED};
use super::{Ctx, Stop, TestResult, REAP_TIMEOUT};
use crate::aio::{Op, Ring};
use crate::fsx::{self, Heartbeat, Rng};
use crate::{pattern, sys};

/// Writes and truncates stay inside `[0, SPAN)`.
pub const SPAN: u64 = 4 << 20;
/// Longest request.
const MAX_LEN: u64 = 64 << 10;
/// Whole-file check every this many batches.
const CHECK_EVERY: u64 = 50;

/// What one run does.
#[derive(Debug, Clone)]
pub struct Params {
    pub seed: u64,
    /// AIO batches (one batch = one operation of the soak's counts).
    pub batches: u64,
    pub budget: Option<Duration>,
    /// Self-test only: the racer also writes the pattern of the wrong
    /// offset into the file, which the check must catch.
    pub mutant: bool,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Stats {
    pub batches: u64,
    pub reads: u64,
    pub writes: u64,
    /// Bytes that reads returned and the check looked at; of them zero.
    pub bytes_checked: u64,
    pub zero_bytes: u64,
    pub short_reads: u64,
    pub enospc: u64,
    pub cold_batches: u64,
    /// The racer's own report line (its action counts).
    pub racer: String,
    pub elapsed: Duration,
}

impl Stats {
    pub fn summary(&self, seed: u64) -> String {
        format!(
            "truncate_race: seed={seed:#x} batches={} reads={} writes={} checked_bytes={} zero_bytes={} short_reads={} enospc={} cold_batches={} elapsed_ms={} ops_per_s={:.0}; {}",
            self.batches,
            self.reads,
            self.writes,
            self.bytes_checked,
            self.zero_bytes,
            self.short_reads,
            self.enospc,
            self.cold_batches,
            self.elapsed.as_millis(),
            self.batches as f64 / self.elapsed.as_secs_f64().max(0.001),
            if self.racer.is_empty() {
                "racer: no report"
            } else {
                &self.racer
            }
        )
    }
}

/// Every byte of `buf` (file bytes from `off`) must be the pattern byte of
/// its own offset for `seed`, or zero. Returns the zero bytes, or what
/// broke the rule: the first bad offset, how many bytes are bad, and where
/// the bytes there come from when an aligned word decodes to an offset.
pub fn check_bytes(buf: &[u8], off: u64, seed: u64) -> Result<u64, String> {
    let expect = pattern::make(seed, off, buf.len());
    let mut zeros = 0u64;
    let mut first = None;
    let mut bad = 0usize;
    for (i, (&a, &e)) in buf.iter().zip(&expect).enumerate() {
        if a == e {
            continue;
        }
        if a == 0 {
            zeros += 1;
            continue;
        }
        bad += 1;
        first.get_or_insert(i);
    }
    let Some(i) = first else {
        return Ok(zeros);
    };
    let at = off + i as u64;
    // The aligned word at or after the first bad byte, decoded.
    let w0 = (i + 7) & !7;
    let hint = if w0 + 8 <= buf.len() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&buf[w0..w0 + 8]);
        let from = u64::from_le_bytes(w) ^ pattern::key(seed);
        let word_off = off + w0 as u64;
        if from < SPAN * 4 && from.is_multiple_of(8) {
            format!(
                "; the word at {word_off:#x} is the pattern of offset {from:#x} ({:+} bytes away)",
                from as i64 - word_off as i64
            )
        } else {
            format!("; the word at {word_off:#x} is {:#018x}, not this file's pattern of any nearby offset", u64::from_le_bytes(w))
        }
    } else {
        String::new()
    };
    Err(format!(
        "{bad} byte(s) in {:#x}+{} are neither the pattern of their offset nor zero, first at {at:#x} (got {:#04x}, pattern {:#04x}){hint}",
        off,
        buf.len(),
        buf[i],
        expect[i]
    ))
}

/// A racer: a child process that runs until told to stop, then reports one
/// line (its action counts).
pub(super) struct Racer {
    pid: i32,
    stop_w: Option<OwnedFd>,
    rep_r: OwnedFd,
}

impl Racer {
    /// Forks `body(stop, report)`: it polls `stop` (readable once the
    /// parent closes its end, also when the parent dies), writes its report
    /// to `report` and returns its exit code.
    pub(super) fn spawn(body: impl FnOnce(&OwnedFd, &OwnedFd) -> i32) -> Result<Racer, String> {
        let (stop_r, stop_w) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
        let (rep_r, rep_w) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
        let pid = sys::fork().map_err(|e| format!("fork (racer): {e}"))?;
        if pid == 0 {
            drop(stop_w);
            drop(rep_r);
            sys::exit_now(body(&stop_r, &rep_w));
        }
        Ok(Racer {
            pid,
            stop_w: Some(stop_w),
            rep_r,
        })
    }

    pub(super) fn pid(&self) -> i32 {
        self.pid
    }

    /// Stops the racer and returns its report; an error if it did not exit 0.
    pub(super) fn finish(mut self) -> Result<String, String> {
        self.stop_w = None;
        let status = sys::waitpid(self.pid, false);
        let mut line = vec![0u8; 512];
        // SAFETY: reading into our own buffer from our end of the pipe.
        let n = unsafe { libc::read(self.rep_r.as_raw_fd(), line.as_mut_ptr().cast(), line.len()) };
        let report = String::from_utf8_lossy(&line[..n.max(0) as usize])
            .trim()
            .to_string();
        match status {
            Ok(Some((_, sys::WaitStatus::Exited(0)))) => Ok(report),
            other => Err(format!("the racer ended badly: {other:?} ({report})")),
        }
    }
}

/// Whether the parent told the racer to stop.
pub(super) fn stopping(stop: &OwnedFd) -> bool {
    sys::poll_readable(stop, Duration::ZERO).unwrap_or(true)
}

/// The racer's report line, written with one write(2) (no locks after fork).
pub(super) fn report(rep: &OwnedFd, line: &str) {
    let line = format!("{line}\n");
    // SAFETY: writing a local buffer to our end of the report pipe.
    unsafe { libc::write(rep.as_raw_fd(), line.as_ptr().cast(), line.len()) };
}

/// `n` random requests inside `[0, span)`, 512 B-aligned, 512 B to 64 KiB:
/// writes (`writes_of_5` in 5) of the pattern of `key` at their offset,
/// and reads. `aio_data` is the request's index and the batch number.
/// Returns the ops and a description of each.
pub(super) fn pattern_batch(
    rng: &mut Rng,
    fd: std::os::fd::RawFd,
    key: u64,
    span: u64,
    n: usize,
    writes_of_5: u64,
    batch: u64,
) -> (Vec<Op>, Vec<String>) {
    let mut ops = Vec::with_capacity(n);
    let mut what = Vec::with_capacity(n);
    for i in 0..n {
        let off = rng.below(span / 512) * 512;
        let len = (512 * (1 + rng.below(MAX_LEN / 512))).min(span - off) as usize;
        let data = (i as u64) | (batch << 8);
        if rng.chance(writes_of_5, 5) {
            ops.push(Op::pwrite(fd, off, pattern::make(key, off, len)).with_data(data));
            what.push(format!("write {off:#x}+{len}"));
        } else {
            ops.push(Op::pread(fd, off, len).with_data(data));
            what.push(format!("read {off:#x}+{len}"));
        }
    }
    (ops, what)
}

/// A check of file bytes read at an offset.
pub(super) type BufCheck<'a> = dyn FnMut(&[u8], u64) -> Result<(), String> + 'a;

/// Reads `[0, size)` of `fd` through AIO in 1 MiB requests, each of which
/// must return whole, and hands each buffer and its offset to `check`.
pub(super) fn read_back_cold(
    ring: &mut Ring,
    fd: std::os::fd::RawFd,
    size: u64,
    check: &mut BufCheck<'_>,
) -> Result<(), String> {
    let mut off = 0;
    while off < size {
        let len = (size - off).min(1 << 20) as usize;
        ring.submit_all(vec![Op::pread(fd, off, len)])?;
        let c = ring.reap(1, REAP_TIMEOUT)?;
        let c = c.first().ok_or("no completion")?;
        c.expect_res(len as i64)?;
        check(c.op()?.buf(), off)?;
        off += len as u64;
    }
    Ok(())
}

/// Submits every op, retrying what io_submit did not take on EINTR/EAGAIN.
pub(super) fn submit_whole(
    ring: &mut Ring,
    ops: Vec<Op>,
    what: &dyn Fn() -> String,
) -> Result<(), String> {
    let mut left = ops;
    while !left.is_empty() {
        let s = ring.submit(left);
        left = s.rejected;
        if let Some(e) = s.error {
            match e.raw_os_error() {
                Some(libc::EINTR) | Some(libc::EAGAIN) => {
                    std::thread::sleep(Duration::from_micros(200))
                }
                _ => return Err(format!("io_submit: {e} ({})", what())),
            }
        }
    }
    Ok(())
}

/// The racer, in a child process: until `stop` reports readable, one of
/// truncate down, truncate up, punch, zero range, drop the file's cache,
/// then 0-2 ms of sleep. Reports its counts on `rep` when it stops.
fn racer(path: &Path, seed: u64, mutant: bool, stop: &OwnedFd, rep: &OwnedFd) -> i32 {
    let Ok(f) = OpenOptions::new().write(true).open(path) else {
        return 3;
    };
    let fd = f.as_raw_fd();
    let mut rng = Rng::new(seed ^ 0x0072_6163_6572);
    let (mut down, mut up, mut punch, mut zero, mut drop, mut mutated) = (0u64, 0u64, 0, 0, 0, 0);
    let mut falloc = true;
    loop {
        if stopping(stop) {
            report(
                rep,
                &format!(
                    "racer: truncate_down={down} truncate_up={up} punch={punch} zero_range={zero} drop_cache={drop}{}{}",
                    if falloc { "" } else { " (no fallocate: EOPNOTSUPP)" },
                    if mutant { format!(" mutant_writes={mutated}") } else { String::new() }
                ),
            );
            return 0;
        }
        let off = rng.below(SPAN);
        let len = 1 + rng.below(256 << 10);
        let mode = match rng.below(100) {
            0..=34 => 0,
            35..=49 => 1,
            50..=74 if falloc => 2,
            75..=89 if falloc => 3,
            50..=89 => 0,
            _ => 4,
        };
        // SAFETY: plain syscalls on our own descriptor.
        unsafe {
            match mode {
                0 => {
                    if libc::ftruncate(fd, off as libc::off_t) == 0 {
                        down += 1;
                    }
                }
                1 => {
                    if libc::ftruncate(fd, SPAN as libc::off_t) == 0 {
                        up += 1;
                    }
                }
                2 | 3 => {
                    let m = libc::FALLOC_FL_KEEP_SIZE
                        | if mode == 2 {
                            libc::FALLOC_FL_PUNCH_HOLE
                        } else {
                            libc::FALLOC_FL_ZERO_RANGE
                        };
                    if libc::fallocate(fd, m, off as libc::off_t, len as libc::off_t) == 0 {
                        if mode == 2 {
                            punch += 1;
                        } else {
                            zero += 1;
                        }
                    } else if std::io::Error::last_os_error().raw_os_error()
                        == Some(libc::EOPNOTSUPP)
                    {
                        falloc = false;
                    }
                }
                _ => {
                    if libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) == 0 {
                        drop += 1;
                    }
                }
            }
        }
        if mutant && rng.chance(1, 8) {
            // The pattern of the offset 4 KiB further on, written here.
            let at = rng.below(SPAN / 2) & !7;
            let data = pattern::make(seed_key(seed), at + 4096, 512);
            // SAFETY: a local buffer, our own descriptor.
            if unsafe { libc::pwrite(fd, data.as_ptr().cast(), data.len(), at as libc::off_t) } > 0
            {
                mutated += 1;
            }
        }
        std::thread::sleep(Duration::from_micros(rng.below(2000)));
    }
}

/// The pattern key of a run (one for every write of the run).
fn seed_key(seed: u64) -> u64 {
    seed ^ 0x5452_554e_4341_5445
}

/// The whole file through `pread`, checked.
fn check_file(f: &File, seed: u64, st: &mut Stats, when: &str) -> Result<(), String> {
    let size = f
        .metadata()
        .map_err(|e| format!("fstat ({when}): {e}"))?
        .len();
    if size > SPAN {
        return Err(format!(
            "{when}: the file is {size} bytes, past the {SPAN} bytes any write or truncate reaches"
        ));
    }
    let mut buf = vec![0u8; size as usize];
    let mut done = 0usize;
    while done < buf.len() {
        // SAFETY: reading into the rest of our own buffer.
        let n = unsafe {
            libc::pread(
                f.as_raw_fd(),
                buf[done..].as_mut_ptr().cast(),
                buf.len() - done,
                done as libc::off_t,
            )
        };
        match n {
            n if n > 0 => done += n as usize,
            0 => break, // truncated meanwhile
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("pread of the whole file ({when}): {e}"));
            }
        }
    }
    st.zero_bytes += check_bytes(&buf[..done], 0, seed_key(seed))
        .map_err(|e| format!("{when}, whole-file pread: {e}"))?;
    st.bytes_checked += done as u64;
    Ok(())
}

/// Runs the workload on `path` (created fresh). `hb` is the watchdog's
/// heartbeat, `progress` gets (batches done, elapsed).
pub fn run(
    path: &Path,
    p: &Params,
    hb: &Heartbeat,
    children: &mut Vec<i32>,
    progress: &mut dyn FnMut(u64, Duration),
) -> Result<Stats, String> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("create {}: {e}", path.display()))?;
    let fd = f.as_raw_fd();
    let key = seed_key(p.seed);
    let r = Racer::spawn(|stop, rep| racer(path, p.seed, p.mutant, stop, rep))?;
    let pid = r.pid();
    children.push(pid);
    let mut ring = Ring::new(64)?;
    let mut rng = Rng::new(p.seed);
    let mut st = Stats::default();
    let t0 = Instant::now();
    let result = (|| -> Result<(), String> {
        while st.batches < p.batches {
            if p.budget.is_some_and(|b| t0.elapsed() >= b) {
                break;
            }
            let n = 1 + rng.below(12) as usize;
            let cold = rng.chance(1, 4);
            if cold {
                st.cold_batches += 1;
                let _ = sys::fadvise_all(&f, libc::POSIX_FADV_DONTNEED);
            }
            let (ops, what) = pattern_batch(&mut rng, fd, key, SPAN, n, 3, st.batches);
            if let Ok(mut c) = hb.current.lock() {
                *c = format!(
                    "batch {}{}: {}",
                    st.batches,
                    if cold { " (cold)" } else { "" },
                    what.join(", ")
                );
            }
            submit_whole(&mut ring, ops, &|| {
                format!("batch {}: {}", st.batches, what.join(", "))
            })?;
            for c in ring
                .reap(n, REAP_TIMEOUT)
                .map_err(|e| format!("batch {}: {e}", st.batches))?
            {
                let op = c.op()?;
                let (off, len, res) = (op.offset(), op.nbytes() as i64, c.event.res);
                if op.opcode() == crate::aio::IOCB_CMD_PWRITE {
                    st.writes += 1;
                    if res == len {
                        continue;
                    }
                    let free = sys::fstatvfs(&f)
                        .map(|(frsize, bfree, _)| frsize * bfree)
                        .unwrap_or(0);
                    if (res == -(libc::ENOSPC as i64) || (0..len).contains(&res))
                        && free < (8 << 20)
                    {
                        st.enospc += 1;
                        continue;
                    }
                    return Err(format!(
                        "batch {}: write {off:#x}+{len}: res {} ({} free on the filesystem)",
                        st.batches,
                        crate::aio::describe_res(res),
                        free
                    ));
                }
                st.reads += 1;
                if !(0..=len).contains(&res) {
                    return Err(format!(
                        "batch {}: read {off:#x}+{len}: res {}",
                        st.batches,
                        crate::aio::describe_res(res)
                    ));
                }
                if res < len {
                    st.short_reads += 1;
                }
                let got = &op.buf()[..res as usize];
                st.zero_bytes += check_bytes(got, off, key).map_err(|e| {
                    format!(
                        "batch {} ({}), read {off:#x}+{len} returned {res}: {e}",
                        st.batches,
                        what.join(", ")
                    )
                })?;
                st.bytes_checked += res as u64;
            }
            st.batches += 1;
            hb.ops.store(st.batches, Ordering::Relaxed);
            if st.batches.is_multiple_of(CHECK_EVERY) {
                let when = format!("after batch {}", st.batches);
                check_file(&f, p.seed, &mut st, &when)?;
            }
            if st.batches.is_multiple_of(64) {
                progress(st.batches, t0.elapsed());
            }
        }
        Ok(())
    })();
    // Stop the racer and collect its report.
    let racer = r.finish();
    children.retain(|&c| c != pid);
    result?;
    st.racer = racer?;
    ring.check()?;
    // The file as the race left it, then read back cold through AIO.
    check_file(&f, p.seed, &mut st, "at the end")?;
    f.sync_all().map_err(|e| format!("fsync at the end: {e}"))?;
    sys::fadvise_all(&f, libc::POSIX_FADV_DONTNEED).map_err(|e| format!("fadvise: {e}"))?;
    let size = f.metadata().map_err(|e| format!("fstat: {e}"))?.len();
    let mut zeros = 0;
    read_back_cold(&mut ring, fd, size, &mut |buf, off| {
        zeros += check_bytes(buf, off, key)
            .map_err(|e| format!("cold AIO read-back at the end: {e}"))?;
        Ok(())
    })?;
    st.zero_bytes += zeros;
    st.bytes_checked += size;
    ring.check()?;
    st.elapsed = t0.elapsed();
    Ok(st)
}

/// soak/truncate_race@fs on the slow device.
pub fn truncate_race(ctx: &Ctx) -> TestResult {
    let cfg = soak::soak_config()?;
    let name = format!("soak/truncate_race@{}", ctx.fs.as_deref().unwrap_or("host"));
    let base = cfg.seed.unwrap_or(DEFAULT_SEED);
    let seed = fsx::instance_seed(base, &name);
    let unsized_run = cfg.ops.is_none() && cfg.secs.is_none();
    let p = Params {
        seed,
        batches: cfg.ops.unwrap_or(if unsized_run { 200 } else { u64::MAX }),
        budget: match cfg.secs {
            Some(s) => Some(Duration::from_secs(s)),
            None if unsized_run => Some(Duration::from_secs(10)),
            None => None,
        },
        mutant: false,
    };
    let mut profiles = soak::parse_profiles(&cfg.profiles)?;
    if !(ctx.guest && ctx.root) {
        profiles.clear();
    }
    let path = ctx.path("trunc.dat");
    println!(
        "soak: test={name} base_seed={base:#x} seed={seed:#x} ops_target={} profiles={}",
        p.batches,
        if cfg.profiles.is_empty() {
            "-".to_string()
        } else {
            cfg.profiles.join(",")
        }
    );
    let hb = Arc::new(Heartbeat::default());
    let pressure = Pressure::start(ctx, &path, &profiles).map_err(Stop::Fail)?;
    let mut children = pressure.children.clone();
    soak::start_watchdog(
        Arc::clone(&hb),
        Duration::from_secs(cfg.stall_secs.unwrap_or(60)),
        pressure.freeze_dir.clone(),
        children.clone(),
    );
    let mut console = soak::console(ctx);
    let target = if p.batches == u64::MAX { 0 } else { p.batches };
    let mut progress = |done: u64, t: Duration| {
        if let Some(c) = console.as_mut() {
            let rate = done as f64 / t.as_secs_f64().max(0.001);
            let _ = writeln!(
                c,
                "{}",
                bufaio_contract::progress_line(&name, done, target, rate)
            );
        }
    };
    let result = run(&path, &p, &hb, &mut children, &mut progress);
    let stopped = pressure.stop();
    let st = result.map_err(|e| {
        Stop::Fail(format!(
            "{e}\nseed {seed:#x} (the racer's timing is not replayed: the seed fixes both sides' operation sequences)\nreplay: cargo xtask soak --seed {base:#x} --filter '{name}'"
        ))
    })?;
    stopped.map_err(Stop::Fail)?;
    println!("{}", st.summary(seed));
    println!(
        "soak: seed={seed:#x} ops={} ops_per_s={:.0} elapsed_ms={}",
        st.batches,
        st.batches as f64 / st.elapsed.as_secs_f64().max(0.001),
        st.elapsed.as_millis()
    );
    if st.bytes_checked == st.zero_bytes {
        return Err(Stop::Fail(format!(
            "reads returned no written data at all ({} bytes checked): the race left nothing to check",
            st.bytes_checked
        )));
    }
    if cfg.secs.is_none() && cfg.ops.is_some() && st.batches < p.batches {
        return Err(Stop::Fail(format!(
            "ran {} of {} batches",
            st.batches, p.batches
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_the_pattern_or_zero() {
        let key = 0x1234;
        let mut b = pattern::make(key, 4096, 8192);
        assert_eq!(check_bytes(&b, 4096, key), Ok(0));
        b[100..612].fill(0);
        // Zeroed bytes where the pattern itself is not zero.
        let zeros = check_bytes(&b, 4096, key).unwrap();
        assert!((500..=512).contains(&zeros), "{zeros}");
        // Another offset's data (8 KiB further on) at 4096 + 1024.
        let other = pattern::make(key, 4096 + 1024 + 8192, 64);
        b[1024..1088].copy_from_slice(&other);
        let e = check_bytes(&b, 4096, key).unwrap_err();
        // (An offset's word differs from its neighbour's only where the
        // offsets differ: here from the second byte on.)
        assert!(e.contains("first at 0x1401"), "{e}");
        assert!(
            e.contains("pattern of offset 0x3408 (+8192 bytes away)"),
            "{e}"
        );
        // Another key's data: not this file's pattern.
        let mut c = pattern::make(key, 0, 64);
        c[8..16].copy_from_slice(&pattern::make(key ^ 1, 8, 8));
        let e = check_bytes(&c, 0, key).unwrap_err();
        assert!(e.contains("not this file's pattern"), "{e}");
    }

    /// The whole workload on a host file: passes, and the mutant racer
    /// (which writes another offset's pattern) is caught.
    #[test]
    fn the_racer_workload_passes_and_catches_misplaced_data() {
        let dir = std::env::temp_dir().join(format!("bufaio-trunc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.dat");
        let hb = Heartbeat::default();
        let mut kids = Vec::new();
        let mut p = Params {
            seed: 7,
            batches: 150,
            budget: Some(Duration::from_secs(20)),
            mutant: false,
        };
        let st = run(&path, &p, &hb, &mut kids, &mut |_, _| {}).unwrap();
        assert!(st.batches > 0 && st.reads > 0 && st.writes > 0, "{st:?}");
        assert!(st.bytes_checked > st.zero_bytes, "{st:?}");
        assert!(st.racer.contains("truncate_down="), "{st:?}");
        p.mutant = true;
        p.batches = 2000;
        let e = run(&path, &p, &hb, &mut kids, &mut |_, _| {}).unwrap_err();
        assert!(
            e.contains("neither the pattern of their offset nor zero"),
            "{e}"
        );
        assert!(kids.is_empty(), "{kids:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
