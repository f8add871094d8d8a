//! write/*: what buffered AIO writes leave in the file, on both kernels.
//! Aligned and unaligned writes into cold and warm files, O_APPEND and
//! RWF_APPEND, extending writes (st_size final when the event is reaped),
//! big batches, a 10 MiB write with eventfd notification. Every result is
//! checked against an in-memory model of the file right after reaping, after
//! drop_caches and after a remount of the test filesystem.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use super::{
    create_pattern_file, file_len, open_rw, pread_full, Ctx, Stop, TestResult, REAP_TIMEOUT,
};
use crate::aio::{Completion, Op, Ring};
use crate::ensure;
use crate::pattern;
use crate::sys;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// `aio_rw_flags`: append (RWF_APPEND from <linux/fs.h>).
pub(super) const RWF_APPEND: i32 = 0x10;

/// In-memory model of a file's contents.
pub(super) struct Model {
    pub bytes: Vec<u8>,
}

impl Model {
    /// A file of `len` bytes of pattern `seed`.
    pub fn pattern(seed: u64, len: usize) -> Model {
        Model {
            bytes: pattern::make(seed, 0, len),
        }
    }

    /// Records a write of pattern `seed` at `[off, off+len)` (a hole reads
    /// back as zeros).
    pub fn put(&mut self, seed: u64, off: u64, len: usize) {
        let end = off as usize + len;
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
        }
        pattern::fill(&mut self.bytes[off as usize..end], seed, off);
    }

    /// Records arbitrary bytes at `off`.
    pub fn put_bytes(&mut self, off: u64, data: &[u8]) {
        let end = off as usize + data.len();
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
        }
        self.bytes[off as usize..end].copy_from_slice(data);
    }

    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// The file's size and whole content equal the model (pread).
    pub fn check(&self, f: &File, seeds: &[u64], when: &str) -> Result<(), String> {
        let len = file_len(f)?;
        if len != self.len() {
            return Err(format!(
                "{when}: file size is {len}, expected {}",
                self.len()
            ));
        }
        let got = pread_full(f, 0, self.bytes.len() + 1)?;
        pattern::compare(&got, &self.bytes, 0, seeds).map_err(|e| format!("{when}: {e}"))
    }
}

/// Submits one op alone and reaps its completion.
pub(super) fn submit_one(ring: &mut Ring, op: Op) -> Result<Completion, String> {
    ring.submit_all(vec![op])?;
    ring.reap(1, REAP_TIMEOUT)?
        .into_iter()
        .next()
        .ok_or_else(|| "io_getevents returned no event".to_string())
}

/// A pattern write of `len` bytes at `off`.
pub(super) fn pwrite_pattern(fd: i32, seed: u64, off: u64, len: usize) -> Op {
    Op::pwrite(fd, off, pattern::make(seed, off, len))
}

/// Checks every completion has `res == nbytes`.
pub(super) fn expect_full(cs: &[Completion], what: &str) -> Result<(), String> {
    for c in cs {
        let op = c.op()?;
        c.expect_res(op.nbytes() as i64)
            .map_err(|e| format!("{what}: {e}"))?;
    }
    Ok(())
}

/// Re-opens `name` in the test directory (read-write, no create).
pub(super) fn reopen(ctx: &Ctx, name: &str) -> Result<File, String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(ctx.path(name))
        .map_err(|e| format!("re-open {name}: {e}"))
}

