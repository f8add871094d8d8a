//! `bufaio.yaml`: the one configuration file. Pure parsing and validation; the
//! only I/O is reading the file itself in [`Config::load`].

use crate::yaml;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const DEFAULT_FILE: &str = "bufaio.yaml";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub kernel: KernelConfig,
    /// Quilt-style series file; patches are named relative to its directory.
    pub series: PathBuf,
    pub kconfig: KconfigConfig,
    #[serde(default)]
    pub qemu: QemuConfig,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub disks: Disks,
    #[serde(default)]
    pub tests: TestsConfig,
    /// File of regular expressions: console splats matching one are reported
    /// but do not fail the run.
    #[serde(default)]
    pub splat_allowlist: Option<PathBuf>,
    /// Peer test suites built on the host for the guest (issue 14).
    #[serde(default)]
    pub peers: PeersConfig,
    /// The name of this file's own kernel target (`kernel` + `series`),
    /// e.g. `6.12`; default: the major.minor of `kernel.version`.
    #[serde(default)]
    pub target: Option<String>,
    /// More kernel targets (issue 17): each with its kernel sources and its
    /// series; everything else (kconfig, qemu, timeouts, …) is shared.
    /// `--target NAME` selects; `run` runs every target by default.
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
}

/// One more kernel target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub name: String,
    pub kernel: KernelConfig,
    /// Its quilt series file (relative to the config file's directory).
    pub series: PathBuf,
    /// Which kernels `run` builds for it when `--kernel` is not given:
    /// `unpatched` while the series is not ported yet (an empty series
    /// would otherwise be judged as a patched kernel lacking the series'
    /// behaviour).
    #[serde(default)]
    pub run_kernels: Option<RunKernels>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKernels {
    Both,
    Unpatched,
    Patched,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeersConfig {
    /// libaio's own test harness (`harness/cases/*.t`), from the upstream
    /// tarball Debian's `libaio` source package ships as its `.orig`.
    pub libaio: Option<LibaioPeer>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibaioPeer {
    /// Debian source version, e.g. `0.3.113-4` (reported with the results).
    pub version: String,
    /// Where the `libaio_<upstream>.orig.tar.gz` comes from, each pinned by
    /// sha256 (`kind: url` or `kind: tarball`), tried in order.
    pub sources: Vec<Source>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelConfig {
    /// Human-readable version, recorded in manifests.
    pub version: String,
    /// Tried in order; the first one available wins. A checksum mismatch is an
    /// error, never a reason to try the next source.
    pub sources: Vec<Source>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Source {
    /// Debian's `linux-source-X.Y` package: `apt-get download` + `dpkg-deb -x`.
    Debian {
        package: String,
        version: String,
        /// sha256 of the .deb.
        sha256: String,
        /// Where to download the same .deb when apt cannot (non-Debian hosts,
        /// e.g. Ubuntu CI runners); verified against the same sha256.
        #[serde(default)]
        url: Option<String>,
    },
    /// A tarball URL (`https://`, `http://` or `file://`).
    Url { url: String, sha256: String },
    /// A tarball on the local disk.
    Tarball { path: PathBuf, sha256: String },
    /// A local kernel git tree and a ref; the tree itself is never modified.
    Git {
        path: PathBuf,
        #[serde(rename = "ref")]
        git_ref: String,
    },
}

impl Source {
    pub fn describe(&self) -> String {
        match self {
            Source::Debian {
                package, version, ..
            } => format!("debian {package}={version}"),
            Source::Url { url, .. } => format!("url {url}"),
            Source::Tarball { path, .. } => format!("tarball {}", path.display()),
            Source::Git { path, git_ref } => format!("git {}@{git_ref}", path.display()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KconfigConfig {
    /// Fragments merged onto tinyconfig for every flavor.
    pub base: Vec<PathBuf>,
    /// Extra fragments per flavor name (`default` must exist).
    pub flavors: std::collections::BTreeMap<String, Vec<PathBuf>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM if /dev/kvm opens and a probe boot reaches init, else TCG.
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QemuConfig {
    pub binary: String,
    pub memory_mib: u32,
    pub cpus: u32,
    pub accel: Accel,
    /// Appended to the kernel command line.
    pub append: String,
}

impl Default for QemuConfig {
    fn default() -> Self {
        QemuConfig {
            binary: "qemu-system-x86_64".into(),
            memory_mib: 1024,
            cpus: 2,
            accel: Accel::Auto,
            append: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// From QEMU start until the guest prints its ready marker.
    pub boot_s: u64,
    /// Longest time without any console or result output.
    pub silence_s: u64,
    /// Per guest test, enforced inside the guest.
    pub test_s: u64,
    /// Whole VM run.
    pub overall_s: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            boot_s: 60,
            silence_s: 180,
            test_s: 120,
            overall_s: 1800,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Disks {
    /// Size of each ext2 / ext3 test disk, created fresh for every run.
    pub size_mib: u32,
}

impl Default for Disks {
    fn default() -> Self {
        Disks { size_mib: 128 }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestsConfig {
    /// Glob patterns over guest test names; empty means all.
    pub filter: Vec<String>,
}

/// Every source of `key` has a well-formed sha256 and a URL scheme we fetch.
fn check_target_name(origin: &Path, key: &str, name: &str) -> Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        bail!(
            "{}: {key}: target name {name:?} must be non-empty ASCII letters, digits, '.', '_' or '-'",
            origin.display()
        );
    }
    Ok(())
}

fn check_sources(origin: &Path, key: &str, sources: &[Source]) -> Result<()> {
    let o = origin.display();
    for (i, s) in sources.iter().enumerate() {
        let sha = match s {
            Source::Debian { sha256, .. }
            | Source::Url { sha256, .. }
            | Source::Tarball { sha256, .. } => Some(sha256),
            Source::Git { .. } => None,
        };
        if let Some(sha) = sha {
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!(
                    "{o}: {key}[{i}].sha256 must be 64 hex digits, got {sha:?} ({})",
                    s.describe()
                );
            }
        }
        if let Source::Url { url, .. } = s {
            if !(url.starts_with("https://")
                || url.starts_with("http://")
                || url.starts_with("file://"))
            {
                bail!(
                    "{o}: {key}[{i}].url must start with https://, http:// or file://, got {url:?}"
                );
            }
        }
    }
    Ok(())
}

impl Config {
    /// Read and validate `path`. Relative paths inside are resolved against
    /// the file's directory.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read config file {} (run from the bufaio checkout or pass --config)",
                path.display()
            )
        })?;
        let mut cfg = Config::parse(&text, path)?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        cfg.resolve_paths(&base);
        cfg.check_files(path)?;
        Ok(cfg)
    }

    /// Files the config names must exist before anything is fetched or
    /// built (a missing kconfig fragment used to show only after the
    /// source was extracted and patched).
    fn check_files(&self, origin: &Path) -> Result<()> {
        let o = origin.display();
        let lists = std::iter::once(("kconfig.base".to_string(), &self.kconfig.base)).chain(
            self.kconfig
                .flavors
                .iter()
                .map(|(k, v)| (format!("kconfig.flavors.{k}"), v)),
        );
        for (key, files) in lists {
            for (i, f) in files.iter().enumerate() {
                if !f.is_file() {
                    bail!(
                        "{o}: {key}[{i}]: kconfig fragment {} does not exist",
                        f.display()
                    );
                }
            }
        }
        Ok(())
    }

    /// Parse and validate without touching the file system.
    pub fn parse(text: &str, origin: &Path) -> Result<Config> {
        let cfg: Config = yaml::from_str(text, origin)?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

    fn validate(&self, origin: &Path) -> Result<()> {
        let o = origin.display();
        if self.kernel.sources.is_empty() {
            bail!("{o}: kernel.sources is empty: list at least one kernel source");
        }
        check_sources(origin, "kernel.sources", &self.kernel.sources)?;
        let mut names = vec![self.target_name()];
        if let Some(t) = &self.target {
            check_target_name(origin, "target", t)?;
        }
        for (i, t) in self.targets.iter().enumerate() {
            let key = format!("targets[{i}]");
            check_target_name(origin, &format!("{key}.name"), &t.name)?;
            if names.contains(&t.name) {
                bail!(
                    "{o}: {key}.name: target {:?} is defined twice (the file's own kernel is target {:?})",
                    t.name,
                    names[0]
                );
            }
            names.push(t.name.clone());
            if t.kernel.sources.is_empty() {
                bail!("{o}: {key}.kernel.sources is empty: list at least one kernel source");
            }
            check_sources(origin, &format!("{key}.kernel.sources"), &t.kernel.sources)?;
        }
        if let Some(l) = &self.peers.libaio {
            if l.sources.is_empty() {
                bail!("{o}: peers.libaio.sources is empty: list at least one source or drop peers.libaio");
            }
            check_sources(origin, "peers.libaio.sources", &l.sources)?;
            for (i, s) in l.sources.iter().enumerate() {
                if !matches!(s, Source::Url { .. } | Source::Tarball { .. }) {
                    bail!(
                        "{o}: peers.libaio.sources[{i}]: only `kind: url` and `kind: tarball` give the libaio tarball, got {}",
                        s.describe()
                    );
                }
            }
        }
        if !self.kconfig.flavors.contains_key("default") {
            bail!("{o}: kconfig.flavors must define a `default` flavor");
        }
        if self.qemu.cpus == 0 || self.qemu.memory_mib < 256 {
            bail!("{o}: qemu.cpus must be ≥ 1 and qemu.memory_mib ≥ 256");
        }
        let t = &self.timeouts;
        if t.boot_s == 0 || t.silence_s == 0 || t.test_s == 0 || t.overall_s == 0 {
            bail!("{o}: every timeouts.* value must be > 0 seconds");
        }
        if self.disks.size_mib < 16 {
            bail!("{o}: disks.size_mib must be ≥ 16");
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.series);
        for t in self.targets.iter_mut() {
            fix(&mut t.series);
            for s in t.kernel.sources.iter_mut() {
                if let Source::Tarball { path, .. } | Source::Git { path, .. } = s {
                    fix(path);
                }
            }
        }
        self.kconfig.base.iter_mut().for_each(fix);
        for v in self.kconfig.flavors.values_mut() {
            v.iter_mut().for_each(fix);
        }
        if let Some(p) = self.splat_allowlist.as_mut() {
            fix(p);
        }
        let peer_sources = self
            .peers
            .libaio
            .iter_mut()
            .flat_map(|l| l.sources.iter_mut());
        for s in self.kernel.sources.iter_mut().chain(peer_sources) {
            match s {
                Source::Tarball { path, .. } | Source::Git { path, .. } => fix(path),
                _ => {}
            }
        }
    }

    /// The name of the file's own target: `target`, else the major.minor
    /// of `kernel.version` (`6.12.117` → `6.12`).
    pub fn target_name(&self) -> String {
        if let Some(t) = &self.target {
            return t.clone();
        }
        let v: Vec<&str> = self.kernel.version.split('.').take(2).collect();
        v.join(".")
    }

    /// Every target's name, the file's own first.
    pub fn target_names(&self) -> Vec<String> {
        std::iter::once(self.target_name())
            .chain(self.targets.iter().map(|t| t.name.clone()))
            .collect()
    }

    /// The configuration of one target: its kernel and series in place of
    /// the file's own, no further targets. Also returns the kernels `run`
    /// builds for it by default (None: the command's default).
    pub fn for_target(&self, name: &str) -> Result<(Config, Option<RunKernels>)> {
        let mut c = self.clone();
        c.targets.clear();
        c.target = Some(name.to_string());
        if name == self.target_name() {
            return Ok((c, None));
        }
        let Some(t) = self.targets.iter().find(|t| t.name == name) else {
            bail!(
                "--target {name:?}: no such target (the configuration has {})",
                self.target_names().join(", ")
            );
        };
        c.kernel = t.kernel.clone();
        c.series = t.series.clone();
        Ok((c, t.run_kernels))
    }

    /// Fragments for `flavor`: base first, then the flavor's own.
    pub fn fragments(&self, flavor: &str) -> Result<Vec<PathBuf>> {
        let extra = self.kconfig.flavors.get(flavor).with_context(|| {
            format!(
                "unknown flavor {flavor:?}: kconfig.flavors defines {:?}",
                self.kconfig.flavors.keys().collect::<Vec<_>>()
            )
        })?;
        Ok(self.kconfig.base.iter().chain(extra).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = include_str!("../../bufaio.yaml");

    #[test]
    fn shipped_config_parses() {
        let c = Config::parse(GOOD, Path::new("bufaio.yaml")).unwrap();
        assert!(matches!(c.kernel.sources[0], Source::Debian { .. }));
        assert!(c.kconfig.flavors.contains_key("debug"));
        assert_eq!(c.fragments("debug").unwrap().len(), 2);
        assert!(c.fragments("nope").is_err());
    }

    #[test]
    fn unknown_key_named_with_line() {
        let text = GOOD.replace("qemu:\n", "qemu:\n  memroy_mib: 5\n");
        let e = Config::parse(&text, Path::new("x.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("memroy_mib"), "{e}");
        let line = text.lines().position(|l| l.contains("memroy_mib")).unwrap() + 1;
        assert!(e.starts_with(&format!("x.yaml:{line}:")), "{e}");
    }

    #[test]
    fn unknown_key_in_source_variant() {
        let text = GOOD.replacen("    package:", "    pakage: x\n    package:", 1);
        let e = Config::parse(&text, Path::new("x.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("pakage"), "{e}");
    }

    #[test]
    fn bad_yaml_and_bad_values() {
        let e = Config::parse("kernel: [", Path::new("b.yaml")).unwrap_err();
        assert!(e.to_string().starts_with("b.yaml:"), "{e}");
        let text = GOOD.replacen("sha256: e849", "sha256: zz49", 1);
        let e = Config::parse(&text, Path::new("b.yaml")).unwrap_err();
        assert!(e.to_string().contains("64 hex digits"), "{e}");
        let e = Config::parse("series: x\n", Path::new("b.yaml")).unwrap_err();
        assert!(e.to_string().contains("kernel"), "{e}");
    }

    #[test]
    fn targets() {
        let c = Config::parse(GOOD, Path::new("bufaio.yaml")).unwrap();
        assert_eq!(c.target_names(), ["6.12", "7.1"]);
        let (t, k) = c.for_target("7.1").unwrap();
        assert_eq!((t.kernel.version.as_str(), k), ("7.1.8", None));
        // A target may narrow what `run` compares by default.
        let narrowed = GOOD.replace(
            "    series: patches/7.1/series\n",
            "    series: patches/7.1/series\n    run_kernels: unpatched\n",
        );
        let c2 = Config::parse(&narrowed, Path::new("bufaio.yaml")).unwrap();
        assert_eq!(c2.for_target("7.1").unwrap().1, Some(RunKernels::Unpatched));
        assert!(t.targets.is_empty() && t.series.ends_with("patches/7.1/series"));
        assert_eq!(t.kconfig, c.kconfig);
        let (own, k) = c.for_target("6.12").unwrap();
        assert_eq!((own.kernel, k), (c.kernel.clone(), None));
        let e = format!("{:#}", c.for_target("7.2").unwrap_err());
        assert!(e.contains("\"7.2\"") && e.contains("6.12, 7.1"), "{e}");
        // Without `target:` the name is the kernel's major.minor.
        let text = GOOD.replace("target: \"6.12\"\n", "");
        let c = Config::parse(&text, Path::new("x.yaml")).unwrap();
        assert_eq!(c.target_name(), "6.12");
        let dup = GOOD.replace("  - name: \"7.1\"", "  - name: \"6.12\"");
        let e = format!(
            "{:#}",
            Config::parse(&dup, Path::new("x.yaml")).unwrap_err()
        );
        assert!(e.contains("targets[0].name") && e.contains("twice"), "{e}");
        let bad = GOOD.replace("  - name: \"7.1\"", "  - name: \"7 1\"");
        let e = format!(
            "{:#}",
            Config::parse(&bad, Path::new("x.yaml")).unwrap_err()
        );
        assert!(e.contains("targets[0].name"), "{e}");
        let nosha = GOOD.replacen("sha256: 47f9", "sha256: zz", 1);
        let e = format!(
            "{:#}",
            Config::parse(&nosha, Path::new("x.yaml")).unwrap_err()
        );
        assert!(e.contains("targets[0].kernel.sources"), "{e}");
    }

    #[test]
    fn missing_file_is_named() {
        let e = Config::load(Path::new("/nonexistent/bufaio.yaml")).unwrap_err();
        assert!(format!("{e:#}").contains("/nonexistent/bufaio.yaml"));
    }
}
