//! GitHub Actions output, kept in one small module: `::error` annotations for
//! failed tests and kernel splats, and a markdown summary for
//! `$GITHUB_STEP_SUMMARY`. Pure: works on a parsed `results.json`, so a sample
//! file can be checked against a golden rendering.

use serde_json::Value;
use std::fmt::Write as _;

pub fn enabled() -> bool {
    std::env::var("GITHUB_ACTIONS").as_deref() == Ok("true")
}

/// Workflow-command escaping for messages (and properties).
fn esc(s: &str, property: bool) -> String {
    let mut out = s
        .replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A");
    if property {
        out = out.replace(':', "%3A").replace(',', "%2C");
    }
    out
}

fn kernel_label(k: &Value) -> String {
    k["variants"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("+")
        })
        .unwrap_or_else(|| "kernel".into())
}

fn first_lines(s: &str, n: usize) -> String {
    s.lines().take(n).collect::<Vec<_>>().join("\n")
}

/// One `::error` line per failed test (verdict fail/xpass) and per splat that
/// is not allowed.
pub fn annotations(results: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for k in results["kernels"].as_array().into_iter().flatten() {
        let label = kernel_label(k);
        for t in k["tests"].as_array().into_iter().flatten() {
            let v = t["verdict"].as_str().unwrap_or("");
            if v == "fail" || v == "xpass" {
                let name = t["name"].as_str().unwrap_or("?");
                let diag = t["diagnostic"].as_str().unwrap_or("");
                let msg = if diag.is_empty() {
                    v.to_string()
                } else {
                    first_lines(diag, 8)
                };
                out.push(format!(
                    "::error title={}::{}",
                    esc(&format!("{label}: {name}"), true),
                    esc(&msg, false)
                ));
            }
        }
        for s in k["splats"].as_array().into_iter().flatten() {
            if s["allowed"].as_bool() == Some(true) {
                continue;
            }
            let title = s["title"].as_str().unwrap_or("kernel splat");
            let excerpt = s["excerpt"].as_str().unwrap_or("");
            out.push(format!(
                "::error title={}::{}",
                esc(&format!("{label} kernel: {title}"), true),
                esc(&first_lines(excerpt, 12), false)
            ));
        }
    }
    out
}

fn cell(verdict: Option<&str>) -> &'static str {
    match verdict {
        Some("pass") => "✅ pass",
        Some("fail") => "❌ FAIL",
        Some("skip") => "⏭ skip",
        Some("xfail") => "✅ xfail",
        Some("xpass") => "❌ XPASS",
        Some("todo") => "🚧 todo",
        _ => "—",
    }
}

/// Markdown for the step summary: outcome, one column per kernel.
pub fn summary(results: &Value) -> String {
    let kernels: Vec<&Value> = results["kernels"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### bufaio run `{}`: {} (exit {})\n",
        results["run_id"].as_str().unwrap_or("?"),
        results["outcome"].as_str().unwrap_or("?"),
        results["exit_code"]
    );
    let mut names: Vec<&str> = Vec::new();
    for k in &kernels {
        for t in k["tests"].as_array().into_iter().flatten() {
            if let Some(n) = t["name"].as_str() {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
    }
    s.push_str("| test |");
    for k in &kernels {
        let _ = write!(s, " {} |", kernel_label(k));
    }
    s.push_str("\n|---|");
    for _ in &kernels {
        s.push_str("---|");
    }
    s.push('\n');
    for n in &names {
        let _ = write!(s, "| `{n}` |");
        for k in &kernels {
            let v = k["tests"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["name"].as_str() == Some(n))
                .and_then(|t| t["verdict"].as_str());
            let _ = write!(s, " {} |", cell(v));
        }
        s.push('\n');
    }
    s.push('\n');
    for k in &kernels {
        let _ = writeln!(
            s,
            "- **{}** ({} flavor, {} on {}, accel {}): {} — {}",
            kernel_label(k),
            k["flavor"].as_str().unwrap_or("?"),
            k["kernel_release"].as_str().unwrap_or("?"),
            k["filesystems"].as_str().unwrap_or("?"),
            k["accel"].as_str().unwrap_or("?"),
            k["outcome"].as_str().unwrap_or("?"),
            k["reason"].as_str().unwrap_or("")
        );
        if let Some(sp) = k["splats"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|sp| sp["allowed"].as_bool() != Some(true))
        {
            let _ = writeln!(
                s,
                "\n<details><summary>first splat: {}</summary>\n\n```\n{}\n```\n</details>\n",
                sp["title"].as_str().unwrap_or("?"),
                sp["excerpt"].as_str().unwrap_or("")
            );
        }
    }
    s
}

/// In GitHub Actions: print the annotations and append the summary.
pub fn publish(results: &Value) {
    if !enabled() {
        return;
    }
    for a in annotations(results) {
        println!("{a}");
    }
    if let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
        {
            let _ = f.write_all(summary(results).as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../tests/golden/gha/results.json");

    #[test]
    fn annotations_match_golden() {
        let v: Value = serde_json::from_str(SAMPLE).unwrap();
        let got = annotations(&v).join("\n") + "\n";
        crate::golden::check("gha/annotations.txt", &got);
    }

    #[test]
    fn summary_matches_golden() {
        let v: Value = serde_json::from_str(SAMPLE).unwrap();
        crate::golden::check("gha/summary.md", &summary(&v));
    }

    #[test]
    fn escaping() {
        assert_eq!(esc("a%b\nc", false), "a%25b%0Ac");
        assert_eq!(esc("t: x,y", true), "t%3A x%2Cy");
    }
}
