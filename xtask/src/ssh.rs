//! SSH to the `cargo xtask vm` guest with the ssh2 crate (libssh2): state of
//! the running VM, connection with a pinned host key and the per-VM client
//! key, command execution with streamed output, an interactive PTY shell, and
//! uploads over SFTP.

use anyhow::{bail, Context, Result};
use base64::Engine;
use serde::{Deserialize, Serialize};
use ssh2::Session;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What `cargo xtask vm` leaves behind for `ssh`, `push` and `vm --stop`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VmState {
    /// QEMU's pid (also its process group id).
    pub pid: i32,
    /// Host port forwarded to the guest's port 22, bound to 127.0.0.1 only.
    pub port: u16,
    /// The per-VM client private key (OpenSSH format; `.pub` beside it).
    pub key: PathBuf,
    /// The guest's host public key, `ssh-ed25519 AAAA…` (pinned: any other is refused).
    pub host_key: String,
    /// The run directory (console.log, qemu-stderr.log, disks, …).
    pub run_dir: PathBuf,
    pub console: PathBuf,
    /// Kernel variants this VM stands for (`patched`, `unpatched`).
    pub variants: Vec<String>,
    pub flavor: String,
    /// The bzImage that was booted.
    pub kernel: PathBuf,
}

/// `target/vm` (or `$BUFAIO_VM_DIR`): where the state of the one running VM lives.
pub fn state_dir(root: &Path) -> PathBuf {
    match std::env::var_os("BUFAIO_VM_DIR") {
        Some(d) => PathBuf::from(d),
        None => root.join("target/vm"),
    }
}

pub fn state_path(root: &Path) -> PathBuf {
    state_dir(root).join("state.json")
}

impl VmState {
    pub fn load(root: &Path) -> Result<VmState> {
        let p = state_path(root);
        let text = fs::read_to_string(&p).map_err(|e| {
            crate::error::usage(format!(
                "no VM is running ({}: {e}); start one with `cargo xtask vm`",
                p.display()
            ))
        })?;
        serde_json::from_str(&text).with_context(|| format!("cannot parse {}", p.display()))
    }

    pub fn save(&self, root: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        fs::create_dir_all(state_dir(root))?;
        crate::cache::write_atomic(&state_path(root), text.as_bytes())?;
        fs::write(self.run_dir.join("state.json"), text)?;
        Ok(())
    }

    /// Whether the recorded QEMU process still runs (and is ours: its command
    /// line names our run dir, so a recycled pid is never mistaken for it).
    pub fn qemu_alive(&self) -> bool {
        qemu_alive(self.pid, &self.run_dir)
    }
}

pub fn qemu_alive(pid: i32, run_dir: &Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie (state Z after the last ')') has exited already.
        if let Some(rest) = stat.rsplit_once(')') {
            if rest.1.trim_start().starts_with('Z') {
                return false;
            }
        }
    }
    let needle = run_dir.display().to_string();
    String::from_utf8_lossy(&cmdline).contains(&needle)
}

/// The key blob of an OpenSSH public key line (`TYPE BASE64 [comment]`).
pub fn key_blob(line: &str) -> Result<Vec<u8>> {
    let b64 = line
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("not a public key line: {line:?}"))?;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .with_context(|| format!("bad base64 in public key {line:?}"))
}

