//! Finding PostgreSQL's programs: Debian installs one folder per major version,
//! `/usr/lib/postgresql/<version>/bin`, not on `PATH`; the highest version with an `initdb` wins.

use std::path::{Path, PathBuf};

/// Where Debian installs the server programs, one subfolder per major version.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// The error when no `initdb` is found, worded as the project's scripts and notes expect.
pub(crate) const MISSING: &str =
    "PostgreSQL is missing: run scripts/setup-postgres (scripts/test does)";

/// The `bin` folder of one installed PostgreSQL version.
#[derive(Debug, Clone)]
pub(crate) struct BinDir {
    path: PathBuf,
}

impl BinDir {
    /// The `bin` folder of the highest version under `/usr/lib/postgresql`, or [`MISSING`].
    pub(crate) fn find() -> Result<BinDir, String> {
        find_in(Path::new(DEBIAN_ROOT))
    }

    /// The folder itself.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The path of one program in the folder (`psql`, `pg_ctl`, ...).
    pub(crate) fn program(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

/// [`BinDir::find`] with the root folder as an argument, for the tests.
fn find_in(root: &Path) -> Result<BinDir, String> {
    let entries = std::fs::read_dir(root).map_err(|_| MISSING.to_owned())?;
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = parse_version(entry.file_name().to_str()?)?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, path)| BinDir { path })
        .ok_or_else(|| MISSING.to_owned())
}

/// `"15"` → `[15]`, `"9.6"` → `[9, 6]`; anything else is not a version folder. Vectors compare
/// element by element, so 9.6 < 15 < 16.
fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Makes `root/<version>/bin`, with an `initdb` file when `with_initdb`.
    fn version(root: &Path, version: &str, with_initdb: bool) {
        let bin = root.join(version).join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        if with_initdb {
            std::fs::write(bin.join("initdb"), "").unwrap();
        }
    }

    #[test]
    fn picks_the_highest_version_that_has_initdb() {
        let root = tempfile::tempdir().unwrap();
        version(root.path(), "9.6", true);
        version(root.path(), "15", true);
        version(root.path(), "16", false); // client only: no initdb
        version(root.path(), "latest", true); // not a version
        let found = find_in(root.path()).unwrap();
        assert_eq!(found.path(), root.path().join("15").join("bin"));
    }

    #[test]
    fn says_how_to_install_when_nothing_is_there() {
        let root = tempfile::tempdir().unwrap();
        let missing = root.path().join("nothing");
        assert_eq!(find_in(&missing).unwrap_err(), MISSING);
        version(root.path(), "15", false);
        assert_eq!(find_in(root.path()).unwrap_err(), MISSING);
        assert_eq!(
            MISSING,
            "PostgreSQL is missing: run scripts/setup-postgres (scripts/test does)"
        );
    }

    #[test]
    fn versions_compare_by_number() {
        assert!(parse_version("9.6") < parse_version("15"));
        assert!(parse_version("15") < parse_version("16"));
        assert_eq!(parse_version("15"), Some(vec![15]));
        assert_eq!(parse_version(""), None);
        assert_eq!(parse_version("15beta"), None);
    }
}
