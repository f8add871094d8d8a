//! Peer suites (issue 14): libaio's own test harness (`harness/cases/*.t`),
//! built on the host as static binaries against Debian's `libaio-dev`
//! static library, and the small ext2 image its ENOSPC case (10.t) needs.
//!
//! The harness is built twice. *As shipped*, its `sync_submit()` polls
//! `io_getevents(min_nr = 0)` right after `io_submit()`: a case passes only
//! if every request that needs no device IO completed inside
//! `io_submit()`. *Waiting* (`min_nr = 1`), it checks correctness alone.
//! Both land in the root image under [`GUEST_DIR`] with a `cases.txt`
//! manifest the guest reads (guest-tests `soak/libaio*`):
//!
//! ```text
//! # libaio 0.3.113-4 harness, built by bufaio
//! 2 plain
//! 4 sync
//! ```
//!
//! `sync` cases go through `sync_submit()`/`attempt_rw()` (or poll the same
//! way themselves, as 13.t does; the waiting build waits there too) and have both
//! builds (`asis/N`, `wait/N`); `plain` cases do not, and have one
//! (`wait/N`).

use crate::cache::{sha256_bytes, sha256_file, Cache};
use crate::config::LibaioPeer;
use crate::fetch;
use crate::rootfs::mke2fs_with;
use crate::ui::Ui;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the root image carries besides the guest binary and busybox.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    pub libaio: Option<LibaioHarness>,
    /// fio, its libraries, the loader and the shm shim (flat).
    pub fio: Option<Vec<PathBuf>>,
    /// stress-ng, its libraries and the loader (flat).
    pub stress_ng: Option<Vec<PathBuf>>,
}

/// Where stress-ng is in the guest's root image (soak/stress_ng_aio).
pub const STRESS_NG_GUEST_DIR: &str = "opt/stress-ng";

