//! write/* on the slow device (null_blk, L = 1 ms per IO): whether
//! io_submit of a buffered write waits for the device (new behaviour), and
//! the series' AIO counters.
//!
//! Every new-behaviour test checks correctness first (result, whole
//! block/page content, data on the medium) and asserts asynchrony last, by
//! what the kernel did ([`Probes`]: sleeps inside io_submit, requests
//! complete sooner than the device answers), so on a kernel without async
//! writes it fails only there, with the numbers. Times are reported.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::inflight::{cold_files, cpu_factor, require_slow, Probes, PROBES};
use super::write_data::{pwrite_pattern, submit_one, Model};
use super::{pread_full, BlockDev, Ctx, Stop, TestResult, REAP_TIMEOUT};
use crate::aio::{AlignedBuf, Op, Ring};
use crate::pattern;
use crate::sys;
use crate::{ensure, ensure_str};
use bufaio_contract::aiostats::{self, Stats};

const KIB: usize = 1024;

/// Runs one write probe ([`Probes::run`]) and returns its result.
fn probe_res(p: &mut Probes, ring: &mut Ring, op: Op) -> Result<i64, String> {
    Ok(p.run(ring, op)?.event.res)
}

/// New behaviour: a 100-byte write into the middle of an uncached block of
/// an existing file: io_submit does not wait for the read of that block;
/// after reaping the whole page around it holds old data + the 100 bytes.
pub fn partial_block_nonblocking(ctx: &Ctx) -> TestResult {
    const OLD: u64 = 0x9B00;
    const NEW: u64 = 0x9B80;
    const OFF: u64 = 16 * 1024 + 1000;
    const LEN: usize = 100;
    let dev = require_slow(ctx)?;
    let files = cold_files(ctx, PROBES, OLD, (0, 64 * KIB), true, true)?;
    let mut ring = Ring::new(8)?;
    let mut p = Probes::new(&dev);
    let before = dev.sectors_read()?;
    for (i, f) in files.iter().enumerate() {
        ctx.drop_caches()?;
        let seed = NEW + i as u64;
        let res = probe_res(
            &mut p,
            &mut ring,
            pwrite_pattern(f.as_raw_fd(), seed, OFF, LEN).with_data(i as u64),
        )?;
        ensure!(
            res == LEN as i64,
            "probe {i}: 100-byte write at {OFF}: res {res} ({}), expected {LEN}",
            crate::aio::describe_res(res)
        );
        // the whole page around it, from the page cache
        let page = OFF & !4095;
        let got = pread_full(f, page, 4096)?;
        let mut want = pattern::make(OLD + i as u64, page, 4096);
        pattern::fill(
            &mut want[(OFF - page) as usize..(OFF - page) as usize + LEN],
            seed,
            OFF,
        );
        pattern::compare(&got, &want, page, &[seed, OLD + i as u64])
            .map_err(|e| format!("probe {i}: page around the write after reaping: {e}"))?;
    }
    let read = dev.sectors_read()? - before;
    // after writeback and a cache drop, the whole file
    ctx.drop_caches()?;
    for (i, f) in files.iter().enumerate() {
        let mut m = Model::pattern(OLD + i as u64, 64 * KIB);
        m.put(NEW + i as u64, OFF, LEN);
        m.check(
            f,
            &[NEW + i as u64, OLD + i as u64],
            &format!("file {i} after drop_caches"),
        )?;
    }
    println!(
        "{}; device read {read} sectors",
        p.report("100-byte write into an uncached block")
    );
    ring.finish(REAP_TIMEOUT)?;
    ensure!(
        read >= files.len() as u64 * 2,
        "the blocks were not cold: the device read only {read} sectors for {} writes",
        files.len()
    );
    p.assert_async("100-byte write into the middle of an uncached block")
}

/// Reads `len` bytes at byte `off` of the raw block device `dev` with
/// O_DIRECT (bypassing every cache).
fn read_raw(dev: &Path, off: u64, len: usize) -> Result<Vec<u8>, String> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(dev)
        .map_err(|e| format!("open {} O_DIRECT: {e}", dev.display()))?;
    let mut buf = AlignedBuf::new(len, 4096).map_err(|e| e.to_string())?;
    f.read_exact_at(buf.as_mut_slice(), off)
        .map_err(|e| format!("O_DIRECT read of {} at {off}: {e}", dev.display()))?;
    Ok(buf.as_slice()[..len].to_vec())
}

