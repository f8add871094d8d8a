//! End to end: the real pipeline (fetch, patch, build, boot under QEMU, guest
//! suite). Tests share one kernel build through the cache and run one VM at a
//! time (a global lock), since a 2-core host cannot run two TCG guests well.

mod common;

use common::{artifacts, root, xtask, xtask_timed};
use std::path::{Path, PathBuf};

fn results(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap()
}

/// The verdict of test `name` on the kernel that ran variant `variant`
/// alone (`unpatched`, `patched`) in a results.json's `kernels`.
fn verdict(kernels: &[serde_json::Value], variant: &str, name: &str) -> String {
    kernels
        .iter()
        .find(|k| k["variants"].as_array().unwrap().len() == 1 && k["variants"][0] == variant)
        .and_then(|k| {
            k["tests"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["name"] == name)
        })
        .map(|t| t["verdict"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

/// The A/B split: each new-behaviour test failed on the unpatched kernel
/// (xfail) and passed on the patched one.
fn assert_ab(kernels: &[serde_json::Value], names: &[&str], what: &str) {
    for name in names {
        assert_eq!(
            verdict(kernels, "unpatched", name),
            "xfail",
            "{what} {name}"
        );
        assert_eq!(verdict(kernels, "patched", name), "pass", "{what} {name}");
    }
}

#[test]
fn suite_passes_on_ext2_and_ext3_both_kernels() {
    let (code, text, _) = xtask(&["run", "--kernel", "both"]);
    assert_eq!(code, 0, "run failed");
    let dir = artifacts(&text);
    for f in ["manifest.yaml", "results.json", "summary.md"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    assert!(root().join("target/runs/latest").exists());
    let r = results(&dir);
    assert_eq!(r["outcome"], "pass");
    let kernels = r["kernels"].as_array().unwrap();
    let variants: Vec<String> = kernels
        .iter()
        .flat_map(|k| k["variants"].as_array().unwrap().iter())
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(variants.contains(&"unpatched".into()) && variants.contains(&"patched".into()));
    for k in kernels {
        assert!(
            k["kernel_release"].as_str().unwrap().starts_with("6.12"),
            "{k}"
        );
        let kdir = PathBuf::from(k["dir"].as_str().unwrap());
        for f in ["console.log", "results.json", "junit.xml", "results.ktap"] {
            assert!(kdir.join(f).is_file(), "{f} missing in {}", kdir.display());
        }
        let tests = k["tests"].as_array().unwrap();
        for fs in ["ext2", "ext3"] {
            let passed = tests
                .iter()
                .filter(|t| t["name"].as_str().unwrap().ends_with(&format!("@{fs}")))
                .filter(|t| t["status"] == "pass")
                .count();
            assert!(passed >= 5, "only {passed} tests passed on {fs}: {k}");
            let fsck = tests
                .iter()
                .find(|t| t["name"] == format!("host/fsck@{fs}"));
            assert_eq!(fsck.unwrap()["status"], "pass");
        }
        assert!(tests.iter().all(|t| t["status"] != "fail"), "{k}");
        assert!(k["boot_to_ready_ms"].as_u64().is_some());
    }
    // The A/B split: new-behaviour tests fail on the unpatched kernel (xfail)
    // and pass on the patched one; a suite that cannot tell them apart fails.
    let names = [
        "read/nonblocking_submit@ext2",
        "read/nonblocking_submit@ext3",
        "read/batch_nonblocking@ext2",
    ];
    assert_ab(kernels, &names, "6.12");
    let manifest = std::fs::read_to_string(dir.join("manifest.yaml")).unwrap();
    assert!(manifest.contains("qemu_command: "), "{manifest}");
    assert!(manifest.contains("tarball_sha256: "));
}

#[test]
fn debug_flavor_patched_kernel_runs_the_suite_without_splats() {
    // lockdep, KASAN, kmemleak, DEBUG_ATOMIC_SLEEP, PROVE_RCU, UBSAN.
    // Every test but the workload-scale ones, which cost ~4 of this test's
    // ~14 minutes under TCG and exercise no path the others miss: the plain
    // fsx and its pressure profile, the libaio and fio harnesses, and the
    // 64k-iocb teardown (destroy_many_parked stays). The race tests stay.
    // GitHub Actions' patched-debug job runs the whole suite under KVM.
    let (code, text, _) = xtask(&[
        "run",
        "--kernel",
        "patched",
        "--flavor",
        "debug",
        "--filter",
        "!soak/fsx@*",
        "--filter",
        "!soak/fsx_pressure@*",
        "--filter",
        "!soak/libaio*",
        "--filter",
        "!soak/fio_verify@*",
        "--filter",
        "!teardown/destroy_64k_parked",
    ]);
    assert_eq!(code, 0, "debug flavor run failed");
    let r = results(&artifacts(&text));
    let k = &r["kernels"][0];
    assert_eq!(k["flavor"], "debug");
    assert_eq!(k["splats"].as_array().unwrap().len(), 0, "{k}");
    let summary = std::fs::read_to_string(artifacts(&text).join("summary.md")).unwrap();
    assert!(
        !summary.contains("soak/fsx@ext2"),
        "excluded by !soak/fsx@*"
    );
    assert!(!summary.contains("teardown/destroy_64k_parked"));
    for kept in [
        "soak/fsx_slow@ext3",
        "soak/destroy_race@ext3",
        "retry/reap_leave_race@ext3",
    ] {
        assert!(summary.contains(kept), "{kept} must still run: {summary}");
    }
    let console =
        std::fs::read_to_string(PathBuf::from(k["dir"].as_str().unwrap()).join("console.log"))
            .unwrap();
    assert!(
        console.contains("KernelAddressSanitizer initialized"),
        "KASAN is really enabled"
    );
}

#[test]
fn injected_panic_is_a_kernel_crash_with_excerpt() {
    // Fixture: the guest init exits at once, so the kernel panics
    // ("Attempted to kill init!").
    let (code, text, _) = xtask(&[
        "run",
        "--kernel",
        "unpatched",
        "--append",
        "bufaio.fixture=panic",
    ]);
    assert_eq!(code, 2, "a panic must exit 2");
    assert!(
        text.contains("Kernel panic - not syncing"),
        "excerpt printed"
    );
    let dir = artifacts(&text);
    let r = results(&dir);
    assert_eq!(r["exit_code"], 2);
    let k = &r["kernels"][0];
    let splats = k["splats"].as_array().unwrap();
    assert!(splats.iter().any(|s| s["kind"] == "Panic"), "{k}");
    assert!(PathBuf::from(k["dir"].as_str().unwrap())
        .join("splat.txt")
        .is_file());
}

#[test]
fn exec_runs_a_command_with_files_and_returns_its_status() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("hello.txt");
    std::fs::write(&f, "hello from the host\n").unwrap();
    let (code, text, out) = xtask(&[
        "exec",
        "--kernel",
        "unpatched",
        "--add",
        f.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "cat hello.txt; grep -q ' /mnt/ext3 ext3 ' /proc/mounts && echo ext3-mounted; uname -r; exit 7",
    ]);
    assert_eq!(code, 7, "exit status of the guest command");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("hello from the host"), "{text}");
    assert!(stdout.contains("ext3-mounted"), "{text}");
    assert!(stdout.contains("6.12."), "{text}");
    // A command that cannot start: 127, and the guest's reason on stderr
    // (not only in console.log).
    let (code, text, out) = xtask(&["exec", "--kernel", "unpatched", "--", "/nonexistent"]);
    assert_eq!(code, 127, "{text}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bufaio: exec: /nonexistent: not found"),
        "{stderr}"
    );
}

#[test]
fn conflicting_series_is_untestable_and_names_the_patch() {
    let series = root().join("xtask/tests/fixtures/conflict/series");
    let (code, text, _) = xtask(&[
        "build",
        "--kernel",
        "patched",
        "--series",
        series.to_str().unwrap(),
    ]);
    assert_eq!(code, 125, "a series that does not apply is untestable");
    assert!(text.contains("0001-fixture-does-not-apply.patch"), "{text}");
    assert!(
        text.contains("this line is not in fs/aio.c"),
        "rejected hunk shown"
    );
}

/// Issue 18: inputs that cannot work are refused (129) before anything
/// is fetched, built or booted, naming the input.
#[test]
fn bad_inputs_are_refused_before_any_build() {
    let tmp = tempfile::tempdir().unwrap();
    // A series that lists one patch twice, and one that lists a copy.
    let p = root().join("patches/6.12");
    std::fs::copy(
        p.join("0001-mm-filemap-let-an-asynchronous-folio-waiter-withdraw.patch"),
        tmp.path().join("0001-a.patch"),
    )
    .unwrap();
    std::fs::copy(
        tmp.path().join("0001-a.patch"),
        tmp.path().join("0002-copy.patch"),
    )
    .unwrap();
    let twice = tmp.path().join("twice");
    std::fs::write(&twice, "0001-a.patch\n# x\n0001-a.patch\n").unwrap();
    // The commands' own time (not the wait for another test's VM).
    let mut spent = std::time::Duration::ZERO;
    let mut xtask = |args: &[&str]| {
        let (code, text, took) = xtask_timed(args);
        spent += took;
        (code, text, ())
    };
    let (code, text, _) = xtask(&["build", "--series", twice.to_str().unwrap()]);
    assert_eq!(code, 129, "{text}");
    assert!(
        text.contains("twice: line 3: lists 0001-a.patch again (first at line 1)"),
        "{text}"
    );
    let copy = tmp.path().join("copy");
    std::fs::write(&copy, "0001-a.patch\n0002-copy.patch\n").unwrap();
    let (code, text, _) = xtask(&["build", "--series", copy.to_str().unwrap()]);
    assert_eq!(code, 129, "{text}");
    assert!(
        text.contains("copy:2: patch 0002-copy.patch has the same content as 0001-a.patch"),
        "{text}"
    );
    // A kconfig fragment that does not exist: named with its YAML key.
    let cfg = std::fs::read_to_string(root().join("bufaio.yaml"))
        .unwrap()
        .replace("kconfigs/debug.config", "kconfigs/nope.config")
        .replace(
            "series: patches/6.12/series",
            &format!("series: {}", root().join("patches/6.12/series").display()),
        )
        .replace(
            "kconfigs/base.config",
            &root().join("kconfigs/base.config").display().to_string(),
        )
        .replace(
            "splat_allowlist: kconfigs/",
            &format!("splat_allowlist: {}/", root().join("kconfigs").display()),
        );
    let yaml = tmp.path().join("b.yaml");
    std::fs::write(&yaml, cfg).unwrap();
    let (code, text, _) = xtask(&["build", "--config", yaml.to_str().unwrap()]);
    assert_eq!(code, 129, "{text}");
    assert!(
        text.contains("kconfig.flavors.debug[0]: kconfig fragment")
            && text.contains("nope.config does not exist"),
        "{text}"
    );
    // Values no guest can run with.
    for (args, msg) in [
        (
            &["run", "--test-timeout", "0"][..],
            "--test-timeout 0: expected a positive number",
        ),
        (&["run", "--cpus", "0"][..], "--cpus 0: expected at least 1"),
        (
            &["run", "--memory", "16"][..],
            "--memory 16: the guest needs at least 64 MiB",
        ),
        (
            &["exec", "--add", "/nonexistent", "--", "true"][..],
            "--add /nonexistent: No such file",
        ),
        (
            &["exec", "--add", "/tmp", "--", "true"][..],
            "--add /tmp: not a regular file",
        ),
        (
            &["run", "--filter", "nonexistent/*"][..],
            "--filter nonexistent/*: matches no test; nearest:",
        ),
    ] {
        let (code, text, _) = xtask(args);
        assert_eq!(code, 129, "{args:?}: {text}");
        assert!(text.contains(msg), "{args:?}: {text}");
    }
    // A bisect --test glob that selects nothing would make every step good.
    let (code, text, _) = xtask(&["bisect", "series", "--test", "nonexistent/*"]);
    assert_eq!(code, 129, "{text}");
    assert!(
        text.contains("--test nonexistent/*: matches no test; nearest:"),
        "{text}"
    );
    assert!(
        spent < std::time::Duration::from_secs(120),
        "refusals took {spent:?}: something was built"
    );
}

#[test]
fn bad_config_is_a_usage_error_naming_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = std::fs::read_to_string(root().join("bufaio.yaml"))
        .unwrap()
        .replace("qemu:\n", "qemu:\n  memroy_mib: 5\n");
    let p = tmp.path().join("bad.yaml");
    std::fs::write(&p, cfg).unwrap();
    let (code, text, _) = xtask(&["run", "--config", p.to_str().unwrap()]);
    assert_eq!(code, 129);
    assert!(
        text.contains("bad.yaml:") && text.contains("memroy_mib"),
        "{text}"
    );
    let (code, _, _) = xtask(&["run", "--no-such-flag"]);
    assert_eq!(code, 129);
}

