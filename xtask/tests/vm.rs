//! End to end for the developer loop (issue 8): `cargo xtask vm` boots the
//! kernel with networking and dropbear, `ssh` runs commands over ssh2, `push`
//! uploads a fresh guest-tests and runs a test, `vm --stop` shuts down
//! cleanly; the forward is loopback-only, a wrong key is refused, a crashed
//! guest is reported with its console excerpt. Each test keeps its VM state
//! in its own directory (`BUFAIO_VM_DIR`), so a developer's VM is untouched,
//! and a guard stops (or kills) the VM whatever happens: no orphan QEMU.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One TCG guest at a time on a 2-core host.
static SERIAL: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

struct Out {
    code: i32,
    stdout: String,
    text: String,
}

fn xtask(vm_dir: &Path, args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .current_dir(root())
        .env("BUFAIO_VM_DIR", vm_dir)
        .env_remove("GITHUB_ACTIONS")
        .output()
        .expect("run xtask");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("--- xtask {args:?} → {:?}\n{text}", out.status.code());
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout,
        text,
    }
}

fn state(vm_dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(vm_dir.join("state.json")).expect("state.json");
    serde_json::from_str(&text).unwrap()
}

fn alive(pid: i64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .map(|r| r.1.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Stops the VM (and kills QEMU if that fails) when the test ends, passing
/// or not.
struct Guard {
    dir: tempfile::TempDir,
    pid: Option<i64>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.dir.path().join("state.json").exists() {
            let _ = xtask(self.dir.path(), &["vm", "--stop", "--wait", "20"]);
        }
        if let Some(pid) = self.pid {
            if alive(pid) {
                // SAFETY: QEMU's own process group (vm spawns it with pgid == pid).
                unsafe {
                    libc::kill(-(pid as i32), libc::SIGKILL);
                }
            }
        }
    }
}

fn start_vm() -> (Guard, serde_json::Value) {
    let mut g = Guard {
        dir: tempfile::tempdir().unwrap(),
        pid: None,
    };
    let o = xtask(g.dir.path(), &["vm", "--kernel", "patched"]);
    assert_eq!(o.code, 0, "vm failed");
    assert!(o.stdout.contains("VM running: pid "), "{}", o.stdout);
    let st = state(g.dir.path());
    g.pid = st["pid"].as_i64();
    assert!(alive(g.pid.unwrap()), "QEMU not running after vm returned");
    (g, st)
}

/// Listening sockets on `port` from /proc/net/tcp{,6}: local addresses in hex.
fn listeners(port: u16) -> Vec<String> {
    let mut v = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for l in text.lines().skip(1) {
            let cols: Vec<&str> = l.split_whitespace().collect();
            if cols.len() > 3 && cols[3] == "0A" {
                if let Some((addr, p)) = cols[1].split_once(':') {
                    if u16::from_str_radix(p, 16) == Ok(port) {
                        v.push(addr.to_string());
                    }
                }
            }
        }
    }
    v
}

