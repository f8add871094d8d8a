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
