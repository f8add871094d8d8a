//! KTAP (version 1, flat) parser for the guest suite's report.
//!
//! The guest writes:
//!
//! ```text
//! KTAP version 1
//! # kernel: 6.12.117            <- header: `# key: value` before the plan/first result
//! 1..3                          <- plan
//! # some diagnostic             <- diagnostics belong to the *next* result line
//! # time_ms: 30                 <- duration of the next result
//! not ok 2 read/roundtrip@ext2
//! ok 3 write/foo@ext3 # SKIP no O_DIRECT
//! # bufaio-exec-status: 0       <- exec mode only, may appear anywhere
//! ```
//!
//! Parsing never fails: anything unexpected is recorded in [`Report::errors`]
//! and [`Report::complete`] tells whether the guest finished its report.
//!
//! A final line without a terminating `\n` is treated as a partial write (the
//! guest died mid-line): it is not interpreted, only noted in `errors`. This
//! errs on the side of "incomplete" rather than accepting a truncated
//! `ok 3 basic/setu` as a passing test.
//!
//! Pure: no I/O.

use serde::Serialize;

/// Prefix of KTAP lines mirrored on the serial console (fallback channel).
pub const CONSOLE_PREFIX: &str = "KTAP: ";
/// Diagnostic key carrying a test's duration; applies to the next result.
pub const TIME_KEY: &str = "time_ms";
/// Diagnostic key carrying the exit status of the command in exec mode.
pub const EXEC_STATUS_KEY: &str = "bufaio-exec-status";

/// Outcome of one test line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

/// One `ok`/`not ok` line plus the diagnostics that preceded it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestResult {
    pub number: usize,
    /// Description after the number (a leading TAP-style `- ` is removed).
    pub name: String,
    pub status: Status,
    /// Reason text after a `# SKIP` / `# TODO` / `# XFAIL` / `# TIMEOUT` /
    /// `# ERROR` directive keyword (keyword itself removed, may be empty).
    /// `None` when the line has no directive.
    pub directive: Option<String>,
    /// The `# ` lines between the previous result (or the plan) and this one,
    /// without the `# ` prefix, excluding `time_ms` and exec-status lines.
    pub diagnostics: Vec<String>,
    /// From the `# time_ms: N` line preceding the result.
    pub duration_ms: Option<u64>,
    /// A diagnostic starts with `TIMEOUT`, or the directive is `TIMEOUT`.
    pub timed_out: bool,
    /// The directive is `TODO`: a known, tracked gap; its failure is reported
    /// but does not fail the run (TAP semantics).
    pub todo: bool,
}

/// Everything parsed from one KTAP stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// N from `KTAP version N` (or `TAP version N`).
    pub version: Option<u32>,
    /// `# key: value` lines seen before the plan and before any result.
    pub header: Vec<(String, String)>,
    pub plan: Option<usize>,
    pub tests: Vec<TestResult>,
    /// From `# bufaio-exec-status: <code>` (last one wins).
    pub exec_status: Option<i32>,
    /// Malformed lines, numbering gaps, duplicate numbers, truncated final
    /// line... Each entry starts with `line N: `.
    pub errors: Vec<String>,
}

impl Report {
    /// The guest finished its report: version line seen, plan seen, exactly
    /// `plan` results numbered 1..=plan in order.
    #[allow(dead_code)] // public API; in-crate callers use `incomplete_reason`
    pub fn complete(&self) -> bool {
        self.incomplete_reason().is_none()
    }

    /// Why [`Report::complete`] is false, as a short human sentence; `None`
    /// when complete.
    pub fn incomplete_reason(&self) -> Option<String> {
        if self.version.is_none() {
            return Some("no KTAP version line".to_string());
        }
        let Some(plan) = self.plan else {
            return Some(format!(
                "no KTAP plan line ({} results seen)",
                self.tests.len()
            ));
        };
        if let Some((i, t)) = self
            .tests
            .iter()
            .enumerate()
            .find(|(i, t)| t.number != i + 1)
        {
            return Some(format!(
                "KTAP result #{} is numbered {} (expected {})",
                i + 1,
                t.number,
                i + 1
            ));
        }
        if self.tests.len() != plan {
            return Some(format!(
                "KTAP has {} of {} planned results",
                self.tests.len(),
                plan
            ));
        }
        None
    }

