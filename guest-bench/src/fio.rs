//! fio cross-check: the Debian fio binary, its shared libraries and the
//! dynamic loader are copied flat into one directory (the exec payload) and
//! fio is started through the loader with `--library-path`.

use crate::engines::Snap;
use crate::Target;
pub use bufaio_contract::bench::FioPoint;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// fio takes a few seconds here; past this it is stuck (seen on a patched
/// kernel): its threads' kernel stacks are recorded and it is killed, so
/// the rest of the run still happens.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Where every thread of `pid` is: comm, state, syscall and kernel stack
/// from /proc (CONFIG_STACKTRACE), one line per thread.
fn thread_report(pid: u32) -> String {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return String::new();
    };
    for e in rd.flatten() {
        let d = e.path();
        let rd = |f: &str| std::fs::read_to_string(d.join(f)).unwrap_or_default();
        let state = rd("stat")
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().next().map(str::to_string))
            .unwrap_or_default();
        let stack: Vec<String> = rd("stack")
            .lines()
            .map(|l| l.split_whitespace().nth(1).unwrap_or(l).to_string())
            .collect();
        out.push(format!(
            "tid {} {} state {} wchan {} syscall {} stack {}",
            e.file_name().to_string_lossy(),
            rd("comm").trim(),
            state,
            rd("wchan").trim(),
            rd("syscall").split_whitespace().next().unwrap_or("?"),
            stack.join(" <- ")
        ));
    }
    out.join(" | ")
}

