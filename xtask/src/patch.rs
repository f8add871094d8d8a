//! Stage 2, patch: a pristine kernel tree per (source, series), with the series
//! applied in order. Trees are built in a temporary directory and renamed into
//! place only when every patch applied, so a half-patched tree is never reused.

use crate::cache::{sha256_bytes, Cache};
use crate::error::{untestable, usage};
use crate::fetch::{short, Fetched};
use crate::ui::Ui;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One entry of `patches/series`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchInfo {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
    pub subject: String,
    /// `-pN` strip level from the series line (quilt syntax), default 1.
    pub strip: u32,
}

/// A parsed series (possibly a prefix of the file, for bisecting).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub file: PathBuf,
    pub patches: Vec<PatchInfo>,
}

/// A ready-to-build kernel tree.
#[derive(Debug, Clone, Serialize)]
pub struct Tree {
    pub path: PathBuf,
    /// Hash of (source id, applied patches): names the tree in the cache.
    pub key: String,
    pub patches: Vec<PatchInfo>,
    /// Patches that applied only with fuzz, and which hunks (upstream
    /// patches apply exactly: `check-series` fails on these).
    pub fuzz: Vec<(String, Vec<String>)>,
    /// A cached tree made before fuzz was recorded: `fuzz` says nothing.
    pub fuzz_unknown: bool,
}

/// The hunks GNU patch applied with fuzz, from its output: `fs/aio.c
/// hunk #2 at line 1234, fuzz 1`. Offsets alone are not fuzz (`git am`
/// accepts them too).
pub fn fuzzy_hunks(patch_output: &str) -> Vec<String> {
    let mut file = String::new();
    let mut out = Vec::new();
    for l in patch_output.lines() {
        if let Some(f) = l.strip_prefix("patching file ") {
            file = f.trim().trim_matches('\'').to_string();
        } else if let (Some(h), Some(i)) = (l.strip_prefix("Hunk #"), l.find(" with fuzz ")) {
            let num = h.split_whitespace().next().unwrap_or("?");
            let at = l
                .split(" succeeded at ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .unwrap_or("?");
            let fuzz = l[i + " with fuzz ".len()..]
                .trim_end_matches(|c: char| !c.is_ascii_digit())
                .split_whitespace()
                .next()
                .unwrap_or("?");
            out.push(format!("{file} hunk #{num} at line {at}, fuzz {fuzz}"));
        }
    }
    out
}

/// Parse quilt `series` text: one patch per line, `#` comments, optional `-pN`.
/// Pure: returns (name, strip, line) tuples.
pub fn parse_series(text: &str) -> Result<Vec<(String, u32, usize)>, String> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default().to_string();
        let mut strip = 1;
        for w in words {
            match w.strip_prefix("-p").and_then(|n| n.parse().ok()) {
                Some(n) => strip = n,
                None => return Err(format!("line {}: unknown option {w:?}", i + 1)),
            }
        }
        if let Some((_, _, first)) = out.iter().find(|(n, _, _)| *n == name) {
            return Err(format!(
                "line {}: lists {name} again (first at line {first}); a patch applied twice cannot apply",
                i + 1
            ));
        }
        out.push((name, strip, i + 1));
    }
    Ok(out)
}

/// Subject line of a git-format-patch file, without the `[PATCH n/m]` prefix.
pub fn subject_of(patch: &str) -> String {
    let mut lines = patch.lines();
    while let Some(l) = lines.next() {
        if let Some(s) = l.strip_prefix("Subject: ") {
            let mut s = s.to_string();
            // RFC 2822 folded header continuation.
            for cont in lines.by_ref() {
                if cont.starts_with(' ') || cont.starts_with('\t') {
                    s.push(' ');
                    s.push_str(cont.trim());
                } else {
                    break;
                }
            }
            let s = s.trim();
            return match (s.starts_with('['), s.find("] ")) {
                (true, Some(i)) => s[i + 2..].to_string(),
                _ => s.to_string(),
            };
        }
        if l.starts_with("diff --git") {
            break;
        }
    }
    String::new()
}

