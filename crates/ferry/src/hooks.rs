//! `--on-change` hooks: commands run with `sh -c` in beta's root, on beta's side, after a cycle
//! that changed a path they watch (issue 10 part 6, issue 11 part 4).
//!
//! Two halves. [`Hooks`] is the session's scheduler, owned by the engine: it learns which paths
//! each cycle changed ([`Hooks::note`]), and runs at most one hook at a time through the beta
//! endpoint ([`Hooks::step`]); changes arriving while a hook runs are synced as usual and queue
//! one more run of the hooks they match. [`spawn`] is the runner an endpoint uses on its own
//! machine (the local endpoint, and the agent for docker/ssh/k8s betas): `sh -c` in a thread,
//! stdout and stderr together, the last [`OUTPUT_MAX`] bytes kept.
//!
//! A hook never stops a session: whatever goes wrong (a non-zero exit, no shell, a lost
//! connection) is a `hook` event, and syncing goes on.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_core::{Entry, RelPath};
use serde::{Deserialize, Serialize};

use crate::endpoint::{Endpoint, WatchEvent};
use crate::engine::OnChange;
use crate::fs::ignore::{IgnoreError, IgnoreSpec, Ignorer};
use crate::output::{Event, Printer};

/// The most output kept of one run (its end: the last lines are the ones that explain a
/// failure).
pub const OUTPUT_MAX: usize = 64 * 1024;
/// Trigger paths named in an event (the count says how many there were).
const TRIGGER_NAMES: usize = 20;
/// Trigger paths remembered per pending hook (more are only counted).
const TRIGGER_KEPT: usize = 1000;
/// After the command exits, how long its output may still take to end (a command that left a
/// process in the background holding the output open is reported without waiting for it).
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecStatus {
    /// The shell exited with this code.
    Exited(i32),
    /// The shell was killed by this signal.
    Signaled(i32),
    /// It could not run (no shell, spawn failed, the connection to the agent was lost).
    Failed(String),
}

/// What came of one run: how it ended and the end of its output (stdout and stderr together).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResult {
    pub status: ExecStatus,
    pub output: Vec<u8>,
    /// Output was dropped before `output` (more than [`OUTPUT_MAX`] bytes).
    pub truncated: bool,
}

impl ExecResult {
    pub fn failed(message: impl Into<String>) -> ExecResult {
        ExecResult {
            status: ExecStatus::Failed(message.into()),
            output: Vec::new(),
            truncated: false,
        }
    }

    /// Holds a result from a peer to the same bounds as our own (it is shown to a person).
    pub fn bounded(mut self) -> ExecResult {
        if self.output.len() > OUTPUT_MAX {
            let cut = self.output.len() - OUTPUT_MAX;
            self.output.drain(..cut);
            self.truncated = true;
        }
        if let ExecStatus::Failed(m) = &mut self.status {
            if m.len() > 4096 {
                let mut cut = 4096;
                while !m.is_char_boundary(cut) {
                    cut -= 1;
                }
                m.truncate(cut);
            }
        }
        self
    }
}

/// Called once with the result of a run started by [`crate::endpoint::Endpoint::exec`].
pub type ExecDone = Box<dyn FnOnce(ExecResult) + Send>;

