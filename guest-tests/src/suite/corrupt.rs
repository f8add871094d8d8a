//! read/corrupt_indirect: a corrupted indirect block on an ext3 file
//! system. Since the series reads block-mapping metadata asynchronously
//! (`->prefetch_mapping()`), an indirect block can be read by someone else
//! than the lookup that follows it; the lookup must still validate it
//! (ext4_check_indirect_blockref()) and fail, rather than follow pointers
//! into the file system's own metadata.
//!
//! read/corrupt_double_indirect: the same for an intermediate pointer, in a
//! double-indirect block, which ext4_map_blocks()'s final check of the data
//! block number (check_block_validity()) does not cover.
//!
//! The tests corrupt their file system on purpose, so they run on one of its
//! own: the host's fresh 8 MiB ext3 scratch image with 1 KiB blocks
//! (`mke2fs -b 1024`, labelled `bufaio-scr-ext3`, found by label and
//! mounted on `/mnt/scratch-ext3` by the test), which nothing else uses and
//! which is not fsck'd after the run (xtask/src/rootfs.rs).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::write_data::{pwrite_pattern, require_guest, submit_one};
use super::write_limits::find_disk_by_label;
use super::{create_pattern_file, pread_full, Ctx, Stop, TestResult, REAP_TIMEOUT};
use crate::aio::{describe_res, AlignedBuf, Op, Ring, READ_POISON};
use crate::pattern;
use crate::sys;
use crate::{ensure, ensure_str};

/// Label of the scratch filesystem the host builds for `fs` (mke2fs -L; at
/// most 16 bytes).
pub fn scratch_label(fs: &str) -> String {
    format!("bufaio-scr-{fs}")
}

/// The scratch filesystem's block size (mke2fs -b 1024 on the host).
const BS: u64 = 1024;

/// Pointers per indirect block.
const PTRS: usize = (BS / 4) as usize;

