//! End to end: bisecting a fixture series and a synthetic git history built
//! from the real kernel source at test time. Each case really builds and boots.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn xtask(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .current_dir(root())
        .env_remove("GITHUB_ACTIONS")
        .output()
        .expect("run xtask");
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    eprintln!("--- xtask {args:?}\n{so}{se}");
    (out.status.code().unwrap_or(-1), so, se)
}

#[test]
fn series_bisect_names_the_breaking_patch() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let series = root().join("xtask/tests/fixtures/bisect-series/series");
    let (code, out, err) = xtask(&[
        "bisect",
        "series",
        "--series",
        series.to_str().unwrap(),
        "--test",
        "errors/*",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("first bad patch: 2/3 0002-fixture-break-invalid-opcode.patch"),
        "{out}"
    );
    assert!(
        out.contains("errors/einval_opcode"),
        "failing test named: {out}"
    );
    assert!(out.contains("last good run: ") && out.contains("first bad run: "));
    let log = root().join("target/bisect/latest-series/bisect.log");
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.contains("step 1 of ~"), "{log}");
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=fixture",
            "-c",
            "user.email=f@bufaio.invalid",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn edit(file: &Path, from: &str, to: &str) {
    let s = std::fs::read_to_string(file).unwrap();
    assert!(s.contains(from), "{from:?} not in {}", file.display());
    std::fs::write(file, s.replacen(from, to, 1)).unwrap();
}

#[test]
fn git_bisect_finds_the_regression_and_reports_the_skip() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The verified source tarball from the cache.
    let (code, out, _) = xtask(&["fetch"]);
    assert_eq!(code, 0);
    let tarball = out.split_whitespace().nth(1).unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("linux");
    std::fs::create_dir(&repo).unwrap();
    let st = Command::new("tar")
        .args(["-xf", &tarball, "--strip-components=1", "-C"])
        .arg(&repo)
        .status()
        .unwrap();
    assert!(st.success());
    git(&repo, &["init", "-q"]);
    // -f: the Debian tarball's .gitignore ignores everything at the top (`/*`).
    git(&repo, &["add", "-A", "-f"]);
    git(&repo, &["commit", "-qm", "A: linux 6.12"]);
    let good = git(&repo, &["rev-parse", "HEAD"]);
    let aio = repo.join("fs/aio.c");
    let readme = repo.join("README");
    let commit = |msg: &str| {
        git(&repo, &["commit", "-qam", msg]);
        git(&repo, &["rev-parse", "HEAD"])
    };
    std::fs::write(&readme, std::fs::read_to_string(&readme).unwrap() + "\nC\n").unwrap();
    commit("C: unrelated README change");
    let line = "Implements an efficient asynchronous io interface.";
    edit(&aio, line, "Implements an asynchronous io interface.");
    let d = commit("D: reword a comment the series patches");
    edit(&aio, "Implements an asynchronous io interface.", line);
    commit("E: restore the comment");
    edit(
        &aio,
        "\t\tpr_debug(\"invalid aio operation %d\\n\", iocb->aio_lio_opcode);\n\t\treturn -EINVAL;",
        "\t\tpr_debug(\"invalid aio operation %d\\n\", iocb->aio_lio_opcode);\n\t\treturn -EBADF;",
    );
    let b = commit("B: fixture regression, invalid opcode returns EBADF");
    std::fs::write(&readme, std::fs::read_to_string(&readme).unwrap() + "\nF\n").unwrap();
    let bad = commit("F: unrelated README change");
    let series = root().join("xtask/tests/fixtures/git-series/series");
    let (code, out, err) = xtask(&[
        "bisect",
        "git",
        "--kernel-dir",
        repo.to_str().unwrap(),
        "--good",
        &good,
        "--bad",
        &bad,
        "--series",
        series.to_str().unwrap(),
        "--test",
        "errors/*",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("first bad commit: {b}")), "{out}");
    assert!(
        out.contains(&d[..12]) && out.contains("series does not apply"),
        "skip reported: {out}"
    );
    // The user's repository is as it was.
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), bad);
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");
    assert_eq!(git(&repo, &["worktree", "list"]).lines().count(), 1);
    let builds: usize = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("builds: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(builds <= 4, "at most ceil(log2 5) + 1 builds, got {builds}");

    // The same range with `git bisect run` driving `xtask bisect run`.
    git(&repo, &["bisect", "start", &bad, &good]);
    let out = Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args([
            "bisect",
            "run",
            env!("CARGO_BIN_EXE_xtask"),
            "bisect",
            "run",
            "--kernel-dir",
        ])
        .arg(&repo)
        .args(["--series", series.to_str().unwrap(), "--test", "errors/*"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!(
        "--- git bisect run\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "git bisect run failed");
    assert!(
        text.contains(&format!("{b} is the first bad commit")),
        "{text}"
    );
    git(&repo, &["bisect", "reset"]);
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), bad);
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");
    // `bisect run` keeps its worktree (incremental builds across steps);
    // drop it with git, as a user would once done.
    let list = git(&repo, &["worktree", "list", "--porcelain"]);
    for wt in list
        .lines()
        .filter_map(|l| l.strip_prefix("worktree "))
        .skip(1)
    {
        git(&repo, &["worktree", "remove", "--force", wt]);
    }
    assert_eq!(git(&repo, &["worktree", "list"]).lines().count(), 1);
}

#[test]
fn check_series_reports_apply_and_checkpatch_per_prefix() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let good = root().join("xtask/tests/fixtures/bisect-series/series");
    let (code, out, _) = xtask(&[
        "check-series",
        "--no-build",
        "--series",
        good.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    for p in ["1/3 0001-", "2/3 0002-", "3/3 0003-"] {
        let row = out.lines().find(|l| l.contains(p)).expect("row per prefix");
        assert!(row.contains("| ok |") && row.contains("| clean |"), "{row}");
    }
    let bad = root().join("xtask/tests/fixtures/conflict/series");
    let (code, out, _) = xtask(&[
        "check-series",
        "--no-build",
        "--series",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(code, 125, "{out}");
    let row = out.lines().find(|l| l.contains("1/1 0001-")).unwrap();
    assert!(row.contains("FAIL"), "{row}");
}
