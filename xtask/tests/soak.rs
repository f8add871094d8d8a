//! `cargo xtask soak` end to end: the CI soak (100,000 model-checker
//! operations per filesystem on both kernels), and the checker's own
//! test — it must find the v1 series' lost appends and reordered writes,
//! and a `--replay` of the failed run must fail again.

mod common;

use common::artifacts;
use std::path::Path;

/// `xtask ARGS` → (exit code, stdout+stderr).
fn xtask(args: &[&str]) -> (i32, String) {
    let (code, text, _) = common::xtask(args);
    (code, text)
}

fn soak_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("soak.json")).unwrap()).unwrap()
}

#[test]
fn ci_soak_100k_ops_per_filesystem_on_both_kernels() {
    let (code, text) = xtask(&[
        "soak",
        "--kernel",
        "both",
        "--ops",
        "100000",
        "--filter",
        "soak/fsx@*",
        "--seed",
        "0x5eed",
    ]);
    assert_eq!(code, 0, "soak failed");
    let dir = artifacts(&text);
    for f in ["soak.json", "results.json", "summary.md", "manifest.yaml"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let s = soak_json(&dir);
    assert_eq!(s["base_seed"], "0x5eed");
    let rows = s["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{s}");
    for r in rows {
        assert_eq!(r["verdict"], "pass", "{r}");
        assert_eq!(r["ops"], 100_000, "{r}");
        assert!(r["ops_per_s"].as_f64().unwrap() > 0.0, "{r}");
    }
    for k in ["unpatched", "patched"] {
        for fs in ["ext2", "ext3"] {
            assert!(
                rows.iter()
                    .any(|r| r["kernel"] == k && r["fs"] == fs && r["workload"] == "soak/fsx"),
                "no {k} {fs} row: {s}"
            );
        }
        for f in ["junit.xml", "results.ktap", "console.log"] {
            assert!(dir.join(k).join(f).is_file(), "{k}/{f} missing");
        }
    }
    let table = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(
        table.contains("| soak/fsx | ext3 | patched | pass | 100000 |"),
        "{table}"
    );
    // the aggregate of this run is the run
    let (code, text) = xtask(&[
        "soak",
        "--aggregate",
        dir.join("soak.json").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("1 runs, 400000 ops, 0 failed instances"),
        "{text}"
    );
}

/// Issue 14 item 1: libaio's own harness, every case, on both kernels
/// (ext2: the whole harness takes about 80 s per kernel under TCG; ext3's
/// quick subset runs in every `run`, its full figures are in the README).
/// Waiting for events, both kernels pass every case; as shipped, both
/// pass on ext2 (10.t's cold allocating write is reported as completing
/// after device IO on the patched kernel, not as a fast-path loss). fio's
/// verify jobs at soak size on both filesystems (about 10 s each).
#[test]
fn ci_libaio_harness_whole_on_ext2_and_fio_verify_both_kernels() {
    let (code, text) = xtask(&[
        "soak",
        "--kernel",
        "both",
        "--ops",
        "1",
        "--filter",
        "soak/libaio*@ext2",
        "--filter",
        "soak/fio_verify@*",
    ]);
    assert_eq!(code, 0, "libaio harness or fio verify failed");
    let dir = artifacts(&text);
    let s = soak_json(&dir);
    let rows = s["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 8, "{s}");
    for r in rows {
        assert_eq!(r["verdict"], "pass", "{r}");
        if r["workload"] == "soak/fio_verify" {
            // one round of the job file at soak size: ~11,000 IOs
            assert!(r["ops"].as_u64().unwrap() > 5000, "{r}");
        }
    }
    for k in ["unpatched", "patched"] {
        let ktap = std::fs::read_to_string(dir.join(k).join("results.ktap")).unwrap();
        let passed = ktap.matches("PASSED (").count();
        // 21 cases; 6.t needs 768 MiB free (not on the 128 MiB disk),
        // 21.t skips itself on ext2
        assert!(
            passed >= 19,
            "{k}: only {passed} cases passed waiting:\n{ktap}"
        );
        for heavy in [11, 14, 18, 20] {
            assert!(
                ktap.contains(&format!("# case {heavy}: PASSED (")),
                "{k}: case {heavy} did not run:\n{ktap}"
            );
        }
        assert!(!ktap.contains("FAILED as shipped and waiting"), "{ktap}");
    }
}

#[test]
fn soak_finds_the_v1_defects_and_replays_them() {
    // Overlapping writes in one io_submit (v1 runs task_work newest first)
    // and appends (v1 fixes an append's position at submission): both
    // filesystems, within the first few hundred operations.
    for extra in [&[][..], &["--no-overlap"][..]] {
        let mut args = vec![
            "soak",
            "--kernel",
            "patched",
            "--series",
            "patches/6.12/v1/series",
            "--ops",
            "3000",
            "--filter",
            "soak/fsx@*",
            "--seed",
            "0xb0fa10",
        ];
        args.extend_from_slice(extra);
        let (code, text) = xtask(&args);
        assert_eq!(code, 1, "the v1 series must fail the soak");
        let dir = artifacts(&text);
        let s = soak_json(&dir);
        let rows = s["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 2, "{s}");
        for r in rows {
            assert_eq!(r["verdict"], "fail", "{r}");
            let f = r["failure"].as_str().unwrap();
            assert!(f.contains("data mismatch"), "{f}");
            assert!(r["seed"].as_str().unwrap().starts_with("0x"), "{r}");
            assert!(r["ops"].as_u64().unwrap() < 3000, "{r}");
        }
        if extra.is_empty() {
            let (code, text) = xtask(&["soak", "--replay", dir.to_str().unwrap()]);
            assert_eq!(code, 1, "the replay must fail again");
            let again = soak_json(&artifacts(&text));
            assert_eq!(again["base_seed"], "0xb0fa10");
            assert_eq!(again["series"], "patches/6.12/v1/series");
            let rows = again["rows"].as_array().unwrap();
            assert_eq!(rows.len(), 2, "{again}");
            assert!(rows.iter().all(|r| r["verdict"] == "fail"), "{again}");
        }
    }
}

#[test]
fn bad_soak_arguments_are_usage_errors_naming_the_input() {
    let (code, text) = xtask(&["soak", "--shard", "3/2"]);
    assert_eq!(code, 129);
    assert!(text.contains("--shard \"3/2\": need 0 <= I < N"), "{text}");
    let (code, text) = xtask(&["soak", "--profile", "dirt"]);
    assert_eq!(code, 129);
    assert!(text.contains("--profile \"dirt\": unknown"), "{text}");
    let (code, text) = xtask(&["soak", "--seed", "nope"]);
    assert_eq!(code, 129);
    assert!(text.contains("--seed \"nope\""), "{text}");
    let (code, text) = xtask(&["soak", "--filter", "read/*"]);
    assert_eq!(code, 129);
    assert!(text.contains("soak runs soak/* workloads only"), "{text}");
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("soak.json");
    std::fs::write(&bad, "{\"rows\": 3}").unwrap();
    let (code, text) = xtask(&["soak", "--aggregate", bad.to_str().unwrap()]);
    assert_eq!(code, 129);
    assert!(text.contains("soak.json: not a soak.json"), "{text}");
    let (code, text) = xtask(&[
        "soak",
        "--replay",
        tmp.path().join("nope").to_str().unwrap(),
    ]);
    assert_eq!(code, 129);
    assert!(
        text.contains("nope/soak.json") || text.contains("nope"),
        "{text}"
    );
}

/// PIDs of QEMU processes whose command line mentions `needle`.
fn qemu_pids(needle: &str) -> Vec<u32> {
    common::pids("qemu-system", needle)
}

/// Issue 18, first row: SIGINT (a terminal's ^C; SIGTERM from `timeout`
/// or CI cancel acts alike) of a run whose guest is up must not leave QEMU
/// running on with PPID 1, and the run dir must say it is incomplete.
#[test]
fn sigint_during_a_run_leaves_no_qemu() {
    let _g = common::serial();
    let (mut child, run_id, _lines) = soak_until_progress();
    let before = qemu_pids(&run_id);
    assert!(
        !before.is_empty(),
        "no QEMU of run {run_id} found while it runs"
    );
    // SAFETY: a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let st = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        st.signal(),
        Some(libc::SIGINT),
        "ends as SIGINT would: {st:?}"
    );
    let mark = common::root()
        .join("target/runs")
        .join(&run_id)
        .join("INTERRUPTED");
    let text = std::fs::read_to_string(&mark).unwrap_or_else(|e| panic!("{}: {e}", mark.display()));
    assert!(text.contains("results are incomplete"), "{text}");
    assert_eq!(
        common::wait_none(|| qemu_pids(&run_id)),
        Vec::<u32>::new(),
        "QEMU outlived the run"
    );
}

/// Starts a long soak and returns it with its run id once the guest
/// reports progress (QEMU is up and the workload runs).
fn soak_until_progress() -> (
    std::process::Child,
    String,
    std::io::Lines<std::io::BufReader<std::process::ChildStderr>>,
) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "soak",
            "--kernel",
            "patched",
            "--ops",
            "1000000",
            "--filter",
            "soak/fsx@ext2",
            "--seed",
            "1",
        ])
        .current_dir(common::root())
        .env_remove("GITHUB_ACTIONS")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start xtask soak");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut run_id = None;
    let mut seen = 0;
    for line in lines.by_ref() {
        let line = line.unwrap();
        eprintln!("{line}");
        if let Some(rest) = line.split("] soak ").nth(1) {
            run_id = rest.split(':').next().map(str::to_string);
        }
        if line.contains("soak/fsx@ext2") && line.contains("ops/s") {
            break;
        }
        seen += 1;
        assert!(seen < 200, "the guest never reported progress");
    }
    (child, run_id.expect("soak printed its run id"), lines)
}

