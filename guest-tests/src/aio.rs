//! A safe [`Ring`] over the raw native AIO syscalls of the `bufaio-aio-sys`
//! crate (`io_setup`/`io_submit`/`io_getevents`/`io_destroy`, re-exported
//! here) that owns every in-flight request's memory and feeds the shared
//! invariant checker ([`crate::invariants::Tracker`]).
//!
//! Memory safety model: the kernel writes into `aio_buf` asynchronously, so
//! an [`Op`] (iocb + its buffer + its iovecs) is moved into the [`Ring`] on
//! submission and only handed back with its completion event. Dropping a
//! `Ring` calls `io_destroy`, which waits for all in-flight requests, before
//! freeing their buffers.

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::invariants::Tracker;

// The raw layer is the shared crate's; re-exported so the tests keep
// naming it `aio::…`. Its `io_getevents` is one syscall: EINTR reaches the
// caller (the tests count it), as it always did here.
pub use bufaio_aio_sys::{
    io_cancel, io_destroy, io_getevents, io_setup, io_setup_with_initial, io_submit_fsync_probe,
    AlignedBuf, IoEvent, Iocb, IOCB_CMD_FDSYNC, IOCB_CMD_FSYNC, IOCB_CMD_PREAD, IOCB_CMD_PREADV,
    IOCB_CMD_PWRITE, IOCB_CMD_PWRITEV, IOCB_FLAG_RESFD,
};

enum Mem {
    None,
    Vec(Vec<u8>),
    Aligned(AlignedBuf, usize),
}

impl Mem {
    fn slice(&self) -> &[u8] {
        match self {
            Mem::None => &[],
            Mem::Vec(v) => v,
            Mem::Aligned(a, len) => &a.as_slice()[..*len],
        }
    }
}

/// Byte used to pre-fill read buffers so untouched bytes are recognisable.
pub const READ_POISON: u8 = 0xA5;

/// One AIO request: the iocb plus the memory it points at.
pub struct Op {
    iocb: Box<Iocb>,
    mem: Mem,
    iov: Vec<libc::iovec>,
    /// The original iocb and iovecs while the user-space copies are
    /// scribbled over ([`Ring::scribble_inflight`]).
    saved: Option<(Iocb, Vec<libc::iovec>)>,
    /// Where scribbled iocb/iovecs point instead of `mem` (so a kernel that
    /// re-reads them after io_submit writes here, detectably and safely).
    decoy: Vec<u8>,
}

// SAFETY: an Op exclusively owns its iocb, buffer, iovecs and decoy; the raw
// pointers inside the iocb/iovecs point only into that owned memory, so
// moving the whole Op to another thread is sound.
unsafe impl Send for Op {}

impl Op {
    fn new(opcode: u16, fd: RawFd, offset: u64) -> Op {
        Op {
            iocb: Box::new(Iocb {
                aio_lio_opcode: opcode,
                aio_fildes: fd as u32,
                aio_offset: offset as i64,
                ..Default::default()
            }),
            mem: Mem::None,
            iov: Vec::new(),
            saved: None,
            decoy: Vec::new(),
        }
    }

    /// Overwrites the user-space iocb and iovecs (after io_submit returned)
    /// with garbage pointing at a decoy buffer; the originals are restored
    /// when the completion is reaped.
    fn scribble(&mut self) {
        if self.saved.is_some() {
            return;
        }
        let total = self.nbytes().max(1);
        self.decoy = vec![READ_POISON; total];
        self.saved = Some((*self.iocb, self.iov.clone()));
        let decoy = self.decoy.as_mut_ptr();
        for v in self.iov.iter_mut() {
            // Every segment is at most `total` long: stays within the decoy.
            v.iov_base = decoy as *mut libc::c_void;
        }
        let i = &mut *self.iocb;
        i.aio_data ^= 0x5c5c_0000_0000_5c5c;
        i.aio_buf = decoy as u64;
        i.aio_nbytes = if self.iov.is_empty() { total as u64 } else { 1 };
        i.aio_offset = i.aio_offset.wrapping_add(12_345);
        i.aio_fildes = u32::MAX;
        i.aio_lio_opcode = 0x7777;
        i.aio_flags = 0;
    }