/// The `i`-th little-endian u32 of `b` (a block pointer of an indirect block).
fn le32(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Where an inode lives, from an ext2/ext3 superblock (the 1024 bytes at
/// byte 1024 of the device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    block_size: u64,
    first_data_block: u64,
    inodes_per_group: u64,
    inode_size: u64,
    desc_size: u64,
    /// s_inodes_count: the superblock's first u32.
    inodes_count: u64,
    /// s_blocks_count (lo, and hi with INCOMPAT_64BIT).
    blocks_count: u64,
    blocks_per_group: u64,
}

impl Geometry {
    fn of(sb: &[u8]) -> Result<Geometry, String> {
        ensure_str!(
            sb.len() >= 1024 && sb[56..58] == [0x53, 0xEF],
            "no ext2 superblock magic"
        );
        let log = le32_at(sb, 24);
        ensure_str!(log <= 6, "s_log_block_size {log}");
        // s_rev_level 0: 128-byte inodes; else s_inode_size
        let inode_size = if le32_at(sb, 76) == 0 {
            128
        } else {
            u64::from(le16(sb, 88))
        };
        // INCOMPAT_64BIT: s_desc_size and s_blocks_count_hi, else 32-byte
        // group descriptors
        let is_64bit = le32_at(sb, 96) & 0x80 != 0;
        let desc_size = if is_64bit {
            u64::from(le16(sb, 254)).max(32)
        } else {
            32
        };
        let blocks_hi = if is_64bit {
            u64::from(le32_at(sb, 0x150))
        } else {
            0
        };
        let g = Geometry {
            block_size: 1024 << log,
            first_data_block: u64::from(le32_at(sb, 20)),
            inodes_per_group: u64::from(le32_at(sb, 40)),
            inode_size,
            desc_size,
            inodes_count: u64::from(le32_at(sb, 0)),
            blocks_count: blocks_hi << 32 | u64::from(le32_at(sb, 4)),
            blocks_per_group: u64::from(le32_at(sb, 32)),
        };
        ensure_str!(
            g.inodes_per_group > 0 && g.inode_size >= 128 && g.blocks_per_group > 0,
            "implausible superblock: {g:?}"
        );
        Ok(g)
    }

    /// Byte offset of inode `ino`'s group descriptor, and the index of the
    /// inode in its group's inode table.
    fn descriptor_of(&self, ino: u64) -> (u64, u64) {
        let group = (ino - 1) / self.inodes_per_group;
        (self.descriptor_at(group), (ino - 1) % self.inodes_per_group)
    }

    /// Byte offset of group `group`'s descriptor.
    fn descriptor_at(&self, group: u64) -> u64 {
        let gdt = (self.first_data_block + 1) * self.block_size;
        gdt + group * self.desc_size
    }

    /// Block `b`'s group and its bit in that group's block bitmap.
    fn bitmap_bit_of(&self, b: u64) -> (u64, u64) {
        let rel = b - self.first_data_block;
        (rel / self.blocks_per_group, rel % self.blocks_per_group)
    }

    /// Why ext4_sb_block_valid() refuses block `b` whatever the system zone
    /// holds (at or before s_first_data_block, or past the end), if it does.
    fn out_of_range(&self, b: u64) -> Option<String> {
        if b <= self.first_data_block {
            Some(format!(
                "at or before s_first_data_block {}",
                self.first_data_block
            ))
        } else if b >= self.blocks_count {
            Some(format!("not below s_blocks_count {}", self.blocks_count))
        } else {
            None
        }
    }
}

/// Whether bit `bit` of an ext2 bitmap is set (little-endian bit order).
fn bitmap_bit(bitmap: &[u8], bit: u64) -> Option<bool> {
    let byte = bitmap.get((bit / 8) as usize)?;
    Some(byte & (1 << (bit % 8)) != 0)
}

/// Whether block `b` is free in its group's block bitmap on the unmounted
/// device: `None` when the bitmap does not say (BLOCK_UNINIT).
fn block_is_free(dev: &str, g: &Geometry, b: u64) -> Result<Option<bool>, String> {
    let (group, bit) = g.bitmap_bit_of(b);
    let at = g.descriptor_at(group);
    let desc = raw_read(dev, at & !511, 512)?;
    let d = &desc[(at & 511) as usize..];
    // bg_flags: EXT4_BG_BLOCK_UNINIT (the bitmap is not written yet)
    if le16(d, 18) & 0x2 != 0 {
        return Ok(None);
    }
    let hi = if g.desc_size >= 64 {
        u64::from(le32_at(d, 32))
    } else {
        0
    };
    let bitmap_blk = hi << 32 | u64::from(le32_at(d, 0));
    ensure_str!(
        bitmap_blk > g.first_data_block && bitmap_blk < g.blocks_count,
        "group {group}'s block bitmap is at block {bitmap_blk}, outside the file system"
    );
    let bitmap = raw_read(dev, bitmap_blk * g.block_size, g.block_size as usize)?;
    let used = bitmap_bit(&bitmap, bit).ok_or_else(|| {
        format!(
            "bit {bit} is past group {group}'s {}-byte block bitmap",
            g.block_size
        )
    })?;
    Ok(Some(!used))
}

/// `i_block[12]` (the single indirect block) of inode `ino` as stored on the
/// unmounted device `dev`; see [`i_block_on_disk`].
fn indirect_block_on_disk(dev: &str, ino: u64, size: u64) -> Result<u32, String> {
    i_block_on_disk(dev, ino, size, 12)
}

/// `i_block[slot]` of inode `ino` as stored on the unmounted device `dev`,
/// read with O_DIRECT through the superblock, the group descriptor and the
/// inode table; also checks the inode is a regular file of `size` bytes.
fn i_block_on_disk(dev: &str, ino: u64, size: u64, slot: usize) -> Result<u32, String> {
    ensure_str!(slot < 15, "i_block[{slot}]: an inode has 15 block pointers");
    let sb = raw_read(dev, 1024, 1024)?;
    let g = Geometry::of(&sb).map_err(|e| format!("{dev}: {e}"))?;
    let (desc_at, index) = g.descriptor_of(ino);
    let desc = raw_read(dev, desc_at & !511, 512)?;
    let inode_table = u64::from(le32_at(&desc, (desc_at & 511) as usize + 8));
    let inode_at = inode_table * g.block_size + index * g.inode_size;
    let sector = raw_read(dev, inode_at & !511, 512)?;
    let inode = &sector[(inode_at & 511) as usize..];
    let (mode, i_size) = (le16(inode, 0), le32_at(inode, 4));
    ensure_str!(
        mode & 0xF000 == 0x8000 && u64::from(i_size) == size,
        "inode {ino} at byte {inode_at} of {dev} is not the {size}-byte regular file (mode {mode:#o}, size {i_size})"
    );
    Ok(le32_at(inode, 40 + slot * 4))
}

/// An indirect block whose pointers lie in the file system's own metadata:
/// the superblock (block 1 with 1 KiB blocks) and the group descriptor
/// table (block 2). ext4_check_indirect_blockref() rejects them (system
/// zone); a lookup that follows them unchecked reads the superblock as file
/// data and writes file data over it.
fn bad_pointers() -> Vec<u8> {
    (0..PTRS as u32)
        .flat_map(|i| (1 + i % 2).to_le_bytes())
        .collect()
}

/// Whether an AIO result is the error a corrupted mapping must give.
fn is_corruption_error(res: i64) -> bool {
    res == -(libc::EUCLEAN as i64) || res == -(libc::EIO as i64)
}

/// The scratch filesystem on `dev`, mounted on `mnt` on demand (with
/// `errors=continue`, so that the detected corruption neither remounts it
/// read-only nor panics); unmounted on drop.
struct Scratch {
    dev: String,
    mnt: PathBuf,
    mounted: bool,
}

impl Scratch {
    fn mount(&mut self) -> Result<(), String> {
        if self.mounted {
            return Ok(());
        }
        // Left mounted by an earlier, interrupted run in this boot?
        if super::teardown::mount_of(&self.mnt).is_ok() {
            sys::umount(&self.mnt)
                .map_err(|e| format!("umount a stale {}: {e}", self.mnt.display()))?;
        }
        sys::mount_data(&self.dev, &self.mnt, "ext3", 0, "errors=continue").map_err(|e| {
            format!(
                "mount {} on {} (ext3, errors=continue): {e}",
                self.dev,
                self.mnt.display()
            )
        })?;
        self.mounted = true;
        Ok(())
    }

    /// Unmounts: afterwards everything is on the medium (jbd2 checkpointed
    /// at unmount) and nothing of the filesystem is cached.
    fn umount(&mut self) -> Result<(), String> {
        if !self.mounted {
            return Ok(());
        }
        sys::sync();
        sys::umount(&self.mnt).map_err(|e| format!("umount {}: {e}", self.mnt.display()))?;
        self.mounted = false;
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = self.umount() {
            println!("warning: {e}");
        }
    }
}

/// Opens the raw device with O_DIRECT. Only while the filesystem is not
/// mounted: the device's page cache (where the filesystem keeps its
/// metadata buffers) is dropped when its last opener closes it, so every
/// mount starts cold and every raw access sees the medium.
fn raw_open(dev: &str) -> Result<File, String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(dev)
        .map_err(|e| format!("open {dev} O_DIRECT: {e}"))
}

