//! `cargo xtask vm`: boot a kernel (built with `kconfigs/net.config` on top of
//! the flavor's fragments) with the usual images plus virtio-net and an SSH
//! server (Debian's dropbear) in the guest, and leave it running; `ssh`,
//! `push` and `vm --stop` find it through `target/vm/state.json`.
//!
//! The guest side is the ordinary exec mode of guest-tests: the payload disk
//! holds `start.sh`, dropbear and OpenSSH's sftp-server with their shared
//! libraries, the host key and the authorized key. The script brings eth0
//! up, starts dropbear and waits for `/run/bufaio-stop` (written by
//! `vm --stop`); when it exits PID 1 unmounts, syncs and reboots, which ends
//! QEMU (`-no-reboot`): a clean shutdown.

use super::Common;
use crate::error::{classified, usage};
use crate::exitcode::Outcome;
use crate::patch::Series;
use crate::pipeline::{self, KernelSel};
use crate::qemu::{self, VmSpec};
use crate::rootfs;
use crate::scan;
use crate::ssh::{self, VmState};
use crate::ui::Ui;
use anyhow::{bail, Context, Result};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Which kernel: patched or unpatched.
    #[arg(long, value_enum, default_value = "patched")]
    pub kernel: KernelSel,
    /// Shut the running VM down: clean shutdown over SSH, QEMU killed if it
    /// has not exited after --wait seconds.
    #[arg(long)]
    pub stop: bool,
    /// Only build the kernel with networking and print its path.
    #[arg(long)]
    pub build_only: bool,
    /// Seconds to wait for sshd (start) or for QEMU to exit (stop).
    #[arg(long)]
    pub wait: Option<u64>,
}

/// The guest side: network, devpts, the keys, dropbear in the foreground
/// until the stop flag appears. Its output goes to `exec-output.txt`.
const START_SH: &str = r#"#!/bin/sh
# bufaio vm guest script (exec mode payload): SSH server until /run/bufaio-stop.
P=/mnt/payload
log() { echo "bufaio-vm: $*"; echo "bufaio-vm: $*" > /dev/kmsg; }
while read -r name dest mode; do
    mkdir -p "${dest%/*}" && cp "$P/$name" "$dest" && chmod "$mode" "$dest" || { log "cannot install $dest"; exit 120; }
