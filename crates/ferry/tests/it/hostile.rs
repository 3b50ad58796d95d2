//! Hostile peers: a fake agent behind a test [`Transport`] speaks the real wire protocol
//! (`ferry::remote::wire`) correctly up to the point where it lies or breaks the rules, while a
//! real [`Engine`] runs one `--once` session (or a watching one) against it. Every case checks
//! what the user is told and that nothing was written outside the local root: each local root
//! sits in a parent directory that also holds a sentinel directory, and the parent is compared
//! before and after, byte for byte.
//!
//! Crashes of the host process (a stack overflow, an allocation failure) would take the whole
//! test binary down, so the cases that could crash run in a child process (see [`isolated`]).
//!
//! The property tests at the end feed arbitrary bytes and mutated frames to
//! [`FrameReader::recv`] (under a counting allocator: no single allocation may pass the frame
//! cap) and hold [`check_entry`] to the naming rules. The counting allocator is this test
//! binary's global allocator; it only counts on a thread that armed it, and passes everything
//! to the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ferry::copy::{Gone, Item, Piece, Sink};
use ferry::endpoint::local::LocalEndpoint;
use ferry::endpoint::{
    BaseOpener, Endpoint, EndpointError, Feed, IgnoreSpec, Outcome, ScanReport, ScanRequest, Side,
    Wanted, WatchEvent,
};
use ferry::engine::{Engine, Finish, RunError, Settings, wake_channel};
use ferry::output::Printer;
use ferry::remote::client::RemoteEndpoint;
use ferry::remote::transport::{ConnectError, Link, Transport};
use ferry::remote::wire::{
    FRAME_MAX, FrameReader, FrameWriter, Hello, MORE, Msg, PROTOCOL, TreeUpdate, WatchWire,
    WireError, ZSTD, check_entry, read_preface, write_preface,
};
use ferry::state::Session;
use ferry_core::{Digest, Entry, Mode, RelPath};
use proptest::prelude::*;
use tempfile::TempDir;

use crate::support::{Fixture, wait_with_deadline};

/// The longest any single wait in these tests may take.
const DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// The process-wide state directory
// ---------------------------------------------------------------------------------------------

/// Points `XDG_STATE_HOME` (where [`Session::open`] keeps sessions) at a temporary directory,
/// once per test process; every test uses its own session key. Removed when the process exits.
fn state_home() {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("ferry-hostile-state-")
            .tempdir_in(temp_base())
            .expect("creating the state temp dir")
            .keep();
        // SAFETY: set once, before any session of these tests is opened; the rest of the test
        // binary runs `ferry` as child processes with their own XDG_STATE_HOME.
        unsafe { std::env::set_var("XDG_STATE_HOME", &dir) };
        extern "C" fn remove_state() {
            if let Some(d) = HOME.get() {
                let _ = fs::remove_dir_all(d);
            }
        }
        // SAFETY: registers a plain function; it only removes a directory at exit.
        unsafe { libc::atexit(remove_state) };
        dir
    });
}

// ---------------------------------------------------------------------------------------------
// The local side: a root next to a sentinel, and what "nothing outside" means
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
    Link(PathBuf),
}

/// Everything under `dir` (not following links), by path relative to `dir`; `skip` (a direct
/// child) is left out.
fn snapshot(dir: &Path, skip: Option<&Path>) -> BTreeMap<PathBuf, Node> {
    fn walk(base: &Path, dir: &Path, skip: Option<&Path>, out: &mut BTreeMap<PathBuf, Node>) {
        let mut entries: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry").path())
            .collect();
        entries.sort();
        for p in entries {
            if Some(p.as_path()) == skip {
                continue;
            }
            let rel = p.strip_prefix(base).expect("below base").to_path_buf();
            let meta = fs::symlink_metadata(&p).expect("lstat");
            if meta.file_type().is_symlink() {
                out.insert(rel, Node::Link(fs::read_link(&p).expect("readlink")));
            } else if meta.is_dir() {
                out.insert(rel, Node::Dir);
                walk(base, &p, skip, out);
            } else {
                out.insert(rel, Node::File(fs::read(&p).expect("reading a file")));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, skip, &mut out);
    out
}

/// A local root (`<parent>/root`) and, next to it, `<parent>/sentinel` with files a write that
/// escaped the root would most likely hit.
struct Place {
    _tmp: TempDir,
    parent: PathBuf,
    root: PathBuf,
    outside: BTreeMap<PathBuf, Node>,
}

impl Place {
    fn new() -> Place {
        Place::with(&[])
    }

    /// A place whose root already holds `files` (path, content).
    fn with(files: &[(&str, &[u8])]) -> Place {
        let tmp = tempfile::Builder::new()
            .prefix("ferry-hostile-")
            .tempdir_in(temp_base())
            .expect("creating a temp dir");
        let parent = tmp.path().canonicalize().expect("canonical temp dir");
        let root = parent.join("root");
        let sentinel = parent.join("sentinel");
        fs::create_dir_all(sentinel.join("deep")).expect("creating the sentinel");
        fs::write(sentinel.join("precious.txt"), "do not touch\n").expect("sentinel file");
        fs::write(sentinel.join("deep/keep"), "keep\n").expect("sentinel file");
        fs::write(parent.join("passwd"), "root:x:0:0\n").expect("sentinel file");
        fs::create_dir(&root).expect("creating the root");
        for (p, content) in files {
            let path = root.join(p);
            fs::create_dir_all(path.parent().expect("a parent")).expect("creating parents");
            fs::write(&path, content).expect("writing a root file");
        }
        let outside = snapshot(&parent, Some(&root));
        Place {
            _tmp: tmp,
            parent,
            root,
            outside,
        }
    }

    fn root_str(&self) -> String {
        self.root.to_str().expect("a UTF-8 temp path").to_owned()
    }

    /// Nothing next to the root changed (the sentinel, the parent's other entries) and nothing
    /// new appeared there.
    fn assert_nothing_outside(&self, case: &str) {
        let now = snapshot(&self.parent, Some(&self.root));
        assert_eq!(
            now,
            self.outside,
            "{case}: something was written outside the root {}",
            self.root.display()
        );
    }

    /// The root holds exactly `expected` (paths relative to the root).
    fn assert_root(&self, case: &str, expected: &BTreeMap<PathBuf, Node>) {
        let now = snapshot(&self.root, None);
        assert_eq!(
            &now, expected,
            "{case}: the root's content is not what it should be"
        );
    }

    /// No symlink in the root leads outside it.
    fn assert_no_escaping_link(&self, case: &str) {
        for (rel, node) in snapshot(&self.root, None) {
            if let Node::Link(target) = node {
                let at = self.root.join(&rel);
                let mut resolved = at.parent().expect("a parent").to_path_buf();
                for c in target.components() {
                    match c {
                        std::path::Component::RootDir => resolved = PathBuf::from("/"),
                        std::path::Component::ParentDir => {
                            resolved.pop();
                        }
                        std::path::Component::CurDir => {}
                        std::path::Component::Normal(n) => resolved.push(n),
                        std::path::Component::Prefix(_) => {}
                    }
                }
                assert!(
                    resolved.starts_with(&self.root),
                    "{case}: symlink {} -> {} leads outside the root",
                    rel.display(),
                    target.display()
                );
            }
        }
    }

    /// Everything that must hold after a hostile run that should have changed nothing.
    fn assert_untouched(&self, case: &str, root_before: &BTreeMap<PathBuf, Node>) {
        self.assert_nothing_outside(case);
        self.assert_root(case, root_before);
    }
}

// ---------------------------------------------------------------------------------------------
// The fake agent
// ---------------------------------------------------------------------------------------------

/// What the fake agent would honestly serve: a tree and the content of its files.
#[derive(Clone)]
struct World {
    tree: Entry,
    content: HashMap<Digest, Vec<u8>>,
}

fn digest(bytes: &[u8]) -> Digest {
    Digest(*blake3::hash(bytes).as_bytes())
}

impl World {
    /// A tree of these files (`a/b/c` creates the directories on the way).
    fn of(files: &[(&str, &[u8])]) -> World {
        let mut tree = Entry::Directory(Default::default());
        let mut content = HashMap::new();
        for (path, bytes) in files {
            let d = digest(bytes);
            content.insert(d, bytes.to_vec());
            insert(&mut tree, path, Entry::file(d.0, bytes.len() as u64, false));
        }
        World { tree, content }
    }
}

/// Puts `e` at `path` in `tree`, creating directories on the way (names are not checked: this
/// is how the lying trees are built).
fn insert(tree: &mut Entry, path: &str, e: Entry) {
    let names: Vec<&str> = path.split('/').collect();
    let mut at = tree;
    for name in &names[..names.len() - 1] {
        let Entry::Directory(children) = at else {
            panic!("{path}: a parent is not a directory");
        };
        at = children
            .entry((*name).to_owned())
            .or_insert_with(|| Entry::Directory(Default::default()));
    }
    let Entry::Directory(children) = at else {
        panic!("{path}: the parent is not a directory");
    };
    children.insert(names[names.len() - 1].to_owned(), e);
}

/// A directory of `children`, names taken as they are.
fn dir(children: Vec<(String, Entry)>) -> Entry {
    Entry::Directory(children.into_iter().collect())
}

/// A partial scan's answer: what is now at each path.
type Patches = Vec<(RelPath, Option<Entry>)>;

fn scanned(tree: Entry) -> Msg {
    Msg::Scanned {
        entries: tree.count() as u64,
        hashed_files: 0,
        hashed_bytes: 0,
        tree: TreeUpdate::Whole(Some(tree)),
        notes: Vec::new(),
    }
}

fn rel(s: &str) -> RelPath {
    RelPath::new(s).unwrap_or_else(|e| panic!("{s:?} is not a valid path: {e}"))
}

/// The name of a message (its variant), for logs.
fn msg_name(m: &Msg) -> String {
    format!("{m:?}")
        .chars()
        .take_while(|c| c.is_alphanumeric())
        .collect()
}

/// A frame as the wire carries it: length (body + 1), flags, body.
fn frame(flags: u8, body: &[u8]) -> Vec<u8> {
    let mut out = ((body.len() + 1) as u32).to_le_bytes().to_vec();
    out.push(flags);
    out.extend_from_slice(body);
    out
}

fn encode(m: &Msg) -> Vec<u8> {
    postcard::to_stdvec(m).expect("encoding a message")
}

/// `m`'s encoding with the (unique) bytes `from` replaced by `to`, of the same length: how
/// messages the types would never let us build (a path `/etc/passwd`) are made.
fn spliced(m: &Msg, from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len(), "a splice keeps the length");
    let mut bytes = encode(m);
    let at = bytes
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("{from:?} is not in the encoded message"));
    bytes[at..at + to.len()].copy_from_slice(to.as_bytes());
    bytes
}

