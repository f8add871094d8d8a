//! PID 1: mounts, the results channel, mode dispatch, unmount, reboot.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cmdline::{self, BootConfig, Fixture, Mode};
use crate::exec;
use crate::ktap::KtapWriter;
use crate::runner::{self, NotRun, Planned};
use crate::suite;
use crate::sys;

pub use bufaio_contract::{DONE, READY};
pub const KTAP_PORT: &str = "bufaio.ktap";
pub const OUT_PORT: &str = "bufaio.out";
/// Prefix of KTAP lines on the console when there is no bufaio.ktap port.
pub const KTAP_CONSOLE_PREFIX: &str = "KTAP: ";

/// A test disk: device, mount point, fs type (= label in test names).
pub struct Disk {
    pub label: &'static str,
    pub dev: &'static str,
    pub dir: &'static str,
    pub fstype: &'static str,
}

pub const TEST_DISKS: [Disk; 2] = [
    Disk {
        label: "ext2",
        dev: "/dev/vdb",
        dir: "/mnt/ext2",
        fstype: "ext2",
    },
    Disk {
        label: "ext3",
        dev: "/dev/vdc",
        dir: "/mnt/ext3",
        fstype: "ext3",
    },
];

/// The slow device (section 4 of the README): RAM-backed null_blk disks
/// with 1 ms per IO, created by the host's `null_blk.*` kernel parameters.
/// Each gets a raw copy of the matching fresh test disk before anything is
/// mounted, then is mounted on its own mount point. Tests that need (or
/// prefer) a slow device run there; their names keep the `@ext2`/`@ext3`
/// label.
pub const SLOW_DISKS: [Disk; 2] = [
    Disk {
        label: "ext2",
        dev: "/dev/nullb0",
        dir: "/mnt/slow-ext2",
        fstype: "ext2",
    },
    Disk {
        label: "ext3",
        dev: "/dev/nullb1",
        dir: "/mnt/slow-ext3",
        fstype: "ext3",
    },
];

/// Where each slow disk's content comes from (same order as SLOW_DISKS).
const SLOW_SOURCES: [&str; 2] = ["/dev/vdb", "/dev/vdc"];

pub const PAYLOAD_DISK: Disk = Disk {
    label: "payload",
    dev: "/dev/vdd",
    dir: "/mnt/payload",
    fstype: "ext2",
};

/// A line on the console (PID 1's stdout). Never fails.
pub fn console(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

/// Entry point when running as init. Never returns.
pub fn run_as_init() -> ! {
    let pid1 = sys::getpid() == 1;
    if !pid1 {
        if let Err(e) = check_private_mount_ns() {
            eprintln!("guest-tests --init: {e}");
            std::process::exit(2);
        }
    }
    ensure_console();
    if let Err(e) = mount_pseudo("proc", "/proc", "proc") {
        console(&format!("bufaio: {e}"));
    }
    console(READY);

    let cfg = std::fs::read_to_string("/proc/cmdline")
        .map_err(|e| format!("cannot read /proc/cmdline: {e}"))
        .and_then(|c| cmdline::parse(&c));
    if let Ok(BootConfig {
        fixture: Some(Fixture::Panic),
        ..
    }) = cfg
    {
        console("bufaio: fixture=panic: PID 1 exits now");
        sys::tcdrain(1);
        std::process::exit(0);
    }

    if let Ok(BootConfig {
        heartbeat: Some(secs),
        ..
    }) = cfg
    {
        start_heartbeat(secs);
    }
    let outcome = std::panic::catch_unwind(|| session(cfg));
    if outcome.is_err() {
        console("bufaio: internal error: PID 1 panicked (see message above); rebooting");
    }
    finish(pid1)
}

/// A thread of PID 1 that prints `bufaio-heartbeat: <uptime>` on the
/// console every `secs` seconds: the host's silence timeout then measures
/// whether the guest runs (a hung kernel stops it; a hung task is reported
/// by the kernel's hung-task detector), not whether a command is chatty.
fn start_heartbeat(secs: u64) {
    std::thread::spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_secs(secs));
        let up = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
        console(&bufaio_contract::heartbeat_line(
            up.split_whitespace().next().unwrap_or("?"),
        ));
    });
}

