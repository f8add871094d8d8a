//! Stage 3, kconfig: tinyconfig + fragments (merge_config.sh) + olddefconfig in
//! a build directory per (tree, flavor, fragment contents), then verification
//! that every requested option survived.

use crate::cache::sha256_bytes;
use crate::error::{untestable, usage};
use crate::kcfgcheck;
use crate::patch::Tree;
use crate::ui::Ui;
use anyhow::{Context, Result};
use serde::Serialize;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A configured build directory.
#[derive(Debug, Clone, Serialize)]
pub struct Configured {
    pub flavor: String,
    /// `O=` directory: a direct child of the tree, so kbuild uses the relative
    /// srctree `..` and ccache hits are shared between trees.
    pub build_dir: PathBuf,
    /// sha256 of the fragments (names and contents).
    pub fragments_hash: String,
    /// sha256 of the final .config.
    pub config_hash: String,
    pub fragments: Vec<PathBuf>,
}

const OK_STAMP: &str = ".bufaio-kconfig.ok";

pub fn fragments_hash(fragments: &[(PathBuf, String)]) -> String {
    let mut s = String::new();
    for (p, text) in fragments {
        let name = p.file_name().map(|n| n.to_string_lossy().to_string());
        s.push_str(&format!("fragment {}\n{text}\n", name.unwrap_or_default()));
    }
    sha256_bytes(s.as_bytes())
}

pub fn configure(tree: &Tree, flavor: &str, fragments: &[PathBuf], ui: &Ui) -> Result<Configured> {
    let mut texts = Vec::new();
    for f in fragments {
        let t = fs::read_to_string(f)
            .map_err(|e| usage(format!("cannot read kconfig fragment {}: {e}", f.display())))?;
        texts.push((f.clone(), t));
    }
    let fhash = fragments_hash(&texts);
    let build_dir = tree.path.join(format!(".b-{flavor}-{}", &fhash[..12]));
    let config = build_dir.join(".config");
    if build_dir.join(OK_STAMP).is_file() && config.is_file() {
        let cfg = fs::read(&config).context("cannot read .config")?;
        return Ok(Configured {
            flavor: flavor.into(),
            build_dir,
            fragments_hash: fhash,
            config_hash: sha256_bytes(&cfg),
            fragments: fragments.to_vec(),
        });
    }
    let stage = ui.stage(
        "kconfig",
        format!("{flavor}: tinyconfig + {} fragment(s)", texts.len()),
    );
    fs::create_dir_all(&build_dir)
        .with_context(|| format!("cannot create {}", build_dir.display()))?;
    let o = format!(
        "O={}",
        build_dir.file_name().unwrap_or_default().to_string_lossy()
    );
    run(
        &tree.path,
        Command::new("make").arg(&o).arg("tinyconfig"),
        "make tinyconfig",
    )?;
    let mut merge = Command::new("scripts/kconfig/merge_config.sh");
    merge.arg("-m").arg("-O").arg(&build_dir).arg(&config);
    for f in fragments {
        merge.arg(std::path::absolute(f).unwrap_or_else(|_| f.clone()));
    }
    run(&tree.path, &mut merge, "merge_config.sh")?;
    run(
        &tree.path,
        Command::new("make").arg(&o).arg("olddefconfig"),
        "make olddefconfig",
    )?;
    let final_cfg = fs::read_to_string(&config).context("cannot read the final .config")?;
    let requested: Vec<(String, Vec<kcfgcheck::Requested>)> = texts
        .iter()
        .map(|(p, t)| (p.display().to_string(), kcfgcheck::parse_fragment(t)))
        .collect();
    let dropped = kcfgcheck::verify(&requested, &final_cfg);
    if !dropped.is_empty() {
        let list: Vec<String> = dropped.iter().map(|d| format!("  {d}")).collect();
        return Err(untestable(format!(
            "{} requested kconfig option(s) did not survive olddefconfig (missing dependency or renamed symbol):\n{}\n(final config: {})",
            dropped.len(),
            list.join("\n"),
            config.display()
        )));
    }
    fs::write(build_dir.join(OK_STAMP), &fhash).context("cannot write kconfig stamp")?;
    stage.finish(format!(
        "{} options verified",
        requested.iter().map(|(_, r)| r.len()).sum::<usize>()
    ));
    Ok(Configured {
        flavor: flavor.into(),
        build_dir,
        fragments_hash: fhash,
        config_hash: sha256_bytes(final_cfg.as_bytes()),
        fragments: fragments.to_vec(),
    })
}

fn run(dir: &Path, cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .current_dir(dir)
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        return Err(untestable(format!(
            "{what} failed in {}:\n{}{}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}
