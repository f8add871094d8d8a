//! read/*: buffered AIO reads return the right bytes at every alignment.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;

use std::time::{Duration, Instant};

use super::{create_pattern_file, pread_full, Ctx, Stop, TestResult, REAP_TIMEOUT};
use crate::aio::{Op, Ring, READ_POISON};
use crate::ensure;
use crate::pattern;
use crate::sys;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// Checks a completed buffered read: `res == expect`, data correct up to
/// `res`, and the rest of the buffer untouched (a buffered read copies only
/// up to EOF).
fn check_read(c: &crate::aio::Completion, seed: u64, expect: usize) -> Result<(), String> {
    check_read_data(c, seed, expect)?;
    let op = c.op()?;
    let buf = op.buf();
    if let Some(i) = buf[expect..].iter().position(|&b| b != READ_POISON) {
        return Err(format!(
            "read at {} len {} returned {expect} bytes but also wrote buffer index {}",
            op.offset(),
            op.nbytes(),
            expect + i
        ));
    }
    Ok(())
}

/// Checks `res == expect` and the data up to `res` (for O_DIRECT the rest of
/// the buffer is unspecified: the tail block may be zero-filled).
fn check_read_data(c: &crate::aio::Completion, seed: u64, expect: usize) -> Result<(), String> {
    c.expect_res(expect as i64)?;
    let op = c.op()?;
    pattern::verify(&op.buf()[..expect], seed, op.offset())
        .map_err(|e| format!("read at {} len {}: {e}", op.offset(), op.nbytes()))
}

/// Reads every (offset, len) case three ways: all at once (cold cache,
/// one io_submit), one at a time (warm), and vectored.
fn roundtrip(ctx: &Ctx, seed: u64, file_len: u64, cases: &[(u64, usize)]) -> TestResult {
    let f = create_pattern_file(&ctx.path("data"), seed, file_len)?;
    ctx.make_cold(&f)?;
    let fd = f.as_raw_fd();
    let mut ring = Ring::new(cases.len() as u32 + 4)?;

    ctx.step("cold batch of all cases");
    let ops = cases
        .iter()
        .enumerate()
        .map(|(i, &(off, len))| Op::pread(fd, off, len).with_data(i as u64))
        .collect();
    ring.submit_all(ops)?;
    for c in ring.reap(cases.len(), REAP_TIMEOUT)? {
        let len = c.op()?.nbytes();
        check_read(&c, seed, len)?;
    }

    ctx.step("warm, one at a time");
    for (i, &(off, len)) in cases.iter().enumerate() {
        ring.submit_all(vec![Op::pread(fd, off, len).with_data(100 + i as u64)])?;
        let c = ring.reap(1, REAP_TIMEOUT)?;
        check_read(&c[0], seed, len)?;
    }

    ctx.step("vectored (IOCB_CMD_PREADV), cold");
    ctx.make_cold(&f)?;
    for (i, &(off, len)) in cases.iter().enumerate() {
        // segments: 1 byte, an odd middle, the rest
        let a = 1.min(len);
        let b = (len - a) / 3;
        let segs = [a, b, len - a - b];
        ring.submit_all(vec![Op::preadv(fd, off, &segs).with_data(200 + i as u64)])?;
        let c = ring.reap(1, REAP_TIMEOUT)?;
        check_read(&c[0], seed, len).map_err(|e| format!("preadv {segs:?}: {e}"))?;
    }
    ring.finish(REAP_TIMEOUT)?;
    Ok(())
}

pub fn roundtrip_aligned(ctx: &Ctx) -> TestResult {
    let cases = [
        (0, 4 * KIB),
        (4096, 4 * KIB),
        (65536, 4 * KIB),
        (0, 64 * KIB),
        (4096, 64 * KIB),
        (65536, 64 * KIB),
        (0, MIB),
        (65536, MIB),
    ];
    roundtrip(ctx, 0xA11, (64 * KIB + MIB) as u64, &cases)
}

pub fn roundtrip_unaligned(ctx: &Ctx) -> TestResult {
    let cases = [
        (1, 1),
        (4095, 1),
        (4095, 2),
        (4113, 7),
        (1, 4095),
        (4095, 4097),
        (4113, 65537),
        (1, MIB),
        (4113, MIB - 3),
    ];
    roundtrip(ctx, 0x0DD, (MIB + 8 * KIB + 13) as u64, &cases)
}

