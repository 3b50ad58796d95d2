//! The four modes: what each does with conflicts, beta's own changes and deletions, checked
//! by the contents of both sides afterwards.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::*;

/// Writes `files` on alpha and syncs them with `mode`.
fn base(fx: &Fixture, mode: &str, files: &[(&str, &str)]) {
    for (rel, data) in files {
        write(&fx.a(rel), data);
    }
    fx.once(&["--mode", mode]).expect_code(0);
    fx.assert_synced();
}

/// The backups named by `change` events at `path` (as (tree path, backup file)).
fn backups_at(run: &Run, path: &str) -> Vec<(String, PathBuf)> {
    run.changes_at(path)
        .iter()
        .flat_map(|e| e["backups"].as_array().cloned().unwrap_or_default())
        .map(|b: Value| {
            (
                b["path"].as_str().unwrap_or_default().to_owned(),
                PathBuf::from(b["backup"].as_str().unwrap_or_default()),
            )
        })
        .collect()
}

/// Asserts a change at `path` names a backup of `side`'s content `data`, and that the backup
/// file holds it and lies in the session's backup area for that side.
#[track_caller]
pub(crate) fn assert_backed_up(fx: &Fixture, run: &Run, side: &str, path: &str, data: &str) {
    let backups = backups_at(run, path);
    let found = backups.iter().find(|(p, _)| *p == format!("{side}/{path}"));
    let Some((_, file)) = found else {
        panic!("no backup of {side}/{path} named in the change events\n{run}");
    };
    assert_content(file, data);
    let area = fx.state.join("ferry").join("sessions");
    assert!(
        file.starts_with(&area)
            && file
                .components()
                .collect::<Vec<_>>()
                .windows(2)
                .any(|w| w[0].as_os_str() == "backups" && w[1].as_os_str() == side),
        "backup {} is not under {}/<session>/backups/{side}/",
        file.display(),
        area.display()
    );
    assert!(
        !file.starts_with(&fx.alpha) && !file.starts_with(&fx.beta),
        "backup inside a synced tree"
    );
}

#[test]
fn two_way_safe_conflict_leaves_both_versions_untouched() {
    let fx = Fixture::new();
    let mode = "two-way-safe";
    base(&fx, mode, &[("f.txt", "base\n"), ("other.txt", "o\n")]);
    write(&fx.a("f.txt"), "alpha's version\n");
    write(&fx.b("f.txt"), "beta's version, longer\n");
    write(&fx.a("other.txt"), "o changed on alpha\n");
    write(&fx.b("new_on_beta.txt"), "n\n");
    for round in 0..2 {
        let run = fx.once(&["--mode", mode]);
        run.expect_code(3);
        assert!(
            run.conflict_at("f.txt"),
            "round {round}: conflict not listed\n{run}"
        );
        assert!(run.changes_at("f.txt").is_empty(), "{run}");
        assert_content(&fx.a("f.txt"), "alpha's version\n");
        assert_content(&fx.b("f.txt"), "beta's version, longer\n");
        // The conflict holds back nothing else.
        assert_content(&fx.b("other.txt"), "o changed on alpha\n");
        assert_content(&fx.a("new_on_beta.txt"), "n\n");
        let end = run.events("session_end");
        assert_eq!(end.len(), 1, "{run}");
        assert_eq!(end[0]["exit_code"], 3, "{run}");
    }
    // Nothing was overwritten, so nothing needed a backup.
    assert!(fx.backup_files().is_empty(), "{:?}", fx.backup_files());
}

#[test]
fn two_way_safe_executable_bit_against_content_is_a_conflict() {
    let fx = Fixture::new();
    let mode = "two-way-safe";
    base(&fx, mode, &[("run.sh", "v0\n")]);
    set_exec(&fx.a("run.sh"), true);
    write(&fx.b("run.sh"), "v1 from beta\n");
    let run = fx.once(&["--mode", mode]);
    run.expect_code(3);
    assert!(run.conflict_at("run.sh"), "{run}");
    assert_content(&fx.a("run.sh"), "v0\n");
    assert!(is_exec(&fx.a("run.sh")));
    assert_content(&fx.b("run.sh"), "v1 from beta\n");
    assert!(!is_exec(&fx.b("run.sh")));
}

