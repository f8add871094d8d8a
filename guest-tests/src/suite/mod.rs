//! The test registry and the helpers tests share.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::pattern;
use crate::sys;

mod basic;
mod errors;
mod read;
mod write;

/// Why a test stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    Fail(String),
    Skip(String),
}

impl From<String> for Stop {
    fn from(s: String) -> Stop {
        Stop::Fail(s)
    }
}

impl From<&str> for Stop {
    fn from(s: &str) -> Stop {
        Stop::Fail(s.to_string())
    }
}

pub type TestResult = Result<(), Stop>;

/// Fails the test with a formatted message unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::suite::Stop::Fail(format!($($fmt)+)));
        }
    };
}

pub struct TestDef {
    /// `<area>/<name>`, without a filesystem suffix.
    pub name: &'static str,
    /// Whether the test runs once per filesystem (`name@fs`).
    pub per_fs: bool,
    pub run: fn(&Ctx) -> TestResult,
}

pub const TESTS: &[TestDef] = &[
    TestDef {
        name: "basic/setup_destroy",
        per_fs: false,
        run: basic::setup_destroy,
    },
    TestDef {
        name: "basic/eventfd",
        per_fs: true,
        run: basic::eventfd,
    },
    TestDef {
        name: "basic/batch",
        per_fs: true,
        run: basic::batch,
    },
    TestDef {
        name: "read/roundtrip_aligned",
        per_fs: true,
        run: read::roundtrip_aligned,
    },
    TestDef {
        name: "read/roundtrip_unaligned",
        per_fs: true,
        run: read::roundtrip_unaligned,
    },
    TestDef {
        name: "read/short_at_eof",
        per_fs: true,
        run: read::short_at_eof,
    },
    TestDef {
        name: "read/odirect_sanity",
        per_fs: true,
        run: read::odirect_sanity,
    },
    TestDef {
        name: "write/roundtrip_aligned",
        per_fs: true,
        run: write::roundtrip_aligned,
    },
    TestDef {
        name: "write/roundtrip_unaligned",
        per_fs: true,
        run: write::roundtrip_unaligned,
    },
    TestDef {
        name: "errors/bad_fd",
        per_fs: false,
        run: errors::bad_fd,
    },
    TestDef {
        name: "errors/einval_opcode",
        per_fs: false,
        run: errors::einval_opcode,
    },
    TestDef {
        name: "errors/bad_rw_flags",
        per_fs: false,
        run: errors::bad_rw_flags,
    },
];

/// One concrete test instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub name: String,
    /// The filesystem label (`ext2`, `ext3`, `host`) for per-fs tests.
    pub fs: Option<String>,
}

/// All test instances for the given filesystem labels, in registry order
/// (fs-independent tests once, per-fs tests once per label).
pub fn expand(fs_labels: &[&str]) -> Vec<Instance> {
    let mut out = Vec::new();
    for t in TESTS {
        if t.per_fs {
            for fs in fs_labels {
                out.push(Instance {
                    name: format!("{}@{fs}", t.name),
                    fs: Some(fs.to_string()),
                });
            }
        } else {
            out.push(Instance {
                name: t.name.to_string(),
                fs: None,
            });
        }
    }
    out
}

/// Looks a full name (`area/name` or `area/name@fs`) up in the registry.
pub fn find(full: &str) -> Option<(&'static TestDef, Option<&str>)> {
    let (base, fs) = match full.split_once('@') {
        Some((b, f)) => (b, Some(f)),
        None => (full, None),
    };
    let def = TESTS.iter().find(|t| t.name == base)?;
    if def.per_fs != fs.is_some() || fs == Some("") {
        return None;
    }
    Some((def, fs))
}

/// What a running test gets.
pub struct Ctx {
    /// Filesystem label, if per-fs.
    pub fs: Option<String>,
    /// Fresh scratch directory for this test (removed afterwards).
    pub dir: PathBuf,
    /// Running inside the bufaio VM (may drop caches, etc.).
    pub guest: bool,
    pub root: bool,
}