/// The shell that runs hooks: `/bin/sh`, else `sh` on `PATH`.
pub fn find_shell() -> Result<PathBuf, String> {
    let bin = Path::new("/bin/sh");
    if bin.is_file() {
        return Ok(bin.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("sh"))
        .find(|p| p.is_file())
        .ok_or_else(|| "cannot run the hook: no shell here (neither /bin/sh nor sh on PATH)".into())
}

/// Starts `sh -c command` in `cwd` on a thread of its own; `done` gets the result.
pub fn spawn(command: &str, cwd: &Path, done: ExecDone) -> std::io::Result<()> {
    let (command, cwd) = (command.to_owned(), cwd.to_path_buf());
    std::thread::Builder::new()
        .name("ferry-hook".into())
        .spawn(move || done(run(&command, &cwd)))
        .map(drop)
}

/// Runs `sh -c command` in `cwd` to its end (stdin empty, stdout and stderr collected together).
pub fn run(command: &str, cwd: &Path) -> ExecResult {
    let shell = match find_shell() {
        Ok(s) => s,
        Err(e) => return ExecResult::failed(e),
    };
    let (reader, writer) = match pipe() {
        Ok(p) => p,
        Err(e) => return ExecResult::failed(format!("cannot run the hook: {e}")),
    };
    let child = writer.try_clone().and_then(|w2| {
        let mut cmd = Command::new(&shell);
        cmd.arg("-c")
            .arg(command)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(w2)
            .stderr(writer);
        // The Command holds the pipe's write ends: dropped with it, so the reader sees the end.
        cmd.spawn()
    });
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return ExecResult::failed(format!(
                "cannot run the hook with {}: {e}",
                shell.display()
            ));
        }
    };
    let tail = Arc::new(Mutex::new(Tail::default()));
    let (ended_tx, ended_rx) = channel();
    let t2 = tail.clone();
    let _ = std::thread::Builder::new()
        .name("ferry-hook-output".into())
        .spawn(move || {
            let mut r = reader;
            let mut buf = [0u8; 16 * 1024];
            loop {
                match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if let Ok(mut t) = t2.lock() {
                            t.push(&buf[..n]);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = ended_tx.send(());
        });
    let status = child.wait();
    let _ = ended_rx.recv_timeout(OUTPUT_GRACE);
    let (output, truncated) = tail.lock().map(|mut t| t.take()).unwrap_or_default();
    use std::os::unix::process::ExitStatusExt;
    let status = match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => ExecStatus::Exited(c),
            (None, Some(sig)) => ExecStatus::Signaled(sig),
            (None, None) => ExecStatus::Failed("ended without a status".into()),
        },
        Err(e) => ExecStatus::Failed(format!("waiting for the hook: {e}")),
    };
    ExecResult {
        status,
        output,
        truncated,
    }
}

/// A pipe (both ends close-on-exec: the child gets its own copies as stdout and stderr).
fn pipe() -> std::io::Result<(std::fs::File, std::fs::File)> {
    use std::os::fd::FromRawFd;
    let mut fds: [libc::c_int; 2] = [-1; 2];
    // SAFETY: pipe2 writes two descriptors into the array, which outlives the call.
    #[cfg(target_os = "linux")]
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    // No pipe2 on macOS: pipe, then close-on-exec on each end (as Rust's std does there; a
    // child spawned by another thread in between could inherit them).
    // SAFETY: pipe writes two descriptors into the array; fcntl on descriptors just made.
    #[cfg(not(target_os = "linux"))]
    let rc = unsafe {
        let mut rc = libc::pipe(fds.as_mut_ptr());
        for fd in fds {
            if rc == 0 {
                rc = libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
        rc
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        for fd in fds.into_iter().filter(|&fd| fd >= 0) {
            // SAFETY: made above, owned by nobody else; closed once.
            drop(unsafe { std::fs::File::from_raw_fd(fd) });
        }
        return Err(e);
    }
    // SAFETY: both descriptors were just made and belong to nobody else.
    Ok(unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    })
}

/// The end of a stream: at most [`OUTPUT_MAX`] bytes.
#[derive(Default)]
struct Tail {
    buf: Vec<u8>,
    dropped: bool,
}

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        // Trimmed in big steps, not at every read.
        if self.buf.len() > 2 * OUTPUT_MAX {
            let cut = self.buf.len() - OUTPUT_MAX;
            self.buf.drain(..cut);
            self.dropped = true;
        }
    }

    fn take(&mut self) -> (Vec<u8>, bool) {
        let mut buf = std::mem::take(&mut self.buf);
        let mut dropped = self.dropped;
        if buf.len() > OUTPUT_MAX {
            buf.drain(..buf.len() - OUTPUT_MAX);
            dropped = true;
        }
        if dropped {
            // Start at a whole line.
            if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                buf.drain(..=nl);
            }
        }
        (buf, dropped)
    }
}

/// What started a run: changed paths (the first [`TRIGGER_KEPT`]) and how many there were.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trigger {
    pub paths: BTreeSet<String>,
    pub total: u64,
}

impl Trigger {
    fn add(&mut self, path: &str) {
        if self.paths.contains(path) {
            return;
        }
        self.total += 1;
        if self.paths.len() < TRIGGER_KEPT {
            self.paths.insert(path.to_owned());
        }
    }

