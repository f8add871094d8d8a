//! write/eio: device write errors reach the right place. On a private
//! configfs null_blk copy of the slow filesystem (see `eio.rs`), the
//! sectors of two pages of a file are marked bad: an O_SYNC AIO write to one
//! gives -EIO in its event; a plain buffered AIO write to the other
//! succeeds (it only dirties the page cache) and the AIO fsync after it
//! gives -EIO. Writes to good blocks keep working.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use super::eio::EioDev;
use super::write_data::{pwrite_pattern, submit_one};
use super::{create_pattern_file, Ctx, TestResult, REAP_TIMEOUT};
use crate::aio::{describe_res, Op, Ring};
use crate::sys;
use crate::{ensure, ensure_str};

/// Marks the device sectors of file bytes `[off, off+4096)` bad.
fn mark_bad(d: &EioDev, f: &File, off: u64) -> Result<Vec<(u64, u64)>, String> {
    let bs = sys::figetbsz(f).map_err(|e| format!("FIGETBSZ: {e}"))? as u64;
    let mut out = Vec::new();
    for lblk in (off / bs)..((off + 4096) / bs) {
        let phys = sys::fibmap(f, lblk as u32).map_err(|e| format!("FIBMAP {lblk}: {e}"))?;
        ensure_str!(phys != 0, "FIBMAP: logical block {lblk} is not mapped");
        let first = phys as u64 * bs / 512;
        let last = first + bs / 512 - 1;
        d.bad(first, last)?;
        out.push((first, last));
    }
    Ok(out)
}

pub fn eio(ctx: &Ctx) -> TestResult {
    const OLD: u64 = 0x3E10;
    const NEW: u64 = 0x3E11;
    const SYNC_BAD: u64 = 64 * 1024;
    const PLAIN_BAD: u64 = 128 * 1024;
    let (d, fstype, _) = EioDev::copy_of_test_fs(ctx)?;
    let result = (|| -> TestResult {
        let path = d.mnt().join("weio-data");
        let f = create_pattern_file(&path, OLD, 256 * 1024)?;
        f.sync_all().map_err(|e| format!("fsync: {e}"))?;
        let b1 = mark_bad(&d, &f, SYNC_BAD)?;
        let b2 = mark_bad(&d, &f, PLAIN_BAD)?;
        let sync = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_SYNC)
            .open(&path)
            .map_err(|e| format!("open O_SYNC: {e}"))?;
        let mut ring = Ring::new(8)?;

        ctx.step("O_SYNC write to a good page");
        let res = submit_one(&mut ring, pwrite_pattern(sync.as_raw_fd(), NEW, 0, 4096))?
            .event
            .res;
        ensure!(
            res == 4096,
            "O_SYNC write to good blocks: res {res} ({})",
            describe_res(res)
        );

        ctx.step("O_SYNC write to the bad page");
        let res = submit_one(
            &mut ring,
            pwrite_pattern(sync.as_raw_fd(), NEW, SYNC_BAD, 4096),
        )?
        .event
        .res;
        ensure!(
            res == -(libc::EIO as i64),
            "O_SYNC write of the page at {SYNC_BAD} on bad sectors {b1:?}: res {res} ({}), expected -EIO",
            describe_res(res)
        );

        ctx.step("plain write to the other bad page, then fsync");
        let fd = f.as_raw_fd();
        let res = submit_one(&mut ring, pwrite_pattern(fd, NEW, PLAIN_BAD, 4096))?
            .event
            .res;
        ensure!(
            res == 4096,
            "buffered write of the page at {PLAIN_BAD} (bad sectors {b2:?}): res {res} ({}), expected 4096 (only the page cache is written)",
            describe_res(res)
        );
        let fs_res = submit_one(&mut ring, Op::fsync(fd))?.event.res;
        ensure!(
            fs_res == -(libc::EIO as i64),
            "AIO fsync after a buffered write to bad sectors {b2:?}: res {fs_res} ({}), expected -EIO",
            describe_res(fs_res)
        );

        ctx.step("good blocks still writable");
        // A fresh fd: `sync` has not seen the writeback error of the plain
        // write yet (errseq), so its next sync would rightly report -EIO.
        let fresh = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_SYNC)
            .open(&path)
            .map_err(|e| format!("open O_SYNC: {e}"))?;
        let res = submit_one(
            &mut ring,
            pwrite_pattern(fresh.as_raw_fd(), NEW, 8192, 4096),
        )?
        .event
        .res;
        ensure!(
            res == 4096,
            "O_SYNC write to good blocks after the errors: res {res} ({})",
            describe_res(res)
        );
        ring.finish(REAP_TIMEOUT)?;
        println!(
            "{fstype}: O_SYNC write to bad sectors -> -EIO; buffered write -> 4096, fsync -> {}",
            describe_res(fs_res)
        );
        Ok(())
    })();
    drop(d);
    result
}