/// Default bound for waiting on completions inside a test.
pub const REAP_TIMEOUT: Duration = Duration::from_secs(60);

impl Ctx {
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// A progress marker, shown by the parent only if the test does not
    /// pass (useful to see where a hung test was).
    pub fn step(&self, msg: &str) {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "step: {msg}");
        let _ = o.flush();
    }

    /// Makes later reads of `f` cold: fsync, POSIX_FADV_DONTNEED, and in
    /// the guest (as root) drop the page cache too. A kernel without
    /// fadvise (CONFIG_ADVISE_SYSCALLS=n gives ENOSYS) relies on
    /// drop_caches alone.
    pub fn make_cold(&self, f: &File) -> Result<(), String> {
        f.sync_all().map_err(|e| format!("fsync: {e}"))?;
        match sys::fadvise_all(f, libc::POSIX_FADV_DONTNEED) {
            Err(e) if e.raw_os_error() != Some(libc::ENOSYS) => {
                return Err(format!("posix_fadvise(DONTNEED): {e}"))
            }
            _ => {}
        }
        if self.guest && self.root {
            sys::sync();
            std::fs::write("/proc/sys/vm/drop_caches", "3\n")
                .map_err(|e| format!("write /proc/sys/vm/drop_caches: {e}"))?;
        }
        Ok(())
    }
}

pub fn open_rw(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))
}

/// Creates `path` (truncating) holding `len` bytes of pattern `seed`.
pub fn create_pattern_file(path: &Path, seed: u64, len: u64) -> Result<File, String> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| format!("create {}: {e}", path.display()))?;
    const CHUNK: u64 = 256 * 1024;
    let mut off = 0;
    while off < len {
        let n = CHUNK.min(len - off);
        let buf = pattern::make(seed, off, n as usize);
        f.write_all_at(&buf, off)
            .map_err(|e| format!("write {} at {off}: {e}", path.display()))?;
        off += n;
    }
    Ok(f)
}

/// Reads up to `len` bytes at `off` with pread (short only at EOF).
pub fn pread_full(f: &File, off: u64, len: usize) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match f.read_at(&mut buf[got..], off + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("pread at {}: {e}", off + got as u64)),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

pub fn file_len(f: &File) -> Result<u64, String> {
    f.metadata()
        .map(|m| m.len())
        .map_err(|e| format!("fstat: {e}"))
}

/// Turns a test name into a directory name.
pub fn scratch_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_and_find() {
        let all = expand(&["ext2", "ext3"]);
        let per_fs = TESTS.iter().filter(|t| t.per_fs).count();
        assert_eq!(all.len(), TESTS.len() + per_fs);
        assert_eq!(all[0].name, "basic/setup_destroy");
        assert!(all.iter().any(|i| i.name == "read/roundtrip_aligned@ext3"));
        let mut names: Vec<_> = all.iter().map(|i| i.name.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len(), "duplicate test names");
        for i in &all {
            let (def, fs) = find(&i.name).expect("findable");
            assert_eq!(fs.map(str::to_string), i.fs);
            assert!(i.name.starts_with(def.name));
            assert!(!i.name.contains(' ') && !i.name.contains('#'));
        }
        assert!(find("basic/setup_destroy@ext2").is_none());
        assert!(find("read/short_at_eof").is_none());
        assert!(find("read/short_at_eof@").is_none());
        assert!(find("nope/nope").is_none());
        for t in TESTS {
            let area = t.name.split('/').next().unwrap();
            assert!(
                ["basic", "read", "write", "retry", "teardown", "errors", "perf"].contains(&area),
                "{}",
                t.name
            );
        }
    }

    #[test]
    fn scratch_names() {
        assert_eq!(scratch_name("read/x@ext2"), "read_x_ext2");
    }
}
