//! write/*: buffered AIO writes land exactly where they should, survive
//! fsync + cache drop + re-open, and extend files correctly.

use std::os::fd::AsRawFd;

use super::{create_pattern_file, file_len, open_rw, pread_full, Ctx, TestResult, REAP_TIMEOUT};
use crate::aio::{Op, Ring};
use crate::ensure;
use crate::pattern;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// One AIO write: offset, length, and (for PWRITEV) segment sizes.
#[derive(Clone, Copy)]
struct W {
    off: u64,
    len: usize,
    vectored: bool,
}

const fn w(off: u64, len: usize) -> W {
    W {
        off,
        len,
        vectored: false,
    }
}

const fn wv(off: u64, len: usize) -> W {
    W {
        off,
        len,
        vectored: true,
    }
}

/// In-memory model of the file contents.
fn apply(model: &mut Vec<u8>, seed: u64, wr: &W) {
    let end = wr.off as usize + wr.len;
    if model.len() < end {
        model.resize(end, 0);
    }
    pattern::fill(&mut model[wr.off as usize..end], seed, wr.off);
}

fn verify_file(f: &std::fs::File, model: &[u8], seeds: &[u64], when: &str) -> Result<(), String> {
    let len = file_len(f)?;
    ensure_len(len, model.len() as u64, when)?;
    let got = pread_full(f, 0, model.len() + 1)?;
    pattern::compare(&got, model, 0, seeds).map_err(|e| format!("{when}: {e}"))
}

fn ensure_len(got: u64, want: u64, when: &str) -> Result<(), String> {
    if got != want {
        return Err(format!("{when}: file size is {got}, expected {want}"));
    }
    Ok(())
}

/// Runs batches of non-overlapping writes (each batch is one io_submit),
/// checking the whole file with pread after each batch, then fsync (AIO),
/// drop caches, re-open and check again with pread and an AIO read.
fn roundtrip(ctx: &Ctx, initial_len: u64, batches: &[&[W]]) -> TestResult {
    const OLD: u64 = 0x01D;
    const NEW: u64 = 0x2E3;
    let seeds = [NEW, OLD];
    let path = ctx.path("data");
    let f = create_pattern_file(&path, OLD, initial_len)?;
    ctx.make_cold(&f)?;
    let mut model = pattern::make(OLD, 0, initial_len as usize);
    let fd = f.as_raw_fd();
    let mut ring = Ring::new(16)?;

    for (bi, batch) in batches.iter().enumerate() {
        ctx.step(&format!("batch {bi}"));
        let ops: Vec<Op> = batch
            .iter()
            .enumerate()
            .map(|(i, wr)| {
                let data = pattern::make(NEW, wr.off, wr.len);
                let tag = (bi * 100 + i) as u64;
                if wr.vectored {
                    let a = 1.min(wr.len);
                    let b = (wr.len - a) / 2 + 7;
                    let b = b.min(wr.len - a);
                    Op::pwritev(fd, wr.off, data, &[a, b, wr.len - a - b]).with_data(tag)
                } else {
                    Op::pwrite(fd, wr.off, data).with_data(tag)
                }
            })
            .collect();
        ring.submit_all(ops)?;
        for c in ring.reap(batch.len(), REAP_TIMEOUT)? {
            let op = c.op()?;
            c.expect_res(op.nbytes() as i64)
                .map_err(|e| format!("batch {bi}: write: {e}"))?;
        }
        for wr in batch.iter() {
            apply(&mut model, NEW, wr);
        }
        verify_file(&f, &model, &seeds, &format!("after batch {bi} (pread)"))?;
    }

    ctx.step("AIO fsync + fdatasync");
    ring.submit_all(vec![
        Op::fsync(fd).with_data(900),
        Op::fdsync(fd).with_data(901),
    ])?;
    for c in ring.reap(2, REAP_TIMEOUT)? {
        c.expect_res(0)?;
    }
    ctx.make_cold(&f)?;
    drop(f);

    ctx.step("re-open and verify");
    let f = open_rw(&path)?;
    verify_file(
        &f,
        &model,
        &seeds,
        "after fsync, cache drop and re-open (pread)",
    )?;
    ctx.make_cold(&f)?;
    ring.submit_all(vec![
        Op::pread(f.as_raw_fd(), 0, model.len() + 4096).with_data(999)
    ])?;
    let c = ring.reap(1, REAP_TIMEOUT)?;
    c[0].expect_res(model.len() as i64)?;
    pattern::compare(&c[0].op()?.buf()[..model.len()], &model, 0, &seeds)
        .map_err(|e| format!("after re-open (cold AIO read): {e}"))?;
    ring.finish(REAP_TIMEOUT)?;
    ensure!(
        file_len(&f)? == model.len() as u64,
        "file size changed by reading"
    );
    Ok(())
}

pub fn roundtrip_aligned(ctx: &Ctx) -> TestResult {
    let b0 = [w(0, 4 * KIB), w(12_288, 8 * KIB), wv(65_536, 64 * KIB)];
    let b1 = [w(4096, 4 * KIB)];
    // extend past EOF leaving a hole (reads back as zeros)
    let b2 = [w(MIB as u64, 64 * KIB)];
    // large overwrite spanning old data, the hole and the extension
    let b3 = [wv(131_072, MIB)];
    roundtrip(ctx, 256 * KIB as u64, &[&b0, &b1, &b2, &b3])
}

pub fn roundtrip_unaligned(ctx: &Ctx) -> TestResult {
    let b0 = [w(1, 1), w(4095, 2), w(4113, 4095)];
    let b1 = [wv(8191, 65_537)];
    // crosses EOF (100_000) by 2 bytes
    let b2 = [w(99_999, 3)];
    // beyond EOF, unaligned, leaving a hole
    let b3 = [w(150_001, 4097)];
    // adjacent writes within the same pages, concurrently
    let b4 = [
        w(200_000, 10),
        w(200_010, 10),
        w(200_020, 4000),
        wv(204_020, 9000),
    ];
    // big unaligned overwrite
    let b5 = [w(3, MIB - 3)];
    roundtrip(ctx, 100_000, &[&b0, &b1, &b2, &b3, &b4, &b5])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_extends_with_zero_hole() {
        let mut m = vec![1u8; 4];
        apply(&mut m, 7, &w(8, 4));
        assert_eq!(&m[..8], &[1, 1, 1, 1, 0, 0, 0, 0]);
        assert_eq!(&m[8..], &pattern::make(7, 8, 4)[..]);
    }

    #[test]
    fn batches_do_not_overlap() {
        let all: [&[W]; 2] = [
            &[w(1, 1), w(4095, 2), w(4113, 4095)],
            &[
                w(200_000, 10),
                w(200_010, 10),
                w(200_020, 4000),
                wv(204_020, 9000),
            ],
        ];
        for b in all {
            for (i, x) in b.iter().enumerate() {
                for y in &b[i + 1..] {
                    let (xs, xe) = (x.off, x.off + x.len as u64);
                    let (ys, ye) = (y.off, y.off + y.len as u64);
                    assert!(xe <= ys || ye <= xs);
                }
            }
        }
    }
}
