//! Thin, safe wrappers around the libc calls the guest needs (mounting,
//! process control, fd helpers). Together with `aio.rs` this is the only
//! module that contains `unsafe`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in string"))
}

fn path_cstr(p: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in path"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `mount(2)`.
pub fn mount(source: &str, target: &Path, fstype: &str, flags: libc::c_ulong) -> io::Result<()> {
    let src = cstr(source)?;
    let tgt = path_cstr(target)?;
    let fst = cstr(fstype)?;
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the
    // call; a NULL data pointer is allowed by mount(2).
    check(unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fst.as_ptr(),
            flags,
            std::ptr::null(),
        )
    })
    .map(|_| ())
}

/// `mount(2)` with a filesystem-specific option string (`data`, e.g.
/// `errors=continue`).
pub fn mount_data(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let src = cstr(source)?;
    let tgt = path_cstr(target)?;
    let fst = cstr(fstype)?;
    let dat = cstr(data)?;
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the
    // call; the filesystem reads `data` as a NUL-terminated option string.
    check(unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fst.as_ptr(),
            flags,
            dat.as_ptr() as *const libc::c_void,
        )
    })
    .map(|_| ())
}

/// `umount2(target, 0)`.
pub fn umount(target: &Path) -> io::Result<()> {
    let tgt = path_cstr(target)?;
    // SAFETY: `tgt` is a valid NUL-terminated string that outlives the call.
    check(unsafe { libc::umount2(tgt.as_ptr(), 0) }).map(|_| ())
}

/// `sync(2)`.
pub fn sync() {
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() }
}

/// `tcdrain(fd)`: waits until queued terminal output has been sent (so
/// console lines are not lost by an immediate reboot). Errors are ignored
/// (e.g. when `fd` is not a terminal).
pub fn tcdrain(fd: RawFd) {
    // SAFETY: tcdrain takes a plain integer; failure is harmless.
    unsafe { libc::tcdrain(fd) };
}

/// `pause()` forever (used if PID 1 cannot reboot).
pub fn pause_forever() -> ! {
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }
}

/// `reboot(2)`; only returns on failure.
pub fn reboot(cmd: libc::c_int) -> io::Error {
    // SAFETY: reboot takes a plain integer command; on success it does not
    // return, on failure it sets errno.
    unsafe { libc::reboot(cmd) };
    io::Error::last_os_error()
}

pub fn getpid() -> i32 {
    // SAFETY: getpid has no preconditions and cannot fail.
    unsafe { libc::getpid() }
}

pub fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The kernel release (`uname -r`).
pub fn uname_release() -> String {
    // SAFETY: utsname is plain old data; all-zero is a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return "unknown".to_string();
    }
    // SAFETY: on success the kernel fills `release` with a NUL-terminated
    // string that fits in the array.
    let rel = unsafe { CStr::from_ptr(uts.release.as_ptr()) };
    rel.to_string_lossy().into_owned()
}

/// Whether `fd` refers to an open file description.
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD on an arbitrary integer is harmless; it fails with
    // EBADF if the descriptor is not open.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// `dup2(src, dst)`: makes `dst` refer to the same file as `src`.
