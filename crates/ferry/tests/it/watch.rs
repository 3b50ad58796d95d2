//! Continuous mode: `ferry sync --json` watching both sides. Every step waits for ferry to make
//! the other side match (never a fixed sleep), then checks what it expects to see there.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::support::*;

/// Waits until both sides match, then checks `expect`.
fn step(s: &mut Session, fx: &Fixture, what: &str, expect: impl FnOnce()) {
    s.wait_synced(fx, what);
    expect();
}

#[test]
fn changes_on_each_side_propagate_while_watching() {
    let fx = Fixture::new();
    write(&fx.a("existing.txt"), "before start\n");
    write(&fx.b("existing_b.txt"), "beta before start\n");
    // A first sync that merges into alpha needs --yes (issue 9, item 6).
    let mut s = fx.watch(&["--yes"]);
    // The first cycle ran before `watching`.
    assert_content(&fx.b("existing.txt"), "before start\n");
    assert_content(&fx.a("existing_b.txt"), "beta before start\n");

    write(&fx.a("a1.txt"), "created on alpha\n");
    step(&mut s, &fx, "alpha creates a file", || {
        assert_content(&fx.b("a1.txt"), "created on alpha\n")
    });
    write(&fx.b("b1.txt"), "created on beta\n");
    step(&mut s, &fx, "beta creates a file", || {
        assert_content(&fx.a("b1.txt"), "created on beta\n")
    });
    write(&fx.a("a1.txt"), "modified on alpha\n");
    step(&mut s, &fx, "alpha modifies a file", || {
        assert_content(&fx.b("a1.txt"), "modified on alpha\n")
    });
    write(&fx.b("a1.txt"), "then modified on beta\n");
    step(&mut s, &fx, "beta modifies the same file", || {
        assert_content(&fx.a("a1.txt"), "then modified on beta\n")
    });
    write(&fx.a("dir/sub/x.txt"), "x\n");
    write(&fx.a("dir/y.txt"), "y\n");
    mkdir(&fx.a("dir/empty"));
    step(&mut s, &fx, "alpha creates a directory tree", || {
        assert_content(&fx.b("dir/sub/x.txt"), "x\n");
        assert!(fx.b("dir/empty").is_dir());
    });
    rename(&fx.b("dir"), &fx.b("dir2"));
    step(&mut s, &fx, "beta renames the directory", || {
        assert_content(&fx.a("dir2/sub/x.txt"), "x\n");
        assert_absent(&fx.a("dir"));
    });
    rename(&fx.a("b1.txt"), &fx.a("dir2/b1-renamed.txt"));
    step(&mut s, &fx, "alpha moves a file into a directory", || {
        assert_content(&fx.b("dir2/b1-renamed.txt"), "created on beta\n");
        assert_absent(&fx.b("b1.txt"));
    });
    write(&fx.b("dir2/sub/x.txt"), "x edited on beta\n");
    step(&mut s, &fx, "beta edits inside a renamed directory", || {
        assert_content(&fx.a("dir2/sub/x.txt"), "x edited on beta\n")
    });
    remove(&fx.b("a1.txt"));
    step(&mut s, &fx, "beta deletes a file", || {
        assert_absent(&fx.a("a1.txt"))
    });
    set_exec(&fx.b("existing.txt"), true);
    step(&mut s, &fx, "beta sets the executable bit", || {
        assert!(is_exec(&fx.a("existing.txt")))
    });
    symlink("dir2/y.txt", &fx.a("link"));
    step(&mut s, &fx, "alpha creates a symlink", || {
        assert_eq!(
            fs::read_link(fx.b("link")).unwrap(),
            Path::new("dir2/y.txt")
        )
    });
    remove(&fx.a("dir2"));
    step(&mut s, &fx, "alpha deletes a directory tree", || {
        assert_absent(&fx.b("dir2"))
    });

    assert!(s.events_since(0, "conflict").is_empty());
    s.stop();
    let end = s.events_since(0, "session_end");
    assert!(
        end.len() == 1 && end[0]["exit_code"] == 0,
        "session_end: {end:?}"
    );
    fx.assert_converged(&[]);
}

/// One way an editor saves a file: writes `content` to `path` somehow.
type Save = fn(&Path, &str);

/// How editors save `path`, each ending with `content` at `path`.
fn save_atomic_rename(path: &Path, content: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp-save",
        path.file_name().unwrap().to_string_lossy()
    ));
    write(&tmp, content);
    rename(&tmp, path);
}

fn save_backup_then_rewrite(path: &Path, content: &str) {
    let backup = path.with_file_name(format!("{}~", path.file_name().unwrap().to_string_lossy()));
    rename(path, &backup);
    write(path, content);
    remove(&backup);
}

