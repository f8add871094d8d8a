//! `cargo xtask deps`: host tools, what is missing and how to install it.
//! `run` calls [`check`] first so a missing tool fails fast with the exact
//! install command instead of deep inside make.

use crate::error::classified;
use crate::exitcode::Outcome;
use crate::fetch::which;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

pub struct Dep {
    /// Debian package.
    pub package: &'static str,
    /// How we detect it: an executable name or a file path.
    pub probe: Probe,
    pub required: bool,
    pub why: &'static str,
}

pub enum Probe {
    Exe(&'static str),
    File(&'static str),
}

pub const DEPS: &[Dep] = &[
    Dep {
        package: "qemu-system-x86",
        probe: Probe::Exe("qemu-system-x86_64"),
        required: true,
        why: "boots the test kernel",
    },
    Dep {
        package: "make",
        probe: Probe::Exe("make"),
        required: true,
        why: "kernel build",
    },
    Dep {
        package: "gcc",
        probe: Probe::Exe("gcc"),
        required: true,
        why: "kernel build",
    },
    Dep {
        package: "flex",
        probe: Probe::Exe("flex"),
        required: true,
        why: "kconfig",
    },
    Dep {
        package: "bison",
        probe: Probe::Exe("bison"),
        required: true,
        why: "kconfig",
    },
    Dep {
        package: "bc",
        probe: Probe::Exe("bc"),
        required: true,
        why: "kernel build",
    },
    Dep {
        package: "libelf-dev",
        probe: Probe::File("/usr/include/libelf.h"),
        required: true,
        why: "objtool",
    },
    Dep {
        package: "libssl-dev",
        probe: Probe::File("/usr/include/openssl/ssl.h"),
        required: true,
        why: "kernel build scripts",
    },
    Dep {
        package: "e2fsprogs",
        probe: Probe::Exe("mke2fs"),
        required: true,
        why: "ext2/ext3 images (mke2fs -d) and e2fsck",
    },
    Dep {
        package: "patch",
        probe: Probe::Exe("patch"),
        required: true,
        why: "applies the targets' series (patches/<target>/series)",
    },
    Dep {
        package: "xz-utils",
        probe: Probe::Exe("xz"),
        required: true,
        why: "source tarballs",
    },
    Dep {
        package: "cpio",
        probe: Probe::Exe("cpio"),
        required: true,
        why: "kernel build (kheaders)",
    },
    Dep {
        package: "busybox-static",
        probe: Probe::File("/bin/busybox"),
        required: false,
        why: "a shell and tools inside the guest for `exec`",
    },
    Dep {
        package: "dropbear-bin",
        probe: Probe::File("/usr/sbin/dropbear"),
        required: false,
        why: "SSH server (and host keys) for the `vm` guest",
    },
    Dep {
        package: "openssh-client",
        probe: Probe::Exe("ssh-keygen"),
        required: false,
        why: "per-VM ed25519 client keys for `vm`/`ssh`/`push`",
    },
    Dep {
        package: "openssh-sftp-server",
        probe: Probe::File("/usr/lib/openssh/sftp-server"),
        required: false,
        why: "SFTP inside the `vm` guest (uploads by `push`)",
    },
    Dep {
        package: "libaio-dev",
        probe: Probe::File("/usr/lib/x86_64-linux-gnu/libaio.a"),
        required: false,
        why: "static libaio for libaio's own test harness (soak/libaio*)",
    },
    Dep {
        package: "stress-ng",
        probe: Probe::Exe("stress-ng"),
        required: false,
        why: "soak/stress_ng_aio: its aio and aiol stressors (copied into the guest with its libraries)",
    },
    Dep {
        package: "ccache",
        probe: Probe::Exe("ccache"),
        required: false,
        why: "faster rebuilds",
    },
    Dep {
        package: "fio",
        probe: Probe::Exe("fio"),
        required: false,
        why: "`bench`: fio cross-check (copied into the guest with its libraries)",
    },
];

pub fn present(d: &Dep) -> bool {
    match d.probe {
        Probe::Exe(e) => which(e).is_some(),
        Probe::File(f) => Path::new(f).exists(),
    }
}

pub fn missing(include_optional: bool) -> Vec<&'static Dep> {
    DEPS.iter()
        .filter(|d| (d.required || include_optional) && !present(d))
        .collect()
}

pub fn install_command(deps: &[&Dep]) -> String {
    let pkgs: Vec<&str> = deps.iter().map(|d| d.package).collect();
    format!("sudo apt-get install -y {}", pkgs.join(" "))
}

/// What a subcommand does about missing host packages before it starts.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Every required tool is there (missing optional ones are left alone).
    Proceed,
    /// Root on an apt system: install these (required and optional) and go on.
    Install(Vec<&'static str>),
    /// Cannot install: fail (128) with this message naming the one command.
    Refuse(String),
}

/// The decision, free of I/O: `required`/`optional` are the missing deps,
/// `root` whether we are uid 0, `apt` whether apt-get exists, `opt_out`
/// whether `BUFAIO_NO_INSTALL` is set.
pub fn plan(
    required: &[&'static Dep],
    optional: &[&'static Dep],
    root: bool,
    apt: bool,
    opt_out: bool,
) -> Plan {
    if required.is_empty() {
        return Plan::Proceed;
    }
    let all: Vec<&'static Dep> = required.iter().chain(optional).copied().collect();
    if root && apt && !opt_out {
        return Plan::Install(all.iter().map(|d| d.package).collect());
    }
    let list: Vec<String> = required
        .iter()
        .map(|d| format!("  {} ({})", d.package, d.why))
        .collect();
    let why = if opt_out {
        " (BUFAIO_NO_INSTALL is set)"
    } else if !apt {
        " (no apt-get here: install the equivalents with your package manager)"
    } else {
        ""
    };
    Plan::Refuse(format!(
        "missing host tools{why}:\n{}\ninstall them with:\n  {}\n(as root, any subcommand installs them itself)",
        list.join("\n"),
        install_command(&all)
    ))
}

/// Before a subcommand starts: nothing when every required tool is there;
/// as root on an apt system, install what is missing (saying so) and go on;
/// otherwise fail fast (exit 128) naming the one command to run.
pub fn check() -> Result<()> {
    let required = missing(false);
    let optional: Vec<&'static Dep> = missing(true).into_iter().filter(|d| !d.required).collect();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let opt_out = std::env::var_os("BUFAIO_NO_INSTALL").is_some_and(|v| !v.is_empty());
    match plan(
        &required,
        &optional,
        root,
        which("apt-get").is_some(),
        opt_out,
    ) {
        Plan::Proceed => Ok(()),
        Plan::Refuse(msg) => Err(classified(Outcome::Infrastructure, msg)),
        Plan::Install(pkgs) => {
            eprintln!(
                "missing host packages, installing them (root, apt-get; BUFAIO_NO_INSTALL=1 to refuse instead): {}",
                pkgs.join(" ")
            );
            apt_install(&pkgs).map_err(|e| classified(Outcome::Infrastructure, format!("{e:#}")))
        }
    }
}

/// `apt-get update` + `apt-get install`, then re-probe.
fn apt_install(pkgs: &[&str]) -> Result<()> {
    let st = Command::new("apt-get")
        .arg("update")
        .arg("-q")
        .status()
        .context("cannot run apt-get update")?;
    if !st.success() {
        bail!("apt-get update failed");
    }
    let st = Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(pkgs)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("cannot run apt-get install")?;
    if !st.success() {
        bail!("apt-get install {} failed", pkgs.join(" "));
    }
    let still: Vec<&str> = missing(false).iter().map(|d| d.package).collect();
    if !still.is_empty() {
        bail!("still missing after install: {}", still.join(" "));
    }
    Ok(())
}

pub fn cmd(install: bool) -> Result<i32> {
    for d in DEPS {
        println!(
            "{:<4} {:<16} {}{}",
            if present(d) { "ok" } else { "MISS" },
            d.package,
            d.why,
            if d.required { "" } else { " (optional)" }
        );
    }
    let m = missing(true);
    if m.is_empty() {
        println!("all host tools present");
        return Ok(0);
    }
    if !install {
        println!("\nto install: {}", install_command(&m));
        return Ok(if missing(false).is_empty() { 0 } else { 1 });
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "--install needs root (apt-get); run: {}",
            install_command(&m)
        );
    }
    let pkgs: Vec<&str> = m.iter().map(|d| d.package).collect();
    println!("installing: {}", pkgs.join(" "));
    apt_install(&pkgs)?;
    println!("host tools installed");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_installs_as_root_and_refuses_otherwise() {
        let req: Vec<&'static Dep> = DEPS.iter().filter(|d| d.required).take(2).collect();
        let opt: Vec<&'static Dep> = DEPS.iter().filter(|d| !d.required).take(1).collect();
        assert_eq!(plan(&[], &opt, true, true, false), Plan::Proceed);
        assert_eq!(plan(&[], &opt, false, true, false), Plan::Proceed);
        match plan(&req, &opt, true, true, false) {
            Plan::Install(p) => {
                assert_eq!(p.len(), 3, "required and optional together: {p:?}");
                assert_eq!(p[0], req[0].package);
            }
            other => panic!("{other:?}"),
        }
        for (root, apt, opt_out, says) in [
            (false, true, false, "sudo apt-get install -y"),
            (true, true, true, "BUFAIO_NO_INSTALL is set"),
            (true, false, false, "no apt-get here"),
        ] {
            match plan(&req, &opt, root, apt, opt_out) {
                Plan::Refuse(m) => {
                    assert!(m.contains(says), "{m}");
                    assert!(m.contains(req[0].package) && m.contains(req[0].why), "{m}");
                    assert!(
                        m.contains(opt[0].package),
                        "the one command installs all: {m}"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn install_command_lists_packages() {
        let m: Vec<&Dep> = DEPS.iter().take(2).collect();
        assert_eq!(
            install_command(&m),
            "sudo apt-get install -y qemu-system-x86 make"
        );
    }

    #[test]
    fn table_covers_issue_list() {
        for p in [
            "qemu-system-x86",
            "make",
            "gcc",
            "flex",
            "bison",
            "bc",
            "libelf-dev",
            "libssl-dev",
            "e2fsprogs",
            "busybox-static",
            "ccache",
        ] {
            assert!(DEPS.iter().any(|d| d.package == p), "{p}");
        }
    }
}