done < "$P/files.txt"
echo 'passwd: files' > /etc/nsswitch.conf
mkdir -p /dev/pts && mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts || log "devpts mount failed"
ip link set lo up
ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up && ip route add default via 10.0.2.2 || { log "eth0 setup failed"; ip addr; exit 121; }
chmod 700 /root/.ssh /etc/dropbear
rm -f /run/bufaio-stop
/usr/sbin/dropbear -F -E -s -g -j -k -W 1048576 -p 22 -r /etc/dropbear/dropbear_ed25519_host_key -P /run/dropbear.pid &
pid=$!
log "sshd (dropbear) started, pid $pid"
while [ ! -e /run/bufaio-stop ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid"
        st=$?
        log "dropbear exited with status $st"
        exit 122
    fi
    sleep 0.2
done
log "stop requested: shutting down"
kill "$pid"
wait "$pid" 2>/dev/null
exit 0
"#;

/// Where dropbear (Debian build) looks for the SFTP server.
const GUEST_SFTP_SERVER: &str = "/usr/lib/sftp-server";

pub fn main(a: Args) -> Result<i32> {
    crate::deps::check()?;
    let root = super::project_root();
    if a.stop {
        return stop(&root, Duration::from_secs(a.wait.unwrap_or(60)));
    }
    if a.kernel == KernelSel::Both {
        return Err(usage(
            "vm boots one kernel: --kernel patched or --kernel unpatched",
        ));
    }
    let ctx = a.common.context()?;
    if !a.build_only {
        if let Ok(st) = VmState::load(&root) {
            if st.qemu_alive() {
                return Err(usage(format!(
                    "a VM is already running (pid {}, ssh on 127.0.0.1:{}); stop it with `cargo xtask vm --stop`",
                    st.pid, st.port
                )));
            }
        }
        for tool in ["dropbearkey"] {
            if crate::fetch::which(tool).is_none() {
                return Err(classified(
                    Outcome::Infrastructure,
                    format!(
                        "{tool} not found: install dropbear-bin (`cargo xtask deps --install`)"
                    ),
                ));
            }
        }
    }
    let series = Series::load(&ctx.cfg.series)?;
    let (id, dir) = pipeline::new_run_dir(&ctx.root, "vm")?;
    let net = ctx.root.join("kconfigs/net.config");
    let (_src, builds) =
        pipeline::build_kernels_with(&ctx, &series, a.kernel, &a.common.flavor, &dir, &[net])?;
    let kb = &builds[0];
    if a.build_only {
        println!("{}", kb.built.bzimage.display());
        return Ok(0);
    }
    let guest = pipeline::guest_image(&ctx)?;
    let accel = pipeline::accel(&ctx, ctx.cfg.qemu.accel, kb, &guest)?;
    let ui = &ctx.ui;
    ui.info(format!("vm {id}: {}", dir.display()));

    let key = dir.join("id_ed25519");
    let how = client_key(&key)?;
    let client_pub = fs::read_to_string(key.with_extension("pub"))?;
    let payload = dir.join("vm-payload");
    fs::create_dir_all(&payload)?;
    let host_key = stage_payload(&payload, client_pub.trim())?;
    ui.info(format!(
        "keys: client ed25519 ({how}), host ed25519 (dropbearkey), payload staged"
    ));
    let files: Vec<PathBuf> = fs::read_dir(&payload)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    let argv = vec!["sh".to_string(), "start.sh".to_string()];
    let mut disks = rootfs::test_disks(&dir, ctx.cfg.disks.size_mib)?;
    disks.push(rootfs::payload_disk(&dir, &argv, &files)?);
    let _ = fs::remove_dir_all(dir.join("payload"));

    let kernel = dir.join("bzImage");
    fs::copy(&kb.built.bzimage, &kernel).context("cannot copy bzImage into the run dir")?;
    let mut append = vec![];
    if !ctx.cfg.qemu.append.trim().is_empty() {
        append.push(ctx.cfg.qemu.append.trim().to_string());
    }
    append.extend(a.common.append.iter().cloned());
    // The same usable TCG clock as a run's guest (see vm::tcg_clock_args).
    let clock = crate::vm::tcg_clock_args(accel.accel, &append);
    append.extend(clock);
    let spec = VmSpec {
        binary: ctx.cfg.qemu.binary.clone(),
        accel: accel.accel,
        memory_mib: ctx.cfg.qemu.memory_mib,
        cpus: ctx.cfg.qemu.cpus,
        kernel: kernel.clone(),
        append: qemu::cmdline("exec", &append),
        root_image: guest.image.clone(),
        disks,
        ktap_path: dir.join("results.ktap"),
        out_path: dir.join("exec-output.txt"),
    };
    let console = dir.join("console.log");
    let port = free_port()?;
    let mut argv = qemu::command_line(&spec);
    replace_console(&mut argv, &console);
    argv.extend(qemu::net_args(port));
    argv.extend(qemu::rng_args());
    fs::write(dir.join("qemu-command.txt"), qemu::render(&argv) + "\n")?;
    for p in [&spec.ktap_path, &spec.out_path, &console] {
        fs::write(p, b"")?;
    }
    let stderr_log = dir.join("qemu-stderr.log");
    let start = Instant::now();
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(fs::File::create(dir.join("qemu-stdout.log"))?)
        .stderr(fs::File::create(&stderr_log)?)
        // Its own process group: survives our exit and Ctrl-C in this terminal.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", argv[0]))?;
    let pid = child.id() as i32;
    let state = VmState {
        pid,
        port,
        key: key.clone(),
        host_key: host_key.clone(),
        run_dir: dir.clone(),
        console: console.clone(),
        variants: kb.variants.iter().map(|v| v.name().to_string()).collect(),
        flavor: a.common.flavor.clone(),
        kernel,
    };
    state.save(&root)?;
    let stage = ui.stage(
        "vm",
        format!(
            "booting ({:?}), waiting for sshd on 127.0.0.1:{port}",
            accel.accel
        ),
    );
    let allow = pipeline::load_allowlist(&ctx)?;
    let wait = Duration::from_secs(a.wait.unwrap_or(ctx.cfg.timeouts.boot_s.max(90)));
    let deadline = start + wait;
    // QEMU has its own process group: Ctrl-C (or a TERM) while we wait must
    // not leave it behind.
    let handler = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
    let r = ssh::connect_until(port, &key, &host_key, deadline, || {
        if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
            bail!("interrupted");
        }
        if let Some(st) = child.try_wait()? {
            bail!("QEMU exited ({st}) before sshd came up");
        }
        let text = fs::read_to_string(&console).unwrap_or_default();
        if let Some(s) = scan::first_failing(&scan::scan(&text, &allow)) {
            bail!("the kernel crashed while booting: {}", s.title);
        }
        Ok(())
    });
    // SAFETY: back to the default dispositions.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
    }
    let sess = match r {
        Ok(s) => s,
        Err(e) => {
            kill_group(pid);
            let _ = child.wait();
            let _ = fs::remove_file(ssh::state_path(&root));
            stage.finish("failed");
            let crashed = format!("{e:#}").contains("crashed");
            let text = fs::read_to_string(&console).unwrap_or_default();
            let out = fs::read_to_string(&spec.out_path).unwrap_or_default();
            let msg = format!(
                "sshd in the guest did not answer on 127.0.0.1:{port} within {} s: {e:#}\n\
                 QEMU (pid {pid}) was killed. Look at the console log {} and the guest script's output {}.\n\
                 {}\n--- last console lines ---\n{}\n--- guest script output ---\n{}",
                wait.as_secs(),
                console.display(),
                spec.out_path.display(),
                excerpt_hint(&text, &allow),
                tail(&text, 15),
                tail(&out, 15),
            );
            let outcome = if crashed {
                Outcome::KernelCrash
            } else {
                Outcome::Infrastructure
            };
            return Err(classified(outcome, msg));
        }
    };
    let (st, uname) = ssh::output(&sess, "uname -r")?;
    stage.finish(format!(
        "sshd up after {:.1}s (guest kernel {})",
        start.elapsed().as_secs_f64(),
        if st == 0 { uname.trim() } else { "?" }
    ));
    // The child keeps running after we exit (reparented); never waited here.
    std::mem::forget(child);
    println!(
        "VM running: pid {pid}, ssh on 127.0.0.1:{port} (root, key {})",
        key.display()
    );
    println!("  console:  {}", console.display());
    println!("  state:    {}", ssh::state_path(&root).display());
    println!("  cargo xtask ssh                    # interactive shell");
    println!("  cargo xtask ssh -- uname -a        # one command");
    println!("  cargo xtask push --run 'read/*'    # rebuild guest-tests, upload, run");
    println!("  cargo xtask vm --stop              # clean shutdown");
    println!(
        "  ssh -i {} -p {port} -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no root@127.0.0.1",
        key.display()
    );
    Ok(0)
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// A fresh ed25519 key pair at `key` / `key.pub` (OpenSSH format).
fn client_key(key: &Path) -> Result<&'static str> {
    let _ = fs::remove_file(key);
    if crate::fetch::which("ssh-keygen").is_some() {
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "bufaio-vm", "-f"])
            .arg(key))?;
        return Ok("ssh-keygen");
    }
    client_key_dropbear(key)
}

