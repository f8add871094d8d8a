//! One measured point as a JSON line (the format the host's
//! `cargo xtask bench` reads; documented in guest-bench/README.md). The row
//! struct is the contract's ([`bufaio_contract::bench::Point`]), the one
//! the host deserializes.

use crate::engines::Raw;
use crate::stats;
use bufaio_contract::aiostats::{self, Stats};
pub use bufaio_contract::bench::Point;
use std::collections::BTreeMap;

pub struct Meta<'a> {
    pub fs: &'a str,
    pub workload: &'a str,
    pub engine: &'a str,
    pub qd: usize,
    pub bs: usize,
}

/// `after - before` of every counter the series defines, as a JSON map;
/// None unless both snapshots have the file.
pub fn stats_delta(before: Option<&Stats>, after: Option<&Stats>) -> Option<BTreeMap<String, u64>> {
    let d = after?.delta(before?);
    Some(
        aiostats::NAMES
            .iter()
            .filter_map(|n| d.get(n).map(|v| (n.to_string(), v)))
            .collect(),
    )
}

pub fn build(m: &Meta, mut raw: Raw) -> Point {
    let ios = raw.lat_ns.len().max(1);
    let per = |v: f64| v / ios as f64;
    let d = |a: u64, b: u64| b.saturating_sub(a) as f64;
    let (wall, cpu, vcs, ivcs, sys_ctx) = match (&raw.start, &raw.end) {
        (Some(a), Some(b)) => (
            b.t.duration_since(a.t).as_secs_f64(),
            d(a.usage.cpu_ns, b.usage.cpu_ns),
            d(a.usage.nvcsw, b.usage.nvcsw),
            d(a.usage.nivcsw, b.usage.nivcsw),
            d(a.ctxt, b.ctxt),
        ),
        _ => (0.0, 0.0, 0.0, 0.0, 0.0),
    };
    let (dreads, dsect, dwrites, dwsect) = match (&raw.start, &raw.end) {
        (Some(a), Some(b)) => (
            d(a.dev.reads, b.dev.reads),
            d(a.dev.sectors, b.dev.sectors),
            d(a.dev.writes, b.dev.writes),
            d(a.dev.wsectors, b.dev.wsectors),
        ),
        _ => (0.0, 0.0, 0.0, 0.0),
    };
    let aio_stats = stats_delta(
        raw.start.as_ref().and_then(|s| s.aio.as_ref()),
        raw.end.as_ref().and_then(|s| s.aio.as_ref()),
    );
    let kib_per = |sect: f64, n: f64| if n > 0.0 { sect / 2.0 / n } else { 0.0 };
    // JSON has no NaN: a zero-length point reports rates of 0.
    let rate = |x: f64| if wall > 0.0 { x / wall } else { 0.0 };
    let submit = stats::summarize(&mut raw.submit_ns);
    let lat = stats::summarize(&mut raw.lat_ns);
    Point {
        fs: m.fs.into(),
        workload: m.workload.into(),
        engine: m.engine.into(),
        qd: m.qd,
        bs: m.bs,
        ios: raw.lat_ns.len(),
        wall_s: wall,
        iops: rate(raw.lat_ns.len() as f64),
        mib_s: rate(raw.bytes as f64 / (1 << 20) as f64),
        submit_share: submit.map(|s| rate(s.total_s)),
        submit,
        lat,
        cpu_us_per_io: per(cpu / 1000.0),
        vcsw_per_io: per(vcs),
        ivcsw_per_io: per(ivcs),
        ctx_per_io: per(vcs + ivcs),
        sys_ctx_per_io: per(sys_ctx),
        dev_reads_per_io: per(dreads),
        dev_kib_per_read: kib_per(dsect, dreads),
        dev_writes_per_io: per(dwrites),
        dev_kib_per_write: kib_per(dwsect, dwrites),
        aio_stats,
        errors: raw.errors,
        first_error: raw.first_error,
        submit_cdf_us: stats::quantiles(&raw.submit_ns, 100),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::Snap;
    use crate::sys::{DevStat, Usage};
    use std::time::{Duration, Instant};

    const RAND4K_AIO: Meta = Meta {
        fs: "ext2",
        workload: "rand4k",
        engine: "aio",
        qd: 32,
        bs: 4096,
    };

    #[test]
    fn per_io_figures() {
        let t = Instant::now();
        let a = Snap {
            t,
            usage: Usage {
                cpu_ns: 1_000_000,
                nvcsw: 10,
                nivcsw: 1,
            },
            ctxt: 1000,
            dev: DevStat {
                reads: 5,
                sectors: 40,
                writes: 1,
                wsectors: 8,
            },
            aio: Some(aiostats::parse("write_inline 3\nwrite_park_folio 1\n").unwrap()),
        };
        let b = Snap {
            t: t + Duration::from_secs(2),
            usage: Usage {
                cpu_ns: 5_000_000,
                nvcsw: 30,
                nivcsw: 11,
            },
            ctxt: 1400,
            dev: DevStat {
                reads: 205,
                sectors: 40 + 200 * 8,
                writes: 101,
                wsectors: 8 + 100 * 8,
            },
            aio: Some(
                aiostats::parse("write_inline 103\nwrite_park_folio 101\nworker_exit 2\n").unwrap(),
            ),
        };
        let raw = Raw {
            submit_ns: vec![1_000_000; 200],
            lat_ns: vec![2_000_000; 200],
            bytes: 200 * 4096,
            start: Some(a),
            end: Some(b),
            ..Raw::default()
        };
        let p = build(&RAND4K_AIO, raw);
        assert_eq!(p.ios, 200);
        assert_eq!(p.iops, 100.0);
        assert_eq!(p.cpu_us_per_io, 20.0);
        assert_eq!(p.ctx_per_io, 0.15);
        assert_eq!(p.sys_ctx_per_io, 2.0);
        assert_eq!(p.dev_reads_per_io, 1.0);
        assert_eq!(p.dev_kib_per_read, 4.0);
        assert_eq!(p.dev_writes_per_io, 0.5);
        assert_eq!(p.dev_kib_per_write, 4.0);
        let st = p.aio_stats.as_ref().unwrap();
        assert_eq!(st.get("write_inline"), Some(&100));
        assert_eq!(st.get("write_park_folio"), Some(&100));
        assert_eq!(st.get("worker_exit"), Some(&2));
        assert_eq!(st.get("read_inline"), None, "not in either snapshot");
        assert_eq!(p.submit.unwrap().p99_us, 1000.0);
        assert!((p.submit_share.unwrap() - 0.1).abs() < 1e-12);
        assert_eq!(p.submit_cdf_us.len(), 101);
        let line = serde_json::to_string(&bufaio_contract::bench::Line::point(&p)).unwrap();
        assert!(line.starts_with("{\"kind\":\"point\""), "{line}");
        assert!(
            line.contains(
                "\"aio_stats\":{\"worker_exit\":2,\"write_inline\":100,\"write_park_folio\":100}"
            ),
            "{line}"
        );
    }

    #[test]
    fn stats_only_when_both_snapshots_have_them() {
        let a = aiostats::parse("write_async 1\n").unwrap();
        let b = aiostats::parse("write_async 4\n").unwrap();
        assert_eq!(stats_delta(None, Some(&b)), None);
        assert_eq!(stats_delta(Some(&a), None), None);
        let d = stats_delta(Some(&a), Some(&b)).unwrap();
        assert_eq!(
            d.into_iter().collect::<Vec<_>>(),
            [("write_async".to_string(), 3)]
        );
    }

    #[test]
    fn the_printed_line_is_unchanged() {
        // The exact line guest-bench printed before the row structs moved
        // into bufaio-contract (its own `Point` with a `kind` field).
        let raw = Raw {
            submit_ns: vec![1_000_000, 2_000_000, 3_500],
            lat_ns: vec![2_000_000; 3],
            bytes: 3 * 4096,
            ..Raw::default()
        };
        let mut p = build(&RAND4K_AIO, raw);
        p.aio_stats = Some([("write_inline".to_string(), 3u64)].into_iter().collect());
        p.first_error = Some("x".into());
        p.submit_cdf_us.truncate(3);
        let line = serde_json::to_string(&bufaio_contract::bench::Line::point(&p)).unwrap();
        assert_eq!(
            line,
            r#"{"kind":"point","fs":"ext2","workload":"rand4k","engine":"aio","qd":32,"bs":4096,"ios":3,"wall_s":0.0,"iops":0.0,"mib_s":0.0,"submit":{"n":3,"p50_us":1000.0,"p99_us":2000.0,"max_us":2000.0,"mean_us":1001.1666666666666,"total_s":0.0030035},"lat":{"n":3,"p50_us":2000.0,"p99_us":2000.0,"max_us":2000.0,"mean_us":2000.0,"total_s":0.006},"submit_share":0.0,"cpu_us_per_io":0.0,"vcsw_per_io":0.0,"ivcsw_per_io":0.0,"ctx_per_io":0.0,"sys_ctx_per_io":0.0,"dev_reads_per_io":0.0,"dev_kib_per_read":0.0,"dev_writes_per_io":0.0,"dev_kib_per_write":0.0,"aio_stats":{"write_inline":3},"errors":0,"first_error":"x","submit_cdf_us":[3.5,3.5,3.5]}"#
        );
        let f = crate::fio::FioPoint {
            fs: "ext3".into(),
            iodepth: 32,
            ios: 7,
            iops: 1.5,
            error: Some("e".into()),
            command: "cmd".into(),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&bufaio_contract::bench::Line::fio(&f)).unwrap(),
            r#"{"kind":"fio","fs":"ext3","iodepth":32,"ios":7,"iops":1.5,"slat_mean_us":0.0,"slat_max_us":0.0,"clat_p50_us":0.0,"clat_p99_us":0.0,"ctx":0,"ctx_per_io":0.0,"cpu_us_per_io":0.0,"sys_ctx_per_io":0.0,"dev_reads_per_io":0.0,"error":"e","command":"cmd"}"#
        );
    }
}
