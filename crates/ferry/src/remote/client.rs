//! [`RemoteEndpoint`]: an [`Endpoint`] served by an agent over a [`Transport`].
//!
//! Requests go out one at a time from the engine's threads; a reader thread takes everything
//! the agent sends, hands answers back in order and turns watch messages into [`WatchEvent`]s.
//! Everything the agent says is checked before it is believed (see `wire::check_entry`): a
//! peer that breaks the rules gets a clear error and no write anywhere.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use ferry_core::{Change, Digest, Entry, RelPath, apply_changes};

use super::transport::{ConnectError, Link, Transport};
use super::wire::{
    FEATURE_ZSTD, FrameReader, FrameWriter, Hello, Msg, TreeUpdate, WatchWire, WireError,
    check_entry, check_outcomes, write_preface,
};
use crate::copy::{self, CHUNK, Gone, Item, Piece, Sink};
use crate::endpoint::{
    Content, Endpoint, EndpointError, Feed, IgnoreSpec, Outcome, ScanReport, ScanRequest, Side,
    WatchEvent,
};
use crate::hooks::{ExecDone, ExecResult};

/// Answers waiting to be taken, at most (content streams are flow-controlled by this).
const REPLIES: usize = 64;

type Watcher = Arc<Mutex<Option<SyncSender<WatchEvent>>>>;
/// Hooks started on this connection and not ended yet, by id (see `Msg::Exec`).
type Execs = Arc<Mutex<HashMap<u64, ExecDone>>>;

struct Conn {
    writer: FrameWriter<Box<dyn Write + Send>>,
    replies: Receiver<Result<Msg, String>>,
    received: Arc<AtomicU64>,
    /// Set by the reader thread when the stream ended.
    dead: Arc<AtomicBool>,
    stderr: Arc<Mutex<String>>,
    execs: Execs,
    _guard: Box<dyn Send>,
}

/// A directory on the far side of an agent.
pub struct RemoteEndpoint {
    side: Side,
    url: String,
    transport: Box<dyn Transport>,
    root: String,
    session: String,
    ignore: IgnoreSpec,
    conn: Option<Conn>,
    tree: Option<Entry>,
    backup_root: String,
    watch: Watcher,
    watching: bool,
    overflow: Arc<AtomicBool>,
    /// Content the agent could not find locally this cycle, and what was sent of it.
    missing: HashSet<Digest>,
    sent: HashSet<Digest>,
    /// Wire bytes of connections that ended.
    wire_before: u64,
    /// The agent broke the protocol: every later call fails with this, no reconnection.
    poisoned: Option<String>,
    /// `--keep-backups`, told to every agent this side connects to.
    retention: Option<crate::state::Retention>,
    /// The id of the last hook started (see `Msg::Exec`).
    last_exec: u64,
}

/// Why opening a remote endpoint failed.
#[derive(Debug)]
pub struct OpenError {
    /// The user's input is at fault (exit code 2).
    pub usage: bool,
    pub message: String,
}

impl From<ConnectError> for OpenError {
    fn from(e: ConnectError) -> Self {
        OpenError {
            usage: e.usage,
            message: e.message,
        }
    }
}

impl RemoteEndpoint {
    /// True when the session syncs symlinks raw: the agent may then send any link target.
    fn raw_links(&self) -> bool {
        self.ignore.meta.symlinks == crate::fs::meta::Symlinks::Raw
    }

    /// Connects, checks the agent and opens `root` there (`create`: make it if missing).
    pub fn open(
        side: Side,
        url: String,
        transport: Box<dyn Transport>,
        root: String,
        create: bool,
        session: String,
        ignore: &IgnoreSpec,
    ) -> Result<RemoteEndpoint, OpenError> {
        let mut ep = RemoteEndpoint {
            side,
            url,
            transport,
            root,
            session,
            ignore: ignore.clone(),
            conn: None,
            tree: None,
            backup_root: String::new(),
            watch: Arc::new(Mutex::new(None)),
            watching: false,
            overflow: Arc::new(AtomicBool::new(false)),
            missing: HashSet::new(),
            sent: HashSet::new(),
            wire_before: 0,
            poisoned: None,
            retention: None,
            last_exec: 0,
        };
        ep.connect(create, true)?;
        Ok(ep)
    }