    fn unscribble(&mut self) {
        if let Some((iocb, iov)) = self.saved.take() {
            *self.iocb = iocb;
            self.iov.copy_from_slice(&iov);
        }
    }

    /// Whether the decoy of a scribbled op is still all poison (nothing was
    /// written through the overwritten iocb/iovecs). True if never scribbled.
    pub fn decoy_untouched(&self) -> bool {
        self.decoy.iter().all(|&b| b == READ_POISON)
    }

    fn attach_flat(mut self, mem: Mem) -> Op {
        let s = mem.slice();
        self.iocb.aio_buf = s.as_ptr() as u64;
        self.iocb.aio_nbytes = s.len() as u64;
        self.mem = mem;
        self
    }

    fn attach_vectored(mut self, mem: Mem, segs: &[usize]) -> Op {
        let s = mem.slice();
        let base = s.as_ptr() as *mut u8;
        let mut at = 0usize;
        let mut iov = Vec::with_capacity(segs.len());
        for &len in segs {
            let len = len.min(s.len() - at);
            iov.push(libc::iovec {
                // Pointer arithmetic only (no dereference); stays within `s`.
                iov_base: base.wrapping_add(at) as *mut libc::c_void,
                iov_len: len,
            });
            at += len;
        }
        self.iocb.aio_buf = iov.as_ptr() as u64;
        self.iocb.aio_nbytes = iov.len() as u64;
        self.iov = iov;
        self.mem = mem;
        self
    }

    /// Buffered (or whatever `fd` was opened with) read of `len` bytes.
    pub fn pread(fd: RawFd, offset: u64, len: usize) -> Op {
        Op::new(IOCB_CMD_PREAD, fd, offset).attach_flat(Mem::Vec(vec![READ_POISON; len]))
    }

    /// Read into a buffer aligned to `align` (for O_DIRECT).
    pub fn pread_aligned(fd: RawFd, offset: u64, len: usize, align: usize) -> io::Result<Op> {
        let mut buf = AlignedBuf::new(len, align)?;
        buf.as_mut_slice().fill(READ_POISON);
        Ok(Op::new(IOCB_CMD_PREAD, fd, offset).attach_flat(Mem::Aligned(buf, len)))
    }

    /// Vectored read: the buffer is split into segments of the given sizes
    /// (the total buffer is the sum).
    pub fn preadv(fd: RawFd, offset: u64, segs: &[usize]) -> Op {
        let total: usize = segs.iter().sum();
        Op::new(IOCB_CMD_PREADV, fd, offset)
            .attach_vectored(Mem::Vec(vec![READ_POISON; total]), segs)
    }

    pub fn pwrite(fd: RawFd, offset: u64, data: Vec<u8>) -> Op {
        Op::new(IOCB_CMD_PWRITE, fd, offset).attach_flat(Mem::Vec(data))
    }

    /// Vectored write of `data` split into segments of the given sizes
    /// (a remainder beyond the segments is not written).
    pub fn pwritev(fd: RawFd, offset: u64, data: Vec<u8>, segs: &[usize]) -> Op {
        Op::new(IOCB_CMD_PWRITEV, fd, offset).attach_vectored(Mem::Vec(data), segs)
    }

    pub fn fsync(fd: RawFd) -> Op {
        Op::new(IOCB_CMD_FSYNC, fd, 0)
    }

    pub fn fdsync(fd: RawFd) -> Op {
        Op::new(IOCB_CMD_FDSYNC, fd, 0)
    }

