//! Markdown tables, patched/unpatched ratios, the fio comparison and issue
//! 5's acceptance targets (PASS/MISS with the measured ratio).

use super::{Agg, FioPoint};
use crate::bench::{is_write, paired_ratio, stats_summary, PointExt};
use serde::Serialize;
use std::fmt::Write;

/// One kernel's results (a column of the tables).
#[derive(Debug, Clone, Serialize)]
pub struct Column {
    /// `unpatched`, `patched`, or `unpatched+patched` when the series is
    /// empty and one kernel serves both.
    pub label: String,
    pub kernel_release: Option<String>,
    pub points: Vec<Agg>,
    pub fio: Vec<FioPoint>,
}

impl Column {
    pub fn find(&self, fs: &str, workload: &str, engine: &str, qd: usize) -> Option<&Agg> {
        self.points.iter().find(|a| {
            let p = &a.point;
            p.fs == fs && p.workload == workload && p.engine == engine && p.qd == qd
        })
    }

    pub fn filesystems(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for a in &self.points {
            if !v.contains(&a.point.fs) {
                v.push(a.point.fs.clone());
            }
        }
        v
    }
}

/// a / b, when b is a usable denominator.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

fn num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(num).unwrap_or_else(|| "–".into())
}

/// The unpatched and patched columns, if both are there and distinct.
pub fn pair(cols: &[Column]) -> Option<(&Column, &Column)> {
    let u = cols.iter().find(|c| c.label == "unpatched")?;
    let p = cols.iter().find(|c| c.label == "patched")?;
    Some((u, p))
}

