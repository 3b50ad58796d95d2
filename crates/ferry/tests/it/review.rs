//! Regressions found by the safety review: each test is named after what it regresses and
//! asserts what ferry promises (design.md, "What ferry promises").
//!
//! Waits are for events or polled conditions with a deadline; the only sleeps are the pauses
//! that provoke a race (a burst of deletions, the moment an edit lands), and every check made
//! after them holds whichever way the race went.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// `dirs` directories `dNN` of `per_dir` small files `fNNN`, each with its own content.
fn small_tree(root: &Path, dirs: usize, per_dir: usize) {
    for d in 0..dirs {
        let dir = root.join(format!("d{d:02}"));
        mkdir(&dir);
        for f in 0..per_dir {
            fs::write(
                dir.join(format!("f{f:03}")),
                format!("file {f} of directory {d}\n"),
            )
            .unwrap_or_else(|e| panic!("writing {}: {e}", dir.display()));
        }
    }
}

/// `change` events that deleted something on `side`, from `log`.
fn deletions_on<'a>(log: &'a [Value], side: &str) -> Vec<&'a Value> {
    log.iter()
        .filter(|e| is(e, "change") && e["side"] == side && e["action"] == "delete")
        .collect()
}

/// Runs `ferry sync ALPHA BETA --once --json EXTRA...` with `XDG_STATE_HOME=state`, waiting at
/// most [`DEADLINE`] for it to exit (a hang fails the test, showing what ferry printed).
fn once_with_state(fx: &Fixture, state: &Path, extra: &[&str]) -> (ExitStatus, Session) {
    let mut cmd = fx.command();
    cmd.env("XDG_STATE_HOME", state);
    let mut args: Vec<OsString> = vec![
        "sync".into(),
        fx.alpha.clone().into(),
        fx.beta.clone().into(),
        "--once".into(),
        "--json".into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    let mut s = Session::spawn(cmd, args);
    let st = s.wait_exit("ferry --once to finish");
    (st, s)
}

/// A fresh state directory on /dev/shm, which must be another filesystem than the fixture's
/// (so staging happens in `.ferry-staging` at each root).
fn state_on_another_filesystem(fx: &Fixture) -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    assert!(
        fs::metadata(shm)
            .is_ok_and(|m| m.is_dir() && m.dev() != fs::metadata(&fx.root).unwrap().dev()),
        "this test needs /dev/shm on another filesystem than the temp dir (tmpfs on Debian), to \
         put the state directory on another filesystem than the roots"
    );
    tempfile::Builder::new()
        .prefix("ferry-it-state-")
        .tempdir_in(shm)
        .expect("a state directory in /dev/shm")
}

/// Every file (not following links) under `root` whose content is exactly `data`.
fn files_holding(root: &Path, data: &[u8]) -> Vec<String> {
    tree(root)
        .into_iter()
        .filter(|(_, n)| matches!(n, Node::File { data: d, .. } if d == data))
        .map(|(k, _)| k)
        .collect()
}

/// Backup files holding exactly `data`.
fn backups_holding(fx: &Fixture, data: &[u8]) -> Vec<PathBuf> {
    fx.backup_files()
        .into_iter()
        .filter(|p| {
            fs::metadata(p).is_ok_and(|m| m.len() == data.len() as u64)
                && fs::read(p).is_ok_and(|d| d == data)
        })
        .collect()
}

// 1. Watch mode must not propagate a wipe piecemeal.

