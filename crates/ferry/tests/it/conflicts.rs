//! Conflicts a person can act on (issue 9, item 17): the line says what each side did and the
//! command that resolves it; `ferry resolve` makes one side's version win (the other's kept in
//! the backup area); Ctrl-C of a watching session with open conflicts exits 3 and lists them.
//! And a stale copy as beta (item 6): a first sync that would merge into alpha asks first.

use std::ffi::OsString;
use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::support::*;

/// `ferry ARGS...` without `--json`.
fn human(fx: &Fixture, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Run {
    let args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_owned()).collect();
    fx.run(args)
}

/// Backup files (anywhere in the session's backup areas) under a `side` folder holding `data`.
fn backups_holding(fx: &Fixture, side: &str, data: &[u8]) -> Vec<std::path::PathBuf> {
    fx.backup_files()
        .into_iter()
        .filter(|p| p.components().any(|c| c.as_os_str() == side))
        .filter(|p| read(p) == data)
        .collect()
}

/// A pair synced once, then `c` edited differently on each side: one conflict at `c`.
fn one_conflict(fx: &Fixture, path: &str) {
    write(&fx.a(path), "agreed\n");
    write(&fx.a("other"), "same\n");
    fx.once(&[]).expect_code(0);
    write(&fx.a(path), "alpha's edit\n");
    write(&fx.b(path), "beta's longer edit\n");
}

#[test]
fn a_conflict_line_says_what_each_side_did_and_how_to_resolve_it() {
    let fx = Fixture::new();
    one_conflict(&fx, "src/app.js");
    let run = human(&fx, &[&"sync", &fx.alpha, &fx.beta, &"--once"]);
    run.expect_code(3);
    assert_eq!(
        run.stderr,
        format!(
            "conflict: src/app.js: alpha modified it (now 13 B), beta modified it (now 19 B); \
             neither side touched. To keep one: ferry resolve {} {} src/app.js --keep alpha (or \
             --keep beta)\n",
            fx.alpha.display(),
            fx.beta.display()
        ),
        "{run}"
    );
    // A name the shell would split is quoted; --json carries the command too.
    write(&fx.a("my notes.txt"), "a");
    write(&fx.b("my notes.txt"), "bb");
    let run = fx.once(&[]);
    run.expect_code(3);
    let c = run
        .events("conflict")
        .into_iter()
        .find(|e| e["path"] == "my notes.txt")
        .cloned()
        .unwrap_or_else(|| panic!("no conflict at 'my notes.txt'\n{run}"));
    assert_eq!(c["alpha"], "created a file (1 B)", "{run}");
    assert_eq!(c["beta"], "created a file (2 B)", "{run}");
    assert_eq!(
        c["resolve"],
        format!(
            "ferry resolve {} {} 'my notes.txt' --keep alpha",
            fx.alpha.display(),
            fx.beta.display()
        ),
        "{run}"
    );
}

#[test]
fn resolve_keep_alpha_puts_betas_version_in_the_backup_area_and_the_next_sync_is_quiet() {
    let fx = Fixture::new();
    one_conflict(&fx, "src/app.js");
    write(&fx.b("unrelated"), "beta's own new file\n");
    let run = fx.run([
        OsString::from("resolve"),
        fx.alpha.clone().into(),
        fx.beta.clone().into(),
        "src/app.js".into(),
        "--keep".into(),
        "alpha".into(),
    ]);
    run.expect_code(0);
    assert_content(&fx.a("src/app.js"), "alpha's edit\n");
    assert_content(&fx.b("src/app.js"), "alpha's edit\n");
    assert_eq!(
        backups_holding(&fx, "beta", b"beta's longer edit\n").len(),
        1,
        "beta's version is not in beta's backup area: {:?}\n{run}",
        fx.backup_files()
    );
    // Only the named path was acted on.
    assert!(!exists(&fx.a("unrelated")), "{run}");
    assert_eq!(
        run.stdout.lines().next(),
        Some("resolving src/app.js: keeping alpha's version"),
        "{run}"
    );
    remove(&fx.b("unrelated"));
    let next = fx.once(&[]);
    next.expect_code(0);
    assert_eq!(next.transferred(), (0, 0), "{next}");
    assert!(next.events("conflict").is_empty(), "{next}");
    fx.assert_synced();
}

