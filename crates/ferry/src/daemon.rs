//! The daemon: one per user, serving background sessions on a Unix socket.
//!
//! Invariants: the socket lives in a directory only its user can enter
//! (`$XDG_RUNTIME_DIR/ferry`, else `STATE/daemon/run`), is created 0600 under umask 0177 (never
//! chmod-ed afterwards) and only while the daemon holds `daemon.lock` (flock), so a stale socket
//! is removed only by the one daemon that may replace it. Every connection's peer uid is read
//! with `SO_PEERCRED` (`getpeereid` on macOS) and another user is refused, whatever the file modes say.
//!
//! Protocol: one JSON object per line each way. A request is
//! `{"version": V, "op": OP, ...args}`; a response `{"ok": true, "version": V, ...}` or
//! `{"ok": false, "version": V, "error": "one line", "usage": bool}`. A request of another
//! version is refused (except `stop`, so a newer client can always stop an older daemon).
//!
//! Ops: `status` (the daemon; with `name`, that session's object as `list` gives it), `list`,
//! `create {spec}`, `pause`/`resume`/`terminate`/`flush` (`name` or `selector`), `flush {name,
//! paths?, exclude?}` -> `{changed: {alpha_to_beta: [..], beta_to_alpha: [..]}, changes,
//! conflicts, errors}`, `conflicts {name}` -> `{conflicts: [{path, alpha: {change, kind, size,
//! mtime}, beta: {..}}]}`, `resolve {name, paths: [..] | all: true, keep}` -> `{resolved: [{path,
//! kept, loser_copy}]}`, `stop`.
//!
//! Subscription: `{"op": "watch", "name"?: NAME}` is answered `{"ok": true, ...}` and the
//! connection then carries events, one JSON object per line, until the client closes it; each
//! names its session: `{"event": "state", "session", "state"}` (first one per session at once,
//! then on every change of state), `{"event": "cycle", "session", "cycle", "to_alpha",
//! "to_beta", "conflicts", "errors"}`, `{"event": "conflict", "session", "path"}` (a new
//! conflict), `{"event": "error", "session", "message"}`, `{"event": "removed", "session"}`. A
//! subscriber that falls 1024 events behind loses the excess (it can ask `list` again).
//!
//! Each session is the same [`Engine`](crate::engine::Engine) `ferry sync` runs, opened by
//! [`crate::open::open`] on its own thread; its events reach the daemon through a
//! [`Printer::sink`].

use std::collections::BTreeMap;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cli::SessionOptions;
use ferry_core::RelPath;

use crate::endpoint::{Side, WatchEvent};
use crate::engine::{Request, Resolving};
use crate::open::OpenFailure;
use crate::output::{Event, Printer};
use crate::report::{CycleReport, Moved, SessionView, Traffic};

/// The protocol version: this build's version (client and daemon come from one build).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Sessions' threads get the stack `ferry sync` runs on (deep trees recurse).
const STACK: usize = 256 << 20;

/// Where the daemon's files are.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The socket's private directory.
    pub run: PathBuf,
    pub socket: PathBuf,
    pub lock: PathBuf,
    /// `STATE/daemon`: the session list and the log.
    pub state: PathBuf,
    pub sessions: PathBuf,
    pub log: PathBuf,
}

/// The daemon's paths for this user (nothing is created).
pub fn paths() -> Result<Paths, String> {
    let state = crate::state::state_root()
        .map_err(|e| e.to_string())?
        .join("daemon");
    let run = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d).join("ferry"),
        _ => state.join("run"),
    };
    Ok(Paths {
        socket: run.join("daemon.sock"),
        lock: run.join("daemon.lock"),
        run,
        sessions: state.join("sessions.json"),
        log: state.join("daemon.log"),
        state,
    })
}

/// Creates `dir` (and its parents) as 0700; an existing one must be ours and private.
pub fn private_dir(dir: &Path) -> Result<(), String> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    if meta.uid() != uid {
        return Err(format!(
            "{} belongs to uid {}, not to this user (uid {uid}); remove it or set XDG_RUNTIME_DIR",
            dir.display(),
            meta.uid()
        ));
    }
    Ok(())
}

