//! Background sessions: the daemon's lifecycle (start on demand, stale socket, one daemon per
//! user, another user refused, kill -9 and resume, version check) and the session commands.
//!
//! Every test has its own `XDG_RUNTIME_DIR` (so its own daemon) and `XDG_STATE_HOME`, and
//! stops its daemon at the end (`Daemon`'s drop).

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{DEADLINE, Fixture, Run, ferry_bin};

/// A fixture with a private runtime directory; its daemon is stopped when dropped.
pub struct Daemon {
    pub fx: Fixture,
    pub runtime: PathBuf,
    /// Set for every ferry (and so the daemon it starts): the static agent for containers.
    agent: Option<PathBuf>,
}

impl Daemon {
    pub fn new() -> Daemon {
        let fx = Fixture::new();
        let runtime = fx.root.join("run");
        fs::create_dir(&runtime).expect("runtime dir");
        fs::set_permissions(&runtime, fs::Permissions::from_mode(0o700)).expect("chmod");
        Daemon {
            fx,
            runtime,
            agent: None,
        }
    }

    /// A daemon whose sessions can reach containers (the static agent built if needed).
    pub fn with_agent() -> Daemon {
        let mut d = Daemon::new();
        d.agent = Some(crate::remote_support::static_agent());
        d
    }

    fn socket(&self) -> PathBuf {
        self.runtime.join("ferry/daemon.sock")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.fx.state.join("ferry/daemon/daemon.log")).unwrap_or_default()
    }

    pub fn command(&self) -> Command {
        let mut c = self.fx.command();
        c.env("XDG_RUNTIME_DIR", &self.runtime);
        if let Some(a) = &self.agent {
            c.env("FERRY_AGENT", a);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        self.fx.run_command(self.command(), args)
    }

    pub fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(r.code(), 0, "{r}\n--- daemon log ---\n{}", self.log());
        r
    }

    /// `ferry list --json`'s sessions.
    fn list(&self) -> Vec<Value> {
        let r = self.ok(&["list", "--json"]);
        r.events[0]["sessions"]
            .as_array()
            .expect("sessions array")
            .clone()
    }

    pub fn session(&self, name: &str) -> Value {
        self.list()
            .into_iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no session {name} in ferry list"))
    }

    fn pid(&self) -> i32 {
        let r = self.ok(&["daemon", "status", "--json"]);
        r.events[0]["pid"].as_i64().expect("pid") as i32
    }

    fn create(&self, name: &str) {
        let a = self.fx.alpha.to_str().expect("utf-8");
        let b = self.fx.beta.to_str().expect("utf-8");
        self.ok(&["create", a, b, "--name", name]);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.command().args(["daemon", "stop"]).output();
    }
}

/// Waits (polling, with a deadline) until the daemon that held `lock` is gone: its lock can
/// be taken (the process's files are closed only when its last thread is gone).
fn wait_gone(lock: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let deadline = Instant::now() + DEADLINE;
    let f = fs::File::open(lock).expect("lock file");
    loop {
        // SAFETY: flock on a descriptor this test owns.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the killed daemon did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn daemon_starts_on_demand_and_runs_a_session_through_its_commands() {
    let d = Daemon::new();
    fs::write(d.fx.a("first.txt"), "one").expect("write");
    assert!(!d.socket().exists());
    d.create("web");
    // Started on demand: the socket is private.
    let mode = fs::metadata(d.socket())
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let dir_mode = fs::metadata(d.runtime.join("ferry"))
        .expect("dir")
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);

    d.ok(&["flush", "web"]);
    assert_eq!(
        fs::read_to_string(d.fx.b("first.txt")).expect("synced"),
        "one"
    );
    let s = d.session("web");
    assert_eq!(s["alpha"], d.fx.alpha.to_str().expect("utf-8"));
    assert_eq!(s["state"], "watching", "{s}");
    assert!(s["files_to_beta"].as_u64() >= Some(1), "{s}");
    assert!(s["last_sync_to_beta"].is_u64(), "{s}");
    assert!(s["last_sync_to_alpha"].is_null(), "{s}");
    assert_eq!(s["conflicts"], 0);

    // The human table names the session and its state.
    let table = d.ok(&["list"]).stdout;
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("web ") && l.contains("watching")),
        "{table}"
    );

    // The pair is the daemon's now: a foreground ferry is refused.
    let a = d.fx.alpha.to_str().expect("utf-8");
    let b = d.fx.beta.to_str().expect("utf-8");
    let fg = d.run(&["sync", a, b, "--once"]);
    assert_eq!(fg.code(), 1, "{fg}");

    // Paused: a change is not synced (and a flush is refused).
    let r = d.ok(&["pause", "web", "--json"]);
    assert_eq!(r.events[0]["sessions"][0]["state"], "paused");
    fs::write(d.fx.a("second.txt"), "two").expect("write");
    let flush = d.run(&["flush", "web"]);
    assert_eq!(flush.code(), 2, "{flush}");
    assert!(flush.stderr.contains("paused"), "{flush}");
    assert_eq!(d.session("web")["state"], "paused");
    assert!(!d.fx.b("second.txt").exists(), "synced while paused");

    // Resumed: it is.
    d.ok(&["resume", "web"]);
    d.ok(&["flush", "web"]);
    assert_eq!(
        fs::read_to_string(d.fx.b("second.txt")).expect("synced"),
        "two"
    );

    // Terminated: gone from the list, the pair free again.
    d.ok(&["terminate", "web"]);
    assert!(d.list().is_empty());
    d.run(&["sync", a, b, "--once"]).expect_code(0);
}