/// The bytes `[off, off+len)` of `f` are on the medium: FIBMAP each fs
/// block, read it from the raw device with O_DIRECT, compare with `want`.
pub(super) fn check_on_medium(
    f: &File,
    dev: &BlockDev,
    off: u64,
    want: &[u8],
    seeds: &[u64],
) -> Result<(), String> {
    let bs = sys::figetbsz(f).map_err(|e| format!("FIGETBSZ: {e}"))? as u64;
    let node = Path::new("/dev").join(dev.name());
    let end = off + want.len() as u64;
    let mut lblk = off / bs;
    while lblk * bs < end {
        let phys = sys::fibmap(f, lblk as u32).map_err(|e| format!("FIBMAP {lblk}: {e}"))?;
        ensure_str!(phys != 0, "FIBMAP: logical block {lblk} is not mapped");
        let raw = read_raw(&node, phys as u64 * bs, bs as usize)?;
        let (lo, hi) = ((lblk * bs).max(off), ((lblk + 1) * bs).min(end));
        let got = &raw[(lo - lblk * bs) as usize..(hi - lblk * bs) as usize];
        let exp = &want[(lo - off) as usize..(hi - off) as usize];
        pattern::compare(got, exp, lo, seeds).map_err(|e| {
            format!(
                "on the medium ({} block {phys}, file block {lblk}): {e}",
                node.display()
            )
        })?;
        lblk += 1;
    }
    Ok(())
}

/// O_SYNC / O_DSYNC writes on the slow device: (1) a 4 KiB overwrite of
/// allocated blocks of a cold file, (2) a 4 KiB extending write at EOF
/// (allocation metadata warmed by a sibling file and the file's last block
/// read, so the only device wait left is the sync itself). After reaping,
/// the data is on the medium.
fn sync_write(ctx: &Ctx, flag: libc::c_int, what: &str) -> TestResult {
    const OLD: u64 = 0x5900;
    const NEW: u64 = 0x5980;
    const N: usize = 9;
    const FILE: usize = 64 * KIB;
    let dev = require_slow(ctx)?;
    let _ = cold_files(ctx, N, OLD, (0, FILE), true, true)?;
    let mut files = Vec::new();
    for i in 0..N {
        files.push(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(flag | libc::O_NOATIME)
                .open(ctx.path(&format!("cold{i}")))
                .map_err(|e| format!("open cold{i} {what}: {e}"))?,
        );
    }
    let warm = super::open_rw(&ctx.path("warm"))?;
    let mut ring = Ring::new(8)?;
    let (mut over, mut ext) = (Probes::new(&dev), Probes::new(&dev));
    for (i, f) in files.iter().enumerate() {
        let seed = NEW + i as u64;
        let seeds = [seed, OLD + i as u64];
        ctx.step(&format!("{what} overwrite {i}"));
        ctx.drop_caches()?;
        let res = probe_res(
            &mut over,
            &mut ring,
            pwrite_pattern(f.as_raw_fd(), seed, 8192, 4096).with_data(i as u64),
        )?;
        ensure!(
            res == 4096,
            "{what} overwrite {i}: res {res} ({}), expected 4096",
            crate::aio::describe_res(res)
        );
        check_on_medium(f, &dev, 8192, &pattern::make(seed, 8192, 4096), &seeds)
            .map_err(|e| format!("{what} overwrite {i}, right after reaping: {e}"))?;

        ctx.step(&format!("{what} extending write {i}"));
        // warm the block bitmap / group descriptor with a sibling allocation,
        // and the file's mapping of its last block (the indirect block):
        // the only device wait left is the sync (`write/extend_nonblocking`
        // covers the cold-mapping case)
        warm.write_all_at(&[1u8; 1024], (i * 4096) as u64)
            .map_err(|e| format!("write warm: {e}"))?;
        warm.sync_all().map_err(|e| format!("fsync warm: {e}"))?;
        pread_full(f, (FILE - 1024) as u64, 1024)?;
        let res = probe_res(
            &mut ext,
            &mut ring,
            pwrite_pattern(f.as_raw_fd(), seed, FILE as u64, 4096).with_data(100 + i as u64),
        )?;
        ensure!(
            res == 4096,
            "{what} extending write {i}: res {res} ({}), expected 4096",
            crate::aio::describe_res(res)
        );
        ensure!(
            super::file_len(f)? == (FILE + 4096) as u64,
            "{what} extending write {i}: st_size {} when reaped",
            super::file_len(f)?
        );
        check_on_medium(
            f,
            &dev,
            FILE as u64,
            &pattern::make(seed, FILE as u64, 4096),
            &seeds,
        )
        .map_err(|e| format!("{what} extending write {i}, right after reaping: {e}"))?;
    }
    ring.finish(REAP_TIMEOUT)?;
    drop(files);
    drop(warm);
    ctx.remount()?;
    for i in 0..N {
        let f = super::write_data::reopen(ctx, &format!("cold{i}"))?;
        let mut m = Model::pattern(OLD + i as u64, FILE);
        m.put(NEW + i as u64, 8192, 4096);
        m.put(NEW + i as u64, FILE as u64, 4096);
        m.check(
            &f,
            &[NEW + i as u64, OLD + i as u64],
            &format!("cold{i} after remount"),
        )?;
    }
    println!(
        "{}",
        over.report(&format!("{what} 4 KiB overwrite, cold file"))
    );
    println!("{}", ext.report(&format!("{what} 4 KiB extending write")));
    over.assert_async(&format!("{what} overwrite of a cold file"))?;
    ext.assert_async(&format!("{what} extending write"))
}

