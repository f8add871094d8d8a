//! Soak results (pure): the per-workload rows of a run, read from the
//! judged test rows the guest's `soak/*` tests produced; the table; the
//! aggregation of several runs or shards (`soak.json` files) into one.

use crate::pipeline::{KernelResult, TestRow, Verdict};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One soak test instance on one kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoakRow {
    /// `unpatched`, `patched`, … (joined with `+` for a shared build).
    pub kernel: String,
    /// `soak/fsx@ext2`.
    pub test: String,
    /// `soak/fsx`.
    pub workload: String,
    pub fs: String,
    /// `pass`, `fail`, `skip`.
    pub verdict: String,
    /// Operations done (up to the failure, for a failed one).
    pub ops: u64,
    pub ops_per_s: Option<f64>,
    /// The instance's seed (`0x…`).
    pub seed: Option<String>,
    pub elapsed_ms: Option<u64>,
    /// The first lines of the failure report.
    pub failure: Option<String>,
    /// How to re-run exactly this instance.
    pub replay: Option<String>,
}

/// `soak.json`: what a soak run did, enough to replay and to aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoakReport {
    pub bufaio_soak: u32,
    pub run_id: String,
    /// The run's base seed; every instance's seed derives from it and the
    /// instance's name.
    pub base_seed: String,
    /// `I/N`, when the run was one shard of a matrix.
    pub shard: Option<String>,
    pub ops: Option<u64>,
    pub duration_s: Option<u64>,
    pub profiles: Vec<String>,
    pub overlap: bool,
    pub kernel_selection: String,
    pub flavor: String,
    pub series: String,
    pub filters: Vec<String>,
    pub rows: Vec<SoakRow>,
}

/// `key=value` pairs of the guest's `soak: …` diagnostic lines.
fn kv(diag: &str, prefix: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for line in diag.lines() {
        let Some(rest) = line.trim().strip_prefix(prefix) else {
            continue;
        };
        for w in rest.split_whitespace() {
            if let Some((k, v)) = w.split_once('=') {
                m.insert(k.to_string(), v.to_string());
            }
        }
    }
    m
}

/// "failed in op N of M" in an fsx failure report.
fn failed_at(diag: &str) -> Option<u64> {
    let i = diag.find("failed in op ")? + "failed in op ".len();
    diag[i..].split_whitespace().next()?.parse().ok()
}

/// The soak row of one judged test row (None for non-soak tests).
pub fn row_of(kernel: &str, t: &TestRow) -> Option<SoakRow> {
    if !t.name.starts_with("soak/") {
        return None;
    }
    let (workload, fs) = t.name.split_once('@').unwrap_or((&t.name, "-"));
    let header = kv(&t.diagnostic, "soak: test=");
    let done = kv(&t.diagnostic, "soak: seed=");
    let verdict = match t.verdict {
        Verdict::Pass | Verdict::XFail => "pass",
        Verdict::Todo => "todo",
        Verdict::Fail | Verdict::XPass => "fail",
        Verdict::Skip => "skip",
    };
    let seed = done
        .get("seed")
        .cloned()
        .or_else(|| header.get("seed").cloned());
    let ops = match done.get("ops").and_then(|v| v.parse().ok()) {
        Some(n) => n,
        None => failed_at(&t.diagnostic)
            .map(|n| n.saturating_sub(1))
            .unwrap_or(0),
    };
    let failure = (verdict == "fail" || verdict == "todo").then(|| {
        t.diagnostic
            .lines()
            .filter(|l| !l.starts_with("soak: ") && !l.starts_with("step: "))
            .take(12)
            .collect::<Vec<_>>()
            .join("\n")
    });
    let replay = t
        .diagnostic
        .lines()
        .find_map(|l| l.strip_prefix("replay: "))
        .map(str::to_string);
    Some(SoakRow {
        kernel: kernel.to_string(),
        test: t.name.clone(),
        workload: workload.to_string(),
        fs: fs.to_string(),
        verdict: verdict.to_string(),
        ops,
        ops_per_s: done.get("ops_per_s").and_then(|v| v.parse().ok()),
        seed,
        elapsed_ms: done
            .get("elapsed_ms")
            .and_then(|v| v.parse().ok())
            .or(t.duration_ms),
        failure,
        replay,
    })
}