/// Reads crossing EOF are short; reads at or past EOF return 0.
pub fn short_at_eof(ctx: &Ctx) -> TestResult {
    const SEED: u64 = 0xE0F;
    const SIZE: u64 = 10_000;
    let f = create_pattern_file(&ctx.path("data"), SEED, SIZE)?;
    ctx.make_cold(&f)?;
    let fd = f.as_raw_fd();
    // (offset, len, expected res)
    let cases: [(u64, usize, usize); 7] = [
        (8192, 4096, 1808),
        (9999, 100, 1),
        (10_000, 4096, 0),
        (10_001, 1, 0),
        (20_000, 10, 0),
        (0, 16384, 10_000),
        (4095, 8192, 5905),
    ];
    let mut ring = Ring::new(16)?;
    ctx.step("cold batch");
    let ops = cases
        .iter()
        .enumerate()
        .map(|(i, &(off, len, _))| Op::pread(fd, off, len).with_data(i as u64))
        .collect();
    ring.submit_all(ops)?;
    for c in ring.reap(cases.len(), REAP_TIMEOUT)? {
        let (_, _, want) = cases[c.event.data as usize];
        check_read(&c, SEED, want)?;
    }
    ctx.step("warm, one at a time, plain and vectored");
    for (i, &(off, len, want)) in cases.iter().enumerate() {
        ring.submit_all(vec![Op::pread(fd, off, len).with_data(i as u64)])?;
        check_read(&ring.reap(1, REAP_TIMEOUT)?[0], SEED, want)?;
        let half = len / 2;
        ring.submit_all(vec![
            Op::preadv(fd, off, &[half, len - half]).with_data(i as u64)
        ])?;
        check_read(&ring.reap(1, REAP_TIMEOUT)?[0], SEED, want)
            .map_err(|e| format!("preadv: {e}"))?;
    }
    ring.finish(REAP_TIMEOUT)?;
    Ok(())
}

/// O_DIRECT AIO reads with aligned buffers/offsets return the right data.
pub fn odirect_sanity(ctx: &Ctx) -> TestResult {
    const SEED: u64 = 0xD10;
    const SIZE: u64 = 256 * 1024;
    const ALIGN: usize = 4096;
    let path = ctx.path("data");
    let f = create_pattern_file(&path, SEED, SIZE)?;
    ctx.make_cold(&f)?;
    drop(f);
    let df: File = super::open_direct(ctx, &path, OpenOptions::new().read(true))?;
    let fd = df.as_raw_fd();
    // (offset, len, expected res)
    let cases: [(u64, usize, usize); 6] = [
        (0, 4096, 4096),
        (4096, 65536, 65536),
        (131_072, 131_072, 131_072),
        (0, 262_144, 262_144),
        (SIZE - 4096, 8192, 4096),
        (SIZE, 4096, 0),
    ];
    let mut ring = Ring::new(16)?;
    let mut ops = Vec::new();
    for (i, &(off, len, _)) in cases.iter().enumerate() {
        ops.push(
            Op::pread_aligned(fd, off, len, ALIGN)
                .map_err(|e| e.to_string())?
                .with_data(i as u64),
        );
    }
    ensure!(
        ops.iter()
            .all(|o| (o.buf().as_ptr() as usize).is_multiple_of(ALIGN)),
        "buffer not {ALIGN}-aligned"
    );
    ctx.step("O_DIRECT batch");
    let s = ring.submit(ops);
    if let Some(e) = s.error {
        if e.raw_os_error() == Some(libc::EINVAL) && !ctx.guest {
            return Err(Stop::Skip(format!("O_DIRECT AIO rejected here ({e})")));
        }
        return Err(format!("io_submit O_DIRECT reads: {e}").into());
    }
    ensure!(
        s.accepted == cases.len(),
        "io_submit accepted {} of {}",
        s.accepted,
        cases.len()
    );
    for c in ring.reap(cases.len(), REAP_TIMEOUT)? {
        let (_, _, want) = cases[c.event.data as usize];
        check_read_data(&c, SEED, want).map_err(|e| format!("O_DIRECT: {e}"))?;
    }
    ring.finish(REAP_TIMEOUT)?;
    Ok(())
}

