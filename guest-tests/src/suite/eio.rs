//! read/eio: an I/O error from the device on a cold read.
//!
//! Injection: a private null_blk device created through configfs
//! (`/sys/kernel/config/nullb/eio-<label>`, memory-backed, 1 ms per IO)
//! receives a raw copy of the test's slow-device filesystem and is mounted
//! on `/mnt/eio-<label>`. The test writes a file there, finds the physical
//! blocks of one page with FIBMAP and marks their sectors bad through the
//! device's `badblocks` attribute: every request touching them then fails
//! with BLK_STS_IOERR. Only configfs-created null_blk devices have
//! `badblocks`, hence the private device.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{create_pattern_file, Ctx, Stop, TestResult, REAP_TIMEOUT};
use crate::aio::{describe_res, Op, Ring};
use crate::ensure;
use crate::pattern;
use crate::sys;

const CONFIGFS: &str = "/sys/kernel/config";

fn write_attr(dir: &Path, attr: &str, value: &str) -> Result<(), String> {
    let p = dir.join(attr);
    std::fs::write(&p, value).map_err(|e| format!("write {value:?} to {}: {e}", p.display()))
}

/// Size in bytes of the ext2/ext3 filesystem on `dev`, from its superblock
/// (s_blocks_count at byte 1028, s_log_block_size at 1048).
pub(crate) fn ext2_fs_size(dev: &str) -> Result<u64, String> {
    use std::os::unix::fs::FileExt;
    let f = File::open(dev).map_err(|e| format!("open {dev}: {e}"))?;
    let mut sb = [0u8; 1024];
    f.read_exact_at(&mut sb, 1024)
        .map_err(|e| format!("read the superblock of {dev}: {e}"))?;
    let le32 = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]) as u64;
    ensure_magic(&sb, dev)?;
    Ok(le32(4) << (10 + le32(24)))
}

fn ensure_magic(sb: &[u8], dev: &str) -> Result<(), String> {
    if sb[56..58] == [0x53, 0xEF] {
        Ok(())
    } else {
        Err(format!("{dev}: no ext2 superblock magic"))
    }
}

/// The configfs null_blk device and its mount; torn down on drop.
pub(super) struct EioDev {
    cfg: PathBuf,
    dev: String,
    mnt: PathBuf,
    mounted: bool,
}

