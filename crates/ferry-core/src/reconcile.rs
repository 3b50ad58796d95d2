//! Three-way reconciliation of an ancestor (the archive) with alpha and beta.
//!
//! Invariants, each checked by the property tests in `tests/properties.rs`:
//! - changes never nest: a change at a path means no other change at or below it on that side;
//! - in the safe modes, no change removes a file whose content is not in the ancestor;
//! - the one-way modes never produce a change for alpha;
//! - after applying the plan, both sides are equal except at the conflicts (two-way modes).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{Dir, Entry, Mode, RelPath};

/// One transition for one side: replace `old` (what the scan saw there, `None` for nothing)
/// with `new` (`None` to remove) at `path`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Where.
    pub path: RelPath,
    /// What the side has now, as scanned; the applier refuses if the disk no longer matches.
    pub old: Option<Entry>,
    /// What the side must have afterwards.
    pub new: Option<Entry>,
}

impl Change {
    /// True for a change of a directory's permission bits alone: `old` and `new` are both
    /// directories, with no children (what is below is changed, if at all, by changes of its
    /// own). The one kind of change that may have others below it.
    pub fn is_meta(&self) -> bool {
        matches!(
            (&self.old, &self.new),
            (Some(Entry::Directory(_)), Some(Entry::Directory(_)))
        )
    }
}

/// A path changed differently on both sides; nothing is done there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// Where.
    pub path: RelPath,
    /// The last agreed state.
    pub ancestor: Option<Entry>,
    /// Alpha's state.
    pub alpha: Option<Entry>,
    /// Beta's state.
    pub beta: Option<Entry>,
}

/// The result of [`reconcile`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Changes to make on alpha.
    pub alpha: Vec<Change>,
    /// Changes to make on beta.
    pub beta: Vec<Change>,
    /// Paths left alone because both sides changed them.
    pub conflicts: Vec<Conflict>,
}

impl Plan {
    /// True when there is nothing to do and nothing to report.
    pub fn is_empty(&self) -> bool {
        self.alpha.is_empty() && self.beta.is_empty() && self.conflicts.is_empty()
    }
}

/// Computes the changes that bring alpha and beta together from their common `ancestor`.
///
/// Problem entries (paths a scan could not read) are never touched nor propagated.
pub fn reconcile(
    ancestor: Option<&Entry>,
    alpha: Option<&Entry>,
    beta: Option<&Entry>,
    mode: Mode,
) -> Plan {
    let mut plan = Plan::default();
    walk(&RelPath::root(), ancestor, alpha, beta, mode, &mut plan);
    plan
}

/// [`reconcile`] restricted to the subtrees at `paths` (the paths a watch-triggered cycle
/// rescanned). Each path is first raised to the nearest ancestor whose parent is a directory on
/// both sides, so every change it yields can be placed; paths below another are dropped.
/// With `[root]` it is exactly [`reconcile`].
pub fn reconcile_at(
    ancestor: Option<&Entry>,
    alpha: Option<&Entry>,
    beta: Option<&Entry>,
    mode: Mode,
    paths: &[RelPath],
) -> Plan {
    let mut plan = Plan::default();
    for p in scope(alpha, beta, paths) {
        walk(
            &p,
            crate::entry::at(ancestor, p.as_str()),
            crate::entry::at(alpha, p.as_str()),
            crate::entry::at(beta, p.as_str()),
            mode,
            &mut plan,
        );
    }
    plan
}

