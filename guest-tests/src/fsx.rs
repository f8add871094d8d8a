//! A seeded random-operation model checker for one file (the fsx idea,
//! issue 14): an in-memory model of the file's contents and size, and a
//! random mix of native AIO reads and writes (several in flight, submitted in
//! one or several `io_submit` calls, vectored, `RWF_APPEND`, `RWF_DSYNC`),
//! `pread`/`pwrite`/`preadv`/`pwritev`, `O_APPEND` `write(2)`, mmap reads
//! and writes, truncate up and down, hole punching and zeroing where the
//! filesystem supports it, fsync/fdatasync, page-cache eviction,
//! `drop_caches` and close/reopen. Every read and, periodically and at the
//! end, the whole file are checked against the model.
//!
//! What the model assumes of AIO (the contract the series gives and the
//! unpatched kernel's synchronous buffered AIO trivially meets): writes of
//! one context land in submission order where they overlap, and an append
//! lands at the end of the file as left by the writes submitted before it.
//! Reads in flight with writes never overlap them (that outcome is not
//! defined), and stay below the size the file had before the writes.
//!
//! The operation sequence depends only on the seed and on what the
//! filesystem supports, never on timing: the same seed on the same kernel
//! replays the same operations. On a mismatch the error gives the seed, the
//! operation number and the log of the last operations.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::aio::{describe_res, Op, Ring};
use crate::pattern;

/// splitmix64: small, fast, and the same on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)` (0 when `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// True with probability `num/den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

/// The seed of one test instance: the run's base seed mixed with the
/// instance's name, so every instance (and every shard) explores its own
/// sequence and a replay with the same base seed and name is identical.
pub fn instance_seed(base: u64, name: &str) -> u64 {
    // FNV-1a over the name, then the splitmix64 finaliser.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    pattern::key(base ^ h)
}

/// What one run of the checker does.
#[derive(Debug, Clone)]
pub struct Params {
    pub seed: u64,
    /// Operations to run (an AIO batch counts as one operation).
    pub ops: u64,
    /// Stop early after this long (the operations done are reported).
    pub max_time: Option<Duration>,
    /// Largest file size the generator aims for.
    pub max_size: u64,
    /// Largest ordinary transfer.
    pub max_len: usize,
    /// Let appends reach 256 KiB - 1 MiB (forces dirty throttling mid-write).
    pub big_appends: bool,
    /// May write `/proc/sys/vm/drop_caches` (guest, root).
    pub drop_caches: bool,
    /// Most requests in one AIO batch.
    pub queue: usize,
    /// Operations kept in the log printed on a failure.
    pub log_len: usize,
    /// Check the whole file against the model every this many operations.
    pub verify_every: u64,
    /// Let the writes of one AIO batch overlap each other (the model then
    /// needs submission order); off, they are disjoint and only appends
    /// depend on order.
    pub overlapping_writes: bool,
}

impl Params {
    pub fn new(seed: u64, ops: u64) -> Params {
        Params {
            seed,
            ops,
            max_time: None,
            max_size: 1 << 20,
            max_len: 64 << 10,
            big_appends: false,
            drop_caches: false,
            queue: 16,
            log_len: 48,
            verify_every: 1000,
            overlapping_writes: true,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub ops: u64,
    pub aio_batches: u64,
    pub aio_requests: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub elapsed: Duration,
    pub final_size: u64,
    /// Operations done per kind.
    pub by_kind: BTreeMap<&'static str, u64>,
    /// Operations the filesystem refused with EOPNOTSUPP (then left out).
    pub unsupported: Vec<&'static str>,
}

impl Stats {
    pub fn ops_per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.ops as f64 / s
        } else {
            0.0
        }
    }

    /// One line for the KTAP diagnostics (`soak: key=value …`), parsed by
    /// the host's soak report.
    pub fn summary(&self, seed: u64) -> String {
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        format!(
            "soak: seed={seed:#x} ops={} ops_per_s={:.0} aio_batches={} aio_requests={} read_mib={:.1} written_mib={:.1} final_size={} elapsed_ms={} kinds={} unsupported={}",
            self.ops,
            self.ops_per_sec(),
            self.aio_batches,
            self.aio_requests,
            self.bytes_read as f64 / 1048576.0,
            self.bytes_written as f64 / 1048576.0,
            self.final_size,
            self.elapsed.as_millis(),
            kinds.join(","),
            if self.unsupported.is_empty() {
                "-".to_string()
            } else {
                self.unsupported.join(",")
            }
        )
    }
}

/// Shared with a watchdog thread: the operation number and what it is.
#[derive(Default)]
pub struct Heartbeat {
    pub ops: AtomicU64,
    pub current: Mutex<String>,
}

