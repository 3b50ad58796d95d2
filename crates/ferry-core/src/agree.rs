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