/// The models of `files` (name, model) hold after drop_caches and after a
/// remount of the test filesystem (nothing may be open on it).
pub(super) fn check_persisted(ctx: &Ctx, files: &[(&str, &Model)], seeds: &[u64]) -> TestResult {
    for (name, m) in files {
        let f = reopen(ctx, name)?;
        m.check(&f, seeds, &format!("{name}: before drop_caches"))?;
    }
    if !ctx.drop_caches()? {
        println!("note: not in the guest as root: drop_caches and remount not checked");
        return Ok(());
    }
    for (name, m) in files {
        let f = reopen(ctx, name)?;
        m.check(&f, seeds, &format!("{name}: after drop_caches"))?;
    }
    ctx.remount()?;
    for (name, m) in files {
        let f = reopen(ctx, name)?;
        m.check(&f, seeds, &format!("{name}: after umount + mount"))?;
        // and through a cold AIO read
        ctx.drop_caches()?;
        let mut ring = Ring::new(4)?;
        let c = submit_one(&mut ring, Op::pread(f.as_raw_fd(), 0, m.bytes.len() + 4096))?;
        c.expect_res(m.len() as i64)
            .map_err(|e| format!("{name}: cold AIO read after remount: {e}"))?;
        pattern::compare(&c.op()?.buf()[..m.bytes.len()], &m.bytes, 0, seeds)
            .map_err(|e| format!("{name}: cold AIO read after remount: {e}"))?;
        ring.finish(REAP_TIMEOUT)?;
    }
    Ok(())
}

/// Aligned and unaligned writes (single and batched) into a warm file and
/// into a cold one (data and metadata dropped), including writes crossing
/// EOF and beyond it; checked after each batch, after drop_caches and after
/// a remount.
pub fn cold_warm(ctx: &Ctx) -> TestResult {
    const OLD: u64 = 0xC01D;
    const NEW: u64 = 0x3A43;
    const LEN: usize = 256 * KIB;
    let seeds = [NEW, OLD];
    // (offset, len) batches; each batch is one io_submit, non-overlapping
    let batches: [&[(u64, usize)]; 4] = [
        &[(8192, 4 * KIB)],
        &[(65_536, 16 * KIB), (5000, 100), (12_345, 5000)],
        &[(100_000, 1), (131_071, 2), (4095, 1)],
        &[(LEN as u64 - 50, 200), (300_000, 777)],
    ];
    let mut models = Vec::new();
    for warm in [true, false] {
        let name = if warm { "warm" } else { "cold" };
        ctx.step(&format!("{name} file"));
        let f = create_pattern_file(&ctx.path(name), OLD, LEN as u64)?;
        f.sync_all().map_err(|e| format!("fsync: {e}"))?;
        if warm {
            pread_full(&f, 0, LEN)?;
        } else {
            ctx.make_cold(&f)?;
        }
        let mut m = Model::pattern(OLD, LEN);
        let mut ring = Ring::new(8)?;
        for (bi, batch) in batches.iter().enumerate() {
            if !warm {
                ctx.make_cold(&f)?;
            }
            let ops = batch
                .iter()
                .enumerate()
                .map(|(i, &(off, len))| {
                    pwrite_pattern(f.as_raw_fd(), NEW, off, len).with_data(i as u64)
                })
                .collect();
            ring.submit_all(ops)?;
            let cs = ring.reap(batch.len(), REAP_TIMEOUT)?;
            expect_full(&cs, &format!("{name} file, batch {bi}"))?;
            for &(off, len) in batch.iter() {
                m.put(NEW, off, len);
            }
            m.check(&f, &seeds, &format!("{name} file, after batch {bi}"))?;
        }
        ring.finish(REAP_TIMEOUT)?;
        models.push((name, m));
    }
    let list: Vec<(&str, &Model)> = models.iter().map(|(n, m)| (*n, m)).collect();
    check_persisted(ctx, &list, &seeds)
}

/// Finds the order in which the appended chunks landed after `base`: each
/// chunk (pattern of its seed, encoded from offset 0) must appear whole and
/// contiguous, in some order. Returns the seeds in file order.
pub(super) fn append_order(
    got: &[u8],
    base: usize,
    chunks: &[(u64, usize)],
) -> Result<Vec<u64>, String> {
    let mut left: Vec<(u64, usize)> = chunks.to_vec();
    let mut at = base;
    let mut order = Vec::new();
    while !left.is_empty() {
        let i = left
            .iter()
            .position(|&(seed, len)| {
                got.len() >= at + len && got[at..at + len] == pattern::make(seed, 0, len)[..]
            })
            .ok_or_else(|| {
                format!(
                    "at offset {at}: none of the appended chunks {left:?} (seed, len) starts here: appends interleaved, torn or lost"
                )
            })?;
        let (seed, len) = left.remove(i);
        order.push(seed);
        at += len;
    }
    if at != got.len() {
        return Err(format!(
            "{} unexpected bytes after the appended chunks (file ends at {})",
            got.len() - at,
            got.len()
        ));
    }
    Ok(order)
}