/// Connect to 127.0.0.1:`port`, check the host key against `host_key` (an
/// OpenSSH public key line) and authenticate as root with `key`.
pub fn connect(port: u16, key: &Path, host_key: &str, timeout: Duration) -> Result<Session> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let tcp = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot connect to {addr}"))?;
    let mut sess = Session::new().context("cannot create an SSH session")?;
    sess.set_timeout(timeout.as_millis().min(u32::MAX as u128) as u32);
    sess.set_tcp_stream(tcp);
    sess.handshake()
        .with_context(|| format!("SSH handshake with {addr} failed"))?;
    let want = key_blob(host_key)?;
    let got = sess.host_key().map(|(k, _)| k.to_vec()).unwrap_or_default();
    if got != want {
        bail!(
            "host key mismatch on {addr}: the server is not this VM's guest (expected {})",
            host_key
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    let public = key.with_extension("pub");
    sess.userauth_pubkey_file(
        "root",
        public.is_file().then_some(public.as_path()),
        key,
        None,
    )
    .with_context(|| format!("public key authentication with {} refused", key.display()))?;
    if !sess.authenticated() {
        bail!("not authenticated with {}", key.display());
    }
    // Commands may run as long as they like; only connecting is bounded.
    sess.set_timeout(0);
    Ok(sess)
}

/// Keep trying [`connect`] until it works or `deadline`; `alive` is asked
/// between tries (so a dead VM ends the wait at once).
pub fn connect_until(
    port: u16,
    key: &Path,
    host_key: &str,
    deadline: Instant,
    mut alive: impl FnMut() -> Result<()>,
) -> Result<Session> {
    let mut last = anyhow::anyhow!("no attempt");
    let mut attempt = 0u64;
    while Instant::now() < deadline {
        alive()?;
        // Short first tries: QEMU's user networking accepts at once and then
        // retries its SYN to the guest with backoff, so an early try can sit
        // for seconds after sshd is already listening. Later tries allow a
        // slow key exchange (TCG on a loaded host).
        attempt += 1;
        let t = Duration::from_secs(attempt.min(8));
        match connect(port, key, host_key, t) {
            Ok(s) => return Ok(s),
            Err(e) => {
                // A wrong host key is not a matter of waiting longer.
                if format!("{e:#}").contains("host key mismatch") {
                    return Err(e);
                }
                last = e;
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Err(last)
}

fn would_block(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::WouldBlock
}

/// Run `cmd` in the guest, feeding `stdin` (then EOF), passing each chunk of
/// stdout and stderr to the callbacks as it arrives; returns the exit status
/// (128 + signal number when the command was killed by a signal).
pub fn exec(
    sess: &Session,
    cmd: &str,
    stdin: Option<&[u8]>,
    on_out: &mut dyn FnMut(&[u8]),
    on_err: &mut dyn FnMut(&[u8]),
) -> Result<i32> {
    let mut ch = sess
        .channel_session()
        .context("cannot open an SSH channel")?;
    ch.exec(cmd)
        .with_context(|| format!("cannot exec {cmd:?} in the guest"))?;
    if let Some(data) = stdin {
        ch.write_all(data).context("cannot send stdin")?;
    }
    ch.send_eof().ok();
    sess.set_blocking(false);
    let r = pump(sess, &mut ch, on_out, on_err);
    sess.set_blocking(true);
    r?;
    ch.wait_close().ok();
    status_of(&ch)
}

fn pump(
    sess: &Session,
    ch: &mut ssh2::Channel,
    on_out: &mut dyn FnMut(&[u8]),
    on_err: &mut dyn FnMut(&[u8]),
) -> Result<()> {
    let _ = sess;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let mut progress = false;
        match ch.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => {
                on_out(&buf[..n]);
                progress = true;
            }
            Err(e) if would_block(&e) => {}
            Err(e) => return Err(e).context("reading the command's output"),
        }
        match ch.stderr().read(&mut buf) {
            Ok(0) => {}
            Ok(n) => {
                on_err(&buf[..n]);
                progress = true;
            }
            Err(e) if would_block(&e) => {}
            Err(e) => return Err(e).context("reading the command's stderr"),
        }
        if !progress {
            if ch.eof() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn status_of(ch: &ssh2::Channel) -> Result<i32> {
    if let Ok(sig) = ch.exit_signal() {
        if let Some(name) = sig.exit_signal {
            return Ok(128 + signal_number(&name));
        }
    }
    ch.exit_status().context("no exit status from the guest")
}

fn signal_number(name: &str) -> i32 {
    match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "ABRT" => 6,
        "FPE" => 8,
        "KILL" => 9,
        "SEGV" => 11,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        _ => 0,
    }
}

/// Run `cmd`, collecting stdout and stderr (for short helper commands).
pub fn output(sess: &Session, cmd: &str) -> Result<(i32, String)> {
    let mut text = Vec::new();
    let mut err = Vec::new();
    let st = exec(
        sess,
        cmd,
        None,
        &mut |b| text.extend_from_slice(b),
        &mut |b| err.extend_from_slice(b),
    )?;
    text.extend_from_slice(&err);
    Ok((st, String::from_utf8_lossy(&text).into_owned()))
}

/// Upload `local` to `remote` with mode 0755: SFTP to `remote.new`, then an
/// atomic `mv` (the old binary may still be running: no ETXTBSY). Without an
/// SFTP server in the guest it falls back to `cat >` over an exec channel.
/// Returns how it was sent.
pub fn upload(sess: &Session, local: &Path, remote: &str) -> Result<&'static str> {
    let data = fs::read(local).with_context(|| format!("cannot read {}", local.display()))?;
    let tmp = format!("{remote}.new");
    let how = match sess.sftp() {
        Ok(sftp) => {
            let mut f = sftp
                .open_mode(
                    Path::new(&tmp),
                    ssh2::OpenFlags::WRITE | ssh2::OpenFlags::CREATE | ssh2::OpenFlags::TRUNCATE,
                    0o755,
                    ssh2::OpenType::File,
                )
                .with_context(|| format!("SFTP: cannot create {tmp}"))?;
            // Bounded: a stuck transfer fails instead of hanging.
            sess.set_timeout(120_000);
            let r = data.chunks(16 * 1024).try_for_each(|c| f.write_all(c));
            sess.set_timeout(0);
            r.with_context(|| format!("SFTP: writing {tmp}"))?;
            f.close().ok();
            "sftp"
        }
        Err(_) => {
            let st = exec(
                sess,
                &format!("cat > {tmp}"),
                Some(&data),
                &mut |_| {},
                &mut |_| {},
            )?;
            if st != 0 {
                bail!("cat > {tmp} exited with {st}");
            }
            "exec cat"
        }
    };
    let (st, out) = output(
        sess,
        &format!("chmod 755 {tmp} && mv -f {tmp} {remote} && wc -c < {remote}"),
    )?;
    if st != 0 {
        bail!("installing {remote} failed ({st}): {}", out.trim());
    }
    if out.trim() != data.len().to_string() {
        bail!(
            "{remote} has {} bytes in the guest, {} expected",
            out.trim(),
            data.len()
        );
    }
    Ok(how)
}

/// Restores the terminal mode on drop.
struct RawMode(Option<libc::termios>);

impl RawMode {
    fn enter() -> RawMode {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a properly sized struct.
        unsafe {
            if libc::isatty(0) != 1 {
                return RawMode(None);
            }
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return RawMode(None);
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(0, libc::TCSANOW, &t);
            RawMode(Some(saved))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = self.0 {
            // SAFETY: restoring the attributes read in `enter`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, &t);
            }
        }
    }
}

fn window_size() -> (u32, u32) {
    // SAFETY: TIOCGWINSZ fills a winsize struct.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_col > 0 {
            return (ws.ws_col as u32, ws.ws_row as u32);
        }
    }
    (80, 24)
}

/// Interactive shell on a PTY: the local terminal in raw mode, keys to the
/// guest, output to our stdout, until the shell exits. Returns its status.
pub fn shell(sess: &Session) -> Result<i32> {
    let mut ch = sess
        .channel_session()
        .context("cannot open an SSH channel")?;
    let term = std::env::var("TERM").unwrap_or_else(|_| "vt100".into());
    let (cols, rows) = window_size();
    ch.request_pty(&term, None, Some((cols, rows, 0, 0)))
        .context("cannot allocate a PTY in the guest")?;
    ch.shell().context("cannot start a shell in the guest")?;
    let raw = RawMode::enter();
    sess.set_blocking(false);
    let mut stdout = std::io::stdout();
    let mut buf = vec![0u8; 16 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut stdin_open = true;
    loop {
        let mut progress = false;
        match ch.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => {
                stdout.write_all(&buf[..n]).ok();
                stdout.flush().ok();
                progress = true;
            }
            Err(e) if would_block(&e) => {}
            Err(e) => {
                drop(raw);
                sess.set_blocking(true);
                return Err(e).context("reading from the guest shell");
            }
        }
        if stdin_open && pending.is_empty() {
            let mut pfd = libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd; read into a buffer of the given length.
            let ready = unsafe { libc::poll(&mut pfd, 1, 10) };
            if ready > 0 {
                let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    stdin_open = false;
                    ch.send_eof().ok();
                } else {
                    pending.extend_from_slice(&buf[..n as usize]);
                }
            }
        }
        if !pending.is_empty() {
            match ch.write(&pending) {
                Ok(n) => {
                    pending.drain(..n);
                    progress = true;
                }
                Err(e) if would_block(&e) => {}
                Err(_) => pending.clear(),
            }
        }
        if ch.eof() {
            break;
        }
        if !progress && !stdin_open {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    drop(raw);
    sess.set_blocking(true);
    ch.wait_close().ok();
    status_of(&ch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_blob_decodes_the_second_field() {
        let b = key_blob("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 root@x").unwrap();
        assert_eq!(&b[4..15], b"ssh-ed25519");
        assert!(key_blob("garbage").is_err());
    }

    #[test]
    fn state_roundtrip_and_dead_pid() {
        let s = VmState {
            pid: i32::MAX,
            port: 2222,
            key: "/k".into(),
            host_key: "ssh-ed25519 AAAA".into(),
            run_dir: "/nonexistent-run".into(),
            console: "/c".into(),
            variants: vec!["patched".into()],
            flavor: "default".into(),
            kernel: "/bz".into(),
        };
        let t = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<VmState>(&t).unwrap(), s);
        assert!(!s.qemu_alive());
        // Our own pid is alive but its command line does not name the run dir.
        assert!(!qemu_alive(
            std::process::id() as i32,
            Path::new("/nonexistent-run")
        ));
    }
}