fn raw_read(dev: &str, off: u64, len: usize) -> Result<Vec<u8>, String> {
    let f = raw_open(dev)?;
    let mut buf = AlignedBuf::new(len, 4096).map_err(|e| e.to_string())?;
    f.read_exact_at(&mut buf.as_mut_slice()[..len], off)
        .map_err(|e| format!("O_DIRECT read of {len} bytes of {dev} at {off}: {e}"))?;
    Ok(buf.as_slice()[..len].to_vec())
}

/// Writes `data` at `off` with O_DIRECT, flushes, and reads it back.
fn raw_write(dev: &str, off: u64, data: &[u8]) -> Result<(), String> {
    let f = raw_open(dev)?;
    let mut buf = AlignedBuf::new(data.len(), 4096).map_err(|e| e.to_string())?;
    buf.as_mut_slice()[..data.len()].copy_from_slice(data);
    f.write_all_at(&buf.as_slice()[..data.len()], off)
        .map_err(|e| {
            format!(
                "O_DIRECT write of {} bytes to {dev} at {off}: {e}",
                data.len()
            )
        })?;
    f.sync_all().map_err(|e| format!("fsync {dev}: {e}"))?;
    drop(f);
    let back = raw_read(dev, off, data.len())?;
    ensure_str!(
        back == data,
        "{dev} at {off} does not read back what was just written with O_DIRECT"
    );
    Ok(())
}

/// Filesystem blocks of the raw device (its first `size` bytes) whose first
/// 64 bytes are those of `data`.
fn blocks_starting_with(dev: &str, size: u64, data: &[u8]) -> Result<Vec<u64>, String> {
    const CHUNK: usize = 1 << 20;
    let sig = &data[..64.min(data.len())];
    let f = raw_open(dev)?;
    let mut buf = AlignedBuf::new(CHUNK, 4096).map_err(|e| e.to_string())?;
    let mut found = Vec::new();
    let mut off = 0u64;
    while off < size {
        let want = CHUNK.min((size - off) as usize);
        let b = &mut buf.as_mut_slice()[..want];
        f.read_exact_at(b, off)
            .map_err(|e| format!("O_DIRECT read of {dev} at {off}: {e}"))?;
        for (i, blk) in b.chunks(BS as usize).enumerate() {
            if blk.starts_with(sig) {
                found.push(off / BS + i as u64);
            }
        }
        off += want as u64;
    }
    Ok(found)
}

/// The host's scratch filesystem for `ctx`'s filesystem, not mounted yet,
/// and its label; SKIP unless ext3 in the guest with the scratch disk.
fn scratch_fs(ctx: &Ctx) -> Result<(Scratch, String), Stop> {
    let fs = ctx
        .fs
        .clone()
        .ok_or("per-filesystem test without a filesystem")?;
    if fs != "ext3" {
        return Err(Stop::Skip(format!(
            "ext3 only: the host builds a scratch filesystem for this test only for ext3, whose indirect blocks the ext4 driver maps (the test does not cover fs/ext2's own mapping code; {fs} skipped)"
        )));
    }
    require_guest(ctx, "corrupts the host's scratch filesystem")?;
    let label = scratch_label(&fs);
    let Some(dev) = find_disk_by_label(&label)? else {
        return Err(Stop::Skip(format!(
            "no disk labelled {label} (the host adds one per run to `cargo xtask run`)"
        )));
    };
    let dev = dev.to_string_lossy().into_owned();
    let mnt = PathBuf::from(format!("/mnt/scratch-{fs}"));
    std::fs::create_dir_all(&mnt).map_err(|e| format!("mkdir {}: {e}", mnt.display()))?;
    Ok((
        Scratch {
            dev,
            mnt,
            mounted: false,
        },
        label,
    ))
}

/// The second half of both corruption probes: a buffered AIO write of one
/// block of pattern `seed` at `write_blk` (its result), then the ring is
/// finished and a pread of `read_len` at `read_blk` (its result).
#[allow(clippy::too_many_arguments)]
fn write_then_pread(
    ctx: &Ctx,
    mut ring: Ring,
    f: &File,
    seed: u64,
    write_blk: u64,
    read_blk: u64,
    read_len: usize,
    step: &str,
) -> Result<(i64, std::io::Result<usize>), String> {
    ctx.step(step);
    let c = submit_one(
        &mut ring,
        pwrite_pattern(f.as_raw_fd(), seed, write_blk * BS, BS as usize),
    )?;
    let wres = c.event.res;
    ring.finish(REAP_TIMEOUT)?;
    ctx.step("pread");
    let mut b = vec![0u8; read_len];
    Ok((wres, f.read_at(&mut b, read_blk * BS)))
}

