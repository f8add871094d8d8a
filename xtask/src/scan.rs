//! Console splat scanner: finds kernel panics, oopses, BUGs, WARNs, sanitizer
//! and lockdep reports, hung tasks, lockups, RCU stalls and kmemleak reports
//! in the guest's serial console log.
//!
//! Matching is done per line, after removing the printk timestamp
//! (`[    1.234567] `, optionally followed by a caller id `[    T1] `), and is
//! anchored at the start of the remaining text, so a test name or a message
//! that merely *contains* "BUG:" does not trigger.
//!
//! Each trigger line yields one [`Splat`], except a trigger line that falls
//! inside the excerpt of an earlier splat of the same kind (e.g. the second
//! `INFO: rcu_preempt self-detected stall` of one stall report). Different
//! kinds are always reported separately: a NULL dereference typically gives a
//! `Bug` ("BUG: kernel NULL pointer dereference"), an `Oops` and, when it kills
//! init, a `Panic`.
//!
//! Pure: no I/O.

use regex::Regex;
use serde::Serialize;

/// Maximum number of console lines in [`Splat::excerpt`].
pub const EXCERPT_LINES: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SplatKind {
    Panic,
    Oops,
    Bug,
    Warning,
    Kasan,
    Ubsan,
    Lockdep,
    HungTask,
    SoftLockup,
    HardLockup,
    RcuStall,
    GeneralProtection,
    Kmemleak,
}

impl SplatKind {
    /// Short stable name (same as the serialized form).
    pub fn label(self) -> &'static str {
        match self {
            SplatKind::Panic => "panic",
            SplatKind::Oops => "oops",
            SplatKind::Bug => "bug",
            SplatKind::Warning => "warning",
            SplatKind::Kasan => "kasan",
            SplatKind::Ubsan => "ubsan",
            SplatKind::Lockdep => "lockdep",
            SplatKind::HungTask => "hung_task",
            SplatKind::SoftLockup => "soft_lockup",
            SplatKind::HardLockup => "hard_lockup",
            SplatKind::RcuStall => "rcu_stall",
            SplatKind::GeneralProtection => "general_protection",
            SplatKind::Kmemleak => "kmemleak",
        }
    }
}

impl std::fmt::Display for SplatKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Splat {
    pub kind: SplatKind,
    /// 1-based console line of the trigger line.
    pub line: usize,
    /// The trigger line, printk timestamp removed.
    pub title: String,
    /// Raw console lines (timestamps kept, `\r` removed, joined by `\n`), at
    /// most [`EXCERPT_LINES`], starting at the trigger line — or at the line
    /// just before it when that is a `------------[ cut here ]------------` or
    /// `=====...` separator — and ending at the first end marker
    /// (`---[ end trace`, `---[ end Kernel panic`, and for KASAN the closing
    /// `=====...` line) if there is one within the limit.
    pub excerpt: String,
    /// The title matches a pattern of the [`Allowlist`].
    pub allowed: bool,
}

/// Regular expressions for splats that are understood and must not fail a run.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    /// (1-based line in the allowlist text, pattern)
    patterns: Vec<(usize, Regex)>,
}

impl Allowlist {
    /// One regex per line (surrounding whitespace trimmed); blank lines and
    /// lines starting with `#` are ignored (write `\#` for a pattern that
    /// starts with `#`). Patterns are unanchored and matched against
    /// [`Splat::title`]. A pattern that does not compile is an error naming
    /// its line number.
    pub fn parse(text: &str) -> anyhow::Result<Allowlist> {
        let mut patterns = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let pat = line.trim();
            if pat.is_empty() || pat.starts_with('#') {
                continue;
            }
            let re = Regex::new(pat).map_err(|e| {
                anyhow::anyhow!(
                    "line {}: invalid regular expression {:?}: {}",
                    i + 1,
                    pat,
                    e
                )
            })?;
            patterns.push((i + 1, re));
        }
        Ok(Allowlist { patterns })
    }

    pub fn empty() -> Self {
        Allowlist::default()
    }

    /// Line number (in the allowlist text) of the first pattern matching
    /// `title`.
    pub fn matching_line(&self, title: &str) -> Option<usize> {
        self.patterns
            .iter()
            .find(|(_, re)| re.is_match(title))
            .map(|(line, _)| *line)
    }

    pub fn is_allowed(&self, title: &str) -> bool {
        self.matching_line(title).is_some()
    }
}

