//! The promises: no data loss (wipes refused), atomic files (never a torn file), crash
//! safety (kill -9 then resume), confinement (never writing through a symlink), one session per
//! pair.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

fn mentions_accept_wipe(run: &Run) -> bool {
    run.stderr.contains("--accept-wipe") || run.stdout.contains("--accept-wipe")
}

#[test]
fn an_emptied_alpha_is_not_propagated_without_accept_wipe() {
    let fx = Fixture::new();
    write(&fx.a("f1"), "one");
    write(&fx.a("d/f2"), "two");
    mkdir(&fx.a("empty"));
    fx.once(&[]).expect_code(0);
    let beta_before = tree(&fx.beta);

    for e in fs::read_dir(&fx.alpha).unwrap() {
        remove(&e.unwrap().path());
    }
    for round in 0..2 {
        let run = fx.once(&[]);
        assert_ne!(run.code(), 0, "round {round}: the wipe went through\n{run}");
        assert_eq!(
            diff_trees(&beta_before, &tree(&fx.beta)),
            None,
            "round {round}: beta was touched\n{run}"
        );
        assert!(tree(&fx.alpha).is_empty(), "alpha was refilled\n{run}");
        assert!(
            mentions_accept_wipe(&run),
            "the refusal does not mention --accept-wipe\n{run}"
        );
    }

    let run = fx.once(&["--accept-wipe"]);
    run.expect_code(0);
    fx.assert_synced();
    assert!(tree(&fx.beta).is_empty(), "{run}");
}

#[test]
fn an_emptied_beta_is_not_propagated_without_accept_wipe() {
    let fx = Fixture::new();
    write(&fx.a("f1"), "one");
    write(&fx.a("d/f2"), "two");
    fx.once(&[]).expect_code(0);
    let alpha_before = tree(&fx.alpha);
    remove(&fx.b("f1"));
    remove(&fx.b("d"));
    let run = fx.once(&[]);
    assert_ne!(run.code(), 0, "{run}");
    assert!(mentions_accept_wipe(&run), "{run}");
    assert_eq!(diff_trees(&alpha_before, &tree(&fx.alpha)), None, "{run}");
    assert!(tree(&fx.beta).is_empty());
}

#[test]
fn a_removed_beta_root_is_not_propagated_but_filled_again() {
    let fx = Fixture::new();
    write(&fx.a("f1"), "one");
    write(&fx.a("d/f2"), "two");
    fx.once(&[]).expect_code(0);
    let alpha_before = tree(&fx.alpha);
    remove(&fx.beta);
    // A mirror deleted while ferry was stopped is a new endpoint: filled from alpha.
    let run = fx.once(&[]);
    run.expect_code(0);
    assert_eq!(diff_trees(&alpha_before, &tree(&fx.alpha)), None, "{run}");
    fx.assert_synced();
}

#[test]
fn watch_stops_instead_of_propagating_an_emptied_root() {
    let fx = Fixture::new();
    write(&fx.a("only/f1"), "one");
    write(&fx.a("only/f2"), "two");
    let mut s = fx.watch(&[]);
    s.wait_synced(&fx, "initial sync");
    let beta_before = tree(&fx.beta);
    // One rename empties alpha at once.
    rename(&fx.a("only"), &fx.root.join("moved-away"));
    let st = s.wait_exit("ferry to stop rather than propagate the emptied alpha");
    assert_ne!(st.code(), Some(0), "{st:?}");
    assert!(
        s.stderr().contains("--accept-wipe"),
        "no hint about --accept-wipe on stderr: {}",
        s.stderr()
    );
    assert_eq!(diff_trees(&beta_before, &tree(&fx.beta)), None);
}

/// `dirs` x `per_dir` files of 4 KiB, each with its own content for `seed`.
fn big_tree(root: &std::path::Path, dirs: usize, per_dir: usize, seed: u64) {
    for d in 0..dirs {
        let dir = root.join(format!("d{d:02}"));
        mkdir(&dir);
        for f in 0..per_dir {
            let n = (d * per_dir + f) as u64;
            fs::write(
                dir.join(format!("f{f:03}")),
                pseudo_random(seed * 1_000_000 + n, 4096),
            )
            .unwrap();
        }
    }
}

