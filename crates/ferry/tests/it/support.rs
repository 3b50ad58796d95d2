//! Shared helpers: a per-test fixture (alpha, beta and a private state directory), running the
//! `ferry` binary once, a [`Session`] that runs `ferry sync --json` continuously and lets a test
//! wait for its events, and tree snapshots for byte-for-byte comparisons.
//!
//! Nothing here sleeps to synchronise: waits are for an event or for a condition polled between
//! events, always with a deadline and a failure message that shows what ferry said.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// How long any wait may take before the test fails. Generous: CI machines are slow, and a
/// passing test never waits this long.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// How often a polled condition is re-checked when no event arrives.
const POLL: Duration = Duration::from_millis(20);

/// The ferry under test: this build's, or `FERRY_TEST_BIN` (to show a regression test fails on
/// an older build).
pub fn ferry_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("FERRY_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ferry").to_owned())
    })
}

/// One test's world: `alpha/` and `beta/` (both created, empty) and a private
/// `XDG_STATE_HOME` and `HOME`, all in one temporary directory removed at the end.
pub struct Fixture {
    _tmp: TempDir,
    /// The temporary directory (canonical).
    pub root: PathBuf,
    pub alpha: PathBuf,
    pub beta: PathBuf,
    /// `XDG_STATE_HOME` for every ferry this fixture runs.
    pub state: PathBuf,
    pub home: PathBuf,
}

impl Fixture {
    pub fn new() -> Fixture {
        let tmp = tempfile::Builder::new()
            .prefix("ferry-it-")
            .tempdir()
            .expect("creating a temp dir");
        let root = tmp.path().canonicalize().expect("canonical temp dir");
        let alpha = root.join("alpha");
        let beta = root.join("beta");
        let state = root.join("state");
        let home = root.join("home");
        for d in [&alpha, &beta, &state, &home] {
            fs::create_dir(d).expect("creating fixture dirs");
        }
        Fixture {
            _tmp: tmp,
            root,
            alpha,
            beta,
            state,
            home,
        }
    }

    /// `alpha/<rel>`.
    pub fn a(&self, rel: &str) -> PathBuf {
        self.alpha.join(rel)
    }

    /// `beta/<rel>`.
    pub fn b(&self, rel: &str) -> PathBuf {
        self.beta.join(rel)
    }

    /// The ferry binary with this fixture's private environment.
    pub fn command(&self) -> Command {
        let mut c = Command::new(ferry_bin());
        c.env("XDG_STATE_HOME", &self.state)
            .env("HOME", &self.home)
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_CACHE_HOME")
            .env_remove("RUST_LOG")
            .current_dir(&self.root)
            .stdin(Stdio::null());
        c
    }

