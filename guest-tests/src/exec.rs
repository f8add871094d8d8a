//! Exec mode: run the user's command from the payload disk.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::init::{console, open_port};
use crate::sys;

pub const PATH: &str = "/mnt/payload:/bin:/sbin:/usr/bin:/usr/sbin";

/// Splits the payload's `cmd` file (NUL-separated argv, trailing NUL
/// optional) into arguments.
pub fn parse_cmd(bytes: &[u8]) -> Result<Vec<String>, String> {
    let body = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if body.is_empty() {
        return Err("cmd is empty".to_string());
    }
    let argv: Vec<String> = body
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if argv[0].is_empty() {
        return Err("cmd: argv[0] is empty".to_string());
    }
    Ok(argv)
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Resolves argv[0]: with a `/` relative to `cwd`, otherwise through `path`.
pub fn resolve(argv0: &str, cwd: &Path, path: &str) -> Option<PathBuf> {
    if argv0.contains('/') {
        let p = cwd.join(argv0);
        return if p.exists() { Some(p) } else { None };
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(argv0))
        .find(|p| is_executable(p))
}

/// Runs the payload command. Returns its status (exit code, 128+signal,
/// 127 not found / bad cmd, 126 cannot execute).
pub fn run(payload: &Path, out_port: Option<PathBuf>) -> i32 {
    // The port first: why a command could not start goes where its output
    // would have gone (the host echoes it), not only to the console.
    let port = out_port.as_deref().map(open_port);
    let mut report: Option<std::fs::File> = match &port {
        Some(Ok(f)) => f.try_clone().ok(),
        _ => None,
    };
    let mut fail = |msg: String, code: i32| -> i32 {
        console(&msg);
        if let Some(f) = report.as_mut() {
            use std::io::Write;
            let _ = writeln!(f, "{msg}");
        }
        code
    };
    let cmd_file = payload.join("cmd");
    let argv = match std::fs::read(&cmd_file)
        .map_err(|e| format!("cannot read {}: {e}", cmd_file.display()))
        .and_then(|b| parse_cmd(&b))
    {
        Ok(a) => a,
        Err(e) => return fail(format!("bufaio: exec: {e}"), 127),
    };
    let Some(prog) = resolve(&argv[0], payload, PATH) else {
        return fail(
            format!(
                "bufaio: exec: {}: not found (PATH {PATH}, and the payload directory for a relative path)",
                argv[0]
            ),
            127,
        );
    };
    let (stdout, stderr) = match port {
        Some(Ok(f)) => match f.try_clone() {
            Ok(f2) => (Stdio::from(f), Stdio::from(f2)),
            Err(_) => (Stdio::from(f), Stdio::inherit()),
        },
        Some(Err(e)) => {
            console(&format!(
                "bufaio: exec: cannot open bufaio.out port: {e}; output goes to the console"
            ));
            (Stdio::inherit(), Stdio::inherit())
        }
        None => {
            console("bufaio: exec: no bufaio.out port; output goes to the console");
            (Stdio::inherit(), Stdio::inherit())
        }
    };
    console(&format!("bufaio: exec: {argv:?} in {}", payload.display()));
    // chdir ourselves instead of using Command::current_dir: with a cwd set,
    // the spawn failed with ENOSYS on the bufaio tinyconfig kernel (std's
    // non-posix_spawn path), while the plain posix_spawn path works.
    if let Err(e) = std::env::set_current_dir(payload) {
        return fail(
            format!("bufaio: exec: chdir {}: {e}", payload.display()),
            126,
        );
    }
    let mut cmd = Command::new(&prog);
    cmd.arg0(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .env("PATH", PATH)
        .env("HOME", "/")
        .env("TERM", "dumb")
        .env("BUFAIO_EXT2", "/mnt/ext2")
        .env("BUFAIO_EXT3", "/mnt/ext3")
        .env("BUFAIO_PAYLOAD", payload)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    let spawned = cmd.spawn();
    let _ = std::env::set_current_dir("/");
    let child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            return fail(
                format!("bufaio: exec: cannot execute {}: {e}", prog.display()),
                code,
            );
        }
    };
    drop(cmd);
    let pid = child.id() as i32;
    drop(child);
    let status = loop {
        match sys::waitpid(-1, false) {
            Ok(Some((p, ws))) if p == pid => break ws.shell_code(),
            Ok(_) => {}
            Err(e) => {
                console(&format!("bufaio: exec: waitpid: {e}"));
                break 127;
            }
        }
    };
    kill_leftovers();
    status
}

/// SIGKILLs every remaining process (PID 1 is exempt from kill(-1)) and
/// reaps them, so the payload filesystems can be unmounted.
fn kill_leftovers() {
    if sys::getpid() != 1 {
        return;
    }
    if sys::kill(-1, libc::SIGKILL).is_err() {
        return;
    }
    let mut reaped = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match sys::waitpid(-1, true) {
            Ok(Some(_)) => reaped += 1,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            // ECHILD (none left) or deadline
            _ => break,
        }
    }
    if reaped > 0 {
        console(&format!(
            "bufaio: exec: killed {reaped} leftover process(es)"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmd_parsing() {
        assert_eq!(parse_cmd(b"ls\0-l\0").unwrap(), vec!["ls", "-l"]);
        assert_eq!(parse_cmd(b"ls\0-l").unwrap(), vec!["ls", "-l"]);
        assert_eq!(parse_cmd(b"sh\0-c\0\0").unwrap(), vec!["sh", "-c", ""]);
        assert!(parse_cmd(b"").is_err());
        assert!(parse_cmd(b"\0").is_err());
        assert!(parse_cmd(b"\0x\0").is_err());
    }

    #[test]
    fn resolution() {
        let d = std::env::temp_dir().join(format!("bufaio-resolve-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let exe = d.join("tool");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(d.join("data"), "x").unwrap();
        let path = format!("/nonexistent:{}", d.display());
        assert_eq!(resolve("tool", Path::new("/"), &path), Some(exe.clone()));
        assert_eq!(resolve("data", Path::new("/"), &path), None);
        assert_eq!(resolve("./tool", &d, &path), Some(d.join("./tool")));
        assert_eq!(resolve("./missing", &d, &path), None);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
