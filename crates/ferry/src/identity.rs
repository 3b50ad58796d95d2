//! Which endpoints a session's archive was made with. A container recreated under the same
//! name, or a mirror deleted and made again, is a new endpoint: nobody edited its files, so
//! its first cycle takes the other side as the truth (see `Engine::cycle`) instead of reading
//! the difference as a wipe. Kept beside the archive in the session directory (`endpoints`).

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use ferry_core::Entry;
use serde::{Deserialize, Serialize};

use crate::state::{read_versioned, write_atomic, write_versioned};

const MAGIC: &[u8; 8] = b"FERRYID1";
const FILE: &str = "endpoints";

/// A session's two sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Alpha,
    Beta,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identities {
    /// What alpha was (see `Endpoint::identity`), once known.
    pub alpha: Option<String>,
    pub beta: Option<String>,
    /// What a fresh alpha had that beta did not (an image's files): never copied to beta
    /// while it stays as it was. Path -> entry.
    pub adopted_alpha: BTreeMap<String, Entry>,
    /// The same for a fresh beta.
    pub adopted_beta: BTreeMap<String, Entry>,
}

impl Identities {
    /// The session's record, or an empty one (a session from before this file, or damaged:
    /// then no side is taken for fresh).
    pub fn load(dir: &Path) -> Identities {
        read_versioned(&dir.join(FILE), MAGIC)
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    pub fn save(&self, dir: &Path) -> io::Result<()> {
        write_versioned(MAGIC, self).and_then(|b| write_atomic(&dir.join(FILE), &b))
    }

    /// The side that is a new endpoint since the record was written: its identity was known
    /// and is now another one. Both new is a first sync, not a fill.
    pub fn fresh(&self, alpha: Option<&str>, beta: Option<&str>) -> Option<Side> {
        let changed = |was: &Option<String>, now: Option<&str>| {
            was.as_deref().is_some_and(|w| now.is_some_and(|n| n != w))
        };
        match (changed(&self.alpha, alpha), changed(&self.beta, beta)) {
            (true, false) => Some(Side::Alpha),
            (false, true) => Some(Side::Beta),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_side_is_fresh_only_when_a_known_identity_changed() {
        let ids = Identities {
            alpha: Some("dir:1:5".into()),
            beta: Some("docker:aaa".into()),
            ..Default::default()
        };
        assert_eq!(ids.fresh(Some("dir:1:5"), Some("docker:aaa")), None);
        assert_eq!(
            ids.fresh(Some("dir:1:5"), Some("docker:bbb")),
            Some(Side::Beta)
        );
        assert_eq!(
            ids.fresh(Some("dir:2:9"), Some("docker:aaa")),
            Some(Side::Alpha)
        );
        assert_eq!(ids.fresh(Some("dir:2:9"), Some("docker:bbb")), None);
        // Unknown now (a transport that cannot tell), or never known: not fresh.
        assert_eq!(ids.fresh(Some("dir:1:5"), None), None);
        assert_eq!(Identities::default().fresh(Some("x"), Some("y")), None);
    }

    #[test]
    fn the_record_survives_a_round_trip() {
        let t = tempfile::tempdir().expect("tempdir");
        let mut ids = Identities {
            beta: Some("docker:abc".into()),
            ..Default::default()
        };
        ids.adopted_beta
            .insert("etc/x".into(), Entry::file([1; 32], 3, false));
        ids.save(t.path()).expect("save");
        assert_eq!(Identities::load(t.path()), ids);
        std::fs::write(t.path().join(FILE), b"junk").expect("write");
        assert_eq!(Identities::load(t.path()), Identities::default());
    }
}
