//! Reconcile table tests in Mutagen's spirit: each case is one scenario (ancestor, alpha, beta)
//! with the expected plan for every mode, written down once per group of modes that agree.
//!
//! Every case must say what happens in all four modes, so a new mode or a changed rule cannot
//! slip through a scenario unnoticed. Besides the expected plan, every case is also applied and
//! re-reconciled against the agreed archive, which must leave nothing to do.

mod common;

use common::*;
use ferry_core::{Change, Entry, Mode, WipeRefusal, agree, apply_changes, check_wipe, reconcile};

const ALL: &[Mode] = &Mode::ALL;
const ONE_WAY: &[Mode] = &[Mode::OneWaySafe, Mode::OneWayReplica];
const TWO_WAY_SAFE: &[Mode] = &[Mode::TwoWaySafe];
const TWO_WAY_RESOLVED: &[Mode] = &[Mode::TwoWayResolved];
const ONE_WAY_SAFE: &[Mode] = &[Mode::OneWaySafe];
const REPLICA: &[Mode] = &[Mode::OneWayReplica];
/// Every mode but one-way-replica.
const NOT_REPLICA: &[Mode] = &[Mode::TwoWaySafe, Mode::TwoWayResolved, Mode::OneWaySafe];

/// What one group of modes must produce for a case.
struct Outcome {
    modes: &'static [Mode],
    alpha: Vec<Change>,
    beta: Vec<Change>,
    conflicts: Vec<&'static str>,
}

struct Case {
    description: &'static str,
    ancestor: Option<Entry>,
    alpha: Option<Entry>,
    beta: Option<Entry>,
    outcomes: Vec<Outcome>,
}

fn expect(
    modes: &'static [Mode],
    alpha: Vec<Change>,
    beta: Vec<Change>,
    conflicts: Vec<&'static str>,
) -> Outcome {
    Outcome {
        modes,
        alpha,
        beta,
        conflicts,
    }
}

fn nothing(modes: &'static [Mode]) -> Outcome {
    expect(modes, vec![], vec![], vec![])
}

fn to_alpha(modes: &'static [Mode], changes: Vec<Change>) -> Outcome {
    expect(modes, changes, vec![], vec![])
}

fn to_beta(modes: &'static [Mode], changes: Vec<Change>) -> Outcome {
    expect(modes, vec![], changes, vec![])
}

fn conflict(modes: &'static [Mode], paths: Vec<&'static str>) -> Outcome {
    expect(modes, vec![], vec![], paths)
}