/// Writes a synced file of `blocks` blocks of pattern `seed` on the scratch
/// filesystem `label` and returns it with the FIBMAP of every block. SKIPs
/// unless the filesystem has 1 KiB blocks (`why` says what the test needs
/// them for); fails if a block is unmapped.
fn mapped_file(
    path: &Path,
    seed: u64,
    blocks: u64,
    label: &str,
    why: &str,
) -> Result<(File, Vec<u32>), Stop> {
    let f = create_pattern_file(path, seed, blocks * BS)?;
    f.sync_all().map_err(|e| format!("fsync: {e}"))?;
    let bs = sys::figetbsz(&f).map_err(|e| format!("FIGETBSZ: {e}"))? as u64;
    if bs != BS {
        return Err(Stop::Skip(format!(
            "{label} has {bs}-byte blocks; the test needs {BS} (mke2fs -b 1024) {why}"
        )));
    }
    let map: Vec<u32> = (0..blocks as u32)
        .map(|b| sys::fibmap(&f, b).map_err(|e| format!("FIBMAP {b}: {e}")))
        .collect::<Result<_, _>>()?;
    let holes: Vec<usize> = map
        .iter()
        .enumerate()
        .filter(|(_, &p)| p == 0)
        .map(|(i, _)| i)
        .collect();
    if !holes.is_empty() {
        return Err(Stop::Fail(format!(
            "FIBMAP: the file has unmapped blocks: {holes:?}"
        )));
    }
    Ok((f, map))
}