impl Series {
    /// Load the series file and hash every patch it lists.
    pub fn load(file: &Path) -> Result<Series> {
        let text = fs::read_to_string(file)
            .with_context(|| format!("cannot read series file {}", file.display()))
            .map_err(|e| usage(format!("{e:#}")))?;
        let dir = file.parent().unwrap_or(Path::new("."));
        let entries = parse_series(&text).map_err(|e| usage(format!("{}: {e}", file.display())))?;
        let mut patches = Vec::new();
        for (name, strip, line) in entries {
            let path = std::path::absolute(dir.join(&name)).unwrap_or_else(|_| dir.join(&name));
            let body = fs::read(&path).map_err(|e| {
                usage(format!(
                    "{}:{line}: patch {name} cannot be read ({}): {e}",
                    file.display(),
                    path.display()
                ))
            })?;
            let sha256 = sha256_bytes(&body);
            if let Some(p) = patches.iter().find(|p: &&PatchInfo| p.sha256 == sha256) {
                return Err(usage(format!(
                    "{}:{line}: patch {name} has the same content as {} listed before it; a patch applied twice cannot apply",
                    file.display(),
                    p.name
                )));
            }
            patches.push(PatchInfo {
                subject: subject_of(&String::from_utf8_lossy(&body)),
                sha256,
                name,
                path,
                strip,
            });
        }
        Ok(Series {
            file: file.to_path_buf(),
            patches,
        })
    }

    pub fn empty(file: &Path) -> Series {
        Series {
            file: file.to_path_buf(),
            patches: Vec::new(),
        }
    }
}

/// Tree key: the source identity plus each applied patch (name and content).
pub fn tree_key(source_id: &str, patches: &[PatchInfo]) -> String {
    let mut s = format!("source {source_id}\n");
    for p in patches {
        s.push_str(&format!("patch {} -p{} {}\n", p.name, p.strip, p.sha256));
    }
    sha256_bytes(s.as_bytes())
}

const MARKER: &str = ".bufaio-tree.json";

