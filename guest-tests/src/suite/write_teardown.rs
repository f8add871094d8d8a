//! write/* teardown: the submitter exits, or io_destroy runs, with buffered
//! writes in flight (cold partial blocks on the slow device). No submitted
//! write is lost or torn (writes cannot be cancelled, so teardown waits for
//! all of them, as it does on an unpatched kernel, which writes them in
//! io_submit), nothing outside the written ranges changes, aio-nr goes back
//! to its baseline and the filesystem unmounts (remount) afterwards.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::teardown::wait_child;
use super::write_data::pwrite_pattern;
use super::{create_pattern_file, pread_full, Ctx, TestResult, REAP_TIMEOUT};
use crate::aio::Ring;
use crate::pattern;
use crate::sys::{self, WaitStatus};
use crate::{ensure, ensure_str};

const OLD: u64 = 0x7D00;
const NEW: u64 = 0x7D80;
const N: u64 = 32;
const STRIDE: u64 = 128 * 1024;

/// Write `i`: (offset, len) — small writes into the middle of a block and
/// 64 KiB + 3 writes crossing pages, alternating.
fn region(i: u64) -> (u64, usize) {
    if i.is_multiple_of(2) {
        (i * STRIDE + 1000 + (i % 7) * 100, 100)
    } else {
        (i * STRIDE + 4096 - 7, 64 * 1024 + 3)
    }
}