/// Cold and warm reads at offsets 0, 1, 4095, 4113 with sizes from 1 byte
/// to 3 MiB (and one 16 MiB read): res == length, data exact, nothing past
/// res written; warm reads cause no device reads.
pub fn cold_warm_sizes(ctx: &Ctx) -> TestResult {
    const SEED: u64 = 0xC01D;
    const BIG: usize = 16 * MIB;
    let size = (BIG + 8 * KIB + 13) as u64;
    let f = create_pattern_file(&ctx.path("data"), SEED, size)?;
    let fd = f.as_raw_fd();
    let mut cases = Vec::new();
    for off in [0u64, 1, 4095, 4113] {
        for len in [1, 4095, 4096, 4097, 65_543, MIB + 1, 3 * MIB] {
            cases.push((off, len));
        }
    }
    cases.push((4113, BIG));
    let mut ring = Ring::new(8)?;
    let dev = ctx.block_dev().ok();

    ctx.step("cold, one read at a time");
    let t0 = Instant::now();
    let mut cold_sectors = 0;
    for (i, &(off, len)) in cases.iter().enumerate() {
        ctx.make_cold(&f)?;
        let before = dev.as_ref().map(|d| d.sectors_read()).transpose()?;
        ring.submit_all(vec![Op::pread(fd, off, len).with_data(i as u64)])?;
        let c = ring.reap(1, REAP_TIMEOUT)?;
        check_read(&c[0], SEED, len).map_err(|e| format!("cold: {e}"))?;
        if let (Some(d), Some(b)) = (&dev, before) {
            cold_sectors += d.sectors_read()? - b;
        }
    }
    let cold_ms = t0.elapsed().as_millis();

    ctx.step("warm: whole file cached, then every case again");
    pread_full(&f, 0, size as usize)?;
    std::thread::sleep(Duration::from_millis(20));
    let before = dev.as_ref().map(|d| d.sectors_read()).transpose()?;
    let t0 = Instant::now();
    for (i, &(off, len)) in cases.iter().enumerate() {
        ring.submit_all(vec![Op::pread(fd, off, len).with_data(i as u64)])?;
        let c = ring.reap(1, REAP_TIMEOUT)?;
        check_read(&c[0], SEED, len).map_err(|e| format!("warm: {e}"))?;
    }
    let warm_ms = t0.elapsed().as_millis();
    let dev_name = dev.as_ref().map_or("?".into(), |d| d.name());
    println!(
        "{} cases on {dev_name}: cold {cold_ms} ms ({cold_sectors} sectors read), warm {warm_ms} ms",
        cases.len()
    );
    if let (Some(d), Some(b)) = (&dev, before) {
        let a = d.sectors_read()?;
        let msg = format!("warm reads caused {} sectors of device reads", a - b);
        if a != b && ctx.guest {
            return Err(msg.into());
        } else if a != b {
            // On a shared host other processes read the same device.
            println!("note (host mode, not failing): {msg}");
        }
    }
    ring.finish(REAP_TIMEOUT)?;
    Ok(())
}

/// Evicts a few sub-ranges of every 128 KiB chunk (pages of the file were
/// all cached before).
fn punch_cache(ctx: &Ctx, f: &File, size: u64) -> TestResult {
    const CHUNK: u64 = 128 * 1024;
    let mut c = 0;
    while c * CHUNK < size {
        let base = c * CHUNK;
        ctx.evict(f, base + (c % 5) * 16 * 1024, 4096 << (c % 4))?;
        ctx.evict(f, base + 96 * 1024 + (c % 3) * 4096, 4096)?;
        c += 1;
    }
    Ok(())
}