/// Watches a synced 40 x 100 tree while `remove_beta` deletes beta's root; ferry must stop
/// with a non-zero exit that mentions the wipe, and alpha must keep every file.
fn removed_root_is_not_propagated_piecemeal(remove_beta: impl FnOnce(&Path)) {
    let fx = Fixture::new();
    small_tree(&fx.alpha, 40, 100);
    fx.once(&[]).expect_code(0);
    let alpha_before = tree(&fx.alpha);
    let mut s = fx.watch(&[]);
    remove_beta(&fx.beta);
    let st = s.wait_exit("ferry to stop rather than propagate the removal of beta's root");
    let lost = alpha_before.len().saturating_sub(tree(&fx.alpha).len());
    if lost > 0 {
        let n = deletions_on(&s.log, "alpha").len();
        s.fail(&format!(
            "rm -rf of beta's root cost alpha {lost} of its {} entries ({n} `delete` changes on \
             alpha): the wipe was propagated piecemeal while it happened",
            alpha_before.len()
        ));
    }
    assert_eq!(
        diff_trees(&alpha_before, &tree(&fx.alpha)),
        None,
        "alpha changed"
    );
    if st.code() == Some(0) || st.code().is_none() {
        s.fail(&format!(
            "expected a non-zero exit after beta's root vanished, got {st:?}"
        ));
    }
    if !s.stderr().to_lowercase().contains("wipe") {
        s.fail("ferry stopped, but stderr does not mention the wipe (or --accept-wipe)");
    }
}

#[test]
fn watch_does_not_propagate_a_removed_root_piecemeal() {
    // `rm -rf beta`: the files go one by one, then the directories, then the root.
    removed_root_is_not_propagated_piecemeal(|beta| {
        fs::remove_dir_all(beta).expect("rm -rf beta");
    });
}

#[test]
fn watch_does_not_propagate_a_slow_rm_rf_of_a_root_piecemeal() {
    // The same `rm -rf`, as it goes on a slower disk or a busy machine: depth first, one
    // directory every few milliseconds (the race to provoke: cycles run between them).
    removed_root_is_not_propagated_piecemeal(|beta| {
        for d in 0..40 {
            fs::remove_dir_all(beta.join(format!("d{d:02}"))).expect("rm -rf beta/dNN");
            thread::sleep(Duration::from_millis(5));
        }
        fs::remove_dir(beta).expect("rmdir beta");
    });
}

#[test]
fn watch_holds_mass_deletions_until_the_deleting_side_is_quiet() {
    let fx = Fixture::new();
    small_tree(&fx.alpha, 40, 100);
    fx.once(&[]).expect_code(0);
    let mut s = fx.watch(&[]);
    // 15 of 40 directories: a bulk deletion, but under half of the tree (more would be taken
    // for a wipe in progress and stop the session: see watch.rs).
    for d in 0..15 {
        if d > 0 {
            // The race to provoke: a burst of deletions with short gaps.
            thread::sleep(Duration::from_millis(10));
        }
        fs::remove_dir_all(fx.b(&format!("d{d:02}"))).expect("removing a directory on beta");
    }
    s.drain();
    let mark = s.log.len();

    // Let alpha settle: its file count unchanged for 2 s (or matching beta's 2500 files).
    let end = Instant::now() + DEADLINE;
    let mut last = count_files(&fx.alpha);
    let mut since = Instant::now();
    loop {
        s.poll_events(Duration::from_millis(20));
        let n = count_files(&fx.alpha);
        if n != last {
            last = n;
            since = Instant::now();
        } else if since.elapsed() >= Duration::from_secs(2) {
            break;
        }
        if n == Some(2500)
            && let (Ok(a), Ok(b)) = (try_tree(&fx.alpha), try_tree(&fx.beta))
            && diff_trees(&a, &b).is_none()
        {
            break;
        }
        if s.exited() {
            break;
        }
        if Instant::now() >= end {
            s.fail(&format!(
                "alpha's file count never settled within {DEADLINE:?} (last: {last:?})"
            ));
        }
    }
    s.drain();

    let early = deletions_on(&s.log[..mark], "alpha").len();
    if early > 0 {
        s.fail(&format!(
            "{early} `delete` changes were applied to alpha (events before index {mark}) while \
             beta was still deleting 15 of its 40 directories: a mass deletion must be held \
             until the deleting side has been quiet, then applied"
        ));
    }
    if s.exited() {
        s.fail("ferry exited after a partial (37%) deletion on beta");
    }
    let (a, b) = (tree(&fx.alpha), tree(&fx.beta));
    if let Some(d) = diff_trees(&a, &b) {
        s.fail(&format!(
            "after the quiet period, alpha does not hold just beta's 25 remaining directories:\n{d}"
        ));
    }
    assert_eq!(
        count_files(&fx.alpha),
        Some(2500),
        "alpha should hold the 25 remaining directories' files"
    );
    s.stop();
}

