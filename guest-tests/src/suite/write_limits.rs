//! write/* at the limits: RLIMIT_FSIZE, the filesystem's maximum file
//! offset (s_maxbytes) and a full filesystem (ENOSPC). A write crossing the
//! limit is short and ends exactly at it; a write at or past it fails in the
//! event (-EFBIG / -ENOSPC).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::write_data::{pwrite_pattern, require_guest, submit_one, Model};
use super::{create_pattern_file, file_len, pread_full, Ctx, Stop, TestResult, REAP_TIMEOUT};
use crate::aio::{describe_res, Op, Ring};
use crate::pattern;
use crate::sys;
use crate::{ensure, ensure_str};

fn expect_err(res: i64, errno: i32, what: &str) -> TestResult {
    ensure!(
        res == -(errno as i64),
        "{what}: res {res} ({}), expected -{}",
        describe_res(res),
        sys::errno_name(errno)
    );
    Ok(())
}

/// RLIMIT_FSIZE (SIGXFSZ ignored) on a file whose tail page is cold: the
/// write crossing the limit starts in that cold page and is short, ending at
/// the limit; writes at and after the limit (and an O_APPEND at EOF = limit)
/// give -EFBIG. The limit is restored before the content checks (the test
/// runs in its own process anyway).
pub fn rlimit_fsize(ctx: &Ctx) -> TestResult {
    const OLD: u64 = 0xF512;
    const NEW: u64 = 0xF513;
    const LIMIT: u64 = (1 << 20) + 1000;
    let path = ctx.path("data");
    let f = create_pattern_file(&path, OLD, LIMIT - 50)?;
    ctx.make_cold(&f)?;
    let fd = f.as_raw_fd();
    let app = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|e| format!("open O_APPEND: {e}"))?;
    let mut ring = Ring::new(8)?;
    let (soft, hard) =
        sys::getrlimit(libc::RLIMIT_FSIZE).map_err(|e| format!("getrlimit(FSIZE): {e}"))?;
    sys::ignore_signal(libc::SIGXFSZ, true).map_err(|e| format!("ignore SIGXFSZ: {e}"))?;
    sys::setrlimit(libc::RLIMIT_FSIZE, LIMIT, hard)
        .map_err(|e| format!("setrlimit(FSIZE, {LIMIT}): {e}"))?;
    let results = (|| -> Result<Vec<i64>, String> {
        let ops = [
            pwrite_pattern(fd, NEW, LIMIT - 300, 1000),
            pwrite_pattern(fd, NEW, LIMIT, 10),
            pwrite_pattern(fd, NEW, LIMIT + 5000, 10),
            Op::pwrite(app.as_raw_fd(), 0, vec![7u8; 10]),
            // a write entirely below the limit still works
            pwrite_pattern(fd, NEW, 4000, 200),
        ];
        let mut out = Vec::new();
        for op in ops {
            out.push(submit_one(&mut ring, op)?.event.res);
        }
        Ok(out)
    })();
    let restored = sys::setrlimit(libc::RLIMIT_FSIZE, soft, hard)
        .map_err(|e| format!("restore RLIMIT_FSIZE: {e}"));
    sys::ignore_signal(libc::SIGXFSZ, false).map_err(|e| format!("restore SIGXFSZ: {e}"))?;
    restored?;
    let r = results?;
    ensure!(
        r[0] == 300,
        "write of 1000 bytes at limit-300 ({}): res {} ({}), expected a short write of 300 ending at the limit",
        LIMIT - 300,
        r[0],
        describe_res(r[0])
    );
    expect_err(r[1], libc::EFBIG, "write at the limit")?;
    expect_err(r[2], libc::EFBIG, "write past the limit")?;
    expect_err(r[3], libc::EFBIG, "O_APPEND write at EOF = limit")?;
    ensure!(r[4] == 200, "write below the limit: res {}", r[4]);
    ring.finish(REAP_TIMEOUT)?;
    let mut m = Model::pattern(OLD, (LIMIT - 50) as usize);
    m.put(NEW, LIMIT - 300, 300);
    m.put(NEW, 4000, 200);
    m.check(&f, &[NEW, OLD], "after the writes")?;
    ctx.drop_caches()?;
    m.check(&f, &[NEW, OLD], "after drop_caches")?;
    Ok(())
}

