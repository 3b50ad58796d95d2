use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// A BLAKE3 content digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", &self.to_string()[..12])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A file's modification time in nanoseconds since the Unix epoch, as a scan saw it.
///
/// Carried so the side receiving a file can set it (as `rsync -a` does), but never compared:
/// every `Mtime` equals every other. ferry tells content apart by digest, so a `touch` is not
/// a change, and two sides holding the same content with different times agree.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Mtime(pub i64);

impl PartialEq for Mtime {
    fn eq(&self, _: &Mtime) -> bool {
        true
    }
}

impl Eq for Mtime {}

/// The permission bits ferry syncs: read, write and execute for user, group and other.
pub const PERMISSION_BITS: u32 = 0o777;

/// The permission bits of a file created with no other information (tests, older archives).
pub const FILE_MODE: u32 = 0o644;
/// The same for directories, and for executable files.
pub const DIR_MODE: u32 = 0o755;

/// A directory: its children by name and its permission bits.
///
/// Dereferences to the map of children, so most code reads it as one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dir {
    /// The children by name.
    pub children: BTreeMap<String, Entry>,
    /// Permission bits (`0o777` at most).
    pub mode: u32,
}

impl Dir {
    /// A directory with no children and `mode`: what a change of a directory's permission
    /// bits carries (see [`Change::is_meta`](crate::Change::is_meta)).
    pub fn bare(mode: u32) -> Dir {
        Dir {
            children: BTreeMap::new(),
            mode,
        }
    }
}

impl Default for Dir {
    fn default() -> Dir {
        Dir::bare(DIR_MODE)
    }
}

impl std::ops::Deref for Dir {
    type Target = BTreeMap<String, Entry>;
    fn deref(&self) -> &Self::Target {
        &self.children
    }
}

impl std::ops::DerefMut for Dir {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.children
    }
}

impl From<BTreeMap<String, Entry>> for Dir {
    fn from(children: BTreeMap<String, Entry>) -> Dir {
        Dir {
            children,
            mode: DIR_MODE,
        }
    }
}

impl<const N: usize> From<[(String, Entry); N]> for Dir {
    fn from(children: [(String, Entry); N]) -> Dir {
        Dir::from(BTreeMap::from(children))
    }
}

impl FromIterator<(String, Entry)> for Dir {
    fn from_iter<I: IntoIterator<Item = (String, Entry)>>(iter: I) -> Dir {
        Dir::from(iter.into_iter().collect::<BTreeMap<_, _>>())
    }
}

impl<'a> IntoIterator for &'a Dir {
    type Item = (&'a String, &'a Entry);
    type IntoIter = std::collections::btree_map::Iter<'a, String, Entry>;
    fn into_iter(self) -> Self::IntoIter {
        self.children.iter()
    }
}

/// One node of an endpoint's tree, as a scan saw it. Only metadata and digests: content never
/// lives in a tree.
///
/// Decoding refuses trees nested deeper than [`MAX_DEPTH`] (no legal path is that deep): a
/// tree from a peer or a damaged file cannot exhaust the stack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Entry {
    /// A directory, its children and permission bits.
    Directory(Dir),
    /// A regular file.
    File {
        /// BLAKE3 of the content.
        digest: Digest,
        /// Length in bytes.
        size: u64,
        /// Permission bits (`0o777` at most; with `--permissions exec`, `0o755` or `0o644`).
        mode: u32,
        /// When it was last modified (never compared, see [`Mtime`]).
        mtime: Mtime,
    },
    /// A symbolic link (whose target stays inside the root, unless links are synced raw).
    Symlink {
        /// The link's target, as stored in the link.
        target: String,
    },
    /// A path the scan could not read (permissions, a name that is not UTF-8, a link that
    /// escapes the root, …). Never propagated, never deleted; reported.
    Problem(String),
}

/// The deepest tree decoding accepts: a path of `MAX_PATH_LEN` bytes has at most half as many
/// components, plus the root.
pub const MAX_DEPTH: usize = crate::MAX_PATH_LEN / 2 + 1;

/// The same shape as [`Entry`] (so the same encoding): what decoding builds, one level at a
/// time, with the depth counted.
#[derive(Deserialize)]
#[serde(rename = "Entry")]
enum EntryRepr {
    Directory(Dir),
    File {
        digest: Digest,
        size: u64,
        mode: u32,
        mtime: Mtime,
    },
    Symlink {
        target: String,
    },
    Problem(String),
}

std::thread_local! {
    static DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Entry, D::Error> {
        let depth = DEPTH.with(|c| c.get());
        if depth >= MAX_DEPTH {
            return Err(serde::de::Error::custom(format!(
                "tree nested deeper than {MAX_DEPTH} levels"
            )));
        }
        DEPTH.with(|c| c.set(depth + 1));
        let r = EntryRepr::deserialize(d);
        DEPTH.with(|c| c.set(depth));
        Ok(match r? {
            EntryRepr::Directory(c) => Entry::Directory(c),
            EntryRepr::File {
                digest,
                size,
                mode,
                mtime,
            } => Entry::File {
                digest,
                size,
                mode,
                mtime,
            },
            EntryRepr::Symlink { target } => Entry::Symlink { target },
            EntryRepr::Problem(p) => Entry::Problem(p),
        })
    }
}