fn save_truncate_then_write(path: &Path, content: &str) {
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    let (first, rest) = content.split_at(content.len() / 2);
    f.write_all(first.as_bytes()).unwrap();
    f.flush().unwrap();
    f.write_all(rest.as_bytes()).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn editor_save_patterns_propagate() {
    let fx = Fixture::new();
    write(&fx.a("doc.txt"), "version 0\n");
    write(&fx.a("src/main.rs"), "fn main() {}\n");
    let mut s = fx.watch(&[]);
    s.wait_synced(&fx, "initial sync");
    let saves: [(&str, Save); 3] = [
        ("write a temp file and rename it over", save_atomic_rename),
        (
            "rename to a backup, write anew, delete the backup",
            save_backup_then_rewrite,
        ),
        ("truncate and write in place", save_truncate_then_write),
    ];
    let mut version = 0;
    for (name, save) in saves {
        for (side, other) in [(&fx.alpha, &fx.beta), (&fx.beta, &fx.alpha)] {
            for rel in ["doc.txt", "src/main.rs"] {
                version += 1;
                let content = format!("version {version}, saved by: {name}\n").repeat(version);
                save(&side.join(rel), &content);
                let target = other.join(rel);
                s.wait_until(
                    &format!("{rel} saved ({name}) reaches the other side"),
                    || fs::read(&target).is_ok_and(|d| d == content.as_bytes()),
                );
                s.wait_synced(&fx, name);
                assert_content(&side.join(rel), &content);
            }
        }
    }
    let conflicts = s.events_since(0, "conflict");
    assert!(
        conflicts.is_empty(),
        "editor saves caused conflicts: {conflicts:?}"
    );
    s.stop();
    fx.assert_converged(&[]);
}

#[test]
fn a_burst_of_2000_files_syncs_completely() {
    let fx = Fixture::new();
    write(&fx.a("README"), "readme\n");
    mkdir(&fx.a("existing"));
    let mut s = fx.watch(&[]);
    s.wait_synced(&fx, "initial sync");

    // Like a git checkout: many new directories and files, as fast as possible.
    for i in 0..2000 {
        let rel = if i % 4 == 0 {
            format!("existing/f{i:04}.txt")
        } else {
            format!("pkg{:02}/mod{:02}/f{i:04}.rs", (i / 4) % 20, i % 5)
        };
        write(&fx.a(&rel), format!("file {i}\n").repeat(1 + i % 7));
    }
    s.wait_synced(&fx, "2000 files created on alpha");
    assert_eq!(
        tree(&fx.beta)
            .values()
            .filter(|n| matches!(n, Node::File { .. }))
            .count(),
        2001
    );

    // And back: the checkout of a branch without some of them, this time on beta (600 files:
    // under half of the tree, so not taken for a wipe in progress).
    for i in 0..8 {
        remove(&fx.b(&format!("pkg{i:02}")));
    }
    s.wait_synced(&fx, "600 files deleted on beta");
    assert_absent(&fx.a("pkg00"));
    assert_content(&fx.a("existing/f0000.txt"), "file 0\n");
    s.stop();
    fx.assert_converged(&[]);
}

#[test]
fn ferryignore_edited_while_watching_takes_effect() {
    let fx = Fixture::new();
    write(&fx.a("keep.txt"), "k");
    let mut s = fx.watch(&[]);
    s.wait_synced(&fx, "initial sync");
    write(&fx.a(".ferryignore"), "*.tmp\n");
    s.wait_until("beta receives .ferryignore", || {
        exists(&fx.b(".ferryignore"))
    });
    write(&fx.a("scratch.tmp"), "scratch");
    write(&fx.a("real.txt"), "real");
    s.wait_until("beta receives real.txt", || exists(&fx.b("real.txt")));
    write(&fx.b("beta.tmp"), "beta's scratch");
    write(&fx.b("marker.txt"), "m");
    s.wait_until("alpha receives marker.txt", || exists(&fx.a("marker.txt")));
    assert_absent(&fx.b("scratch.tmp"));
    assert_absent(&fx.a("beta.tmp"));
    s.stop();
}

fn stops_cleanly_on(sig: i32) {
    let fx = Fixture::new();
    write(&fx.a("f"), "f");
    let mut s = fx.watch(&[]);
    s.wait_synced(&fx, "initial sync");
    write(&fx.b("g"), "g");
    s.wait_synced(&fx, "beta's new file");
    let st = s.signal_and_wait(sig);
    assert_eq!(st.code(), Some(0), "signal {sig}: {st:?}\n{}", s.stderr());
    let end = s.events_since(0, "session_end");
    assert!(
        end.len() == 1 && end[0]["exit_code"] == 0,
        "session_end after signal {sig}: {end:?}"
    );
    // The archive was saved: a fresh run finds nothing to do.
    fx.assert_converged(&[]);
}

#[test]
fn sigterm_exits_zero() {
    stops_cleanly_on(libc::SIGTERM);
}

#[test]
fn sigint_exits_zero() {
    stops_cleanly_on(libc::SIGINT);
}

#[test]
fn directories_moved_in_out_and_replaced_while_watching() {
    let fx = Fixture::new();
    write(&fx.a("keep.txt"), "keep");
    write(&fx.a("replace_me/old.txt"), "old");
    let mut s = fx.watch(&[]);
    s.wait_synced(&fx, "initial sync");

    // A tree moved in from outside the root: the watcher sees only the top directory.
    let outside = fx.root.join("outside");
    for i in 0..50 {
        write(
            &outside.join(format!("pkg/sub{}/f{i}.txt", i % 5)),
            format!("{i}"),
        );
    }
    rename(&outside.join("pkg"), &fx.a("pkg"));
    step(&mut s, &fx, "a directory tree moved into alpha", || {
        assert_content(&fx.b("pkg/sub4/f49.txt"), "49")
    });

    // Moved out of beta: gone from alpha too.
    rename(&fx.b("pkg"), &fx.root.join("moved-out"));
    step(&mut s, &fx, "a directory tree moved out of beta", || {
        assert_absent(&fx.a("pkg"))
    });

    // Replaced by a new directory of the same name (as a branch switch does); several times,
    // since what can go wrong here depends on when the watcher's events arrive.
    for round in 0..5 {
        remove(&fx.a("replace_me"));
        write(&fx.a(&format!("replace_me/new{round}.txt")), "new");
        write(&fx.a("replace_me/deeper/x.txt"), format!("x{round}"));
        step(
            &mut s,
            &fx,
            &format!("a directory replaced by another, round {round}"),
            || {
                assert_absent(&fx.b("replace_me/old.txt"));
                assert_content(&fx.b(&format!("replace_me/new{round}.txt")), "new");
                assert_content(&fx.b("replace_me/deeper/x.txt"), format!("x{round}"));
            },
        );
    }

    // A new directory that is immediately filled, then a file in it edited at once.
    write(&fx.b("fresh/a.txt"), "a1");
    write(&fx.b("fresh/a.txt"), "a2");
    set_exec(&fx.b("fresh/a.txt"), true);
    step(
        &mut s,
        &fx,
        "create, edit and chmod in quick succession",
        || {
            assert_content(&fx.a("fresh/a.txt"), "a2");
            assert!(is_exec(&fx.a("fresh/a.txt")));
        },
    );
    assert!(s.events_since(0, "conflict").is_empty());
    s.stop();
    fx.assert_converged(&[]);
}

/// Regression: with the state directory on another filesystem, staging lives in
/// `.ferry-staging` at the root and is removed after each cycle; it must come back for the next
/// one (it did not: every file after the first failed with "staging failed: No such file").
#[test]
fn staging_in_the_root_works_cycle_after_cycle() {
    use std::os::unix::fs::MetadataExt;
    let fx = Fixture::new();
    let shm = Path::new("/dev/shm");
    assert!(
        fs::metadata(shm).is_ok_and(|m| m.dev() != fs::metadata(&fx.root).unwrap().dev()),
        "this test needs /dev/shm on another filesystem than the temp dir (tmpfs on Debian)"
    );
    let state = tempfile::Builder::new()
        .prefix("ferry-it-state-")
        .tempdir_in(shm)
        .unwrap();
    let mut cmd = fx.command();
    cmd.env("XDG_STATE_HOME", state.path());
    let args = vec![
        "sync".into(),
        fx.alpha.clone().into_os_string(),
        fx.beta.clone().into_os_string(),
        "--json".into(),
    ];
    let mut s = Session::spawn(cmd, args);
    s.wait_event(0, "the `watching` event", |e| is(e, "watching"));
    for i in 0..4 {
        let (from, to) = if i % 2 == 0 {
            (&fx.alpha, &fx.beta)
        } else {
            (&fx.beta, &fx.alpha)
        };
        fs::write(from.join(format!("f{i}.txt")), format!("content {i}")).unwrap();
        let target = to.join(format!("f{i}.txt"));
        s.wait_until(&format!("f{i}.txt reaches the other side"), || {
            target.exists()
        });
    }
    s.wait_synced(&fx, "after four files");
    s.stop();
    assert!(!fx.a(".ferry-staging").exists() && !fx.b(".ferry-staging").exists());
}

/// Deleting most of a side while watching (`rm -rf` of generated directories) is routine: the
/// deletions propagate, every file they remove on the other side is kept in its backup area,
/// and the session goes on (only an emptied or vanished root stops it).
#[test]
fn deleting_most_of_a_side_while_watching_propagates_with_copies_kept() {
    let fx = Fixture::new();
    for d in 0..8 {
        for f in 0..50 {
            write(&fx.a(&format!("d{d}/f{f}.txt")), format!("{d}/{f}\n"));
        }
    }
    let mut s = fx.watch(&[]);
    s.wait_synced(&fx, "initial sync");
    let before = tree(&fx.alpha);
    for d in 0..6 {
        remove(&fx.b(&format!("d{d}")));
    }
    s.wait_until("the deletions to reach alpha", || {
        (0..6).all(|d| !exists(&fx.a(&format!("d{d}"))))
    });
    assert!(!s.exited(), "the session stopped: {}", s.stderr());
    fx.assert_kept(&before, "alpha");
    for d in 6..8 {
        assert!(exists(&fx.a(&format!("d{d}/f49.txt"))), "alpha lost d{d}");
    }
    s.stop();
    fx.assert_synced();
}