#[test]
fn two_way_same_change_on_both_sides_is_not_a_conflict() {
    let fx = Fixture::new();
    base(&fx, "two-way-safe", &[("f", "v0")]);
    write(&fx.a("f"), "same new content");
    write(&fx.b("f"), "same new content");
    write(&fx.a("both_created"), "twin");
    write(&fx.b("both_created"), "twin");
    remove(&fx.a("f"));
    remove(&fx.b("f"));
    let run = fx.once(&[]);
    run.expect_code(0);
    assert!(run.events("conflict").is_empty(), "{run}");
    fx.assert_synced();
    assert_absent(&fx.a("f"));
    assert_content(&fx.b("both_created"), "twin");
}

#[test]
fn two_way_resolved_alpha_wins_and_beta_is_backed_up() {
    let fx = Fixture::new();
    let mode = "two-way-resolved";
    base(&fx, mode, &[("f.txt", "base\n"), ("g.txt", "g\n")]);
    write(&fx.a("f.txt"), "alpha's version\n");
    write(&fx.b("f.txt"), "beta's version\n");
    write(&fx.a("new.txt"), "alpha created\n");
    write(&fx.b("new.txt"), "beta created differently\n");
    write(&fx.b("g.txt"), "g edited on beta only\n");
    let run = fx.once(&["--mode", mode]);
    run.expect_code(0);
    fx.assert_synced();
    assert_content(&fx.a("f.txt"), "alpha's version\n");
    assert_content(&fx.b("f.txt"), "alpha's version\n");
    assert_content(&fx.b("new.txt"), "alpha created\n");
    assert_content(&fx.a("g.txt"), "g edited on beta only\n");
    assert_backed_up(&fx, &run, "beta", "f.txt", "beta's version\n");
    assert_backed_up(&fx, &run, "beta", "new.txt", "beta created differently\n");
    let ch = run.changes_at("f.txt");
    assert!(
        ch.iter()
            .any(|e| e["side"] == "beta" && e["direction"] == "alpha->beta"),
        "{run}"
    );
}

#[test]
fn two_way_resolved_executable_bit_against_content_alpha_wins() {
    let fx = Fixture::new();
    let mode = "two-way-resolved";
    base(&fx, mode, &[("run.sh", "v0\n")]);
    set_exec(&fx.a("run.sh"), true);
    write(&fx.b("run.sh"), "v1 from beta\n");
    let run = fx.once(&["--mode", mode]);
    run.expect_code(0);
    fx.assert_synced();
    assert_content(&fx.b("run.sh"), "v0\n");
    assert!(is_exec(&fx.b("run.sh")));
    assert_backed_up(&fx, &run, "beta", "run.sh", "v1 from beta\n");
}

/// Deleting a file on one side while the other modifies it keeps the modification.
fn deletion_vs_modification_of_files(mode: &str) {
    let fx = Fixture::new();
    base(&fx, mode, &[("f1", "v0"), ("f2", "v0")]);
    remove(&fx.a("f1"));
    write(&fx.b("f1"), "beta's edit of f1");
    write(&fx.a("f2"), "alpha's edit of f2");
    remove(&fx.b("f2"));
    let run = fx.once(&["--mode", mode]);
    run.expect_code(0);
    fx.assert_synced();
    assert_content(&fx.a("f1"), "beta's edit of f1");
    assert_content(&fx.b("f1"), "beta's edit of f1");
    assert_content(&fx.a("f2"), "alpha's edit of f2");
    assert_content(&fx.b("f2"), "alpha's edit of f2");
}

