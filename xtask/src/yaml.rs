//! The one module that touches serde_yaml (frozen upstream): everything else
//! goes through these functions, so the YAML backend can be swapped in one place.

use anyhow::{anyhow, Result};
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;

/// Parse `text` (read from `origin`, used in messages) into `T`.
///
/// Errors carry `file:line:column` and serde's description, which names the
/// offending key for unknown or missing fields.
pub fn from_str<T: DeserializeOwned>(text: &str, origin: &Path) -> Result<T> {
    serde_yaml::from_str(text).map_err(|e| {
        let loc = e
            .location()
            .map(|l| format!("{}:{}:{}", origin.display(), l.line(), l.column()))
            .unwrap_or_else(|| origin.display().to_string());
        anyhow!("{loc}: {}", strip_location(&e.to_string()))
    })
}

/// Serialize `value` as YAML text.
pub fn to_string<T: Serialize>(value: &T) -> Result<String> {
    serde_yaml::to_string(value).map_err(|e| anyhow!("cannot serialize YAML: {e}"))
}

/// serde_yaml appends " at line L column C" to its messages; we print the
/// location as a `file:line:col` prefix instead.
fn strip_location(msg: &str) -> &str {
    match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    }
}
