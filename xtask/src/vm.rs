//! Stage 6, vm: run QEMU, stream and record the console, watch the results
//! port, enforce the boot / silence / overall timeouts, and pick the
//! accelerator (KVM only when a probe boot really reaches init).

use crate::exitcode::VmEnd;
use crate::qemu::{self, Accel, VmSpec};
use crate::ui::Ui;
use anyhow::{Context, Result};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use bufaio_contract::READY;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub boot: Duration,
    pub silence: Duration,
    pub overall: Duration,
}

#[derive(Debug)]
pub struct VmRun {
    pub end: VmEnd,
    pub console: String,
    pub ktap: String,
    pub argv: Vec<String>,
    pub wall: Duration,
    /// QEMU start → BUFAIO-READY on the console.
    pub boot_to_ready: Option<Duration>,
    /// QEMU start → first byte on the KTAP port.
    pub boot_to_ktap: Option<Duration>,
    pub qemu_status: Option<i32>,
}

/// Kills QEMU if the runner returns early (error or panic): no orphan VMs.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Tail of a file that another process is appending to.
struct Tail {
    path: PathBuf,
    pos: u64,
}

impl Tail {
    fn read_new(&mut self) -> Vec<u8> {
        let mut buf = Vec::new();
        if let Ok(mut f) = fs::File::open(&self.path) {
            if f.seek(SeekFrom::Start(self.pos)).is_ok() && f.read_to_end(&mut buf).is_ok() {
                self.pos += buf.len() as u64;
            }
        }
        buf
    }
}

/// Run the VM to completion. `echo_out` streams the exec output port to our
/// stdout as it arrives. The console is written to `console_log`.
pub fn run(
    spec: &VmSpec,
    limits: Limits,
    console_log: &Path,
    echo_out: bool,
    ui: &Ui,
) -> Result<VmRun> {
    run_observed(spec, limits, console_log, echo_out, ui, &mut |_| {})
}

