//! Entries one side has that are never copied to the other while they stay as they are: what
//! a container's image put there (build products: compiled assets, generated code) and what a
//! new endpoint brought with it. They are kept leaf by leaf (files, links, empty directories),
//! path -> entry, so that a file added beside them later, or one of them changed, still syncs.

use std::collections::{BTreeMap, BTreeSet};

use crate::{Change, Dir, Entry};

/// Held entries: path (relative to the side's root) -> the entry as it was when it was held.
pub type Held = BTreeMap<String, Entry>;

/// The leaves of `tree` (files, links, empty directories) at paths not in `changed`, with
/// their entries: what a side's provisioning (a container's image) put there and nothing has
/// changed since. `changed` lists the paths that were added or changed since (Docker's
/// container changes, relative to the root); a directory in it says only that something in it
/// changed, so its children are judged by their own paths. Problem entries are never held.
pub fn unchanged_leaves(tree: &Entry, changed: &BTreeSet<String>) -> Held {
    let mut out = Held::new();
    tree.walk("", &mut |path, e| match e {
        Entry::Directory(d) if !d.children.is_empty() => {}
        Entry::Problem(_) => {}
        _ if path.is_empty() || changed.contains(path) => {}
        _ => {
            out.insert(path.to_owned(), e.clone());
        }
    });
    out
}

/// Takes the creations of held entries out of `changes` (the changes planned for the other
/// side): a creation of a held entry goes, and a directory created with held entries inside
/// goes without them (what was added beside them still goes). Changes of paths the other side
/// has (`old` is not `None`) are never touched: an edit there flows as usual.
pub fn drop_held(changes: &mut Vec<Change>, held: &Held) {
    if held.is_empty() {
        return;
    }
    changes.retain_mut(|c| {
        if c.old.is_some() {
            return true;
        }
        let Some(new) = &c.new else { return true };
        match without_held(new, c.path.as_str(), held) {
            Some(rest) => {
                c.new = Some(rest);
                true
            }
            None => false,
        }
    });
}

/// Settles the conflicts a first sync finds at held paths: where nothing was agreed yet, both
/// sides have the path, and the held side's entry is still the held one (a file the image build
/// made and a `RUN` rewrote, which the other side has in its own version), that is nobody's
/// edit: the other side's version replaces it, as a change in `changes` (the held side's plan).
/// Other conflicts stay.
pub fn settle_held_conflicts(
    conflicts: &mut Vec<crate::Conflict>,
    changes: &mut Vec<Change>,
    held: &Held,
    held_is_beta: bool,
) {
    if held.is_empty() {
        return;
    }
    conflicts.retain(|c| {
        let (mine, theirs) = if held_is_beta {
            (&c.beta, &c.alpha)
        } else {
            (&c.alpha, &c.beta)
        };
        let settle = c.ancestor.is_none()
            && theirs.is_some()
            && mine.is_some()
            && held.get(c.path.as_str()) == mine.as_ref();
        if settle {
            changes.push(Change {
                path: c.path.clone(),
                old: mine.clone(),
                new: theirs.clone(),
            });
        }
        !settle
    });
}