// 2. kill -9 after a deletion propagated must not later delete a re-created file.

#[test]
fn kill_9_after_a_propagated_deletion_does_not_delete_the_file_recreated_later() {
    let fx = Fixture::new();
    let bytes = "the same bytes, written twice\n";
    write(&fx.a("n.txt"), bytes);
    write(&fx.a("o.txt"), "o\n");
    fx.once(&[]).expect_code(0);
    let mut s = fx.watch(&[]);
    remove(&fx.a("n.txt"));
    // Kill the moment the deletion lands on beta (poll tightly: no event needed).
    let end = Instant::now() + DEADLINE;
    while exists(&fx.b("n.txt")) {
        if s.exited() {
            s.fail("ferry exited before propagating the deletion of n.txt");
        }
        if Instant::now() >= end {
            s.fail("the deletion of alpha/n.txt never reached beta");
        }
        thread::sleep(Duration::from_micros(200));
    }
    s.kill9();
    // The user writes the file again, with the same bytes as before.
    write(&fx.a("n.txt"), bytes);
    let run = fx.once(&[]);
    assert!(
        exists(&fx.a("n.txt")),
        "after kill -9, a --once run deleted alpha/n.txt, which the user re-created after the \
         deletion had reached beta\n{run}"
    );
    assert_content(&fx.a("n.txt"), bytes);
    let deleted: Vec<_> = run
        .changes_at("n.txt")
        .into_iter()
        .filter(|e| e["side"] == "alpha" && e["action"] == "delete")
        .collect();
    assert!(
        deleted.is_empty(),
        "a `delete` change on alpha at n.txt: {deleted:?}\n{run}"
    );
    run.expect_code(0);
    assert_content(&fx.a("o.txt"), "o\n");
}

// 3. A write landing during a transition is never overwritten without a backup.

