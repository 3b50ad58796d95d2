//! How a local filesystem compares names (see `ferry_core::align_names`): learned once per
//! session by probing the root, since one machine mixes filesystems (an exFAT stick, a macOS
//! volume shared in, a FUSE mount) and nothing else tells reliably.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use ferry_core::{Entry, NameRules, RelPath};

/// Creates a probe file in `dir` under a unique name with an upper-case letter and a composed
/// `é`, looks it up under the lower-cased and the decomposed spellings, and removes it.
/// Errors (a read-only root) are the caller's to treat: nothing is placed there anyway.
pub fn probe(dir: &Path) -> io::Result<NameRules> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // A `.ferry-tmp-` name: never synced, should a crash leave it behind.
    let stem = format!(".ferry-tmp-names-{}-{nanos}", std::process::id());
    let made = dir.join(format!("{stem}-A\u{e9}"));
    // Readable by nobody else, like everything ferry creates before it has its bits.
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&made)?;
    let found = |spelling: String| fs::symlink_metadata(dir.join(spelling)).is_ok();
    let rules = NameRules {
        fold_case: found(format!("{stem}-a\u{e9}")),
        fold_normalization: found(format!("{stem}-Ae\u{301}")),
    };
    fs::remove_file(&made)?;
    Ok(rules)
}

/// Before a partial scan of `paths` on a filesystem that folds names (`rules`): drops from
/// `tree` every other spelling of a path's names (or of its directories') that is the same
/// file on disk. ferry's view holds a name it placed under the spelling it used, while the
/// watcher reports the one the filesystem keeps; both are one file there. What is dropped is
/// rescanned with the path (the scan climbs to the first directory the tree still knows), so
/// nothing is lost from the view. Only names whose keys match AND that `lstat` shows to be
/// the same inode (or both absent) are dropped: a distinct file the key folds by mistake stays.
pub fn drop_stale_spellings(
    root: &Path,
    tree: &mut Entry,
    paths: &BTreeSet<RelPath>,
    rules: NameRules,
) {
    for p in paths {
        let mut dir = RelPath::root();
        for name in p.components() {
            if let Some(Entry::Directory(d)) = tree.get_mut(dir.as_str()) {
                let key = rules.key(name);
                let abs = root.join(dir.as_str());
                let stale: Vec<String> = d
                    .keys()
                    .filter(|n| n.as_str() != name && rules.key(n) == key)
                    .filter(|n| same_file(&abs.join(n.as_str()), &abs.join(name)))
                    .cloned()
                    .collect();
                for n in stale {
                    d.children.remove(&n);
                }
            }
            let Ok(next) = dir.join(name) else { break };
            dir = next;
        }
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::symlink_metadata(a), fs::symlink_metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        (Err(_), Err(_)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linux_temp_dir_compares_names_exactly() {
        let dir = tempfile::tempdir().expect("temp dir");
        let rules = probe(dir.path()).expect("probe");
        assert_eq!(rules, NameRules::EXACT);
        // The probe leaves nothing behind.
        assert_eq!(fs::read_dir(dir.path()).expect("read").count(), 0);
    }

    #[test]
    fn stale_spellings_go_only_when_they_are_the_same_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(dir.path().join("Readme"), "x").expect("write");
        fs::write(dir.path().join("README"), "y").expect("write");
        let f = Entry::file([1; 32], 1, false);
        let mut tree = Entry::dir([
            ("Readme", f.clone()),
            ("README", f.clone()),
            ("readme", f.clone()),
        ]);
        let folds = NameRules {
            fold_case: true,
            fold_normalization: false,
        };
        let paths: BTreeSet<RelPath> = [RelPath::new("Readme").expect("path")].into();
        drop_stale_spellings(dir.path(), &mut tree, &paths, folds);
        // `README` is another file on this (exact) disk: kept. `readme` is absent on disk, as
        // `Readme` is not: kept too (not the same file).
        let names: Vec<&String> = tree.children().expect("dir").keys().collect();
        assert_eq!(names, ["README", "Readme", "readme"]);
        // Gone from disk under both spellings: the stale one goes.
        fs::remove_file(dir.path().join("Readme")).expect("rm");
        drop_stale_spellings(dir.path(), &mut tree, &paths, folds);
        let names: Vec<&String> = tree.children().expect("dir").keys().collect();
        assert_eq!(names, ["README", "Readme"]);
    }

    #[test]
    fn a_missing_dir_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(probe(&dir.path().join("gone")).is_err());
    }
}
