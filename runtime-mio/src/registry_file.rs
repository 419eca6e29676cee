//! Persisting the registry: atomic writes, and corrupt files set aside rather than lost.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use vx6_core::Registry;
use vx6_core::registry::RegistryLimits;

/// Loads the registry at `path`. A missing file gives an empty registry. A corrupt one is
/// renamed to `<path>.corrupt-<unix time>` with a warning on stderr, and an empty registry is
/// returned, so the node keeps working and the bad file stays for inspection.
pub fn load(path: &Path, limits: RegistryLimits, unix_now: u64) -> Result<Registry> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Registry::new(limits)),
        Err(e) => {
            return Err(e).with_context(|| format!("reading registry file {}", path.display()));
        }
    };
    match Registry::from_bytes(&bytes, limits, unix_now) {
        Ok((registry, report)) => {
            if report.invalid > 0 {
                eprintln!(
                    "vx6: warning: registry file {}: dropped {} records that no longer verify",
                    path.display(),
                    report.invalid
                );
            }
            Ok(registry)
        }
        Err(err) => {
            let aside = PathBuf::from(format!("{}.corrupt-{unix_now}", path.display()));
            std::fs::rename(path, &aside).with_context(|| {
                format!(
                    "registry file {} is corrupt ({err}) and could not be moved aside",
                    path.display()
                )
            })?;
            eprintln!(
                "vx6: warning: registry file {} is corrupt ({err}); moved it to {} and starting \
                 with an empty registry",
                path.display(),
                aside.display()
            );
            Ok(Registry::new(limits))
        }
    }
}

/// Writes the registry to `path` atomically (see [`crate::atomic::write`]).
pub fn save(path: &Path, registry: &Registry) -> Result<()> {
    crate::atomic::write(path, &registry.to_bytes())
        .with_context(|| format!("writing registry file {}", path.display()))
}