/// ext2's s_maxbytes (fs/ext2/super.c ext2_max_size; ext4's
/// ext4_max_bitmap_size for block-mapped files without huge_file is the same
/// formula): the largest file such that data + indirect blocks fit in the
/// 32-bit i_blocks (in 512-byte units), or what the block tree addresses.
pub(super) fn ext2_max_size(bits: u32) -> u64 {
    const NDIR: u64 = 12;
    let ppb: u64 = 1 << (bits - 2);
    let mut upper: u64 = ((1u64 << 32) - 1) >> (bits - 9);
    let mut res: u64 = NDIR + ppb + ppb * ppb + ppb * ppb * ppb;
    let meta: u64 = 1 + (1 + ppb) + (1 + ppb + ppb * ppb);
    if res + meta > upper {
        res = upper;
        upper -= NDIR;
        let mut meta = 1;
        upper -= ppb;
        if upper < ppb * ppb {
            meta += 1 + upper.div_ceil(ppb);
            res -= meta;
        } else {
            meta += 1 + ppb;
            upper -= ppb * ppb;
            meta += 1 + upper.div_ceil(ppb) + upper.div_ceil(ppb * ppb);
            res -= meta;
        }
    }
    (res << bits).min(i64::MAX as u64)
}

/// The maximum file size the filesystem accepts, found with synchronous
/// 1-byte pwrites (binary search: a write at `o` works iff o < s_maxbytes).
fn probe_maxbytes(f: &File) -> Result<u64, String> {
    let (mut lo, mut hi) = (0u64, 1u64 << 62); // lo works, hi fails
    let at = |o: u64| -> Result<bool, String> {
        let r = f.write_at(&[1], o);
        f.set_len(0).map_err(|e| format!("ftruncate: {e}"))?;
        match r {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EFBIG) => Ok(false),
            Err(e) => Err(format!("pwrite(1 byte at {o}): {e}")),
        }
    };
    ensure_str!(!at(hi)?, "a 1-byte write at {hi} succeeded");
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if at(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(hi)
}

/// The filesystem's maximum file offset: a write ending at it is full, one
/// crossing it is short (ends at the max), one at or past it gives -EFBIG.
/// The max comes from the on-disk block size (ext2_max_size) and is checked
/// against the synchronous write path first.
pub fn maxbytes(ctx: &Ctx) -> TestResult {
    const NEW: u64 = 0x3A4;
    let path = ctx.path("sparse");
    let f = super::open_rw(&path)?;
    let bs = sys::figetbsz(&f).map_err(|e| format!("FIGETBSZ: {e}"))?;
    ensure!(bs.is_power_of_two() && bs >= 1024, "odd block size {bs}");
    let bits = bs.trailing_zeros();
    let computed = ext2_max_size(bits);
    let probed = probe_maxbytes(&f)?;
    println!(
        "block size {bs}: s_maxbytes computed {computed} ({:.1} GiB), synchronous pwrite probe {probed}",
        computed as f64 / (1u64 << 30) as f64
    );
    ensure!(
        probed == computed,
        "synchronous writes stop at {probed}, but ext2_max_size({bits}) = {computed}"
    );
    let max = computed;
    let fd = f.as_raw_fd();
    let mut ring = Ring::new(8)?;
    let cases: [(&str, u64, usize, i64); 4] = [
        ("ending exactly at the max", max - 1000, 500, 500),
        ("crossing the max", max - 100, 200, 100),
        ("at the max", max, 10, -(libc::EFBIG as i64)),
        ("past the max", max + 4096, 10, -(libc::EFBIG as i64)),
    ];
    for (i, (what, off, len, want)) in cases.iter().enumerate() {
        let c = submit_one(
            &mut ring,
            pwrite_pattern(fd, NEW, *off, *len).with_data(i as u64),
        )?;
        ensure!(
            c.event.res == *want,
            "AIO write {what} ({len} bytes at {off}): res {} ({}), expected {} ({})",
            c.event.res,
            describe_res(c.event.res),
            want,
            describe_res(*want)
        );
    }
    ring.finish(REAP_TIMEOUT)?;
    let len = file_len(&f)?;
    ensure!(
        len == max,
        "file size {len} after the writes, expected the max {max}"
    );
    let tail = pread_full(&f, max - 1000, 1000)?;
    let mut want = vec![0u8; 1000];
    pattern::fill(&mut want[..500], NEW, max - 1000);
    pattern::fill(&mut want[900..], NEW, max - 100);
    pattern::compare(&tail, &want, max - 1000, &[NEW])
        .map_err(|e| format!("the last 1000 bytes below the max: {e}"))?;
    f.set_len(0).map_err(|e| format!("ftruncate: {e}"))?;
    Ok(())
}