    /// Runs `ferry ARGS...` to completion (with a deadline).
    pub fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let json = args.iter().any(|a| a == "--json");
        let mut cmd = self.command();
        cmd.args(&args);
        Run::spawn(cmd, args, json)
    }

    /// Runs `cmd` (from [`Fixture::command`], perhaps changed) with `args` to completion.
    pub fn run_command(&self, mut cmd: Command, args: Vec<OsString>) -> Run {
        let json = args.iter().any(|a| a == "--json");
        cmd.args(&args);
        Run::spawn(cmd, args, json)
    }

    /// Hands the fixture's directories (roots, state, home) to `uid` (root only).
    pub fn chown_all(&self, uid: u32) {
        for p in [&self.root, &self.alpha, &self.beta, &self.state, &self.home] {
            chown_tree(p, uid);
        }
    }

    /// `ferry sync ALPHA BETA --once --json` run as the user `uid` (root only; see
    /// [`Fixture::chown_all`]).
    pub fn once_as(&self, uid: u32) -> Run {
        let mut cmd = self.command();
        std::os::unix::process::CommandExt::uid(&mut cmd, uid);
        std::os::unix::process::CommandExt::gid(&mut cmd, uid);
        self.run_command(cmd, self.once_args(&[]))
    }

    /// `ferry sync ALPHA BETA --once --json` with `envs` added to its environment.
    pub fn once_with_env(&self, envs: &[(&str, &OsStr)]) -> Run {
        let mut cmd = self.command();
        for (k, v) in envs {
            cmd.env(k, v);
        }
        self.run_command(cmd, self.once_args(&[]))
    }

    /// The arguments of `ferry sync ALPHA BETA --once --json EXTRA...`.
    pub fn once_args(&self, extra: &[&str]) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "sync".into(),
            self.alpha.clone().into(),
            self.beta.clone().into(),
            "--once".into(),
            "--json".into(),
        ];
        args.extend(extra.iter().map(OsString::from));
        args
    }

    /// `ferry sync ALPHA BETA --once --json EXTRA...`.
    pub fn once(&self, extra: &[&str]) -> Run {
        self.run(self.once_args(extra))
    }

    /// Starts `ferry sync ALPHA BETA --json EXTRA...` without waiting for anything.
    pub fn spawn(&self, extra: &[&str]) -> Session {
        let mut args: Vec<OsString> = vec![
            "sync".into(),
            self.alpha.clone().into(),
            self.beta.clone().into(),
            "--json".into(),
        ];
        args.extend(extra.iter().map(OsString::from));
        Session::spawn(self.command(), args)
    }

    /// Starts `ferry sync ALPHA BETA --json EXTRA...` and waits for its `watching` event.
    pub fn watch(&self, extra: &[&str]) -> Session {
        let mut s = self.spawn(extra);
        s.wait_event(0, "the `watching` event", |e| is(e, "watching"));
        s
    }

    /// Asserts alpha and beta hold exactly the same entries, contents and executable bits.
    pub fn assert_synced(&self) {
        assert_same_trees(&self.alpha, &self.beta);
    }

    /// Asserts the session is settled: alpha and beta are identical and one more `--once` run
    /// (a full scan against the saved archive) finds nothing to do.
    pub fn assert_converged(&self, extra: &[&str]) {
        self.assert_synced();
        let run = self.once(extra);
        run.expect_code(0);
        assert_eq!(
            run.transferred(),
            (0, 0),
            "a --once run after convergence still changed something:\n{run}"
        );
        self.assert_synced();
    }

    /// Asserts that every file of `before` (a tree of `side`'s root, "alpha" or "beta") is
    /// still there with the same content, or kept in that side's backup area: nothing was
    /// lost, whatever was deleted.
    pub fn assert_kept(&self, before: &Tree, side: &str) {
        let root = if side == "alpha" {
            &self.alpha
        } else {
            &self.beta
        };
        let kept: std::collections::HashSet<Vec<u8>> = self
            .backup_files()
            .iter()
            .filter(|p| p.to_string_lossy().contains(&format!("/backups/{side}/")))
            .filter_map(|p| fs::read(p).ok())
            .collect();
        for (path, node) in before {
            let Node::File { data, .. } = node else {
                continue;
            };
            let here = fs::read(root.join(path)).is_ok_and(|d| &d == data);
            assert!(
                here || kept.contains(data),
                "{side}/{path} is gone and no copy of it is in {side}'s backup area"
            );
        }
    }

    /// Every file under the state directory's backup areas.
    pub fn backup_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let sessions = self.state.join("ferry").join("sessions");
        walk_files(&sessions, &mut out);
        out.retain(|p| p.components().any(|c| c.as_os_str() == "backups"));
        out
    }
}

fn walk_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => walk_files(&p, out),
            Ok(_) => out.push(p),
            Err(_) => {}
        }
    }
}

/// True if `e` is the event named `name`.
pub fn is(e: &Value, name: &str) -> bool {
    e["event"] == name
}

/// A finished ferry run.
pub struct Run {
    pub args: Vec<OsString>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// The parsed stdout lines (with `--json`; empty otherwise).
    pub events: Vec<Value>,
}

