//! How a local filesystem compares names (see `ferry_core::align_names`): learned once per
//! session by probing the root, since one machine mixes filesystems (an exFAT stick, a macOS
//! volume shared in, a FUSE mount) and nothing else tells reliably.

use std::fs;
use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use ferry_core::NameRules;

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
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&made)?;
    let found = |spelling: String| fs::symlink_metadata(dir.join(spelling)).is_ok();
    let rules = NameRules {
        fold_case: found(format!("{stem}-a\u{e9}")),
        fold_normalization: found(format!("{stem}-Ae\u{301}")),
    };
    fs::remove_file(&made)?;
    Ok(rules)
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
    fn a_missing_dir_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(probe(&dir.path().join("gone")).is_err());
    }
}
