//! The identity file: the node's Ed25519 secret, hex-encoded, readable only by its owner.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use vx6_core::Identity;

const KEY_TAG: &str = "vx6-ed25519-secret-v1";

/// Writes `identity` to a new file at `path` with mode 0600. Never overwrites.
pub fn create(path: &Path, identity: &Identity) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating identity file {}", path.display()))?;
    let hex: String = identity
        .secret_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let text = format!(
        "# VX6 node identity: the Ed25519 secret key of node {}.\n\
         # Whoever holds this file is this node. Keep it private; back it up.\n\
         {KEY_TAG} {hex}\n",
        identity.node_id()
    );
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing identity file {}", path.display()))
}

/// Reads the identity at `path`, refusing a file that others can read (as ssh does).
pub fn load(path: &Path) -> Result<Identity> {
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "no identity at {}; run `vx6 init --home {} --name USERNAME` first",
                path.display(),
                path.parent().unwrap_or(path).display()
            )
        }
        Err(e) => {
            return Err(e).with_context(|| format!("reading identity file {}", path.display()));
        }
    };
    check_private(path)?;
    parse(&text).with_context(|| format!("identity file {} is corrupt", path.display()))
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("reading identity file {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "identity file {} is accessible by other users (mode {:04o}); run `chmod 600 {}`",
            path.display(),
            mode & 0o7777,
            path.display()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<()> {
    Ok(())
}

fn parse(bytes: &[u8]) -> Result<Identity> {
    let text = std::str::from_utf8(bytes).context("it is not UTF-8 text")?;
    let mut keys = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let Some(line) = keys.next() else {
        bail!("it holds no `{KEY_TAG}` line");
    };
    if keys.next().is_some() {
        bail!("it holds more than one key line");
    }
    let Some(hex) = line.strip_prefix(KEY_TAG).map(str::trim) else {
        bail!("expected a line `{KEY_TAG} <64 hex digits>`");
    };
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("the key is not 64 hex digits");
    }
    let mut secret = [0u8; 32];
    for (i, byte) in secret.iter_mut().enumerate() {
        // Checked above: 64 ASCII hex digits.
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("validated hex");
    }
    Ok(Identity::from_secret_bytes(&secret))
}