/// Without OpenSSH: generate in dropbear's format, convert the private key,
/// and take the public line from `dropbearkey -y`.
fn client_key_dropbear(key: &Path) -> Result<&'static str> {
    let db = key.with_extension("dropbear");
    run(Command::new("dropbearkey")
        .args(["-t", "ed25519", "-f"])
        .arg(&db))?;
    run(Command::new("dropbearconvert")
        .args(["dropbear", "openssh"])
        .arg(&db)
        .arg(key))?;
    let public = public_line(&db)?;
    fs::write(key.with_extension("pub"), public + " bufaio-vm\n")?;
    Ok("dropbearkey + dropbearconvert")
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `TYPE BASE64` of a dropbear key file.
fn public_line(dropbear_key: &Path) -> Result<String> {
    let out = run(Command::new("dropbearkey")
        .arg("-y")
        .arg("-f")
        .arg(dropbear_key))?;
    out.lines()
        .find(|l| l.starts_with("ssh-"))
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .with_context(|| format!("no public key in dropbearkey -y output: {out}"))
}

/// Shared libraries of a dynamic executable as `ldd` names them, loader
/// included (exact paths: the guest gets them at the same places).
pub fn shared_libs(ldd_output: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for l in ldd_output.lines() {
        let l = l.trim();
        let path = match l.split_once("=>") {
            Some((_, rhs)) => rhs.trim().split(" (").next().unwrap_or("").trim(),
            None => l.split(" (").next().unwrap_or("").trim(),
        };
        if path.starts_with('/') {
            v.push(PathBuf::from(path));
        }
    }
    v
}