#[test]
fn a_write_landing_during_the_transition_is_never_overwritten_without_a_backup() {
    const SIZE: usize = 30 << 20;
    const ATTEMPTS: usize = 50;
    let fx = Fixture::new();
    write(&fx.a("p1"), "base\n");
    fx.once(&[]).expect_code(0);
    let sessions = fx.state.join("ferry").join("sessions");
    let session_dirs: Vec<PathBuf> = fs::read_dir(&sessions)
        .unwrap_or_else(|e| panic!("{}: {e}", sessions.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(session_dirs.len(), 1, "sessions: {session_dirs:?}");
    let staging = session_dirs[0].join("staging-alpha");

    let mut big = pseudo_random(7, SIZE);
    // (no staged file seen, edit kept in place, edit survived elsewhere)
    let (mut missed, mut in_place, mut elsewhere) = (0, 0, 0);
    let started = Instant::now();
    for attempt in 0..ATTEMPTS {
        if started.elapsed() > Duration::from_secs(20) {
            break;
        }
        big[..8].copy_from_slice(&(attempt as u64).to_le_bytes());
        fs::write(fx.b("p1"), &big).expect("writing beta/p1");
        let edit = format!("careful edit {attempt}\n");
        // Written beforehand, outside the roots, so the edit itself is one rename.
        let tmp = fx.root.join(format!("edit-{attempt}.tmp"));
        fs::write(&tmp, &edit).expect("writing the edit");

        let done = Arc::new(AtomicBool::new(false));
        // Spread the moment of the edit over the few hundred microseconds between the staged
        // copy being complete and its rename into place.
        let delay = Duration::from_micros(((attempt * 37) % 400) as u64);
        let editor = {
            let (done, staging, target, tmp) =
                (done.clone(), staging.clone(), fx.a("p1"), tmp.clone());
            thread::spawn(move || -> bool {
                // The staged copy appears, then grows; follow it until it is complete.
                let mut staged: Option<PathBuf> = None;
                while !done.load(Ordering::SeqCst) {
                    let Some(path) = &staged else {
                        staged = fs::read_dir(&staging)
                            .ok()
                            .and_then(|mut rd| rd.find_map(|e| e.ok().map(|e| e.path())));
                        thread::yield_now();
                        continue;
                    };
                    let Ok(m) = fs::metadata(path) else {
                        // Renamed into place before we saw it complete: missed this time.
                        return false;
                    };
                    if m.len() == SIZE as u64 {
                        let t = Instant::now();
                        while t.elapsed() < delay {
                            std::hint::spin_loop();
                        }
                        fs::rename(&tmp, &target).expect("renaming the edit into alpha/p1");
                        return true;
                    }
                    thread::yield_now();
                }
                false
            })
        };
        let run = fx.once(&[]);
        done.store(true, Ordering::SeqCst);
        let edited = editor.join().expect("the editor thread");
        if !edited {
            missed += 1;
            let _ = fs::remove_file(&tmp);
        } else {
            let in_alpha = fs::read(fx.a("p1")).is_ok_and(|d| d == edit.as_bytes());
            let in_beta = fs::read(fx.b("p1")).is_ok_and(|d| d == edit.as_bytes());
            let backups = backups_holding(&fx, edit.as_bytes());
            assert!(
                in_alpha || in_beta || !backups.is_empty(),
                "attempt {attempt}: {edit:?}, written to alpha/p1 while ferry was replacing it \
                 (after {delay:?}), exists nowhere: not in alpha/p1, beta/p1 nor a backup — \
                 ferry overwrote it\n{run}"
            );
            if in_alpha {
                in_place += 1;
            } else {
                elsewhere += 1;
            }
        }
        // Both sides agree again before the next attempt (the same change on both sides).
        let base = format!("base {attempt}\n");
        write(&fx.a("p1"), &base);
        write(&fx.b("p1"), &base);
        fx.once(&[]).expect_code(0);
    }
    eprintln!(
        "transition race: {} attempts; no staged copy seen {missed}, edit kept in alpha \
         {in_place}, edit kept elsewhere (beta or a backup) {elsewhere}",
        missed + in_place + elsewhere
    );
}

// 4. Symlink confinement: link targets must be normalised.

#[test]
fn symlinks_whose_targets_are_not_normalised_are_not_synced() {
    let fx = Fixture::new();
    write(&fx.a("x/in.txt"), "in x\n");
    write(&fx.a("y"), "y\n");
    symlink(".", &fx.a("u"));
    // Through `u -> .`, `u/..` is the root's parent, `u/u/../../..` its grandparent.
    symlink("u/..", &fx.a("e"));
    symlink("u/u/../../..", &fx.a("f"));
    // A `..` after a name is refused even where it stays inside (`h`); a `.` cannot climb,
    // so `./x` is a fine target and syncs (`g`).
    symlink("./x", &fx.a("g"));
    symlink("x/../y", &fx.a("h"));
    let run = fx.once(&[]);
    assert!(run.status.code().is_some(), "ferry died\n{run}");
    assert_eq!(
        fs::read_link(fx.b("g")).ok(),
        Some(PathBuf::from("./x")),
        "g -> ./x should sync\n{run}"
    );
    for link in ["e", "f", "h"] {
        assert!(
            !exists(&fx.b(link)),
            "beta/{link} was created (-> {:?}); its target is not a normalised path that stays \
             inside the root\n{run}",
            fs::read_link(fx.b(link)).ok()
        );
        assert!(
            run.problem_at(link),
            "no `problem` event reports the link {link}\n{run}"
        );
    }
    assert_content(&fx.b("x/in.txt"), "in x\n");
    assert_content(&fx.b("y"), "y\n");
}

// 5. A state directory inside a root is refused.

#[test]
fn a_state_directory_inside_a_root_is_refused() {
    for side in ["alpha", "beta"] {
        let fx = Fixture::new();
        write(&fx.a("f.txt"), "f\n");
        let state = fx.root.join(side).join(".state");
        let (st, s) = once_with_state(&fx, &state, &[]);
        let stderr = s.stderr();
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(
            st.code(),
            Some(2),
            "XDG_STATE_HOME inside {side} ({}): expected exit 2\nevents: {:?}\nstderr: {stderr}",
            state.display(),
            s.log
        );
        assert!(
            lines.len() == 1 && lines[0].to_lowercase().contains("state"),
            "XDG_STATE_HOME inside {side}: expected one stderr line about the state directory, \
             got: {stderr:?}"
        );
        assert_absent(&fx.b("f.txt"));
    }
}

// 6. A user's own `.ferry-staging` is never deleted, nor ferry's synced.

#[test]
fn a_users_own_ferry_staging_directory_is_never_deleted() {
    let fx = Fixture::new();
    let state = state_on_another_filesystem(&fx);
    write(&fx.a(".ferry-staging/notes.txt"), "my notes\n");
    // Content flows both ways, so each side stages something in its root.
    write(&fx.a("from-alpha.bin"), pseudo_random(61, 200_000));
    write(&fx.b("from-beta.bin"), pseudo_random(62, 200_000));
    for round in 0..2 {
        if round == 1 {
            write(&fx.a("from-alpha.bin"), pseudo_random(63, 200_000));
            write(&fx.b("from-beta.bin"), pseudo_random(64, 200_000));
        }
        // A first sync that merges into alpha needs --yes (issue 9, item 6).
        let (st, mut s) = once_with_state(&fx, state.path(), &["--yes"]);
        if !exists(&fx.a(".ferry-staging/notes.txt")) {
            s.fail(&format!(
                "round {round}: ferry deleted the user's alpha/.ferry-staging/notes.txt ({st:?})"
            ));
        }
        assert_content(&fx.a(".ferry-staging/notes.txt"), "my notes\n");
        if st.code() != Some(0) {
            s.fail(&format!("round {round}: expected exit 0, got {st:?}"));
        }
    }
    assert_content(&fx.b("from-alpha.bin"), pseudo_random(63, 200_000));
    assert_content(&fx.a("from-beta.bin"), pseudo_random(64, 200_000));
}

#[test]
fn reincluding_ferry_staging_does_not_sync_ferrys_staging_files() {
    const BIG: usize = 30 << 20;
    let fx = Fixture::new();
    let state = state_on_another_filesystem(&fx);
    let reinclude = ["--ignore", "!.ferry-staging"];
    // First, leave staging leftovers behind: kill -9 while beta's big file is staged in alpha.
    write(&fx.b("big.bin"), pseudo_random(69, BIG));
    let mut cmd = fx.command();
    cmd.env("XDG_STATE_HOME", state.path());
    let args: Vec<OsString> = vec![
        "sync".into(),
        fx.alpha.clone().into(),
        fx.beta.clone().into(),
        "--once".into(),
        "--json".into(),
        reinclude[0].into(),
        reinclude[1].into(),
    ];
    let mut s = Session::spawn(cmd, args);
    let staging = fx.a(".ferry-staging");
    let end = Instant::now() + DEADLINE;
    let mut killed_mid_staging = false;
    while !s.exited() && Instant::now() < end {
        // A staged file, not the filesystem probe each side runs in its staging directory
        // when it opens (which makes the session's staging directory before any cycle).
        let real = |e: &fs::DirEntry| !e.file_name().to_string_lossy().starts_with(".ferry-probe-");
        let staged = fs::read_dir(&staging).is_ok_and(|rd| {
            rd.flatten().filter(real).any(|e| {
                !e.file_type().is_ok_and(|t| t.is_dir())
                    || fs::read_dir(e.path()).is_ok_and(|inner| inner.flatten().any(|f| real(&f)))
            })
        });
        if staged {
            s.kill9();
            killed_mid_staging = true;
            break;
        }
        thread::sleep(Duration::from_micros(200));
    }
    s.kill9();
    eprintln!("killed while alpha/.ferry-staging held a staged file: {killed_mid_staging}");

    for round in 0..2u64 {
        write(&fx.a("from-alpha.bin"), pseudo_random(70 + round, 200_000));
        write(&fx.b("from-beta.bin"), pseudo_random(80 + round, 200_000));
        let (st, mut s) = once_with_state(&fx, state.path(), &reinclude);
        for (name, root) in [("alpha", &fx.alpha), ("beta", &fx.beta)] {
            let dir = root.join(".ferry-staging");
            if exists(&dir) {
                let left: Vec<String> = try_tree(&dir)
                    .map(|t| t.into_keys().collect())
                    .unwrap_or_default();
                s.fail(&format!(
                    "round {round}: {name}/.ferry-staging exists after the run, holding {left:?}: \
                     ferry's staging was synced or left behind ({st:?})"
                ));
            }
        }
        if st.code() != Some(0) {
            s.fail(&format!("round {round}: expected exit 0, got {st:?}"));
        }
        assert_content(&fx.b("from-alpha.bin"), pseudo_random(70 + round, 200_000));
        assert_content(&fx.a("from-beta.bin"), pseudo_random(80 + round, 200_000));
    }
    assert_eq!(temp_like_entries(&tree(&fx.alpha)), Vec::<String>::new());
    assert_eq!(temp_like_entries(&tree(&fx.beta)), Vec::<String>::new());
}

// 7. one-way-replica backs up content that would otherwise exist nowhere.

#[test]
fn one_way_replica_backs_up_content_that_would_otherwise_exist_nowhere() {
    let fx = Fixture::new();
    write(&fx.a("q"), "hand-tuned");
    fx.once(&[]).expect_code(0);
    fs::copy(fx.b("q"), fx.b("q.keep")).expect("cp beta/q beta/q.keep");
    write(&fx.a("q"), "v2");
    let run = fx.once(&["--mode", "one-way-replica"]);
    let kept = backups_holding(&fx, b"hand-tuned");
    let in_alpha = files_holding(&fx.alpha, b"hand-tuned");
    let in_beta = files_holding(&fx.beta, b"hand-tuned");
    assert!(
        !kept.is_empty() || !in_alpha.is_empty() || !in_beta.is_empty(),
        "the bytes \"hand-tuned\" (beta/q.keep, replaced q's old content) exist nowhere after \
         one-way-replica: neither in a backup nor in either tree (backups: {:?})\n{run}",
        fx.backup_files()
    );
    run.expect_code(0);
    fx.assert_synced();
}

// 8. A replaced root keeps being watched.

#[test]
fn a_replaced_root_keeps_being_watched() {
    let fx = Fixture::new();
    write(&fx.a("f.txt"), "f\n");
    let mut s = fx.watch(&[]);
    s.wait_synced(&fx, "initial sync");
    rename(&fx.alpha, &fx.root.join("alpha.old"));
    mkdir(&fx.alpha);
    write(&fx.a("new.txt"), "new\n");
    let end = Instant::now() + DEADLINE;
    loop {
        if exists(&fx.b("new.txt")) {
            assert_content(&fx.b("new.txt"), "new\n");
            s.stop();
            return;
        }
        if s.exited() {
            let st = s.wait_exit("ferry's last output");
            let stderr = s.stderr();
            if st.code() == Some(0) || stderr.trim().is_empty() {
                s.fail(&format!(
                    "after alpha was replaced ferry exited {st:?} without explaining why on \
                     stderr"
                ));
            }
            return;
        }
        if Instant::now() >= end {
            s.fail(&format!(
                "alpha was replaced by a new directory and alpha/new.txt written in it; within \
                 {DEADLINE:?} ferry neither synced it nor stopped: it silently ignores the new root"
            ));
        }
        s.poll_events(Duration::from_millis(20));
    }
}

// 9. `.ferryignore` as a symlink, a directory or a FIFO.

#[test]
fn a_ferryignore_symlinked_to_gitignore_is_applied() {
    let fx = Fixture::new();
    write(&fx.a(".gitignore"), "*.log\n");
    symlink(".gitignore", &fx.a(".ferryignore"));
    write(&fx.a("keep.txt"), "keep\n");
    write(&fx.a("skip.log"), "skip\n");
    let run = fx.once(&[]);
    run.expect_code(0);
    assert_content(&fx.b("keep.txt"), "keep\n");
    assert!(
        !exists(&fx.b("skip.log")),
        "skip.log was synced: the patterns of .ferryignore -> .gitignore were not applied\n{run}"
    );
}

/// Runs `--once` with something odd at alpha/.ferryignore: it must finish, report the
/// problem, and still sync the rest.
fn odd_ferryignore(fx: &Fixture, what: &str) {
    write(&fx.a("other.txt"), "other\n");
    let mut s = fx.spawn(&["--once"]);
    let st = s.wait_exit(&format!(
        "--once to finish with {what} at alpha/.ferryignore (it hung)"
    ));
    if st.code().is_none() {
        s.fail(&format!("ferry was killed by a signal: {st:?}"));
    }
    if !exists(&fx.b("other.txt")) {
        s.fail(&format!(
            "with {what} at .ferryignore, other files were not synced ({st:?})"
        ));
    }
    let reported = s.log.iter().any(|e| {
        (is(e, "problem") || is(e, "error"))
            && (e["path"] == ".ferryignore"
                || e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(".ferryignore")))
    }) || s.stderr().contains(".ferryignore");
    if !reported {
        s.fail(&format!("{what} at .ferryignore was not reported"));
    }
}

#[test]
fn a_ferryignore_that_is_a_directory_is_reported_and_the_rest_syncs() {
    let fx = Fixture::new();
    write(&fx.a(".ferryignore/inner.txt"), "*.txt\n");
    odd_ferryignore(&fx, "a directory");
}

#[test]
fn a_ferryignore_that_is_a_fifo_does_not_hang_ferry() {
    use std::os::unix::ffi::OsStrExt;
    let fx = Fixture::new();
    let path = std::ffi::CString::new(fx.a(".ferryignore").as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo(3) with a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(path.as_ptr(), 0o644) };
    assert_eq!(rc, 0, "mkfifo: {}", std::io::Error::last_os_error());
    odd_ferryignore(&fx, "a FIFO");
}

// 10. A deep tree does not crash ferry.

#[test]
fn a_tree_1000_directories_deep_does_not_crash_ferry() {
    let fx = Fixture::new();
    let deep = vec!["d"; 1000].join("/");
    mkdir(&fx.a(&deep));
    write(&fx.a(&format!("{deep}/leaf.txt")), "deep\n");
    write(&fx.a("top.txt"), "top\n");
    let run = fx.once(&[]);
    assert!(
        run.status.code().is_some(),
        "ferry was killed by a signal on a 1000-deep tree\n{run}"
    );
    assert!(
        !run.stderr.contains("overflowed"),
        "ferry overflowed its stack on a 1000-deep tree\n{run}"
    );
    let reported = !run.events("problem").is_empty() || !run.events("error").is_empty();
    if run.code() == 0 {
        assert!(
            exists(&fx.b(&format!("{deep}/leaf.txt"))) || reported,
            "exit 0, but the deep file was neither synced nor reported\n{run}"
        );
    } else {
        assert!(
            reported,
            "non-zero exit on a deep tree without a reported problem\n{run}"
        );
    }
    assert_content(&fx.b("top.txt"), "top\n");
}
