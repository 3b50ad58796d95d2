//! `--on-change` hooks end to end: the real binary, real directories, a real container (busybox
//! and no-shell images) and a real sshd. A hook runs with `sh -c` in beta's root on beta's side
//! after a cycle that changed a matching path; its result is a `hook` event; it never stops the
//! session. Hooks here write their markers outside the synced trees (a hook writing inside
//! would be synced and trigger itself again).

use std::ffi::{OsStr, OsString};
use std::fs;

use serde_json::Value;

use crate::remote_support::*;
use crate::support::*;

/// `ferry sync ALPHA BETA --once --json EXTRA...` with the static agent (and `envs`).
fn once_remote(fx: &Fixture, beta: &str, envs: &[(&str, &OsStr)], extra: &[&str]) -> Run {
    let mut cmd = fx.command();
    cmd.env("FERRY_AGENT", static_agent());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut args: Vec<OsString> = vec![
        "sync".into(),
        fx.alpha.clone().into(),
        beta.into(),
        "--once".into(),
        "--json".into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    fx.run_command(cmd, args)
}

/// The one `hook` event of a run (its `hook_start` checked to come first, for the same command).
#[track_caller]
fn only_hook<'a>(run: &'a Run, command: &str) -> &'a Value {
    let starts = run.events("hook_start");
    let ends = run.events("hook");
    assert_eq!(starts.len(), 1, "expected one hook_start\n{run}");
    assert_eq!(ends.len(), 1, "expected one hook event\n{run}");
    assert_eq!(starts[0]["command"], command, "{run}");
    assert_eq!(ends[0]["command"], command, "{run}");
    let at = |e: &Value| run.events.iter().position(|x| x == e).unwrap_or(usize::MAX);
    assert!(at(starts[0]) < at(ends[0]), "hook before hook_start\n{run}");
    ends[0]
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

#[test]
fn local_hook_runs_after_an_edit_and_sees_beta_content() {
    let fx = Fixture::new();
    let log = fx.root.join("hook.log");
    write(&fx.a("note.txt"), "v1\n");
    let cmd = format!(
        "echo \"pwd=$(pwd)\"; cat note.txt; cat note.txt >> '{}'",
        log.display()
    );
    let mut s = fx.watch(&["--on-change", &cmd]);
    // The first cycle copied note.txt: the hook ran for it, in beta, seeing it there.
    let first = s.wait_event(0, "the first hook event", |e| is(e, "hook"));
    let out = text(&first["output"]);
    assert_eq!(
        out,
        format!("pwd={}\nv1\n", fx.beta.display()),
        "hook output: {first}"
    );
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(first["exit_code"], 0, "{first}");
    assert_eq!(first["trigger"], serde_json::json!(["note.txt"]), "{first}");
    assert_eq!(first["trigger_count"], 1, "{first}");
    assert_eq!(first["output_truncated"], false, "{first}");
    assert!(first["duration_ms"].is_number(), "{first}");

    let since = s.log.len();
    write(&fx.a("note.txt"), "v2\n");
    let second = s.wait_event(since, "the hook after the edit", |e| is(e, "hook"));
    assert_eq!(
        text(&second["output"]),
        format!("pwd={}\nv2\n", fx.beta.display()),
        "{second}"
    );
    assert_content(&fx.b("note.txt"), "v2\n");
    assert_content(&log, "v1\nv2\n");
    // Its start was told first, naming the command and what triggered it.
    let start = s.events_since(since, "hook_start");
    assert_eq!(start.len(), 1, "{:?}", s.log);
    assert_eq!(start[0]["command"], cmd.as_str());
    assert_eq!(start[0]["trigger"], serde_json::json!(["note.txt"]));
    s.stop();
}

