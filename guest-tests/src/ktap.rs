//! KTAP v1 output: pure formatting plus a line writer.

use std::io::{self, Write};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    Skip(String),
}

/// One test's result as it goes into KTAP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestReport {
    pub number: usize,
    pub name: String,
    pub status: Status,
    pub time_ms: u128,
    /// Diagnostic text lines (without the leading "# "; empty lines are dropped).
    pub diags: Vec<String>,
}

/// Makes `s` safe for a single KTAP line (no control characters).
pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim_end()
        .to_string()
}

/// Header lines.
pub fn format_header(kernel: &str, filesystems: &[String], n: usize) -> Vec<String> {
    vec![
        "KTAP version 1".to_string(),
        format!("# kernel: {}", one_line(kernel)),
        format!("# filesystems: {}", one_line(&filesystems.join(" "))),
        format!("1..{n}"),
    ]
}

/// Diagnostics, `# time_ms: N` (always the line right before the result),
/// then the result line.
pub fn format_result(r: &TestReport) -> Vec<String> {
    let mut out = Vec::new();
    for d in &r.diags {
        for l in d.split('\n') {
            let l = one_line(l);
            if !l.is_empty() {
                out.push(format!("# {l}"));
            }
        }
    }
    out.push(format!("# time_ms: {}", r.time_ms));
    out.push(match &r.status {
        Status::Pass => format!("ok {} {}", r.number, r.name),
        Status::Fail => match crate::suite::known_gap(&r.name) {
            Some(why) => format!("not ok {} {} # TODO {}", r.number, r.name, one_line(why)),
            None => format!("not ok {} {}", r.number, r.name),
        },
        Status::Skip(reason) => {
            let reason = one_line(reason);
            if reason.is_empty() {
                format!("ok {} {} # SKIP", r.number, r.name)
            } else {
                format!("ok {} {} # SKIP {}", r.number, r.name, reason)
            }
        }
    });
    out
}

/// Human one-liner for the console.
pub fn summary(r: &TestReport) -> String {
    match &r.status {
        Status::Pass => format!("bufaio: ok {} {} ({} ms)", r.number, r.name, r.time_ms),
        Status::Fail => format!("bufaio: not ok {} {} ({} ms)", r.number, r.name, r.time_ms),
        Status::Skip(reason) => format!(
            "bufaio: skip {} {} ({} ms): {}",
            r.number,
            r.name,
            r.time_ms,
            one_line(reason)
        ),
    }
}

/// Writes KTAP lines, each prefixed (e.g. "KTAP: " on the console fallback)
/// and flushed immediately.
pub struct KtapWriter {
    out: Box<dyn Write + Send>,
    prefix: &'static str,
}

impl KtapWriter {
    pub fn new(out: Box<dyn Write + Send>, prefix: &'static str) -> KtapWriter {
        KtapWriter { out, prefix }
    }

    pub fn line(&mut self, s: &str) -> io::Result<()> {
        let mut buf = String::with_capacity(self.prefix.len() + s.len() + 1);
        buf.push_str(self.prefix);
        buf.push_str(s);
        buf.push('\n');
        self.out.write_all(buf.as_bytes())?;
        self.out.flush()
    }

    pub fn lines(&mut self, ls: &[String]) -> io::Result<()> {
        for l in ls {
            self.line(l)?;
        }
        Ok(())
    }

    pub fn header(&mut self, kernel: &str, filesystems: &[String], n: usize) -> io::Result<()> {
        self.lines(&format_header(kernel, filesystems, n))
    }

    /// The first two header lines, written as soon as the guest is up (before
    /// the slow-device copy) so the host sees the results channel early.
    pub fn preamble(&mut self, kernel: &str) -> io::Result<()> {
        self.lines(&format_header(kernel, &[], 0)[..2])
    }

    /// The rest of the header after [`KtapWriter::preamble`].
    pub fn plan(&mut self, filesystems: &[String], n: usize) -> io::Result<()> {
        self.lines(&format_header("", filesystems, n)[2..])
    }

    pub fn result(&mut self, r: &TestReport) -> io::Result<()> {
        self.lines(&format_result(r))
    }

    pub fn diag(&mut self, s: &str) -> io::Result<()> {
        self.line(&format!("# {}", one_line(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_shape() {
        let h = format_header("6.12.117", &["ext2".into(), "ext3".into()], 19);
        assert_eq!(
            h,
            vec![
                "KTAP version 1",
                "# kernel: 6.12.117",
                "# filesystems: ext2 ext3",
                "1..19"
            ]
        );
    }

    #[test]
    fn result_shapes() {
        let mut r = TestReport {
            number: 2,
            name: "read/roundtrip_aligned@ext2".into(),
            status: Status::Fail,
            time_ms: 30,
            diags: vec!["first\nsecond\r".into(), "".into()],
        };
        assert_eq!(
            format_result(&r),
            vec![
                "# first",
                "# second",
                "# time_ms: 30",
                "not ok 2 read/roundtrip_aligned@ext2"
            ]
        );
        r.status = Status::Pass;
        r.diags.clear();
        assert_eq!(
            format_result(&r),
            vec!["# time_ms: 30", "ok 2 read/roundtrip_aligned@ext2"]
        );
        r.status = Status::Skip("no O_DIRECT\nhere".into());
        assert_eq!(
            format_result(&r).last().unwrap(),
            "ok 2 read/roundtrip_aligned@ext2 # SKIP no O_DIRECT here"
        );
        assert_eq!(
            summary(&r),
            "bufaio: skip 2 read/roundtrip_aligned@ext2 (30 ms): no O_DIRECT here"
        );
    }

    #[test]
    fn writer_prefixes() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink(Arc::new(Mutex::new(Vec::new())));
        let mut w = KtapWriter::new(Box::new(sink.clone()), "KTAP: ");
        w.header("k", &["host".into()], 1).unwrap();
        w.diag("x").unwrap();
        let s = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            s,
            "KTAP: KTAP version 1\nKTAP: # kernel: k\nKTAP: # filesystems: host\nKTAP: 1..1\nKTAP: # x\n"
        );
    }
}