/// A partially cached file (holes punched into the cache of every 128 KiB
/// chunk): many reads in flight until EOF; any short read before EOF fails.
/// Then an EOF-crossing read with the second half of the tail evicted.
pub fn partial_cache(ctx: &Ctx) -> TestResult {
    const SEED: u64 = 0x9A27;
    let size = (4 * MIB + 3000) as u64;
    let f = create_pattern_file(&ctx.path("data"), SEED, size)?;
    f.sync_all().map_err(|e| format!("fsync: {e}"))?;
    let fd = f.as_raw_fd();
    let mut ring = Ring::new(128)?;
    for (pass, (start, len)) in [(0u64, 100_003usize), (1, 131_072), (4096 - 1, 65_536 + 1)]
        .into_iter()
        .enumerate()
    {
        ctx.step(&format!("pass {pass}: reads of {len} from {start} to EOF"));
        pread_full(&f, 0, size as usize)?;
        punch_cache(ctx, &f, size)?;
        let mut ops = Vec::new();
        let mut off = start;
        while off < size {
            ops.push(Op::pread(fd, off, len).with_data(off));
            off += len as u64;
        }
        let n = ops.len();
        ring.submit_all(ops)?;
        for c in ring.reap(n, REAP_TIMEOUT)? {
            let off = c.op()?.offset();
            let want = len.min((size - off) as usize);
            if c.event.res >= 0 && (c.event.res as usize) < want {
                return Err(format!(
                    "short read before EOF: read at {off} len {len} returned {} of {want} bytes (file size {size})",
                    c.event.res
                )
                .into());
            }
            check_read(&c, SEED, want)?;
        }
    }

    ctx.step("EOF-crossing read with the second half of the tail evicted");
    let tail = size - 16 * 1024; // not page aligned: 4 MiB + 3000 - 16 KiB
    for (off, len) in [(tail, 32 * KIB), (size - 1, 2), (size - 6000, 16 * KIB)] {
        pread_full(&f, 0, size as usize)?;
        // second half of the tail, including the partial last page
        let half = (size - tail) / 2;
        let from = (tail + half) & !4095;
        ctx.evict(&f, from, size - from)?;
        ring.submit_all(vec![Op::pread(fd, off, len).with_data(off)])?;
        let c = ring.reap(1, REAP_TIMEOUT)?;
        check_read(&c[0], SEED, (size - off) as usize)
            .map_err(|e| format!("tail half evicted: {e}"))?;
    }
    for off in [size, size + 1, size + 4096] {
        ring.submit_all(vec![Op::pread(fd, off, 4096).with_data(off)])?;
        check_read(&ring.reap(1, REAP_TIMEOUT)?[0], SEED, 0)?;
    }
    ring.finish(REAP_TIMEOUT)?;
    Ok(())
}

/// The iocbs and iovec arrays are overwritten right after io_submit
/// returns: the data still lands in the original buffers, event.obj is the
/// original iocb and event.data the original aio_data, and nothing is
/// written through the overwritten pointers.
pub fn iocb_overwrite(ctx: &Ctx) -> TestResult {
    const SEED: u64 = 0x0B5C;
    let f = create_pattern_file(&ctx.path("data"), SEED, 3 * MIB as u64)?;
    let fd = f.as_raw_fd();
    let mut ring = Ring::new(64)?;
    for round in 0..3u64 {
        ctx.step(&format!("round {round}"));
        ctx.make_cold(&f)?;
        let mut ops = Vec::new();
        for i in 0..16u64 {
            let off = i * 160 * 1024 + round * 1000 + i;
            ops.push(Op::preadv(fd, off, &[1, 4095 + i as usize, 20_000, 3]).with_data(i));
        }
        for i in 16..24u64 {
            ops.push(Op::pread(fd, i * 120 * 1024 + 7, 50_000).with_data(i));
        }
        let n = ops.len();
        ring.submit_all(ops)?;
        ensure!(
            ring.scribble_inflight() == n,
            "the Ring does not hold all {n} requests"
        );
        let (early, cs) = ring.reap_probed(n, REAP_TIMEOUT)?;
        println!(
            "round {round}: {} of {n} reads in flight after the overwrite",
            n - early
        );
        for c in cs {
            let op = c.op()?;
            check_read(&c, SEED, op.nbytes())?;
            ensure!(
                op.decoy_untouched(),
                "read at {}: the kernel wrote through the overwritten iocb/iovec",
                op.offset()
            );
        }
    }
    ring.finish(REAP_TIMEOUT)?;
    Ok(())
}

const RWF_NOWAIT: i32 = 0x8;