#[test]
fn kill_9_during_the_first_scan_then_resume_converges() {
    let fx = Fixture::new();
    big_tree(&fx.alpha, 30, 100, 1);
    let mut s = fx.spawn(&["--once"]);
    s.wait_event(0, "the `cycle_start` event", |e| is(e, "cycle_start"));
    s.kill9();
    let run = fx.once(&[]);
    run.expect_code(0);
    fx.assert_synced();
    assert_eq!(temp_like_entries(&tree(&fx.beta)), Vec::<String>::new());
    assert_eq!(temp_like_entries(&tree(&fx.alpha)), Vec::<String>::new());
    assert_eq!(tree(&fx.beta).len(), 30 * 101);
}

#[test]
fn kill_9_while_files_are_replaced_leaves_whole_files_and_resume_converges() {
    let fx = Fixture::new();
    big_tree(&fx.alpha, 30, 100, 1);
    fx.once(&[]).expect_code(0);
    fx.assert_synced();
    let old = tree(&fx.alpha);
    big_tree(&fx.alpha, 30, 100, 2);
    let new = tree(&fx.alpha);

    let mut s = fx.spawn(&["--once"]);
    s.wait_event(0, "the `cycle_start` event", |e| is(e, "cycle_start"));
    // Kill as soon as the first replacement lands on beta, i.e. in the middle of applying.
    let probe = fx.b("d00/f000");
    let want = match &new["d00/f000"] {
        Node::File { data, .. } => data.clone(),
        other => panic!("{other:?}"),
    };
    let end = Instant::now() + DEADLINE;
    let mut interrupted = false;
    loop {
        if fs::read(&probe).is_ok_and(|d| d == want) {
            s.kill9();
            interrupted = !s.log.iter().any(|e| is(e, "session_end"));
            break;
        }
        if s.exited() {
            break;
        }
        assert!(Instant::now() < end, "ferry never replaced d00/f000");
        thread::sleep(Duration::from_millis(1));
    }
    // Every file on beta is whole: the old version or the new one, never a mix or a prefix.
    let mid = tree(&fx.beta);
    let mut replaced = 0;
    for (path, node) in &mid {
        let (Some(o), Some(n)) = (old.get(path), new.get(path)) else {
            panic!("unexpected entry beta/{path} ({node:?}) after kill -9");
        };
        assert!(
            node == o || node == n,
            "beta/{path} after kill -9 is neither the old nor the new version: {node:?}"
        );
        if node == n && o != n {
            replaced += 1;
        }
    }
    assert_eq!(mid.len(), old.len(), "entries appeared or vanished on beta");
    eprintln!("killed mid-apply: {interrupted}; {replaced} of 3000 files replaced at the kill");

    let run = fx.once(&[]);
    run.expect_code(0);
    fx.assert_synced();
    assert_eq!(diff_trees(&new, &tree(&fx.beta)), None);
    assert_eq!(temp_like_entries(&tree(&fx.beta)), Vec::<String>::new());
    // The replaced content was in the archive: no backups were needed (none reported). The
    // versions swapped out are kept in the backup area all the same (a program may still
    // write to them), and each holds an old version, whole.
    let reported: Vec<&serde_json::Value> = run
        .events("change")
        .into_iter()
        .filter(|e| e["backups"].as_array().is_some_and(|b| !b.is_empty()))
        .collect();
    assert!(reported.is_empty(), "{reported:?}");
    let olds: std::collections::HashSet<Vec<u8>> = (0..3000u64)
        .map(|n| pseudo_random(1_000_000 + n, 4096))
        .collect();
    for b in fx.backup_files() {
        assert!(
            olds.contains(&read(&b)),
            "{} is not an old version",
            b.display()
        );
    }
}