/// stress-ng's bundle plus `buffered-shim.so`, a preload that clears
/// O_DIRECT in open() so its aiol stressor does buffered IO
/// (`peers_c/buffered_shim.c`). None without stress-ng on the host.
pub fn stress_ng_files(work: &Path) -> Result<Option<Vec<PathBuf>>> {
    let Some(mut files) = bundle("stress-ng")? else {
        return Ok(None);
    };
    fs::create_dir_all(work)?;
    let src = work.join("buffered_shim.c");
    let shim = work.join("buffered-shim.so");
    fs::write(&src, include_str!("peers_c/buffered_shim.c"))?;
    let out = Command::new("gcc")
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-o"])
        .arg(&shim)
        .arg(&src)
        .arg("-ldl")
        .output()
        .context("cannot run gcc for the O_DIRECT-clearing shim")?;
    if !out.status.success() {
        bail!(
            "compiling {}: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    files.push(shim);
    Ok(Some(files))
}

/// A dynamic host binary with what `ldd` lists (libraries and the loader),
/// to be copied flat into the guest and started through the loader with
/// `--library-path`. None when `exe` is not on the PATH.
pub fn bundle(exe: &str) -> Result<Option<Vec<PathBuf>>> {
    let Some(bin) = crate::fetch::which(exe) else {
        return Ok(None);
    };
    let out = Command::new("ldd")
        .arg(&bin)
        .output()
        .context("cannot run ldd")?;
    if !out.status.success() {
        bail!(
            "ldd {}: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut files = vec![bin];
    files.extend(parse_ldd(&String::from_utf8_lossy(&out.stdout)));
    Ok(Some(files))
}

/// Where fio is in the guest's root image (soak/fio_verify).
pub const FIO_GUEST_DIR: &str = "opt/fio";

/// Where the harness is in the guest's root image.
pub const GUEST_DIR: &str = "opt/libaio";

/// Debian's static libaio (package libaio-dev).
pub const LIBAIO_A: &str = "/usr/lib/x86_64-linux-gnu/libaio.a";

/// Label of the ENOSPC image (keep in sync with guest-tests
/// `suite/peers.rs`).
pub const ENOSPC_LABEL: &str = "bufaio-enospc";

/// Bump when the build below changes what it produces.
const BUILD_VERSION: u32 = 2;

/// The line of `cases/aio_setup.h` that makes `sync_submit()` poll.
const POLL_LINE: &str = "res = io_getevents(io_ctx, 0, 1, &event, &ts);";
const WAIT_LINE: &str = "res = io_getevents(io_ctx, 1, 1, &event, &ts);";

/// A built harness: `dir` is copied to [`GUEST_DIR`] in the root image.
#[derive(Debug, Clone)]
pub struct LibaioHarness {
    pub dir: PathBuf,
    /// Content key (source, libaio.a, compiler, this builder).
    pub key: String,
    /// The ENOSPC image to copy fresh into every suite run.
    pub enospc_image: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub number: u32,
    /// Uses `sync_submit()` (has an as-shipped and a waiting build).
    pub sync: bool,
}

/// Fetches (sha256-pinned, cached) and builds the harness, or returns the
/// cached build. Errors name what is missing (`libaio-dev`, `gcc`) or the
/// config key of the source.
pub fn libaio_harness(
    root: &Path,
    peer: &LibaioPeer,
    cache: &Cache,
    ui: &Ui,
) -> Result<LibaioHarness> {
    if !Path::new(LIBAIO_A).is_file() {
        bail!("{LIBAIO_A} is missing (install libaio-dev: cargo xtask deps --install)");
    }
    let fetched = {
        let _lock = cache.lock()?;
        fetch::fetch_keyed(
            &peer.sources,
            cache,
            ui,
            false,
            "peers.libaio.sources",
            "libaio source",
        )?
    };
    let gcc = Command::new("gcc")
        .arg("-dumpfullversion")
        .output()
        .context("cannot run gcc (install gcc)")?;
    let key = sha256_bytes(
        format!(
            "v{BUILD_VERSION} {} {} {}",
            fetched.tarball_sha256,
            sha256_file(Path::new(LIBAIO_A))?,
            String::from_utf8_lossy(&gcc.stdout).trim()
        )
        .as_bytes(),
    );
    let out_root = root.join("target/bufaio");
    let dir = out_root.join(format!("libaio-{}", &key[..16]));
    let enospc_image = out_root.join(format!("libaio-{}-enospc.img", &key[..16]));
    if dir.join("cases.txt").is_file() && enospc_image.is_file() {
        return Ok(LibaioHarness {
            dir,
            key,
            enospc_image,
        });
    }
    let stage = ui.stage("libaio", format!("harness {} (static)", peer.version));
    fs::create_dir_all(&out_root)?;
    let work = tempfile::tempdir_in(&out_root).context("cannot create a build dir")?;
    let src = work.path().join("src");
    fs::create_dir_all(&src)?;
    let mut tar = Command::new("tar");
    tar.env("LC_ALL", "C")
        .arg("-xzf")
        .arg(&fetched.tarball)
        .arg("-C")
        .arg(&src);
    crate::proc::die_with_parent(&mut tar);
    let o = tar.output().context("cannot run tar")?;
    if !o.status.success() {
        bail!(
            "cannot extract {} ({}): {}",
            fetched.tarball.display(),
            fetched.description,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    let harness = fs::read_dir(&src)?
        .flatten()
        .map(|e| e.path().join("harness"))
        .find(|p| p.join("cases/aio_setup.h").is_file())
        .with_context(|| {
            format!(
                "{}: no libaio-*/harness/cases/aio_setup.h inside",
                fetched.description
            )
        })?;
    // The waiting copy: only sync_submit()'s min_nr differs.
    let wait_src = work.path().join("harness-wait");
    crate::rootfs::copy_tree(&harness, &wait_src)?;
    let setup = wait_src.join("cases/aio_setup.h");
    let text = fs::read_to_string(&setup)?;
    if text.matches(POLL_LINE).count() != 1 {
        bail!(
            "{}: cases/aio_setup.h: expected sync_submit()'s `{POLL_LINE}` once (a different harness version? see xtask/src/peers.rs)",
            fetched.description
        );
    }
    fs::write(&setup, text.replace(POLL_LINE, WAIT_LINE))?;
    // 13.t polls the same way in its own body (with a 30 s timeout it
    // never waits for): wait there too.
    for (_, t) in list_cases(&wait_src)? {
        let p = wait_src.join(&t);
        let text = fs::read_to_string(&p)?;
        if text.contains(POLL_LINE) {
            fs::write(&p, text.replace(POLL_LINE, WAIT_LINE))?;
        }
    }
    let stagedir = work.path().join("stage");
    fs::create_dir_all(stagedir.join("asis"))?;
    fs::create_dir_all(stagedir.join("wait"))?;
    let mut cases = Vec::new();
    for (number, t) in list_cases(&harness)? {
        let sync = uses_sync_submit(&harness, &t)?;
        compile(
            &wait_src,
            &t,
            &stagedir.join("wait").join(number.to_string()),
        )?;
        if sync {
            compile(
                &harness,
                &t,
                &stagedir.join("asis").join(number.to_string()),
            )?;
        }
        cases.push(Case { number, sync });
    }
    if cases.is_empty() {
        bail!("{}: harness/cases has no *.t", fetched.description);
    }
    fs::write(stagedir.join("cases.txt"), manifest(&peer.version, &cases))?;
    let img_tmp = work.path().join("enospc.img");
    enospc_ext2(&img_tmp, work.path())?;
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&stagedir, &dir).with_context(|| format!("cannot rename into {}", dir.display()))?;
    fs::rename(&img_tmp, &enospc_image)?;
    stage.finish(format!(
        "{} cases ({} with an as-shipped build) in {}",
        cases.len(),
        cases.iter().filter(|c| c.sync).count(),
        dir.display()
    ));
    Ok(LibaioHarness {
        dir,
        key,
        enospc_image,
    })
}

/// `cases/N.t`, by number.
fn list_cases(harness: &Path) -> Result<Vec<(u32, PathBuf)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(harness.join("cases"))?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name.strip_suffix(".t").and_then(|n| n.parse::<u32>().ok()) {
            out.push((n, PathBuf::from("cases").join(&name)));
        }
    }
    out.sort();
    Ok(out)
}

/// Whether a case (or a local header it includes) calls `sync_submit()`
/// or `attempt_rw()`, or polls like `sync_submit()` itself (13.t).
fn uses_sync_submit(harness: &Path, case: &Path) -> Result<bool> {
    let text = fs::read_to_string(harness.join(case))?;
    let mut all = text.clone();
    for line in text.lines() {
        let l = line.trim();
        if let Some(h) = l
            .strip_prefix("#include \"")
            .and_then(|r| r.strip_suffix('"'))
        {
            if h != "aio_setup.h" {
                if let Ok(t) = fs::read_to_string(harness.join("cases").join(h)) {
                    all.push_str(&t);
                }
            }
        }
    }
    Ok(all.contains("sync_submit(") || all.contains("attempt_rw(") || all.contains(POLL_LINE))
}

/// Like the harness Makefile (`-DTEST_NAME=\"cases/N.t\" main.c`), static
/// against Debian's libaio.a.
fn compile(harness: &Path, case: &Path, out: &Path) -> Result<()> {
    let o = Command::new("gcc")
        .current_dir(harness)
        .args(["-Wall", "-O2", "-g0", "-s", "-static", "-I../src"])
        .arg("-Wno-stringop-overflow")
        .arg(format!("-DTEST_NAME=\"{}\"", case.display()))
        .arg("-o")
        .arg(out)
        .arg("main.c")
        .arg(LIBAIO_A)
        .arg("-lpthread")
        .output()
        .context("cannot run gcc")?;
    if !o.status.success() {
        bail!(
            "libaio harness: gcc {}: {}",
            case.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

pub fn manifest(version: &str, cases: &[Case]) -> String {
    let mut s = format!("# libaio {version} harness, built by bufaio\n");
    for c in cases {
        s.push_str(&format!(
            "{} {}\n",
            c.number,
            if c.sync { "sync" } else { "plain" }
        ));
    }
    s
}

/// Data blocks (and the indirect block) 10.t's 64 KiB file needs: 16
/// blocks of 4 KiB, the last 4 of them behind the single indirect block.
/// With exactly this many free, a 64 KiB write at offset 0 fits, and one at
/// offset 1 (17 data blocks) is short by one byte: what 10.t expects.
pub const ENOSPC_FREE_BLOCKS: u64 = 17;

/// The ENOSPC filesystem of 10.t (upstream ships a prebuilt
/// `ext2-enospc.img`; this is the same shape, built here): ext2, 4 KiB
/// blocks, no reserved blocks, and a filler file sized so that exactly
/// [`ENOSPC_FREE_BLOCKS`] blocks are free. Verified with dumpe2fs.
pub fn enospc_ext2(img: &Path, work: &Path) -> Result<()> {
    let opts = ["-b", "4096", "-m", "0", "-N", "16", "-O", "^resize_inode"];
    let empty = work.join("enospc-empty");
    fs::create_dir_all(&empty)?;
    mke2fs_with("ext2", Some(&empty), img, 1, ENOSPC_LABEL, &opts)?;
    let free = free_blocks(img)?;
    // k filler blocks cost k + (k > 12) indirect blocks (k < 1036).
    let want = free
        .checked_sub(ENOSPC_FREE_BLOCKS)
        .filter(|d| *d > 13)
        .with_context(|| format!("{}: only {free} blocks free", img.display()))?;
    let filler_blocks = want - 1;
    let full = work.join("enospc-full");
    fs::create_dir_all(&full)?;
    let f = fs::File::create(full.join("filler"))?;
    std::io::Write::write_all(&mut &f, &vec![0x5au8; (filler_blocks * 4096) as usize])?;
    drop(f);
    mke2fs_with("ext2", Some(&full), img, 1, ENOSPC_LABEL, &opts)?;
    let got = free_blocks(img)?;
    if got != ENOSPC_FREE_BLOCKS {
        bail!(
            "{}: the ENOSPC image has {got} free blocks, want {ENOSPC_FREE_BLOCKS} (mke2fs layout changed?)",
            img.display()
        );
    }
    Ok(())
}

fn free_blocks(img: &Path) -> Result<u64> {
    let o = Command::new("dumpe2fs")
        .arg("-h")
        .arg(img)
        .output()
        .context("cannot run dumpe2fs (install e2fsprogs)")?;
    let text = String::from_utf8_lossy(&o.stdout);
    parse_free_blocks(&text).with_context(|| {
        format!(
            "dumpe2fs -h {}: no `Free blocks:` line ({})",
            img.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        )
    })
}

pub fn parse_free_blocks(dumpe2fs: &str) -> Option<u64> {
    dumpe2fs
        .lines()
        .find_map(|l| l.strip_prefix("Free blocks:"))
        .and_then(|v| v.trim().parse().ok())
}

// fio for the guest (the bench's cross-check and soak/fio_verify): the
// dynamic binary with what `ldd` lists, the loader, and a shim for the
// SysV shared memory the test kernel does not have.

/// The shared libraries and the loader from `ldd` output.
pub fn parse_ldd(text: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for l in text.lines() {
        let l = l.trim();
        let path = match l.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => l.split_whitespace().next().filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            let p = PathBuf::from(p);
            if !v.contains(&p) {
                v.push(p);
            }
        }
    }
    v
}

/// fio, its libraries, the dynamic loader and the shm shim, to be copied
/// flat into the payload (guest-bench starts fio through the loader with
/// --library-path and --preload of the shim).
pub fn fio_files(work: &Path) -> Result<Option<Vec<PathBuf>>> {
    let Some(fio) = crate::fetch::which("fio") else {
        return Ok(None);
    };
    // The test kernel has no SysV IPC, which fio needs for its job table.
    let src = work.join("fio_shm_shim.c");
    let shim = work.join("fio-shm-shim.so");
    std::fs::create_dir_all(work)?;
    std::fs::write(&src, include_str!("bench/fio_shm_shim.c"))?;
    let out = Command::new("gcc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&shim)
        .arg(&src)
        .output()
        .context("cannot run gcc for the fio shm shim")?;
    if !out.status.success() {
        bail!(
            "compiling the fio shm shim failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new("ldd")
        .arg(&fio)
        .output()
        .context("cannot run ldd")?;
    if !out.status.success() {
        return Ok(None);
    }
    let mut files = vec![fio, shim];
    files.extend(parse_ldd(&String::from_utf8_lossy(&out.stdout)));
    Ok(Some(files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_lists_cases_by_kind() {
        let cases = vec![
            Case {
                number: 2,
                sync: false,
            },
            Case {
                number: 10,
                sync: true,
            },
        ];
        assert_eq!(
            manifest("0.3.113-4", &cases),
            "# libaio 0.3.113-4 harness, built by bufaio\n2 plain\n10 sync\n"
        );
    }

    #[test]
    fn free_blocks_from_dumpe2fs() {
        let t = "Block count:              256\nFree blocks:              17\nFree inodes: 5\n";
        assert_eq!(parse_free_blocks(t), Some(17));
        assert_eq!(parse_free_blocks("nothing"), None);
    }

    #[test]
    fn enospc_image_has_exactly_the_free_blocks_10t_needs() {
        if crate::fetch::which("mke2fs").is_none() || crate::fetch::which("dumpe2fs").is_none() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("e.img");
        enospc_ext2(&img, d.path()).unwrap();
        assert_eq!(free_blocks(&img).unwrap(), ENOSPC_FREE_BLOCKS);
    }
}
