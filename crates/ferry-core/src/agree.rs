use std::collections::BTreeSet;

use crate::Entry;

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
