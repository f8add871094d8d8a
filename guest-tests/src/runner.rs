//! Child-per-test execution.
//!
//! Parent: `/proc/self/exe --run-one NAME --dir DIR [--guest]` in its own
//! process group, stdout+stderr into one pipe, per-test timeout (SIGKILL to
//! the group), zombies reaped. Child: runs one test, prints diagnostics on
//! stdout and exits 0 (pass), 1 (fail) or 77 (skip, reason on a
//! `bufaio-skip: ` line).

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ktap::{self, KtapWriter, Status, TestReport};
use crate::suite::{self, Ctx, Stop};
use crate::sys::{self, WaitStatus};

pub const EXIT_PASS: i32 = 0;
pub const EXIT_FAIL: i32 = 1;
pub const EXIT_SKIP: i32 = 77;
pub const SKIP_PREFIX: &str = "bufaio-skip: ";
pub const STEP_PREFIX: &str = "step: ";
/// How long a SIGKILLed test may take to go away before we stop waiting.
const KILL_GRACE: Duration = Duration::from_secs(10);
/// Most child output kept per test (the rest is drained and dropped).
const OUTPUT_CAP: usize = 64 * 1024;

/// Why a planned test is not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotRun {
    /// Reported as a failure (e.g. its filesystem failed to mount).
    Fail(String),
    /// Reported as a skip (e.g. it needs the slow device, which is absent).
    Skip(String),
}

/// A test to run: its name and its directory, or why it cannot run.
pub struct Planned {
    pub name: String,
    pub dir: Result<PathBuf, NotRun>,
    /// Asserts the series' new behaviour: `# expect: patched` is emitted
    /// right before its `# time_ms:` line.
    pub new_behaviour: bool,
}

/// The diagnostic that marks a new-behaviour test (README section 6).
pub const EXPECT_PATCHED: &str = "expect: patched";

/// Runs `planned` in order, writing KTAP results as they come and a human
/// summary line per test through `human`. Returns (passed, failed, skipped).
pub fn run_suite(
    planned: &[Planned],
    timeout: Duration,
    guest: bool,
    ktap: &mut KtapWriter,
    human: &mut dyn FnMut(&str),
) -> (usize, usize, usize) {
    let (mut pass, mut fail, mut skip) = (0, 0, 0);
    for (i, p) in planned.iter().enumerate() {
        let start = Instant::now();
        let (status, mut diags) = match &p.dir {
            Ok(dir) => run_child(&p.name, dir, guest, timeout),
            Err(NotRun::Fail(why)) => (Status::Fail, vec![why.clone()]),
            Err(NotRun::Skip(why)) => (Status::Skip(why.clone()), Vec::new()),
        };
        if p.new_behaviour {
            diags.push(EXPECT_PATCHED.to_string());
        }
        let report = TestReport {
            number: i + 1,
            name: p.name.clone(),
            status,
            time_ms: start.elapsed().as_millis(),
            diags,
        };
        match report.status {
            Status::Pass => pass += 1,
            Status::Fail => fail += 1,
            Status::Skip(_) => skip += 1,
        }
        if let Err(e) = ktap.result(&report) {
            human(&format!("bufaio: error writing KTAP result: {e}"));
        }
        human(&ktap::summary(&report));
        if report.status == Status::Fail {
            for d in report
                .diags
                .iter()
                .flat_map(|d| d.lines())
                .filter(|l| *l != EXPECT_PATCHED)
                .take(40)
            {
                human(&format!("bufaio:     # {}", ktap::one_line(d)));
            }
        }
    }
    (pass, fail, skip)
}

