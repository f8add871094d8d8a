//! Stage 5, rootfs: the statically linked guest binary as `/init` (plus busybox
//! when the host has busybox-static) in an ext2 root image cached by content,
//! and fresh ext2/ext3 test disks (and an exec payload disk) for every run.

use crate::cache::{sha256_bytes, sha256_file};
use crate::fetch::which;
use crate::ui::Ui;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Clone, Serialize)]
pub struct RootImage {
    pub image: PathBuf,
    pub guest_binary: PathBuf,
    pub guest_sha256: String,
    pub busybox: bool,
    /// libaio's harness in the image (`/opt/libaio`), and the ENOSPC image
    /// its case 10 needs (copied fresh into every suite run).
    pub libaio_enospc: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Disk {
    pub path: PathBuf,
    pub fstype: String,
    /// Guest device and mount point (documented in guest-tests/README.md).
    pub device: String,
    pub mountpoint: String,
}

pub const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Build the guest suite as a static binary.
pub fn build_guest(root: &Path, ui: &Ui) -> Result<PathBuf> {
    build_static(root, "guest-tests", ui)
}

/// Build a workspace binary crate for the guest, statically linked (its own
/// target dir, so the host build cache is not invalidated by the RUSTFLAGS).
pub fn build_static(root: &Path, package: &str, ui: &Ui) -> Result<PathBuf> {
    let stage = ui.stage(package, format!("cargo build -p {package} (static)"));
    let target_dir = root.join("target/guest");
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            package,
            "--target",
            GUEST_TARGET,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .output()
        .with_context(|| format!("cannot run cargo to build {package}"))?;
    if !out.status.success() {
        bail!(
            "building {package} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stage.finish("ok");
    Ok(target_dir.join(GUEST_TARGET).join("release").join(package))
}

/// The root image for this guest binary, built once and cached under
/// `target/bufaio/`. Booted with `snapshot=on`, so it is never written.
pub fn root_image(
    root: &Path,
    guest: &Path,
    peers: &crate::peers::Peers,
    ui: &Ui,
) -> Result<RootImage> {
    let libaio = peers.libaio.as_ref();
    let guest_sha = sha256_file(guest)?;
    let busybox = which("busybox").filter(|p| is_static(p));
    let bb_sha = match &busybox {
        Some(p) => sha256_file(p)?,
        None => String::new(),
    };
    let libaio_key = libaio.map(|h| h.key.as_str()).unwrap_or("-");
    let mut fio_key = String::new();
    for f in peers.fio.iter().chain(peers.stress_ng.iter()).flatten() {
        fio_key.push_str(&sha256_file(f)?);
    }
    let key = sha256_bytes(
        format!(
            "v1 {guest_sha} {bb_sha} {libaio_key} {}",
            sha256_bytes(fio_key.as_bytes())
        )
        .as_bytes(),
    );
    let dir = root.join("target/bufaio");
    let image = dir.join(format!("rootfs-{}.img", &key[..16]));
    let info = RootImage {
        image: image.clone(),
        guest_binary: guest.to_path_buf(),
        guest_sha256: guest_sha,
        busybox: busybox.is_some(),
        libaio_enospc: libaio.map(|h| h.enospc_image.clone()),
    };
    if image.is_file() {
        return Ok(info);
    }
    let stage = ui.stage("rootfs", "ext2 root image");
    fs::create_dir_all(&dir)?;
    let staging = tempfile::tempdir_in(&dir).context("cannot create rootfs staging dir")?;
    let r = staging.path();
    for d in [
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "mnt/ext2",
        "mnt/ext3",
        "mnt/payload",
        "bin",
        "sbin",
        "etc",
        "root",
    ] {
        fs::create_dir_all(r.join(d))?;
    }
    fs::copy(guest, r.join("init")).context("cannot copy the guest binary")?;
    if let Some(bb) = &busybox {
        fs::copy(bb, r.join("bin/busybox"))?;
        let list = Command::new(bb).arg("--list").output()?;
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            let applet = applet.trim();
            if applet.is_empty() || applet == "busybox" {
                continue;
            }
            let _ = std::os::unix::fs::symlink("busybox", r.join("bin").join(applet));
        }
    }
    let mut size_mib = 64;
    if let Some(h) = libaio {
        copy_tree(&h.dir, &r.join(crate::peers::GUEST_DIR))?;
        size_mib += 64;
    }
    // flat, as the bench's payload: guest-tests starts them through the
    // loader with --library-path /opt/<name>
    for (files, dir) in [
        (&peers.fio, crate::peers::FIO_GUEST_DIR),
        (&peers.stress_ng, crate::peers::STRESS_NG_GUEST_DIR),
    ] {
        let Some(files) = files else { continue };
        let d = r.join(dir);
        fs::create_dir_all(&d)?;
        for f in files {
            let name = f.file_name().context("bundled file without a name")?;
            fs::copy(f, d.join(name)).with_context(|| format!("cannot copy {}", f.display()))?;
        }
        size_mib += 64;
    }
    fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    fs::write(r.join("etc/group"), "root:x:0:\n")?;
    let tmp_img = dir.join(format!(".rootfs-{}.tmp", std::process::id()));
    mke2fs("ext2", Some(r), &tmp_img, size_mib, "bufaio-root")?;
    fs::rename(&tmp_img, &image)?;
    stage.finish(format!("{}", image.display()));
    Ok(info)
}

pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from)?.flatten() {
        let p = e.path();
        let t = to.join(e.file_name());
        if p.is_dir() {
            copy_tree(&p, &t)?;
        } else {
            fs::copy(&p, &t).with_context(|| format!("cannot copy {}", p.display()))?;
        }
    }
    Ok(())
}

