//! QEMU command lines, built from small pure functions (one per concern) so
//! each is unit tested and the full line is recorded in the manifest.

use crate::rootfs::Disk;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

#[derive(Debug, Clone)]
pub struct VmSpec {
    pub binary: String,
    pub accel: Accel,
    pub memory_mib: u32,
    pub cpus: u32,
    pub kernel: PathBuf,
    pub append: String,
    pub root_image: PathBuf,
    pub disks: Vec<Disk>,
    /// Host file receiving the guest's `bufaio.ktap` virtio-serial port.
    pub ktap_path: PathBuf,
    /// Host file receiving the guest's `bufaio.out` port (exec output).
    pub out_path: PathBuf,
}

pub fn machine_args(accel: Accel) -> Vec<String> {
    match accel {
        Accel::Kvm => vec!["-accel".into(), "kvm".into(), "-cpu".into(), "host".into()],
        Accel::Tcg => vec!["-accel".into(), "tcg".into()],
    }
}

/// Memory and CPUs. The CPUs are spelled out as one socket each: since QEMU
/// 6.2 a bare `-smp N` means one socket with N cores, and SeaBIOS lists only
/// the first CPU of each socket in the MP table, which is the only CPU list a
/// kernel without ACPI (our tinyconfig base) reads; it would boot with 1 CPU.
pub fn resource_args(memory_mib: u32, cpus: u32) -> Vec<String> {
    vec![
        "-m".into(),
        format!("{memory_mib}M"),
        "-smp".into(),
        format!("{cpus},sockets={cpus},cores=1,threads=1"),
    ]
}