/// ext3 only (its scratch image is ext3; the test corrupts an ext3 file's
/// indirect block, which the ext4 driver's indirect mapping reads). A 20
/// KiB file on the scratch filesystem (1 KiB blocks: 12 direct, 8 through
/// the single indirect block), fsync, FIBMAP of every block; unmount (all
/// on the medium, nothing cached). The indirect block is the block right
/// before the data block D of logical block 12 (where ext3's own allocator
/// puts it) or else the one the inode's i_block[12] names on the medium
/// (the ext4 driver's allocator may put it elsewhere); either way verified
/// on the raw device (O_DIRECT): its pointers are exactly the FIBMAP of
/// logical blocks 12..19, the rest zero (SKIP otherwise).
/// It is saved and overwritten with pointers into the filesystem metadata
/// (into the superblock and group descriptors); mount (errors=continue): the
/// file's metadata is cold.
/// A buffered AIO read of 4 KiB at logical block 14 and a buffered AIO
/// write of 1 KiB at block 15 must both fail with -EUCLEAN (EFSCORRUPTED)
/// or -EIO; pread() of the read's range must fail too (the synchronous
/// path, as unpatched). Unmount; the written data must be nowhere on the
/// device; the indirect block is restored (O_DIRECT) and, mounted again,
/// the whole file reads back as first written.
pub fn corrupt_indirect(ctx: &Ctx) -> TestResult {
    const SEED: u64 = 0xC0B7;
    const NEW: u64 = 0xC0B8;
    const BLOCKS: u64 = 20;
    const FIRST_IND: u64 = 12;
    const READ_BLK: u64 = 14;
    const READ_LEN: usize = 4096;
    const WRITE_BLK: u64 = 15;
    let (mut sc, label) = scratch_fs(ctx)?;
    let (dev, mnt) = (sc.dev.clone(), sc.mnt.clone());
    sc.mount()?;
    let path = mnt.join("corrupt-data");

    ctx.step("write the file and map its blocks");
    let (f, map) = mapped_file(
        &path,
        SEED,
        BLOCKS,
        &label,
        "so that a 20 KiB file uses an indirect block",
    )?;
    let ino = {
        use std::os::unix::fs::MetadataExt;
        f.metadata().map_err(|e| format!("fstat: {e}"))?.ino()
    };
    drop(f);
    sc.umount()?;
    let fs_size = super::ext2_fs_size(&dev)?;

    ctx.step("locate the indirect block on the raw device");
    // The indirect block holds exactly the pointers of blocks 12..19.
    let expect: Vec<u32> = map[FIRST_IND as usize..]
        .iter()
        .copied()
        .chain(std::iter::repeat_n(0, PTRS - (BLOCKS - FIRST_IND) as usize))
        .collect();
    let holds_the_pointers = |blk: u64| -> Result<(bool, Vec<u8>), String> {
        let b = raw_read(&dev, blk * BS, BS as usize)?;
        let ptrs: Vec<u32> = (0..PTRS).map(|i| le32(&b, i)).collect();
        Ok((ptrs == expect, b))
    };
    // ext3's own allocator put the indirect block right before the data
    // block D of logical block 12; the ext4 driver's mballoc (which serves
    // ext3 in 6.12, with delayed allocation) may put it elsewhere, so the
    // inode's i_block[12] on the medium is asked when D-1 is not it.
    let d = map[FIRST_IND as usize];
    ensure!(d > 1, "logical block {FIRST_IND} maps to block {d}");
    let (before_d, b) = holds_the_pointers(u64::from(d - 1))?;
    let (ind, saved, how) = if before_d {
        (u64::from(d - 1), b, "D-1".to_string())
    } else {
        let from_inode = indirect_block_on_disk(&dev, ino, BLOCKS * BS).map_err(|e| {
            Stop::Skip(format!(
                "the layout differs from what the test expects: block {} (D-1) is not the indirect block of logical blocks {FIRST_IND}..={} and the inode could not be read: {e}",
                d - 1,
                BLOCKS - 1
            ))
        })?;
        let blk = u64::from(from_inode);
        let ok = blk > 0 && blk * BS < fs_size;
        let (holds, b) = if ok {
            holds_the_pointers(blk)?
        } else {
            (false, Vec::new())
        };
        if !holds {
            return Err(Stop::Skip(format!(
                "the layout differs from what the test expects: neither block {} (D-1) nor block {blk} (i_block[12] of inode {ino} on the medium) holds the pointers {:?} of logical blocks {FIRST_IND}..={}",
                d - 1,
                &expect[..(BLOCKS - FIRST_IND) as usize],
                BLOCKS - 1
            )));
        }
        (
            blk,
            b,
            format!("not D-1 ({}): i_block[12] of inode {ino}", d - 1),
        )
    };
    println!(
        "{dev} ({label}, {} KiB): file blocks {map:?}; the indirect block is block {ind} ({how}; pointers {:?})",
        fs_size >> 10,
        &expect[..(BLOCKS - FIRST_IND) as usize]
    );

    ctx.step("corrupt the indirect block");
    raw_write(&dev, ind * BS, &bad_pointers())?;
    let new_data = pattern::make(NEW, WRITE_BLK * BS, BS as usize);
    let checked = (|| -> TestResult {
        sc.mount()?;
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("open {}: {e}", path.display()))?;
        let fd = f.as_raw_fd();
        let mut ring = Ring::new(8)?;
        ctx.step("aio read through the corrupted indirect block");
        let c = submit_one(&mut ring, Op::pread(fd, READ_BLK * BS, READ_LEN))?;
        let rres = c.event.res;
        let untouched = c.op()?.buf().iter().all(|&b| b == READ_POISON);
        let (wres, pr) = write_then_pread(
            ctx,
            ring,
            &f,
            NEW,
            WRITE_BLK,
            READ_BLK,
            READ_LEN,
            "aio write through the corrupted indirect block",
        )?;
        println!(
            "indirect block {ind} overwritten with pointers to blocks 1 and 2 (superblock, group descriptors); aio read of {READ_LEN} at block {READ_BLK}: {} (buffer {}); aio write of {BS} at block {WRITE_BLK}: {}; pread: {}",
            describe_res(rres),
            if untouched { "untouched" } else { "written" },
            describe_res(wres),
            match &pr {
                Ok(n) => format!("{n} bytes"),
                Err(e) => e.to_string(),
            }
        );
        ensure!(
            is_corruption_error(rres),
            "a buffered AIO read of {READ_LEN} bytes at logical block {READ_BLK}, mapped by the corrupted indirect block {ind}: res {rres} ({}), expected -EUCLEAN (EFSCORRUPTED) or -EIO",
            describe_res(rres)
        );
        ensure!(
            is_corruption_error(wres),
            "a buffered AIO write of {BS} bytes at logical block {WRITE_BLK}, mapped by the corrupted indirect block {ind}: res {wres} ({}), expected -EUCLEAN (EFSCORRUPTED) or -EIO",
            describe_res(wres)
        );
        if let Ok(n) = pr {
            return Err(format!(
                "pread of {READ_LEN} bytes at logical block {READ_BLK} through the corrupted indirect block returned {n} bytes, expected an error"
            )
            .into());
        }
        Ok(())
    })();
    let unmounted = sc.umount();
    ctx.step("look for the failed write on the medium; restore the indirect block");
    let landed = blocks_starting_with(&dev, fs_size, &new_data);
    let restored = raw_write(&dev, ind * BS, &saved);
    checked?;
    unmounted?;
    restored.map_err(|e| format!("restoring the indirect block: {e}"))?;
    let landed = landed?;
    ensure!(
        landed.is_empty(),
        "the failed AIO write of logical block {WRITE_BLK} landed on the medium anyway, in block(s) {landed:?}"
    );

    ctx.step("the file is intact once the indirect block is restored");
    sc.mount()?;
    let f = File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let got = pread_full(&f, 0, (BLOCKS * BS) as usize + 1)?;
    pattern::compare(
        &got,
        &pattern::make(SEED, 0, (BLOCKS * BS) as usize),
        0,
        &[SEED, NEW],
    )
    .map_err(|e| format!("the file after restoring its indirect block: {e}"))?;
    drop(f);
    remove(&path)?;
    sc.umount()?;
    println!("restored block {ind}; the file reads back as written, the failed write is nowhere on {dev}");
    Ok(())
}

/// The block the tests point a corrupted block pointer at: the superblock
/// (block 1 with 1 KiB blocks, s_first_data_block 1).
const SUPERBLOCK: u32 = 1;

/// `blk` (an indirect block) with its first pointer replaced by `ptr`.
fn with_first_pointer(blk: &[u8], ptr: u32) -> Vec<u8> {
    let mut b = blk.to_vec();
    b[..4].copy_from_slice(&ptr.to_le_bytes());
    b
}

/// Indices of the non-zero pointers of an indirect block.
fn nonzero_pointers(blk: &[u8]) -> Vec<usize> {
    (0..blk.len() / 4).filter(|&i| le32(blk, i) != 0).collect()
}

