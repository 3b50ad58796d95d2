//! Properties of reconcile, apply and agree over random trees.
//!
//! Trees use a tiny alphabet (names `a`/`b`/`c`, three contents, two link targets) so that
//! random edits on the two sides collide often: same paths, same content, same change.
//! Alpha and beta are derived from the ancestor by edits shared by both sides plus edits of
//! their own; sometimes the ancestor is missing (first sync) or a side is empty or gone.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use common::*;
use ferry_core::{
    Change, Digest, Dir, Entry, Mode, Plan, RelPath, agree, apply_changes, digests, reconcile,
    reconcile_at,
};
use proptest::prelude::*;

const NAMES: [&str; 3] = ["a", "b", "c"];

// --- Generators ---------------------------------------------------------------------------

fn name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(NAMES.to_vec())
}

/// A file with one of three contents (size follows content) and one of three modes.
fn file() -> impl Strategy<Value = Entry> {
    (1u8..=3, prop::sample::select(vec![0o644u32, 0o755, 0o600]))
        .prop_map(|(n, mode)| Entry::file_mode([n; 32], u64::from(n), mode))
}

/// A directory of `children` with one of two modes.
fn with_dir_mode(children: BTreeMap<String, Entry>, private: bool) -> Entry {
    let mut d = Dir::from(children);
    if private {
        d.mode = 0o700;
    }
    Entry::Directory(d)
}

fn leaf(problems: bool) -> BoxedStrategy<Entry> {
    let plain = prop_oneof![
        6 => file(),
        1 => prop::sample::select(vec!["a", "b/c"]).prop_map(l),
        1 => Just(d(&[])),
    ];
    if problems {
        prop_oneof![10 => plain, 1 => Just(problem())].boxed()
    } else {
        plain.boxed()
    }
}

/// A subtree at most `depth` directories deep.
fn subtree(depth: u32, problems: bool) -> BoxedStrategy<Entry> {
    leaf(problems)
        .prop_recursive(depth, 16, 3, |inner| {
            (
                prop::collection::btree_map(name().prop_map(String::from), inner, 0..=3),
                any::<bool>(),
            )
                .prop_map(|(c, private)| with_dir_mode(c, private))
        })
        .boxed()
}

/// A root directory, at most three levels deep; ancestors never hold problems (agree keeps
/// them out of the archive).
fn root_tree(problems: bool) -> impl Strategy<Value = Entry> {
    prop::collection::btree_map(name().prop_map(String::from), subtree(2, problems), 0..=3)
        .prop_map(|c| Entry::Directory(Dir::from(c)))
}

#[derive(Clone, Debug)]
enum Op {
    /// Put this entry there, turning missing or non-directory parents into directories.
    Set(Entry),
    Remove,
    ToggleExec,
    Rewrite(u8),
}

#[derive(Clone, Debug)]
struct Edit {
    path: Vec<&'static str>,
    op: Op,
}

fn edit() -> impl Strategy<Value = Edit> {
    let op = prop_oneof![
        3 => subtree(1, true).prop_map(Op::Set),
        2 => Just(Op::Remove),
        1 => Just(Op::ToggleExec),
        1 => (1u8..=3).prop_map(Op::Rewrite),
    ];
    (prop::collection::vec(name(), 1..=3), op).prop_map(|(path, op)| Edit { path, op })
}

fn apply_edit(tree: &mut Option<Entry>, edit: &Edit) {
    fn go(entry: &mut Entry, path: &[&str], op: &Op) {
        let Entry::Directory(children) = entry else {
            return;
        };
        let (first, rest) = path.split_first().expect("edit paths are not empty");
        if rest.is_empty() {
            match op {
                Op::Set(e) => {
                    children.insert((*first).to_owned(), e.clone());
                }
                Op::Remove => {
                    children.remove(*first);
                }
                Op::ToggleExec => match children.get_mut(*first) {
                    Some(Entry::File { mode, .. }) => *mode ^= 0o111,
                    Some(Entry::Directory(d)) => d.mode ^= 0o055,
                    _ => {}
                },
                Op::Rewrite(n) => {
                    if let Some(Entry::File { digest, size, .. }) = children.get_mut(*first) {
                        *digest = Digest([*n; 32]);
                        *size = u64::from(*n);
                    }
                }
            }
            return;
        }
        if let Op::Set(_) = op {
            let child = children
                .entry((*first).to_owned())
                .or_insert_with(|| d(&[]));
            if !child.is_dir() {
                *child = d(&[]);
            }
        }
        if let Some(child) = children.get_mut(*first) {
            go(child, rest, op);
        }
    }
    if let Op::Set(_) = edit.op {
        if !tree.as_ref().is_some_and(Entry::is_dir) {
            *tree = Some(d(&[]));
        }
    }
    if let Some(t) = tree.as_mut() {
        go(t, &edit.path, &edit.op);
    }
}

