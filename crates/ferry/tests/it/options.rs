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

// --- --max-file-size ----------------------------------------------------------------------

#[test]
fn max_file_size_big_files_are_reported_never_synced_nor_deleted() {
    let fx = Fixture::new();
    write(&fx.a("small.txt"), "small\n");
    write(&fx.a("big.bin"), vec![b'a'; 2000]);
    write(&fx.a("dir/big2.bin"), vec![b'c'; 1001]);
    write(&fx.a("dir/edge.bin"), vec![b'e'; 1000]);
    // Beta has its own big file at the same path: neither replaced nor deleted.
    write(&fx.b("big.bin"), vec![b'b'; 3000]);
    let run = fx.once(&["--max-file-size", "1kB"]);
    run.expect_code(0);
    assert_content(&fx.b("small.txt"), "small\n");
    assert_content(&fx.b("dir/edge.bin"), vec![b'e'; 1000]);
    assert_absent(&fx.b("dir/big2.bin"));
    assert_content(&fx.b("big.bin"), vec![b'b'; 3000]);
    assert_content(&fx.a("big.bin"), vec![b'a'; 2000]);
    assert!(run.problem_at("dir/big2.bin"), "{run}");
    assert!(run.problem_at("big.bin"), "{run}");
    let problem = run
        .events("problem")
        .into_iter()
        .find(|e| e["path"] == "dir/big2.bin")
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(problem.contains("--max-file-size 1.0 kB"), "{problem}");
    // A file that was synced and then grew past the limit is left alone on the other side.
    write(&fx.a("small.txt"), vec![b's'; 5000]);
    let run = fx.once(&["--max-file-size", "1kB"]);
    run.expect_code(0);
    assert!(run.problem_at("small.txt"), "{run}");
    assert_content(&fx.b("small.txt"), "small\n");
    // Without the limit everything goes, beta's own big file being a conflict.
    let run = fx.once(&[]);
    assert!(run.conflict_at("big.bin"), "{run}");
    assert_content(&fx.b("dir/big2.bin"), vec![b'c'; 1001]);
}

#[test]
fn max_file_size_a_growing_file_is_reported_once_while_watching() {
    let fx = Fixture::new();
    write(&fx.a("log.txt"), vec![b'l'; 2048]);
    let mut s = fx.watch(&["--max-file-size", "1KiB"]);
    write(&fx.a("log.txt"), vec![b'l'; 4096]);
    write(&fx.a("after.txt"), "after\n");
    s.wait_until("after.txt reaches beta", || exists(&fx.b("after.txt")));
    write(&fx.a("log.txt"), vec![b'l'; 8192]);
    write(&fx.a("later.txt"), "later\n");
    s.wait_until("later.txt reaches beta", || exists(&fx.b("later.txt")));
    let problems = s
        .events_since(0, "problem")
        .into_iter()
        .filter(|e| e["path"] == "log.txt")
        .count();
    s.stop();
    assert_eq!(problems, 1, "the big file is reported once");
    assert_absent(&fx.b("log.txt"));
}

#[test]
fn max_file_size_bad_values_are_usage_errors() {
    let fx = Fixture::new();
    for bad in ["ten", "5XB", "1.2.3GB"] {
        let run = fx.once(&["--max-file-size", bad]);
        run.expect_code(2);
        let line = run.expect_one_stderr_line();
        assert!(line.contains("--max-file-size"), "{line}");
    }
}

/// The limit crosses the wire: the agent in a container leaves its own big file out too.
#[test]
fn max_file_size_applies_in_a_container() {
    use crate::remote_support::{Container, busybox_image, static_agent};
    let c = Container::start(busybox_image(), &[]);
    let fx = Fixture::new();
    let beta = format!("docker://{}/srv/app", c.name);
    c.sh("mkdir -p /srv/app");
    c.write_file("/srv/app/huge.bin", vec![b'h'; 4096]);
    c.write_file("/srv/app/ok.txt", "ok\n");
    write(&fx.a("local-big.bin"), vec![b'l'; 4096]);
    let mut cmd = fx.command();
    cmd.env("FERRY_AGENT", static_agent());
    let args = [
        "sync",
        fx.alpha.to_str().unwrap_or_default(),
        &beta,
        "--once",
        "--json",
        "--yes",
        "--max-file-size",
        "1KiB",
    ];
    let run = fx.run_command(cmd, args.iter().map(Into::into).collect());
    run.expect_code(0);
    assert_content(&fx.a("ok.txt"), "ok\n");
    assert_absent(&fx.a("huge.bin"));
    assert!(run.problem_at("huge.bin"), "{run}");
    assert!(run.problem_at("local-big.bin"), "{run}");
    assert_eq!(c.read_file("/srv/app/local-big.bin"), None);
    assert_eq!(c.read_file("/srv/app/huge.bin"), Some(vec![b'h'; 4096]));
}

// --- --gitignore --------------------------------------------------------------------------

#[test]
fn gitignore_files_at_every_level_are_applied_as_git_does() {
    let fx = Fixture::new();
    write(&fx.a(".gitignore"), "*.log\nbuild/\n");
    write(&fx.a("app.log"), "log\n");
    write(&fx.a("build/out.o"), "obj\n");
    write(&fx.a("src/main.rs"), "fn main() {}\n");
    write(&fx.a("src/.gitignore"), "!keep.log\n/gen\n");
    write(&fx.a("src/keep.log"), "kept\n");
    write(&fx.a("src/other.log"), "other\n");
    write(&fx.a("src/gen/x.rs"), "generated\n");
    write(&fx.a("lib/gen/y.rs"), "not generated\n");
    let run = fx.once(&["--gitignore"]);
    run.expect_code(0);
    assert_content(&fx.b("src/main.rs"), "fn main() {}\n");
    assert_content(&fx.b("src/keep.log"), "kept\n");
    assert_content(&fx.b("lib/gen/y.rs"), "not generated\n");
    assert_content(&fx.b(".gitignore"), "*.log\nbuild/\n");
    for gone in ["app.log", "build", "src/other.log", "src/gen"] {
        assert_absent(&fx.b(gone));
    }
    // Without the flag they are ordinary files.
    fx.once(&[]).expect_code(0);
    assert_content(&fx.b("src/gen/x.rs"), "generated\n");
}

#[test]
fn gitignore_a_changed_gitignore_is_read_again_while_watching() {
    let fx = Fixture::new();
    write(&fx.a(".gitignore"), "*.tmp\n");
    write(&fx.a("a.tmp"), "tmp\n");
    write(&fx.a("sub/b.txt"), "b\n");
    let mut s = fx.watch(&["--gitignore"]);
    s.wait_until("sub/b.txt reaches beta", || exists(&fx.b("sub/b.txt")));
    assert_absent(&fx.b("a.tmp"));
    // A new nested .gitignore hides what it names from then on; the root's no longer hides
    // *.tmp once edited.
    write(&fx.a("sub/.gitignore"), "*.txt\n");
    write(&fx.a(".gitignore"), "# nothing\n");
    s.wait_until("a.tmp reaches beta", || exists(&fx.b("a.tmp")));
    s.wait_until("sub/.gitignore reaches beta", || {
        exists(&fx.b("sub/.gitignore"))
    });
    write(&fx.a("sub/c.txt"), "c\n");
    write(&fx.a("sub/d.md"), "d\n");
    s.wait_until("sub/d.md reaches beta", || exists(&fx.b("sub/d.md")));
    s.stop();
    assert_absent(&fx.b("sub/c.txt"));
    // Already synced before the rule, b.txt is now ignored on both sides: left alone.
    assert_content(&fx.b("sub/b.txt"), "b\n");
}