/// O_APPEND fd and RWF_APPEND on a plain fd: several appends in one
/// io_submit (aio_offset 0, which must be ignored) onto a file whose last
/// block is partial and cold. Each chunk lands whole and contiguous at the
/// end; nothing before EOF is touched.
pub fn append(ctx: &Ctx) -> TestResult {
    const OLD: u64 = 0xA99;
    const BASE: usize = 10_000;
    let path = ctx.path("data");
    let f = create_pattern_file(&path, OLD, BASE as u64)?;
    ctx.make_cold(&f)?;
    let mut expect = pattern::make(OLD, 0, BASE);
    let mut ring = Ring::new(16)?;
    let rounds: [(&str, &[(u64, usize)]); 2] = [
        (
            "O_APPEND fd",
            &[(0xA1, 100), (0xA2, 4096), (0xA3, 5000), (0xA4, 1)],
        ),
        ("RWF_APPEND", &[(0xB1, 3), (0xB2, 8192 + 7), (0xB3, 4093)]),
    ];
    for (what, chunks) in rounds {
        ctx.step(what);
        let start = expect.len();
        let g = if what == "O_APPEND fd" {
            std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| format!("open O_APPEND: {e}"))?
        } else {
            open_rw(&path)?
        };
        let flags = if what == "RWF_APPEND" { RWF_APPEND } else { 0 };
        let ops = chunks
            .iter()
            .enumerate()
            .map(|(i, &(seed, len))| {
                Op::pwrite(g.as_raw_fd(), 0, pattern::make(seed, 0, len))
                    .with_rw_flags(flags)
                    .with_data(i as u64)
            })
            .collect();
        ctx.make_cold(&f)?;
        ring.submit_all(ops)?;
        let cs = ring.reap(chunks.len(), REAP_TIMEOUT)?;
        expect_full(&cs, what)?;
        let total: usize = chunks.iter().map(|c| c.1).sum();
        let len = file_len(&f)?;
        ensure!(
            len == (start + total) as u64,
            "{what}: file size {len} after {} appends of {total} bytes onto {start}",
            chunks.len()
        );
        let got = pread_full(&f, 0, start + total + 1)?;
        ensure!(
            got[..start] == expect[..],
            "{what}: bytes before the old EOF ({start}) changed: {}",
            pattern::compare(&got[..start], &expect, 0, &[OLD])
                .err()
                .unwrap_or_default()
        );
        let order = append_order(&got, start, chunks).map_err(|e| format!("{what}: {e}"))?;
        println!(
            "{what}: {} appends landed in order {order:x?}",
            chunks.len()
        );
        expect = got;
    }
    ring.finish(REAP_TIMEOUT)?;
    drop(f);
    let mut m = Model { bytes: Vec::new() };
    m.put_bytes(0, &expect);
    // seeds of the appended chunks are encoded from 0: compare reports by
    // position only
    check_persisted(ctx, &[("data", &m)], &[OLD])
}

