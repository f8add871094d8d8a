//! errors/*: io_submit rejects bad iocbs with the right errno, accepts the
//! valid prefix of a batch, and rejected iocbs never produce events.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::time::Duration;

use super::{create_pattern_file, Ctx, TestResult, REAP_TIMEOUT};
use crate::aio::{Op, Ring};
use crate::ensure;
use crate::pattern;
use crate::sys::errno_name;

const SEED: u64 = 0xE44;
/// A descriptor number that is certainly not open.
const NOT_AN_FD: i32 = 1_000_000;

/// Submits one op alone and expects io_submit to fail with `errno`.
fn expect_rejected(ring: &mut Ring, what: &str, op: Op, errno: i32) -> Result<(), String> {
    let s = ring.submit(vec![op]);
    match s.error {
        Some(e) if e.raw_os_error() == Some(errno) && s.accepted == 0 => Ok(()),
        Some(e) => Err(format!(
            "{what}: io_submit failed with {e}, expected {}",
            errno_name(errno)
        )),
        None => Err(format!(
            "{what}: io_submit accepted {} iocb(s), expected {}",
            s.accepted,
            errno_name(errno)
        )),
    }
}

/// After the rejected submissions, waiting 50 ms for an event must find none.
fn expect_no_events(ring: &mut Ring) -> Result<(), String> {
    let c = ring
        .getevents(1, 8, Some(Duration::from_millis(50)))
        .map_err(|e| format!("io_getevents: {e}"))?;
    if !c.is_empty() {
        return Err(format!(
            "{} unexpected event(s) after rejected submissions (first: data={:#x} res={})",
            c.len(),
            c[0].event.data,
            c[0].event.res
        ));
    }
    Ok(())
}

/// Valid-prefix semantics: [good, bad, good] accepts exactly 1.
fn expect_prefix(ring: &mut Ring, what: &str, fd: i32, bad: Op) -> Result<(), String> {
    let ops = vec![
        Op::pread(fd, 0, 512).with_data(1),
        bad.with_data(2),
        Op::pread(fd, 512, 512).with_data(3),
    ];
    let s = ring.submit(ops);
    if let Some(e) = s.error {
        return Err(format!(
            "{what}: [good, bad, good]: io_submit failed: {e}, expected 1"
        ));
    }
    ensure_eq(
        s.accepted,
        1,
        &format!("{what}: [good, bad, good]: accepted count"),
    )?;
    ensure_eq(s.rejected.len(), 2, &format!("{what}: ops handed back"))?;
    ensure_eq(
        s.rejected[0].data(),
        2,
        &format!("{what}: first rejected op"),
    )?;
    let c = ring.reap(1, REAP_TIMEOUT)?;
    c[0].expect_res(512)?;
    ensure_eq(
        c[0].event.data,
        1,
        &format!("{what}: completed iocb's data"),
    )?;
    pattern::verify(c[0].op()?.buf(), SEED, 0)?;
    Ok(())
}

fn ensure_eq<T: PartialEq + std::fmt::Debug>(got: T, want: T, what: &str) -> Result<(), String> {
    if got != want {
        return Err(format!("{what}: got {got:?}, expected {want:?}"));
    }
    Ok(())
}