#[test]
fn unknown_session_and_duplicate_name_are_usage_errors() {
    let d = Daemon::new();
    let r = d.run(&["pause", "nope"]);
    assert_eq!(r.code(), 2, "{r}");
    assert_eq!(
        r.expect_one_stderr_line(),
        "ferry: no session named 'nope' (see 'ferry list')"
    );
    d.create("web");
    let a = d.fx.alpha.to_str().expect("utf-8");
    let other = d.fx.root.join("other");
    let r = d.run(&["create", a, other.to_str().expect("utf-8"), "--name", "web"]);
    assert_eq!(r.code(), 2, "{r}");
    assert!(r.stderr.contains("exists already"), "{r}");
    let r = d.run(&["create", a, "x", "--name", "a/b"]);
    assert_eq!(r.code(), 2, "{r}");
}

#[test]
fn label_selector_picks_sessions() {
    let d = Daemon::new();
    let a = d.fx.alpha.to_str().expect("utf-8");
    let b = d.fx.beta.to_str().expect("utf-8");
    d.ok(&["create", a, b, "--name", "web", "--label", "team=api"]);
    let r = d.ok(&["pause", "--label-selector", "team=api", "--json"]);
    assert_eq!(r.events[0]["sessions"][0]["name"], "web");
    assert_eq!(d.session("web")["state"], "paused");
    let r = d.run(&["resume", "--label-selector", "team=other"]);
    assert_eq!(r.code(), 2, "{r}");
    // Every command that takes a NAME takes a selector too.
    let other = d.fx.root.join("other");
    fs::create_dir(&other).expect("mkdir");
    let o = other.to_str().expect("utf-8");
    d.ok(&["create", a, o, "--name", "cli", "--label", "team=tools"]);
    let r = d.ok(&["status", "--label-selector", "team=api", "--json"]);
    let names: Vec<&str> = r.events[0]["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["web"], "{r}");
    let r = d.ok(&["conflicts", "--label-selector", "team=tools", "--json"]);
    assert_eq!(r.events[0]["sessions"][0]["name"], "cli", "{r}");
    assert_eq!(
        r.events[0]["sessions"][0]["conflicts"],
        serde_json::json!([])
    );
    let r = d.ok(&[
        "resolve",
        "--label-selector",
        "team=tools",
        "--all",
        "--keep",
        "alpha",
        "--json",
    ]);
    assert_eq!(r.events[0]["resolved"], serde_json::json!([]), "{r}");
    let r = d.run(&["status", "--label-selector", "team=nobody"]);
    assert_eq!(r.code(), 2, "{r}");
    let r = d.run(&["resolve", "--label-selector", "team=api", "--keep", "alpha"]);
    assert_eq!(r.code(), 2, "{r}");
    assert!(r.stderr.contains("--label-selector"), "{r}");
}

#[test]
fn stale_socket_is_replaced() {
    let d = Daemon::new();
    let dir = d.runtime.join("ferry");
    fs::create_dir(&dir).expect("dir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");
    // A socket file nobody listens on (a daemon that died).
    drop(UnixListener::bind(d.socket()).expect("bind"));
    assert!(UnixStream::connect(d.socket()).is_err());
    d.ok(&["daemon", "start"]);
    assert!(UnixStream::connect(d.socket()).is_ok());
    assert!(d.log().contains("removed a stale socket"), "{}", d.log());
}

#[test]
fn second_daemon_is_refused() {
    let d = Daemon::new();
    d.ok(&["daemon", "start"]);
    let pid = d.pid();
    let r = d.run(&["daemon", "run"]);
    assert_eq!(r.code(), 1, "{r}");
    assert!(
        r.expect_one_stderr_line().contains("already running"),
        "{r}"
    );
    // The first one still serves, on the same socket.
    assert_eq!(d.pid(), pid);
    // `start` on a running daemon is a no-op.
    d.ok(&["daemon", "start"]);
    assert_eq!(d.pid(), pid);
}

/// Run as `nobody` through `setpriv`, with the socket's modes loosened: the peer uid check
/// alone refuses it.
#[test]
fn another_user_is_refused() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        panic!("this test needs root (to run a client as nobody)");
    }
    let d = Daemon::new();
    d.ok(&["daemon", "start"]);
    for p in [
        &d.fx.root,
        &d.runtime,
        &d.runtime.join("ferry"),
        &d.fx.state,
        &d.fx.home,
    ] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o777)).expect("chmod");
    }
    fs::set_permissions(d.socket(), fs::Permissions::from_mode(0o777)).expect("chmod");
    let mut c = d.command();
    let env: Vec<(OsString, OsString)> = c
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned())))
        .collect();
    c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        ferry_bin(),
    ])
    .envs(env)
    .current_dir("/");
    let r = d.fx.run_command(c, vec!["list".into()]);
    assert_eq!(r.code(), 1, "{r}");
    assert_eq!(
        r.expect_one_stderr_line(),
        "ferry: refused: this ferry daemon serves uid 0 only, not uid 65534 (each user runs their own)"
    );
}

