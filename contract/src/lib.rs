//! The host/guest contract, in one place both sides compile against: the
//! toolkit (`xtask`, on the host) and the guest's PID 1 (`guest-tests`,
//! static, in the VM) talk through the kernel command line one way and the
//! console (plus the KTAP and output ports) the other. Every word of that
//! protocol is defined here; neither side spells one itself.
//!
//! Pure and dependency-free (it is linked into the static guest binary),
//! except [`aiostats::read_at`], which reads the counters file, and the
//! `serde` cargo feature, which adds `bench` (guest-bench and xtask turn it
//! on; guest-tests does not).
//!
//! [`aiostats`]: the series' debugfs counters (names and parser), shared by
//! guest-tests, guest-bench and the host's bench report. `bench`: the
//! benchmark's JSON rows, written by guest-bench and read by the host.

pub mod aiostats;
#[cfg(feature = "serde")]
pub mod bench;

/// PID 1 is up and has read its command line (the boot timeout ends here).
pub const READY: &str = "BUFAIO-READY";
/// PID 1 is done: results are flushed, the VM reboots next.
pub const DONE: &str = "BUFAIO-DONE";

/// Console line prefix of a long workload's progress.
pub const PROGRESS_PREFIX: &str = "bufaio-progress: ";

/// `bufaio-progress: NAME DONE/TARGET ops RATE ops/s`, printed about once
/// a second by a soak workload; the host turns it into a progress bar.
pub fn progress_line(name: &str, done: u64, target: u64, rate: f64) -> String {
    format!("{PROGRESS_PREFIX}{name} {done}/{target} ops {rate:.0} ops/s")
}

/// A progress line anywhere in a console line (after a kernel timestamp,
/// say): (test name, operations done, ops/s).
pub fn parse_progress(line: &str) -> Option<(String, u64, f64)> {
    let rest = &line[line.find(PROGRESS_PREFIX)? + PROGRESS_PREFIX.len()..];
    let mut w = rest.split_whitespace();
    let name = w.next()?.to_string();
    let done = w.next()?.split('/').next()?.parse().ok()?;
    let _ops = w.next()?;
    let rate = w.next()?.parse().ok()?;
    Some((name, done, rate))
}

/// Console line prefix of PID 1's liveness heartbeat (see
/// [`param::HEARTBEAT`]).
pub const HEARTBEAT_PREFIX: &str = "bufaio-heartbeat: ";

/// `bufaio-heartbeat: up UPTIME s`.
pub fn heartbeat_line(uptime: &str) -> String {
    format!("{HEARTBEAT_PREFIX}up {uptime} s")
}

/// A u64 in decimal or `0x` hex (seeds, sizes).
pub fn parse_u64(v: &str) -> Option<u64> {
    let v = v.trim();
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

/// Kernel command-line keys the host sets and PID 1 reads, as
/// `bufaio.<key>=<value>` words.
pub mod param {
    /// `suite`, `exec` or `probe`.
    pub const MODE: &str = "mode";
    /// Globs over test names, comma-separated.
    pub const FILTER: &str = "filter";
    /// Per-test timeout, seconds.
    pub const TEST_TIMEOUT: &str = "test_timeout";
    /// Seconds between heartbeat lines: the host's silence timeout then
    /// measures the guest, not a quiet command.
    pub const HEARTBEAT: &str = "heartbeat";
    /// Test fixtures of the toolkit's own tests (`panic`).
    pub const FIXTURE: &str = "fixture";
    /// Soak sizes: operations, seed, seconds, profiles, overlap, stall.
    pub const SOAK_OPS: &str = "soak_ops";
    pub const SOAK_SEED: &str = "soak_seed";
    pub const SOAK_SECS: &str = "soak_secs";
    pub const SOAK_PROFILE: &str = "soak_profile";
    pub const SOAK_OVERLAP: &str = "soak_overlap";
    pub const SOAK_STALL_SECS: &str = "soak_stall_secs";

    /// The command-line word `bufaio.<key>=<value>`.
    pub fn word(key: &str, value: impl std::fmt::Display) -> String {
        format!("bufaio.{key}={value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trip() {
        let l = progress_line("soak/fsx@ext2", 1200, 100_000, 987.4);
        assert_eq!(
            l,
            "bufaio-progress: soak/fsx@ext2 1200/100000 ops 987 ops/s"
        );
        assert_eq!(
            parse_progress(&format!("[  3.1] x {l}")),
            Some(("soak/fsx@ext2".to_string(), 1200, 987.0))
        );
        assert_eq!(parse_progress("bufaio-progress: soak/fsx@ext2 many"), None);
    }

    #[test]
    fn numbers_and_words() {
        assert_eq!(parse_u64("0x1F"), Some(31));
        assert_eq!(parse_u64("12"), Some(12));
        assert_eq!(parse_u64("zz"), None);
        assert_eq!(
            param::word(param::SOAK_SEED, "0x5eed"),
            "bufaio.soak_seed=0x5eed"
        );
        assert_eq!(heartbeat_line("12.5"), "bufaio-heartbeat: up 12.5 s");
    }
}
