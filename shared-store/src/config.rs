//! Settings files: TOML read into a program's settings type, then checked, with errors that
//! name the file and say what is wrong. Both programs read their config this way.

use std::path::{Path, PathBuf};

/// A config file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading it failed.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not valid TOML for these settings.
    #[error("the config file {path} is not valid: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, from the TOML parser (with line and column).
        message: String,
    },
    /// It parses, but a value is out of range or inconsistent.
    #[error("the config file {path} is not usable: {message}")]
    Unusable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Reads a TOML settings file into `T` and checks it with `check` (what a TOML type cannot
/// say)
pub fn load_checked<T: serde::de::DeserializeOwned>(
    path: &Path,
    check: impl FnOnce(&T) -> Result<(), String>,
) -> Result<T, ConfigError> {
    let config = read_toml(path)?;
    check(&config).map_err(|message| ConfigError::Unusable {
        path: path.to_path_buf(),
        message,
    })?;
    Ok(config)
}

/// Reads a TOML settings file into `T`.
fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Invalid {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