fn cases() -> Vec<Case> {
    // A tree with one of everything, used where the content does not matter.
    let full = || {
        root(&[
            ("a", f(1)),
            ("run.sh", x(2)),
            ("link", l("a")),
            ("empty", d(&[])),
            ("s", d(&[("b", f(3)), ("t", d(&[("c", f(1))]))])),
        ])
    };
    let s12 = || d(&[("a", f(1)), ("b", f(2))]);

    vec![
        // --- Nothing to do -------------------------------------------------------------------
        Case {
            description: "all three agree",
            ancestor: full(),
            alpha: full(),
            beta: full(),
            outcomes: vec![nothing(ALL)],
        },
        Case {
            description: "nothing anywhere",
            ancestor: None,
            alpha: None,
            beta: None,
            outcomes: vec![nothing(ALL)],
        },
        Case {
            description: "first sync of identical trees",
            ancestor: None,
            alpha: full(),
            beta: full(),
            outcomes: vec![nothing(ALL)],
        },
        // --- Creations -----------------------------------------------------------------------
        Case {
            description: "alpha creates a file",
            ancestor: root(&[]),
            alpha: root(&[("n", f(1))]),
            beta: root(&[]),
            outcomes: vec![to_beta(ALL, vec![add("n", f(1))])],
        },
        Case {
            description: "alpha creates a directory tree and an empty directory",
            ancestor: root(&[]),
            alpha: root(&[("s", d(&[("t", d(&[("n", x(1))]))])), ("e", d(&[]))]),
            beta: root(&[]),
            outcomes: vec![to_beta(
                ALL,
                vec![add("e", d(&[])), add("s", d(&[("t", d(&[("n", x(1))]))]))],
            )],
        },
        Case {
            description: "beta creates a file",
            ancestor: root(&[]),
            alpha: root(&[]),
            beta: root(&[("n", f(1))]),
            outcomes: vec![
                to_alpha(TWO_WAY, vec![add("n", f(1))]),
                // one-way-safe: a beta-only file is left alone, without a conflict.
                nothing(ONE_WAY_SAFE),
                to_beta(REPLICA, vec![del("n", f(1))]),
            ],
        },
        Case {
            description: "beta creates a file inside a directory alpha also has",
            ancestor: root(&[("s", d(&[("a", f(1))]))]),
            alpha: root(&[("s", d(&[("a", f(1))]))]),
            beta: root(&[("s", d(&[("a", f(1)), ("new", f(2))]))]),
            outcomes: vec![
                to_alpha(TWO_WAY, vec![add("s/new", f(2))]),
                nothing(ONE_WAY_SAFE),
                to_beta(REPLICA, vec![del("s/new", f(2))]),
            ],
        },
        Case {
            description: "alpha's root appears for the first time",
            ancestor: None,
            alpha: root(&[("n", f(1))]),
            beta: None,
            outcomes: vec![to_beta(ALL, vec![add("", d(&[("n", f(1))]))])],
        },
        Case {
            description: "first sync merges both sides",
            ancestor: None,
            alpha: root(&[("a", f(1)), ("s", d(&[("b", f(2))]))]),
            beta: root(&[("c", f(3)), ("s", d(&[("b", f(2))]))]),
            outcomes: vec![
                expect(TWO_WAY, vec![add("c", f(3))], vec![add("a", f(1))], vec![]),
                to_beta(ONE_WAY_SAFE, vec![add("a", f(1))]),
                to_beta(REPLICA, vec![add("a", f(1)), del("c", f(3))]),
            ],
        },
        Case {
            description: "both create the same directory with different files in it",
            ancestor: root(&[]),
            alpha: root(&[("s", d(&[("a", f(1))]))]),
            beta: root(&[("s", d(&[("b", f(2))]))]),
            outcomes: vec![
                expect(
                    TWO_WAY,
                    vec![add("s/b", f(2))],
                    vec![add("s/a", f(1))],
                    vec![],
                ),
                to_beta(ONE_WAY_SAFE, vec![add("s/a", f(1))]),
                to_beta(REPLICA, vec![add("s/a", f(1)), del("s/b", f(2))]),
            ],
        },
        // --- Modifications -------------------------------------------------------------------
        Case {
            description: "alpha modifies a file",
            ancestor: root(&[("n", f(1))]),
            alpha: root(&[("n", f(2))]),
            beta: root(&[("n", f(1))]),
            outcomes: vec![to_beta(ALL, vec![put("n", f(1), f(2))])],
        },
        Case {
            description: "beta modifies a file",
            ancestor: root(&[("n", f(1))]),
            alpha: root(&[("n", f(1))]),
            beta: root(&[("n", f(2))]),
            outcomes: vec![
                to_alpha(TWO_WAY, vec![put("n", f(1), f(2))]),
                // one-way-safe: beta's edit of a path alpha did not change is left alone.
                nothing(ONE_WAY_SAFE),
                to_beta(REPLICA, vec![put("n", f(2), f(1))]),
            ],
        },
        Case {
            description: "alpha sets the executable bit",
            ancestor: root(&[("n", f(1))]),
            alpha: root(&[("n", x(1))]),
            beta: root(&[("n", f(1))]),
            outcomes: vec![to_beta(ALL, vec![put("n", f(1), x(1))])],
        },
        Case {
            description: "beta clears the executable bit",
            ancestor: root(&[("n", x(1))]),
            alpha: root(&[("n", x(1))]),
            beta: root(&[("n", f(1))]),
            outcomes: vec![
                to_alpha(TWO_WAY, vec![put("n", x(1), f(1))]),
                nothing(ONE_WAY_SAFE),
                to_beta(REPLICA, vec![put("n", f(1), x(1))]),
            ],
        },
        Case {
            description: "alpha retargets a symlink",
            ancestor: root(&[("k", l("a"))]),
            alpha: root(&[("k", l("b"))]),
            beta: root(&[("k", l("a"))]),
            outcomes: vec![to_beta(ALL, vec![put("k", l("a"), l("b"))])],
        },
        Case {
            description: "beta retargets a symlink",
            ancestor: root(&[("k", l("a"))]),
            alpha: root(&[("k", l("a"))]),
            beta: root(&[("k", l("b"))]),
            outcomes: vec![
                to_alpha(TWO_WAY, vec![put("k", l("a"), l("b"))]),
                nothing(ONE_WAY_SAFE),
                to_beta(REPLICA, vec![put("k", l("b"), l("a"))]),
            ],
        },
        Case {
            description: "alpha replaces a file with a directory",
            ancestor: root(&[("n", f(1))]),
            alpha: root(&[("n", d(&[("m", f(2))]))]),
            beta: root(&[("n", f(1))]),
            outcomes: vec![to_beta(ALL, vec![put("n", f(1), d(&[("m", f(2))]))])],
        },
        Case {
            description: "alpha replaces a file with a symlink",
            ancestor: root(&[("n", f(1))]),
            alpha: root(&[("n", l("t"))]),
            beta: root(&[("n", f(1))]),
            outcomes: vec![to_beta(ALL, vec![put("n", f(1), l("t"))])],
        },
        Case {
            description: "beta replaces a directory with a file",
            ancestor: root(&[("n", d(&[("m", f(2))]))]),
            alpha: root(&[("n", d(&[("m", f(2))]))]),
            beta: root(&[("n", f(1))]),
            outcomes: vec![
                to_alpha(TWO_WAY, vec![put("n", d(&[("m", f(2))]), f(1))]),
                nothing(ONE_WAY_SAFE),
                to_beta(REPLICA, vec![put("n", f(1), d(&[("m", f(2))]))]),
            ],
        },
        // --- Deletions -----------------------------------------------------------------------
        Case {
            description: "alpha deletes a file beta did not change",
            ancestor: root(&[("n", f(1)), ("keep", f(2))]),
            alpha: root(&[("keep", f(2))]),
            beta: root(&[("n", f(1)), ("keep", f(2))]),
            outcomes: vec![to_beta(ALL, vec![del("n", f(1))])],
        },
        Case {
            description: "alpha deletes a directory tree beta did not change",
            ancestor: root(&[("s", d(&[("a", f(1)), ("t", d(&[("b", f(2))]))]))]),
            alpha: root(&[]),
            beta: root(&[("s", d(&[("a", f(1)), ("t", d(&[("b", f(2))]))]))]),
            outcomes: vec![to_beta(
                ALL,
                vec![del("s", d(&[("a", f(1)), ("t", d(&[("b", f(2))]))]))],
            )],
        },
        Case {
            description: "beta deletes a file alpha did not change",
            ancestor: root(&[("n", f(1))]),
            alpha: root(&[("n", f(1))]),
            beta: root(&[]),
            outcomes: vec![
                to_alpha(TWO_WAY, vec![del("n", f(1))]),
                // one-way: what beta deleted of alpha's is restored from alpha.
                to_beta(ONE_WAY, vec![add("n", f(1))]),
            ],
        },
        Case {
            description: "alpha's root is removed (after the wipe check let it through)",
            ancestor: root(&[("n", f(1))]),
            alpha: None,
            beta: root(&[("n", f(1))]),
            outcomes: vec![to_beta(ALL, vec![del("", d(&[("n", f(1))]))])],
        },
        // --- Both sides make the same change -------------------------------------------------
        Case {
            description: "both make the same modification",
            ancestor: root(&[("n", f(1))]),
            alpha: root(&[("n", f(2))]),
            beta: root(&[("n", f(2))]),
            outcomes: vec![nothing(ALL)],
        },
        Case {
            description: "both create the same file",
            ancestor: root(&[]),
            alpha: root(&[("n", x(3))]),
            beta: root(&[("n", x(3))]),
            outcomes: vec![nothing(ALL)],
        },
        Case {
            description: "both delete the same directory",
            ancestor: root(&[("s", s12())]),
            alpha: root(&[]),
            beta: root(&[]),
            outcomes: vec![nothing(ALL)],
        },
        Case {
            description: "both replace a file with the same symlink",
            ancestor: root(&[("n", f(1))]),
            alpha: root(&[("n", l("t"))]),
            beta: root(&[("n", l("t"))]),
            outcomes: vec![nothing(ALL)],
        },
        // --- Both sides change the same path differently ------------------------------------
        Case {
            description: "both modify a file differently",
            ancestor: root(&[("n", f(1))]),
            alpha: root(&[("n", f(2))]),
            beta: root(&[("n", f(3))]),
            outcomes: vec![
                conflict(SAFE, vec!["n"]),
                to_beta(ALPHA_WINS, vec![put("n", f(3), f(2))]),
            ],
        },
        Case {
            description: "both create a file with different content",
            ancestor: root(&[]),
            alpha: root(&[("n", f(1))]),
            beta: root(&[("n", f(2))]),
            outcomes: vec![
                conflict(SAFE, vec!["n"]),
                to_beta(ALPHA_WINS, vec![put("n", f(2), f(1))]),
            ],
        },
        Case {
            description: "first sync with different content at the same path",
            ancestor: None,
            alpha: root(&[("n", f(1)), ("same", f(3))]),
            beta: root(&[("n", f(2)), ("same", f(3))]),
            outcomes: vec![
                conflict(SAFE, vec!["n"]),
                to_beta(ALPHA_WINS, vec![put("n", f(2), f(1))]),
            ],
        },
        Case {
            description: "alpha makes a file private (chmod 600, issue 9 item 7)",
            ancestor: root(&[("n", f(1))]),
            alpha: root(&[("n", m(1, 0o600))]),
            beta: root(&[("n", f(1))]),
            outcomes: vec![to_beta(ALL, vec![put("n", f(1), m(1, 0o600))])],
        },
        Case {
            description: "first sync: same content, different permission bits: alpha's win",
            ancestor: None,
            alpha: root(&[("n", m(1, 0o600))]),
            beta: root(&[("n", m(1, 0o664))]),
            outcomes: vec![to_beta(ALL, vec![put("n", m(1, 0o664), m(1, 0o600))])],
        },
        Case {
            description: "both chmod a file differently: no content at stake, alpha's bits win",
            ancestor: root(&[("n", f(1))]),
            alpha: root(&[("n", m(1, 0o600))]),
            beta: root(&[("n", m(1, 0o640))]),
            outcomes: vec![to_beta(ALL, vec![put("n", m(1, 0o640), m(1, 0o600))])],
        },
        Case {
            description: "alpha makes a directory private (chmod 700): its bits alone change",
            ancestor: root(&[("p", d(&[("n", f(1))]))]),
            alpha: root(&[("p", dm(0o700, &[("n", f(1))]))]),
            beta: root(&[("p", d(&[("n", f(1))]))]),
            outcomes: vec![to_beta(ALL, vec![chmod_dir("p", 0o755, 0o700)])],
        },
        Case {
            description: "beta opens a directory up while alpha edits a file in it",
            ancestor: root(&[("p", dm(0o700, &[("n", f(1))]))]),
            alpha: root(&[("p", dm(0o700, &[("n", f(2))]))]),
            beta: root(&[("p", dm(0o750, &[("n", f(1))]))]),
            outcomes: vec![
                expect(
                    TWO_WAY,
                    vec![chmod_dir("p", 0o700, 0o750)],
                    vec![put("p/n", f(1), f(2))],
                    vec![],
                ),
                to_beta(ONE_WAY_SAFE, vec![put("p/n", f(1), f(2))]),
                to_beta(
                    REPLICA,
                    vec![put("p/n", f(1), f(2)), chmod_dir("p", 0o750, 0o700)],
                ),
            ],
        },
        Case {
            description: "a new directory keeps its bits",
            ancestor: root(&[]),
            alpha: root(&[("p", dm(0o700, &[("n", m(1, 0o600))]))]),
            beta: root(&[]),
            outcomes: vec![to_beta(
                ALL,
                vec![add("p", dm(0o700, &[("n", m(1, 0o600))]))],
            )],
        },
        Case {
            description: "the root's own bits are never changed",
            ancestor: root(&[]),
            alpha: Some(dm(0o700, &[])),
            beta: root(&[]),
            outcomes: vec![nothing(ALL)],
        },
        Case {
            description: "executable bit changed on alpha, content on beta",
            ancestor: root(&[("n", f(1))]),
            alpha: root(&[("n", x(1))]),
            beta: root(&[("n", f(2))]),
            outcomes: vec![
                conflict(SAFE, vec!["n"]),
                to_beta(ALPHA_WINS, vec![put("n", f(2), x(1))]),
            ],
        },
        Case {
            description: "content changed on alpha, executable bit on beta",
            ancestor: root(&[("n", f(1))]),
            alpha: root(&[("n", f(2))]),
            beta: root(&[("n", x(1))]),
            outcomes: vec![
                conflict(SAFE, vec!["n"]),
                to_beta(ALPHA_WINS, vec![put("n", x(1), f(2))]),
            ],
        },
        Case {
            description: "both retarget a symlink differently",
            ancestor: root(&[("k", l("a"))]),
            alpha: root(&[("k", l("b"))]),
            beta: root(&[("k", l("c"))]),
            outcomes: vec![
                conflict(SAFE, vec!["k"]),
                to_beta(ALPHA_WINS, vec![put("k", l("c"), l("b"))]),
            ],
        },
        Case {
            description: "alpha replaces a file with a directory, beta modifies the file",
            ancestor: root(&[("n", f(1))]),
            alpha: root(&[("n", d(&[("m", f(2))]))]),
            beta: root(&[("n", f(3))]),
            outcomes: vec![
                conflict(SAFE, vec!["n"]),
                to_beta(ALPHA_WINS, vec![put("n", f(3), d(&[("m", f(2))]))]),
            ],
        },
        Case {
            description: "a conflict at one path does not hold back its siblings",
            ancestor: root(&[("a", f(1)), ("b", f(1)), ("s", d(&[("c", f(1))]))]),
            alpha: root(&[
                ("a", f(2)),
                ("b", f(3)),
                ("s", d(&[("c", f(1)), ("new", f(4))])),
            ]),
            beta: root(&[("a", f(5)), ("b", f(1)), ("s", d(&[("c", f(6))]))]),
            outcomes: vec![
                expect(
                    TWO_WAY_SAFE,
                    vec![put("s/c", f(1), f(6))],
                    vec![put("b", f(1), f(3)), add("s/new", f(4))],
                    vec!["a"],
                ),
                expect(
                    TWO_WAY_RESOLVED,
                    vec![put("s/c", f(1), f(6))],
                    vec![
                        put("a", f(5), f(2)),
                        put("b", f(1), f(3)),
                        add("s/new", f(4)),
                    ],
                    vec![],
                ),
                expect(
                    ONE_WAY_SAFE,
                    vec![],
                    vec![put("b", f(1), f(3)), add("s/new", f(4))],
                    vec!["a"],
                ),
                to_beta(
                    REPLICA,
                    vec![
                        put("a", f(5), f(2)),
                        put("b", f(1), f(3)),
                        put("s/c", f(6), f(1)),
                        add("s/new", f(4)),
                    ],
                ),
            ],
        },
        // --- A deletion against a modification ----------------------------------------------
        Case {
            description: "alpha deletes a file, beta modifies it",
            ancestor: root(&[("n", f(1))]),
            alpha: root(&[]),
            beta: root(&[("n", f(2))]),
            outcomes: vec![
                to_alpha(TWO_WAY, vec![add("n", f(2))]),
                conflict(ONE_WAY_SAFE, vec!["n"]),
                to_beta(REPLICA, vec![del("n", f(2))]),
            ],
        },
        Case {
            description: "alpha modifies a file, beta deletes it",
            ancestor: root(&[("n", f(1))]),
            alpha: root(&[("n", f(2))]),
            beta: root(&[]),
            outcomes: vec![to_beta(ALL, vec![add("n", f(2))])],
        },
        Case {
            description: "alpha deletes a directory, beta changes a file inside it",
            ancestor: root(&[("s", s12())]),
            alpha: root(&[]),
            beta: root(&[("s", d(&[("a", f(3)), ("b", f(2))]))]),
            outcomes: vec![
                // The modified side's version comes back whole.
                to_alpha(TWO_WAY, vec![add("s", d(&[("a", f(3)), ("b", f(2))]))]),
                conflict(ONE_WAY_SAFE, vec!["s"]),
                to_beta(REPLICA, vec![del("s", d(&[("a", f(3)), ("b", f(2))]))]),
            ],
        },
        Case {
            description: "alpha changes a file inside a directory, beta deletes the directory",
            ancestor: root(&[("s", s12())]),
            alpha: root(&[("s", d(&[("a", f(3)), ("b", f(2))]))]),
            beta: root(&[]),
            outcomes: vec![to_beta(ALL, vec![add("s", d(&[("a", f(3)), ("b", f(2))]))])],
        },
        Case {
            description: "alpha deletes a directory, beta adds a file inside it",
            ancestor: root(&[("s", d(&[("a", f(1))]))]),
            alpha: root(&[]),
            beta: root(&[("s", d(&[("a", f(1)), ("new", f(4))]))]),
            outcomes: vec![
                to_alpha(TWO_WAY, vec![add("s", d(&[("a", f(1)), ("new", f(4))]))]),
                conflict(ONE_WAY_SAFE, vec!["s"]),
                to_beta(REPLICA, vec![del("s", d(&[("a", f(1)), ("new", f(4))]))]),
            ],
        },
        Case {
            description: "alpha adds a file deep inside a directory beta deleted",
            ancestor: root(&[("s", d(&[("t", d(&[("a", f(1))]))]))]),
            alpha: root(&[("s", d(&[("t", d(&[("a", f(1)), ("new", f(4))]))]))]),
            beta: root(&[]),
            outcomes: vec![to_beta(
                ALL,
                vec![add("s", d(&[("t", d(&[("a", f(1)), ("new", f(4))]))]))],
            )],
        },
        Case {
            description: "beta deletes a file, alpha sets its executable bit",
            ancestor: root(&[("n", f(1))]),
            alpha: root(&[("n", x(1))]),
            beta: root(&[]),
            outcomes: vec![to_beta(ALL, vec![add("n", x(1))])],
        },
        // --- A deletion against a partial deletion (nothing new on either side) ----------
        Case {
            description: "alpha deletes a directory, beta deletes a file inside it",
            ancestor: root(&[("s", s12())]),
            alpha: root(&[]),
            beta: root(&[("s", d(&[("a", f(1))]))]),
            // Neither side wrote anything new: the whole deletion goes through, as in Mutagen.
            outcomes: vec![to_beta(ALL, vec![del("s", d(&[("a", f(1))]))])],
        },
        Case {
            description: "alpha empties a directory, beta deletes it",
            ancestor: root(&[("s", s12())]),
            alpha: root(&[("s", d(&[]))]),
            beta: root(&[]),
            outcomes: vec![
                to_alpha(TWO_WAY, vec![del("s", d(&[]))]),
                // one-way: what beta deleted of alpha's is restored from alpha.
                to_beta(ONE_WAY, vec![add("s", d(&[]))]),
            ],
        },
        Case {
            description: "alpha deletes a directory, beta deletes one file and edits another",
            ancestor: root(&[("s", s12())]),
            alpha: root(&[]),
            beta: root(&[("s", d(&[("a", f(3))]))]),
            outcomes: vec![
                to_alpha(TWO_WAY, vec![add("s", d(&[("a", f(3))]))]),
                conflict(ONE_WAY_SAFE, vec!["s"]),
                to_beta(REPLICA, vec![del("s", d(&[("a", f(3))]))]),
            ],
        },
        // --- Problems (unreadable paths) ----------------------------------------------------
        Case {
            description: "a problem on alpha against a modified file on beta",
            ancestor: root(&[("n", f(1))]),
            alpha: root(&[("n", problem())]),
            beta: root(&[("n", f(2))]),
            outcomes: vec![nothing(ALL)],
        },
        Case {
            description: "a problem on beta against a modified file on alpha",
            ancestor: root(&[("n", f(1))]),
            alpha: root(&[("n", f(2))]),
            beta: root(&[("n", problem())]),
            outcomes: vec![nothing(ALL)],
        },
        Case {
            description: "a problem on alpha where beta deleted the file",
            ancestor: root(&[("n", f(1))]),
            alpha: root(&[("n", problem())]),
            beta: root(&[]),
            outcomes: vec![nothing(ALL)],
        },
        Case {
            description: "a new problem on either side alone is not propagated nor deleted",
            ancestor: root(&[]),
            alpha: root(&[("p", problem())]),
            beta: root(&[("q", problem())]),
            outcomes: vec![nothing(ALL)],
        },
        Case {
            description: "a problem inside a directory alpha created is left out of the copy",
            ancestor: root(&[]),
            alpha: root(&[("s", d(&[("a", f(1)), ("bad", problem())]))]),
            beta: root(&[]),
            outcomes: vec![to_beta(ALL, vec![add("s", d(&[("a", f(1))]))])],
        },
        Case {
            description: "a problem inside a directory beta created is never deleted",
            ancestor: root(&[]),
            alpha: root(&[]),
            beta: root(&[("s", d(&[("bad", problem())]))]),
            outcomes: vec![
                to_alpha(TWO_WAY, vec![add("s", d(&[]))]),
                nothing(ONE_WAY_SAFE),
                // Replica cannot remove what it cannot read: a conflict, as in Mutagen.
                conflict(REPLICA, vec!["s"]),
            ],
        },
        Case {
            description: "a problem inside beta's replacement of a file alpha modified",
            ancestor: root(&[("s", f(1))]),
            alpha: root(&[("s", f(2))]),
            beta: root(&[("s", d(&[("ok", f(3)), ("bad", problem())]))]),
            // Alpha winning would delete an unreadable path: a conflict in every mode.
            outcomes: vec![conflict(ALL, vec!["s"])],
        },
        Case {
            description: "alpha deletes a directory in which beta has a new problem",
            ancestor: root(&[("s", d(&[("a", f(1))]))]),
            alpha: root(&[]),
            beta: root(&[("s", d(&[("a", f(1)), ("bad", problem())]))]),
            outcomes: vec![
                to_alpha(TWO_WAY, vec![add("s", d(&[("a", f(1))]))]),
                conflict(ONE_WAY_SAFE, vec!["s"]),
                conflict(REPLICA, vec!["s"]),
            ],
        },
    ]
}

