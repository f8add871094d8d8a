//! Kernel command line parsing (pure) and test-name globbing. The keys
//! are the contract's (`bufaio_contract::param`).

use bufaio_contract::param;

/// What PID 1 should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Suite,
    Exec,
    Probe,
}

/// Test fixtures used by the host tool's own tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fixture {
    /// PID 1 exits right after BUFAIO-READY (kernel panics: "Attempted to
    /// kill init!").
    Panic,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    pub mode: Mode,
    /// Globs over test names; empty selects everything.
    pub filter: Vec<String>,
    /// Per-test timeout in seconds.
    pub test_timeout: u64,
    pub fixture: Option<Fixture>,
    /// Sizes of the soak workloads (`bufaio.soak_*`).
    pub soak: SoakConfig,
    /// `bufaio.heartbeat=S`: PID 1 says it is alive on the console every S
    /// seconds, so the host's silence timeout watches the guest, not a
    /// quiet command's output.
    pub heartbeat: Option<u64>,
    /// Unknown `bufaio.*` keys (reported, not fatal).
    pub warnings: Vec<String>,
}

pub const DEFAULT_TEST_TIMEOUT_S: u64 = 120;

/// `bufaio.soak_ops=N`, `bufaio.soak_seed=S` (decimal or 0x-hex),
/// `bufaio.soak_secs=S`, `bufaio.soak_profile=NAME[,NAME..]`,
/// `bufaio.soak_stall_secs=S`: what the soak tests do (unset: their short
/// defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SoakConfig {
    pub ops: Option<u64>,
    pub seed: Option<u64>,
    pub secs: Option<u64>,
    pub profiles: Vec<String>,
    pub stall_secs: Option<u64>,
    /// `bufaio.soak_overlap=0`: the writes of one AIO batch never overlap.
    pub no_overlap: bool,
}

pub use bufaio_contract::parse_u64;

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig {
            mode: Mode::Suite,
            filter: Vec::new(),
            test_timeout: DEFAULT_TEST_TIMEOUT_S,
            fixture: None,
            soak: SoakConfig::default(),
            heartbeat: None,
            warnings: Vec::new(),
        }
    }
}

/// Splits a kernel command line into parameters the way the kernel does:
/// whitespace-separated, double quotes group (and are removed).
pub fn split_params(cmdline: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut have = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                have = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if have {
                    out.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            c => {
                cur.push(c);
                have = true;
            }
        }
    }
    if have {
        out.push(cur);
    }
    out
}

/// Splits a comma-separated filter value into globs (empty items dropped).
pub fn parse_filter(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses `/proc/cmdline`. Later occurrences of a key win. Invalid values of
/// known keys are errors; unknown `bufaio.*` keys become warnings.
pub fn parse(cmdline: &str) -> Result<BootConfig, String> {
    let mut cfg = BootConfig::default();
    for p in split_params(cmdline) {
        let (key, value) = match p.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (p.as_str(), None),
        };
        let Some(sub) = key.strip_prefix("bufaio.") else {
            continue;
        };
        let value = value.unwrap_or("");
        match sub {
            param::MODE => {
                cfg.mode = match value {
                    "suite" => Mode::Suite,
                    "exec" => Mode::Exec,
                    "probe" => Mode::Probe,
                    other => {
                        return Err(format!(
                            "bufaio.mode={other:?}: expected suite, exec or probe"
                        ))
                    }
                }
            }
            param::FILTER => cfg.filter = parse_filter(value),
            param::TEST_TIMEOUT => {
                cfg.test_timeout = match value.parse::<u64>() {
                    Ok(n) if n > 0 => n,
                    _ => {
                        return Err(format!(
                            "bufaio.test_timeout={value:?}: expected a positive number of seconds"
                        ))
                    }
                }
            }
            param::FIXTURE => {
                cfg.fixture = match value {
                    "panic" => Some(Fixture::Panic),
                    "" | "none" => None,
                    other => return Err(format!("bufaio.fixture={other:?}: expected panic")),
                }
            }
            param::SOAK_OPS | param::SOAK_SECS | param::SOAK_STALL_SECS => {
                let n = match value.parse::<u64>() {
                    Ok(n) if n > 0 => n,
                    _ => {
                        return Err(format!(
                            "bufaio.{sub}={value:?}: expected a positive number"
                        ))
                    }
                };
                match sub {
                    param::SOAK_OPS => cfg.soak.ops = Some(n),
                    param::SOAK_SECS => cfg.soak.secs = Some(n),
                    _ => cfg.soak.stall_secs = Some(n),
                }
            }
            param::HEARTBEAT => {
                cfg.heartbeat = match value.parse::<u64>() {
                    Ok(n) if n > 0 => Some(n),
                    _ => {
                        return Err(format!(
                            "bufaio.heartbeat={value:?}: expected a positive number of seconds"
                        ))
                    }
                }
            }
            param::SOAK_SEED => {
                cfg.soak.seed = Some(parse_u64(value).ok_or_else(|| {
                    format!("bufaio.soak_seed={value:?}: expected a number (decimal or 0x-hex)")
                })?)
            }
            param::SOAK_PROFILE => cfg.soak.profiles = parse_filter(value),
            param::SOAK_OVERLAP => {
                cfg.soak.no_overlap = match value {
                    "0" => true,
                    "1" => false,
                    other => return Err(format!("bufaio.soak_overlap={other:?}: expected 0 or 1")),
                }
            }
            other => cfg
                .warnings
                .push(format!("unknown kernel parameter bufaio.{other} ignored")),
        }
    }
    Ok(cfg)
}