#[test]
fn resolve_all_keep_beta_puts_alphas_versions_in_the_backup_area() {
    let fx = Fixture::new();
    one_conflict(&fx, "c");
    // A second conflict of another kind: a directory on alpha, a file on beta.
    write(&fx.a("d/inside"), "alpha's directory\n");
    write(&fx.b("d"), "beta's file\n");
    let run = fx.run([
        OsString::from("resolve"),
        fx.alpha.clone().into(),
        fx.beta.clone().into(),
        "--all".into(),
        "--keep".into(),
        "beta".into(),
        "--json".into(),
    ]);
    run.expect_code(0);
    let resolving = run.events("resolving");
    assert_eq!(resolving.len(), 1, "{run}");
    assert_eq!(
        resolving[0]["paths"],
        serde_json::json!(["c", "d"]),
        "{run}"
    );
    assert_content(&fx.a("c"), "beta's longer edit\n");
    assert_content(&fx.a("d"), "beta's file\n");
    fx.assert_synced();
    for data in ["alpha's edit\n", "alpha's directory\n"] {
        assert_eq!(
            backups_holding(&fx, "alpha", data.as_bytes()).len(),
            1,
            "alpha's {data:?} is not in alpha's backup area: {:?}\n{run}",
            fx.backup_files()
        );
    }
    let next = fx.once(&[]);
    next.expect_code(0);
    assert_eq!(next.transferred(), (0, 0), "{next}");
    // Nothing left: --all says so.
    let again = human(
        &fx,
        &[
            &"resolve", &fx.alpha, &fx.beta, &"--all", &"--keep", &"alpha",
        ],
    );
    again.expect_code(0);
    assert_eq!(again.stdout, "no conflicts to resolve\n", "{again}");
}

#[test]
fn resolve_refuses_a_path_on_neither_side_and_paths_outside_the_roots() {
    let fx = Fixture::new();
    one_conflict(&fx, "c");
    let run = human(
        &fx,
        &[
            &"resolve", &fx.alpha, &fx.beta, &"nope", &"--keep", &"alpha",
        ],
    );
    run.expect_code(2);
    assert_eq!(
        run.expect_one_stderr_line(),
        "ferry: nothing at 'nope' in alpha or beta; nothing was changed"
    );
    assert_content(&fx.b("c"), "beta's longer edit\n");
    let run = human(
        &fx,
        &[
            &"resolve", &fx.alpha, &fx.beta, &"../x", &"--keep", &"alpha",
        ],
    );
    run.expect_code(2);
    run.expect_one_stderr_line();
    // An absolute path inside a root is taken relative to it.
    let run = human(
        &fx,
        &[
            &"resolve",
            &fx.alpha,
            &fx.beta,
            &fx.b("c"),
            &"--keep",
            &"beta",
        ],
    );
    run.expect_code(0);
    assert_content(&fx.a("c"), "beta's longer edit\n");
}

#[test]
fn resolve_is_refused_while_the_session_runs() {
    let fx = Fixture::new();
    one_conflict(&fx, "c");
    let mut s = fx.watch(&[]);
    s.wait_event(0, "the conflict at c", |e| {
        is(e, "conflict") && e["path"] == "c"
    });
    // The other order names the same session.
    let run = human(
        &fx,
        &[&"resolve", &fx.beta, &fx.alpha, &"c", &"--keep", &"alpha"],
    );
    run.expect_code(1);
    let line = run.expect_one_stderr_line();
    assert!(
        line.starts_with("ferry: a ferry is syncing this pair right now (state ")
            && line.ends_with("); stop it (Ctrl-C lists its conflicts), then resolve"),
        "{run}"
    );
    assert_content(&fx.a("c"), "alpha's edit\n");
    assert_content(&fx.b("c"), "beta's longer edit\n");
    assert!(fx.backup_files().is_empty(), "{:?}", fx.backup_files());
}

