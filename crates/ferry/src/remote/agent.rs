//! `ferry agent`: serves one directory on this machine over stdin/stdout (see
//! `docs/protocol.md`). It is a [`LocalEndpoint`] behind the wire: the same scanner, watcher,
//! staging and no-clobber transitions as a local side, so the same promises hold here.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};

use ferry_core::{Entry, RelPath};

use super::wire::{
    FEATURE_ZSTD, FrameReader, FrameWriter, Hello, Msg, TreeUpdate, WatchWire, WireError,
    read_preface, write_preface,
};
use crate::copy::{Gone, Item, Piece, Sink};
use crate::delta::{self, BaseOpener};
use crate::endpoint::local::LocalEndpoint;
use crate::endpoint::{Endpoint, EndpointError, Feed, IgnoreSpec, ScanRequest, Side, Wanted};

type Out = Arc<Mutex<FrameWriter<Box<dyn Write + Send>>>>;

/// Runs the agent until its input ends; the process's exit code.
pub fn run() -> i32 {
    use std::os::fd::AsFd;
    remove_install_leftover();
    // The raw descriptors (duplicated): Rust's stdout flushes at every newline byte.
    let raw = (
        io::stdin().as_fd().try_clone_to_owned(),
        io::stdout().as_fd().try_clone_to_owned(),
    );
    let (Ok(i), Ok(o)) = raw else {
        eprintln!("ferry agent: cannot use stdin/stdout");
        return 1;
    };
    let stdin: Box<dyn Read + Send> = Box::new(std::fs::File::from(i));
    let stdout: Box<dyn Write + Send> = Box::new(std::fs::File::from(o));
    match serve(stdin, stdout) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ferry agent: {e}");
            1
        }
    }
}

/// An installer that wrote this agent under a name of its own and linked it as `ferry` (see
/// the Docker transport) names that copy in `FERRY_AGENT_CLEANUP`: it is removed once the agent
/// runs, if it is a `ferry.*` beside this very program.
fn remove_install_leftover() {
    let Some(p) = std::env::var_os("FERRY_AGENT_CLEANUP").map(std::path::PathBuf::from) else {
        return;
    };
    let me = std::env::args_os().next().map(std::path::PathBuf::from);
    let beside = me.as_deref().and_then(Path::parent) == p.parent();
    let ours = p
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("ferry."));
    if beside && ours {
        let _ = std::fs::remove_file(&p);
    }
}

/// Serves one connection.
pub fn serve(
    mut input: Box<dyn Read + Send>,
    mut output: Box<dyn Write + Send>,
) -> Result<(), WireError> {
    write_preface(&mut output)?;
    read_preface(&mut input)?;
    let mut reader = FrameReader::new(input);
    let out: Out = Arc::new(Mutex::new(FrameWriter::new(output)));
    let theirs = match reader.recv()? {
        Msg::Hello(h) => h,
        _ => return Err(WireError::Bad("expected Hello".into())),
    };
    send(
        &out,
        &Msg::Hello(Hello {
            version: env!("CARGO_PKG_VERSION").into(),
            features: FEATURE_ZSTD,
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
        }),
    )?;
    if theirs.features & FEATURE_ZSTD != 0 {
        if let Ok(mut w) = out.lock() {
            w.set_compress(true);
        }
    }
    // Requests are read on their own thread, so a long answer can hear `Cancel`.
    let (tx, rx) = sync_channel::<Result<Msg, String>>(64);
    // Decoding deep trees recurses once per level (bounded by `MAX_DEPTH`).
    let reading = std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || {
            loop {
                let m = reader.recv().map_err(|e| e.to_string());
                let end = m.is_err();
                if tx.send(m).is_err() || end {
                    return;
                }
            }
        });
    if let Err(e) = reading {
        return Err(WireError::Io(e));
    }
    let mut agent = Agent {
        ep: None,
        out: out.clone(),
        rx,
    };
    loop {
        let m = match agent.rx.recv() {
            Ok(Ok(m)) => m,
            Ok(Err(e)) if e == WireError::Closed.to_string() => return Ok(()),
            Ok(Err(e)) => return Err(WireError::Bad(e)),
            Err(_) => return Ok(()),
        };
        let reply = agent.handle(m)?;
        if let Some(r) = reply {
            send(&out, &r)?;
        }
    }
}

