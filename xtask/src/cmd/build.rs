//! `cargo xtask build`: fetch, patch, configure and build; print the bzImage.

use super::Common;
use crate::patch::Series;
use crate::pipeline::{self, KernelSel};
use anyhow::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Which kernel(s) to build.
    #[arg(long, value_enum, default_value = "both")]
    pub kernel: KernelSel,
}

pub fn main(a: Args) -> Result<i32> {
    crate::deps::check()?;
    let ctx = a.common.context()?;
    let series = Series::load(&ctx.cfg.series)?;
    let logs = ctx.root.join("target/bufaio/logs");
    let (_src, builds) = pipeline::build_kernels(&ctx, &series, a.kernel, &a.common.flavor, &logs)?;
    for b in &builds {
        let v: Vec<&str> = b.variants.iter().map(|v| v.name()).collect();
        println!(
            "{}: {} (sha256 {}, {})",
            v.join("+"),
            b.built.bzimage.display(),
            &b.built.sha256[..16],
            if b.built.rebuilt {
                format!("built in {:.0}s", b.built.seconds)
            } else {
                "up to date".into()
            }
        );
    }
    Ok(0)
}