/// sync, DONE, reboot (PID 1) or exit (forced --init in a namespace).
fn finish(pid1: bool) -> ! {
    sys::reap_zombies();
    sys::sync();
    console(DONE);
    sys::tcdrain(1);
    if !pid1 {
        std::process::exit(0);
    }
    let e = sys::reboot(libc::LINUX_REBOOT_CMD_RESTART);
    console(&format!(
        "bufaio: reboot(RESTART) failed: {e}; trying power off"
    ));
    let e = sys::reboot(libc::LINUX_REBOOT_CMD_POWER_OFF);
    console(&format!(
        "bufaio: reboot(POWER_OFF) failed: {e}; halting here"
    ));
    sys::tcdrain(1);
    sys::pause_forever()
}

/// Everything between READY and DONE. Errors are reported, never fatal.
fn session(cfg: Result<BootConfig, String>) {
    for (src, dir, fstype) in [
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
        ("tmpfs", "/tmp", "tmpfs"),
        ("tmpfs", "/run", "tmpfs"),
    ] {
        if let Err(e) = mount_pseudo(src, dir, fstype) {
            console(&format!("bufaio: {e}"));
        }
    }
    let kernel = sys::uname_release();
    console(&format!("bufaio: kernel {kernel}"));
    let mut ktap = open_ktap();

    let cfg = match cfg {
        Ok(c) => c,
        Err(e) => {
            console(&format!("bufaio: error: {e}"));
            let _ = ktap.diag(&format!("bufaio-error: {e}"));
            return;
        }
    };
    for w in &cfg.warnings {
        console(&format!("bufaio: warning: {w}"));
    }
    match cfg.mode {
        Mode::Probe => console("bufaio: probe ok"),
        Mode::Suite => suite_mode(&cfg, &kernel, &mut ktap),
        Mode::Exec => exec_mode(&mut ktap),
    }
}

fn suite_mode(cfg: &BootConfig, kernel: &str, ktap: &mut KtapWriter) {
    if let Err(e) = ktap.preamble(kernel) {
        console(&format!("bufaio: error writing KTAP: {e}"));
    }
    // The raw copy onto the slow device must happen before the test disks
    // are mounted (a clean, fresh filesystem image).
    let slow = prepare_slow_disks();
    let mounted = mount_disks(&TEST_DISKS);
    let labels: Vec<&str> = TEST_DISKS.iter().map(|d| d.label).collect();
    let planned: Vec<Planned> = suite::expand(&labels)
        .into_iter()
        .filter(|i| cmdline::selected(&cfg.filter, &i.name))
        .map(|i| {
            let dir = match &i.fs {
                None => Ok(PathBuf::from("/tmp")),
                Some(l) => plan_dir(l, i.device, &mounted, &slow),
            };
            Planned {
                name: i.name,
                dir,
                new_behaviour: i.new_behaviour,
            }
        })
        .collect();
    let ok_fs: Vec<String> = mounted
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(d, _)| d.label.to_string())
        .collect();
    if let Err(e) = ktap.plan(&ok_fs, planned.len()) {
        console(&format!("bufaio: error writing KTAP: {e}"));
    }
    console(&format!(
        "bufaio: running {} test(s), timeout {} s each",
        planned.len(),
        cfg.test_timeout
    ));
    let timeout = Duration::from_secs(cfg.test_timeout);
    let (p, f, s) = runner::run_suite(&planned, timeout, true, ktap, &mut |l| console(l));
    console(&format!("bufaio: {p} passed, {f} failed, {s} skipped"));
    kmemleak_scan(ktap);
    let disks: Vec<&Disk> = mounted
        .iter()
        .chain(slow.iter())
        .filter(|(_, r)| r.is_ok())
        .map(|(d, _)| *d)
        .collect();
    unmount_disks(&disks, ktap);
    copy_back_slow_disks(&slow, ktap);
}

/// Marker the host writes at offset 0 of each (otherwise zero) disk that
/// receives a slow filesystem after the suite: `BUFAIO-SLOWCK <label>\n`.
/// The copy overwrites it (the first MiB of an ext2 image is never all
/// zero), so a marker still there tells the host the copy did not happen.
/// Keep in sync with xtask/src/rootfs.rs.
pub const SLOWCK_MARKER: &str = "BUFAIO-SLOWCK ";