/// [`run`], handing every complete console line to `on_line` as it arrives
/// (progress reports of long guest workloads).
pub fn run_observed(
    spec: &VmSpec,
    limits: Limits,
    console_log: &Path,
    echo_out: bool,
    ui: &Ui,
    on_line: &mut dyn FnMut(&str),
) -> Result<VmRun> {
    let argv = qemu::command_line(spec);
    for p in [&spec.ktap_path, &spec.out_path] {
        fs::write(p, b"").with_context(|| format!("cannot create {}", p.display()))?;
    }
    let stderr_log = console_log.with_file_name("qemu-stderr.log");
    let stderr_file = fs::File::create(&stderr_log)?;
    let start = Instant::now();
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr_file);
    crate::proc::die_with_parent(&mut cmd);
    let child = cmd.spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return Ok(VmRun {
                end: VmEnd::QemuFailed(format!("cannot start {}: {e}", argv[0])),
                console: String::new(),
                ktap: String::new(),
                argv,
                wall: start.elapsed(),
                boot_to_ready: None,
                boot_to_ktap: None,
                qemu_status: None,
            })
        }
    };
    let stdout = child.stdout.take().context("no QEMU stdout")?;
    let mut guard = Guard(Some(child));
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut stdout = stdout;
        let mut buf = [0u8; 8192];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut log = fs::File::create(console_log)
        .with_context(|| format!("cannot create {}", console_log.display()))?;
    let mut console = Vec::<u8>::new();
    let mut ktap_tail = Tail {
        path: spec.ktap_path.clone(),
        pos: 0,
    };
    let mut out_tail = Tail {
        path: spec.out_path.clone(),
        pos: 0,
    };
    let mut ktap = Vec::<u8>::new();
    let mut last_output = Instant::now();
    let mut ready: Option<Duration> = None;
    let mut first_ktap: Option<Duration> = None;
    let mut end = VmEnd::Exited;
    let mut reader_done = false;
    let mut qemu_status = None;
    let mut qemu_signal: Option<i32> = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(chunk) => {
                log.write_all(&chunk).ok();
                let from = console.len();
                console.extend_from_slice(&chunk);
                // complete lines that end in this chunk
                let start_of_line = console[..from]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                let tail = &console[start_of_line..];
                if let Some(last_nl) = tail.iter().rposition(|&b| b == b'\n') {
                    for l in tail[..last_nl].split(|&b| b == b'\n') {
                        on_line(String::from_utf8_lossy(l).trim_end_matches('\r'));
                    }
                }
                last_output = Instant::now();
                if ready.is_none() && find(&console, READY.as_bytes()) {
                    ready = Some(start.elapsed());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                reader_done = true;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let k = ktap_tail.read_new();
        if !k.is_empty() {
            first_ktap.get_or_insert(start.elapsed());
            last_output = Instant::now();
            ktap.extend_from_slice(&k);
        }
        let o = out_tail.read_new();
        if !o.is_empty() {
            last_output = Instant::now();
            if echo_out {
                let mut so = std::io::stdout();
                so.write_all(&o).ok();
                so.flush().ok();
            }
        }
        if let Some(c) = guard.0.as_mut() {
            if let Some(st) = c.try_wait()? {
                qemu_status = st.code();
                qemu_signal = std::os::unix::process::ExitStatusExt::signal(&st);
                guard.0 = None;
            }
        }
        if guard.0.is_none() && reader_done {
            // QEMU is gone and the console pipe drained: pick up the last bytes.
            ktap.extend_from_slice(&ktap_tail.read_new());
            let o = out_tail.read_new();
            if echo_out {
                std::io::stdout().write_all(&o).ok();
            }
            break;
        }
        if guard.0.is_none() {
            continue;
        }
        let elapsed = start.elapsed();
        let timeout = if ready.is_none() && elapsed > limits.boot {
            Some(VmEnd::BootTimeout)
        } else if last_output.elapsed() > limits.silence {
            Some(VmEnd::SilenceTimeout)
        } else if elapsed > limits.overall {
            Some(VmEnd::OverallTimeout)
        } else {
            None
        };
        if let Some(t) = timeout {
            ui.warn(format!(
                "{t:?}: stopping QEMU after {:.0}s",
                elapsed.as_secs_f64()
            ));
            end = t;
            if let Some(mut c) = guard.0.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let stderr = fs::read_to_string(&stderr_log).unwrap_or_default();
    // Ended by a signal the toolkit did not send (its own kills are the
    // timeouts above, which set `end`): an infrastructure failure, not a
    // kernel crash. QEMU catches SIGTERM/SIGINT/SIGHUP itself, exits 0
    // and says so on stderr.
    let external = match (
        qemu_signal,
        stderr.lines().find(|l| l.contains("terminating on signal")),
    ) {
        (Some(sig), _)
            if [
                libc::SIGSEGV,
                libc::SIGABRT,
                libc::SIGBUS,
                libc::SIGILL,
                libc::SIGFPE,
            ]
            .contains(&sig) =>
        {
            Some(format!(
                "QEMU crashed ({}), a QEMU bug even if the guest triggered it",
                signal_name(sig)
            ))
        }
        (Some(sig), _) => Some(format!(
            "QEMU was killed by signal {sig} ({}), not by the toolkit",
            signal_name(sig)
        )),
        (None, Some(l)) => Some(format!("{}, not by the toolkit", l.trim())),
        (None, None) => None,
    };
    if let (VmEnd::Exited, Some(why)) = (&end, external) {
        end = VmEnd::QemuFailed(format!(
            "{why}: the guest did not finish (see qemu-stderr.log)"
        ));
    }
    if matches!(end, VmEnd::Exited)
        && ready.is_none()
        && console.is_empty()
        && qemu_status != Some(0)
    {
        end = VmEnd::QemuFailed(format!(
            "QEMU exited with {qemu_status:?} before the kernel printed anything: {}",
            stderr.trim()
        ));
    }
    Ok(VmRun {
        end,
        console: String::from_utf8_lossy(&console).into_owned(),
        ktap: String::from_utf8_lossy(&ktap).into_owned(),
        argv,
        wall: start.elapsed(),
        boot_to_ready: ready,
        boot_to_ktap: first_ktap,
        qemu_status,
    })
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        _ => "signal",
    }
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AccelChoice {
    pub accel: Accel,
    pub reason: String,
}

/// Decide the accelerator. `auto` uses KVM only if /dev/kvm opens and a probe
/// boot of this kernel reaches init in time; the verdict is cached per host
/// boot (so the probe costs time once, not per run).
pub fn choose_accel(
    wanted: crate::config::Accel,
    probe_dir: &Path,
    spec: &VmSpec,
    ui: &Ui,
) -> Result<AccelChoice> {
    use crate::config::Accel as A;
    match wanted {
        A::Tcg => {
            return Ok(AccelChoice {
                accel: Accel::Tcg,
                reason: "requested".into(),
            })
        }
        A::Kvm => {
            return Ok(AccelChoice {
                accel: Accel::Kvm,
                reason: "requested".into(),
            })
        }
        A::Auto => {}
    }
    if let Err(e) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return Ok(AccelChoice {
            accel: Accel::Tcg,
            reason: format!("/dev/kvm unusable ({e}); using TCG"),
        });
    }
    let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_string();
    let memo = probe_dir.join(format!("kvm-{boot_id}.json"));
    if let Ok(s) = fs::read_to_string(&memo) {
        if let Ok(c) = serde_json::from_str::<serde_json::Value>(&s) {
            let kvm = c["kvm"].as_bool().unwrap_or(false);
            let why = c["reason"].as_str().unwrap_or("").to_string();
            return Ok(AccelChoice {
                accel: if kvm { Accel::Kvm } else { Accel::Tcg },
                reason: format!(
                    "{why} (probe cached for this host boot: {})",
                    memo.display()
                ),
            });
        }
    }
    let stage = ui.stage("probe", "KVM probe boot (once per host boot)");
    let dir = tempfile::tempdir().context("cannot create probe dir")?;
    let mut p = spec.clone();
    p.accel = Accel::Kvm;
    p.disks.clear();
    p.append = qemu::cmdline("probe", &[]);
    p.ktap_path = dir.path().join("ktap");
    p.out_path = dir.path().join("out");
    let limits = Limits {
        boot: Duration::from_secs(20),
        silence: Duration::from_secs(20),
        overall: Duration::from_secs(30),
    };
    let quiet = Ui::new();
    let r = run(&p, limits, &dir.path().join("console.log"), false, &quiet)?;
    let (kvm, reason) = if r.boot_to_ready.is_some() {
        (true, "KVM probe boot reached init".to_string())
    } else {
        let last = r
            .console
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("<no console output>")
            .to_string();
        (
            false,
            format!("KVM probe boot did not reach init within 20 s ({:?}, last console line: {last:?}); using TCG", r.end),
        )
    };
    stage.finish(if kvm {
        "KVM works"
    } else {
        "KVM unusable, TCG"
    });
    crate::cache::write_atomic(
        &memo,
        serde_json::json!({"kvm": kvm, "reason": reason})
            .to_string()
            .as_bytes(),
    )?;
    Ok(AccelChoice {
        accel: if kvm { Accel::Kvm } else { Accel::Tcg },
        reason,
    })
}

/// The host TSC rate in kHz, measured once per process. Under TCG the guest
/// TSC runs at the host's rate, but the guest's own calibration against the
/// emulated PIT fails on a loaded host and leaves it on jiffies (4 ms quanta),
/// which ruins every latency measurement; `tsc_early_khz=` fixes that.
pub fn host_tsc_khz() -> Option<u64> {
    static KHZ: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *KHZ.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let t = Instant::now();
            // SAFETY: rdtsc has no preconditions on x86_64.
            let a = unsafe { core::arch::x86_64::_rdtsc() };
            std::thread::sleep(Duration::from_millis(200));
            // SAFETY: as above.
            let b = unsafe { core::arch::x86_64::_rdtsc() };
            let khz = (b.wrapping_sub(a) as f64 / t.elapsed().as_secs_f64() / 1000.0) as u64;
            (khz > 100_000).then_some(khz)
        }
        #[cfg(not(target_arch = "x86_64"))]
        None
    })
}

/// Kernel command-line words that give a TCG guest a usable clock.
pub fn tcg_clock_args(accel: Accel, append: &[String]) -> Vec<String> {
    if accel != Accel::Tcg || append.iter().any(|w| w.starts_with("tsc")) {
        return Vec::new();
    }
    match host_tsc_khz() {
        Some(khz) => vec![format!("tsc_early_khz={khz}"), "tsc=reliable".into()],
        None => Vec::new(),
    }
}