#[test]
fn daemon_killed_with_kill_9_resumes_its_sessions() {
    let d = Daemon::new();
    fs::write(d.fx.a("before.txt"), "1").expect("write");
    d.create("web");
    d.ok(&["flush", "web"]);
    assert!(d.fx.b("before.txt").exists());
    let pid = d.pid();
    // SAFETY: kill on a pid this test's daemon reported.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    wait_gone(&d.runtime.join("ferry/daemon.lock"));
    // Changed while no daemon runs.
    fs::write(d.fx.a("during.txt"), "2").expect("write");
    // The next command starts a new daemon (stale socket, lock free) with the session.
    d.ok(&["flush", "web"]);
    assert_ne!(d.pid(), pid);
    assert_eq!(
        fs::read_to_string(d.fx.b("during.txt")).expect("synced"),
        "2"
    );
    assert_eq!(d.session("web")["state"], "watching");
}

#[test]
fn a_clean_stop_keeps_sessions_for_the_next_start() {
    let d = Daemon::new();
    d.create("web");
    let r = d.ok(&["daemon", "stop", "--json"]);
    assert_eq!(r.events[0]["stopped"], true, "{r}");
    assert!(!d.socket().exists());
    let r = d.run(&["daemon", "status"]);
    assert_eq!(r.code(), 1, "{r}");
    let r = d.ok(&["daemon", "stop", "--json"]);
    assert_eq!(r.events[0]["stopped"], false, "{r}");
    let r = d.ok(&["daemon", "start", "--json"]);
    assert_eq!(r.events[0]["running"], true, "{r}");
    assert!(r.events[0]["pid"].as_u64().is_some_and(|p| p > 0), "{r}");
    fs::write(d.fx.a("later.txt"), "3").expect("write");
    d.ok(&["flush", "web"]);
    assert!(d.fx.b("later.txt").exists());
}