/// The virtio disk whose first bytes are the marker for `label`.
fn find_slowck_disk(label: &str) -> Option<PathBuf> {
    let want = format!("{SLOWCK_MARKER}{label}\n");
    let mut names: Vec<String> = std::fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("vd"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| Path::new("/dev").join(n))
        .find(|dev| {
            use std::os::unix::fs::FileExt;
            let mut head = vec![0u8; want.len()];
            File::open(dev)
                .and_then(|f| f.read_exact_at(&mut head, 0))
                .is_ok()
                && head == want.as_bytes()
        })
}

/// After the suite: each slow filesystem (already unmounted) is copied to
/// its marked virtio disk, so the host can e2fsck what the slow-device
/// tests left behind (the null_blk devices vanish with the VM). Reported on
/// the console and as `# bufaio-slow-copy: LABEL: ...` KTAP diagnostics.
fn copy_back_slow_disks(slow: &[(&Disk, Result<(), String>)], ktap: &mut KtapWriter) {
    for (d, r) in slow {
        let msg = if r.is_err() {
            "slow device was not prepared".to_string()
        } else if is_mountpoint(Path::new(d.dir)) {
            format!("{} is still mounted: not copied", d.dir)
        } else {
            match find_slowck_disk(d.label) {
                None => "no disk marked for it (not a `cargo xtask run`): not checked".to_string(),
                Some(dst) => {
                    let dst = dst.to_string_lossy().into_owned();
                    let start = Instant::now();
                    match suite::ext2_fs_size(d.dev)
                        .and_then(|size| copy_nonzero(d.dev, &dst, Some(size)))
                    {
                        Ok((written, total)) => format!(
                            "copied {} to {dst} for the host's fsck ({} of {} MiB non-zero, {} ms)",
                            d.dev,
                            written >> 20,
                            total >> 20,
                            start.elapsed().as_millis()
                        ),
                        Err(e) => format!("copy {} to {dst} failed: {e}", d.dev),
                    }
                }
            }
        };
        console(&format!("bufaio: slow-{}: {msg}", d.label));
        let _ = ktap.diag(&format!("bufaio-slow-copy: {}: {msg}", d.label));
    }
}