/// New behaviour: O_SYNC writes do not wait in io_submit; data on the medium.
pub fn osync_nonblocking(ctx: &Ctx) -> TestResult {
    sync_write(ctx, libc::O_SYNC, "O_SYNC")
}

/// New behaviour: O_DSYNC writes do not wait in io_submit; data on the medium.
pub fn odsync_nonblocking(ctx: &Ctx) -> TestResult {
    sync_write(ctx, libc::O_DSYNC, "O_DSYNC")
}

/// New behaviour: a plain 4 KiB write extending a cold file at EOF (64 KiB:
/// with 1 KiB blocks the new block hangs off the cold indirect block; the
/// block bitmap is warmed by a sibling allocation): io_submit does not wait
/// for the mapping read. Size and content checked first.
pub fn extend_nonblocking(ctx: &Ctx) -> TestResult {
    const OLD: u64 = 0xE700;
    const NEW: u64 = 0xE780;
    const FILE: usize = 64 * KIB;
    let dev = require_slow(ctx)?;
    let files = cold_files(ctx, PROBES, OLD, (0, FILE), true, true)?;
    let warm = super::open_rw(&ctx.path("warm"))?;
    let mut ring = Ring::new(8)?;
    let mut p = Probes::new(&dev);
    for (i, f) in files.iter().enumerate() {
        ctx.drop_caches()?;
        warm.write_all_at(&[1u8; 1024], (i * 4096) as u64)
            .map_err(|e| format!("write warm: {e}"))?;
        warm.sync_all().map_err(|e| format!("fsync warm: {e}"))?;
        let seed = NEW + i as u64;
        let res = probe_res(
            &mut p,
            &mut ring,
            pwrite_pattern(f.as_raw_fd(), seed, FILE as u64, 4096).with_data(i as u64),
        )?;
        ensure!(
            res == 4096,
            "extending write {i}: res {res} ({}), expected 4096",
            crate::aio::describe_res(res)
        );
        let mut m = Model::pattern(OLD + i as u64, FILE);
        m.put(seed, FILE as u64, 4096);
        m.check(
            f,
            &[seed, OLD + i as u64],
            &format!("file {i} after reaping"),
        )?;
    }
    ring.finish(REAP_TIMEOUT)?;
    ctx.drop_caches()?;
    for (i, f) in files.iter().enumerate() {
        let mut m = Model::pattern(OLD + i as u64, FILE);
        m.put(NEW + i as u64, FILE as u64, 4096);
        m.check(
            f,
            &[NEW + i as u64, OLD + i as u64],
            &format!("file {i} after drop_caches"),
        )?;
    }
    println!("{}", p.report("4 KiB extending write, cold mapping"));
    p.assert_async("extending write behind a cold indirect block")
}

/// Writes in flight on the slow device (from /sys/block/X/inflight).
fn writes_inflight(dev: &BlockDev) -> Result<u64, String> {
    let p = dev.sys.join("inflight");
    let s = std::fs::read_to_string(&p).map_err(|e| format!("read {}: {e}", p.display()))?;
    s.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("unexpected {}: {s:?}", p.display()))
}

