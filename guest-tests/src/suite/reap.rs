//! Reapers that drive woken reads: a buffered read that was parked and is
//! woken while a thread of the process sleeps in `io_getevents()` on its
//! context may be driven by that thread instead of a worker (the series'
//! `aio_reap_defer()`, counted as `read_reaped` in aio/stats). The hand-off
//! races with the reaper leaving `io_getevents()` (timeout, enough events,
//! signal): a read woken just then must still reach a worker, never sit on
//! the reapers' list with nobody to drive it.
//!
//! Correctness tests: they pass on every correct kernel (the unpatched one
//! completes the reads inside io_submit; a series without reapers completes
//! them from workers). Stranding is detected without timing: after the
//! reaper left, the rest of a round is only *polled* for
//! (`io_getevents(min_nr 0, timeout 0)`, which no kernel lets drive
//! anything), for [`STUCK`] — thousands of device latencies. A read left to
//! a reaper that had gone never completes under polling.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::adversarial::Rng;
use super::inflight::{require_slow, SLOW_L};
use super::write_async::read_stats;
use super::{create_pattern_file, fadvise_random, Ctx, Stop, TestResult, REAP_TIMEOUT};
use crate::aio::{self, Completion, IoEvent, Op, Ring};
use crate::ensure;
use crate::pattern;

const KIB: usize = 1024;
/// Reads per round (one io_submit), each on its own cold page.
const BATCH: usize = 8;
const LEN: usize = 4 * KIB;
/// Distance between two reads: no readahead window covers the next one.
const STRIDE: u64 = 64 * KIB as u64;
/// How long the rest of a round may take under polling alone.
const STUCK: Duration = Duration::from_secs(5);