/// A client of another version is refused with the restart hint (spoken to raw).
#[test]
fn version_mismatch_is_refused_with_a_hint() {
    let d = Daemon::new();
    d.ok(&["daemon", "start"]);
    let mut s = UnixStream::connect(d.socket()).expect("connect");
    writeln!(s, r#"{{"version": "0.0.0-other", "op": "list"}}"#).expect("write");
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).expect("read");
    let v: Value = serde_json::from_str(&line).expect("json");
    assert_eq!(v["ok"], false, "{v}");
    let e = v["error"].as_str().expect("error");
    assert!(
        e.contains("0.0.0-other") && e.contains("ferry daemon stop"),
        "{e}"
    );
}

/// Two clients at once with no daemon running: both start one, one daemon wins the lock and
/// serves both.
#[test]
fn two_clients_at_once_share_one_daemon() {
    let d = Daemon::new();
    let runs: Vec<Run> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| s.spawn(|| d.run(&["list", "--json"])))
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    for r in &runs {
        assert_eq!(r.code(), 0, "{r}\n--- daemon log ---\n{}", d.log());
        assert_eq!(r.events[0]["sessions"], serde_json::json!([]));
    }
    let pid = d.pid();
    d.create("web");
    assert_eq!(d.pid(), pid);
}

/// `ferry create` takes `ferry sync`'s options (one shared list), keeps them in the session's
/// spec and runs the session by them.
#[test]
fn create_takes_every_sync_option_and_runs_by_them() {
    let d = Daemon::new();
    fs::create_dir(d.fx.a(".git")).expect("mkdir");
    fs::write(d.fx.a(".git/HEAD"), "ref").expect("write");
    fs::write(d.fx.a("big.bin"), vec![7u8; 4000]).expect("write");
    fs::write(d.fx.a("skip.log"), "x").expect("write");
    fs::write(d.fx.a("small.txt"), "s").expect("write");
    let a = d.fx.alpha.to_str().expect("utf-8");
    let b = d.fx.beta.to_str().expect("utf-8");
    let r = d.ok(&[
        "create",
        a,
        b,
        "--name",
        "web",
        "--mode",
        "two-way-newest",
        "--ignore",
        "*.log",
        "--no-ignore-vcs",
        "--max-file-size",
        "1kB",
        "--permissions",
        "exec",
        "--keep-backups",
        "forever",
        "--rescan-interval",
        "0",
        "--json",
    ]);
    let o = &r.events[0]["options"];
    assert_eq!(o["mode"], "two-way-newest", "{}", r.events[0]);
    assert_eq!(o["ignores"], serde_json::json!(["*.log"]));
    assert_eq!(o["no_ignore_vcs"], true);
    assert_eq!(o["max_file_size"], "1kB");
    assert_eq!(o["permissions"], "exec");
    assert_eq!(o["keep_backups"], "forever");
    assert_eq!(o["rescan_interval"], 0);
    d.ok(&["flush", "web"]);
    assert!(d.fx.b("small.txt").exists());
    assert!(d.fx.b(".git/HEAD").exists(), "--no-ignore-vcs not applied");
    assert!(!d.fx.b("skip.log").exists(), "--ignore not applied");
    assert!(!d.fx.b("big.bin").exists(), "--max-file-size not applied");
    // Kept across a restart (read back from sessions.json).
    d.ok(&["daemon", "stop"]);
    assert_eq!(d.session("web")["options"], *o);

    // A bad option value is refused before the daemon hears of it.
    let r = d.run(&["create", a, b, "--name", "x", "--max-file-size", "huge"]);
    assert_eq!(r.code(), 2, "{r}");
    assert!(
        r.expect_one_stderr_line().contains("--max-file-size"),
        "{r}"
    );
    let r = d.run(&["create", a, b, "--name", "x", "--mode", "sideways"]);
    assert_eq!(r.code(), 2, "{r}");
}

/// A `sessions.json` written before the options existed (only mode, ignores, yes) still loads,
/// the missing options at their defaults.
#[test]
fn old_sessions_json_entries_still_load() {
    let d = Daemon::new();
    let dir = d.fx.state.join("ferry/daemon");
    fs::create_dir_all(&dir).expect("mkdir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");
    let old = serde_json::json!([{
        "name": "old",
        "alpha": d.fx.alpha.to_str().expect("utf-8"),
        "beta": d.fx.beta.to_str().expect("utf-8"),
        "mode": "two-way-resolved",
        "ignores": ["*.tmp"],
        "labels": {},
        "paused": false,
        "yes": false
    }]);
    fs::write(dir.join("sessions.json"), old.to_string()).expect("write");
    fs::write(d.fx.a("f.txt"), "f").expect("write");
    let s = d.session("old");
    assert_eq!(s["options"]["mode"], "two-way-resolved", "{s}");
    assert_eq!(s["options"]["ignores"], serde_json::json!(["*.tmp"]));
    assert_eq!(s["options"]["permissions"], "full");
    assert_eq!(s["options"]["debounce_ms"], 4);
    d.ok(&["flush", "old"]);
    assert!(d.fx.b("f.txt").exists());
}