/// `[    1.234567] text` -> `text`; also removes a following caller id
/// (`[    T1] `, CONFIG_PRINTK_CALLER). Lines without a timestamp are returned
/// unchanged.
pub fn strip_timestamp(line: &str) -> &str {
    fn bracket(s: &str, ok: fn(&str) -> bool) -> Option<&str> {
        let close = s.strip_prefix('[')?.find(']')? + 1;
        ok(s[1..close].trim_start()).then(|| &s[close + 1..])
    }
    fn is_time(t: &str) -> bool {
        t.contains('.') && t.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    }
    fn is_caller(t: &str) -> bool {
        (t.starts_with('T') || t.starts_with('C'))
            && t.len() > 1
            && t[1..].bytes().all(|b| b.is_ascii_digit())
    }
    match bracket(line, is_time) {
        Some(rest) => {
            let rest = bracket(rest, is_caller).unwrap_or(rest);
            rest.strip_prefix(' ').unwrap_or(rest)
        }
        None => line,
    }
}

/// Lockdep report titles (after an optional `WARNING: `).
const LOCKDEP_TITLES: &[&str] = &[
    "possible circular locking dependency detected",
    "possible recursive locking detected",
    "inconsistent lock state",
    "suspicious RCU usage",
    "possible irq lock inversion dependency detected",
    "bad unlock balance detected",
    "held lock freed",
    "lock held when returning to user space",
    "Nested lock was not taken",
    "bad contention detected",
];

/// Classify one console line (timestamp already stripped). `None` if the line
/// does not start a splat.
pub fn classify_line(s: &str) -> Option<SplatKind> {
    use SplatKind::*;
    let s = s.trim_end();
    if s.starts_with("Kernel panic - not syncing") {
        return Some(Panic);
    }
    if s.strip_prefix("Oops: ")
        .unwrap_or(s)
        .starts_with("general protection fault")
    {
        return Some(GeneralProtection);
    }
    if s.starts_with("Oops:") || s.starts_with("Oops -") || s.starts_with("Internal error: Oops") {
        return Some(Oops);
    }
    if s.starts_with("BUG: KASAN:") {
        return Some(Kasan);
    }
    let after_watchdog = s.strip_prefix("NMI ").unwrap_or(s);
    let after_watchdog = after_watchdog
        .strip_prefix("watchdog: ")
        .unwrap_or(after_watchdog);
    if after_watchdog.starts_with("BUG: soft lockup") {
        return Some(SoftLockup);
    }
    if after_watchdog.starts_with("Watchdog detected hard LOCKUP") {
        return Some(HardLockup);
    }
    if is_rcu_stall(s) {
        return Some(RcuStall);
    }
    if s.starts_with("INFO: task ") && s.contains(" blocked for more than ") {
        return Some(HungTask);
    }
    let after_warning = s.strip_prefix("WARNING: ").unwrap_or(s);
    if LOCKDEP_TITLES.iter().any(|t| after_warning.starts_with(t))
        || (s.starts_with("WARNING: ") && s.contains("lock order detected"))
    {
        return Some(Lockdep);
    }
    if s.starts_with("UBSAN:") {
        return Some(Ubsan);
    }
    if is_kmemleak(s) {
        return Some(Kmemleak);
    }
    if s.starts_with("BUG:") || s.starts_with("kernel BUG at ") {
        return Some(Bug);
    }
    if s.starts_with("WARNING:") {
        return Some(Warning);
    }
    None
}

