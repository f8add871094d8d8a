//! One module per subcommand; each turns its options into calls of the
//! shared stages in [`crate::pipeline`].

pub mod bench;
pub mod bench_toolkit;
pub mod bisect;
pub mod build;
pub mod check_series;
pub mod clean;
pub mod exec;
pub mod lint_workflows;
pub mod push;
pub mod run;
pub mod soak;
pub mod ssh;
pub mod vm;

use crate::cache::Cache;
use crate::config::Config;
use crate::pipeline::Ctx;
use crate::ui::Ui;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// Smallest `--memory` accepted.
pub const MIN_MEMORY_MIB: u32 = 64;

/// Options shared by every subcommand that boots a kernel.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Configuration file.
    #[arg(long, default_value = crate::config::DEFAULT_FILE)]
    pub config: PathBuf,
    /// Kconfig flavor (a key of kconfig.flavors: default, debug, …).
    #[arg(long, default_value = "default")]
    pub flavor: String,
    /// Accelerator (overrides qemu.accel).
    #[arg(long, value_enum)]
    pub accel: Option<crate::config::Accel>,
    /// Extra kernel command-line words (repeatable).
    #[arg(long = "append")]
    pub append: Vec<String>,
    /// Kernel target(s) of the config (`target`/`targets`, e.g. 6.12,
    /// 7.1; repeatable or comma-separated; default from $BUFAIO_TARGET).
    /// `run` runs every target when none is given; the other subcommands
    /// take one, default the config's own (first) target.
    #[arg(long = "target", value_delimiter = ',')]
    pub targets: Vec<String>,
    /// Series file (overrides the target's `series`).
    #[arg(long)]
    pub series: Option<PathBuf>,
    /// Guest memory in MiB (overrides qemu.memory_mib).
    #[arg(long)]
    pub memory: Option<u32>,
    /// Guest CPUs (overrides qemu.cpus).
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Per-test timeout in seconds (overrides timeouts.test_s).
    #[arg(long)]
    pub test_timeout: Option<u64>,
    /// Boot this kernel image (built from your own tree) instead of fetching
    /// and building one; judged like the patched kernel.
    #[arg(long)]
    pub bzimage: Option<PathBuf>,
    /// Keep the run's disk images (test filesystems, slow-device copies,
    /// payload) in the run dir for inspection instead of deleting them
    /// when the kernel's run ends.
    #[arg(long)]
    pub keep_disks: bool,
}

/// Workspace root: the parent of the xtask crate.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// One selected kernel target: its name, its context, and which kernels
/// `run` builds for it by default (None: the command's default).
pub struct TargetCtx {
    pub name: String,
    pub ctx: Ctx,
    pub run_kernels: Option<crate::config::RunKernels>,
}

impl Common {
    /// The context of one target (`--target NAME`, default the config's
    /// own): for every subcommand but `run`.
    pub fn context(&self) -> Result<Ctx> {
        let mut all = self.targets_of(false)?;
        if all.len() > 1 {
            return Err(crate::error::usage(format!(
                "--target {}: this subcommand runs one target at a time (only `run` takes several)",
                all.iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            )));
        }
        Ok(all.remove(0).ctx)
    }

    /// The selected targets (`--target`, else $BUFAIO_TARGET), else every
    /// target of the config when `all_by_default`, else its own.
    pub fn targets_of(&self, all_by_default: bool) -> Result<Vec<TargetCtx>> {
        let root = project_root();
        let path = if self.config.is_relative() && !self.config.exists() {
            root.join(&self.config)
        } else {
            self.config.clone()
        };
        self.check().map_err(crate::error::usage)?;
        let cfg = Config::load(&path).map_err(|e| crate::error::usage(format!("{e:#}")))?;
        let mut names = self.targets.clone();
        if names.is_empty() {
            if let Ok(v) = std::env::var("BUFAIO_TARGET") {
                names = v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
            }
        }
        if names.is_empty() {
            names = if all_by_default {
                cfg.target_names()
            } else {
                vec![cfg.target_name()]
            };
        }
        names.dedup();
        if self.bzimage.is_some() && names.len() > 1 {
            return Err(crate::error::usage(
                "--bzimage boots one kernel: give one --target with it",
            ));
        }
        let mut out = Vec::new();
        for name in names {
            let (mut c, run_kernels) = cfg
                .for_target(&name)
                .map_err(|e| crate::error::usage(format!("{}: {e:#}", path.display())))?;
            self.apply(&mut c);
            out.push(TargetCtx {
                name,
                ctx: Ctx {
                    root: root.clone(),
                    cfg: c,
                    cache: Cache::open()?,
                    ui: Ui::new(),
                    prebuilt: self.bzimage.clone(),
                    keep_disks: self.keep_disks,
                },
                run_kernels,
            });
        }
        Ok(out)
    }

    /// Values no guest can run with, refused on the host before anything
    /// is built (exit 129), not found out as a silent or crashed guest.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.test_timeout == Some(0) {
            return Err("--test-timeout 0: expected a positive number of seconds".into());
        }
        if self.cpus == Some(0) {
            return Err("--cpus 0: expected at least 1".into());
        }
        if let Some(m) = self.memory {
            if m < MIN_MEMORY_MIB {
                return Err(format!(
                    "--memory {m}: the guest needs at least {MIN_MEMORY_MIB} MiB"
                ));
            }
        }
        Ok(())
    }

    /// CLI flags override the file.
    pub fn apply(&self, cfg: &mut Config) {
        if let Some(a) = self.accel {
            cfg.qemu.accel = a;
        }
        if let Some(s) = &self.series {
            cfg.series = s.clone();
        }
        if let Some(m) = self.memory {
            cfg.qemu.memory_mib = m;
        }
        if let Some(c) = self.cpus {
            cfg.qemu.cpus = c;
        }
        if let Some(t) = self.test_timeout {
            cfg.timeouts.test_s = t;
        }
    }
}