/// Fill the payload dir: start.sh, files.txt (name → guest path, mode), the
/// executables and their libraries, the host key and authorized_keys.
/// Returns the host public key line.
fn stage_payload(payload: &Path, client_pub: &str) -> Result<String> {
    fs::write(payload.join("start.sh"), START_SH)?;
    let mut list = String::new();
    let mut installed: Vec<PathBuf> = Vec::new();
    let mut n = 0;
    let mut add = |src: &Path, dest: &Path, mode: &str, list: &mut String| -> Result<()> {
        n += 1;
        let name = format!(
            "f{n:02}-{}",
            dest.file_name().unwrap_or_default().to_string_lossy()
        );
        fs::copy(src, payload.join(&name))
            .with_context(|| format!("cannot copy {}", src.display()))?;
        list.push_str(&format!("{name} {} {mode}\n", dest.display()));
        Ok(())
    };
    let mut bins = vec![(
        PathBuf::from("/usr/sbin/dropbear"),
        PathBuf::from("/usr/sbin/dropbear"),
    )];
    let sftp = Path::new("/usr/lib/openssh/sftp-server");
    if sftp.is_file() {
        bins.push((sftp.to_path_buf(), PathBuf::from(GUEST_SFTP_SERVER)));
    }
    for (src, dest) in &bins {
        add(src, dest, "755", &mut list)?;
        let ldd = run(Command::new("ldd").arg(src))?;
        for lib in shared_libs(&ldd) {
            if !installed.contains(&lib) {
                add(&lib, &lib, "755", &mut list)?;
                installed.push(lib);
            }
        }
    }
    let hk = payload.join("hostkey.tmp");
    run(Command::new("dropbearkey")
        .args(["-t", "ed25519", "-f"])
        .arg(&hk))?;
    let host_pub = public_line(&hk)?;
    add(
        &hk,
        Path::new("/etc/dropbear/dropbear_ed25519_host_key"),
        "600",
        &mut list,
    )?;
    fs::remove_file(&hk)?;
    let ak = payload.join("authorized_keys.tmp");
    fs::write(
        &ak,
        format!("no-port-forwarding,no-agent-forwarding,no-X11-forwarding {client_pub}\n"),
    )?;
    add(
        &ak,
        Path::new("/root/.ssh/authorized_keys"),
        "600",
        &mut list,
    )?;
    fs::remove_file(&ak)?;
    fs::write(payload.join("files.txt"), list)?;
    Ok(host_pub)
}

/// A free TCP port on 127.0.0.1 (bound and released; QEMU binds it next).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// `-serial stdio` → `-serial file:console.log`.
fn replace_console(argv: &mut Vec<String>, console: &Path) {
    let file = qemu::console_file_args(console);
    if let Some(i) = argv
        .windows(2)
        .position(|w| w[0] == "-serial" && w[1] == "stdio")
    {
        argv.splice(i..i + 2, file);
    } else {
        argv.extend(file);
    }
}