/// `e` (at `path`) without the held entries in it; `None` when nothing else is left.
pub fn without_held(e: &Entry, path: &str, held: &Held) -> Option<Entry> {
    if held.get(path) == Some(e) {
        return None;
    }
    let Entry::Directory(children) = e else {
        return Some(e.clone());
    };
    if children.is_empty() {
        return Some(e.clone());
    }
    let kept: BTreeMap<String, Entry> = children
        .iter()
        .filter_map(|(name, child)| {
            let p = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}/{name}")
            };
            without_held(child, &p, held).map(|c| (name.clone(), c))
        })
        .collect();
    (!kept.is_empty()).then_some(Entry::Directory(Dir {
        children: kept,
        mode: children.mode,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RelPath;

    fn f(n: u8) -> Entry {
        Entry::file([n; 32], 1, false)
    }

    fn set(paths: &[&str]) -> BTreeSet<String> {
        paths.iter().map(|p| (*p).to_owned()).collect()
    }

    fn create(path: &str, new: Entry) -> Change {
        Change {
            path: RelPath::new(path).expect("path"),
            old: None,
            new: Some(new),
        }
    }

    /// The container's /app: a copied source file, a generated one beside it, a build
    /// output directory, an empty directory the build made, and a link.
    fn image_tree() -> Entry {
        Entry::dir([
            ("src", Entry::dir([("index.js", f(1)), ("gen.js", f(2))])),
            ("dist", Entry::dir([("bundle.js", f(3))])),
            ("cache", Entry::dir([])),
            ("latest", Entry::symlink("dist/bundle.js")),
        ])
    }

    #[test]
    fn unchanged_leaves_table() {
        let all: &[&str] = &[
            "cache",
            "dist/bundle.js",
            "latest",
            "src/gen.js",
            "src/index.js",
        ];
        let cases: [(&str, &[&str], &[&str]); 5] = [
            ("nothing changed: every leaf", &[], all),
            (
                "a changed file is not held",
                &["src/gen.js"],
                &["cache", "dist/bundle.js", "latest", "src/index.js"],
            ),
            (
                "a changed directory says nothing of its children",
                &["dist", "src"],
                all,
            ),
            (
                "an added empty directory is not held",
                &["cache"],
                &["dist/bundle.js", "latest", "src/gen.js", "src/index.js"],
            ),
            (
                "changes outside the tree are irrelevant",
                &["elsewhere/x", "src/index.js/nope"],
                all,
            ),
        ];
        for (what, changed, expected) in cases {
            let held = unchanged_leaves(&image_tree(), &set(changed));
            let got: Vec<&str> = held.keys().map(String::as_str).collect();
            assert_eq!(got, expected, "{what}");
        }
        let held = unchanged_leaves(&image_tree(), &set(&[]));
        assert_eq!(held.get("dist/bundle.js"), Some(&f(3)));
    }

    #[test]
    fn settle_held_conflicts_table() {
        let held = unchanged_leaves(&image_tree(), &set(&[]));
        let path = |p: &str| RelPath::new(p).expect("path");
        let conflict =
            |p: &str, ancestor: Option<Entry>, alpha: Entry, beta: Entry| crate::Conflict {
                path: path(p),
                ancestor,
                alpha: Some(alpha),
                beta: Some(beta),
            };
        // (what, conflict, settled into a change for beta)
        let cases = [
            (
                "a first sync: the host's version replaces the image's",
                conflict("src/index.js", None, f(7), f(1)),
                true,
            ),
            (
                "the container changed it since the image: a real conflict",
                conflict("src/index.js", None, f(7), f(8)),
                false,
            ),
            (
                "agreed before: the usual three-way rules, not this one",
                conflict("src/index.js", Some(f(6)), f(7), f(1)),
                false,
            ),
            (
                "not held",
                conflict("src/other.js", None, f(7), f(1)),
                false,
            ),
        ];
        for (what, c, settled) in cases {
            let mut conflicts = vec![c.clone()];
            let mut changes = Vec::new();
            settle_held_conflicts(&mut conflicts, &mut changes, &held, true);
            if settled {
                assert!(conflicts.is_empty(), "{what}");
                assert_eq!(
                    changes,
                    [Change {
                        path: c.path.clone(),
                        old: c.beta.clone(),
                        new: c.alpha.clone(),
                    }],
                    "{what}"
                );
            } else {
                assert_eq!(conflicts, [c], "{what}");
                assert!(changes.is_empty(), "{what}");
            }
        }
    }

    #[test]
    fn problems_and_the_root_are_never_held() {
        let tree = Entry::dir([("bad", Entry::Problem("unreadable".into()))]);
        assert!(unchanged_leaves(&tree, &set(&[])).is_empty());
        assert!(unchanged_leaves(&Entry::dir([]), &set(&[])).is_empty());
    }

    #[test]
    fn drop_held_table() {
        let held = unchanged_leaves(&image_tree(), &set(&[]));
        // (what, changes planned for the other side, what is left of them)
        let cases: Vec<(&str, Vec<Change>, Vec<Change>)> = vec![
            (
                "a held file is not created",
                vec![create("dist/bundle.js", f(3))],
                vec![],
            ),
            (
                "a held file that changed is created",
                vec![create("dist/bundle.js", f(9))],
                vec![create("dist/bundle.js", f(9))],
            ),
            (
                "a directory of held files only is not created",
                vec![create("dist", Entry::dir([("bundle.js", f(3))]))],
                vec![],
            ),
            (
                "a directory is created with what was added beside the held files",
                vec![create(
                    "dist",
                    Entry::dir([("bundle.js", f(3)), ("new.js", f(4))]),
                )],
                vec![create("dist", Entry::dir([("new.js", f(4))]))],
            ),
            (
                "a held empty directory and link are not created",
                vec![
                    create("cache", Entry::dir([])),
                    create("latest", Entry::symlink("dist/bundle.js")),
                ],
                vec![],
            ),
            (
                "an edit of a path the other side has flows",
                vec![Change {
                    path: RelPath::new("src/index.js").expect("path"),
                    old: Some(f(7)),
                    new: Some(f(1)),
                }],
                vec![Change {
                    path: RelPath::new("src/index.js").expect("path"),
                    old: Some(f(7)),
                    new: Some(f(1)),
                }],
            ),
            (
                "a deletion is not a creation",
                vec![Change {
                    path: RelPath::new("src/gen.js").expect("path"),
                    old: Some(f(2)),
                    new: None,
                }],
                vec![Change {
                    path: RelPath::new("src/gen.js").expect("path"),
                    old: Some(f(2)),
                    new: None,
                }],
            ),
            (
                "the held entries of a whole tree go, the rest stays",
                vec![create(
                    "",
                    Entry::dir([
                        ("src", Entry::dir([("index.js", f(1)), ("mine.js", f(5))])),
                        ("dist", Entry::dir([("bundle.js", f(3))])),
                    ]),
                )],
                vec![create(
                    "",
                    Entry::dir([("src", Entry::dir([("mine.js", f(5))]))]),
                )],
            ),
        ];
        for (what, mut changes, expected) in cases {
            drop_held(&mut changes, &held);
            assert_eq!(changes, expected, "{what}");
        }
    }
}