/// RWF_NOWAIT never waits for the data: uncached → -EAGAIN (up to 3
/// attempts on fresh regions); cached → full; half-cached → the cached
/// prefix. Skips where the filesystem refuses RWF_NOWAIT.
///
/// The readahead a NOWAIT read starts before it returns -EAGAIN may finish
/// before the read looks at its folios again (a debug kernel or a loaded
/// TCG host spends longer than the device's L there): then the kernel
/// legitimately returns the data. So a result past the cached part is
/// accepted when io_submit did not sleep (it did not wait for that data:
/// the device had answered); with a sleep it is the defect this test is for.
pub fn nowait(ctx: &Ctx) -> TestResult {
    const SEED: u64 = 0x0A17;
    const R: usize = 64 * KIB;
    let path = ctx.path("data");
    let f = create_pattern_file(&path, SEED, 16 * R as u64)?;
    ctx.make_cold(&f)?;
    // Warm through a POSIX_FADV_RANDOM descriptor so exactly the requested
    // pages are cached (no readahead, no readahead marks).
    let warm = File::open(&path).map_err(|e| format!("open: {e}"))?;
    if !super::fadvise_random(&warm)? {
        return Err(Stop::Skip(
            "posix_fadvise is not available (ENOSYS): cannot cache an exact range".into(),
        ));
    }
    // The AIO descriptor too: otherwise readahead started by one step (the
    // uncached attempts start it before returning -EAGAIN) can cache the
    // range a later step needs half cold; seen on the slow debug kernel.
    super::fadvise_random(&f)?;
    let fd = f.as_raw_fd();
    let mut ring = Ring::new(8)?;

    // (res, whether io_submit slept)
    let mut nowait_read = |off: u64| -> Result<(i64, bool), Stop> {
        let (v0, _) = sys::thread_ctx_switches().map_err(|e| format!("getrusage: {e}"))?;
        let s = ring.submit(vec![Op::pread(fd, off, R)
            .with_data(off)
            .with_rw_flags(RWF_NOWAIT)]);
        let (v1, _) = sys::thread_ctx_switches().map_err(|e| format!("getrusage: {e}"))?;
        let slept = v1 > v0;
        if let Some(e) = s.error {
            if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                return Err(Stop::Skip(format!(
                    "{} refuses RWF_NOWAIT (io_submit: {e}; no FMODE_NOWAIT)",
                    ctx.fs.as_deref().unwrap_or("this filesystem")
                )));
            }
            if e.raw_os_error() == Some(libc::EAGAIN) {
                return Ok((-(libc::EAGAIN as i64), slept));
            }
            return Err(format!("io_submit RWF_NOWAIT at {off}: {e}").into());
        }
        let c = ring.reap(1, REAP_TIMEOUT)?;
        let res = c[0].event.res;
        if res > 0 {
            check_read(&c[0], SEED, res as usize)?;
        }
        Ok((res, slept))
    };

    ctx.step("uncached");
    // Up to 3 attempts, each on a freshly evicted region, until one returns
    // -EAGAIN or returns the data without having slept.
    let dev = ctx.block_dev().ok();
    let mut tries = Vec::new();
    let mut settled = false;
    for off in [0u64, 12 * R as u64, 14 * R as u64] {
        ctx.make_cold(&f)?;
        let before = dev.as_ref().map(|d| d.sectors_read()).transpose()?;
        let (res, slept) = nowait_read(off)?;
        let after = dev.as_ref().map(|d| d.sectors_read()).transpose()?;
        let sectors = match (before, after) {
            (Some(b), Some(a)) => format!("{} sectors read meanwhile", a - b),
            _ => "device counter unavailable".into(),
        };
        tries.push(format!(
            "at {off}: res {res} ({}), io_submit {}, {sectors}",
            crate::aio::describe_res(res),
            if slept { "slept" } else { "did not sleep" }
        ));
        ensure!(
            res == -(libc::EAGAIN as i64) || res > 0,
            "RWF_NOWAIT read of an uncached range: {}",
            tries.join("; ")
        );
        if res == -(libc::EAGAIN as i64) || !slept {
            settled = true;
            break;
        }
    }
    println!("uncached RWF_NOWAIT attempts: {}", tries.join("; "));
    ensure!(
        settled,
        "RWF_NOWAIT read of an uncached range returned data after sleeping in io_submit in every attempt (it waited for the device): {}",
        tries.join("; ")
    );
    ctx.step("cached");
    let off = 4 * R as u64;
    pread_full(&warm, off, R)?;
    let (res, _) = nowait_read(off)?;
    ensure!(
        res == R as i64,
        "RWF_NOWAIT read of a cached range: res {} ({}), expected {R}",
        res,
        crate::aio::describe_res(res)
    );
    ctx.step("half cached");
    let off = 8 * R as u64;
    pread_full(&warm, off, R / 2)?;
    let (res, slept) = nowait_read(off)?;
    println!(
        "half-cached RWF_NOWAIT read: res {res} ({}), io_submit {}",
        crate::aio::describe_res(res),
        if slept { "slept" } else { "did not sleep" }
    );
    ensure!(
        res >= (R / 2) as i64 && res <= R as i64,
        "RWF_NOWAIT read with the first half cached: res {} ({}), expected at least the cached prefix {}",
        res,
        crate::aio::describe_res(res),
        R / 2
    );
    ensure!(
        res == (R / 2) as i64 || !slept,
        "RWF_NOWAIT read with the first half cached returned {res} bytes after sleeping in io_submit: it waited for the uncached half"
    );
    ring.finish(REAP_TIMEOUT)?;
    Ok(())
}