#[test]
fn a_hook_with_paths_does_not_run_for_other_changes() {
    let fx = Fixture::new();
    let flags = ["--on-change", "echo ran", "--on-change-paths", "*.py"];
    write(&fx.a("readme.txt"), "text\n");
    let run = fx.once(&flags);
    run.expect_code(0);
    assert_content(&fx.b("readme.txt"), "text\n");
    assert!(
        run.events("hook_start").is_empty() && run.events("hook").is_empty(),
        "a .txt change ran a '*.py' hook\n{run}"
    );

    // A .py file anywhere (here in a new directory, changed as a whole) runs it.
    write(&fx.a("src/app/main.py"), "print(1)\n");
    write(&fx.a("src/app/data.txt"), "data\n");
    let run = fx.once(&flags);
    run.expect_code(0);
    let hook = only_hook(&run, "echo ran");
    assert_eq!(
        hook["trigger"],
        serde_json::json!(["src/app/main.py"]),
        "{run}"
    );
    assert_eq!(text(&hook["output"]), "ran\n");

    // A change on beta's side (either direction) runs it too; a second glob adds to the first.
    write(&fx.b("setup.cfg"), "[x]\n");
    let run = fx.once(&[
        "--on-change",
        "echo ran",
        "--on-change-paths",
        "*.py",
        "--on-change-paths",
        "*.cfg",
    ]);
    run.expect_code(0);
    assert_content(&fx.a("setup.cfg"), "[x]\n");
    let hook = only_hook(&run, "echo ran");
    assert_eq!(hook["trigger"], serde_json::json!(["setup.cfg"]), "{run}");
}

#[test]
fn several_hooks_each_run_once_in_order() {
    let fx = Fixture::new();
    write(&fx.a("a.c"), "int x;\n");
    let run = fx.once(&["--on-change", "echo first", "--on-change", "echo second"]);
    run.expect_code(0);
    let outs: Vec<&str> = run
        .events("hook")
        .iter()
        .map(|e| text(&e["output"]))
        .collect();
    assert_eq!(outs, ["first\n", "second\n"], "{run}");
    // Nothing changed: nothing runs.
    let run = fx.once(&["--on-change", "echo first", "--on-change", "echo second"]);
    run.expect_code(0);
    assert!(run.events("hook_start").is_empty(), "{run}");
}

#[test]
fn a_failing_hook_is_reported_and_syncing_goes_on() {
    let fx = Fixture::new();
    let cmd = "echo broken >&2; exit 7";
    write(&fx.a("one.txt"), "1\n");
    let mut s = fx.watch(&["--on-change", cmd]);
    let failed = s.wait_event(0, "the failed hook", |e| is(e, "hook"));
    assert_eq!(failed["ok"], false, "{failed}");
    assert_eq!(failed["exit_code"], 7, "{failed}");
    assert_eq!(text(&failed["output"]), "broken\n", "{failed}");

    // The session goes on: a later edit syncs, and the hook runs (and fails) again.
    let since = s.log.len();
    write(&fx.a("two.txt"), "2\n");
    s.wait_until("two.txt reaches beta", || {
        fs::read(fx.b("two.txt")).is_ok_and(|d| d == b"2\n")
    });
    let again = s.wait_event(since, "the hook for two.txt", |e| is(e, "hook"));
    assert_eq!(again["trigger"], serde_json::json!(["two.txt"]), "{again}");
    assert_eq!(again["exit_code"], 7, "{again}");
    assert!(s.events_since(0, "error").is_empty(), "{:?}", s.log);
    s.stop();

    // A person reads the output prefixed and one line saying it failed; the exit code is 0.
    write(&fx.a("three.txt"), "3\n");
    let run = fx.run([
        OsString::from("sync"),
        fx.alpha.clone().into(),
        fx.beta.clone().into(),
        "--once".into(),
        "--on-change".into(),
        cmd.into(),
    ]);
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("hook: running 'echo broken >&2; exit 7' (after three.txt)\n"),
        "{run}"
    );
    assert!(run.stdout.contains("hook: broken\n"), "{run}");
    assert!(
        run.stderr
            .contains("hook: 'echo broken >&2; exit 7' failed (exit code 7); still syncing\n"),
        "{run}"
    );
}