pub fn dup2(src: RawFd, dst: RawFd) -> io::Result<()> {
    // SAFETY: dup2 only manipulates the fd table; both are plain integers.
    check(unsafe { libc::dup2(src, dst) }).map(|_| ())
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by us.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `eventfd(initval, EFD_CLOEXEC | flags)`.
pub fn eventfd(initval: u32, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes plain integers and returns a new fd or -1.
    let fd = check(unsafe { libc::eventfd(initval, libc::EFD_CLOEXEC | flags) })?;
    // SAFETY: the fd was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `pidfd_open(pid, 0)`.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes plain integers and returns a new fd or -1.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the fd was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// Waits until `fd` is readable or `timeout` passes. Returns true if readable.
pub fn poll_readable(fd: &impl AsRawFd, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `pfd` is a valid pollfd array of length 1.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(n > 0)
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    Exited(i32),
    Signaled { signal: i32, core: bool },
}

impl WaitStatus {
    /// Shell-style status: exit code, or 128+signal.
    pub fn shell_code(self) -> i32 {
        match self {
            WaitStatus::Exited(c) => c,
            WaitStatus::Signaled { signal, .. } => 128 + signal,
        }
    }
}

/// `waitpid(pid, flags)`. Returns None if WNOHANG was given and nothing is
/// ready; stopped/continued children are ignored (not requested).
pub fn waitpid(pid: i32, nohang: bool) -> io::Result<Option<(i32, WaitStatus)>> {
    let mut status: libc::c_int = 0;
    let flags = if nohang { libc::WNOHANG } else { 0 };
    loop {
        // SAFETY: `status` is a valid writable int.
        let r = unsafe { libc::waitpid(pid, &mut status, flags) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Ok(None);
        }
        let ws = if libc::WIFEXITED(status) {
            WaitStatus::Exited(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            WaitStatus::Signaled {
                signal: libc::WTERMSIG(status),
                core: libc::WCOREDUMP(status),
            }
        } else {
            continue;
        };
        return Ok(Some((r, ws)));
    }
}

/// Reaps every already-exited child without blocking. Returns how many.
pub fn reap_zombies() -> usize {
    let mut n = 0;
    while let Ok(Some(_)) = waitpid(-1, true) {
        n += 1;
    }
    n
}

/// Reaps every already-exited child except `keep` (which is left for a
/// targeted waitpid). Returns how many were reaped.
pub fn reap_zombies_except(keep: i32) -> usize {
    let mut n = 0;
    loop {
        // SAFETY: siginfo_t is plain old data; all-zero is valid.
        let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `si` is a valid writable siginfo_t; WNOWAIT leaves the
        // child waitable.
        let r = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut si,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if r < 0 {
            return n;
        }
        // SAFETY: after a successful waitid, si_pid is valid (0 if no child
        // was ready).
        let pid = unsafe { si.si_pid() };
        if pid == 0 || pid == keep {
            return n;
        }
        if waitpid(pid, true).is_err() {
            return n;
        }
        n += 1;
    }
}

/// `kill(pid, sig)`.
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill takes plain integers.
    check(unsafe { libc::kill(pid, sig) }).map(|_| ())
}

/// `posix_fadvise(fd, 0, 0, advice)` over the whole file.
pub fn fadvise_all(fd: &impl AsRawFd, advice: libc::c_int) -> io::Result<()> {
    // SAFETY: plain integer arguments; the fd is borrowed and open.
    let r = unsafe { libc::posix_fadvise(fd.as_raw_fd(), 0, 0, advice) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// Human-readable signal name.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSYS => "SIGSYS",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        _ => "signal",
    }
}

/// Symbolic errno name for diagnostics (the common ones).
pub fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EFBIG => "EFBIG",
        libc::EROFS => "EROFS",
        libc::ENOSYS => "ENOSYS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ECANCELED => "ECANCELED",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EUCLEAN => "EUCLEAN",
        512 => "ERESTARTSYS",
        513 => "ERESTARTNOINTR",
        514 => "ERESTARTNOHAND",
        515 => "ENOIOCTLCMD",
        516 => "ERESTART_RESTARTBLOCK",
        517 => "EPROBE_DEFER",
        518 => "EOPENSTALE",
        519 => "ENOPARAM",
        521 => "EBADHANDLE",
        524 => "ENOTSUPP",
        526 => "EJUKEBOX",
        529 => "EIOCBQUEUED",
        530 => "ERECALLCONFLICT",
        _ => "errno",
    }
}

/// `posix_fadvise(fd, offset, len, advice)` on a byte range.
pub fn fadvise(fd: &impl AsRawFd, offset: u64, len: u64, advice: libc::c_int) -> io::Result<()> {
    // SAFETY: plain integer arguments; the fd is borrowed and open.
    let r = unsafe {
        libc::posix_fadvise(
            fd.as_raw_fd(),
            offset as libc::off_t,
            len as libc::off_t,
            advice,
        )
    };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// `fork()`. Returns 0 in the child, the child's pid in the parent.
///
/// Only call from a single-threaded process; the child should do little
/// more than syscalls and then [`exit_now`].
pub fn fork() -> io::Result<i32> {
    // SAFETY: fork has no memory-safety preconditions of its own; callers
    // keep the child simple (single-threaded parent, no locks held).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid)
}

/// `_exit(code)`: leaves at once, without running destructors or atexit
/// handlers (for forked children).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and has no preconditions.
    unsafe { libc::_exit(code) }
}

