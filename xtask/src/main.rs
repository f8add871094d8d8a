//! bufaio host tool (`cargo xtask`): config → fetch → patch → kconfig → build →
//! rootfs → vm → guest protocol → report.

mod bench;
mod cache;
mod cmd;
mod config;
mod deps;
mod error;
mod exitcode;
mod fetch;
mod gha;
mod golden;
mod junit;
mod kbuild;
mod kcfgcheck;
mod kconfig;
mod ktap;
mod patch;
mod peers;
mod pipeline;
mod proc;
mod qemu;
mod report;
mod rootfs;
mod scan;
mod soak;
mod ssh;
mod ui;
mod vm;
mod yaml;

use clap::{Parser, Subcommand};

/// Build, boot and test Linux with the bufaio AIO series.
///
/// Exit codes: 0 all passed; 1 a test failed; 2 the kernel crashed, splatted
/// or hung; 125 untestable (series does not apply, kernel does not build);
/// 128 infrastructure error; 129 usage or configuration error.
#[derive(Parser)]
#[command(name = "cargo xtask", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List missing host tools (with the install command); --install installs them.
    Deps {
        #[arg(long)]
        install: bool,
    },
    /// Fetch and verify the kernel source only.
    Fetch {
        #[arg(long, default_value = config::DEFAULT_FILE)]
        config: std::path::PathBuf,
    },
    /// Fetch, patch, configure and build the kernel(s).
    Build(cmd::build::Args),
    /// The main job: build, boot and run the guest suite on both kernels.
    Run(cmd::run::Args),
    /// Boot a kernel and run one command in the guest.
    Exec(cmd::exec::Args),
    /// Performance suite: unpatched vs patched AIO vs io_uring vs thread pool vs sync (issue 5).
    Bench(cmd::bench::Args),
    /// Soak: the fsx model checker alone, on the slow device and under pressure, at scale (issue 14).
    Soak(cmd::soak::Args),
    /// Measure the toolkit: cold, warm, edit→result, boot→first KTAP.
    BenchToolkit(cmd::bench_toolkit::Args),
    /// Bisect: first bad patch of the series, or first bad upstream commit.
    #[command(subcommand)]
    Bisect(cmd::bisect::Cmd),
    /// For every prefix of the series: applies, builds, checkpatch --strict, (--boot) boots.
    CheckSeries(cmd::check_series::Args),
    /// Reclaim disk: disk images of finished or killed runs; --runs-older-than D, --trees.
    Clean(cmd::clean::Args),
    /// actionlint and zizmor over .github/workflows (tools installed on first use).
    LintWorkflows,
    /// Boot a kernel with networking and an SSH server and keep it running (--stop ends it).
    Vm(cmd::vm::Args),
    /// SSH into the `vm` guest: run a command (after --) or an interactive shell.
    Ssh(cmd::ssh::Args),
    /// Rebuild guest-tests, upload it to the `vm` guest and (--run) run tests there.
    Push(cmd::push::Args),
}

fn fetch_only(config: std::path::PathBuf) -> anyhow::Result<i32> {
    let common = cmd::Common {
        config,
        flavor: "default".into(),
        accel: None,
        append: vec![],
        series: None,
        memory: None,
        cpus: None,
        test_timeout: None,
        bzimage: None,
        keep_disks: false,
        targets: vec![],
    };
    // Every target's source ($BUFAIO_TARGET narrows it).
    for t in common.targets_of(true)? {
        let ctx = t.ctx;
        let _lock = ctx.cache.lock()?;
        let f = fetch::fetch_with(&ctx.cfg.kernel.sources, &ctx.cache, &ctx.ui, true)?;
        println!(
            "{} {} ({}) target {}",
            f.id,
            f.tarball.display(),
            f.description,
            t.name
        );
    }
    Ok(0)
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exitcode::Outcome::Usage.code()
            } else {
                0
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    proc::mark_runs_on_signals();
    let r = match cli.cmd {
        Cmd::Deps { install } => deps::cmd(install),
        Cmd::Fetch { config } => fetch_only(config),
        Cmd::Build(a) => cmd::build::main(a),
        Cmd::Run(a) => cmd::run::main(a),
        Cmd::Exec(a) => cmd::exec::main(a),
        Cmd::Bench(a) => cmd::bench::main(a),
        Cmd::Soak(a) => cmd::soak::main(a),
        Cmd::BenchToolkit(a) => cmd::bench_toolkit::main(a),
        Cmd::Bisect(c) => cmd::bisect::main(c),
        Cmd::CheckSeries(a) => cmd::check_series::main(a),
        Cmd::Clean(a) => cmd::clean::main(a, &cmd::project_root()),
        Cmd::LintWorkflows => cmd::lint_workflows::main(),
        Cmd::Vm(a) => cmd::vm::main(a),
        Cmd::Ssh(a) => cmd::ssh::main(a),
        Cmd::Push(a) => cmd::push::main(a),
    };
    match r {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            let outcome = error::outcome_of(&e);
            eprintln!("error: {e:#}");
            eprintln!("({}: exit {})", outcome.label(), outcome.code());
            std::process::exit(outcome.code());
        }
    }
}
