//! Verify that the kconfig options requested by the fragments survived
//! `make olddefconfig` (an option whose dependencies are not met is silently
//! dropped by kconfig).
//!
//! Value conventions, used throughout this module:
//! - `CONFIG_X=value` → `"value"`, verbatim (string quotes kept, no
//!   normalization of numbers).
//! - `# CONFIG_X is not set` → `"n"`; `CONFIG_X=n` is the same thing.
//! - An option that does not appear in the final `.config` is *absent*: its
//!   dependencies are unmet (or the symbol does not exist). For a request of
//!   `n` that is fine; for anything else it is a drop.
//!
//! Pure: no I/O.

use std::collections::BTreeMap;
use std::fmt;

/// One option requested by a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    /// Full symbol name, `CONFIG_` prefix included.
    pub name: String,
    /// `None` means `# CONFIG_X is not set`.
    pub value: Option<String>,
    /// 1-based line in the fragment.
    pub line: usize,
}

impl Requested {
    /// The requested value with "not set" spelled `"n"`.
    pub fn wanted(&self) -> &str {
        self.value.as_deref().unwrap_or("n")
    }
}

/// A requested option whose final value differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// Fragment name as given to [`verify`] (usually its path).
    pub fragment: String,
    pub line: usize,
    pub name: String,
    /// Requested value; `"n"` for `# CONFIG_X is not set`.
    pub wanted: String,
    /// Final value: `None` if absent from the final `.config`, `Some("n")` if
    /// `is not set` there.
    pub got: Option<String>,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}={} requested but ",
            self.fragment, self.line, self.name, self.wanted
        )?;
        match self.got.as_deref() {
            None => write!(f, "it is absent (missing dependency?)"),
            Some("n") => write!(f, "it is not set"),
            Some(v) => write!(f, "final .config has {}={}", self.name, v),
        }
    }
}

enum Line<'a> {
    Set(&'a str, &'a str),
    NotSet(&'a str),
    Ignored,
    Malformed,
}

fn is_symbol(name: &str) -> bool {
    name.strip_prefix("CONFIG_").is_some_and(|rest| {
        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

fn classify(line: &str) -> Line<'_> {
    let line = line.trim();
    if line.is_empty() {
        return Line::Ignored;
    }
    if let Some(comment) = line.strip_prefix('#') {
        let name = comment
            .trim()
            .strip_suffix("is not set")
            .map(str::trim_end)
            .filter(|n| is_symbol(n));
        return name.map_or(Line::Ignored, Line::NotSet);
    }
    match line.split_once('=') {
        Some((name, value)) if is_symbol(name) => Line::Set(name, value),
        _ => Line::Malformed,
    }
}

/// Options requested by a config fragment, in file order. Blank lines and
/// comments other than `# CONFIG_X is not set` are skipped; so are malformed
/// lines (see [`lint_fragment`] to report them).
pub fn parse_fragment(text: &str) -> Vec<Requested> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let (name, value) = match classify(l) {
                Line::Set(n, v) => (n, Some(v.to_string())),
                Line::NotSet(n) => (n, None),
                Line::Ignored | Line::Malformed => return None,
            };
            Some(Requested {
                name: name.to_string(),
                value,
                line: i + 1,
            })
        })
        .collect()
}

/// Lines of a fragment that are neither blank, a comment, nor a
/// `CONFIG_X=value` assignment (e.g. `FOO=y`, `CONFIG_FOO y`), as
/// `(1-based line, text)`. kconfig ignores such lines, so they are almost
/// certainly mistakes.
#[allow(dead_code)] // not yet called by kconfig.rs
pub fn lint_fragment(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| matches!(classify(l), Line::Malformed))
        .map(|(i, l)| (i + 1, l.to_string()))
        .collect()
}

/// The final `.config` as symbol → value (see the module docs: `is not set`
/// maps to `"n"`, absent symbols are not in the map). Later lines win.
pub fn parse_config(text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for l in text.lines() {
        match classify(l) {
            Line::Set(n, v) => {
                map.insert(n.to_string(), v.to_string());
            }
            Line::NotSet(n) => {
                map.insert(n.to_string(), "n".to_string());
            }
            Line::Ignored | Line::Malformed => {}
        }
    }
    map
}