    /// An iocb with an arbitrary opcode and no buffer (NULL, 0 bytes): safe
    /// whatever the kernel does with it. For error-path tests.
    pub fn raw(opcode: u16, fd: RawFd) -> Op {
        Op::new(opcode, fd, 0)
    }

    pub fn with_data(mut self, data: u64) -> Op {
        self.iocb.aio_data = data;
        self
    }

    pub fn with_resfd(mut self, efd: RawFd) -> Op {
        self.iocb.aio_flags |= IOCB_FLAG_RESFD;
        self.iocb.aio_resfd = efd as u32;
        self
    }

    pub fn with_reserved2(mut self, v: u64) -> Op {
        self.iocb.aio_reserved2 = v;
        self
    }

    pub fn with_rw_flags(mut self, flags: i32) -> Op {
        self.iocb.aio_rw_flags = flags;
        self
    }

    /// The iocb's user address (what `io_event.obj` must equal).
    pub fn obj(&self) -> u64 {
        &*self.iocb as *const Iocb as u64
    }

    pub fn data(&self) -> u64 {
        self.iocb.aio_data
    }

    pub fn opcode(&self) -> u16 {
        self.iocb.aio_lio_opcode
    }

    pub fn offset(&self) -> u64 {
        self.iocb.aio_offset as u64
    }

    /// Total bytes this request transfers (sum of segments if vectored).
    pub fn nbytes(&self) -> usize {
        if self.iov.is_empty() {
            self.iocb.aio_nbytes as usize
        } else {
            self.iov.iter().map(|v| v.iov_len).sum()
        }
    }

    /// The request's buffer (read result after completion).
    pub fn buf(&self) -> &[u8] {
        self.mem.slice()
    }
}

/// Result of one `io_submit` call.
pub struct Submit {
    /// How many iocbs the kernel accepted (from the front).
    pub accepted: usize,
    /// The error io_submit returned (only when it accepted none).
    pub error: Option<io::Error>,
    /// The ops that were not accepted, in order.
    pub rejected: Vec<Op>,
}

/// A completion, with the op it belongs to (None for a stray or duplicate
/// event, which the tracker has already recorded as a violation).
pub struct Completion {
    pub event: IoEvent,
    pub op: Option<Op>,
}

impl Completion {
    /// Checks `res == expected`, with a readable error.
    pub fn expect_res(&self, expected: i64) -> Result<(), String> {
        if self.event.res == expected {
            return Ok(());
        }
        let what = self.op.as_ref().map_or_else(
            || format!("data={:#x}", self.event.data),
            |op| {
                format!(
                    "opcode={} offset={} len={} data={:#x}",
                    op.opcode(),
                    op.offset(),
                    op.nbytes(),
                    op.data()
                )
            },
        );
        Err(format!(
            "{what}: res={} ({}), expected {}",
            self.event.res,
            describe_res(self.event.res),
            expected
        ))
    }

    pub fn op(&self) -> Result<&Op, String> {
        self.op
            .as_ref()
            .ok_or_else(|| format!("event data={:#x} has no matching iocb", self.event.data))
    }
}

/// "N bytes" or "-EINVAL" style description of an event result.
pub fn describe_res(res: i64) -> String {
    if res >= 0 {
        format!("{res} bytes")
    } else {
        format!("-{}", crate::sys::errno_name((-res) as i32))
    }
}

/// An AIO context plus tracking of everything submitted and reaped.
pub struct Ring {
    ctx: u64,
    inflight: HashMap<u64, Op>,
    tracker: Tracker,
    /// Set once io_destroy succeeded: the kernel is done with all buffers.
    destroyed: bool,
    /// How long the last `io_submit` syscall took (CLOCK_MONOTONIC).
    pub last_submit: Duration,
}

impl Ring {
    pub fn new(nr_events: u32) -> Result<Ring, String> {
        let ctx = io_setup(nr_events).map_err(|e| format!("io_setup({nr_events}): {e}"))?;
        Ok(Ring {
            ctx,
            inflight: HashMap::new(),
            tracker: Tracker::default(),
            destroyed: false,
            last_submit: Duration::ZERO,
        })
    }