/// What the fake agents of one transport saw and did.
#[derive(Default)]
struct Shared {
    connects: AtomicUsize,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Requests received, as `<connection>:<name>`.
    seen: Mutex<Vec<String>>,
    /// The session's stop flag: set when a host keeps connecting past [`MAX_CONNECTS`], so a
    /// reconnection loop ends the run instead of the test's time.
    stop: Mutex<Option<Arc<AtomicBool>>>,
}

impl Shared {
    fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("seen lock").clone()
    }

    /// Waits for every fake agent thread to end (the host hung up), failing on a panic in one.
    fn join(&self) {
        let threads = std::mem::take(&mut *self.threads.lock().expect("threads lock"));
        let end = Instant::now() + DEADLINE;
        for t in threads {
            while !t.is_finished() {
                assert!(
                    Instant::now() < end,
                    "a fake agent is still running: the host never hung up"
                );
                thread::sleep(Duration::from_millis(5));
            }
            if t.join().is_err() {
                panic!("a fake agent panicked (see its message above)");
            }
        }
    }
}

/// One connection's agent side.
struct Peer {
    r: FrameReader<UnixStream>,
    w: FrameWriter<UnixStream>,
    raw: UnixStream,
}

impl Peer {
    fn send(&mut self, m: &Msg) -> io::Result<()> {
        self.w.send(m)
    }

    /// Raw bytes, after anything still buffered.
    fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.w.flush()?;
        self.raw.write_all(bytes)?;
        self.raw.flush()
    }

    /// Ends the agent's output (the host reads EOF after what was sent).
    fn end_output(&mut self) -> io::Result<()> {
        self.w.flush()?;
        self.raw.shutdown(Shutdown::Write)
    }

    /// Takes a transition's content stream up to `ItemsDone`: (item, bytes) in order.
    fn take_items(&mut self) -> io::Result<Vec<(Wanted, Vec<u8>)>> {
        let mut items: Vec<(Wanted, Vec<u8>)> = Vec::new();
        loop {
            match self.r.recv().map_err(io::Error::other)? {
                Msg::Item(w) => items.push((w, Vec::new())),
                Msg::Data(d) => match items.last_mut() {
                    Some(it) => it.1.extend_from_slice(&d),
                    None => return Err(io::Error::other("Data before any Item")),
                },
                Msg::End | Msg::Failed(_) | Msg::Delta { .. } => {}
                Msg::ItemsDone => return Ok(items),
                other => {
                    return Err(io::Error::other(format!(
                        "{} in a transition's content stream",
                        msg_name(&other)
                    )));
                }
            }
        }
    }

    /// What the real agent would answer, serving `world` (which no transition changes).
    fn honest(&mut self, m: Msg, world: &World) -> io::Result<()> {
        match m {
            Msg::Hello(_) => self.send(&Msg::Hello(Hello {
                version: "0.1.0".into(),
                features: 0,
                os: "linux".into(),
                arch: "x86_64".into(),
            })),
            Msg::Open { root, .. } => self.send(&Msg::Opened {
                root,
                backup_root: "/var/backups/ferry".into(),
            }),
            Msg::SetIgnore(_) | Msg::StartWatch | Msg::SaveCache | Msg::DiscardStaged => {
                self.send(&Msg::Ok)
            }
            Msg::Cancel => Ok(()),
            Msg::ReadSmall { .. } => self.send(&Msg::Small(None)),
            Msg::Scan(_) => self.send(&scanned(world.tree.clone())),
            Msg::StageLocal(list) => {
                self.send(&Msg::Missing(list.iter().map(|w| w.digest).collect()))
            }
            Msg::Signature { .. } => self.send(&Msg::SignatureIs(None)),
            Msg::Read(items) => {
                for it in items {
                    match world.content.get(&it.want.digest) {
                        Some(c) => {
                            if !c.is_empty() {
                                self.w.queue(&Msg::Data(c.clone()))?;
                            }
                            self.w.queue(&Msg::End)?;
                        }
                        None => self.w.queue(&Msg::Failed("no such content".into()))?,
                    }
                }
                self.send(&Msg::ReadDone)
            }
            Msg::Transition { changes, .. } => {
                self.take_items()?;
                let outs = changes
                    .into_iter()
                    .map(|c| Outcome {
                        path: c.path,
                        now: c.new,
                        errors: Vec::new(),
                        backups: Vec::new(),
                    })
                    .collect();
                self.send(&Msg::Outcomes(outs))
            }
            other => Err(io::Error::other(format!(
                "the fake agent got an unexpected {}",
                msg_name(&other)
            ))),
        }
    }
}

/// A request handler: answers (or does not) on the peer; `Err` ends the agent (it closes the
/// connection).
type Handler = Arc<dyn Fn(&mut Peer, Msg) -> io::Result<()> + Send + Sync>;

/// An agent that serves `world` honestly except where `lie` takes a request (returns `None`
/// for the ones it leaves to the honest agent).
fn agent(
    world: World,
    lie: impl Fn(&mut Peer, &Msg) -> Option<io::Result<()>> + Send + Sync + 'static,
) -> Handler {
    Arc::new(move |peer, m| match lie(peer, &m) {
        Some(r) => r,
        None => peer.honest(m, &world),
    })
}

/// A transport whose `connect` starts a fake agent on a socket pair.
struct FakeTransport {
    handler: Handler,
    shared: Arc<Shared>,
}

/// Hangs up both ways when the host drops the link (the agent then sees EOF).
struct Hangup(UnixStream);

impl Drop for Hangup {
    fn drop(&mut self) {
        let _ = self.0.shutdown(Shutdown::Both);
    }
}

/// At most this many connections per transport (the engine reconnects after a lost link; a
/// `--once` run has at most 10 cycles).
const MAX_CONNECTS: usize = 12;

impl Transport for FakeTransport {
    fn connect(&mut self) -> Result<Link, ConnectError> {
        let n = self.shared.connects.fetch_add(1, Ordering::SeqCst);
        let failed = |message: String| ConnectError {
            usage: false,
            message,
        };
        if n >= MAX_CONNECTS {
            if let Some(stop) = &*self.shared.stop.lock().expect("stop lock") {
                stop.store(true, Ordering::SeqCst);
            }
            return Err(failed(format!("fake transport: {n} connections already")));
        }
        let (host, agent_end) = UnixStream::pair().map_err(|e| failed(e.to_string()))?;
        let handler = self.handler.clone();
        let shared = self.shared.clone();
        let t = thread::Builder::new()
            .name(format!("fake-agent-{n}"))
            .spawn(move || serve_fake(agent_end, n, &handler, &shared))
            .map_err(|e| failed(e.to_string()))?;
        self.shared.threads.lock().expect("threads lock").push(t);
        let clone = || host.try_clone().map_err(|e| failed(e.to_string()));
        // The transports read the agent's preface themselves (`greet`): the link starts after
        // it, so the fake agent does not write one.
        Ok(Link {
            reader: Box::new(clone()?),
            guard: Box::new(Hangup(clone()?)),
            writer: Box::new(host),
            stderr: Arc::new(Mutex::new(String::new())),
        })
    }

    fn compress(&self) -> bool {
        false
    }
}

fn serve_fake(sock: UnixStream, conn: usize, handler: &Handler, shared: &Shared) {
    let note = |s: String| shared.seen.lock().expect("seen lock").push(s);
    let mut input = match sock.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    };
    if let Err(e) = read_preface(&mut input) {
        note(format!("{conn}:bad preface from the host: {e}"));
        return;
    }
    let (Ok(r), Ok(w)) = (sock.try_clone(), sock.try_clone()) else {
        return;
    };
    let mut peer = Peer {
        r: FrameReader::new(r),
        w: FrameWriter::new(w),
        raw: sock,
    };
    loop {
        let m = match peer.r.recv() {
            Ok(m) => m,
            Err(_) => return,
        };
        let name = match &m {
            Msg::Scan(Some(_)) => "ScanPaths".to_owned(),
            m => msg_name(m),
        };
        note(format!("{conn}:{name}"));
        if handler(&mut peer, m).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running a session against it
// ---------------------------------------------------------------------------------------------

/// Messages seen by [`Spy`]: errors returned, content failures, per-path outcome errors.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, s: String) {
        self.0.lock().expect("log lock").push(s);
    }

    fn all(&self) -> Vec<String> {
        self.0.lock().expect("log lock").clone()
    }

    fn keep<T>(&self, r: Result<T, EndpointError>) -> Result<T, EndpointError> {
        if let Err(e) = &r {
            self.push(format!("error: {e}"));
        }
        r
    }
}

