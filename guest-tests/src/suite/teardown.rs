//! teardown/*: a process that exits or is SIGKILLed with cold reads in
//! flight goes away, its AIO context is released (`/proc/sys/fs/aio-nr`
//! back to baseline), and afterwards the filesystem can be unmounted.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{create_pattern_file, Ctx, Stop, TestResult};
use crate::aio::{Op, Ring};
use crate::ensure;
use crate::sys::{self, WaitStatus};

const AIO_NR: &str = "/proc/sys/fs/aio-nr";

fn aio_nr() -> Result<u64, String> {
    std::fs::read_to_string(AIO_NR)
        .map_err(|e| format!("read {AIO_NR}: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("parse {AIO_NR}: {e}"))
}

/// The forked child: submit cold reads, tell the parent, then exit at once
/// (`kill == false`) or wait to be SIGKILLed. Never returns.
fn child(fd: i32, mut tell: File, kill: bool) -> ! {
    let code = (|| -> Result<(), String> {
        let mut ring = Ring::new(64)?;
        let ops = (0..48u64)
            .map(|i| Op::pread(fd, i * 128 * 1024 + 1, 100_000).with_data(i))
            .collect();
        ring.submit_all(ops)?;
        tell.write_all(b"s").map_err(|e| format!("pipe: {e}"))?;
        if kill {
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        // Leave without io_destroy: exit_aio must clean up.
        std::mem::forget(ring);
        Ok(())
    })();
    sys::exit_now(if code.is_ok() { 0 } else { 3 })
}

fn inflight_child(ctx: &Ctx, kill: bool) -> TestResult {
    const SEED: u64 = 0xE817;
    let f = create_pattern_file(&ctx.path("data"), SEED, 48 * 128 * 1024)?;
    let baseline = aio_nr()?;
    for round in 0..2 {
        ctx.step(&format!("round {round}"));
        ctx.make_cold(&f)?;
        let (rd, wr) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
        let pid = sys::fork().map_err(|e| format!("fork: {e}"))?;
        if pid == 0 {
            drop(rd);
            child(f.as_raw_fd(), File::from(wr), kill);
        }
        drop(wr);
        let mut rd = File::from(rd);
        let ready = sys::poll_readable(&rd, Duration::from_secs(30))
            .map_err(|e| format!("poll pipe: {e}"))?;
        let mut b = [0u8; 1];
        let got = if ready {
            rd.read(&mut b).unwrap_or(0)
        } else {
            0
        };
        let t0 = Instant::now();
        if kill {
            let _ = sys::kill(pid, libc::SIGKILL);
        }
        // Wait for the child (bounded; the runner's timeout is the backstop).
        let status = wait_child(pid, t0 + Duration::from_secs(30))?;
        let exit_took = t0.elapsed();
        ensure!(
            got == 1,
            "the child did not report its io_submit (status {status:?})"
        );
        let Some(ws) = status else {
            return Err(format!(
                "the child with reads in flight did not {} within 30 s",
                if kill { "die of SIGKILL" } else { "exit" }
            )
            .into());
        };
        let want = if kill {
            WaitStatus::Signaled {
                signal: libc::SIGKILL,
                core: false,
            }
        } else {
            WaitStatus::Exited(0)
        };
        ensure!(ws == want, "child ended with {ws:?}, expected {want:?}");
        // aio-nr drops when the context is killed; allow a little slack.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut nr = aio_nr()?;
        while nr != baseline && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            nr = aio_nr()?;
        }
        println!(
            "round {round}: child {} in {} ms; aio-nr {nr} (baseline {baseline})",
            if kill { "killed" } else { "exited" },
            exit_took.as_millis()
        );
        if nr != baseline {
            let msg = format!("aio-nr is {nr} 5 s after the child went away, baseline {baseline}");
            if ctx.guest {
                return Err(msg.into());
            }
            // On a shared host other processes use AIO too.
            println!("note (host mode, not failing): {msg}");
        }
    }
    Ok(())
}

/// A child exits (without io_destroy) right after submitting cold reads.
pub fn exit_inflight(ctx: &Ctx) -> TestResult {
    inflight_child(ctx, false)
}

/// A child is SIGKILLed right after submitting cold reads.
pub fn sigkill_inflight(ctx: &Ctx) -> TestResult {
    inflight_child(ctx, true)
}

/// (source, fstype) of the mount at `dir`, from /proc/self/mounts.
pub(super) fn mount_of(dir: &Path) -> Result<(String, String), String> {
    let m = std::fs::read_to_string("/proc/self/mounts")
        .map_err(|e| format!("read /proc/self/mounts: {e}"))?;
    let d = dir.to_string_lossy();
    m.lines()
        .rev()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && f[1] == d).then(|| (f[0].to_string(), f[2].to_string()))
        })
        .next()
        .ok_or_else(|| format!("{d} is not a mount point"))
}

/// After the suite's in-flight tests on this filesystem: it unmounts (no
/// leaked request pins it) and is mounted again for the tests after.
pub fn umount_remount(ctx: &Ctx) -> TestResult {
    if !(ctx.guest && ctx.root) {
        return Err(Stop::Skip(
            "unmounts the test filesystem: guest only".into(),
        ));
    }
    let mnt = ctx
        .dir
        .parent()
        .ok_or("scratch directory has no parent")?
        .to_path_buf();
    let (src, fstype) = mount_of(&mnt)?;
    sys::sync();
    let t0 = Instant::now();
    let r = sys::umount(&mnt);
    let took = t0.elapsed();
    if let Err(e) = r {
        return Err(format!(
            "umount {} ({src}) failed: {e} — something (a leaked AIO request?) still holds it",
            mnt.display()
        )
        .into());
    }
    sys::mount(&src, &mnt, &fstype, 0)
        .map_err(|e| format!("remount {src} on {} as {fstype}: {e}", mnt.display()))?;
    println!(
        "umount {} ({src}, {fstype}) took {} ms; mounted again",
        mnt.display(),
        took.as_millis()
    );
    // The runner removes the scratch directory afterwards: recreate it.
    std::fs::create_dir_all(&ctx.dir).map_err(|e| format!("mkdir {}: {e}", ctx.dir.display()))?;
    Ok(())
}

/// Waits for child `pid` until `deadline`; past it, SIGKILLs the child and
/// returns None (the caller reports the missing status).
pub(super) fn wait_child(
    pid: libc::pid_t,
    deadline: Instant,
) -> Result<Option<sys::WaitStatus>, String> {
    loop {
        if let Some((_, ws)) = sys::waitpid(pid, true).map_err(|e| format!("waitpid: {e}"))? {
            return Ok(Some(ws));
        }
        if Instant::now() >= deadline {
            let _ = sys::kill(pid, libc::SIGKILL);
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
