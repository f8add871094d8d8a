//! The one raw Linux native AIO layer of the guest binaries
//! (`guest-tests`, `guest-bench`): the `<linux/aio_abi.h>` structs and
//! command constants, thin wrappers of `io_setup`, `io_submit`,
//! `io_getevents`, `io_cancel` and `io_destroy`, and a zeroed buffer with a
//! chosen alignment (for O_DIRECT).
//!
//! The wrappers are deliberately thin: each is one syscall and hands the
//! kernel's answer back as it came, errno included. In particular
//! [`io_getevents`] returns `EINTR` (`ErrorKind::Interrupted`) to its caller
//! — the guest tests count spurious EINTR from the kernel and must see it.
//! The one exception says so in its name: [`io_getevents_retrying`] (no
//! timeout, restarts on `EINTR`) is for callers that only want events, like
//! the benchmark. Higher-level machinery (guest-tests' `Op`/`Ring`, the
//! invariant checker) stays with its user.
//!
//! std + libc only, so it links into a `+crt-static` binary.

use std::alloc::Layout;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// `aio_context_t`: the context id `io_setup` returns.
pub type AioContext = u64;

pub const IOCB_CMD_PREAD: u16 = 0;
pub const IOCB_CMD_PWRITE: u16 = 1;
pub const IOCB_CMD_FSYNC: u16 = 2;
pub const IOCB_CMD_FDSYNC: u16 = 3;
pub const IOCB_CMD_POLL: u16 = 5;
pub const IOCB_CMD_NOOP: u16 = 6;
pub const IOCB_CMD_PREADV: u16 = 7;
pub const IOCB_CMD_PWRITEV: u16 = 8;

/// `aio_flags`: signal `aio_resfd` (an eventfd) on completion.
pub const IOCB_FLAG_RESFD: u32 = 1;
/// `aio_flags`: `aio_reqprio` holds an I/O priority.
pub const IOCB_FLAG_IOPRIO: u32 = 2;

/// `struct iocb` from `<linux/aio_abi.h>` (little-endian layout).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Iocb {
    pub aio_data: u64,
    pub aio_key: u32,
    pub aio_rw_flags: i32,
    pub aio_lio_opcode: u16,
    pub aio_reqprio: i16,
    pub aio_fildes: u32,
    pub aio_buf: u64,
    pub aio_nbytes: u64,
    pub aio_offset: i64,
    pub aio_reserved2: u64,
    pub aio_flags: u32,
    pub aio_resfd: u32,
}

/// `struct io_event` from `<linux/aio_abi.h>`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoEvent {
    pub data: u64,
    pub obj: u64,
    pub res: i64,
    pub res2: i64,
}

const _: () = assert!(std::mem::size_of::<Iocb>() == 64);
const _: () = assert!(std::mem::size_of::<IoEvent>() == 32);