/// Extending writes: when the event is reaped, fstat already shows the
/// final size (crossing EOF, exactly at EOF, beyond EOF leaving a hole, a
/// big one), and for a batch of extending writes each reaped event's end is
/// covered by st_size at the time it is reaped.
pub fn extend_size(ctx: &Ctx) -> TestResult {
    const OLD: u64 = 0xE47;
    const NEW: u64 = 0x5E1;
    let seeds = [NEW, OLD];
    let path = ctx.path("data");
    let f = create_pattern_file(&path, OLD, 10_000)?;
    ctx.make_cold(&f)?;
    let mut m = Model::pattern(OLD, 10_000);
    let fd = f.as_raw_fd();
    let mut ring = Ring::new(16)?;
    let singles: [(u64, usize); 5] = [
        (9_990, 100),
        (10_090, 1),
        (20_000, 5),
        (100, 100),
        (20_005, 300_000),
    ];
    for (i, &(off, len)) in singles.iter().enumerate() {
        ctx.make_cold(&f)?;
        let c = submit_one(
            &mut ring,
            pwrite_pattern(fd, NEW, off, len).with_data(i as u64),
        )?;
        let size_now = file_len(&f)?;
        let size_path = std::fs::metadata(&path)
            .map_err(|e| format!("stat: {e}"))?
            .len();
        c.expect_res(len as i64)?;
        m.put(NEW, off, len);
        ensure!(
            size_now == m.len() && size_path == m.len(),
            "write {i} ({len} bytes at {off}): st_size is {size_now} (fstat) / {size_path} (stat) when the event is reaped, expected {}",
            m.len()
        );
    }
    m.check(&f, &seeds, "after the single extending writes")?;

    ctx.step("batch of 8 extending writes");
    ctx.make_cold(&f)?;
    let base = m.len();
    let batch: Vec<(u64, usize)> = (0..8u64)
        .map(|i| (base + i * 10_000 + 3, 9_000 + i as usize * 100))
        .collect();
    let ops = batch
        .iter()
        .enumerate()
        .map(|(i, &(off, len))| pwrite_pattern(fd, NEW, off, len).with_data(i as u64))
        .collect();
    ring.submit_all(ops)?;
    let mut seen = 0;
    while seen < batch.len() {
        let cs = match ring.getevents(1, 1, Some(REAP_TIMEOUT)) {
            Ok(cs) => cs,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("io_getevents: {e}").into()),
        };
        ensure!(!cs.is_empty(), "timed out waiting for the extending batch");
        let size_now = file_len(&f)?;
        for c in &cs {
            let op = c.op()?;
            c.expect_res(op.nbytes() as i64)?;
            let end = op.offset() + op.nbytes() as u64;
            ensure!(
                size_now >= end,
                "extending write at {} ({} bytes) reaped while st_size was {size_now} < its end {end}",
                op.offset(),
                op.nbytes()
            );
        }
        seen += cs.len();
    }
    for &(off, len) in &batch {
        m.put(NEW, off, len);
    }
    m.check(&f, &seeds, "after the extending batch")?;
    ring.finish(REAP_TIMEOUT)?;
    drop(f);
    check_persisted(ctx, &[("data", &m)], &seeds)
}

/// One io_submit of `writes` onto a cold file of `initial` bytes, checked
/// after reaping and after drop_caches/remount.
fn batch_case(ctx: &Ctx, initial: usize, writes: &[(u64, usize)]) -> TestResult {
    const OLD: u64 = 0xBB01;
    const NEW: u64 = 0xBB02;
    let seeds = [NEW, OLD];
    let f = create_pattern_file(&ctx.path("data"), OLD, initial as u64)?;
    ctx.make_cold(&f)?;
    let mut m = Model::pattern(OLD, initial);
    let mut ring = Ring::new(writes.len().max(8) as u32)?;
    let ops = writes
        .iter()
        .enumerate()
        .map(|(i, &(off, len))| pwrite_pattern(f.as_raw_fd(), NEW, off, len).with_data(i as u64))
        .collect();
    ring.submit_all(ops)?;
    let t = ring.last_submit;
    let cs = ring.reap(writes.len(), REAP_TIMEOUT)?;
    expect_full(&cs, "batch")?;
    for &(off, len) in writes {
        m.put(NEW, off, len);
    }
    let total: usize = writes.iter().map(|w| w.1).sum();
    println!(
        "{} writes, {} KiB, in one io_submit ({} us) onto a cold {} KiB file",
        writes.len(),
        total / KIB,
        t.as_micros(),
        initial / KIB
    );
    m.check(&f, &seeds, "after reaping")?;
    ring.finish(REAP_TIMEOUT)?;
    drop(f);
    check_persisted(ctx, &[("data", &m)], &seeds)
}

