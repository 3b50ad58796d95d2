//! Names across filesystems (issue 12, part 4): table cases and properties of `align_names`
//! followed by reconcile.

mod common;

use std::collections::BTreeMap;

use common::*;
use ferry_core::{Aligned, Entry, Mode, NameRules, Plan, align_names, apply_changes, reconcile};
use proptest::prelude::*;

const NFC: &str = "caf\u{e9}";
const NFD: &str = "cafe\u{301}";

const EXACT: NameRules = NameRules::EXACT;
/// exFAT: folds case, keeps normalization apart.
const EXFAT: NameRules = NameRules {
    fold_case: true,
    fold_normalization: false,
};
/// A macOS volume: folds both.
const MAC: NameRules = NameRules {
    fold_case: true,
    fold_normalization: true,
};
/// A volume that folds normalization only (the tests' NFD stand-in).
const NORM: NameRules = NameRules {
    fold_case: false,
    fold_normalization: true,
};

/// Aligns, then reconciles the aligned trees.
fn run(
    ancestor: &Option<Entry>,
    alpha: &Option<Entry>,
    beta: &Option<Entry>,
    rules: [NameRules; 2],
    mode: Mode,
) -> (Aligned, Plan) {
    let al = align_names(ancestor.as_ref(), alpha.as_ref(), beta.as_ref(), rules);
    let a = al.alpha.clone().unwrap_or_else(|| alpha.clone());
    let b = al.beta.clone().unwrap_or_else(|| beta.clone());
    let plan = reconcile(ancestor.as_ref(), a.as_ref(), b.as_ref(), mode);
    (al, plan)
}

fn deletes(plan: &Plan) -> usize {
    plan.alpha
        .iter()
        .chain(&plan.beta)
        .filter(|c| c.new.is_none())
        .count()
}

#[test]
fn rules_key_folds_what_the_filesystem_folds() {
    for (rules, a, b, same) in [
        (EXACT, "Readme", "README", false),
        (EXACT, NFC, NFD, false),
        (EXFAT, "Readme", "README", true),
        (EXFAT, NFC, NFD, false),
        (NORM, NFC, NFD, true),
        (NORM, "Readme", "README", false),
        (MAC, "CAFE\u{301}", NFC, true),
        (MAC, "a", "b", false),
    ] {
        assert_eq!(
            rules.key(a) == rules.key(b),
            same,
            "{rules:?}: {a:?} vs {b:?}"
        );
    }
}

#[test]
fn case_pair_on_a_sensitive_side_is_a_problem_on_the_folding_side() {
    let alpha = root(&[("Readme", f(1)), ("README", f(2)), ("other", f(3))]);
    let beta = root(&[]);
    for mode in [
        Mode::TwoWaySafe,
        Mode::OneWaySafe,
        Mode::OneWayReplica,
        Mode::TwoWayResolved,
    ] {
        let (al, plan) = run(&None, &alpha, &beta, [EXACT, EXFAT], mode);
        assert_eq!(al.clashes.len(), 1, "{mode:?}");
        assert_eq!(al.clashes[0].side, "beta");
        assert_eq!(al.clashes[0].names, ["README", "Readme"]);
        assert!(al.clashes[0].message().contains("beta's filesystem cannot"));
        // Only `other` is placed; nothing anywhere is removed.
        assert_eq!(plan.beta, vec![add("other", f(3))], "{mode:?}");
        assert!(plan.alpha.is_empty() && deletes(&plan) == 0, "{mode:?}");
    }
}

#[test]
fn case_pair_where_the_folding_side_already_has_one_touches_neither() {
    // Beta got `Readme` before alpha made `README`.
    let ancestor = root(&[("Readme", f(1))]);
    let alpha = root(&[("Readme", f(1)), ("README", f(2))]);
    let beta = root(&[("Readme", f(1))]);
    let (al, plan) = run(&ancestor, &alpha, &beta, [EXACT, EXFAT], Mode::TwoWaySafe);
    assert_eq!(al.clashes.len(), 1);
    assert!(plan.is_empty(), "{plan:?}");
    // Beta editing its file changes nothing on alpha while the clash lasts.
    let beta = root(&[("Readme", f(9))]);
    let (_, plan) = run(&ancestor, &alpha, &beta, [EXACT, EXFAT], Mode::TwoWaySafe);
    assert!(plan.is_empty(), "{plan:?}");
}

#[test]
fn clash_inside_a_new_directory_places_the_rest_of_it() {
    let alpha = root(&[("d", d(&[("a", f(1)), ("A", f(2)), ("b", f(3))]))]);
    let beta = root(&[]);
    let (al, plan) = run(&None, &alpha, &beta, [EXACT, MAC], Mode::TwoWaySafe);
    assert_eq!(al.clashes.len(), 1);
    assert_eq!(al.clashes[0].dir.as_str(), "d");
    assert_eq!(plan.beta, vec![add("d", d(&[("b", f(3))]))]);
}