impl Run {
    fn spawn(mut cmd: Command, args: Vec<OsString>, json: bool) -> Run {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning ferry");
        let mut out = child.stdout.take().expect("stdout");
        let mut err = child.stderr.take().expect("stderr");
        let t_out = thread::spawn(move || {
            let mut s = Vec::new();
            let _ = out.read_to_end(&mut s);
            s
        });
        let t_err = thread::spawn(move || {
            let mut s = Vec::new();
            let _ = err.read_to_end(&mut s);
            s
        });
        let status = wait_with_deadline(&mut child, Duration::from_secs(60))
            .unwrap_or_else(|| panic!("ferry {args:?} did not finish within 60 s; killed it"));
        let stdout = String::from_utf8_lossy(&t_out.join().expect("stdout reader")).into_owned();
        let stderr = String::from_utf8_lossy(&t_err.join().expect("stderr reader")).into_owned();
        let events = if json {
            stdout
                .lines()
                .map(|l| {
                    serde_json::from_str(l).unwrap_or_else(|e| {
                        panic!("--json printed a line that is not JSON ({e}): {l:?}\n{stdout}")
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        Run {
            args,
            status,
            stdout,
            stderr,
            events,
        }
    }

    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// Panics (showing everything ferry printed) unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(self.code(), code, "unexpected exit code\n{self}");
        self
    }

    /// Events named `name`.
    pub fn events(&self, name: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| is(e, name)).collect()
    }

    /// `change` events at exactly `path`.
    pub fn changes_at(&self, path: &str) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| is(e, "change") && e["path"] == path)
            .collect()
    }

    /// True if a `problem` event names `path` (on any side).
    pub fn problem_at(&self, path: &str) -> bool {
        self.events
            .iter()
            .any(|e| is(e, "problem") && e["path"] == path)
    }

    /// True if a `conflict` event names `path`.
    pub fn conflict_at(&self, path: &str) -> bool {
        self.events
            .iter()
            .any(|e| is(e, "conflict") && e["path"] == path)
    }

    /// (to_alpha, to_beta) summed over every `cycle_end`.
    pub fn transferred(&self) -> (u64, u64) {
        self.events("cycle_end").iter().fold((0, 0), |(a, b), e| {
            (
                a + e["to_alpha"].as_u64().unwrap_or(0),
                b + e["to_beta"].as_u64().unwrap_or(0),
            )
        })
    }

    /// Asserts stderr is exactly one non-empty line.
    pub fn expect_one_stderr_line(&self) -> &str {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert!(
            lines.len() == 1 && !lines[0].trim().is_empty(),
            "expected exactly one line on stderr\n{self}"
        );
        lines[0]
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "ferry {:?}", self.args)?;
        writeln!(f, "exit: {:?}", self.status)?;
        writeln!(f, "--- stdout ---")?;
        let lines: Vec<&str> = self.stdout.lines().collect();
        if lines.len() <= 80 {
            writeln!(f, "{}", truncate(&self.stdout, 8000))?;
        } else {
            // Long runs: plain `change` events would drown the rest; show at most 20 errors.
            let (mut changes, mut errors) = (0usize, 0usize);
            for l in &lines {
                if l.contains(r#""event":"change""#) && !l.contains("backups") {
                    changes += 1;
                } else if l.contains(r#""event":"error""#) {
                    errors += 1;
                    if errors <= 20 {
                        writeln!(f, "{}", truncate(l, 500))?;
                    }
                } else {
                    writeln!(f, "{}", truncate(l, 500))?;
                }
            }
            writeln!(
                f,
                "(not shown: {changes} `change` events without backups, {} `error` events)",
                errors.saturating_sub(20)
            )?;
        }
        write!(f, "--- stderr ---\n{}", truncate(&self.stderr, 4000))
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}\n... ({} more bytes)", &s[..cut], s.len() - cut)
}

