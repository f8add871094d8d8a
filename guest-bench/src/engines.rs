//! The four engines, each driving the same list of requests (offset,
//! length; all reads or all writes) with at most `qd` in flight, and
//! measuring itself between two [`Snap`]s.

use crate::sys::{self, DevStat, Usage};
use bufaio_aio_sys as aio_sys;
use bufaio_contract::aiostats::{self, Stats};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sync,
    Pool,
    Aio,
    Uring,
}

impl Engine {
    pub const ALL: [Engine; 4] = [Engine::Sync, Engine::Pool, Engine::Aio, Engine::Uring];

    pub fn name(self) -> &'static str {
        match self {
            Engine::Sync => "sync",
            Engine::Pool => "pool",
            Engine::Aio => "aio",
            Engine::Uring => "uring",
        }
    }

    pub fn parse(s: &str) -> Option<Engine> {
        Engine::ALL.into_iter().find(|e| e.name() == s)
    }
}

/// Read or write (every request of a run is the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write => "write",
        }
    }
}

/// One request: `len` bytes at `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Io {
    pub off: u64,
    pub len: usize,
}

/// Requests of `bs` bytes at each offset.
pub fn fixed(offs: &[u64], bs: usize) -> Vec<Io> {
    offs.iter().map(|&off| Io { off, len: bs }).collect()
}

/// Counters at one instant.
#[derive(Debug, Clone)]
pub struct Snap {
    pub t: Instant,
    pub usage: Usage,
    pub ctxt: u64,
    pub dev: DevStat,
    /// The series' debugfs counters (None: no such file, i.e. the unpatched
    /// kernel, or not readable).
    pub aio: Option<Stats>,
}

impl Snap {
    pub fn take(dev: &str) -> Snap {
        Snap {
            aio: aiostats::read_at(std::path::Path::new(aiostats::DEBUGFS))
                .ok()
                .flatten(),
            usage: sys::usage(),
            ctxt: sys::system_ctxt(),
            dev: sys::devstat(dev),
            t: Instant::now(),
        }
    }
}

/// What one engine run produced.
#[derive(Debug, Default)]
pub struct Raw {
    /// Time inside the submitting call, per IO (none for the thread pool,
    /// which has no submission step: its workers call pread themselves).
    pub submit_ns: Vec<u64>,
    /// Submit → completion seen by the program, per IO.
    pub lat_ns: Vec<u64>,
    pub bytes: u64,
    /// Failed or short requests.
    pub errors: u64,
    pub first_error: Option<String>,
    pub start: Option<Snap>,
    pub end: Option<Snap>,
}

impl Raw {
    fn fail(&mut self, what: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what);
        }
    }

    fn done(&mut self, op: Op, io: Io, res: i64) {
        if res == io.len as i64 {
            self.bytes += io.len as u64;
        } else {
            self.fail(format!(
                "{} at {}: result {res}, wanted {}",
                op.name(),
                io.off,
                io.len
            ));
        }
    }
}

/// Buffer size for a request list (the longest request).
fn buf_len(ios: &[Io]) -> usize {
    ios.iter().map(|i| i.len).max().unwrap_or(0).max(1)
}

/// A buffer of `n` bytes: zeros for reads, a non-zero pattern for writes.
fn buffer(op: Op, n: usize) -> Vec<u8> {
    match op {
        Op::Read => vec![0u8; n],
        Op::Write => (0..n).map(|i| (i % 251) as u8 ^ 0xa5).collect(),
    }
}

/// pread or pwrite of one request.
fn sync_io(op: Op, fd: RawFd, buf: &mut [u8], io: Io) -> std::io::Result<usize> {
    match op {
        Op::Read => sys::pread(fd, &mut buf[..io.len], io.off),
        Op::Write => sys::pwrite(fd, &buf[..io.len], io.off),
    }
}

