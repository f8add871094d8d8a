//! The benchmark's JSON rows (guest-bench/README.md, "Output"): guest-bench
//! serializes these structs, `cargo xtask bench` deserializes the same
//! ones, so a field renamed on one side is a compile error on the other,
//! not a silently defaulted column. Behind the `serde` cargo feature
//! (guest-tests builds the contract without it).
//!
//! A row on the wire is `{"kind": KIND, ...fields}`: [`Line`] adds the
//! `kind` when serializing; the reader dispatches on it and deserializes
//! the rest (an unknown field is ignored, a missing one defaults).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `kind` of a [`Point`] row.
pub const KIND_POINT: &str = "point";
/// `kind` of a [`FioPoint`] row.
pub const KIND_FIO: &str = "fio";

/// p50/p99/max/mean of a latency sample, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Summary {
    pub n: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    /// Sum of all samples: time spent in this call over the whole point.
    pub total_s: f64,
}

/// One measured point (a `"kind":"point"` line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Point {
    pub fs: String,
    pub workload: String,
    pub engine: String,
    pub qd: usize,
    pub bs: usize,
    pub ios: usize,
    pub wall_s: f64,
    pub iops: f64,
    pub mib_s: f64,
    /// Time inside the submitting call (io_submit, io_uring_enter, pread;
    /// null for the thread pool).
    pub submit: Option<Summary>,
    /// Submit → completion seen by the program.
    pub lat: Option<Summary>,
    /// Share of the wall time the submitter spent inside submit calls.
    pub submit_share: Option<f64>,
    pub cpu_us_per_io: f64,
    pub vcsw_per_io: f64,
    pub ivcsw_per_io: f64,
    /// Process context switches (voluntary + involuntary, all threads) per IO.
    pub ctx_per_io: f64,
    /// /proc/stat ctxt delta per IO (includes kernel workers).
    pub sys_ctx_per_io: f64,
    pub dev_reads_per_io: f64,
    pub dev_kib_per_read: f64,
    pub dev_writes_per_io: f64,
    pub dev_kib_per_write: f64,
    /// Deltas of the series' debugfs counters (`/sys/kernel/debug/aio/stats`,
    /// see [`crate::aiostats`]) over the point: which path the requests
    /// took. None when the kernel has no such file (unpatched).
    pub aio_stats: Option<BTreeMap<String, u64>>,
    pub errors: u64,
    pub first_error: Option<String>,
    /// 101 quantiles (p0…p100) of the submit latency, µs (for the CDF plot).
    pub submit_cdf_us: Vec<f64>,
}

/// fio's figures for the same file (a `"kind":"fio"` line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct FioPoint {
    pub fs: String,
    pub iodepth: usize,
    pub ios: u64,
    pub iops: f64,
    pub slat_mean_us: f64,
    pub slat_max_us: f64,
    pub clat_p50_us: f64,
    pub clat_p99_us: f64,
    /// fio's own `ctx` (context switches of the job).
    pub ctx: u64,
    pub ctx_per_io: f64,
    pub cpu_us_per_io: f64,
    pub sys_ctx_per_io: f64,
    pub dev_reads_per_io: f64,
    pub error: Option<String>,
    pub command: String,
}

/// A row as printed: `kind` first, then the row's own fields.
#[derive(Debug, Serialize)]
pub struct Line<'a, T> {
    pub kind: &'static str,
    #[serde(flatten)]
    pub row: &'a T,
}

impl<'a> Line<'a, Point> {
    pub fn point(row: &'a Point) -> Self {
        Line {
            kind: KIND_POINT,
            row,
        }
    }
}

impl<'a> Line<'a, FioPoint> {
    pub fn fio(row: &'a FioPoint) -> Self {
        Line {
            kind: KIND_FIO,
            row,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_kind_then_the_row_and_reads_back() {
        let p = Point {
            fs: "ext2".into(),
            qd: 32,
            submit: Some(Summary {
                n: 2,
                p99_us: 1.5,
                ..Summary::default()
            }),
            aio_stats: Some([("write_inline".to_string(), 3)].into_iter().collect()),
            ..Point::default()
        };
        let line = serde_json::to_string(&Line::point(&p)).unwrap();
        assert!(
            line.starts_with(r#"{"kind":"point","fs":"ext2","workload":"""#),
            "{line}"
        );
        assert_eq!(serde_json::from_str::<Point>(&line).unwrap(), p);
        let f = FioPoint {
            iodepth: 32,
            error: Some("e".into()),
            ..FioPoint::default()
        };
        let line = serde_json::to_string(&Line::fio(&f)).unwrap();
        assert!(
            line.starts_with(r#"{"kind":"fio","fs":"","iodepth":32,"#),
            "{line}"
        );
        assert_eq!(serde_json::from_str::<FioPoint>(&line).unwrap(), f);
        // Older or newer rows: missing fields default, unknown ones are ignored.
        let old: Point = serde_json::from_str(r#"{"kind":"point","iops":2.5,"new":1}"#).unwrap();
        assert_eq!(old.iops, 2.5);
        assert_eq!(old.submit, None);
    }
}
