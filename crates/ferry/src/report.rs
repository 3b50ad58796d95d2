//! What a running session tells whoever manages it (the daemon): its open conflicts as objects
//! (`ferry conflicts --json`, MCP `list_conflicts`), its tree's size, what a requested cycle
//! changed, and the rolling hour of traffic `ferry list` shows. Pure: built from trees and
//! events, tested by tables.

use std::collections::VecDeque;

use ferry_core::{Conflict, Entry};
use serde::Serialize;

/// One side of a conflict: what it did since the last agreed state, and its version now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConflictSide {
    /// `created`, `modified`, `deleted`, `replaced` (another kind now), `chmod` (permission
    /// bits only) or `unchanged`.
    pub change: &'static str,
    /// `file`, `directory`, `symlink` or `unreadable`; `null` once deleted.
    pub kind: Option<&'static str>,
    /// Bytes (a directory: of the files in it); `null` once deleted.
    pub size: Option<u64>,
    /// A file's modification time, seconds since the Unix epoch; `null` for anything else.
    pub mtime: Option<i64>,
}

/// An open conflict, as `ferry conflicts --json` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConflictView {
    pub path: String,
    pub alpha: ConflictSide,
    pub beta: ConflictSide,
}

/// Files (and links) and bytes in a tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TreeSize {
    pub files: u64,
    pub bytes: u64,
}

/// What a session shares with the daemon, refreshed at the end of every cycle.
#[derive(Clone, Debug, Default)]
pub struct SessionView {
    /// Open conflicts, by path.
    pub conflicts: Vec<ConflictView>,
    /// Alpha's tree as last scanned (refreshed by cycles that looked everywhere or changed
    /// something).
    pub tree: Option<TreeSize>,
}

/// One change a requested cycle made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Changed {
    /// `alpha->beta` or `beta->alpha`.
    pub direction: &'static str,
    pub path: String,
    /// `create`, `modify`, `delete`, `replace` or `chmod`.
    pub action: &'static str,
    /// Where the side written kept what this change replaced or removed.
    pub backups: Vec<String>,
}

/// What a requested cycle (a flush, a resolve) did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CycleReport {
    pub cycle: u64,
    pub changes: Vec<Changed>,
    /// A resolve: the paths it acted on.
    pub resolved: Vec<String>,
    pub conflicts: u64,
    pub errors: u64,
}

impl CycleReport {
    /// The changed paths each way (`{"alpha_to_beta": [..], "beta_to_alpha": [..]}`).
    pub fn changed_each_way(&self) -> serde_json::Value {
        let way = |d: &str| -> Vec<&str> {
            self.changes
                .iter()
                .filter(|c| c.direction == d)
                .map(|c| c.path.as_str())
                .collect()
        };
        serde_json::json!({
            "alpha_to_beta": way("alpha->beta"),
            "beta_to_alpha": way("beta->alpha"),
        })
    }

    /// What a resolve kept at each path and where the loser's version is (the backups of
    /// changes written at, above or below the path; `null` when the loser had none to keep,
    /// as when it had deleted the path).
    pub fn resolutions(&self, kept: &str) -> Vec<serde_json::Value> {
        let written = if kept == "alpha" {
            "alpha->beta"
        } else {
            "beta->alpha"
        };
        let related = |a: &str, b: &str| {
            a == b
                || b.is_empty()
                || a.is_empty()
                || a.starts_with(&format!("{b}/"))
                || b.starts_with(&format!("{a}/"))
        };
        self.resolved
            .iter()
            .map(|p| {
                let copies: Vec<&str> = self
                    .changes
                    .iter()
                    .filter(|c| c.direction == written && related(&c.path, p))
                    .flat_map(|c| c.backups.iter().map(String::as_str))
                    .collect();
                let loser_copy = match copies.as_slice() {
                    [] => serde_json::Value::Null,
                    [one] => (*one).into(),
                    many => many.to_vec().into(),
                };
                serde_json::json!({ "path": p, "kept": kept, "loser_copy": loser_copy })
            })
            .collect()
    }
}

/// What `e` is, as events and reports name it.
pub fn kind(e: &Entry) -> &'static str {
    match e {
        Entry::Directory(_) => "directory",
        Entry::File { .. } => "file",
        Entry::Symlink { .. } => "symlink",
        Entry::Problem(_) => "unreadable",
    }
}

