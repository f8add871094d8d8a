//! `cargo xtask bench`: the guest benchmark's JSON lines (guest-bench/README.md)
//! parsed, aggregated over repeats, judged against issue 5's targets,
//! rendered as markdown and plotted as SVG. Everything here is pure except
//! [`plot`]'s file output.

pub mod plot;
pub mod report;

use bufaio_contract::aiostats;
use bufaio_contract::bench::{KIND_FIO, KIND_POINT};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// The rows guest-bench prints, from the contract: the guest serializes the
/// same structs, so a renamed field does not compile on either side.
pub use bufaio_contract::bench::{FioPoint, Point, Summary};

/// What the host derives from a point (the row itself is the contract's).
pub trait PointExt {
    /// A buffered-write workload (`write4k`, `write4k-dsync`).
    fn is_write(&self) -> bool;
    /// What a point is over the repeats: (fs, workload, engine, qd).
    fn key(&self) -> Key;
}

impl PointExt for Point {
    fn is_write(&self) -> bool {
        is_write(&self.workload)
    }

    fn key(&self) -> Key {
        Key {
            fs: self.fs.clone(),
            workload: self.workload.clone(),
            engine: self.engine.clone(),
            qd: self.qd,
        }
    }
}

pub fn is_write(workload: &str) -> bool {
    workload.starts_with("write")
}

/// The non-zero counters of a point's aio/stats deltas, each with its
/// count per IO of the point: `write_inline 500 (0.50/IO)`, in the order
/// the file lists them (reads, writes, workers). "" without counters.
pub fn stats_summary(stats: &BTreeMap<String, u64>, ios: usize) -> String {
    let order = &aiostats::NAMES;
    let rank = |k: &str| order.iter().position(|o| *o == k).unwrap_or(order.len());
    let mut v: Vec<(&String, &u64)> = stats.iter().filter(|(_, v)| **v != 0).collect();
    v.sort_by_key(|(k, _)| rank(k));
    let per = |n: u64| {
        if ios > 0 {
            format!(" ({:.2}/IO)", n as f64 / ios as f64)
        } else {
            String::new()
        }
    };
    if v.is_empty() {
        return "all zero".into();
    }
    v.iter()
        .map(|(k, n)| format!("{k} {n}{}", per(**n)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Key {
    pub fs: String,
    pub workload: String,
    pub engine: String,
    pub qd: usize,
}

/// Everything one guest run printed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GuestOutput {
    pub env: Option<Value>,
    pub filesystems: Vec<Value>,
    pub points: Vec<Point>,
    pub fio: Vec<FioPoint>,
    /// `"kind":"error"` lines and lines that did not parse.
    pub errors: Vec<String>,
    /// The `"kind":"done"` line was seen (the run was not cut short).
    pub done: bool,
}

impl GuestOutput {
    pub fn device_latency_ns(&self) -> Option<u64> {
        self.env.as_ref()?.get("device_latency_ns")?.as_u64()
    }
}

/// Parse the exec output: JSON objects one per line; anything else (stray
/// console text) is ignored.
pub fn parse_output(text: &str) -> GuestOutput {
    let mut o = GuestOutput::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if !line.starts_with('{') {
            continue;
        }
        let v: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                o.errors.push(format!("line {}: not JSON: {e}", i + 1));
                continue;
            }
        };
        let kind = v.get("kind").and_then(Value::as_str).unwrap_or("");
        match kind {
            "env" => o.env = Some(v),
            "fs" => o.filesystems.push(v),
            KIND_POINT => match serde_json::from_value::<Point>(v) {
                Ok(p) => o.points.push(p),
                Err(e) => o.errors.push(format!("line {}: bad point: {e}", i + 1)),
            },
            KIND_FIO => match serde_json::from_value::<FioPoint>(v) {
                Ok(p) => o.fio.push(p),
                Err(e) => o.errors.push(format!("line {}: bad fio line: {e}", i + 1)),
            },
            "error" => o.errors.push(
                v.get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("error")
                    .to_string(),
            ),
            "done" => o.done = true,
            _ => {}
        }
    }
    o
}

/// A point over the repeats: the run with the median IOPS stands for it
/// (so its latencies and CDF belong together), with the IOPS spread.
#[derive(Debug, Clone, Serialize)]
pub struct Agg {
    #[serde(flatten)]
    pub point: Point,
    pub repeats: usize,
    pub iops_min: f64,
    pub iops_max: f64,
    /// The IOPS of this point in each guest run (boot) given to
    /// [`aggregate`], in that order; None where the run lacks the point.
    pub iops_by_run: Vec<Option<f64>>,
}

impl Agg {
    /// (max − min) / median of the IOPS over the repeats.
    pub fn spread(&self) -> f64 {
        if self.point.iops > 0.0 {
            (self.iops_max - self.iops_min) / self.point.iops
        } else {
            0.0
        }
    }
}