    pub fn id(&self) -> u64 {
        self.ctx
    }

    /// One `io_submit` call with all `ops`.
    pub fn submit(&mut self, ops: Vec<Op>) -> Submit {
        let mut ptrs: Vec<*mut Iocb> = Vec::with_capacity(ops.len());
        let mut ops = ops;
        for op in ops.iter_mut() {
            ptrs.push(&mut *op.iocb as *mut Iocb);
        }
        let t0 = Instant::now();
        // SAFETY: every pointer refers to a boxed iocb whose buffer/iovecs
        // are owned by the same Op. Accepted ops are moved into
        // `self.inflight` below (their heap addresses do not change) and are
        // kept alive until their completion is reaped or the context is
        // destroyed (Drop), so the kernel never touches freed memory.
        let (accepted, error) = match unsafe { bufaio_aio_sys::io_submit(self.ctx, &mut ptrs) } {
            Ok(n) => (n.min(ops.len()), None),
            Err(e) => (0, Some(e)),
        };
        self.last_submit = t0.elapsed();
        let rejected = ops.split_off(accepted);
        for op in ops {
            self.tracker.on_submit(op.obj(), op.data());
            self.inflight.insert(op.obj(), op);
        }
        Submit {
            accepted,
            error,
            rejected,
        }
    }

    /// Submits all ops (one io_submit) and fails unless all were accepted.
    pub fn submit_all(&mut self, ops: Vec<Op>) -> Result<(), String> {
        let n = ops.len();
        let s = self.submit(ops);
        if let Some(e) = s.error {
            return Err(format!("io_submit of {n} iocbs failed: {e}"));
        }
        if s.accepted != n {
            return Err(format!("io_submit accepted {} of {n} iocbs", s.accepted));
        }
        Ok(())
    }

    /// One `io_getevents` call; every event goes through the tracker.
    pub fn getevents(
        &mut self,
        min_nr: usize,
        max_nr: usize,
        timeout: Option<Duration>,
    ) -> io::Result<Vec<Completion>> {
        let mut evs = vec![IoEvent::default(); max_nr.max(1)];
        let n = io_getevents(self.ctx, min_nr, &mut evs[..max_nr], timeout)?;
        Ok(evs[..n].iter().map(|ev| self.complete(*ev)).collect())
    }

    fn complete(&mut self, ev: IoEvent) -> Completion {
        let matched = self.tracker.on_event(&ev);
        let mut op = if matched {
            self.inflight.remove(&ev.obj)
        } else {
            None
        };
        if let Some(o) = op.as_mut() {
            o.unscribble();
        }
        Completion { event: ev, op }
    }

    /// Scribbles over the user-space iocb and iovec memory of every request
    /// in flight (see [`Op::decoy_untouched`]). Returns how many.
    pub fn scribble_inflight(&mut self) -> usize {
        for op in self.inflight.values_mut() {
            op.scribble();
        }
        self.inflight.len()
    }

    /// `io_destroy` now, with requests possibly in flight. Returns how long
    /// it took and the requests that were never reaped (their events are
    /// gone with the context; the checker counts them as abandoned, not
    /// missing). The kernel must be done with their buffers once io_destroy
    /// has returned.
    pub fn destroy_now(&mut self) -> Result<(Duration, Vec<Op>), String> {
        let t0 = Instant::now();
        io_destroy(self.ctx).map_err(|e| format!("io_destroy: {e}"))?;
        let took = t0.elapsed();
        Ok((took, self.destroyed_elsewhere()))
    }