#[test]
fn ctrl_c_with_open_conflicts_exits_3_and_lists_them() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let fx = Fixture::new();
        one_conflict(&fx, "c");
        let mut s = fx.watch(&[]);
        s.wait_event(0, "the conflict at c", |e| {
            is(e, "conflict") && e["path"] == "c"
        });
        let since = s.log.len();
        let st = s.signal_and_wait(sig);
        if st.code() != Some(3) {
            s.fail(&format!("signal {sig}: expected exit 3, got {st:?}"));
        }
        let listed = s.events_since(since, "conflict");
        if listed.len() != 1 || listed[0]["path"] != "c" {
            s.fail(&format!(
                "signal {sig}: the open conflict was not listed at the end"
            ));
        }
        let end = s.events_since(since, "session_end");
        if end.len() != 1 || end[0]["exit_code"] != 3 || end[0]["conflicts"] != 1 {
            s.fail(&format!(
                "signal {sig}: session_end does not say 3 / 1 conflict"
            ));
        }
    }
    // Without conflicts, a stop is still exit 0.
    let fx = Fixture::new();
    write(&fx.a("f"), "f");
    let mut s = fx.watch(&[]);
    s.stop();
}

// --- Item 6: a stale copy as beta --------------------------------------------------------------

/// alpha: a repository; beta: an old copy of it, holding a file alpha deleted since and
/// missing one alpha added.
fn stale_copy(fx: &Fixture) {
    write(&fx.a("README"), "readme\n");
    write(&fx.a("src/new.rs"), "new\n");
    write(&fx.b("README"), "readme\n");
    write(&fx.b("src/deleted.rs"), "deleted long ago\n");
}

#[test]
fn a_first_sync_into_a_stale_copy_is_refused_without_a_terminal_or_yes() {
    let fx = Fixture::new();
    stale_copy(&fx);
    let (a, b) = (tree(&fx.alpha), tree(&fx.beta));
    let run = human(&fx, &[&"sync", &fx.alpha, &fx.beta, &"--once"]);
    run.expect_code(2);
    assert_eq!(
        run.expect_one_stderr_line(),
        "ferry: first sync: would copy 1 file only beta has into alpha, 1 to beta; nothing was \
         changed: pass --yes to merge both ways, or --mode one-way-replica to make beta a copy \
         of alpha"
    );
    assert_eq!(diff_trees(&a, &tree(&fx.alpha)), None, "{run}");
    assert_eq!(diff_trees(&b, &tree(&fx.beta)), None, "{run}");
    // --json says what would go where, and refuses the same way.
    let run = fx.once(&[]);
    run.expect_code(2);
    let ev = run.events("first_sync");
    assert_eq!(ev.len(), 1, "{run}");
    assert_eq!(
        (&ev[0]["to_alpha"], &ev[0]["to_beta"], &ev[0]["conflicts"]),
        (&1.into(), &1.into(), &0.into()),
        "{run}"
    );
    assert_eq!(run.transferred(), (0, 0), "{run}");
    // So does a watching session.
    let run = human(&fx, &[&"sync", &fx.alpha, &fx.beta]);
    run.expect_code(2);
    run.expect_one_stderr_line();
    assert_eq!(diff_trees(&a, &tree(&fx.alpha)), None, "{run}");
}

#[test]
fn a_first_sync_into_a_stale_copy_proceeds_with_yes_or_one_way() {
    let fx = Fixture::new();
    stale_copy(&fx);
    let run = fx.once(&["--yes"]);
    run.expect_code(0);
    assert_content(&fx.a("src/deleted.rs"), "deleted long ago\n");
    fx.assert_converged(&[]);

    let fx = Fixture::new();
    stale_copy(&fx);
    let run = fx.once(&["--mode", "one-way-replica"]);
    run.expect_code(0);
    assert!(!exists(&fx.a("src/deleted.rs")), "{run}");
    fx.assert_synced();
    assert_eq!(
        backups_holding(&fx, "beta", b"deleted long ago\n").len(),
        1,
        "{:?}\n{run}",
        fx.backup_files()
    );
}

#[test]
fn a_first_sync_asks_nothing_when_a_side_is_empty_or_nothing_goes_to_alpha() {
    // alpha empty: filled from beta.
    let fx = Fixture::new();
    write(&fx.b("f"), "from beta");
    fx.once(&[]).expect_code(0);
    assert_content(&fx.a("f"), "from beta");
    // beta empty, or holding nothing alpha lacks (differences are conflicts, left alone).
    let fx = Fixture::new();
    write(&fx.a("f"), "alpha");
    write(&fx.a("g"), "g");
    write(&fx.b("g"), "other g");
    let run = fx.once(&[]);
    run.expect_code(3);
    assert!(run.events("first_sync").is_empty(), "{run}");
    assert_content(&fx.b("f"), "alpha");
}

