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
pub fn root_image(root: &Path, guest: &Path, ui: &Ui) -> Result<RootImage> {
    let guest_sha = sha256_file(guest)?;
    let busybox = which("busybox").filter(|p| is_static(p));
    let bb_sha = match &busybox {
        Some(p) => sha256_file(p)?,
        None => String::new(),
    };
    let key = sha256_bytes(format!("v1 {guest_sha} {bb_sha}").as_bytes());
    let dir = root.join("target/bufaio");
    let image = dir.join(format!("rootfs-{}.img", &key[..16]));
    let info = RootImage {
        image: image.clone(),
        guest_binary: guest.to_path_buf(),
        guest_sha256: guest_sha,
        busybox: busybox.is_some(),
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
    fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    fs::write(r.join("etc/group"), "root:x:0:\n")?;
    let tmp_img = dir.join(format!(".rootfs-{}.tmp", std::process::id()));
    mke2fs("ext2", Some(r), &tmp_img, 64, "bufaio-root")?;
    fs::rename(&tmp_img, &image)?;
    stage.finish(format!("{}", image.display()));
    Ok(info)
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