/// Polls `child` until it exits or `limit` passes (then kills it and returns `None`).
pub fn wait_with_deadline(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(e) => panic!("waiting for ferry: {e}"),
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// What the stdout reader thread of a [`Session`] sends.
enum Line {
    Event(Value),
    NotJson(String),
    Eof,
}

/// A running `ferry sync --json`: its events are read on a thread, and the test waits for them.
pub struct Session {
    child: Child,
    args: Vec<OsString>,
    rx: Receiver<Line>,
    /// Every event seen so far, in order.
    pub log: Vec<Value>,
    stderr: Arc<Mutex<String>>,
    /// The thread reading stderr, joined once ferry has exited (see [`Session::stderr`]).
    stderr_reader: Mutex<Option<thread::JoinHandle<()>>>,
    eof: bool,
    status: Option<ExitStatus>,
}

impl Session {
    pub fn spawn(mut cmd: Command, args: Vec<OsString>) -> Session {
        let mut child = cmd
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning ferry");
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        let (tx, rx) = channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let msg = match serde_json::from_str(&line) {
                    Ok(v) => Line::Event(v),
                    Err(_) => Line::NotJson(line),
                };
                if tx.send(msg).is_err() {
                    return;
                }
            }
            let _ = tx.send(Line::Eof);
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_reader = {
            let stderr = stderr.clone();
            thread::spawn(move || {
                for line in BufReader::new(err).lines() {
                    let Ok(line) = line else { break };
                    let mut s = stderr.lock().unwrap_or_else(|e| e.into_inner());
                    s.push_str(&line);
                    s.push('\n');
                }
            })
        };
        Session {
            child,
            args,
            rx,
            log: Vec::new(),
            stderr,
            stderr_reader: Mutex::new(Some(stderr_reader)),
            eof: false,
            status: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Receives at most one event, waiting up to `timeout`. Returns true if one arrived.
    fn pump(&mut self, timeout: Duration) -> bool {
        if self.eof {
            thread::sleep(timeout.min(POLL));
            return false;
        }
        match self.rx.recv_timeout(timeout) {
            Ok(Line::Event(v)) => {
                self.log.push(v);
                true
            }
            Ok(Line::NotJson(l)) => panic!("--json printed a line that is not JSON: {l:?}"),
            Ok(Line::Eof) | Err(RecvTimeoutError::Disconnected) => {
                self.eof = true;
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
        }
    }

    /// Waits up to `timeout` for one event (for loops that interleave their own checks).
    pub fn poll_events(&mut self, timeout: Duration) {
        self.pump(timeout);
    }

    /// True once ferry has exited (it is not reaped otherwise).
    pub fn exited(&mut self) -> bool {
        self.child_exited()
    }

    /// SIGKILL, like `kill -9`: no chance to clean up.
    pub fn kill9(&mut self) {
        if !self.child_exited() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
        self.drain();
    }

    /// Takes every event already printed, without waiting.
    pub fn drain(&mut self) {
        while self.pump(Duration::ZERO) {}
    }

    /// Waits for the first event at index `since` or later that satisfies `pred`.
    pub fn wait_event(&mut self, since: usize, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + DEADLINE;
        let mut checked = since;
        loop {
            while checked < self.log.len() {
                if pred(&self.log[checked]) {
                    return self.log[checked].clone();
                }
                checked += 1;
            }
            let now = Instant::now();
            if now >= end {
                self.fail(&format!("timed out after {DEADLINE:?} waiting for {what}"));
            }
            if !self.pump(end - now) && self.eof {
                self.fail(&format!(
                    "ferry ended its output while we waited for {what}"
                ));
            }
        }
    }

    /// Waits until `cond` holds, re-checking it whenever ferry prints an event (and every few
    /// milliseconds in between, since the disk may settle after the last event).
    pub fn wait_until(&mut self, what: &str, mut cond: impl FnMut() -> bool) {
        let end = Instant::now() + DEADLINE;
        loop {
            if cond() {
                return;
            }
            if Instant::now() >= end {
                self.fail(&format!(
                    "timed out after {DEADLINE:?} waiting until {what}"
                ));
            }
            self.pump(POLL);
            if self.eof && self.child_exited() {
                if cond() {
                    return;
                }
                self.fail(&format!("ferry exited while we waited until {what}"));
            }
        }
    }

    /// Waits until alpha and beta of `fx` are identical.
    pub fn wait_synced(&mut self, fx: &Fixture, what: &str) {
        let mut last;
        let end = Instant::now() + DEADLINE;
        loop {
            match (try_tree(&fx.alpha), try_tree(&fx.beta)) {
                (Ok(a), Ok(b)) => match diff_trees(&a, &b) {
                    None => return,
                    Some(d) => last = d,
                },
                (Err(e), _) | (_, Err(e)) => last = format!("snapshot failed: {e}"),
            }
            if Instant::now() >= end {
                self.fail(&format!(
                    "timed out after {DEADLINE:?} waiting for alpha and beta to match ({what}); \
                     last difference:\n{last}"
                ));
            }
            self.pump(POLL);
            if self.eof && self.child_exited() {
                self.fail(&format!(
                    "ferry exited while we waited for alpha and beta to match ({what}); \
                     difference:\n{last}"
                ));
            }
        }
    }

    fn child_exited(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status.is_some()
    }

    /// Waits for ferry to exit on its own (reading its events meanwhile).
    pub fn wait_exit(&mut self, what: &str) -> ExitStatus {
        let end = Instant::now() + DEADLINE;
        loop {
            if self.child_exited() {
                while !self.eof && Instant::now() < end {
                    self.pump(POLL);
                }
                return self.status.expect("exited");
            }
            if Instant::now() >= end {
                self.fail(&format!("timed out after {DEADLINE:?} waiting for {what}"));
            }
            self.pump(POLL);
        }
    }

    /// Sends `sig` and waits for the process to exit; returns its status.
    pub fn signal_and_wait(&mut self, sig: i32) -> ExitStatus {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
        let end = Instant::now() + DEADLINE;
        loop {
            if self.child_exited() {
                // Collect what it printed on the way out.
                while !self.eof && Instant::now() < end {
                    self.pump(POLL);
                }
                return self.status.expect("exited");
            }
            if Instant::now() >= end {
                self.fail(&format!(
                    "ferry did not exit within {DEADLINE:?} of signal {sig}"
                ));
            }
            self.pump(POLL);
        }
    }

    /// Stops the session with SIGTERM and asserts it exits 0.
    pub fn stop(&mut self) {
        let st = self.signal_and_wait(libc::SIGTERM);
        if st.code() != Some(0) {
            self.fail(&format!("SIGTERM: expected exit 0, got {st:?}"));
        }
    }

    /// Events named `name` seen so far, from index `since`.
    pub fn events_since(&mut self, since: usize, name: &str) -> Vec<Value> {
        self.drain();
        self.log[since.min(self.log.len())..]
            .iter()
            .filter(|e| is(e, name))
            .cloned()
            .collect()
    }

    pub fn stderr(&self) -> String {
        // Once ferry has exited, everything it wrote is read before it is shown.
        if self.status.is_some() {
            let reader = self
                .stderr_reader
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(r) = reader {
                // Bounded: a process ferry started may hold the pipe open after it exits.
                let until = Instant::now() + Duration::from_secs(2);
                while !r.is_finished() && Instant::now() < until {
                    thread::sleep(Duration::from_millis(5));
                }
                if r.is_finished() {
                    let _ = r.join();
                }
            }
        }
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Panics with `msg`, the last events and stderr.
    pub fn fail(&mut self, msg: &str) -> ! {
        self.drain();
        let mut s = format!("{msg}\nferry {:?}\n--- last events ---\n", self.args);
        let from = self.log.len().saturating_sub(60);
        if from > 0 {
            let _ = writeln!(s, "({from} earlier events not shown)");
        }
        for e in &self.log[from..] {
            let _ = writeln!(s, "{e}");
        }
        let _ = write!(s, "--- stderr ---\n{}", truncate(&self.stderr(), 4000));
        panic!("{s}");
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One entry of a tree snapshot.
#[derive(Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File {
        data: Vec<u8>,
        exec: bool,
    },
    Link(PathBuf),
    /// A FIFO, socket or device.
    Special,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Node::Dir => write!(f, "dir"),
            Node::File { data, exec } => {
                let digest = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                    (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
                });
                write!(
                    f,
                    "file({} bytes, fnv {digest:016x}{})",
                    data.len(),
                    if *exec { ", executable" } else { "" }
                )?;
                if data.len() <= 40 {
                    write!(f, " {:?}", String::from_utf8_lossy(data))?;
                }
                Ok(())
            }
            Node::Link(t) => write!(f, "symlink -> {}", t.display()),
            Node::Special => write!(f, "special file"),
        }
    }
}

/// Relative path (lossy UTF-8, `/`-separated) -> entry, for every entry under a root.
pub type Tree = BTreeMap<String, Node>;

/// Snapshots everything under `root` (not following symlinks).
pub fn tree(root: &Path) -> Tree {
    try_tree(root).unwrap_or_else(|e| panic!("snapshot of {}: {e}", root.display()))
}

/// Like [`tree`], but an error (something vanished mid-walk) is returned, not a panic.
pub fn try_tree(root: &Path) -> io::Result<Tree> {
    let mut t = Tree::new();
    walk(root, "", &mut t)?;
    Ok(t)
}

fn walk(dir: &Path, prefix: &str, t: &mut Tree) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let p = e.path();
        let m = fs::symlink_metadata(&p)?;
        let ft = m.file_type();
        if ft.is_dir() {
            t.insert(rel.clone(), Node::Dir);
            walk(&p, &rel, t)?;
        } else if ft.is_symlink() {
            t.insert(rel, Node::Link(fs::read_link(&p)?));
        } else if ft.is_file() {
            let data = fs::read(&p)?;
            t.insert(
                rel,
                Node::File {
                    data,
                    exec: m.permissions().mode() & 0o100 != 0,
                },
            );
        } else {
            t.insert(rel, Node::Special);
        }
    }
    Ok(())
}