/// Extract `src` and apply `series`, or reuse the cached tree for the same key.
/// The caller holds the cache lock.
pub fn prepare(src: &Fetched, series: &Series, cache: &Cache, ui: &Ui) -> Result<Tree> {
    let key = tree_key(&src.id, &series.patches);
    let path = cache.trees().join(short(&key));
    let mut tree = Tree {
        path: path.clone(),
        key: key.clone(),
        patches: series.patches.clone(),
        fuzz: Vec::new(),
        fuzz_unknown: false,
    };
    if path.join(MARKER).is_file() {
        let marker: Option<serde_json::Value> = fs::read_to_string(path.join(MARKER))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        match marker.as_ref().map(|v| &v["fuzz"]) {
            Some(f) if !f.is_null() => {
                tree.fuzz = serde_json::from_value(f.clone()).unwrap_or_default();
                warn_fuzz(&tree, ui);
            }
            // Made before fuzz was recorded: whether a patch needed fuzz is
            // not known (shown as such by check-series).
            _ if !series.patches.is_empty() => tree.fuzz_unknown = true,
            _ => {}
        }
        return Ok(tree);
    }
    if path.exists() {
        // A tree without its marker is debris from an interrupted run.
        fs::remove_dir_all(&path)
            .with_context(|| format!("cannot remove stale tree {}", path.display()))?;
    }
    let what = if series.patches.is_empty() {
        "unpatched".to_string()
    } else {
        format!("{} patches", series.patches.len())
    };
    let stage = ui.stage("patch", format!("tree {} ({what})", short(&key)));
    let need = extracted_size_estimate(&src.tarball);
    if let Some(free) = free_bytes(&cache.trees()) {
        if free < need {
            anyhow::bail!(
                "no space left on {}: extracting {} needs about {} MiB, {} MiB free (free some, e.g. `cargo xtask clean --trees`, or point BUFAIO_CACHE_DIR elsewhere)",
                cache.trees().display(),
                src.tarball.display(),
                need >> 20,
                free >> 20
            );
        }
    }
    let tmp = tempfile::Builder::new()
        .prefix(".extract-")
        .tempdir_in(cache.trees())
        .context("cannot create a temp dir for the tree")?;
    stage.note(format!("extracting {}", src.tarball.display()));
    let mut tar = Command::new("tar");
    crate::proc::die_with_parent(&mut tar);
    // Messages parsed below (ENOSPC) are the untranslated ones.
    tar.env("LC_ALL", "C");
    let out = tar
        .arg("-xf")
        .arg(&src.tarball)
        .arg("-C")
        .arg(tmp.path())
        .arg("--strip-components=1")
        .output()
        .context("cannot run tar")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No space left on device") || err.contains("Wrote only") {
            anyhow::bail!(
                "no space left on {} while extracting {} (needs about {} MiB, {} MiB free now); the partial tree was removed",
                cache.trees().display(),
                src.tarball.display(),
                need >> 20,
                free_bytes(&cache.trees()).unwrap_or(0) >> 20
            );
        }
        anyhow::bail!(
            "cannot extract {}: {} (corrupt archive?)",
            src.tarball.display(),
            err.trim()
        );
    }
    if !tmp.path().join("Makefile").is_file() || !tmp.path().join("fs/aio.c").is_file() {
        anyhow::bail!(
            "{} does not look like a Linux tree (no Makefile or fs/aio.c at its top)",
            src.tarball.display()
        );
    }
    for (i, p) in series.patches.iter().enumerate() {
        stage.note(format!("applying {}", p.name));
        let fuzz = apply_one(tmp.path(), p).map_err(|e| {
            untestable(format!(
                "patch {}/{} {} ({}) does not apply:\n{e}",
                i + 1,
                series.patches.len(),
                p.name,
                p.subject
            ))
        })?;
        if !fuzz.is_empty() {
            tree.fuzz.push((p.name.clone(), fuzz));
        }
    }
    warn_fuzz(&tree, ui);
    let meta = serde_json::to_string_pretty(&serde_json::json!({
        "key": key, "source": src.id, "patches": series.patches, "fuzz": tree.fuzz,
    }))?;
    fs::write(tmp.path().join(MARKER), meta).context("cannot write the tree marker")?;
    let tmp_path = tmp.keep();
    fs::rename(&tmp_path, &path)
        .with_context(|| format!("cannot rename {} to {}", tmp_path.display(), path.display()))?;
    stage.finish(format!("ready at {}", path.display()));
    Ok(tree)
}

/// Roughly what extracting `tarball` takes: compressed kernel sources
/// expand about 10x (xz, zstd) or 6x (gzip, bzip2).
pub fn extracted_size_estimate(tarball: &Path) -> u64 {
    let len = fs::metadata(tarball).map(|m| m.len()).unwrap_or(0);
    let name = tarball.to_string_lossy();
    let factor = if name.ends_with(".xz") || name.ends_with(".zst") {
        10
    } else if name.ends_with(".gz") || name.ends_with(".bz2") {
        6
    } else {
        1
    };
    len.saturating_mul(factor)
}

/// Bytes available to an unprivileged writer on the filesystem of `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we own; `c` is a
    // NUL-terminated path that outlives the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

fn warn_fuzz(tree: &Tree, ui: &Ui) {
    for (name, hunks) in &tree.fuzz {
        ui.warn(format!(
            "patch {name} applies only with fuzz: {} (the patch does not match this tree exactly; `check-series` fails on it)",
            hunks.join("; ")
        ));
    }
}