/// Runs one test in a child process. Returns its status and diagnostics.
pub fn run_child(name: &str, dir: &Path, guest: bool, timeout: Duration) -> (Status, Vec<String>) {
    let (rd, wr) = match sys::pipe() {
        Ok(p) => p,
        Err(e) => return (Status::Fail, vec![format!("pipe: {e}")]),
    };
    let wr2 = match wr.try_clone() {
        Ok(w) => w,
        Err(e) => return (Status::Fail, vec![format!("dup: {e}")]),
    };
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg("--run-one").arg(name).arg("--dir").arg(dir);
    if guest {
        cmd.arg("--guest");
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(wr))
        .stderr(Stdio::from(wr2))
        .process_group(0);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return (Status::Fail, vec![format!("spawn /proc/self/exe: {e}")]),
    };
    // Close our copies of the write end so EOF arrives when the child exits.
    drop(cmd);
    let pid = child.id() as i32;
    // We reap the child ourselves (waitpid), never through `child`.
    drop(child);

    // The reader thread appends into `shared` and signals EOF on `done`.
    let shared = Arc::new(Mutex::new((Vec::new(), false)));
    let (done_tx, done_rx) = mpsc::channel();
    let mut reader = std::fs::File::from(rd);
    let sink = Arc::clone(&shared);
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match reader.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    let Ok(mut g) = sink.lock() else { break };
                    let room = OUTPUT_CAP.saturating_sub(g.0.len());
                    if n > room {
                        g.1 = true;
                    }
                    g.0.extend_from_slice(&chunk[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = done_tx.send(());
    });

    let (ws, timed_out) = wait_with_timeout(pid, timeout);
    // Kill anything the test left behind in its process group.
    let _ = sys::kill(-pid, libc::SIGKILL);
    sys::reap_zombies();

    let eof = done_rx.recv_timeout(Duration::from_secs(5)).is_ok();
    let (out, truncated) = match shared.lock() {
        Ok(mut g) => (std::mem::take(&mut g.0), g.1),
        Err(_) => (Vec::new(), false),
    };
    let text = String::from_utf8_lossy(&out);
    let mut diags = Vec::new();
    let mut steps = Vec::new();
    let mut skip_reason = None;
    for line in text.lines() {
        if let Some(r) = line.strip_prefix(SKIP_PREFIX) {
            skip_reason = Some(r.to_string());
        } else if let Some(s) = line.strip_prefix(STEP_PREFIX) {
            steps.push(format!("step: {s}"));
        } else if !line.trim().is_empty() {
            diags.push(line.to_string());
        }
    }
    if truncated {
        diags.push(format!("(output truncated to {OUTPUT_CAP} bytes)"));
    }
    if !eof {
        diags.push("(output pipe still held open by a leftover process)".to_string());
    }
    let with_steps = |mut d: Vec<String>| {
        let mut all = steps.clone();
        all.append(&mut d);
        all
    };
    match (ws, timed_out) {
        (ws, true) => {
            let mut d = with_steps(diags);
            d.push(format!("TIMEOUT after {} s", timeout.as_secs()));
            if ws.is_none() {
                d.push(format!(
                    "test process {pid} did not exit within {} s of SIGKILL (stuck in the kernel?)",
                    KILL_GRACE.as_secs()
                ));
            }
            (Status::Fail, d)
        }
        (Some(WaitStatus::Exited(EXIT_PASS)), _) => (Status::Pass, diags),
        (Some(WaitStatus::Exited(EXIT_SKIP)), _) => (
            Status::Skip(skip_reason.unwrap_or_else(|| "no reason given".to_string())),
            diags,
        ),
        (Some(WaitStatus::Exited(EXIT_FAIL)), _) => (Status::Fail, with_steps(diags)),
        (Some(WaitStatus::Exited(c)), _) => {
            let mut d = with_steps(diags);
            d.push(format!("test process exited with unexpected code {c}"));
            (Status::Fail, d)
        }
        (Some(WaitStatus::Signaled { signal, core }), _) => {
            let mut d = with_steps(diags);
            d.push(format!(
                "test process killed by signal {signal} ({}){}",
                sys::signal_name(signal),
                if core { ", core dumped" } else { "" }
            ));
            (Status::Fail, d)
        }
        (None, false) => {
            let mut d = with_steps(diags);
            d.push("lost track of the test process (waitpid failed)".to_string());
            (Status::Fail, d)
        }
    }
}