/// Both kernels: a second write to a page under writeback (started with
/// sync_file_range(SYNC_FILE_RANGE_WRITE) on the slow device) does not make
/// io_submit wait for that writeback; the final content is the second write.
pub fn writeback_nonblocking(ctx: &Ctx) -> TestResult {
    const OLD: u64 = 0x3B00;
    const FIRST: u64 = 0x3B40;
    const SECOND: u64 = 0x3B80;
    const PAGES: u64 = 16;
    let dev = require_slow(ctx)?;
    let path = ctx.path("data");
    let f = super::create_pattern_file(&path, OLD, PAGES * 4096)?;
    f.sync_all().map_err(|e| format!("fsync: {e}"))?;
    let mut m = Model::pattern(OLD, (PAGES * 4096) as usize);
    let mut ring = Ring::new(8)?;
    let mut p = Probes::new(&dev);
    let mut under_wb = 0;
    // Keep probing (up to 3x) until half of PROBES writes found writeback
    // in flight: a slow (debug) kernel can finish it before the write.
    let mut n = 0u64;
    while n < PROBES as u64 || (under_wb * 2 < PROBES && n < 3 * PROBES as u64) {
        let i = n;
        n += 1;
        let page = (i % PAGES) * 4096;
        // dirty the page, start its writeback, write it again at once
        f.write_all_at(&pattern::make(FIRST + i, page, 4096), page)
            .map_err(|e| format!("pwrite: {e}"))?;
        sys::sync_file_range(&f, page, 4096, libc::SYNC_FILE_RANGE_WRITE)
            .map_err(|e| format!("sync_file_range: {e}"))?;
        if writes_inflight(&dev)? > 0 {
            under_wb += 1;
        }
        // a whole-page rewrite, or 100 bytes into it
        let (off, len) = if i.is_multiple_of(2) {
            (page, 4096)
        } else {
            m.put(FIRST + i, page, 4096);
            (page + 1000, 100)
        };
        let res = probe_res(
            &mut p,
            &mut ring,
            pwrite_pattern(f.as_raw_fd(), SECOND + i, off, len).with_data(i),
        )?;
        ensure!(
            res == len as i64,
            "write {i} to a page under writeback: res {res} ({}), expected {len}",
            crate::aio::describe_res(res)
        );
        m.put(SECOND + i, off, len);
        let seeds: Vec<u64> = [SECOND + i, FIRST + i, OLD].to_vec();
        let got = pread_full(&f, page, 4096)?;
        pattern::compare(
            &got,
            &m.bytes[page as usize..page as usize + 4096],
            page,
            &seeds,
        )
        .map_err(|e| format!("write {i}: page after reaping: {e}"))?;
    }
    ring.finish(REAP_TIMEOUT)?;
    let seeds: Vec<u64> = (0..n)
        .flat_map(|i| [SECOND + i, FIRST + i])
        .chain([OLD])
        .collect();
    f.sync_all().map_err(|e| format!("fsync: {e}"))?;
    ctx.drop_caches()?;
    m.check(&f, &seeds, "after fsync and drop_caches")?;
    println!(
        "{}; device had writes in flight before {under_wb}/{n} of them",
        p.report("write to a page under writeback"),
    );
    if under_wb * 2 < PROBES && cpu_factor() > 1 {
        // The debug kernel's own path from sync_file_range() to the write
        // outlasts L: the scenario cannot be produced there (the contents
        // were still checked above); the default flavor covers it.
        return Err(Stop::Skip(format!(
            "the debug kernel finished writeback before the write in {} of {n} probes (L = 1 ms): pages under writeback not reached",
            n - under_wb as u64
        )));
    }
    ensure!(
        under_wb * 2 >= PROBES,
        "writeback was in flight before only {under_wb} of {n} writes: the test did not exercise pages under writeback"
    );
    p.assert_no_wait("write to a page under writeback")
}

/// Mounts debugfs on /sys/kernel/debug if needed and reads the counters.
/// `Ok(None)` when the kernel has no counters file.
pub(super) fn read_stats() -> Result<Option<Stats>, String> {
    let dbg = Path::new(aiostats::DEBUGFS);
    if !dbg.join(aiostats::STATS_REL).exists() {
        if let Err(e) = sys::mount("debugfs", dbg, "debugfs", 0) {
            if e.raw_os_error() != Some(libc::EBUSY) {
                return Err(format!("mount debugfs on {}: {e}", dbg.display()));
            }
        }
    }
    aiostats::read_at(dbg)
}