#[test]
fn a_file_written_while_ferry_copies_it_arrives_whole() {
    const SIZE: usize = 20 << 20;
    const CHUNK: usize = 128 << 10;
    let fx = Fixture::new();
    write(&fx.a("small.txt"), "small");
    let mut s = fx.watch(&[]);
    s.wait_synced(&fx, "initial sync");

    let content = Arc::new(pseudo_random(99, SIZE));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (content, done, path) = (content.clone(), done.clone(), fx.a("big.bin"));
        thread::spawn(move || {
            let mut f = File::create(path).unwrap();
            for chunk in content.chunks(CHUNK) {
                f.write_all(chunk).unwrap();
                // Pace the writer so ferry sees the file many times mid-way.
                thread::sleep(Duration::from_millis(2));
            }
            f.sync_all().unwrap();
            done.store(true, Ordering::SeqCst);
        })
    };

    // While the writer runs: whatever beta shows at big.bin is a whole, stable file whose bytes
    // alpha held at some point (a prefix of the final content), and nothing else appears.
    let beta_path = fx.b("big.bin");
    let mut seen = 0usize;
    let mut sizes = Vec::new();
    while !done.load(Ordering::SeqCst) {
        if let Ok(mut f) = File::open(&beta_path) {
            let before = f.metadata().unwrap().len();
            let mut data = Vec::new();
            f.read_to_end(&mut data).unwrap();
            let after = f.metadata().unwrap().len();
            assert!(
                before == after && data.len() as u64 == before,
                "beta/big.bin changed while we read it ({before} -> {after} bytes, read {}): \
                 ferry wrote into the file in place",
                data.len()
            );
            assert!(
                content.starts_with(&data),
                "beta/big.bin ({} bytes) is not a state alpha's file ever had",
                data.len()
            );
            seen += 1;
            if sizes.last() != Some(&data.len()) {
                sizes.push(data.len());
            }
        }
        let names: Vec<String> = fs::read_dir(&fx.beta)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "small.txt" && n != "big.bin")
            .collect();
        assert!(names.is_empty(), "unexpected entries in beta: {names:?}");
        s.poll_events(Duration::from_millis(5));
    }
    writer.join().unwrap();
    eprintln!("checked beta/big.bin {seen} times mid-write; sizes seen: {sizes:?}");

    s.wait_until("beta/big.bin holds the final content", || {
        fs::read(&beta_path).is_ok_and(|d| d.len() == SIZE && d[..] == content[..])
    });
    s.wait_synced(&fx, "after the writer finished");
    assert_eq!(temp_like_entries(&tree(&fx.beta)), Vec::<String>::new());
    assert_content(&fx.a("big.bin"), &content[..]);
    let conflicts = s.events_since(0, "conflict");
    assert!(conflicts.is_empty(), "conflicts: {conflicts:?}");
    let hard_errors: Vec<_> = s
        .events_since(0, "error")
        .into_iter()
        .filter(|e| e["retry"] != true)
        .collect();
    assert!(hard_errors.is_empty(), "errors: {hard_errors:?}");
    s.stop();
    fx.assert_converged(&[]);
}

#[test]
fn never_writes_through_a_symlink_that_replaced_a_directory() {
    let fx = Fixture::new();
    write(&fx.a("d/a.txt"), "a");
    write(&fx.a("e/a.txt"), "a");
    fx.once(&[]).expect_code(0);
    // On beta, d becomes a link to a directory outside the root, e a link to one inside it.
    let outside = fx.root.join("outside");
    write(&outside.join("o.txt"), "outside");
    write(&fx.b("inside/i.txt"), "inside");
    remove(&fx.b("d"));
    remove(&fx.b("e"));
    symlink(outside.to_str().unwrap(), &fx.b("d"));
    symlink("inside", &fx.b("e"));
    let outside_before = tree(&outside);
    write(&fx.a("d/new.txt"), "new");
    write(&fx.a("d/a.txt"), "a2");
    write(&fx.a("e/new.txt"), "new");
    write(&fx.a("e/a.txt"), "a2");
    write(&fx.a("top.txt"), "top");
    let run = fx.once(&[]);
    assert_eq!(
        diff_trees(&outside_before, &tree(&outside)),
        None,
        "ferry wrote outside beta's root through a symlink\n{run}"
    );
    assert_absent(&fx.b("inside/new.txt"));
    assert_absent(&fx.b("inside/a.txt"));
    assert_content(&fx.b("inside/i.txt"), "inside");
    assert_content(&fx.a("d/a.txt"), "a2");
    assert_content(&fx.b("top.txt"), "top");
}

#[test]
fn a_second_ferry_on_the_same_pair_is_refused() {
    let fx = Fixture::new();
    write(&fx.a("f"), "f");
    let mut s = fx.watch(&[]);
    s.wait_synced(&fx, "initial sync");
    write(&fx.b("g"), "g");
    let run = fx.once(&["--mode", "one-way-replica"]);
    assert_ne!(run.code(), 0, "{run}");
    assert!(run.changes_at("g").is_empty(), "{run}");
    run.expect_one_stderr_line();
    s.wait_synced(&fx, "the running session carries on");
    assert_content(&fx.a("g"), "g");
    s.stop();
}
