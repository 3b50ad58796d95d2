//! `ferry sync --once`: what one run propagates, in both directions.

use std::fs;
use std::path::Path;

use crate::support::*;

/// Asserts `run` reported a change at `path` written to the side `to` ("alpha" or "beta").
#[track_caller]
fn assert_changed(run: &Run, path: &str, to: &str, action: &str) {
    let direction = if to == "beta" {
        "alpha->beta"
    } else {
        "beta->alpha"
    };
    assert!(
        run.changes_at(path)
            .iter()
            .any(|e| e["side"] == to && e["direction"] == direction && e["action"] == action),
        "expected a `change` event {{path: {path}, side: {to}, direction: {direction}, action: \
         {action}}}\n{run}"
    );
}

fn binary_bytes() -> Vec<u8> {
    (0..=255u8).cycle().take(4096).collect()
}

/// Creates, modifies and deletes files and directories under `from` and checks each step
/// arrives at `to` byte for byte.
fn create_modify_delete(fx: &Fixture, from: &Path, to: &Path, to_side: &str) {
    // Create.
    write(&from.join("f.txt"), "hello\n");
    write(&from.join("binary.bin"), binary_bytes());
    write(&from.join("empty"), "");
    write(&from.join("big.bin"), pseudo_random(1, 1 << 20));
    write(&from.join("d/e/nested.txt"), "nested\n");
    write(&from.join("d/sibling.txt"), "sibling\n");
    let run = fx.once(&[]);
    run.expect_code(0);
    fx.assert_synced();
    assert_content(&to.join("binary.bin"), binary_bytes());
    assert_content(&to.join("empty"), "");
    assert_content(&to.join("big.bin"), pseudo_random(1, 1 << 20));
    assert_content(&to.join("d/e/nested.txt"), "nested\n");
    for p in ["f.txt", "binary.bin", "empty", "big.bin", "d"] {
        assert_changed(&run, p, to_side, "create");
    }
    let (to_alpha, to_beta) = run.transferred();
    let moved = if to_side == "beta" { to_beta } else { to_alpha };
    let other = if to_side == "beta" { to_alpha } else { to_beta };
    assert!(moved >= 8 && other == 0, "cycle_end counts wrong\n{run}");

    // Modify: a longer file, a same-size change deep in a big file, a nested file.
    write(&from.join("f.txt"), "hello, world\n");
    let mut big = pseudo_random(1, 1 << 20);
    big[700_000] ^= 0xff;
    write(&from.join("big.bin"), &big);
    write(&from.join("d/e/nested.txt"), "NESTED");
    let run = fx.once(&[]);
    run.expect_code(0);
    fx.assert_synced();
    assert_content(&to.join("f.txt"), "hello, world\n");
    assert_content(&to.join("big.bin"), &big);
    assert_content(&to.join("d/e/nested.txt"), "NESTED");
    for p in ["f.txt", "big.bin", "d/e/nested.txt"] {
        assert_changed(&run, p, to_side, "modify");
    }

    // Delete a file and a directory with content.
    remove(&from.join("f.txt"));
    remove(&from.join("d/e"));
    let run = fx.once(&[]);
    run.expect_code(0);
    fx.assert_synced();
    assert_absent(&to.join("f.txt"));
    assert_absent(&to.join("d/e"));
    assert_content(&to.join("d/sibling.txt"), "sibling\n");
    assert_changed(&run, "f.txt", to_side, "delete");
    assert_changed(&run, "d/e", to_side, "delete");
}

#[test]
fn alpha_to_beta_create_modify_delete() {
    let fx = Fixture::new();
    create_modify_delete(&fx, &fx.alpha, &fx.beta, "beta");
}

#[test]
fn beta_to_alpha_create_modify_delete() {
    let fx = Fixture::new();
    create_modify_delete(&fx, &fx.beta, &fx.alpha, "alpha");
}