/// Polls with `io_getevents(min_nr 0, timeout 0)` until `want` more events
/// of the ring arrived, for at most [`STUCK`]. Returns what arrived.
fn poll_only(ring: &mut Ring, want: usize) -> Result<Vec<Completion>, String> {
    let t0 = Instant::now();
    let mut got = Vec::new();
    while got.len() < want && t0.elapsed() < STUCK {
        match ring.getevents(0, want - got.len(), Some(Duration::ZERO)) {
            Ok(v) => got.extend(v),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("io_getevents(min_nr 0, timeout 0): {e}")),
        }
        if got.len() < want {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    Ok(got)
}

/// The failure of a round whose reads were stranded. The ring is leaked,
/// not dropped: io_destroy() (and exit_aio() at exit) waits for every
/// request of the context, so dropping it would hang the test process in
/// the kernel before it reports why; this way the reason reaches the
/// runner, which then finds the process stuck at exit.
fn stranded(ring: Ring, msg: String) -> Stop {
    std::mem::forget(ring);
    Stop::Fail(format!(
        "{msg} (the context is leaked, not destroyed: tearing it down would wait for the stranded reads)"
    ))
}

fn check_reads(all: &[Completion], seed: u64) -> TestResult {
    for c in all {
        let op = c.op()?;
        c.expect_res(LEN as i64)?;
        pattern::verify(op.buf(), seed, op.offset())
            .map_err(|e| format!("read at {}: {e}", op.offset()))?;
    }
    Ok(())
}

/// `read_reaped` and `read_park_folio` now (None: no counters, or a series
/// without reapers).
fn counters() -> Result<Option<(u64, u64)>, String> {
    let Some(s) = read_stats()? else {
        return Ok(None);
    };
    Ok(s.get("read_reaped").zip(s.get("read_park_folio")))
}

/// The counters' growth since `before`, as printed and checked.
fn grown(before: Option<(u64, u64)>) -> Result<Option<(u64, u64)>, String> {
    Ok(before
        .zip(counters()?)
        .map(|((r0, p0), (r1, p1))| (r1.saturating_sub(r0), p1.saturating_sub(p0))))
}

// ---------------------------------------------------------------------------
// retry/reap_leave_race

/// One thread, `ROUNDS` rounds: submit [`BATCH`] cold 4 KiB reads, wait for
/// all of them in `io_getevents(min_nr BATCH)` with a random timeout of
/// 0–2 L (so that it often leaves while the device is answering), then
/// collect the rest of the round by polling only. Every read must complete
/// exactly once with the file's data, and no round may be left incomplete
/// under polling for [`STUCK`]. Where the kernel counts `read_reaped`, at
/// least one read must have been driven by the waiting thread (else the
/// race was not exercised).
pub fn reap_leave_race(ctx: &Ctx) -> TestResult {
    const SEED: u64 = 0x4EA9;
    const ROUNDS: u64 = 120;
    require_slow(ctx)?;
    let f = create_pattern_file(&ctx.path("data"), SEED, ROUNDS * BATCH as u64 * STRIDE)?;
    fadvise_random(&f)?;
    ctx.make_cold(&f)?;
    let fd = f.as_raw_fd();
    let mut ring = Ring::new(4 * BATCH as u32)?;
    let mut rng = Rng::new(SEED);
    let before = counters()?;
    let (mut in_wait, mut polled, mut timeouts) = (0usize, 0usize, 0usize);
    let mut all = Vec::new();
    for r in 0..ROUNDS {
        let ops = (0..BATCH as u64)
            .map(|i| {
                let off = (r * BATCH as u64 + i) * STRIDE;
                Op::pread(fd, off, LEN).with_data(off)
            })
            .collect();
        ring.submit_all(ops)?;
        let tmo = Duration::from_micros(rng.below(2 * SLOW_L.as_micros() as u64 + 1));
        let got = match ring.getevents(BATCH, BATCH, Some(tmo)) {
            Ok(v) => v,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Vec::new(),
            Err(e) => return Err(format!("round {r}: io_getevents: {e}").into()),
        };
        in_wait += got.len();
        if got.len() < BATCH {
            timeouts += 1;
        }
        let want = BATCH - got.len();
        all.extend(got);
        let rest = poll_only(&mut ring, want)?;
        polled += rest.len();
        if rest.len() != want {
            return Err(stranded(
                ring,
                format!(
                    "round {r} (timeout {} µs): {} of {BATCH} reads never completed while they were only polled for over {} s after io_getevents returned: woken reads were left to a reaper that had gone",
                    tmo.as_micros(),
                    want - rest.len(),
                    STUCK.as_secs()
                ),
            ));
        }
        all.extend(rest);
    }
    check_reads(&all, SEED)?;
    ring.finish(REAP_TIMEOUT)?;
    let grew = grown(before)?;
    println!(
        "{ROUNDS} rounds of {BATCH} cold reads: {in_wait} reaped inside io_getevents(min_nr {BATCH}, 0-{} µs), {polled} by polling after it returned ({timeouts} rounds timed out); read_reaped/read_park_folio {}",
        2 * SLOW_L.as_micros(),
        grew.map_or("n/a (no such counters)".into(), |(r, p)| format!("+{r}/+{p}"))
    );
    if let Some((reaped, _)) = grew {
        ensure!(
            reaped > 0,
            "no read was driven by the thread waiting in io_getevents (read_reaped +0): the race between a reaper leaving and a wake was not exercised"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// retry/reap_two_reapers

/// The submitting thread submits `ROUNDS` batches of [`BATCH`] cold reads
/// back to back (at most 4 batches in flight) while two other threads reap
/// from the same context with random `min_nr` (1–4) and random timeouts
/// (0–2 L), so that reapers come and go while reads are woken and one
/// reaper leaves while the other stays. When all are submitted the reapers
/// stop and the rest is only polled for, for [`STUCK`]. Every read must
/// complete exactly once (the shared invariant checker) with the file's
/// data.
pub fn reap_two_reapers(ctx: &Ctx) -> TestResult {
    const SEED: u64 = 0x2EA9;
    const ROUNDS: u64 = 96;
    const IN_FLIGHT: usize = 4 * BATCH;
    require_slow(ctx)?;
    let f = create_pattern_file(&ctx.path("data"), SEED, ROUNDS * BATCH as u64 * STRIDE)?;
    fadvise_random(&f)?;
    ctx.make_cold(&f)?;
    let fd = f.as_raw_fd();
    let mut ring = Ring::new(2 * IN_FLIGHT as u32)?;
    let id = ring.id();
    let before = counters()?;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<Result<Vec<IoEvent>, String>>();
    let reapers: Vec<_> = (0..2u64)
        .map(|k| {
            let (stop, tx) = (Arc::clone(&stop), tx.clone());
            std::thread::spawn(move || {
                let mut rng = Rng::new(SEED + k + 1);
                while !stop.load(Ordering::Relaxed) {
                    let min_nr = 1 + rng.below(4) as usize;
                    let tmo = Duration::from_micros(rng.below(2 * SLOW_L.as_micros() as u64 + 1));
                    let mut buf = vec![IoEvent::default(); 4];
                    match aio::io_getevents(id, min_nr, &mut buf, Some(tmo)) {
                        Ok(0) => {}
                        Ok(n) => {
                            if tx.send(Ok(buf[..n].to_vec())).is_err() {
                                return;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = tx.send(Err(format!("reaper {k}: io_getevents: {e}")));
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    drop(tx);
    let mut all = Vec::new();
    let mut by_reapers = 0usize;
    let mut absorb = |ring: &mut Ring, msg: Result<Vec<IoEvent>, String>| -> TestResult {
        let evs = msg?;
        by_reapers += evs.len();
        all.extend(ring.absorb(&evs));
        Ok(())
    };
    let mut result: TestResult = Ok(());
    for r in 0..ROUNDS {
        // keep at most IN_FLIGHT outstanding: wait for the reapers
        let t0 = Instant::now();
        while ring.in_flight() + BATCH > IN_FLIGHT && result.is_ok() {
            match rx.recv_timeout(STUCK) {
                Ok(m) => result = absorb(&mut ring, m),
                Err(_) => {
                    result = Err(format!(
                        "round {r}: the reapers delivered nothing for {} s with {} reads in flight",
                        t0.elapsed().as_secs(),
                        ring.in_flight()
                    )
                    .into())
                }
            }
        }
        if result.is_err() {
            break;
        }
        let ops = (0..BATCH as u64)
            .map(|i| {
                let off = (r * BATCH as u64 + i) * STRIDE;
                Op::pread(fd, off, LEN).with_data(off)
            })
            .collect();
        if let Err(e) = ring.submit_all(ops) {
            result = Err(e.into());
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in reapers {
        let _ = h.join();
    }
    // what the reapers reaped before they stopped
    while let Ok(m) = rx.try_recv() {
        if result.is_ok() {
            result = absorb(&mut ring, m);
        }
    }
    result?;
    let want = ring.in_flight();
    let rest = poll_only(&mut ring, want)?;
    if rest.len() != want {
        return Err(stranded(
            ring,
            format!(
                "{} of {want} reads never completed while they were only polled for over {} s after both reapers left io_getevents: woken reads were left to reapers that had gone",
                want - rest.len(),
                STUCK.as_secs()
            ),
        ));
    }
    let polled = rest.len();
    all.extend(rest);
    ensure!(
        all.len() == ROUNDS as usize * BATCH,
        "{} completions for {} reads",
        all.len(),
        ROUNDS as usize * BATCH
    );
    check_reads(&all, SEED)?;
    ring.finish(REAP_TIMEOUT)?;
    let grew = grown(before)?;
    println!(
        "{} cold reads, two reapers: {by_reapers} reaped by them, {polled} by polling after they stopped; read_reaped/read_park_folio {}",
        ROUNDS as usize * BATCH,
        grew.map_or("n/a (no such counters)".into(), |(r, p)| format!("+{r}/+{p}"))
    );
    Ok(())
}