#[test]
fn workflows_pass_actionlint_and_zizmor() {
    let (code, text, _) = xtask(&["lint-workflows"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("actionlint: 4 file(s), 0 finding(s)"),
        "{text}"
    );
    assert!(text.contains("No findings to report"), "{text}");
}

/// Issue 18: SIGINT during source extraction leaves no tar running, the
/// next command that takes the cache lock removes the half-extracted tree,
/// and SIGINT during the kernel build leaves no make running. On a copy of the cache (its downloads hard-linked).
#[test]
fn interrupted_extraction_and_build_leave_no_tar_or_make_and_are_swept() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = common::linked_cache(tmp.path());
    let trees = cache.join("trees");
    let extracting = |t: &Path| -> bool {
        std::fs::read_dir(t)
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with(".extract-"))
            })
            .unwrap_or(false)
    };
    build_interrupted_at(&cache, "extracting", "tar\0");
    assert!(extracting(&trees), "the interrupted tree is there to sweep");
    let (code, text, _) = common::xtask_in_cache(&["fetch"], &cache);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("removed 1 temp dir(s) left by an interrupted run"),
        "{text}"
    );
    assert!(!extracting(&trees), "swept");
    // The same during the kernel build: make ends with the toolkit.
    build_interrupted_at(&cache, "build: make bzImage", "make\0");
}

