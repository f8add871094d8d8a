//! read/*: buffered AIO reads return the right bytes at every alignment.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use super::{create_pattern_file, Ctx, Stop, TestResult, REAP_TIMEOUT};
use crate::aio::{Op, Ring, READ_POISON};
use crate::ensure;
use crate::pattern;

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
    let df: File = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            return Err(Stop::Skip(format!(
                "{} does not support O_DIRECT ({e})",
                ctx.fs.as_deref().unwrap_or("this filesystem")
            )))
        }
        Err(e) => return Err(format!("open O_DIRECT: {e}").into()),
    };
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
