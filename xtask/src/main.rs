//! bufaio host tool (`cargo xtask`): config → fetch → patch → kconfig → build →
//! rootfs → vm → guest protocol → report.

#![allow(dead_code)]

mod cache;
mod config;
mod exitcode;
mod fetch;
mod junit;
mod kcfgcheck;
mod ktap;
mod scan;
mod yaml;

fn main() {
    println!("bufaio xtask");
}