/// The one-line refusal when the two ends of a connection are different builds.
pub fn check_version(daemon: &str, client: &str) -> Result<(), String> {
    if daemon == client {
        return Ok(());
    }
    Err(format!(
        "the running ferry daemon is version {daemon} and this ferry is {client}; restart the \
         daemon: 'ferry daemon stop' (the next command starts this version)"
    ))
}

/// The uid of the process at the other end of `s` (`SO_PEERCRED`; `getpeereid` on macOS).
pub fn peer_uid(s: &UnixStream) -> std::io::Result<u32> {
    crate::fs::sys::peer_uid(s.as_raw_fd())
}

/// A session as created: what is saved in `sessions.json` and restarted at start.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionSpec {
    pub name: String,
    /// The endpoints as keyed by `ferry sync` (canonical local paths, URLs).
    pub alpha: String,
    pub beta: String,
    /// Every option `ferry sync` takes (the old `mode`, `ignores` and `yes` keys are its own,
    /// so entries written before the rest existed still load).
    #[serde(flatten)]
    pub options: SessionOptions,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub paused: bool,
}

/// The options of the saved background session syncing `alpha` and `beta` (either order),
/// if there is one.
pub fn saved_options(alpha: &str, beta: &str) -> Option<SessionOptions> {
    let body = std::fs::read(paths().ok()?.sessions).ok()?;
    let specs: Vec<SessionSpec> = serde_json::from_slice(&body).ok()?;
    specs
        .into_iter()
        .find(|s| (s.alpha == alpha && s.beta == beta) || (s.alpha == beta && s.beta == alpha))
        .map(|s| s.options)
}

/// A session name: a letter or digit, then letters, digits, `.`, `_`, `-`, at most 64. Never
/// `/` nor `:` nor a leading `.`: a word that could be an endpoint is never a name (see
/// [`crate::cli::ResolveFlags`]).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad session name '{name}' (a letter or digit, then letters, digits, '.', '_' and '-', at most 64)"
        ))
    }
}

/// `k=v` (a label or a selector).
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains(',') && !v.contains(',') => {
            Ok((k.to_owned(), v.to_owned()))
        }
        _ => Err(format!("bad label '{s}' (expected KEY=VALUE)")),
    }
}

/// What a session is doing and has done, as `ferry list` shows it.
#[derive(Clone, Debug, Default)]
struct Status {
    /// Files and bytes moved each way, for the last hour's sums.
    traffic: Traffic,
    state: &'static str,
    last_to_beta: Option<u64>,
    last_to_alpha: Option<u64>,
    files_to_beta: u64,
    files_to_alpha: u64,
    bytes: u64,
    cycles: u64,
    errors: u64,
    last_error: Option<String>,
}

/// The subscribers to events (`watch`).
#[derive(Default)]
struct Hub {
    subs: Mutex<Vec<(Option<String>, SyncSender<Value>)>>,
}

impl Hub {
    /// Sends `ev` (about session `name`) to every subscriber that wants it; forgets the gone.
    fn publish(&self, name: &str, mut ev: Value) {
        if let Some(o) = ev.as_object_mut() {
            o.insert("session".into(), name.into());
        }
        let mut subs = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        subs.retain(|(want, tx)| {
            if want.as_deref().is_some_and(|w| w != name) {
                return true;
            }
            !matches!(
                tx.try_send(ev.clone()),
                Err(std::sync::mpsc::TrySendError::Disconnected(_))
            )
        });
    }
}

struct Shared {
    name: String,
    hub: Arc<Hub>,
    st: Mutex<Status>,
    /// The engine's open conflicts and tree size.
    view: Arc<Mutex<SessionView>>,
}