impl Entry {
    /// A file entry, `0o755` if `executable` else `0o644`, with no known modification time.
    pub fn file(digest: [u8; 32], size: u64, executable: bool) -> Entry {
        Entry::file_mode(digest, size, if executable { DIR_MODE } else { FILE_MODE })
    }

    /// A file entry with permission bits `mode`.
    pub fn file_mode(digest: [u8; 32], size: u64, mode: u32) -> Entry {
        Entry::File {
            digest: Digest(digest),
            size,
            mode,
            mtime: Mtime(0),
        }
    }

    /// A directory entry (`0o755`) from `(name, entry)` pairs.
    pub fn dir<'a>(children: impl IntoIterator<Item = (&'a str, Entry)>) -> Entry {
        Entry::Directory(
            children
                .into_iter()
                .map(|(n, e)| (n.to_owned(), e))
                .collect(),
        )
    }

    /// A directory entry with permission bits `mode`.
    pub fn dir_mode<'a>(mode: u32, children: impl IntoIterator<Item = (&'a str, Entry)>) -> Entry {
        let mut d: Dir = children
            .into_iter()
            .map(|(n, e)| (n.to_owned(), e))
            .collect();
        d.mode = mode;
        Entry::Directory(d)
    }

    /// The permission bits of a file or directory.
    pub fn mode(&self) -> Option<u32> {
        match self {
            Entry::Directory(d) => Some(d.mode),
            Entry::File { mode, .. } => Some(*mode),
            _ => None,
        }
    }

    /// A symlink entry.
    pub fn symlink(target: &str) -> Entry {
        Entry::Symlink {
            target: target.to_owned(),
        }
    }

    /// The children of a directory, `None` for anything else.
    pub fn children(&self) -> Option<&BTreeMap<String, Entry>> {
        match self {
            Entry::Directory(c) => Some(&c.children),
            _ => None,
        }
    }

    /// True for directories.
    pub fn is_dir(&self) -> bool {
        matches!(self, Entry::Directory(_))
    }

    /// True for problem entries.
    pub fn is_problem(&self) -> bool {
        matches!(self, Entry::Problem(_))
    }

    /// The entry at `path` below this one (`""` is this entry).
    pub fn get(&self, path: &str) -> Option<&Entry> {
        let mut cur = self;
        for name in path.split('/').filter(|n| !n.is_empty()) {
            cur = cur.children()?.get(name)?;
        }
        Some(cur)
    }

    /// The entry at `path` below this one, mutably (`""` is this entry).
    pub fn get_mut(&mut self, path: &str) -> Option<&mut Entry> {
        let mut cur = self;
        for name in path.split('/').filter(|n| !n.is_empty()) {
            match cur {
                Entry::Directory(c) => cur = c.get_mut(name)?,
                _ => return None,
            }
        }
        Some(cur)
    }

    /// Number of entries in this subtree, this one included.
    pub fn count(&self) -> usize {
        match self {
            Entry::Directory(c) => 1 + c.values().map(Entry::count).sum::<usize>(),
            _ => 1,
        }
    }

    /// True if a problem entry lies anywhere in this subtree.
    pub fn has_problems(&self) -> bool {
        match self {
            Entry::Problem(_) => true,
            Entry::Directory(c) => c.values().any(Entry::has_problems),
            _ => false,
        }
    }

    /// This subtree with every problem entry left out (what can actually be created).
    pub fn without_problems(&self) -> Entry {
        match self {
            Entry::Directory(c) => Entry::Directory(Dir {
                children: c
                    .iter()
                    .filter(|(_, e)| !e.is_problem())
                    .map(|(n, e)| (n.clone(), e.without_problems()))
                    .collect(),
                mode: c.mode,
            }),
            e => e.clone(),
        }
    }

    /// Calls `f(path, entry)` for every node in this subtree, parents before children;
    /// `prefix` is this node's path.
    pub fn walk<'a>(&'a self, prefix: &str, f: &mut impl FnMut(&str, &'a Entry)) {
        // One buffer for the whole walk: no allocation per node.
        let mut path = String::with_capacity(prefix.len() + 64);
        path.push_str(prefix);
        self.walk_in(&mut path, f);
    }

    fn walk_in<'a>(&'a self, path: &mut String, f: &mut impl FnMut(&str, &'a Entry)) {
        f(path, self);
        if let Entry::Directory(c) = self {
            for (name, child) in c {
                let len = path.len();
                if len > 0 {
                    path.push('/');
                }
                path.push_str(name);
                child.walk_in(path, f);
                path.truncate(len);
            }
        }
    }
}

/// The set of file digests in a tree: the "content in the archive" test of the no-data-loss
/// promise.
pub fn digests(tree: Option<&Entry>) -> HashSet<Digest> {
    let mut out = HashSet::new();
    if let Some(t) = tree {
        t.walk("", &mut |_, e| {
            if let Entry::File { digest, .. } = e {
                out.insert(*digest);
            }
        });
    }
    out
}

/// The entry at `path` in an optional tree.
pub(crate) fn at<'a>(tree: Option<&'a Entry>, path: &str) -> Option<&'a Entry> {
    tree.and_then(|t| t.get(path))
}