fn conflict_paths(plan: &ferry_core::Plan) -> Vec<String> {
    let mut paths: Vec<String> = plan
        .conflicts
        .iter()
        .map(|c| c.path.as_str().to_owned())
        .collect();
    paths.sort();
    paths
}

#[test]
fn every_case_covers_every_mode_once() {
    for case in cases() {
        for mode in Mode::ALL {
            let n = case
                .outcomes
                .iter()
                .filter(|o| o.modes.contains(&mode))
                .count();
            assert_eq!(
                n, 1,
                "case '{}' must give exactly one outcome for {mode}",
                case.description
            );
        }
    }
}

#[test]
fn reconcile_table() {
    let mut failures = Vec::new();
    let mut runs = 0;
    for case in cases() {
        for outcome in &case.outcomes {
            for &mode in outcome.modes {
                runs += 1;
                let plan = reconcile(
                    case.ancestor.as_ref(),
                    case.alpha.as_ref(),
                    case.beta.as_ref(),
                    mode,
                );
                let mut want_conflicts: Vec<String> =
                    outcome.conflicts.iter().map(|p| (*p).to_owned()).collect();
                want_conflicts.sort();
                let got = (
                    sorted(plan.alpha.clone()),
                    sorted(plan.beta.clone()),
                    conflict_paths(&plan),
                );
                let want = (
                    sorted(outcome.alpha.clone()),
                    sorted(outcome.beta.clone()),
                    want_conflicts,
                );
                if got != want {
                    failures.push(format!(
                        "'{}' in {mode}:\n  want alpha {:?}\n        beta {:?}\n   conflicts {:?}\n  \
                         got  alpha {:?}\n        beta {:?}\n   conflicts {:?}",
                        case.description, want.0, want.1, want.2, got.0, got.1, got.2
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {runs} table runs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Whatever the table expects, every plan must apply cleanly to the trees it was computed from,
/// report conflicts that describe the trees, and leave nothing to do on the next cycle.
#[test]
fn table_plans_apply_and_settle() {
    let mut failures = Vec::new();
    for case in cases() {
        for mode in Mode::ALL {
            let (anc, a, b) = (
                case.ancestor.as_ref(),
                case.alpha.as_ref(),
                case.beta.as_ref(),
            );
            let plan = reconcile(anc, a, b, mode);
            for c in &plan.conflicts {
                let at = |t: Option<&Entry>| t.and_then(|t| t.get(c.path.as_str())).cloned();
                if c.ancestor != at(anc) || c.alpha != at(a) || c.beta != at(b) {
                    failures.push(format!(
                        "'{}' in {mode}: conflict {c:?} does not describe the trees",
                        case.description
                    ));
                }
            }
            let a2 = apply_changes(case.alpha.clone(), &plan.alpha);
            let b2 = apply_changes(case.beta.clone(), &plan.beta);
            let (Ok(a2), Ok(b2)) = (a2.clone(), b2.clone()) else {
                failures.push(format!(
                    "'{}' in {mode}: apply failed: {a2:?} {b2:?}",
                    case.description
                ));
                continue;
            };
            let archive = agree(anc, a2.as_ref(), b2.as_ref());
            let next = reconcile(archive.as_ref(), a2.as_ref(), b2.as_ref(), mode);
            if !next.alpha.is_empty()
                || !next.beta.is_empty()
                || conflict_paths(&next) != conflict_paths(&plan)
            {
                failures.push(format!(
                    "'{}' in {mode}: the next cycle is not quiet: {next:?}",
                    case.description
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn problem_entries_never_enter_a_change() {
    for case in cases() {
        for mode in Mode::ALL {
            let plan = reconcile(
                case.ancestor.as_ref(),
                case.alpha.as_ref(),
                case.beta.as_ref(),
                mode,
            );
            for ch in plan.alpha.iter().chain(&plan.beta) {
                assert!(
                    !has_problems(ch.old.as_ref()) && !has_problems(ch.new.as_ref()),
                    "'{}' in {mode}: {ch:?} touches an unreadable path",
                    case.description
                );
            }
        }
    }
}

// --- The wipe check -------------------------------------------------------------------------

fn refusal(side: &'static str, what: &'static str) -> Result<(), WipeRefusal> {
    let other = if side == "alpha" { "beta" } else { "alpha" };
    Err(WipeRefusal { side, other, what })
}

#[test]
fn wipe_table() {
    let some = || root(&[("n", f(1)), ("s", d(&[("m", f(2))]))]);
    let empty = || root(&[]);
    type Wipe = (
        &'static str,
        Option<Entry>,
        Option<Entry>,
        Option<Entry>,
        Vec<(&'static [Mode], Result<(), WipeRefusal>)>,
    );
    let cases: Vec<Wipe> = vec![
        (
            "nothing deleted",
            some(),
            some(),
            some(),
            vec![(ALL, Ok(()))],
        ),
        (
            "some files deleted on alpha",
            some(),
            root(&[("n", f(1))]),
            some(),
            vec![(ALL, Ok(()))],
        ),
        (
            "alpha emptied",
            some(),
            empty(),
            some(),
            vec![
                (NOT_REPLICA, refusal("alpha", "emptied")),
                (REPLICA, Ok(())),
            ],
        ),
        (
            "alpha's root removed",
            some(),
            None,
            some(),
            vec![
                (NOT_REPLICA, refusal("alpha", "removed")),
                (REPLICA, Ok(())),
            ],
        ),
        (
            "beta emptied",
            some(),
            some(),
            empty(),
            vec![
                (TWO_WAY, refusal("beta", "emptied")),
                // one-way-safe restores beta's deletions from alpha: nothing is lost.
                (ONE_WAY, Ok(())),
            ],
        ),
        (
            "beta's root removed",
            some(),
            some(),
            None,
            vec![(TWO_WAY, refusal("beta", "removed")), (ONE_WAY, Ok(()))],
        ),
        (
            "alpha emptied while beta holds only new content",
            some(),
            empty(),
            root(&[("new", f(9))]),
            vec![
                (NOT_REPLICA, refusal("alpha", "emptied")),
                (REPLICA, Ok(())),
            ],
        ),
        (
            "both emptied",
            some(),
            empty(),
            empty(),
            vec![(ALL, Ok(()))],
        ),
        (
            "empty ancestor, alpha empty",
            empty(),
            empty(),
            some(),
            vec![(ALL, Ok(()))],
        ),
        (
            "empty ancestor, beta empty",
            empty(),
            some(),
            empty(),
            vec![(ALL, Ok(()))],
        ),
        (
            "first sync into a missing beta",
            None,
            some(),
            None,
            vec![(ALL, Ok(()))],
        ),
        (
            "first sync from an empty alpha",
            None,
            empty(),
            some(),
            vec![(ALL, Ok(()))],
        ),
    ];
    for (description, anc, a, b, outcomes) in cases {
        for mode in Mode::ALL {
            let want = outcomes
                .iter()
                .filter(|(modes, _)| modes.contains(&mode))
                .map(|(_, want)| want.clone())
                .collect::<Vec<_>>();
            assert_eq!(
                want.len(),
                1,
                "wipe case '{description}' must cover {mode} once"
            );
            let got = check_wipe(anc.as_ref(), a.as_ref(), b.as_ref(), mode);
            assert_eq!(got, want[0], "wipe case '{description}' in {mode}");
        }
    }
}

#[test]
fn wipe_refusal_names_the_side_and_the_way_out() {
    let err = check_wipe(
        root(&[("n", f(1))]).as_ref(),
        root(&[]).as_ref(),
        root(&[("n", f(1))]).as_ref(),
        Mode::TwoWaySafe,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("alpha") && msg.contains("emptied"), "{msg}");
    assert!(msg.contains("--accept-wipe"), "{msg}");
}