/// One request of an AIO batch.
#[derive(Debug, Clone)]
struct Req {
    write: bool,
    append: bool,
    /// Write through the `O_APPEND` descriptor (plain PWRITE that appends).
    via_afd: bool,
    dsync: bool,
    off: u64,
    len: usize,
    /// Vectored: the segment sizes.
    segs: Option<Vec<usize>>,
    /// Pattern seed of a write's data.
    key: u64,
    /// Expected result of a read (bytes).
    expect: usize,
}

impl Req {
    fn describe(&self) -> String {
        let kind = match (self.write, self.append) {
            (false, _) => "r",
            (true, false) => "w",
            (true, true) => "a",
        };
        let mut s = format!(
            "{kind}{} {:#x}+{}",
            if self.segs.is_some() { "v" } else { "" },
            self.off,
            self.len
        );
        if self.via_afd {
            s.push_str(" (O_APPEND fd)");
        }
        if self.dsync {
            s.push_str(" dsync");
        }
        s
    }
}

pub struct Fsx {
    p: Params,
    path: PathBuf,
    fd: File,
    afd: File,
    ring: Ring,
    model: Vec<u8>,
    rng: Rng,
    log: VecDeque<String>,
    opno: u64,
    stats: Stats,
    no_punch: bool,
    no_zero: bool,
    /// Pattern seeds of recent writes (decoded in mismatch hints), with
    /// the operation that wrote each.
    recent_keys: VecDeque<(u64, String)>,
    pub heartbeat: Arc<Heartbeat>,
}

const RWF_DSYNC: i32 = 0x2;
const RWF_APPEND: i32 = 0x10;

fn open_rw(path: &Path, append: bool, dsync: bool) -> io::Result<File> {
    let mut flags = 0;
    if dsync {
        flags |= libc::O_DSYNC;
    }
    let mut o = OpenOptions::new();
    o.read(true).write(true).custom_flags(flags);
    if append {
        o.append(true);
    }
    o.open(path)
}

fn errno_of(ret: isize) -> Option<io::Error> {
    if ret < 0 {
        Some(io::Error::last_os_error())
    } else {
        None
    }
}

impl Fsx {
    /// Creates (truncates) `path` and sets up the AIO context.
    pub fn new(path: &Path, p: Params) -> Result<Fsx, String> {
        let fd = crate::suite::create_truncated(path)?;
        let afd = open_rw(path, true, false)
            .map_err(|e| format!("open {} O_APPEND: {e}", path.display()))?;
        let ring = Ring::new(p.queue as u32 * 2)?;
        let rng = Rng::new(p.seed);
        Ok(Fsx {
            p,
            path: path.to_path_buf(),
            fd,
            afd,
            ring,
            model: Vec::new(),
            rng,
            log: VecDeque::new(),
            opno: 0,
            stats: Stats::default(),
            no_punch: false,
            no_zero: false,
            recent_keys: VecDeque::new(),
            heartbeat: Arc::new(Heartbeat::default()),
        })
    }

    /// Runs the operations; `progress(ops_done, elapsed)` is called about
    /// every second. Returns the statistics, or the failure report.
    pub fn run(mut self, progress: &mut dyn FnMut(u64, Duration)) -> Result<Stats, String> {
        let start = Instant::now();
        let mut last_progress = Instant::now();
        while self.opno < self.p.ops {
            if let Some(t) = self.p.max_time {
                if start.elapsed() >= t {
                    break;
                }
            }
            self.opno += 1;
            self.heartbeat.ops.store(self.opno, Ordering::Relaxed);
            if let Err(e) = self.one_op() {
                return Err(self.report(&e));
            }
            if self.opno.is_multiple_of(self.p.verify_every) {
                if let Err(e) = self.verify_file("periodic check") {
                    return Err(self.report(&e));
                }
            }
            if last_progress.elapsed() >= Duration::from_secs(1) {
                progress(self.opno, start.elapsed());
                last_progress = Instant::now();
            }
        }
        // Final checks: as left, after reopening, after dropping the
        // cache (read back cold through AIO).
        self.note("final check".into());
        let r = self
            .verify_file("final check")
            .and_then(|_| self.reopen(false))
            .and_then(|_| self.verify_file("final check after reopen"))
            .and_then(|_| {
                if self.p.drop_caches {
                    self.fd.sync_all().map_err(|e| format!("fsync: {e}"))?;
                    drop_caches()?;
                }
                self.verify_aio_cold()
            });
        if let Err(e) = r {
            return Err(self.report(&e));
        }
        self.stats.ops = self.opno;
        self.stats.elapsed = start.elapsed();
        self.stats.final_size = self.model.len() as u64;
        progress(self.opno, start.elapsed());
        let ring = std::mem::replace(&mut self.ring, Ring::new(1)?);
        ring.finish(Duration::from_secs(60))
            .map_err(|e| self.report(&e))?;
        Ok(self.stats.clone())
    }