impl Shared {
    fn view(&self) -> std::sync::MutexGuard<'_, SessionView> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Status> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn new(name: &str, hub: &Arc<Hub>) -> Arc<Shared> {
        Arc::new(Shared {
            name: name.to_owned(),
            hub: hub.clone(),
            st: Mutex::default(),
            view: Arc::default(),
        })
    }

    /// Changes the status; a change of state is published.
    fn set(&self, f: impl FnOnce(&mut Status)) {
        let (before, after) = {
            let mut st = self.lock();
            let before = st.state;
            f(&mut st);
            (before, st.state)
        };
        if before != after {
            self.hub
                .publish(&self.name, json!({"event": "state", "state": after}));
        }
    }

    /// What the engine's events say (and what subscribers hear of them).
    fn on_event(&self, ev: &Event) {
        let news = match ev {
            Event::CycleEnd {
                cycle,
                to_alpha,
                to_beta,
                errors,
                ..
            } => Some(json!({
                "event": "cycle",
                "cycle": cycle,
                "to_alpha": to_alpha,
                "to_beta": to_beta,
                "conflicts": self.view().conflicts.len(),
                "errors": errors,
            })),
            Event::Conflict { path, .. } => Some(json!({"event": "conflict", "path": path})),
            Event::Error { path, message, .. } => Some(json!({
                "event": "error",
                "message": match path {
                    Some(p) => format!("{p}: {message}"),
                    None => message.clone(),
                },
            })),
            _ => None,
        };
        self.update(ev);
        if let Some(n) = news {
            self.hub.publish(&self.name, n);
        }
    }

    fn update(&self, ev: &Event) {
        self.set(|st| match ev {
            Event::CycleStart { .. } => st.state = "syncing",
            Event::CycleEnd {
                to_alpha,
                to_beta,
                errors,
                bytes,
                bytes_to_alpha,
                bytes_to_beta,
                ..
            } => {
                let now = unix_now();
                st.traffic.add(Moved {
                    at: now,
                    files_to_beta: *to_beta,
                    files_to_alpha: *to_alpha,
                    bytes_to_beta: *bytes_to_beta,
                    bytes_to_alpha: *bytes_to_alpha,
                });
                if *to_alpha > 0 {
                    st.last_to_alpha = Some(now);
                }
                if *to_beta > 0 {
                    st.last_to_beta = Some(now);
                }
                st.files_to_alpha += to_alpha;
                st.files_to_beta += to_beta;
                st.bytes += bytes;
                st.cycles += 1;
                st.errors = *errors;
                if st.state == "syncing" {
                    st.state = "watching";
                }
            }
            Event::Watching { .. } | Event::Reconnected { .. } => st.state = "watching",
            Event::Reconnecting { message, .. } => {
                st.state = "reconnecting";
                st.last_error = Some(message.clone());
            }
            Event::Error { path, message, .. } => {
                st.last_error = Some(match path {
                    Some(p) => format!("{p}: {message}"),
                    None => message.clone(),
                });
            }
            Event::Problem { path, message, .. } => {
                st.last_error = Some(format!("{path}: {message}"));
            }
            _ => {}
        });
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A running session's handles.
struct Control {
    wake: SyncSender<WatchEvent>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Control {
    /// Stops the engine (the cycle in flight finishes, the archive is saved) and waits for it.
    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.wake.send(WatchEvent::Stop);
        let _ = self.thread.join();
    }
}

struct Entry {
    spec: SessionSpec,
    shared: Arc<Shared>,
    control: Option<Control>,
}

impl Entry {
    fn json(&self) -> Value {
        let st = self.shared.lock();
        let state = if self.spec.paused {
            "paused"
        } else if st.state.is_empty() {
            "starting"
        } else {
            st.state
        };
        let view = self.shared.view();
        json!({
            "name": self.spec.name,
            "alpha": self.spec.alpha,
            "beta": self.spec.beta,
            "mode": self.spec.options.mode,
            "options": self.spec.options,
            "labels": self.spec.labels,
            "state": state,
            "last_sync_to_beta": st.last_to_beta,
            "last_sync_to_alpha": st.last_to_alpha,
            "files_to_beta": st.files_to_beta,
            "files_to_alpha": st.files_to_alpha,
            "bytes": st.bytes,
            "last_hour": st.traffic.last_hour(unix_now()),
            "tree": view.tree,
            "cycles": st.cycles,
            "conflicts": view.conflicts.len(),
            "errors": st.errors,
            "last_error": st.last_error,
        })
    }
}

/// Starts `spec`'s engine on its own thread; returns once it is open (or could not be).
fn start(spec: &SessionSpec, shared: &Arc<Shared>) -> Result<Control, OpenFailure> {
    let spec = spec.clone();
    let shared = shared.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name(format!("session {}", spec.name))
        .stack_size(STACK)
        .spawn(move || run_session(spec, shared, ready_tx))
        .map_err(|e| OpenFailure::failed(format!("cannot start a thread: {e}")))?;
    match ready_rx.recv() {
        Ok(Ok((wake, stop))) => Ok(Control { wake, stop, thread }),
        Ok(Err(f)) => {
            let _ = thread.join();
            Err(f)
        }
        Err(_) => {
            let _ = thread.join();
            Err(OpenFailure::failed("the session's thread ended".into()))
        }
    }
}

type Ready = SyncSender<Result<(SyncSender<WatchEvent>, Arc<AtomicBool>), OpenFailure>>;

fn run_session(spec: SessionSpec, shared: Arc<Shared>, ready: Ready) {
    let fail = |f: OpenFailure| {
        shared.set(|st| {
            st.state = "error";
            st.last_error = Some(f.message.clone());
        });
        let _ = ready.send(Err(f));
    };
    let (alpha, beta) = match crate::cli::places(&spec.alpha, &spec.beta) {
        Ok(p) => p,
        Err(e) => return fail(OpenFailure::usage(e.0)),
    };
    let (settings, retention) = match spec.options.settings() {
        Ok(s) => s,
        Err(e) => return fail(OpenFailure::usage(e.0)),
    };
    let sink = shared.clone();
    let printer = Printer::sink(Box::new(move |ev| sink.on_event(ev)));
    let opened = crate::open::open(false, &alpha, &beta, settings, retention, printer, false);
    let (mut engine, (tx, rx), stop) = match opened {
        Ok(o) => o,
        Err(f) => return fail(f),
    };
    engine.share_view(shared.view.clone());
    shared.set(|st| {
        st.state = "syncing";
        st.last_error = None;
    });
    let _ = ready.send(Ok((tx.clone(), stop.clone())));
    let result = engine.run(Some((tx, rx)));
    let stopped = stop.load(Ordering::SeqCst);
    shared.set(|st| match result {
        Err(e) => {
            st.state = "error";
            st.last_error = Some(e.to_string());
        }
        Ok(_) if !stopped => {
            st.state = "error";
            st.last_error
                .get_or_insert_with(|| "the session ended".into());
        }
        Ok(_) => st.state = "stopped",
    });
}

struct Daemon {
    paths: Paths,
    uid: u32,
    sessions: Mutex<BTreeMap<String, Entry>>,
    /// Who listens to events (`watch`).
    hub: Arc<Hub>,
    /// `daemon.lock`, held while serving; let go of before a stop is answered, so the next
    /// daemon can start at once.
    lock: Mutex<Option<File>>,
}

type Reply = Result<Value, (String, bool)>;

fn usage(msg: String) -> (String, bool) {
    (msg, true)
}

/// A list of strings in a request.
fn strings(v: &Value, what: &str) -> Result<Vec<String>, (String, bool)> {
    v.as_array()
        .and_then(|a| {
            a.iter()
                .map(|x| x.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| usage(format!("'{what}' must be a list of strings")))
}

/// A list of paths relative to the roots (the one path gate: no `..`, not absolute, no NUL).
fn rel_paths(v: &Value, what: &str) -> Result<Vec<RelPath>, (String, bool)> {
    strings(v, what)?
        .iter()
        .map(|p| RelPath::new(p).map_err(|e| usage(format!("bad path '{p}': {e}"))))
        .collect()
}

fn unknown(name: &str) -> (String, bool) {
    usage(format!("no session named '{name}' (see 'ferry list')"))
}

impl Daemon {
    fn sessions(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the session list atomically (a temporary file renamed over it).
    fn save(&self, sessions: &BTreeMap<String, Entry>) -> Result<(), (String, bool)> {
        let specs: Vec<&SessionSpec> = sessions.values().map(|e| &e.spec).collect();
        let body = serde_json::to_vec_pretty(&specs).map_err(|e| (e.to_string(), false))?;
        let io = |e: std::io::Error| {
            (
                format!("cannot save {}: {e}", self.paths.sessions.display()),
                false,
            )
        };
        let mut tmp = tempfile::NamedTempFile::new_in(&self.paths.state).map_err(io)?;
        tmp.write_all(&body).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&self.paths.sessions).map_err(|e| io(e.error))?;
        Ok(())
    }

    /// The names a request is about: its `name`, or every session matching its `selector`.
    fn targets(&self, req: &Value) -> Result<Vec<String>, (String, bool)> {
        let sessions = self.sessions();
        if let Some(name) = req.get("name").and_then(Value::as_str) {
            if !sessions.contains_key(name) {
                return Err(usage(format!(
                    "no session named '{name}' (see 'ferry list')"
                )));
            }
            return Ok(vec![name.to_owned()]);
        }
        let Some(sel) = req.get("selector").and_then(Value::as_str) else {
            return Err(usage("give a session NAME or --label-selector".into()));
        };
        let mut want = Vec::new();
        for part in sel.split(',') {
            want.push(parse_label(part).map_err(usage)?);
        }
        let names: Vec<String> = sessions
            .values()
            .filter(|e| {
                want.iter()
                    .all(|(k, v)| e.spec.labels.get(k).is_some_and(|x| x == v))
            })
            .map(|e| e.spec.name.clone())
            .collect();
        if names.is_empty() {
            return Err(usage(format!("no session matches the selector '{sel}'")));
        }
        Ok(names)
    }

    fn handle(&self, req: &Value) -> Reply {
        let op = req.get("op").and_then(Value::as_str).unwrap_or("");
        let version = req.get("version").and_then(Value::as_str).unwrap_or("");
        if op != "stop" {
            check_version(VERSION, version).map_err(|e| (e, false))?;
        }
        match op {
            "status" if req.get("name").is_some() => {
                let name = self.one(req)?;
                let sessions = self.sessions();
                let e = sessions.get(&name).ok_or_else(|| unknown(&name))?;
                Ok(json!({ "session": e.json() }))
            }
            "status" => Ok(json!({
                "pid": std::process::id(),
                "socket": self.paths.socket,
                "sessions": self.sessions().len(),
            })),
            "conflicts" => {
                let name = self.one(req)?;
                let sessions = self.sessions();
                let e = sessions.get(&name).ok_or_else(|| unknown(&name))?;
                let conflicts = e.shared.view().conflicts.clone();
                Ok(json!({ "name": name, "conflicts": conflicts }))
            }
            "list" => Ok(json!({
                "sessions": self.sessions().values().map(Entry::json).collect::<Vec<_>>(),
            })),
            "select" => Ok(json!({ "names": self.targets(req)? })),
            "create" => self.create(req),
            "pause" => self.each(req, |d, name| d.pause(name)),
            "resume" => self.each(req, |d, name| d.resume(name)),
            "terminate" => self.each(req, |d, name| d.terminate(name)),
            "flush" if req.get("name").is_some() => {
                let name = self.one(req)?;
                self.flush(&name, req)
            }
            "flush" => self.each(req, |d, name| d.flush(name, req)),
            "resolve" => self.resolve(req),
            "file" => crate::files::serve(&self.spec(req)?, req),
            "stop" => {
                self.stop_all();
                Ok(json!({}))
            }
            other => Err(usage(format!("unknown request '{other}'"))),
        }
    }

    /// The one session a request names (`name`, a string).
    fn one(&self, req: &Value) -> Result<String, (String, bool)> {
        match req.get("name") {
            Some(Value::String(n)) if self.sessions().contains_key(n) => Ok(n.clone()),
            Some(Value::String(n)) => Err(unknown(n)),
            _ => Err(usage("give the session's name ('name', a string)".into())),
        }
    }

    /// The settings of the one session `req` names.
    fn spec(&self, req: &Value) -> Result<SessionSpec, (String, bool)> {
        let name = self.one(req)?;
        self.sessions()
            .get(&name)
            .map(|e| e.spec.clone())
            .ok_or_else(|| unknown(&name))
    }

    fn each(&self, req: &Value, f: impl Fn(&Self, &str) -> Reply) -> Reply {
        let mut out = Vec::new();
        for name in self.targets(req)? {
            out.push(f(self, &name)?);
        }
        Ok(json!({ "sessions": out }))
    }

    fn create(&self, req: &Value) -> Reply {
        let spec: SessionSpec = req
            .get("spec")
            .cloned()
            .ok_or_else(|| usage("create: no session given".into()))
            .and_then(|s| serde_json::from_value(s).map_err(|e| usage(format!("create: {e}"))))?;
        check_name(&spec.name).map_err(usage)?;
        let mut sessions = self.sessions();
        if sessions.contains_key(&spec.name) {
            return Err(usage(format!(
                "a session named '{}' exists already",
                spec.name
            )));
        }
        let shared = Shared::new(&spec.name, &self.hub);
        let control = start(&spec, &shared).map_err(|f| (f.message, f.usage))?;
        let entry = Entry {
            spec,
            shared,
            control: Some(control),
        };
        let out = entry.json();
        sessions.insert(entry.spec.name.clone(), entry);
        self.save(&sessions)?;
        Ok(json!({ "session": out }))
    }

    fn pause(&self, name: &str) -> Reply {
        let mut sessions = self.sessions();
        let Some(e) = sessions.get_mut(name) else {
            return Err(usage(format!("no session named '{name}'")));
        };
        if let Some(c) = e.control.take() {
            c.stop();
        }
        e.spec.paused = true;
        self.hub
            .publish(name, json!({"event": "state", "state": "paused"}));
        let out = e.json();
        self.save(&sessions)?;
        Ok(out)
    }

    fn resume(&self, name: &str) -> Reply {
        let mut sessions = self.sessions();
        let Some(e) = sessions.get_mut(name) else {
            return Err(usage(format!("no session named '{name}'")));
        };
        // A session whose engine ended (an error) is restarted too.
        if e.control.as_ref().is_some_and(|c| c.thread.is_finished()) {
            if let Some(c) = e.control.take() {
                c.stop();
            }
        }
        if e.control.is_none() {
            e.control = Some(start(&e.spec, &e.shared).map_err(|f| (f.message, f.usage))?);
        }
        e.spec.paused = false;
        let out = e.json();
        self.save(&sessions)?;
        Ok(out)
    }

    fn terminate(&self, name: &str) -> Reply {
        let mut sessions = self.sessions();
        let Some(mut e) = sessions.remove(name) else {
            return Err(usage(format!("no session named '{name}'")));
        };
        if let Some(c) = e.control.take() {
            c.stop();
        }
        self.save(&sessions)?;
        self.hub.publish(name, json!({"event": "removed"}));
        Ok(json!({ "name": name, "state": "terminated" }))
    }

    /// Runs a cycle now (only at `paths` if given; changes at paths matching `exclude` left
    /// out) and waits for it: what it changed each way.
    fn flush(&self, name: &str, req: &Value) -> Reply {
        let paths = match req.get("paths") {
            None | Some(Value::Null) => None,
            Some(v) => Some(rel_paths(v, "paths")?),
        };
        let exclude = match req.get("exclude") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => strings(v, "exclude")?,
        };
        let (report, open) = self.request(name, Request::Flush { paths, exclude })?;
        Ok(json!({
            "name": name,
            "cycle": report.cycle,
            "changed": report.changed_each_way(),
            "changes": report.changes,
            "conflicts": open,
            "errors": report.errors,
        }))
    }

    /// `ferry resolve NAME`: the session's engine runs the resolve cycle.
    fn resolve(&self, req: &Value) -> Reply {
        let name = self.one(req)?;
        let keep = match req.get("keep").and_then(Value::as_str) {
            Some("alpha") => Side::Alpha,
            Some("beta") => Side::Beta,
            _ => {
                return Err(usage(
                    "resolve: 'keep' must be \"alpha\" or \"beta\"".into(),
                ));
            }
        };
        let all = req.get("all").and_then(Value::as_bool) == Some(true);
        let given = req.get("paths").filter(|v| !v.is_null());
        let paths = match (given, all) {
            (Some(_), true) => {
                return Err(usage("resolve: give paths or all: true, not both".into()));
            }
            (None, true) => None,
            (None, false) => return Err(usage("resolve: give paths, or all: true".into())),
            (Some(v), false) => {
                let p = rel_paths(v, "paths")?;
                if p.is_empty() {
                    return Err(usage("resolve: give paths, or all: true".into()));
                }
                Some(p)
            }
        };
        let (report, open) = self.request(&name, Request::Resolve(Resolving { paths, keep }))?;
        Ok(json!({
            "name": name,
            "resolved": report.resolutions(keep.as_str()),
            "changes": report.changes,
            "conflicts": open,
            "errors": report.errors,
        }))
    }

    /// Hands `r` to `name`'s engine and waits for its cycle: the report and the conflicts
    /// still open.
    fn request(&self, name: &str, r: Request) -> Result<(CycleReport, usize), (String, bool)> {
        let (shared, wake) = {
            let sessions = self.sessions();
            let e = sessions.get(name).ok_or_else(|| unknown(name))?;
            match &e.control {
                Some(c) if !e.spec.paused && !c.thread.is_finished() => {
                    (e.shared.clone(), c.wake.clone())
                }
                _ if e.spec.paused => {
                    return Err(usage(format!(
                        "session '{name}' is paused (resume it first)"
                    )));
                }
                _ => {
                    let why = e.shared.lock().last_error.clone();
                    return Err((
                        format!(
                            "session '{name}' is not running ({}); 'ferry resume {name}' starts it again",
                            why.unwrap_or_else(|| "it ended".into())
                        ),
                        false,
                    ));
                }
            }
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        wake.send(WatchEvent::Request(r, tx))
            .map_err(|_| (format!("session '{name}' is not running"), false))?;
        match rx.recv() {
            Ok(Ok(report)) => {
                let open = shared.view().conflicts.len();
                Ok((report, open))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => {
                let why = shared.lock().last_error.clone();
                Err((
                    format!(
                        "session '{name}' stopped before its cycle ran: {}",
                        why.unwrap_or_else(|| "it ended".into())
                    ),
                    false,
                ))
            }
        }
    }

    /// Stops every session (each saves its archive); they stay in the list, to resume at the
    /// next start.
    fn stop_all(&self) {
        let mut sessions = self.sessions();
        for e in sessions.values_mut() {
            if let Some(c) = e.control.take() {
                c.stop();
            }
        }
    }
}

/// `ferry daemon run`: serves until `ferry daemon stop` or SIGTERM. Returns a one-line reason
/// if it cannot start.
pub fn run() -> Result<(), String> {
    let paths = paths()?;
    private_dir(&paths.run)?;
    private_dir(&paths.state)?;
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&paths.lock)
        .map_err(|e| format!("cannot open {}: {e}", paths.lock.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(format!(
            "a ferry daemon is already running for this user (socket {})",
            paths.socket.display()
        ));
    }
    let _ = lock.set_len(0);
    let _ = writeln!(&lock, "{}", std::process::id());
    // Under the lock: whatever socket is there belongs to a daemon that is gone.
    match std::fs::remove_file(&paths.socket) {
        Ok(()) => eprintln!("ferry daemon: removed a stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot remove {}: {e}", paths.socket.display())),
    }
    // SAFETY: umask only changes this process's file mode mask; no other thread runs yet.
    // 0177: the socket is created 0600 (never chmod-ed afterwards).
    let old = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(&paths.socket);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener =
        listener.map_err(|e| format!("cannot listen on {}: {e}", paths.socket.display()))?;
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let daemon = Arc::new(Daemon {
        paths: paths.clone(),
        uid,
        sessions: Mutex::new(BTreeMap::new()),
        hub: Arc::default(),
        lock: Mutex::new(Some(lock)),
    });
    resume_saved(&daemon);
    {
        let daemon = daemon.clone();
        let socket = paths.socket.clone();
        ctrlc::set_handler(move || {
            daemon.stop_all();
            let _ = std::fs::remove_file(&socket);
            std::process::exit(0);
        })
        .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    }
    eprintln!(
        "ferry daemon {VERSION}: pid {} on {}",
        std::process::id(),
        paths.socket.display()
    );
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let daemon = daemon.clone();
        let _ = std::thread::Builder::new()
            .name("connection".into())
            .spawn(move || serve(&daemon, conn));
    }
    Ok(())
}

/// Restarts the saved sessions (paused ones stay paused); one that cannot open is listed in
/// the error state.
fn resume_saved(daemon: &Daemon) {
    let specs: Vec<SessionSpec> = match std::fs::read(&daemon.paths.sessions) {
        Ok(body) => match serde_json::from_slice(&body) {
            Ok(s) => s,
            Err(e) => {
                eprintln!(
                    "ferry daemon: {} is damaged ({e}); starting with no sessions",
                    daemon.paths.sessions.display()
                );
                return;
            }
        },
        Err(_) => return,
    };
    let mut sessions = daemon.sessions();
    for spec in specs {
        let shared = Shared::new(&spec.name, &daemon.hub);
        let control = if spec.paused {
            None
        } else {
            match start(&spec, &shared) {
                Ok(c) => Some(c),
                Err(f) => {
                    eprintln!("ferry daemon: session '{}': {}", spec.name, f.message);
                    None
                }
            }
        };
        sessions.insert(
            spec.name.clone(),
            Entry {
                spec,
                shared,
                control,
            },
        );
    }
}

fn serve(daemon: &Daemon, conn: UnixStream) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let reply = |out: &mut UnixStream, r: Reply| {
        let v = match r {
            Ok(mut v) => {
                if let Some(o) = v.as_object_mut() {
                    o.insert("ok".into(), true.into());
                    o.insert("version".into(), VERSION.into());
                }
                v
            }
            Err((error, usage)) => {
                json!({ "ok": false, "version": VERSION, "error": error, "usage": usage })
            }
        };
        let _ = writeln!(out, "{v}");
        let _ = out.flush();
    };
    match peer_uid(&conn) {
        Ok(uid) if uid == daemon.uid => {}
        Ok(uid) => {
            return reply(
                &mut out,
                Err((
                    format!(
                        "refused: this ferry daemon serves uid {} only, not uid {uid} (each user \
                         runs their own)",
                        daemon.uid
                    ),
                    false,
                )),
            );
        }
        Err(e) => {
            return reply(
                &mut out,
                Err((format!("refused: no peer credentials: {e}"), false)),
            );
        }
    }
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        let req: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                reply(&mut out, Err(usage(format!("bad request: {e}"))));
                continue;
            }
        };
        if req.get("op").and_then(Value::as_str) == Some("watch") {
            return subscribe(daemon, &req, &mut out, reply);
        }
        let stopping = req.get("op").and_then(Value::as_str) == Some("stop");
        let r = daemon.handle(&req);
        if stopping {
            let _ = std::fs::remove_file(&daemon.paths.socket);
            drop(daemon.lock.lock().unwrap_or_else(|p| p.into_inner()).take());
            reply(&mut out, r);
            std::process::exit(0);
        }
        reply(&mut out, r);
    }
}