/// Passes everything to the endpoint it wraps and notes what went wrong (the engine prints
/// those messages; the test reads them here).
struct Spy {
    inner: Box<dyn Endpoint>,
    log: Log,
}

struct SpySink<'a> {
    inner: &'a mut dyn Sink,
    log: Log,
}

impl Sink for SpySink<'_> {
    fn put(&mut self, p: Piece) -> Result<(), Gone> {
        if let Piece::Failed(m) = &p {
            self.log.push(format!("failed: {m}"));
        }
        self.inner.put(p)
    }

    fn buffer(&mut self) -> Vec<u8> {
        self.inner.buffer()
    }
}

impl Endpoint for Spy {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn set_ignore(&mut self, spec: &IgnoreSpec) -> Result<(), EndpointError> {
        let r = self.inner.set_ignore(spec);
        self.log.keep(r)
    }
    fn scan(&mut self, req: &ScanRequest) -> Result<ScanReport, EndpointError> {
        let r = self.inner.scan(req);
        self.log.keep(r)
    }
    fn tree(&self) -> Option<&Entry> {
        self.inner.tree()
    }
    fn read_small(&mut self, path: &RelPath, limit: u64) -> Result<Option<Vec<u8>>, EndpointError> {
        let r = self.inner.read_small(path, limit);
        self.log.keep(r)
    }
    fn stage_local(&mut self, wanted: &[Wanted]) -> Result<Vec<Digest>, EndpointError> {
        let r = self.inner.stage_local(wanted);
        self.log.keep(r)
    }
    fn open(
        &mut self,
        path: &RelPath,
        digest: &Digest,
    ) -> Result<Box<dyn Read + Send + '_>, EndpointError> {
        let log = &self.log;
        self.inner.open(path, digest).map_err(|e| {
            log.push(format!("error: {e}"));
            e
        })
    }
    fn transition(
        &mut self,
        changes: &[ferry_core::Change],
        backup: &std::collections::HashSet<Digest>,
        feed: &mut dyn Feed,
    ) -> Result<Vec<Outcome>, EndpointError> {
        let r = self.inner.transition(changes, backup, feed);
        if let Ok(outs) = &r {
            for o in outs {
                for (p, m) in &o.errors {
                    self.log.push(format!("{p}: {m}"));
                }
            }
        }
        self.log.keep(r)
    }
    fn discard_staged(&mut self) {
        self.inner.discard_staged();
    }
    fn watch(&mut self, tx: SyncSender<WatchEvent>) -> Result<(), EndpointError> {
        let r = self.inner.watch(tx);
        self.log.keep(r)
    }
    fn poll_watch(&mut self) -> Option<WatchEvent> {
        self.inner.poll_watch()
    }
    fn backup_root(&self) -> PathBuf {
        self.inner.backup_root()
    }
    fn save_cache(&mut self) -> Result<(), EndpointError> {
        let r = self.inner.save_cache();
        self.log.keep(r)
    }
    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }
    fn signature(
        &mut self,
        path: &RelPath,
        digest: &Digest,
    ) -> Result<Option<Vec<u8>>, EndpointError> {
        let r = self.inner.signature(path, digest);
        self.log.keep(r)
    }
    fn base_opener(&self) -> Option<BaseOpener> {
        self.inner.base_opener()
    }
    fn read_items(
        &mut self,
        items: &[Item],
        stop: &AtomicBool,
        out: &mut dyn Sink,
    ) -> Result<(), Gone> {
        let mut sink = SpySink {
            inner: out,
            log: self.log.clone(),
        };
        self.inner.read_items(items, stop, &mut sink)
    }
    fn connected(&self) -> bool {
        self.inner.connected()
    }
    fn reconnect(&mut self) -> Result<(), EndpointError> {
        let r = self.inner.reconnect();
        self.log.keep(r)
    }
    fn wire_bytes(&self) -> u64 {
        self.inner.wire_bytes()
    }
}

fn settings(once: bool) -> Settings {
    Settings {
        mode: Mode::TwoWaySafe,
        ignore_vcs: true,
        default_ignores: true,
        ignores: Vec::new(),
        meta: Default::default(),
        once,
        accept_wipe: false,
        reset: false,
        debounce: Duration::from_millis(20),
        rescan_interval: None,
        yes: false,
        ..Default::default()
    }
}

/// What a session against a fake agent came to.
struct Ran {
    /// The run's result, or why the remote side could not even be opened.
    result: Result<Finish, String>,
    /// What the engine was told along the way (see [`Spy`]).
    log: Vec<String>,
    /// The fake agents' view.
    shared: Arc<Shared>,
}

impl Ran {
    /// Everything the user would have been told, in one string.
    fn said(&self) -> String {
        let mut s = match &self.result {
            Ok(f) => format!("run: {f:?}"),
            Err(e) => format!("run error: {e}"),
        };
        for l in &self.log {
            s.push_str("\n  ");
            s.push_str(l);
        }
        s
    }

    /// The run stopped with an error naming a protocol violation and `what`.
    fn expect_violation(&self, case: &str, what: &str) {
        let Err(e) = &self.result else {
            panic!(
                "{case}: the host accepted a lying agent (no error)\n{}",
                self.said()
            );
        };
        assert!(
            e.contains("the agent broke the protocol") && e.contains(what),
            "{case}: expected a protocol error about {what:?}, got:\n{}",
            self.said()
        );
    }

    /// Something the user was told contains `what`.
    fn expect_said(&self, case: &str, what: &str) {
        assert!(
            self.said().contains(what),
            "{case}: expected to be told {what:?}, got:\n{}",
            self.said()
        );
    }
}

/// Which side the fake agent plays.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hostile {
    Alpha,
    Beta,
}

/// Runs one session: the fake agent (serving `handler`) on side `hostile`, `place`'s root on
/// the other side. `watch`: a watching session instead of `--once` (it must end by itself, on
/// an error; after [`DEADLINE`] it is stopped and the test fails).
fn session(name: &str, place: &Place, hostile: Hostile, handler: Handler, watch: bool) -> Ran {
    state_home();
    let url = format!("fake://{name}/srv/app");
    let local_url = place.root_str();
    let (a_url, b_url) = match hostile {
        Hostile::Alpha => (url.clone(), local_url.clone()),
        Hostile::Beta => (local_url.clone(), url.clone()),
    };
    let session = Session::open(&a_url, &b_url).expect("opening the session");
    let key = session
        .dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a session key")
        .to_owned();
    let shared = Arc::new(Shared::default());
    let (remote_side, local_side) = match hostile {
        Hostile::Alpha => (Side::Alpha, Side::Beta),
        Hostile::Beta => (Side::Beta, Side::Alpha),
    };
    let transport = FakeTransport {
        handler,
        shared: shared.clone(),
    };
    let remote = RemoteEndpoint::open(
        remote_side,
        url,
        Box::new(transport),
        "/srv/app".into(),
        remote_side == Side::Beta,
        key,
        &IgnoreSpec::default(),
    );
    let remote = match remote {
        Ok(r) => r,
        Err(e) => {
            shared.join();
            return Ran {
                result: Err(e.message),
                log: Vec::new(),
                shared,
            };
        }
    };
    let log = Log::default();
    let local = LocalEndpoint::new(
        local_side,
        place.root.clone(),
        &session.dir,
        &IgnoreSpec::default(),
    )
    .expect("the local endpoint");
    let spy = |e: Box<dyn Endpoint>| -> Box<dyn Endpoint> {
        Box::new(Spy {
            inner: e,
            log: log.clone(),
        })
    };
    let (alpha, beta) = match hostile {
        Hostile::Alpha => (spy(Box::new(remote)), spy(Box::new(local))),
        Hostile::Beta => (spy(Box::new(local)), spy(Box::new(remote))),
    };
    let stop = Arc::new(AtomicBool::new(false));
    *shared.stop.lock().expect("stop lock") = Some(stop.clone());
    let result = match Engine::new(
        alpha,
        beta,
        session,
        settings(!watch),
        Printer::new(false),
        stop.clone(),
    ) {
        Err(e) => Err(e),
        Ok(mut engine) => {
            let r = if watch {
                let (tx, rx) = wake_channel();
                let (done_tx, done_rx) = channel::<()>();
                let (tx2, stop2) = (tx.clone(), stop.clone());
                let watchdog = thread::spawn(move || {
                    if done_rx
                        .recv_timeout(DEADLINE)
                        .is_err_and(|e| matches!(e, std::sync::mpsc::RecvTimeoutError::Timeout))
                    {
                        stop2.store(true, Ordering::SeqCst);
                        let _ = tx2.send(WatchEvent::Stop);
                        return true;
                    }
                    false
                });
                let r = engine.run(Some((tx, rx)));
                drop(done_tx);
                let fired = watchdog.join().expect("the watchdog");
                assert!(
                    !fired,
                    "the watching session did not end by itself within {DEADLINE:?}"
                );
                r
            } else {
                engine.run(None)
            };
            drop(engine);
            r
        }
    };
    shared.join();
    Ran {
        result: result.map_err(|e: RunError| e.to_string()),
        log: log.all(),
        shared,
    }
}