fn aio_nr() -> Result<u64, String> {
    let p = "/proc/sys/fs/aio-nr";
    std::fs::read_to_string(p)
        .map_err(|e| format!("read {p}: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("parse {p}: {e}"))
}

/// Waits up to 5 s for aio-nr to return to `baseline`.
fn aio_nr_back(ctx: &Ctx, baseline: u64) -> TestResult {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut nr = aio_nr()?;
    while nr != baseline && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        nr = aio_nr()?;
    }
    if nr != baseline {
        let msg = format!("aio-nr is {nr} 5 s after teardown, baseline {baseline}");
        ensure!(!ctx.guest, "{msg}");
        println!("note (host mode, not failing): {msg}");
    }
    Ok(())
}

/// Checks the file against the writes: `full` writes (reaped with their
/// full length) hold the new data; every other write's bytes are old or
/// new; everything else is old. Returns how many unfinished writes left
/// new, old or mixed data.
fn check_file(got: &[u8], full: &[bool], when: &str) -> Result<(usize, usize, usize), String> {
    let total = (N * STRIDE) as usize;
    ensure_str!(
        got.len() == total,
        "{when}: file size {} expected {total}",
        got.len()
    );
    let old = pattern::make(OLD, 0, total);
    let mut covered = vec![false; total];
    let (mut new_n, mut old_n, mut mixed) = (0, 0, 0);
    for i in 0..N {
        let (off, len) = region(i);
        let (a, b) = (off as usize, off as usize + len);
        covered[a..b].iter_mut().for_each(|c| *c = true);
        let new = pattern::make(NEW, off, len);
        let g = &got[a..b];
        if full[i as usize] {
            pattern::compare(g, &new, off, &[NEW, OLD]).map_err(|e| {
                format!("{when}: write {i} ({len} bytes at {off}) completed with its full length but: {e}")
            })?;
            continue;
        }
        if let Some(k) = (0..len).find(|&k| g[k] != new[k] && g[k] != old[a + k]) {
            return Err(format!(
                "{when}: unfinished write {i} ({len} bytes at {off}): byte {} is neither old nor new data",
                off + k as u64
            ));
        }
        if g == &new[..] {
            new_n += 1;
        } else if g == &old[a..b] {
            old_n += 1;
        } else {
            mixed += 1;
        }
    }
    if let Some(k) = (0..total).find(|&k| !covered[k] && got[k] != old[k]) {
        return Err(format!(
            "{when}: byte {k} outside every write changed: {}",
            pattern::compare(&got[k..k + 1], &old[k..k + 1], k as u64, &[NEW, OLD])
                .err()
                .unwrap_or_default()
        ));
    }
    Ok((new_n, old_n, mixed))
}

/// The forked child: submits the writes, reaps what is complete at once
/// (`probe`), reports `(i, res)` pairs to the parent, exits without
/// io_destroy (exit_aio must clean up). Never returns.
fn child(fd: i32, mut tell: File, probe: bool) -> ! {
    let code = (|| -> Result<(), String> {
        let mut ring = Ring::new(64)?;
        let ops = (0..N)
            .map(|i| {
                let (off, len) = region(i);
                pwrite_pattern(fd, NEW, off, len).with_data(i)
            })
            .collect();
        ring.submit_all(ops)?;
        let mut msg = Vec::new();
        if probe {
            let cs = ring
                .getevents(0, N as usize, Some(Duration::ZERO))
                .map_err(|e| format!("io_getevents: {e}"))?;
            for c in cs {
                msg.extend_from_slice(&c.event.data.to_le_bytes());
                msg.extend_from_slice(&c.event.res.to_le_bytes());
            }
        }
        tell.write_all(&msg).map_err(|e| format!("pipe: {e}"))?;
        std::mem::forget(ring);
        Ok(())
    })();
    sys::exit_now(if code.is_ok() { 0 } else { 3 })
}

/// `(data, res)` pairs from the child's report.
fn parse_report(b: &[u8]) -> Result<Vec<(u64, i64)>, String> {
    ensure_str!(
        b.len().is_multiple_of(16),
        "child report of {} bytes",
        b.len()
    );
    Ok(b.chunks(16)
        .map(|c| {
            let mut d = [0u8; 8];
            let mut r = [0u8; 8];
            d.copy_from_slice(&c[..8]);
            r.copy_from_slice(&c[8..]);
            (u64::from_le_bytes(d), i64::from_le_bytes(r))
        })
        .collect())
}

/// Every write of the round: teardown must not drop a submitted write.
fn all_submitted() -> Vec<bool> {
    vec![true; N as usize]
}

fn full_set(pairs: &[(u64, i64)]) -> Result<Vec<bool>, String> {
    let mut full = vec![false; N as usize];
    for &(i, res) in pairs {
        ensure_str!(i < N, "event with data {i}");
        let (_, len) = region(i);
        ensure_str!(
            !crate::invariants::is_kernel_internal_errno(res),
            "write {i}: kernel-internal errno {res} in an event"
        );
        ensure_str!(
            res == len as i64 || res < 0,
            "write {i} ({len} bytes): event res {res}"
        );
        full[i as usize] = res == len as i64;
    }
    Ok(full)
}

/// Verifies the file after drop_caches and after a remount (which must
/// succeed: nothing may still pin the filesystem).
fn verify_persisted(ctx: &Ctx, full: &[bool], what: &str) -> TestResult {
    let path = ctx.path("data");
    let len = (N * STRIDE) as usize;
    ctx.drop_caches()?;
    let got = pread_full(
        &File::open(&path).map_err(|e| format!("open: {e}"))?,
        0,
        len + 1,
    )?;
    let (n, o, m) = check_file(&got, full, &format!("{what}, after drop_caches"))?;
    ctx.remount()
        .map_err(|e| format!("{what}: remount after the teardown: {e:?}"))?;
    let got = pread_full(
        &File::open(&path).map_err(|e| format!("open: {e}"))?,
        0,
        len + 1,
    )?;
    check_file(&got, full, &format!("{what}, after umount + mount"))?;
    println!(
        "{what}: {} writes reaped complete; unfinished writes left new/old/mixed data: {n}/{o}/{m}",
        full.iter().filter(|f| **f).count()
    );
    Ok(())
}

/// A child submits cold writes and exits without io_destroy (round 0 after
/// reaping what was already complete, round 1 at once).
pub fn exit_inflight(ctx: &Ctx) -> TestResult {
    let baseline = aio_nr()?;
    for round in 0..2 {
        ctx.step(&format!("round {round}"));
        let f = create_pattern_file(&ctx.path("data"), OLD, N * STRIDE)?;
        ctx.make_cold(&f)?;
        let (rd, wr) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
        let pid = sys::fork().map_err(|e| format!("fork: {e}"))?;
        if pid == 0 {
            drop(rd);
            child(f.as_raw_fd(), File::from(wr), round == 0);
        }
        drop(wr);
        let mut report = Vec::new();
        File::from(rd)
            .read_to_end(&mut report)
            .map_err(|e| format!("read the child's report: {e}"))?;
        let status = wait_child(pid, Instant::now() + Duration::from_secs(30))?;
        ensure!(
            status == Some(WaitStatus::Exited(0)),
            "round {round}: the child with writes in flight ended with {status:?}"
        );
        let pairs = parse_report(&report)?;
        // What the child reaped must be whole; and since writes cannot be
        // cancelled, exit_aio() waits for every submitted write: an
        // unpatched kernel wrote them all in io_submit, so all must land.
        full_set(&pairs)?;
        let full = all_submitted();
        aio_nr_back(ctx, baseline)?;
        drop(f);
        verify_persisted(ctx, &full, &format!("round {round} (child exited)"))?;
    }
    Ok(())
}

/// io_destroy with cold writes in flight: the file does not change after
/// io_destroy returned; completed writes are whole, the rest old or new.
pub fn destroy_inflight(ctx: &Ctx) -> TestResult {
    let baseline = aio_nr()?;
    let path = ctx.path("data");
    let f = create_pattern_file(&path, OLD, N * STRIDE)?;
    ctx.make_cold(&f)?;
    let mut ring = Ring::new(64)?;
    let ops = (0..N)
        .map(|i| {
            let (off, len) = region(i);
            pwrite_pattern(f.as_raw_fd(), NEW, off, len).with_data(i)
        })
        .collect();
    ring.submit_all(ops)?;
    let early = ring
        .getevents(0, N as usize, Some(Duration::ZERO))
        .map_err(|e| format!("io_getevents: {e}"))?;
    let pairs: Vec<(u64, i64)> = early.iter().map(|c| (c.event.data, c.event.res)).collect();
    let (took, ops) = ring.destroy_now()?;
    let len = (N * STRIDE) as usize;
    let a = pread_full(&f, 0, len + 1)?;
    std::thread::sleep(Duration::from_millis(200));
    let b = pread_full(&f, 0, len + 1)?;
    std::mem::forget(ops);
    ring.check_after_destroy()?;
    if let Some(k) = a.iter().zip(&b).position(|(x, y)| x != y) {
        return Err(format!("the file changed at byte {k} after io_destroy returned").into());
    }
    full_set(&pairs)?;
    // io_destroy() waits for every submitted write (none can be cancelled)
    let full = all_submitted();
    check_file(&a, &full, "right after io_destroy")?;
    println!(
        "io_destroy with {N} writes submitted ({} reaped before) took {} us",
        pairs.len(),
        took.as_micros()
    );
    aio_nr_back(ctx, baseline)?;
    drop(f);
    verify_persisted(ctx, &full, "io_destroy")?;
    ring_done(ring)
}

fn ring_done(ring: Ring) -> TestResult {
    ring.finish(REAP_TIMEOUT)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_do_not_overlap_and_fit() {
        for i in 0..N {
            let (o, l) = region(i);
            assert!(o >= i * STRIDE && o + l as u64 <= (i + 1) * STRIDE);
        }
    }

    #[test]
    fn report_roundtrip_and_check() {
        let mut b = Vec::new();
        b.extend_from_slice(&3u64.to_le_bytes());
        b.extend_from_slice(&(region(3).1 as i64).to_le_bytes());
        let p = parse_report(&b).unwrap();
        assert_eq!(p, [(3, region(3).1 as i64)]);
        let full = full_set(&p).unwrap();
        assert!(full[3] && !full[2]);
        assert!(full_set(&[(1, -512)]).is_err());
        assert!(parse_report(&[0u8; 5]).is_err());

        let total = (N * STRIDE) as usize;
        let mut file = pattern::make(OLD, 0, total);
        let (o, l) = region(3);
        pattern::fill(&mut file[o as usize..o as usize + l], NEW, o);
        assert_eq!(
            check_file(&file, &full, "t").unwrap(),
            (0, N as usize - 1, 0)
        );
        // a completed write that is missing
        assert!(check_file(&pattern::make(OLD, 0, total), &full, "t").is_err());
        // a byte outside the writes
        let mut bad = file.clone();
        bad[0] ^= 1;
        assert!(check_file(&bad, &full, "t").is_err());
    }
}