/// A session whose beta is a container: `ferry status NAME` and `ferry list` show its stats,
/// `ferry conflicts NAME` its conflicts (what each side did, sizes, times), human and JSON.
#[test]
fn status_and_conflicts_of_a_container_session() {
    use crate::remote_support::{Container, busybox_image};
    let c = Container::start(busybox_image(), &[]);
    let d = Daemon::with_agent();
    fs::write(d.fx.a("both.txt"), "base").expect("write");
    fs::write(d.fx.a("keep.txt"), "k").expect("write");
    let a = d.fx.alpha.to_str().expect("utf-8");
    let beta = format!("docker://{}/srv/app", c.name);
    d.ok(&["create", a, &beta, "--name", "web"]);
    d.ok(&["flush", "web"]);
    assert_eq!(
        c.read_file("/srv/app/both.txt").as_deref(),
        Some(&b"base"[..])
    );

    let r = d.ok(&["status", "web", "--json"]);
    let s = &r.events[0];
    assert_eq!(s["name"], "web");
    assert_eq!(s["beta"], beta.as_str());
    assert_eq!(s["state"], "watching", "{s}");
    assert_eq!(s["tree"]["files"], 2, "{s}");
    assert_eq!(s["tree"]["bytes"], 5, "{s}");
    assert_eq!(s["last_hour"]["files_to_beta"], 2, "{s}");
    assert_eq!(s["last_hour"]["bytes_to_beta"], 5, "{s}");
    assert_eq!(s["last_hour"]["files_to_alpha"], 0, "{s}");
    assert!(s["last_sync_to_beta"].is_u64(), "{s}");
    assert_eq!(s["conflicts"], 0);
    let human = d.ok(&["status", "web"]).stdout;
    assert!(human.starts_with("web: watching"), "{human}");
    assert!(human.contains("tree       2 files, 5 B"), "{human}");
    assert!(human.contains("2 (5 B) to beta, 0 to alpha"), "{human}");
    let table = d.ok(&["list"]).stdout;
    assert!(
        table.contains("LAST HOUR") && table.contains("2 files, 5 B"),
        "{table}"
    );
    let r = d.run(&["status", "nope"]);
    assert_eq!(r.code(), 2, "{r}");

    // Both sides change both.txt while the session is paused: a conflict when it resumes.
    d.ok(&["pause", "web"]);
    fs::write(d.fx.a("both.txt"), "alpha's edit").expect("write");
    c.write_file("/srv/app/both.txt", "beta's");
    d.ok(&["resume", "web"]);
    let f = d.run(&["flush", "web"]);
    assert_eq!(f.code(), 3, "a flush leaving conflicts exits 3: {f}");
    let r = d.run(&["conflicts", "web", "--json"]);
    assert_eq!(r.code(), 3, "{r}");
    let v = &r.events[0];
    assert_eq!(v["name"], "web");
    let list = v["conflicts"].as_array().expect("conflicts");
    assert_eq!(list.len(), 1, "{v}");
    let x = &list[0];
    assert_eq!(x["path"], "both.txt");
    assert_eq!(x["alpha"]["change"], "modified");
    assert_eq!(x["alpha"]["kind"], "file");
    assert_eq!(x["alpha"]["size"], 12);
    assert_eq!(x["beta"]["change"], "modified");
    assert_eq!(x["beta"]["size"], 6);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    for side in ["alpha", "beta"] {
        let t = x[side]["mtime"].as_i64().expect("mtime");
        assert!((now - 3600..=now + 60).contains(&t), "{side} mtime {t}");
    }
    assert_eq!(d.session("web")["conflicts"], 1);
    let human = d.run(&["conflicts", "web"]);
    assert_eq!(human.code(), 3);
    assert!(human.stdout.contains("both.txt"), "{human}");
    assert!(
        human.stdout.contains("alpha  modified (file, 12 B"),
        "{human}"
    );
    assert!(
        human.stdout.contains("beta   modified (file, 6 B"),
        "{human}"
    );

    // Resolved by NAME, keeping alpha: beta gets alpha's version, beta's is in its backups.
    let r = d.run(&["resolve", "web", "both.txt", "--keep", "alpha", "--json"]);
    assert_eq!(r.code(), 0, "{r}\n{}", d.log());
    let v = &r.events[0];
    let done = v["resolved"].as_array().expect("resolved");
    assert_eq!(done.len(), 1, "{v}");
    assert_eq!(done[0]["path"], "both.txt");
    assert_eq!(done[0]["kept"], "alpha");
    let copy = done[0]["loser_copy"]
        .as_str()
        .expect("loser copy")
        .to_owned();
    assert_eq!(
        c.read_file("/srv/app/both.txt").as_deref(),
        Some(&b"alpha's edit"[..])
    );
    assert_eq!(
        c.read_file(&copy).as_deref(),
        Some(&b"beta's"[..]),
        "the loser's copy {copy} holds beta's version"
    );
    assert_eq!(v["conflicts"], 0);
    let r = d.ok(&["conflicts", "web", "--json"]);
    assert_eq!(r.events[0]["conflicts"], serde_json::json!([]));
    assert_eq!(d.session("web")["state"], "watching");

    // Another conflict, resolved with --all keeping beta (human output).
    d.ok(&["pause", "web"]);
    fs::write(d.fx.a("keep.txt"), "alpha 2").expect("write");
    c.write_file("/srv/app/keep.txt", "beta 2");
    d.ok(&["resume", "web"]);
    assert_eq!(d.run(&["flush", "web"]).code(), 3);
    let r = d.ok(&["resolve", "web", "--all", "--keep", "beta"]);
    assert!(
        r.stdout
            .contains("web: keep.txt: kept beta's version; alpha's version kept in "),
        "{r}"
    );
    assert_eq!(
        fs::read_to_string(d.fx.a("keep.txt")).expect("read"),
        "beta 2"
    );

    // Refusals: a path on neither side, no paths, an unknown session; the session lives on.
    let r = d.run(&["resolve", "web", "nope.txt", "--keep", "alpha"]);
    assert_eq!(r.code(), 2, "{r}");
    assert_eq!(
        r.expect_one_stderr_line(),
        "ferry: nothing at 'nope.txt' in alpha or beta; nothing was changed"
    );
    let r = d.run(&["resolve", "web", "--keep", "alpha"]);
    assert_eq!(r.code(), 2, "{r}");
    let r = d.run(&["resolve", "ghost", "x", "--keep", "alpha"]);
    assert_eq!(r.code(), 2, "{r}");
    assert_eq!(d.session("web")["state"], "watching");
}