/// The soak rows of a run, kernel by kernel.
pub fn rows(results: &[KernelResult]) -> Vec<SoakRow> {
    let mut out = Vec::new();
    for r in results {
        let k: Vec<&str> = r.variants.iter().map(|v| v.name()).collect();
        let k = k.join("+");
        out.extend(r.tests.iter().filter_map(|t| row_of(&k, t)));
    }
    out
}

/// The per-workload table (Markdown).
pub fn table(rows: &[SoakRow]) -> String {
    let mut s = String::from(
        "| workload | fs | kernel | result | ops | ops/s | seed |\n|---|---|---|---|---:|---:|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.workload,
            r.fs,
            r.kernel,
            r.verdict,
            r.ops,
            r.ops_per_s
                .map(|x| format!("{x:.0}"))
                .unwrap_or_else(|| "-".into()),
            r.seed.as_deref().unwrap_or("-")
        );
    }
    s
}

/// One line of an aggregate: a workload on a filesystem and a kernel over
/// every run or shard given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggRow {
    pub workload: String,
    pub fs: String,
    pub kernel: String,
    pub instances: u64,
    pub ops: u64,
    pub failures: u64,
    /// Operations per second of one instance, averaged over instances that
    /// reported it.
    pub ops_per_s: Option<f64>,
    /// `run_id seed` of every failed instance (to replay).
    pub failing: Vec<String>,
}

/// Sums reports (the shards of a matrix, or repeated runs).
pub fn aggregate(reports: &[SoakReport]) -> Vec<AggRow> {
    let mut m: BTreeMap<(String, String, String), (AggRow, f64, u64)> = BTreeMap::new();
    for rep in reports {
        for r in &rep.rows {
            if r.verdict == "skip" {
                continue;
            }
            let key = (r.workload.clone(), r.fs.clone(), r.kernel.clone());
            let e = m.entry(key).or_insert_with(|| {
                (
                    AggRow {
                        workload: r.workload.clone(),
                        fs: r.fs.clone(),
                        kernel: r.kernel.clone(),
                        instances: 0,
                        ops: 0,
                        failures: 0,
                        ops_per_s: None,
                        failing: Vec::new(),
                    },
                    0.0,
                    0,
                )
            });
            e.0.instances += 1;
            e.0.ops += r.ops;
            if r.verdict == "fail" {
                e.0.failures += 1;
                e.0.failing.push(format!(
                    "{} {}",
                    rep.run_id,
                    r.seed.as_deref().unwrap_or("?")
                ));
            }
            if let Some(x) = r.ops_per_s {
                e.1 += x;
                e.2 += 1;
            }
        }
    }
    m.into_values()
        .map(|(mut a, sum, n)| {
            a.ops_per_s = (n > 0).then(|| sum / n as f64);
            a
        })
        .collect()
}

pub fn aggregate_table(rows: &[AggRow]) -> String {
    let mut s = String::from(
        "| workload | fs | kernel | instances | ops | failures | ops/s per instance |\n|---|---|---|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.workload,
            r.fs,
            r.kernel,
            r.instances,
            r.ops,
            r.failures,
            r.ops_per_s
                .map(|x| format!("{x:.0}"))
                .unwrap_or_else(|| "-".into())
        );
    }
    s
}

/// `--shard I/N` → (I, N), 0 ≤ I < N.
pub fn parse_shard(s: &str) -> Result<(u64, u64), String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("--shard {s:?}: expected I/N (e.g. 0/8)"))?;
    let (i, n): (u64, u64) = match (i.trim().parse(), n.trim().parse()) {
        (Ok(i), Ok(n)) => (i, n),
        _ => return Err(format!("--shard {s:?}: I and N must be numbers")),
    };
    if n == 0 || i >= n {
        return Err(format!("--shard {s:?}: need 0 <= I < N"));
    }
    Ok((i, n))
}

/// A seed in decimal or `0x` hex.
pub fn parse_seed(s: &str) -> Result<u64, String> {
    bufaio_contract::parse_u64(s)
        .ok_or_else(|| format!("--seed {s:?}: expected a number (decimal or 0x-hex)"))
}