fn edited(base: &Option<Entry>, shared: &[Edit], own: &[Edit]) -> Option<Entry> {
    let mut tree = base.clone();
    for e in shared.iter().chain(own) {
        apply_edit(&mut tree, e);
    }
    tree
}

#[derive(Clone, Copy, Debug)]
enum Side {
    Edited,
    Empty,
    Gone,
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![18 => Just(Side::Edited), 1 => Just(Side::Empty), 1 => Just(Side::Gone)]
}

/// (ancestor, alpha, beta).
type Trees = (Option<Entry>, Option<Entry>, Option<Entry>);

fn trees() -> impl Strategy<Value = Trees> {
    (
        prop::option::weighted(0.9, root_tree(false)),
        prop::collection::vec(edit(), 0..4),
        prop::collection::vec(edit(), 0..4),
        prop::collection::vec(edit(), 0..4),
        side(),
        side(),
    )
        .prop_map(|(anc, shared, ea, eb, sa, sb)| {
            let make = |s: Side, own: &[Edit]| match s {
                Side::Edited => edited(&anc, &shared, own),
                Side::Empty => Some(d(&[])),
                Side::Gone => None,
            };
            let a = make(sa, &ea);
            let b = make(sb, &eb);
            (anc, a, b)
        })
}

// --- Helpers --------------------------------------------------------------------------------

fn conflict_paths(plan: &Plan) -> Vec<RelPath> {
    let mut paths: Vec<RelPath> = plan.conflicts.iter().map(|c| c.path.clone()).collect();
    paths.sort();
    paths
}

/// Files a change takes away whose content is not in the archive: what the applier must back up.
fn backed_up(changes: &[Change], archived: &HashSet<Digest>) -> BTreeSet<(String, Digest)> {
    let mut out = BTreeSet::new();
    for ch in changes {
        let new = files(ch.new.as_ref(), ch.path.as_str());
        for (path, digest) in files(ch.old.as_ref(), ch.path.as_str()) {
            if !archived.contains(&digest) && new.get(&path) != Some(&digest) {
                out.insert((path, digest));
            }
        }
    }
    out
}

/// True for a change of permission bits alone (a directory's, or a file's with its content).
fn metadata_only(c: &Change) -> bool {
    c.is_meta()
        || matches!(
            (&c.old, &c.new),
            (Some(Entry::File { digest: x, .. }), Some(Entry::File { digest: y, .. })) if x == y
        )
}

fn nests(a: &RelPath, b: &RelPath) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

fn is_safe(mode: Mode) -> bool {
    matches!(mode, Mode::TwoWaySafe | Mode::OneWaySafe)
}