/// Counts SIGALRMs delivered to [`on_sigalrm`].
pub static SIGALRM_COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

extern "C" fn on_sigalrm(_sig: libc::c_int) {
    SIGALRM_COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Installs a counting SIGALRM handler *without* SA_RESTART (so blocking
/// syscalls see EINTR) and arms ITIMER_REAL every `interval`. A zero
/// interval disarms the timer and restores SIG_DFL.
pub fn alarm_every(interval: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: interval.as_secs() as libc::time_t,
        tv_usec: interval.subsec_micros() as libc::suseconds_t,
    };
    let it = libc::itimerval {
        it_interval: tv,
        it_value: tv,
    };
    // SAFETY: sigaction is plain old data; all-zero is a valid value.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = if interval.is_zero() {
        libc::SIG_DFL
    } else {
        on_sigalrm as extern "C" fn(libc::c_int) as libc::sighandler_t
    };
    sa.sa_flags = 0; // no SA_RESTART
    if interval.is_zero() {
        // Disarm first, then restore the default action.
        // SAFETY: `it` is a valid itimerval; old value not requested.
        check(unsafe { libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()) })?;
    }
    // SAFETY: `sa` is a valid sigaction whose handler only touches an
    // atomic (async-signal-safe); the mask is empty.
    check(unsafe {
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut())
    })?;
    if !interval.is_zero() {
        // SAFETY: as above.
        check(unsafe { libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()) })?;
    }
    Ok(())
}

/// `ioctl(fd, FIBMAP, &block)`: the physical block (in filesystem blocks)
/// backing logical block `block` of the file. Needs CAP_SYS_RAWIO.
pub fn fibmap(fd: &impl AsRawFd, block: u32) -> io::Result<u32> {
    const FIBMAP: libc::c_ulong = 1;
    let mut b: libc::c_int = block as libc::c_int;
    // SAFETY: FIBMAP reads and writes one int through the pointer.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), FIBMAP, &mut b) })?;
    Ok(b as u32)
}

/// `ioctl(fd, FIGETBSZ, &size)`: the filesystem block size.
pub fn figetbsz(fd: &impl AsRawFd) -> io::Result<u32> {
    const FIGETBSZ: libc::c_ulong = 2;
    let mut b: libc::c_int = 0;
    // SAFETY: FIGETBSZ writes one int through the pointer.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), FIGETBSZ, &mut b) })?;
    Ok(b as u32)
}

/// `ioctl(fd, EXT4_IOC_CHECKPOINT, &0)`: flush the jbd2 journal and
/// checkpoint it, so journalled metadata buffers are written home and
/// become droppable (ext3/ext4 only; ext2 gives ENOTTY).
pub fn ext4_checkpoint(fd: &impl AsRawFd) -> io::Result<()> {
    const EXT4_IOC_CHECKPOINT: libc::c_ulong = 0x4004_662b; // _IOW('f', 43, __u32)
    let flags: u32 = 0;
    // SAFETY: the ioctl reads one u32 through the pointer.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), EXT4_IOC_CHECKPOINT, &flags) }).map(|_| ())
}

/// Voluntary and involuntary context switches of the calling thread so far
/// (`getrusage(RUSAGE_THREAD)`: ru_nvcsw, ru_nivcsw). A voluntary switch
/// means the thread slept (e.g. waited for I/O).
pub fn thread_ctx_switches() -> io::Result<(u64, u64)> {
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    check(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) })?;
    Ok((ru.ru_nvcsw as u64, ru.ru_nivcsw as u64))
}

/// `getrlimit(resource)`: (soft, hard).
pub fn getrlimit(resource: libc::__rlimit_resource_t) -> io::Result<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid, writable rlimit.
    check(unsafe { libc::getrlimit(resource, &mut r) })?;
    Ok((r.rlim_cur, r.rlim_max))
}

/// `setrlimit(resource, {soft, hard})`.
pub fn setrlimit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> io::Result<()> {
    let r = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `r` is a valid rlimit read by the kernel during the call.
    check(unsafe { libc::setrlimit(resource, &r) }).map(|_| ())
}