/// One table per workload: per (fs, engine, QD) row, per kernel IOPS (with
/// the spread over repeats), submit p99, CPU, process and system context
/// switches and device reads per IO; then patched/unpatched IOPS.
pub fn table(cols: &[Column]) -> String {
    let mut s = String::new();
    let mut workloads: Vec<String> = Vec::new();
    for c in cols {
        for a in &c.points {
            if !workloads.contains(&a.point.workload) {
                workloads.push(a.point.workload.clone());
            }
        }
    }
    let both = pair(cols);
    for w in &workloads {
        let _ = writeln!(s, "\n#### {w}\n");
        if is_write(w) {
            s.push_str(&write_table(cols, w));
            continue;
        }
        let mut head = String::from("| fs | engine | QD |");
        let mut rule = String::from("|---|---|---|");
        for c in cols {
            let l = &c.label;
            let _ = write!(
                head,
                " {l} IOPS | {l} MiB/s | {l} submit p99 µs | {l} CPU µs/IO | {l} ctx/IO | {l} sys ctx/IO | {l} dev rd/IO |"
            );
            rule.push_str("---:|---:|---:|---:|---:|---:|---:|");
        }
        if both.is_some() {
            head.push_str(" IOPS patched/unpatched |");
            rule.push_str("---:|");
        }
        let _ = writeln!(s, "{head}\n{rule}");
        let mut keys = Vec::new();
        for c in cols {
            for a in &c.points {
                let k = a.point.key();
                if k.workload == *w && !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
        for k in &keys {
            let mut row = format!("| {} | {} | {} |", k.fs, k.engine, k.qd);
            for c in cols {
                match c.find(&k.fs, &k.workload, &k.engine, k.qd) {
                    Some(a) => {
                        let p = &a.point;
                        let spread = if a.repeats > 1 {
                            format!(" ±{:.0}%", 50.0 * a.spread())
                        } else {
                            String::new()
                        };
                        let _ = write!(
                            row,
                            " {}{spread} | {} | {} | {} | {} | {} | {} |",
                            num(p.iops),
                            num(p.mib_s),
                            opt(p.submit.map(|x| x.p99_us)),
                            num(p.cpu_us_per_io),
                            num(p.ctx_per_io),
                            num(p.sys_ctx_per_io),
                            num(p.dev_reads_per_io)
                        );
                    }
                    None => row.push_str(" – | – | – | – | – | – | – |"),
                }
            }
            if let Some((u, p)) = both {
                let r = match (
                    u.find(&k.fs, &k.workload, &k.engine, k.qd),
                    p.find(&k.fs, &k.workload, &k.engine, k.qd),
                ) {
                    (Some(a), Some(b)) => ratio(b.point.iops, a.point.iops),
                    _ => None,
                };
                let _ = write!(
                    row,
                    " {} |",
                    r.map(|r| format!("{r:.2}×")).unwrap_or("–".into())
                );
            }
            let _ = writeln!(s, "{row}");
        }
    }
    s
}

fn us3(x: Option<super::Summary>) -> String {
    x.map(|x| format!("{:.0} / {:.0} / {:.0}", x.p50_us, x.p99_us, x.max_us))
        .unwrap_or_else(|| "–".into())
}

/// The rows of one write workload: per kernel IOPS (± spread), submit
/// p50/p99/max, CPU, process and system context switches, device reads and
/// writes per IO; then patched/unpatched IOPS (median of the per-boot ratios).
fn write_table(cols: &[Column], w: &str) -> String {
    let mut s = String::new();
    let both = pair(cols);
    let mut head = String::from("| fs | engine | QD |");
    let mut rule = String::from("|---|---|---|");
    for c in cols {
        let l = &c.label;
        let _ = write!(
            head,
            " {l} IOPS | {l} submit p50 / p99 / max µs | {l} CPU µs/IO | {l} ctx/IO | {l} sys ctx/IO | {l} dev rd/IO | {l} dev wr/IO |"
        );
        rule.push_str("---:|---:|---:|---:|---:|---:|---:|");
    }
    if both.is_some() {
        head.push_str(" IOPS patched/unpatched |");
        rule.push_str("---:|");
    }
    let _ = writeln!(s, "{head}\n{rule}");
    let mut keys = Vec::new();
    for c in cols {
        for a in &c.points {
            let k = a.point.key();
            if k.workload == w && !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    for k in &keys {
        let mut row = format!("| {} | {} | {} |", k.fs, k.engine, k.qd);
        for c in cols {
            match c.find(&k.fs, &k.workload, &k.engine, k.qd) {
                Some(a) => {
                    let p = &a.point;
                    let spread = if a.repeats > 1 {
                        format!(" ±{:.0}%", 50.0 * a.spread())
                    } else {
                        String::new()
                    };
                    let _ = write!(
                        row,
                        " {}{spread} | {} | {} | {} | {} | {} | {} |",
                        num(p.iops),
                        us3(p.submit),
                        num(p.cpu_us_per_io),
                        num(p.ctx_per_io),
                        num(p.sys_ctx_per_io),
                        num(p.dev_reads_per_io),
                        num(p.dev_writes_per_io)
                    );
                }
                None => row.push_str(" – | – | – | – | – | – | – |"),
            }
        }
        if let Some((u, p)) = both {
            let r = match (
                u.find(&k.fs, &k.workload, &k.engine, k.qd),
                p.find(&k.fs, &k.workload, &k.engine, k.qd),
            ) {
                (Some(a), Some(b)) => paired_ratio(a, b),
                _ => None,
            };
            let _ = write!(
                row,
                " {} |",
                r.map(|r| format!("{:.2}×", r.0)).unwrap_or("–".into())
            );
        }
        let _ = writeln!(s, "{row}");
    }
    s
}

/// Which path the requests took: the non-zero aio/stats deltas of every
/// point that has them (only the patched kernel has the counters).
pub fn aio_stats_table(cols: &[Column]) -> String {
    let mut rows = String::new();
    for c in cols {
        for a in &c.points {
            let p = &a.point;
            let Some(st) = &p.aio_stats else { continue };
            if st.values().all(|v| *v == 0) {
                continue;
            }
            let _ = writeln!(
                rows,
                "| {} | {} | {} | {} | {} | {} |",
                c.label,
                p.fs,
                p.workload,
                p.engine,
                p.qd,
                stats_summary(st, p.ios)
            );
        }
    }
    if rows.is_empty() {
        return String::new();
    }
    format!(
        "\n#### aio/stats counter deltas per point (debugfs; the median boot's point)\n\n\
         | kernel | fs | workload | engine | QD | non-zero counters (per IO) |\n|---|---|---|---|---|---|\n{rows}"
    )
}

/// fio next to our native AIO point at the same queue depth.
#[derive(Debug, Clone, Serialize)]
pub struct FioRow {
    pub kernel: String,
    pub fs: String,
    pub fio: FioPoint,
    pub ours_iops: Option<f64>,
    pub ours_submit_mean_us: Option<f64>,
    pub ours_ctx_per_io: Option<f64>,
    pub ours_sys_ctx_per_io: Option<f64>,
    /// fio IOPS / ours.
    pub iops_ratio: Option<f64>,
    /// Within max(our repeat spread, 10 %).
    pub agree: Option<bool>,
}

pub fn fio_rows(cols: &[Column]) -> Vec<FioRow> {
    let mut v = Vec::new();
    for c in cols {
        for f in &c.fio {
            let ours = c.find(&f.fs, "rand4k", "aio", f.iodepth);
            let iops_ratio = ours.and_then(|a| ratio(f.iops, a.point.iops));
            let tol = ours.map(|a| a.spread().max(0.10)).unwrap_or(0.10);
            v.push(FioRow {
                kernel: c.label.clone(),
                fs: f.fs.clone(),
                fio: f.clone(),
                ours_iops: ours.map(|a| a.point.iops),
                ours_submit_mean_us: ours.and_then(|a| a.point.submit.map(|s| s.mean_us)),
                ours_ctx_per_io: ours.map(|a| a.point.ctx_per_io),
                ours_sys_ctx_per_io: ours.map(|a| a.point.sys_ctx_per_io),
                agree: match (&f.error, iops_ratio) {
                    (None, Some(r)) => Some((r - 1.0).abs() <= tol),
                    _ => None,
                },
                iops_ratio,
            });
        }
    }
    v
}

pub fn fio_table(rows: &[FioRow]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "\n#### fio cross-check (libaio, direct=0, randread 4k, same file, cold)\n\n\
         | kernel | fs | QD | fio IOPS | our AIO IOPS | fio/ours | fio slat mean µs | our submit mean µs | fio ctx/IO | our ctx/IO | fio sys ctx/IO | our sys ctx/IO | agree |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in rows {
        if let Some(e) = &r.fio.error {
            let _ = writeln!(
                s,
                "| {} | {} | {} | fio failed: {} |||||||||",
                r.kernel,
                r.fs,
                r.fio.iodepth,
                e.replace('|', "/").replace('\n', " ")
            );
            continue;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.kernel,
            r.fs,
            r.fio.iodepth,
            num(r.fio.iops),
            opt(r.ours_iops),
            r.iops_ratio
                .map(|x| format!("{x:.2}"))
                .unwrap_or("–".into()),
            num(r.fio.slat_mean_us),
            opt(r.ours_submit_mean_us),
            num(r.fio.ctx_per_io),
            opt(r.ours_ctx_per_io),
            num(r.fio.sys_ctx_per_io),
            opt(r.ours_sys_ctx_per_io),
            match r.agree {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "–",
            }
        );
    }
    s
}

/// One acceptance target of issue 5.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub fs: String,
    pub target: String,
    pub measured: String,
    /// None: not measurable in this run (a point is missing), or a finding.
    pub pass: Option<bool>,
    /// A measured figure reported next to the targets, with no threshold.
    pub finding: bool,
}

impl Check {
    /// Which kernels the target is about: "unpatched", "patched" or "both".
    pub fn needs(&self) -> &'static str {
        let t = self.target.as_str();
        if t.starts_with("unpatched ") {
            "unpatched"
        } else if t.contains("× unpatched") || t.contains("of unpatched") {
            "both"
        } else {
            "patched"
        }
    }
}

/// Only one kernel was selected (`--kernel patched|unpatched`): targets about
/// the other one, or comparing both, are not measurable.
pub fn restrict(checks: &mut [Check], label: &str) {
    for c in checks {
        if c.needs() != label {
            c.pass = None;
            c.measured = format!(
                "{} (needs the {} kernel)",
                c.measured,
                if c.needs() == "both" {
                    "other"
                } else {
                    c.needs()
                }
            );
        }
    }
}

fn check(fs: &str, target: &str, v: Option<(f64, String)>, ok: impl Fn(f64) -> bool) -> Check {
    Check {
        fs: fs.into(),
        target: target.into(),
        pass: v.as_ref().map(|(x, _)| ok(*x)),
        measured: v.map(|(_, m)| m).unwrap_or_else(|| "not measured".into()),
        finding: false,
    }
}

/// The queue depth the write targets use: 32 if measured, else the
/// deepest AIO write point.
pub fn write_qd(c: &Column) -> Option<usize> {
    let qds = c
        .points
        .iter()
        .filter(|a| a.point.is_write() && a.point.engine == "aio")
        .map(|a| a.point.qd);
    let v: Vec<usize> = qds.collect();
    if v.contains(&32) {
        Some(32)
    } else {
        v.into_iter().max()
    }
}

/// Issue 5's write target and finding for one filesystem: O_DSYNC write
/// IOPS patched vs unpatched (AIO at QD 1 and `wqd`, sync pwrite), the
/// median of the per-boot ratios with their range; and the patched AIO
/// io_submit p99 of plain and O_DSYNC writes against L.
fn write_checks(u: &Column, p: &Column, fs: &str, l_us: f64, wqd: usize) -> Vec<Check> {
    let mut v = Vec::new();
    let w = "write4k-dsync";
    let mut engines = vec![("aio", 1)];
    if wqd != 1 {
        engines.push(("aio", wqd));
    }
    engines.push(("sync", 1));
    for (e, q) in engines {
        let (a, b) = (u.find(fs, w, e, q), p.find(fs, w, e, q));
        let m = match (a, b) {
            (Some(a), Some(b)) => paired_ratio(a, b).map(|(m, lo, hi, n)| {
                let over = if n > 1 {
                    format!("median of {n} per-boot ratios, range {lo:.3}–{hi:.3}")
                } else if n == 1 {
                    "one boot per kernel".to_string()
                } else {
                    "ratio of the medians".to_string()
                };
                let spread = if a.repeats > 1 || b.repeats > 1 {
                    format!(
                        ", spread ±{:.0} % / ±{:.0} %",
                        50.0 * b.spread(),
                        50.0 * a.spread()
                    )
                } else {
                    String::new()
                };
                (
                    m,
                    format!(
                        "{m:.3}× ({over}; IOPS {} vs {}{spread})",
                        num(b.point.iops),
                        num(a.point.iops),
                    ),
                )
            }),
            _ => None,
        };
        let name = if e == "aio" { "AIO" } else { "sync pwrite" };
        v.push(check(
            fs,
            &format!("O_DSYNC 4 KiB write IOPS, {name} QD{q}: patched ≥ 0.95 × unpatched"),
            m,
            |r| r >= 0.95,
        ));
    }
    for (w, what) in [("write4k", "plain"), ("write4k-dsync", "O_DSYNC")] {
        let (a, b) = (u.find(fs, w, "aio", wqd), p.find(fs, w, "aio", wqd));
        let m = b.and_then(|b| b.point.submit).map(|s| {
            let un = a
                .and_then(|a| a.point.submit)
                .map(|x| format!("; unpatched p99 {:.0} µs", x.p99_us))
                .unwrap_or_default();
            (
                s.p99_us / l_us,
                format!(
                    "p99 {:.0} µs = {:.0} % of L (p50 {:.0} µs, max {:.0} µs){un}",
                    s.p99_us,
                    100.0 * s.p99_us / l_us,
                    s.p50_us,
                    s.max_us
                ),
            )
        });
        let mut c = check(
            fs,
            &format!("patched AIO io_submit p99 on {what} 4 KiB writes (cold, QD{wqd}) vs L"),
            m,
            |_| true,
        );
        c.pass = None;
        c.finding = true;
        v.push(c);
    }
    v
}

/// Issue 5's targets, for the unpatched column `u` and the patched column
/// `p` (the same column when the series is empty), device latency `l_us`,
/// at queue depth `qd` (32 when measured).
pub fn acceptance(u: &Column, p: &Column, l_us: f64, qd: usize) -> Vec<Check> {
    let mut v = Vec::new();
    let seq_qd = |c: &Column, fs: &str| {
        c.points
            .iter()
            .find(|a| a.point.fs == fs && a.point.workload == "seq1m" && a.point.engine == "aio")
            .map(|a| a.point.qd)
    };
    for fs in p.filesystems() {
        let fs = fs.as_str();
        fn get<'c>(c: &'c Column, fs: &str, e: &str, qd: usize) -> Option<&'c super::Point> {
            c.find(fs, "rand4k", e, qd).map(|a| &a.point)
        }
        let (pa, ua) = (get(p, fs, "aio", qd), get(u, fs, "aio", qd));
        let (pool, uring) = (get(p, fs, "pool", qd), get(p, fs, "uring", qd));
        let p99 = |x: Option<&super::Point>| {
            x.and_then(|x| x.submit).map(|s| {
                (
                    s.p99_us / l_us,
                    format!(
                        "p99 {:.0} µs = {:.0} % of L",
                        s.p99_us,
                        100.0 * s.p99_us / l_us
                    ),
                )
            })
        };
        v.push(check(
            fs,
            &format!("patched AIO io_submit p99 ≤ 5 % of L (cold, QD{qd})"),
            p99(pa),
            |r| r <= 0.05,
        ));
        v.push(check(
            fs,
            &format!("unpatched AIO io_submit p99 ≥ 80 % of L (cold, QD{qd})"),
            p99(ua),
            |r| r >= 0.80,
        ));
        let rel = |a: Option<&super::Point>,
                   b: Option<&super::Point>,
                   f: fn(&super::Point) -> f64,
                   what: &str| {
            match (a, b) {
                (Some(a), Some(b)) => ratio(f(a), f(b))
                    .map(|r| (r, format!("{} vs {} {what}: {r:.2}×", num(f(a)), num(f(b))))),
                _ => None,
            }
        };
        let iops = |x: &super::Point| x.iops;
        v.push(check(
            fs,
            &format!("QD{qd} IOPS: patched AIO ≥ 0.9 × thread pool"),
            rel(pa, pool, iops, "IOPS"),
            |r| r >= 0.9,
        ));
        v.push(check(
            fs,
            &format!("QD{qd} IOPS: patched AIO ≥ io_uring"),
            rel(pa, uring, iops, "IOPS"),
            |r| r >= 1.0,
        ));
        v.push(check(
            fs,
            &format!("QD{qd} IOPS: patched AIO ≥ 5 × unpatched AIO"),
            rel(pa, ua, iops, "IOPS"),
            |r| r >= 5.0,
        ));
        v.push(check(
            fs,
            &format!("QD{qd} process ctx switches per IO (patched AIO) ≤ 0.5"),
            pa.map(|x| (x.ctx_per_io, format!("{:.2}", x.ctx_per_io))),
            |r| r <= 0.5,
        ));
        let sys = |x: &super::Point| x.sys_ctx_per_io;
        v.push(check(
            fs,
            &format!("QD{qd} system ctx/IO: patched AIO ≤ 0.5 × thread pool"),
            rel(pa, pool, sys, "sys ctx/IO"),
            |r| r <= 0.5,
        ));
        if fs == "ext3" {
            v.push(check(
                fs,
                &format!("QD{qd} system ctx/IO: patched AIO ≤ io_uring"),
                rel(pa, uring, sys, "sys ctx/IO"),
                |r| r <= 1.0,
            ));
        }
        let cpu = |x: &super::Point| x.cpu_us_per_io;
        v.push(check(
            fs,
            &format!("QD{qd} CPU/IO: patched AIO ≤ thread pool"),
            rel(pa, pool, cpu, "µs CPU/IO"),
            |r| r <= 1.0,
        ));
        // Warm cost per IO = 1/IOPS: unpatched IOPS / patched IOPS.
        let wu = u.find(fs, "warm4k", "aio", 1).map(|a| &a.point);
        let wp = p.find(fs, "warm4k", "aio", 1).map(|a| &a.point);
        v.push(check(
            fs,
            "warm 4 KiB AIO QD1 cost per IO within 10 % of unpatched",
            rel(wu, wp, iops, "IOPS (unpatched vs patched)"),
            |r| r <= 1.10,
        ));
        let (su, sp) = match (seq_qd(u, fs), seq_qd(p, fs)) {
            (Some(a), Some(b)) => (
                u.find(fs, "seq1m", "aio", a).map(|a| &a.point),
                p.find(fs, "seq1m", "aio", b).map(|a| &a.point),
            ),
            _ => (None, None),
        };
        let mibs = |x: &super::Point| x.mib_s;
        v.push(check(
            fs,
            "streaming 1 MiB AIO read ≥ 0.95 × unpatched",
            rel(sp, su, mibs, "MiB/s"),
            |r| r >= 0.95,
        ));
        if let Some(wqd) = write_qd(p) {
            v.extend(write_checks(u, p, fs, l_us, wqd));
        }
    }
    v
}

