//! What a consumer remembers so that it can resume after being offline: per node, the
//! archive id (XEP-0359 stanza id) of the last item it printed, kept in a small file, and
//! the archive ids printed lately, to print no item twice.
//!
//! The file holds one line per node, `NODE<TAB>ARCHIVEID`, with `\` written `\\`, a tab
//! `\t` and a line break `\n` in either field. It is replaced whole on each change (a
//! temporary file beside it, synced, then renamed over it), so a reader or a crash sees the
//! old content or the new one, never half of it; it is created readable by its owner only
//! (0600). One consumer process should use a file at a time: two would overwrite each
//! other's changes.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading, writing, syncing or renaming failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// A line is not `NODE<TAB>ARCHIVEID` with known escapes.
    #[error("{path} line {line}: not NODE<TAB>ARCHIVEID")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
    },
}

/// The positions kept in a state file: per node, the archive id of the last item printed.
#[derive(Debug)]
pub struct ResumeState {
    path: PathBuf,
    positions: BTreeMap<String, String>,
}

impl ResumeState {
    /// Reads the file at `path`; a file that does not exist yet holds no position.
    pub fn load(path: &Path) -> Result<Self, StateError> {
        let io = |source| StateError::Io {
            path: path.to_owned(),
            source,
        };
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(e)),
        };
        let mut positions = BTreeMap::new();
        for (index, line) in text.lines().enumerate() {
            if line.is_empty() {
                continue;
            }
            let malformed = || StateError::Malformed {
                path: path.to_owned(),
                line: index + 1,
            };
            let (node, id) = line.split_once('\t').ok_or_else(malformed)?;
            let (node, id) = (unescape(node), unescape(id));
            match (node, id) {
                (Some(node), Some(id)) if !node.is_empty() && !id.is_empty() => {
                    positions.insert(node, id);
                }
                _ => return Err(malformed()),
            }
        }
        Ok(Self {
            path: path.to_owned(),
            positions,
        })
    }

    /// The archive id of the last item printed from `node`, if any.
    pub fn position(&self, node: &str) -> Option<&str> {
        self.positions.get(node).map(String::as_str)
    }

    /// Records `id` as the last item printed from `node` and replaces the file.
    pub fn set(&mut self, node: &str, id: &str) -> Result<(), StateError> {
        if self.position(node) == Some(id) {
            return Ok(());
        }
        self.positions.insert(node.to_owned(), id.to_owned());
        self.write()
    }

    /// Writes the positions to a temporary file beside the state file, syncs it, and
    /// renames it over the state file.
    fn write(&self) -> Result<(), StateError> {
        let mut text = String::new();
        for (node, id) in &self.positions {
            text.push_str(&escape(node));
            text.push('\t');
            text.push_str(&escape(id));
            text.push('\n');
        }
        let mut name = self.path.file_name().unwrap_or_default().to_owned();
        name.push(".tmp");
        let scratch = self.path.with_file_name(name);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| StateError::Io { path, source }
        };
        // A leftover from a crash may have other permissions: start afresh.
        match fs::remove_file(&scratch) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(io(&scratch)(e)),
            _ => {}
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&scratch)
            .map_err(io(&scratch))?;
        file.write_all(text.as_bytes()).map_err(io(&scratch))?;
        file.sync_all().map_err(io(&scratch))?;
        drop(file);
        fs::rename(&scratch, &self.path).map_err(io(&self.path))
    }
}

fn escape(field: &str) -> String {
    field
        .replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
}

/// The field `escape` wrote, or `None` for an unknown escape or a bare tab.
fn unescape(field: &str) -> Option<String> {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                '\\' => out.push('\\'),
                't' => out.push('\t'),
                'n' => out.push('\n'),
                _ => return None,
            },
            '\t' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// The archive ids printed lately, at most a fixed number, the oldest forgotten first.
///
/// Archive ids are opaque, so "already printed" cannot be told by comparing them; this set
/// remembers them instead. It only has to span what one resume can show twice: the items
/// of a catch-up that also came live, and the last item a service sends again after a
/// subscribe.
#[derive(Debug)]
pub struct RecentIds {
    capacity: usize,
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl RecentIds {
    /// How many ids the consumer remembers.
    pub const DEFAULT_CAPACITY: usize = 1 << 16;

    /// An empty set that remembers at most `capacity` ids (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            set: HashSet::new(),
        }
    }

    /// Whether `id` is remembered.
    pub fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    /// Remembers `id`; returns false when it already was.
    pub fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        self.order.push_back(id.to_owned());
        self.set.insert(id.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fresh folder under the system's temp folder, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "demo-resume-{name}-{}-{}",
                std::process::id(),
                crate::nonce()
            ));
            fs::create_dir(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_missing_file_holds_no_position() {
        let dir = Scratch::new("missing");
        let state = ResumeState::load(&dir.0.join("state")).unwrap();
        assert_eq!(state.position("/location/alice"), None);
        assert!(!dir.0.join("state").exists(), "loading creates nothing");
    }

    #[test]
    fn positions_are_written_private_and_read_back() {
        let dir = Scratch::new("roundtrip");
        let path = dir.0.join("state");
        let mut state = ResumeState::load(&path).unwrap();
        state.set("/location/alice", "17-4242").unwrap();
        state.set("/photos/alice", "3-9").unwrap();
        state.set("/location/alice", "17-4243").unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "/location/alice\t17-4243\n/photos/alice\t3-9\n"
        );
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            !dir.0.join("state.tmp").exists(),
            "the temporary file is renamed"
        );
        let again = ResumeState::load(&path).unwrap();
        assert_eq!(again.position("/location/alice"), Some("17-4243"));
        assert_eq!(again.position("/photos/alice"), Some("3-9"));
    }

    #[test]
    fn a_readable_file_becomes_private_on_the_next_write() {
        let dir = Scratch::new("private");
        let path = dir.0.join("state");
        fs::write(&path, "/n\t1\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let mut state = ResumeState::load(&path).unwrap();
        state.set("/n", "2").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn tabs_line_breaks_and_backslashes_are_escaped() {
        let dir = Scratch::new("escape");
        let path = dir.0.join("state");
        let mut state = ResumeState::load(&path).unwrap();
        state.set("/odd\tnode\\x", "a\nb").unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "/odd\\tnode\\\\x\ta\\nb\n"
        );
        let again = ResumeState::load(&path).unwrap();
        assert_eq!(again.position("/odd\tnode\\x"), Some("a\nb"));
    }

    #[test]
    fn malformed_lines_are_refused_with_their_number() {
        let cases = [
            ("no tab", "/n\t1\n/m 2\n", 2),
            ("two tabs", "/n\t1\t2\n", 1),
            ("unknown escape", "/n\t\\q\n", 1),
            ("empty id", "/n\t\n", 1),
            ("empty node", "\t1\n", 1),
        ];
        for (name, text, line) in cases {
            let dir = Scratch::new("malformed");
            let path = dir.0.join("state");
            fs::write(&path, text).unwrap();
            match ResumeState::load(&path) {
                Err(StateError::Malformed { line: got, .. }) => assert_eq!(got, line, "{name}"),
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn recent_ids_forget_the_oldest_first() {
        let mut recent = RecentIds::new(2);
        assert!(recent.insert("a"));
        assert!(!recent.insert("a"));
        assert!(recent.insert("b"));
        assert!(recent.insert("c"));
        assert!(!recent.contains("a"));
        assert!(recent.contains("b") && recent.contains("c"));
    }
}
