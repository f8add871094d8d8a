//! `cargo xtask exec -- CMD ARGS`: boot the same kernel and images, copy
//! files in, run one command with the test disks mounted, stream its output
//! and return its exit status.

use super::Common;
use crate::error::usage;
use crate::exitcode::Outcome;
use crate::patch::Series;
use crate::pipeline::{self, BootOpts, GuestJob, KernelSel};
use anyhow::Result;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Which kernel: patched or unpatched (both runs the command twice).
    #[arg(long, value_enum, default_value = "patched")]
    pub kernel: KernelSel,
    /// Host file to copy into the guest (it appears in /mnt/payload, which is
    /// also the working directory and first in PATH). Repeatable.
    #[arg(long = "add")]
    pub add: Vec<PathBuf>,
    /// The command to run in the guest.
    #[arg(last = true, required = true)]
    pub cmd: Vec<String>,
}

pub fn main(a: Args) -> Result<i32> {
    crate::deps::check()?;
    if a.cmd.is_empty() {
        return Err(usage("exec needs a command after `--`"));
    }
    for f in &a.add {
        match std::fs::metadata(f) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(usage(format!("--add {}: not a regular file", f.display()))),
            Err(e) => return Err(usage(format!("--add {}: {e}", f.display()))),
        }
    }
    let ctx = a.common.context()?;
    let series = Series::load(&ctx.cfg.series)?;
    let (_id, dir) = pipeline::new_run_dir(&ctx.root, "exec")?;
    let (_src, builds) = pipeline::build_kernels(&ctx, &series, a.kernel, &a.common.flavor, &dir)?;
    let root = pipeline::guest_image(&ctx)?;
    let accel = pipeline::accel(&ctx, ctx.cfg.qemu.accel, &builds[0], &root)?;
    let job = GuestJob::Exec {
        argv: a.cmd.clone(),
        files: a.add.clone(),
    };
    let opts = BootOpts {
        accel: &accel,
        append: a.common.append.clone(),
        echo_out: true,
        progress: None,
    };
    let mut code = 0;
    for kb in &builds {
        let name: Vec<&str> = kb.variants.iter().map(|v| v.name()).collect();
        let r = pipeline::boot_and_test(&ctx, kb, &root, &job, &opts, &dir.join(name.join("+")))?;
        match (r.outcome, r.exec_status) {
            (Outcome::Pass, Some(st)) => {
                if st == 126 || st == 127 {
                    // The command did not start: the guest's reason (also
                    // in the output, if the port was up) on stderr.
                    let console =
                        std::fs::read_to_string(r.dir.join("console.log")).unwrap_or_default();
                    for l in console.lines() {
                        let Some(i) = l.find("bufaio: exec: ") else {
                            continue;
                        };
                        // Not the "bufaio: exec: [argv] in DIR" launch line.
                        if !l[i + "bufaio: exec: ".len()..].starts_with('[') {
                            eprintln!("{}: {}", name.join("+"), &l[i..]);
                        }
                    }
                }
                ctx.ui
                    .info(format!("{}: command exited with {st}", name.join("+")));
                if code == 0 {
                    code = st;
                }
            }
            _ => {
                eprintln!("{}: {} — {}", name.join("+"), r.outcome.label(), r.reason);
                if let Some(s) = r.splats.iter().find(|s| !s.allowed) {
                    eprintln!("{}", s.excerpt);
                }
                return Ok(r.outcome.code());
            }
        }
    }
    Ok(code)
}