/// 8 x 1 MiB in one io_submit: adjacent, unaligned (neighbours share a
/// page), over a cold file and extending it.
pub fn batch_8x1m(ctx: &Ctx) -> TestResult {
    let w: Vec<(u64, usize)> = (0..8u64).map(|i| (i * MIB as u64 + 512, MIB)).collect();
    batch_case(ctx, 6 * MIB, &w)
}

/// 256 x 4 KiB non-overlapping in one io_submit, each crossing a page
/// boundary of a cold file (two partial pages each).
pub fn batch_256x4k(ctx: &Ctx) -> TestResult {
    let w: Vec<(u64, usize)> = (0..256u64)
        .map(|i| (i * 8192 + 4096 - 1000, 4096))
        .collect();
    batch_case(ctx, 2 * MIB + 4096, &w)
}

/// One 10 MiB write at an unaligned offset into a cold 4 MiB file.
pub fn single_10m(ctx: &Ctx) -> TestResult {
    batch_case(ctx, 4 * MIB, &[(3, 10 * MIB)])
}

/// IOCB_FLAG_RESFD: a 10 MiB write signals the eventfd (counter 1) and its
/// event is then in the ring; the same for a 10 MiB AIO read of it (cold).
pub fn eventfd_10m(ctx: &Ctx) -> TestResult {
    const NEW: u64 = 0xEF10;
    const LEN: usize = 10 * MIB;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOATIME)
        .open(ctx.path("data"))
        .map_err(|e| format!("create: {e}"))?;
    let efd_owned = sys::eventfd(0, libc::EFD_NONBLOCK).map_err(|e| format!("eventfd: {e}"))?;
    let efd_raw = efd_owned.as_raw_fd();
    let mut efd = File::from(efd_owned);
    let mut ring = Ring::new(4)?;
    let ops = [
        ("write", pwrite_pattern(f.as_raw_fd(), NEW, 0, LEN)),
        ("read", Op::pread(f.as_raw_fd(), 0, LEN)),
    ];
    for (i, (what, op)) in ops.into_iter().enumerate() {
        if what == "read" {
            ctx.make_cold(&f)?;
        }
        ring.submit_all(vec![op.with_data(i as u64).with_resfd(efd_raw)])?;
        let ready = sys::poll_readable(&efd, Duration::from_secs(60))
            .map_err(|e| format!("poll eventfd: {e}"))?;
        ensure!(
            ready,
            "eventfd not signalled within 60 s of a 10 MiB {what}"
        );
        let count = super::inflight::read_eventfd(&mut efd)?;
        ensure!(
            count == 1,
            "{what}: eventfd counter is {count} for one request"
        );
        let cs = ring
            .getevents(0, 4, Some(Duration::ZERO))
            .map_err(|e| format!("io_getevents: {e}"))?;
        ensure!(
            cs.len() == 1,
            "{what}: eventfd was signalled but io_getevents(timeout 0) found {} events, expected 1",
            cs.len()
        );
        cs[0].expect_res(LEN as i64)?;
        if what == "write" {
            ensure!(
                file_len(&f)? == LEN as u64,
                "file size {} after the 10 MiB write",
                file_len(&f)?
            );
        } else {
            pattern::verify(cs[0].op()?.buf(), NEW, 0).map_err(|e| format!("read back: {e}"))?;
        }
    }
    ring.finish(REAP_TIMEOUT)?;
    Ok(())
}

/// Fails with SKIP outside the guest (needs root for drop_caches etc.).
pub(super) fn require_guest(ctx: &Ctx, why: &str) -> TestResult {
    if ctx.guest && ctx.root {
        Ok(())
    } else {
        Err(Stop::Skip(format!("{why}: guest only")))
    }
}

