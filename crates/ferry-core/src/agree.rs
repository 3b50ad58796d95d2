use std::collections::BTreeSet;

use crate::{Dir, Entry, RelPath};

/// The new ancestor after a cycle: wherever alpha and beta now agree, their common state;
/// wherever they still differ (conflicts, failed transitions, one-way-safe's beta-only files),
/// the old ancestor. Problem entries never enter the archive.
pub fn agree(
    ancestor: Option<&Entry>,
    alpha: Option<&Entry>,
    beta: Option<&Entry>,
) -> Option<Entry> {
    if let (Some(Entry::Directory(xc)), Some(Entry::Directory(yc))) = (alpha, beta) {
        let ac = ancestor.and_then(Entry::children);
        let names: BTreeSet<&String> = xc
            .keys()
            .chain(yc.keys())
            .chain(ac.into_iter().flat_map(|c| c.keys()))
            .collect();
        let children = names
            .into_iter()
            .filter_map(|name| {
                agree(ac.and_then(|c| c.get(name)), xc.get(name), yc.get(name))
                    .map(|e| (name.clone(), e))
            })
            .collect();
        return Some(Entry::Directory(Dir {
            children,
            mode: agreed_mode(ancestor, xc.mode, yc.mode),
        }));
    }
    if alpha == beta && !alpha.is_some_and(Entry::has_problems) {
        return alpha.cloned();
    }
    ancestor.filter(|a| !a.has_problems()).cloned()
}

/// [`agree`] restricted to the subtrees at `paths` (already raised by
/// [`scope`](crate::scope)), updating `ancestor` in place and cloning only what changed.
/// Parents a path needs in the ancestor are created as directories (both sides have them as
/// directories, by construction of the scope). Returns true if the ancestor changed.
pub fn agree_at(
    ancestor: &mut Option<Entry>,
    alpha: Option<&Entry>,
    beta: Option<&Entry>,
    paths: &[RelPath],
) -> bool {
    let mut changed = false;
    for p in paths {
        let (x, y) = (
            crate::entry::at(alpha, p.as_str()),
            crate::entry::at(beta, p.as_str()),
        );
        if p.is_root() {
            changed |= agree_in(ancestor, x, y);
            continue;
        }
        let mut slot = crate::entry::at(ancestor.as_ref(), p.as_str()).cloned();
        if agree_in(&mut slot, x, y) {
            set(ancestor, p, slot);
            changed = true;
        }
    }
    changed
}

/// In-place [`agree`]: true if `slot` changed.
fn agree_in(slot: &mut Option<Entry>, alpha: Option<&Entry>, beta: Option<&Entry>) -> bool {
    // Most of a tree already agrees: comparing is much cheaper than walking it mutably. (The
    // ancestor never holds problems, so equality with it rules them out.)
    if slot.as_ref() == alpha && alpha == beta {
        return false;
    }
    if let (Some(Entry::Directory(xc)), Some(Entry::Directory(yc))) = (alpha, beta) {
        let mut changed = false;
        let mode = agreed_mode(slot.as_ref(), xc.mode, yc.mode);
        if !matches!(slot, Some(Entry::Directory(_))) {
            *slot = Some(Entry::Directory(Dir::bare(mode)));
            changed = true;
        }
        let Some(Entry::Directory(ac)) = slot else {
            return changed;
        };
        if ac.mode != mode {
            ac.mode = mode;
            changed = true;
        }
        let before = ac.len();
        // Names on neither side: both agree they are gone.
        ac.retain(|k, _| xc.contains_key(k) || yc.contains_key(k));
        changed |= ac.len() != before;
        let names = xc.keys().chain(yc.keys().filter(|k| !xc.contains_key(*k)));
        for name in names {
            let (x, y) = (xc.get(name), yc.get(name));
            match ac.get_mut(name) {
                Some(existing) => {
                    // Placeholder swap so the child can be updated without reallocating its name.
                    let mut child =
                        Some(std::mem::replace(existing, Entry::Problem(String::new())));
                    changed |= agree_in(&mut child, x, y);
                    match child {
                        Some(e) => *existing = e,
                        None => {
                            ac.remove(name);
                        }
                    }
                }
                None => {
                    let mut child = None;
                    if agree_in(&mut child, x, y) {
                        changed = true;
                        if let Some(e) = child {
                            ac.insert(name.clone(), e);
                        }
                    }
                }
            }
        }
        return changed;
    }
    let new = if alpha == beta && !alpha.is_some_and(Entry::has_problems) {
        alpha
    } else {
        // Keep the old ancestor (never with problems in it).
        if slot.as_ref().is_some_and(Entry::has_problems) {
            *slot = None;
            return true;
        }
        return false;
    };
    if slot.as_ref() != new {
        *slot = new.cloned();
        return true;
    }
    false
}

/// A directory's agreed permission bits: both sides' if they agree, else the ancestor's, else
/// [`NO_MODE`].
fn agreed_mode(ancestor: Option<&Entry>, alpha: u32, beta: u32) -> u32 {
    if alpha == beta {
        return alpha;
    }
    match ancestor {
        Some(Entry::Directory(d)) => d.mode,
        _ => NO_MODE,
    }
}

/// The mode of an ancestor directory whose bits were never agreed on: it matches neither side,
/// so the next cycle sees both changed and alpha's win.
const NO_MODE: u32 = u32::MAX;