pub fn run(e: Engine, op: Op, fd: RawFd, ios: &[Io], qd: usize, dev: &str) -> std::io::Result<Raw> {
    let qd = qd.max(1);
    match e {
        Engine::Sync => Ok(sync(op, fd, ios, dev)),
        Engine::Pool => Ok(pool(op, fd, ios, qd, dev)),
        Engine::Aio => aio(op, fd, ios, qd, dev),
        Engine::Uring => uring(op, fd, ios, qd, dev),
    }
}

fn ns(t: Instant) -> u64 {
    t.elapsed().as_nanos() as u64
}

fn sync(op: Op, fd: RawFd, ios: &[Io], dev: &str) -> Raw {
    let mut buf = buffer(op, buf_len(ios));
    let mut r = Raw {
        start: Some(Snap::take(dev)),
        ..Raw::default()
    };
    for &io in ios {
        let t = Instant::now();
        let res = sync_io(op, fd, &mut buf, io);
        let d = ns(t);
        r.submit_ns.push(d);
        r.lat_ns.push(d);
        match res {
            Ok(n) => r.done(op, io, n as i64),
            Err(e) => r.fail(format!("p{} at {}: {e}", op.name(), io.off)),
        }
    }
    r.end = Some(Snap::take(dev));
    r
}

/// `qd` threads, each taking the next request and calling pread / pwrite:
/// the "punt every IO to a thread" design.
fn pool(op: Op, fd: RawFd, ios: &[Io], qd: usize, dev: &str) -> Raw {
    let blen = buf_len(ios);
    let next = AtomicUsize::new(0);
    let start = Barrier::new(qd + 1);
    let end = Barrier::new(qd + 1);
    let out = Mutex::new(Raw::default());
    let mut snaps = (None, None);
    std::thread::scope(|s| {
        for _ in 0..qd {
            s.spawn(|| {
                let mut buf = buffer(op, blen);
                let mut mine = Raw::default();
                start.wait();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&io) = ios.get(i) else { break };
                    let t = Instant::now();
                    let res = sync_io(op, fd, &mut buf, io);
                    mine.lat_ns.push(ns(t));
                    match res {
                        Ok(n) => mine.done(op, io, n as i64),
                        Err(e) => mine.fail(format!("p{} at {}: {e}", op.name(), io.off)),
                    }
                }
                {
                    let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
                    o.lat_ns.extend_from_slice(&mine.lat_ns);
                    o.bytes += mine.bytes;
                    o.errors += mine.errors;
                    if o.first_error.is_none() {
                        o.first_error = mine.first_error;
                    }
                }
                end.wait();
            });
        }
        snaps.0 = Some(Snap::take(dev));
        start.wait();
        end.wait();
        snaps.1 = Some(Snap::take(dev));
    });
    let mut r = out.into_inner().unwrap_or_else(|p| p.into_inner());
    r.start = snaps.0;
    r.end = snaps.1;
    r
}

