//! basic/*: context lifecycle, eventfd notification, batched submission.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::{create_pattern_file, open_rw, Ctx, TestResult, REAP_TIMEOUT};
use crate::aio::{self, Op, Ring};
use crate::ensure;
use crate::pattern;
use crate::sys;

fn expect_errno<T: std::fmt::Debug>(
    what: &str,
    r: std::io::Result<T>,
    errno: i32,
) -> Result<(), String> {
    match r {
        Err(e) if e.raw_os_error() == Some(errno) => Ok(()),
        Err(e) => Err(format!(
            "{what}: expected {}, got error {e}",
            sys::errno_name(errno)
        )),
        Ok(v) => Err(format!(
            "{what}: expected {}, but it succeeded ({v:?})",
            sys::errno_name(errno)
        )),
    }
}

/// io_setup/io_destroy lifecycle and the EINVAL paths for bad contexts.
pub fn setup_destroy(ctx: &Ctx) -> TestResult {
    let f = open_rw(&ctx.path("f"))?;
    let fd = f.as_raw_fd();

    // A live ring for the positive path, kept alive across the negative
    // checks so a destroyed context id cannot be recycled meanwhile.
    let mut ring = Ring::new(32)?;
    ensure!(ring.id() != 0, "io_setup returned context id 0");

    ctx.step("io_setup + io_destroy of a second context");
    let id = aio::io_setup(8).map_err(|e| format!("io_setup(8): {e}"))?;
    ensure!(id != 0, "io_setup(8) returned context id 0");
    ensure!(id != ring.id(), "two live contexts share id {id:#x}");
    aio::io_destroy(id).map_err(|e| format!("io_destroy({id:#x}): {e}"))?;

    ctx.step("operations on the destroyed context");
    expect_errno(
        "io_submit on a destroyed context",
        aio::io_submit_fsync_probe(id, fd),
        libc::EINVAL,
    )?;
    let mut evs = [aio::IoEvent::default(); 1];
    expect_errno(
        "io_getevents on a destroyed context",
        aio::io_getevents(id, 0, &mut evs, Some(Duration::ZERO)),
        libc::EINVAL,
    )?;
    expect_errno(
        "second io_destroy of the same context",
        aio::io_destroy(id),
        libc::EINVAL,
    )?;

    ctx.step("bogus context ids and bad io_setup arguments");
    for bogus in [0u64, 1, 0xdead_0000, u64::MAX] {
        expect_errno(
            &format!("io_submit on bogus context {bogus:#x}"),
            aio::io_submit_fsync_probe(bogus, fd),
            libc::EINVAL,
        )?;
    }
    expect_errno("io_setup(0)", aio::io_setup(0), libc::EINVAL)?;
    expect_errno(
        "io_setup with *ctxp != 0",
        aio::io_setup_with_initial(8, 1),
        libc::EINVAL,
    )?;

    ctx.step("fsync through the live context");
    ring.submit_all(vec![Op::fsync(fd).with_data(1)])?;
    let c = ring.reap(1, REAP_TIMEOUT)?;
    c[0].expect_res(0)?;
    ring.finish(REAP_TIMEOUT)?;
    Ok(())
}

fn read_eventfd(efd: &mut File) -> Result<u64, String> {
    let mut b = [0u8; 8];
    match efd.read(&mut b) {
        Ok(8) => Ok(u64::from_ne_bytes(b)),
        Ok(n) => Err(format!("eventfd read returned {n} bytes")),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(format!("eventfd read: {e}")),
    }
}