/// Sets the disposition of `sig` to SIG_IGN (`ignore == true`) or SIG_DFL.
pub fn ignore_signal(sig: libc::c_int, ignore: bool) -> io::Result<()> {
    // SAFETY: sigaction is plain old data; all-zero is a valid value.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = if ignore { libc::SIG_IGN } else { libc::SIG_DFL };
    // SAFETY: `sa` is a valid sigaction with no handler function.
    check(unsafe {
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut())
    })
    .map(|_| ())
}

/// `sync_file_range(fd, offset, nbytes, flags)`.
pub fn sync_file_range(
    fd: &impl AsRawFd,
    offset: u64,
    nbytes: u64,
    flags: libc::c_uint,
) -> io::Result<()> {
    // SAFETY: plain integer arguments; the fd is borrowed and open.
    check(unsafe {
        libc::sync_file_range(
            fd.as_raw_fd(),
            offset as libc::off64_t,
            nbytes as libc::off64_t,
            flags,
        )
    })
    .map(|_| ())
}

/// `fstatvfs(fd)`: (fragment size, free blocks for root, total blocks).
pub fn fstatvfs(fd: &impl AsRawFd) -> io::Result<(u64, u64, u64)> {
    // SAFETY: statvfs is plain old data; all-zero is a valid value.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `s` is a valid, writable statvfs; the fd is borrowed and open.
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut s) })?;
    Ok((s.f_frsize as u64, s.f_bfree as u64, s.f_blocks as u64))
}

/// CLOCK_MONOTONIC in nanoseconds: comparable across processes (unlike
/// `Instant`, whose value is opaque), for ordering events that a forked
/// child and its parent observe.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always
    // exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `clock_gettime(clock)` as a duration, for the CPU-time clocks
/// (`CLOCK_PROCESS_CPUTIME_ID`: all threads of the process, including its
/// kernel io threads; `CLOCK_THREAD_CPUTIME_ID`: the calling thread).
pub fn cpu_time(clock: libc::clockid_t) -> io::Result<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; an unknown clock id only
    // makes the call fail with EINVAL.
    check(unsafe { libc::clock_gettime(clock, &mut ts) })?;
    Ok(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// `ioctl(fd, FIFREEZE, 0)`: freezes the filesystem holding `fd` (waits
/// for every writer holding freeze protection, syncs, blocks new writers).
pub fn fifreeze(fd: &impl AsRawFd) -> io::Result<()> {
    const FIFREEZE: libc::c_ulong = 0xC004_5877; // _IOWR('X', 119, int)
                                                 // SAFETY: FIFREEZE ignores its argument; the fd is borrowed and open.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), FIFREEZE, 0) }).map(|_| ())
}

/// `ioctl(fd, FITHAW, 0)`: thaws a frozen filesystem (EINVAL if it is not
/// frozen).
pub fn fithaw(fd: &impl AsRawFd) -> io::Result<()> {
    const FITHAW: libc::c_ulong = 0xC004_5878; // _IOWR('X', 120, int)
                                               // SAFETY: FITHAW ignores its argument; the fd is borrowed and open.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), FITHAW, 0) }).map(|_| ())
}

/// `epoll_create1(EPOLL_CLOEXEC)`.
pub fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes a plain flag and returns a new fd or -1.
    let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    // SAFETY: the fd was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `epoll_ctl(ep, EPOLL_CTL_ADD, fd, {events, token})`.
pub fn epoll_add(ep: &impl AsRawFd, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: `ev` is a valid epoll_event read by the kernel during the call.
    check(unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) }).map(|_| ())
}

/// One `epoll_wait(ep, .., max, timeout)` call, *not* retried on EINTR
/// (callers that count interruptions see them as `Err`). Returns the ready
/// (events, token) pairs; empty on timeout.
pub fn epoll_wait(ep: &impl AsRawFd, max: usize, timeout: Duration) -> io::Result<Vec<(u32, u64)>> {
    let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; max.max(1)];
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `evs` is a valid writable array of `evs.len()` epoll_events.
    let n = check(unsafe {
        libc::epoll_wait(
            ep.as_raw_fd(),
            evs.as_mut_ptr(),
            evs.len() as libc::c_int,
            ms,
        )
    })?;
    Ok(evs[..n as usize]
        .iter()
        .map(|e| {
            // copies out of the (packed) struct: no references taken
            let (events, token) = (e.events, e.u64);
            (events, token)
        })
        .collect())
}

