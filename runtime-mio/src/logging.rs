//! Logs on stderr via `tracing`: `VX6_LOG` sets the filter (default `info`), and
//! `VX6_LOG_FORMAT=json` writes one JSON object per line (fields as `tracing` records them)
//! instead of text.

use std::io::IsTerminal;

use anyhow::{Result, bail};
use tracing_subscriber::EnvFilter;

/// Installs the subscriber once; a `VX6_LOG_FORMAT` other than `text` or `json` is an error.
pub fn init() -> Result<()> {
    let filter = EnvFilter::try_from_env("VX6_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    let _ = match std::env::var("VX6_LOG_FORMAT").as_deref() {
        Ok("json") => builder.json().with_current_span(false).try_init(),
        Ok("text") | Err(_) => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        Ok(other) => bail!("VX6_LOG_FORMAT={other:?}: use \"text\" or \"json\""),
    };
    Ok(())
}