pub fn kill_group(pid: i32) {
    // SAFETY: signals to QEMU's own process group (pgid == pid, see spawn).
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn excerpt_hint(console: &str, allow: &scan::Allowlist) -> String {
    match scan::first_failing(&scan::scan(console, allow)) {
        Some(s) => format!("--- kernel splat ({}) ---\n{}", s.title, s.excerpt),
        None => String::new(),
    }
}

/// The VM is gone although nobody stopped it: say why, from its console.
pub fn dead_vm_error(st: &VmState) -> anyhow::Error {
    let text = fs::read_to_string(&st.console).unwrap_or_default();
    let splats = scan::scan(&text, &scan::Allowlist::empty());
    match scan::first_failing(&splats) {
        Some(s) => classified(
            Outcome::KernelCrash,
            format!(
                "the VM (pid {}) is gone: the kernel crashed — {} ({}:{}):\n{}\n(clean up with `cargo xtask vm --stop`)",
                st.pid,
                s.title,
                st.console.display(),
                s.line,
                s.excerpt
            ),
        ),
        None => classified(
            Outcome::Infrastructure,
            format!(
                "the VM (pid {}) is not running any more; last console lines ({}):\n{}\n(clean up with `cargo xtask vm --stop`)",
                st.pid,
                st.console.display(),
                tail(&text, 15)
            ),
        ),
    }
}

/// `vm --stop`: ask the guest script to end (PID 1 then unmounts, syncs and
/// reboots, which ends QEMU), wait, kill after `wait`, then judge the console
/// with the same scanner as runs and fsck the test disks.
fn stop(root: &Path, wait: Duration) -> Result<i32> {
    let st = VmState::load(root)?;
    let ui = Ui::new();
    let was_alive = st.qemu_alive();
    let mut how = "already gone";
    if was_alive {
        let r = ssh::connect(st.port, &st.key, &st.host_key, Duration::from_secs(10))
            .and_then(|s| ssh::output(&s, "touch /run/bufaio-stop"));
        how = match r {
            Ok((0, _)) => "clean shutdown requested over SSH",
            Ok((code, out)) => {
                ui.warn(format!("stop request exited {code}: {}", out.trim()));
                "stop request failed"
            }
            Err(e) => {
                ui.warn(format!("cannot reach the guest over SSH: {e:#}"));
                "SSH unreachable"
            }
        };
        let deadline = Instant::now() + wait;
        while st.qemu_alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if st.qemu_alive() {
            ui.warn(format!(
                "QEMU (pid {}) still running {} s after the stop request: killing it",
                st.pid,
                wait.as_secs()
            ));
            kill_group(st.pid);
            std::thread::sleep(Duration::from_millis(300));
            how = "killed after timeout";
        }
    }
    let _ = fs::remove_file(ssh::state_path(root));
    let text = fs::read_to_string(&st.console).unwrap_or_default();
    let splats = scan::scan(&text, &scan::Allowlist::empty());
    let done = text.contains(bufaio_contract::DONE);
    let exec_status = fs::read_to_string(st.run_dir.join("results.ktap"))
        .ok()
        .and_then(|k| crate::ktap::parse(&k).exec_status);
    let mut fsck = Vec::new();
    if done {
        for fs_ in ["ext2", "ext3"] {
            let path = st.run_dir.join(format!("disk-{fs_}.img"));
            if path.is_file() {
                let d = rootfs::Disk {
                    path: path.clone(),
                    fstype: fs_.into(),
                    device: String::new(),
                    mountpoint: String::new(),
                };
                let (ok, text) = rootfs::fsck(&d)?;
                fsck.push((fs_, ok, text));
            }
        }
    }
    for f in ["disk-ext2.img", "disk-ext3.img", "disk-payload.img"] {
        let _ = fs::remove_file(st.run_dir.join(f));
    }
    if let Some(s) = scan::first_failing(&splats) {
        println!(
            "vm: the kernel crashed — {} ({}:{}):\n{}",
            s.title,
            st.console.display(),
            s.line,
            s.excerpt
        );
        return Ok(Outcome::KernelCrash.code());
    }
    if !done {
        println!(
            "vm: QEMU (pid {}) ended without BUFAIO-DONE ({how}); last console lines ({}):\n{}",
            st.pid,
            st.console.display(),
            tail(&text, 15)
        );
        return Ok(if was_alive {
            Outcome::KernelCrash.code()
        } else {
            Outcome::Infrastructure.code()
        });
    }
    for (fs_, ok, text) in &fsck {
        if !ok {
            println!("vm: e2fsck -fn found errors on the {fs_} test disk:\n{text}");
            return Ok(Outcome::TestFailed.code());
        }
    }
    println!(
        "vm: stopped cleanly (pid {}, {how}; guest script exit {}, BUFAIO-DONE, test disks fsck clean); console: {}",
        st.pid,
        exec_status.map(|s| s.to_string()).unwrap_or_else(|| "?".into()),
        st.console.display()
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_paths_exact_with_loader() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            shared_libs(out),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libz.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn console_goes_to_a_file() {
        let mut argv: Vec<String> = ["q", "-serial", "stdio", "-kernel", "k"]
            .map(String::from)
            .to_vec();
        replace_console(&mut argv, Path::new("/r/console.log"));
        assert_eq!(
            argv,
            ["q", "-serial", "file:/r/console.log", "-kernel", "k"]
        );
    }

    #[test]
    fn dropbear_only_client_key_is_openssh_format() {
        if crate::fetch::which("dropbearconvert").is_none() {
            eprintln!("dropbear-bin not installed: skipped");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let key = d.path().join("id_ed25519");
        client_key_dropbear(&key).unwrap();
        let private = fs::read_to_string(&key).unwrap();
        assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        let public = fs::read_to_string(key.with_extension("pub")).unwrap();
        assert!(public.starts_with("ssh-ed25519 AAAA"), "{public}");
        assert_eq!(ssh::key_blob(&public).unwrap()[4..15], *b"ssh-ed25519");
    }

    #[test]
    fn start_script_is_locked_down() {
        // Key only (-s, -g: no passwords at all), no forwarding (-j, -k).
        assert!(START_SH.contains("/usr/sbin/dropbear -F -E -s -g -j -k -W 1048576 -p 22"));
        assert!(START_SH.contains("/run/bufaio-stop"));
    }
}
