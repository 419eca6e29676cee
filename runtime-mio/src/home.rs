//! The node's home directory and the files in it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Environment variable that overrides the default home directory.
pub const HOME_ENV: &str = "VX6_HOME";

/// Paths of one node's files.
pub struct Home {
    dir: PathBuf,
}

impl Home {
    /// The home named by `--home`, else `$VX6_HOME`, else the platform's data directory.
    pub fn locate(flag: Option<PathBuf>) -> Result<Self> {
        if let Some(dir) = flag {
            return Ok(Self { dir });
        }
        if let Some(dir) = std::env::var_os(HOME_ENV).filter(|v| !v.is_empty()) {
            return Ok(Self { dir: dir.into() });
        }
        let Some(dirs) = directories::ProjectDirs::from("", "", "vx6") else {
            bail!("no home directory could be determined; pass --home DIR or set {HOME_ENV}");
        };
        Ok(Self {
            dir: dirs.data_dir().to_path_buf(),
        })
    }

    /// Creates the directory (private to the user on Unix) if it does not exist.
    pub fn create(&self) -> Result<()> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&self.dir)
            .with_context(|| format!("creating home directory {}", self.dir.display()))
    }

    /// The directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The secret key file.
    pub fn identity(&self) -> PathBuf {
        self.dir.join("identity.key")
    }

    /// The TOML configuration.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// The persisted registry.
    pub fn registry(&self) -> PathBuf {
        self.dir.join("registry.bin")
    }
}
