//! Markdown tables, patched/unpatched ratios, the fio comparison and issue
//! 5's acceptance targets (PASS/MISS with the measured ratio).

use super::{Agg, FioPoint};
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
    /// None: not measurable in this run (a point is missing).
    pub pass: Option<bool>,
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
    }
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
    }
    v
}

pub fn acceptance_table(checks: &[Check], note: &str) -> String {
    let mut s = format!("\n#### Acceptance (issue 5 targets){note}\n\n| fs | target | measured | result |\n|---|---|---|---|\n");
    for c in checks {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            c.fs,
            c.target,
            c.measured,
            match c.pass {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None => "n/a",
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
}