/// No display, no firmware menus, exit instead of rebooting (the guest reboots
/// to end the run, and `panic=-1` turns a panic into a reboot).
pub fn behaviour_args() -> Vec<String> {
    [
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-no-user-config",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// Console on the first serial port, read by the host from QEMU's stdout.
pub fn console_args() -> Vec<String> {
    vec!["-serial".into(), "stdio".into()]
}

/// Console on the first serial port, written by QEMU to a file (a VM that
/// outlives the command that started it: `cargo xtask vm`).
pub fn console_file_args(path: &Path) -> Vec<String> {
    vec!["-serial".into(), format!("file:{}", path.display())]
}

/// virtio-net behind QEMU user networking. The only way in is the guest's
/// port 22 forwarded from `127.0.0.1:host_port` (loopback only);
/// `restrict=on` keeps the guest from reaching the host or anything beyond
/// (explicit forwards still work).
pub fn net_args(host_port: u16) -> Vec<String> {
    vec![
        "-netdev".into(),
        format!("user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{host_port}-:22"),
        "-device".into(),
        "virtio-net-pci,netdev=n0".into(),
    ]
}

/// A virtio RNG (host /dev/urandom): the guest's crng is ready at once.
pub fn rng_args() -> Vec<String> {
    vec!["-device".into(), "virtio-rng-pci".into()]
}

pub fn kernel_args(kernel: &Path, append: &str) -> Vec<String> {
    vec![
        "-kernel".into(),
        kernel.display().to_string(),
        "-append".into(),
        append.to_string(),
    ]
}

/// The kernel command line shared by all runs; `extra` goes last so the user
/// can override.
pub fn cmdline(mode: &str, extra: &[String]) -> String {
    let mut parts: Vec<String> = [
        "console=ttyS0",
        "root=/dev/vda",
        "rootfstype=ext2",
        "rw",
        "init=/init",
        "panic=-1",
        "oops=panic",
        "loglevel=7",
        // The slow device: two RAM-backed null_blk disks, 1 ms per IO.
        "null_blk.nr_devices=2",
        "null_blk.memory_backed=1",
        "null_blk.irqmode=2",
        "null_blk.completion_nsec=1000000",
        "null_blk.gb=1",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    parts.push(bufaio_contract::param::word(
        bufaio_contract::param::MODE,
        mode,
    ));
    parts.extend(extra.iter().filter(|s| !s.is_empty()).cloned());
    parts.join(" ")
}

fn drive(file: &Path, extra: &str) -> Vec<String> {
    vec![
        "-drive".into(),
        format!(
            "file={},format=raw,if=virtio,cache=unsafe{extra}",
            file.display()
        ),
    ]
}

/// Root first (vda, copy-on-write snapshot: the cached image is never
/// written), then the per-run disks in order (vdb, vdc, vdd).
pub fn disk_args(root: &Path, disks: &[Disk]) -> Vec<String> {
    let mut v = drive(root, ",snapshot=on");
    for d in disks {
        v.extend(drive(&d.path, ""));
    }
    v
}

/// Results channel: virtio-serial ports named `bufaio.ktap` and `bufaio.out`
/// written to host files.
pub fn virtio_serial_args(ktap: &Path, out: &Path) -> Vec<String> {
    vec![
        "-device".into(),
        "virtio-serial-pci".into(),
        "-chardev".into(),
        format!("file,id=ktap,path={}", ktap.display()),
        "-device".into(),
        "virtserialport,chardev=ktap,name=bufaio.ktap".into(),
        "-chardev".into(),
        format!("file,id=out,path={}", out.display()),
        "-device".into(),
        "virtserialport,chardev=out,name=bufaio.out".into(),
    ]
}

pub fn command_line(spec: &VmSpec) -> Vec<String> {
    let mut v = vec![spec.binary.clone()];
    v.extend(behaviour_args());
    v.extend(machine_args(spec.accel));
    v.extend(resource_args(spec.memory_mib, spec.cpus));
    v.extend(console_args());
    v.extend(kernel_args(&spec.kernel, &spec.append));
    v.extend(disk_args(&spec.root_image, &spec.disks));
    v.extend(virtio_serial_args(&spec.ktap_path, &spec.out_path));
    v
}

/// Shell-quoted rendering, for logs and the manifest.
pub fn render(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=,:@+".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_are_sockets_so_the_mp_table_lists_them() {
        assert_eq!(
            resource_args(512, 2),
            ["-m", "512M", "-smp", "2,sockets=2,cores=1,threads=1"]
        );
    }

    #[test]
    fn accel_args() {
        assert_eq!(machine_args(Accel::Tcg), ["-accel", "tcg"]);
        assert_eq!(machine_args(Accel::Kvm), ["-accel", "kvm", "-cpu", "host"]);
    }

    #[test]
    fn cmdline_has_panic_and_mode_and_extra_last() {
        let c = cmdline("suite", &["bufaio.filter=read/*".into(), String::new()]);
        assert!(c.starts_with("console=ttyS0 "));
        assert!(c.contains(" panic=-1 "));
        assert!(c.contains(" bufaio.mode=suite"));
        assert!(c.ends_with("bufaio.filter=read/*"));
    }

    #[test]
    fn disks_in_order_root_snapshot() {
        let d = |p: &str| Disk {
            path: p.into(),
            fstype: "ext2".into(),
            device: String::new(),
            mountpoint: String::new(),
        };
        let a = disk_args(Path::new("/r.img"), &[d("/b.img"), d("/c.img")]);
        assert_eq!(a.len(), 6);
        assert_eq!(
            a[1],
            "file=/r.img,format=raw,if=virtio,cache=unsafe,snapshot=on"
        );
        assert_eq!(a[3], "file=/b.img,format=raw,if=virtio,cache=unsafe");
        assert!(a[5].starts_with("file=/c.img"));
    }

    #[test]
    fn net_forward_is_loopback_only_and_restricted() {
        let a = net_args(40022);
        assert_eq!(a[0], "-netdev");
        assert_eq!(
            a[1],
            "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:40022-:22"
        );
        assert_eq!(a[2..], ["-device", "virtio-net-pci,netdev=n0"]);
        assert_eq!(rng_args(), ["-device", "virtio-rng-pci"]);
        assert_eq!(
            console_file_args(Path::new("/r/console.log")),
            ["-serial", "file:/r/console.log"]
        );
    }

    #[test]
    fn full_line_and_render() {
        let spec = VmSpec {
            binary: "qemu-system-x86_64".into(),
            accel: Accel::Tcg,
            memory_mib: 1024,
            cpus: 2,
            kernel: "/k/bzImage".into(),
            append: cmdline("suite", &[]),
            root_image: "/r.img".into(),
            disks: vec![],
            ktap_path: "/run/ktap".into(),
            out_path: "/run/out".into(),
        };
        let argv = command_line(&spec);
        assert_eq!(argv[0], "qemu-system-x86_64");
        assert!(argv.contains(&"-no-reboot".to_string()));
        let r = render(&argv);
        assert!(r.contains("-append 'console=ttyS0 root=/dev/vda"), "{r}");
        assert!(r.contains("name=bufaio.ktap"));
    }
}