/// IOCB_FLAG_RESFD: completion signals the eventfd once per request, and
/// by the time it is signalled the event is in the ring.
pub fn eventfd(ctx: &Ctx) -> TestResult {
    const SEED: u64 = 0xE7;
    let f = create_pattern_file(&ctx.path("data"), SEED, 64 * 1024)?;
    ctx.make_cold(&f)?;
    let fd = f.as_raw_fd();
    let efd_owned = sys::eventfd(0, libc::EFD_NONBLOCK).map_err(|e| format!("eventfd: {e}"))?;
    let efd_raw = efd_owned.as_raw_fd();
    let mut efd = File::from(efd_owned);
    let mut ring = Ring::new(16)?;

    ctx.step("single read with RESFD");
    ring.submit_all(vec![Op::pread(fd, 4096, 4096)
        .with_data(0xE1)
        .with_resfd(efd_raw)])?;
    let ready = sys::poll_readable(&efd, Duration::from_secs(30))
        .map_err(|e| format!("poll eventfd: {e}"))?;
    ensure!(
        ready,
        "eventfd not signalled within 30 s of submitting a 4 KiB read"
    );
    let count = read_eventfd(&mut efd)?;
    ensure!(
        count >= 1,
        "eventfd counter is {count} after completion, expected >= 1"
    );
    // The ring is updated before the eventfd is signalled, so the event
    // must be visible without waiting.
    let c = ring
        .getevents(0, 4, Some(Duration::ZERO))
        .map_err(|e| format!("io_getevents: {e}"))?;
    ensure!(
        c.len() == 1,
        "eventfd was signalled but io_getevents(timeout 0) found {} events, expected 1",
        c.len()
    );
    c[0].expect_res(4096)?;
    pattern::verify(c[0].op()?.buf(), SEED, 4096)?;
    ensure!(
        count == 1,
        "eventfd counter is {count} for a single request"
    );

    ctx.step("three reads with RESFD: counter must reach exactly 3");
    let ops = (0..3u64)
        .map(|i| {
            Op::pread(fd, i * 8192, 8192)
                .with_data(i)
                .with_resfd(efd_raw)
        })
        .collect();
    ring.submit_all(ops)?;
    let cs = ring.reap(3, REAP_TIMEOUT)?;
    for c in &cs {
        c.expect_res(8192)?;
        let op = c.op()?;
        pattern::verify(op.buf(), SEED, op.offset())?;
    }
    // eventfd_signal follows the ring update, so allow it to catch up.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut total = 0;
    while total < 3 && Instant::now() < deadline {
        sys::poll_readable(&efd, Duration::from_millis(100))
            .map_err(|e| format!("poll eventfd: {e}"))?;
        total += read_eventfd(&mut efd)?;
    }
    std::thread::sleep(Duration::from_millis(20));
    total += read_eventfd(&mut efd)?;
    ensure!(
        total == 3,
        "eventfd counted {total} completions for 3 requests"
    );
    ring.finish(REAP_TIMEOUT)?;
    Ok(())
}

/// 64 reads in one io_submit, scattered offsets, all reaped and verified.
pub fn batch(ctx: &Ctx) -> TestResult {
    const SEED: u64 = 0xBA7C;
    const N: u64 = 64;
    const BS: usize = 4096;
    let f = create_pattern_file(&ctx.path("data"), SEED, N * BS as u64)?;
    ctx.make_cold(&f)?;
    let fd = f.as_raw_fd();
    let mut ring = Ring::new(N as u32)?;
    // scatter: 37 is coprime with 64, so this is a permutation
    let ops: Vec<Op> = (0..N)
        .map(|i| {
            let blk = (i * 37) % N;
            Op::pread(fd, blk * BS as u64, BS).with_data(0xB000 + blk)
        })
        .collect();
    ctx.step("io_submit of 64 reads");
    let s = ring.submit(ops);
    if let Some(e) = s.error {
        return Err(format!("io_submit of 64 iocbs failed: {e}").into());
    }
    ensure!(
        s.accepted == N as usize,
        "io_submit accepted {} of {N} iocbs",
        s.accepted
    );
    ctx.step("reaping 64 completions");
    let cs = ring.reap(N as usize, REAP_TIMEOUT)?;
    let mut seen = vec![false; N as usize];
    for c in &cs {
        c.expect_res(BS as i64)?;
        let op = c.op()?;
        let blk = op.offset() / BS as u64;
        ensure!(
            c.event.data == 0xB000 + blk,
            "event data {:#x} does not belong to the read at block {blk}",
            c.event.data
        );
        seen[blk as usize] = true;
        pattern::verify(op.buf(), SEED, op.offset()).map_err(|e| format!("block {blk}: {e}"))?;
    }
    ensure!(seen.iter().all(|&s| s), "not every block was read");
    ring.finish(REAP_TIMEOUT)?;
    Ok(())
}