/// Starts `xtask build --kernel unpatched` on `cache`, waits for a stderr
/// line containing `marker` and 3 s more, checks that `prog` (argv[0]
/// prefix) runs for that cache, sends SIGINT, and checks that the toolkit
/// ends as SIGINT would and `prog` does not outlive it.
fn build_interrupted_at(cache: &Path, marker: &str, prog: &str) {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    let _g = common::serial();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["build", "--kernel", "unpatched"])
        .current_dir(common::root())
        .env("BUFAIO_CACHE_DIR", cache)
        .env_remove("GITHUB_ACTIONS")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for l in BufReader::new(child.stderr.take().unwrap()).lines() {
        let l = l.unwrap();
        eprintln!("{l}");
        if l.contains(marker) {
            break;
        }
    }
    std::thread::sleep(std::time::Duration::from_secs(3));
    let cache_s = cache.to_string_lossy().into_owned();
    let running = || common::pids(prog, &cache_s);
    assert!(
        !running().is_empty(),
        "{prog:?} is not running after {marker:?}"
    );
    // SAFETY: a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let st = child.wait().unwrap();
    assert_eq!(st.signal(), Some(libc::SIGINT), "{st:?}");
    assert_eq!(
        common::wait_none(running),
        Vec::<u32>::new(),
        "{prog:?} outlived the build"
    );
}

