//! Outcome classification and the exit-code contract.
//!
//! | code | outcome          | meaning                                                        |
//! |------|------------------|----------------------------------------------------------------|
//! | 0    | `Pass`           | every test passed (skips allowed)                              |
//! | 1    | `TestFailed`     | a test failed, or no test ran                                  |
//! | 2    | `KernelCrash`    | the kernel crashed, splatted or hung; the report is incomplete |
//! | 125  | `Untestable`     | the series does not apply, the kernel does not build           |
//! | 128  | `Infrastructure` | missing tool, QEMU failure, disk full, host-side problem       |
//! | 129  | `Usage`          | bad command line or configuration                              |
//!
//! `git bisect run` relies on these: 0 good, 1/2 bad, 125 skip, >=128 abort.
//!
//! Pure: no I/O.

use crate::ktap::Report;
use crate::scan::Splat;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    TestFailed,
    KernelCrash,
    Untestable,
    Infrastructure,
    Usage,
}

impl Outcome {
    /// Process exit code (see the module docs).
    pub fn code(self) -> i32 {
        match self {
            Outcome::Pass => 0,
            Outcome::TestFailed => 1,
            Outcome::KernelCrash => 2,
            Outcome::Untestable => 125,
            Outcome::Infrastructure => 128,
            Outcome::Usage => 129,
        }
    }

    /// The outcome of an exit code (unknown codes: infrastructure).
    pub fn from_code(code: i32) -> Outcome {
        [
            Outcome::Pass,
            Outcome::TestFailed,
            Outcome::KernelCrash,
            Outcome::Untestable,
            Outcome::Usage,
        ]
        .into_iter()
        .find(|o| o.code() == code)
        .unwrap_or(Outcome::Infrastructure)
    }

