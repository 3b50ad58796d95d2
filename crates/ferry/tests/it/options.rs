//! Options every session takes: `--mode two-way-newest`, `--max-file-size`, `--gitignore`.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::modes::assert_backed_up;
use crate::support::*;

/// Writes `data` at `path` and sets its modification time to `secs_ago` seconds before now.
fn write_at(path: &Path, data: &str, secs_ago: u64) {
    write(path, data);
    let when = SystemTime::now() - Duration::from_secs(secs_ago);
    File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(when))
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
}

fn newest(fx: &Fixture) -> Run {
    fx.once(&["--mode", "two-way-newest"])
}

#[test]
fn two_way_newest_the_newer_edit_wins_and_the_older_is_backed_up() {
    let fx = Fixture::new();
    write_at(&fx.a("f.txt"), "base\n", 3600);
    write_at(&fx.a("g.txt"), "base g\n", 3600);
    newest(&fx).expect_code(0);
    fx.assert_synced();
    // f: beta's edit is newer; g: alpha's is.
    write_at(&fx.a("f.txt"), "alpha's older edit\n", 600);
    write_at(&fx.b("f.txt"), "beta's newer edit\n", 60);
    write_at(&fx.a("g.txt"), "alpha's newer g\n", 30);
    write_at(&fx.b("g.txt"), "beta's older g\n", 900);
    let run = newest(&fx);
    run.expect_code(0);
    fx.assert_synced();
    assert_content(&fx.a("f.txt"), "beta's newer edit\n");
    assert_content(&fx.b("g.txt"), "alpha's newer g\n");
    assert_backed_up(&fx, &run, "alpha", "f.txt", "alpha's older edit\n");
    assert_backed_up(&fx, &run, "beta", "g.txt", "beta's older g\n");
    assert!(
        !run.conflict_at("f.txt") && !run.conflict_at("g.txt"),
        "{run}"
    );
}

#[test]
fn two_way_newest_equal_times_stay_a_conflict() {
    let fx = Fixture::new();
    write_at(&fx.a("f.txt"), "base\n", 3600);
    newest(&fx).expect_code(0);
    let when = SystemTime::now() - Duration::from_secs(120);
    for (p, data) in [(fx.a("f.txt"), "alpha\n"), (fx.b("f.txt"), "beta\n")] {
        write(&p, data);
        File::options()
            .write(true)
            .open(&p)
            .and_then(|f| f.set_modified(when))
            .unwrap_or_else(|e| panic!("set mtime: {e}"));
    }
    let run = newest(&fx);
    run.expect_code(3);
    assert!(run.conflict_at("f.txt"), "{run}");
    assert_content(&fx.a("f.txt"), "alpha\n");
    assert_content(&fx.b("f.txt"), "beta\n");
}