/// Deleting a directory on one side while the other changes something inside brings the
/// changed side's directory back whole.
fn deletion_vs_modification_of_directories(mode: &str) {
    let fx = Fixture::new();
    base(
        &fx,
        mode,
        &[
            ("d/x", "x0"),
            ("d/y", "y0"),
            ("d/sub/z", "z0"),
            ("e/x", "x0"),
            ("e/y", "y0"),
            ("g/x", "x0"),
        ],
    );
    // alpha deletes d, beta edits a file deep inside it.
    remove(&fx.a("d"));
    write(&fx.b("d/sub/z"), "beta's z");
    // beta deletes e, alpha edits a file inside it.
    remove(&fx.b("e"));
    write(&fx.a("e/y"), "alpha's y");
    // alpha deletes g, beta adds a file to it.
    remove(&fx.a("g"));
    write(&fx.b("g/new"), "beta's new file");
    let run = fx.once(&["--mode", mode]);
    run.expect_code(0);
    fx.assert_synced();
    for side in [&fx.alpha, &fx.beta] {
        assert_content(&side.join("d/x"), "x0");
        assert_content(&side.join("d/y"), "y0");
        assert_content(&side.join("d/sub/z"), "beta's z");
        assert_content(&side.join("e/x"), "x0");
        assert_content(&side.join("e/y"), "alpha's y");
        assert_content(&side.join("g/x"), "x0");
        assert_content(&side.join("g/new"), "beta's new file");
    }
}

#[test]
fn two_way_safe_deletion_vs_modification_keeps_the_file() {
    deletion_vs_modification_of_files("two-way-safe");
}

#[test]
fn two_way_resolved_deletion_vs_modification_keeps_the_file() {
    deletion_vs_modification_of_files("two-way-resolved");
}

#[test]
fn two_way_safe_deletion_vs_modification_keeps_the_directory() {
    deletion_vs_modification_of_directories("two-way-safe");
}

#[test]
fn two_way_resolved_deletion_vs_modification_keeps_the_directory() {
    deletion_vs_modification_of_directories("two-way-resolved");
}

#[test]
fn one_way_safe_leaves_beta_changes_alone_and_restores_deletions() {
    let fx = Fixture::new();
    let mode = "one-way-safe";
    base(
        &fx,
        mode,
        &[
            ("keep.txt", "k\n"),
            ("edited_by_beta.txt", "e0\n"),
            ("deleted_by_beta.txt", "d0\n"),
            ("dir/deleted_dir_file", "dd\n"),
        ],
    );
    write(&fx.b("beta_only.txt"), "mine\n");
    write(&fx.b("beta_dir/inner"), "mine too\n");
    write(&fx.b("edited_by_beta.txt"), "beta's edit\n");
    remove(&fx.b("deleted_by_beta.txt"));
    remove(&fx.b("dir"));
    write(&fx.a("new_on_alpha.txt"), "fresh\n");
    write(&fx.a("keep.txt"), "k changed on alpha\n");
    let alpha_before = tree(&fx.alpha);

    let run = fx.once(&["--mode", mode]);
    run.expect_code(0);
    assert!(run.events("conflict").is_empty(), "{run}");
    assert_eq!(
        diff_trees(&alpha_before, &tree(&fx.alpha)),
        None,
        "one-way-safe changed alpha\n{run}"
    );
    assert_content(&fx.b("beta_only.txt"), "mine\n");
    assert_content(&fx.b("beta_dir/inner"), "mine too\n");
    assert_content(&fx.b("edited_by_beta.txt"), "beta's edit\n");
    assert_content(&fx.b("deleted_by_beta.txt"), "d0\n");
    assert_content(&fx.b("dir/deleted_dir_file"), "dd\n");
    assert_content(&fx.b("new_on_alpha.txt"), "fresh\n");
    assert_content(&fx.b("keep.txt"), "k changed on alpha\n");

    // Still left alone on the next run.
    let run = fx.once(&["--mode", mode]);
    run.expect_code(0);
    assert_content(&fx.b("beta_only.txt"), "mine\n");
    assert_content(&fx.b("edited_by_beta.txt"), "beta's edit\n");
    assert_content(&fx.a("edited_by_beta.txt"), "e0\n");
}