/// Files (and links) and bytes in `e`.
pub fn tree_size(e: &Entry) -> TreeSize {
    let mut t = TreeSize::default();
    e.walk("", &mut |_, e| match e {
        Entry::File { size, .. } => {
            t.files += 1;
            t.bytes += size;
        }
        Entry::Symlink { .. } => t.files += 1,
        _ => {}
    });
    t
}

/// How one side moved from `ancestor` to `now`.
pub fn conflict_side(ancestor: Option<&Entry>, now: Option<&Entry>) -> ConflictSide {
    let change = match (ancestor, now) {
        (None, None) => "unchanged",
        (Some(_), None) => "deleted",
        (None, Some(_)) => "created",
        (Some(Entry::File { digest: a, .. }), Some(Entry::File { digest: b, .. })) if a == b => {
            if ancestor == now {
                "unchanged"
            } else {
                "chmod"
            }
        }
        (Some(a), Some(n)) if kind(a) != kind(n) => "replaced",
        (Some(a), Some(n)) if a == n => "unchanged",
        _ => "modified",
    };
    ConflictSide {
        change,
        kind: now.map(kind),
        size: now.map(|e| tree_size(e).bytes),
        mtime: match now {
            Some(Entry::File { mtime, .. }) => Some(mtime.0.div_euclid(1_000_000_000)),
            _ => None,
        },
    }
}

/// `c` as `ferry conflicts` shows it.
pub fn conflict_view(c: &Conflict) -> ConflictView {
    ConflictView {
        path: c.path.to_string(),
        alpha: conflict_side(c.ancestor.as_ref(), c.alpha.as_ref()),
        beta: conflict_side(c.ancestor.as_ref(), c.beta.as_ref()),
    }
}

/// Traffic in a rolling window: one record per cycle that moved something.
#[derive(Clone, Debug, Default)]
pub struct Traffic {
    cycles: VecDeque<Moved>,
}

/// What moved in one cycle (or a window), each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Moved {
    /// When (seconds since the Unix epoch); 0 in a sum.
    #[serde(skip)]
    pub at: u64,
    pub files_to_beta: u64,
    pub files_to_alpha: u64,
    pub bytes_to_beta: u64,
    pub bytes_to_alpha: u64,
}

/// The window `ferry list` counts in.
pub const WINDOW_SECS: u64 = 3600;

impl Traffic {
    /// Records a cycle's traffic at `m.at` (cycles that moved nothing are not kept).
    pub fn add(&mut self, m: Moved) {
        if m.files_to_alpha + m.files_to_beta + m.bytes_to_alpha + m.bytes_to_beta > 0 {
            self.cycles.push_back(m);
        }
        self.prune(m.at);
    }

    fn prune(&mut self, now: u64) {
        while self
            .cycles
            .front()
            .is_some_and(|c| c.at + WINDOW_SECS <= now)
        {
            self.cycles.pop_front();
        }
    }