    /// Value of the first header line with this key.
    pub fn header_value(&self, key: &str) -> Option<&str> {
        self.header
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// (pass, fail, skip)
    pub fn counts(&self) -> (usize, usize, usize) {
        self.tests
            .iter()
            .fold((0, 0, 0), |(p, f, s), t| match t.status {
                Status::Pass => (p + 1, f, s),
                Status::Fail => (p, f + 1, s),
                Status::Skip => (p, f, s + 1),
            })
    }

    /// Results with [`Status::Fail`], in order.
    pub fn failed(&self) -> impl Iterator<Item = &TestResult> {
        self.tests.iter().filter(|t| t.status == Status::Fail)
    }

    /// Sum of the known durations.
    pub fn total_duration_ms(&self) -> u64 {
        self.tests.iter().filter_map(|t| t.duration_ms).sum()
    }
}

/// Collect the lines of `console` that carry the [`CONSOLE_PREFIX`] (optionally
/// after a printk timestamp, for output written through `/dev/kmsg`), prefix
/// removed, one per line. `\r` line endings are removed. If the console's last
/// line is a partial KTAP line (no `\n`), the output also ends without `\n`,
/// so [`parse`] treats it as partial.
pub fn extract_from_console(console: &str) -> String {
    let mut out = String::new();
    let mut rest = console;
    while !rest.is_empty() {
        let (line, terminated, next) = match rest.find('\n') {
            Some(i) => (&rest[..i], true, &rest[i + 1..]),
            None => (rest, false, ""),
        };
        rest = next;
        let line = line.trim_end_matches('\r');
        let line = crate::scan::strip_timestamp(line);
        let payload = line
            .strip_prefix(CONSOLE_PREFIX)
            .or_else(|| (line == CONSOLE_PREFIX.trim_end()).then_some(""));
        if let Some(payload) = payload {
            out.push_str(payload);
            if terminated {
                out.push('\n');
            }
        }
    }
    out
}

/// Parse a KTAP stream (already extracted from the console if needed).
pub fn parse(text: &str) -> Report {
    let mut p = Parser::default();
    let mut lines = text.split('\n').peekable();
    let mut lineno = 0;
    while let Some(raw) = lines.next() {
        lineno += 1;
        let is_last = lines.peek().is_none();
        if is_last {
            // `text` ends with '\n' => the last split piece is empty.
            if !raw.is_empty() {
                p.report.errors.push(format!(
                    "line {lineno}: truncated final line ignored: {raw:?}"
                ));
            }
            break;
        }
        p.line(lineno, raw.trim_end_matches(['\r', ' ', '\t']));
    }
    p.report
}

#[derive(Default)]
struct Parser {
    report: Report,
    pending_diag: Vec<String>,
    pending_time: Option<u64>,
}

impl Parser {
    fn err(&mut self, lineno: usize, msg: String) {
        self.report.errors.push(format!("line {lineno}: {msg}"));
    }

    fn line(&mut self, lineno: usize, line: &str) {
        if line.is_empty() {
            return;
        }
        if let Some(v) = line
            .strip_prefix("KTAP version ")
            .or_else(|| line.strip_prefix("TAP version "))
        {
            match v.trim().parse::<u32>() {
                Ok(v) if self.report.version.is_none() => self.report.version = Some(v),
                Ok(_) => self.err(lineno, format!("duplicate version line: {line:?}")),
                Err(_) => self.err(lineno, format!("bad version line: {line:?}")),
            }
        } else if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.strip_prefix(' ').unwrap_or(comment);
            self.comment(lineno, comment);
        } else if let Some(n) = line.strip_prefix("1..") {
            match n.trim().parse::<usize>() {
                Ok(n) if self.report.plan.is_none() => self.report.plan = Some(n),
                Ok(_) => self.err(lineno, format!("duplicate plan line: {line:?}")),
                Err(_) => self.err(lineno, format!("bad plan line: {line:?}")),
            }
        } else if let Some(rest) = line.strip_prefix("not ok ") {
            self.result(lineno, false, rest, line);
        } else if let Some(rest) = line.strip_prefix("ok ") {
            self.result(lineno, true, rest, line);
        } else if let Some(reason) = line.strip_prefix("Bail out!") {
            self.err(lineno, format!("bail out:{reason}"));
        } else {
            self.err(lineno, format!("unrecognized line: {line:?}"));
        }
    }