/// A readable description of how two trees differ, or `None` if they are equal.
pub fn diff_trees(a: &Tree, b: &Tree) -> Option<String> {
    let mut s = String::new();
    let mut n = 0;
    for (k, v) in a {
        match b.get(k) {
            None => {
                n += 1;
                if n <= 20 {
                    let _ = writeln!(s, "  only in alpha: {k} ({v:?})");
                }
            }
            Some(w) if w != v => {
                n += 1;
                if n <= 20 {
                    let _ = writeln!(s, "  differs: {k}: alpha {v:?}, beta {w:?}");
                }
            }
            Some(_) => {}
        }
    }
    for (k, w) in b {
        if !a.contains_key(k) {
            n += 1;
            if n <= 20 {
                let _ = writeln!(s, "  only in beta: {k} ({w:?})");
            }
        }
    }
    if n > 20 {
        let _ = writeln!(s, "  ... {} more differences", n - 20);
    }
    (n > 0).then_some(s)
}

/// Asserts the trees under `a` and `b` are identical.
pub fn assert_same_trees(a: &Path, b: &Path) {
    if let Some(d) = diff_trees(&tree(a), &tree(b)) {
        panic!("{} and {} differ:\n{d}", a.display(), b.display());
    }
}

/// The uid of `nobody` on Debian.
pub const NOBODY: u32 = 65534;