/// Lower median (for an even count the lower middle), of the repeats of
/// every point, in first-seen order.
pub fn aggregate(runs: &[GuestOutput]) -> Vec<Agg> {
    let mut order: Vec<Key> = Vec::new();
    let mut groups: std::collections::HashMap<Key, Vec<&Point>> = Default::default();
    for r in runs {
        for p in &r.points {
            let k = p.key();
            if !groups.contains_key(&k) {
                order.push(k.clone());
            }
            groups.entry(k).or_default().push(p);
        }
    }
    order
        .into_iter()
        .filter_map(|k| {
            let iops_by_run = runs
                .iter()
                .map(|r| r.points.iter().find(|p| p.key() == k).map(|p| p.iops))
                .collect();
            let mut v = groups.remove(&k).unwrap_or_default();
            v.sort_by(|a, b| a.iops.total_cmp(&b.iops));
            let med = (*v.get((v.len().max(1) - 1) / 2)?).clone();
            Some(Agg {
                repeats: v.len(),
                iops_min: v.first().map(|p| p.iops).unwrap_or(0.0),
                iops_max: v.last().map(|p| p.iops).unwrap_or(0.0),
                iops_by_run,
                point: med,
            })
        })
        .collect()
}

/// `b / a` of the IOPS over the runs both points have (boot i of one
/// kernel paired with boot i of the other: the bench interleaves them):
/// (lower median, min, max, pairs). Falls back to the ratio of the medians
/// (pairs = 0) when no run has both.
pub fn paired_ratio(a: &Agg, b: &Agg) -> Option<(f64, f64, f64, usize)> {
    let mut r: Vec<f64> = a
        .iops_by_run
        .iter()
        .zip(&b.iops_by_run)
        .filter_map(|(x, y)| match (x, y) {
            (Some(x), Some(y)) if *x > 0.0 && y.is_finite() => Some(y / x),
            _ => None,
        })
        .collect();
    if r.is_empty() {
        let m = (a.point.iops > 0.0).then(|| b.point.iops / a.point.iops)?;
        return Some((m, m, m, 0));
    }
    r.sort_by(f64::total_cmp);
    Some((r[(r.len() - 1) / 2], r[0], r[r.len() - 1], r.len()))
}