/// `rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:`,
/// `rcu: INFO: rcu_sched self-detected stall on CPU`, with or without the
/// `rcu: ` / `INFO: ` prefixes.
fn is_rcu_stall(s: &str) -> bool {
    let s = s.strip_prefix("rcu: ").unwrap_or(s);
    let s = s.strip_prefix("INFO: ").unwrap_or(s);
    let Some(flavor) = s.strip_prefix("rcu_") else {
        return false;
    };
    let rest = flavor.trim_start_matches(|c: char| c.is_ascii_alphanumeric() || c == '_');
    rest.starts_with(" detected stall") || rest.starts_with(" self-detected stall")
}

/// `kmemleak: 3 new suspected memory leaks (see /sys/kernel/debug/kmemleak)`
/// or an `unreferenced object 0x...` block (kmemleak.verbose=1).
fn is_kmemleak(s: &str) -> bool {
    let (prefixed, rest) = match s.strip_prefix("kmemleak: ") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    if rest.starts_with("unreferenced object 0x") {
        return true;
    }
    if !prefixed {
        return false;
    }
    let after_count = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    after_count.len() < rest.len() && after_count.starts_with(" new suspected memory leak")
}

fn is_separator(stripped: &str) -> bool {
    let s = stripped.trim();
    s.len() >= 10 && s.bytes().all(|b| b == b'=')
}

fn is_cut_here(stripped: &str) -> bool {
    stripped.trim() == "------------[ cut here ]------------"
}

fn is_end_marker(kind: SplatKind, stripped: &str) -> bool {
    stripped.contains("---[ end trace")
        || stripped.contains("---[ end Kernel panic")
        || (kind == SplatKind::Kasan && is_separator(stripped))
}

/// Find all splats in a console log, in order of appearance.
pub fn scan(console: &str, allow: &Allowlist) -> Vec<Splat> {
    let raw: Vec<&str> = console.lines().map(|l| l.trim_end_matches('\r')).collect();
    let stripped: Vec<&str> = raw.iter().map(|l| strip_timestamp(l)).collect();

    let mut splats = Vec::new();
    // (kind, first excerpt index, last excerpt index), 0-based inclusive.
    let mut covered: Vec<(SplatKind, usize, usize)> = Vec::new();
    for (i, s) in stripped.iter().enumerate() {
        let Some(kind) = classify_line(s) else {
            continue;
        };
        if covered
            .iter()
            .any(|&(k, start, end)| k == kind && (start..=end).contains(&i))
        {
            continue;
        }
        let start = match i.checked_sub(1) {
            Some(p) if is_separator(stripped[p]) || is_cut_here(stripped[p]) => p,
            _ => i,
        };
        let limit = (start + EXCERPT_LINES).min(raw.len());
        let end = (i + 1..limit)
            .find(|&j| is_end_marker(kind, stripped[j]))
            .unwrap_or(limit - 1);
        covered.push((kind, start, end));
        let title = s.trim_end().to_string();
        splats.push(Splat {
            kind,
            line: i + 1,
            allowed: allow.is_allowed(&title),
            title,
            excerpt: raw[start..=end].join("\n"),
        });
    }
    splats
}