    /// The paths an event names.
    fn named(&self) -> Vec<String> {
        self.paths.iter().take(TRIGGER_NAMES).cloned().collect()
    }
}

struct Hook {
    on: OnChange,
    /// `None`: every change matches.
    matcher: Option<Ignorer>,
}

impl Hook {
    fn matches(&self, path: &RelPath) -> bool {
        self.matcher
            .as_ref()
            .is_none_or(|m| m.is_ignored_or_below(path))
    }
}

/// A run in progress.
struct Running {
    /// Told apart from earlier runs (a result may come for a run already reported as failed).
    seq: u64,
    hook: usize,
    trigger: Trigger,
    started: Instant,
}

/// The session's hooks: which are due, which runs, and the results coming back.
pub struct Hooks {
    hooks: Vec<Hook>,
    /// Per hook: the changes it is due to run for.
    pending: Vec<Option<Trigger>>,
    running: Option<Running>,
    /// The hook that ran last (the next one due after it goes first: no hook starves another).
    last: usize,
    /// Runs started so far (each run's `seq`).
    started: u64,
    done_tx: Sender<(u64, ExecResult)>,
    done_rx: Receiver<(u64, ExecResult)>,
    /// Wakes the engine's watch loop when a run ends.
    wake: Option<SyncSender<WatchEvent>>,
}

impl Hooks {
    /// Compiles each hook's globs (gitignore syntax, as `--ignore`'s).
    pub fn new(on_change: &[OnChange]) -> Result<Hooks, IgnoreError> {
        let hooks = on_change
            .iter()
            .map(|on| {
                let matcher = if on.paths.is_empty() {
                    None
                } else {
                    Some(Ignorer::new(&IgnoreSpec {
                        patterns: on.paths.clone(),
                        ..Default::default()
                    })?)
                };
                Ok(Hook {
                    on: on.clone(),
                    matcher,
                })
            })
            .collect::<Result<Vec<_>, IgnoreError>>()?;
        let (done_tx, done_rx) = channel();
        Ok(Hooks {
            pending: vec![None; hooks.len()],
            hooks,
            running: None,
            last: usize::MAX,
            started: 0,
            done_tx,
            done_rx,
            wake: None,
        })
    }

    /// True when the session has hooks (only then are changed paths worth collecting).
    pub fn any(&self) -> bool {
        !self.hooks.is_empty()
    }

    /// A run's end also sends a wake-up on `tx` (the watch loop's channel).
    pub fn set_wake(&mut self, tx: SyncSender<WatchEvent>) {
        self.wake = Some(tx);
    }

    /// A cycle changed the entry at `path` (`old` -> `now`): every path in it, below it
    /// included, is matched against each hook's globs.
    pub fn note_change(&mut self, path: &RelPath, old: Option<&Entry>, now: Option<&Entry>) {
        if self.hooks.is_empty() {
            return;
        }
        let mut seen = |p: &str| {
            if let Ok(rel) = RelPath::new(p) {
                self.note(&rel);
            }
        };
        match (old, now) {
            // A directory's own metadata: what is inside did not change with it.
            (Some(Entry::Directory(_)), Some(Entry::Directory(_))) | (None, None) => {
                seen(path.as_str())
            }
            _ => {
                for e in [old, now].into_iter().flatten() {
                    e.walk(path.as_str(), &mut |p, _| seen(p));
                }
            }
        }
    }

    /// A cycle changed `path`: each hook matching it is due.
    pub fn note(&mut self, path: &RelPath) {
        if path.is_root() {
            return;
        }
        for (i, h) in self.hooks.iter().enumerate() {
            if h.matches(path) {
                self.pending[i]
                    .get_or_insert_with(Trigger::default)
                    .add(path.as_str());
            }
        }
    }

    /// The next hook due, round-robin after the last one that ran (none while one runs).
    fn next_due(&mut self) -> Option<(usize, Trigger)> {
        if self.running.is_some() {
            return None;
        }
        let n = self.hooks.len();
        let start = self.last.wrapping_add(1);
        (0..n)
            .map(|k| start.wrapping_add(k) % n)
            .find_map(|i| self.pending[i].take().map(|t| (i, t)))
    }

    /// True while a hook runs or is due.
    pub fn busy(&self) -> bool {
        self.running.is_some() || self.pending.iter().any(Option::is_some)
    }

