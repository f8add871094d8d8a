//! Children that must not outlive the run (issue 18): QEMU, make. When the
//! toolkit is killed (SIGINT from a terminal, SIGTERM from `timeout`, CI
//! cancel, systemd), its `Drop` guards never run; the kernel's parent-death
//! signal ends the child instead of leaving it to run on with PPID 1.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// The child gets SIGKILL when the thread that spawned it exits (call it
/// from the thread that lives as long as the child should: the main one).
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: getpid/prctl/getppid/_exit are async-signal-safe and touch no
    // memory of the parent; this runs in the child between fork and exec.
    let parent = unsafe { libc::getpid() };
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// `<run dir>/INTERRUPTED`, as a C string for the signal handler (leaked on
/// purpose: it must stay valid while a signal can arrive).
static MARK: std::sync::atomic::AtomicPtr<libc::c_char> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

/// Marker file a run dir gets when SIGINT/SIGTERM/SIGHUP ends the toolkit
/// before the run wrote its results.
pub const INTERRUPTED: &str = "INTERRUPTED";

/// Records the run dir the signal handler marks.
pub fn set_run_dir(dir: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(c) = std::ffi::CString::new(dir.join(INTERRUPTED).as_os_str().as_bytes()) {
        MARK.store(c.into_raw(), std::sync::atomic::Ordering::SeqCst);
    }
}

/// The run finished (results written): a later signal marks nothing.
pub fn clear_run_dir() {
    MARK.store(std::ptr::null_mut(), std::sync::atomic::Ordering::SeqCst);
}

extern "C" fn on_fatal_signal(sig: libc::c_int) {
    const MSG: &[u8] = b"interrupted by a signal before the run finished; results are incomplete\n";
    let p = MARK.load(std::sync::atomic::Ordering::SeqCst);
    // SAFETY: only async-signal-safe calls (open, write, close, signal,
    // raise) on a NUL-terminated path that is never freed.
    unsafe {
        if !p.is_null() {
            let fd = libc::open(p, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, 0o644);
            if fd >= 0 {
                libc::write(fd, MSG.as_ptr() as *const libc::c_void, MSG.len());
                libc::close(fd);
            }
        }
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// SIGINT, SIGTERM and SIGHUP mark the current run dir, then end the
/// process as the signal would (exit status: killed by that signal); the
/// children die with it ([`die_with_parent`]).
pub fn mark_runs_on_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: installs a handler that only makes async-signal-safe calls.
        unsafe {
            libc::signal(sig, on_fatal_signal as *const () as libc::sighandler_t);
        }
    }
}