/// The base seed of shard `i`: distinct per shard, fixed by the run's seed.
pub fn shard_seed(seed: u64, shard: u64) -> u64 {
    if shard == 0 {
        return seed;
    }
    let mut z = seed ^ shard.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ktap::Status;

    const PASS_DIAG: &str = "soak: test=soak/fsx@ext2 base_seed=0xb0fa10 seed=0x608b2a41dd3fa11f ops_target=3000 profiles=-\nsoak: seed=0x608b2a41dd3fa11f ops=3000 ops_per_s=1266 aio_batches=1405 aio_requests=6699 read_mib=26.7 written_mib=38.8 final_size=429466 elapsed_ms=2369 kinds=aio_batch:1405 unsupported=-";
    const FAIL_DIAG: &str = include_str!("../tests/golden/soak/fail-diagnostic.txt");

    fn row(name: &str, verdict: Verdict, diag: &str) -> TestRow {
        TestRow {
            name: name.into(),
            status: if verdict == Verdict::Fail {
                Status::Fail
            } else {
                Status::Pass
            },
            verdict,
            duration_ms: Some(2500),
            diagnostic: diag.into(),
        }
    }

    #[test]
    fn rows_from_pass_and_fail() {
        let p = row_of("patched", &row("soak/fsx@ext2", Verdict::Pass, PASS_DIAG)).unwrap();
        assert_eq!(p.verdict, "pass");
        assert_eq!(p.ops, 3000);
        assert_eq!(p.ops_per_s, Some(1266.0));
        assert_eq!(p.seed.as_deref(), Some("0x608b2a41dd3fa11f"));
        assert_eq!(p.elapsed_ms, Some(2369));
        assert!(p.failure.is_none());
        let f = row_of(
            "patched",
            &row("soak/fsx_slow@ext3", Verdict::Fail, FAIL_DIAG),
        )
        .unwrap();
        assert_eq!(
            (f.workload.as_str(), f.fs.as_str()),
            ("soak/fsx_slow", "ext3")
        );
        assert_eq!(f.ops, 39);
        assert_eq!(f.seed.as_deref(), Some("0xf75c1091ad25fe61"));
        assert!(f.failure.as_deref().unwrap().contains("data mismatch"));
        assert!(f
            .replay
            .as_deref()
            .unwrap()
            .starts_with("cargo xtask soak --seed 0xb0fa10"));
        assert!(row_of("patched", &row("read/x@ext2", Verdict::Pass, "")).is_none());
    }

    #[test]
    fn table_and_aggregate_match_golden() {
        let rows = vec![
            row_of("unpatched", &row("soak/fsx@ext2", Verdict::Pass, PASS_DIAG)).unwrap(),
            row_of("patched", &row("soak/fsx@ext2", Verdict::Pass, PASS_DIAG)).unwrap(),
            row_of(
                "patched",
                &row("soak/fsx_slow@ext3", Verdict::Fail, FAIL_DIAG),
            )
            .unwrap(),
        ];
        let t = table(&rows);
        crate::golden::check("soak/table.md", &t);
        let rep = |id: &str| SoakReport {
            bufaio_soak: 1,
            run_id: id.into(),
            base_seed: "0xb0fa10".into(),
            shard: Some("0/2".into()),
            ops: Some(3000),
            duration_s: None,
            profiles: vec![],
            overlap: true,
            kernel_selection: "both".into(),
            flavor: "default".into(),
            series: "patches/6.12/series".into(),
            filters: vec!["soak/*".into()],
            rows: rows.clone(),
        };
        let agg = aggregate(&[rep("r1"), rep("r2")]);
        assert_eq!(agg.len(), 3);
        let slow = agg.iter().find(|a| a.workload == "soak/fsx_slow").unwrap();
        assert_eq!((slow.instances, slow.ops, slow.failures), (2, 78, 2));
        assert_eq!(
            slow.failing,
            vec!["r1 0xf75c1091ad25fe61", "r2 0xf75c1091ad25fe61"]
        );
        crate::golden::check("soak/aggregate.md", &aggregate_table(&agg));
        // a report survives its JSON round trip
        let j = serde_json::to_string(&rep("r1")).unwrap();
        assert_eq!(serde_json::from_str::<SoakReport>(&j).unwrap(), rep("r1"));
    }

    #[test]
    fn shard_and_seed_parsing() {
        assert_eq!(parse_shard("3/8"), Ok((3, 8)));
        assert!(parse_shard("8/8").unwrap_err().contains("0 <= I < N"));
        assert!(parse_shard("x").unwrap_err().contains("I/N"));
        assert_eq!(parse_seed("0x1f"), Ok(31));
        assert_eq!(parse_seed("31"), Ok(31));
        assert!(parse_seed("zz").unwrap_err().contains("--seed"));
        assert_eq!(shard_seed(5, 0), 5);
        assert_ne!(shard_seed(5, 1), shard_seed(5, 2));
    }
}