/// Checks every property that holds for one (ancestor, alpha, beta) in one mode.
fn check(anc: &Option<Entry>, a: &Option<Entry>, b: &Option<Entry>, mode: Mode) {
    let plan = reconcile(anc.as_ref(), a.as_ref(), b.as_ref(), mode);
    let conflicts = conflict_paths(&plan);

    // One-way modes never touch alpha.
    if mode.is_one_way() {
        assert!(
            plan.alpha.is_empty(),
            "{mode}: alpha changes {:?}",
            plan.alpha
        );
    }

    // Changes never nest, on either side, nor with a conflict; they describe the scanned trees.
    for (side, changes, tree) in [("alpha", &plan.alpha, a), ("beta", &plan.beta, b)] {
        for (i, ch) in changes.iter().enumerate() {
            let scanned = tree.as_ref().and_then(|t| t.get(ch.path.as_str()));
            assert_ne!(ch.old, ch.new, "{mode}: {side} change does nothing: {ch:?}");
            if ch.is_meta() {
                // A directory's bits alone: the one change that others may nest in.
                let bits = |e: Option<&Entry>| e.and_then(Entry::mode);
                assert_eq!(bits(ch.old.as_ref()), bits(scanned), "{mode}: {ch:?}");
                assert!(
                    ch.old
                        .as_ref()
                        .and_then(Entry::children)
                        .is_some_and(|c| c.is_empty())
                        && ch
                            .new
                            .as_ref()
                            .and_then(Entry::children)
                            .is_some_and(|c| c.is_empty()),
                    "{mode}: a directory's bits carry no children: {ch:?}"
                );
                continue;
            }
            assert_eq!(ch.old.as_ref(), scanned, "{mode}: {side} change {ch:?}");
            for other in changes[i + 1..].iter().filter(|c| !c.is_meta()) {
                assert!(
                    !nests(&ch.path, &other.path),
                    "{mode}: {side} changes nest: {ch:?} / {other:?}"
                );
            }
            for c in &conflicts {
                assert!(
                    !nests(&ch.path, c),
                    "{mode}: {side} change {ch:?} nests with conflict at {c}"
                );
            }
        }
    }

    // The plan applies to the trees it was computed from.
    let a2 = apply_changes(a.clone(), &plan.alpha)
        .unwrap_or_else(|e| panic!("{mode}: alpha changes do not apply: {e}"));
    let b2 = apply_changes(b.clone(), &plan.beta)
        .unwrap_or_else(|e| panic!("{mode}: beta changes do not apply: {e}"));

    // Both sides end up equal except at conflicts and at paths nobody could read.
    let mut masked: Vec<String> = conflicts.iter().map(|p| p.as_str().to_owned()).collect();
    masked.extend(problem_paths(a.as_ref()));
    masked.extend(problem_paths(b.as_ref()));
    match mode {
        Mode::TwoWaySafe | Mode::TwoWayResolved | Mode::OneWayReplica => {
            assert_eq!(
                mask(a2.clone(), &masked),
                mask(b2.clone(), &masked),
                "{mode}: sides differ outside conflicts {masked:?}"
            );
        }
        Mode::OneWaySafe => {
            // With beta untouched since the archive, one-way-safe is a plain copy.
            if b == anc {
                assert_eq!(
                    mask(a2.clone(), &masked),
                    mask(b2.clone(), &masked),
                    "{mode}: unchanged beta is not a copy of alpha"
                );
            }
        }
    }
    if mode == Mode::OneWayReplica && !has_problems(a.as_ref()) && !has_problems(b.as_ref()) {
        assert!(plan.conflicts.is_empty(), "{mode}: conflicts {conflicts:?}");
        assert_eq!(a2, b2, "{mode}: beta is not an exact copy of alpha");
    }
    if mode.is_one_way() {
        assert_eq!(&a2, a, "{mode}: alpha changed");
    }

    // No data loss: content that is not in the archive either survives at its path on one
    // side, or is taken by a change (and so backed up by the applier). The safe modes never
    // take any; the others take it only from beta.
    let archived = digests(anc.as_ref());
    let lost_alpha = backed_up(&plan.alpha, &archived);
    let lost_beta = backed_up(&plan.beta, &archived);
    assert!(
        lost_alpha.is_empty(),
        "{mode}: alpha loses content not in the archive: {lost_alpha:?}"
    );
    if is_safe(mode) {
        for ch in plan.alpha.iter().chain(&plan.beta) {
            // Content that stays at its path (a change of permission bits) is not removed.
            let stays = files(ch.new.as_ref(), ch.path.as_str());
            let foreign: Vec<_> = files(ch.old.as_ref(), ch.path.as_str())
                .into_iter()
                .filter(|(p, dg)| !archived.contains(dg) && stays.get(p) != Some(dg))
                .collect();
            assert!(
                foreign.is_empty(),
                "{mode}: {ch:?} removes content not in the archive: {foreign:?}"
            );
        }
        assert!(lost_beta.is_empty(), "{mode}: beta loses {lost_beta:?}");
    }
    let after_a = files(a2.as_ref(), "");
    let after_b = files(b2.as_ref(), "");
    for (path, digest) in files(a.as_ref(), "")
        .into_iter()
        .chain(files(b.as_ref(), ""))
    {
        if archived.contains(&digest) {
            continue;
        }
        let kept = after_a.get(&path) == Some(&digest) || after_b.get(&path) == Some(&digest);
        let backed = lost_beta.contains(&(path.clone(), digest));
        assert!(
            kept || backed,
            "{mode}: new content {digest:?} at {path} is neither kept nor backed up"
        );
    }

    // The archive never records an unreadable path.
    let archive = agree(anc.as_ref(), a2.as_ref(), b2.as_ref());
    assert!(
        !has_problems(archive.as_ref()),
        "{mode}: archive has problems: {archive:?}"
    );

    // Idempotence: the next cycle has nothing to do and reports the same conflicts.
    let next = reconcile(archive.as_ref(), a2.as_ref(), b2.as_ref(), mode);
    assert!(
        next.alpha.is_empty() && next.beta.is_empty(),
        "{mode}: second cycle changes alpha {:?} beta {:?} (archive {archive:?})",
        next.alpha,
        next.beta
    );
    assert_eq!(
        conflict_paths(&next),
        conflicts,
        "{mode}: second cycle reports other conflicts"
    );
}