fn sigset_of(sigs: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain old data; sigemptyset initialises it and
    // sigaddset only sets bits of valid signal numbers (errors ignored).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks (`block == true`) or unblocks `sigs` in the calling thread
/// (`pthread_sigmask`).
pub fn block_signals(sigs: &[libc::c_int], block: bool) -> io::Result<()> {
    let set = sigset_of(sigs);
    let how = if block {
        libc::SIG_BLOCK
    } else {
        libc::SIG_UNBLOCK
    };
    // SAFETY: `set` is an initialised sigset_t; the old mask is not wanted.
    let r = unsafe { libc::pthread_sigmask(how, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// The raw `rt_sigtimedwait(sigs, NULL, timeout)` syscall (no libc retry
/// logic): `Ok(None)` on timeout (EAGAIN), `Ok(Some(sig))` if one of `sigs`
/// was pending, `Err` otherwise — including EINTR, which callers count.
pub fn sigtimedwait(sigs: &[libc::c_int], timeout: Duration) -> io::Result<Option<libc::c_int>> {
    let set = sigset_of(sigs);
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` and `ts` are valid for the call; a NULL siginfo pointer
    // is allowed; 8 is the kernel's sigset size (_NSIG / 8) and `set` (a
    // 128-byte glibc sigset_t) is larger.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigtimedwait,
            &set as *const libc::sigset_t,
            std::ptr::null_mut::<libc::siginfo_t>(),
            &ts as *const libc::timespec,
            8 as libc::c_long,
        )
    };
    if r >= 0 {
        return Ok(Some(r as libc::c_int));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EAGAIN) {
        return Ok(None);
    }
    Err(e)
}

/// Body of the [`vfork_sleep`] child: sleeps, then returns (glibc's clone
/// wrapper then calls `exit`). Runs on its own stack in the parent's
/// address space, so it touches nothing but its stack and `arg`.
extern "C" fn vfork_sleeper(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points at the timespec owned by `vfork_sleep`'s frame,
    // which stays alive (and unmodified) because that thread is suspended
    // until this child exits (CLONE_VFORK).
    let mut req = unsafe { *(arg as *const libc::timespec) };
    for _ in 0..1000 {
        let mut rem = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: plain nanosleep on valid timespecs on this stack. (A
        // failure sets errno, i.e. the suspended parent thread's TLS
        // errno: harmless, errno is only read after a failing call.)
        let r = unsafe { libc::syscall(libc::SYS_nanosleep, &req, &mut rem) };
        if r == 0 {
            break;
        }
        // EINTR: sleep the rest (anything else: rem is 0, so we leave)
        req = rem;
    }
    0
}

/// Blocks the calling thread the way `vfork()` does, for `d`: a child is
/// created with `clone(CLONE_VM | CLONE_VFORK | SIGCHLD)` and the caller
/// waits in the kernel (`wait_for_vfork_done`, a killable sleep that
/// signal-less notifications such as `TWA_SIGNAL` task_work do not end)
/// until the child exits after sleeping `d`. Unlike a literal `vfork()`
/// this is sound from Rust: the child runs a plain `extern "C"` function
/// on a stack of its own, so it never returns through (and clobbers) the
/// parent's frames. Returns the child's pid, to be reaped with
/// [`waitpid`] (it has exited or is exiting when this returns).
pub fn vfork_sleep(d: Duration) -> io::Result<i32> {
    const STACK: usize = 64 * 1024;
    let mut stack = vec![0u8; STACK];
    let mut ts = libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    };
    // Top of the stack (it grows down), 16-byte aligned.
    let top = {
        let end = stack.as_mut_ptr().wrapping_add(STACK) as usize;
        (end & !15) as *mut libc::c_void
    };
    // SAFETY: the child gets a private, live, 16-aligned stack (`stack`,
    // freed only after clone returns, i.e. after the child released the
    // address space: CLONE_VFORK) and a pointer to `ts`, which lives in
    // this frame for the same span. It runs only `vfork_sleeper`, which
    // reads `ts` and makes syscalls. No CLONE_THREAD/CLONE_FILES/
    // CLONE_SIGHAND: it is a separate process sharing only memory.
    let pid = unsafe {
        libc::clone(
            vfork_sleeper,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &mut ts as *mut libc::timespec as *mut libc::c_void,
        )
    };
    drop(stack);
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid)
}