impl EioDev {
    /// A memory-backed configfs null_blk device `/dev/<name>` of `size_mib`
    /// MiB whose every IO completes `completion_nsec` after submission
    /// (timer completions). SKIPs when configfs or null_blk's configfs
    /// interface is missing.
    pub(super) fn create(name: &str, size_mib: u64, completion_nsec: u64) -> Result<EioDev, Stop> {
        let root = Path::new(CONFIGFS);
        if !root.join("nullb").exists() {
            let _ = std::fs::create_dir_all(root);
            if let Err(e) = sys::mount("configfs", root, "configfs", 0) {
                if e.raw_os_error() != Some(libc::EBUSY) {
                    return Err(Stop::Skip(format!(
                        "cannot mount configfs on {CONFIGFS}: {e} (CONFIG_CONFIGFS_FS?)"
                    )));
                }
            }
        }
        let nullb = root.join("nullb");
        if !nullb.exists() {
            return Err(Stop::Skip(format!(
                "{} does not exist: null_blk has no configfs interface here",
                nullb.display()
            )));
        }
        let cfg = nullb.join(name);
        if cfg.exists() {
            // left over from an earlier, interrupted run
            let _ = write_attr(&cfg, "power", "0");
            let _ = std::fs::remove_dir(&cfg);
        }
        std::fs::create_dir(&cfg).map_err(|e| format!("mkdir {}: {e}", cfg.display()))?;
        let d = EioDev {
            cfg,
            dev: format!("/dev/{name}"),
            mnt: PathBuf::from(format!("/mnt/{name}")),
            mounted: false,
        };
        for (attr, value) in [
            ("size", size_mib.to_string()),
            ("memory_backed", "1".to_string()),
            ("irqmode", "2".to_string()),
            ("completion_nsec", completion_nsec.to_string()),
            ("power", "1".to_string()),
        ] {
            write_attr(&d.cfg, attr, &value)?;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !Path::new(&d.dev).exists() {
            ensure!(
                Instant::now() < deadline,
                "{} did not appear after power=1",
                d.dev
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(d)
    }

    /// Marks sectors `[first, last]` bad.
    pub(super) fn bad(&self, first: u64, last: u64) -> Result<(), String> {
        write_attr(&self.cfg, "badblocks", &format!("+{first}-{last}"))
    }
}

impl Drop for EioDev {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = sys::umount(&self.mnt) {
                println!("warning: umount {}: {e}", self.mnt.display());
                return; // keep the device: something still uses it
            }
        }
        let _ = write_attr(&self.cfg, "power", "0");
        if let Err(e) = std::fs::remove_dir(&self.cfg) {
            println!("warning: rmdir {}: {e}", self.cfg.display());
        }
    }
}

impl EioDev {
    /// A configfs null_blk device holding a raw copy of the test's slow
    /// filesystem, mounted on `/mnt/eio-<label>`. Returns the device, the
    /// fs type and the bytes copied.
    pub(super) fn copy_of_test_fs(ctx: &Ctx) -> Result<(EioDev, String, u64), Stop> {
        ctx.require_drop_caches()?;
        let label = ctx.fs.clone().unwrap_or_else(|| "fs".into());
        let src = ctx.block_dev()?;
        ensure!(
            src.is_null_blk(),
            "{} is on {}, not on the slow device",
            ctx.dir.display(),
            src.name()
        );
        let mnt = ctx.dir.parent().ok_or("scratch directory has no parent")?;
        let (_, fstype) = super::teardown::mount_of(mnt)?;
        let src_dev = format!("/dev/{}", src.name());
        let fs_bytes = ext2_fs_size(&src_dev)?;

        ctx.step("configfs null_blk device");
        let mut d = EioDev::create(
            &format!("eio-{label}"),
            fs_bytes.div_ceil(1 << 20),
            1_000_000,
        )?;
        ctx.step("copy the filesystem and mount it");
        // sync + (ext3) journal checkpoint, so the raw copy is consistent
        ctx.drop_caches()?;
        let (copied, _) = crate::init::copy_nonzero(&src_dev, &d.dev, Some(fs_bytes))?;
        std::fs::create_dir_all(&d.mnt).map_err(|e| format!("mkdir {}: {e}", d.mnt.display()))?;
        sys::mount(&d.dev, &d.mnt, &fstype, 0)
            .map_err(|e| format!("mount {} on {} ({fstype}): {e}", d.dev, d.mnt.display()))?;
        d.mounted = true;
        Ok((d, fstype, copied))
    }

    /// Its configfs directory (`badblocks`, `power`, ...).
    pub(super) fn cfg(&self) -> &Path {
        &self.cfg
    }

    /// The device node, `/dev/<name>`.
    pub(super) fn dev(&self) -> &str {
        &self.dev
    }

    /// Requests of the device in flight (reads + writes), from
    /// `/sys/block/<name>/inflight`.
    pub(super) fn inflight(&self) -> Result<u64, String> {
        let name = self.dev.trim_start_matches("/dev/");
        let p = format!("/sys/block/{name}/inflight");
        let s = std::fs::read_to_string(&p).map_err(|e| format!("read {p}: {e}"))?;
        s.split_whitespace()
            .map(|x| x.parse::<u64>().map_err(|e| format!("{p}: {s:?}: {e}")))
            .sum()
    }