// --- Properties ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn equal_trees_need_nothing(t in prop::option::weighted(0.9, root_tree(false))) {
        for mode in Mode::ALL {
            let plan = reconcile(t.as_ref(), t.as_ref(), t.as_ref(), mode);
            prop_assert!(plan.is_empty(), "{}: {:?}", mode, plan);
        }
    }

    /// Both sides making the same change (or arriving at the same tree) is never a conflict,
    /// whatever the archive says.
    #[test]
    fn same_change_on_both_sides_needs_nothing((anc, a, _) in trees()) {
        for mode in Mode::ALL {
            let plan = reconcile(anc.as_ref(), a.as_ref(), a.as_ref(), mode);
            prop_assert!(plan.is_empty(), "{}: {:?}", mode, plan);
        }
    }

    #[test]
    fn plans_apply_converge_settle_and_keep_content((anc, a, b) in trees()) {
        for mode in Mode::ALL {
            check(&anc, &a, &b, mode);
        }
    }

    /// A scan's problem entry is never deleted, replaced nor copied.
    #[test]
    fn problems_are_never_touched((anc, a, b) in trees()) {
        for mode in Mode::ALL {
            let plan = reconcile(anc.as_ref(), a.as_ref(), b.as_ref(), mode);
            for ch in plan.alpha.iter().chain(&plan.beta) {
                prop_assert!(
                    !has_problems(ch.old.as_ref()) && !has_problems(ch.new.as_ref()),
                    "{}: {:?} touches an unreadable path", mode, ch
                );
            }
        }
    }

    #[test]
    fn swapping_sides_mirrors_two_way_safe((anc, a, b) in trees()) {
        let plan = reconcile(anc.as_ref(), a.as_ref(), b.as_ref(), Mode::TwoWaySafe);
        let swapped = reconcile(anc.as_ref(), b.as_ref(), a.as_ref(), Mode::TwoWaySafe);
        // Permission bits changed differently on both sides (no content at stake) go alpha's
        // way, so those changes swap direction; the same paths are settled either way.
        let split = |v: &[Change]| -> (Vec<Change>, BTreeSet<RelPath>) {
            let (meta, content): (Vec<&Change>, Vec<&Change>) =
                v.iter().partition(|c| metadata_only(c));
            (content.into_iter().cloned().collect(), meta.into_iter().map(|c| c.path.clone()).collect())
        };
        let (pa, pam) = split(&plan.alpha);
        let (pb, pbm) = split(&plan.beta);
        let (sa, sam) = split(&swapped.alpha);
        let (sb, sbm) = split(&swapped.beta);
        prop_assert_eq!(&sa, &pb);
        prop_assert_eq!(&sb, &pa);
        prop_assert_eq!(
            pam.union(&pbm).collect::<BTreeSet<_>>(),
            sam.union(&sbm).collect::<BTreeSet<_>>()
        );
        prop_assert_eq!(swapped.conflicts.len(), plan.conflicts.len());
        for (s, p) in swapped.conflicts.iter().zip(&plan.conflicts) {
            prop_assert_eq!(&s.path, &p.path);
            prop_assert_eq!(&s.ancestor, &p.ancestor);
            prop_assert_eq!(&s.alpha, &p.beta);
            prop_assert_eq!(&s.beta, &p.alpha);
        }
    }

    /// Two-way-resolved plans what two-way-safe plans, plus alpha's version at safe's
    /// conflicts; it never changes alpha where two-way-safe would not.
    #[test]
    fn two_way_resolved_only_differs_at_conflicts((anc, a, b) in trees()) {
        let safe = reconcile(anc.as_ref(), a.as_ref(), b.as_ref(), Mode::TwoWaySafe);
        let resolved = reconcile(anc.as_ref(), a.as_ref(), b.as_ref(), Mode::TwoWayResolved);
        prop_assert!(resolved.conflicts.is_empty() || has_problems(b.as_ref()));
        prop_assert_eq!(&resolved.alpha, &safe.alpha);
        let extra: Vec<&Change> = resolved.beta.iter().filter(|c| !safe.beta.contains(c)).collect();
        let settled: BTreeSet<&RelPath> = extra.iter().map(|c| &c.path).collect();
        let conflicted: BTreeSet<&RelPath> = safe.conflicts.iter().map(|c| &c.path).collect();
        prop_assert!(settled.is_subset(&conflicted), "{:?} vs {:?}", settled, conflicted);
        prop_assert!(safe.beta.iter().all(|c| resolved.beta.contains(c)));
    }

    /// The archive never gains a path neither side has, and never keeps an unreadable one.
    #[test]
    fn agree_holds_only_what_both_sides_could_read((anc, a, b) in trees()) {
        let archive = agree(anc.as_ref(), a.as_ref(), b.as_ref());
        prop_assert!(!has_problems(archive.as_ref()));
        // Wherever alpha and beta agree on a file, so does the archive.
        let fa = files(a.as_ref(), "");
        let fb = files(b.as_ref(), "");
        let fr = files(archive.as_ref(), "");
        for (path, digest) in &fa {
            if fb.get(path) == Some(digest) {
                let in_a = a.as_ref().and_then(|t| t.get(path));
                let in_b = b.as_ref().and_then(|t| t.get(path));
                if in_a == in_b {
                    prop_assert_eq!(fr.get(path), Some(digest), "{}", path);
                }
            }
        }
    }
}