/// Issue 12's "no regression" targets: the patched column against each
/// `--also-series` column `others` (QD 32 cold reads and the write
/// workloads within 5 %), AIO reads ≥ 0.9 × the thread pool, and the warm
/// cached read's cost within 3 % of unpatched. Ratios pair boot i of one
/// kernel with boot i of the other (the bench interleaves the kernels).
pub fn series_checks(cols: &[Column], others: &[String], qd: usize) -> Vec<Check> {
    let mut v = Vec::new();
    let Some(p) = cols.iter().find(|c| c.label == "patched") else {
        return v;
    };
    let u = cols.iter().find(|c| c.label == "unpatched");
    let paired = |a: Option<&Agg>, b: Option<&Agg>, what: &str| -> Option<(f64, String)> {
        let (a, b) = (a?, b?);
        let (m, lo, hi, n) = paired_ratio(a, b)?;
        let by = if n > 1 {
            format!(" (per boot {lo:.2}–{hi:.2}×, {n} pairs)")
        } else {
            String::new()
        };
        Some((
            m,
            format!(
                "{} vs {} {what}: {m:.2}×{by}",
                num(b.point.iops),
                num(a.point.iops)
            ),
        ))
    };
    let wqd = write_qd(p).unwrap_or(32);
    for fs in p.filesystems() {
        let fs = fs.as_str();
        for o in others {
            let Some(oc) = cols.iter().find(|c| &c.label == o) else {
                continue;
            };
            for (w, q, what) in [
                ("rand4k", qd, "cold 4 KiB read"),
                ("write4k", wqd, "4 KiB write"),
                ("write4k-dsync", wqd, "O_DSYNC 4 KiB write"),
            ] {
                v.push(check(
                    fs,
                    &format!("QD{q} {what}, AIO IOPS: patched ≥ 0.95 × {o}"),
                    paired(oc.find(fs, w, "aio", q), p.find(fs, w, "aio", q), "IOPS"),
                    |r| r >= 0.95,
                ));
            }
            let mut c = check(
                fs,
                &format!("QD{qd} cold read, {o}: AIO / thread pool"),
                paired(
                    oc.find(fs, "rand4k", "pool", qd),
                    oc.find(fs, "rand4k", "aio", qd),
                    "IOPS",
                ),
                |_| true,
            );
            c.pass = None;
            c.finding = true;
            v.push(c);
        }
        v.push(check(
            fs,
            &format!("QD{qd} cold read: patched AIO ≥ 0.9 × thread pool"),
            paired(
                p.find(fs, "rand4k", "pool", qd),
                p.find(fs, "rand4k", "aio", qd),
                "IOPS",
            ),
            |r| r >= 0.9,
        ));
        if let Some(u) = u {
            // Cost per IO = 1 / IOPS: unpatched IOPS over patched IOPS.
            v.push(check(
                fs,
                "warm 4 KiB AIO QD1 cost per IO within 3 % of unpatched",
                paired(
                    p.find(fs, "warm4k", "aio", 1),
                    u.find(fs, "warm4k", "aio", 1),
                    "IOPS (unpatched vs patched)",
                ),
                |r| r <= 1.03,
            ));
        }
    }
    v
}