/// Waits for `pid` up to `timeout`; on timeout SIGKILLs its process group
/// and collects it. Returns (status, timed_out).
fn wait_with_timeout(pid: i32, timeout: Duration) -> (Option<WaitStatus>, bool) {
    let deadline = Instant::now() + timeout;
    let pidfd = sys::pidfd_open(pid).ok();
    loop {
        match sys::waitpid(pid, true) {
            Ok(Some((_, ws))) => return (Some(ws), false),
            Ok(None) => {}
            Err(_) => return (None, false),
        }
        // Reap unrelated zombies (we may be PID 1).
        sys::reap_zombies_except(pid);
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let _ = sys::kill(-pid, libc::SIGKILL);
            let _ = sys::kill(pid, libc::SIGKILL);
            // A task stuck in the kernel may not die: do not hang on it.
            let give_up = Instant::now() + KILL_GRACE;
            while Instant::now() < give_up {
                if let Ok(Some((_, ws))) = sys::waitpid(pid, true) {
                    return (Some(ws), true);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            return (None, true);
        }
        match &pidfd {
            Some(fd) => {
                let _ = sys::poll_readable(fd, left.min(Duration::from_secs(1)));
            }
            None => std::thread::sleep(left.min(Duration::from_millis(5))),
        }
    }
}

/// Child side of `--run-one`: runs the test and returns the exit code.
pub fn run_one(name: &str, base: &Path, guest: bool) -> i32 {
    let Some((def, fs)) = suite::find(name) else {
        println!("unknown test {name:?} (see --list)");
        return EXIT_FAIL;
    };
    let dir = base.join(suite::scratch_name(name));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        println!("cannot create scratch dir {}: {e}", dir.display());
        return EXIT_FAIL;
    }
    let ctx = Ctx {
        fs: fs.map(str::to_string),
        dir: dir.clone(),
        guest,
        root: sys::geteuid() == 0,
    };
    let result = std::panic::catch_unwind(|| (def.run)(&ctx));
    let code = match result {
        Ok(Ok(())) => EXIT_PASS,
        Ok(Err(Stop::Fail(msg))) => {
            println!("{msg}");
            EXIT_FAIL
        }
        Ok(Err(Stop::Skip(reason))) => {
            println!("{SKIP_PREFIX}{}", ktap::one_line(&reason));
            EXIT_SKIP
        }
        Err(_) => {
            println!("test panicked (message above)");
            EXIT_FAIL
        }
    };
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        println!("warning: cannot remove scratch dir {}: {e}", dir.display());
    }
    let _ = std::io::stdout().flush();
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn not_run_tests_and_the_new_behaviour_marker() {
        let sink = Sink(Arc::new(Mutex::new(Vec::new())));
        let mut k = KtapWriter::new(Box::new(sink.clone()), "");
        let planned = vec![
            Planned {
                name: "read/nb@ext2".into(),
                dir: Err(NotRun::Skip("needs the slow device".into())),
                new_behaviour: true,
            },
            Planned {
                name: "read/x@ext3".into(),
                dir: Err(NotRun::Fail("filesystem ext3 is not available: EIO".into())),
                new_behaviour: false,
            },
            Planned {
                name: "read/nb@ext3".into(),
                dir: Err(NotRun::Fail("filesystem ext3 is not available: EIO".into())),
                new_behaviour: true,
            },
        ];
        let mut human = Vec::new();
        let (p, f, s) = run_suite(&planned, Duration::from_secs(1), false, &mut k, &mut |l| {
            human.push(l.to_string())
        });
        assert_eq!((p, f, s), (0, 2, 1));
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "# expect: patched");
        assert!(lines[1].starts_with("# time_ms: "));
        assert_eq!(lines[2], "ok 1 read/nb@ext2 # SKIP needs the slow device");
        assert_eq!(lines[3], "# filesystem ext3 is not available: EIO");
        assert!(lines[4].starts_with("# time_ms: "));
        assert_eq!(lines[5], "not ok 2 read/x@ext3");
        assert_eq!(lines[6], "# filesystem ext3 is not available: EIO");
        assert_eq!(lines[7], "# expect: patched");
        assert!(lines[8].starts_with("# time_ms: "));
        assert_eq!(lines[9], "not ok 3 read/nb@ext3");
        // the marker is not echoed as a failure diagnostic on the console
        assert!(!human.iter().any(|l| l.contains(EXPECT_PATCHED)));
    }
}