/// Counter deltas around `f` (None if the kernel has no counters).
fn with_stats<T>(f: impl FnOnce() -> Result<T, Stop>) -> Result<(T, Option<Stats>), Stop> {
    let before = read_stats()?;
    let out = f()?;
    let after = read_stats()?;
    let delta = match (before, after) {
        (Some(b), Some(a)) => {
            let down = a.decreased(&b);
            ensure!(down.is_empty(), "AIO counters went backwards: {down:?}");
            Some(a.delta(&b))
        }
        _ => None,
    };
    Ok((out, delta))
}

/// New behaviour (patched kernel only exposes it): the series' counters in
/// `/sys/kernel/debug/aio/stats` show which path a write took. ext2: the
/// 100-byte cold partial-block write parks on the folio and completes from
/// the callback (write_park_folio, write_async), never punted; an O_DSYNC
/// write is punted (write_punt_sync). ext3: the journalled part of the
/// partial write runs in the fallback worker (write_punt_eagain).
pub fn counters(ctx: &Ctx) -> TestResult {
    const OLD: u64 = 0xC700;
    const NEW: u64 = 0xC780;
    const OFF: u64 = 16 * 1024 + 1000;
    require_slow(ctx)?;
    let ext3 = ctx.fs.as_deref() == Some("ext3");
    let files = cold_files(ctx, 2, OLD, (0, 64 * KIB), true, true)?;
    let mut ring = Ring::new(8)?;

    ctx.step("cold 100-byte partial-block write");
    ctx.drop_caches()?;
    let (res, partial) = with_stats(|| {
        Ok(submit_one(
            &mut ring,
            pwrite_pattern(files[0].as_raw_fd(), NEW, OFF, 100),
        )?
        .event
        .res)
    })?;
    ensure!(res == 100, "partial write: res {res}, expected 100");
    let mut m = Model::pattern(OLD, 64 * KIB);
    m.put(NEW, OFF, 100);
    m.check(&files[0], &[NEW, OLD], "after the partial write")?;

    ctx.step("O_DSYNC overwrite");
    let g = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DSYNC | libc::O_NOATIME)
        .open(ctx.path("cold1"))
        .map_err(|e| format!("open O_DSYNC: {e}"))?;
    ctx.drop_caches()?;
    let (res, dsync) = with_stats(|| {
        Ok(
            submit_one(&mut ring, pwrite_pattern(g.as_raw_fd(), NEW, 8192, 4096))?
                .event
                .res,
        )
    })?;
    ensure!(res == 4096, "O_DSYNC write: res {res}, expected 4096");
    let mut m = Model::pattern(OLD + 1, 64 * KIB);
    m.put(NEW, 8192, 4096);
    m.check(&files[1], &[NEW, OLD + 1], "after the O_DSYNC write")?;
    ring.finish(REAP_TIMEOUT)?;

    let (Some(partial), Some(dsync)) = (partial, dsync) else {
        return Err(format!(
            "NOT ASYNC: {}/{} does not exist: this kernel has no AIO counters (no async buffered writes)",
            aiostats::DEBUGFS,
            aiostats::STATS_REL
        )
        .into());
    };
    println!("counters for the partial write: {}", partial.nonzero());
    println!("counters for the O_DSYNC write: {}", dsync.nonzero());
    let missing = partial.missing();
    ensure!(
        missing.is_empty(),
        "counters missing from the stats file: {missing:?}"
    );
    let g = |s: &Stats, n: &str| s.get(n).unwrap_or(0);
    if ext3 {
        ensure!(
            g(&partial, "write_punt_eagain") >= 1,
            "ext3: the partial-block write did not go through the fallback worker (write_punt_eagain +0): {}",
            partial.nonzero()
        );
    } else {
        ensure!(
            g(&partial, "write_park_folio") >= 1 && g(&partial, "write_async") >= 1,
            "ext2: the partial-block write did not park on the folio and complete from the callback (write_park_folio +{}, write_async +{})",
            g(&partial, "write_park_folio"),
            g(&partial, "write_async")
        );
        let punted: u64 = ["write_punt_eagain", "write_punt_sync", "write_punt_stall"]
            .iter()
            .map(|n| g(&partial, n))
            .sum();
        ensure!(
            punted == 0,
            "ext2: the partial-block write was punted to a worker: {}",
            partial.nonzero()
        );
        ensure!(
            g(&dsync, "write_punt_sync") >= 1,
            "ext2: the O_DSYNC write was not punted to the sync worker (write_punt_sync +0): {}",
            dsync.nonzero()
        );
    }
    Ok(())
}