/// A `--once` session with the fake agent as alpha and `place`'s root as beta.
fn once_against(name: &str, place: &Place, handler: Handler) -> Ran {
    session(name, place, Hostile::Alpha, handler, false)
}

// ---------------------------------------------------------------------------------------------
// Crash isolation
// ---------------------------------------------------------------------------------------------

const CHILD_ENV: &str = "FERRY_HOSTILE_CHILD";
/// Where a child process makes its temporary directories: one the parent removes, since a child
/// that aborts cannot.
const CHILD_TMP_ENV: &str = "FERRY_HOSTILE_TMP";

/// The directory temporary directories go in.
fn temp_base() -> PathBuf {
    std::env::var_os(CHILD_TMP_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// Runs `body` in a child process (this test binary, running just the test `name`): a host that
/// aborts or overflows its stack fails this test instead of killing every test in the binary.
fn isolated(name: &str, body: fn()) {
    if std::env::var_os(CHILD_ENV).is_some_and(|v| v == name) {
        body();
        return;
    }
    let module = module_path!();
    let test = format!(
        "{}::{name}",
        module.split_once("::").map_or(module, |(_, rest)| rest)
    );
    let tmp = tempfile::Builder::new()
        .prefix("ferry-hostile-child-")
        .tempdir()
        .expect("a temp dir for the child");
    let out = tempfile::NamedTempFile::new_in(tmp.path()).expect("a file for the child's output");
    let exe = std::env::current_exe().expect("the test binary");
    let mut child = std::process::Command::new(exe)
        .args([test.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .env("RUST_BACKTRACE", "0")
        .env(CHILD_TMP_ENV, tmp.path())
        .stdin(std::process::Stdio::null())
        .stdout(out.reopen().expect("reopening the output file"))
        .stderr(out.reopen().expect("reopening the output file"))
        .spawn()
        .expect("starting the child test process");
    let status = wait_with_deadline(&mut child, Duration::from_secs(120));
    let said = fs::read_to_string(out.path()).unwrap_or_default();
    // What says why it died first (an abort's reason comes before any backtrace), then the end.
    let lines: Vec<&str> = said.lines().collect();
    let why: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| {
            ["memory allocation", "overflowed", "panicked", "fatal"]
                .iter()
                .any(|k| l.contains(k))
        })
        .collect();
    let tail = format!(
        "{}\n...\n{}",
        why.join("\n"),
        lines[lines.len().saturating_sub(20)..].join("\n")
    );
    let Some(status) = status else {
        panic!("{name}: the child process did not finish within 120 s\n{tail}");
    };
    use std::os::unix::process::ExitStatusExt;
    assert!(
        status.success(),
        "{name}: the host process died or failed ({status}{}); its output:\n{tail}",
        status
            .signal()
            .map(|s| format!(", signal {s}"))
            .unwrap_or_default()
    );
    assert!(
        said.contains("1 passed"),
        "{name}: the child process did not run the test\n{tail}"
    );
}

// ---------------------------------------------------------------------------------------------
// 1. Trees with names that lead elsewhere
// ---------------------------------------------------------------------------------------------

#[test]
fn tree_with_traversal_names_is_refused() {
    let file = || Entry::file(digest(b"x").0, 1, false);
    let long = "n".repeat(300);
    let cases: Vec<(&str, Entry, &str)> = vec![
        (
            "a child named ..",
            dir(vec![("..".into(), dir(vec![("passwd".into(), file())]))]),
            "'..' has a '.' or '..' component",
        ),
        (
            "a child named . inside a directory",
            dir(vec![("d".into(), dir(vec![(".".into(), file())]))]),
            "'.' has a '.' or '..' component",
        ),
        (
            "a name with a slash",
            dir(vec![("a/b".into(), file())]),
            "name 'a/b' contains '/'",
        ),
        (
            "an empty name",
            dir(vec![("".into(), file())]),
            "has an empty component",
        ),
        (
            "a name with NUL",
            dir(vec![("d".into(), dir(vec![("a\0b".into(), file())]))]),
            "contains a NUL byte",
        ),
        ("a 300-byte name", dir(vec![(long, file())]), "is too long"),
        (
            "a name climbing to the sentinel",
            dir(vec![("../sentinel/precious.txt".into(), file())]),
            "contains '/'",
        ),
    ];
    for (i, (case, tree, what)) in cases.into_iter().enumerate() {
        let place = Place::new();
        let before = snapshot(&place.root, None);
        let world = World::of(&[]);
        let lie = tree.clone();
        let out = once_against(
            &format!("names{i}"),
            &place,
            agent(world, move |p, m| {
                matches!(m, Msg::Scan(_)).then(|| p.send(&scanned(lie.clone())))
            }),
        );
        out.expect_violation(case, "bad name in tree");
        out.expect_violation(case, what);
        place.assert_untouched(case, &before);
        assert!(
            !out.shared.seen().iter().any(|s| s.ends_with(":Read")),
            "{case}: the host asked a lying agent for content: {:?}",
            out.shared.seen()
        );
    }
}

/// Valid names whose joined path passes the 4096-byte path limit: the local scanner never
/// reports such a path, so a tree holding one is a lie.
#[test]
fn tree_with_a_path_over_the_length_limit_is_refused() {
    let name = "d".repeat(255);
    let mut bottom = Entry::Directory(Default::default());
    for _ in 0..17 {
        bottom = dir(vec![(name.clone(), bottom)]);
    }
    let mut with_file = dir(vec![("f".into(), Entry::file(digest(b"x").0, 1, false))]);
    for _ in 0..17 {
        with_file = dir(vec![(name.clone(), with_file)]);
    }
    for (case, tree) in [
        ("a file under a 4352-byte path", with_file),
        ("an empty directory at a 4352-byte path", bottom),
    ] {
        let place = Place::new();
        let before = snapshot(&place.root, None);
        let lie = tree.clone();
        let out = once_against(
            &format!("long-{}", case.len()),
            &place,
            agent(World::of(&[]), move |p, m| {
                matches!(m, Msg::Scan(_)).then(|| p.send(&scanned(lie.clone())))
            }),
        );
        out.expect_violation(case, "too long");
        place.assert_untouched(case, &before);
    }
}

#[test]
fn partial_scan_with_traversal_paths_is_refused() {
    // Paths a RelPath refuses to decode: the frame itself is bad.
    for (i, bad) in ["/etc/passwd", "../sentinel", "a//b", "d/../../x", "./x"]
        .into_iter()
        .enumerate()
    {
        let case = format!("a patch at {bad:?}");
        let place = Place::new();
        let before = snapshot(&place.root, None);
        let placeholder = "Q".repeat(bad.len());
        let template = Msg::Scanned {
            entries: 1,
            hashed_files: 0,
            hashed_bytes: 0,
            tree: TreeUpdate::At(vec![(
                rel(&placeholder),
                Some(Entry::file(digest(b"x").0, 1, false)),
            )]),
            notes: Vec::new(),
        };
        let body = spliced(&template, &placeholder, bad);
        let out = once_against(
            &format!("at{i}"),
            &place,
            agent(World::of(&[]), move |p, m| {
                matches!(m, Msg::Scan(_)).then(|| p.raw(&frame(0, &body)))
            }),
        );
        out.expect_violation(&case, "bad frame");
        out.expect_violation(&case, "undecodable message");
        place.assert_untouched(&case, &before);
    }
    // Valid paths, lying entries or places.
    let file = || Entry::file(digest(b"x").0, 1, false);
    let cases: Vec<(&str, Patches, &str)> = vec![
        (
            "a patch replacing the root",
            vec![(RelPath::root(), Some(dir(vec![])))],
            "a partial scan replaced the root",
        ),
        (
            "a patch holding a child named ..",
            vec![(rel("d"), Some(dir(vec![("..".into(), file())])))],
            "bad name in tree",
        ),
        (
            "a patch with an escaping link",
            vec![(rel("d/l"), Some(Entry::symlink("../../sentinel")))],
            "would lead outside the root",
        ),
        (
            "a patch under a missing parent",
            vec![(rel("nowhere/f"), Some(file()))],
            "a scan patch does not fit",
        ),
    ];
    for (i, (case, patches, what)) in cases.into_iter().enumerate() {
        let place = Place::new();
        let before = snapshot(&place.root, None);
        let out = once_against(
            &format!("patch{i}"),
            &place,
            agent(World::of(&[]), move |p, m| {
                matches!(m, Msg::Scan(_)).then(|| {
                    p.send(&Msg::Scanned {
                        entries: 1,
                        hashed_files: 0,
                        hashed_bytes: 0,
                        tree: TreeUpdate::At(patches.clone()),
                        notes: Vec::new(),
                    })
                })
            }),
        );
        out.expect_violation(case, what);
        place.assert_untouched(case, &before);
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Symlinks leading out
// ---------------------------------------------------------------------------------------------

#[test]
fn escaping_symlinks_are_refused() {
    let place_for_abs = Place::new();
    let abs_sentinel = format!("{}/sentinel", place_for_abs.parent.display());
    let cases: Vec<(&str, Entry, &str)> = vec![
        (
            "../../etc",
            dir(vec![("l".into(), Entry::symlink("../../etc"))]),
            "symlink l -> \"../../etc\"",
        ),
        (
            "/etc/passwd",
            dir(vec![("l".into(), Entry::symlink("/etc/passwd"))]),
            "symlink l -> \"/etc/passwd\"",
        ),
        (
            "the sentinel by absolute path",
            dir(vec![("l".into(), Entry::symlink(&abs_sentinel))]),
            "would lead outside the root",
        ),
        (
            "the sentinel next to the root",
            dir(vec![("l".into(), Entry::symlink("../sentinel"))]),
            "symlink l -> \"../sentinel\"",
        ),
        (
            "one level too many from a subdirectory",
            dir(vec![(
                "d".into(),
                dir(vec![("l".into(), Entry::symlink("../../sentinel"))]),
            )]),
            "symlink d/l -> \"../../sentinel\"",
        ),
        (
            "a chain: u -> . and e -> u/..",
            dir(vec![
                ("u".into(), Entry::symlink(".")),
                ("e".into(), Entry::symlink("u/..")),
            ]),
            "symlink e -> \"u/..\"",
        ),
        (
            "an empty target",
            dir(vec![("l".into(), Entry::symlink(""))]),
            "would lead outside the root",
        ),
    ];
    for (i, (case, tree, what)) in cases.into_iter().enumerate() {
        let place = if i == 2 {
            &place_for_abs
        } else {
            &Place::new()
        };
        let before = snapshot(&place.root, None);
        let lie = tree.clone();
        let out = once_against(
            &format!("links{i}"),
            place,
            agent(World::of(&[("ok.txt", b"fine")]), move |p, m| {
                matches!(m, Msg::Scan(_)).then(|| p.send(&scanned(lie.clone())))
            }),
        );
        out.expect_violation(case, "would lead outside the root");
        out.expect_violation(case, what);
        place.assert_untouched(case, &before);
        place.assert_no_escaping_link(case);
    }
}

// ---------------------------------------------------------------------------------------------
// 3. A directory swapped for a symlink between scans
// ---------------------------------------------------------------------------------------------

/// The first (full) scan shows `dir/f`; once the session watches, the agent reports a change
/// at `dir`, and its partial scan answers with `patches`. Fails unless the partial scan
/// happened.
fn swap_race(name: &str, patches: Patches) -> (Place, Ran) {
    let place = Place::new();
    let world = World::of(&[("dir/f", b"first content")]);
    let watched = Arc::new(AtomicBool::new(false));
    let out = session(
        name,
        &place,
        Hostile::Alpha,
        agent(world, move |p, m| match m {
            // After the first cycle the engine saves the caches: then the "change" comes.
            Msg::SaveCache if !watched.swap(true, Ordering::SeqCst) => Some(
                p.send(&Msg::Ok)
                    .and_then(|()| p.send(&Msg::Watch(WatchWire::Paths(vec![rel("dir")])))),
            ),
            Msg::Scan(Some(_)) => Some(p.send(&Msg::Scanned {
                entries: 2,
                hashed_files: 0,
                hashed_bytes: 0,
                tree: TreeUpdate::At(patches.clone()),
                notes: Vec::new(),
            })),
            _ => None,
        }),
        true,
    );
    assert!(
        out.shared.seen().iter().any(|s| s.ends_with(":ScanPaths")),
        "{name}: the partial scan never happened: {:?}\n{}",
        out.shared.seen(),
        out.said()
    );
    (place, out)
}

fn synced_dir() -> BTreeMap<PathBuf, Node> {
    [
        (PathBuf::from("dir"), Node::Dir),
        (
            PathBuf::from("dir/f"),
            Node::File(b"first content".to_vec()),
        ),
    ]
    .into_iter()
    .collect()
}

#[test]
fn directory_swapped_for_an_escaping_symlink_is_refused() {
    let case = "dir becomes a symlink to ../sentinel";
    let (place, out) = swap_race(
        "swap-out",
        vec![(rel("dir"), Some(Entry::symlink("../sentinel")))],
    );
    out.expect_violation(
        case,
        "symlink dir -> \"../sentinel\" would lead outside the root",
    );
    // The first cycle synced dir/f; the swap changed nothing in beta.
    place.assert_root(case, &synced_dir());
    place.assert_nothing_outside(case);
    place.assert_no_escaping_link(case);
}

#[test]
fn directory_swapped_for_a_symlink_with_a_file_behind_it_is_refused() {
    // `dir -> .` stays inside the root, but then `dir/g` would be written through the link.
    let case = "dir becomes a symlink to . and dir/g appears under it";
    let (place, out) = swap_race(
        "swap-through",
        vec![
            (rel("dir"), Some(Entry::symlink("."))),
            (
                rel("dir/g"),
                Some(Entry::file(digest(b"through").0, 7, false)),
            ),
        ],
    );
    out.expect_violation(case, "a scan patch does not fit");
    place.assert_root(case, &synced_dir());
    place.assert_nothing_outside(case);
    place.assert_no_escaping_link(case);
}

// ---------------------------------------------------------------------------------------------
// 4. Content that does not match what the scan said
// ---------------------------------------------------------------------------------------------

/// An agent whose tree says `f` is `b"0123456789"` (10 bytes) but answers `Read` with `data`
/// (then `End`, or nothing more when `end` is false) and `ReadDone`.
fn lying_content(data: Vec<u8>, end: bool) -> Handler {
    let world = World::of(&[("f", b"0123456789")]);
    agent(world, move |p, m| {
        matches!(m, Msg::Read(_)).then(|| {
            p.w.queue(&Msg::Data(data.clone()))?;
            if end {
                p.w.queue(&Msg::End)?;
            }
            p.send(&Msg::ReadDone)
        })
    })
}

#[test]
fn content_longer_than_the_scan_said_is_refused() {
    let case = "20 bytes for a 10-byte file";
    let place = Place::new();
    let before = snapshot(&place.root, None);
    let out = once_against("long-content", &place, lying_content(vec![b'z'; 20], true));
    out.expect_said(
        case,
        "the agent broke the protocol: sent more than 10 bytes for f",
    );
    assert!(
        matches!(out.result, Ok(Finish::Errors)) || out.result.is_err(),
        "{case}: the run did not report an error\n{}",
        out.said()
    );
    place.assert_untouched(case, &before);
    // Never more connections than --once cycles (each retry reconnects once at most).
    assert!(
        out.shared.connects.load(Ordering::SeqCst) <= 11,
        "{case}: the host kept reconnecting to a lying agent ({} connections)",
        out.shared.connects.load(Ordering::SeqCst)
    );
}

#[test]
fn content_that_does_not_hash_to_the_digest_is_refused() {
    for (case, data, end) in [
        ("10 bytes of other content", b"abcdefghij".to_vec(), true),
        ("5 bytes then End", b"01234".to_vec(), true),
        ("10 bytes without End", b"9876543210".to_vec(), false),
    ] {
        let place = Place::new();
        let before = snapshot(&place.root, None);
        let out = once_against(
            &format!("bad-digest-{}", data.len() + usize::from(end)),
            &place,
            lying_content(data, end),
        );
        assert!(
            matches!(out.result, Ok(Finish::Errors)) || out.result.is_err(),
            "{case}: the run did not report an error\n{}",
            out.said()
        );
        out.expect_said(case, "f: content not available");
        // No f, no partial file, no temporary file left in beta.
        place.assert_untouched(case, &before);
    }
}

#[test]
fn more_items_than_asked_for_are_refused() {
    let case = "a second item after the only one asked for";
    let place = Place::new();
    let before = snapshot(&place.root, None);
    let world = World::of(&[("f", b"0123456789")]);
    let out = once_against(
        "extra-item",
        &place,
        agent(world, |p, m| {
            matches!(m, Msg::Read(_)).then(|| {
                // f's content, but only after another item's End (the first End ends f early).
                p.w.queue(&Msg::End)?;
                p.w.queue(&Msg::Data(b"0123456789".to_vec()))?;
                p.w.queue(&Msg::End)?;
                p.send(&Msg::ReadDone)
            })
        }),
    );
    out.expect_said(
        case,
        "the agent broke the protocol: sent more content than was asked for",
    );
    place.assert_untouched(case, &before);
}

/// Unasked-for delta for a file the scan says is huge: the host must refuse it without trying
/// to make room for the declared size.
fn huge_delta_body() {
    let case = "an unsolicited delta for a 2^60-byte file";
    let place = Place::with(&[("base.txt", b"the receiver's own file")]);
    let before = snapshot(&place.root, None);
    let mut world = World::of(&[("base.txt", b"the receiver's own file")]);
    insert(
        &mut world.tree,
        "big",
        Entry::file(digest(b"big").0, 1 << 60, false),
    );
    let base_digest = digest(b"the receiver's own file");
    let out = once_against(
        "huge-delta",
        &place,
        agent(world, move |p, m| {
            matches!(m, Msg::Read(_)).then(|| {
                p.w.queue(&Msg::Delta {
                    base: rel("base.txt"),
                    base_digest,
                    delta: b"rs\x026 not really a delta".to_vec(),
                })?;
                p.send(&Msg::ReadDone)
            })
        }),
    );
    assert!(
        matches!(out.result, Ok(Finish::Errors)) || out.result.is_err(),
        "{case}: the run did not report an error\n{}",
        out.said()
    );
    place.assert_untouched(case, &before);
}

#[test]
fn unsolicited_delta_for_a_huge_file_does_not_crash_the_host() {
    isolated(
        "unsolicited_delta_for_a_huge_file_does_not_crash_the_host",
        huge_delta_body,
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Broken frames
// ---------------------------------------------------------------------------------------------

#[test]
fn broken_frames_are_refused() {
    let mut bomb_input = vec![0u8; FRAME_MAX * 4];
    bomb_input[..3].copy_from_slice(b"\x00\x01\x02");
    let bomb = zstd::bulk::compress(&bomb_input, 3).expect("compressing");
    let mut cases: Vec<(&str, Vec<u8>, bool, String)> = vec![
        (
            "a header of 100 bytes, then 10 and the end",
            {
                let mut b = 101u32.to_le_bytes().to_vec();
                b.push(0);
                b.extend_from_slice(&[7; 10]);
                b
            },
            true,
            "truncated frame (10 of 100 bytes)".into(),
        ),
        (
            "a frame over the 4 MiB cap",
            {
                let mut b = ((FRAME_MAX + 2) as u32).to_le_bytes().to_vec();
                b.push(0);
                b
            },
            false,
            format!(
                "frame of {} bytes is over the {FRAME_MAX}-byte limit",
                FRAME_MAX + 1
            ),
        ),
        (
            "the largest length there is",
            {
                let mut b = u32::MAX.to_le_bytes().to_vec();
                b.push(0);
                b
            },
            false,
            "is over the 4194304-byte limit".into(),
        ),
        (
            "unknown flags",
            frame(0x04, &encode(&Msg::Ok)),
            false,
            "unknown frame flags 0x4".into(),
        ),
        (
            "zstd flag on garbage",
            frame(ZSTD, b"this is not zstd at all"),
            false,
            "bad compressed frame".into(),
        ),
        (
            "a zstd bomb (16 MiB from a few bytes)",
            frame(ZSTD, &bomb),
            false,
            "bad compressed frame".into(),
        ),
        (
            "frame length 0",
            vec![0, 0, 0, 0, 0],
            false,
            "frame length 0".into(),
        ),
        (
            "a header cut short",
            vec![9, 0, 0],
            true,
            "truncated frame header (3 of 5 bytes)".into(),
        ),
        (
            "garbage body",
            frame(0, &[0xff; 9]),
            false,
            "undecodable message".into(),
        ),
        (
            "stray bytes after a message",
            frame(0, &[encode(&Msg::Ok), vec![0]].concat()),
            false,
            "1 stray bytes after a message".into(),
        ),
        (
            "a MORE chain ending in the middle",
            {
                let m = encode(&scanned(dir(vec![])));
                let (a, _) = m.split_at(m.len() / 2);
                frame(MORE, a)
            },
            true,
            "truncated frame header (0 of 5 bytes)".into(),
        ),
    ];
    // An answer split over MORE frames, whose parts are fine, then garbage.
    cases.push((
        "a MORE chain whose last part is garbage",
        [frame(MORE, &encode(&Msg::Ok)), frame(0, &[0xee; 3])].concat(),
        false,
        "3 stray bytes after a message".into(),
    ));
    for (i, (case, bytes, end, what)) in cases.into_iter().enumerate() {
        let place = Place::new();
        let before = snapshot(&place.root, None);
        let out = once_against(
            &format!("frames{i}"),
            &place,
            agent(World::of(&[("f", b"content")]), move |p, m| {
                matches!(m, Msg::Scan(_)).then(|| {
                    p.raw(&bytes)?;
                    if end { p.end_output() } else { Ok(()) }
                })
            }),
        );
        out.expect_violation(case, "bad frame");
        out.expect_violation(case, &what);
        place.assert_untouched(case, &before);
    }
}

/// The same frames straight into a [`FrameReader`]: the exact error, nothing decoded.
#[test]
fn frame_reader_names_what_is_wrong() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            {
                let mut b = 101u32.to_le_bytes().to_vec();
                b.push(0);
                b.extend_from_slice(&[7; 10]);
                b
            },
            "bad frame from the peer: truncated frame (10 of 100 bytes)",
        ),
        (
            {
                let mut b = ((FRAME_MAX + 2) as u32).to_le_bytes().to_vec();
                b.push(0);
                b
            },
            "bad frame from the peer: frame of 4194305 bytes is over the 4194304-byte limit",
        ),
        (
            frame(0x80 | MORE, b"x"),
            "bad frame from the peer: unknown frame flags 0x82",
        ),
        (
            frame(ZSTD, b"garbage"),
            "bad frame from the peer: bad compressed frame",
        ),
        (vec![1, 0], "truncated frame header (2 of 5 bytes)"),
    ];
    for (bytes, what) in cases {
        let e = FrameReader::new(&bytes[..])
            .recv()
            .expect_err("a broken frame must not decode");
        assert!(matches!(e, WireError::Bad(_)), "{what}: {e:?}");
        assert!(e.to_string().contains(what), "expected {what:?}, got {e}");
    }
    let e = FrameReader::new(&[][..])
        .recv()
        .expect_err("an empty stream");
    assert!(matches!(e, WireError::Closed), "{e:?}");

    // The allocation probe of the property tests sees the frame buffer a bare header asks for
    // (so its "nothing over the cap" is not vacuous), and that buffer is the cap at most.
    let mut header = ((FRAME_MAX + 1) as u32).to_le_bytes().to_vec();
    header.extend_from_slice(&[0, 1, 2, 3]);
    let (n, biggest) = drain(&header);
    assert_eq!(n, 0);
    assert!(
        (FRAME_MAX..=ALLOC_CAP).contains(&biggest),
        "a {FRAME_MAX}-byte frame header: largest allocation {biggest}"
    );
}

/// A tree nested far deeper than any real one: the host must refuse it, not overflow its
/// stack decoding it.
fn deep_tree_body() {
    let case = "a tree nested 200000 levels deep";
    let place = Place::new();
    let before = snapshot(&place.root, None);
    // Scanned { .., Whole(Some(Directory{})), notes: [] } ends in [0 (Directory), 0 (no
    // children), 0xed 0x03 (mode 0o755), 0 (no notes)]: cut that and nest `a` directories
    // instead, each closed by its mode.
    let template = encode(&scanned(dir(vec![])));
    assert_eq!(&template[template.len() - 5..], &[0, 0, 0xed, 0x03, 0]);
    let mut body = template[..template.len() - 5].to_vec();
    for _ in 0..200_000 {
        body.extend_from_slice(&[0, 1, 1, b'a']);
    }
    body.extend_from_slice(&[0, 0]);
    for _ in 0..=200_000 {
        body.extend_from_slice(&[0xed, 0x03]);
    }
    body.push(0);
    let mut bytes = Vec::new();
    let mut chunks = body.chunks(FRAME_MAX).peekable();
    while let Some(c) = chunks.next() {
        let more = if chunks.peek().is_some() { MORE } else { 0 };
        bytes.extend(frame(more, c));
    }
    let out = once_against(
        "deep-tree",
        &place,
        agent(World::of(&[]), move |p, m| {
            matches!(m, Msg::Scan(_)).then(|| p.raw(&bytes))
        }),
    );
    assert!(
        out.result.is_err(),
        "{case}: the host accepted it\n{}",
        out.said()
    );
    out.expect_violation(case, "");
    place.assert_untouched(case, &before);
}

#[test]
fn deeply_nested_tree_does_not_crash_the_host() {
    isolated("deeply_nested_tree_does_not_crash_the_host", deep_tree_body);
}

// ---------------------------------------------------------------------------------------------
// 6. Prefaces and handshakes
// ---------------------------------------------------------------------------------------------

#[test]
fn wrong_prefaces_are_told_apart() {
    let mut v99 = b"FERRYWIR".to_vec();
    v99.extend_from_slice(&99u32.to_le_bytes());
    let e = read_preface(&mut &v99[..]).expect_err("version 99");
    assert!(matches!(e, WireError::Version { theirs: 99, .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains(&format!(
            "protocol version mismatch: this ferry speaks {PROTOCOL}, the agent speaks 99"
        )) && text.contains("reinstall the agent"),
        "{text}"
    );

    let shell = b"Welcome to Ubuntu 22.04.4 LTS (GNU/Linux)\n\n * Documentation: ...\n";
    let e = read_preface(&mut &shell[..]).expect_err("a shell greeting");
    let text = e.to_string();
    assert!(
        text.contains("not a ferry agent") && text.contains("Welcome to U"),
        "{text}"
    );

    let e = read_preface(&mut &b"FERRY"[..]).expect_err("a cut preface");
    assert!(
        matches!(&e, WireError::NotAgent(s) if s == "FERRY"),
        "a preface cut short: {e:?}"
    );
    let e = read_preface(&mut &b""[..]).expect_err("nothing at all");
    assert!(matches!(e, WireError::Closed), "{e:?}");

    let mut ok = Vec::new();
    write_preface(&mut ok).expect("writing a preface");
    read_preface(&mut &ok[..]).expect("our own preface");
}

/// Through [`RemoteEndpoint::open`]: the link starts after the preface, so a stranger shows as
/// a bad first frame or a wrong first message.
#[test]
fn wrong_handshakes_fail_the_open() {
    let greeting = b"Welcome to Ubuntu 22.04.4 LTS (GNU/Linux)\n".to_vec();
    let cases: Vec<(&str, Handler, &str)> = vec![
        (
            "a shell greeting instead of Hello",
            {
                let g = greeting.clone();
                agent(World::of(&[]), move |p, m| {
                    matches!(m, Msg::Hello(_)).then(|| p.raw(&g))
                })
            },
            "bad frame from the peer: frame of",
        ),
        (
            "Ok instead of Hello",
            agent(World::of(&[]), |p, m| {
                matches!(m, Msg::Hello(_)).then(|| p.send(&Msg::Ok))
            }),
            "sent Ok where Hello was due",
        ),
        (
            "Ok instead of Opened",
            agent(World::of(&[]), |p, m| {
                matches!(m, Msg::Open { .. }).then(|| p.send(&Msg::Ok))
            }),
            "sent Ok where Opened was due",
        ),
        (
            "Refused",
            agent(World::of(&[]), |p, m| {
                matches!(m, Msg::Open { .. }).then(|| {
                    p.send(&Msg::Refused {
                        usage: true,
                        message: "beta '/srv/app' is not a directory".into(),
                    })
                })
            }),
            "beta '/srv/app' is not a directory",
        ),
        (
            "the connection closed before Hello",
            {
                let h: Handler = Arc::new(|_: &mut Peer, _: Msg| Err(io::Error::other("bye")));
                h
            },
            "connection closed",
        ),
    ];
    for (i, (case, handler, what)) in cases.into_iter().enumerate() {
        let place = Place::new();
        let before = snapshot(&place.root, None);
        let out = once_against(&format!("hello{i}"), &place, handler);
        let Err(e) = &out.result else {
            panic!("{case}: the open succeeded\n{}", out.said());
        };
        assert!(e.contains(what), "{case}: expected {what:?}, got {e}");
        assert!(
            !out.shared.seen().iter().any(|s| s.ends_with(":Scan")),
            "{case}: the host went on after a failed open: {:?}",
            out.shared.seen()
        );
        place.assert_untouched(case, &before);
    }
}

/// The real SSH transport, with `ssh` replaced by a script that prints what a stranger would:
/// the user is told what the far side said, and nothing is synced.
#[test]
fn ssh_transport_tells_strangers_and_old_agents_apart() {
    for (case, printf, what) in [
        (
            "a login banner",
            r"Welcome to Ubuntu 22.04.4 LTS\n",
            "the far side is not a ferry agent (it sent \"Welcome to U\")",
        ),
        (
            "an agent speaking protocol 99",
            r"FERRYWIR\143\000\000\000",
            "protocol version mismatch: this ferry speaks 5, the agent speaks 99",
        ),
    ] {
        let fx = Fixture::new();
        fs::write(fx.a("keep.txt"), "alpha's file").expect("writing alpha");
        let script = fx.home.join("fake-ssh");
        fs::write(
            &script,
            format!("#!/bin/sh\nprintf '{printf}'\nexec cat >/dev/null\n"),
        )
        .expect("writing the fake ssh");
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
        let before = snapshot(&fx.root, None);
        let mut cmd = fx.command();
        cmd.env("FERRY_SSH_COMMAND", &script)
            .env("FERRY_AGENT", OsStr::new("/bin/busybox"));
        let args = vec![
            "sync".into(),
            fx.alpha.clone().into_os_string(),
            "fakehost:/srv/app".into(),
            "--once".into(),
            "--json".into(),
        ];
        let run = fx.run_command(cmd, args);
        assert_ne!(run.code(), 0, "{case}: ferry accepted the far side\n{run}");
        assert!(
            run.stderr.contains(what),
            "{case}: expected {what:?} on stderr\n{run}"
        );
        // Nothing changed in alpha or next to it (the state directory is ferry's own).
        let mut now = snapshot(&fx.root, None);
        let mut then = before.clone();
        for m in [&mut now, &mut then] {
            m.retain(|p, _| !p.starts_with("state"));
        }
        assert_eq!(now, then, "{case}: something changed on this machine");
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Transition outcomes that do not answer the changes
// ---------------------------------------------------------------------------------------------

#[test]
fn lying_outcomes_are_refused() {
    let file = || Entry::file(digest(b"hello").0, 5, false);
    let out_at = |p: &str, now: Option<Entry>, errors: Vec<(RelPath, String)>| Outcome {
        path: rel(p),
        now,
        errors,
        backups: Vec::new(),
    };
    let cases: Vec<(&str, Vec<Outcome>, &str)> = vec![
        (
            "an outcome for another path",
            vec![out_at("other.txt", Some(file()), vec![])],
            "outcome for other.txt answers the change at new.txt",
        ),
        ("no outcome at all", vec![], "0 outcomes for 1 changes"),
        (
            "two outcomes for one change",
            vec![
                out_at("new.txt", Some(file()), vec![]),
                out_at("new.txt", Some(file()), vec![]),
            ],
            "2 outcomes for 1 changes",
        ),
        (
            "an error reported elsewhere",
            vec![out_at(
                "new.txt",
                None,
                vec![(rel("elsewhere"), "boom".into())],
            )],
            "error reported at elsewhere, outside the change at new.txt",
        ),
        (
            "the change now an escaping link",
            vec![out_at(
                "new.txt",
                Some(Entry::symlink("../../sentinel")),
                vec![],
            )],
            "symlink new.txt -> \"../../sentinel\" would lead outside the root",
        ),
    ];
    for (i, (case, outs, what)) in cases.into_iter().enumerate() {
        let place = Place::with(&[("new.txt", b"hello")]);
        let before = snapshot(&place.root, None);
        let out = session(
            &format!("outcomes{i}"),
            &place,
            Hostile::Beta,
            agent(World::of(&[]), move |p, m| match m {
                Msg::Transition { .. } => Some(
                    p.take_items()
                        .and_then(|_| p.send(&Msg::Outcomes(outs.clone()))),
                ),
                _ => None,
            }),
            false,
        );
        out.expect_violation(case, what);
        assert!(
            out.shared.seen().iter().any(|s| s.ends_with(":Transition")),
            "{case}: no transition was sent: {:?}",
            out.shared.seen()
        );
        place.assert_untouched(case, &before);
    }
}

#[test]
fn missing_content_nobody_asked_for_is_refused() {
    let case = "StageLocal answered with a digest that was not asked for";
    let place = Place::with(&[("new.txt", b"hello")]);
    let before = snapshot(&place.root, None);
    let out = session(
        "missing-lie",
        &place,
        Hostile::Beta,
        agent(World::of(&[]), |p, m| {
            matches!(m, Msg::StageLocal(_))
                .then(|| p.send(&Msg::Missing(vec![digest(b"something else")])))
        }),
        false,
    );
    out.expect_said(
        case,
        "the agent broke the protocol: reported missing content nobody asked for",
    );
    // A protocol violation is not a lost connection: at most one reconnection per --once
    // cycle, never an endless loop of them (the fake transport refuses connection 13 and
    // stops the session).
    let connects = out.shared.connects.load(Ordering::SeqCst);
    assert!(
        connects <= 11,
        "{case}: the host connected {connects} times to an agent that broke the protocol\n{}",
        out.said()
    );
    assert!(
        out.result.is_err() || matches!(out.result, Ok(Finish::Errors)),
        "{case}: the run did not report an error\n{}",
        out.said()
    );
    place.assert_untouched(case, &before);
}

#[test]
fn oversized_small_read_is_refused() {
    // `.ferryignore` is read with a 1 MiB limit: the agent sends 2 MiB.
    let case = "2 MiB for a 1 MiB .ferryignore read";
    let place = Place::new();
    let before = snapshot(&place.root, None);
    let out = once_against(
        "small-lie",
        &place,
        agent(World::of(&[]), |p, m| {
            matches!(m, Msg::ReadSmall { .. })
                .then(|| p.send(&Msg::Small(Some(vec![b'#'; 2 << 20]))))
        }),
    );
    assert!(
        out.result.is_err(),
        "{case}: the host went on with an oversized answer\n{}",
        out.said()
    );
    out.expect_said(case, "the agent broke the protocol");
    // The user is told what was wrong: an answer over the limit (not "sent Small where Small
    // was due").
    let said = out.said();
    assert!(
        said.lines()
            .any(|l| l.contains("the agent broke the protocol")
                && (l.contains("1048576") || l.contains("limit") || l.contains("more than"))),
        "{case}: the message does not say the answer was over the limit:\n{said}"
    );
    place.assert_untouched(case, &before);
}

// ---------------------------------------------------------------------------------------------
// Property tests: the decoder and the tree checks
// ---------------------------------------------------------------------------------------------

/// Counts, per thread and only while armed, the largest single allocation.
struct Counting;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static BIGGEST: Cell<usize> = const { Cell::new(0) };
}

fn note_alloc(size: usize) {
    let _ = ARMED.try_with(|a| {
        if a.get() {
            let _ = BIGGEST.try_with(|b| b.set(b.get().max(size)));
        }
    });
}

// SAFETY: every call goes straight to the system allocator; the bookkeeping touches only
// const-initialised thread locals without destructors (no allocation, no reentrancy).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Decodes messages from `bytes` until the reader gives up; returns how many decoded and the
/// largest single allocation made meanwhile.
fn drain(bytes: &[u8]) -> (usize, usize) {
    BIGGEST.with(|b| b.set(0));
    ARMED.with(|a| a.set(true));
    let mut r = FrameReader::new(bytes);
    let mut n = 0;
    // Every message takes at least a 5-byte header: more than that many is a reader that
    // does not advance.
    let most = bytes.len() / 5 + 1;
    let res = loop {
        match r.recv() {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
        if n > most {
            break WireError::Bad("no progress".into());
        }
    };
    ARMED.with(|a| a.set(false));
    let biggest = BIGGEST.with(Cell::get);
    assert!(
        n <= most,
        "{n} messages from {} bytes: the reader does not advance",
        bytes.len()
    );
    drop(res);
    (n, biggest)
}

/// The largest single allocation decoding may make: a frame (body or unpacked body) of
/// [`FRAME_MAX`], or the reader's own 256 KiB buffer.
const ALLOC_CAP: usize = FRAME_MAX;

fn name_strategy() -> impl Strategy<Value = String> {
    "[^/\u{0}]{1,12}".prop_filter("not . or ..", |s| s != "." && s != "..")
}

fn leaf_strategy() -> impl Strategy<Value = Entry> {
    prop_oneof![
        (any::<[u8; 32]>(), 0u64..(1 << 40), any::<bool>())
            .prop_map(|(d, s, x)| Entry::file(d, s, x)),
        // Links to siblings and below stay inside wherever they are.
        name_strategy().prop_map(|t| Entry::symlink(&t)),
        (name_strategy(), name_strategy()).prop_map(|(a, b)| Entry::symlink(&format!("./{a}/{b}"))),
        "[a-z ]{0,16}".prop_map(Entry::Problem),
    ]
}

fn tree_strategy() -> impl Strategy<Value = Entry> {
    let node = leaf_strategy().prop_recursive(4, 48, 5, |inner| {
        prop::collection::btree_map(name_strategy(), inner, 0..5)
            .prop_map(|c| Entry::Directory(c.into()))
    });
    prop::collection::btree_map(name_strategy(), node, 0..6)
        .prop_map(|c| Entry::Directory(c.into()))
}

fn msg_strategy() -> impl Strategy<Value = Msg> {
    prop_oneof![
        Just(Msg::Ok),
        Just(Msg::ReadDone),
        Just(Msg::End),
        prop::collection::vec(any::<u8>(), 0..1500).prop_map(Msg::Data),
        // Compressible: exercises the zstd path when compression is on.
        (any::<u8>(), 512usize..3000).prop_map(|(b, n)| Msg::Data(vec![b; n])),
        "[a-z ]{0,40}".prop_map(Msg::Failed),
        tree_strategy().prop_map(scanned),
        (name_strategy(), any::<u32>()).prop_map(|(v, f)| Msg::Hello(Hello {
            version: v,
            features: f,
            os: "linux".into(),
            arch: "x86_64".into(),
        })),
    ]
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    /// Overwrites 4 bytes (a frame length, when they land on one).
    Length(usize, u32),
}

fn mutation_strategy() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, x)| Mutation::Set(i, x)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..32).prop_map(|(i, n)| Mutation::Remove(i, n)),
        (
            any::<usize>(),
            prop_oneof![
                0u32..64,
                Just(FRAME_MAX as u32),
                Just(FRAME_MAX as u32 + 1),
                Just(FRAME_MAX as u32 + 2),
                any::<u32>()
            ]
        )
            .prop_map(|(i, l)| Mutation::Length(i, l)),
    ]
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let at = |i: usize, len: usize| i % len;
    match m {
        Mutation::Flip(i, x) => {
            let i = at(*i, bytes.len());
            bytes[i] ^= x;
        }
        Mutation::Set(i, x) => {
            let i = at(*i, bytes.len());
            bytes[i] = *x;
        }
        Mutation::Truncate(i) => bytes.truncate(at(*i, bytes.len())),
        Mutation::Insert(i, b) => {
            let i = at(*i, bytes.len() + 1);
            bytes.splice(i..i, b.iter().copied());
        }
        Mutation::Remove(i, n) => {
            let i = at(*i, bytes.len());
            let end = (i + n).min(bytes.len());
            bytes.drain(i..end);
        }
        Mutation::Length(i, l) => {
            if bytes.len() >= 4 {
                let i = at(*i, bytes.len() - 3);
                bytes[i..i + 4].copy_from_slice(&l.to_le_bytes());
            }
        }
    }
}

/// Frames as a stream of (length, flags, body) whose lengths are plausible: random bodies
/// reach the message decoder instead of dying at the length check.
fn plausible_frames() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        (
            prop::collection::vec(any::<u8>(), 0..300),
            prop_oneof![Just(0u8), Just(MORE), Just(ZSTD), any::<u8>()],
            -2i32..3,
        ),
        1..5,
    )
    .prop_map(|frames| {
        let mut out = Vec::new();
        for (body, flags, skew) in frames {
            let len = (body.len() as i64 + 1 + i64::from(skew)).max(0) as u32;
            out.extend_from_slice(&len.to_le_bytes());
            out.push(flags);
            out.extend_from_slice(&body);
        }
        out
    })
}

/// Every directory in `tree`, as the list of names leading to it.
fn dir_paths(tree: &Entry) -> Vec<Vec<String>> {
    fn walk(e: &Entry, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if let Entry::Directory(children) = e {
            out.push(at.clone());
            for (name, child) in children {
                at.push(name.clone());
                walk(child, at, out);
                at.pop();
            }
        }
    }
    let mut out = Vec::new();
    walk(tree, &mut Vec::new(), &mut out);
    out
}

/// Puts `name -> e` in the directory at `path`.
fn put(tree: &mut Entry, path: &[String], name: String, e: Entry) {
    let mut at = tree;
    for n in path {
        let Entry::Directory(children) = at else {
            unreachable!("dir_paths only lists directories")
        };
        at = children.get_mut(n).expect("a listed directory");
    }
    let Entry::Directory(children) = at else {
        unreachable!("dir_paths only lists directories")
    };
    children.insert(name, e);
}

fn bad_name_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("/".to_owned()),
        (name_strategy(), name_strategy()).prop_map(|(a, b)| format!("{a}/{b}")),
        name_strategy().prop_map(|a| format!("../{a}")),
        (name_strategy(), name_strategy()).prop_map(|(a, b)| format!("{a}\0{b}")),
        Just("\0".to_owned()),
        // Over 255 bytes: 86 three-byte characters.
        Just("€".repeat(86)),
        (256usize..600).prop_map(|n| "x".repeat(n)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Arbitrary bytes: the reader errors out (or decodes something) without panicking,
    /// without looping, and without any allocation past the frame cap.
    #[test]
    fn frame_reader_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let (_, biggest) = drain(&bytes);
        prop_assert!(biggest <= ALLOC_CAP, "an allocation of {} bytes", biggest);
    }

    #[test]
    fn frame_reader_survives_plausible_garbage_frames(bytes in plausible_frames()) {
        let (_, biggest) = drain(&bytes);
        prop_assert!(biggest <= ALLOC_CAP, "an allocation of {} bytes", biggest);
    }

    /// Valid encodings decode to what was sent; mutated ones never panic or over-allocate.
    #[test]
    fn frame_reader_survives_mutated_frames(
        msgs in prop::collection::vec(msg_strategy(), 1..4),
        compress in any::<bool>(),
        mutations in prop::collection::vec(mutation_strategy(), 1..6),
    ) {
        let mut wire = Vec::new();
        {
            let mut w = FrameWriter::new(&mut wire);
            w.set_compress(compress);
            for m in &msgs {
                w.send(m).expect("encoding a valid message");
            }
        }
        let mut r = FrameReader::new(&wire[..]);
        for m in &msgs {
            let got = r.recv().expect("a valid frame decodes");
            prop_assert_eq!(encode(&got), encode(m));
        }
        prop_assert!(matches!(r.recv(), Err(WireError::Closed)));

        let mut bad = wire.clone();
        for m in &mutations {
            mutate(&mut bad, m);
        }
        let (_, biggest) = drain(&bad);
        prop_assert!(biggest <= ALLOC_CAP, "an allocation of {} bytes", biggest);
    }

    /// Trees of valid names (and links that stay inside) pass; one invalid name anywhere, or
    /// one link leading out, fails with a message naming it.
    #[test]
    fn check_entry_holds_trees_to_the_naming_rules(
        tree in tree_strategy(),
        bad in bad_name_strategy(),
        pick in any::<usize>(),
        ups in 0usize..4,
    ) {
        let root = RelPath::root();
        prop_assert!(check_entry(&root, &tree, false).is_ok(), "{:?}", check_entry(&root, &tree, false));

        let dirs = dir_paths(&tree);
        let at = &dirs[pick % dirs.len()];

        let mut with_bad = tree.clone();
        put(&mut with_bad, at, bad.clone(), Entry::file([1; 32], 1, false));
        let err = check_entry(&root, &with_bad, false).expect_err("an invalid name must be refused");
        prop_assert!(err.starts_with("bad name in tree"), "{}", err);

        // A link at depth d (d names above it) may climb d levels, not d + 1.
        let climb = at.len() + 1 + ups;
        let target = format!("{}x", "../".repeat(climb));
        let mut with_link = tree.clone();
        put(&mut with_link, at, "escape-link".into(), Entry::symlink(&target));
        let err = check_entry(&root, &with_link, false).expect_err("an escaping link must be refused");
        prop_assert!(err.contains("would lead outside the root"), "{}", err);

        let inside = format!("{}x", "../".repeat(at.len()));
        let mut with_ok_link = tree.clone();
        put(&mut with_ok_link, at, "escape-link".into(), Entry::symlink(&inside));
        prop_assert!(check_entry(&root, &with_ok_link, false).is_ok());
    }
}