/// Issue 18: QEMU ended by a signal the toolkit did not send (the OOM
/// killer, an operator's kill, QEMU crashing) is an infrastructure failure
/// (128) saying so, not a kernel crash (2, which bisect would count as a
/// bad commit). SIGKILL is seen as the wait status; QEMU handles SIGTERM
/// itself, exits 0 and says "terminating on signal" on stderr.
#[test]
fn qemu_killed_from_outside_is_infrastructure_not_a_crash() {
    let _g = common::serial();
    for (sig, expect) in [
        (
            libc::SIGKILL,
            "QEMU was killed by signal 9 (SIGKILL), not by the toolkit",
        ),
        (libc::SIGTERM, "terminating on signal 15"),
    ] {
        let (mut child, run_id, lines) = soak_until_progress();
        let pids = qemu_pids(&run_id);
        assert_eq!(pids.len(), 1, "one QEMU of run {run_id}: {pids:?}");
        // SAFETY: a signal to a QEMU process this test's child started.
        assert_eq!(unsafe { libc::kill(pids[0] as i32, sig) }, 0);
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        let st = child.wait().unwrap();
        let text = rest.join("\n");
        eprintln!("{text}");
        assert_eq!(st.code(), Some(128), "signal {sig}: {st:?}\n{text}");
        assert!(text.contains(expect), "signal {sig}: {text}");
        let summary = std::fs::read_to_string(
            common::root()
                .join("target/runs")
                .join(&run_id)
                .join("summary.md"),
        )
        .unwrap_or_default();
        assert!(
            summary.contains(expect),
            "the reason is in summary.md: {summary}"
        );
    }
}
