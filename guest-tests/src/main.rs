//! bufaio guest suite: PID 1 of the test VM, a child-per-test runner, and a
//! host mode for development. See README.md for the guest protocol.

mod aio;
mod cmdline;
mod exec;
mod fsx;
mod init;
mod invariants;
mod ktap;
mod pattern;
mod runner;
mod suite;
mod sys;

use std::path::PathBuf;
use std::time::Duration;

const USAGE: &str = "\
usage:
  guest-tests                         as PID 1: run per /proc/cmdline (see README.md)
  guest-tests --init                  act as init although not PID 1 (needs a private
                                      mount namespace, e.g. unshare --mount --pid --fork)
  guest-tests --host --dir DIR [--filter GLOB[,GLOB..]] [--timeout SECS]
                                      run the suite on this machine in DIR (KTAP on stdout)
  guest-tests --list [--host] [--filter GLOB[,GLOB..]]
                                      print test names
  guest-tests --soak-profiles         print the soak pressure profile names
  guest-tests --run-one NAME --dir DIR [--guest]
                                      run one test in this process (used by the runner)";

#[derive(Debug, Default)]
struct Args {
    init: bool,
    host: bool,
    list: bool,
    soak_profiles: bool,
    guest: bool,
    help: bool,
    run_one: Option<String>,
    dir: Option<PathBuf>,
    filter: Vec<String>,
    timeout: Option<u64>,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match arg.as_str() {
            "--init" => a.init = true,
            "--host" => a.host = true,
            "--list" => a.list = true,
            "--soak-profiles" => a.soak_profiles = true,
            "--guest" => a.guest = true,
            "--help" | "-h" => a.help = true,
            "--run-one" => a.run_one = Some(value(arg)?),
            "--dir" => a.dir = Some(PathBuf::from(value(arg)?)),
            "--filter" => a.filter.extend(cmdline::parse_filter(&value(arg)?)),
            "--timeout" => {
                let v = value(arg)?;
                match v.parse::<u64>() {
                    Ok(n) if n > 0 => a.timeout = Some(n),
                    _ => return Err(format!("--timeout {v:?}: expected positive seconds")),
                }
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

fn main() {
    // As PID 1 the kernel may pass stray boot words as argv: ignore argv.
    if sys::getpid() == 1 {
        init::run_as_init();
    }
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&raw) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("guest-tests: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if args.help {
        println!("{USAGE}");
        return;
    }
    if args.init {
        init::run_as_init();
    }
    if let Some(name) = &args.run_one {
        let Some(dir) = &args.dir else {
            eprintln!("guest-tests: --run-one needs --dir");
            std::process::exit(2);
        };
        std::process::exit(runner::run_one(name, dir, args.guest));
    }
    if args.soak_profiles {
        for (name, _) in suite::soak::PROFILES {
            println!("{name}");
        }
        println!("all");
        return;
    }
    if args.list {
        let labels: Vec<&str> = if args.host {
            vec!["host"]
        } else {
            init::TEST_DISKS.iter().map(|d| d.label).collect()
        };
        for i in suite::expand(&labels) {
            if cmdline::selected(&args.filter, &i.name) {
                println!("{}", i.name);
            }
        }
        return;
    }
    if args.host {
        std::process::exit(host_mode(&args));
    }
    eprintln!("guest-tests: not PID 1 and no mode given\n{USAGE}");
    std::process::exit(2);
}

/// `--host --dir DIR`: the suite on this machine, KTAP on stdout, human
/// summaries on stderr. Exit 0 if nothing failed (skips are fine).
fn host_mode(args: &Args) -> i32 {
    let Some(dir) = &args.dir else {
        eprintln!("guest-tests: --host needs --dir DIR");
        return 2;
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("guest-tests: cannot create {}: {e}", dir.display());
        return 2;
    }
    let dir = match dir.canonicalize() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("guest-tests: {}: {e}", dir.display());
            return 2;
        }
    };
    let planned: Vec<runner::Planned> = suite::expand(&["host"])
        .into_iter()
        .filter(|i| cmdline::selected(&args.filter, &i.name))
        .map(|i| runner::Planned {
            dir: if i.device == suite::Device::Slow {
                Err(runner::NotRun::Skip(
                    "needs the slow device (null_blk), guest only".to_string(),
                ))
            } else {
                Ok(dir.clone())
            },
            name: i.name,
            new_behaviour: i.new_behaviour,
        })
        .collect();
    let mut ktap = ktap::KtapWriter::new(Box::new(std::io::stdout()), "");
    if let Err(e) = ktap.header(&sys::uname_release(), &["host".to_string()], planned.len()) {
        eprintln!("guest-tests: writing KTAP: {e}");
        return 2;
    }
    let timeout = Duration::from_secs(args.timeout.unwrap_or(cmdline::DEFAULT_TEST_TIMEOUT_S));
    let (p, f, s) = runner::run_suite(&planned, timeout, false, &mut ktap, &mut |l| {
        eprintln!("{l}")
    });
    eprintln!("bufaio: {p} passed, {f} failed, {s} skipped");
    if f == 0 {
        0
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Result<Args, String> {
        parse_args(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn arg_parsing() {
        let a = args(&["--host", "--dir", "/tmp/x", "--filter", "read/*,basic/*"]).unwrap();
        assert!(a.host);
        assert_eq!(a.dir, Some(PathBuf::from("/tmp/x")));
        assert_eq!(a.filter, vec!["read/*", "basic/*"]);
        let a = args(&["--run-one", "basic/setup_destroy", "--dir", "/d", "--guest"]).unwrap();
        assert_eq!(a.run_one.as_deref(), Some("basic/setup_destroy"));
        assert!(a.guest);
        assert!(args(&["--dir"]).is_err());
        assert!(args(&["--bogus"]).is_err());
        assert!(args(&["--timeout", "0"]).is_err());
        assert_eq!(args(&["--timeout", "5"]).unwrap().timeout, Some(5));
    }
}