#[test]
fn renames_of_files_and_directories_propagate_both_ways() {
    let fx = Fixture::new();
    write(&fx.a("a.txt"), "file a\n");
    write(&fx.a("dir/x"), "x\n");
    write(&fx.a("dir/sub/y"), pseudo_random(7, 100_000));
    write(&fx.a("move/me.txt"), "moving\n");
    mkdir(&fx.a("target"));
    fx.once(&[]).expect_code(0);
    fx.assert_synced();

    rename(&fx.a("a.txt"), &fx.a("renamed.txt"));
    rename(&fx.b("dir"), &fx.b("dir2"));
    rename(&fx.b("move/me.txt"), &fx.b("target/me.txt"));
    let run = fx.once(&[]);
    run.expect_code(0);
    fx.assert_synced();
    for side in [&fx.alpha, &fx.beta] {
        assert_content(&side.join("renamed.txt"), "file a\n");
        assert_absent(&side.join("a.txt"));
        assert_content(&side.join("dir2/x"), "x\n");
        assert_content(&side.join("dir2/sub/y"), pseudo_random(7, 100_000));
        assert_absent(&side.join("dir"));
        assert_content(&side.join("target/me.txt"), "moving\n");
        assert_absent(&side.join("move/me.txt"));
    }
    // The renamed content is still present under its new name: nothing needed a backup.
    assert_eq!(fx.backup_files(), Vec::<std::path::PathBuf>::new());
    assert!(
        run.events("change")
            .iter()
            .all(|e| e.get("backups").is_none()),
        "a rename made backups\n{run}"
    );
}

#[test]
fn empty_directories_sync_both_ways() {
    let fx = Fixture::new();
    mkdir(&fx.a("empty1"));
    mkdir(&fx.a("deep/er/est"));
    mkdir(&fx.b("from_beta/inner"));
    // A first sync that merges into alpha needs --yes (issue 9, item 6).
    let run = fx.once(&["--yes"]);
    run.expect_code(0);
    fx.assert_synced();
    for side in [&fx.alpha, &fx.beta] {
        assert!(side.join("empty1").is_dir());
        assert!(side.join("deep/er/est").is_dir());
        assert!(side.join("from_beta/inner").is_dir());
    }
    assert_changed(&run, "empty1", "beta", "create");
    assert_changed(&run, "from_beta", "alpha", "create");

    // Deleting an empty directory propagates too.
    remove(&fx.b("empty1"));
    remove(&fx.a("deep/er/est"));
    fx.once(&[]).expect_code(0);
    fx.assert_synced();
    assert_absent(&fx.a("empty1"));
    assert_absent(&fx.b("deep/er/est"));
    assert!(fx.b("deep/er").is_dir());
}

#[test]
fn executable_bit_syncs_both_ways() {
    let fx = Fixture::new();
    write(&fx.a("script.sh"), "#!/bin/sh\necho hi\n");
    set_exec(&fx.a("script.sh"), true);
    write(&fx.a("plain.txt"), "plain\n");
    write(&fx.b("tool"), "#!/bin/sh\n");
    set_exec(&fx.b("tool"), true);
    // A first sync that merges into alpha needs --yes (issue 9, item 6).
    fx.once(&["--yes"]).expect_code(0);
    fx.assert_synced();
    assert!(is_exec(&fx.b("script.sh")), "alpha's +x did not reach beta");
    assert!(!is_exec(&fx.b("plain.txt")));
    assert!(is_exec(&fx.a("tool")), "beta's +x did not reach alpha");

    // Flip bits only (content unchanged), one on each side.
    set_exec(&fx.b("script.sh"), false);
    set_exec(&fx.a("plain.txt"), true);
    let run = fx.once(&[]);
    run.expect_code(0);
    fx.assert_synced();
    assert!(
        !is_exec(&fx.a("script.sh")),
        "beta's -x did not reach alpha"
    );
    assert!(is_exec(&fx.b("plain.txt")), "alpha's +x did not reach beta");
    assert_changed(&run, "script.sh", "alpha", "chmod");
    assert_changed(&run, "plain.txt", "beta", "chmod");
}