/// Native AIO: one iocb per io_submit call (so each call's latency is one
/// IO's), refilled as events are reaped, `qd` in flight.
fn aio(op: Op, fd: RawFd, ios: &[Io], qd: usize, dev: &str) -> std::io::Result<Raw> {
    let ctx = aio_sys::io_setup(qd as u32)?;
    let mut slots = Slots::new(op, qd, buf_len(ios));
    let mut cbs: Vec<aio_sys::Iocb> = vec![aio_sys::Iocb::default(); qd];
    let mut events = vec![aio_sys::IoEvent::default(); qd];
    let mut r = Raw {
        start: Some(Snap::take(dev)),
        ..Raw::default()
    };
    let mut next = 0usize;
    let mut inflight = 0usize;
    let opcode = match op {
        Op::Read => aio_sys::IOCB_CMD_PREAD,
        Op::Write => aio_sys::IOCB_CMD_PWRITE,
    };
    let mut submit = |slot: usize, io: Io, r: &mut Raw, slots: &mut Slots| {
        cbs[slot] = aio_sys::Iocb {
            aio_data: slot as u64,
            aio_lio_opcode: opcode,
            aio_fildes: fd as u32,
            aio_buf: slots.bufs[slot].as_mut_ptr() as u64,
            aio_nbytes: io.len as u64,
            aio_offset: io.off as i64,
            ..aio_sys::Iocb::default()
        };
        let t = Instant::now();
        // SAFETY: the iocb lives in its fixed slot of `cbs` and its buffer
        // in `slots.bufs[slot]`, both untouched until the slot's event is
        // reaped (the slot is refilled only after that) or the context is
        // destroyed below; neither vector is resized meanwhile.
        let res = unsafe { aio_sys::io_submit_one(ctx, &mut cbs[slot]) };
        r.submit_ns.push(ns(t));
        slots.issued[slot] = (t, io);
        match res {
            Ok(()) => true,
            Err(e) => {
                r.fail(format!("io_submit ({}) at {}: {e}", op.name(), io.off));
                false
            }
        }
    };
    while next < qd.min(ios.len()) {
        if submit(next, ios[next], &mut r, &mut slots) {
            inflight += 1;
        }
        next += 1;
    }
    while inflight > 0 {
        let n = match aio_sys::io_getevents_retrying(ctx, 1, &mut events) {
            Ok(n) => n,
            Err(e) => {
                r.fail(format!("io_getevents: {e}"));
                break;
            }
        };
        for ev in &events[..n] {
            inflight -= 1;
            let slot = ev.data as usize;
            let (t, io) = slots.issued[slot];
            r.lat_ns.push(ns(t));
            r.done(op, io, ev.res);
            if next < ios.len() {
                if submit(slot, ios[next], &mut r, &mut slots) {
                    inflight += 1;
                }
                next += 1;
            }
        }
    }
    r.end = Some(Snap::take(dev));
    // As before the shared layer: an io_destroy error is not reported.
    let _ = aio_sys::io_destroy(ctx);
    Ok(r)
}

/// Per-slot buffers and (submit time, request) of the request in the slot.
struct Slots {
    bufs: Vec<Vec<u8>>,
    issued: Vec<(Instant, Io)>,
}

impl Slots {
    fn new(op: Op, qd: usize, len: usize) -> Slots {
        Slots {
            bufs: (0..qd).map(|_| buffer(op, len)).collect(),
            issued: vec![(Instant::now(), Io { off: 0, len: 0 }); qd],
        }
    }
}

