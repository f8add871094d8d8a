//! Stage 1, fetch: obtain a verified kernel source archive.
//!
//! Sources from `kernel.sources` are tried in order. "Not available" (no
//! apt-get, no network, missing file, a checksum mismatch) moves on to the
//! next source; the run fails only when none verifies. A mismatching
//! download is never kept under its pinned name (it is set aside as
//! `downloads/rejected-<actual sha>`). Downloads go to a temporary name in
//! the cache and are renamed into place only after verification; cached
//! files are re-verified (see [`still_good`]).

use crate::cache::{sha256_file, Cache};
use crate::config::Source;
use crate::error::usage;
use crate::ui::Ui;
use anyhow::{anyhow, Context, Result};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A verified source archive: a tarball whose single top-level directory is
/// the kernel tree.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Fetched {
    /// Stable identity of the source content (sha256, or `git-<commit>`).
    pub id: String,
    /// Tarball to extract.
    pub tarball: PathBuf,
    /// What was used, for humans and manifests.
    pub description: String,
    /// sha256 of the tarball actually extracted.
    pub tarball_sha256: String,
}

/// Why a source could not be used.
enum Miss {
    /// Try the next source.
    Unavailable(String),
    /// Stop: an error no other source can help with (I/O, a bad git ref).
    Fatal(anyhow::Error),
}

impl From<anyhow::Error> for Miss {
    fn from(e: anyhow::Error) -> Self {
        Miss::Unavailable(format!("{e:#}"))
    }
}

pub fn fetch(sources: &[Source], cache: &Cache, ui: &Ui) -> Result<Fetched> {
    fetch_with(sources, cache, ui, false)
}

/// [`fetch`]; with `force` every cached file is re-hashed (`cargo xtask
/// fetch`), otherwise only those whose size or mtime changed.
pub fn fetch_with(sources: &[Source], cache: &Cache, ui: &Ui, force: bool) -> Result<Fetched> {
    fetch_keyed(sources, cache, ui, force, "kernel.sources", "kernel source")
}

/// [`fetch_with`] for the sources under config key `key` (errors name
/// `key[i]`), of something called `what` (`kernel source`).
pub fn fetch_keyed(
    sources: &[Source],
    cache: &Cache,
    ui: &Ui,
    force: bool,
    key: &str,
    what: &str,
) -> Result<Fetched> {
    let mut reasons = Vec::new();
    for (i, src) in sources.iter().enumerate() {
        let stage = ui.stage("fetch", src.describe());
        let r = match src {
            Source::Debian {
                package,
                version,
                sha256,
                url,
            } => fetch_debian(
                package,
                version,
                sha256,
                url.as_deref(),
                cache,
                &stage,
                force,
            ),
            Source::Url { url, sha256 } => fetch_url(url, sha256, cache, &stage, force),
            Source::Tarball { path, sha256 } => fetch_tarball(path, sha256),
            Source::Git { path, git_ref } => fetch_git(path, git_ref, cache),
        };
        match r {
            Ok(f) => {
                stage.finish(format!("{} ({})", f.description, short(&f.id)));
                return Ok(f);
            }
            Err(Miss::Fatal(e)) => {
                stage.finish("failed");
                return Err(e.context(format!("{key}[{i}] ({})", src.describe())));
            }
            Err(Miss::Unavailable(why)) => {
                stage.finish(format!("unavailable: {why}"));
                reasons.push(format!("  {key}[{i}] {}: {why}", src.describe()));
            }
        }
    }
    Err(anyhow!(
        "no {what} could be fetched:\n{}",
        reasons.join("\n")
    ))
}

pub fn short(id: &str) -> &str {
    &id[..id.len().min(16)]
}

/// Checks a fresh download against its pinned sha256. A mismatch is kept
/// aside for inspection (`rejected-<actual sha>`, never under the pinned
/// name) and reported as this source being unavailable, so the next
/// source (or the `url:` fallback) is tried; the run fails (128) only when
/// none verifies.
fn verify(path: &Path, expected: &str, what: &str, aside_dir: &Path) -> Result<(), Miss> {
    let actual = sha256_file(path).map_err(Miss::Fatal)?;
    if !actual.eq_ignore_ascii_case(expected) {
        let aside = aside_dir.join(format!("rejected-{actual}"));
        let kept = match fs::rename(path, &aside) {
            Ok(()) => format!("kept as {}", aside.display()),
            Err(_) => {
                let _ = fs::remove_file(path);
                "removed".to_string()
            }
        };
        return Err(Miss::Unavailable(format!(
            "sha256 mismatch for {what}: expected {expected}, got {actual} ({kept}; if the new content is trusted, update the sha256 in bufaio.yaml)"
        )));
    }
    Ok(())
}