    /// Records that `io_destroy` of this context ([`Ring::id`]) returned
    /// successfully in another thread: like [`Ring::destroy_now`] without
    /// the syscall. Returns the requests that were never reaped. Only call
    /// it once that io_destroy has returned 0 (then the kernel is done with
    /// every buffer of the context).
    pub fn destroyed_elsewhere(&mut self) -> Vec<Op> {
        self.destroyed = true;
        self.tracker.on_destroy();
        let mut ops: Vec<Op> = self.inflight.drain().map(|(_, op)| op).collect();
        for op in ops.iter_mut() {
            op.unscribble();
        }
        ops
    }

    /// Feeds events of this context that did not come from
    /// [`Ring::getevents`] — reaped by another thread with a raw
    /// [`io_getevents`] on [`Ring::id`], or returned by [`io_cancel`] —
    /// through the checker, and hands back their ops like `getevents`.
    pub fn absorb(&mut self, evs: &[IoEvent]) -> Vec<Completion> {
        evs.iter().map(|ev| self.complete(*ev)).collect()
    }

    /// How many accepted requests have not been reaped yet.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Runs the checker after [`Ring::destroy_now`] (nothing left to drain).
    pub fn check_after_destroy(&self) -> Result<(), String> {
        self.check()
    }

    /// Reaps exactly `n` completions, waiting up to `timeout` in total.
    pub fn reap(&mut self, n: usize, timeout: Duration) -> Result<Vec<Completion>, String> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let want = n - out.len();
            let got = match self.getevents(1, want, Some(left)) {
                Ok(g) => g,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("io_getevents: {e}")),
            };
            if got.is_empty() && Instant::now() >= deadline {
                return Err(format!(
                    "timed out after {:?} waiting for completions: got {} of {n} ({} still in flight)",
                    timeout,
                    out.len(),
                    self.inflight.len()
                ));
            }
            out.extend(got);
        }
        Ok(out)
    }

    /// Reaps exactly `n` completions like [`Ring::reap`], first probing
    /// with a zero-timeout io_getevents. Returns how many were already
    /// complete at the probe (a diagnostic: how many were really in flight).
    pub fn reap_probed(
        &mut self,
        n: usize,
        timeout: Duration,
    ) -> Result<(usize, Vec<Completion>), String> {
        let mut out = match self.getevents(0, n, Some(Duration::ZERO)) {
            Ok(v) => v,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Vec::new(),
            Err(e) => return Err(format!("io_getevents(timeout 0): {e}")),
        };
        let early = out.len();
        out.extend(self.reap(n - early, timeout)?);
        Ok((early, out))
    }

    /// Reaps everything in flight.
    pub fn drain(&mut self, timeout: Duration) -> Result<Vec<Completion>, String> {
        let n = self.inflight.len();
        self.reap(n, timeout)
    }

    /// Runs the invariant checker: no leaked kernel-internal errnos, no
    /// duplicate or stray events, nothing left in flight.
    pub fn check(&self) -> Result<(), String> {
        self.tracker.finish().map_err(|v| {
            let mut s = String::from("AIO invariant violation(s):");
            for line in v {
                s.push_str("\n  ");
                s.push_str(&line);
            }
            s
        })
    }

    /// Drains anything in flight, destroys the context, then checks
    /// invariants. The usual way to finish a test.
    pub fn finish(mut self, timeout: Duration) -> Result<(), String> {
        if self.destroyed {
            return self.check();
        }
        let drained = self.drain(timeout);
        let destroyed = io_destroy(self.ctx);
        // If io_destroy failed we cannot be sure the kernel is done with the
        // buffers; Drop then retries and leaks them if it fails again.
        self.destroyed = destroyed.is_ok();
        let checked = self.check();
        drained?;
        destroyed.map_err(|e| format!("io_destroy: {e}"))?;
        checked
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // io_destroy waits for all in-flight requests to complete, after
        // which their buffers may be freed. If it fails we cannot know
        // whether the kernel still uses them: leak instead of freeing.
        if !self.destroyed && io_destroy(self.ctx).is_err() && !self.inflight.is_empty() {
            std::mem::forget(std::mem::take(&mut self.inflight));
        }
    }
}
