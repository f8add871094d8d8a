//! The series' AIO counters: `/sys/kernel/debug/aio/stats` (debugfs), one
//! `name value` pair per line. Only the patched kernel has the file.
//!
//! Here in the contract, not in `bufaio-aio-sys`: the file is not part of
//! the syscall ABI but text the kernel prints, and its counter names are a
//! vocabulary both sides speak — guest-tests checks them, guest-bench
//! reports their deltas in its JSON rows, and the host (`xtask bench`)
//! orders and prints them. The host has no use for the syscall layer, so
//! the names live where all three already depend. Std only.

use std::collections::BTreeMap;
use std::path::Path;

/// Where debugfs is mounted in the guest.
pub const DEBUGFS: &str = "/sys/kernel/debug";
/// The counters file, relative to [`DEBUGFS`].
pub const STATS_REL: &str = "aio/stats";

/// The counters the series defines (all must be present).
pub const NAMES: [&str; 13] = [
    "read_inline",
    "read_park_folio",
    "read_park_meta",
    "read_blocking",
    "write_inline",
    "write_async",
    "write_park_folio",
    "write_park_meta",
    "write_punt_eagain",
    "write_punt_sync",
    "write_punt_stall",
    "worker_exit",
    "read_reaped",
];

/// One snapshot of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    values: BTreeMap<String, u64>,
}

impl Stats {
    /// The value of counter `name` (None if the file did not list it).
    pub fn get(&self, name: &str) -> Option<u64> {
        self.values.get(name).copied()
    }

    /// Counters of [`NAMES`] missing from this snapshot.
    pub fn missing(&self) -> Vec<&'static str> {
        NAMES
            .iter()
            .copied()
            .filter(|n| !self.values.contains_key(*n))
            .collect()
    }

    /// `self - before` for every counter of `self` (saturating: a counter
    /// that went backwards shows 0 and is listed by [`Stats::decreased`]).
    pub fn delta(&self, before: &Stats) -> Stats {
        Stats {
            values: self
                .values
                .iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(before.get(k).unwrap_or(0))))
                .collect(),
        }
    }

    /// Counters that are lower in `self` than in `before` (counters only grow).
    pub fn decreased(&self, before: &Stats) -> Vec<String> {
        self.values
            .iter()
            .filter(|(k, v)| before.get(k).is_some_and(|b| b > **v))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// `name=value` for every non-zero counter, in name order.
    pub fn nonzero(&self) -> String {
        let v: Vec<String> = self
            .values
            .iter()
            .filter(|(_, v)| **v != 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if v.is_empty() {
            "(all zero)".into()
        } else {
            v.join(" ")
        }
    }
}

/// Parses the stats file: `name value` per line (whitespace-separated,
/// blank lines ignored). Malformed lines and duplicate names are errors.
pub fn parse(text: &str) -> Result<Stats, String> {
    let mut values = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut it = line.split_whitespace();
        let (Some(name), Some(value), None) = (it.next(), it.next(), it.next()) else {
            return Err(format!("line {}: {line:?}: expected `name value`", i + 1));
        };
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("line {}: bad counter name {name:?}", i + 1));
        }
        let v: u64 = value
            .parse()
            .map_err(|e| format!("line {}: {name}: value {value:?}: {e}", i + 1))?;
        if values.insert(name.to_string(), v).is_some() {
            return Err(format!("line {}: counter {name} listed twice", i + 1));
        }
    }
    Ok(Stats { values })
}

/// Reads and parses `<debugfs>/aio/stats`. `Ok(None)` when the file does
/// not exist (a kernel without the counters).
pub fn read_at(debugfs: &Path) -> Result<Option<Stats>, String> {
    let p = debugfs.join(STATS_REL);
    match std::fs::read_to_string(&p) {
        Ok(t) => parse(&t)
            .map(Some)
            .map_err(|e| format!("{}: {e}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("read {}: {e}", p.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "read_inline 10\nread_park_folio 3\nread_park_meta 0\nread_blocking 1\n\
write_inline 7\nwrite_async 2\nwrite_park_folio 2\nwrite_park_meta 0\nwrite_punt_eagain 0\n\
write_punt_sync 1\nwrite_punt_stall 0\nworker_exit 0\nread_reaped 0\n";

    #[test]
    fn parses_all_counters() {
        let s = parse(SAMPLE).unwrap();
        assert_eq!(s.get("read_inline"), Some(10));
        assert_eq!(s.get("write_punt_sync"), Some(1));
        assert_eq!(s.get("nope"), None);
        assert!(s.missing().is_empty(), "{:?}", s.missing());
        assert_eq!(
            s.nonzero(),
            "read_blocking=1 read_inline=10 read_park_folio=3 write_async=2 write_inline=7 write_park_folio=2 write_punt_sync=1"
        );
    }

    #[test]
    fn tolerates_blank_lines_and_padding() {
        let s = parse("\n  write_async   5 \n\n").unwrap();
        assert_eq!(s.get("write_async"), Some(5));
        assert_eq!(s.missing().len(), NAMES.len() - 1);
        assert_eq!(parse("").unwrap().nonzero(), "(all zero)");
    }

    #[test]
    fn rejects_malformed_lines() {
        for bad in [
            "write_async",
            "write_async 1 2",
            "write_async x",
            "write_async -1",
            "write-async 1",
            "write_async 1\nwrite_async 2",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        let e = parse("a 1\nb: 2").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
    }

    #[test]
    fn delta_and_decrease() {
        let a = parse("write_async 2\nwrite_park_folio 5\n").unwrap();
        let b = parse("write_async 5\nwrite_park_folio 4\nworker_exit 1\n").unwrap();
        let d = b.delta(&a);
        assert_eq!(d.get("write_async"), Some(3));
        assert_eq!(d.get("write_park_folio"), Some(0));
        assert_eq!(d.get("worker_exit"), Some(1));
        assert_eq!(b.decreased(&a), ["write_park_folio"]);
    }

    #[test]
    fn absent_file_is_none() {
        let d = std::env::temp_dir().join(format!("aiostats-{}", std::process::id()));
        assert_eq!(read_at(&d), Ok(None));
        std::fs::create_dir_all(d.join("aio")).unwrap();
        std::fs::write(d.join(STATS_REL), SAMPLE).unwrap();
        assert_eq!(read_at(&d).unwrap().unwrap().get("write_async"), Some(2));
        std::fs::write(d.join(STATS_REL), "garbage").unwrap();
        assert!(read_at(&d).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
