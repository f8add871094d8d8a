//! End to end: `cargo xtask bench --smoke` really builds (or reuses) the
//! kernels, boots them with guest-bench and writes the report and plots, so
//! the benchmark cannot rot. Small sizes: a check, not a measurement.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn bench_smoke_writes_report_and_plots() {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["bench", "--smoke"])
        .current_dir(root())
        .env_remove("GITHUB_ACTIONS")
        .output()
        .expect("run xtask");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("--- xtask bench --smoke\n{text}");
    assert_eq!(out.status.code(), Some(0), "bench --smoke failed");
    let dir = PathBuf::from(
        text.lines()
            .find_map(|l| l.split("artifacts: ").nth(1))
            .expect("artifacts line")
            .trim(),
    );
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("bench.json")).unwrap()).unwrap();
    assert_eq!(j["device_latency_ns"], 1_000_000, "null_blk latency");
    let cols = j["columns"].as_array().unwrap();
    assert!(!cols.is_empty());
    for c in cols {
        let pts = c["points"].as_array().unwrap();
        for fs in ["ext2", "ext3"] {
            for e in ["sync", "pool", "aio", "uring"] {
                let p = pts
                    .iter()
                    .find(|p| p["fs"] == fs && p["engine"] == e && p["workload"] == "rand4k")
                    .unwrap_or_else(|| panic!("no rand4k {e} point on {fs}"));
                assert_eq!(p["errors"], 0, "{p}");
                assert!(p["iops"].as_f64().unwrap() > 0.0, "{p}");
                // Cold reads reach the slow device.
                assert!(p["dev_reads_per_io"].as_f64().unwrap() >= 0.9, "{p}");
                for w in ["write4k", "write4k-dsync"] {
                    let p = pts
                        .iter()
                        .find(|p| p["fs"] == fs && p["engine"] == e && p["workload"] == w)
                        .unwrap_or_else(|| panic!("no {w} {e} point on {fs}"));
                    assert_eq!(p["errors"], 0, "{p}");
                    assert!(p["iops"].as_f64().unwrap() > 0.0, "{p}");
                    // Every other write is 512 B inside a cold block: the
                    // old block is read from the slow device.
                    assert!(p["dev_reads_per_io"].as_f64().unwrap() >= 0.4, "{p}");
                    if w == "write4k-dsync" {
                        // Each O_DSYNC write reaches the device before it completes.
                        assert!(p["dev_writes_per_io"].as_f64().unwrap() >= 0.9, "{p}");
                    }
                }
            }
        }
        // The patched kernel has the aio/stats counters; its AIO write
        // points report which path the writes took.
        if c["label"] == "patched" {
            let p = pts
                .iter()
                .find(|p| p["engine"] == "aio" && p["workload"] == "write4k")
                .expect("patched aio write4k point");
            let st = p["aio_stats"]
                .as_object()
                .expect("aio_stats on the patched kernel");
            let writes: u64 = st
                .iter()
                .filter(|(k, _)| k.starts_with("write_"))
                .map(|(_, v)| v.as_u64().unwrap())
                .sum();
            assert!(writes > 0, "no write counter moved: {p}");
        }
    }
    let md = std::fs::read_to_string(dir.join("bench.md")).unwrap();
    for s in [
        "#### rand4k",
        "#### seq1m",
        "#### warm4k",
        "#### write4k",
        "#### write4k-dsync",
        "Acceptance",
        "O_DSYNC 4 KiB write IOPS",
    ] {
        assert!(md.contains(s), "bench.md lacks {s}");
    }
    for f in [
        "iops-vs-qd-ext3.svg",
        "submit-cdf-ext2.svg",
        "sys-ctx-per-io-ext2.svg",
        "submit-cdf-write4k-dsync-ext3.svg",
    ] {
        let s = std::fs::read_to_string(dir.join(f)).unwrap();
        assert!(s.starts_with("<svg"), "{f}");
    }
}