/// The grammar: a first word with '/' or ':' is an endpoint, any other a session name; a
/// word that is neither is refused with the fix.
#[test]
fn resolve_tells_names_from_endpoints_by_the_first_word() {
    let d = Daemon::new();
    // "." has no '/': it is read as a name, which it cannot be.
    let r = d.run(&["resolve", ".", "beta", "x", "--keep", "alpha"]);
    assert_eq!(r.code(), 2, "{r}");
    assert!(r.expect_one_stderr_line().contains("write ./."), "{r}");
    // An endpoint alone is not enough.
    let r = d.run(&["resolve", "./alpha", "--all", "--keep", "alpha"]);
    assert_eq!(r.code(), 2, "{r}");
    assert!(r.expect_one_stderr_line().contains("give BETA"), "{r}");
    let r = d.run(&["resolve", "web", "a", "--all", "--keep", "alpha"]);
    assert_eq!(r.code(), 2, "{r}");
    // No daemon was needed for any of that.
    assert!(!d.socket().exists());
    let help = d.ok(&["resolve", "--help"]).stdout;
    assert!(
        help.contains("A first word containing '/' or ':' is ALPHA"),
        "{help}"
    );
}

/// `ferry flush NAME PATH...` runs a cycle restricted to those paths and says what it
/// changed each way; `--exclude` leaves matching paths for the next cycle. A long debounce
/// keeps the watchers' own cycle waiting: a flush goes first, so its report holds only what
/// it was asked to look at.
#[test]
fn flush_restricted_to_paths_and_excluding_patterns() {
    let d = Daemon::new();
    fs::create_dir(d.fx.a("src")).expect("mkdir");
    fs::write(d.fx.a("src/one.rs"), "1").expect("write");
    fs::write(d.fx.a("src/.env"), "secret").expect("write");
    fs::write(d.fx.a("other.txt"), "o").expect("write");
    fs::write(d.fx.b("from_beta.txt"), "b").expect("write");
    let a = d.fx.alpha.to_str().expect("utf-8");
    let b = d.fx.beta.to_str().expect("utf-8");
    d.ok(&[
        "create",
        a,
        b,
        "--name",
        "web",
        "--debounce-ms",
        "20000",
        "--yes",
    ]);
    let r = d.ok(&["flush", "web", "--json"]);
    assert_eq!(r.events[0]["conflicts"], 0, "{r}");
    assert!(d.fx.b("src/.env").exists() && d.fx.a("from_beta.txt").exists());

    fs::write(d.fx.a("src/one.rs"), "one, edited").expect("write");
    fs::write(d.fx.a("src/.env"), "secret 2").expect("write");
    fs::write(d.fx.a("other.txt"), "o, edited").expect("write");
    fs::write(d.fx.b("from_beta.txt"), "b, edited").expect("write");
    let r = d.ok(&[
        "flush",
        "web",
        "./src/",
        "from_beta.txt",
        "--exclude",
        ".env",
        "--json",
    ]);
    let v = &r.events[0];
    assert_eq!(v["name"], "web");
    assert_eq!(
        v["changed"],
        serde_json::json!({"alpha_to_beta": ["src/one.rs"], "beta_to_alpha": ["from_beta.txt"]}),
        "{v}"
    );
    assert_eq!(
        fs::read_to_string(d.fx.b("src/one.rs")).expect("read"),
        "one, edited"
    );
    assert_eq!(
        fs::read_to_string(d.fx.a("from_beta.txt")).expect("read"),
        "b, edited"
    );
    // A bad path is refused; the next full cycle syncs what was excluded.
    let r = d.run(&["flush", "web", "../up"]);
    assert_eq!(r.code(), 2, "{r}");
    let r = d.ok(&["flush", "web"]);
    assert!(r.stdout.starts_with("web: flushed ("), "{r}");
    assert_eq!(
        fs::read_to_string(d.fx.b("src/.env")).expect("read"),
        "secret 2"
    );
    assert_eq!(
        fs::read_to_string(d.fx.b("other.txt")).expect("read"),
        "o, edited"
    );
}