    /// Short stable name (same as the serialized form).
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::TestFailed => "test_failed",
            Outcome::KernelCrash => "kernel_crash",
            Outcome::Untestable => "untestable",
            Outcome::Infrastructure => "infrastructure",
            Outcome::Usage => "usage",
        }
    }

    fn severity(self) -> u8 {
        match self {
            Outcome::Pass => 0,
            Outcome::TestFailed => 1,
            Outcome::KernelCrash => 2,
            Outcome::Untestable => 3,
            Outcome::Infrastructure => 4,
            Outcome::Usage => 5,
        }
    }

    /// Combine two outcomes (e.g. of two kernels):
    /// Usage > Infrastructure > Untestable > KernelCrash > TestFailed > Pass.
    pub fn worst(a: Outcome, b: Outcome) -> Outcome {
        if b.severity() > a.severity() {
            b
        } else {
            a
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// How the VM run ended, as seen by the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VmEnd {
    /// QEMU exited by itself (guest powered off, panicked with panic=-1...).
    Exited,
    /// No `BUFAIO-READY` within the boot timeout.
    BootTimeout,
    /// No console/KTAP output within the silence timeout.
    SilenceTimeout,
    /// The overall VM time limit was reached.
    OverallTimeout,
    /// QEMU could not be started (or died before the guest said anything).
    QemuFailed(String),
}

/// Maximum number of failed test names listed in a reason.
const MAX_NAMES: usize = 3;

/// Classify one VM run. Rules, first match wins:
///
/// 1. `QemuFailed` → Infrastructure.
/// 2. Any splat not allowed → KernelCrash (reason names the first one).
/// 3. Boot / silence / overall timeout → KernelCrash ("hung: ...").
/// 4. Exec mode (`expect_exec`): no `# bufaio-exec-status` → KernelCrash,
///    else Pass (the caller returns the command's own status).
/// 5. Suite mode: KTAP incomplete (guest died before finishing) → KernelCrash.
/// 6. Any failed test → TestFailed.
/// 7. No test ran → TestFailed ("no test ran": a run that ran nothing must
///    not pass).
/// 8. Pass.
pub fn classify(
    ktap: &Report,
    splats: &[Splat],
    end: &VmEnd,
    expect_exec: bool,
) -> (Outcome, String) {
    if let VmEnd::QemuFailed(why) = end {
        return (Outcome::Infrastructure, format!("QEMU failed: {why}"));
    }
    let failing: Vec<&Splat> = splats.iter().filter(|s| !s.allowed).collect();
    if let Some(first) = failing.first() {
        let more = match failing.len() {
            1 => String::new(),
            n => format!(" (+{} more)", n - 1),
        };
        return (
            Outcome::KernelCrash,
            format!(
                "kernel {} at console line {}: {}{more}",
                first.kind, first.line, first.title
            ),
        );
    }
    let hung = match end {
        VmEnd::BootTimeout => Some("hung: no BUFAIO-READY within the boot timeout"),
        VmEnd::SilenceTimeout => Some("hung: no guest output within the silence timeout"),
        VmEnd::OverallTimeout => Some("hung: the run exceeded the overall timeout"),
        VmEnd::Exited | VmEnd::QemuFailed(_) => None,
    };
    if let Some(hung) = hung {
        let progress = if expect_exec {
            String::new()
        } else {
            format!(" ({} test result(s) reported)", ktap.tests.len())
        };
        return (Outcome::KernelCrash, format!("{hung}{progress}"));
    }
    if expect_exec {
        return match ktap.exec_status {
            Some(st) => (Outcome::Pass, format!("command exited with status {st}")),
            None => (
                Outcome::KernelCrash,
                "guest died before reporting the command's exit status".to_string(),
            ),
        };
    }
    if let Some(why) = ktap.incomplete_reason() {
        return (
            Outcome::KernelCrash,
            format!("guest died before finishing: {why}"),
        );
    }
    let (pass, fail, skip) = ktap.counts();
    if fail > 0 {
        let names: Vec<&str> = ktap
            .failed()
            .take(MAX_NAMES)
            .map(|t| t.name.as_str())
            .collect();
        let more = if fail > MAX_NAMES {
            format!(", +{} more", fail - MAX_NAMES)
        } else {
            String::new()
        };
        let plural = if fail == 1 { "test" } else { "tests" };
        return (
            Outcome::TestFailed,
            format!("{fail} {plural} failed: {}{more}", names.join(", ")),
        );
    }
    if pass + skip == 0 {
        return (Outcome::TestFailed, "no test ran".to_string());
    }
    if pass == 0 {
        return (
            Outcome::TestFailed,
            format!("no test ran: all {skip} test(s) skipped"),
        );
    }
    let skipped = if skip > 0 {
        format!(" ({skip} skipped)")
    } else {
        String::new()
    };
    (Outcome::Pass, format!("{pass} test(s) passed{skipped}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ktap::parse;
    use crate::scan::SplatKind;

    /// All outcomes, from best to worst.
    const ALL: [Outcome; 6] = [
        Outcome::Pass,
        Outcome::TestFailed,
        Outcome::KernelCrash,
        Outcome::Untestable,
        Outcome::Infrastructure,
        Outcome::Usage,
    ];

    const COMPLETE_PASS: &str = "KTAP version 1\n1..2\nok 1 a/x\nok 2 b/y # SKIP nope\n";

    fn splat(kind: SplatKind, line: usize, title: &str, allowed: bool) -> Splat {
        Splat {
            kind,
            line,
            title: title.to_string(),
            excerpt: title.to_string(),
            allowed,
        }
    }

    fn suite(text: &str, splats: &[Splat], end: VmEnd) -> (Outcome, String) {
        classify(&parse(text), splats, &end, false)
    }

    #[test]
    fn codes_are_the_documented_contract() {
        let codes: Vec<(Outcome, i32, &str)> =
            ALL.into_iter().map(|o| (o, o.code(), o.label())).collect();
        assert_eq!(
            codes,
            [
                (Outcome::Pass, 0, "pass"),
                (Outcome::TestFailed, 1, "test_failed"),
                (Outcome::KernelCrash, 2, "kernel_crash"),
                (Outcome::Untestable, 125, "untestable"),
                (Outcome::Infrastructure, 128, "infrastructure"),
                (Outcome::Usage, 129, "usage"),
            ]
        );
        for o in ALL {
            assert_eq!(serde_json::to_value(o).unwrap(), o.label());
            assert_eq!(o.to_string(), o.label());
        }
    }

    #[test]
    fn worst_follows_severity_order() {
        for (i, a) in ALL.into_iter().enumerate() {
            for (j, b) in ALL.into_iter().enumerate() {
                let want = ALL[i.max(j)];
                assert_eq!(Outcome::worst(a, b), want, "{a:?} {b:?}");
            }
        }
        let all = [Outcome::TestFailed, Outcome::Pass, Outcome::KernelCrash];
        assert_eq!(
            all.into_iter().fold(Outcome::Pass, Outcome::worst),
            Outcome::KernelCrash
        );
    }

    #[test]
    fn qemu_failure_is_infrastructure_even_with_splats() {
        let s = [splat(
            SplatKind::Panic,
            3,
            "Kernel panic - not syncing: x",
            false,
        )];
        let (o, r) = suite("", &s, VmEnd::QemuFailed("no such file: qemu".into()));
        assert_eq!(o, Outcome::Infrastructure);
        assert_eq!(r, "QEMU failed: no such file: qemu");
    }

    #[test]
    fn splat_is_a_kernel_crash_even_if_tests_pass() {
        let s = [
            splat(SplatKind::Warning, 7, "WARNING: allowed", true),
            splat(
                SplatKind::Bug,
                9,
                "BUG: kernel NULL pointer dereference",
                false,
            ),
            splat(SplatKind::Oops, 12, "Oops: Oops: 0002 [#1]", false),
        ];
        let (o, r) = suite(COMPLETE_PASS, &s, VmEnd::Exited);
        assert_eq!(o, Outcome::KernelCrash);
        assert_eq!(
            r,
            "kernel bug at console line 9: BUG: kernel NULL pointer dereference (+1 more)"
        );
        // Only allowed splats: they do not count.
        let (o, _) = suite(COMPLETE_PASS, &s[..1], VmEnd::Exited);
        assert_eq!(o, Outcome::Pass);
    }

    #[test]
    fn timeouts_are_hangs() {
        let partial = "KTAP version 1\n1..3\nok 1 a\n";
        for (end, want) in [
            (
                VmEnd::BootTimeout,
                "hung: no BUFAIO-READY within the boot timeout",
            ),
            (
                VmEnd::SilenceTimeout,
                "hung: no guest output within the silence timeout",
            ),
            (
                VmEnd::OverallTimeout,
                "hung: the run exceeded the overall timeout",
            ),
        ] {
            let (o, r) = suite(partial, &[], end.clone());
            assert_eq!(o, Outcome::KernelCrash);
            assert_eq!(r, format!("{want} (1 test result(s) reported)"));
            // Even a complete report does not excuse a hang (e.g. at poweroff).
            let (o, _) = suite(COMPLETE_PASS, &[], end);
            assert_eq!(o, Outcome::KernelCrash);
        }
    }

    #[test]
    fn incomplete_ktap_is_a_crash() {
        let (o, r) = suite(
            "KTAP version 1\n1..3\nok 1 a\nnot ok 2 b\n",
            &[],
            VmEnd::Exited,
        );
        assert_eq!(o, Outcome::KernelCrash);
        assert_eq!(
            r,
            "guest died before finishing: KTAP has 2 of 3 planned results"
        );
        let (o, r) = suite("", &[], VmEnd::Exited);
        assert_eq!(o, Outcome::KernelCrash);
        assert_eq!(r, "guest died before finishing: no KTAP version line");
    }

    #[test]
    fn failed_tests() {
        let (o, r) = suite(
            "KTAP version 1\n1..2\nnot ok 1 read/a\nok 2 b\n",
            &[],
            VmEnd::Exited,
        );
        assert_eq!(o, Outcome::TestFailed);
        assert_eq!(r, "1 test failed: read/a");
        let (o, r) = suite(
            "KTAP version 1\n1..5\nnot ok 1 a\nnot ok 2 b\nnot ok 3 c\nnot ok 4 d\nok 5 e\n",
            &[],
            VmEnd::Exited,
        );
        assert_eq!(o, Outcome::TestFailed);
        assert_eq!(r, "4 tests failed: a, b, c, +1 more");
    }

    #[test]
    fn nothing_ran_does_not_pass() {
        let (o, r) = suite("KTAP version 1\n1..0\n", &[], VmEnd::Exited);
        assert_eq!((o, r.as_str()), (Outcome::TestFailed, "no test ran"));
        let (o, r) = suite(
            "KTAP version 1\n1..1\nok 1 a # SKIP x\n",
            &[],
            VmEnd::Exited,
        );
        assert_eq!(o, Outcome::TestFailed);
        assert!(r.starts_with("no test ran"), "{r}");
    }

    #[test]
    fn pass() {
        let (o, r) = suite(COMPLETE_PASS, &[], VmEnd::Exited);
        assert_eq!(
            (o, r.as_str()),
            (Outcome::Pass, "1 test(s) passed (1 skipped)")
        );
    }

    #[test]
    fn exec_mode() {
        let with = parse("# bufaio-exec-status: 3\n");
        let (o, r) = classify(&with, &[], &VmEnd::Exited, true);
        assert_eq!(
            (o, r.as_str()),
            (Outcome::Pass, "command exited with status 3")
        );
        let without = parse("");
        let (o, _) = classify(&without, &[], &VmEnd::Exited, true);
        assert_eq!(o, Outcome::KernelCrash);
        // Splats and hangs still win over the exec status.
        let s = [splat(SplatKind::Kasan, 1, "BUG: KASAN: x", false)];
        assert_eq!(
            classify(&with, &s, &VmEnd::Exited, true).0,
            Outcome::KernelCrash
        );
        let (o, r) = classify(&with, &[], &VmEnd::OverallTimeout, true);
        assert_eq!(o, Outcome::KernelCrash);
        assert_eq!(r, "hung: the run exceeded the overall timeout");
    }
}
