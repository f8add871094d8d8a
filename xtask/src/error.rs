//! Errors that carry their exit-code class. Anything not classified is an
//! infrastructure error (exit 128) so `git bisect run` aborts rather than
//! marking a commit bad.

use crate::exitcode::Outcome;
use std::fmt;

#[derive(Debug)]
pub struct Classified {
    pub outcome: Outcome,
    pub msg: String,
}

impl fmt::Display for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Classified {}

pub fn classified(outcome: Outcome, msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Classified {
        outcome,
        msg: msg.into(),
    })
}

/// The series does not apply or the kernel does not build (exit 125).
pub fn untestable(msg: impl Into<String>) -> anyhow::Error {
    classified(Outcome::Untestable, msg)
}

/// Bad configuration or command line (exit 129).
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    classified(Outcome::Usage, msg)
}

/// The class of an error: the first classified cause in its chain, else
/// infrastructure.
pub fn outcome_of(e: &anyhow::Error) -> Outcome {
    e.chain()
        .find_map(|c| c.downcast_ref::<Classified>().map(|c| c.outcome))
        .unwrap_or(Outcome::Infrastructure)
}