fn send(out: &Out, m: &Msg) -> Result<(), WireError> {
    let mut w = out
        .lock()
        .map_err(|_| WireError::Bad("writer poisoned".into()))?;
    w.send(m).map_err(WireError::Io)
}

/// Sends without flushing (pieces of a stream; the stream's last message flushes).
fn queue(out: &Out, m: &Msg) -> Result<(), WireError> {
    let mut w = out
        .lock()
        .map_err(|_| WireError::Bad("writer poisoned".into()))?;
    w.queue(m).map_err(WireError::Io)
}

struct Agent {
    ep: Option<LocalEndpoint>,
    out: Out,
    rx: Receiver<Result<Msg, String>>,
}

fn failure(e: EndpointError) -> Msg {
    Msg::Error {
        root_gone: matches!(e, EndpointError::RootGone { .. }),
        message: e.to_string(),
    }
}

impl Agent {
    fn ep(&mut self) -> Result<&mut LocalEndpoint, Msg> {
        self.ep.as_mut().ok_or(Msg::Error {
            root_gone: false,
            message: "no directory opened".into(),
        })
    }

    /// Handles one request; the answer to send, if any (streams send their own).
    fn handle(&mut self, m: Msg) -> Result<Option<Msg>, WireError> {
        Ok(Some(match m {
            Msg::Open {
                root,
                alpha,
                create,
                must_exist,
                session,
                ignore,
            } => self.open(root, alpha, create, must_exist, &session, ignore),
            Msg::SetIgnore(i) => match self.ep() {
                Ok(ep) => ep.set_ignore(&i).map_or_else(failure, |()| Msg::Ok),
                Err(m) => m,
            },
            Msg::Scan(paths) => match self.ep() {
                Ok(ep) => scan(ep, paths),
                Err(m) => m,
            },
            Msg::ReadSmall { path, limit } => match self.ep() {
                Ok(ep) => ep.read_small(&path, limit).map_or_else(failure, Msg::Small),
                Err(m) => m,
            },
            Msg::StageLocal(wanted) => match self.ep() {
                Ok(ep) => ep.stage_local(&wanted).map_or_else(failure, Msg::Missing),
                Err(m) => m,
            },
            Msg::Signature { path, digest } => match self.ep() {
                Ok(ep) => ep
                    .signature(&path, &digest)
                    .map_or_else(failure, Msg::SignatureIs),
                Err(m) => m,
            },
            Msg::Read(items) => {
                self.read(items)?;
                return Ok(None);
            }
            Msg::Transition { changes, backup } => {
                let backup: HashSet<_> = backup.into_iter().collect();
                let base = self.ep.as_ref().and_then(|ep| ep.base_opener());
                let (tx, placeholder) = sync_channel(0);
                drop(tx);
                let rx = std::mem::replace(&mut self.rx, placeholder);
                let mut feed = WireFeed::new(rx, base);
                let res = match self.ep.as_mut() {
                    Some(ep) => ep.transition(&changes, &backup, &mut feed),
                    None => Err(EndpointError::Other("no directory opened".into(), "agent")),
                };
                // Take what the transition did not, to stay in step.
                while feed.next().is_some() {}
                let broken = feed.broken.take();
                self.rx = feed.rx;
                if let Some(e) = broken {
                    return Err(WireError::Bad(e));
                }
                match res {
                    Ok(outs) => Msg::Outcomes(outs),
                    Err(e) => failure(e),
                }
            }
            Msg::DiscardStaged => {
                if let Some(ep) = self.ep.as_mut() {
                    ep.discard_staged();
                }
                Msg::Ok
            }
            Msg::StartWatch => self.watch(),
            Msg::KeepBackups(policy) => match self.ep() {
                Ok(ep) => {
                    ep.set_retention(policy);
                    Msg::Ok
                }
                Err(m) => m,
            },
            Msg::SaveCache => match self.ep() {
                Ok(ep) => ep.save_cache().map_or_else(failure, |()| Msg::Ok),
                Err(m) => m,
            },
            Msg::Exec { id, command } => {
                let out = self.out.clone();
                match self.ep() {
                    Ok(ep) => ep
                        .exec(
                            &command,
                            Box::new(move |result| {
                                let _ = send(&out, &Msg::Exited { id, result });
                            }),
                        )
                        .map_or_else(failure, |()| Msg::Ok),
                    Err(m) => m,
                }
            }
            Msg::Cancel => return Ok(None),
            Msg::File { root, op } => {
                Msg::FileAnswer(crate::files::apply(std::path::Path::new(&root), &op))
            }
            other => {
                return Err(WireError::Bad(format!(
                    "unexpected request {:?}",
                    format!("{other:?}").chars().take(40).collect::<String>()
                )));
            }
        }))
    }