    /// Reports a run that ended, and starts the next hook due (on `beta`) if none runs and
    /// beta is reachable (otherwise it waits for a reconnection).
    pub fn step(&mut self, beta: &mut dyn Endpoint, printer: &mut Printer) {
        while let Ok((seq, result)) = self.done_rx.try_recv() {
            self.finished(seq, result, printer);
        }
        while beta.connected() {
            let Some((i, trigger)) = self.next_due() else {
                break;
            };
            self.last = i;
            let command = self.hooks[i].on.run.clone();
            printer.emit(&Event::HookStart {
                command: command.clone(),
                trigger: trigger.named(),
                trigger_count: trigger.total,
            });
            self.started += 1;
            let seq = self.started;
            self.running = Some(Running {
                seq,
                hook: i,
                trigger,
                started: Instant::now(),
            });
            let tx = self.done_tx.clone();
            let wake = self.wake.clone();
            let done: ExecDone = Box::new(move |r| {
                let _ = tx.send((seq, r));
                if let Some(w) = wake {
                    let _ = w.try_send(WatchEvent::HookDone);
                }
            });
            match beta.exec(&command, done) {
                Ok(()) => break,
                // It never started: told now, and the next one due is tried.
                Err(e) => self.finished(seq, ExecResult::failed(e.to_string()), printer),
            }
        }
    }