/// Label of the tiny filesystem the host builds for `fs` (mke2fs -L).
pub fn tiny_label(fs: &str) -> String {
    format!("bufaio-tiny-{fs}")
}

/// The ext2 volume label in a superblock (`s_volume_name`, 16 bytes at
/// offset 120 of the superblock), if the magic matches.
pub fn sb_label(sb: &[u8]) -> Option<String> {
    if sb.len() < 136 || sb[56..58] != [0x53, 0xEF] {
        return None;
    }
    let name = &sb[120..136];
    let end = name.iter().position(|&b| b == 0).unwrap_or(16);
    Some(String::from_utf8_lossy(&name[..end]).into_owned())
}

/// The virtio disk (`/dev/vdX`) whose ext2 label is `label`.
pub fn find_disk_by_label(label: &str) -> Result<Option<PathBuf>, String> {
    let Ok(rd) = std::fs::read_dir("/sys/block") else {
        return Ok(None);
    };
    let mut names: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("vd"))
        .collect();
    names.sort();
    for n in names {
        let dev = Path::new("/dev").join(&n);
        let Ok(f) = File::open(&dev) else { continue };
        let mut sb = [0u8; 1024];
        if f.read_exact_at(&mut sb, 1024).is_err() {
            continue;
        }
        if sb_label(&sb).as_deref() == Some(label) {
            return Ok(Some(dev));
        }
    }
    Ok(None)
}

/// The tiny filesystem mounted for one test; unmounted on drop.
struct TinyFs {
    mnt: PathBuf,
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        if let Err(e) = sys::umount(&self.mnt) {
            println!("warning: umount {}: {e}", self.mnt.display());
        }
    }
}

