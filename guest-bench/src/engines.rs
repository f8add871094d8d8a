//! The four engines, each driving the same list of offsets with at most `qd`
//! requests in flight, and measuring itself between two [`Snap`]s.

use crate::sys::{self, DevStat, Usage};
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

/// Counters at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Snap {
    pub t: Instant,
    pub usage: Usage,
    pub ctxt: u64,
    pub dev: DevStat,
}

impl Snap {
    pub fn take(dev: &str) -> Snap {
        Snap {
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
    /// Failed or short reads.
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

    fn done(&mut self, off: u64, res: i64, bs: usize) {
        if res == bs as i64 {
            self.bytes += bs as u64;
        } else {
            self.fail(format!("read at {off}: result {res}, wanted {bs}"));
        }
    }
}

pub fn run(
    e: Engine,
    fd: RawFd,
    offs: &[u64],
    bs: usize,
    qd: usize,
    dev: &str,
) -> std::io::Result<Raw> {
    let qd = qd.max(1);
    match e {
        Engine::Sync => Ok(sync(fd, offs, bs, dev)),
        Engine::Pool => Ok(pool(fd, offs, bs, qd, dev)),
        Engine::Aio => aio(fd, offs, bs, qd, dev),
        Engine::Uring => uring(fd, offs, bs, qd, dev),
    }
}

fn ns(t: Instant) -> u64 {
    t.elapsed().as_nanos() as u64
}

fn sync(fd: RawFd, offs: &[u64], bs: usize, dev: &str) -> Raw {
    let mut buf = vec![0u8; bs];
    let mut r = Raw {
        start: Some(Snap::take(dev)),
        ..Raw::default()
    };
    for &off in offs {
        let t = Instant::now();
        let res = sys::pread(fd, &mut buf, off);
        let d = ns(t);
        r.submit_ns.push(d);
        r.lat_ns.push(d);
        match res {
            Ok(n) => r.done(off, n as i64, bs),
            Err(e) => r.fail(format!("pread at {off}: {e}")),
        }
    }
    r.end = Some(Snap::take(dev));
    r
}

/// `qd` threads, each taking the next offset and calling pread: the
/// "punt every IO to a thread" design.
fn pool(fd: RawFd, offs: &[u64], bs: usize, qd: usize, dev: &str) -> Raw {
    let next = AtomicUsize::new(0);
    let start = Barrier::new(qd + 1);
    let end = Barrier::new(qd + 1);
    let out = Mutex::new(Raw::default());
    let mut snaps = (None, None);
    std::thread::scope(|s| {
        for _ in 0..qd {
            s.spawn(|| {
                let mut buf = vec![0u8; bs];
                let mut mine = Raw::default();
                start.wait();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&off) = offs.get(i) else { break };
                    let t = Instant::now();
                    let res = sys::pread(fd, &mut buf, off);
                    mine.lat_ns.push(ns(t));
                    match res {
                        Ok(n) => mine.done(off, n as i64, bs),
                        Err(e) => mine.fail(format!("pread at {off}: {e}")),
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
fn aio(fd: RawFd, offs: &[u64], bs: usize, qd: usize, dev: &str) -> std::io::Result<Raw> {
    let ctx = sys::io_setup(qd as u32)?;
    let mut slots = Slots::new(qd, bs);
    let mut cbs: Vec<sys::Iocb> = vec![sys::Iocb::default(); qd];
    let mut events = vec![sys::IoEvent::default(); qd];
    let mut r = Raw {
        start: Some(Snap::take(dev)),
        ..Raw::default()
    };
    let mut next = 0usize;
    let mut inflight = 0usize;
    let mut submit = |slot: usize, off: u64, r: &mut Raw, slots: &mut Slots| {
        cbs[slot] = sys::Iocb {
            aio_data: slot as u64,
            aio_lio_opcode: sys::IOCB_CMD_PREAD,
            aio_fildes: fd as u32,
            aio_buf: slots.bufs[slot].as_mut_ptr() as u64,
            aio_nbytes: bs as u64,
            aio_offset: off as i64,
            ..sys::Iocb::default()
        };
        let t = Instant::now();
        let res = sys::io_submit_one(ctx, &mut cbs[slot]);
        r.submit_ns.push(ns(t));
        slots.issued[slot] = (t, off);
        match res {
            Ok(()) => true,
            Err(e) => {
                r.fail(format!("io_submit at {off}: {e}"));
                false
            }
        }
    };
    while next < qd.min(offs.len()) {
        if submit(next, offs[next], &mut r, &mut slots) {
            inflight += 1;
        }
        next += 1;
    }
    while inflight > 0 {
        let n = match sys::io_getevents(ctx, 1, &mut events) {
            Ok(n) => n,
            Err(e) => {
                r.fail(format!("io_getevents: {e}"));
                break;
            }
        };
        for ev in &events[..n] {
            inflight -= 1;
            let slot = ev.data as usize;
            let (t, off) = slots.issued[slot];
            r.lat_ns.push(ns(t));
            r.done(off, ev.res, bs);
            if next < offs.len() {
                if submit(slot, offs[next], &mut r, &mut slots) {
                    inflight += 1;
                }
                next += 1;
            }
        }
    }
    r.end = Some(Snap::take(dev));
    sys::io_destroy(ctx);
    Ok(r)
}

/// Per-slot buffers and (submit time, offset) of the request in the slot.
struct Slots {
    bufs: Vec<Vec<u8>>,
    issued: Vec<(Instant, u64)>,
}

impl Slots {
    fn new(qd: usize, bs: usize) -> Slots {
        Slots {
            bufs: (0..qd).map(|_| vec![0u8; bs]).collect(),
            issued: vec![(Instant::now(), 0); qd],
        }
    }
}

/// io_uring without SQPOLL: one SQE per io_uring_enter(submit) call, then
/// io_uring_enter(wait 1) to reap, refilled as completions arrive.
fn uring(fd: RawFd, offs: &[u64], bs: usize, qd: usize, dev: &str) -> std::io::Result<Raw> {
    use io_uring::{opcode, types, IoUring};
    let mut ring: IoUring = IoUring::new(qd.next_power_of_two() as u32)?;
    let mut slots = Slots::new(qd, bs);
    let mut r = Raw {
        start: Some(Snap::take(dev)),
        ..Raw::default()
    };
    let mut next = 0usize;
    let mut inflight = 0usize;
    let submit = |ring: &mut IoUring, slot: usize, off: u64, r: &mut Raw, slots: &mut Slots| {
        let sqe = opcode::Read::new(types::Fd(fd), slots.bufs[slot].as_mut_ptr(), bs as u32)
            .offset(off)
            .build()
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
        slots.issued[slot] = (t, off);
        match res {
            Ok(_) => true,
            Err(e) => {
                r.fail(format!("io_uring submit at {off}: {e}"));
                false
            }
        }
    };
    while next < qd.min(offs.len()) {
        if submit(&mut ring, next, offs[next], &mut r, &mut slots) {
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
            let (t, off) = slots.issued[slot];
            r.lat_ns.push(ns(t));
            r.done(off, res as i64, bs);
            if next < offs.len() {
                if submit(&mut ring, slot, offs[next], &mut r, &mut slots) {
                    inflight += 1;
                }
                next += 1;
            }
        }
    }
    r.end = Some(Snap::take(dev));
    Ok(r)
}