/// On kernels with kmemleak (the debug flavor): scan after the suite and
/// print what it found to the console, where the host's splat scanner sees
/// `unreferenced object` reports. Two scans, as kmemleak only reports objects
/// that stayed unreferenced across scans.
fn kmemleak_scan(ktap: &mut KtapWriter) {
    let dbg = Path::new("/sys/kernel/debug");
    let ctl = dbg.join("kmemleak");
    if !ctl.exists() {
        if let Err(e) = sys::mount("debugfs", dbg, "debugfs", 0) {
            if e.raw_os_error() != Some(libc::EBUSY) {
                return;
            }
        }
    }
    if !ctl.exists() {
        return;
    }
    for _ in 0..2 {
        if let Err(e) = std::fs::write(&ctl, "scan") {
            console(&format!("bufaio: kmemleak scan failed: {e}"));
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let report = std::fs::read_to_string(&ctl).unwrap_or_default();
    let leaks = report.matches("unreferenced object").count();
    console(&format!(
        "bufaio: kmemleak: {leaks} suspected leak(s) after the suite"
    ));
    // Raw lines: the host scanner matches `unreferenced object` at the start.
    for l in report.lines() {
        console(l);
    }
    let _ = ktap.diag(&format!("kmemleak: {leaks} suspected leak(s)"));
}

/// The directory a per-filesystem test runs in, by the device it wants.
fn plan_dir(
    label: &str,
    device: suite::Device,
    mounted: &[(&Disk, Result<(), String>)],
    slow: &[(&Disk, Result<(), String>)],
) -> Result<PathBuf, NotRun> {
    let find = |set: &[(&Disk, Result<(), String>)]| {
        set.iter()
            .find(|(d, _)| d.label == label)
            .map(|(d, r)| r.clone().map(|()| PathBuf::from(d.dir)))
    };
    match (device, find(slow)) {
        (suite::Device::Slow | suite::Device::PreferSlow, Some(Ok(d))) => Ok(d),
        (suite::Device::Slow, Some(Err(e))) => Err(NotRun::Skip(format!(
            "needs the slow device, which is not available: {e}"
        ))),
        (suite::Device::Slow, None) => Err(NotRun::Skip(format!("no slow device for {label}"))),
        _ => match find(mounted) {
            Some(Ok(d)) => Ok(d),
            Some(Err(e)) => Err(NotRun::Fail(format!(
                "filesystem {label} is not available: {e}"
            ))),
            None => Err(NotRun::Fail(format!(
                "filesystem {label} is not configured"
            ))),
        },
    }
}

/// Copies each fresh test disk onto its null_blk slow disk and mounts it.
/// Absent null_blk devices are reported (tests needing them then skip).
fn prepare_slow_disks() -> Vec<(&'static Disk, Result<(), String>)> {
    SLOW_DISKS
        .iter()
        .zip(SLOW_SOURCES)
        .map(|(d, src)| {
            let r = prepare_slow_disk(d, src);
            match &r {
                Ok(()) => console(&format!(
                    "bufaio: mounted {} on {} ({}, slow device)",
                    d.dev, d.dir, d.fstype
                )),
                Err(e) => console(&format!("bufaio: NOT mounted slow-{}: {e}", d.label)),
            }
            (d, r)
        })
        .collect()
}

fn prepare_slow_disk(d: &Disk, src: &str) -> Result<(), String> {
    let name = d.dev.trim_start_matches("/dev/");
    if !Path::new("/sys/block").join(name).exists() {
        return Err(format!(
            "{} does not exist (no null_blk.nr_devices=2 on the kernel command line?)",
            d.dev
        ));
    }
    let start = Instant::now();
    let (written, total) = copy_nonzero(src, d.dev, None)?;
    console(&format!(
        "bufaio: copied {src} to {} ({} of {} MiB non-zero, {} ms)",
        d.dev,
        written >> 20,
        total >> 20,
        start.elapsed().as_millis()
    ));
    mount_disk(d)
}

/// Raw block copy of `src` onto `dst` in 4 MiB O_DIRECT reads, skipping
/// all-zero 1 MiB pieces (a fresh memory-backed null_blk device reads as zeros).
/// Copies the whole of `src`, or its first `limit` bytes. Returns (bytes
/// written, bytes considered).
pub fn copy_nonzero(src: &str, dst: &str, limit: Option<u64>) -> Result<(u64, u64), String> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    const CHUNK: usize = 4 << 20;
    const PIECE: usize = 1 << 20;
    let wait_for = |p: &str| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !Path::new(p).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(src);
    wait_for(dst);
    let s = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(src)
        .map_err(|e| format!("open {src}: {e}"))?;
    let t = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(dst)
        .map_err(|e| format!("open {dst}: {e}"))?;
    let size = |dev: &str| -> Result<u64, String> {
        let name = dev.trim_start_matches("/dev/");
        let p = format!("/sys/block/{name}/size");
        std::fs::read_to_string(&p)
            .map_err(|e| format!("read {p}: {e}"))?
            .trim()
            .parse::<u64>()
            .map(|sectors| sectors * 512)
            .map_err(|e| format!("parse {p}: {e}"))
    };
    let total = size(src)?.min(limit.unwrap_or(u64::MAX));
    let room = size(dst)?;
    if room < total {
        return Err(format!(
            "{dst} ({room} bytes) is smaller than {src} ({total} bytes)"
        ));
    }
    let mut buf = crate::aio::AlignedBuf::new(CHUNK, 4096).map_err(|e| e.to_string())?;
    let mut off = 0u64;
    let mut written = 0u64;
    while off < total {
        let want = CHUNK.min((total - off) as usize);
        let b = &mut buf.as_mut_slice()[..want];
        let n = s
            .read_at(b, off)
            .map_err(|e| format!("read {src} at {off}: {e}"))?;
        if n == 0 {
            break;
        }
        // Write back only the 1 MiB pieces that are not all zero.
        let mut at = 0;
        while at < n {
            let piece = &b[at..n.min(at + PIECE)];
            if piece.iter().any(|&x| x != 0) {
                let o = off + at as u64;
                t.write_all_at(piece, o)
                    .map_err(|e| format!("write {dst} at {o}: {e}"))?;
                written += piece.len() as u64;
            }
            at += piece.len();
        }
        off += n as u64;
    }
    t.sync_all().map_err(|e| format!("fsync {dst}: {e}"))?;
    Ok((written, total))
}

fn exec_mode(ktap: &mut KtapWriter) {
    let mounted = mount_disks(&TEST_DISKS);
    let payload = mount_disks(std::slice::from_ref(&PAYLOAD_DISK));
    let status = match &payload[0].1 {
        Ok(()) => exec::run(Path::new(PAYLOAD_DISK.dir), find_port(OUT_PORT)),
        Err(e) => {
            console(&format!("bufaio: exec: no payload: {e}"));
            127
        }
    };
    console(&format!("bufaio: exec status {status}"));
    if let Err(e) = ktap.line(&format!("# bufaio-exec-status: {status}")) {
        console(&format!("bufaio: error writing exec status: {e}"));
    }
    let mut disks: Vec<&Disk> = mounted
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(d, _)| *d)
        .collect();
    if payload[0].1.is_ok() {
        disks.push(&PAYLOAD_DISK);
    }
    unmount_disks(&disks, ktap);
}