#[test]
fn normalization_pair_clashes_only_where_normalization_folds() {
    let alpha = root(&[(NFC, f(1)), (NFD, f(2))]);
    let beta = root(&[]);
    for (rules, clash) in [(EXACT, false), (EXFAT, false), (NORM, true), (MAC, true)] {
        let (al, plan) = run(&None, &alpha, &beta, [EXACT, rules], Mode::TwoWaySafe);
        assert_eq!(!al.clashes.is_empty(), clash, "{rules:?}");
        assert_eq!(plan.beta.len(), if clash { 0 } else { 2 }, "{rules:?}");
    }
}

#[test]
fn decomposing_volume_does_not_recreate_the_file() {
    // Synced once: alpha NFC, the archive NFC, beta hands back NFD.
    let ancestor = root(&[(NFC, f(1))]);
    let alpha = root(&[(NFC, f(1))]);
    let beta = root(&[(NFD, f(1))]);
    let (al, plan) = run(&ancestor, &alpha, &beta, [EXACT, MAC], Mode::TwoWaySafe);
    assert!(plan.is_empty(), "{plan:?}");
    assert!(al.clashes.is_empty());
    assert_eq!(al.beta_spellings.len(), 1);
    assert_eq!(al.beta_spellings.to_disk(&rel(NFC)), rel(NFD));
    assert_eq!(al.beta_spellings.to_session(&rel(NFD)), rel(NFC));
    assert!(al.alpha_spellings.is_empty());
    // An edit on alpha goes to beta's file under the archive's spelling (translated for beta's
    // disk by `to_disk`).
    let alpha = root(&[(NFC, f(2))]);
    let (_, plan) = run(&ancestor, &alpha, &beta, [EXACT, MAC], Mode::TwoWaySafe);
    assert_eq!(plan.beta, vec![put(NFC, f(1), f(2))]);
    // And an edit on beta comes back to alpha's file.
    let alpha = root(&[(NFC, f(1))]);
    let beta = root(&[(NFD, f(3))]);
    let (_, plan) = run(&ancestor, &alpha, &beta, [EXACT, MAC], Mode::TwoWaySafe);
    assert_eq!(plan.alpha, vec![put(NFC, f(1), f(3))]);
}

#[test]
fn normalization_only_rename_is_not_a_delete_plus_create() {
    let ancestor = root(&[("dir", d(&[(NFC, f(1))]))]);
    let alpha = root(&[("dir", d(&[(NFD, f(1))]))]);
    let beta = ancestor.clone();
    for rules in [[EXACT, EXACT], [EXACT, MAC], [MAC, EXACT]] {
        let (al, plan) = run(&ancestor, &alpha, &beta, rules, Mode::TwoWaySafe);
        assert!(plan.is_empty(), "{rules:?}: {plan:?}");
        assert_eq!(
            al.alpha_spellings.to_disk(&rel(&format!("dir/{NFC}"))),
            rel(&format!("dir/{NFD}"))
        );
    }
    // A renamed directory: what is below follows it.
    let ancestor = root(&[(NFC, d(&[("x", f(1))]))]);
    let alpha = root(&[(NFD, d(&[("x", f(1))]))]);
    let beta = root(&[(NFC, d(&[("x", f(2))]))]);
    let (al, plan) = run(&ancestor, &alpha, &beta, [EXACT, EXACT], Mode::TwoWaySafe);
    assert_eq!(plan.alpha, vec![put(&format!("{NFC}/x"), f(1), f(2))]);
    assert_eq!(
        al.alpha_spellings.to_disk(&rel(&format!("{NFC}/x"))),
        rel(&format!("{NFD}/x"))
    );
}

#[test]
fn case_only_rename_next_to_a_folding_side_is_not_propagated() {
    let ancestor = root(&[("Readme", f(1))]);
    let alpha = root(&[("README", f(1))]);
    let beta = root(&[("Readme", f(1))]);
    let (al, plan) = run(&ancestor, &alpha, &beta, [EXACT, EXFAT], Mode::TwoWaySafe);
    assert!(plan.is_empty(), "{plan:?}");
    assert!(al.clashes.is_empty());
    // Between two case-sensitive sides it is a rename like any other.
    let (_, plan) = run(&ancestor, &alpha, &beta, [EXACT, EXACT], Mode::TwoWaySafe);
    assert_eq!(
        sorted(plan.beta),
        vec![add("README", f(1)), del("Readme", f(1))]
    );
}