#[test]
fn symlinks_inside_the_root_sync_as_links() {
    let fx = Fixture::new();
    write(&fx.a("target.txt"), "target\n");
    write(&fx.a("d/inner.txt"), "inner\n");
    symlink("target.txt", &fx.a("link"));
    symlink("../target.txt", &fx.a("d/up"));
    symlink("d", &fx.a("dirlink"));
    symlink("not-there-yet", &fx.a("dangling"));
    symlink("./target.txt", &fx.b("from_beta"));
    // A first sync that merges into alpha needs --yes (issue 9, item 6).
    let run = fx.once(&["--yes"]);
    run.expect_code(0);
    fx.assert_synced();
    for (rel, target) in [
        ("link", "target.txt"),
        ("d/up", "../target.txt"),
        ("dirlink", "d"),
        ("dangling", "not-there-yet"),
        ("from_beta", "./target.txt"),
    ] {
        for side in [&fx.alpha, &fx.beta] {
            let p = side.join(rel);
            let m = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(
                m.file_type().is_symlink(),
                "{} is not a symlink",
                p.display()
            );
            assert_eq!(fs::read_link(&p).unwrap(), Path::new(target));
        }
    }
    assert!(
        run.events("problem").is_empty(),
        "unexpected problems\n{run}"
    );

    // Retargeting a link propagates.
    remove(&fx.b("link"));
    symlink("d/inner.txt", &fx.b("link"));
    fx.once(&[]).expect_code(0);
    assert_eq!(
        fs::read_link(fx.a("link")).unwrap(),
        Path::new("d/inner.txt")
    );
}