// --- Scoped reconciliation (watch-triggered cycles) -----------------------------------------

/// Every path where the three trees do not hold the same thing (directories compared by kind
/// only): what a watcher would have named.
fn differing_paths(anc: &Option<Entry>, a: &Option<Entry>, b: &Option<Entry>) -> Vec<RelPath> {
    fn shallow(e: Option<&Entry>) -> Option<Entry> {
        e.map(|e| match e {
            Entry::Directory(d) => Entry::Directory(Dir::bare(d.mode)),
            e => e.clone(),
        })
    }
    let mut all = BTreeSet::new();
    for t in [anc, a, b].into_iter().flatten() {
        t.walk("", &mut |p, _| {
            all.insert(p.to_owned());
        });
    }
    all.into_iter()
        .filter(|p| {
            let get = |t: &Option<Entry>| shallow(t.as_ref().and_then(|t| t.get(p)));
            let (x, y, z) = (get(anc), get(a), get(b));
            !(x == y && y == z)
        })
        .map(|p| RelPath::new(&p).unwrap())
        .collect()
}

fn sorted(mut v: Vec<Change>) -> Vec<Change> {
    v.sort_by(|x, y| x.path.cmp(&y.path));
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn scoped_at_root_is_full_reconcile((anc, a, b) in trees()) {
        for mode in Mode::ALL {
            let full = reconcile(anc.as_ref(), a.as_ref(), b.as_ref(), mode);
            let at = reconcile_at(anc.as_ref(), a.as_ref(), b.as_ref(), mode, &[RelPath::root()]);
            prop_assert_eq!(full, at);
        }
        let mut in_place = anc.clone();
        let changed = ferry_core::agree_at(&mut in_place, a.as_ref(), b.as_ref(), &[RelPath::root()]);
        let expected = agree(anc.as_ref(), a.as_ref(), b.as_ref());
        prop_assert_eq!(changed, expected != anc);
        prop_assert_eq!(in_place, expected);
    }

    #[test]
    fn scoped_at_every_difference_is_full_reconcile((anc, a, b) in trees()) {
        let dirty = differing_paths(&anc, &a, &b);
        let scope = ferry_core::scope(a.as_ref(), b.as_ref(), &dirty);
        for mode in Mode::ALL {
            let full = reconcile(anc.as_ref(), a.as_ref(), b.as_ref(), mode);
            let at = reconcile_at(anc.as_ref(), a.as_ref(), b.as_ref(), mode, &dirty);
            let full_conflicts = conflict_paths(&full);
            prop_assert_eq!(sorted(full.alpha), sorted(at.alpha));
            prop_assert_eq!(sorted(full.beta), sorted(at.beta));
            prop_assert_eq!(full_conflicts, {
                let mut c: Vec<RelPath> = at.conflicts.iter().map(|c| c.path.clone()).collect();
                c.sort();
                c
            });
        }
        let mut scoped = anc.clone();
        ferry_core::agree_at(&mut scoped, a.as_ref(), b.as_ref(), &scope);
        prop_assert_eq!(agree(anc.as_ref(), a.as_ref(), b.as_ref()), scoped);
    }
}