/// ext3 only, on the scratch filesystem like read/corrupt_indirect. What
/// that test cannot see: ext4_map_blocks() checks the data block number a
/// lookup ends with (check_block_validity()), so a corrupted pointer in the
/// last indirect level fails on any kernel; a corrupted pointer to the next
/// indirect level is caught only by ext4_check_indirect_blockref() of the
/// block that holds it, which unpatched ext4_get_branch() runs only when it
/// reads the block itself: a block read by ->prefetch_mapping() (series
/// v1), or read by an earlier lookup that failed on it (unpatched: the
/// retry of the same read), is followed unchecked.
///
/// A 269 KiB file (1 KiB blocks: 12 direct, 256 through the single indirect
/// block, and logical block 268 as the only one through the double-indirect
/// block i_block[13], so that 268's page holds no other mapped block: a
/// block after it would be mapped through the same corrupted chain, to a
/// number check_block_validity() refuses, and fail the page on every
/// kernel), fsync, FIBMAP; unmount. Its double-indirect block D is taken
/// from the inode on the medium and verified (O_DIRECT): D's only pointer P
/// names a block whose only pointer is the FIBMAP of logical block 268
/// (SKIP otherwise). A lookup that takes the superblock (block 1) for the
/// indirect block maps logical block 268 to the superblock's first u32,
/// s_inodes_count = B; SKIP unless B is a block that check_block_validity()
/// accepts: in range and free in its block bitmap, or one of the file's
/// own data blocks (a used block may be in the system zone, the journal
/// say, which would fail the lookup on every kernel).
/// D's first pointer is overwritten with 1 (the superblock); mount
/// (errors=continue). A buffered AIO read of 4 KiB at logical block 268
/// must fail with -EUCLEAN (EFSCORRUPTED) or -EIO, not return block B as
/// file data; a buffered AIO write of 1 KiB at logical block 268 must
/// fail; pread() of the read's range must fail too. Unmount; the written
/// data must be nowhere on the device (a kernel that follows the pointer
/// writes it to block B); D is restored and, mounted again, the file reads
/// back as first written.
pub fn corrupt_double_indirect(ctx: &Ctx) -> TestResult {
    const SEED: u64 = 0xC0D7;
    const NEW: u64 = 0xC0D8;
    /// The first logical block mapped through i_block[13]: the read's and
    /// the write's block.
    const FIRST_DIND: u64 = 12 + PTRS as u64;
    const BLOCKS: u64 = FIRST_DIND + 1;
    const READ_LEN: usize = 4096;
    let (mut sc, label) = scratch_fs(ctx)?;
    let (dev, mnt) = (sc.dev.clone(), sc.mnt.clone());
    sc.mount()?;
    let path = mnt.join("corrupt-double");

    ctx.step("write the file and map its blocks");
    let (f, map) = mapped_file(
        &path,
        SEED,
        BLOCKS,
        &label,
        &format!(
            "so that block 1 is the superblock and a {BLOCKS} KiB file uses the double-indirect block"
        ),
    )?;
    let ino = {
        use std::os::unix::fs::MetadataExt;
        f.metadata().map_err(|e| format!("fstat: {e}"))?.ino()
    };
    drop(f);
    sc.umount()?;
    let data_blk = map[FIRST_DIND as usize];

    ctx.step("locate the double-indirect block on the raw device");
    let sb = raw_read(&dev, 1024, 1024)?;
    let g = Geometry::of(&sb).map_err(|e| format!("{dev}: {e}"))?;
    if g.block_size != BS || g.first_data_block != u64::from(SUPERBLOCK) {
        return Err(Stop::Skip(format!(
            "{label}: block size {}, s_first_data_block {}: block {SUPERBLOCK} is not the superblock",
            g.block_size, g.first_data_block
        )));
    }
    let layout = |why: String| {
        Stop::Skip(format!(
            "the layout differs from what the test expects (inode {ino}, {BLOCKS} blocks, logical block {FIRST_DIND} at block {data_blk}): {why}"
        ))
    };
    let dind = i_block_on_disk(&dev, ino, BLOCKS * BS, 13)
        .map_err(|e| layout(format!("the inode could not be read: {e}")))?;
    let dind = u64::from(dind);
    if let Some(why) = g.out_of_range(dind) {
        return Err(layout(format!("i_block[13] is block {dind}, {why}")));
    }
    let saved = raw_read(&dev, dind * BS, BS as usize)?;
    let p = u64::from(le32(&saved, 0));
    if nonzero_pointers(&saved) != [0] {
        return Err(layout(format!(
            "the double-indirect block {dind} has non-zero pointers at {:?}, expected exactly the first",
            nonzero_pointers(&saved)
        )));
    }
    if let Some(why) = g.out_of_range(p) {
        return Err(layout(format!(
            "the double-indirect block {dind} points at block {p}, {why}"
        )));
    }
    let ind = raw_read(&dev, p * BS, BS as usize)?;
    if le32(&ind, 0) != data_blk || nonzero_pointers(&ind) != [0] {
        return Err(layout(format!(
            "block {p} (the first pointer of the double-indirect block {dind}) starts with {} and has non-zero pointers at {:?}, expected only {data_blk}",
            le32(&ind, 0),
            nonzero_pointers(&ind)
        )));
    }

    ctx.step("where a lookup through the superblock would go");
    // The superblock taken for the indirect block: its first u32,
    // s_inodes_count, becomes the data block of logical block 268.
    let target = g.inodes_count;
    if let Some(why) = g.out_of_range(target) {
        return Err(Stop::Skip(format!(
            "s_inodes_count {target}, which a lookup that takes the superblock for an indirect block maps logical block {FIRST_DIND} to, is {why}: check_block_validity() refuses it on every kernel, so the test could not tell them apart"
        )));
    }
    let kind = if map.iter().any(|&m| u64::from(m) == target) {
        "a data block of the test file"
    } else {
        match block_is_free(&dev, &g, target)? {
            Some(true) => "free",
            Some(false) => {
                return Err(Stop::Skip(format!(
                    "s_inodes_count {target}, which a lookup that takes the superblock for an indirect block maps logical block {FIRST_DIND} to, is a block in use outside the test file (metadata, the journal or another file's data): the test cannot tell whether check_block_validity() accepts it, so it could not tell the kernels apart"
                )))
            }
            None => {
                return Err(Stop::Skip(format!(
                    "block {target} (s_inodes_count): its group is BLOCK_UNINIT, its block bitmap does not say whether it is free"
                )))
            }
        }
    };
    let target_data = raw_read(&dev, target * BS, BS as usize)?;
    println!(
        "{dev} ({label}, {} blocks): logical block {FIRST_DIND} at block {data_blk}, through the double-indirect block {dind} and the indirect block {p}; s_inodes_count {target} is an ordinary block ({kind})",
        g.blocks_count
    );

    ctx.step("point the double-indirect block at the superblock");
    raw_write(&dev, dind * BS, &with_first_pointer(&saved, SUPERBLOCK))?;
    let new_data = pattern::make(NEW, FIRST_DIND * BS, BS as usize);
    let checked = (|| -> TestResult {
        sc.mount()?;
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("open {}: {e}", path.display()))?;
        let fd = f.as_raw_fd();
        let mut ring = Ring::new(8)?;
        ctx.step("aio read through the corrupted double-indirect block");
        let c = submit_one(&mut ring, Op::pread(fd, FIRST_DIND * BS, READ_LEN))?;
        let rres = c.event.res;
        let buf = c.op()?.buf();
        let untouched = buf.iter().all(|&b| b == READ_POISON);
        // What a successful read returned, against block `target`.
        let n = usize::try_from(rres)
            .unwrap_or(0)
            .min(buf.len())
            .min(BS as usize);
        let is_target = buf[..n] == target_data[..n];
        let (wres, pr) = write_then_pread(
            ctx,
            ring,
            &f,
            NEW,
            FIRST_DIND,
            FIRST_DIND,
            READ_LEN,
            "aio write through the corrupted double-indirect block",
        )?;
        println!(
            "double-indirect block {dind}: first pointer {p} replaced by {SUPERBLOCK} (the superblock); aio read of {READ_LEN} at block {FIRST_DIND}: {} (buffer {}); aio write of {BS} at block {FIRST_DIND}: {}; pread: {}",
            describe_res(rres),
            if untouched { "untouched" } else { "written" },
            describe_res(wres),
            match &pr {
                Ok(n) => format!("{n} bytes"),
                Err(e) => e.to_string(),
            }
        );
        if rres >= 0 {
            return Err(format!(
                "a buffered AIO read of {READ_LEN} bytes at logical block {FIRST_DIND} returned {rres} bytes of block {target} (s_inodes_count) as file data: the corrupted double-indirect block {dind} was followed without validation ({})",
                if is_target {
                    format!("the bytes are block {target}'s")
                } else {
                    format!("the bytes differ from block {target} as read before the mount")
                }
            )
            .into());
        }
        ensure!(
            is_corruption_error(rres),
            "a buffered AIO read of {READ_LEN} bytes at logical block {FIRST_DIND}, mapped through the corrupted double-indirect block {dind}: res {rres} ({}), expected -EUCLEAN (EFSCORRUPTED) or -EIO",
            describe_res(rres)
        );
        ensure!(
            wres < 0,
            "a buffered AIO write of {BS} bytes at logical block {FIRST_DIND}, mapped through the corrupted double-indirect block {dind}: res {wres} ({}), expected an error: the pointer to the superblock was followed, and the data goes to block {target} (s_inodes_count)",
            describe_res(wres)
        );
        if let Ok(n) = pr {
            return Err(format!(
                "pread of {READ_LEN} bytes at logical block {FIRST_DIND} through the corrupted double-indirect block returned {n} bytes, expected an error"
            )
            .into());
        }
        Ok(())
    })();
    let unmounted = sc.umount();
    ctx.step("look for the failed write on the medium; restore the double-indirect block");
    let landed = blocks_starting_with(&dev, g.blocks_count * BS, &new_data);
    let restored = raw_write(&dev, dind * BS, &saved);
    checked?;
    unmounted?;
    restored.map_err(|e| format!("restoring the double-indirect block {dind}: {e}"))?;
    let landed = landed?;
    ensure!(
        landed.is_empty(),
        "the failed AIO write of logical block {FIRST_DIND} landed on the medium anyway, in block(s) {landed:?}{}",
        if landed.contains(&target) {
            format!(" (block {target}, s_inodes_count: through the superblock taken for an indirect block)")
        } else {
            String::new()
        }
    );

    ctx.step("the file is intact once the double-indirect block is restored");
    sc.mount()?;
    let f = File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let got = pread_full(&f, 0, (BLOCKS * BS) as usize + 1)?;
    pattern::compare(
        &got,
        &pattern::make(SEED, 0, (BLOCKS * BS) as usize),
        0,
        &[SEED, NEW],
    )
    .map_err(|e| format!("the file after restoring its double-indirect block: {e}"))?;
    drop(f);
    remove(&path)?;
    sc.umount()?;
    println!("restored block {dind}; the file reads back as written, the failed write is nowhere on {dev}");
    Ok(())
}