#[test]
fn vm_ssh_push_stop_loopback_only_and_key_only() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (g, st) = start_vm();
    let dir = g.dir.path();
    let port = st["port"].as_u64().unwrap() as u16;
    let pid = st["pid"].as_i64().unwrap();

    // A command: output streamed back, its exit status returned.
    let o = xtask(dir, &["ssh", "--", "uname -r; echo to-stderr >&2; exit 3"]);
    assert_eq!(o.code, 3, "exit status of the guest command");
    assert!(o.stdout.starts_with("6.12"), "{}", o.stdout);
    assert!(o.text.contains("to-stderr"));

    // The forward listens on 127.0.0.1 only: no wildcard or other address
    // (checked on the host's socket table, so no traffic leaves loopback),
    // and another loopback address does not reach it.
    let l = listeners(port);
    assert_eq!(l, ["0100007F"], "listeners on port {port}: {l:?}");
    let other = SocketAddr::from(([127, 0, 0, 2], port));
    assert!(
        TcpStream::connect_timeout(&other, Duration::from_secs(2)).is_err(),
        "{other} must not reach the forward"
    );

    // Only this VM's key: a fresh other key and passwords are refused.
    let wrong = dir.join("wrong_key");
    let st_ = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&wrong)
        .status()
        .unwrap();
    assert!(st_.success());
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut sess = ssh2::Session::new().unwrap();
    sess.set_timeout(30_000);
    sess.set_tcp_stream(tcp);
    sess.handshake().unwrap();
    let methods = sess.auth_methods("root").unwrap_or("").to_string();
    assert!(!methods.contains("password"), "auth methods: {methods}");
    assert!(sess
        .userauth_pubkey_file("root", Some(&wrong.with_extension("pub")), &wrong, None)
        .is_err());
    assert!(sess.userauth_password("root", "").is_err());
    assert!(sess.userauth_password("root", "root").is_err());
    assert!(!sess.authenticated());

    // Push a freshly built guest-tests and run one test; KTAP parsed like a run.
    let o = xtask(dir, &["push", "--run", "basic/setup_destroy"]);
    assert_eq!(o.code, 0, "push failed");
    assert!(o.text.contains("over sftp"), "uploaded over SFTP");
    assert!(
        o.stdout.contains("pass   basic/setup_destroy"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("push: pass — 1 test(s) passed"),
        "{}",
        o.stdout
    );
    let res = o
        .stdout
        .lines()
        .find_map(|l| l.split("results: ").nth(1))
        .map(|s| PathBuf::from(s.trim_end_matches(')')))
        .unwrap();
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(res.join("results.json")).unwrap()).unwrap();
    assert_eq!(r["tests"][0]["name"], "basic/setup_destroy");
    assert!(std::fs::read_to_string(res.join("results.ktap"))
        .unwrap()
        .starts_with("KTAP version 1"));

    // Clean shutdown; QEMU gone; state removed.
    let o = xtask(dir, &["vm", "--stop"]);
    assert_eq!(o.code, 0, "stop failed");
    assert!(o.stdout.contains("stopped cleanly"), "{}", o.stdout);
    let t = Instant::now();
    while alive(pid) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!alive(pid), "QEMU {pid} still running after vm --stop");
    assert!(!dir.join("state.json").exists());
    assert!(listeners(port).is_empty());
}

#[test]
fn crashed_guest_is_reported_with_the_console_excerpt() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (g, st) = start_vm();
    let dir = g.dir.path();
    let pid = st["pid"].as_i64().unwrap();
    // The connection dies with the kernel: the status is not the point.
    let _ = xtask(dir, &["ssh", "--", "sync; echo c > /proc/sysrq-trigger"]);
    let t = Instant::now();
    while alive(pid) && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!alive(pid), "panic=-1 + -no-reboot should end QEMU");
    let o = xtask(dir, &["ssh", "--", "true"]);
    assert_eq!(o.code, 2, "a crashed VM is a kernel crash (exit 2)");
    assert!(o.text.contains("the kernel crashed"), "{}", o.text);
    assert!(o.text.contains("sysrq"), "{}", o.text);
    let o = xtask(dir, &["vm", "--stop"]);
    assert_eq!(o.code, 2);
    assert!(o.stdout.contains("Kernel panic"), "{}", o.stdout);
    assert!(!dir.join("state.json").exists());
}

#[test]
fn sshd_wait_is_bounded_and_leaves_no_qemu() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // One second is too short for any TCG boot to reach sshd.
    let o = xtask(dir.path(), &["vm", "--wait", "1"]);
    assert_eq!(
        o.code, 128,
        "an sshd that never answers is an infrastructure error"
    );
    assert!(
        o.text.contains("did not answer on 127.0.0.1:"),
        "{}",
        o.text
    );
    assert!(
        o.text.contains("console.log"),
        "names the console log: {}",
        o.text
    );
    let pid: i64 = o
        .text
        .split("QEMU (pid ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|p| p.parse().ok())
        .expect("the message names QEMU's pid");
    assert!(!alive(pid), "QEMU {pid} left running");
    assert!(!dir.path().join("state.json").exists());
}