fn is_static(p: &Path) -> bool {
    // busybox-static is a static binary; a dynamic one may not run in our root.
    Command::new("ldd")
        .arg(p)
        .output()
        .map(|o| {
            !o.status.success() || String::from_utf8_lossy(&o.stdout).contains("not a dynamic")
        })
        .unwrap_or(false)
}

/// `mke2fs -d` builds a populated image without root or loop devices.
pub fn mke2fs(
    fstype: &str,
    dir: Option<&Path>,
    img: &Path,
    size_mib: u32,
    label: &str,
) -> Result<()> {
    mke2fs_with(fstype, dir, img, size_mib, label, &[])
}

/// [`mke2fs`] with extra options before the image (e.g. `-b 1024`).
pub fn mke2fs_with(
    fstype: &str,
    dir: Option<&Path>,
    img: &Path,
    size_mib: u32,
    label: &str,
    extra: &[&str],
) -> Result<()> {
    let _ = fs::remove_file(img);
    let mut cmd = Command::new("mke2fs");
    cmd.args([
        "-q",
        "-F",
        "-t",
        fstype,
        "-L",
        label,
        "-E",
        "root_owner=0:0",
    ]);
    if let Some(d) = dir {
        cmd.arg("-d").arg(d);
    }
    cmd.args(extra);
    cmd.arg(img).arg(format!("{size_mib}M"));
    let out = cmd
        .output()
        .context("cannot run mke2fs (install e2fsprogs)")?;
    if !out.status.success() {
        bail!(
            "mke2fs -t {fstype} {} failed: {}",
            img.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Fresh writable test disks in the run directory: vdb ext2, vdc ext3.
pub fn test_disks(run_dir: &Path, size_mib: u32) -> Result<Vec<Disk>> {
    let mut disks = Vec::new();
    for (fs_, dev) in [("ext2", "vdb"), ("ext3", "vdc")] {
        let path = run_dir.join(format!("disk-{fs_}.img"));
        mke2fs(fs_, None, &path, size_mib, &format!("bufaio-{fs_}"))?;
        disks.push(Disk {
            path,
            fstype: fs_.into(),
            device: format!("/dev/{dev}"),
            mountpoint: format!("/mnt/{fs_}"),
        });
    }
    Ok(disks)
}

/// Marker at offset 0 of a disk that receives a slow (null_blk) filesystem
/// after the suite: `BUFAIO-SLOWCK <fs>\n`, the rest zero. The guest finds
/// the disk by it and overwrites it with the copy. Keep in sync with
/// guest-tests/src/init.rs.
pub const SLOWCK_MARKER: &str = "BUFAIO-SLOWCK ";

/// Size of the tiny filesystems for the ENOSPC tests (mke2fs minimum for
/// ext3 with its 1 MiB journal is about this).
pub const TINY_MIB: u32 = 2;

/// Size of the scratch filesystem that `read/corrupt_indirect` corrupts on
/// purpose.
pub const SCRATCH_MIB: u32 = 8;

/// Its volume label (ext2 labels hold at most 16 bytes, so not
/// `bufaio-scratch-ext3`). Keep in sync with guest-tests/src/suite/corrupt.rs.
pub const SCRATCH_EXT3_LABEL: &str = "bufaio-scr-ext3";

/// Extra disks of a suite run, after the test disks: per fs a sparse disk
/// marked for the copy of the slow filesystem (`disk-slow-<fs>.img`, fsck'd
/// after the run as `host/fsck-slow@<fs>`), then per fs a fresh tiny
/// filesystem labelled `bufaio-tiny-<fs>` for the ENOSPC tests
/// (`disk-tiny-<fs>.img`, `host/fsck-tiny@<fs>`), then a fresh 8 MiB ext3
/// scratch filesystem with 1 KiB blocks labelled `bufaio-scr-ext3`
/// (`disk-scratch-ext3.img`; the guest mounts it on `/mnt/scratch-ext3`),
/// which `read/corrupt_indirect` corrupts on purpose and nothing else uses:
/// it is *not* fsck'd (no `host/` row; [`fsck_test_name`] is None) and is
/// thrown away with the run. The guest finds them by marker and label, not
/// by device name.
pub fn check_disks(
    run_dir: &Path,
    size_mib: u32,
    libaio_enospc: Option<&Path>,
) -> Result<Vec<Disk>> {
    let mut disks = Vec::new();
    for fs_ in ["ext2", "ext3"] {
        let path = run_dir.join(format!("disk-slow-{fs_}.img"));
        let _ = fs::remove_file(&path);
        let f =
            fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        f.set_len(u64::from(size_mib) << 20)?;
        std::io::Write::write_all(&mut &f, format!("{SLOWCK_MARKER}{fs_}\n").as_bytes())?;
        disks.push(Disk {
            path,
            fstype: fs_.into(),
            device: String::new(),
            mountpoint: format!("/mnt/slow-{fs_}"),
        });
    }
    for fs_ in ["ext2", "ext3"] {
        let path = run_dir.join(format!("disk-tiny-{fs_}.img"));
        mke2fs(fs_, None, &path, TINY_MIB, &format!("bufaio-tiny-{fs_}"))?;
        disks.push(Disk {
            path,
            fstype: fs_.into(),
            device: String::new(),
            mountpoint: format!("/mnt/tiny-{fs_}"),
        });
    }
    // 1 KiB blocks: a 20 KiB file already needs an indirect block.
    let path = run_dir.join("disk-scratch-ext3.img");
    mke2fs_with(
        "ext3",
        None,
        &path,
        SCRATCH_MIB,
        SCRATCH_EXT3_LABEL,
        &["-b", "1024"],
    )?;
    disks.push(Disk {
        path,
        fstype: "ext3".into(),
        device: String::new(),
        mountpoint: "/mnt/scratch-ext3".into(),
    });
    // libaio harness case 10 (ENOSPC): a fresh copy of its exact-size
    // ext2 image, found by label `bufaio-enospc`, fsck'd as
    // `host/fsck-enospc@ext2`.
    if let Some(img) = libaio_enospc {
        let path = run_dir.join("disk-enospc-ext2.img");
        fs::copy(img, &path).with_context(|| format!("cannot copy {}", img.display()))?;
        disks.push(Disk {
            path,
            fstype: "ext2".into(),
            device: String::new(),
            mountpoint: "/mnt/enospc".into(),
        });
    }
    Ok(disks)
}

/// The host-side test reporting this disk's `e2fsck -fn`
/// (`host/fsck@ext2`, `host/fsck-slow@ext2`, `host/fsck-tiny@ext3`), from
/// its file name; None for disks that are not checked (the exec payload,
/// and the scratch disk `disk-scratch-ext3.img`, corrupted on purpose).
pub fn fsck_test_name(disk: &Disk) -> Option<String> {
    let stem = disk.path.file_stem()?.to_str()?;
    let rest = stem.strip_prefix("disk-")?;
    match rest.split_once('-') {
        None if rest == disk.fstype => Some(format!("host/fsck@{rest}")),
        Some((kind @ ("slow" | "tiny" | "enospc"), fs_)) if fs_ == disk.fstype => {
            Some(format!("host/fsck-{kind}@{fs_}"))
        }
        _ => None,
    }
}

/// Whether a slow-copy disk still starts with its marker (the guest did not
/// copy the slow filesystem onto it).
pub fn slowck_marker_left(disk: &Disk) -> Result<bool> {
    use std::io::Read;
    let want = format!("{SLOWCK_MARKER}{}\n", disk.fstype);
    let mut head = vec![0u8; want.len()];
    let mut f = fs::File::open(&disk.path)
        .with_context(|| format!("cannot open {}", disk.path.display()))?;
    f.read_exact(&mut head)
        .with_context(|| format!("cannot read {}", disk.path.display()))?;
    Ok(head == want.as_bytes())
}

/// The exec payload disk (vdd): `cmd` (argv, NUL-separated) and the user's files.
pub fn payload_disk(run_dir: &Path, argv: &[String], files: &[PathBuf]) -> Result<Disk> {
    let staging = run_dir.join("payload");
    fs::create_dir_all(&staging)?;
    let mut cmd = Vec::new();
    for a in argv {
        if a.as_bytes().contains(&0) {
            bail!("command argument {a:?} contains a NUL byte");
        }
        cmd.extend_from_slice(a.as_bytes());
        cmd.push(0);
    }
    fs::write(staging.join("cmd"), cmd)?;
    let mut total = 0u64;
    for f in files {
        let name = f
            .file_name()
            .with_context(|| format!("--add {}: not a file name", f.display()))?;
        let meta =
            fs::metadata(f).with_context(|| format!("--add {}: cannot read", f.display()))?;
        if !meta.is_file() {
            bail!("--add {}: not a regular file", f.display());
        }
        total += meta.len();
        fs::copy(f, staging.join(name)).with_context(|| format!("cannot copy {}", f.display()))?;
    }
    let size = (total / (1 << 20) + 32).min(4096) as u32;
    let path = run_dir.join("disk-payload.img");
    mke2fs("ext2", Some(&staging), &path, size, "bufaio-payload")?;
    Ok(Disk {
        path,
        fstype: "ext2".into(),
        device: "/dev/vdd".into(),
        mountpoint: "/mnt/payload".into(),
    })
}

/// `e2fsck -fn` on a test disk after the run: the filesystem must be clean.
pub fn fsck(disk: &Disk) -> Result<(bool, String)> {
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(&disk.path)
        .output()
        .context("cannot run e2fsck")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(path: &str, fstype: &str) -> Disk {
        Disk {
            path: path.into(),
            fstype: fstype.into(),
            device: String::new(),
            mountpoint: String::new(),
        }
    }

    #[test]
    fn fsck_names_by_file_name() {
        let n = |p, f| fsck_test_name(&disk(p, f));
        assert_eq!(
            n("/r/disk-ext2.img", "ext2").as_deref(),
            Some("host/fsck@ext2")
        );
        assert_eq!(
            n("/r/disk-slow-ext3.img", "ext3").as_deref(),
            Some("host/fsck-slow@ext3")
        );
        assert_eq!(
            n("/r/disk-tiny-ext2.img", "ext2").as_deref(),
            Some("host/fsck-tiny@ext2")
        );
        assert_eq!(n("/r/disk-payload.img", "ext2"), None);
        assert_eq!(n("/r/disk-scratch-ext3.img", "ext3"), None);
        assert_eq!(n("/r/disk-slow-ext3.img", "ext2"), None);
        assert_eq!(n("/r/other.img", "ext2"), None);
    }

    #[test]
    fn guest_uses_the_same_marker() {
        let guest = include_str!("../../guest-tests/src/init.rs");
        assert!(
            guest.contains(&format!("SLOWCK_MARKER: &str = {SLOWCK_MARKER:?}")),
            "guest-tests/src/init.rs must define the same SLOWCK_MARKER"
        );
        let limits = include_str!("../../guest-tests/src/suite/write_limits.rs");
        assert!(limits.contains("format!(\"bufaio-tiny-{fs}\")"));
        let corrupt = include_str!("../../guest-tests/src/suite/corrupt.rs");
        assert!(corrupt.contains("format!(\"bufaio-scr-{fs}\")"));
        assert_eq!(SCRATCH_EXT3_LABEL, "bufaio-scr-ext3");
        assert!(SCRATCH_EXT3_LABEL.len() <= 16, "ext2 labels hold 16 bytes");
        assert!(corrupt.contains("\"/mnt/scratch-{fs}\""));
    }

    /// Needs e2fsprogs (a listed host dependency): fresh check disks, the
    /// marker logic, and e2fsck telling a clean image from a damaged one.
    #[test]
    fn check_disks_marker_and_fsck() {
        if which("mke2fs").is_none() || which("e2fsck").is_none() {
            eprintln!("skipped: no e2fsprogs");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let disks = check_disks(dir.path(), 8, None).unwrap();
        let names: Vec<_> = disks.iter().filter_map(fsck_test_name).collect();
        assert_eq!(
            names,
            [
                "host/fsck-slow@ext2",
                "host/fsck-slow@ext3",
                "host/fsck-tiny@ext2",
                "host/fsck-tiny@ext3"
            ]
        );
        assert!(slowck_marker_left(&disks[0]).unwrap());
        assert_eq!(fs::metadata(&disks[0].path).unwrap().len(), 8 << 20);
        // a copied filesystem replaces the marker and is clean
        let img = fs::read(&disks[2].path).unwrap();
        fs::write(&disks[0].path, &img).unwrap();
        assert!(!slowck_marker_left(&disks[0]).unwrap());
        let (ok, text) = fsck(&disks[0]).unwrap();
        assert!(ok, "{text}");
        let (ok, text) = fsck(&disks[3]).unwrap();
        assert!(ok, "{text}");
        // damage: a wrong link count on the root directory
        let out = Command::new("debugfs")
            .args(["-w", "-R", "set_inode_field <2> links_count 7"])
            .arg(&disks[2].path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let (ok, text) = fsck(&disks[2]).unwrap();
        assert!(!ok, "e2fsck -fn accepted a damaged image:\n{text}");
        // the scratch disk: last, not fsck'd, ext3 with 1 KiB blocks
        assert_eq!(disks.len(), 5);
        let scratch = &disks[4];
        assert_eq!(fsck_test_name(scratch), None);
        assert_eq!(scratch.mountpoint, "/mnt/scratch-ext3");
        let (ok, text) = fsck(scratch).unwrap();
        assert!(ok, "{text}");
        let img = fs::read(&scratch.path).unwrap();
        assert_eq!(img.len() as u64, u64::from(SCRATCH_MIB) << 20);
        let sb = &img[1024..2048];
        assert_eq!(sb[56..58], [0x53, 0xEF], "ext2 superblock magic");
        assert_eq!(sb[24..28], [0, 0, 0, 0], "s_log_block_size: 1 KiB blocks");
        assert_eq!(
            &sb[120..120 + SCRATCH_EXT3_LABEL.len()],
            SCRATCH_EXT3_LABEL.as_bytes()
        );
        // has_journal (ext3)
        assert_ne!(sb[92] & 0x04, 0, "s_feature_compat has no journal");
    }
}