    fn open(
        &mut self,
        root: String,
        alpha: bool,
        create: bool,
        must_exist: bool,
        session: &str,
        ignore: IgnoreSpec,
    ) -> Msg {
        let side = if alpha { Side::Alpha } else { Side::Beta };
        let which = side.as_str();
        let refuse = |usage: bool, message: String| Msg::Refused { usage, message };
        if session.is_empty()
            || session.len() > 64
            || !session.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return refuse(true, format!("bad session key {session:?}"));
        }
        let path = PathBuf::from(&root);
        let root = match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => match path.canonicalize() {
                Ok(c) => c,
                Err(e) => return refuse(false, format!("{which} '{root}': {e}")),
            },
            Ok(_) => {
                return refuse(
                    true,
                    format!("{which} '{root}' is not a directory (ferry syncs directories)"),
                );
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let parent = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let Some(name) = path.file_name() else {
                    return refuse(true, format!("{which} '{root}' has no name"));
                };
                let parent = match parent.canonicalize() {
                    Ok(p) if p.is_dir() => p,
                    _ if create || must_exist => {
                        return refuse(
                            true,
                            format!(
                                "{which} '{root}' does not exist and neither does its parent '{}'",
                                parent.display()
                            ),
                        );
                    }
                    _ => path.parent().map(Path::to_path_buf).unwrap_or_default(),
                };
                let full = parent.join(name);
                if create {
                    if let Err(e) = std::fs::create_dir(&full) {
                        if e.kind() != io::ErrorKind::AlreadyExists {
                            return refuse(false, format!("cannot create {which} '{root}': {e}"));
                        }
                    }
                } else if must_exist {
                    return refuse(true, format!("{which} '{root}' does not exist"));
                }
                full
            }
            Err(e) => return refuse(false, format!("{which} '{root}': {e}")),
        };
        if root.to_str().is_none() {
            return refuse(
                true,
                format!("{which} '{}' is not a valid UTF-8 path", root.display()),
            );
        }
        let state = state_dir(&root, session);
        match LocalEndpoint::new(side, root.clone(), &state, &ignore) {
            Ok(mut ep) => {
                // `ferry sync ./a host:.` serves a home holding the agent itself and its state.
                ep.hide_own(own_dirs(&state));
                let backup_root = ep.backup_root().display().to_string();
                self.ep = Some(ep);
                Msg::Opened {
                    root: root.display().to_string(),
                    backup_root,
                }
            }
            Err(e) => refuse(false, e.to_string()),
        }
    }

    fn watch(&mut self) -> Msg {
        let (tx, rx) = sync_channel(1024);
        let ep = match self.ep() {
            Ok(ep) => ep,
            Err(m) => return m,
        };
        if let Err(e) = ep.watch(tx) {
            return failure(e);
        }
        let out = self.out.clone();
        std::thread::spawn(move || {
            use crate::endpoint::WatchEvent;
            while let Ok(first) = rx.recv() {
                // Everything already waiting goes in one message.
                let mut paths = Vec::new();
                let mut other = Vec::new();
                for ev in std::iter::once(first).chain(rx.try_iter()) {
                    match ev {
                        WatchEvent::Paths(_, p) => paths.extend(p),
                        WatchEvent::Rescan(_) => other.push(WatchWire::Rescan),
                        WatchEvent::Failed(_, m) => other.push(WatchWire::Failed(m)),
                        WatchEvent::Disconnected(..)
                        | WatchEvent::Stop
                        | WatchEvent::HookDone
                        | WatchEvent::Request(..) => {}
                    }
                    if paths.len() >= 4096 {
                        break;
                    }
                }
                let mut msgs = other;
                if !paths.is_empty() {
                    msgs.push(WatchWire::Paths(paths));
                }
                for m in msgs {
                    if send(&out, &Msg::Watch(m)).is_err() {
                        return;
                    }
                }
            }
        });
        Msg::Ok
    }

    /// Streams content (see `Msg::Read`), stopping early on `Cancel`.
    fn read(&mut self, items: Vec<Item>) -> Result<(), WireError> {
        let stop = AtomicBool::new(false);
        let mut sink = WireSink {
            out: &self.out,
            rx: &self.rx,
            stop: &stop,
            error: None,
        };
        match self.ep.as_mut() {
            Some(ep) => {
                let _ = crate::copy::read_by_open(ep, &items, &stop, &mut sink);
            }
            None => {
                for _ in &items {
                    if sink
                        .put(Piece::Failed("no directory opened".into()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        if let Some(e) = sink.error {
            return Err(e);
        }
        send(&self.out, &Msg::ReadDone)
    }
}

/// Content going out as messages; a `Cancel` from ferry stops the reading.
struct WireSink<'a> {
    out: &'a Out,
    rx: &'a Receiver<Result<Msg, String>>,
    stop: &'a AtomicBool,
    error: Option<WireError>,
}

impl Sink for WireSink<'_> {
    fn put(&mut self, p: Piece) -> Result<(), Gone> {
        if let Ok(Ok(Msg::Cancel)) = self.rx.try_recv() {
            self.stop.store(true, Ordering::SeqCst);
        }
        queue(self.out, &Msg::from(p)).map_err(|e| {
            self.error = Some(e);
            Gone
        })
    }
}

/// Content arriving for a transition: `Item`, then `Data`... `End` (or one `Delta` or
/// `Failed`), until `ItemsDone`.
struct WireFeed {
    rx: Receiver<Result<Msg, String>>,
    base: Option<BaseOpener>,
    done: bool,
    in_item: bool,
    want: Option<Wanted>,
    cur: Vec<u8>,
    pos: usize,
    /// The stream broke the protocol (the connection is then given up).
    broken: Option<String>,
}

impl WireFeed {
    fn new(rx: Receiver<Result<Msg, String>>, base: Option<BaseOpener>) -> Self {
        WireFeed {
            rx,
            base,
            done: false,
            in_item: false,
            want: None,
            cur: Vec::new(),
            pos: 0,
            broken: None,
        }
    }

    fn take(&mut self) -> Option<Msg> {
        match self.rx.recv() {
            Ok(Ok(m)) => Some(m),
            Ok(Err(e)) => {
                self.broken = Some(e);
                self.done = true;
                None
            }
            Err(_) => {
                self.broken = Some("connection closed".into());
                self.done = true;
                None
            }
        }
    }
}

impl Feed for WireFeed {
    fn next(&mut self) -> Option<(Wanted, &mut dyn Read)> {
        let mut sink = [0u8; 64 * 1024];
        while self.in_item {
            if matches!(self.read(&mut sink), Ok(0) | Err(_)) {
                self.in_item = false;
            }
        }
        self.cur.clear();
        self.pos = 0;
        if self.done {
            return None;
        }
        match self.take()? {
            Msg::Item(want) => {
                self.want = Some(want);
                self.in_item = true;
                Some((want, self as &mut dyn Read))
            }
            Msg::ItemsDone => {
                self.done = true;
                None
            }
            other => {
                self.broken = Some(format!(
                    "expected Item, got {:?}",
                    format!("{other:?}").chars().take(40).collect::<String>()
                ));
                self.done = true;
                None
            }
        }
    }
}

impl Read for WireFeed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if !self.in_item {
                return Ok(0);
            }
            let Some(m) = self.take() else {
                self.in_item = false;
                return Err(io::Error::other("connection closed"));
            };
            match m {
                Msg::Data(d) => {
                    self.cur = d;
                    self.pos = 0;
                }
                Msg::Hole(n) => {
                    self.cur = super::wire::hole_bytes(n).map_err(|e| {
                        self.in_item = false;
                        self.done = true;
                        self.broken = Some(e.clone());
                        io::Error::other(e)
                    })?;
                    self.pos = 0;
                }
                Msg::End => {
                    self.in_item = false;
                    return Ok(0);
                }
                Msg::Failed(f) => {
                    self.in_item = false;
                    return Err(io::Error::other(f));
                }
                Msg::Delta { base, delta, .. } => {
                    self.in_item = false;
                    let size = self.want.map_or(0, |w| w.size);
                    let rebuilt = match &self.base {
                        Some(open) => open(&base).and_then(|b| delta::apply(&b, &delta, size)),
                        None => Err(io::Error::other("no base files here")),
                    };
                    self.cur = rebuilt?;
                    self.pos = 0;
                }
                _ => {
                    self.in_item = false;
                    self.done = true;
                    self.broken = Some("unexpected message in a content stream".into());
                    return Err(io::Error::other("protocol error"));
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A scan, answered with the whole tree or just what changed where it looked.
fn scan(ep: &mut LocalEndpoint, paths: Option<Vec<RelPath>>) -> Msg {
    // The places a partial scan can change: each path, climbed to the nearest ancestor the
    // tree knows as a directory (as the scanner does).
    let targets = match (&paths, ep.tree()) {
        (Some(ps), Some(tree)) if !ps.iter().any(RelPath::is_root) => {
            let mut t = Some(Vec::new());
            for p in ps {
                let mut target = p.clone();
                while let Some(parent) = target.parent() {
                    if matches!(tree.get(parent.as_str()), Some(Entry::Directory(_))) {
                        break;
                    }
                    target = parent;
                }
                match &mut t {
                    // The root itself: everything is looked at.
                    _ if target.is_root() => {
                        t = None;
                        break;
                    }
                    Some(v) => v.push(target),
                    None => {}
                }
            }
            t
        }
        _ => None,
    };
    let req = match &paths {
        Some(ps) if targets.is_some() => ScanRequest::Paths(ps.iter().cloned().collect()),
        _ => ScanRequest::Full,
    };
    let report = match &req {
        // Nothing to look at (the other side's events started this cycle).
        ScanRequest::Paths(ps) if ps.is_empty() => Default::default(),
        _ => match ep.scan(&req) {
            Ok(r) => r,
            Err(e) => return failure(e),
        },
    };
    let tree = match targets {
        Some(ts) => {
            let tree = ep.tree();
            // A place inside another one is covered by it (and, once that one is gone, would
            // name a path without a parent).
            let all: HashSet<RelPath> = ts.iter().cloned().collect();
            let mut seen = HashSet::new();
            TreeUpdate::At(
                ts.into_iter()
                    .filter(|t| {
                        let mut up = t.parent();
                        while let Some(p) = up {
                            if all.contains(&p) {
                                return false;
                            }
                            up = p.parent();
                        }
                        true
                    })
                    .filter(|t| seen.insert(t.clone()))
                    .map(|t| {
                        let now = tree.and_then(|tr| tr.get(t.as_str())).cloned();
                        (t, now)
                    })
                    .collect(),
            )
        }
        None => TreeUpdate::Whole(ep.tree().cloned()),
    };
    Msg::Scanned {
        entries: report.entries,
        hashed_files: report.hashed_files,
        hashed_bytes: report.hashed_bytes,
        tree,
        notes: report.notes,
    }
}

/// The agent's own directories, never synced from this side (issue 9 item 13): its install
/// directory (`.../.ferry` when it runs as `.ferry/agent/<tag>/ferry`) and the state directory
/// of all its sessions (`.../ferry` above `agent/<session>`).
fn own_dirs(state: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        let install = exe
            .parent()
            .and_then(Path::parent)
            .filter(|a| a.file_name().is_some_and(|n| n == "agent"))
            .and_then(Path::parent)
            .filter(|f| f.file_name().is_some_and(|n| n == ".ferry"));
        out.extend(install.map(Path::to_path_buf));
    }
    let ferry_state = state
        .parent()
        .filter(|a| a.file_name().is_some_and(|n| n == "agent"))
        .and_then(Path::parent);
    out.push(ferry_state.unwrap_or(state).to_path_buf());
    out
}

/// The agent's state for one session (staging, backups, stat cache): under the user's state
/// directory, or, where there is none that can be written (a container without a home), in
/// the root's hidden `.ferry-staging`, which is never synced.
fn state_dir(root: &Path, session: &str) -> PathBuf {
    let home = directories::BaseDirs::new().map(|b| b.home_dir().to_path_buf());
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| home.map(|h| h.join(".local/state")));
    if let Some(b) = base {
        let dir = b.join("ferry").join("agent").join(session);
        if std::fs::create_dir_all(&dir).is_ok() {
            return dir;
        }
    }
    root.join(crate::fs::ignore::STAGING_DIR_NAME)
        .join(format!("agent-{session}"))
}