    /// Runs what is due and waits until nothing is (`--once`), or until `stop`.
    pub fn finish(&mut self, beta: &mut dyn Endpoint, printer: &mut Printer, stop: &AtomicBool) {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        self.step(beta, printer);
        while self.running.is_some() && !stop.load(Ordering::SeqCst) {
            match self.done_rx.recv_timeout(Duration::from_millis(100)) {
                Ok((seq, r)) => {
                    self.finished(seq, r, printer);
                    self.step(beta, printer);
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => break,
            }
        }
    }

    fn finished(&mut self, seq: u64, result: ExecResult, printer: &mut Printer) {
        if self.running.as_ref().is_none_or(|r| r.seq != seq) {
            return;
        }
        let Some(run) = self.running.take() else {
            return;
        };
        let result = result.bounded();
        let (exit_code, signal, error) = match &result.status {
            ExecStatus::Exited(c) => (Some(*c), None, None),
            ExecStatus::Signaled(s) => (None, Some(*s), None),
            ExecStatus::Failed(m) => (None, None, Some(m.clone())),
        };
        printer.emit(&Event::Hook {
            command: self.hooks[run.hook].on.run.clone(),
            trigger: run.trigger.named(),
            trigger_count: run.trigger.total,
            ok: exit_code == Some(0),
            exit_code,
            signal,
            error,
            output: String::from_utf8_lossy(&result.output).into_owned(),
            output_truncated: result.truncated,
            duration_ms: run.started.elapsed().as_secs_f64() * 1000.0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks(specs: &[(&str, &[&str])]) -> Hooks {
        let on: Vec<OnChange> = specs
            .iter()
            .map(|(run, paths)| OnChange {
                run: (*run).into(),
                paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            })
            .collect();
        Hooks::new(&on).expect("good globs")
    }

    fn rel(p: &str) -> RelPath {
        RelPath::new(p).expect("a relative path")
    }

    #[test]
    fn globs_pick_the_hooks_a_change_triggers() {
        // (globs, changed path, due?)
        let table: &[(&[&str], &str, bool)] = &[
            (&[], "a.txt", true),
            (&[], "deep/down/x", true),
            (&["*.py"], "app.py", true),
            (&["*.py"], "src/deep/app.py", true),
            (&["*.py"], "notes.txt", false),
            (&["/main.py"], "main.py", true),
            (&["/main.py"], "sub/main.py", false),
            (&["src/"], "src/a/b.c", true),
            (&["src/"], "srcs/a", false),
            (&["src/**/*.rs"], "src/x/y.rs", true),
            (&["src/**/*.rs"], "lib/y.rs", false),
            (&["*.py", "!test_*.py"], "test_app.py", false),
            (&["*.py", "!test_*.py"], "app.py", true),
            (&["*.py", "*.toml"], "Cargo.toml", true),
        ];
        for (globs, path, due) in table {
            let mut h = hooks(&[("make", globs)]);
            h.note(&rel(path));
            assert_eq!(h.busy(), *due, "{globs:?} at {path}");
        }
    }

    #[test]
    fn a_new_directory_triggers_by_what_is_inside() {
        let mut h = hooks(&[("make", &["*.py"])]);
        let dir = Entry::Directory(
            [
                ("a.txt".to_owned(), Entry::file([1; 32], 1, false)),
                ("b.py".to_owned(), Entry::file([2; 32], 1, false)),
            ]
            .into(),
        );
        h.note_change(&rel("src"), None, Some(&dir));
        let (_, t) = h.next_due().expect("due");
        assert_eq!(t.paths.iter().collect::<Vec<_>>(), ["src/b.py"]);
        // A deleted directory: by what was inside.
        h.note_change(&rel("src"), Some(&dir), None);
        assert!(h.busy());
    }

    #[test]
    fn one_run_at_a_time_and_changes_meanwhile_queue_one_more() {
        let mut h = hooks(&[("a", &[]), ("b", &["*.py"])]);
        h.note(&rel("x.py"));
        let (first, _) = h.next_due().expect("a is due");
        assert_eq!(first, 0);
        h.last = first;
        h.running = Some(Running {
            seq: 1,
            hook: first,
            trigger: Trigger::default(),
            started: Instant::now(),
        });
        // While a runs: nothing else starts, and more changes make a due again.
        assert!(h.next_due().is_none());
        h.note(&rel("y.txt"));
        h.note(&rel("z.txt"));
        h.running = None;
        // b (due since before) goes first, then a once, for both later changes.
        let (second, _) = h.next_due().expect("b is due");
        assert_eq!(second, 1);
        h.last = second;
        let (third, t) = h.next_due().expect("a is due again");
        assert_eq!(third, 0);
        assert_eq!(t.total, 2);
        h.last = third;
        assert!(h.next_due().is_none());
        assert!(!h.busy());
    }

    #[test]
    fn triggers_are_counted_beyond_what_is_kept() {
        let mut t = Trigger::default();
        for i in 0..TRIGGER_KEPT + 5 {
            t.add(&format!("f{i}"));
        }
        t.add("f0");
        assert_eq!(t.total, TRIGGER_KEPT as u64 + 5);
        assert_eq!(t.paths.len(), TRIGGER_KEPT);
        assert_eq!(t.named().len(), TRIGGER_NAMES);
    }

    #[test]
    fn runs_in_the_directory_with_output_and_status() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("f"), "content\n").expect("write");
        let r = run("cat f; echo oops >&2; exit 3", dir.path());
        assert_eq!(r.status, ExecStatus::Exited(3));
        assert_eq!(String::from_utf8_lossy(&r.output), "content\noops\n");
        assert!(!r.truncated);
        let r = run("kill -9 $$", dir.path());
        assert_eq!(r.status, ExecStatus::Signaled(9));
    }

    #[test]
    fn long_output_keeps_its_end_from_a_line_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = run(
            "i=0; while [ $i -lt 20000 ]; do echo line $i; i=$((i+1)); done",
            dir.path(),
        );
        assert_eq!(r.status, ExecStatus::Exited(0));
        assert!(r.truncated);
        assert!(r.output.len() <= OUTPUT_MAX);
        let text = String::from_utf8_lossy(&r.output);
        assert!(text.starts_with("line "), "{:?}", &text[..20]);
        assert!(text.ends_with("line 19999\n"));
    }

    #[test]
    fn a_background_process_holding_the_output_does_not_hold_the_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The sleeper keeps the pipe open; the run still ends with the shell.
        let r = run("sleep 30 & echo started", dir.path());
        assert_eq!(r.status, ExecStatus::Exited(0));
        assert_eq!(String::from_utf8_lossy(&r.output), "started\n");
    }

    #[test]
    fn a_peer_result_is_bounded() {
        let r = ExecResult {
            status: ExecStatus::Failed("x".repeat(10_000)),
            output: vec![b'a'; OUTPUT_MAX + 10],
            truncated: false,
        }
        .bounded();
        assert_eq!(r.output.len(), OUTPUT_MAX);
        assert!(r.truncated);
        assert!(matches!(r.status, ExecStatus::Failed(m) if m.len() == 4096));
    }
}