/// Glob match over the whole name: `*` matches any run of characters
/// (including `/` and `@`), `?` exactly one character.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Whether `name` is selected by `filter`: by any of its globs (all tests
/// when it has none) and by none of its `!`-prefixed exclusions, so
/// `read/*,!read/eio*` is the read group without the EIO tests and
/// `!soak/*` everything but the soak group.
pub fn selected(filter: &[String], name: &str) -> bool {
    let (exclude, include): (Vec<&String>, Vec<&String>) =
        filter.iter().partition(|g| g.starts_with('!'));
    (include.is_empty() || include.iter().any(|g| glob_match(g, name)))
        && !exclude.iter().any(|g| glob_match(&g[1..], name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c_has_no_warnings(cmdline: &str) -> bool {
        parse(cmdline)
            .map(|c| c.warnings.is_empty())
            .unwrap_or(false)
    }

    #[test]
    fn defaults() {
        let c = parse("console=ttyS0 root=/dev/vda rw panic=-1 init=/init").unwrap();
        assert_eq!(c, BootConfig::default());
        assert_eq!(c.mode, Mode::Suite);
        assert_eq!(c.test_timeout, 120);
        assert!(c.filter.is_empty());
        assert_eq!(c.fixture, None);
    }

    #[test]
    fn all_keys() {
        let c = parse(
            "console=ttyS0 bufaio.mode=exec bufaio.filter=read/*,basic/setup_destroy \
             bufaio.test_timeout=30 bufaio.fixture=panic\n",
        )
        .unwrap();
        assert_eq!(c.mode, Mode::Exec);
        assert_eq!(c.filter, vec!["read/*", "basic/setup_destroy"]);
        assert_eq!(c.test_timeout, 30);
        assert_eq!(c.fixture, Some(Fixture::Panic));
        assert_eq!(parse("bufaio.mode=probe").unwrap().mode, Mode::Probe);
        let s = parse(
            "bufaio.soak_ops=100000 bufaio.soak_seed=0x1F bufaio.soak_secs=60 \
             bufaio.soak_profile=dirty,freeze bufaio.soak_stall_secs=30",
        )
        .unwrap()
        .soak;
        assert_eq!(
            s,
            SoakConfig {
                ops: Some(100_000),
                seed: Some(31),
                secs: Some(60),
                profiles: vec!["dirty".into(), "freeze".into()],
                stall_secs: Some(30),
                no_overlap: false,
            }
        );
        assert!(parse("bufaio.soak_ops=0").is_err());
        assert_eq!(parse("bufaio.heartbeat=45").unwrap().heartbeat, Some(45));
        assert!(parse("bufaio.heartbeat=0").is_err());
        assert!(parse("bufaio.soak_seed=zz")
            .unwrap_err()
            .contains("soak_seed"));
        assert!(c_has_no_warnings("bufaio.soak_seed=12"));
        assert_eq!(parse("bufaio.mode=suite").unwrap().mode, Mode::Suite);
    }

    #[test]
    fn last_wins_and_empty_filter() {
        let c = parse("bufaio.mode=exec bufaio.mode=suite bufaio.filter=a bufaio.filter=").unwrap();
        assert_eq!(c.mode, Mode::Suite);
        assert!(c.filter.is_empty());
        assert_eq!(
            parse("bufaio.filter=,a,,b ,").unwrap().filter,
            vec!["a", "b"]
        );
    }

    #[test]
    fn quotes() {
        let c = parse("foo=\"a b\" \"bufaio.filter=x*,y\" bufaio.mode=\"probe\"").unwrap();
        assert_eq!(c.filter, vec!["x*", "y"]);
        assert_eq!(c.mode, Mode::Probe);
        assert_eq!(
            split_params(" a  \"b c\"\td=\"e f\" "),
            vec!["a", "b c", "d=e f"]
        );
    }

    #[test]
    fn errors_and_warnings() {
        assert!(parse("bufaio.mode=bogus").is_err());
        assert!(parse("bufaio.mode").is_err());
        assert!(parse("bufaio.test_timeout=0").is_err());
        assert!(parse("bufaio.test_timeout=ten").is_err());
        assert!(parse("bufaio.fixture=explode").is_err());
        let c = parse("bufaio.colour=blue bufaioX=1").unwrap();
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("bufaio.colour"));
    }

    #[test]
    fn globbing() {
        let f = parse_filter("read/*,!read/eio*");
        assert!(selected(&f, "read/roundtrip_aligned@ext2"));
        assert!(!selected(&f, "read/eio@ext2"));
        assert!(!selected(&f, "write/append@ext2"));
        let f = parse_filter("!soak/*");
        assert!(selected(&f, "write/append@ext2"));
        assert!(!selected(&f, "soak/fsx@ext3"));
        assert!(selected(&[], "soak/fsx@ext3"));
        assert!(glob_match("read/*", "read/roundtrip_aligned@ext2"));
        assert!(glob_match("*@ext3", "write/roundtrip_unaligned@ext3"));
        assert!(!glob_match("*@ext3", "write/roundtrip_unaligned@ext2"));
        assert!(glob_match("basic/setup_destroy", "basic/setup_destroy"));
        assert!(!glob_match("basic/setup", "basic/setup_destroy"));
        assert!(glob_match(
            "read/short_at_eof@ext?",
            "read/short_at_eof@ext2"
        ));
        assert!(!glob_match(
            "read/short_at_eof@ext?",
            "read/short_at_eof@ext"
        ));
        assert!(glob_match("*", ""));
        assert!(glob_match("**a*b", "xxaYYb"));
        assert!(!glob_match("*a*b", "xxaYYbc"));
        assert!(glob_match("*/*_*@*", "read/roundtrip_aligned@ext2"));
        assert!(selected(&[], "anything"));
        assert!(selected(&["x".into(), "read/*".into()], "read/a"));
        assert!(!selected(&["x".into()], "read/a"));
    }
}