/// A running `ferry monitor` (stdout piped, so not a terminal): its lines as they come.
struct Monitor {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Monitor {
    fn start(d: &Daemon, args: &[&str]) -> Monitor {
        let mut c = d.command();
        c.arg("monitor")
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let mut child = c.spawn().expect("spawn ferry monitor");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Monitor { child, lines }
    }

    /// Reads lines until one satisfies `want` (failing after [`DEADLINE`] with what came).
    fn until(&self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if want(&l) => return l,
                Ok(l) => seen.push(l),
                Err(_) => panic!("ferry monitor never printed {what}; it printed:\n{seen:#?}"),
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ferry monitor --json` streams the daemon's events, each naming its session; `ferry
/// monitor NAME` prints one plain line per event of that session only.
#[test]
fn monitor_streams_state_cycles_and_conflicts() {
    let d = Daemon::new();
    d.ok(&["daemon", "start"]);
    let all = Monitor::start(&d, &["--json"]);
    fs::write(d.fx.a("a.txt"), "a").expect("write");
    d.create("web");
    let other = d.fx.root.join("other");
    let a = d.fx.alpha.to_str().expect("utf-8");
    // Subscribed before the session existed: its first state, then its cycles.
    let l = all.until("web's state", |l| {
        l.contains(r#""event":"state""#) && l.contains(r#""session":"web""#)
    });
    let v: Value = serde_json::from_str(&l).expect("json");
    assert!(v["state"].is_string(), "{v}");
    all.until("a cycle of web", |l| {
        l.contains(r#""event":"cycle""#) && l.contains(r#""session":"web""#)
    });

    let one = Monitor::start(&d, &["web"]);
    one.until("web's current state", |l| l == "web: watching");
    d.ok(&[
        "create",
        a,
        other.to_str().expect("utf-8"),
        "--name",
        "other",
    ]);
    d.ok(&["flush", "web"]);
    let l = one.until("a cycle line", |l| l.starts_with("web: cycle "));
    assert!(l.contains(" to beta, ") && l.ends_with(" errors"), "{l}");
    // A conflict is news.
    d.ok(&["pause", "web"]);
    one.until("paused", |l| l == "web: paused");
    fs::write(d.fx.a("a.txt"), "alpha's").expect("write");
    fs::write(d.fx.b("a.txt"), "beta's").expect("write");
    d.ok(&["resume", "web"]);
    one.until("the conflict", |l| l == "web: conflict at a.txt");
    d.ok(&["terminate", "web"]);
    one.until("the end", |l| l == "web: terminated");
    // Only web's lines reached the one watching web; both sessions reached the other.
    all.until("other's state", |l| l.contains(r#""session":"other""#));
    while let Ok(l) = one.lines.try_recv() {
        assert!(l.starts_with("web: "), "{l}");
    }
    let r = d.run(&["monitor", "ghost"]);
    assert_eq!(r.code(), 2, "{r}");
}

/// `resume`, `terminate` with `--json`; and a foreground `ferry resolve ALPHA BETA` of a pair
/// whose background session is paused resolves by that session's options (here
/// `--no-ignore-vcs`: with the defaults `.git` would be invisible and its conflict left).
#[test]
fn foreground_resolve_uses_a_paused_sessions_options() {
    let d = Daemon::new();
    fs::create_dir(d.fx.a(".git")).expect("mkdir");
    fs::write(d.fx.a(".git/config"), "base").expect("write");
    let a = d.fx.alpha.to_str().expect("utf-8");
    let b = d.fx.beta.to_str().expect("utf-8");
    d.ok(&["create", a, b, "--name", "web", "--no-ignore-vcs"]);
    d.ok(&["flush", "web"]);
    assert!(d.fx.b(".git/config").exists());
    d.ok(&["pause", "web"]);
    fs::write(d.fx.a(".git/config"), "alpha's").expect("write");
    fs::write(d.fx.b(".git/config"), "beta's").expect("write");
    let r = d.run(&["resolve", a, b, "--all", "--keep", "alpha"]);
    assert_eq!(r.code(), 0, "{r}");
    assert_eq!(
        fs::read_to_string(d.fx.b(".git/config")).expect("read"),
        "alpha's"
    );
    let r = d.ok(&["resume", "web", "--json"]);
    assert_eq!(r.events[0]["sessions"][0]["name"], "web");
    assert_ne!(r.events[0]["sessions"][0]["state"], "paused");
    let r = d.ok(&["flush", "web", "--json"]);
    assert_eq!(r.events[0]["conflicts"], 0, "{r}");
    let r = d.ok(&["terminate", "web", "--json"]);
    assert_eq!(r.events[0]["sessions"][0]["state"], "terminated");
}

/// On a terminal (a pty from util-linux's `script`), `ferry monitor` redraws the table:
/// clear-screen, then the `ferry list` header and the session's row.
#[test]
fn monitor_on_a_terminal_redraws_the_table() {
    let d = Daemon::new();
    d.create("web");
    d.ok(&["flush", "web"]);
    let mut c = d.command();
    let cmd = format!("{} monitor web", ferry_bin());
    let c = {
        let env: Vec<(OsString, OsString)> = c
            .get_envs()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned())))
            .collect();
        c = Command::new("script");
        c.args(["-qfec", &cmd, "/dev/null"]).envs(env);
        c
    };
    let mut m = {
        let mut c = c;
        c.stdout(std::process::Stdio::piped())
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let mut child = c.spawn().expect("spawn script (util-linux)");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Monitor { child, lines }
    };
    let head = m.until("the table's header after a clear-screen", |l| {
        l.contains("\x1b[2J") && l.contains("NAME")
    });
    assert!(
        head.contains("LAST HOUR") && head.contains("TREE"),
        "{head:?}"
    );
    m.until("web's row", |l| {
        l.starts_with("web ") && l.contains("watching")
    });
    let _ = m.child.kill();
}