/// `<file>.verified`: `sha256 size mtime_ns` of a cache file when it was
/// last hashed, so that re-verifying it is cheap until it changes.
fn stamp_path(path: &Path) -> PathBuf {
    let mut n = path.file_name().unwrap_or_default().to_os_string();
    n.push(".verified");
    path.with_file_name(n)
}

fn size_mtime(path: &Path) -> Option<(u64, u128)> {
    let m = fs::metadata(path).ok()?;
    let t = m
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some((m.len(), t.as_nanos()))
}

/// Best effort: without a stamp (read-only cache, disk full) the file is
/// simply re-hashed next time; a verified source is never refused for it.
fn record_stamp(path: &Path, sha: &str) -> Result<()> {
    if let Some((size, mtime)) = size_mtime(path) {
        let _ = crate::cache::write_atomic(
            &stamp_path(path),
            format!("{sha} {size} {mtime}\n").as_bytes(),
        );
    }
    Ok(())
}

/// (sha256, size, mtime) recorded for `path`; a legacy `.sha256` memo
/// gives the sha alone.
fn read_stamp(path: &Path) -> Option<(String, Option<(u64, u128)>)> {
    if let Ok(t) = fs::read_to_string(stamp_path(path)) {
        let w: Vec<&str> = t.split_whitespace().collect();
        if let [sha, size, mtime] = w[..] {
            if let (Ok(a), Ok(b)) = (size.parse(), mtime.parse()) {
                return Some((sha.to_string(), Some((a, b))));
            }
        }
    }
    let legacy = fs::read_to_string(path.with_extension("sha256")).ok()?;
    let sha = legacy.trim();
    (sha.len() == 64).then(|| (sha.to_string(), None))
}