/// New behaviour, ext2: a deep queue of partial-block writes keeps taking
/// the asynchronous path. 256 writes of 512 B, each into the middle of a
/// different cold block of one file, kept 32 in flight (refilled as they
/// complete, like fio or a database): almost none may be handed to a worker
/// to be written blocking (`write_punt_eagain` + `write_punt_stall` at most
/// 1 in 8). v2 as first committed sent every one of them that way at this
/// depth (1.00 per write): workers retrying parked writes in parallel with
/// io_submit() met each other on the inode lock, and a write made blocking
/// for that held the lock across its own device read, so every write behind
/// it met the lock too. Then the file must hold exactly the writes. SKIP on
/// ext3, whose writes are all worker writes by design (no nonblocking jbd2
/// handle start).
pub fn deep_queue_async(ctx: &Ctx) -> TestResult {
    const OLD: u64 = 0xD900;
    const NEW: u64 = 0xD980;
    const N: u64 = 256;
    const QD: usize = 32;
    const BLOCKS: u64 = 512;
    const LEN: usize = 512;
    require_slow(ctx)?;
    if ctx.fs.as_deref() == Some("ext3") {
        return Err(Stop::Skip(
            "ext3 writes are all worker writes by design (write_punt_eagain 1.00): no nonblocking jbd2 handle start".into(),
        ));
    }
    let size = (BLOCKS * 4096) as usize;
    let files = cold_files(ctx, 1, OLD, (0, size), true, true)?;
    let f = &files[0];
    let fd = f.as_raw_fd();
    let mut ring = Ring::new(QD as u32)?;
    let mut m = Model::pattern(OLD, size);
    // distinct blocks in a scattered order (37 is coprime with 512)
    let off = |i: u64| (i * 37 % BLOCKS) * 4096 + 1000;
    let ((), delta) = with_stats(|| {
        let mut next = 0u64;
        let mut done = 0u64;
        while done < N {
            let mut ops = Vec::new();
            while next < N && ring.in_flight() + ops.len() < QD {
                ops.push(pwrite_pattern(fd, NEW + next, off(next), LEN).with_data(next));
                next += 1;
            }
            if !ops.is_empty() {
                ring.submit_all(ops)?;
            }
            for c in ring.reap(1, REAP_TIMEOUT)? {
                let i = c.event.data;
                ensure!(
                    c.event.res == LEN as i64,
                    "write {i} at {}: res {} ({}), expected {LEN}",
                    off(i),
                    c.event.res,
                    crate::aio::describe_res(c.event.res)
                );
                done += 1;
            }
        }
        Ok(())
    })?;
    for i in 0..N {
        m.put(NEW + i, off(i), LEN);
    }
    let seeds: Vec<u64> = (0..N).map(|i| NEW + i).chain([OLD]).collect();
    f.sync_all().map_err(|e| format!("fsync: {e}"))?;
    ctx.drop_caches()?;
    m.check(f, &seeds, "after fsync and drop_caches")?;
    ring.finish(REAP_TIMEOUT)?;
    let Some(d) = delta else {
        return Err(format!(
            "NOT ASYNC: {}/{} does not exist: this kernel has no AIO counters (no async buffered writes)",
            aiostats::DEBUGFS,
            aiostats::STATS_REL
        )
        .into());
    };
    let g = |n: &str| d.get(n).unwrap_or(0);
    let blocking = g("write_punt_eagain") + g("write_punt_stall");
    println!(
        "{N} partial-block writes at QD {QD}: counters {}; written blocking by a worker: {blocking}",
        d.nonzero()
    );
    ensure!(
        blocking <= N / 8,
        "NOT ASYNC: {blocking} of {N} writes at QD {QD} were written blocking by a worker (write_punt_eagain {} + write_punt_stall {}; allowed {}): {}",
        g("write_punt_eagain"),
        g("write_punt_stall"),
        N / 8,
        d.nonzero()
    );
    Ok(())
}