/// Issue 18: the silence timeout watches the guest, not the command: a
/// command quiet for longer than the timeout (here 20 s, `sleep 45`) runs
/// to its end because PID 1 sends a heartbeat; its status is returned.
#[test]
fn quiet_exec_command_outlives_the_silence_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = std::fs::read_to_string(root().join("bufaio.yaml"))
        .unwrap()
        .replace("silence_s: 180", "silence_s: 20");
    // Next to bufaio.yaml's relative paths: in target/ they would not resolve.
    let p = root().join(".quiet-exec-test.yaml");
    std::fs::write(&p, cfg).unwrap();
    let _keep = tmp;
    let (code, text, _) = xtask(&[
        "exec",
        "--config",
        p.to_str().unwrap(),
        "--kernel",
        "unpatched",
        "--",
        "sh",
        "-c",
        "sleep 45; exit 3",
    ]);
    let _ = std::fs::remove_file(&p);
    assert_eq!(code, 3, "the command's status, not a hang: {text}");
    let mut runs: Vec<PathBuf> = std::fs::read_dir(root().join("target/runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("-exec-"))
        .collect();
    runs.sort();
    let dir = runs.pop().expect("an exec run dir");
    let console = std::fs::read_to_string(dir.join("unpatched/console.log")).unwrap();
    assert!(console.contains("bufaio-heartbeat: up"), "{console}");
}

/// Issue 18: a run deletes its disk images when it ends unless
/// `--keep-disks`; `cargo xtask clean` removes the ones left (kept or from
/// a killed run) and keeps the logs.
#[test]
fn keep_disks_and_clean() {
    let (code, text, _) = xtask(&[
        "run",
        "--kernel",
        "unpatched",
        "--filter",
        "basic/setup_destroy",
        "--keep-disks",
    ]);
    assert_eq!(code, 0, "{text}");
    let dir = artifacts(&text);
    let disks = |d: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(d.join("unpatched"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.starts_with("disk-") && n.ends_with(".img")
            })
            .collect()
    };
    assert!(!disks(&dir).is_empty(), "--keep-disks kept nothing");
    let (code, text, _) = xtask(&["clean", "--dry-run"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("would remove") && text.contains(&*dir.to_string_lossy()),
        "{text}"
    );
    assert!(!disks(&dir).is_empty(), "--dry-run removed something");
    let (code, text, _) = xtask(&["clean"]);
    assert_eq!(code, 0, "{text}");
    assert!(disks(&dir).is_empty(), "clean left disk images: {text}");
    assert!(dir.join("unpatched/console.log").is_file(), "logs are kept");
}

/// Issue 18: a cache on a filesystem too small for the source tree fails
/// with the space needed and free (128), before tar writes anything, and
/// leaves no partial tree. A 64 MiB tmpfs as the cache (root only: CI).
#[test]
fn too_little_space_for_the_tree_is_named_and_leaves_nothing() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to mount a small tmpfs");
        return;
    }
    let (code, text, _) = xtask(&["fetch"]);
    assert_eq!(code, 0, "{text}");
    // The cached source tarball and its sha, as a `tarball:` source.
    let tarball = text
        .lines()
        .find_map(|l| {
            l.split_whitespace()
                .find(|w| w.ends_with(".deb.tar.xz"))
                .map(PathBuf::from)
        })
        .expect("fetch names the tarball");
    let stamp = std::fs::read_to_string(format!("{}.verified", tarball.display())).unwrap();
    let sha = stamp.split_whitespace().next().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    struct Umount(PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Umount(mnt.clone());
    let cfg = std::fs::read_to_string(root().join("bufaio.yaml")).unwrap();
    let start = cfg.find("kernel:\n").unwrap();
    let end = start + cfg[start..].find("\nseries:").unwrap();
    let cfg = format!(
        "{}kernel:\n  version: \"6.12.117\"\n  sources:\n    - kind: tarball\n      path: {}\n      sha256: {sha}{}",
        &cfg[..start],
        tarball.display(),
        &cfg[end..]
    );
    let yaml = root().join(".small-cache-test.yaml");
    std::fs::write(&yaml, cfg).unwrap();
    let _g = common::serial();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["build", "--kernel", "unpatched", "--config"])
        .arg(&yaml)
        .current_dir(root())
        .env("BUFAIO_CACHE_DIR", &mnt)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&yaml);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(128), "{text}");
    assert!(text.contains("no space left on"), "{text}");
    assert!(text.contains("MiB free"), "{text}");
    let left: Vec<_> = std::fs::read_dir(mnt.join("trees"))
        .unwrap()
        .flatten()
        .collect();
    assert!(left.is_empty(), "partial tree left: {left:?}");
}

