//! `config.toml` in the home directory.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use serde::Deserialize;
use vx6_core::Username;

/// The settings a node reads at start. Command-line flags override them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The username this node claims.
    pub name: Username,
}

/// The commented file `vx6 init` writes.
pub fn template(name: &Username) -> String {
    format!(
        "# VX6 node configuration, written by `vx6 init`.\n\
         # Command-line flags override what is set here.\n\
         \n\
         # The username this node claims. Its services are reached as {name}.<service>;\n\
         # the claim is signed with this node's key (identity.key).\n\
         name = \"{name}\"\n"
    )
}

/// Reads and validates the config at `path`; errors name the file and line.
pub fn load(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let line = e.span().map(|s| {
            1 + text.as_bytes()[..s.start.min(text.len())]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
        });
        let message = e.message().replace('\n', " ");
        match line {
            Some(line) => anyhow!("config file {} line {line}: {message}", path.display()),
            None => anyhow!("config file {}: {message}", path.display()),
        }
    })
}