/// The top-most placeable paths covering `paths` (see [`reconcile_at`]).
pub fn scope(alpha: Option<&Entry>, beta: Option<&Entry>, paths: &[RelPath]) -> Vec<RelPath> {
    let is_dir = |t: Option<&Entry>, p: &RelPath| {
        t.and_then(|t| t.get(p.as_str())).is_some_and(Entry::is_dir)
    };
    let mut raised: Vec<RelPath> = paths
        .iter()
        .map(|p| {
            let mut q = p.clone();
            while let Some(parent) = q.parent() {
                if is_dir(alpha, &parent) && is_dir(beta, &parent) {
                    break;
                }
                q = parent;
            }
            q
        })
        .collect();
    raised.sort();
    raised.dedup();
    let mut out: Vec<RelPath> = Vec::with_capacity(raised.len());
    for p in raised {
        // Sorted order puts a path right after any ancestor of it that is kept.
        if out.last().is_some_and(|q| p.starts_with(q)) {
            continue;
        }
        out.push(p);
    }
    out
}

fn walk(
    path: &RelPath,
    a: Option<&Entry>,
    x: Option<&Entry>,
    y: Option<&Entry>,
    mode: Mode,
    plan: &mut Plan,
) {
    if x.is_some_and(Entry::is_problem) || y.is_some_and(Entry::is_problem) || x == y {
        return;
    }
    if let (Some(Entry::Directory(xc)), Some(Entry::Directory(yc))) = (x, y) {
        let ac = a.and_then(Entry::children);
        let names: BTreeSet<&String> = xc
            .keys()
            .chain(yc.keys())
            .chain(ac.into_iter().flat_map(|c| c.keys()))
            .collect();
        for name in names {
            // Names come from scans that validated them; a bad one cannot be addressed, skip it.
            let Ok(child) = path.join(name) else { continue };
            walk(
                &child,
                ac.and_then(|c| c.get(name)),
                xc.get(name),
                yc.get(name),
                mode,
                plan,
            );
        }
        // After the children: a directory made read-only is made so once they are written.
        // The root's own bits are left alone (scans report them as they are, never applied).
        if xc.mode != yc.mode && !path.is_root() {
            let am = a.and_then(|a| match a {
                Entry::Directory(d) => Some(d.mode),
                _ => None,
            });
            let meta = |old: u32, new: u32| Change {
                path: path.clone(),
                old: Some(Entry::Directory(Dir::bare(old))),
                new: Some(Entry::Directory(Dir::bare(new))),
            };
            let (alpha_changed, beta_changed) = (Some(xc.mode) != am, Some(yc.mode) != am);
            // Bits changed differently on both sides put no content at stake: alpha's win.
            match mode {
                Mode::OneWaySafe if beta_changed && !alpha_changed => {}
                Mode::TwoWaySafe | Mode::TwoWayResolved if !alpha_changed => {
                    plan.alpha.push(meta(xc.mode, yc.mode))
                }
                _ => plan.beta.push(meta(yc.mode, xc.mode)),
            }
        }
        return;
    }
    // A side that only removed things (its subtree is a part of the ancestor's) did not modify
    // anything, so when the other side deleted the whole path the deletions agree.
    let alpha_changed = x != a && !(y.is_none() && x.is_some_and(|x| pruned(x, a)));
    let beta_changed = y != a && !(x.is_none() && y.is_some_and(|y| pruned(y, a)));
    // A subtree holding a path ferry cannot read can be neither backed up nor verified, so it
    // is never replaced or removed: such a change becomes a conflict.
    let push = |plan: &mut Plan, to_alpha: bool| {
        let (old, new) = if to_alpha { (x, y) } else { (y, x) };
        if old.is_some_and(Entry::has_problems) {
            plan.conflicts.push(conflict(path, a, x, y));
        } else if to_alpha {
            plan.alpha.push(change(path, old, new));
        } else {
            plan.beta.push(change(path, old, new));
        }
    };
    let to_alpha = |plan: &mut Plan| push(plan, true);
    let to_beta = |plan: &mut Plan| push(plan, false);
    match mode {
        Mode::OneWayReplica => to_beta(plan),
        Mode::TwoWaySafe | Mode::TwoWayResolved => {
            if !alpha_changed {
                to_alpha(plan);
            } else if !beta_changed {
                to_beta(plan);
            } else if x.is_none() {
                // A deletion never beats a modification: beta's version comes back whole.
                to_alpha(plan);
            } else if y.is_none() || mode == Mode::TwoWayResolved || same_content(x, y) {
                // Both sides hold the same content with different permission bits (a first
                // sync, or a chmod on each side): no content at stake, alpha's bits win.
                to_beta(plan);
            } else {
                plan.conflicts.push(conflict(path, a, x, y));
            }
        }
        Mode::OneWaySafe => {
            if !beta_changed || y.is_none() {
                // Beta untouched, or beta deleted something alpha has: alpha's version goes over.
                to_beta(plan);
            } else if !alpha_changed {
                // Beta's own file or edit, alpha did nothing here: left alone, no conflict.
            } else if same_content(x, y) {
                to_beta(plan);
            } else {
                plan.conflicts.push(conflict(path, a, x, y));
            }
        }
    }
}

