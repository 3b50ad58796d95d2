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
}

impl Daemon {
    pub fn new() -> Daemon {
        let fx = Fixture::new();
        let runtime = fx.root.join("run");
        fs::create_dir(&runtime).expect("runtime dir");
        fs::set_permissions(&runtime, fs::Permissions::from_mode(0o700)).expect("chmod");
        Daemon { fx, runtime }
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
    d.ok(&["daemon", "stop"]);
    assert!(!d.socket().exists());
    let r = d.run(&["daemon", "status"]);
    assert_eq!(r.code(), 1, "{r}");
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