/// EBADF for a bad fd, for reading a write-only fd and writing a read-only
/// fd; bad IOCB_FLAG_RESFD descriptors too.
pub fn bad_fd(ctx: &Ctx) -> TestResult {
    let path = ctx.path("data");
    let f = create_pattern_file(&path, SEED, 8192)?;
    let fd = f.as_raw_fd();
    let ro = OpenOptions::new()
        .read(true)
        .open(&path)
        .map_err(|e| format!("open O_RDONLY: {e}"))?;
    let wo = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| format!("open O_WRONLY: {e}"))?;
    let mut ring = Ring::new(16)?;

    ctx.step("single bad iocbs");
    expect_rejected(
        &mut ring,
        "pread on fd -1",
        Op::pread(-1, 0, 512),
        libc::EBADF,
    )?;
    expect_rejected(
        &mut ring,
        "pread on a closed fd",
        Op::pread(NOT_AN_FD, 0, 512),
        libc::EBADF,
    )?;
    expect_rejected(
        &mut ring,
        "pwrite on an O_RDONLY fd",
        Op::pwrite(ro.as_raw_fd(), 0, vec![0u8; 512]),
        libc::EBADF,
    )?;
    expect_rejected(
        &mut ring,
        "pread on an O_WRONLY fd",
        Op::pread(wo.as_raw_fd(), 0, 512),
        libc::EBADF,
    )?;
    expect_rejected(
        &mut ring,
        "fsync on a closed fd",
        Op::fsync(NOT_AN_FD),
        libc::EBADF,
    )?;
    expect_rejected(
        &mut ring,
        "IOCB_FLAG_RESFD with a closed resfd",
        Op::pread(fd, 0, 512).with_resfd(NOT_AN_FD),
        libc::EBADF,
    )?;
    expect_rejected(
        &mut ring,
        "IOCB_FLAG_RESFD with a resfd that is not an eventfd",
        Op::pread(fd, 0, 512).with_resfd(fd),
        libc::EINVAL,
    )?;
    expect_no_events(&mut ring)?;

    ctx.step("batch with a bad fd in the middle");
    expect_prefix(&mut ring, "bad fd", fd, Op::pread(NOT_AN_FD, 0, 512))?;
    expect_no_events(&mut ring)?;
    ring.finish(REAP_TIMEOUT)?;
    // the data must be unchanged (nothing was written through ro)
    let now = super::pread_full(&f, 0, 8192)?;
    pattern::verify(&now, SEED, 0)?;
    Ok(())
}

/// EINVAL for unknown opcodes and a non-zero reserved field.
pub fn einval_opcode(ctx: &Ctx) -> TestResult {
    let f = create_pattern_file(&ctx.path("data"), SEED, 8192)?;
    let fd = f.as_raw_fd();
    let mut ring = Ring::new(16)?;
    ctx.step("unknown opcodes");
    // 4 was IOCB_CMD_PREADX and 6 IOCB_CMD_NOOP: neither is implemented.
    for opcode in [4u16, 6, 9, 42, 0xffff] {
        expect_rejected(
            &mut ring,
            &format!("opcode {opcode}"),
            Op::raw(opcode, fd),
            libc::EINVAL,
        )?;
    }
    ctx.step("aio_reserved2 != 0");
    expect_rejected(
        &mut ring,
        "pread with aio_reserved2=1",
        Op::pread(fd, 0, 512).with_reserved2(1),
        libc::EINVAL,
    )?;
    expect_no_events(&mut ring)?;
    ctx.step("batch with a bad opcode in the middle");
    expect_prefix(&mut ring, "opcode 42", fd, Op::raw(42, fd))?;
    expect_no_events(&mut ring)?;
    ring.finish(REAP_TIMEOUT)?;
    Ok(())
}

/// Unknown RWF_* bits in aio_rw_flags are refused with EOPNOTSUPP.
pub fn bad_rw_flags(ctx: &Ctx) -> TestResult {
    let f = create_pattern_file(&ctx.path("data"), SEED, 8192)?;
    let fd = f.as_raw_fd();
    let mut ring = Ring::new(16)?;
    expect_rejected(
        &mut ring,
        "pread with aio_rw_flags=0x40000000",
        Op::pread(fd, 0, 512).with_rw_flags(0x4000_0000),
        libc::EOPNOTSUPP,
    )?;
    expect_rejected(
        &mut ring,
        "pwrite with aio_rw_flags=0x40000000",
        Op::pwrite(fd, 0, vec![0u8; 512]).with_rw_flags(0x4000_0000),
        libc::EOPNOTSUPP,
    )?;
    expect_no_events(&mut ring)?;
    // RWF_HIPRI (1) is a known flag: accepted (and completes normally).
    ring.submit_all(vec![Op::pread(fd, 0, 512).with_rw_flags(1).with_data(7)])?;
    let c = ring.reap(1, REAP_TIMEOUT)?;
    c[0].expect_res(512)?;
    pattern::verify(c[0].op()?.buf(), SEED, 0)?;
    ring.finish(REAP_TIMEOUT)?;
    let now = super::pread_full(&f, 0, 8192)?;
    pattern::verify(&now, SEED, 0)?;
    ensure!(now.len() == 8192, "file size changed");
    Ok(())
}