    fn connect(&mut self, create: bool, must_exist: bool) -> Result<(), OpenError> {
        self.hang_up();
        let before = self.transport.identity();
        let link = self.transport.connect()?;
        // A new endpoint at the same address (a recreated container) gets its root made, as
        // at the start of a session: the engine fills it from the other side.
        let create = create || (before.is_some() && self.transport.identity() != before);
        let compress = self.transport.compress();
        let conn = start(
            link,
            self.side,
            self.watch.clone(),
            self.overflow.clone(),
            compress,
        )
        .map_err(|e| OpenError {
            usage: false,
            message: format!("{}: {e}", self.url),
        })?;
        self.conn = Some(conn);
        let opened = self.call(&Msg::Open {
            root: self.root.clone(),
            alpha: self.side == Side::Alpha,
            create,
            must_exist,
            session: self.session.clone(),
            ignore: self.ignore.clone(),
        });
        match opened {
            Ok(Msg::Opened { root, backup_root }) => {
                self.root = root;
                self.backup_root = backup_root;
            }
            Ok(Msg::Refused { usage, message }) => {
                self.hang_up();
                return Err(OpenError { usage, message });
            }
            Ok(other) => {
                self.hang_up();
                return Err(OpenError {
                    usage: false,
                    message: format!(
                        "{}: the agent broke the protocol: {}",
                        self.url,
                        unexpected(&other, "Opened")
                    ),
                });
            }
            Err(e) => {
                self.hang_up();
                return Err(OpenError {
                    usage: false,
                    message: e.to_string(),
                });
            }
        }
        if let Some(policy) = self.retention {
            self.expect_ok(&Msg::KeepBackups(policy))
                .map_err(|e| OpenError {
                    usage: false,
                    message: e.to_string(),
                })?;
        }
        if self.watching {
            self.expect_ok(&Msg::StartWatch).map_err(|e| OpenError {
                usage: false,
                message: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// Tells the agent how long to keep this side's backups (it prunes them now), and every
    /// agent a reconnection starts.
    pub fn set_retention(&mut self, policy: crate::state::Retention) -> Result<(), EndpointError> {
        self.retention = Some(policy);
        self.expect_ok(&Msg::KeepBackups(policy))
    }

    fn hang_up(&mut self) {
        if let Some(c) = self.conn.take() {
            self.wire_before += c.writer.sent + c.received.load(Ordering::Relaxed);
        }
        self.tree = None;
        self.missing.clear();
        self.sent.clear();
    }

    fn lost(&mut self, why: String) -> EndpointError {
        let mut message = why;
        if let Some(c) = &self.conn {
            let err = c
                .stderr
                .lock()
                .map(|s| s.trim().to_owned())
                .unwrap_or_default();
            if !err.is_empty() {
                let last = err.lines().last().unwrap_or_default();
                message = format!("{message} (agent: {last})");
            }
        }
        self.hang_up();
        EndpointError::Lost {
            side: self.side.as_str(),
            message,
        }
    }

    /// The agent broke the protocol: no retry, nothing more is asked of it.
    fn violation(&mut self, why: String) -> EndpointError {
        self.hang_up();
        let message = format!("{}: the agent broke the protocol: {why}", self.url);
        self.poisoned = Some(message.clone());
        EndpointError::Other(message, self.side.as_str())
    }

    fn send(&mut self, m: &Msg) -> Result<(), EndpointError> {
        if let Some(p) = &self.poisoned {
            return Err(EndpointError::Other(p.clone(), self.side.as_str()));
        }
        let Some(c) = self.conn.as_mut() else {
            return Err(self.lost("not connected".into()));
        };
        if let Err(e) = c.writer.send(m) {
            return Err(self.lost(e.to_string()));
        }
        Ok(())
    }

    fn recv(&mut self) -> Result<Msg, EndpointError> {
        if let Some(p) = &self.poisoned {
            return Err(EndpointError::Other(p.clone(), self.side.as_str()));
        }
        let Some(c) = self.conn.as_mut() else {
            return Err(self.lost("not connected".into()));
        };
        match c.replies.recv() {
            Ok(Ok(Msg::Error { root_gone, message })) => Err(if root_gone {
                EndpointError::RootGone {
                    side: self.side.as_str(),
                    root: self.url.clone(),
                }
            } else {
                EndpointError::Other(format!("{}: {message}", self.url), self.side.as_str())
            }),
            Ok(Ok(m)) => Ok(m),
            Ok(Err(e)) if e.starts_with("bad frame from the peer") => Err(self.violation(e)),
            Ok(Err(e)) => Err(self.lost(e)),
            Err(_) => Err(self.lost("connection closed".into())),
        }
    }

    fn call(&mut self, m: &Msg) -> Result<Msg, EndpointError> {
        self.send(m)?;
        self.recv()
    }

    fn expect_ok(&mut self, m: &Msg) -> Result<(), EndpointError> {
        match self.call(m)? {
            Msg::Ok => Ok(()),
            other => Err(self.violation(unexpected(&other, "Ok"))),
        }
    }
}

fn unexpected(got: &Msg, wanted: &str) -> String {
    let name = format!("{got:?}");
    let name: String = name.chars().take_while(|c| c.is_alphanumeric()).collect();
    format!("sent {name} where {wanted} was due")
}

/// One file tool operation on `loc`'s directory, through an agent started for it (the
/// session's own connection stays the engine's).
pub fn file_op(
    loc: &super::Location,
    op: &crate::files::FileOp,
) -> Result<crate::files::FileAnswer, String> {
    let root = match loc {
        super::Location::Local(p)
        | super::Location::Docker { path: p, .. }
        | super::Location::Ssh { path: p, .. }
        | super::Location::K8s { path: p, .. } => p.clone(),
    };
    let mut transport = super::transport::for_location(loc).map_err(|e| e.message)?;
    let link = transport.connect().map_err(|e| e.message)?;
    let conn = start(
        link,
        Side::Beta,
        Arc::new(Mutex::new(None)),
        Arc::new(AtomicBool::new(false)),
        transport.compress(),
    )
    .map_err(|e| format!("{}: {e}", loc.url()))?;
    let mut writer = conn.writer;
    writer
        .send(&Msg::File {
            root,
            op: op.clone(),
        })
        .map_err(|e| format!("{}: {e}", loc.url()))?;
    match conn.replies.recv() {
        Ok(Ok(Msg::FileAnswer(a))) => Ok(a),
        Ok(Ok(other)) => Err(format!(
            "{}: the agent broke the protocol: {}",
            loc.url(),
            unexpected(&other, "FileAnswer")
        )),
        Ok(Err(e)) => Err(format!("{}: {e}", loc.url())),
        Err(_) => Err(format!("{}: the agent closed the connection", loc.url())),
    }
}

/// Handshake, then the reader thread.
fn start(
    link: Link,
    side: Side,
    watch: Watcher,
    overflow: Arc<AtomicBool>,
    compress: bool,
) -> Result<Conn, WireError> {
    let Link {
        reader,
        mut writer,
        guard,
        stderr,
    } = link;
    write_preface(&mut writer)?;
    let mut writer = FrameWriter::new(writer);
    let mut reader = FrameReader::new(reader);
    writer.send(&Msg::Hello(Hello {
        version: env!("CARGO_PKG_VERSION").into(),
        features: if compress { FEATURE_ZSTD } else { 0 },
        os: std::env::consts::OS.into(),
        arch: std::env::consts::ARCH.into(),
    }))?;
    let theirs = match reader.recv()? {
        Msg::Hello(h) => h,
        other => return Err(WireError::Bad(unexpected(&other, "Hello"))),
    };
    if compress && theirs.features & FEATURE_ZSTD != 0 {
        writer.set_compress(true);
    }
    let (tx, rx) = sync_channel(REPLIES);
    let received = Arc::new(AtomicU64::new(reader.received));
    let dead = Arc::new(AtomicBool::new(false));
    let execs: Execs = Arc::default();
    let (r2, d2, e2) = (received.clone(), dead.clone(), execs.clone());
    std::thread::Builder::new()
        .name("ferry-remote".into())
        // Decoding a deep tree recurses once per level (bounded by `MAX_DEPTH`).
        .stack_size(256 << 20)
        .spawn(move || {
            let to = Listeners {
                side,
                watch,
                overflow,
                received: r2,
                dead: d2,
                execs: e2,
            };
            read_loop(reader, tx, to)
        })
        .map_err(WireError::Io)?;
    Ok(Conn {
        writer,
        replies: rx,
        received,
        dead,
        stderr,
        execs,
        _guard: guard,
    })
}

/// Where the reader thread hands what is not an answer.
struct Listeners {
    side: Side,
    watch: Watcher,
    overflow: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    dead: Arc<AtomicBool>,
    execs: Execs,
}

fn read_loop(
    mut reader: FrameReader<Box<dyn Read + Send>>,
    tx: SyncSender<Result<Msg, String>>,
    to: Listeners,
) {
    let Listeners {
        side,
        watch,
        overflow,
        received,
        dead,
        execs,
    } = to;
    // Set when ferry hung up itself (nobody takes answers any more): no `Disconnected` then.
    let mut dropped = false;
    let why = loop {
        let m = reader.recv();
        received.store(reader.received, Ordering::Relaxed);
        match m {
            Ok(Msg::Watch(w)) => {
                let ev = match w {
                    WatchWire::Paths(p) => WatchEvent::Paths(side, p),
                    WatchWire::Rescan => WatchEvent::Rescan(side),
                    WatchWire::Failed(m) => WatchEvent::Failed(side, m),
                };
                if let Ok(g) = watch.lock() {
                    if let Some(w) = g.as_ref() {
                        if w.try_send(ev).is_err() {
                            overflow.store(true, Ordering::SeqCst);
                        }
                    }
                }
            }
            Ok(Msg::Exited { id, result }) => {
                // An id nobody waits for (never started, or already ended) is dropped.
                let done = execs.lock().ok().and_then(|mut e| e.remove(&id));
                if let Some(done) = done {
                    done(result.bounded());
                }
            }
            Ok(m) => {
                if tx.send(Ok(m)).is_err() {
                    dropped = true;
                    break "ferry hung up".to_owned();
                }
            }
            Err(WireError::Closed) => break "the agent closed the connection".to_owned(),
            Err(e) => break e.to_string(),
        }
    };
    dead.store(true, Ordering::SeqCst);
    // Hooks still running there are over as far as this side can tell.
    let waiting: Vec<ExecDone> = execs
        .lock()
        .map(|mut e| e.drain().map(|(_, d)| d).collect())
        .unwrap_or_default();
    for done in waiting {
        done(ExecResult::failed(format!(
            "the connection to the agent was lost while the hook ran: {why}"
        )));
    }
    if dropped {
        return;
    }
    let _ = tx.send(Err(why.clone()));
    if let Ok(g) = watch.lock() {
        if let Some(w) = g.as_ref() {
            let _ = w.try_send(WatchEvent::Disconnected(side, why));
        }
    }
}

impl Endpoint for RemoteEndpoint {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn set_ignore(&mut self, spec: &IgnoreSpec) -> Result<(), EndpointError> {
        self.ignore = spec.clone();
        let m = Msg::SetIgnore(self.ignore.clone());
        self.expect_ok(&m)
    }

    fn scan(&mut self, req: &ScanRequest) -> Result<ScanReport, EndpointError> {
        let m = match req {
            // Nothing to look at on this side (events came from the other): no round trip.
            ScanRequest::Paths(p) if p.is_empty() && self.tree.is_some() => {
                return Ok(ScanReport::default());
            }
            ScanRequest::Paths(p) if self.tree.is_some() => {
                Msg::Scan(Some(p.iter().cloned().collect()))
            }
            _ => Msg::Scan(None),
        };
        match self.call(&m)? {
            Msg::Scanned {
                entries,
                hashed_files,
                hashed_bytes,
                tree,
                notes,
            } => {
                match tree {
                    TreeUpdate::Whole(t) => {
                        if let Some(t) = &t {
                            if !matches!(t, Entry::Directory(_)) {
                                return Err(self.violation("the root is not a directory".into()));
                            }
                            if let Err(e) = check_entry(&RelPath::root(), t, self.raw_links()) {
                                return Err(self.violation(e));
                            }
                        }
                        self.tree = t;
                    }
                    TreeUpdate::At(patches) => {
                        for (p, e) in &patches {
                            if p.is_root() {
                                return Err(
                                    self.violation("a partial scan replaced the root".into())
                                );
                            }
                            if let Some(e) = e {
                                if let Err(err) = check_entry(p, e, self.raw_links()) {
                                    return Err(self.violation(err));
                                }
                            }
                        }
                        let changes: Vec<Change> = patches
                            .into_iter()
                            .map(|(path, new)| {
                                let old = self
                                    .tree
                                    .as_ref()
                                    .and_then(|t| t.get(path.as_str()))
                                    .cloned();
                                Change { path, old, new }
                            })
                            .collect();
                        let mut tree = self.tree.take();
                        for ch in changes {
                            let gone = tree
                                .as_ref()
                                .and_then(|t| t.get(ch.path.as_str()))
                                .is_none();
                            if ch.new.is_none() && gone {
                                // Already absent (inside a place an earlier patch removed).
                                continue;
                            }
                            tree = match apply_changes(tree, std::slice::from_ref(&ch)) {
                                Ok(t) => t,
                                Err(e) => {
                                    return Err(
                                        self.violation(format!("a scan patch does not fit: {e}"))
                                    );
                                }
                            };
                        }
                        self.tree = tree;
                    }
                }
                // Words for a person, from a peer: bounded before they are shown.
                let notes = notes
                    .into_iter()
                    .take(1000)
                    .map(|(p, mut m)| {
                        if m.len() > 4096 {
                            let mut cut = 4096;
                            while !m.is_char_boundary(cut) {
                                cut -= 1;
                            }
                            m.truncate(cut);
                        }
                        (p, m)
                    })
                    .collect();
                Ok(ScanReport {
                    entries,
                    hashed_files,
                    hashed_bytes,
                    notes,
                })
            }
            other => Err(self.violation(unexpected(&other, "Scanned"))),
        }
    }

    fn tree(&self) -> Option<&Entry> {
        self.tree.as_ref()
    }

    fn read_small(&mut self, path: &RelPath, limit: u64) -> Result<Option<Vec<u8>>, EndpointError> {
        match self.call(&Msg::ReadSmall {
            path: path.clone(),
            limit,
        })? {
            Msg::Small(Some(b)) if b.len() as u64 > limit => Err(self.violation(format!(
                "sent {} bytes of {path} where at most {limit} were asked for",
                b.len()
            ))),
            Msg::Small(s) => Ok(s),
            other => Err(self.violation(unexpected(&other, "Small"))),
        }
    }

    fn stage_local(
        &mut self,
        wanted: &[crate::endpoint::Wanted],
    ) -> Result<Vec<Digest>, EndpointError> {
        match self.call(&Msg::StageLocal(wanted.to_vec()))? {
            Msg::Missing(m) => {
                let asked: HashSet<Digest> = wanted.iter().map(|w| w.digest).collect();
                if m.iter().any(|d| !asked.contains(d)) {
                    return Err(self.violation("reported missing content nobody asked for".into()));
                }
                self.missing = m.iter().copied().collect();
                self.sent.clear();
                Ok(m)
            }
            other => Err(self.violation(unexpected(&other, "Missing"))),
        }
    }

    fn open(
        &mut self,
        path: &RelPath,
        digest: &Digest,
    ) -> Result<Box<dyn Read + Send + '_>, EndpointError> {
        // One file through the batched stream (the engine reads through `read_items`).
        struct Collect(Vec<u8>, Option<String>);
        impl Sink for Collect {
            fn put(&mut self, p: Piece) -> Result<(), Gone> {
                match p {
                    Piece::Data(d) => self.0.extend_from_slice(&d),
                    Piece::Failed(f) => self.1 = Some(f),
                    Piece::End | Piece::Delta { .. } => {}
                }
                Ok(())
            }
        }
        let size = match self.tree.as_ref().and_then(|t| t.get(path.as_str())) {
            Some(Entry::File { size, .. }) => *size,
            _ => 0,
        };
        let items = [Item {
            want: crate::endpoint::Wanted {
                digest: *digest,
                uses: 1,
                size,
            },
            path: path.clone(),
            signature: None,
            base_digest: None,
        }];
        let mut c = Collect(Vec::new(), None);
        let _ = self.read_items(&items, &AtomicBool::new(false), &mut c);
        match c.1 {
            Some(f) => Err(EndpointError::Other(f, self.side.as_str())),
            None => Ok(Box::new(std::io::Cursor::new(c.0))),
        }
    }

    fn read_items(
        &mut self,
        items: &[Item],
        stop: &AtomicBool,
        out: &mut dyn Sink,
    ) -> Result<(), Gone> {
        if self.send(&Msg::Read(items.to_vec())).is_err() {
            for _ in items {
                out.put(Piece::Failed("connection lost".into()))?;
            }
            return Ok(());
        }
        let mut cancelled = false;
        let mut left = items.iter();
        let mut cur: Option<&Item> = None;
        let mut got = 0u64;
        loop {
            if !cancelled && stop.load(Ordering::SeqCst) {
                cancelled = self.send(&Msg::Cancel).is_ok();
            }
            let m = match self.recv() {
                Ok(m) => m,
                Err(e) => {
                    if !cancelled {
                        let _ = out.put(Piece::Failed(e.to_string()));
                    }
                    return Err(Gone);
                }
            };
            if matches!(m, Msg::ReadDone) {
                return if cancelled { Err(Gone) } else { Ok(()) };
            }
            let Some(p) = m.into_piece() else {
                let e = self.violation("sent something else in a content stream".into());
                let _ = out.put(Piece::Failed(e.to_string()));
                return Err(Gone);
            };
            if cur.is_none() {
                cur = left.next();
                got = 0;
            }
            let Some(it) = cur else {
                let e = self.violation("sent more content than was asked for".into());
                let _ = out.put(Piece::Failed(e.to_string()));
                return Err(Gone);
            };
            if matches!(p, Piece::Delta { .. }) && it.signature.is_none() {
                let e = self.violation(format!(
                    "sent a delta for {}, which was asked for whole",
                    it.path
                ));
                let _ = out.put(Piece::Failed(e.to_string()));
                return Err(Gone);
            }
            let last = !matches!(p, Piece::Data(_));
            if let Piece::Data(d) = &p {
                got += d.len() as u64;
                if got > it.want.size {
                    // Lying about sizes: the receiver refuses it anyway; stop at once.
                    let e = self.violation(format!(
                        "sent more than {} bytes for {}",
                        it.want.size, it.path
                    ));
                    let _ = out.put(Piece::Failed(e.to_string()));
                    return Err(Gone);
                }
            }
            if last {
                cur = None;
            }
            if !cancelled && out.put(p).is_err() {
                cancelled = self.send(&Msg::Cancel).is_ok();
                if !cancelled {
                    return Err(Gone);
                }
            }
        }
    }

    fn transition(
        &mut self,
        changes: &[Change],
        backup: &HashSet<Digest>,
        feed: &mut dyn Feed,
    ) -> Result<Vec<Outcome>, EndpointError> {
        self.send(&Msg::Transition {
            changes: changes.to_vec(),
            backup: backup.iter().copied().collect(),
        })?;
        // This batch's share of the feed: what it needs that was not found locally nor sent.
        let need = copy::wanted(changes)
            .into_iter()
            .filter(|it| {
                self.missing.contains(&it.want.digest) && !self.sent.contains(&it.want.digest)
            })
            .count();
        let mut buf = vec![0u8; CHUNK];
        for _ in 0..need {
            let Some((want, content)) = feed.next_content() else {
                break;
            };
            self.sent.insert(want.digest);
            let item = Msg::Item(want);
            let Some(c) = self.conn.as_mut() else {
                return Err(self.lost("not connected".into()));
            };
            let res = (|| -> std::io::Result<()> {
                c.writer.queue(&item)?;
                match content {
                    Content::Delta {
                        base,
                        base_digest,
                        delta,
                    } => c.writer.queue(&Msg::Delta {
                        base,
                        base_digest,
                        delta,
                    }),
                    Content::Stream(r) => loop {
                        match r.read(&mut buf) {
                            Ok(0) => return c.writer.queue(&Msg::End),
                            Ok(n) => c
                                .writer
                                .queue(&super::wire::data_or_hole(buf[..n].to_vec()))?,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => return c.writer.queue(&Msg::Failed(e.to_string())),
                        }
                    },
                }
            })();
            if let Err(e) = res {
                return Err(self.lost(e.to_string()));
            }
        }
        self.send(&Msg::ItemsDone)?;
        let outcomes: Vec<Outcome> = match self.recv()? {
            Msg::Outcomes(o) => o,
            other => return Err(self.violation(unexpected(&other, "Outcomes"))),
        };
        if let Err(e) = check_outcomes(changes, &outcomes, self.raw_links()) {
            return Err(self.violation(e));
        }
        // The same bookkeeping as the agent's own: our copy of its tree follows.
        crate::endpoint::follow(&mut self.tree, changes, &outcomes);
        Ok(outcomes)
    }

    fn discard_staged(&mut self) {
        self.missing.clear();
        self.sent.clear();
        if self.conn.is_some() {
            // A failure here shows again at the next call.
            let _ = self.expect_ok(&Msg::DiscardStaged);
        }
    }

    fn watch(&mut self, tx: SyncSender<WatchEvent>) -> Result<(), EndpointError> {
        if let Ok(mut g) = self.watch.lock() {
            *g = Some(tx);
        }
        self.watching = true;
        self.expect_ok(&Msg::StartWatch)
    }

    fn poll_watch(&mut self) -> Option<WatchEvent> {
        if self.overflow.swap(false, Ordering::SeqCst) {
            return Some(WatchEvent::Rescan(self.side));
        }
        None
    }

    fn backup_root(&self) -> PathBuf {
        PathBuf::from(format!("{}:{}", self.url, self.backup_root))
    }

    fn save_cache(&mut self) -> Result<(), EndpointError> {
        if self.conn.is_none() {
            return Ok(());
        }
        self.expect_ok(&Msg::SaveCache)
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn signature(
        &mut self,
        path: &RelPath,
        digest: &Digest,
    ) -> Result<Option<Vec<u8>>, EndpointError> {
        match self.call(&Msg::Signature {
            path: path.clone(),
            digest: *digest,
        })? {
            Msg::SignatureIs(s) => Ok(s),
            other => Err(self.violation(unexpected(&other, "SignatureIs"))),
        }
    }

    fn connected(&self) -> bool {
        self.conn
            .as_ref()
            .is_some_and(|c| !c.dead.load(Ordering::SeqCst))
    }

    fn identity(&self) -> Option<String> {
        self.transport.identity()
    }

    fn reconnect(&mut self) -> Result<(), EndpointError> {
        if let Some(p) = &self.poisoned {
            return Err(EndpointError::Other(p.clone(), self.side.as_str()));
        }
        if self.connected() {
            return Ok(());
        }
        self.connect(false, false).map_err(|e| EndpointError::Lost {
            side: self.side.as_str(),
            message: e.message,
        })
    }

    fn exec(&mut self, command: &str, done: ExecDone) -> Result<(), EndpointError> {
        self.last_exec += 1;
        let id = self.last_exec;
        let Some(c) = self.conn.as_ref() else {
            return Err(self.lost("not connected".into()));
        };
        let execs = c.execs.clone();
        // Registered first: the run may end before its `Ok` arrives.
        if let Ok(mut e) = execs.lock() {
            e.insert(id, done);
        }
        let started = self.call(&Msg::Exec {
            id,
            command: command.to_owned(),
        });
        let forget = || execs.lock().ok().and_then(|mut e| e.remove(&id));
        match started {
            Ok(Msg::Ok) => Ok(()),
            Ok(other) => {
                forget();
                Err(self.violation(unexpected(&other, "Ok")))
            }
            Err(e) => {
                forget();
                Err(e)
            }
        }
    }

    fn wire_bytes(&self) -> u64 {
        self.wire_before
            + self
                .conn
                .as_ref()
                .map_or(0, |c| c.writer.sent + c.received.load(Ordering::Relaxed))
    }
}
