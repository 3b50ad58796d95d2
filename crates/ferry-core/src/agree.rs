use std::collections::BTreeSet;

use crate::{Entry, RelPath};

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
        return Some(Entry::Directory(children));
    }
    if alpha == beta && !alpha.is_some_and(Entry::has_problems) {
        return alpha.cloned();
    }
    ancestor.filter(|a| !a.has_problems()).cloned()
}

/// [`agree`] restricted to the subtrees at `paths` (already raised by
/// [`scope`](crate::scope)), updating `ancestor` in place. Parents a path needs in the ancestor
/// are created as directories (both sides have them as directories, by construction of the
/// scope). Returns true if the ancestor changed.
pub fn agree_at(
    ancestor: &mut Option<Entry>,
    alpha: Option<&Entry>,
    beta: Option<&Entry>,
    paths: &[RelPath],
) -> bool {
    let mut changed = false;
    for p in paths {
        let new = agree(
            ancestor.as_ref().and_then(|a| a.get(p.as_str())),
            crate::entry::at(alpha, p.as_str()),
            crate::entry::at(beta, p.as_str()),
        );
        if crate::entry::at(ancestor.as_ref(), p.as_str()) != new.as_ref() {
            set(ancestor, p, new);
            changed = true;
        }
    }
    changed
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
