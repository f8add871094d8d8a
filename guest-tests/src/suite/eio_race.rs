//! soak/eio_race (issue 14, EIO injection): AIO reads and same-data
//! rewrites of one file on a private null_blk device (1 ms per IO) while
//! another process marks random runs of the file's data blocks bad
//! through the device's `badblocks` attribute for 2-20 ms at a time (reads
//! and writes of those sectors then fail with BLK_STS_IOERR) and drops the
//! file's page cache.
//!
//! The file holds the offset-encoded pattern of one key and every write
//! rewrites exactly that pattern, so the file's contents never change and
//! every outcome is checkable: a read returns `-EIO`, or a prefix of the
//! range that is exactly the pattern (a short read stops at a bad block); a
//! write completes whole, short, or with `-EIO` (the read of a partially
//! overwritten block failed, or the write-back did); nothing else, and no
//! kernel-internal errno (the shared invariant checker). Afterwards, with
//! every block good again, the file read back cold through AIO must be the
//! pattern, whole: a failed write must not have left zeros or garbage in
//! a block it could not read (a folio marked up to date around a failed
//! read) — the case the asynchronous paths of the series (a write parked
//! on the read of its block, a read parked on its folio) must get right.
//!
//! Only data blocks go bad (found with FIBMAP after the file is written and
//! synced): the metadata and the journal stay readable, so the filesystem
//! is never shut down and every error is one the AIO caller must see.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::eio::EioDev;
use super::soak::{self, DEFAULT_SEED};
use super::truncate_race::{pattern_batch, read_back_cold, report, stopping, submit_whole, Racer};
use super::{create_pattern_file, Ctx, Stop, TestResult, REAP_TIMEOUT};
use crate::aio::{describe_res, Ring, IOCB_CMD_PWRITE};
use crate::fsx::{self, Heartbeat, Rng};
use crate::{ensure, pattern, sys};

/// The file's size.
const SIZE: u64 = 512 << 10;

/// The racer: marks a run of 1-64 of the file's blocks bad for 2-20 ms,
/// then good again; sometimes drops the file's cache; 0-2 ms between.
fn racer(
    cfg: PathBuf,
    file: PathBuf,
    sectors: Vec<(u64, u64)>,
    seed: u64,
    stop: &OwnedFd,
    rep: &OwnedFd,
) -> i32 {
    let attr = cfg.join("badblocks");
    let Ok(f) = File::open(&file) else {
        return 3;
    };
    let mut rng = Rng::new(seed ^ 0x0065_696f_7261);
    let (mut marked, mut runs, mut drops, mut failed) = (0u64, 0u64, 0u64, 0u64);
    let set = |sign: char, (a, b): (u64, u64)| std::fs::write(&attr, format!("{sign}{a}-{b}"));
    loop {
        if stopping(stop) {
            report(
                rep,
                &format!(
                    "racer: bad_runs={runs} bad_blocks={marked} drop_cache={drops} attr_errors={failed}"
                ),
            );
            return 0;
        }
        let n = sectors.len() as u64;
        let first = rng.below(n) as usize;
        let len = (1 + rng.below(64) as usize).min(sectors.len() - first);
        let run = &sectors[first..first + len];
        for &s in run {
            match set('+', s) {
                Ok(()) => marked += 1,
                Err(_) => failed += 1,
            }
        }
        runs += 1;
        std::thread::sleep(Duration::from_micros(2000 + rng.below(18_000)));
        for &s in run {
            if set('-', s).is_err() {
                failed += 1;
            }
        }
        if rng.chance(1, 3) && sys::fadvise_all(&f, libc::POSIX_FADV_DONTNEED).is_ok() {
            drops += 1;
        }
        std::thread::sleep(Duration::from_micros(rng.below(2000)));
    }
}

#[derive(Debug, Default)]
struct Stats {
    batches: u64,
    reads: u64,
    writes: u64,
    read_eio: u64,
    write_eio: u64,
    short_reads: u64,
    short_writes: u64,
    bytes_verified: u64,
    racer: String,
    elapsed: Duration,
}