/// Runs `ferry sync ALPHA BETA --once` on a terminal (through `script`), typing `answer`.
fn on_a_terminal(fx: &Fixture, answer: &str) -> (Option<i32>, String) {
    let cmd = format!(
        "{} sync {} {} --once",
        ferry_bin(),
        fx.alpha.display(),
        fx.beta.display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("XDG_STATE_HOME", &fx.state)
        .env("HOME", &fx.home)
        .current_dir(&fx.root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("this test needs util-linux's `script` for a terminal: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(answer.as_bytes())
        .expect("typing the answer");
    drop(stdin);
    let out = child.wait_with_output().expect("script");
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    (out.status.code(), text)
}

#[test]
fn a_first_sync_into_a_stale_copy_asks_on_a_terminal() {
    let fx = Fixture::new();
    stale_copy(&fx);
    let a = tree(&fx.alpha);
    let (code, out) = on_a_terminal(&fx, "n\n");
    let preview = format!(
        "first sync of {} and {}, which differ: 1 file would go to beta, 1 file only beta has \
         into alpha",
        fx.alpha.display(),
        fx.beta.display()
    );
    assert!(out.contains(&preview), "{out}");
    assert!(out.contains("merge both ways? [y/N] "), "{out}");
    assert_eq!(code, Some(2), "{out}");
    assert_eq!(diff_trees(&a, &tree(&fx.alpha)), None, "{out}");
    let (code, out) = on_a_terminal(&fx, "y\n");
    assert_eq!(code, Some(0), "{out}");
    assert_content(&fx.a("src/deleted.rs"), "deleted long ago\n");
    fx.assert_synced();
}

#[test]
fn resolve_works_on_a_container_and_the_conflict_line_names_it() {
    use crate::remote_support::{Container, busybox_image, static_agent};
    let c = Container::start(busybox_image(), &[]);
    let fx = Fixture::new();
    let beta = format!("docker://{}/srv/app", c.name);
    let run_with = |args: Vec<OsString>| {
        let mut cmd = fx.command();
        cmd.env("FERRY_AGENT", static_agent());
        fx.run_command(cmd, args)
    };
    let sync = || {
        run_with(vec![
            "sync".into(),
            fx.alpha.clone().into(),
            OsString::from(&beta),
            "--once".into(),
            "--json".into(),
        ])
    };
    write(&fx.a("c"), "agreed\n");
    sync().expect_code(0);
    write(&fx.a("c"), "alpha's edit\n");
    c.write_file("/srv/app/c", "beta's longer edit\n");
    let run = sync();
    run.expect_code(3);
    let conflicts = run.events("conflict");
    assert_eq!(conflicts.len(), 1, "{run}");
    let command = conflicts[0]["resolve"]
        .as_str()
        .unwrap_or_else(|| panic!("no resolve command\n{run}"))
        .to_owned();
    assert_eq!(
        command,
        format!("ferry resolve {} {beta} c --keep alpha", fx.alpha.display()),
        "{run}"
    );
    // The command as printed (its words need no quoting here), with --json to see the backup.
    let mut args: Vec<OsString> = command.split(' ').skip(1).map(OsString::from).collect();
    args.push("--json".into());
    let run = run_with(args);
    run.expect_code(0);
    assert_eq!(
        c.read_file("/srv/app/c").as_deref(),
        Some(&b"alpha's edit\n"[..]),
        "{run}"
    );
    let changes = run.changes_at("c");
    assert_eq!(changes.len(), 1, "{run}");
    let backup = changes[0]["backups"][0]["backup"]
        .as_str()
        .unwrap_or_else(|| panic!("no backup of beta's c\n{run}"));
    assert_eq!(
        c.read_file(backup).as_deref(),
        Some(&b"beta's longer edit\n"[..]),
        "{run}"
    );
    let next = sync();
    next.expect_code(0);
    assert_eq!(next.transferred(), (0, 0), "{next}");
}