/// A full filesystem (the host's fresh 2-4 MiB image for this fs type,
/// found by label): writes are full until the space runs out; after freeing
/// a few blocks a write is short and ends on a block boundary, the next one
/// gives -ENOSPC (also past EOF), and an overwrite inside the file still
/// works. The data written is intact; the file is removed afterwards.
pub fn enospc(ctx: &Ctx) -> TestResult {
    const NEW: u64 = 0xE05;
    const CHUNK: usize = 64 * 1024 + 1000;
    require_guest(ctx, "mounts the tiny test filesystem")?;
    let fs = ctx
        .fs
        .clone()
        .ok_or("per-filesystem test without a filesystem")?;
    let label = tiny_label(&fs);
    let Some(dev) = find_disk_by_label(&label)? else {
        return Err(Stop::Skip(format!(
            "no disk labelled {label} (the host adds one per run to `cargo xtask run`)"
        )));
    };
    let mnt = PathBuf::from(format!("/mnt/tiny-{fs}"));
    std::fs::create_dir_all(&mnt).map_err(|e| format!("mkdir {}: {e}", mnt.display()))?;
    let devs = dev.to_string_lossy().into_owned();
    let fstype = if fs == "ext3" { "ext3" } else { "ext2" };
    sys::mount(&devs, &mnt, fstype, 0)
        .map_err(|e| format!("mount {devs} on {} ({fstype}): {e}", mnt.display()))?;
    let tiny = TinyFs { mnt: mnt.clone() };
    let path = mnt.join("enospc-data");
    let _ = std::fs::remove_file(&path);
    sys::sync();
    let f = super::open_rw(&path)?;
    let (bsize, bfree, blocks) = sys::fstatvfs(&f).map_err(|e| format!("fstatvfs: {e}"))?;
    println!("{devs} ({label}, {fstype}): {blocks} blocks of {bsize}, {bfree} free");
    let fd = f.as_raw_fd();
    let mut ring = Ring::new(8)?;
    let mut m = Model { bytes: Vec::new() };

    ctx.step("fill");
    let mut full = 0;
    let first_fail = loop {
        ensure!(
            full < 1000,
            "wrote {full} chunks and the filesystem is not full"
        );
        let off = m.len();
        let res = submit_one(&mut ring, pwrite_pattern(fd, NEW, off, CHUNK))?
            .event
            .res;
        if res == CHUNK as i64 {
            m.put(NEW, off, CHUNK);
            full += 1;
            continue;
        }
        if res > 0 {
            m.put(NEW, off, res as usize);
        }
        break res;
    };
    ensure!(
        full > 0,
        "the first write already failed: {}",
        describe_res(first_fail)
    );
    ensure!(
        first_fail > 0 || first_fail == -(libc::ENOSPC as i64),
        "the write that filled the filesystem: res {first_fail} ({}), expected a short write or -ENOSPC",
        describe_res(first_fail)
    );
    m.check(&f, &[NEW], "after filling")?;
    println!(
        "{full} full writes of {CHUNK}, then {} at {} bytes",
        describe_res(first_fail),
        m.len()
    );

    ctx.step("free a few blocks, then the boundary");
    let cut = (m.len().saturating_sub(32 * 1024)) & !4095;
    f.set_len(cut)
        .map_err(|e| format!("ftruncate({cut}): {e}"))?;
    m.bytes.truncate(cut as usize);
    f.sync_all().map_err(|e| format!("fsync: {e}"))?;
    sys::sync();
    let res = submit_one(&mut ring, pwrite_pattern(fd, NEW, cut, CHUNK))?
        .event
        .res;
    ensure!(
        res > 0 && res < CHUNK as i64,
        "write of {CHUNK} at {cut} after freeing ~32 KiB: res {res} ({}), expected a short write",
        describe_res(res)
    );
    let end = cut + res as u64;
    ensure!(
        end.is_multiple_of(bsize),
        "the short write ends at {end}, not on a block boundary ({bsize})"
    );
    m.put(NEW, cut, res as usize);
    let res = submit_one(&mut ring, pwrite_pattern(fd, NEW, end, CHUNK))?
        .event
        .res;
    expect_err(res, libc::ENOSPC, "write at EOF of a full filesystem")?;
    let res = submit_one(&mut ring, pwrite_pattern(fd, NEW, end + (1 << 20), 100))?
        .event
        .res;
    expect_err(
        res,
        libc::ENOSPC,
        "write past EOF (into a hole) of a full filesystem",
    )?;
    let res = submit_one(&mut ring, pwrite_pattern(fd, NEW + 1, 5000, 100))?
        .event
        .res;
    ensure!(
        res == 100,
        "overwrite inside the file on a full filesystem: res {res} ({})",
        describe_res(res)
    );
    m.put(NEW + 1, 5000, 100);
    ring.finish(REAP_TIMEOUT)?;
    m.check(&f, &[NEW, NEW + 1], "at the end")?;
    println!(
        "boundary: short write of {} bytes ending at {end}",
        end - cut
    );
    f.sync_all().map_err(|e| format!("fsync: {e}"))?;
    drop(f);
    std::fs::remove_file(&path).map_err(|e| format!("rm {}: {e}", path.display()))?;
    drop(tiny);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext2_max_size_matches_the_kernel() {
        // 1 KiB blocks: the block tree limits (12 + 256 + 256^2 + 256^3 blocks)
        assert_eq!(ext2_max_size(10), 16_843_020 << 10);
        // 4 KiB blocks: i_blocks limits (worked through fs/ext2/super.c)
        assert_eq!(ext2_max_size(12), 536_346_110u64 << 12);
        // 2 KiB blocks
        let b = ext2_max_size(11);
        assert!(b > ext2_max_size(10) && b < ext2_max_size(12));
    }

    #[test]
    fn superblock_label() {
        let mut sb = vec![0u8; 1024];
        assert_eq!(sb_label(&sb), None);
        sb[56] = 0x53;
        sb[57] = 0xEF;
        sb[120..136].copy_from_slice(b"bufaio-tiny-ext3");
        assert_eq!(sb_label(&sb).as_deref(), Some("bufaio-tiny-ext3"));
        sb[120..136].fill(0);
        sb[120..124].copy_from_slice(b"abcd");
        assert_eq!(sb_label(&sb).as_deref(), Some("abcd"));
        assert_eq!(tiny_label("ext2"), "bufaio-tiny-ext2");
        assert!(tiny_label("ext3").len() <= 16);
    }
}