/// io_uring without SQPOLL: one SQE per io_uring_enter(submit) call, then
/// io_uring_enter(wait 1) to reap, refilled as completions arrive.
fn uring(op: Op, fd: RawFd, ios: &[Io], qd: usize, dev: &str) -> std::io::Result<Raw> {
    use io_uring::{opcode, types, IoUring};
    let mut ring: IoUring = IoUring::new(qd.next_power_of_two() as u32)?;
    let mut slots = Slots::new(op, qd, buf_len(ios));
    let mut r = Raw {
        start: Some(Snap::take(dev)),
        ..Raw::default()
    };
    let mut next = 0usize;
    let mut inflight = 0usize;
    let submit = |ring: &mut IoUring, slot: usize, io: Io, r: &mut Raw, slots: &mut Slots| {
        let buf = slots.bufs[slot].as_mut_ptr();
        let sqe = match op {
            Op::Read => opcode::Read::new(types::Fd(fd), buf, io.len as u32)
                .offset(io.off)
                .build(),
            Op::Write => opcode::Write::new(types::Fd(fd), buf, io.len as u32)
                .offset(io.off)
                .build(),
        }
        .user_data(slot as u64);
        let t = Instant::now();
        // SAFETY: the buffer of `slot` is not reused until this SQE's CQE is
        // reaped (a slot is only refilled from its own completion).
        let pushed = unsafe { ring.submission().push(&sqe) }.is_ok();
        let res = if pushed {
            ring.submit()
        } else {
            Err(std::io::Error::other("submission queue full"))
        };
        r.submit_ns.push(ns(t));
        slots.issued[slot] = (t, io);
        match res {
            Ok(_) => true,
            Err(e) => {
                r.fail(format!(
                    "io_uring submit ({}) at {}: {e}",
                    op.name(),
                    io.off
                ));
                false
            }
        }
    };
    while next < qd.min(ios.len()) {
        if submit(&mut ring, next, ios[next], &mut r, &mut slots) {
            inflight += 1;
        }
        next += 1;
    }
    while inflight > 0 {
        if let Err(e) = ring.submit_and_wait(1) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            r.fail(format!("io_uring wait: {e}"));
            break;
        }
        let done: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (slot, res) in done {
            inflight -= 1;
            let slot = slot as usize;
            let (t, io) = slots.issued[slot];
            r.lat_ns.push(ns(t));
            r.done(op, io, res as i64);
            if next < ios.len() {
                if submit(&mut ring, slot, ios[next], &mut r, &mut slots) {
                    inflight += 1;
                }
                next += 1;
            }
        }
    }
    r.end = Some(Snap::take(dev));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_buffers_and_results() {
        let ios = [
            Io { off: 0, len: 4096 },
            Io {
                off: 8704,
                len: 512,
            },
        ];
        assert_eq!(buf_len(&ios), 4096);
        assert_eq!(buf_len(&[]), 1);
        assert!(buffer(Op::Write, 600).iter().any(|&b| b != 0));
        assert!(buffer(Op::Read, 8).iter().all(|&b| b == 0));
        let mut r = Raw::default();
        r.done(Op::Write, ios[1], 512);
        r.done(Op::Write, ios[1], 100);
        assert_eq!((r.bytes, r.errors), (512, 1));
        assert_eq!(
            r.first_error.as_deref(),
            Some("write at 8704: result 100, wanted 512")
        );
        assert_eq!(
            fixed(&[0, 4096], 4096)[1],
            Io {
                off: 4096,
                len: 4096
            }
        );
    }

    /// Every engine writes what it was asked to, at the right offsets (a
    /// temporary file on the host; no device counters).
    #[test]
    fn engines_write_and_read_back() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::FileExt;
        let d = std::env::temp_dir().join(format!("gb-engines-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        for e in Engine::ALL {
            let p = d.join(e.name());
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&p)
                .unwrap();
            f.set_len(64 << 10).unwrap();
            let ios = [
                Io { off: 0, len: 4096 },
                Io {
                    off: 4096 * 3 + 1024,
                    len: 512,
                },
                Io {
                    off: 4096 * 9,
                    len: 4096,
                },
            ];
            let r = match run(e, Op::Write, f.as_raw_fd(), &ios, 2, "") {
                Ok(r) => r,
                // io_uring may be unavailable in a container: not this test's concern.
                Err(err) if e == Engine::Uring => {
                    eprintln!("uring: {err}");
                    continue;
                }
                Err(err) => panic!("{}: {err}", e.name()),
            };
            assert_eq!(r.errors, 0, "{}: {:?}", e.name(), r.first_error);
            assert_eq!(r.bytes, 4096 + 512 + 4096);
            let want = buffer(Op::Write, 4096);
            let mut got = vec![0u8; 512];
            f.read_exact_at(&mut got, 4096 * 3 + 1024).unwrap();
            assert_eq!(got, want[..512], "{}", e.name());
            f.read_exact_at(&mut got, 4096 * 3).unwrap();
            assert!(
                got.iter().all(|&b| b == 0),
                "{}: bytes before the partial write",
                e.name()
            );
            let rr = run(e, Op::Read, f.as_raw_fd(), &ios, 2, "").unwrap();
            assert_eq!(rr.errors, 0, "{}", e.name());
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
