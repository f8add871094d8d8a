//! JUnit XML rendering of a KTAP report, for CI test viewers.
//!
//! Test `area/rest` becomes `<testcase classname="bufaio.area" name="rest">`
//! (a name without `/` gets `classname="bufaio"`). KTAP header lines become
//! `<property>`s. When the kernel went wrong, an extra failing testcase
//! `classname="bufaio" name="kernel"` is added (see [`render`]).
//!
//! Output is deterministic (no timestamps, no host name). Pure: no I/O.

use crate::ktap::{Report, Status, TestResult};
use std::fmt::Write as _;

/// Classname prefix of every testcase.
pub const CLASS_PREFIX: &str = "bufaio";
/// Name of the synthetic testcase that reports a kernel problem.
pub const KERNEL_CASE: &str = "kernel";

/// Render `report` as a JUnit XML document.
///
/// A failing `kernel` testcase is added when the report is incomplete (the
/// guest died before finishing: message = why, body = `console_excerpt` or
/// the same reason), or when `console_excerpt` is given for a complete report
/// (the caller passes the excerpt of the first failing splat: message =
/// `kernel splat: <first line of the splat>`, body = the excerpt).
pub fn render(suite_name: &str, report: &Report, console_excerpt: Option<&str>) -> String {
    let kernel = match (report.incomplete_reason(), console_excerpt) {
        (Some(why), excerpt) => {
            let body = excerpt.map_or_else(|| why.clone(), str::to_string);
            Some((format!("guest died before finishing: {why}"), body))
        }
        (None, Some(excerpt)) => Some((
            format!("kernel splat: {}", splat_title(excerpt)),
            excerpt.to_string(),
        )),
        (None, None) => None,
    };

    let (_, fail, skip) = report.counts();
    let extra = usize::from(kernel.is_some());
    let tests = report.tests.len() + extra;
    let failures = fail + extra;
    let time = seconds(report.total_duration_ms());

    let mut x = String::new();
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let counts = format!(
        "tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skip}\" time=\"{time}\""
    );
    let name = attr(suite_name);
    let _ = writeln!(x, "<testsuites name=\"{name}\" {counts}>");
    let _ = writeln!(x, "  <testsuite name=\"{name}\" {counts}>");
    if !report.header.is_empty() {
        x.push_str("    <properties>\n");
        for (k, v) in &report.header {
            let _ = writeln!(
                x,
                "      <property name=\"{}\" value=\"{}\"/>",
                attr(k),
                attr(v)
            );
        }
        x.push_str("    </properties>\n");
    }
    for t in &report.tests {
        testcase(&mut x, t);
    }
    if let Some((message, body)) = kernel {
        let _ = writeln!(
            x,
            "    <testcase classname=\"{CLASS_PREFIX}\" name=\"{KERNEL_CASE}\" time=\"0.000\">"
        );
        let _ = writeln!(
            x,
            "      <failure message=\"{}\">{}</failure>",
            attr(&message),
            text(&body)
        );
        x.push_str("    </testcase>\n");
    }
    x.push_str("  </testsuite>\n");
    x.push_str("</testsuites>\n");
    x
}

fn testcase(x: &mut String, t: &TestResult) {
    let (class, name) = match t.name.split_once('/') {
        Some((area, rest)) if !area.is_empty() && !rest.is_empty() => {
            (format!("{CLASS_PREFIX}.{area}"), rest)
        }
        _ => (CLASS_PREFIX.to_string(), t.name.as_str()),
    };
    let open = format!(
        "    <testcase classname=\"{}\" name=\"{}\" time=\"{}\"",
        attr(&class),
        attr(name),
        seconds(t.duration_ms.unwrap_or(0))
    );
    let diags = t.diagnostics.join("\n");
    let directive = t.directive.as_deref().filter(|d| !d.is_empty());
    match t.status {
        Status::Pass if diags.is_empty() => {
            let _ = writeln!(x, "{open}/>");
        }
        Status::Pass => {
            let _ = writeln!(x, "{open}>");
            let _ = writeln!(x, "      <system-out>{}</system-out>", text(&diags));
            x.push_str("    </testcase>\n");
        }
        Status::Fail => {
            let message = t
                .diagnostics
                .first()
                .map(String::as_str)
                .or(directive)
                .unwrap_or("not ok");
            let timeout = if t.timed_out { " type=\"timeout\"" } else { "" };
            let _ = writeln!(x, "{open}>");
            let _ = writeln!(
                x,
                "      <failure message=\"{}\"{timeout}>{}</failure>",
                attr(message),
                text(&diags)
            );
            x.push_str("    </testcase>\n");
        }
        Status::Skip => {
            let _ = writeln!(x, "{open}>");
            match directive {
                Some(d) => {
                    let _ = writeln!(x, "      <skipped message=\"{}\"/>", attr(d));
                }
                None => x.push_str("      <skipped/>\n"),
            }
            if !diags.is_empty() {
                let _ = writeln!(x, "      <system-out>{}</system-out>", text(&diags));
            }
            x.push_str("    </testcase>\n");
        }
    }
}

/// First line of a splat excerpt that is not a separator, printk timestamp
/// removed.
fn splat_title(excerpt: &str) -> &str {
    excerpt
        .lines()
        .map(|l| crate::scan::strip_timestamp(l).trim())
        .find(|l| {
            !l.is_empty()
                && !l.bytes().all(|b| b == b'=')
                && *l != "------------[ cut here ]------------"
        })
        .unwrap_or("")
}