/// A config whose kernel.sources are `sources` (YAML list items), the rest
/// as shipped; written next to bufaio.yaml so relative paths resolve.
fn config_with_sources(name: &str, sources: &str) -> PathBuf {
    let cfg = std::fs::read_to_string(root().join("bufaio.yaml")).unwrap();
    let start = cfg.find("kernel:\n").unwrap();
    let end = start + cfg[start..].find("\nseries:").unwrap();
    let cfg = format!(
        "{}kernel:\n  version: \"6.12.117\"\n  sources:\n{sources}{}",
        &cfg[..start],
        &cfg[end..]
    );
    let p = root().join(format!(".{name}.yaml"));
    std::fs::write(&p, cfg).unwrap();
    p
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(data))
}

/// Issue 18, on a cache of its own (BUFAIO_CACHE_DIR): a wrong pinned
/// sha256 names both sums and falls through to the next source (exit 0),
/// or fails 128 when none verifies; a cached download replaced behind the
/// toolkit's back is found by `fetch`, moved aside and fetched again.
#[test]
fn bad_checksums_and_changed_cache_files() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let src = tmp.path().join("linux-fixture.tar.gz");
    let body = b"not really a kernel, but fetch only verifies".repeat(1000);
    std::fs::write(&src, &body).unwrap();
    let good = sha256_hex(&body);
    let wrong = "0".repeat(64);
    let fetch = |cfg: &Path| {
        let (code, text, _) =
            common::xtask_in_cache(&["fetch", "--config", cfg.to_str().unwrap()], &cache);
        (Some(code), text)
    };
    let url = format!("file://{}", src.display());
    let only_bad = config_with_sources(
        "bad-sha-test",
        &format!("    - kind: url\n      url: {url}\n      sha256: {wrong}\n"),
    );
    let (code, text) = fetch(&only_bad);
    assert_eq!(code, Some(128), "{text}");
    assert!(
        text.contains(&format!(
            "sha256 mismatch for {url}: expected {wrong}, got {good}"
        )),
        "{text}"
    );
    let then_good = config_with_sources(
        "bad-then-good-sha-test",
        &format!(
            "    - kind: url\n      url: {url}\n      sha256: {wrong}\n    - kind: url\n      url: {url}\n      sha256: {good}\n"
        ),
    );
    let (code, text) = fetch(&then_good);
    assert_eq!(code, Some(0), "{text}");
    let cached = cache.join(format!("downloads/{good}.tar.gz"));
    assert_eq!(std::fs::read(&cached).unwrap(), body);
    // Replaced behind the toolkit's back, same size.
    let mut other = body.clone();
    other[0] ^= 1;
    std::fs::write(&cached, &other).unwrap();
    let (code, text) = fetch(&then_good);
    let _ = std::fs::remove_file(&only_bad);
    let _ = std::fs::remove_file(&then_good);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("changed (sha256") && text.contains("fetched again"),
        "{text}"
    );
    assert_eq!(std::fs::read(&cached).unwrap(), body, "fetched again");
    assert!(cached
        .with_file_name(format!("{good}.tar.gz.bad"))
        .is_file());
}