/// fio points over repeats: median by IOPS per filesystem.
pub fn aggregate_fio(runs: &[GuestOutput]) -> Vec<FioPoint> {
    let mut fss: Vec<String> = Vec::new();
    for r in runs {
        for f in &r.fio {
            if !fss.contains(&f.fs) {
                fss.push(f.fs.clone());
            }
        }
    }
    fss.iter()
        .filter_map(|fs| {
            let mut v: Vec<&FioPoint> = runs
                .iter()
                .flat_map(|r| r.fio.iter())
                .filter(|f| &f.fs == fs)
                .collect();
            v.sort_by(|a, b| a.iops.total_cmp(&b.iops));
            v.get((v.len().max(1) - 1) / 2).map(|f| (*f).clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const SAMPLE: &str = r#"bufaio: stray console line
{"kind":"env","kernel":"6.12.117","device_latency_ns":1000000,"cpus":2}
{"kind":"fs","fs":"ext2","dev":"nullb0","block_size":4096}
{"kind":"point","fs":"ext2","workload":"rand4k","engine":"aio","qd":32,"bs":4096,"ios":2000,"wall_s":3.5,"iops":571.4,"mib_s":2.2,"submit":{"n":2000,"p50_us":1400.0,"p99_us":3000.0,"max_us":9000.0,"mean_us":1700.0,"total_s":3.4},"lat":null,"submit_share":0.99,"cpu_us_per_io":120.0,"vcsw_per_io":1.4,"ivcsw_per_io":0.0,"ctx_per_io":1.4,"sys_ctx_per_io":3.7,"dev_reads_per_io":1.3,"dev_kib_per_read":4.0,"errors":0,"first_error":null,"submit_cdf_us":[1.0,2.0]}
{"kind":"point","fs":"ext2","workload":"rand4k","engine":"pool","qd":32,"bs":4096,"ios":2000,"wall_s":0.25,"iops":8000.0,"submit":null}
{"kind":"fio","fs":"ext2","iodepth":32,"ios":2000,"iops":600.0,"slat_mean_us":1500.0,"error":null}
{"kind":"point","fs":"ext2","workload":"rand4k","engine":"aio","qd":"bad"}
{"kind":"error","error":"mount failed"}
{not json
{"kind":"done","errors":0}
"#;

    #[test]
    fn parses_guest_lines() {
        let o = parse_output(SAMPLE);
        assert!(o.done);
        assert_eq!(o.device_latency_ns(), Some(1_000_000));
        assert_eq!(o.filesystems.len(), 1);
        assert_eq!(o.points.len(), 2);
        assert_eq!(o.points[0].submit.unwrap().p99_us, 3000.0);
        assert_eq!(o.points[1].submit, None);
        assert_eq!(o.points[1].iops, 8000.0);
        assert_eq!(o.fio.len(), 1);
        assert_eq!(o.fio[0].slat_mean_us, 1500.0);
        assert_eq!(o.errors.len(), 3, "{:?}", o.errors);
        assert!(o.errors.iter().any(|e| e == "mount failed"));
    }

    #[test]
    fn median_over_repeats() {
        let mk = |iops: f64| GuestOutput {
            points: vec![Point {
                fs: "ext3".into(),
                workload: "rand4k".into(),
                engine: "uring".into(),
                qd: 32,
                iops,
                ..Point::default()
            }],
            fio: vec![FioPoint {
                fs: "ext3".into(),
                iops: iops * 2.0,
                ..FioPoint::default()
            }],
            ..GuestOutput::default()
        };
        let runs = [mk(300.0), mk(100.0), mk(200.0)];
        let a = aggregate(&runs);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].point.iops, 200.0);
        assert_eq!(a[0].repeats, 3);
        assert_eq!((a[0].iops_min, a[0].iops_max), (100.0, 300.0));
        assert_eq!(a[0].spread(), 1.0);
        assert_eq!(aggregate_fio(&runs)[0].iops, 400.0);
        assert_eq!(aggregate(&runs[..2])[0].point.iops, 100.0);
        assert_eq!(a[0].iops_by_run, [Some(300.0), Some(100.0), Some(200.0)]);
    }

    fn agg_runs(by_run: &[Option<f64>]) -> Agg {
        let mut v: Vec<f64> = by_run.iter().flatten().copied().collect();
        v.sort_by(f64::total_cmp);
        Agg {
            point: Point {
                iops: v.get((v.len().max(1) - 1) / 2).copied().unwrap_or(0.0),
                ..Point::default()
            },
            repeats: v.len(),
            iops_min: v.first().copied().unwrap_or(0.0),
            iops_max: v.last().copied().unwrap_or(0.0),
            iops_by_run: by_run.to_vec(),
        }
    }

    #[test]
    fn ratio_paired_by_boot() {
        let u = agg_runs(&[Some(100.0), Some(200.0), Some(100.0)]);
        let p = agg_runs(&[Some(95.0), Some(220.0), Some(110.0)]);
        let (m, lo, hi, n) = paired_ratio(&u, &p).unwrap();
        assert_eq!(n, 3);
        assert!(
            (m - 1.10).abs() < 1e-12 && (lo - 0.95).abs() < 1e-12,
            "{m} {lo}"
        );
        assert!((hi - 1.10).abs() < 1e-12, "{hi}");
        // A hung boot: its pair is skipped.
        let p = agg_runs(&[Some(90.0), None, Some(120.0)]);
        let (m, lo, hi, n) = paired_ratio(&u, &p).unwrap();
        assert_eq!(n, 2);
        assert!((m - 0.9).abs() < 1e-12 && lo == m && (hi - 1.2).abs() < 1e-12);
        // No common boot: ratio of the medians.
        let p = agg_runs(&[None, None, None]);
        assert_eq!(paired_ratio(&u, &agg_runs(&[])), paired_ratio(&u, &p));
        let q = Agg {
            iops_by_run: vec![],
            ..agg_runs(&[Some(300.0)])
        };
        assert_eq!(paired_ratio(&u, &q), Some((3.0, 3.0, 3.0, 0)));
        assert_eq!(
            paired_ratio(&agg_runs(&[Some(0.0)]), &agg_runs(&[Some(1.0)])),
            None
        );
    }

    #[test]
    fn counter_deltas_summarised() {
        let line = r#"{"kind":"point","fs":"ext3","workload":"write4k-dsync","engine":"aio","qd":32,"ios":1000,"iops":900.0,"dev_writes_per_io":1.0,"aio_stats":{"worker_exit":3,"write_async":1000,"write_inline":0,"write_punt_sync":500,"read_inline":4}}"#;
        let o = parse_output(line);
        assert!(o.errors.is_empty(), "{:?}", o.errors);
        let p = &o.points[0];
        assert!(p.is_write());
        assert_eq!(p.dev_writes_per_io, 1.0);
        let s = p.aio_stats.as_ref().unwrap();
        assert_eq!(
            stats_summary(s, p.ios),
            "read_inline 4 (0.00/IO), write_async 1000 (1.00/IO), write_punt_sync 500 (0.50/IO), worker_exit 3 (0.00/IO)"
        );
        assert_eq!(stats_summary(&BTreeMap::new(), 5), "all zero");
        let mut odd = BTreeMap::new();
        odd.insert("zz_new_counter".to_string(), 2);
        odd.insert("write_inline".to_string(), 1);
        assert_eq!(stats_summary(&odd, 0), "write_inline 1, zz_new_counter 2");
        // The unpatched kernel: null.
        let o =
            parse_output(r#"{"kind":"point","fs":"ext2","workload":"write4k","aio_stats":null}"#);
        assert_eq!(o.points[0].aio_stats, None);
    }
}