/// Refuses `--init` outside PID 1 unless in a private mount namespace, so
/// that a mistaken run cannot remount the host's /proc, /tmp, ...
fn check_private_mount_ns() -> Result<(), String> {
    let mine = std::fs::read_link("/proc/self/ns/mnt")
        .map_err(|e| format!("cannot read /proc/self/ns/mnt: {e}"))?;
    let init = std::fs::read_link("/proc/1/ns/mnt")
        .map_err(|e| format!("cannot read /proc/1/ns/mnt: {e}"))?;
    if mine == init {
        return Err(
            "refusing to act as init outside PID 1 in the host's mount namespace \
             (run under `unshare --mount --pid --fork`)"
                .to_string(),
        );
    }
    Ok(())
}

/// If the kernel could not give us a console on fd 0-2, mount devtmpfs and
/// open /dev/console ourselves.
fn ensure_console() {
    if sys::fd_is_open(1) {
        return;
    }
    let _ = mount_pseudo("devtmpfs", "/dev", "devtmpfs");
    if let Ok(f) = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    {
        use std::os::fd::AsRawFd;
        for fd in 0..3 {
            if !sys::fd_is_open(fd) {
                let _ = sys::dup2(f.as_raw_fd(), fd);
            }
        }
    }
}

/// Whether `p` is a mount point (different device than its parent).
fn is_mountpoint(p: &Path) -> bool {
    let parent = p.parent().unwrap_or(Path::new("/"));
    match (std::fs::metadata(p), std::fs::metadata(parent)) {
        (Ok(a), Ok(b)) => a.dev() != b.dev() || a.ino() == b.ino(),
        _ => false,
    }
}

/// Mounts a pseudo filesystem unless something is mounted there already.
fn mount_pseudo(src: &str, dir: &str, fstype: &str) -> Result<(), String> {
    let d = Path::new(dir);
    let _ = std::fs::create_dir_all(d);
    if is_mountpoint(d) {
        return Ok(());
    }
    match sys::mount(src, d, fstype, 0) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
        Err(e) => Err(format!("mount {fstype} on {dir}: {e}")),
    }
}

/// Mounts each disk; reports on the console. Returns per-disk results.
fn mount_disks(disks: &[Disk]) -> Vec<(&Disk, Result<(), String>)> {
    disks
        .iter()
        .map(|d| {
            let r = mount_disk(d);
            match &r {
                Ok(()) => console(&format!(
                    "bufaio: mounted {} on {} ({})",
                    d.dev, d.dir, d.fstype
                )),
                Err(e) => console(&format!("bufaio: NOT mounted {}: {e}", d.label)),
            }
            (d, r)
        })
        .collect()
}