/// Apply one patch with GNU patch: the hunks that needed fuzz (see
/// [`fuzzy_hunks`]); on failure the output and the rejected hunks.
pub fn apply_one(tree: &Path, p: &PatchInfo) -> std::result::Result<Vec<String>, String> {
    let rej = tree.join(".bufaio-rejects");
    let out = Command::new("patch")
        // `fuzzy_hunks` reads the untranslated "Hunk #N succeeded … with fuzz".
        .env("LC_ALL", "C")
        .arg(format!("-p{}", p.strip))
        .args(["--forward", "--batch", "--no-backup-if-mismatch", "-i"])
        .arg(&p.path)
        .arg(format!("--reject-file={}", rej.display()))
        .current_dir(tree)
        .output()
        .map_err(|e| format!("cannot run patch: {e}"))?;
    if out.status.success() {
        return Ok(fuzzy_hunks(&String::from_utf8_lossy(&out.stdout)));
    }
    let mut msg = String::from_utf8_lossy(&out.stdout).to_string();
    msg.push_str(&String::from_utf8_lossy(&out.stderr));
    if let Ok(r) = fs::read_to_string(&rej) {
        msg.push_str("\nrejected hunks:\n");
        msg.push_str(&r.lines().take(60).collect::<Vec<_>>().join("\n"));
    }
    Err(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_parsing() {
        let s = "# comment\n0001-a.patch\n\n0002-b.patch -p0 # trailing\n";
        assert_eq!(
            parse_series(s).unwrap(),
            vec![("0001-a.patch".into(), 1, 2), ("0002-b.patch".into(), 0, 4)]
        );
        let dup = parse_series("# c\n0001-a.patch\n0002-b.patch\n0001-a.patch -p1\n").unwrap_err();
        assert!(
            dup.contains("line 4") && dup.contains("0001-a.patch again (first at line 2)"),
            "{dup}"
        );
        assert!(parse_series("x.patch --weird\n")
            .unwrap_err()
            .contains("line 1"));
    }

    #[test]
    fn subjects() {
        let p = "From 1 Mon\nSubject: [PATCH 2/3] aio: do a\n thing\nX: y\n\ndiff --git a b\n";
        assert_eq!(subject_of(p), "aio: do a thing");
        assert_eq!(subject_of("Subject: plain\n"), "plain");
    }

    #[test]
    fn key_depends_on_source_and_patches() {
        let p = PatchInfo {
            name: "a".into(),
            path: "a".into(),
            sha256: "1".into(),
            subject: String::new(),
            strip: 1,
        };
        let k0 = tree_key("src", &[]);
        assert_ne!(k0, tree_key("src", std::slice::from_ref(&p)));
        assert_ne!(k0, tree_key("other", &[]));
        assert_eq!(k0, tree_key("src", &[]));
    }

    fn fake_source(d: &Path) -> Fetched {
        let top = d.join("src/linux");
        fs::create_dir_all(top.join("fs")).unwrap();
        fs::write(top.join("Makefile"), "all:\n").unwrap();
        fs::write(top.join("fs/aio.c"), "line1\nline2\nline3\n").unwrap();
        let tar = d.join("src.tar");
        let st = Command::new("tar")
            .arg("-cf")
            .arg(&tar)
            .arg("-C")
            .arg(d.join("src"))
            .arg("linux")
            .status()
            .unwrap();
        assert!(st.success());
        Fetched {
            id: "fake".into(),
            tarball: tar,
            description: "fake".into(),
            tarball_sha256: String::new(),
        }
    }

    fn write_series(d: &Path, patches: &[(&str, &str)]) -> Series {
        let dir = d.join("patches");
        fs::create_dir_all(&dir).unwrap();
        let mut series = String::new();
        for (name, body) in patches {
            fs::write(dir.join(name), body).unwrap();
            series.push_str(name);
            series.push('\n');
        }
        fs::write(dir.join("series"), series).unwrap();
        Series::load(&dir.join("series")).unwrap()
    }

    const GOOD: &str = "Subject: [PATCH] aio: change line2\n---\n--- a/fs/aio.c\n+++ b/fs/aio.c\n@@ -1,3 +1,3 @@\n line1\n-line2\n+LINE2\n line3\n";
    const BAD: &str = "Subject: [PATCH] aio: conflicting\n---\n--- a/fs/aio.c\n+++ b/fs/aio.c\n@@ -1,3 +1,3 @@\n line1\n-nothere\n+x\n line3\n";

    #[test]
    fn applies_series_and_reuses_tree() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::at(d.path().join("cache")).unwrap();
        let src = fake_source(d.path());
        let series = write_series(d.path(), &[("0001-good.patch", GOOD)]);
        let t = prepare(&src, &series, &cache, &Ui::new()).unwrap();
        assert_eq!(
            fs::read_to_string(t.path.join("fs/aio.c")).unwrap(),
            "line1\nLINE2\nline3\n"
        );
        assert_eq!(t.patches[0].subject, "aio: change line2");
        let t2 = prepare(&src, &series, &cache, &Ui::new()).unwrap();
        assert_eq!(t.path, t2.path);
        let pristine = prepare(&src, &Series::empty(&series.file), &cache, &Ui::new()).unwrap();
        assert_ne!(pristine.path, t.path);
        assert_eq!(
            fs::read_to_string(pristine.path.join("fs/aio.c")).unwrap(),
            "line1\nline2\nline3\n"
        );
    }

    /// Context line 3 differs from the tree ("line3" vs "LINE3"): GNU patch
    /// applies it with fuzz 1.
    const FUZZY: &str = "Subject: [PATCH] aio: fuzzy\n---\n--- a/fs/aio.c\n+++ b/fs/aio.c\n@@ -1,3 +1,3 @@\n line1\n-line2\n+LINE2\n LINE3\n";

    #[test]
    fn fuzz_is_reported_and_kept_with_the_tree() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::at(d.path().join("cache")).unwrap();
        let src = fake_source(d.path());
        let series = write_series(d.path(), &[("0001-fuzzy.patch", FUZZY)]);
        let t = prepare(&src, &series, &cache, &Ui::new()).unwrap();
        assert_eq!(t.fuzz.len(), 1, "{:?}", t.fuzz);
        assert_eq!(t.fuzz[0].0, "0001-fuzzy.patch");
        assert!(
            t.fuzz[0].1[0].starts_with("fs/aio.c hunk #1 at line 1, fuzz 1"),
            "{:?}",
            t.fuzz
        );
        let again = prepare(&src, &series, &cache, &Ui::new()).unwrap();
        assert_eq!(again.fuzz, t.fuzz, "a cached tree keeps its fuzz record");
        let exact = write_series(&d.path().join("x"), &[("0001-good.patch", GOOD)]);
        assert!(prepare(&src, &exact, &cache, &Ui::new())
            .unwrap()
            .fuzz
            .is_empty());
    }

    #[test]
    fn fuzzy_hunks_from_patch_output() {
        let out = "patching file fs/aio.c\nHunk #1 succeeded at 10 (offset 2 lines).\nHunk #2 succeeded at 1234 with fuzz 2 (offset -3 lines).\npatching file 'mm/filemap.c'\nHunk #3 succeeded at 7 with fuzz 1.\n";
        assert_eq!(
            fuzzy_hunks(out),
            vec![
                "fs/aio.c hunk #2 at line 1234, fuzz 2".to_string(),
                "mm/filemap.c hunk #3 at line 7, fuzz 1".to_string()
            ]
        );
        assert!(
            fuzzy_hunks("patching file a\nHunk #1 succeeded at 3 (offset 1 line).\n").is_empty()
        );
    }

    #[test]
    fn conflict_names_patch_and_leaves_no_tree() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::at(d.path().join("cache")).unwrap();
        let src = fake_source(d.path());
        let series = write_series(
            d.path(),
            &[("0001-good.patch", GOOD), ("0002-bad.patch", BAD)],
        );
        let e = prepare(&src, &series, &cache, &Ui::new()).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("patch 2/2 0002-bad.patch"), "{msg}");
        assert!(msg.contains("aio: conflicting"), "{msg}");
        assert!(msg.contains("-nothere"), "rejected hunk shown: {msg}");
        assert_eq!(
            crate::error::outcome_of(&e),
            crate::exitcode::Outcome::Untestable
        );
        let left: Vec<_> = fs::read_dir(cache.trees()).unwrap().collect();
        assert!(left.is_empty(), "half-patched tree left: {left:?}");
    }

    #[test]
    fn missing_patch_file_is_a_usage_error() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("series"), "0001-x.patch\n").unwrap();
        let e = Series::load(&d.path().join("series")).unwrap_err();
        assert!(format!("{e:#}").contains("0001-x.patch"));
        assert_eq!(
            crate::error::outcome_of(&e),
            crate::exitcode::Outcome::Usage
        );
    }
}