/// True when the tests run as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `chown -R uid:uid root` without following symlinks.
pub fn chown_tree(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
    if fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()) {
        for e in fs::read_dir(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())) {
            chown_tree(&e.expect("directory entry").path(), uid);
        }
    }
}

/// Writes `data` to `path`, creating parent directories.
pub fn write(path: &Path, data: impl AsRef<[u8]>) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap_or_else(|e| panic!("mkdir -p {}: {e}", p.display()));
    }
    fs::write(path, data).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Reads `path`, panicking with its name on error.
pub fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Asserts `path` holds exactly `data`.
#[track_caller]
pub fn assert_content(path: &Path, data: impl AsRef<[u8]>) {
    let want = data.as_ref();
    match fs::read(path) {
        Ok(got) => assert!(
            got == want,
            "{}: expected {:?}, found {:?}",
            path.display(),
            Node::File {
                data: want.to_vec(),
                exec: false
            },
            Node::File {
                data: got,
                exec: false
            }
        ),
        Err(e) => panic!("{}: expected a file ({e})", path.display()),
    }
}

/// Asserts nothing exists at `path` (not even a dangling symlink).
#[track_caller]
pub fn assert_absent(path: &Path) {
    if let Ok(m) = fs::symlink_metadata(path) {
        panic!(
            "{} should not exist, but is a {:?}",
            path.display(),
            m.file_type()
        );
    }
}

/// True if `path` exists (a dangling symlink counts).
pub fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

pub fn mkdir(path: &Path) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir -p {}: {e}", path.display()));
}

pub fn remove(path: &Path) {
    let m = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let r = if m.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    r.unwrap_or_else(|e| panic!("removing {}: {e}", path.display()));
}

pub fn rename(from: &Path, to: &Path) {
    fs::rename(from, to)
        .unwrap_or_else(|e| panic!("renaming {} to {}: {e}", from.display(), to.display()));
}

pub fn symlink(target: &str, link: &Path) {
    if let Some(p) = link.parent() {
        mkdir(p);
    }
    std::os::unix::fs::symlink(target, link)
        .unwrap_or_else(|e| panic!("symlink {} -> {target}: {e}", link.display()));
}