/// Milliseconds as JUnit seconds with three decimals.
fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// Characters that cannot appear in XML 1.0 at all (even as references).
fn xml_invalid(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}')
}

fn escape(s: &str, in_attr: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            '\n' if in_attr => out.push_str("&#10;"),
            '\t' if in_attr => out.push_str("&#9;"),
            c if xml_invalid(c) => {}
            c => out.push(c),
        }
    }
    out
}

/// Escape for an attribute value (newlines and tabs preserved as references).
fn attr(s: &str) -> String {
    escape(s, true)
}

/// Escape for element text.
fn text(s: &str) -> String {
    escape(s, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ktap::parse;

    const FAILURES: &str = include_str!("../tests/golden/ktap/failures.ktap");
    const TRUNCATED: &str = include_str!("../tests/golden/ktap/truncated.ktap");
    const BASIC_XML: &str = include_str!("../tests/golden/junit/basic.xml");
    const INCOMPLETE_XML: &str = include_str!("../tests/golden/junit/incomplete.xml");

    #[test]
    fn basic_golden() {
        let xml = render("bufaio.default", &parse(FAILURES), None);
        assert_eq!(xml, BASIC_XML, "\n{xml}");
    }

    #[test]
    fn incomplete_golden() {
        let excerpt = "[   31.234567] BUG: kernel NULL pointer dereference, address: 0000000000000008\n[   31.234600] #PF: supervisor write access in kernel mode";
        let xml = render("bufaio.debug", &parse(TRUNCATED), Some(excerpt));
        assert_eq!(xml, INCOMPLETE_XML, "\n{xml}");
    }

    #[test]
    fn incomplete_without_excerpt_uses_reason() {
        let xml = render("s", &parse("KTAP version 1\n1..2\nok 1 a\n"), None);
        assert!(xml.contains("tests=\"2\" failures=\"1\""), "{xml}");
        assert!(xml.contains(
            "<failure message=\"guest died before finishing: KTAP has 1 of 2 planned results\">KTAP has 1 of 2 planned results</failure>"
        ), "{xml}");
        let xml = render("s", &parse(""), None);
        assert!(xml.contains("no KTAP version line"), "{xml}");
        assert!(
            xml.contains("tests=\"1\" failures=\"1\" errors=\"0\" skipped=\"0\" time=\"0.000\"")
        );
    }

    #[test]
    fn splat_on_complete_report_adds_kernel_case() {
        let excerpt = "[    0.731112] ------------[ cut here ]------------\n[    0.731498] WARNING: CPU: 1 PID: 97 at fs/aio.c:1157 aio_complete+0x2c4/0x330";
        let xml = render(
            "s",
            &parse("KTAP version 1\n1..1\nok 1 a/b\n"),
            Some(excerpt),
        );
        assert!(xml.contains("tests=\"2\" failures=\"1\""), "{xml}");
        assert!(xml.contains(
            "<failure message=\"kernel splat: WARNING: CPU: 1 PID: 97 at fs/aio.c:1157 aio_complete+0x2c4/0x330\">"
        ), "{xml}");
        let xml = render("s", &parse("KTAP version 1\n1..1\nok 1 a/b\n"), None);
        assert!(!xml.contains("name=\"kernel\""));
    }

    #[test]
    fn escaping() {
        assert_eq!(
            attr("a&b<c>d\"e'f\ng\th\u{1b}[0m\u{0}\r"),
            "a&amp;b&lt;c&gt;d&quot;e&apos;f&#10;g&#9;h[0m&#13;"
        );
        assert_eq!(text("x\ny\tz\u{7}"), "x\ny\tz");
        assert_eq!(text("é ünïcode ✓"), "é ünïcode ✓");
        let r = parse("KTAP version 1\n# k<1>: v&\"\n1..1\n# bad \u{1b}[31mcolor\u{1b}[0m <tag>\nnot ok 1 a/\"q\"&<x>\n");
        let xml = render("s&<", &r, None);
        assert!(xml.contains("<testsuites name=\"s&amp;&lt;\""), "{xml}");
        assert!(
            xml.contains("name=\"&quot;q&quot;&amp;&lt;x&gt;\""),
            "{xml}"
        );
        assert!(
            xml.contains("message=\"bad [31mcolor[0m &lt;tag&gt;\""),
            "{xml}"
        );
        assert!(!xml.contains('\u{1b}'));
    }

    #[test]
    fn seconds_format() {
        assert_eq!(seconds(0), "0.000");
        assert_eq!(seconds(12), "0.012");
        assert_eq!(seconds(120000), "120.000");
        assert_eq!(seconds(1234567), "1234.567");
    }

    #[test]
    fn names_without_area() {
        let r = parse("KTAP version 1\n1..3\nok 1 plain\nok 2 /lead\nok 3 a/b/c\n");
        let xml = render("s", &r, None);
        assert!(xml.contains("classname=\"bufaio\" name=\"plain\""), "{xml}");
        assert!(xml.contains("classname=\"bufaio\" name=\"/lead\""), "{xml}");
        assert!(xml.contains("classname=\"bufaio.a\" name=\"b/c\""), "{xml}");
    }
}