fn syscall_result(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `io_setup(nr, &ctx)` with `ctx` initialised to `initial` (the kernel
/// requires 0; anything else must give EINVAL).
pub fn io_setup_with_initial(nr: u32, initial: u64) -> io::Result<AioContext> {
    let mut ctx: libc::c_ulong = initial as libc::c_ulong;
    // SAFETY: `ctx` is a valid, writable aio_context_t for the kernel to fill.
    syscall_result(unsafe { libc::syscall(libc::SYS_io_setup, nr as libc::c_long, &mut ctx) })?;
    Ok(ctx as AioContext)
}

/// `io_setup(nr)`: returns the context id.
pub fn io_setup(nr: u32) -> io::Result<AioContext> {
    io_setup_with_initial(nr, 0)
}

/// `io_destroy(ctx)`. Blocks until all in-flight requests have completed,
/// after which the kernel no longer touches their iocbs or buffers.
pub fn io_destroy(ctx: AioContext) -> io::Result<()> {
    // SAFETY: io_destroy takes a plain integer; the kernel validates it.
    syscall_result(unsafe { libc::syscall(libc::SYS_io_destroy, ctx as libc::c_ulong) }).map(|_| ())
}

/// One `io_submit(ctx, iocbs.len(), iocbs)` call: how many iocbs the kernel
/// accepted (from the front; may be fewer than given), or its error (when
/// it accepted none). `EINTR` and `EAGAIN` come back as they are.
///
/// # Safety
/// Every pointer must point at a live [`Iocb`], and the memory each one
/// names (`aio_buf`, iovecs) must stay valid, and the iocb itself must not
/// move, until its completion has been reaped or the context destroyed:
/// the kernel reads and writes it asynchronously.
pub unsafe fn io_submit(ctx: AioContext, iocbs: &mut [*mut Iocb]) -> io::Result<usize> {
    // SAFETY: `iocbs` is a valid array of `iocbs.len()` pointers; what they
    // point at is the caller's contract (above).
    let n = syscall_result(unsafe {
        libc::syscall(
            libc::SYS_io_submit,
            ctx as libc::c_ulong,
            iocbs.len() as libc::c_long,
            iocbs.as_mut_ptr(),
        )
    })?;
    Ok(n as usize)
}

/// Submits one iocb: `Ok` when the kernel accepted it, its error otherwise
/// (an accepted count of 0 without an error becomes an error too).
///
/// # Safety
/// As [`io_submit`]: `cb` and its buffer stay valid and in place until its
/// event is reaped.
pub unsafe fn io_submit_one(ctx: AioContext, cb: *mut Iocb) -> io::Result<()> {
    // SAFETY: the caller's contract is io_submit's.
    match unsafe { io_submit(ctx, &mut [cb]) }? {
        1 => Ok(()),
        _ => Err(io::Error::other("io_submit accepted 0 of 1")),
    }
}

/// `io_submit` of a single `IOCB_CMD_FSYNC` iocb on `fd` to an arbitrary
/// (possibly bogus or destroyed) context id. Memory-safe whatever `ctx` is:
/// an fsync iocb carries no buffer, and the kernel copies the iocb itself
/// during the call.
pub fn io_submit_fsync_probe(ctx: AioContext, fd: RawFd) -> io::Result<usize> {
    let mut iocb = Iocb {
        aio_lio_opcode: IOCB_CMD_FSYNC,
        aio_fildes: fd as u32,
        ..Default::default()
    };
    // SAFETY: one pointer to a live iocb with no buffer attached; the
    // kernel copies it during the call and keeps no reference to it.
    unsafe { io_submit(ctx, &mut [&mut iocb as *mut Iocb]) }
}

/// One `io_getevents(ctx, min_nr, events.len(), events, timeout)` call;
/// `timeout == None` blocks until `min_nr` events are available. Not
/// restarted: `EINTR` is returned to the caller (tests count it).
pub fn io_getevents(
    ctx: AioContext,
    min_nr: usize,
    events: &mut [IoEvent],
    timeout: Option<Duration>,
) -> io::Result<usize> {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `events` is a valid writable array of `events.len()` io_events
    // (repr(C), matching the kernel ABI); `ts_ptr` is NULL or points at a
    // live timespec. The kernel writes only within the call.
    let n = syscall_result(unsafe {
        libc::syscall(
            libc::SYS_io_getevents,
            ctx as libc::c_ulong,
            min_nr as libc::c_long,
            events.len() as libc::c_long,
            events.as_mut_ptr(),
            ts_ptr,
        )
    })?;
    Ok(n as usize)
}

/// [`io_getevents`] with no timeout, restarted on `EINTR` until it returns
/// events or another error: for callers that only want completions (the
/// benchmark), never for a test that looks at `EINTR`.
pub fn io_getevents_retrying(
    ctx: AioContext,
    min_nr: usize,
    events: &mut [IoEvent],
) -> io::Result<usize> {
    loop {
        match io_getevents(ctx, min_nr, events, None) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// `io_cancel(ctx, obj, &result)` for the iocb at user address `obj`.
/// `Ok(event)` when the kernel returned 0 and delivered the cancelled
/// request's event in `result` (the pre-4.19 contract; such an event never
/// reaches the ring); `Err` otherwise — 6.12 answers `EINPROGRESS` when it
/// cancelled (the event then comes through the ring) and `EINVAL` for
/// requests that cannot be cancelled, e.g. reads, or that are not in
/// flight.
///
/// Memory-safe for any `obj`, even one that was never submitted or whose
/// memory has been freed: the kernel only reads `aio_key` through it with
/// `get_user()` (EFAULT on a bad address) and compares the address with
/// its requests; it writes only into `result`, which lives here.
pub fn io_cancel(ctx: AioContext, obj: u64) -> io::Result<IoEvent> {
    let mut result = IoEvent::default();
    // SAFETY: see above; `result` is a valid writable io_event.
    syscall_result(unsafe {
        libc::syscall(
            libc::SYS_io_cancel,
            ctx as libc::c_ulong,
            obj as usize as *mut Iocb,
            &mut result as *mut IoEvent,
        )
    })?;
    Ok(result)
}

/// A zeroed heap buffer with a chosen alignment (for O_DIRECT).
pub struct AlignedBuf {
    ptr: *mut u8,
    layout: Layout,
}

impl AlignedBuf {
    pub fn new(len: usize, align: usize) -> io::Result<AlignedBuf> {
        let layout = Layout::from_size_align(len.max(1), align)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        // SAFETY: layout has non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("cannot allocate {len} bytes aligned to {align}"),
            ));
        }
        Ok(AlignedBuf { ptr, layout })
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is a live allocation of `layout.size()` initialised
        // (zeroed) bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` was allocated with exactly `layout` and not freed yet.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_sizes_and_offsets() {
        assert_eq!(std::mem::size_of::<Iocb>(), 64);
        assert_eq!(std::mem::size_of::<IoEvent>(), 32);
        assert_eq!(std::mem::offset_of!(Iocb, aio_lio_opcode), 16);
        assert_eq!(std::mem::offset_of!(Iocb, aio_buf), 24);
        assert_eq!(std::mem::offset_of!(Iocb, aio_resfd), 60);
        assert_eq!(std::mem::offset_of!(IoEvent, res), 16);
    }

    #[test]
    fn aligned_buf_is_zeroed_and_aligned() {
        let mut b = AlignedBuf::new(8192, 4096).unwrap();
        assert_eq!(b.as_slice().as_ptr() as usize % 4096, 0);
        assert_eq!(b.as_slice().len(), 8192);
        assert!(b.as_slice().iter().all(|&x| x == 0));
        b.as_mut_slice()[0] = 1;
        assert_eq!(b.as_slice()[0], 1);
        assert_eq!(AlignedBuf::new(0, 512).unwrap().as_slice().len(), 1);
        assert!(
            AlignedBuf::new(16, 3).is_err(),
            "alignment not a power of two"
        );
    }

    #[test]
    fn bad_context_is_an_error_not_a_crash() {
        // Whatever the host kernel (AIO may be disabled: ENOSYS), a bogus
        // context must come back as an error from every wrapper.
        let bogus: AioContext = 0xdead_beef;
        let mut evs = [IoEvent::default(); 1];
        assert!(io_getevents(bogus, 0, &mut evs, Some(Duration::ZERO)).is_err());
        assert!(io_destroy(bogus).is_err());
        assert!(io_cancel(bogus, 0).is_err());
        assert!(io_submit_fsync_probe(bogus, -1).is_err());
        assert!(io_setup_with_initial(8, 1).is_err(), "non-zero initial ctx");
    }
}
