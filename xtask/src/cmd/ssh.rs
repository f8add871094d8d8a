//! `cargo xtask ssh [-- CMD…]`: into the guest of `cargo xtask vm` with the
//! ssh2 crate. With a command: run it, stream its stdout/stderr, return its
//! exit status. Without: an interactive shell on a PTY.

use crate::ssh::{self, VmState};
use anyhow::Result;
use std::io::Write;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds to keep trying to connect.
    #[arg(long, default_value_t = 30)]
    pub wait: u64,
    /// The command to run in the guest (a shell command line: words are
    /// joined with spaces and run by the guest's /bin/sh).
    #[arg(last = true)]
    pub cmd: Vec<String>,
}

/// Connect to the running VM; a VM that died is reported with its console.
pub fn session(st: &VmState, wait: Duration) -> Result<ssh2::Session> {
    if !st.qemu_alive() {
        return Err(super::vm::dead_vm_error(st));
    }
    ssh::connect_until(
        st.port,
        &st.key,
        &st.host_key,
        Instant::now() + wait,
        || {
            if st.qemu_alive() {
                Ok(())
            } else {
                Err(super::vm::dead_vm_error(st))
            }
        },
    )
}

pub fn main(a: Args) -> Result<i32> {
    let root = super::project_root();
    let st = VmState::load(&root)?;
    let sess = session(&st, Duration::from_secs(a.wait))?;
    let code = if a.cmd.is_empty() {
        ssh::shell(&sess)?
    } else {
        let cmd = a.cmd.join(" ");
        let r = ssh::exec(
            &sess,
            &cmd,
            None,
            &mut |b| {
                let mut o = std::io::stdout();
                o.write_all(b).ok();
                o.flush().ok();
            },
            &mut |b| {
                let mut e = std::io::stderr();
                e.write_all(b).ok();
                e.flush().ok();
            },
        );
        match r {
            Ok(c) => c,
            Err(e) if !st.qemu_alive() => return Err(super::vm::dead_vm_error(&st).context(e)),
            Err(e) => return Err(e),
        }
    };
    Ok(code)
}