#[test]
fn one_way_safe_path_changed_on_both_sides_is_a_conflict() {
    let fx = Fixture::new();
    let mode = "one-way-safe";
    base(&fx, mode, &[("both.txt", "b0\n"), ("other.txt", "o0\n")]);
    write(&fx.a("both.txt"), "alpha's b1\n");
    write(&fx.b("both.txt"), "beta's b1\n");
    write(&fx.a("other.txt"), "o1\n");
    let run = fx.once(&["--mode", mode]);
    run.expect_code(3);
    assert!(run.conflict_at("both.txt"), "{run}");
    assert_content(&fx.a("both.txt"), "alpha's b1\n");
    assert_content(&fx.b("both.txt"), "beta's b1\n");
    assert_content(&fx.b("other.txt"), "o1\n");
}

#[test]
fn one_way_replica_makes_beta_a_copy_and_backs_up_what_it_removes() {
    let fx = Fixture::new();
    let mode = "one-way-replica";
    base(&fx, mode, &[("a.txt", "a\n"), ("d/x", "x\n")]);
    write(&fx.b("beta_only.txt"), "mine\n");
    write(&fx.b("beta_dir/f"), "mine in a dir\n");
    write(&fx.b("a.txt"), "beta's edit\n");
    remove(&fx.b("d/x"));
    let alpha_before = tree(&fx.alpha);

    let run = fx.once(&["--mode", mode]);
    run.expect_code(0);
    fx.assert_synced();
    assert_eq!(diff_trees(&alpha_before, &tree(&fx.alpha)), None, "{run}");
    assert_absent(&fx.b("beta_only.txt"));
    assert_content(&fx.b("a.txt"), "a\n");
    assert_content(&fx.b("d/x"), "x\n");
    assert_backed_up(&fx, &run, "beta", "beta_only.txt", "mine\n");
    assert_backed_up(&fx, &run, "beta", "a.txt", "beta's edit\n");
    // A removed directory's files are kept too.
    let kept: Vec<PathBuf> = fx.backup_files();
    assert!(
        kept.iter()
            .any(|p| p.ends_with(Path::new("beta_dir/f")) && read(p) == b"mine in a dir\n"),
        "beta_dir/f was not kept: {kept:?}\n{run}"
    );
}

#[test]
fn one_way_replica_propagates_an_emptied_alpha_without_accept_wipe() {
    let fx = Fixture::new();
    let mode = "one-way-replica";
    base(&fx, mode, &[("a.txt", "a\n"), ("d/x", "x\n")]);
    remove(&fx.a("a.txt"));
    remove(&fx.a("d"));
    let run = fx.once(&["--mode", mode]);
    run.expect_code(0);
    fx.assert_synced();
    assert!(tree(&fx.beta).is_empty());
}

#[test]
fn ignored_beta_files_survive_every_mode() {
    for mode in [
        "two-way-safe",
        "two-way-resolved",
        "one-way-safe",
        "one-way-replica",
    ] {
        let fx = Fixture::new();
        write(&fx.a("src.c"), "c");
        fx.once(&["--mode", mode, "--ignore", "*.log"])
            .expect_code(0);
        write(&fx.b("beta.log"), "beta's log");
        write(&fx.b("src.log"), "another log");
        let run = fx.once(&["--mode", mode, "--ignore", "*.log"]);
        run.expect_code(0);
        assert_content(&fx.b("beta.log"), "beta's log");
        assert_content(&fx.b("src.log"), "another log");
        assert_absent(&fx.a("beta.log"));
        assert!(run.events("change").is_empty(), "{mode}\n{run}");
    }
}
