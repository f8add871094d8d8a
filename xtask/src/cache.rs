//! The user cache directory (`$BUFAIO_CACHE_DIR`, else `$XDG_CACHE_HOME/bufaio`,
//! else `~/.cache/bufaio`), its lock, and atomic file helpers.
//!
//! Layout:
//! - `downloads/`  verified source archives, named by sha256
//! - `trees/<key>/` extracted (and patched) kernel trees; build dirs live inside
//! - `ccache/`     compiler cache
//! - `probe/`      accelerator probe results
//! - `lock`        held (flock) for the whole of a run that writes the cache

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Cache {
    pub root: PathBuf,
}

/// Held while a run uses the cache; released on drop.
pub struct CacheLock {
    _file: File,
}

impl Cache {
    pub fn open() -> Result<Cache> {
        let root = if let Some(d) = std::env::var_os("BUFAIO_CACHE_DIR") {
            PathBuf::from(d)
        } else if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
            PathBuf::from(d).join("bufaio")
        } else {
            let home = std::env::var_os("HOME")
                .context("neither BUFAIO_CACHE_DIR, XDG_CACHE_HOME nor HOME is set")?;
            PathBuf::from(home).join(".cache/bufaio")
        };
        Cache::at(root)
    }

    pub fn at(root: PathBuf) -> Result<Cache> {
        for d in ["downloads", "trees", "ccache", "probe", "tmp"] {
            let p = root.join(d);
            fs::create_dir_all(&p)
                .with_context(|| format!("cannot create cache directory {}", p.display()))?;
        }
        Ok(Cache { root })
    }

    pub fn downloads(&self) -> PathBuf {
        self.root.join("downloads")
    }
    pub fn trees(&self) -> PathBuf {
        self.root.join("trees")
    }
    pub fn ccache(&self) -> PathBuf {
        self.root.join("ccache")
    }
    pub fn probe(&self) -> PathBuf {
        self.root.join("probe")
    }
    /// Scratch space on the same file system as the cache (for atomic renames).
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Take the cache lock, waiting (and saying so) if another run holds it.
    pub fn lock(&self) -> Result<CacheLock> {
        let path = self.root.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                eprintln!(
                    "bufaio: waiting for the cache lock {} (held by another process; last bufaio holder recorded: {})",
                    path.display(),
                    if holder.trim().is_empty() { "none" } else { holder.trim() }
                );
                file.lock()
                    .with_context(|| format!("cannot lock {}", path.display()))?;
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
        let mut f = &file;
        let _ = f.set_len(0);
        let _ = writeln!(f, "pid {}", std::process::id());
        let swept = self.sweep();
        if !swept.is_empty() {
            eprintln!(
                "bufaio: removed {} temp dir(s) left by an interrupted run: {}",
                swept.len(),
                swept
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(CacheLock { _file: file })
    }

    /// Temp trees (`trees/.extract-*`), partial downloads
    /// (`downloads/.tmp*`) and extractions (`tmp/*`) exist only while a holder of the lock works on them: with
    /// the lock held, any found is debris of a run that was killed (a
    /// signal ends the process without running destructors). Removes
    /// them; returns what was removed.
    fn sweep(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let debris = |dir: PathBuf, all: bool| -> Vec<PathBuf> {
            fs::read_dir(&dir)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.path())
                        .filter(|p| {
                            all || p
                                .file_name()
                                .is_some_and(|n| n.to_string_lossy().starts_with(".extract-"))
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let partial_downloads: Vec<PathBuf> = fs::read_dir(self.downloads())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with(".tmp"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        for p in debris(self.trees(), false)
            .into_iter()
            .chain(debris(self.tmp(), true))
            .chain(partial_downloads)
        {
            let r = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            if r.is_ok() {
                out.push(p);
            }
        }
        out
    }
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

pub fn sha256_bytes(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Write `data` to `path` atomically: temp file in the same directory, fsync,
/// rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    tmp.write_all(data)
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("cannot rename into {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_sweeps_temp_debris_of_killed_runs() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::at(d.path().join("c")).unwrap();
        fs::create_dir_all(c.trees().join(".extract-abc/fs")).unwrap();
        fs::write(c.trees().join(".extract-abc/fs/aio.c"), "x").unwrap();
        fs::create_dir_all(c.trees().join("0123456789abcdef")).unwrap();
        fs::create_dir_all(c.tmp().join(".tmpXYZ")).unwrap();
        let _l = c.lock().unwrap();
        assert!(!c.trees().join(".extract-abc").exists());
        assert!(!c.tmp().join(".tmpXYZ").exists());
        assert!(
            c.trees().join("0123456789abcdef").exists(),
            "finished trees stay"
        );
    }

    #[test]
    fn lock_is_exclusive_between_handles() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::at(d.path().to_path_buf()).unwrap();
        let _l = c.lock().unwrap();
        let f = OpenOptions::new()
            .write(true)
            .open(d.path().join("lock"))
            .unwrap();
        assert!(matches!(f.try_lock(), Err(fs::TryLockError::WouldBlock)));
    }

    #[test]
    fn sha_and_atomic_write() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b.txt");
        write_atomic(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(sha256_bytes(b"abc"), sha256_file(&p).unwrap());
    }
}