/// The first splat that is not allowed: the one that fails the run.
pub fn first_failing(splats: &[Splat]) -> Option<&Splat> {
    splats.iter().find(|s| !s.allowed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use SplatKind::*;

    fn golden(name: &str) -> &'static str {
        match name {
            "clean" => include_str!("../tests/golden/console/clean.log"),
            "panic" => include_str!("../tests/golden/console/panic.log"),
            "kasan" => include_str!("../tests/golden/console/kasan.log"),
            "lockdep" => include_str!("../tests/golden/console/lockdep.log"),
            "hung_task" => include_str!("../tests/golden/console/hung_task.log"),
            "warn" => include_str!("../tests/golden/console/warn.log"),
            "rcu_stall" => include_str!("../tests/golden/console/rcu_stall.log"),
            "kmemleak" => include_str!("../tests/golden/console/kmemleak.log"),
            _ => unreachable!(),
        }
    }

    fn summary(name: &str) -> Vec<(SplatKind, usize, String)> {
        scan(golden(name), &Allowlist::empty())
            .into_iter()
            .map(|s| (s.kind, s.line, s.title))
            .collect()
    }

    fn line_of(log: &str, needle: &str) -> usize {
        log.lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
            .unwrap_or_else(|| panic!("{needle:?} not in log"))
    }

    fn s(kind: SplatKind, line: usize, title: &str) -> (SplatKind, usize, String) {
        (kind, line, title.to_string())
    }

    #[test]
    fn clean_boot_has_no_splats() {
        assert_eq!(summary("clean"), vec![]);
    }

    #[test]
    fn panic_log() {
        let log = golden("panic");
        let bug = "BUG: kernel NULL pointer dereference, address: 0000000000000008";
        let oops = "Oops: Oops: 0002 [#1] PREEMPT SMP NOPTI";
        let panic = "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009";
        assert_eq!(
            summary("panic"),
            vec![
                s(Bug, line_of(log, bug), bug),
                s(Oops, line_of(log, oops), oops),
                s(Panic, line_of(log, panic), panic),
            ]
        );
        let splats = scan(log, &Allowlist::empty());
        // The oops excerpt stops at its end-of-trace marker.
        assert!(splats[1]
            .excerpt
            .ends_with("---[ end trace 0000000000000000 ]---"));
        assert!(splats[2].excerpt.ends_with(
            "---[ end Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009 ]---"
        ));
        assert_eq!(splats[2].excerpt.lines().count(), 3);
        assert!(splats[0].excerpt.lines().count() <= EXCERPT_LINES);
        assert_eq!(first_failing(&splats).map(|s| s.kind), Some(Bug));
    }

    #[test]
    fn kasan_log() {
        let log = golden("kasan");
        let title = "BUG: KASAN: slab-use-after-free in aio_complete_rw+0x5d/0x3a0";
        assert_eq!(summary("kasan"), vec![s(Kasan, line_of(log, title), title)]);
        let sp = &scan(log, &Allowlist::empty())[0];
        // Excerpt starts at the opening separator, capped at EXCERPT_LINES.
        assert!(sp
            .excerpt
            .lines()
            .next()
            .is_some_and(|l| l.ends_with("=========")));
        assert_eq!(sp.excerpt.lines().count(), EXCERPT_LINES);
    }

    #[test]
    fn lockdep_log_is_not_a_plain_warning() {
        let log = golden("lockdep");
        let title = "WARNING: possible circular locking dependency detected";
        assert_eq!(
            summary("lockdep"),
            vec![s(Lockdep, line_of(log, title), title)]
        );
    }

    #[test]
    fn hung_task_log() {
        let log = golden("hung_task");
        let title = "INFO: task bufaio-tests:85 blocked for more than 122 seconds.";
        assert_eq!(
            summary("hung_task"),
            vec![s(HungTask, line_of(log, title), title)]
        );
    }

    #[test]
    fn warn_log() {
        let log = golden("warn");
        let title = "WARNING: CPU: 1 PID: 97 at fs/aio.c:1157 aio_complete+0x2c4/0x330";
        assert_eq!(
            summary("warn"),
            vec![s(Warning, line_of(log, title), title)]
        );
        let sp = &scan(log, &Allowlist::empty())[0];
        let first = sp.excerpt.lines().next().unwrap_or_default();
        assert!(
            first.ends_with("------------[ cut here ]------------"),
            "{first}"
        );
        assert!(sp.excerpt.ends_with("---[ end trace 0000000000000000 ]---"));
        assert!(sp.excerpt.lines().all(|l| !l.contains("KTAP")));
    }

    #[test]
    fn rcu_stall_log() {
        let log = golden("rcu_stall");
        let stall = "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:";
        let lockup = "watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [bufaio-tests:85]";
        // The self-detected stall printed inside the first report is folded in.
        assert!(log.contains("rcu: INFO: rcu_preempt self-detected stall on CPU"));
        assert_eq!(
            summary("rcu_stall"),
            vec![
                s(RcuStall, line_of(log, stall), stall),
                s(SoftLockup, line_of(log, lockup), lockup),
            ]
        );
    }

    #[test]
    fn kmemleak_log() {
        let log = golden("kmemleak");
        let title = "kmemleak: unreferenced object 0xffff888103a4c000 (size 512):";
        // The second object and the summary line fall inside the first excerpt.
        assert_eq!(
            summary("kmemleak"),
            vec![s(Kmemleak, line_of(log, title), title)]
        );
    }

    #[test]
    fn classify_individual_lines() {
        let cases: &[(&str, Option<SplatKind>)] = &[
            ("Kernel panic - not syncing: Fatal exception", Some(Panic)),
            ("Oops: 0000 [#1] SMP", Some(Oops)),
            ("Oops - BUG: 0 [#1]", Some(Oops)),
            ("Oops: general protection fault, probably for non-canonical address 0xdffffc0000000001: 0000 [#1] PREEMPT SMP KASAN NOPTI", Some(GeneralProtection)),
            ("general protection fault: 0000 [#1] SMP", Some(GeneralProtection)),
            ("BUG: KASAN: slab-out-of-bounds in foo+0x1/0x2", Some(Kasan)),
            ("BUG: soft lockup - CPU#0 stuck for 22s! [a:1]", Some(SoftLockup)),
            ("watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [a:1]", Some(SoftLockup)),
            ("NMI watchdog: Watchdog detected hard LOCKUP on cpu 1", Some(HardLockup)),
            ("watchdog: Watchdog detected hard LOCKUP on cpu 1", Some(HardLockup)),
            ("rcu: INFO: rcu_sched detected stalls on CPUs/tasks:", Some(RcuStall)),
            ("rcu: INFO: rcu_preempt self-detected stall on CPU", Some(RcuStall)),
            ("INFO: rcu_sched self-detected stall on CPU", Some(RcuStall)),
            ("rcu_sched self-detected stall on CPU", Some(RcuStall)),
            ("INFO: task kworker/0:1:12 blocked for more than 120 seconds.", Some(HungTask)),
            ("WARNING: possible circular locking dependency detected", Some(Lockdep)),
            ("WARNING: inconsistent lock state", Some(Lockdep)),
            ("WARNING: possible recursive locking detected", Some(Lockdep)),
            ("WARNING: suspicious RCU usage", Some(Lockdep)),
            ("WARNING: bad unlock balance detected!", Some(Lockdep)),
            ("WARNING: HARDIRQ-safe -> HARDIRQ-unsafe lock order detected", Some(Lockdep)),
            ("UBSAN: array-index-out-of-bounds in fs/aio.c:1211:24", Some(Ubsan)),
            ("kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)", Some(Kmemleak)),
            ("unreferenced object 0xffff888100c3d000 (size 64):", Some(Kmemleak)),
            ("BUG: sleeping function called from invalid context at mm/slub.c:4105", Some(Bug)),
            ("BUG: workqueue lockup - pool cpus=0 node=0 flags=0x0 nice=0 stuck for 33s!", Some(Bug)),
            ("BUG: scheduling while atomic: bufaio-tests/85/0x00000002", Some(Bug)),
            ("kernel BUG at fs/aio.c:553!", Some(Bug)),
            ("WARNING: CPU: 0 PID: 1 at fs/aio.c:123 foo+0x1/0x2", Some(Warning)),
            // Near misses.
            ("kmemleak: Kernel memory leak detector initialized (mem pool available: 15791)", None),
            ("kmemleak: Automatic memory scanning thread started", None),
            ("rcu: Preemptible hierarchical RCU implementation.", None),
            ("NMI watchdog: Perf NMI watchdog permanently disabled", None),
            ("KTAP: not ok 3 BUG: in name", None),
            ("---[ end Kernel panic - not syncing: Fatal exception ]---", None),
            ("x86/bugs: foo", None),
            ("rcu_tasks: whatever", None),
            ("kmemleak: new suspected memory leaks", None),
        ];
        for (line, want) in cases {
            assert_eq!(classify_line(line), *want, "{line}");
        }
    }

    #[test]
    fn timestamps_and_crlf() {
        let log = "[    0.000000] Linux version 6.12.117\r\n[   12.5][    T85] WARNING: CPU: 0 PID: 85 at x.c:1 f+0x1/0x2\r\n[ 12.6] ---[ end trace 0000000000000000 ]---\r\n";
        let sp = scan(log, &Allowlist::empty());
        assert_eq!(sp.len(), 1);
        assert_eq!(sp[0].line, 2);
        assert_eq!(sp[0].title, "WARNING: CPU: 0 PID: 85 at x.c:1 f+0x1/0x2");
        assert_eq!(sp[0].excerpt.lines().count(), 2);
        assert!(!sp[0].excerpt.contains('\r'));
        assert_eq!(strip_timestamp("[    1.234567] x"), "x");
        assert_eq!(strip_timestamp("[    1.234567][    T1] x"), "x");
        assert_eq!(strip_timestamp("[ x] y"), "[ x] y");
        assert_eq!(strip_timestamp("[1.0]"), "");
        assert_eq!(strip_timestamp("["), "[");
        assert_eq!(strip_timestamp(""), "");
    }

    #[test]
    fn same_kind_inside_excerpt_is_folded_other_kinds_are_not() {
        let mut log = String::new();
        log.push_str("WARNING: CPU: 0 PID: 1 at a.c:1 f\n");
        log.push_str("WARNING: CPU: 0 PID: 1 at a.c:2 g\n"); // folded
        log.push_str("BUG: scheduling while atomic\n"); // separate kind
        log.push_str("---[ end trace 0000000000000000 ]---\n");
        log.push_str("WARNING: CPU: 0 PID: 1 at a.c:3 h\n"); // after the end marker
        let sp = scan(&log, &Allowlist::empty());
        let got: Vec<_> = sp.iter().map(|s| (s.kind, s.line)).collect();
        assert_eq!(got, [(Warning, 1), (Bug, 3), (Warning, 5)]);
    }

    #[test]
    fn allowlist() {
        let allow = Allowlist::parse(
            "# comment\n\n   \n  WARNING: CPU: \\d+ PID: \\d+ at fs/aio\\.c:1157  \n\\#literal\n",
        )
        .unwrap();
        let splats = scan(golden("panic"), &allow);
        assert!(splats.iter().all(|s| !s.allowed));
        let splats = scan(golden("warn"), &allow);
        assert_eq!(splats.len(), 1);
        assert!(splats[0].allowed);
        assert_eq!(allow.matching_line(&splats[0].title), Some(4));
        assert!(first_failing(&splats).is_none());
        assert!(allow.is_allowed("#literal"));

        let err = Allowlist::parse("# ok\nfine\nbad(regex\n").unwrap_err();
        assert!(err.to_string().starts_with("line 3: "), "{err}");
        assert!(!Allowlist::parse("").unwrap().is_allowed("x"));
        assert!(!Allowlist::empty().is_allowed("anything"));
    }

    #[test]
    fn serializes_kind_snake_case() {
        let v = serde_json::to_value(HungTask).unwrap();
        assert_eq!(v, "hung_task");
        assert_eq!(GeneralProtection.to_string(), "general_protection");
    }
}