    /// Where the copy is mounted.
    pub(super) fn mnt(&self) -> &Path {
        &self.mnt
    }
}

/// res -EIO for a read of a bad page; good pages still read correctly
/// before and after; the partial-progress result of a read spanning good
/// and bad pages is reported (and must be -EIO or a correct short read that
/// stops at the bad page).
pub fn eio(ctx: &Ctx) -> TestResult {
    const SEED: u64 = 0xE10;
    const SIZE: u64 = 512 * 1024;
    const BAD: u64 = 256 * 1024; // one bad page at this file offset
    let (d, fstype, copied) = EioDev::copy_of_test_fs(ctx)?;
    let result = (|| -> TestResult {
        let path = d.mnt.join("eio-data");
        let f = create_pattern_file(&path, SEED, SIZE)?;
        f.sync_all().map_err(|e| format!("fsync: {e}"))?;
        let bs = sys::figetbsz(&f).map_err(|e| format!("FIGETBSZ: {e}"))? as u64;
        let mut bad_sectors = Vec::new();
        for lblk in (BAD / bs)..((BAD + 4096) / bs) {
            let phys = sys::fibmap(&f, lblk as u32).map_err(|e| format!("FIBMAP {lblk}: {e}"))?;
            ensure!(phys != 0, "FIBMAP: logical block {lblk} is not mapped");
            let first = phys as u64 * bs / 512;
            let last = first + bs / 512 - 1;
            d.bad(first, last)?;
            bad_sectors.push((first, last));
        }
        drop(f);
        ctx.drop_caches()?;
        let f = File::open(&path).map_err(|e| format!("open: {e}"))?;
        let fd = f.as_raw_fd();
        let mut ring = Ring::new(8)?;
        let mut one = |off: u64, len: usize, data: u64| -> Result<(i64, Vec<u8>), String> {
            ring.submit_all(vec![Op::pread(fd, off, len).with_data(data)])?;
            let c = ring.reap(1, REAP_TIMEOUT)?;
            let res = c[0].event.res;
            Ok((res, c[0].op()?.buf().to_vec()))
        };
        let check_good = |what: &str, off: u64, res: i64, buf: &[u8]| -> TestResult {
            ensure!(
                res == buf.len() as i64,
                "{what}: read of good blocks at {off}: res {res} ({}), expected {}",
                describe_res(res),
                buf.len()
            );
            pattern::verify(buf, SEED, off).map_err(|e| format!("{what}: {e}"))?;
            Ok(())
        };

        ctx.step("good blocks before the error");
        let (res, buf) = one(0, 64 * 1024, 1)?;
        check_good("before", 0, res, &buf)?;

        ctx.step("cold read of the bad page");
        let (res, _) = one(BAD, 4096, 2)?;
        ensure!(
            res == -(libc::EIO as i64),
            "read of the bad page at {BAD}: res {res} ({}), expected -EIO (bad sectors {bad_sectors:?})",
            describe_res(res)
        );

        ctx.step("read spanning good pages, the bad page, good pages");
        ctx.drop_caches()?;
        let span_off = BAD - 64 * 1024;
        let (span, buf) = one(span_off, 128 * 1024, 3)?;
        if span >= 0 {
            let n = span as usize;
            ensure!(
                n <= 64 * 1024,
                "read spanning the bad page returned {n} bytes: more than the good prefix (65536)"
            );
            pattern::verify(&buf[..n], SEED, span_off)
                .map_err(|e| format!("short read before the bad page: {e}"))?;
        } else {
            ensure!(
                span == -(libc::EIO as i64),
                "read spanning the bad page: res {span} ({}), expected -EIO or a short read",
                describe_res(span)
            );
        }

        ctx.step("the bad page again, then good blocks after the error");
        let (res, _) = one(BAD, 4096, 4)?;
        ensure!(
            res == -(libc::EIO as i64),
            "second read of the bad page: res {res} ({}), expected -EIO",
            describe_res(res)
        );
        let (res, buf) = one(BAD + 4096, 64 * 1024, 5)?;
        check_good("after", BAD + 4096, res, &buf)?;
        let (res, buf) = one(4096, 8192, 6)?;
        check_good("after", 4096, res, &buf)?;
        println!(
            "{fstype} (block size {bs}), {} MiB copied: bad page at {BAD} -> -EIO; 128 KiB read from {span_off} spanning it -> {} ({})",
            copied >> 20,
            span,
            describe_res(span)
        );
        ring.finish(REAP_TIMEOUT)?;
        Ok(())
    })();
    drop(d);
    result
}