fn output_with_timeout(
    cmd: &mut Command,
    limit: std::time::Duration,
) -> std::io::Result<std::process::Output> {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let mut so = child.stdout.take();
    let mut se = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = so.as_mut() {
            let _ = s.read_to_end(&mut v);
        }
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = se.as_mut() {
            let _ = s.read_to_end(&mut v);
        }
        v
    });
    let start = std::time::Instant::now();
    let mut stuck = None;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if start.elapsed() > limit && stuck.is_none() {
            stuck = Some(thread_report(child.id()));
            let _ = child.kill();
        }
        if start.elapsed() > limit + std::time::Duration::from_secs(10) {
            return Err(std::io::Error::other(format!(
                "fio stuck for {} s and not killable; threads: {}",
                limit.as_secs(),
                stuck.unwrap_or_default()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let stdout = t_out.join().unwrap_or_default();
    let mut stderr = t_err.join().unwrap_or_default();
    if let Some(r) = stuck {
        stderr = format!(
            "fio still running after {} s, killed; threads: {r}",
            limit.as_secs()
        )
        .into_bytes();
    }
    Ok(std::process::Output {
        status,
        stdout,
        stderr,
    })
}

/// The shm shim's file name in the fio directory.
pub const SHIM: &str = "fio-shm-shim.so";

/// Pull our figures out of `fio --output-format=json` (first job, read side).
pub fn parse(text: &str) -> Result<FioPoint, String> {
    let start = text.find('{').ok_or("no JSON in fio output")?;
    let v: Value = serde_json::from_str(&text[start..]).map_err(|e| format!("fio JSON: {e}"))?;
    let job = v["jobs"].get(0).ok_or("fio JSON has no jobs")?;
    let rd = &job["read"];
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let ios = rd["total_ios"].as_u64().unwrap_or(0);
    let pct = |p: &str| f(&rd["clat_ns"]["percentile"][p]) / 1000.0;
    let ctx = job["ctx"].as_u64().unwrap_or(0);
    let runtime_ms = f(&job["job_runtime"]).max(f(&rd["runtime"]));
    let cpu_pct = f(&job["usr_cpu"]) + f(&job["sys_cpu"]);
    Ok(FioPoint {
        ios,
        iops: f(&rd["iops"]),
        slat_mean_us: f(&rd["slat_ns"]["mean"]) / 1000.0,
        slat_max_us: f(&rd["slat_ns"]["max"]) / 1000.0,
        clat_p50_us: pct("50.000000"),
        clat_p99_us: pct("99.000000"),
        ctx,
        ctx_per_io: if ios > 0 {
            ctx as f64 / ios as f64
        } else {
            0.0
        },
        cpu_us_per_io: if ios > 0 {
            cpu_pct / 100.0 * runtime_ms * 1000.0 / ios as f64
        } else {
            0.0
        },
        ..FioPoint::default()
    })
}

pub fn run(dir: &Path, t: &Target, reads: usize, qd: usize, seed: u64) -> FioPoint {
    let loader = std::fs::read_dir(dir).ok().and_then(|rd| {
        rd.flatten().map(|e| e.path()).find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("ld-linux"))
        })
    });
    let args: Vec<String> = vec![
        "--name=bufaio".into(),
        format!("--filename={}", t.file.display()),
        "--ioengine=libaio".into(),
        "--direct=0".into(),
        "--rw=randread".into(),
        "--bs=4k".into(),
        format!("--iodepth={qd}"),
        format!("--size={}", t.size),
        format!("--number_ios={reads}"),
        format!("--randseed={seed}"),
        "--invalidate=1".into(),
        "--thread".into(),
        "--output-format=json".into(),
    ];
    let fio = dir.join("fio");
    let mut cmd = match &loader {
        Some(l) => {
            let mut c = Command::new(l);
            c.arg("--library-path").arg(dir);
            // No SysV IPC in the test kernel: fio's job table goes to
            // anonymous shared memory instead (xtask/src/bench/fio_shm_shim.c).
            let shim = dir.join(SHIM);
            if shim.is_file() {
                c.arg("--preload").arg(shim);
            }
            c.arg(&fio);
            c
        }
        None => Command::new(&fio),
    };
    cmd.args(&args);
    let shown = format!("{cmd:?}");
    let a = Snap::take(&t.dev);
    let res = output_with_timeout(&mut cmd, TIMEOUT);
    let b = Snap::take(&t.dev);
    let mut p = match res {
        Err(e) => FioPoint {
            error: Some(format!("cannot run fio: {e}")),
            ..FioPoint::default()
        },
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            match parse(&text) {
                Ok(p) if o.status.success() => p,
                Ok(p) => FioPoint {
                    error: Some(format!("fio exited with {}", o.status)),
                    ..p
                },
                Err(e) => FioPoint {
                    error: Some(format!(
                        "{e}; fio exited with {}: {}",
                        o.status,
                        String::from_utf8_lossy(&o.stderr).trim()
                    )),
                    ..FioPoint::default()
                },
            }
        }
    };
    p.fs = t.label.clone();
    p.iodepth = qd;
    p.command = shown;
    if p.ios > 0 {
        p.sys_ctx_per_io = b.ctxt.saturating_sub(a.ctxt) as f64 / p.ios as f64;
        p.dev_reads_per_io = b.dev.reads.saturating_sub(a.dev.reads) as f64 / p.ios as f64;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stuck_command_is_reported_and_killed() {
        let t = std::time::Instant::now();
        let mut c = Command::new("sleep");
        c.arg("30");
        let o = output_with_timeout(&mut c, std::time::Duration::from_millis(300)).unwrap();
        assert!(t.elapsed() < std::time::Duration::from_secs(10));
        assert!(!o.status.success());
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(
            e.contains("killed; threads: tid ") && e.contains("sleep"),
            "{e}"
        );
        let mut c = Command::new("echo");
        c.arg("{}");
        let o = output_with_timeout(&mut c, std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout), "{}\n");
    }

    #[test]
    fn parses_fio_json() {
        let text = r#"note: both iodepth >= 1 and synchronous I/O engine are selected
{"fio version":"fio-3.33","jobs":[{"jobname":"bufaio","job_runtime":3000,"usr_cpu":1.0,"sys_cpu":9.0,"ctx":4100,
"read":{"total_ios":2000,"iops":666.5,"runtime":3000,"slat_ns":{"min":1000,"max":2500000,"mean":1450000.0},
"clat_ns":{"percentile":{"50.000000":20000,"99.000000":45000}}}}]}"#;
        let p = parse(text).unwrap();
        assert_eq!(p.ios, 2000);
        assert_eq!(p.iops, 666.5);
        assert_eq!(p.slat_mean_us, 1450.0);
        assert_eq!(p.slat_max_us, 2500.0);
        assert_eq!(p.clat_p99_us, 45.0);
        assert_eq!(p.ctx_per_io, 2.05);
        assert!((p.cpu_us_per_io - 150.0).abs() < 1e-9);
        assert!(parse("fio: error").is_err());
    }
}