#[test]
fn first_sync_of_one_name_spelled_two_ways_is_one_file() {
    let alpha = root(&[(NFC, f(1))]);
    let beta = root(&[(NFD, f(1))]);
    let (al, plan) = run(&None, &alpha, &beta, [EXACT, EXACT], Mode::TwoWaySafe);
    assert!(plan.is_empty(), "{plan:?}");
    assert_eq!(al.beta_spellings.to_disk(&rel(NFC)), rel(NFD));
    // Different content: a conflict at one path, not two files.
    let beta = root(&[(NFD, f(2))]);
    let (_, plan) = run(&None, &alpha, &beta, [EXACT, EXACT], Mode::TwoWaySafe);
    assert_eq!(plan.conflicts.len(), 1);
    assert!(plan.alpha.is_empty() && plan.beta.is_empty());
}

#[test]
fn both_spellings_between_exact_sides_sync_as_two_files() {
    let alpha = root(&[(NFC, f(1)), (NFD, f(2))]);
    let beta = root(&[]);
    let (al, plan) = run(&None, &alpha, &beta, [EXACT, EXACT], Mode::TwoWaySafe);
    assert!(al.is_identity());
    assert_eq!(sorted(plan.beta), vec![add(NFD, f(2)), add(NFC, f(1))]);
}

#[test]
fn plain_ascii_trees_between_exact_sides_are_untouched() {
    let alpha = root(&[("a", d(&[("B", f(1)), ("b", f(2))]))]);
    let beta = root(&[("a", d(&[]))]);
    let al = align_names(None, alpha.as_ref(), beta.as_ref(), [EXACT, EXACT]);
    assert_eq!(al, Aligned::default());
}

// --- Properties ---------------------------------------------------------------------------

/// Names that meet each other under some rules: case pairs and normalization pairs.
const NAMES: [&str; 6] = ["a", "A", NFC, NFD, "CAFE\u{301}", "b"];

fn rules() -> impl Strategy<Value = NameRules> {
    prop::sample::select(vec![EXACT, EXFAT, NORM, MAC])
}

fn file() -> impl Strategy<Value = Entry> {
    (1u8..=3).prop_map(f)
}

