//! Fixtures and tree helpers shared by the table and property tests.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;

use ferry_core::{Change, Digest, Dir, Entry, Mode, RelPath};

/// The two-way modes.
pub const TWO_WAY: &[Mode] = &[Mode::TwoWaySafe, Mode::TwoWayResolved];
/// The modes that never overwrite content that is not in the archive.
pub const SAFE: &[Mode] = &[Mode::TwoWaySafe, Mode::OneWaySafe];
/// The modes that let alpha win.
pub const ALPHA_WINS: &[Mode] = &[Mode::TwoWayResolved, Mode::OneWayReplica];

/// A plain file whose digest is `[n; 32]` (its size is `n`, so equal digests mean equal sizes).
pub fn f(n: u8) -> Entry {
    Entry::file([n; 32], u64::from(n), false)
}

/// An executable file with the same content as `f(n)`.
pub fn x(n: u8) -> Entry {
    Entry::file([n; 32], u64::from(n), true)
}

/// A file with the content of `f(n)` and permission bits `mode`.
pub fn m(n: u8, mode: u32) -> Entry {
    Entry::file_mode([n; 32], u64::from(n), mode)
}

/// A directory with permission bits `mode`.
pub fn dm(mode: u32, children: &[(&str, Entry)]) -> Entry {
    Entry::dir_mode(mode, children.iter().map(|(n, e)| (*n, e.clone())))
}

/// A change of the directory `path`'s permission bits alone.
pub fn chmod_dir(path: &str, old: u32, new: u32) -> Change {
    Change {
        path: rel(path),
        old: Some(Entry::Directory(Dir::bare(old))),
        new: Some(Entry::Directory(Dir::bare(new))),
    }
}

/// A symlink to `target`.
pub fn l(target: &str) -> Entry {
    Entry::symlink(target)
}

/// A directory.
pub fn d(children: &[(&str, Entry)]) -> Entry {
    Entry::dir(children.iter().map(|(n, e)| (*n, e.clone())))
}

/// A path the scan could not read.
pub fn problem() -> Entry {
    Entry::Problem("permission denied".to_owned())
}

/// A root directory.
pub fn root(children: &[(&str, Entry)]) -> Option<Entry> {
    Some(d(children))
}

/// The digest `f(n)` and `x(n)` carry.
pub fn digest(n: u8) -> Digest {
    Digest([n; 32])
}

/// A relative path from a literal.
pub fn rel(path: &str) -> RelPath {
    RelPath::new(path).expect("test paths are valid")
}

/// A change creating `new` at `path`.
pub fn add(path: &str, new: Entry) -> Change {
    Change {
        path: rel(path),
        old: None,
        new: Some(new),
    }
}

/// A change replacing `old` with `new` at `path`.
pub fn put(path: &str, old: Entry, new: Entry) -> Change {
    Change {
        path: rel(path),
        old: Some(old),
        new: Some(new),
    }
}

/// A change removing `old` at `path`.
pub fn del(path: &str, old: Entry) -> Change {
    Change {
        path: rel(path),
        old: Some(old),
        new: None,
    }
}

/// `prefix/name`, or `name` at the root.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}/{name}")
    }
}

/// Every file below `tree` by path (prefixed with `prefix`) and digest.
pub fn files(tree: Option<&Entry>, prefix: &str) -> BTreeMap<String, Digest> {
    let mut out = BTreeMap::new();
    if let Some(t) = tree {
        t.walk(prefix, &mut |p, e| {
            if let Entry::File { digest, .. } = e {
                out.insert(p.to_owned(), *digest);
            }
        });
    }
    out
}

/// The paths of every problem entry in `tree`.
pub fn problem_paths(tree: Option<&Entry>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(t) = tree {
        t.walk("", &mut |p, e| {
            if e.is_problem() {
                out.push(p.to_owned());
            }
        });
    }
    out
}

/// True if `tree` holds a problem entry anywhere.
pub fn has_problems(tree: Option<&Entry>) -> bool {
    tree.is_some_and(Entry::has_problems)
}

/// `tree` with whatever lies at each of `paths` (and below) removed; `""` removes everything.
pub fn mask(mut tree: Option<Entry>, paths: &[String]) -> Option<Entry> {
    fn remove(entry: &mut Entry, names: &[&str]) {
        let (Entry::Directory(children), Some((first, rest))) = (entry, names.split_first()) else {
            return;
        };
        if rest.is_empty() {
            children.remove(*first);
        } else if let Some(child) = children.get_mut(*first) {
            remove(child, rest);
        }
    }
    for path in paths {
        let names: Vec<&str> = path.split('/').filter(|n| !n.is_empty()).collect();
        if names.is_empty() {
            tree = None;
        } else if let Some(t) = tree.as_mut() {
            remove(t, &names);
        }
    }
    tree
}

/// Changes sorted by path, so comparisons do not depend on the order reconcile emits them in.
pub fn sorted(mut changes: Vec<Change>) -> Vec<Change> {
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    changes
}