fn mount_disk(d: &Disk) -> Result<(), String> {
    let dev = Path::new(d.dev);
    // virtio-blk probes synchronously, but give devtmpfs a moment anyway.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !dev.exists() {
        if Instant::now() >= deadline {
            return Err(format!("{} does not exist", d.dev));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let dir = Path::new(d.dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", d.dir))?;
    sys::mount(d.dev, dir, d.fstype, 0)
        .map_err(|e| format!("mount {} on {} as {}: {e}", d.dev, d.dir, d.fstype))
}

/// Unmounts; a failure is reported on the console and as a KTAP diagnostic
/// (`# bufaio-umount-error: DIR: ERROR`) after the results.
fn unmount_disks(disks: &[&Disk], ktap: &mut KtapWriter) {
    for d in disks {
        match sys::umount(Path::new(d.dir)) {
            Ok(()) => console(&format!("bufaio: unmounted {}", d.dir)),
            Err(e) => {
                console(&format!(
                    "bufaio: umount {} failed: {e} (something still holds the filesystem)",
                    d.dir
                ));
                let _ = ktap.diag(&format!("bufaio-umount-error: {}: {e}", d.dir));
            }
        }
    }
}

/// `/dev/<port>` for the virtio-serial port with this name, if any.
pub fn find_port(name: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir("/sys/class/virtio-ports").ok()?;
    for e in entries.flatten() {
        let n = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
        if n.trim() == name {
            let dev = Path::new("/dev").join(e.file_name());
            let deadline = Instant::now() + Duration::from_secs(2);
            while !dev.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            return Some(dev);
        }
    }
    None
}

/// The KTAP sink: the bufaio.ktap port, or the console with "KTAP: ".
fn open_ktap() -> KtapWriter {
    if let Some(dev) = find_port(KTAP_PORT) {
        match OpenOptions::new().write(true).open(&dev) {
            Ok(f) => {
                console(&format!("bufaio: KTAP on {} ({KTAP_PORT})", dev.display()));
                return KtapWriter::new(Box::new(f), "");
            }
            Err(e) => console(&format!(
                "bufaio: cannot open {} ({KTAP_PORT}): {e}; KTAP goes to the console",
                dev.display()
            )),
        }
    } else {
        console(&format!(
            "bufaio: no {KTAP_PORT} port; KTAP goes to the console prefixed {KTAP_CONSOLE_PREFIX:?}"
        ));
    }
    KtapWriter::new(Box::new(std::io::stdout()), KTAP_CONSOLE_PREFIX)
}

/// Opens a port for writing (used by exec for bufaio.out).
pub fn open_port(dev: &Path) -> std::io::Result<File> {
    OpenOptions::new().write(true).open(dev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::Device;

    #[test]
    fn plan_dir_by_device() {
        let ok: Vec<(&Disk, Result<(), String>)> = TEST_DISKS.iter().map(|d| (d, Ok(()))).collect();
        let slow_ok: Vec<(&Disk, Result<(), String>)> =
            SLOW_DISKS.iter().map(|d| (d, Ok(()))).collect();
        let slow_bad: Vec<(&Disk, Result<(), String>)> = SLOW_DISKS
            .iter()
            .map(|d| (d, Err("no nullb".to_string())))
            .collect();
        let p = |l: &str,
                 dev,
                 m: &[(&Disk, Result<(), String>)],
                 s: &[(&Disk, Result<(), String>)]| { plan_dir(l, dev, m, s) };
        assert_eq!(
            p("ext2", Device::Normal, &ok, &slow_ok),
            Ok(PathBuf::from("/mnt/ext2"))
        );
        assert_eq!(
            p("ext3", Device::PreferSlow, &ok, &slow_ok),
            Ok(PathBuf::from("/mnt/slow-ext3"))
        );
        assert_eq!(
            p("ext3", Device::PreferSlow, &ok, &slow_bad),
            Ok(PathBuf::from("/mnt/ext3"))
        );
        assert_eq!(
            p("ext2", Device::Slow, &ok, &slow_ok),
            Ok(PathBuf::from("/mnt/slow-ext2"))
        );
        assert!(matches!(
            p("ext2", Device::Slow, &ok, &slow_bad),
            Err(NotRun::Skip(r)) if r.contains("slow device") && r.contains("no nullb")
        ));
        assert!(matches!(
            p("ext2", Device::Slow, &ok, &[]),
            Err(NotRun::Skip(_))
        ));
        let bad: Vec<(&Disk, Result<(), String>)> = TEST_DISKS
            .iter()
            .map(|d| (d, Err("EIO".to_string())))
            .collect();
        assert!(matches!(
            p("ext2", Device::Normal, &bad, &slow_ok),
            Err(NotRun::Fail(r)) if r.contains("not available")
        ));
        assert!(matches!(
            p("xfs", Device::Normal, &ok, &slow_ok),
            Err(NotRun::Fail(r)) if r.contains("not configured")
        ));
    }

    #[test]
    fn slow_disks_match_test_disks() {
        for (t, s) in TEST_DISKS.iter().zip(SLOW_DISKS.iter()) {
            assert_eq!(t.label, s.label);
            assert_eq!(t.fstype, s.fstype);
            assert_ne!(t.dir, s.dir);
        }
        assert_eq!(SLOW_SOURCES, [TEST_DISKS[0].dev, TEST_DISKS[1].dev]);
    }
}