#[test]
fn symlinks_escaping_the_root_are_not_synced_and_are_reported() {
    let fx = Fixture::new();
    write(&fx.root.join("outside.txt"), "outside\n");
    write(&fx.a("f"), "f\n");
    symlink("/etc/passwd", &fx.a("absolute"));
    symlink("../../outside.txt", &fx.a("dotdot"));
    symlink("../outside.txt", &fx.a("one_up"));
    symlink("../../outside.txt", &fx.a("d/dotdot2"));
    symlink("x/../../../outside.txt", &fx.a("d/winding"));
    // A `..` after a name is refused even when it happens to stay inside: through a link
    // (`u -> .`, `e -> u/..`) it can climb out of the root.
    symlink("d/../f", &fx.a("winding_inside"));
    symlink("../f", &fx.a("d/fine"));
    symlink("/tmp", &fx.b("beta_absolute"));
    let run = fx.once(&[]);
    run.expect_code(0);
    for rel in [
        "absolute",
        "dotdot",
        "one_up",
        "d/dotdot2",
        "d/winding",
        "winding_inside",
    ] {
        assert_absent(&fx.b(rel));
        assert!(
            run.events("problem")
                .iter()
                .any(|e| e["path"] == rel && e["side"] == "alpha"),
            "no problem reported for alpha's {rel}\n{run}"
        );
    }
    assert_absent(&fx.a("beta_absolute"));
    assert!(
        run.events("problem")
            .iter()
            .any(|e| e["path"] == "beta_absolute" && e["side"] == "beta"),
        "no problem reported for beta's absolute link\n{run}"
    );
    assert_content(&fx.b("f"), "f\n");
    assert_eq!(fs::read_link(fx.b("d/fine")).unwrap(), Path::new("../f"));
    // The escaping links themselves are untouched where they were.
    assert_eq!(
        fs::read_link(fx.a("absolute")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_content(&fx.root.join("outside.txt"), "outside\n");
}

#[test]
fn ferryignore_and_ignore_flags_with_reinclusion() {
    let fx = Fixture::new();
    write(
        &fx.a(".ferryignore"),
        "# build output\n*.log\n!keep.log\n/build\ncache/\n*.dat\ndocs/**/tmp\n",
    );
    for rel in [
        "main.c",
        "a.log",
        "keep.log",
        "sub/b.log",
        "build/out.o",
        "sub/build/src.c",
        "cache/x",
        "sub/cache/y",
        "data.dat",
        "important.dat",
        "secret.txt",
        "docs/a/b/tmp/t",
        "docs/a/b/keep.md",
    ] {
        write(&fx.a(rel), rel);
    }
    // A later --ignore `!` re-includes what .ferryignore excluded; another adds a rule.
    let run = fx.once(&["--ignore", "!important.dat", "--ignore", "secret*"]);
    run.expect_code(0);
    let synced = [
        ".ferryignore",
        "main.c",
        "keep.log",
        "sub/build/src.c",
        "important.dat",
        "docs/a/b/keep.md",
    ];
    for rel in synced {
        assert!(exists(&fx.b(rel)), "{rel} should have been synced\n{run}");
    }
    for rel in [
        "a.log",
        "sub/b.log",
        "build",
        "cache",
        "sub/cache",
        "data.dat",
        "secret.txt",
        "docs/a/b/tmp",
    ] {
        assert_absent(&fx.b(rel));
        assert!(exists(&fx.a(rel)), "ignored {rel} vanished from alpha");
    }
    assert!(
        run.events("change")
            .iter()
            .all(|e| !e["path"].as_str().unwrap_or("").ends_with(".log")
                || e["path"] == "keep.log"),
        "an ignored path appeared in a change event\n{run}"
    );
}

#[test]
fn ignored_files_on_beta_are_never_deleted_or_copied() {
    let fx = Fixture::new();
    write(&fx.a(".ferryignore"), "*.log\ncache/\n");
    write(&fx.a("sub/code.c"), "code");
    write(&fx.a("top.c"), "top");
    fx.once(&[]).expect_code(0);
    write(&fx.b("beta.log"), "beta's log");
    write(&fx.b("cache/blob"), "beta's cache");
    write(&fx.b("sub/local.log"), "beta's log in sub");
    // alpha deletes the directory that holds beta's ignored file, and another file.
    remove(&fx.a("sub"));
    remove(&fx.a("top.c"));
    let run = fx.once(&[]);
    assert_content(&fx.b("beta.log"), "beta's log");
    assert_content(&fx.b("cache/blob"), "beta's cache");
    assert_content(&fx.b("sub/local.log"), "beta's log in sub");
    assert_absent(&fx.b("sub/code.c"));
    assert_absent(&fx.b("top.c"));
    assert_absent(&fx.a("beta.log"));
    assert_absent(&fx.a("cache"));
    assert!(
        run.changes_at("beta.log").is_empty(),
        "ignored file in a change event\n{run}"
    );
}

#[test]
fn vcs_directories_are_ignored_by_default_and_synced_with_no_ignore_vcs() {
    let fx = Fixture::new();
    for rel in [
        ".git/HEAD",
        ".git/objects/ab/cdef",
        ".hg/store",
        ".svn/entries",
        "vendor/lib/.git/config",
        "src/main.rs",
    ] {
        write(&fx.a(rel), rel);
    }
    let run = fx.once(&[]);
    run.expect_code(0);
    assert_content(&fx.b("src/main.rs"), "src/main.rs");
    for rel in [".git", ".hg", ".svn", "vendor/lib/.git"] {
        assert_absent(&fx.b(rel));
    }
    assert!(fx.b("vendor/lib").is_dir());

    let run = fx.once(&["--no-ignore-vcs"]);
    run.expect_code(0);
    fx.assert_synced();
    assert_content(&fx.b(".git/objects/ab/cdef"), ".git/objects/ab/cdef");
    assert_content(&fx.b("vendor/lib/.git/config"), "vendor/lib/.git/config");
    assert_content(&fx.b(".svn/entries"), ".svn/entries");
}

#[test]
fn edits_on_both_sides_while_stopped_propagate_both_ways() {
    let fx = Fixture::new();
    for rel in [
        "a.txt",
        "b.txt",
        "del_a.txt",
        "del_b.txt",
        "r.txt",
        "shared/s.txt",
    ] {
        write(&fx.a(rel), format!("original {rel}\n"));
    }
    fx.once(&[]).expect_code(0);
    fx.assert_synced();

    // ferry is not running: both sides change different paths.
    write(&fx.a("a.txt"), "alpha edited a\n");
    write(&fx.a("new_a.txt"), "new on alpha\n");
    remove(&fx.a("del_a.txt"));
    mkdir(&fx.a("dir_a"));
    write(&fx.a("shared/from_alpha.txt"), "alpha in shared\n");
    write(&fx.b("b.txt"), "beta edited b\n");
    write(&fx.b("new_b.txt"), "new on beta\n");
    remove(&fx.b("del_b.txt"));
    rename(&fx.b("r.txt"), &fx.b("r2.txt"));
    write(&fx.b("shared/from_beta.txt"), "beta in shared\n");

    let run = fx.once(&[]);
    run.expect_code(0);
    fx.assert_synced();
    for side in [&fx.alpha, &fx.beta] {
        assert_content(&side.join("a.txt"), "alpha edited a\n");
        assert_content(&side.join("b.txt"), "beta edited b\n");
        assert_content(&side.join("new_a.txt"), "new on alpha\n");
        assert_content(&side.join("new_b.txt"), "new on beta\n");
        assert_absent(&side.join("del_a.txt"));
        assert_absent(&side.join("del_b.txt"));
        assert_absent(&side.join("r.txt"));
        assert_content(&side.join("r2.txt"), "original r.txt\n");
        assert!(side.join("dir_a").is_dir());
        assert_content(&side.join("shared/s.txt"), "original shared/s.txt\n");
        assert_content(&side.join("shared/from_alpha.txt"), "alpha in shared\n");
        assert_content(&side.join("shared/from_beta.txt"), "beta in shared\n");
    }
    assert!(
        run.events("conflict").is_empty(),
        "no conflict expected\n{run}"
    );
    assert_changed(&run, "a.txt", "beta", "modify");
    assert_changed(&run, "b.txt", "alpha", "modify");
}

#[test]
fn a_second_run_with_nothing_changed_does_nothing() {
    let fx = Fixture::new();
    write(&fx.a("x/y/z.txt"), "z");
    write(&fx.b("w.txt"), "w");
    // A first sync that merges into alpha needs --yes (issue 9, item 6).
    fx.once(&["--yes"]).expect_code(0);
    let run = fx.once(&[]);
    run.expect_code(0);
    assert_eq!(run.transferred(), (0, 0), "{run}");
    assert!(run.events("change").is_empty(), "{run}");
    fx.assert_synced();
}

#[test]
fn missing_beta_is_created_when_its_parent_exists() {
    let fx = Fixture::new();
    write(&fx.a("f"), "f");
    let beta = fx.root.join("new_beta");
    let run = fx.run([
        "sync".as_ref(),
        fx.alpha.as_os_str(),
        beta.as_os_str(),
        "--once".as_ref(),
        "--json".as_ref(),
    ]);
    run.expect_code(0);
    assert_same_trees(&fx.alpha, &beta);
}

#[test]
fn json_events_follow_the_documented_shape() {
    let fx = Fixture::new();
    write(&fx.a("f.txt"), "abc");
    let run = fx.once(&[]);
    run.expect_code(0);
    let ev = &run.events;
    assert!(is(&ev[0], "session_start"), "{run}");
    let state_dir = ev[0]["state_dir"].as_str().unwrap_or_default();
    assert!(
        Path::new(state_dir).starts_with(fx.state.join("ferry/sessions")),
        "session state is not under XDG_STATE_HOME/ferry/sessions: {state_dir}"
    );
    assert!(
        is(ev.last().unwrap(), "session_end") && ev.last().unwrap()["exit_code"] == 0,
        "{run}"
    );
    let starts = run.events("cycle_start").len();
    let ends = run.events("cycle_end");
    assert!(starts >= 1 && starts == ends.len(), "{run}");
    for e in &ends {
        for k in ["to_alpha", "to_beta", "conflicts", "errors", "bytes"] {
            assert!(e[k].is_u64(), "cycle_end.{k} missing: {e}");
        }
        assert!(e["duration_ms"].is_number(), "cycle_end.duration_ms: {e}");
    }
    assert_eq!(run.transferred(), (0, 1), "{run}");
    assert_eq!(
        ends.iter()
            .map(|e| e["bytes"].as_u64().unwrap())
            .sum::<u64>(),
        3
    );
    let ch = run.changes_at("f.txt");
    assert_eq!(ch.len(), 1, "{run}");
    assert_eq!(ch[0]["direction"], "alpha->beta");
    assert_eq!(ch[0]["side"], "beta");
    assert_eq!(ch[0]["action"], "create");
    assert_eq!(ch[0]["kind"], "file");
}

/// A formatter run or a branch switch rewrites thousands of existing files at once: one
/// `--once` run must carry them all, without errors (nobody else is writing).
#[test]
fn modifying_3000_existing_files_in_one_run() {
    let fx = Fixture::new();
    for i in 0..3000 {
        write(
            &fx.a(&format!("m{:02}/f{i:04}", i % 30)),
            format!("v1 {i}\n"),
        );
    }
    fx.once(&[]).expect_code(0);
    fx.assert_synced();
    for i in 0..3000 {
        write(
            &fx.a(&format!("m{:02}/f{i:04}", i % 30)),
            format!("v2 {i}\n"),
        );
    }
    let run = fx.once(&[]);
    run.expect_code(0);
    fx.assert_synced();
    assert_content(&fx.b("m29/f2999"), "v2 2999\n");
    assert!(
        run.events("error").is_empty(),
        "errors in a run where nothing else was writing\n{run}"
    );
    assert_eq!(run.transferred(), (0, 3000), "{run}");
}

#[test]
fn type_changes_propagate() {
    let fx = Fixture::new();
    write(&fx.a("file_to_dir"), "was a file");
    write(&fx.a("dir_to_file/inner"), "was in a dir");
    write(&fx.a("file_to_link"), "was a file");
    write(&fx.a("target"), "target");
    symlink("target", &fx.a("link_to_file"));
    write(&fx.a("beta_file_to_dir"), "was a file");
    fx.once(&[]).expect_code(0);

    remove(&fx.a("file_to_dir"));
    write(&fx.a("file_to_dir/now_inside"), "now a dir");
    remove(&fx.a("dir_to_file"));
    write(&fx.a("dir_to_file"), "now a file");
    remove(&fx.a("file_to_link"));
    symlink("target", &fx.a("file_to_link"));
    remove(&fx.a("link_to_file"));
    write(&fx.a("link_to_file"), "now a file");
    remove(&fx.b("beta_file_to_dir"));
    mkdir(&fx.b("beta_file_to_dir/sub"));
    let run = fx.once(&[]);
    run.expect_code(0);
    fx.assert_synced();
    assert_content(&fx.b("file_to_dir/now_inside"), "now a dir");
    assert_content(&fx.b("dir_to_file"), "now a file");
    assert_eq!(
        fs::read_link(fx.b("file_to_link")).unwrap(),
        Path::new("target")
    );
    assert_content(&fx.b("link_to_file"), "now a file");
    assert!(fx.a("beta_file_to_dir/sub").is_dir());
}

#[test]
fn unusual_but_valid_names_sync() {
    let fx = Fixture::new();
    let long = "n".repeat(255);
    let deep = (0..40)
        .map(|i| format!("level{i}"))
        .collect::<Vec<_>>()
        .join("/");
    let names = [
        "with space.txt".to_owned(),
        " leading and trailing space ".to_owned(),
        "ünïcödé-文件-😀.txt".to_owned(),
        "quote'and\"double".to_owned(),
        "back\\slash".to_owned(),
        "new\nline".to_owned(),
        "tab\there".to_owned(),
        "colon:star*question?".to_owned(),
        ".hidden".to_owned(),
        ".config/nested/.dotfile".to_owned(),
        "-dash-first".to_owned(),
        "..double-dot-prefix".to_owned(),
        "trailing.dot.".to_owned(),
        long.clone(),
        format!("{deep}/bottom.txt"),
    ];
    for (i, n) in names.iter().enumerate() {
        write(&fx.a(n), format!("content {i}"));
    }
    write(&fx.b("from beta ✓.txt"), "beta");
    // A first sync that merges into alpha needs --yes (issue 9, item 6).
    let run = fx.once(&["--yes"]);
    run.expect_code(0);
    fx.assert_synced();
    for (i, n) in names.iter().enumerate() {
        assert_content(&fx.b(n), format!("content {i}"));
    }
    assert_content(&fx.a("from beta ✓.txt"), "beta");
    assert!(run.events("problem").is_empty(), "{run}");
}

#[test]
fn relative_endpoint_paths() {
    let fx = Fixture::new();
    write(&fx.a("f"), "f");
    write(&fx.b("g"), "g");
    // The fixture runs ferry in its temp dir, where alpha/ and beta/ are.
    let run = fx.run(["sync", "./alpha", "beta/", "--once", "--json", "--yes"]);
    run.expect_code(0);
    fx.assert_synced();
    assert_content(&fx.b("f"), "f");
    assert_content(&fx.a("g"), "g");
}

/// With the state directory on another filesystem, staging happens in `.ferry-staging` at the
/// root: never synced, never left behind.
#[test]
fn staging_on_the_roots_filesystem_is_hidden_and_removed() {
    let shm = Path::new("/dev/shm");
    let fx = Fixture::new();
    use std::os::unix::fs::MetadataExt;
    let other_fs = fs::metadata(shm)
        .is_ok_and(|m| m.is_dir() && m.dev() != fs::metadata(&fx.root).unwrap().dev());
    assert!(
        other_fs,
        "this test needs /dev/shm on a filesystem other than the temp dir's (tmpfs on Debian) \
         to put the state directory on another filesystem than the roots"
    );
    let state = tempfile::Builder::new()
        .prefix("ferry-it-state-")
        .tempdir_in(shm)
        .unwrap();
    write(&fx.a("f.txt"), "alpha");
    write(&fx.a("d/big"), pseudo_random(3, 300_000));
    write(&fx.b("g.txt"), "beta");
    let run_with_state = || {
        let mut cmd = fx.command();
        cmd.env("XDG_STATE_HOME", state.path())
            .args(["sync", "--once", "--json", "--yes"])
            .arg(&fx.alpha)
            .arg(&fx.beta);
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run_with_state();
    assert_eq!(code, Some(0), "{out}");
    fx.assert_synced();
    assert_absent(&fx.a(".ferry-staging"));
    assert_absent(&fx.b(".ferry-staging"));
    write(&fx.b("g.txt"), "beta edit");
    write(&fx.a("d/big"), pseudo_random(4, 300_000));
    let (code, out) = run_with_state();
    assert_eq!(code, Some(0), "{out}");
    fx.assert_synced();
    assert_absent(&fx.a(".ferry-staging"));
    assert_absent(&fx.b(".ferry-staging"));
    assert_eq!(temp_like_entries(&tree(&fx.alpha)), Vec::<String>::new());
}

/// A link whose target passes the lexical rule must still not be created where a link already
/// on that side (escaping, so never synced) would take it out of the root.
#[test]
fn a_link_is_not_created_through_a_local_escaping_link() {
    let fx = Fixture::new();
    write(&fx.root.join("secret"), "SECRET\n");
    symlink(fx.root.to_str().expect("utf-8 temp path"), &fx.b("data"));
    symlink("data/secret", &fx.a("l"));
    write(&fx.a("f"), "f\n");
    let run = fx.once(&[]);
    assert!(
        fs::symlink_metadata(fx.b("l")).is_err(),
        "beta/l was created and leads outside the root\n{run}"
    );
    assert!(
        run.events("error").iter().any(|e| e["path"] == "l"),
        "no error reported for l\n{run}"
    );
    assert_content(&fx.b("f"), "f\n");
}