/// `watch`: answers, then streams events (see the module's doc) until the client goes.
fn subscribe(
    daemon: &Daemon,
    req: &Value,
    out: &mut UnixStream,
    reply: impl Fn(&mut UnixStream, Reply),
) {
    let version = req.get("version").and_then(Value::as_str).unwrap_or("");
    if let Err(e) = check_version(VERSION, version) {
        return reply(out, Err((e, false)));
    }
    let want = req.get("name").and_then(Value::as_str).map(str::to_owned);
    let (tx, rx) = std::sync::mpsc::sync_channel(1024);
    let first: Vec<Value> = {
        let sessions = daemon.sessions();
        if let Some(n) = &want {
            if !sessions.contains_key(n) {
                return reply(out, Err(unknown(n)));
            }
        }
        // Subscribed under the sessions' lock: no state change falls between the first
        // states and the stream.
        daemon
            .hub
            .subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((want.clone(), tx));
        sessions
            .values()
            .filter(|e| want.as_deref().is_none_or(|w| w == e.spec.name))
            .map(|e| {
                let v = e.json();
                json!({"event": "state", "session": e.spec.name, "state": v["state"]})
            })
            .collect()
    };
    reply(out, Ok(json!({ "watching": want })));
    for ev in first.into_iter().chain(rx) {
        if writeln!(out, "{ev}").and_then(|()| out.flush()).is_err() {
            return;
        }
    }
}

/// Opens `path` for the daemon's stdout and stderr (appending).
pub fn log_file(paths: &Paths) -> Result<File, String> {
    private_dir(&paths.state)?;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&paths.log)
        .map_err(|e| format!("cannot open {}: {e}", paths.log.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_version_passes() {
        assert!(check_version("0.1.0", "0.1.0").is_ok());
    }

    #[test]
    fn other_version_refused_with_the_restart_hint() {
        let e = check_version("0.1.0", "0.2.0").unwrap_err();
        assert!(!e.contains('\n'));
        assert!(e.contains("0.1.0") && e.contains("0.2.0"), "{e}");
        assert!(e.contains("ferry daemon stop"), "{e}");
    }

    #[test]
    fn names_and_labels() {
        assert!(check_name("web-1.app_x").is_ok());
        for bad in ["", "-x", "a b", "a/b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_label("k=v"), Ok(("k".into(), "v".into())));
        assert!(parse_label("kv").is_err());
        assert!(parse_label("=v").is_err());
    }
}