/// Check every request against the final `.config`. `requested` is in merge
/// order: for an option requested several times only the last request counts
/// (later fragments override earlier ones, as with `merge_config.sh`).
/// Result is ordered by fragment, then line.
pub fn verify(requested: &[(String, Vec<Requested>)], final_config: &str) -> Vec<Dropped> {
    let config = parse_config(final_config);
    // name -> (fragment index, request)
    let mut last: BTreeMap<&str, (usize, &Requested)> = BTreeMap::new();
    for (fi, (_, reqs)) in requested.iter().enumerate() {
        for r in reqs {
            last.insert(r.name.as_str(), (fi, r));
        }
    }
    let mut dropped: Vec<(usize, Dropped)> = last
        .into_iter()
        .filter_map(|(name, (fi, r))| {
            let wanted = r.wanted();
            let got = config.get(name);
            let ok = match got {
                Some(v) => v == wanted,
                None => wanted == "n",
            };
            (!ok).then(|| {
                (
                    fi,
                    Dropped {
                        fragment: requested[fi].0.clone(),
                        line: r.line,
                        name: name.to_string(),
                        wanted: wanted.to_string(),
                        got: got.cloned(),
                    },
                )
            })
        })
        .collect();
    dropped.sort_by_key(|(fi, d)| (*fi, d.line));
    dropped.into_iter().map(|(_, d)| d).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = include_str!("../tests/golden/kconfig/base.config");
    const DEBUG: &str = include_str!("../tests/golden/kconfig/debug.config");
    const FINAL: &str = include_str!("../tests/golden/kconfig/final.config");

    fn req(name: &str, value: Option<&str>, line: usize) -> Requested {
        Requested {
            name: name.into(),
            value: value.map(Into::into),
            line,
        }
    }

    fn fragments() -> Vec<(String, Vec<Requested>)> {
        vec![
            ("kconfigs/base.config".to_string(), parse_fragment(BASE)),
            ("kconfigs/debug.config".to_string(), parse_fragment(DEBUG)),
        ]
    }

    #[test]
    fn fragment_parsing() {
        let r = parse_fragment(BASE);
        assert_eq!(r[0], req("CONFIG_64BIT", Some("y"), 3));
        assert!(r.contains(&req("CONFIG_MODULES", None, 11)));
        assert!(r.contains(&req(
            "CONFIG_CMDLINE",
            Some("\"console=ttyS0 panic=-1\""),
            10
        )));
        assert!(r.contains(&req("CONFIG_LOG_BUF_SHIFT", Some("17"), 9)));
        assert_eq!(r.len(), 10);
        assert_eq!(lint_fragment(BASE), vec![]);
        assert_eq!(
            lint_fragment("CONFIG_A=y\nFOO=y\n  # comment\nCONFIG_B y\n#CONFIG_C is not set\n"),
            vec![(2, "FOO=y".to_string()), (4, "CONFIG_B y".to_string())]
        );
        assert_eq!(
            parse_fragment("#CONFIG_C is not set\n"),
            vec![req("CONFIG_C", None, 1)]
        );
    }

    #[test]
    fn config_parsing() {
        let c = parse_config(FINAL);
        assert_eq!(c.get("CONFIG_64BIT").map(String::as_str), Some("y"));
        assert_eq!(c.get("CONFIG_MODULES").map(String::as_str), Some("n"));
        assert_eq!(
            c.get("CONFIG_CMDLINE").map(String::as_str),
            Some("\"console=ttyS0 panic=-1\"")
        );
        assert_eq!(c.get("CONFIG_KASAN"), None);
        // Comment headers are not options.
        assert!(c.keys().all(|k| k.starts_with("CONFIG_")));
    }

    #[test]
    fn golden_fragments_against_final_config() {
        let dropped = verify(&fragments(), FINAL);
        let shown: Vec<String> = dropped.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "kconfigs/base.config:6: CONFIG_VIRTIO_BLK=y requested but final .config has CONFIG_VIRTIO_BLK=m",
                "kconfigs/base.config:7: CONFIG_EXT2_FS=y requested but it is not set",
                "kconfigs/debug.config:4: CONFIG_KASAN=y requested but it is absent (missing dependency?)",
                "kconfigs/debug.config:7: CONFIG_DEBUG_INFO_BTF=n requested but final .config has CONFIG_DEBUG_INFO_BTF=y",
            ]
        );
        assert_eq!(dropped[2].got, None);
        assert_eq!(dropped[1].got.as_deref(), Some("n"));
        assert_eq!(dropped[3].wanted, "n");
    }

    #[test]
    fn later_fragment_overrides_earlier() {
        // base asks CONFIG_LOG_BUF_SHIFT=17, debug asks 18; final has 18.
        let dropped = verify(&fragments(), FINAL);
        assert!(dropped.iter().all(|d| d.name != "CONFIG_LOG_BUF_SHIFT"));
        // Reverse the order: now 17 is the last word and it was not honored,
        // reported against base.config.
        let mut rev = fragments();
        rev.reverse();
        let d: Vec<_> = verify(&rev, FINAL)
            .into_iter()
            .filter(|d| d.name == "CONFIG_LOG_BUF_SHIFT")
            .collect();
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].fragment.as_str(), d[0].line),
            ("kconfigs/base.config", 9)
        );
        // Within one fragment, the later line wins too.
        let f = vec![("f".to_string(), parse_fragment("CONFIG_A=m\nCONFIG_A=y\n"))];
        assert_eq!(verify(&f, "CONFIG_A=y\n"), vec![]);
        assert_eq!(verify(&f, "CONFIG_A=m\n")[0].line, 2);
    }

    #[test]
    fn not_set_requests() {
        let f = vec![(
            "f".to_string(),
            parse_fragment("# CONFIG_A is not set\nCONFIG_B=n\n# CONFIG_C is not set\n"),
        )];
        // Not set, explicit n, and absent all satisfy an "n" request.
        assert_eq!(verify(&f, "# CONFIG_A is not set\nCONFIG_B=n\n"), vec![]);
        let d = verify(&f, "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\n");
        let shown: Vec<String> = d.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "f:1: CONFIG_A=n requested but final .config has CONFIG_A=y",
                "f:3: CONFIG_C=n requested but final .config has CONFIG_C=m",
            ]
        );
    }

    #[test]
    fn values_compare_verbatim() {
        let f = vec![(
            "f".to_string(),
            parse_fragment("CONFIG_S=\"a b\"\nCONFIG_H=0x10\n"),
        )];
        assert_eq!(verify(&f, "CONFIG_S=\"a b\"\nCONFIG_H=0x10\n"), vec![]);
        let d = verify(&f, "CONFIG_S=\"a\"\nCONFIG_H=16\n");
        assert_eq!(d.len(), 2);
        assert_eq!(verify(&[], ""), vec![]);
    }
}