/// Forgets what the archive knew at `path` (and below): the next cycle treats it like a first
/// sync there, so nothing at that path can be taken for a deletion. Used for paths a crashed
/// cycle may have changed after the archive was last written.
pub fn forget(ancestor: &mut Option<Entry>, path: &RelPath) {
    if crate::entry::at(ancestor.as_ref(), path.as_str()).is_some() {
        set(ancestor, path, None);
    }
}

/// After a cycle cut short (a lost connection), records as agreed whatever part of one of its
/// planned changes was made: `planned` is the change's new value at `path`, `now` what the
/// side it was made on holds there according to a fresh scan. All of it when `now` is
/// `planned`; inside a directory created half way, each entry that arrived as planned. Anything
/// else keeps the ancestor's value: a change not made, or half a directory removed (with the
/// ancestor's value, the next plan finishes the removal). Returns true if the ancestor changed.
///
/// Without it, a file copied before the loss and changed again on its source since looks
/// modified on both sides: a conflict that nothing resolves.
pub fn agree_made(
    ancestor: &mut Option<Entry>,
    path: &RelPath,
    planned: Option<&Entry>,
    now: Option<&Entry>,
) -> bool {
    if planned == now {
        if crate::entry::at(ancestor.as_ref(), path.as_str()) == planned {
            return false;
        }
        set(ancestor, path, planned.cloned());
        return true;
    }
    let (Some(Entry::Directory(pc)), Some(Entry::Directory(nc))) = (planned, now) else {
        return false;
    };
    let mut changed = false;
    for (name, child) in pc {
        let (Some(got), Ok(p)) = (nc.get(name), path.join(name)) else {
            continue;
        };
        changed |= agree_made(ancestor, &p, Some(child), Some(got));
    }
    changed
}

/// Records `value` as the agreed state at `path` (parents become directories as needed).
pub fn set_agreed(ancestor: &mut Option<Entry>, path: &RelPath, value: Option<Entry>) {
    set(ancestor, path, value);
}

fn set(tree: &mut Option<Entry>, path: &RelPath, value: Option<Entry>) {
    let Some(name) = path.name() else {
        *tree = value;
        return;
    };
    let mut cur = tree.get_or_insert_with(|| Entry::Directory(Default::default()));
    for comp in path.parent().iter().flat_map(|p| p.components()) {
        if !cur.is_dir() {
            *cur = Entry::Directory(Default::default());
        }
        let Entry::Directory(c) = cur else { return };
        cur = c
            .entry(comp.to_owned())
            .or_insert_with(|| Entry::Directory(Default::default()));
    }
    if !cur.is_dir() {
        *cur = Entry::Directory(Default::default());
    }
    if let Entry::Directory(c) = cur {
        match value {
            Some(v) => {
                c.insert(name.to_owned(), v);
            }
            None => {
                c.remove(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(n: u8) -> Entry {
        Entry::file([n; 32], u64::from(n), false)
    }

    fn rel(p: &str) -> RelPath {
        RelPath::new(p).expect("valid path")
    }

    #[test]
    fn agree_made_takes_what_a_cut_short_cycle_did_and_nothing_else() {
        let base = || {
            Some(Entry::dir([
                ("f", f(1)),
                ("old", Entry::dir([("x", f(7)), ("y", f(8))])),
            ]))
        };
        /// (what, path, planned, now on the written side, ancestor after)
        type Case = (
            &'static str,
            &'static str,
            Option<Entry>,
            Option<Entry>,
            Option<Entry>,
        );
        let cases: Vec<Case> = vec![
            (
                "a copy made: its version is agreed",
                "f",
                Some(f(2)),
                Some(f(2)),
                Some(Entry::dir([
                    ("f", f(2)),
                    ("old", Entry::dir([("x", f(7)), ("y", f(8))])),
                ])),
            ),
            (
                "a copy not made: the ancestor stands",
                "f",
                Some(f(2)),
                Some(f(1)),
                base(),
            ),
            (
                "changed by someone else since: the ancestor stands",
                "f",
                Some(f(2)),
                Some(f(3)),
                base(),
            ),
            (
                "a removal made",
                "old",
                None,
                None,
                Some(Entry::dir([("f", f(1))])),
            ),
            (
                "half a removal: the ancestor stands, so the next plan finishes it",
                "old",
                None,
                Some(Entry::dir([("y", f(8))])),
                base(),
            ),
            (
                "a directory created half way: what arrived is agreed",
                "new",
                Some(Entry::dir([
                    ("a", f(4)),
                    ("z", f(5)),
                    ("s", Entry::dir([("b", f(6))])),
                ])),
                Some(Entry::dir([
                    ("a", f(4)),
                    ("s", Entry::Directory(Default::default())),
                ])),
                Some(Entry::dir([
                    ("f", f(1)),
                    ("new", Entry::dir([("a", f(4))])),
                    ("old", Entry::dir([("x", f(7)), ("y", f(8))])),
                ])),
            ),
            (
                "a file inside replaced by a problem: not agreed",
                "new",
                Some(Entry::dir([("a", f(4))])),
                Some(Entry::dir([("a", Entry::Problem("cannot read".into()))])),
                base(),
            ),
        ];
        for (what, path, planned, now, want) in cases {
            let mut anc = base();
            let changed = agree_made(&mut anc, &rel(path), planned.as_ref(), now.as_ref());
            assert_eq!(anc, want, "{what}");
            assert_eq!(changed, anc != base(), "{what}: the change flag");
        }
    }
}
