//! Adversarial correctness tests: situations in which a kernel that
//! finishes buffered AIO *later* (parked requests retried from task_work
//! or a worker) can get something wrong that a synchronous kernel cannot:
//! ordering of overlapping and O_APPEND writes, spurious EINTR from the
//! retry notification, RLIMIT_FSIZE and O_APPEND checked at the wrong
//! time, O_APPEND against a throttled concurrent appender, freeze
//! protection held by a parked write, completions held hostage by a
//! submitter that cannot run its task_work, io_cancel and io_destroy
//! racing with retries, and IO accounting charged to the wrong task.
//!
//! Every test passes on the unpatched kernel, which executes buffered AIO
//! synchronously inside io_submit. None of them can hang the test process
//! for ever: waits are bounded (io_getevents/poll timeouts, child waits
//! with a deadline and SIGKILL, channel receives with a timeout), except
//! that a detected freeze deadlock (`write/freeze_parked`) leaves the
//! filesystem frozen, by design (see there).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use super::inflight::{read_eventfd, require_slow, us};
use super::teardown::wait_child;
use super::write_data::{append_order, pwrite_pattern, require_guest, Model};
use super::{
    create_pattern_file, fadvise_random, file_len, open_rw, pread_full, Ctx, Stop, TestResult,
    REAP_TIMEOUT,
};
use crate::aio::{self, describe_res, Completion, IoEvent, Op, Ring, READ_POISON};
use crate::invariants::is_kernel_internal_errno;
use crate::pattern;
use crate::sys::{self, WaitStatus};
use crate::{ensure, ensure_str};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// A small deterministic PRNG (xorshift64) for delays and offsets; the
/// seed is printed so a failing schedule can be repeated.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Rng {
        Rng(pattern::key(seed) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform-ish in `0..n` (0 if n == 0).
    pub(super) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

// ---------------------------------------------------------------------------
// Tagged records: every 16-byte unit says which record and unit it is, so a
// unit is recognised wherever it lands in a file.

const TAG_MAGIC: u32 = 0xB0FA_A9D0;
const UNIT: usize = 16;

fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// `len` bytes of record `rec` of `writer`: unit `i` is
/// `[TAG_MAGIC, rec, i, writer]` (u32 little-endian each).
fn tagged(writer: u32, rec: u32, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut idx = 0u32;
    while v.len() < len {
        let mut u = [0u8; UNIT];
        u[0..4].copy_from_slice(&TAG_MAGIC.to_le_bytes());
        u[4..8].copy_from_slice(&rec.to_le_bytes());
        u[8..12].copy_from_slice(&idx.to_le_bytes());
        u[12..16].copy_from_slice(&writer.to_le_bytes());
        let n = (len - v.len()).min(UNIT);
        v.extend_from_slice(&u[..n]);
        idx += 1;
    }
    v
}

/// `(writer, rec, idx)` of a whole tagged unit.
fn parse_unit(u: &[u8]) -> Option<(u32, u32, u32)> {
    if u.len() < UNIT || le32(u, 0) != TAG_MAGIC {
        return None;
    }
    Some((le32(u, 12), le32(u, 4), le32(u, 8)))
}

fn hex16(u: &[u8]) -> String {
    u.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where every expected unit of a set of tagged records landed in a file
/// region (parsed in 16-byte units from a 16-aligned file offset).
struct Census {
    /// (writer, rec) -> the file offset of each of its units (None: absent).
    pos: HashMap<(u32, u32), Vec<Option<u64>>>,
    duplicates: usize,
    first_duplicate: Option<String>,
    /// Units that are not an expected unit of an expected record (zeros,
    /// torn or stale data, or units beyond a record's expected length).
    foreign: usize,
    first_foreign: Option<String>,
}

impl Census {
    /// `expect`: each record and how many of its units may appear.
    fn take(data: &[u8], base: u64, expect: &[((u32, u32), usize)]) -> Census {
        let mut c = Census {
            pos: expect.iter().map(|&(k, n)| (k, vec![None; n])).collect(),
            duplicates: 0,
            first_duplicate: None,
            foreign: 0,
            first_foreign: None,
        };
        for (i, u) in data.chunks(UNIT).enumerate() {
            let off = base + (i * UNIT) as u64;
            let slot = parse_unit(u).and_then(|(w, r, idx)| {
                c.pos
                    .get_mut(&(w, r))
                    .and_then(|v| v.get_mut(idx as usize))
                    .map(|s| (s, w, r, idx))
            });
            match slot {
                Some((s, w, r, idx)) => {
                    if let Some(prev) = *s {
                        c.duplicates += 1;
                        if c.first_duplicate.is_none() {
                            c.first_duplicate = Some(format!(
                                "unit {idx} of record {r} (writer {w}) is at offsets {prev} and {off}"
                            ));
                        }
                    } else {
                        *s = Some(off);
                    }
                }
                None => {
                    c.foreign += 1;
                    if c.first_foreign.is_none() {
                        let what = if u.iter().all(|&b| b == 0) {
                            "zeros (a hole: data lost?)".to_string()
                        } else {
                            hex16(u)
                        };
                        c.first_foreign = Some(format!("offset {off}: {what}"));
                    }
                }
            }
        }
        c
    }

    fn missing(&self, key: (u32, u32)) -> usize {
        self.pos
            .get(&key)
            .map_or(0, |v| v.iter().filter(|p| p.is_none()).count())
    }

    /// All units present, in order, back to back.
    fn contiguous(&self, key: (u32, u32)) -> bool {
        let Some(v) = self.pos.get(&key) else {
            return true;
        };
        let Some(Some(first)) = v.first().copied() else {
            return v.is_empty();
        };
        v.iter()
            .enumerate()
            .all(|(i, p)| *p == Some(first + (i * UNIT) as u64))
    }

    /// How many contiguous pieces the present units of `key` form.
    fn pieces(&self, key: (u32, u32)) -> usize {
        let Some(v) = self.pos.get(&key) else {
            return 0;
        };
        let mut n = 0;
        let mut prev: Option<u64> = None;
        for p in v {
            match (*p, prev) {
                (Some(o), Some(q)) if o == q + UNIT as u64 => {}
                (Some(_), _) => n += 1,
                (None, _) => {}
            }
            prev = *p;
        }
        n
    }

    /// Fails on duplicates and foreign units.
    fn clean(&self, what: &str) -> Result<(), String> {
        ensure_str!(
            self.duplicates == 0,
            "{what}: {} units appear more than once, e.g. {}",
            self.duplicates,
            self.first_duplicate.as_deref().unwrap_or("?")
        );
        ensure_str!(
            self.foreign == 0,
            "{what}: {} 16-byte units are not data of any expected record, first at {}",
            self.foreign,
            self.first_foreign.as_deref().unwrap_or("?")
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Shared plumbing.

/// Reads from `rd` until EOF or `deadline`: (bytes, reached EOF).
fn read_until_eof(rd: &mut File, deadline: Instant) -> Result<(Vec<u8>, bool), String> {
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok((out, false));
        }
        let ready = sys::poll_readable(rd, left.min(Duration::from_millis(100)))
            .map_err(|e| format!("poll pipe: {e}"))?;
        if !ready {
            continue;
        }
        let mut buf = [0u8; 4096];
        match rd.read(&mut buf) {
            Ok(0) => return Ok((out, true)),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read pipe: {e}")),
        }
    }
}

/// Waits up to `timeout` for one byte on `rd` (a start signal).
fn wait_byte(rd: &mut File, timeout: Duration) -> Result<(), String> {
    ensure_str!(
        sys::poll_readable(rd, timeout).map_err(|e| format!("poll: {e}"))?,
        "no start signal within {timeout:?}"
    );
    let mut b = [0u8; 1];
    match rd.read(&mut b) {
        Ok(1) => Ok(()),
        Ok(_) => Err("the start pipe was closed".into()),
        Err(e) => Err(format!("read start pipe: {e}")),
    }
}

/// A forked child that is SIGKILLed and reaped (bounded) unless it was
/// waited for.
struct ChildGuard {
    pid: i32,
    done: bool,
}

impl ChildGuard {
    fn wait(&mut self, deadline: Instant) -> Result<Option<WaitStatus>, String> {
        let s = wait_child(self.pid, deadline)?;
        self.done = true;
        Ok(s)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if !self.done {
            let _ = sys::kill(self.pid, libc::SIGKILL);
            let _ = wait_child(self.pid, Instant::now() + Duration::from_secs(5));
        }
    }
}

/// Submits `ops` keeping at most `depth` in flight (several per io_submit
/// when there is room), reaps everything, and runs `check` on each
/// completion.
fn pipelined(
    ring: &mut Ring,
    ops: Vec<Op>,
    depth: usize,
    mut check: impl FnMut(&Completion) -> Result<(), String>,
) -> Result<(), String> {
    let total = ops.len();
    let mut queue = ops.into_iter();
    let (mut inflight, mut done) = (0usize, 0usize);
    let deadline = Instant::now() + REAP_TIMEOUT;
    while done < total {
        let mut batch = Vec::new();
        while inflight + batch.len() < depth {
            match queue.next() {
                Some(op) => batch.push(op),
                None => break,
            }
        }
        if !batch.is_empty() {
            let n = batch.len();
            ring.submit_all(batch)?;
            inflight += n;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        ensure_str!(
            !left.is_zero(),
            "timed out after {REAP_TIMEOUT:?}: {done} of {total} requests completed"
        );
        let cs = match ring.getevents(1, depth, Some(left)) {
            Ok(cs) => cs,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("io_getevents: {e}")),
        };
        for c in &cs {
            check(c)?;
        }
        inflight = inflight.saturating_sub(cs.len());
        done += cs.len();
    }
    Ok(())
}

/// A read buffer after a request that may have been cut short (cancelled,
/// or torn down): the pattern up to some point, untouched poison after.
/// Returns how many bytes hold data.
fn prefix_then_poison(op: &Op, seed: u64) -> Result<usize, String> {
    let buf = op.buf();
    let want = pattern::make(seed, op.offset(), buf.len());
    let good = buf
        .iter()
        .zip(&want)
        .position(|(a, b)| a != b)
        .unwrap_or(buf.len());
    if let Some(i) = buf[good..].iter().position(|&b| b != READ_POISON) {
        return Err(format!(
            "read at {}: bytes 0..{good} are correct data, but byte {} is neither data nor the untouched poison",
            op.offset(),
            good + i
        ));
    }
    Ok(good)
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

// ---------------------------------------------------------------------------
// write/overlap_order

/// Eight overlapping 100-byte writes at the same unaligned offset of a cold
/// block (1000: it straddles two 1 KiB blocks), in one io_submit, each with
/// its own data: the range must hold the last one submitted (a synchronous
/// kernel executes them in order; a kernel that parks some on the block
/// read and lets others through reorders them). Then eight 100-byte
/// O_APPEND records in one io_submit onto a cold partial last block: they
/// must land in submission order. 10 rounds, cold again each time.
pub fn overlap_order(ctx: &Ctx) -> TestResult {
    const OLD: u64 = 0x0E00;
    const OFF: u64 = 1000;
    const LEN: usize = 100;
    const N: usize = 8;
    const ROUNDS: u64 = 10;
    require_slow(ctx)?;
    let f = create_pattern_file(&ctx.path("overlap"), OLD, 64 * KIB as u64)?;
    let mut m = Model::pattern(OLD, 64 * KIB);
    let app_path = ctx.path("append");
    let base = create_pattern_file(&app_path, OLD + 1, 10_000)?;
    let app = OpenOptions::new()
        .append(true)
        .open(&app_path)
        .map_err(|e| format!("open O_APPEND: {e}"))?;
    let mut expect_app = pattern::make(OLD + 1, 0, 10_000);
    let mut ring = Ring::new(16)?;
    let mut last_seed = OLD;
    for round in 0..ROUNDS {
        ctx.step(&format!("round {round}: {N} overlapping writes"));
        ctx.make_cold(&f)?;
        let seeds: Vec<u64> = (0..N as u64).map(|i| 0x0E10 + round * 16 + i).collect();
        let ops = seeds
            .iter()
            .enumerate()
            .map(|(i, &s)| pwrite_pattern(f.as_raw_fd(), s, OFF, LEN).with_data(i as u64))
            .collect();
        ring.submit_all(ops)?;
        for c in ring.reap(N, REAP_TIMEOUT)? {
            c.expect_res(LEN as i64)
                .map_err(|e| format!("round {round}: overlapping write: {e}"))?;
        }
        let got = pread_full(&f, OFF, LEN)?;
        let winner = seeds
            .iter()
            .position(|&s| got == pattern::make(s, OFF, LEN));
        match winner {
            Some(k) if k == N - 1 => {}
            Some(k) => {
                return Err(format!(
                    "round {round}: after {N} overlapping {LEN}-byte writes at {OFF} in one io_submit (all reaped with res {LEN}), the range holds write #{k} (0-based submission order), not the last one (#{}): the writes were executed out of submission order",
                    N - 1
                )
                .into())
            }
            None => {
                let e = pattern::compare(&got, &pattern::make(seeds[N - 1], OFF, LEN), OFF, &seeds)
                    .err()
                    .unwrap_or_default();
                return Err(format!(
                    "round {round}: after {N} overlapping writes at {OFF} the range holds none of them whole (torn): {e}"
                )
                .into());
            }
        }
        last_seed = seeds[N - 1];
        m.put(last_seed, OFF, LEN);
        m.check(
            &f,
            &[last_seed, OLD],
            &format!("round {round}: the whole file after the overlapping writes"),
        )?;

        ctx.step(&format!("round {round}: {N} O_APPEND records"));
        ctx.make_cold(&base)?;
        let start = expect_app.len();
        let recs: Vec<(u64, usize)> = (0..N as u64)
            .map(|i| (0x0EA0 + round * 16 + i, LEN))
            .collect();
        let ops = recs
            .iter()
            .enumerate()
            .map(|(i, &(s, len))| {
                Op::pwrite(app.as_raw_fd(), 0, pattern::make(s, 0, len)).with_data(i as u64)
            })
            .collect();
        ring.submit_all(ops)?;
        for c in ring.reap(N, REAP_TIMEOUT)? {
            c.expect_res(LEN as i64)
                .map_err(|e| format!("round {round}: O_APPEND record: {e}"))?;
        }
        let got = pread_full(&base, 0, start + N * LEN + 1)?;
        ensure!(
            got.len() == start + N * LEN,
            "round {round}: file size {} after {N} O_APPEND records of {LEN} onto {start}",
            got.len()
        );
        ensure!(
            got[..start] == expect_app[..],
            "round {round}: bytes before the old EOF ({start}) changed under O_APPEND: {}",
            pattern::compare(&got[..start], &expect_app, 0, &[OLD + 1])
                .err()
                .unwrap_or_default()
        );
        let order = append_order(&got, start, &recs).map_err(|e| format!("round {round}: {e}"))?;
        let idx: Vec<usize> = order
            .iter()
            .filter_map(|s| recs.iter().position(|r| r.0 == *s))
            .collect();
        ensure!(
            idx.iter().copied().eq(0..N),
            "round {round}: {N} O_APPEND records submitted in one io_submit landed in the order {idx:?} (submission indices), expected 0..{N} in order",
        );
        expect_app = got;
    }
    ring.finish(REAP_TIMEOUT)?;
    ctx.drop_caches()?;
    m.check(&f, &[last_seed, OLD], "after drop_caches")?;
    let got = pread_full(&base, 0, expect_app.len() + 1)?;
    ensure!(
        got == expect_app,
        "the O_APPEND file after drop_caches differs from what was read back before: {}",
        pattern::compare(&got, &expect_app, 0, &[OLD + 1])
            .err()
            .unwrap_or_default()
    );
    println!(
        "{ROUNDS} rounds: {N} overlapping writes ended with the last one, {N} O_APPEND records landed in order"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// retry/no_spurious_eintr

#[derive(Default)]
struct Interruptions {
    epoll_calls: u64,
    epoll_eintr: u64,
    sigwait_calls: u64,
    sigwait_eintr: u64,
    getevents_eintr: u64,
}

impl Interruptions {
    /// sigtimedwait on a blocked, empty (nothing pending) set, 50 ms.
    fn sigwait_probe(&mut self) -> Result<(), String> {
        self.sigwait_calls += 1;
        match sys::sigtimedwait(&[libc::SIGUSR2], Duration::from_millis(50)) {
            Ok(None) => Ok(()),
            Ok(Some(sig)) => Err(format!(
                "sigtimedwait returned signal {sig} although none was sent"
            )),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {
                self.sigwait_eintr += 1;
                Ok(())
            }
            Err(e) => Err(format!("sigtimedwait: {e}")),
        }
    }

    /// Reaps `n` requests of `ring` that signal `efd`, waiting in
    /// epoll_wait (5 s) on it; counts EINTRs. Also checks the eventfd
    /// counts exactly `n`.
    fn reap_via_epoll(
        &mut self,
        ring: &mut Ring,
        ep: &impl AsRawFd,
        efd: &mut File,
        n: usize,
        what: &str,
    ) -> Result<Vec<Completion>, String> {
        let mut out: Vec<Completion> = Vec::new();
        let mut counted = 0u64;
        let deadline = Instant::now() + REAP_TIMEOUT;
        while out.len() < n || counted < n as u64 {
            ensure_str!(
                Instant::now() < deadline,
                "{what}: not all completions within {REAP_TIMEOUT:?} ({} reaped, eventfd counted {counted})",
                out.len()
            );
            self.epoll_calls += 1;
            match sys::epoll_wait(ep, 4, Duration::from_secs(5)) {
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {
                    self.epoll_eintr += 1;
                    continue;
                }
                Err(e) => return Err(format!("{what}: epoll_wait: {e}")),
                Ok(v) if v.is_empty() => {
                    return Err(format!(
                        "{what}: epoll_wait timed out (5 s) with {} of {n} completions reaped and the eventfd counting {counted}: a completion or its eventfd notification is missing",
                        out.len()
                    ))
                }
                Ok(_) => {}
            }
            counted += read_eventfd(efd)?;
            ensure_str!(
                counted <= n as u64,
                "{what}: the eventfd counted {counted} completions for {n} requests"
            );
            while out.len() < n {
                match ring.getevents(0, n - out.len(), Some(Duration::ZERO)) {
                    Ok(cs) => {
                        out.extend(cs);
                        break;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => self.getevents_eintr += 1,
                    Err(e) => return Err(format!("{what}: io_getevents(timeout 0): {e}")),
                }
            }
        }
        Ok(out)
    }
}

/// No signal handler, no signal sent: a thread that submitted cold reads
/// and cold partial-block writes (with an eventfd) and waits for them in
/// epoll_wait on that eventfd must never see EINTR; nor may a 50 ms
/// sigtimedwait on a blocked, empty set, called while the requests are in
/// flight and between batches (it must time out with EAGAIN). 20 rounds.
/// A retry notification that works like a signal (TWA_SIGNAL task_work)
/// ends such sleeps with -EINTR unless the syscall restarts.
pub fn no_spurious_eintr(ctx: &Ctx) -> TestResult {
    const SEED: u64 = 0xE147;
    const NEW: u64 = 0xE1A0;
    const N: usize = 16;
    const STRIDE: u64 = 128 * 1024;
    const RLEN: usize = 16 * KIB;
    const WLEN: usize = 100;
    const ROUNDS: u64 = 20;
    require_slow(ctx)?;
    let size = N as u64 * STRIDE;
    let f = create_pattern_file(&ctx.path("data"), SEED, size)?;
    fadvise_random(&f)?;
    let fd = f.as_raw_fd();
    let mut m = Model::pattern(SEED, size as usize);
    let efd_owned = sys::eventfd(0, libc::EFD_NONBLOCK).map_err(|e| format!("eventfd: {e}"))?;
    let efd_raw = efd_owned.as_raw_fd();
    let mut efd = File::from(efd_owned);
    let ep = sys::epoll_create().map_err(|e| format!("epoll_create1: {e}"))?;
    sys::epoll_add(&ep, efd_raw, libc::EPOLLIN as u32, 1)
        .map_err(|e| format!("epoll_ctl(ADD eventfd): {e}"))?;
    sys::block_signals(&[libc::SIGUSR2], true)
        .map_err(|e| format!("pthread_sigmask(BLOCK SIGUSR2): {e}"))?;
    let mut ring = Ring::new(2 * N as u32)?;
    let mut st = Interruptions::default();
    let mut seeds = vec![SEED];
    let result = (|| -> TestResult {
        for round in 0..ROUNDS {
            ctx.step(&format!("round {round}: cold reads"));
            ctx.make_cold(&f)?;
            let ops = (0..N as u64)
                .map(|i| {
                    Op::pread(fd, i * STRIDE + round * 4096 + 512, RLEN)
                        .with_data(i)
                        .with_resfd(efd_raw)
                })
                .collect();
            ring.submit_all(ops)?;
            st.sigwait_probe()?;
            let what = format!("round {round}, cold reads");
            for c in st.reap_via_epoll(&mut ring, &ep, &mut efd, N, &what)? {
                let op = c.op()?;
                c.expect_res(RLEN as i64)
                    .map_err(|e| format!("{what}: {e}"))?;
                let o = op.offset() as usize;
                pattern::compare(op.buf(), &m.bytes[o..o + RLEN], op.offset(), &seeds)
                    .map_err(|e| format!("{what}: {e}"))?;
            }
            st.sigwait_probe()?;

            ctx.step(&format!("round {round}: cold partial-block writes"));
            ctx.make_cold(&f)?;
            let seed = NEW + round;
            seeds.push(seed);
            let offs: Vec<u64> = (0..N as u64)
                .map(|i| i * STRIDE + 32 * 1024 + 1000 + (round * 97) % 2000)
                .collect();
            let ops = offs
                .iter()
                .enumerate()
                .map(|(i, &o)| {
                    pwrite_pattern(fd, seed, o, WLEN)
                        .with_data(i as u64)
                        .with_resfd(efd_raw)
                })
                .collect();
            ring.submit_all(ops)?;
            st.sigwait_probe()?;
            let what = format!("round {round}, cold partial-block writes");
            for c in st.reap_via_epoll(&mut ring, &ep, &mut efd, N, &what)? {
                c.expect_res(WLEN as i64)
                    .map_err(|e| format!("{what}: {e}"))?;
            }
            for &o in &offs {
                m.put(seed, o, WLEN);
                let page = o & !4095;
                let got = pread_full(&f, page, 4096)?;
                pattern::compare(
                    &got,
                    &m.bytes[page as usize..page as usize + 4096],
                    page,
                    &seeds,
                )
                .map_err(|e| format!("{what}: the page around the write at {o}: {e}"))?;
            }
            st.sigwait_probe()?;
        }
        Ok(())
    })();
    let unblocked = sys::block_signals(&[libc::SIGUSR2], false);
    result?;
    unblocked.map_err(|e| format!("pthread_sigmask(UNBLOCK SIGUSR2): {e}"))?;
    ring.finish(REAP_TIMEOUT)?;
    println!(
        "{ROUNDS} rounds of {N} cold reads + {N} cold writes: epoll_wait called {} times, EINTR {}; sigtimedwait(50 ms) called {} times, EINTR {}; io_getevents(timeout 0) EINTR {}",
        st.epoll_calls, st.epoll_eintr, st.sigwait_calls, st.sigwait_eintr, st.getevents_eintr
    );
    ensure!(
        st.epoll_eintr == 0,
        "epoll_wait returned EINTR {} times (of {} calls) although no signal was sent and no handler is installed: a wake-up for the AIO retry (task_work) reached user space as an interruption",
        st.epoll_eintr,
        st.epoll_calls
    );
    ensure!(
        st.sigwait_eintr == 0,
        "sigtimedwait(50 ms) on a blocked set with nothing pending returned EINTR {} times (of {}) instead of EAGAIN: a wake-up for the AIO retry (task_work) reached user space as an interruption",
        st.sigwait_eintr,
        st.sigwait_calls
    );
    ensure!(
        st.getevents_eintr == 0,
        "io_getevents(timeout 0) returned EINTR {} times although no signal was sent",
        st.getevents_eintr
    );
    m.check(&f, &seeds, "the whole file at the end")?;
    Ok(())
}

// ---------------------------------------------------------------------------
// write/rlimit_append_batch

const RL_LIMIT: u64 = MIB as u64;
const RL_N: usize = 32;
const RL_REC: usize = 64 * KIB;

/// The forked child of `rlimit_append_batch`: SIGXFSZ ignored,
/// RLIMIT_FSIZE = 1 MiB, 32 O_APPEND writes in one io_submit, results
/// (`O` + 32 x i64 LE, or `E` + message) to `tell`. Never returns.
fn rlimit_child(fd: i32, mut tell: File) -> ! {
    let r = (|| -> Result<Vec<i64>, String> {
        sys::ignore_signal(libc::SIGXFSZ, true).map_err(|e| format!("ignore SIGXFSZ: {e}"))?;
        let (_, hard) =
            sys::getrlimit(libc::RLIMIT_FSIZE).map_err(|e| format!("getrlimit(FSIZE): {e}"))?;
        sys::setrlimit(libc::RLIMIT_FSIZE, RL_LIMIT, hard.max(RL_LIMIT))
            .map_err(|e| format!("setrlimit(FSIZE, {RL_LIMIT}): {e}"))?;
        let mut ring = Ring::new(RL_N as u32)?;
        let ops = (0..RL_N)
            .map(|i| Op::pwrite(fd, 0, tagged(0, i as u32, RL_REC)).with_data(i as u64))
            .collect();
        ring.submit_all(ops)?;
        let mut res = vec![i64::MIN; RL_N];
        for c in ring.reap(RL_N, REAP_TIMEOUT)? {
            let i = c.event.data as usize;
            ensure_str!(i < RL_N, "event with data {i}");
            res[i] = c.event.res;
        }
        ring.finish(REAP_TIMEOUT)?;
        Ok(res)
    })();
    let (msg, code) = match r {
        Ok(res) => {
            let mut m = vec![b'O'];
            for v in res {
                m.extend_from_slice(&v.to_le_bytes());
            }
            (m, 0)
        }
        Err(e) => {
            let mut m = vec![b'E'];
            m.extend_from_slice(e.as_bytes());
            (m, 3)
        }
    };
    let _ = tell.write_all(&msg);
    sys::exit_now(code)
}

/// In a forked child with SIGXFSZ ignored and RLIMIT_FSIZE = 1 MiB: 32 x
/// 64 KiB O_APPEND writes in one io_submit onto an empty file, then onto
/// one holding 100 KiB of cold data. The file ends at exactly 1 MiB (never
/// past it), at least one write gets -EFBIG, results are full, one short
/// write ending at the limit, or -EFBIG (never a kernel-internal errno),
/// the positive results add up to the bytes that landed, and exactly
/// those bytes (a prefix of each successful write) are in the file, once.
/// A kernel that checks the limit only at io_submit (when EOF is still
/// the old one for every append of the batch), or applies it in a context
/// with other rlimits, lets the file grow past the limit.
pub fn rlimit_append_batch(ctx: &Ctx) -> TestResult {
    const OLD: u64 = 0xF5A0;
    for (round, initial) in [(0u32, 0u64), (1, 100 * KIB as u64)] {
        ctx.step(&format!("round {round}: file of {initial} bytes"));
        let path = ctx.path(&format!("append{round}"));
        let f = create_pattern_file(&path, OLD, initial)?;
        ctx.make_cold(&f)?;
        let app = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| format!("open O_APPEND: {e}"))?;
        let (rd, wr) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
        let pid = sys::fork().map_err(|e| format!("fork: {e}"))?;
        if pid == 0 {
            drop(rd);
            rlimit_child(app.as_raw_fd(), File::from(wr));
        }
        drop(wr);
        let mut child = ChildGuard { pid, done: false };
        let deadline = Instant::now() + Duration::from_secs(60);
        let (report, eof) = read_until_eof(&mut File::from(rd), deadline)?;
        let status = child.wait(deadline)?;
        ensure!(
            eof && status == Some(WaitStatus::Exited(0)) && report.first() == Some(&b'O'),
            "round {round}: the child ended with {status:?}: {}",
            String::from_utf8_lossy(report.get(1..).unwrap_or_default())
        );
        ensure!(
            report.len() == 1 + 8 * RL_N,
            "round {round}: child report of {} bytes",
            report.len()
        );
        let res: Vec<i64> = report[1..]
            .chunks(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                i64::from_le_bytes(b)
            })
            .collect();
        let size = file_len(&f)?;
        ensure!(
            size <= RL_LIMIT,
            "round {round}: file grew to {size} bytes, past RLIMIT_FSIZE = {RL_LIMIT} ({RL_N} x {RL_REC} O_APPEND writes in one io_submit onto {initial} bytes; results {res:?})"
        );
        ensure!(
            size == RL_LIMIT,
            "round {round}: file grew to {size} bytes, expected exactly RLIMIT_FSIZE = {RL_LIMIT} ({RL_N} x {RL_REC} O_APPEND writes onto {initial} bytes; results {res:?})"
        );
        let efbig = -(libc::EFBIG as i64);
        for (i, &r) in res.iter().enumerate() {
            ensure!(
                !is_kernel_internal_errno(r),
                "round {round}: write {i}: res {r} ({}) is a kernel-internal errno",
                describe_res(r)
            );
            ensure!(
                r == efbig || (r > 0 && r <= RL_REC as i64),
                "round {round}: write {i}: res {r} ({}), expected {RL_REC}, a short write ending at the limit, or -EFBIG",
                describe_res(r)
            );
        }
        let n_efbig = res.iter().filter(|&&r| r == efbig).count();
        ensure!(
            n_efbig > 0,
            "round {round}: no write got -EFBIG although {RL_N} x {RL_REC} bytes were appended onto {initial} under a limit of {RL_LIMIT}: {res:?}"
        );
        let sum: u64 = res.iter().filter(|&&r| r > 0).map(|&r| r as u64).sum();
        ensure!(
            sum == size - initial,
            "round {round}: the positive results add up to {sum} bytes, but {} bytes landed (file grew to {size} bytes from {initial})",
            size - initial
        );
        let got = pread_full(&f, 0, size as usize + 1)?;
        pattern::compare(
            &got[..initial as usize],
            &pattern::make(OLD, 0, initial as usize),
            0,
            &[OLD],
        )
        .map_err(|e| format!("round {round}: the data before the appends changed: {e}"))?;
        let expect: Vec<((u32, u32), usize)> = res
            .iter()
            .enumerate()
            .filter(|(_, &r)| r > 0)
            .map(|(i, &r)| ((0, i as u32), r as usize / UNIT))
            .collect();
        let c = Census::take(&got[initial as usize..], initial, &expect);
        c.clean(&format!("round {round}: the appended bytes"))?;
        for &(k, n) in &expect {
            let miss = c.missing(k);
            ensure!(
                miss == 0,
                "round {round}: write {} (res {}): {miss} of its {n} units are not in the file",
                k.1,
                res[k.1 as usize]
            );
        }
        let full = res.iter().filter(|&&r| r == RL_REC as i64).count();
        let first_fail = res.iter().position(|&r| r <= 0).unwrap_or(RL_N);
        println!(
            "round {round} (file of {initial} bytes): {full} full, {} short, {n_efbig} -EFBIG; the first {first_fail} in submission order succeeded; size {size}",
            RL_N - full - n_efbig
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// write/append_vs_throttled_appender

const DIRTY_BYTES: &str = "/proc/sys/vm/dirty_bytes";
const DIRTY_RATIO: &str = "/proc/sys/vm/dirty_ratio";

fn read_sysctl(p: &str) -> Result<u64, String> {
    std::fs::read_to_string(p)
        .map_err(|e| format!("read {p}: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("parse {p}: {e}"))
}

fn write_sysctl(p: &str, v: u64) -> Result<(), String> {
    std::fs::write(p, format!("{v}\n")).map_err(|e| format!("write {v} to {p}: {e}"))
}

/// `vm.dirty_bytes` set for a test; the old dirty_bytes / dirty_ratio pair
/// is restored on drop (writing one of them zeroes the other, so the one
/// that was in effect is written back).
struct DirtyLimit {
    old_bytes: u64,
    old_ratio: u64,
    restored: bool,
}

impl DirtyLimit {
    fn set(bytes: u64) -> Result<DirtyLimit, String> {
        let old_bytes = read_sysctl(DIRTY_BYTES)?;
        let old_ratio = read_sysctl(DIRTY_RATIO)?;
        let guard = DirtyLimit {
            old_bytes,
            old_ratio,
            restored: false,
        };
        write_sysctl(DIRTY_BYTES, bytes)?;
        Ok(guard)
    }

    fn restore(&mut self) -> Result<(), String> {
        if self.restored {
            return Ok(());
        }
        self.restored = true;
        if self.old_bytes > 0 {
            write_sysctl(DIRTY_BYTES, self.old_bytes)?;
        } else {
            write_sysctl(DIRTY_RATIO, self.old_ratio)?;
        }
        let (b, r) = (read_sysctl(DIRTY_BYTES)?, read_sysctl(DIRTY_RATIO)?);
        ensure_str!(
            (b, r) == (self.old_bytes, self.old_ratio),
            "restoring the dirty limits left dirty_bytes={b} dirty_ratio={r}, expected {}/{}",
            self.old_bytes,
            self.old_ratio
        );
        Ok(())
    }
}

impl Drop for DirtyLimit {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            println!("warning: {e}");
        }
    }
}

/// The write(2) appender of `append_vs_throttled_appender`: waits for the
/// start byte, appends `n` records of `len` bytes (writer 1), each with one
/// write(2) that must be full; reports `ok <ms>` or the error. Never returns.
fn appender_child(mut f: File, mut go: File, mut tell: File, n: u32, len: usize) -> ! {
    let r = (|| -> Result<u128, String> {
        wait_byte(&mut go, Duration::from_secs(30))?;
        let t0 = Instant::now();
        for rec in 0..n {
            let buf = tagged(1, rec, len);
            match f.write(&buf) {
                Ok(k) if k == len => {}
                Ok(k) => {
                    return Err(format!(
                        "write(2) of record {rec}: short write of {k} of {len} bytes"
                    ))
                }
                Err(e) => return Err(format!("write(2) of record {rec}: {e}")),
            }
        }
        Ok(t0.elapsed().as_millis())
    })();
    let (msg, code) = match r {
        Ok(ms) => (format!("ok {ms}"), 0),
        Err(e) => (e, 3),
    };
    let _ = tell.write_all(msg.as_bytes());
    sys::exit_now(code)
}

/// With `vm.dirty_bytes` = 256 KiB (writers are throttled all the time;
/// the old dirty_bytes/dirty_ratio are restored afterwards, also on
/// failure), this process appends 24 x 256 KiB records with O_APPEND AIO
/// (up to 4 in flight) while a forked child appends 400 x 4 KiB records
/// with O_APPEND write(2) to the same file. Every 16-byte unit is tagged
/// (record, unit, writer). Afterwards: st_size is the sum of all records,
/// every unit of every record is in the file exactly once, and each
/// write(2) record is contiguous (atomic under i_rwsem). AIO records may be
/// split at EOF by the other appender, but nothing may be lost, duplicated
/// or overwritten — which is what happens if a write resumed after
/// throttling reuses a stale O_APPEND position.
pub fn append_vs_throttled_appender(ctx: &Ctx) -> TestResult {
    const AIO_RECS: u32 = 32;
    const AIO_LEN: usize = 256 * KIB;
    const SYNC_RECS: u32 = 2000;
    const SYNC_LEN: usize = 4 * KIB;
    const DEPTH: usize = 4;
    const LIMIT: u64 = 262_144;
    require_guest(ctx, "changes /proc/sys/vm/dirty_bytes")?;
    let path = ctx.path("log");
    let f = super::create_empty(&path)?;
    let open_append = || {
        OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| format!("open O_APPEND: {e}"))
    };
    let aio_fd = open_append()?;
    let sync_fd = open_append()?;
    // Declared before the limit so that on a failure path the limit is
    // restored before the ring's drop waits for writes still in flight.
    let mut ring = Ring::new(2 * DEPTH as u32)?;
    let start = Instant::now();
    let mut dirty = DirtyLimit::set(LIMIT)?;
    let (go_rd, go_wr) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (rep_rd, rep_wr) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
    let pid = sys::fork().map_err(|e| format!("fork: {e}"))?;
    if pid == 0 {
        drop(go_wr);
        drop(rep_rd);
        appender_child(
            sync_fd,
            File::from(go_rd),
            File::from(rep_wr),
            SYNC_RECS,
            SYNC_LEN,
        );
    }
    drop(go_rd);
    drop(rep_wr);
    drop(sync_fd);
    let mut child = ChildGuard { pid, done: false };
    let ops = (0..AIO_RECS)
        .map(|r| Op::pwrite(aio_fd.as_raw_fd(), 0, tagged(0, r, AIO_LEN)).with_data(r as u64))
        .collect();
    File::from(go_wr)
        .write_all(b"g")
        .map_err(|e| format!("start the appender: {e}"))?;
    let t0 = Instant::now();
    pipelined(&mut ring, ops, DEPTH, |c| {
        c.expect_res(AIO_LEN as i64)
            .map_err(|e| format!("O_APPEND AIO record: {e}"))
    })?;
    let aio_took = t0.elapsed();
    ring.finish(REAP_TIMEOUT)?;
    // One bound for the whole run (well inside the runner's per-test
    // timeout, whose SIGKILL would leave the limit in place).
    let deadline = (start + Duration::from_secs(80)).max(Instant::now() + Duration::from_secs(5));
    let (report, _) = read_until_eof(&mut File::from(rep_rd), deadline)?;
    let status = child.wait(deadline)?;
    dirty.restore()?;
    let report = String::from_utf8_lossy(&report).into_owned();
    ensure!(
        status == Some(WaitStatus::Exited(0)),
        "the write(2) appender ended with {status:?}: {report}"
    );
    let (size, problems, splits) = append_census(&f, AIO_RECS, AIO_LEN, SYNC_RECS, SYNC_LEN)?;
    println!(
        "dirty_bytes {LIMIT}: {AIO_RECS} AIO appends of {} KiB took {} ms; the write(2) appender reported {report:?}; AIO records split by the other appender: {splits} times; file size {size}",
        AIO_LEN / KIB,
        aio_took.as_millis()
    );
    report_append_problems(
        problems,
        "concurrent O_APPEND AIO and write(2) appends under dirty throttling",
    )
}

/// The file after `aio_recs` O_APPEND AIO records (writer 0) and
/// `sync_recs` write(2) records (writer 1, each atomic) were appended
/// concurrently: (st_size, problems, how often AIO records were split by
/// the other appender). Problems: a size other than the sum of all
/// records, a unit of any record missing (overwritten), a write(2) record
/// not contiguous, duplicated or foreign units.
fn append_census(
    f: &File,
    aio_recs: u32,
    aio_len: usize,
    sync_recs: u32,
    sync_len: usize,
) -> Result<(u64, Vec<String>, usize), String> {
    let size = file_len(f)?;
    let total = aio_recs as u64 * aio_len as u64 + sync_recs as u64 * sync_len as u64;
    let data = pread_full(f, 0, size as usize + 1)?;
    let mut expect: Vec<((u32, u32), usize)> =
        (0..aio_recs).map(|r| ((0, r), aio_len / UNIT)).collect();
    expect.extend((0..sync_recs).map(|r| ((1, r), sync_len / UNIT)));
    let c = Census::take(&data, 0, &expect);
    let mut problems = Vec::new();
    if size != total {
        problems.push(format!(
            "st_size is {size}, expected {total} ({aio_recs} x {aio_len} AIO + {sync_recs} x {sync_len} write(2) records)"
        ));
    }
    for r in 0..aio_recs {
        let miss = c.missing((0, r));
        if miss > 0 {
            problems.push(format!(
                "{miss} units of aio record {r} missing (overwritten)"
            ));
        }
    }
    for r in 0..sync_recs {
        let miss = c.missing((1, r));
        if miss > 0 {
            problems.push(format!(
                "{miss} units of write(2) record {r} missing (overwritten)"
            ));
        } else if !c.contiguous((1, r)) {
            problems.push(format!(
                "write(2) record {r} is not contiguous: an O_APPEND write(2) was split or interleaved"
            ));
        }
    }
    if let Err(e) = c.clean("the file") {
        problems.push(e);
    }
    let splits: usize = (0..aio_recs)
        .map(|r| c.pieces((0, r)).saturating_sub(1))
        .sum();
    Ok((size, problems, splits))
}

fn report_append_problems(mut problems: Vec<String>, what: &str) -> TestResult {
    if problems.is_empty() {
        return Ok(());
    }
    let n = problems.len();
    problems.truncate(12);
    Err(format!("{n} problem(s) after {what}:\n  {}", problems.join("\n  ")).into())
}

// ---------------------------------------------------------------------------
// write/append_vs_dio_appender

/// 64 rounds, with `vm.dirty_bytes` = 256 KiB: the file's dirty pages are
/// written back (fdatasync), then this thread submits one 512 KiB O_APPEND
/// AIO record while another thread, woken just before and after a random
/// 0-1 ms, appends one 4 KiB record with O_DIRECT|O_APPEND write(2). The
/// AIO record starts below the dirty limit and crosses it, so its first
/// locked pass ends part way (throttled); a series that finishes it later
/// continues it after dropping i_rwsem. The direct write dirties no page
/// cache, so it is not throttled and does not hold i_rwsem across a
/// throttle; when it arrives during the AIO record's first pass it waits
/// for i_rwsem and takes it before whatever continues the record. The
/// continuation must then append after it (the record is split, which is
/// allowed); a continuation at the position where the first pass ended
/// overwrites it. The same census as `append_vs_throttled_appender`: file
/// size, every unit of every record exactly once, each write(2) record
/// contiguous. Skips where the filesystem refuses O_DIRECT.
pub fn append_vs_dio_appender(ctx: &Ctx) -> TestResult {
    const ROUNDS: u32 = 64;
    const AIO_LEN: usize = 512 * KIB;
    const DIO_LEN: usize = 4 * KIB;
    const LIMIT: u64 = 262_144;
    require_guest(ctx, "changes /proc/sys/vm/dirty_bytes")?;
    let path = ctx.path("log");
    let f = super::create_empty(&path)?;
    let aio_fd = OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|e| format!("open O_APPEND: {e}"))?;
    let dio_fd = super::open_direct(ctx, &path, OpenOptions::new().append(true))?;
    let mut ring = Ring::new(4)?;
    let mut dirty = DirtyLimit::set(LIMIT)?;
    // (record, delay) to the appender; its outcome back.
    let (go_tx, go_rx) = mpsc::channel::<(u32, Duration)>();
    let (done_tx, done_rx) = mpsc::channel::<Result<bool, String>>();
    let appender = std::thread::spawn(move || {
        let mut buf = match aio::AlignedBuf::new(DIO_LEN, 4096) {
            Ok(b) => b,
            Err(e) => {
                let _ = done_tx.send(Err(e.to_string()));
                return;
            }
        };
        while let Ok((rec, delay)) = go_rx.recv() {
            let t0 = Instant::now();
            buf.as_mut_slice().copy_from_slice(&tagged(1, rec, DIO_LEN));
            while t0.elapsed() < delay {
                std::hint::spin_loop();
            }
            let r = match (&dio_fd).write(buf.as_slice()) {
                Ok(k) if k == DIO_LEN => Ok(true),
                Ok(k) => Err(format!(
                    "O_DIRECT write(2) of record {rec}: short write of {k} of {DIO_LEN} bytes"
                )),
                // EOF not block-aligned at this moment (an AIO record
                // part way): nothing was written.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
                Err(e) => Err(format!("O_DIRECT write(2) of record {rec}: {e}")),
            };
            if done_tx.send(r).is_err() {
                return;
            }
        }
    });
    let stats_before = super::write_async::read_stats()?;
    let mut rng = Rng::new(0xD10A);
    let (mut dio_recs, mut unaligned) = (0u32, 0u32);
    let t0 = Instant::now();
    let r = (|| -> Result<(), String> {
        for round in 0..ROUNDS {
            f.sync_data()
                .map_err(|e| format!("round {round}: fdatasync: {e}"))?;
            go_tx
                .send((dio_recs, Duration::from_micros(rng.below(1001))))
                .map_err(|_| "the O_DIRECT appender is gone".to_string())?;
            let op = Op::pwrite(aio_fd.as_raw_fd(), 0, tagged(0, round, AIO_LEN))
                .with_data(round as u64);
            pipelined(&mut ring, vec![op], 1, |c| {
                c.expect_res(AIO_LEN as i64)
                    .map_err(|e| format!("round {round}: O_APPEND AIO record: {e}"))
            })?;
            match done_rx.recv_timeout(REAP_TIMEOUT) {
                Ok(Ok(true)) => dio_recs += 1,
                Ok(Ok(false)) => unaligned += 1,
                Ok(Err(e)) => return Err(format!("round {round}: {e}")),
                Err(_) => {
                    return Err(format!(
                    "round {round}: the O_DIRECT write(2) did not return within {REAP_TIMEOUT:?}"
                ))
                }
            }
        }
        Ok(())
    })();
    drop(go_tx);
    let aio_took = t0.elapsed();
    if r.is_ok() {
        // Idle (it answered every round): returns at once.
        let _ = appender.join();
    }
    r?;
    ring.finish(REAP_TIMEOUT)?;
    dirty.restore()?;
    let counters = match (stats_before, super::write_async::read_stats()?) {
        (Some(b), Some(a)) => a.delta(&b).nonzero(),
        _ => "-".to_string(),
    };
    let (size, problems, splits) = append_census(&f, ROUNDS, AIO_LEN, dio_recs, DIO_LEN)?;
    println!(
        "dirty_bytes {LIMIT}: {ROUNDS} rounds of one O_APPEND AIO record of {} KiB against one O_DIRECT|O_APPEND record of {} KiB took {} ms ({unaligned} direct writes refused at an unaligned EOF); AIO records split by the direct write: {splits} times; file size {size}; aio/stats {counters}",
        AIO_LEN / KIB,
        DIO_LEN / KIB,
        aio_took.as_millis()
    );
    report_append_problems(
        problems,
        "O_APPEND AIO records against an O_DIRECT appender under dirty throttling",
    )
}

// ---------------------------------------------------------------------------
// write/freeze_parked

/// Thaws the filesystem on drop unless disarmed (the child's FITHAW
/// worked, or it was never frozen).
struct ThawGuard<'a> {
    mnt: &'a File,
    armed: bool,
}

impl Drop for ThawGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = sys::fithaw(self.mnt) {
                println!("warning: FITHAW on the failure path: {e}");
            }
        }
    }
}

/// 16-byte messages `(tag, value)` from a pipe.
struct Messages {
    rd: File,
    buf: Vec<u8>,
}

impl Messages {
    /// The next message, or None if none arrived by `deadline`.
    fn next(&mut self, deadline: Instant) -> Result<Option<(u8, u64)>, String> {
        while self.buf.len() < 16 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            if !sys::poll_readable(&self.rd, left.min(Duration::from_millis(100)))
                .map_err(|e| format!("poll: {e}"))?
            {
                continue;
            }
            let mut b = [0u8; 64];
            match self.rd.read(&mut b) {
                Ok(0) => return Err("the freezer child closed its pipe early".into()),
                Ok(n) => self.buf.extend_from_slice(&b[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read pipe: {e}")),
            }
        }
        let m: Vec<u8> = self.buf.drain(..16).collect();
        let mut v = [0u8; 8];
        v.copy_from_slice(&m[8..16]);
        Ok(Some((m[0], u64::from_le_bytes(v))))
    }
}

fn send_msg(tell: &mut File, tag: u8, v: u64) {
    let mut m = [0u8; 16];
    m[0] = tag;
    m[8..].copy_from_slice(&v.to_le_bytes());
    let _ = tell.write_all(&m);
}

/// The freezer child: waits for the start byte, FIFREEZE (reports `R`,
/// errno), sleeps 500 ms, reports `T` (CLOCK_MONOTONIC ns right before
/// FITHAW), FITHAW (reports `H`, errno). Never returns.
fn freezer_child(mnt: &File, mut go: File, mut tell: File) -> ! {
    if wait_byte(&mut go, Duration::from_secs(30)).is_err() {
        sys::exit_now(4);
    }
    let r = sys::fifreeze(mnt);
    send_msg(
        &mut tell,
        b'R',
        r.as_ref().map_or_else(|e| errno_of(e) as u64, |_| 0),
    );
    if r.is_err() {
        sys::exit_now(0);
    }
    std::thread::sleep(Duration::from_millis(500));
    send_msg(&mut tell, b'T', sys::monotonic_ns());
    let r = sys::fithaw(mnt);
    send_msg(
        &mut tell,
        b'H',
        r.as_ref().map_or_else(|e| errno_of(e) as u64, |_| 0),
    );
    sys::exit_now(0)
}

/// A 100-byte AIO write into the middle of a cold block (parked while the
/// block is read from the slow device, on a kernel that parks; the
/// unpatched kernel just blocks in io_submit), then at once a forked child
/// freezes the filesystem (FIFREEZE on the mount point), waits 500 ms and
/// thaws it (FITHAW). While it is frozen a helper thread pwrite()s 4 KiB
/// to another file of the filesystem. Within 20 s: FIFREEZE returned 0,
/// the pwrite completed only after the thaw started, the AIO write
/// completed with res 100 and its data (and the pwrite's) is right.
///
/// The submitting thread idles in an interruptible wait (a channel), so a
/// retry queued as its task_work can run; the main thread only watches.
/// If FIFREEZE has not returned after 20 s the parked write is holding
/// freeze protection while waiting for something the freeze blocks: the
/// test then fails at once WITHOUT thawing or cleaning up (that would
/// block too); the filesystem stays frozen and the run is wedged — it is
/// the last test in the registry for that reason. Every other path thaws
/// (the child does; a guard thaws if it could not).
pub fn freeze_parked(ctx: &Ctx) -> TestResult {
    const OLD: u64 = 0xF7E0;
    const NEW: u64 = 0xF7E1;
    const OTHER: u64 = 0xF7E2;
    const OFF: u64 = 16 * 1024 + 1000;
    const LEN: usize = 100;
    const DEADLINE: Duration = Duration::from_secs(20);
    require_slow(ctx)?;
    let mnt_path = ctx.dir.parent().ok_or("scratch directory has no parent")?;
    let mnt = File::open(mnt_path).map_err(|e| format!("open {}: {e}", mnt_path.display()))?;
    let f = create_pattern_file(&ctx.path("cold"), OLD, 64 * KIB as u64)?;
    fadvise_random(&f)?;
    let other = open_rw(&ctx.path("other"))?;
    other.set_len(0).map_err(|e| format!("truncate: {e}"))?;
    other.sync_all().map_err(|e| format!("fsync: {e}"))?;
    ctx.make_cold(&f)?;

    // The freezer child first, while this process is single-threaded.
    let (go_rd, go_wr) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (msg_rd, msg_wr) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
    let pid = sys::fork().map_err(|e| format!("fork: {e}"))?;
    if pid == 0 {
        drop(go_wr);
        drop(msg_rd);
        freezer_child(&mnt, File::from(go_rd), File::from(msg_wr));
    }
    drop(go_rd);
    drop(msg_wr);
    let mut child = ChildGuard { pid, done: false };
    let mut go = File::from(go_wr);
    let mut msgs = Messages {
        rd: File::from(msg_rd),
        buf: Vec::new(),
    };

    // The submitting thread: submits, reports, and on the first order (the
    // freezer has been started) does a plain pwrite() to another file of the
    // same filesystem itself, as the reproducer's submitter does: on a
    // kernel whose retry of the parked write can only run in this thread,
    // and which keeps freeze protection across the park, that pwrite blocks
    // in sb_start_write() behind the freeze, which waits for the parked
    // write, whose retry waits for this thread. Then it waits (interruptibly)
    // for the order to reap.
    let fd = f.as_raw_fd();
    let other2 = other.try_clone().map_err(|e| format!("dup: {e}"))?;
    let (pw_tx, pw_rx) = mpsc::channel();
    let (sub_tx, sub_rx) = mpsc::channel::<Result<(), String>>();
    let (cmd_tx, cmd_rx) = mpsc::channel::<()>();
    let submitter = std::thread::spawn(move || -> Result<i64, String> {
        let setup = (|| -> Result<Ring, String> {
            let mut ring = Ring::new(4)?;
            ring.submit_all(vec![pwrite_pattern(fd, NEW, OFF, LEN)])?;
            Ok(ring)
        })();
        let mut ring = match setup {
            Ok(r) => {
                let _ = sub_tx.send(Ok(()));
                r
            }
            Err(e) => {
                let _ = sub_tx.send(Err(e.clone()));
                return Err(e);
            }
        };
        if cmd_rx.recv().is_err() {
            std::mem::forget(ring);
            return Err("abandoned".into());
        }
        // let the freezer get into freeze_super() (spinning: a sleep would
        // give a task_work retry the chance to run)
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        let start = sys::monotonic_ns();
        let r = other2
            .write_all_at(&pattern::make(OTHER, 0, 4096), 0)
            .map_err(|e| format!("pwrite of 4 KiB to another file: {e}"));
        let _ = pw_tx.send((start, r, sys::monotonic_ns()));
        if cmd_rx.recv().is_err() {
            // abandoned (deadlock path): never block in io_destroy here
            std::mem::forget(ring);
            return Err("abandoned".into());
        }
        let res = match ring.reap(1, DEADLINE) {
            Ok(cs) => cs[0].event.res,
            Err(e) => {
                std::mem::forget(ring);
                return Err(e);
            }
        };
        ring.finish(REAP_TIMEOUT)?;
        Ok(res)
    });
    match sub_rx.recv_timeout(DEADLINE) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("io_submit of the 100-byte write: {e}").into()),
        Err(_) => {
            return Err("the submitting thread did not return from io_submit within 20 s".into())
        }
    }
    let t_go = Instant::now();
    go.write_all(b"g")
        .map_err(|e| format!("start the freezer: {e}"))?;
    let _ = cmd_tx.send(());
    let deadline = t_go + DEADLINE;
    let Some((tag, err)) = msgs.next(deadline)? else {
        // Deadlock. Do not thaw, wait, close or destroy anything that could
        // block on the frozen filesystem: report and leave.
        std::mem::forget(child);
        std::mem::forget(f);
        std::mem::forget(other);
        std::mem::forget(mnt);
        std::mem::forget(submitter);
        drop(cmd_tx);
        return Err(
            "FIFREEZE did not return within 20 s: the parked aio write holds freeze protection (deadlock)"
                .into(),
        );
    };
    let freeze_took = t_go.elapsed();
    ensure!(tag == b'R', "unexpected message {tag:#x} from the freezer");
    if err != 0 {
        let _ = pw_rx.recv_timeout(DEADLINE);
        let _ = cmd_tx.send(());
        let res = submitter
            .join()
            .map_err(|_| "the submitting thread panicked".to_string())??;
        let _ = child.wait(Instant::now() + DEADLINE)?;
        ensure!(
            res == LEN as i64,
            "AIO write: res {res} ({})",
            describe_res(res)
        );
        if err == libc::EOPNOTSUPP as u64 {
            return Err(Stop::Skip(
                "FIFREEZE: EOPNOTSUPP (the filesystem cannot be frozen)".into(),
            ));
        }
        return Err(format!(
            "FIFREEZE failed: {}",
            std::io::Error::from_raw_os_error(err as i32)
        )
        .into());
    }
    let mut thaw = ThawGuard {
        mnt: &mnt,
        armed: true,
    };
    let frozen_ns = sys::monotonic_ns();

    let (tag, thaw_ns) = msgs
        .next(deadline)?
        .ok_or("the freezer did not reach FITHAW within 20 s")?;
    ensure!(tag == b'T', "unexpected message {tag:#x} from the freezer");
    let (tag, err) = msgs
        .next(deadline)?
        .ok_or("FITHAW did not return within 20 s")?;
    ensure!(tag == b'H', "unexpected message {tag:#x} from the freezer");
    ensure!(
        err == 0,
        "FITHAW failed: {}",
        std::io::Error::from_raw_os_error(err as i32)
    );
    thaw.armed = false;
    let (pw_start, pw_res, pw_done) = pw_rx
        .recv_timeout(DEADLINE)
        .map_err(|_| "the pwrite() to another file did not complete within 20 s of FITHAW")?;
    pw_res?;
    let _ = cmd_tx.send(());
    let res = submitter
        .join()
        .map_err(|_| "the submitting thread panicked".to_string())??;
    let status = child.wait(Instant::now() + DEADLINE)?;
    let ms = |a: u64, b: u64| (a as i64 - b as i64) / 1_000_000;
    println!(
        "FIFREEZE returned {} ms after the AIO write was submitted; the submitter's pwrite started {} ms relative to the freeze and completed {} ms after FITHAW was called; freezer child {status:?}",
        freeze_took.as_millis(),
        ms(pw_start, frozen_ns),
        ms(pw_done, thaw_ns)
    );
    // a pwrite that started once FIFREEZE had returned must wait for the
    // thaw (one that started earlier may have got in before the freeze)
    ensure!(
        pw_start < frozen_ns || pw_done >= thaw_ns,
        "the pwrite() of 4 KiB to another file started after FIFREEZE returned and completed {} ms BEFORE FITHAW was called: the frozen filesystem let a writer through",
        ms(thaw_ns, pw_done)
    );
    ensure!(
        res == LEN as i64,
        "the 100-byte AIO write: res {res} ({}), expected {LEN}",
        describe_res(res)
    );
    let page = OFF & !4095;
    let mut want = pattern::make(OLD, page, 4096);
    let at = (OFF - page) as usize;
    pattern::fill(&mut want[at..at + LEN], NEW, OFF);
    pattern::compare(&pread_full(&f, page, 4096)?, &want, page, &[NEW, OLD])
        .map_err(|e| format!("the page around the AIO write: {e}"))?;
    pattern::compare(
        &pread_full(&other, 0, 4097)?,
        &pattern::make(OTHER, 0, 4096),
        0,
        &[OTHER],
    )
    .map_err(|e| format!("the other file after the pwrite: {e}"))?;
    ensure!(
        status == Some(WaitStatus::Exited(0)),
        "the freezer child ended with {status:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// retry/completion_not_hostage

/// Thread A submits 16 cold reads to a ring and at once blocks in a vfork
/// (3 s: `sys::vfork_sleep`, a clone(CLONE_VM|CLONE_VFORK) child that
/// sleeps on its own stack; A waits in the kernel's killable vfork wait,
/// which task_work notifications do not end). Thread B waits for them on
/// the same context with io_getevents(min_nr 16, 2 s): all 16 must arrive
/// within those 2 s, i.e. while A is still blocked. A kernel that finishes
/// reads only from the submitter's task_work delivers nothing until A
/// returns to user space. (The unpatched kernel completes them inside
/// io_submit.)
pub fn completion_not_hostage(ctx: &Ctx) -> TestResult {
    const SEED: u64 = 0x4057;
    const N: usize = 16;
    const STRIDE: u64 = 128 * 1024;
    const LEN: usize = 16 * KIB;
    const WAIT: Duration = Duration::from_secs(2);
    const VFORK: Duration = Duration::from_secs(3);
    require_slow(ctx)?;
    let f = create_pattern_file(&ctx.path("data"), SEED, N as u64 * STRIDE)?;
    fadvise_random(&f)?;
    ctx.make_cold(&f)?;
    let fd = f.as_raw_fd();
    let ring = Ring::new(2 * N as u32)?;
    let id = ring.id();
    let (sub_tx, sub_rx) = mpsc::channel::<Result<Instant, String>>();
    let b = std::thread::spawn(move || -> Result<(Vec<IoEvent>, Vec<Instant>), String> {
        let t_sub = match sub_rx.recv_timeout(REAP_TIMEOUT) {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("thread A did not report its io_submit".into()),
        };
        let deadline = t_sub + WAIT;
        let (mut evs, mut at) = (Vec::new(), Vec::new());
        while evs.len() < N {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let mut buf = vec![IoEvent::default(); N - evs.len()];
            match aio::io_getevents(id, buf.len(), &mut buf, Some(left)) {
                Ok(n) => {
                    let now = Instant::now();
                    evs.extend_from_slice(&buf[..n]);
                    at.extend(std::iter::repeat_n(now, n));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("thread B: io_getevents: {e}")),
            }
        }
        Ok((evs, at))
    });
    let a = std::thread::spawn(
        move || -> Result<(Ring, Instant, Instant, Instant), String> {
            let mut ring = ring;
            let ops = (0..N as u64)
                .map(|i| Op::pread(fd, i * STRIDE + 4096 + 3, LEN).with_data(i))
                .collect();
            if let Err(e) = ring.submit_all(ops) {
                let _ = sub_tx.send(Err(e.clone()));
                return Err(e);
            }
            let t_sub = Instant::now();
            let _ = sub_tx.send(Ok(t_sub));
            let t_v0 = Instant::now();
            let pid = sys::vfork_sleep(VFORK).map_err(|e| format!("clone(CLONE_VFORK): {e}"))?;
            let t_v1 = Instant::now();
            match sys::waitpid(pid, false) {
                Ok(Some((_, WaitStatus::Exited(0)))) => {}
                other => return Err(format!("the vfork child ended with {other:?}")),
            }
            Ok((ring, t_sub, t_v0, t_v1))
        },
    );
    let a_res = a.join().map_err(|_| "thread A panicked".to_string())?;
    let b_res = b.join().map_err(|_| "thread B panicked".to_string())?;
    let (mut ring, t_sub, t_v0, t_v1) = a_res?;
    let (evs, at) = b_res?;
    let mut all = ring.absorb(&evs);
    let rest = ring.in_flight();
    all.extend(ring.reap(rest, REAP_TIMEOUT)?);
    for c in &all {
        let op = c.op()?;
        c.expect_res(LEN as i64)?;
        pattern::verify(op.buf(), SEED, op.offset())
            .map_err(|e| format!("read at {}: {e}", op.offset()))?;
    }
    ring.finish(REAP_TIMEOUT)?;
    let in_vfork = at.iter().filter(|&&t| t < t_v1).count();
    let since = |t: Instant| t.saturating_duration_since(t_sub).as_millis();
    println!(
        "thread A: io_submit returned, vfork from +{} ms to +{} ms; thread B got {} of {N} completions within 2 s (last at +{} ms), {in_vfork} while A was in vfork",
        since(t_v0),
        since(t_v1),
        evs.len(),
        at.last().map_or(0, |&t| since(t))
    );
    ensure!(
        t_v1.duration_since(t_v0) >= VFORK - Duration::from_millis(100),
        "the vfork blocked thread A for only {} ms",
        t_v1.duration_since(t_v0).as_millis()
    );
    ensure!(
        evs.len() == N,
        "thread B received only {} of {N} completions within 2 s of thread A's io_submit, while A was blocked in vfork until +{} ms: the completions are held hostage by the submitting thread (their retries run only as its task_work)",
        evs.len(),
        since(t_v1)
    );
    ensure!(
        in_vfork == N,
        "only {in_vfork} of {N} completions reached thread B while thread A was blocked in vfork"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// retry/cancel_race

#[derive(Default, Debug)]
struct CancelTally {
    cancel_einval: usize,
    cancel_eagain: usize,
    cancel_inprogress: usize,
    cancel_zero: usize,
    full: usize,
    ecanceled: usize,
    claimed_but_full: usize,
    cancelled_partial: usize,
}

/// 64 cold 16 KiB reads (POSIX_FADV_RANDOM, distinct offsets) in one
/// io_submit while another thread io_cancel()s each of them at a random
/// moment 0-3 ms after the submit started (raw syscall, the iocb address,
/// an io_event out-parameter). Every request produces exactly one event
/// (ring or, for a 0 return, the out-parameter; checked by the shared
/// checker): the full length with correct data, or -ECANCELED (then only
/// if io_cancel said it cancelled, and the buffer holds a correct prefix
/// and untouched poison), or, also only if io_cancel said it cancelled, a
/// partial count: exactly that many bytes of data, then untouched poison
/// (cancelled after the first folios were copied). io_cancel returns 0 or
/// -EINPROGRESS when it cancelled, EINVAL or EAGAIN when it did not;
/// nothing else. 10 rounds
/// (the unpatched kernel answers EINVAL to every cancel of a read). Then a
/// round with io_destroy right after io_submit of 64 cold reads: it
/// returns (within 30 s), no buffer changes afterwards, each is a correct
/// prefix + poison, and the checker holds.
pub fn cancel_race(ctx: &Ctx) -> TestResult {
    const SEED: u64 = 0xCA2C;
    const N: usize = 64;
    const STRIDE: u64 = 128 * 1024;
    const LEN: usize = 16 * KIB;
    const ROUNDS: u64 = 10;
    require_slow(ctx)?;
    let f = create_pattern_file(&ctx.path("data"), SEED, N as u64 * STRIDE)?;
    fadvise_random(&f)?;
    let fd = f.as_raw_fd();
    let mut ring = Ring::new(N as u32)?;
    let mut t = CancelTally::default();
    let stats_before = super::write_async::read_stats()?;
    for round in 0..ROUNDS {
        ctx.step(&format!("round {round}"));
        ctx.make_cold(&f)?;
        let ops: Vec<Op> = (0..N as u64)
            .map(|i| Op::pread(fd, i * STRIDE + round * 4096 + 7, LEN).with_data(i))
            .collect();
        let mut rng = Rng::new(SEED + round);
        let mut plan: Vec<(Duration, u64)> = ops
            .iter()
            .map(|o| (Duration::from_micros(rng.below(3001)), o.obj()))
            .collect();
        plan.sort();
        let id = ring.id();
        let barrier = Arc::new(Barrier::new(2));
        let b2 = Arc::clone(&barrier);
        let canceller = std::thread::spawn(move || -> Vec<(u64, Result<IoEvent, i32>)> {
            b2.wait();
            let t0 = Instant::now();
            plan.into_iter()
                .map(|(at, obj)| {
                    let now = t0.elapsed();
                    if at > now {
                        std::thread::sleep(at - now);
                    }
                    (obj, aio::io_cancel(id, obj).map_err(|e| errno_of(&e)))
                })
                .collect()
        });
        barrier.wait();
        // Keep the rejected ops (if any) alive until the canceller is done.
        let s = ring.submit(ops);
        let outcomes = canceller
            .join()
            .map_err(|_| "the canceller thread panicked".to_string())?;
        if let Some(e) = &s.error {
            return Err(format!("round {round}: io_submit of {N} reads: {e}").into());
        }
        ensure!(
            s.accepted == N,
            "round {round}: io_submit accepted {} of {N}",
            s.accepted
        );
        drop(s);
        let outcome: HashMap<u64, Result<IoEvent, i32>> = outcomes.iter().cloned().collect();
        // Events handed back by io_cancel itself (a 0 return).
        let delivered: Vec<IoEvent> = outcomes
            .iter()
            .filter_map(|(o, r)| r.as_ref().ok().filter(|e| e.obj == *o).copied())
            .collect();
        let mut cs = ring.absorb(&delivered);
        let rest = ring.in_flight();
        cs.extend(ring.reap(rest, REAP_TIMEOUT)?);
        ring.check().map_err(|e| format!("round {round}: {e}"))?;
        for c in &cs {
            let op = c.op()?;
            let claimed = match outcome.get(&op.obj()) {
                Some(Ok(_)) => {
                    t.cancel_zero += 1;
                    true
                }
                Some(Err(e)) if *e == libc::EINPROGRESS => {
                    t.cancel_inprogress += 1;
                    true
                }
                Some(Err(e)) if *e == libc::EINVAL => {
                    t.cancel_einval += 1;
                    false
                }
                Some(Err(e)) if *e == libc::EAGAIN => {
                    t.cancel_eagain += 1;
                    false
                }
                Some(Err(e)) => {
                    return Err(format!(
                        "round {round}: io_cancel of the read at {} returned {} (expected 0, EINPROGRESS, EINVAL or EAGAIN)",
                        op.offset(),
                        std::io::Error::from_raw_os_error(*e)
                    )
                    .into())
                }
                None => return Err(format!("round {round}: no io_cancel outcome for {:#x}", op.obj()).into()),
            };
            let res = c.event.res;
            if res == LEN as i64 {
                pattern::verify(op.buf(), SEED, op.offset())
                    .map_err(|e| format!("round {round}: read at {}: {e}", op.offset()))?;
                t.full += 1;
                if claimed {
                    t.claimed_but_full += 1;
                }
            } else if res == -(libc::ECANCELED as i64) {
                ensure!(
                    claimed,
                    "round {round}: the read at {} completed with -ECANCELED although io_cancel returned {:?} for it",
                    op.offset(),
                    outcome.get(&op.obj())
                );
                prefix_then_poison(op, SEED)
                    .map_err(|e| format!("round {round}: cancelled {e}"))?;
                t.ecanceled += 1;
            } else if res > 0 && res < LEN as i64 && claimed {
                // Cancelled after it had copied part of the data (the
                // first folios were ready, it parked on a later one): it
                // reports what it transferred, as a read interrupted by a
                // signal does. Exactly those bytes are data, the rest is
                // untouched.
                let good = prefix_then_poison(op, SEED)
                    .map_err(|e| format!("round {round}: cancelled after {res} bytes: {e}"))?;
                ensure!(
                    good >= res as usize && op.buf()[res as usize..].iter().all(|&b| b == READ_POISON),
                    "round {round}: read at {} cancelled with res {res}, but {good} bytes of the buffer are data",
                    op.offset()
                );
                t.cancelled_partial += 1;
            } else {
                return Err(format!(
                    "round {round}: read at {}: res {res} ({}), expected {LEN}, -ECANCELED, or (cancelled) a partial count",
                    op.offset(),
                    describe_res(res)
                )
                .into());
            }
        }
    }
    ring.finish(REAP_TIMEOUT)?;
    let parked = match (stats_before, super::write_async::read_stats()?) {
        (Some(b), Some(a)) => a.delta(&b).get("read_park_folio").unwrap_or(0),
        _ => 0,
    };
    println!(
        "{ROUNDS} rounds of {N} reads with racing io_cancel: {t:?}; reads parked on a folio (aio/stats read_park_folio) {parked}"
    );
    // The feature itself: a read that parked waits for nobody, so
    // io_cancel() must be able to take it over. Over 640 cancels at random
    // moments of reads that park (the counters say they did), none claimed
    // means parked reads cannot be cancelled (the kernel answers EINVAL as
    // for a synchronous read): io_destroy() then waits for the device and a
    // program cannot withdraw a read it no longer wants. The unpatched
    // kernel has no counters and parks nothing; it is not held to this.
    ensure!(
        parked == 0 || t.cancel_zero + t.cancel_inprogress > 0,
        "{parked} reads parked on a folio, but io_cancel claimed none of {} cancels ({} EINVAL, {} EAGAIN): parked reads cannot be cancelled",
        ROUNDS as usize * N,
        t.cancel_einval,
        t.cancel_eagain
    );

    ctx.step("io_destroy right after io_submit of 64 cold reads");
    ctx.make_cold(&f)?;
    let mut ring = Ring::new(N as u32)?;
    let ops = (0..N as u64)
        .map(|i| Op::pread(fd, i * STRIDE + 9, LEN).with_data(i))
        .collect();
    ring.submit_all(ops)?;
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let r = ring.destroy_now();
        let _ = tx.send(());
        (ring, r)
    });
    if rx.recv_timeout(Duration::from_secs(30)).is_err() {
        return Err("io_destroy with 64 cold reads in flight did not return within 30 s".into());
    }
    let (ring, r) = h
        .join()
        .map_err(|_| "the io_destroy thread panicked".to_string())?;
    let (took, ops) = r?;
    let snapshot: Vec<Vec<u8>> = ops.iter().map(|o| o.buf().to_vec()).collect();
    std::thread::sleep(Duration::from_millis(50));
    let mut full = 0;
    let mut bad = None;
    for (op, snap) in ops.iter().zip(&snapshot) {
        if op.buf() != snap.as_slice() {
            bad = Some(format!(
                "the buffer of the read at {} changed after io_destroy returned",
                op.offset()
            ));
            break;
        }
        match prefix_then_poison(op, SEED) {
            Ok(n) if n == LEN => full += 1,
            Ok(_) => {}
            Err(e) => {
                bad = Some(e);
                break;
            }
        }
    }
    println!(
        "io_destroy with {N} cold reads in flight took {}; {full} of {} unreaped buffers full",
        us(took),
        ops.len()
    );
    // Never free memory the kernel might (wrongly) still write to.
    std::mem::forget(ops);
    if let Some(b) = bad {
        return Err(b.into());
    }
    ring.check_after_destroy()?;
    Ok(())
}

// ---------------------------------------------------------------------------
// teardown/destroy_race

/// Up to 300 iterations (at most 30 s; it passes when the time is up and
/// prints the count): io_setup, 4 cold 256 KiB reads at random offsets of
/// a 3 MiB + 1234 file (some end past EOF, some start there) in one
/// io_submit, while another thread io_destroy()s the context 0-5 ms after
/// the submit started. io_destroy returns 0 (within 30 s); io_submit
/// either takes the reads or fails with EINVAL (context already gone);
/// every event reaped is a correct prefix of the file no longer than the
/// bytes to EOF, or an error that is not a kernel-internal errno, and the
/// shared checker holds (no duplicate or stray event). A file on the slow
/// filesystem; `soak/destroy_race_bdev` reads the slow device itself
/// (block devices have FOP_BUFFER_RASYNC too). Under KASAN this is what
/// catches a use-after-free of a parked request whose context went away.
pub fn destroy_race(ctx: &Ctx) -> TestResult {
    let p = DestroyRace {
        seed: 0xDE5A,
        iterations: 300,
        budget: Some(Duration::from_secs(30)),
        wide_every: 0,
        blkdev: false,
    };
    let st = run_destroy_race(ctx, &p, &mut |_, _| {})?;
    println!("{}", st.summary(&p));
    Ok(())
}

/// How `teardown/destroy_race` (and `soak/destroy_race`) runs.
pub(crate) struct DestroyRace {
    /// Offsets, delays.
    pub seed: u64,
    pub iterations: usize,
    /// Stop (and pass) when this much time has gone.
    pub budget: Option<Duration>,
    /// Every n-th iteration destroys 0-50 ms after the submit instead of
    /// 0-5 ms (0: never): most reads are then parked or being retried
    /// rather than being set up.
    pub wide_every: usize,
    /// Read the slow device itself (its last MiB, reads ending past the
    /// device end: block devices have FOP_BUFFER_RASYNC, and
    /// blkdev_read_iter() touches the iterator after -EIOCBQUEUED) instead
    /// of a file on its filesystem.
    pub blkdev: bool,
}

/// What a destroy race run did.
#[derive(Debug, Default)]
pub(crate) struct DestroyRaceStats {
    pub done: usize,
    pub elapsed: Duration,
    submit_einval: usize,
    full: usize,
    short: usize,
    errs: usize,
    unreaped: usize,
    err_kinds: Vec<String>,
}

impl DestroyRaceStats {
    pub fn summary(&self, p: &DestroyRace) -> String {
        format!(
            "{} iterations in {} ms{}: io_submit EINVAL (context already destroyed) {}; events: {} full, {} short, {} errors {:?}; {} requests discarded by io_destroy",
            self.done,
            self.elapsed.as_millis(),
            if self.done < p.iterations {
                " (time budget reached)"
            } else {
                ""
            },
            self.submit_einval,
            self.full,
            self.short,
            self.errs,
            self.err_kinds,
            self.unreaped
        )
    }
}

/// The loop of [`destroy_race`]; `progress(done, elapsed)` after every
/// 100 iterations.
pub(crate) fn run_destroy_race(
    ctx: &Ctx,
    p: &DestroyRace,
    progress: &mut dyn FnMut(usize, Duration),
) -> Result<DestroyRaceStats, Stop> {
    let seed = p.seed;
    const SIZE: u64 = 3 * MIB as u64 + 1234;
    const LEN: usize = 256 * KIB;
    const STUCK: Duration = Duration::from_secs(30);
    require_slow(ctx)?;
    // What is read: a pattern file, or the device's last MiB (zeros: the
    // filesystem image fills only its start), in [base, base + size).
    let (f, base, size) = if p.blkdev {
        let dev = ctx.block_dev()?;
        ensure!(
            dev.is_null_blk(),
            "{} is not the slow null_blk device",
            dev.name()
        );
        let path = format!("/dev/{}", dev.name());
        let f = File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
        let end = (&f)
            .seek(std::io::SeekFrom::End(0))
            .map_err(|e| format!("size of {path}: {e}"))?;
        (f, end - MIB as u64, MIB as u64)
    } else {
        let f = create_pattern_file(&ctx.path("data"), seed, SIZE)?;
        f.sync_all().map_err(|e| format!("fsync: {e}"))?;
        (f, 0, SIZE)
    };
    let fd = f.as_raw_fd();
    let (req_tx, req_rx) = mpsc::channel::<(u64, Instant, Duration)>();
    let (res_tx, res_rx) = mpsc::channel::<(u64, Result<(), i32>)>();
    let destroyer = std::thread::spawn(move || {
        while let Ok((id, t0, delay)) = req_rx.recv() {
            let el = t0.elapsed();
            if delay > el {
                std::thread::sleep(delay - el);
            }
            let r = aio::io_destroy(id).map_err(|e| errno_of(&e));
            if res_tx.send((id, r)).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut rng = Rng::new(seed);
    let (mut done, mut submit_einval, mut full, mut short, mut errs, mut unreaped) =
        (0usize, 0usize, 0usize, 0usize, 0usize, 0usize);
    let mut err_kinds: HashMap<i64, usize> = HashMap::new();
    let result = (|| -> TestResult {
        while done < p.iterations && p.budget.is_none_or(|b| start.elapsed() < b) {
            ctx.evict(&f, base, 0)?;
            let mut ring = Ring::new(8)?;
            let id = ring.id();
            let ops: Vec<Op> = (0..4u64)
                .map(|i| Op::pread(fd, base + rng.below(size + 128 * 1024), LEN).with_data(i))
                .collect();
            let wide = p.wide_every > 0 && done % p.wide_every == p.wide_every - 1;
            let delay = Duration::from_micros(rng.below(if wide { 50_001 } else { 5001 }));
            req_tx
                .send((id, Instant::now(), delay))
                .map_err(|_| "the io_destroy thread is gone".to_string())?;
            let s = ring.submit(ops);
            match &s.error {
                None => {}
                Some(e) if e.raw_os_error() == Some(libc::EINVAL) => submit_einval += 1,
                Some(e) => return Err(format!("iteration {done}: io_submit: {e}").into()),
            }
            drop(s);
            let mut cs = Vec::new();
            let stuck_at = Instant::now() + STUCK;
            while ring.in_flight() > 0 {
                ensure!(
                    Instant::now() < stuck_at,
                    "iteration {done}: {} reads neither completed nor were discarded by io_destroy within 30 s",
                    ring.in_flight()
                );
                match ring.getevents(1, 4, Some(Duration::from_millis(2))) {
                    Ok(v) => cs.extend(v),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // the context is gone
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
                    Err(e) => return Err(format!("iteration {done}: io_getevents: {e}").into()),
                }
            }
            let (rid, r) = res_rx
                .recv_timeout(STUCK)
                .map_err(|_| format!("iteration {done}: io_destroy did not return within 30 s"))?;
            ensure!(
                rid == id,
                "io_destroy result for {rid:#x}, expected {id:#x}"
            );
            if let Err(e) = r {
                return Err(format!(
                    "iteration {done}: io_destroy returned {}",
                    std::io::Error::from_raw_os_error(e)
                )
                .into());
            }
            unreaped += ring.destroyed_elsewhere().len();
            for c in &cs {
                let op = c.op()?;
                let res = c.event.res;
                let max = ((base + size).saturating_sub(op.offset())).min(LEN as u64) as i64;
                if res >= 0 {
                    ensure!(
                        res <= max,
                        "iteration {done}: read at {} of {LEN}: res {res}, but only {max} bytes exist there",
                        op.offset()
                    );
                    let data = &op.buf()[..res as usize];
                    if p.blkdev {
                        if let Some(i) = data.iter().position(|&b| b != 0) {
                            return Err(format!(
                                "iteration {done}: read at {} of the device: byte {i} is {:#x}, the device's last MiB is zeros",
                                op.offset(),
                                data[i]
                            )
                            .into());
                        }
                    } else {
                        pattern::verify(data, seed, op.offset()).map_err(|e| {
                            format!("iteration {done}: read at {}: {e}", op.offset())
                        })?;
                    }
                    if res == max {
                        full += 1;
                    } else {
                        short += 1;
                    }
                } else {
                    ensure!(
                        !is_kernel_internal_errno(res),
                        "iteration {done}: read at {}: res {res} ({}) is a kernel-internal errno",
                        op.offset(),
                        describe_res(res)
                    );
                    errs += 1;
                    *err_kinds.entry(res).or_default() += 1;
                }
            }
            ring.check().map_err(|e| format!("iteration {done}: {e}"))?;
            done += 1;
            if done % 100 == 0 {
                progress(done, start.elapsed());
            }
        }
        Ok(())
    })();
    drop(req_tx);
    if result.is_ok() {
        // It is idle (all results collected): returns at once.
        let _ = destroyer.join();
    }
    result?;
    Ok(DestroyRaceStats {
        done,
        elapsed: start.elapsed(),
        submit_einval,
        full,
        short,
        errs,
        unreaped,
        err_kinds: err_kinds
            .iter()
            .map(|(r, n)| format!("{} x{n}", describe_res(*r)))
            .collect(),
    })
}

// ---------------------------------------------------------------------------
// retry/io_accounting

/// `(read_bytes, write_bytes)` from the text of `/proc/<pid>/io`.
fn parse_proc_io(s: &str) -> Result<(u64, u64), String> {
    let field = |name: &str| -> Result<u64, String> {
        s.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().parse::<u64>()))
            .ok_or_else(|| format!("no {name} in /proc/self/io"))?
            .map_err(|e| format!("{name} in /proc/self/io: {e}"))
    };
    Ok((field("read_bytes:")?, field("write_bytes:")?))
}

fn proc_self_io() -> Result<(u64, u64), String> {
    let s =
        std::fs::read_to_string("/proc/self/io").map_err(|e| format!("read /proc/self/io: {e}"))?;
    parse_proc_io(&s)
}

const ACC_TOTAL: usize = MIB;
const ACC_REQ: usize = 64 * KIB;
const ACC_DEPTH: usize = 8;

/// The forked child of `io_accounting`: reports `ok <rb0> <wb0> <rb1>
/// <wb1>` or `err <message>`. Never returns.
fn accounting_child(src: i32, src_seed: u64, dst: &File, new_seed: u64, mut tell: File) -> ! {
    let r = (|| -> Result<[u64; 4], String> {
        let (rb0, wb0) = proc_self_io()?;
        let mut ring = Ring::new(2 * ACC_DEPTH as u32)?;
        let n = (ACC_TOTAL / ACC_REQ) as u64;
        let reads = (0..n)
            .map(|i| Op::pread(src, i * ACC_REQ as u64, ACC_REQ).with_data(i))
            .collect();
        pipelined(&mut ring, reads, ACC_DEPTH, |c| {
            let op = c.op()?;
            c.expect_res(ACC_REQ as i64)?;
            pattern::verify(op.buf(), src_seed, op.offset())
                .map_err(|e| format!("cold read at {}: {e}", op.offset()))
        })?;
        let writes = (0..n)
            .map(|i| {
                pwrite_pattern(dst.as_raw_fd(), new_seed, i * ACC_REQ as u64, ACC_REQ).with_data(i)
            })
            .collect();
        pipelined(&mut ring, writes, ACC_DEPTH, |c| {
            c.expect_res(ACC_REQ as i64)
        })?;
        dst.sync_all().map_err(|e| format!("fsync: {e}"))?;
        ring.finish(REAP_TIMEOUT)?;
        let (rb1, wb1) = proc_self_io()?;
        Ok([rb0, wb0, rb1, wb1])
    })();
    let (msg, code) = match r {
        Ok(v) => (format!("ok {} {} {} {}", v[0], v[1], v[2], v[3]), 0),
        Err(e) => (format!("err {e}"), 3),
    };
    let _ = tell.write_all(msg.as_bytes());
    sys::exit_now(code)
}

/// In a forked child (its own counters): AIO-read 1 MiB of a cold file
/// (64 KiB requests, 8 in flight), AIO-write 1 MiB into a new file and
/// fsync it; `/proc/self/io` must then show read_bytes and write_bytes
/// each grown by >= 1 MiB: the kernel charges device reads (at bio
/// submission) and dirtied pages to the task that caused them, so a
/// kernel that runs parked requests in a worker charges someone else.
/// SKIPs without /proc/self/io (CONFIG_TASK_IO_ACCOUNTING=n).
pub fn io_accounting(ctx: &Ctx) -> TestResult {
    const SEED: u64 = 0x10AC;
    const NEW: u64 = 0x10AD;
    if !Path::new("/proc/self/io").exists() {
        return Err(Stop::Skip(
            "no /proc/self/io (kernel without CONFIG_TASK_IO_ACCOUNTING)".into(),
        ));
    }
    let src = create_pattern_file(&ctx.path("src"), SEED, ACC_TOTAL as u64)?;
    ctx.make_cold(&src)?;
    let dst_path = ctx.path("dst");
    let dst = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&dst_path)
        .map_err(|e| format!("create {}: {e}", dst_path.display()))?;
    dst.sync_all().map_err(|e| format!("fsync: {e}"))?;
    let (rd, wr) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
    let pid = sys::fork().map_err(|e| format!("fork: {e}"))?;
    if pid == 0 {
        drop(rd);
        accounting_child(src.as_raw_fd(), SEED, &dst, NEW, File::from(wr));
    }
    drop(wr);
    let mut child = ChildGuard { pid, done: false };
    let deadline = Instant::now() + Duration::from_secs(90);
    let (report, _) = read_until_eof(&mut File::from(rd), deadline)?;
    let status = child.wait(deadline)?;
    let report = String::from_utf8_lossy(&report).into_owned();
    ensure!(
        status == Some(WaitStatus::Exited(0)),
        "the child ended with {status:?}: {report}"
    );
    let v: Vec<u64> = report
        .strip_prefix("ok ")
        .ok_or_else(|| format!("child report {report:?}"))?
        .split_whitespace()
        .map(|x| {
            x.parse()
                .map_err(|e| format!("child report {report:?}: {e}"))
        })
        .collect::<Result<_, String>>()?;
    ensure!(v.len() == 4, "child report {report:?}");
    let (rd_delta, wr_delta) = (v[2].saturating_sub(v[0]), v[3].saturating_sub(v[1]));
    println!(
        "the child's /proc/self/io: read_bytes +{rd_delta}, write_bytes +{wr_delta} for a cold 1 MiB AIO read and a 1 MiB AIO write + fsync"
    );
    ensure!(
        rd_delta >= ACC_TOTAL as u64,
        "read_bytes of the process grew by only {rd_delta} (< {ACC_TOTAL}) for a cold 1 MiB AIO read: its device reads were charged to another task (a kernel worker?)"
    );
    ensure!(
        wr_delta >= ACC_TOTAL as u64,
        "write_bytes of the process grew by only {wr_delta} (< {ACC_TOTAL}) for 1 MiB of AIO writes: the dirtied pages were charged to another task (a kernel worker?)"
    );
    let mut m = Model { bytes: Vec::new() };
    m.put(NEW, 0, ACC_TOTAL);
    m.check(&dst, &[NEW], "the written file")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_units_roundtrip() {
        let v = tagged(1, 7, 64);
        assert_eq!(v.len(), 64);
        assert_eq!(parse_unit(&v[..16]), Some((1, 7, 0)));
        assert_eq!(parse_unit(&v[48..]), Some((1, 7, 3)));
        assert_eq!(parse_unit(&[0u8; 16]), None);
        assert_eq!(parse_unit(&v[..15]), None);
        assert_eq!(tagged(0, 0, 20).len(), 20);
    }

    #[test]
    fn census_finds_missing_duplicate_foreign_and_splits() {
        let a = tagged(0, 0, 64); // 4 units
        let b = tagged(1, 0, 32); // 2 units
        let expect = [((0, 0), 4), ((1, 0), 2)];
        // a split around b
        let mut f = Vec::new();
        f.extend_from_slice(&a[..32]);
        f.extend_from_slice(&b);
        f.extend_from_slice(&a[32..]);
        let c = Census::take(&f, 0, &expect);
        assert!(c.clean("t").is_ok());
        assert_eq!(c.missing((0, 0)), 0);
        assert_eq!(c.pieces((0, 0)), 2);
        assert!(!c.contiguous((0, 0)));
        assert!(c.contiguous((1, 0)));
        assert_eq!(c.pieces((1, 0)), 1);
        // b overwrote the second half of a
        let mut g = a.clone();
        g[32..].copy_from_slice(&b);
        let c = Census::take(&g, 0, &expect);
        assert_eq!(c.missing((0, 0)), 2);
        assert!(c.clean("t").is_ok());
        // duplicate and zeros
        let mut h = a.clone();
        h.extend_from_slice(&a[..16]);
        h.extend_from_slice(&[0u8; 16]);
        let c = Census::take(&h, 4096, &expect);
        let e = c.clean("t").unwrap_err();
        assert!(e.contains("more than once"), "{e}");
        assert!(c.first_duplicate.unwrap().contains("offsets 4096 and 4160"));
        assert_eq!(c.foreign, 1);
        assert!(c.first_foreign.unwrap().contains("offset 4176: zeros"));
        // a unit beyond a record's expected (short) length is foreign
        let c = Census::take(&a, 0, &[((0, 0), 3)]);
        assert_eq!(c.foreign, 1);
    }

    #[test]
    fn proc_io_parsing() {
        let s = "rchar: 1\nwchar: 2\nsyscr: 3\nsyscw: 4\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 5\n";
        assert_eq!(parse_proc_io(s).unwrap(), (4096, 8192));
        assert!(parse_proc_io("read_bytes: 1\n").is_err());
        assert!(parse_proc_io("read_bytes: x\nwrite_bytes: 1\n").is_err());
    }

    #[test]
    fn rng_stays_in_range() {
        let mut r = Rng::new(1);
        for _ in 0..1000 {
            assert!(r.below(3001) <= 3000);
        }
        assert_eq!(r.below(0), 0);
        assert_ne!(Rng::new(1).next(), Rng::new(2).next());
    }
}