/// Whether the cached `path` still holds what it should: `expected` (a
/// pinned sha256) or, without one, the sha256 recorded when it was made.
/// Cheap while its size and mtime match the stamp; re-hashed when they
/// changed, when there is no stamp, or always with `force` (`cargo xtask
/// fetch`). A file that no longer verifies is moved aside (`<name>.bad`)
/// with a note, and false is returned: the caller fetches it again.
fn still_good(
    path: &Path,
    expected: Option<&str>,
    force: bool,
    stage: &crate::ui::Stage,
) -> Result<bool> {
    if !path.exists() {
        return Ok(false);
    }
    let stamp = read_stamp(path);
    let want = match (expected, &stamp) {
        (Some(e), _) => e.to_ascii_lowercase(),
        (None, Some((sha, _))) => sha.clone(),
        // Nothing to compare with: hash it and trust it from now on.
        (None, None) => {
            let sha = sha256_file(path)?;
            record_stamp(path, &sha)?;
            return Ok(true);
        }
    };
    if !force {
        if let Some((sha, Some(sm))) = &stamp {
            if *sha == want && size_mtime(path) == Some(*sm) {
                return Ok(true);
            }
        }
    }
    let actual = sha256_file(path)?;
    if actual == want {
        record_stamp(path, &actual)?;
        return Ok(true);
    }
    let aside = path.with_file_name(format!(
        "{}.bad",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    fs::rename(path, &aside).with_context(|| format!("cannot move {} aside", path.display()))?;
    let _ = fs::remove_file(stamp_path(path));
    let _ = fs::remove_file(path.with_extension("sha256"));
    stage.note(format!(
        "cached {} changed (sha256 {actual}, expected {want}): moved to {} and fetched again",
        path.display(),
        aside.display()
    ));
    Ok(false)
}

fn fetch_debian(
    package: &str,
    version: &str,
    sha256: &str,
    url: Option<&str>,
    cache: &Cache,
    stage: &crate::ui::Stage,
    force: bool,
) -> Result<Fetched, Miss> {
    let sha = sha256.to_ascii_lowercase();
    let deb = cache.downloads().join(format!("{sha}.deb"));
    let tarball = cache.downloads().join(format!("{sha}.deb.tar.xz"));
    if which("dpkg-deb").is_none() {
        return Err(Miss::Unavailable(
            "dpkg-deb not found (not a Debian-like host)".into(),
        ));
    }
    if !still_good(&deb, Some(&sha), force, stage)? {
        // A stale extraction of a .deb that is gone is not trusted either.
        let _ = fs::remove_file(&tarball);
        let _ = fs::remove_file(stamp_path(&tarball));
        match apt_download(package, version, &sha, &deb, cache, stage) {
            Ok(()) => {}
            Err(Miss::Fatal(e)) => return Err(Miss::Fatal(e)),
            Err(Miss::Unavailable(why)) => match url {
                Some(u) => {
                    stage.note(format!("apt: {why}; downloading {u}"));
                    download(u, &sha, &deb, cache, stage).map_err(|e| match e {
                        Miss::Unavailable(w) => Miss::Unavailable(format!("{why}; then {u}: {w}")),
                        f => f,
                    })?;
                }
                None => return Err(Miss::Unavailable(why)),
            },
        }
        record_stamp(&deb, &sha)?;
    }
    if !still_good(&tarball, None, force, stage)? {
        deb_tarball(package, &deb, &tarball, cache, stage)?;
        record_stamp(&tarball, &sha256_file(&tarball)?)?;
    }
    let tarball_sha256 = cached_sha(&tarball)?;
    Ok(Fetched {
        id: sha,
        tarball,
        description: format!("debian {package}={version}"),
        tarball_sha256,
    })
}

/// `apt-get download` into the cache; Unavailable when apt cannot provide it.
fn apt_download(
    package: &str,
    version: &str,
    sha: &str,
    deb: &Path,
    cache: &Cache,
    stage: &crate::ui::Stage,
) -> Result<(), Miss> {
    {
        if which("apt-get").is_none() {
            return Err(Miss::Unavailable("apt-get not found".into()));
        }
        let tmp = tempfile::tempdir_in(cache.tmp()).context("cannot create a temp dir")?;
        stage.note(format!("apt-get download {package}={version}"));
        let mut apt = Command::new("apt-get");
        crate::proc::die_with_parent(&mut apt);
        let out = apt
            .args(["download", "-q", &format!("{package}={version}")])
            .current_dir(tmp.path())
            .output()
            .context("cannot run apt-get")?;
        if !out.status.success() {
            return Err(Miss::Unavailable(format!(
                "apt-get download {package}={version} failed: {} (is the package in the apt lists? try `apt-get update`)",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let got = fs::read_dir(tmp.path())
            .context("cannot list download dir")?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .ok_or_else(|| Miss::Unavailable("apt-get download produced no .deb".into()))?;
        verify(
            &got,
            sha,
            &format!("{package}={version}"),
            &cache.downloads(),
        )?;
        fs::rename(&got, deb).context("cannot move the .deb into the cache")?;
    }
    Ok(())
}

/// Extract the source tarball from the verified .deb.
fn deb_tarball(
    package: &str,
    deb: &Path,
    tarball: &Path,
    cache: &Cache,
    stage: &crate::ui::Stage,
) -> Result<(), Miss> {
    {
        stage.note("extracting the source tarball from the .deb");
        let tmp = tempfile::tempdir_in(cache.tmp()).context("cannot create a temp dir")?;
        let mut dpkg = Command::new("dpkg-deb");
        crate::proc::die_with_parent(&mut dpkg);
        let out = dpkg
            .arg("-x")
            .arg(deb)
            .arg(tmp.path())
            .output()
            .context("cannot run dpkg-deb")?;
        if !out.status.success() {
            return Err(Miss::Fatal(anyhow!(
                "dpkg-deb -x {} failed: {}",
                deb.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let src = tmp.path().join("usr/src");
        let inner = fs::read_dir(&src)
            .with_context(|| format!("{package} has no usr/src"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.to_string_lossy().contains(".tar."))
            .ok_or_else(|| Miss::Fatal(anyhow!("{package} contains no usr/src/*.tar.* tarball")))?;
        fs::rename(&inner, tarball).context("cannot move the tarball into the cache")?;
    }
    Ok(())
}

/// sha256 of a cache file, from its stamp while size and mtime match.
fn cached_sha(path: &Path) -> Result<String> {
    if let Some((sha, Some(sm))) = read_stamp(path) {
        if size_mtime(path) == Some(sm) {
            return Ok(sha);
        }
    }
    let s = sha256_file(path)?;
    record_stamp(path, &s)?;
    Ok(s)
}

fn archive_ext(name: &str) -> &'static str {
    [".tar.xz", ".tar.gz", ".tar.bz2", ".tar.zst", ".tar"]
        .into_iter()
        .find(|e| name.ends_with(e))
        .unwrap_or(".tar")
}

fn fetch_url(
    url: &str,
    sha256: &str,
    cache: &Cache,
    stage: &crate::ui::Stage,
    force: bool,
) -> Result<Fetched, Miss> {
    let sha = sha256.to_ascii_lowercase();
    let dest = cache.downloads().join(format!("{sha}{}", archive_ext(url)));
    if !still_good(&dest, Some(&sha), force, stage)? {
        download(url, &sha, &dest, cache, stage)?;
        record_stamp(&dest, &sha)?;
    }
    Ok(Fetched {
        id: sha.clone(),
        tarball: dest,
        description: format!("url {url}"),
        tarball_sha256: sha,
    })
}

/// Stream `url` (https, http or file) to a temp file in the cache, verify its
/// sha256, then rename it to `dest`.
fn download(
    url: &str,
    sha: &str,
    dest: &Path,
    cache: &Cache,
    stage: &crate::ui::Stage,
) -> Result<(), Miss> {
    let mut tmp = tempfile::NamedTempFile::new_in(cache.downloads())
        .context("cannot create a temp file in the download cache")?;
    let (mut reader, len): (Box<dyn Read>, Option<u64>) =
        if let Some(path) = url.strip_prefix("file://") {
            let f = fs::File::open(path)
                .map_err(|e| Miss::Unavailable(format!("cannot open {path}: {e}")))?;
            let len = f.metadata().ok().map(|m| m.len());
            (Box::new(f), len)
        } else {
            let resp = ureq::get(url)
                .timeout(std::time::Duration::from_secs(60))
                .call()
                .map_err(|e| Miss::Unavailable(format!("GET {url}: {e}")))?;
            let len = resp.header("content-length").and_then(|v| v.parse().ok());
            (Box::new(resp.into_reader()), len)
        };
    if let Some(len) = len {
        stage.set_length(len, true);
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| Miss::Unavailable(format!("reading {url}: {e}")))?;
        if n == 0 {
            break;
        }
        tmp.write_all(&buf[..n])
            .context("cannot write the download (disk full?)")?;
        done += n as u64;
        stage.set_position(done);
    }
    tmp.as_file()
        .sync_all()
        .context("cannot sync the download")?;
    verify(tmp.path(), sha, url, &cache.downloads())?;
    tmp.persist(dest)
        .map_err(|e| Miss::Fatal(anyhow!("cannot rename the download into place: {e}")))?;
    Ok(())
}

fn fetch_tarball(path: &Path, sha256: &str) -> Result<Fetched, Miss> {
    if !path.is_file() {
        return Err(Miss::Unavailable(format!(
            "{} does not exist",
            path.display()
        )));
    }
    let sha = sha256.to_ascii_lowercase();
    let actual = sha256_file(path).map_err(Miss::Fatal)?;
    if actual != sha {
        // A user's own file is never moved or deleted.
        return Err(Miss::Unavailable(format!(
            "sha256 mismatch for {}: expected {sha}, got {actual}",
            path.display()
        )));
    }
    Ok(Fetched {
        id: sha.clone(),
        tarball: path.to_path_buf(),
        description: format!("tarball {}", path.display()),
        tarball_sha256: sha,
    })
}

fn fetch_git(path: &Path, git_ref: &str, cache: &Cache) -> Result<Fetched, Miss> {
    if !path.join(".git").exists() && !path.join("HEAD").exists() {
        return Err(Miss::Unavailable(format!(
            "{} is not a git repository",
            path.display()
        )));
    }
    let out = Command::new("git")
        .arg("-C")
        .arg(path)
        .args(["rev-parse", "--verify", &format!("{git_ref}^{{commit}}")])
        .output()
        .context("cannot run git")?;
    if !out.status.success() {
        return Err(Miss::Fatal(usage(format!(
            "{}: ref {git_ref:?} does not name a commit: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))));
    }
    let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let dest = cache.downloads().join(format!("git-{commit}.tar"));
    if !dest.exists() {
        let tmp = tempfile::NamedTempFile::new_in(cache.downloads())
            .context("cannot create a temp file in the download cache")?;
        let st = Command::new("git")
            .arg("-C")
            .arg(path)
            .args(["archive", "--format=tar", "--prefix=linux/", "-o"])
            .arg(tmp.path())
            .arg(&commit)
            .status()
            .context("cannot run git archive")?;
        if !st.success() {
            return Err(Miss::Fatal(anyhow!("git archive {commit} failed")));
        }
        tmp.persist(&dest)
            .map_err(|e| Miss::Fatal(anyhow!("cannot rename the archive into place: {e}")))?;
    }
    let tarball_sha256 = cached_sha(&dest)?;
    Ok(Fetched {
        id: format!("git-{commit}"),
        tarball: dest,
        description: format!("git {}@{git_ref} ({commit})", path.display()),
        tarball_sha256,
    })
}

pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Cache, PathBuf, String) {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::at(d.path().join("cache")).unwrap();
        let tar = d.path().join("linux-x.tar.gz");
        fs::write(&tar, b"not really a tarball but bytes").unwrap();
        let sha = sha256_file(&tar).unwrap();
        (d, cache, tar, sha)
    }

    #[test]
    fn file_url_is_verified_and_cached() {
        let (_d, cache, tar, sha) = setup();
        let src = vec![Source::Url {
            url: format!("file://{}", tar.display()),
            sha256: sha.clone(),
        }];
        let f = fetch(&src, &cache, &Ui::new()).unwrap();
        assert_eq!(f.id, sha);
        assert!(f.tarball.starts_with(cache.downloads()));
        assert!(f.tarball.to_string_lossy().ends_with(".tar.gz"));
        assert_eq!(fs::read(&f.tarball).unwrap(), fs::read(&tar).unwrap());
    }

    #[test]
    fn wrong_checksum_tries_the_next_source_and_keeps_nothing_under_the_pin() {
        let (_d, cache, tar, sha) = setup();
        let wrong = "0".repeat(64);
        let bad_url = Source::Url {
            url: format!("file://{}", tar.display()),
            sha256: wrong.clone(),
        };
        let bad_tar = Source::Tarball {
            path: tar.clone(),
            sha256: wrong.clone(),
        };
        // None verifies: an error naming each source and both sums.
        let e = format!(
            "{:#}",
            fetch(&[bad_url.clone(), bad_tar.clone()], &cache, &Ui::new()).unwrap_err()
        );
        assert!(e.contains("no kernel source could be fetched"), "{e}");
        assert!(
            e.contains("kernel.sources[0]") && e.contains("kernel.sources[1]"),
            "{e}"
        );
        assert!(
            e.contains(&format!(
                "sha256 mismatch for file://{}: expected {wrong}, got {sha}",
                tar.display()
            )),
            "{e}"
        );
        let names: Vec<String> = fs::read_dir(cache.downloads())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![format!("rejected-{sha}")], "kept aside only");
        assert!(tar.exists(), "a user's own tarball is never removed");
        // A good source after the bad one is used.
        let good = Source::Tarball {
            path: tar.clone(),
            sha256: sha.clone(),
        };
        let f = fetch(&[bad_url, good], &cache, &Ui::new()).unwrap();
        assert_eq!(f.tarball, tar);
    }

    #[test]
    fn a_changed_cached_download_is_moved_aside_and_fetched_again() {
        let (_d, cache, tar, sha) = setup();
        let src = vec![Source::Url {
            url: format!("file://{}", tar.display()),
            sha256: sha.clone(),
        }];
        let f = fetch(&src, &cache, &Ui::new()).unwrap();
        let good = fs::read(&f.tarball).unwrap();
        // Truncated behind the toolkit's back (size changes: noticed
        // without --force).
        fs::write(&f.tarball, &good[..good.len() / 2]).unwrap();
        let f2 = fetch(&src, &cache, &Ui::new()).unwrap();
        assert_eq!(fs::read(&f2.tarball).unwrap(), good, "fetched again");
        let bad = f.tarball.with_file_name(format!(
            "{}.bad",
            f.tarball.file_name().unwrap().to_string_lossy()
        ));
        assert_eq!(
            fs::read(&bad).unwrap().len(),
            good.len() / 2,
            "the bad copy is kept aside"
        );
        // Same size, same mtime, other bytes: only the forced check
        // (`cargo xtask fetch`) re-hashes; it catches it.
        let meta = fs::metadata(&f2.tarball).unwrap();
        let mut other = good.clone();
        other[0] ^= 0xff;
        fs::write(&f2.tarball, &other).unwrap();
        let ft = std::fs::FileTimes::new().set_modified(meta.modified().unwrap());
        fs::File::options()
            .write(true)
            .open(&f2.tarball)
            .unwrap()
            .set_times(ft)
            .unwrap();
        fetch(&src, &cache, &Ui::new()).unwrap();
        assert_eq!(
            fs::read(&f2.tarball).unwrap(),
            other,
            "cheap check trusts size+mtime"
        );
        fetch_with(&src, &cache, &Ui::new(), true).unwrap();
        assert_eq!(
            fs::read(&f2.tarball).unwrap(),
            good,
            "forced check re-hashed and re-fetched"
        );
    }

    #[test]
    fn unavailable_sources_fall_through_in_order() {
        let (d, cache, tar, sha) = setup();
        let src = vec![
            Source::Url {
                url: format!("file://{}", d.path().join("missing.tar.xz").display()),
                sha256: sha.clone(),
            },
            Source::Git {
                path: d.path().join("no-repo"),
                git_ref: "v1".into(),
            },
            Source::Tarball {
                path: tar.clone(),
                sha256: sha.clone(),
            },
        ];
        let f = fetch(&src, &cache, &Ui::new()).unwrap();
        assert_eq!(f.tarball, tar, "local tarball used in place");
    }

    #[test]
    fn all_unavailable_lists_every_reason() {
        let (d, cache, _tar, sha) = setup();
        let src = vec![Source::Tarball {
            path: d.path().join("nope.tar"),
            sha256: sha,
        }];
        let e = format!("{:#}", fetch(&src, &cache, &Ui::new()).unwrap_err());
        assert!(e.contains("no kernel source could be fetched"), "{e}");
        assert!(e.contains("nope.tar does not exist"), "{e}");
    }

    #[test]
    fn debian_source_falls_back_to_its_url() {
        let (d, cache, _tar, _sha) = setup();
        let pkg = d.path().join("pkg");
        fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
        fs::create_dir_all(pkg.join("usr/src")).unwrap();
        fs::write(
            pkg.join("DEBIAN/control"),
            "Package: bufaio-fixture-source\nVersion: 1\nArchitecture: all\nMaintainer: x <x@x>\nDescription: fixture\n",
        )
        .unwrap();
        fs::write(pkg.join("usr/src/linux-source-x.tar.xz"), b"tarball bytes").unwrap();
        let deb = d.path().join("fixture.deb");
        let st = Command::new("dpkg-deb")
            .args(["--build", "-Zgzip"])
            .arg(&pkg)
            .arg(&deb)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        let sha = sha256_file(&deb).unwrap();
        let src = vec![Source::Debian {
            package: "bufaio-no-such-package".into(),
            version: "1".into(),
            sha256: sha.clone(),
            url: Some(format!("file://{}", deb.display())),
        }];
        let f = fetch(&src, &cache, &Ui::new()).unwrap();
        assert_eq!(f.id, sha);
        assert_eq!(fs::read(&f.tarball).unwrap(), b"tarball bytes");
    }

    #[test]
    fn git_source_archives_a_commit() {
        let (d, cache, _tar, _sha) = setup();
        let repo = d.path().join("repo");
        fs::create_dir(&repo).unwrap();
        let git = |args: &[&str]| {
            let st = Command::new("git")
                .arg("-C")
                .arg(&repo)
                .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .args(args)
                .status()
                .unwrap();
            assert!(st.success());
        };
        git(&["init", "-q"]);
        fs::write(repo.join("Makefile"), "VERSION = 6\n").unwrap();
        git(&["add", "."]);
        git(&["commit", "-qm", "a"]);
        git(&["tag", "v6.0"]);
        let src = vec![Source::Git {
            path: repo.clone(),
            git_ref: "v6.0".into(),
        }];
        let f = fetch(&src, &cache, &Ui::new()).unwrap();
        assert!(f.id.starts_with("git-"));
        let list = Command::new("tar")
            .arg("tf")
            .arg(&f.tarball)
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&list.stdout).contains("linux/Makefile"));
        let bad = vec![Source::Git {
            path: repo,
            git_ref: "v9".into(),
        }];
        let e = fetch(&bad, &cache, &Ui::new()).unwrap_err();
        assert_eq!(
            crate::error::outcome_of(&e),
            crate::exitcode::Outcome::Usage
        );
    }
}