#[test]
fn changes_during_a_hook_run_sync_and_run_it_once_more() {
    let fx = Fixture::new();
    let gate = fx.root.join("gate");
    // The hook waits for the gate: the test decides when the first run ends.
    let cmd = format!(
        "while [ ! -e '{}' ]; do sleep 0.02; done; cat note.txt",
        gate.display()
    );
    write(&fx.a("note.txt"), "v1\n");
    let mut s = fx.watch(&["--on-change", &cmd]);
    s.wait_event(0, "the first hook_start", |e| is(e, "hook_start"));
    // While it runs, edits still sync.
    write(&fx.a("note.txt"), "v2\n");
    s.wait_until("v2 reaches beta while the hook runs", || {
        fs::read(fx.b("note.txt")).is_ok_and(|d| d == b"v2\n")
    });
    write(&fx.a("other.txt"), "o\n");
    s.wait_until("other.txt reaches beta while the hook runs", || {
        exists(&fx.b("other.txt"))
    });
    assert!(
        s.events_since(0, "hook").is_empty(),
        "the first run ended before the gate opened: {:?}",
        s.log
    );
    assert_eq!(s.events_since(0, "hook_start").len(), 1, "{:?}", s.log);
    write(&gate, "");
    let first = s.wait_event(0, "the first run's end", |e| is(e, "hook"));
    assert_eq!(first["trigger"], serde_json::json!(["note.txt"]), "{first}");
    let at = s.log.iter().position(|e| e == &first).unwrap_or(0);
    let second = s.wait_event(at + 1, "one more run", |e| is(e, "hook"));
    assert_eq!(
        second["trigger"],
        serde_json::json!(["note.txt", "other.txt"]),
        "{second}"
    );
    assert_eq!(text(&second["output"]), "v2\n");
    s.stop();
    // One more run for everything that changed meanwhile, not one per change.
    assert_eq!(s.events_since(0, "hook_start").len(), 2, "{:?}", s.log);
}

#[test]
fn bad_hook_flags_are_usage_errors() {
    let fx = Fixture::new();
    let run = fx.once(&["--on-change-paths", "*.py"]);
    run.expect_code(2);
    assert_eq!(
        run.expect_one_stderr_line(),
        "ferry: --on-change-paths needs an --on-change command to apply to"
    );
    let run = fx.once(&["--on-change", "  "]);
    run.expect_code(2);
    assert_eq!(
        run.expect_one_stderr_line(),
        "ferry: --on-change: the command is empty"
    );
    let run = fx.once(&["--on-change", "make", "--on-change-paths", "[z-a]"]);
    run.expect_code(2);
    assert!(
        run.expect_one_stderr_line()
            .starts_with("ferry: --on-change-paths: bad ignore pattern '[z-a]'"),
        "{run}"
    );
}

#[test]
fn docker_hook_runs_inside_the_container() {
    let _serial = serial();
    let c = Container::start(busybox_image(), &[]);
    let fx = Fixture::new();
    let beta = format!("docker://{}/srv/app", c.name);
    write(&fx.a("seed.txt"), "seed\n");
    let cmd = "cat seed.txt > /tmp/hook-saw; echo \"in $(pwd) on $(hostname)\"";
    let run = once_remote(&fx, &beta, &[], &["--on-change", cmd]);
    run.expect_code(0);
    let hook = only_hook(&run, cmd);
    assert_eq!(hook["ok"], true, "{run}");
    let host = c.sh("hostname");
    assert_eq!(
        text(&hook["output"]),
        format!("in /srv/app on {}\n", host.trim()),
        "{run}"
    );
    // The marker is in the container, with what beta held after the sync.
    assert_eq!(
        c.read_file("/tmp/hook-saw").as_deref(),
        Some(&b"seed\n"[..]),
        "{run}"
    );

    // While watching: an edit in the container runs the hook there again, and one that fails
    // is reported and the session goes on.
    let cmd_args: Vec<OsString> = vec![
        "sync".into(),
        fx.alpha.clone().into(),
        beta.clone().into(),
        "--json".into(),
        "--on-change".into(),
        "cat seed.txt > /tmp/hook-saw; grep -q ok seed.txt".into(),
    ];
    let mut command = fx.command();
    command.env("FERRY_AGENT", static_agent());
    let mut s = Session::spawn(command, cmd_args);
    s.wait_event(0, "watching", |e| is(e, "watching"));
    let since = s.log.len();
    c.sh("echo 'not yet' > /srv/app/seed.txt");
    let failed = s.wait_event(since, "the failing hook", |e| is(e, "hook"));
    assert_eq!(failed["exit_code"], 1, "{failed}");
    assert_eq!(
        failed["trigger"],
        serde_json::json!(["seed.txt"]),
        "{failed}"
    );
    s.wait_until("the container's edit reaches the host", || {
        fs::read(fx.a("seed.txt")).is_ok_and(|d| d == b"not yet\n")
    });
    let since = s.log.len();
    write(&fx.a("seed.txt"), "ok now\n");
    let fine = s.wait_event(since, "the hook after the host's edit", |e| is(e, "hook"));
    assert_eq!(fine["ok"], true, "{fine}");
    assert_eq!(
        c.read_file("/tmp/hook-saw").as_deref(),
        Some(&b"ok now\n"[..])
    );
    s.stop();
}