pub fn acceptance_table(checks: &[Check], note: &str) -> String {
    checks_table("Acceptance (issue 5 targets)", checks, note)
}

pub fn checks_table(title: &str, checks: &[Check], note: &str) -> String {
    let mut s =
        format!("\n#### {title}{note}\n\n| fs | target | measured | result |\n|---|---|---|---|\n");
    for c in checks {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            c.fs,
            c.target,
            c.measured,
            match (c.finding, c.pass) {
                (true, _) => "finding",
                (_, Some(true)) => "PASS",
                (_, Some(false)) => "MISS",
                (_, None) => "n/a",
            }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{Point, Summary};

    fn agg(fs: &str, w: &str, e: &str, qd: usize, iops: f64, f: impl Fn(&mut Point)) -> Agg {
        let mut p = Point {
            fs: fs.into(),
            workload: w.into(),
            engine: e.into(),
            qd,
            iops,
            mib_s: iops / 256.0,
            ..Point::default()
        };
        f(&mut p);
        Agg {
            point: p,
            repeats: 3,
            iops_min: iops * 0.9,
            iops_max: iops * 1.1,
            iops_by_run: vec![Some(iops * 1.1), Some(iops * 0.9), Some(iops)],
        }
    }

    fn col(label: &str, aio_iops: f64, aio_p99: f64) -> Column {
        Column {
            label: label.into(),
            kernel_release: Some("6.12.117".into()),
            points: vec![
                agg("ext3", "rand4k", "aio", 32, aio_iops, |p| {
                    p.submit = Some(Summary {
                        p99_us: aio_p99,
                        mean_us: aio_p99 / 2.0,
                        ..Summary::default()
                    });
                    p.ctx_per_io = 0.3;
                    p.sys_ctx_per_io = 0.5;
                    p.cpu_us_per_io = 50.0;
                }),
                agg("ext3", "rand4k", "pool", 32, 8000.0, |p| {
                    p.sys_ctx_per_io = 1.5;
                    p.cpu_us_per_io = 115.0;
                }),
                agg("ext3", "rand4k", "uring", 32, 2000.0, |p| {
                    p.sys_ctx_per_io = 0.8
                }),
                agg("ext3", "warm4k", "aio", 1, 100_000.0, |_| {}),
                agg("ext3", "seq1m", "aio", 1, 60.0, |_| {}),
            ],
            fio: vec![FioPoint {
                fs: "ext3".into(),
                iodepth: 32,
                iops: aio_iops * 1.05,
                ..FioPoint::default()
            }],
        }
    }

    #[test]
    fn ratio_guards() {
        assert_eq!(ratio(10.0, 4.0), Some(2.5));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
    }

    #[test]
    fn table_has_ratio_column_only_for_a_pair() {
        let cols = [
            col("unpatched", 600.0, 2000.0),
            col("patched", 7600.0, 20.0),
        ];
        let t = table(&cols);
        assert!(t.contains("#### rand4k"), "{t}");
        assert!(t.contains("IOPS patched/unpatched"), "{t}");
        assert!(t.contains("| ext3 | aio | 32 | 600 ±10% |"), "{t}");
        assert!(t.contains("| 12.67× |"), "{t}");
        let one = table(&[col("unpatched+patched", 600.0, 2000.0)]);
        assert!(!one.contains("patched/unpatched"), "{one}");
    }

    #[test]
    fn targets_pass_and_miss() {
        let (u, p) = (
            col("unpatched", 600.0, 2000.0),
            col("patched", 7600.0, 20.0),
        );
        let c = acceptance(&u, &p, 1000.0, 32);
        let by = |t: &str| c.iter().find(|c| c.target.contains(t)).unwrap();
        assert_eq!(by("patched AIO io_submit p99").pass, Some(true));
        assert_eq!(by("unpatched AIO io_submit p99").pass, Some(true));
        assert_eq!(by("0.9 × thread pool").pass, Some(true));
        assert_eq!(by("≥ io_uring").pass, Some(true));
        assert_eq!(by("5 × unpatched").pass, Some(true));
        assert_eq!(by("0.5 × thread pool").pass, Some(true));
        assert_eq!(by("system ctx/IO: patched AIO ≤ io_uring").pass, Some(true));
        assert_eq!(by("warm").pass, Some(true));
        // The empty series: the same kernel on both sides misses the gains.
        let same = acceptance(&u, &u, 1000.0, 32);
        let by = |t: &str| same.iter().find(|c| c.target.contains(t)).unwrap();
        assert_eq!(by("patched AIO io_submit p99").pass, Some(false));
        assert_eq!(by("5 × unpatched").pass, Some(false));
        assert!(by("5 × unpatched").measured.contains("1.00×"));
        let md = acceptance_table(&same, "");
        let mut only = same.clone();
        restrict(&mut only, "patched");
        let by = |t: &str| only.iter().find(|c| c.target.contains(t)).unwrap();
        assert_eq!(by("unpatched AIO io_submit p99").pass, None);
        assert_eq!(by("5 × unpatched").pass, None);
        assert_eq!(by("warm").pass, None);
        assert_eq!(by("patched AIO io_submit p99").pass, Some(false));
        assert!(md.contains("| MISS |") && md.contains("| PASS |"), "{md}");
    }

    /// A column with O_DSYNC / plain AIO and sync write points; `by_run` are
    /// the dsync AIO QD1 IOPS per boot.
    fn wcol(label: &str, by_run: [f64; 3], p99: f64, stats: bool) -> Column {
        let mut c = col(label, 600.0, 2000.0);
        for (w, e, q) in [
            ("write4k-dsync", "aio", 1),
            ("write4k-dsync", "aio", 32),
            ("write4k-dsync", "sync", 1),
            ("write4k", "aio", 32),
        ] {
            let mut a = agg("ext3", w, e, q, by_run[2], |p| {
                p.ios = 500;
                p.submit = Some(Summary {
                    p50_us: 20.0,
                    p99_us: p99,
                    max_us: 3000.0,
                    ..Summary::default()
                });
                p.dev_reads_per_io = 0.5;
                p.dev_writes_per_io = 1.0;
                if stats {
                    p.aio_stats = Some(
                        [
                            ("write_async".to_string(), 500),
                            ("write_inline".to_string(), 0),
                        ]
                        .into_iter()
                        .collect(),
                    );
                }
            });
            a.iops_by_run = by_run.iter().map(|x| Some(*x)).collect();
            a.iops_min = 400.0;
            a.iops_max = 600.0;
            c.points.push(a);
        }
        c
    }

    #[test]
    fn write_rows_and_dsync_target() {
        let u = wcol("unpatched", [500.0, 400.0, 500.0], 1900.0, false);
        let p = wcol("patched", [490.0, 420.0, 450.0], 30.0, true);
        assert_eq!(write_qd(&p), Some(32));
        let t = table(&[u.clone(), p.clone()]);
        assert!(t.contains("#### write4k-dsync"), "{t}");
        assert!(t.contains("submit p50 / p99 / max µs"), "{t}");
        // Per-boot ratios 0.98, 1.05, 0.90: median 0.98.
        assert!(
            t.contains("| ext3 | aio | 1 | 500 ±20% | 20 / 1900 / 3000 | 0.00 | 0.00 | 0.00 | 0.50 | 1.00 | 450 ±22% | 20 / 30 / 3000 | 0.00 | 0.00 | 0.00 | 0.50 | 1.00 | 0.98× |"),
            "{t}"
        );
        let c = acceptance(&u, &p, 1000.0, 32);
        let ds: Vec<&Check> = c
            .iter()
            .filter(|c| c.target.contains("O_DSYNC 4 KiB write IOPS"))
            .collect();
        assert_eq!(ds.len(), 3);
        assert_eq!(
            ds[0].target,
            "O_DSYNC 4 KiB write IOPS, AIO QD1: patched ≥ 0.95 × unpatched"
        );
        assert_eq!(ds[0].pass, Some(true));
        assert_eq!(
            ds[0].measured,
            "0.980× (median of 3 per-boot ratios, range 0.900–1.050; IOPS 450 vs 500, spread ±22 % / ±20 %)"
        );
        assert!(ds[2].target.contains("sync pwrite QD1"));
        let f: Vec<&Check> = c.iter().filter(|c| c.finding).collect();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].pass, None);
        assert_eq!(
            f[1].measured,
            "p99 30 µs = 3 % of L (p50 20 µs, max 3000 µs); unpatched p99 1900 µs"
        );
        let md = acceptance_table(&c, " — TCG, L = 1000 µs, 3 boot(s) per kernel");
        assert!(md.contains("| finding |"), "{md}");
        assert!(md.contains("TCG, L = 1000 µs"), "{md}");
        // Patched 10 % slower on every boot: MISS.
        let slow = wcol("patched", [450.0, 360.0, 450.0], 30.0, true);
        let c = acceptance(&u, &slow, 1000.0, 32);
        let d = c
            .iter()
            .find(|c| c.target.contains("AIO QD1: patched ≥ 0.95"))
            .unwrap();
        assert_eq!(d.pass, Some(false), "{}", d.measured);
        assert!(d.measured.starts_with("0.900×"), "{}", d.measured);
        // Only one kernel: not measurable; the finding stays.
        let mut only = c.clone();
        restrict(&mut only, "patched");
        assert!(only
            .iter()
            .filter(|c| c.target.contains("O_DSYNC 4 KiB"))
            .all(|c| c.pass.is_none()));
        assert_eq!(only.iter().filter(|c| c.finding).count(), 2);
    }

    #[test]
    fn counters_table() {
        let u = wcol("unpatched", [500.0; 3], 1900.0, false);
        let p = wcol("patched", [500.0; 3], 30.0, true);
        let t = aio_stats_table(&[u.clone(), p]);
        assert!(
            t.contains("| patched | ext3 | write4k-dsync | aio | 32 | write_async 500 (1.00/IO) |"),
            "{t}"
        );
        assert!(!t.contains("| unpatched |"), "{t}");
        assert_eq!(aio_stats_table(&[u]), "");
    }

    #[test]
    fn fio_agreement() {
        let cols = [col("unpatched", 600.0, 2000.0)];
        let rows = fio_rows(&cols);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].agree, Some(true));
        assert!((rows[0].iops_ratio.unwrap() - 1.05).abs() < 1e-9);
        let t = fio_table(&rows);
        assert!(
            t.contains("| unpatched | ext3 | 32 | 630 | 600 | 1.05 |"),
            "{t}"
        );
    }

    #[test]
    fn series_comparison_against_another_series() {
        let cols = [
            col("unpatched", 600.0, 2000.0),
            col("patched", 7000.0, 20.0),
            col("v1", 8000.0, 20.0),
        ];
        let v = series_checks(&cols, &["v1".to_string()], 32);
        let find = |t: &str| {
            v.iter()
                .find(|c| c.target.contains(t))
                .unwrap_or_else(|| panic!("no check {t:?} in {v:?}"))
        };
        let r = find("cold 4 KiB read, AIO IOPS: patched ≥ 0.95 × v1");
        assert_eq!(r.pass, Some(false), "{r:?}");
        assert!(r.measured.contains("7000 vs 8000 IOPS: 0.88×"), "{r:?}");
        assert!(r.measured.contains("3 pairs"), "{r:?}");
        // No write points in these columns: reported, not judged.
        let w = find("QD32 4 KiB write, AIO IOPS");
        assert_eq!((w.pass, w.measured.as_str()), (None, "not measured"));
        let f = find("v1: AIO / thread pool");
        assert!(f.finding && f.measured.contains("1.00×"), "{f:?}");
        assert_eq!(find("patched AIO ≥ 0.9 × thread pool").pass, Some(false));
        assert_eq!(find("within 3 % of unpatched").pass, Some(true));
        let t = checks_table("Series comparison (issue 12 targets)", &v, "");
        assert!(t.contains("| ext3 | QD32 cold 4 KiB read, AIO IOPS: patched ≥ 0.95 × v1 | 7000 vs 8000 IOPS: 0.88× (per boot 0.88–0.88×, 3 pairs) | MISS |"), "{t}");
        // Without a patched column there is nothing to compare.
        assert!(series_checks(&cols[..1], &["v1".to_string()], 32).is_empty());
    }
}