/// True if both are files with the same content (they differ in metadata only).
fn same_content(x: Option<&Entry>, y: Option<&Entry>) -> bool {
    matches!(
        (x, y),
        (Some(Entry::File { digest: a, .. }), Some(Entry::File { digest: b, .. })) if a == b
    )
}

/// True if `e` holds nothing that `a` does not: the same entry, or a directory whose children
/// are all pruned versions of `a`'s.
fn pruned(e: &Entry, a: Option<&Entry>) -> bool {
    match (e, a) {
        (Entry::Directory(ec), Some(Entry::Directory(ac))) => {
            ec.iter().all(|(name, child)| pruned(child, ac.get(name)))
        }
        (e, Some(a)) => e == a,
        (_, None) => false,
    }
}

fn change(path: &RelPath, old: Option<&Entry>, new: Option<&Entry>) -> Change {
    Change {
        path: path.clone(),
        old: old.cloned(),
        new: new.map(Entry::without_problems),
    }
}

fn conflict(path: &RelPath, a: Option<&Entry>, x: Option<&Entry>, y: Option<&Entry>) -> Conflict {
    Conflict {
        path: path.clone(),
        ancestor: a.cloned(),
        alpha: x.cloned(),
        beta: y.cloned(),
    }
}

/// Why a cycle was stopped before reconciling: one root lost all its content.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{side}'s root was {what} while {other} still has content; nothing was changed. Re-run with \
     --reset to forget the last agreed state and refill {side} from {other} (nothing is deleted), \
     or with --accept-wipe to delete {other}'s content too"
)]
pub struct WipeRefusal {
    /// `alpha` or `beta`.
    pub side: &'static str,
    /// `beta` or `alpha`.
    pub other: &'static str,
    /// `emptied` or `removed`.
    pub what: &'static str,
}

/// Refuses to propagate a root that was emptied or removed while the other side still has
/// content. `one-way-replica` is exempt; in `one-way-safe` only alpha's wipe matters (beta's
/// deletions are restored from alpha anyway).
pub fn check_wipe(
    ancestor: Option<&Entry>,
    alpha: Option<&Entry>,
    beta: Option<&Entry>,
    mode: Mode,
) -> Result<(), WipeRefusal> {
    fn has_content(e: Option<&Entry>) -> bool {
        match e {
            None => false,
            Some(Entry::Directory(c)) => !c.is_empty(),
            Some(_) => true,
        }
    }
    if mode == Mode::OneWayReplica || !has_content(ancestor) {
        return Ok(());
    }
    let wiped = |side: Option<&Entry>, other: Option<&Entry>| {
        if has_content(side) || !has_content(other) {
            None
        } else if side.is_none() {
            Some("removed")
        } else {
            Some("emptied")
        }
    };
    if let Some(what) = wiped(alpha, beta) {
        return Err(WipeRefusal {
            side: "alpha",
            other: "beta",
            what,
        });
    }
    if !mode.is_one_way() {
        if let Some(what) = wiped(beta, alpha) {
            return Err(WipeRefusal {
                side: "beta",
                other: "alpha",
                what,
            });
        }
    }
    Ok(())
}