#[test]
fn docker_hook_without_a_shell_is_reported() {
    let c = Container::start(noshell_image(), &[]);
    let fx = Fixture::new();
    let beta = format!("docker://{}/srv/app", c.name);
    write(&fx.a("hello.txt"), "hello\n");
    let run = once_remote(&fx, &beta, &[], &["--on-change", "make"]);
    run.expect_code(0);
    assert_eq!(
        c.cp_read_file("/srv/app/hello.txt").as_deref(),
        Some(&b"hello\n"[..])
    );
    let hook = only_hook(&run, "make");
    assert_eq!(hook["ok"], false, "{run}");
    assert_eq!(
        text(&hook["error"]),
        "cannot run the hook: no shell here (neither /bin/sh nor sh on PATH)",
        "{run}"
    );
}

#[test]
fn ssh_hook_runs_on_the_host() {
    let sshd = Sshd::start();
    let ssh = OsString::from(sshd.ssh_command());
    let fx = Fixture::new();
    let url = format!("{}:hooked", Sshd::HOST);
    let remote = sshd.home().join("hooked");
    let marker = sshd.home().join("hook-saw");
    write(&fx.a("src/main.c"), "int main;\n");
    let cmd = format!(
        "cat src/main.c > '{}'; echo \"$(id -u) $(pwd)\"",
        marker.display()
    );
    let run = once_remote(
        &fx,
        &url,
        &[("FERRY_SSH_COMMAND", &ssh)],
        &["--on-change", &cmd, "--on-change-paths", "*.c"],
    );
    run.expect_code(0);
    assert_content(&remote.join("src/main.c"), "int main;\n");
    let hook = only_hook(&run, &cmd);
    assert_eq!(hook["ok"], true, "{run}");
    let remote = remote.canonicalize().expect("the remote root exists");
    assert_eq!(
        text(&hook["output"]),
        format!("{} {}\n", sshd.uid(), remote.display()),
        "{run}"
    );
    assert_content(&marker, "int main;\n");
}

#[test]
fn docker_restart_during_a_hook_is_reported_and_the_session_goes_on() {
    let _serial = serial();
    let c = Container::start(busybox_image(), &[]);
    let fx = Fixture::new();
    let beta = format!("docker://{}/srv/app", c.name);
    write(&fx.a("one.txt"), "1\n");
    // Slow until /tmp/fast exists in the container (the restart keeps its filesystem).
    let cmd = "[ -e /tmp/fast ] || sleep 600; cat one.txt";
    let mut command = fx.command();
    command.env("FERRY_AGENT", static_agent());
    let args: Vec<OsString> = vec![
        "sync".into(),
        fx.alpha.clone().into(),
        beta.clone().into(),
        "--json".into(),
        "--on-change".into(),
        cmd.into(),
    ];
    let mut s = Session::spawn(command, args);
    s.wait_event(0, "the first hook_start", |e| is(e, "hook_start"));
    let since = s.log.len();
    c.restart();
    let lost = s.wait_event(since, "the hook cut short", |e| is(e, "hook"));
    assert_eq!(lost["ok"], false, "{lost}");
    assert!(
        text(&lost["error"]).starts_with("the connection to the agent was lost while the hook ran"),
        "{lost}"
    );
    s.wait_event(since, "reconnected", |e| is(e, "reconnected"));
    c.sh("touch /tmp/fast");
    // The session goes on: an edit syncs and runs the hook, which ends this time.
    let since = s.log.len();
    write(&fx.a("one.txt"), "2\n");
    s.wait_until("the edit reaches the container", || {
        c.read_file("/srv/app/one.txt").as_deref() == Some(&b"2\n"[..])
    });
    let fine = s.wait_event(since, "the hook after the edit", |e| {
        is(e, "hook") && e["ok"] == true
    });
    assert_eq!(text(&fine["output"]), "2\n", "{fine}");
    s.stop();
}