fn remove(path: &Path) -> Result<(), String> {
    std::fs::remove_file(path).map_err(|e| format!("rm {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_pointers() {
        assert_eq!(scratch_label("ext3"), "bufaio-scr-ext3");
        assert!(scratch_label("ext3").len() <= 16);
        let b = bad_pointers();
        assert_eq!(b.len(), BS as usize);
        assert_eq!(le32(&b, 0), 1);
        assert_eq!(le32(&b, 1), 2);
        assert_eq!(le32(&b, PTRS - 1), 2);
        assert!(is_corruption_error(-117) && is_corruption_error(-5));
        assert!(!is_corruption_error(-22) && !is_corruption_error(0));
    }

    #[test]
    fn inode_location_from_the_superblock() {
        let mut sb = vec![0u8; 1024];
        assert!(Geometry::of(&sb).is_err());
        sb[56..58].copy_from_slice(&[0x53, 0xEF]);
        sb[20..24].copy_from_slice(&1u32.to_le_bytes()); // first data block
        sb[24..28].copy_from_slice(&0u32.to_le_bytes()); // 1 KiB blocks
        sb[40..44].copy_from_slice(&512u32.to_le_bytes()); // inodes per group
        sb[76..80].copy_from_slice(&1u32.to_le_bytes()); // dynamic rev
        sb[88..90].copy_from_slice(&256u16.to_le_bytes()); // inode size
        assert!(Geometry::of(&sb).is_err(), "no blocks per group");
        sb[0..4].copy_from_slice(&2048u32.to_le_bytes()); // inodes count
        sb[4..8].copy_from_slice(&8192u32.to_le_bytes()); // blocks count
        sb[32..36].copy_from_slice(&8192u32.to_le_bytes()); // blocks per group
        let g = Geometry::of(&sb).unwrap();
        assert_eq!(
            g,
            Geometry {
                block_size: 1024,
                first_data_block: 1,
                inodes_per_group: 512,
                inode_size: 256,
                desc_size: 32,
                inodes_count: 2048,
                blocks_count: 8192,
                blocks_per_group: 8192,
            }
        );
        // what check_block_validity() refuses whatever the system zone holds
        assert!(g.out_of_range(0).is_some() && g.out_of_range(1).is_some());
        assert!(g.out_of_range(2).is_none() && g.out_of_range(2048).is_none());
        assert!(g.out_of_range(8191).is_none() && g.out_of_range(8192).is_some());
        // block 2048: group 0, bit 2047 (counted from s_first_data_block)
        assert_eq!(g.bitmap_bit_of(2048), (0, 2047));
        assert_eq!(g.bitmap_bit_of(8193), (1, 0));
        assert_eq!(g.descriptor_at(1), 2048 + 32);
        // inode 12: group 0, index 11; the descriptors start at block 2
        assert_eq!(g.descriptor_of(12), (2048, 11));
        // inode 513: group 1
        assert_eq!(g.descriptor_of(513), (2048 + 32, 0));
        // rev 0: 128-byte inodes; 64bit: s_desc_size
        sb[76..80].copy_from_slice(&0u32.to_le_bytes());
        sb[96..100].copy_from_slice(&0x80u32.to_le_bytes());
        sb[254..256].copy_from_slice(&64u16.to_le_bytes());
        sb[0x150..0x154].copy_from_slice(&1u32.to_le_bytes()); // blocks hi
        let g = Geometry::of(&sb).unwrap();
        assert_eq!((g.inode_size, g.desc_size), (128, 64));
        assert_eq!(g.blocks_count, (1 << 32) + 8192);
    }

    #[test]
    fn bitmaps_and_pointers() {
        let mut bm = vec![0u8; 1024];
        bm[255] = 0x80; // bit 2047
        assert_eq!(bitmap_bit(&bm, 2047), Some(true));
        assert_eq!(bitmap_bit(&bm, 2046), Some(false));
        assert_eq!(bitmap_bit(&bm, 2048), Some(false));
        assert_eq!(bitmap_bit(&bm, 8192), None);
        let mut d = vec![0u8; BS as usize];
        d[..4].copy_from_slice(&1234u32.to_le_bytes());
        assert_eq!(nonzero_pointers(&d), [0]);
        let c = with_first_pointer(&d, SUPERBLOCK);
        assert_eq!((le32(&c, 0), c.len()), (1, d.len()));
        assert_eq!(c[4..], d[4..]);
        d[4 * (PTRS - 1)] = 7;
        assert_eq!(nonzero_pointers(&d), [0, PTRS - 1]);
    }
}