/// soak/eio_race@fs: on a configfs null_blk copy of the slow device's
/// filesystem (the `read/eio` device).
pub fn eio_race(ctx: &Ctx) -> TestResult {
    let cfg = soak::soak_config()?;
    let name = format!("soak/eio_race@{}", ctx.fs.as_deref().unwrap_or("host"));
    let base = cfg.seed.unwrap_or(DEFAULT_SEED);
    let seed = fsx::instance_seed(base, &name);
    let unsized_run = cfg.ops.is_none() && cfg.secs.is_none();
    let batches = cfg.ops.unwrap_or(if unsized_run { 200 } else { u64::MAX });
    let budget = match cfg.secs {
        Some(s) => Some(Duration::from_secs(s)),
        None if unsized_run => Some(Duration::from_secs(10)),
        None => None,
    };
    let profiles = if ctx.guest && ctx.root {
        soak::parse_profiles(&cfg.profiles)?
    } else {
        Vec::new()
    };
    println!(
        "soak: test={name} base_seed={base:#x} seed={seed:#x} ops_target={batches} profiles={}",
        if cfg.profiles.is_empty() {
            "-".to_string()
        } else {
            cfg.profiles.join(",")
        }
    );
    let (d, fstype, _) = EioDev::copy_of_test_fs(ctx)?;
    let key = seed ^ 0x0045_494f_5241_4345;
    let path = d.mnt().join("eio-race.dat");
    let f = create_pattern_file(&path, key, SIZE)?;
    f.sync_all().map_err(|e| format!("fsync: {e}"))?;
    let bs = sys::figetbsz(&f).map_err(|e| format!("FIGETBSZ: {e}"))? as u64;
    let mut sectors = Vec::new();
    for lblk in 0..SIZE / bs {
        let phys = sys::fibmap(&f, lblk as u32).map_err(|e| format!("FIBMAP {lblk}: {e}"))?;
        ensure!(phys != 0, "FIBMAP: logical block {lblk} is not mapped");
        let first = phys as u64 * bs / 512;
        sectors.push((first, first + bs / 512 - 1));
    }
    drop(f);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    let fd = f.as_raw_fd();
    let hb = Arc::new(Heartbeat::default());
    let pressure = soak::Pressure::start(ctx, &path, &profiles).map_err(Stop::Fail)?;
    let cfg_dir = d.cfg().to_path_buf();
    let r = {
        let (c, p, s) = (cfg_dir.clone(), path.clone(), sectors.clone());
        Racer::spawn(move |stop, rep| racer(c, p, s, seed, stop, rep)).map_err(Stop::Fail)?
    };
    let mut children = pressure.children.clone();
    children.push(r.pid());
    soak::start_watchdog(
        Arc::clone(&hb),
        Duration::from_secs(cfg.stall_secs.unwrap_or(60)),
        pressure.freeze_dir.clone(),
        children,
    );
    let mut console = soak::console(ctx);
    let mut st = Stats::default();
    let mut rng = Rng::new(seed);
    let mut ring = Ring::new(64)?;
    let t0 = Instant::now();
    let result = (|| -> TestResult {
        while st.batches < batches && budget.is_none_or(|b| t0.elapsed() < b) {
            let n = 1 + rng.below(8) as usize;
            let cold = rng.chance(3, 4);
            if cold {
                let _ = sys::fadvise_all(&f, libc::POSIX_FADV_DONTNEED);
            }
            let (ops, what) = pattern_batch(&mut rng, fd, key, SIZE, n, 2, st.batches);
            if let Ok(mut c) = hb.current.lock() {
                *c = format!("batch {}: {}", st.batches, what.join(", "));
            }
            let b = st.batches;
            let desc = || format!("batch {b}: {}", what.join(", "));
            submit_whole(&mut ring, ops, &desc)?;
            for c in ring
                .reap(n, REAP_TIMEOUT)
                .map_err(|e| format!("{}: {e}", desc()))?
            {
                let op = c.op()?;
                let (off, len, res) = (op.offset(), op.nbytes() as i64, c.event.res);
                let eio = res == -(libc::EIO as i64);
                if op.opcode() == IOCB_CMD_PWRITE {
                    st.writes += 1;
                    st.write_eio += u64::from(eio);
                    st.short_writes += u64::from((0..len).contains(&res));
                    ensure!(
                        eio || (0..=len).contains(&res),
                        "{}: write {off:#x}+{len}: res {res} ({}), expected {len}, a short write or -EIO",
                        desc(),
                        describe_res(res)
                    );
                    continue;
                }
                st.reads += 1;
                if eio {
                    st.read_eio += 1;
                    continue;
                }
                ensure!(
                    (0..=len).contains(&res),
                    "{}: read {off:#x}+{len}: res {res} ({}), expected at most {len} or -EIO",
                    desc(),
                    describe_res(res)
                );
                st.short_reads += u64::from(res < len);
                pattern::verify(&op.buf()[..res as usize], key, off)
                    .map_err(|e| format!("{}: read {off:#x}+{len} returned {res}: {e}", desc()))?;
                st.bytes_verified += res as u64;
            }
            st.batches += 1;
            hb.ops.store(st.batches, Ordering::Relaxed);
            if st.batches.is_multiple_of(32) {
                if let Some(c) = console.as_mut() {
                    let rate = st.batches as f64 / t0.elapsed().as_secs_f64().max(0.001);
                    let target = if batches == u64::MAX { 0 } else { batches };
                    let _ = writeln!(
                        c,
                        "{}",
                        bufaio_contract::progress_line(&name, st.batches, target, rate)
                    );
                }
            }
        }
        Ok(())
    })();
    let racer = r.finish();
    let stopped = pressure.stop();
    // Every block good again (the racer unmarks each run it marks; this
    // covers a racer that died in between).
    let all = |(a, _): &(u64, u64)| *a;
    let (lo, hi) = (
        sectors.iter().map(all).min().unwrap_or(0),
        sectors.iter().map(|s| s.1).max().unwrap_or(0),
    );
    let cleared = std::fs::write(d.cfg().join("badblocks"), format!("-{lo}-{hi}"));
    result?;
    st.racer = racer?;
    stopped.map_err(Stop::Fail)?;
    cleared.map_err(|e| format!("clear badblocks: {e}"))?;
    ring.check()?;
    // The write-back error, if any, is reported once; the next fsync must
    // succeed: every block is good now.
    let first = f.sync_all();
    f.sync_all().map_err(|e| {
        format!("fsync with every block good again: {e} (the first one said {first:?})")
    })?;
    sys::fadvise_all(&f, libc::POSIX_FADV_DONTNEED).map_err(|e| format!("fadvise: {e}"))?;
    read_back_cold(&mut ring, fd, SIZE, &mut |buf, off| {
        pattern::verify(buf, key, off).map_err(|e| {
            format!(
                "cold AIO read-back with every block good again (a failed write left this): {e}"
            )
        })
    })?;
    ring.check()?;
    st.elapsed = t0.elapsed();
    println!(
        "eio_race: {fstype} block size {bs}: seed={seed:#x} batches={} reads={} (-EIO {}, short {}) writes={} (-EIO {}, short {}) verified_bytes={} elapsed_ms={}; {}",
        st.batches,
        st.reads,
        st.read_eio,
        st.short_reads,
        st.writes,
        st.write_eio,
        st.short_writes,
        st.bytes_verified,
        st.elapsed.as_millis(),
        st.racer
    );
    println!(
        "soak: seed={seed:#x} ops={} ops_per_s={:.0} elapsed_ms={}",
        st.batches,
        st.batches as f64 / st.elapsed.as_secs_f64().max(0.001),
        st.elapsed.as_millis()
    );
    ensure!(
        st.batches < 100 || st.read_eio + st.write_eio + st.short_reads > 0,
        "{} batches and no request met a bad block: the injection did not work ({})",
        st.batches,
        st.racer
    );
    if cfg.secs.is_none() && cfg.ops.is_some() && st.batches < batches {
        return Err(Stop::Fail(format!(
            "ran {} of {batches} batches",
            st.batches
        )));
    }
    Ok(())
}