fn tree() -> impl Strategy<Value = Entry> {
    let leaf = file();
    leaf.prop_recursive(2, 16, 4, |inner| {
        prop::collection::btree_map(prop::sample::select(NAMES.to_vec()), inner, 0..4)
            .prop_map(|m| Entry::Directory(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
    })
}

fn root_tree() -> impl Strategy<Value = Entry> {
    prop::collection::btree_map(prop::sample::select(NAMES.to_vec()), tree(), 0..5)
        .prop_map(|m| Entry::Directory(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

/// What a filesystem with `rules` could hold: of names that fold together, the first only.
fn holdable(e: Entry, rules: NameRules) -> Entry {
    match e {
        Entry::Directory(d) => {
            let mut seen = BTreeMap::new();
            for (n, c) in d.children.iter() {
                seen.entry(rules.key(n).into_owned())
                    .or_insert_with(|| (n.clone(), holdable(c.clone(), rules)));
            }
            Entry::Directory(seen.into_values().collect())
        }
        e => e,
    }
}

/// Every directory's real (non-problem) names are pairwise apart under `rules`.
fn apart(e: &Entry, rules: NameRules) -> Result<(), String> {
    if let Entry::Directory(d) = e {
        let mut seen = BTreeMap::new();
        for (n, c) in d.iter().filter(|(_, c)| !c.is_problem()) {
            if let Some(other) = seen.insert(rules.key(n).into_owned(), n.clone()) {
                return Err(format!("{other:?} and {n:?} both placed"));
            }
            apart(c, rules)?;
        }
    }
    Ok(())
}

/// Re-spells every name of the tree in NFD (what a decomposing volume hands back).
fn decompose(e: &Entry) -> Entry {
    use unicode_normalization::UnicodeNormalization;
    match e {
        Entry::Directory(d) => Entry::Directory(
            d.iter()
                .map(|(n, c)| (n.nfd().collect::<String>(), decompose(c)))
                .collect(),
        ),
        e => e.clone(),
    }
}

fn nfc_only(e: &Entry) -> Entry {
    use unicode_normalization::UnicodeNormalization;
    match e {
        Entry::Directory(d) => {
            let mut out = BTreeMap::new();
            for (n, c) in d.iter() {
                out.entry(n.nfc().collect::<String>())
                    .or_insert_with(|| nfc_only(c));
            }
            Entry::Directory(out.into_iter().collect())
        }
        e => e.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// No two names that fold together on the receiving side are ever both placed there,
    /// and no file is deleted because of a clash.
    #[test]
    fn folding_side_never_gets_two_names_of_one_key(
        alpha in root_tree(),
        beta in root_tree(),
        shared in any::<bool>(),
        ra in rules(),
        rb in rules(),
        mode in prop::sample::select(vec![Mode::TwoWaySafe, Mode::OneWayReplica, Mode::OneWaySafe]),
    ) {
        let (alpha, beta) = (holdable(alpha, ra), holdable(beta, rb));
        let ancestor = shared.then(|| holdable(holdable(alpha.clone(), rb), ra));
        let (alpha, beta) = (Some(alpha), Some(beta));
        let (al, plan) = run(&ancestor, &alpha, &beta, [ra, rb], mode);
        let a = al.alpha.clone().unwrap_or_else(|| alpha.clone());
        let b = al.beta.clone().unwrap_or_else(|| beta.clone());
        let b_after = apply_changes(b, &plan.beta).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let a_after = apply_changes(a, &plan.alpha).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if let Some(t) = &b_after {
            apart(t, rb).map_err(TestCaseError::fail)?;
        }
        if let Some(t) = &a_after {
            apart(t, ra).map_err(TestCaseError::fail)?;
        }
        // A clashing name is never touched on either side.
        for c in &al.clashes {
            for n in &c.names {
                let p = ferry_core::RelPath::new(&format!("{}{}{}", c.dir.as_str(),
                    if c.dir.is_root() { "" } else { "/" }, n)).map_err(|e| TestCaseError::fail(e.to_string()))?;
                for ch in plan.alpha.iter().chain(&plan.beta) {
                    prop_assert!(!ch.path.starts_with(&p), "clash at {} but change at {}", p, ch.path);
                }
            }
        }
    }

    /// A difference in normalization alone, between the sides and the archive, never yields
    /// a change (so never a delete); a decomposing volume's names never do either.
    #[test]
    fn normalization_only_difference_yields_nothing(
        base in root_tree(),
        decompose_alpha in any::<bool>(),
        decompose_beta in any::<bool>(),
        ra in rules(),
        rb in rules(),
    ) {
        // One file per NFC name (so each name has one spelling per side).
        let base = holdable(holdable(nfc_only(&base), ra), rb);
        let alpha = Some(if decompose_alpha { decompose(&base) } else { base.clone() });
        let beta = Some(if decompose_beta { decompose(&base) } else { base.clone() });
        let ancestor = Some(base);
        let (al, plan) = run(&ancestor, &alpha, &beta, [ra, rb], Mode::TwoWaySafe);
        prop_assert!(al.clashes.is_empty());
        prop_assert!(plan.is_empty(), "{:?}", plan);
        prop_assert_eq!(deletes(&plan), 0);
        // Spellings translate both ways.
        for (sp, tree) in [(&al.alpha_spellings, &alpha), (&al.beta_spellings, &beta)] {
            if let Some(t) = tree {
                let mut paths = Vec::new();
                t.walk("", &mut |p, _| paths.push(p.to_owned()));
                for p in paths {
                    let p = ferry_core::RelPath::new(&p).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(sp.to_disk(&sp.to_session(&p)), p);
                }
            }
        }
    }
}

#[test]
fn spellings_translate_nested_paths_both_ways() {
    // Alpha spells a directory and a file below it decomposed; the archive composed.
    let ancestor = root(&[(NFC, d(&[(NFC, f(1)), ("x", f(2))]))]);
    let alpha = root(&[(NFD, d(&[(NFD, f(1)), ("x", f(2))]))]);
    let beta = ancestor.clone();
    let (al, plan) = run(&ancestor, &alpha, &beta, [EXACT, EXACT], Mode::TwoWaySafe);
    assert!(plan.is_empty(), "{plan:?}");
    let sp = &al.alpha_spellings;
    assert_eq!(sp.len(), 2);
    let session = rel(&format!("{NFC}/{NFC}"));
    let disk = rel(&format!("{NFD}/{NFD}"));
    assert_eq!(sp.to_disk(&session), disk);
    assert_eq!(sp.to_session(&disk), session);
    assert_eq!(
        sp.to_disk(&rel(&format!("{NFC}/x"))),
        rel(&format!("{NFD}/x"))
    );
    assert!(sp.touches(&rel(NFC)) && sp.touches(&session) && !sp.touches(&rel("other")));
    assert!(al.beta_spellings.is_empty());
}

#[test]
fn both_folding_sides_each_report_what_they_cannot_hold() {
    // Each side made its own spelling of one name before the first sync: one file per side,
    // so not a clash; content differs, so a conflict at one path.
    let alpha = root(&[("Readme", f(1))]);
    let beta = root(&[("README", f(2))]);
    let (al, plan) = run(&None, &alpha, &beta, [MAC, MAC], Mode::TwoWaySafe);
    assert!(al.clashes.is_empty());
    assert_eq!(plan.conflicts.len(), 1);
    assert!(plan.alpha.is_empty() && plan.beta.is_empty());
    assert_eq!(al.beta_spellings.to_disk(&rel("Readme")), rel("README"));
}