    fn report(&self, what: &str) -> String {
        let mut s = format!(
            "fsx: {what}\nfsx: seed {:#x}, failed in op {} of {} (file {}, model size {})\nfsx: last {} ops:",
            self.p.seed,
            self.opno,
            self.p.ops,
            self.path.display(),
            self.model.len(),
            self.log.len()
        );
        for l in &self.log {
            s.push_str("\n  ");
            s.push_str(l);
        }
        s
    }

    fn note(&mut self, what: String) {
        if let Ok(mut c) = self.heartbeat.current.lock() {
            c.clear();
            c.push_str(&what);
        }
        if self.log.len() >= self.p.log_len {
            self.log.pop_front();
        }
        self.log.push_back(format!("#{} {what}", self.opno));
    }

    fn count(&mut self, kind: &'static str) {
        *self.stats.by_kind.entry(kind).or_insert(0) += 1;
    }

    fn new_key(&mut self) -> u64 {
        let k = self.rng.next_u64() | 1;
        if self.recent_keys.len() >= 256 {
            self.recent_keys.pop_back();
        }
        let n = match self.recent_keys.front() {
            Some((_, who)) if who.starts_with(&format!("#{} ", self.opno)) => {
                who.rsplit(' ')
                    .next()
                    .and_then(|x| x.parse::<usize>().ok())
                    .unwrap_or(0)
                    + 1
            }
            _ => 0,
        };
        self.recent_keys
            .push_front((k, format!("#{} write {n}", self.opno)));
        k
    }

    fn size(&self) -> u64 {
        self.model.len() as u64
    }

    /// A transfer length: mostly small and unaligned, sometimes page
    /// multiples, sometimes up to `max_len`.
    fn gen_len(&mut self) -> usize {
        let max = self.p.max_len as u64;
        let l = match self.rng.below(8) {
            0..=2 => 1 + self.rng.below(512),
            3 | 4 => 1 + self.rng.below(8192),
            5 => 4096 * (1 + self.rng.below(4)),
            _ => 1 + self.rng.below(max),
        };
        l.min(max) as usize
    }

    /// An offset for a write: anywhere in the file or a little past it.
    fn gen_write_off(&mut self, size: u64, len: usize) -> u64 {
        let span = (size + 64 * 1024).min(self.p.max_size);
        let off = self.rng.below(span.max(1));
        if self.rng.chance(1, 4) {
            off & !4095
        } else {
            off
        }
        .min(self.p.max_size.saturating_sub(len as u64))
    }

    fn gen_segs(&mut self, len: usize) -> Vec<usize> {
        let n = 1 + self.rng.below(4) as usize;
        let mut segs = Vec::with_capacity(n);
        let mut left = len;
        for i in 0..n {
            if left == 0 {
                break;
            }
            let s = if i + 1 == n {
                left
            } else {
                1 + self.rng.below(left as u64) as usize
            };
            segs.push(s);
            left -= s;
        }
        segs
    }

    fn apply_write(&mut self, off: u64, data: &[u8]) {
        let end = off as usize + data.len();
        if end > self.model.len() {
            self.model.resize(end, 0);
        }
        self.model[off as usize..end].copy_from_slice(data);
        self.stats.bytes_written += data.len() as u64;
    }

    /// Expected bytes of a read of `[off, off+len)` against the model.
    fn expected(&self, off: u64, len: usize) -> &[u8] {
        let size = self.model.len();
        let lo = (off as usize).min(size);
        let hi = (off as usize).saturating_add(len).min(size);
        &self.model[lo..hi]
    }

    fn check_read(&mut self, what: &str, off: u64, got: &[u8]) -> Result<(), String> {
        let keys: Vec<u64> = self.recent_keys.iter().map(|(k, _)| *k).collect();
        let exp = self.expected(off, got.len());
        pattern::compare(got, exp, off, &keys).map_err(|e| {
            // Name the operation behind every seed the hint mentions, and
            // the one the model says wrote the first bad byte.
            let mut e = format!("{what}: {e}");
            for (k, who) in &self.recent_keys {
                if e.contains(&format!("seed {k:#x}")) {
                    e.push_str(&format!("\n  seed {k:#x} is the data of op {who}"));
                }
            }
            e
        })?;
        self.stats.bytes_read += got.len() as u64;
        Ok(())
    }