/// The fast path every buffered AIO user relies on (libaio's own harness
/// polls `io_getevents(min_nr = 0)` right after `io_submit()`): a write that
/// needs no device IO is complete when `io_submit()` returns. Cases: an
/// aligned and an unaligned overwrite of cached data, an extending write
/// inside the cached last block, an allocating append whose metadata is
/// cached (the file was just written), and the first write of a new file.
/// Holds on the unpatched kernel (every write completes in `io_submit()`).
pub fn cached_inline(ctx: &Ctx) -> TestResult {
    const OLD: u64 = 0xCAC0;
    const NEW: u64 = 0xCAC1;
    let path = ctx.path("data");
    let f = create_pattern_file(&path, OLD, 64 * 1024 + 100)?;
    pread_full(&f, 0, 64 * 1024 + 100)?;
    let fresh = ctx.path("fresh");
    let mut model = Model::pattern(OLD, 64 * 1024 + 100);
    let mut ring = Ring::new(8)?;
    let cases: [(u64, usize, &str); 5] = [
        (4096, 4096, "aligned cached overwrite"),
        (8192 + 1000, 100, "100-byte overwrite inside a cached block"),
        (
            64 * 1024 + 100,
            200,
            "extending write inside the cached last block",
        ),
        (
            64 * 1024 + 300,
            8192,
            "allocating append with cached metadata",
        ),
        (0, 4096, "first write of a new file"),
    ];
    let nf = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&fresh)
        .map_err(|e| format!("create {}: {e}", fresh.display()))?;
    for round in 0..3u64 {
        for (i, &(off, len, what)) in cases.iter().enumerate() {
            let (fd, off) = if i == 4 {
                (nf.as_raw_fd(), off + round * 4096)
            } else {
                (f.as_raw_fd(), off)
            };
            let seed = NEW + round;
            ring.submit_all(vec![pwrite_pattern(fd, seed, off, len).with_data(i as u64)])?;
            let c = ring
                .getevents(0, 2, Some(std::time::Duration::ZERO))
                .map_err(|e| format!("io_getevents(timeout 0): {e}"))?;
            ensure!(
                c.len() == 1,
                "round {round}: {what} ({len} bytes at {off}) was not complete when io_submit returned: a request that needs no device IO must complete inline"
            );
            c[0].expect_res(len as i64)
                .map_err(|e| format!("round {round}: {what}: {e}"))?;
            if i < 4 {
                model.put(seed, off, len);
            }
        }
        // later rounds start from the same cached state: undo the growth
        f.set_len(64 * 1024 + 100)
            .map_err(|e| format!("ftruncate: {e}"))?;
        model.bytes.truncate(64 * 1024 + 100);
    }
    model.check(&f, &[OLD, NEW, NEW + 1, NEW + 2], "after the cached writes")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_order_finds_any_order_and_rejects_torn() {
        let chunks = [(1u64, 10usize), (2, 5), (3, 7)];
        let mut f = vec![9u8; 4];
        f.extend(pattern::make(2, 0, 5));
        f.extend(pattern::make(3, 0, 7));
        f.extend(pattern::make(1, 0, 10));
        assert_eq!(append_order(&f, 4, &chunks).unwrap(), [2, 3, 1]);
        let mut torn = f.clone();
        torn[6] ^= 1;
        assert!(append_order(&torn, 4, &chunks).is_err());
        let mut extra = f.clone();
        extra.push(0);
        assert!(append_order(&extra, 4, &chunks)
            .unwrap_err()
            .contains("unexpected bytes"));
        assert!(append_order(&f[..20], 4, &chunks).is_err());
    }

    #[test]
    fn model_put() {
        let mut m = Model::pattern(1, 4);
        m.put(2, 8, 2);
        assert_eq!(m.len(), 10);
        assert_eq!(&m.bytes[4..8], &[0, 0, 0, 0]);
        assert_eq!(&m.bytes[8..], &pattern::make(2, 8, 2)[..]);
        m.put_bytes(0, &[7]);
        assert_eq!(m.bytes[0], 7);
    }

    #[test]
    fn batch_layouts_do_not_overlap() {
        let b: Vec<(u64, usize)> = (0..256u64)
            .map(|i| (i * 8192 + 4096 - 1000, 4096))
            .collect();
        for w in b.windows(2) {
            assert!(w[0].0 + w[0].1 as u64 <= w[1].0);
        }
    }
}
