//! Persisting the registry: atomic writes, and corrupt files set aside rather than lost.

use std::io::Write;
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

/// Writes the registry to `path` atomically: a temporary file in the same directory, fsync,
/// rename over the old file, fsync of the directory. A crash leaves the old file or the new one.
pub fn save(path: &Path, registry: &Registry) -> Result<()> {
    let tmp = PathBuf::from(format!("{}.tmp-{}", path.display(), std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&registry.to_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_parent(path)
    };
    write()
        .inspect_err(|_| {
            // Best effort: a leftover temp file is harmless, the real file is untouched.
            let _ = std::fs::remove_file(&tmp);
        })
        .with_context(|| format!("writing registry file {}", path.display()))
}

#[cfg(unix)]
fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

#[cfg(not(unix))]
fn sync_parent(_path: &Path) -> std::io::Result<()> {
    // Windows has no directory fsync; the rename itself is atomic with MOVEFILE_REPLACE_EXISTING.
    Ok(())
}