    fn one_op(&mut self) -> Result<(), String> {
        if self.p.drop_caches && self.rng.chance(1, 1500) {
            self.note("drop_caches".into());
            self.count("drop_caches");
            return drop_caches();
        }
        match self.rng.below(100) {
            0..=39 => self.aio_batch(),
            40..=47 => self.sync_read(false),
            48..=49 => self.sync_read(true),
            50..=57 => self.sync_write(false),
            58..=59 => self.sync_write(true),
            60..=63 => self.append_write(),
            64..=67 => self.mmap_op(false),
            68..=70 => self.mmap_op(true),
            71..=75 => self.truncate(),
            76..=78 => self.punch(false),
            79 => self.punch(true),
            80..=81 => self.sync(),
            82..=90 => self.evict(),
            91 => self.reopen(true),
            _ => self.aio_batch(),
        }
    }

    fn aio_batch(&mut self) -> Result<(), String> {
        let queue = self.p.queue.max(1) as u64;
        let n = 1 + if self.rng.chance(1, 4) {
            self.rng.below(queue)
        } else {
            self.rng.below(6.min(queue))
        } as usize;
        // A cluster: small overlapping writes around one spot, often on a
        // page just made cold (the ordering and partial-page paths).
        let cluster = self.rng.chance(1, 5);
        let size0 = self.size();
        let base = if size0 > 0 { self.rng.below(size0) } else { 0 };
        let mut sim_size = size0;
        let mut reqs: Vec<Req> = Vec::with_capacity(n);
        let mut nreads = 0;
        for _ in 0..n {
            let pick = self.rng.below(100);
            let write = if cluster { pick < 85 } else { pick < 60 };
            if !write {
                nreads += 1;
                continue;
            }
            let mut append = !cluster && pick >= 45;
            let len = if cluster {
                1 + self.rng.below(300) as usize
            } else if append && self.p.big_appends && self.rng.chance(1, 3) {
                (256 << 10) + self.rng.below(768 << 10) as usize
            } else {
                self.gen_len()
            };
            if append && sim_size + len as u64 > self.p.max_size * 2 {
                append = false;
            }
            let off = if append {
                sim_size
            } else if cluster {
                (base + self.rng.below(512)).min(self.p.max_size.saturating_sub(len as u64))
            } else {
                self.gen_write_off(sim_size, len)
            };
            let end = off + len as u64;
            if !self.p.overlapping_writes
                && reqs
                    .iter()
                    .any(|r: &Req| end > r.off && off < r.off + r.len as u64)
            {
                continue;
            }
            let segs = if self.rng.chance(1, 4) {
                Some(self.gen_segs(len))
            } else {
                None
            };
            let key = self.new_key();
            reqs.push(Req {
                write: true,
                append,
                via_afd: append && self.rng.chance(1, 3),
                dsync: self.rng.chance(1, 40),
                off,
                len,
                segs,
                key,
                expect: len,
            });
            sim_size = sim_size.max(off + len as u64);
        }
        let writes: Vec<(u64, u64)> = reqs.iter().map(|r| (r.off, r.off + r.len as u64)).collect();
        for _ in 0..nreads {
            let mut placed = None;
            for _ in 0..4 {
                let len = self.gen_len();
                let (off, len) = if writes.is_empty() {
                    // no writes in flight: anywhere, past EOF included
                    (self.rng.below(size0 + 8192), len)
                } else {
                    if size0 == 0 {
                        break;
                    }
                    let off = self.rng.below(size0);
                    (off, len.min((size0 - off) as usize))
                };
                let end = off + len as u64;
                if writes.iter().all(|&(lo, hi)| end <= lo || off >= hi) {
                    placed = Some((off, len));
                    break;
                }
            }
            let Some((off, len)) = placed else { continue };
            let expect = self.expected(off, len).len();
            let segs = if self.rng.chance(1, 4) {
                Some(self.gen_segs(len))
            } else {
                None
            };
            let at = self.rng.below(reqs.len() as u64 + 1) as usize;
            reqs.insert(
                at,
                Req {
                    write: false,
                    append: false,
                    via_afd: false,
                    dsync: false,
                    off,
                    len,
                    segs,
                    key: 0,
                    expect,
                },
            );
        }
        if reqs.is_empty() {
            return Ok(());
        }
        let cold = cluster && size0 > 0 && self.rng.chance(1, 2);
        let nsub = if reqs.len() > 1 {
            1 + self.rng.below(3.min(reqs.len() as u64)) as usize
        } else {
            1
        };
        let desc: Vec<String> = reqs.iter().map(Req::describe).collect();
        self.note(format!(
            "aio x{} in {nsub} submit(s){}: {}",
            reqs.len(),
            if cold { ", cluster on a cold page" } else { "" },
            desc.join(", ")
        ));
        self.count("aio_batch");
        if cold {
            self.fd.sync_data().map_err(|e| format!("fdatasync: {e}"))?;
            let _ = crate::sys::fadvise(&self.fd, base & !4095, 8192, libc::POSIX_FADV_DONTNEED);
        }
        // Build the iocbs (writes' data from the pattern) and apply the
        // writes to the model in submission order.
        let mut ops: Vec<Op> = Vec::with_capacity(reqs.len());
        let fd = self.fd.as_raw_fd();
        let afd = self.afd.as_raw_fd();
        let mut model_size = size0;
        for (i, r) in reqs.iter_mut().enumerate() {
            let op = if r.write {
                let off = if r.append { model_size } else { r.off };
                r.off = off;
                let data = pattern::make(r.key, off, r.len);
                let fd_used = if r.via_afd { afd } else { fd };
                let mut flags = 0;
                if r.append && !r.via_afd {
                    flags |= RWF_APPEND;
                }
                if r.dsync {
                    flags |= RWF_DSYNC;
                }
                let at = if r.append { 0 } else { off };
                model_size = model_size.max(off + r.len as u64);
                match &r.segs {
                    Some(s) => Op::pwritev(fd_used, at, data, s),
                    None => Op::pwrite(fd_used, at, data),
                }
                .with_rw_flags(flags)
            } else {
                match &r.segs {
                    Some(s) => Op::preadv(fd, r.off, s),
                    None => Op::pread(fd, r.off, r.len),
                }
            };
            ops.push(op.with_data(i as u64));
        }
        for r in reqs.iter().filter(|r| r.write) {
            let data = pattern::make(r.key, r.off, r.len);
            self.apply_write(r.off, &data);
        }
        self.stats.aio_batches += 1;
        self.stats.aio_requests += reqs.len() as u64;
        // Submit in `nsub` pieces; between pieces, sometimes a synchronous
        // read of a range no write touches.
        let mut rest = ops;
        let total = rest.len();
        let mut pieces = Vec::new();
        for k in 0..nsub {
            let left = rest.len();
            let take = if k + 1 == nsub {
                left
            } else {
                (1 + self.rng.below((left - (nsub - k - 1)) as u64) as usize).min(left)
            };
            let tail = rest.split_off(take);
            pieces.push(std::mem::replace(&mut rest, tail));
        }
        let mid_read = self.rng.chance(1, 5) && size0 > 0;
        let npieces = pieces.len();
        for (k, piece) in pieces.into_iter().enumerate() {
            self.submit_piece(piece)?;
            if mid_read && k + 1 < npieces {
                let off = self.rng.below(size0);
                let len = (1 + self.rng.below(4096)).min(size0 - off) as usize;
                let end = off + len as u64;
                if writes.iter().all(|&(lo, hi)| end <= lo || off >= hi) {
                    let mut buf = vec![0u8; len];
                    let got = pread_full(&self.fd, &mut buf, off)?;
                    self.check_read(
                        &format!("pread {off:#x}+{len} while AIO in flight"),
                        off,
                        &buf[..got],
                    )?;
                }
            }
        }
        // Reap: everything at once, or in random pieces.
        let mut done = 0;
        while done < total {
            let want = if self.rng.chance(1, 2) {
                total - done
            } else {
                1 + self.rng.below((total - done) as u64) as usize
            };
            let got = self
                .ring
                .reap(want, Duration::from_secs(120))
                .map_err(|e| format!("reaping AIO batch ({done} of {total} reaped): {e}"))?;
            for c in got {
                done += 1;
                let idx = c.event.data as usize;
                let Some(r) = reqs.get(idx) else {
                    return Err(format!("event with unknown data {:#x}", c.event.data));
                };
                let r = r.clone();
                let res = c.event.res;
                if res != r.expect as i64 {
                    return Err(format!(
                        "AIO request {idx} ({}) completed with {} ({res}), expected {} bytes",
                        r.describe(),
                        describe_res(res),
                        r.expect
                    ));
                }
                if !r.write {
                    let op = c.op()?;
                    let buf = op.buf()[..r.expect].to_vec();
                    self.check_read(
                        &format!("AIO request {idx} ({})", r.describe()),
                        r.off,
                        &buf,
                    )?;
                }
            }
        }
        self.ring.check()
    }