/// Issue 18: a patch that applies only with fuzz is applied with a warning
/// naming it and the hunk, and check-series fails on it unless --fuzz. On
/// a cache of its own (downloads linked from the real one), so the fixture's
/// tree goes away with the test.
#[test]
fn fuzz_is_warned_and_fails_check_series() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = common::linked_cache(tmp.path());
    let series = root().join("xtask/tests/fixtures/fuzz/series");
    let check = |extra: &[&str]| {
        let mut args = vec![
            "check-series",
            "--no-build",
            "--series",
            series.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let (code, text, _) = common::xtask_in_cache(&args, &cache);
        (Some(code), text)
    };
    let (code, text) = check(&[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("patch 0001-fixture-applies-with-fuzz.patch applies only with fuzz: fs/aio.c hunk #1 at line 2, fuzz 1"),
        "{text}"
    );
    assert!(
        text.contains("| FUZZ: fs/aio.c hunk #1 at line 2, fuzz 1 |"),
        "{text}"
    );
    assert!(
        text.contains("| clean |"),
        "the fixture is checkpatch-clean: {text}"
    );
    // Accepted with --fuzz (the cached tree still says so).
    let (code, text) = check(&["--fuzz"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("applies only with fuzz"), "{text}");
}

/// Issue 17: `run` over two kernel targets prints one A/B table each; on
/// 7.1 (the v2 series carried to 7.1's APIs) new-behaviour tests, reads and
/// writes, XFAIL on the unpatched kernel and pass on the patched one; a
/// series that does not apply to one target makes that target untestable
/// (125), not the run.
#[test]
fn two_targets_one_table_each_and_a_series_that_does_not_apply_is_that_targets_125() {
    let new_behaviour = [
        "read/nonblocking_submit@ext2",
        "read/nonblocking_submit_metadata@ext3",
        "read/batch_nonblocking@ext2",
        "read/eventfd_nonblocking@ext3",
        "write/partial_block_nonblocking@ext2",
        "write/extend_nonblocking@ext2",
        "write/osync_nonblocking@ext2",
        "write/counters@ext2",
    ];
    let mut args = vec!["run", "--target", "6.12,7.1", "--filter", "basic/*"];
    for n in new_behaviour {
        args.extend(["--filter", n]);
    }
    let (code, text, _) = xtask(&args);
    assert_eq!(code, 0, "run over two targets failed");
    for t in ["6.12", "7.1"] {
        assert!(text.contains(&format!("target {t}: pass (exit 0)")), "{t}");
    }
    assert!(text.contains("target 7.1 (kernel 7.1.8):"), "no 7.1 table");
    assert!(text.contains("outcome of all targets: pass (exit 0)"));
    let runs: Vec<PathBuf> = text
        .lines()
        .filter(|l| l.starts_with("outcome:"))
        .map(artifacts)
        .collect();
    assert_eq!(runs.len(), 2, "one run dir per target");
    for (run, release) in runs.iter().zip(["6.12", "7.1"]) {
        let r = results(run);
        let kernels = r["kernels"].as_array().unwrap();
        assert_eq!(kernels.len(), 2, "{release}: unpatched and patched");
        for k in kernels {
            let release_of = k["kernel_release"].as_str().unwrap();
            assert!(release_of.starts_with(release), "{k}");
        }
        assert_ab(kernels, &new_behaviour, release);
    }
    // The 6.12 series on 7.1 stops at patch 0002 (mainline reworked the
    // NOWAIT timestamp code): 7.1 untestable, the run still passes on 6.12.
    let (code, text, _) = xtask(&[
        "run",
        "--target",
        "6.12,7.1",
        "--kernel",
        "both",
        "--series",
        "patches/6.12/series",
        "--filter",
        "basic/setup_destroy",
    ]);
    assert_eq!(code, 0, "one untestable target failed the run");
    assert!(text.contains("target 6.12: pass (exit 0)"));
    assert!(
        text.contains("target 7.1: untestable (exit 125)"),
        "7.1 not 125"
    );
    assert!(
        text.contains("0002"),
        "the patch that does not apply is named"
    );
}