pub fn set_exec(path: &Path, exec: bool) {
    let mode = if exec { 0o755 } else { 0o644 };
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

pub fn is_exec(path: &Path) -> bool {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o100
        != 0
}

/// Deterministic pseudo-random bytes (xorshift), so big files differ everywhere.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Names ferry's own temporary files use; none may ever be left in a synced tree.
pub fn temp_like_entries(t: &Tree) -> Vec<String> {
    t.keys()
        .filter(|k| {
            k.split('/').any(|n| {
                n.starts_with(".in-")
                    || n.starts_with(".cp-")
                    || n.starts_with(".tmp-")
                    || n.starts_with(".ferry") && n != ".ferryignore"
            })
        })
        .cloned()
        .collect()
}

/// Taken by every test whose scenario depends on timing (a kill at a precise moment, a watch
/// session reacting to a wipe or a stream of edits, a CPU kept busy), across all modules, so
/// they do not disturb each other.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Compiles `source` into `<fixture>/shim/<name>.so` with `cc` and returns its path. A missing
/// compiler fails the test (it is not skipped).
pub fn build_shim(fx: &Fixture, name: &str, source: &str) -> PathBuf {
    let dir = shim_dir(fx);
    mkdir(&dir);
    let c = dir.join(format!("{name}.c"));
    let so = dir.join(format!("{name}.so"));
    write(&c, format!("{SHIM_PRELUDE}{source}"));
    let out = Command::new("cc")
        .arg("-shared")
        .arg("-fPIC")
        .arg("-o")
        .arg(&so)
        .arg(&c)
        .arg("-ldl")
        .output();
    match out {
        Err(e) => panic!(
            "this test builds an LD_PRELOAD shim at test time and needs a C compiler installed \
             as `cc` (gcc or clang): running `cc` failed: {e}"
        ),
        Ok(o) if !o.status.success() => panic!(
            "cc could not build the {name} shim ({}):\n{}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Ok(_) => so,
    }
}

/// What every shim gets first: `resolve(dirfd, path, out, n)` turns the (directory
/// descriptor, name) pairs ferry uses into the full path a shim matches on.
const SHIM_PRELUDE: &str = r#"#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static void resolve(int dirfd, const char *path, char *out, size_t n) {
    char dir[4096];
    if (!path) { snprintf(out, n, "%s", ""); return; }
    if (path[0] == '/') { snprintf(out, n, "%s", path); return; }
    if (dirfd == AT_FDCWD) {
        if (!getcwd(dir, sizeof dir)) { snprintf(out, n, "%s", path); return; }
    } else {
        char link[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
        ssize_t k = readlink(link, dir, sizeof dir - 1);
        if (k < 0) { snprintf(out, n, "%s", path); return; }
        dir[k] = 0;
    }
    snprintf(out, n, "%s/%s", dir, path);
}
"#;

/// Where the shims live (skipped when searching the fixture for a marker: their source holds it).
pub fn shim_dir(fx: &Fixture) -> PathBuf {
    fx.root.join("shim")
}

/// Regular files under `root` (0 if it does not exist), or `None` if the walk failed
/// (something vanished mid-walk).
pub fn count_files(root: &Path) -> Option<usize> {
    if !exists(root) {
        return Some(0);
    }
    try_tree(root).ok().map(|t| {
        t.values()
            .filter(|n| matches!(n, Node::File { .. }))
            .count()
    })
}

/// True if the file at `p` holds `needle`.
pub fn contains(p: &Path, needle: &[u8]) -> bool {
    fs::read(p).is_ok_and(|d| needle.is_empty() || d.windows(needle.len()).any(|w| w == needle))
}

/// Every regular file under `root` (not following links, leaving out `skip`) holding `needle`.
pub fn files_containing(root: &Path, skip: Option<&Path>, needle: &[u8]) -> Vec<PathBuf> {
    fn walk(dir: &Path, skip: Option<&Path>, needle: &[u8], out: &mut Vec<PathBuf>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if skip == Some(p.as_path()) {
                continue;
            }
            match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => walk(&p, skip, needle, out),
                Ok(m) if m.is_file() && contains(&p, needle) => out.push(p),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(root, skip, needle, &mut out);
    out
}