    /// The sum over the last [`WINDOW_SECS`] before `now`.
    pub fn last_hour(&self, now: u64) -> Moved {
        self.cycles
            .iter()
            .filter(|c| c.at + WINDOW_SECS > now)
            .fold(Moved::default(), |s, c| Moved {
                at: 0,
                files_to_beta: s.files_to_beta + c.files_to_beta,
                files_to_alpha: s.files_to_alpha + c.files_to_alpha,
                bytes_to_beta: s.bytes_to_beta + c.bytes_to_beta,
                bytes_to_alpha: s.bytes_to_alpha + c.bytes_to_alpha,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::{Digest, Mtime, RelPath};

    fn file(content: &[u8], mode: u32, secs: i64) -> Entry {
        Entry::File {
            digest: Digest(*blake3::hash(content).as_bytes()),
            size: content.len() as u64,
            mode,
            mtime: Mtime(secs * 1_000_000_000),
        }
    }

    #[test]
    fn conflict_sides_say_what_each_did() {
        let a = file(b"old", 0o644, 10);
        let b = file(b"newer", 0o644, 20);
        let x = file(b"old", 0o755, 30);
        let dir = Entry::Directory(ferry_core::Dir::bare(0o755));
        let link = Entry::Symlink { target: "t".into() };
        type Case<'a> = (
            Option<&'a Entry>,
            Option<&'a Entry>,
            &'a str,
            Option<&'a str>,
            Option<u64>,
            Option<i64>,
        );
        let cases: Vec<Case> = vec![
            (None, Some(&b), "created", Some("file"), Some(5), Some(20)),
            (
                Some(&a),
                Some(&b),
                "modified",
                Some("file"),
                Some(5),
                Some(20),
            ),
            (Some(&a), None, "deleted", None, None, None),
            (Some(&a), Some(&x), "chmod", Some("file"), Some(3), Some(30)),
            (
                Some(&a),
                Some(&dir),
                "replaced",
                Some("directory"),
                Some(0),
                None,
            ),
            (
                Some(&a),
                Some(&link),
                "replaced",
                Some("symlink"),
                Some(0),
                None,
            ),
            (
                Some(&a),
                Some(&a),
                "unchanged",
                Some("file"),
                Some(3),
                Some(10),
            ),
            (None, Some(&link), "created", Some("symlink"), Some(0), None),
        ];
        for (anc, now, change, k, size, mtime) in cases {
            let s = conflict_side(anc, now);
            assert_eq!(
                (s.change, s.kind, s.size, s.mtime),
                (change, k, size, mtime),
                "{anc:?} -> {now:?}"
            );
        }
    }

    #[test]
    fn conflict_view_names_the_path() {
        let c = Conflict {
            path: RelPath::new("src/a.rs").expect("path"),
            ancestor: Some(file(b"x", 0o644, 1)),
            alpha: Some(file(b"yy", 0o644, 2)),
            beta: None,
        };
        let v = conflict_view(&c);
        assert_eq!(v.path, "src/a.rs");
        assert_eq!(v.alpha.change, "modified");
        assert_eq!(v.beta.change, "deleted");
        let j = serde_json::to_value(&v).expect("json");
        assert_eq!(j["alpha"]["size"], 2);
        assert_eq!(j["beta"]["size"], serde_json::Value::Null);
    }

    #[test]
    fn traffic_counts_the_last_hour_only() {
        let mut t = Traffic::default();
        let m = |at, fb, fa, bb, ba| Moved {
            at,
            files_to_beta: fb,
            files_to_alpha: fa,
            bytes_to_beta: bb,
            bytes_to_alpha: ba,
        };
        t.add(m(100, 2, 0, 20, 0));
        t.add(m(200, 0, 1, 0, 7));
        t.add(m(300, 0, 0, 0, 0));
        assert_eq!(t.last_hour(300), m(0, 2, 1, 20, 7));
        // 100 falls out at 3700, 200 at 3800.
        assert_eq!(t.last_hour(3699), m(0, 2, 1, 20, 7));
        assert_eq!(t.last_hour(3700), m(0, 0, 1, 0, 7));
        assert_eq!(t.last_hour(3800), Moved::default());
        t.add(m(4000, 1, 0, 1, 0));
        assert_eq!(t.cycles.len(), 1, "old cycles pruned");
    }

    #[test]
    fn resolutions_name_the_losers_copy() {
        let r = CycleReport {
            changes: vec![
                Changed {
                    direction: "alpha->beta",
                    path: "a.txt".into(),
                    action: "modify",
                    backups: vec!["/bk/a.txt".into()],
                },
                Changed {
                    direction: "alpha->beta",
                    path: "gone".into(),
                    action: "create",
                    backups: vec![],
                },
                Changed {
                    direction: "beta->alpha",
                    path: "other".into(),
                    action: "create",
                    backups: vec!["/x".into()],
                },
            ],
            resolved: vec!["a.txt".into(), "gone".into()],
            ..Default::default()
        };
        let out = r.resolutions("alpha");
        assert_eq!(out[0]["loser_copy"], "/bk/a.txt");
        assert_eq!(out[0]["kept"], "alpha");
        assert_eq!(out[1]["loser_copy"], serde_json::Value::Null);
        let each = r.changed_each_way();
        assert_eq!(each["alpha_to_beta"], serde_json::json!(["a.txt", "gone"]));
        assert_eq!(each["beta_to_alpha"], serde_json::json!(["other"]));
    }

    #[test]
    fn tree_size_counts_files_links_and_bytes() {
        let mut d = ferry_core::Dir::bare(0o755);
        d.children.insert("a".into(), file(b"abc", 0o644, 1));
        d.children
            .insert("l".into(), Entry::Symlink { target: "a".into() });
        let t = tree_size(&Entry::Directory(d));
        assert_eq!(t, TreeSize { files: 2, bytes: 3 });
    }
}