    fn submit_piece(&mut self, mut ops: Vec<Op>) -> Result<(), String> {
        let mut spins = 0;
        while !ops.is_empty() {
            let s = self.ring.submit(ops);
            match s.error {
                Some(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        || e.raw_os_error() == Some(libc::EAGAIN) =>
                {
                    spins += 1;
                    if spins > 10_000 {
                        return Err(format!("io_submit kept failing: {e}"));
                    }
                }
                Some(e) => return Err(format!("io_submit of {} iocbs: {e}", s.rejected.len())),
                None => {}
            }
            ops = s.rejected;
        }
        Ok(())
    }

    fn gen_read_range(&mut self) -> (u64, usize) {
        let off = self.rng.below(self.size() + 8192);
        (off, self.gen_len())
    }

    fn sync_read(&mut self, vectored: bool) -> Result<(), String> {
        let (off, len) = self.gen_read_range();
        let mut buf = vec![crate::aio::READ_POISON; len];
        let got = if vectored {
            let segs = self.gen_segs(len);
            self.note(format!("preadv {off:#x}+{len} {segs:?}"));
            self.count("preadv");
            let mut iov = Vec::new();
            let mut at = 0;
            for s in &segs {
                iov.push(libc::iovec {
                    iov_base: buf[at..].as_mut_ptr() as *mut libc::c_void,
                    iov_len: *s,
                });
                at += s;
            }
            // SAFETY: every iovec points inside `buf`, which outlives the call.
            let r = unsafe {
                libc::preadv(
                    self.fd.as_raw_fd(),
                    iov.as_ptr(),
                    iov.len() as i32,
                    off as i64,
                )
            };
            if let Some(e) = errno_of(r) {
                return Err(format!("preadv {off:#x}+{len}: {e}"));
            }
            r as usize
        } else {
            self.note(format!("pread {off:#x}+{len}"));
            self.count("pread");
            pread_full(&self.fd, &mut buf, off)?
        };
        let exp = self.expected(off, len).len();
        if got != exp {
            return Err(format!(
                "read {off:#x}+{len} returned {got} bytes, expected {exp}"
            ));
        }
        self.check_read("sync read", off, &buf[..got])
    }

    fn sync_write(&mut self, vectored: bool) -> Result<(), String> {
        let len = self.gen_len();
        let off = self.gen_write_off(self.size(), len);
        let key = self.new_key();
        let data = pattern::make(key, off, len);
        let r = if vectored {
            let segs = self.gen_segs(len);
            self.note(format!("pwritev {off:#x}+{len} {segs:?}"));
            self.count("pwritev");
            let mut iov = Vec::new();
            let mut at = 0;
            for s in &segs {
                iov.push(libc::iovec {
                    iov_base: data[at..].as_ptr() as *mut libc::c_void,
                    iov_len: *s,
                });
                at += s;
            }
            // SAFETY: every iovec points inside `data`; the kernel only reads it.
            unsafe {
                libc::pwritev(
                    self.fd.as_raw_fd(),
                    iov.as_ptr(),
                    iov.len() as i32,
                    off as i64,
                )
            }
        } else {
            self.note(format!("pwrite {off:#x}+{len}"));
            self.count("pwrite");
            // SAFETY: `data` is valid for `len` bytes.
            unsafe {
                libc::pwrite(
                    self.fd.as_raw_fd(),
                    data.as_ptr() as *const libc::c_void,
                    len,
                    off as i64,
                )
            }
        };
        if let Some(e) = errno_of(r) {
            return Err(format!("write {off:#x}+{len}: {e}"));
        }
        if r as usize != len {
            return Err(format!("write {off:#x}+{len} wrote {r} bytes"));
        }
        self.apply_write(off, &data);
        Ok(())
    }

    fn append_write(&mut self) -> Result<(), String> {
        let len = self.gen_len();
        if self.size() + len as u64 > self.p.max_size {
            return self.truncate();
        }
        let off = self.size();
        let key = self.new_key();
        let data = pattern::make(key, off, len);
        self.note(format!("write(O_APPEND) +{len} at {off:#x}"));
        self.count("append");
        // SAFETY: `data` is valid for `len` bytes.
        let r = unsafe {
            libc::write(
                self.afd.as_raw_fd(),
                data.as_ptr() as *const libc::c_void,
                len,
            )
        };
        if let Some(e) = errno_of(r) {
            return Err(format!("write(O_APPEND) {len}: {e}"));
        }
        if r as usize != len {
            return Err(format!("write(O_APPEND) {len} wrote {r} bytes"));
        }
        self.apply_write(off, &data);
        Ok(())
    }

    fn mmap_op(&mut self, write: bool) -> Result<(), String> {
        let size = self.size();
        if size == 0 {
            return self.sync_write(false);
        }
        let off = self.rng.below(size);
        let len = (self.gen_len() as u64).min(size - off) as usize;
        let msync = write && self.rng.chance(1, 3);
        self.note(format!(
            "mmap {} {off:#x}+{len}{}",
            if write { "write" } else { "read" },
            if msync { " + msync" } else { "" }
        ));
        self.count(if write { "mmap_write" } else { "mmap_read" });
        // SAFETY: a fresh shared mapping of the whole file (size > 0); only
        // [off, off+len) inside the file size is touched, and the mapping is
        // unmapped before returning. Nobody truncates the file meanwhile.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.fd.as_raw_fd(),
                0,
            );
            if p == libc::MAP_FAILED {
                return Err(format!("mmap {size} bytes: {}", io::Error::last_os_error()));
            }
            let at = (p as *mut u8).add(off as usize);
            let res = if write {
                let key = self.new_key();
                let data = pattern::make(key, off, len);
                std::ptr::copy_nonoverlapping(data.as_ptr(), at, len);
                self.apply_write(off, &data);
                if msync && libc::msync(p, size as usize, libc::MS_SYNC) != 0 {
                    Err(format!("msync: {}", io::Error::last_os_error()))
                } else {
                    Ok(())
                }
            } else {
                let got = std::slice::from_raw_parts(at, len).to_vec();
                self.check_read("mmap read", off, &got)
            };
            libc::munmap(p, size as usize);
            res
        }
    }

    fn truncate(&mut self) -> Result<(), String> {
        let size = self.size();
        let new = if size > self.p.max_size || self.rng.chance(1, 2) {
            self.rng.below(size.min(self.p.max_size) + 1)
        } else {
            (size + self.rng.below(128 << 10)).min(self.p.max_size)
        };
        self.note(format!("truncate {size:#x} -> {new:#x}"));
        self.count(if new < size {
            "truncate_down"
        } else {
            "truncate_up"
        });
        self.fd
            .set_len(new)
            .map_err(|e| format!("ftruncate {new}: {e}"))?;
        self.model.resize(new as usize, 0);
        Ok(())
    }

    fn punch(&mut self, zero: bool) -> Result<(), String> {
        let size = self.size();
        if size == 0 || (zero && self.no_zero) || (!zero && self.no_punch) {
            return self.evict();
        }
        let off = self.rng.below(size);
        let len = (self.gen_len() as u64).min(size - off);
        let (mode, name) = if zero {
            (
                libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                "zero_range",
            )
        } else {
            (
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                "punch_hole",
            )
        };
        self.note(format!("fallocate {name} {off:#x}+{len}"));
        // SAFETY: plain integer arguments on an open fd.
        let r = unsafe { libc::fallocate(self.fd.as_raw_fd(), mode, off as i64, len as i64) };
        if r != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                if zero {
                    self.no_zero = true;
                } else {
                    self.no_punch = true;
                }
                self.stats.unsupported.push(name);
                return Ok(());
            }
            return Err(format!("fallocate {name} {off}+{len}: {e}"));
        }
        self.count(name);
        self.model[off as usize..(off + len) as usize].fill(0);
        Ok(())
    }

    fn sync(&mut self) -> Result<(), String> {
        if self.rng.chance(1, 2) {
            self.note("fsync".into());
            self.count("fsync");
            self.fd.sync_all().map_err(|e| format!("fsync: {e}"))
        } else {
            self.note("fdatasync".into());
            self.count("fdatasync");
            self.fd.sync_data().map_err(|e| format!("fdatasync: {e}"))
        }
    }

    fn evict(&mut self) -> Result<(), String> {
        let (off, len) = if self.rng.chance(1, 3) {
            (0, 0)
        } else {
            let off = self.rng.below(self.size() + 1) & !4095;
            (off, 4096 * (1 + self.rng.below(32)))
        };
        let flush = self.rng.chance(1, 2);
        self.note(format!(
            "{}fadvise DONTNEED {off:#x}+{}",
            if flush { "fdatasync, " } else { "" },
            if len == 0 {
                "EOF".to_string()
            } else {
                len.to_string()
            }
        ));
        self.count("evict");
        if flush {
            self.fd.sync_data().map_err(|e| format!("fdatasync: {e}"))?;
        }
        match crate::sys::fadvise(&self.fd, off, len, libc::POSIX_FADV_DONTNEED) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => Ok(()),
            Err(e) => Err(format!("fadvise DONTNEED: {e}")),
        }
    }

    /// Closes and reopens both descriptors (the AIO context stays: nothing
    /// is in flight between operations). `random`: sometimes `O_DSYNC`.
    fn reopen(&mut self, random: bool) -> Result<(), String> {
        let dsync = random && self.rng.chance(1, 8);
        if random {
            self.note(format!(
                "close, reopen{}",
                if dsync { " O_DSYNC" } else { "" }
            ));
            self.count("reopen");
        }
        let fd = open_rw(&self.path, false, dsync)
            .map_err(|e| format!("reopen {}: {e}", self.path.display()))?;
        let afd = open_rw(&self.path, true, dsync)
            .map_err(|e| format!("reopen {} O_APPEND: {e}", self.path.display()))?;
        self.fd = fd;
        self.afd = afd;
        Ok(())
    }

    fn verify_file(&mut self, what: &str) -> Result<(), String> {
        let st = self.fd.metadata().map_err(|e| format!("fstat: {e}"))?;
        if st.len() != self.size() {
            return Err(format!(
                "{what}: file size is {} ({:#x}), model says {} ({:#x})",
                st.len(),
                st.len(),
                self.size(),
                self.size()
            ));
        }
        let mut buf = vec![crate::aio::READ_POISON; self.model.len()];
        let got = pread_full(&self.fd, &mut buf, 0)?;
        if got != buf.len() {
            return Err(format!("{what}: read back {got} of {} bytes", buf.len()));
        }
        self.check_read(what, 0, &buf)
    }

    /// Reads the whole file back through AIO, 64 KiB per request, up to 16
    /// in flight (cold after drop_caches: the async read path).
    fn verify_aio_cold(&mut self) -> Result<(), String> {
        let size = self.size();
        let fd = self.fd.as_raw_fd();
        let mut off = 0u64;
        while off < size {
            let mut ops = Vec::new();
            let mut ranges = Vec::new();
            while off < size && ops.len() < 16 {
                let len = (64u64 << 10).min(size - off) as usize;
                ops.push(Op::pread(fd, off, len).with_data(ranges.len() as u64));
                ranges.push((off, len));
                off += len as u64;
            }
            let n = ops.len();
            self.submit_piece(ops)?;
            for c in self.ring.reap(n, Duration::from_secs(120))? {
                let (o, l) = ranges[c.event.data as usize];
                if c.event.res != l as i64 {
                    return Err(format!(
                        "final AIO read {o:#x}+{l}: {}",
                        describe_res(c.event.res)
                    ));
                }
                let buf = c.op()?.buf().to_vec();
                self.check_read(&format!("final AIO read {o:#x}+{l}"), o, &buf)?;
            }
        }
        Ok(())
    }
}