    fn comment(&mut self, lineno: usize, comment: &str) {
        let kv = comment
            .split_once(": ")
            .or_else(|| comment.strip_suffix(':').map(|k| (k, "")))
            .filter(|(k, _)| !k.is_empty() && !k.contains(char::is_whitespace));
        match kv {
            Some((TIME_KEY, v)) => match v.trim().parse::<u64>() {
                Ok(ms) => self.pending_time = Some(ms),
                Err(_) => self.err(lineno, format!("bad {TIME_KEY} value: {v:?}")),
            },
            Some((EXEC_STATUS_KEY, v)) => match v.trim().parse::<i32>() {
                Ok(code) => {
                    if self.report.exec_status.is_some() {
                        self.err(lineno, format!("duplicate {EXEC_STATUS_KEY} line"));
                    }
                    self.report.exec_status = Some(code);
                }
                Err(_) => self.err(lineno, format!("bad {EXEC_STATUS_KEY} value: {v:?}")),
            },
            Some((k, v)) if self.report.plan.is_none() && self.report.tests.is_empty() => {
                self.report
                    .header
                    .push((k.to_string(), v.trim().to_string()));
            }
            _ => self.pending_diag.push(comment.to_string()),
        }
    }

    fn result(&mut self, lineno: usize, ok: bool, rest: &str, line: &str) {
        let (num, desc) = rest.split_once(' ').unwrap_or((rest, ""));
        let Ok(number) = num.parse::<usize>() else {
            self.err(lineno, format!("malformed result line: {line:?}"));
            return;
        };
        let desc = desc.strip_prefix("- ").unwrap_or(desc);
        let (name, directive) = split_directive(desc);

        let expected = self.report.tests.last().map_or(1, |t| t.number + 1);
        if number != expected {
            if self.report.tests.iter().any(|t| t.number == number) {
                self.err(lineno, format!("duplicate test number {number}"));
            } else {
                self.err(
                    lineno,
                    format!("numbering gap: expected test {expected}, got {number}"),
                );
            }
        }
        if let Some(plan) = self.report.plan {
            if number > plan {
                self.err(lineno, format!("test {number} beyond plan 1..{plan}"));
            }
        }

        let status = match directive {
            Some((Directive::Skip, _)) => Status::Skip,
            Some((Directive::Timeout | Directive::Error, _)) => Status::Fail,
            _ if ok => Status::Pass,
            _ => Status::Fail,
        };
        let diagnostics = std::mem::take(&mut self.pending_diag);
        let timed_out = matches!(directive, Some((Directive::Timeout, _)))
            || diagnostics.iter().any(|d| d.starts_with("TIMEOUT"));
        let todo = matches!(directive, Some((Directive::Todo, _)));
        self.report.tests.push(TestResult {
            number,
            name: name.to_string(),
            status,
            directive: directive.map(|(_, text)| text.to_string()),
            diagnostics,
            duration_ms: self.pending_time.take(),
            timed_out,
            todo,
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Directive {
    Skip,
    Todo,
    Xfail,
    Timeout,
    Error,
}

/// `name # SKIP reason` -> (`name`, Some((Skip, `reason`))). A `#` not
/// followed by a known directive keyword is part of the name.
fn split_directive(desc: &str) -> (&str, Option<(Directive, &str)>) {
    let mut search_from = 0;
    while let Some(i) = desc[search_from..].find('#').map(|i| i + search_from) {
        let after = desc[i + 1..].trim_start();
        let (word, text) = after.split_once(char::is_whitespace).unwrap_or((after, ""));
        let kind = match word.to_ascii_uppercase().as_str() {
            "SKIP" => Some(Directive::Skip),
            "TODO" => Some(Directive::Todo),
            "XFAIL" => Some(Directive::Xfail),
            "TIMEOUT" => Some(Directive::Timeout),
            "ERROR" => Some(Directive::Error),
            _ => None,
        };
        if let Some(kind) = kind {
            return (desc[..i].trim_end(), Some((kind, text.trim())));
        }
        search_from = i + 1;
    }
    (desc, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASS: &str = include_str!("../tests/golden/ktap/pass.ktap");
    const FAILURES: &str = include_str!("../tests/golden/ktap/failures.ktap");
    const TRUNCATED: &str = include_str!("../tests/golden/ktap/truncated.ktap");
    const CONSOLE: &str = include_str!("../tests/golden/ktap/console.log");

    #[test]
    fn complete_passing_log() {
        let r = parse(PASS);
        assert_eq!(r.errors, Vec::<String>::new());
        assert_eq!(r.version, Some(1));
        assert_eq!(r.plan, Some(4));
        assert!(r.complete(), "{:?}", r.incomplete_reason());
        assert_eq!(r.counts(), (4, 0, 0));
        assert_eq!(r.header_value("kernel"), Some("6.12.117"));
        assert_eq!(r.header_value("filesystems"), Some("ext2 ext3"));
        assert_eq!(r.header_value("nope"), None);
        assert_eq!(r.exec_status, None);
        let names: Vec<_> = r.tests.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "basic/setup_destroy",
                "basic/submit_nop",
                "read/roundtrip_aligned@ext2",
                "read/roundtrip_aligned@ext3"
            ]
        );
        assert_eq!(r.tests[0].duration_ms, Some(12));
        assert_eq!(r.total_duration_ms(), 12 + 3 + 41 + 38);
        assert!(r
            .tests
            .iter()
            .all(|t| !t.timed_out && t.directive.is_none()));
    }

    #[test]
    fn failures_skip_timeout() {
        let r = parse(FAILURES);
        assert_eq!(r.errors, Vec::<String>::new());
        assert!(r.complete());
        assert_eq!(r.counts(), (1, 2, 1));
        let t = &r.tests;
        assert_eq!(
            t[0],
            TestResult {
                number: 1,
                name: "basic/setup_destroy".into(),
                status: Status::Pass,
                directive: None,
                diagnostics: vec![],
                duration_ms: Some(12),
                timed_out: false,
                todo: false,
            }
        );
        assert_eq!(t[1].status, Status::Fail);
        assert_eq!(t[1].name, "read/roundtrip_aligned@ext2");
        assert_eq!(
            t[1].diagnostics,
            [
                "read/roundtrip_aligned@ext2: offset 4096: expected 0xa5, got 0x00",
                "  at guest-tests/src/read.rs:88"
            ]
        );
        assert_eq!(t[1].duration_ms, Some(30));
        assert!(!t[1].timed_out);
        assert_eq!(t[2].name, "x");
        assert!(t[2].timed_out);
        assert_eq!(t[2].duration_ms, Some(120000));
        assert_eq!(t[2].diagnostics, ["TIMEOUT after 120 s"]);
        assert_eq!(t[3].status, Status::Skip);
        assert_eq!(t[3].name, "write/foo@ext3");
        assert_eq!(t[3].directive.as_deref(), Some("no O_DIRECT"));
        assert_eq!(t[3].duration_ms, Some(0));
        let failed: Vec<_> = r.failed().map(|t| t.number).collect();
        assert_eq!(failed, [2, 3]);
    }

    #[test]
    fn truncated_log_is_incomplete() {
        let r = parse(TRUNCATED);
        assert!(!r.complete());
        assert_eq!(r.plan, Some(5));
        // The partial `ok 3 read/roundtr` line is not taken as a result.
        assert_eq!(r.tests.len(), 2);
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        assert!(
            r.errors[0].contains("truncated final line"),
            "{:?}",
            r.errors
        );
        assert_eq!(
            r.incomplete_reason().as_deref(),
            Some("KTAP has 2 of 5 planned results")
        );
    }

    #[test]
    fn console_prefixed_log() {
        let extracted = extract_from_console(CONSOLE);
        assert!(extracted.starts_with("KTAP version 1\n"));
        assert!(!extracted.contains('\r'));
        let r = parse(&extracted);
        assert_eq!(r.errors, Vec::<String>::new());
        assert!(r.complete(), "{:?}", r.incomplete_reason());
        assert_eq!(r.counts(), (2, 1, 0));
        assert_eq!(r.header_value("kernel"), Some("6.12.117"));
        assert_eq!(r.tests[1].diagnostics, ["EIO from io_getevents"]);
        // Kernel noise between KTAP lines must not leak in.
        assert!(!extracted.contains("virtio_blk"));
    }

    #[test]
    fn console_extraction_details() {
        let c =
            "[    1.0] KTAP: KTAP version 1\r\nKTAP: 1..1\nnoise KTAP: ok 9\nKTAP:\nKTAP: ok 1 a";
        assert_eq!(extract_from_console(c), "KTAP version 1\n1..1\n\nok 1 a");
        let r = parse(&extract_from_console(c));
        assert!(!r.complete());
        assert!(r.tests.is_empty());
    }

    #[test]
    fn exec_status() {
        let r = parse("KTAP version 1\n1..0\n# bufaio-exec-status: 3\n");
        assert_eq!(r.exec_status, Some(3));
        assert!(r.complete());
        let r = parse("KTAP version 1\n# bufaio-exec-status: -1\n");
        assert_eq!(r.exec_status, Some(-1));
        assert!(r.header.is_empty());
        let r = parse("# bufaio-exec-status: x\n");
        assert_eq!(r.exec_status, None);
        assert_eq!(r.errors.len(), 1);
    }

    #[test]
    fn numbering_errors() {
        let r = parse("KTAP version 1\n1..3\nok 1 a\nok 3 c\nok 3 c\n");
        assert!(!r.complete());
        assert_eq!(r.tests.len(), 3);
        assert_eq!(
            r.errors,
            [
                "line 4: numbering gap: expected test 2, got 3",
                "line 5: duplicate test number 3"
            ]
        );
        let r = parse("KTAP version 1\n1..1\nok 1 a\nok 2 b\n");
        assert!(!r.complete());
        assert_eq!(r.errors, ["line 4: test 2 beyond plan 1..1"]);
    }

    #[test]
    fn missing_version_or_plan() {
        let r = parse("1..1\nok 1 a\n");
        assert!(!r.complete());
        assert_eq!(
            r.incomplete_reason().as_deref(),
            Some("no KTAP version line")
        );
        let r = parse("KTAP version 1\nok 1 a\n");
        assert!(!r.complete());
        // Trailing plan (TAP style) is accepted.
        let r = parse("KTAP version 1\nok 1 a\n1..1\n");
        assert!(r.complete());
    }

    #[test]
    fn malformed_lines_are_errors_not_panics() {
        let r = parse("KTAP version x\nKTAP version 1\nKTAP version 1\n1..z\nok\nnot ok x y\ngarbage\nBail out! oops\n1..0\n");
        assert_eq!(r.version, Some(1));
        assert_eq!(r.plan, Some(0));
        assert_eq!(r.errors.len(), 7, "{:#?}", r.errors);
        assert!(r.complete());
        // Empty input.
        let r = parse("");
        assert_eq!(r, Report::default());
        assert!(!r.complete());
    }

    #[test]
    fn directives() {
        let r = parse(concat!(
            "KTAP version 1\n1..6\n",
            "ok 1 - dash/name\n",
            "not ok 2 a # TODO not yet\n",
            "ok 3 b # skip\n",
            "not ok 4 c # TIMEOUT\n",
            "ok 5 hash#in#name\n",
            "ok 6 d # SKIP: reason with # hash\n",
        ));
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        let t = &r.tests;
        assert_eq!(t[0].name, "dash/name");
        assert_eq!(
            (t[1].status.clone(), t[1].directive.as_deref()),
            (Status::Fail, Some("not yet"))
        );
        assert!(t[1].todo && !t[2].todo);
        assert_eq!(
            (t[2].status.clone(), t[2].directive.as_deref()),
            (Status::Skip, Some(""))
        );
        assert_eq!(t[2].name, "b");
        assert!(t[3].timed_out);
        assert_eq!(t[3].status, Status::Fail);
        assert_eq!(
            (t[4].name.as_str(), t[4].directive.as_ref()),
            ("hash#in#name", None)
        );
        // `SKIP:` is not the SKIP keyword; the whole tail stays in the name.
        assert_eq!(t[5].status, Status::Pass);
    }

    #[test]
    fn diagnostics_attach_to_next_result_and_header_stops_at_plan() {
        let r = parse("KTAP version 1\n# a: 1\n# free text\n1..2\n# b: 2\nok 1 x\n#\nnot ok 2 y\n# trailing\n");
        assert_eq!(r.header, [("a".to_string(), "1".to_string())]);
        assert_eq!(r.tests[0].diagnostics, ["free text", "b: 2"]);
        assert_eq!(r.tests[1].diagnostics, [""]);
    }

    #[test]
    fn serializes_status_lowercase() {
        let r = parse(FAILURES);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["tests"][0]["status"], "pass");
        assert_eq!(v["tests"][1]["status"], "fail");
        assert_eq!(v["tests"][3]["status"], "skip");
        assert_eq!(v["header"][0][0], "kernel");
    }
}