/// pread until `buf` is full or EOF; returns the bytes read.
fn pread_full(f: &File, buf: &mut [u8], off: u64) -> Result<usize, String> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the destination is the unfilled tail of `buf`.
        let r = unsafe {
            libc::pread(
                f.as_raw_fd(),
                buf[done..].as_mut_ptr() as *mut libc::c_void,
                buf.len() - done,
                (off + done as u64) as i64,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!(
                "pread {:#x}+{}: {e}",
                off + done as u64,
                buf.len() - done
            ));
        }
        if r == 0 {
            break;
        }
        done += r as usize;
    }
    Ok(done)
}

/// `sync`, then drop the page cache, dentries and inodes. (Writing 4 first
/// stops the kernel logging each drop: the bit is sticky, and values are
/// 1..=4, so 7 is refused.)
pub fn drop_caches() -> Result<(), String> {
    crate::sys::sync();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "4\n");
    std::fs::write("/proc/sys/vm/drop_caches", "3\n")
        .map_err(|e| format!("write /proc/sys/vm/drop_caches: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(
            instance_seed(1, "soak/fsx@ext2"),
            instance_seed(1, "soak/fsx@ext3")
        );
        assert_eq!(instance_seed(1, "x"), instance_seed(1, "x"));
    }

    /// The checker against the host's own filesystem: a correct kernel
    /// passes, and the log is deterministic for a seed.
    #[test]
    fn host_run_passes() {
        let dir = tempfile_dir();
        let p = Params::new(0x5eed, 1500);
        let fsx = Fsx::new(&dir.join("f"), p).expect("setup");
        let st = fsx.run(&mut |_, _| {}).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(st.ops, 1500);
        assert!(st.aio_requests > 500, "{st:?}");
        assert!(st.by_kind.len() >= 10, "{:?}", st.by_kind);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A corrupted model (what a lost or misplaced write looks like to the
    /// checker) is reported with the seed and the op log.
    #[test]
    fn mismatch_is_reported_with_log() {
        let dir = tempfile_dir();
        let mut fsx = Fsx::new(&dir.join("f"), Params::new(3, 200)).expect("setup");
        for _ in 0..50 {
            fsx.opno += 1;
            fsx.one_op().expect("op");
        }
        fsx.apply_write(0, &[0x42; 10]);
        let e = fsx
            .verify_file("check")
            .map(|_| ())
            .map_err(|e| fsx.report(&e));
        let e = e.expect_err("corrupted model must not verify");
        assert!(e.contains("seed 0x3"), "{e}");
        assert!(e.contains("last "), "{e}");
        assert!(e.contains("#50 "), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "bufaio-fsx-{}-{}",
            std::process::id(),
            crate::sys::monotonic_ns()
        ));
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }
}
