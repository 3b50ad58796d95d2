//! The endpoint boundary: the engine drives both sides of a session through [`Endpoint`].
//!
//! Shaped for a remote agent as much as for a local directory: scans carry only metadata and
//! digests, content moves as a byte stream, and every call can fail with a reason.
//!
//! Rules every implementation keeps:
//! - An endpoint keeps its own view of its tree ([`Endpoint::tree`]): what the last scan saw,
//!   updated by what its own transitions did. The engine never edits it.
//! - [`Endpoint::transition`] applies each change only if the disk still holds the change's
//!   `old` (no clobbering), places files whole (atomic rename of verified staged content),
//!   keeps a backup of replaced or removed content whose digest is not in the archive, and
//!   never writes outside the root or through a symlink.
//! - A failure at one path is reported in that path's [`Outcome`]; `Err` is for failures of
//!   the whole endpoint (root gone, connection lost).
//! - Calls are made from one thread at a time; watch events arrive on the channel given to
//!   [`Endpoint::watch`] from the endpoint's own threads.

pub mod local;
pub mod renamed;

use std::collections::{BTreeSet, HashSet};
use std::io::Read;
use std::path::PathBuf;

use std::sync::atomic::AtomicBool;

use ferry_core::{Change, Digest, Entry, RelPath};

use crate::copy::{Gone, Item, Sink};
pub use crate::delta::BaseOpener;

pub use crate::fs::ignore::IgnoreSpec;
pub use crate::fs::transition::Outcome;

/// Which side of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Alpha,
    Beta,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Alpha => "alpha",
            Side::Beta => "beta",
        }
    }
}

/// A failure of a whole endpoint operation.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("{side}: the root {root} is gone or no longer a directory")]
    RootGone { side: &'static str, root: String },
    #[error("{side}: {op} failed: {source}")]
    Io {
        side: &'static str,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{side}: {0}", side = .1)]
    Other(String, &'static str),
    /// The connection to a remote side broke (or the peer misbehaved): reconnect.
    #[error("{side}: connection lost: {message}")]
    Lost { side: &'static str, message: String },
}

/// Brings an endpoint's view of its tree up to date with what a transition did (`outcomes`
/// come in the order of `changes`). A view that disagrees with itself is forgotten: the next
/// scan is then full.
pub fn follow(tree: &mut Option<Entry>, changes: &[Change], outcomes: &[Outcome]) {
    for (ch, o) in changes.iter().zip(outcomes) {
        let done = Change {
            path: o.path.clone(),
            old: ch.old.clone(),
            new: o.now.clone(),
        };
        *tree = ferry_core::apply_changes(tree.take(), std::slice::from_ref(&done))
            .ok()
            .flatten();
    }
}

/// Content a cycle needs on one side.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct Wanted {
    pub digest: Digest,
    /// How many placements use it.
    pub uses: usize,
    pub size: u64,
}

/// Content arriving from the other side while a transition runs, in the order it needs it.
pub trait Feed: Send {
    /// The next piece of content: what it must be, and its bytes (read them before asking for
    /// the next). `None` once nothing more will come.
    fn next(&mut self) -> Option<(Wanted, &mut dyn Read)>;

    /// The same, but content sent as a delta is handed over as it came (a remote receiver
    /// forwards it and rebuilds it on its own side).
    fn next_content(&mut self) -> Option<(Wanted, Content<'_>)> {
        self.next().map(|(w, r)| (w, Content::Stream(r)))
    }
}

/// Content as it arrives.
pub enum Content<'a> {
    Stream(&'a mut dyn Read),
    /// A delta against the receiver's own file at `base` (which had `base_digest`).
    Delta {
        base: RelPath,
        base_digest: Digest,
        delta: Vec<u8>,
    },
}

/// No content at all (everything needed was found locally).
pub struct NoFeed;

impl Feed for NoFeed {
    fn next(&mut self) -> Option<(Wanted, &mut dyn Read)> {
        None
    }
}

/// What to scan.
#[derive(Clone, Debug)]
pub enum ScanRequest {
    /// Everything.
    Full,
    /// Just these paths (from watch events) and what they reveal.
    Paths(BTreeSet<RelPath>),
}

/// Counters a scan reports, and what it noticed on the way.
#[derive(Clone, Debug, Default)]
pub struct ScanReport {
    pub entries: u64,
    pub hashed_files: u64,
    pub hashed_bytes: u64,
    /// Paths worth a word to the user (a write that landed in a version ferry had swapped
    /// out, kept as a conflict copy): (path, message).
    pub notes: Vec<(RelPath, String)>,
}

/// What a watcher reports.
#[derive(Clone, Debug)]
pub enum WatchEvent {
    /// These paths changed.
    Paths(Side, Vec<RelPath>),
    /// Events were lost: scan everything.
    Rescan(Side),
    /// The watcher failed; the engine falls back to periodic full scans.
    Failed(Side, String),
    /// A remote side's connection broke while nothing was asked of it.
    Disconnected(Side, String),
    /// Not from a watcher: the process was asked to stop (SIGINT/SIGTERM).
    Stop,
    /// Not from a watcher: an `--on-change` hook finished (see [`crate::hooks`]).
    HookDone,
    /// Not from a watcher: the daemon asks for a cycle (a flush, a resolve); its report (or
    /// why not, and whether that is the request's fault) goes back on the channel.
    Request(crate::engine::Request, crate::engine::ReplyTo),
}

/// One side of a session.
pub trait Endpoint: Send {
    /// A human-readable name for messages (`/home/me/app`, `docker://web/app`).
    fn describe(&self) -> String;

    /// Sets the ignore rules. The next scan must be full.
    fn set_ignore(&mut self, spec: &IgnoreSpec) -> Result<(), EndpointError>;

    /// Scans and updates [`Endpoint::tree`]. A missing root gives a `None` tree, not an error.
    fn scan(&mut self, req: &ScanRequest) -> Result<ScanReport, EndpointError>;

    /// The tree as last scanned and transitioned (`None` if the root does not exist).
    fn tree(&self) -> Option<&Entry>;

    /// Reads a small file at `path` (for `.ferryignore`); `None` if absent.
    fn read_small(&mut self, path: &RelPath, limit: u64) -> Result<Option<Vec<u8>>, EndpointError>;

    /// Stages every digest in `wanted` that this side can copy from its own files (a renamed
    /// or copied file) instead of receiving it. Returns the digests still missing.
    fn stage_local(&mut self, wanted: &[Wanted]) -> Result<Vec<Digest>, EndpointError>;

    /// Opens the content of the file at `path`, which the scan saw with `digest`.
    fn open(
        &mut self,
        path: &RelPath,
        digest: &Digest,
    ) -> Result<Box<dyn Read + Send + '_>, EndpointError>;

    /// Applies changes; `backup` holds the digests whose content must be kept when replaced
    /// or removed. Content not staged by `stage_local` comes from `feed`, in the order the
    /// changes need it (the order of [`Entry::walk`] over the changes' new values): each piece
    /// must be exactly `Wanted::size` bytes hashing to `Wanted::digest`, else it is refused
    /// (and the paths that needed it report "content not available").
    fn transition(
        &mut self,
        changes: &[Change],
        backup: &HashSet<Digest>,
        feed: &mut dyn Feed,
    ) -> Result<Vec<Outcome>, EndpointError>;

    /// Drops whatever staged content the cycle's transitions did not use.
    fn discard_staged(&mut self);

    /// Starts watching; events go to `tx`.
    fn watch(&mut self, tx: std::sync::mpsc::SyncSender<WatchEvent>) -> Result<(), EndpointError>;

    /// Reports what the watcher could not send on the channel: lost events (`Rescan`) or a
    /// failure to watch part of the tree (`Failed`). Called whenever the engine wakes.
    fn poll_watch(&mut self) -> Option<WatchEvent>;

    /// Where this side's backups go.
    fn backup_root(&self) -> PathBuf;

    /// Persists what makes the next start cheap (the stat cache). Best effort.
    fn save_cache(&mut self) -> Result<(), EndpointError>;

    /// True for a side reached over a connection (content then moves as deltas where it can).
    fn is_remote(&self) -> bool {
        false
    }

    /// How this side's filesystem compares names (case, Unicode normalization), as learned
    /// by its first scan. A remote side reports Linux's exact names: its agent runs on Linux,
    /// whose own filesystems keep names as given (an exFAT or FUSE mount inside a container
    /// would need the agent to probe; not done yet).
    fn name_rules(&self) -> ferry_core::NameRules {
        ferry_core::NameRules::EXACT
    }

    /// An rsync signature of the file at `path` if it still holds `digest` (see [`delta`]);
    /// `None` when this side cannot or will not make one.
    fn signature(
        &mut self,
        _path: &RelPath,
        _digest: &Digest,
    ) -> Result<Option<Vec<u8>>, EndpointError> {
        Ok(None)
    }

    /// Reads base files for deltas arriving in a transition's feed.
    fn base_opener(&self) -> Option<BaseOpener> {
        None
    }

    /// Reads `items` in order into `out` (whole, or as deltas against the receiver's files
    /// where an item carries a signature), until done, `stop` or the receiver is gone (`Err`).
    fn read_items(
        &mut self,
        items: &[Item],
        stop: &AtomicBool,
        out: &mut dyn Sink,
    ) -> Result<(), Gone> {
        crate::copy::read_by_open(self, items, stop, out)
    }

    /// False once a remote side's connection broke (until [`Endpoint::reconnect`]).
    fn connected(&self) -> bool {
        true
    }

    /// Connects again after [`EndpointError::Lost`]; the next scan must be full.
    fn reconnect(&mut self) -> Result<(), EndpointError> {
        Ok(())
    }

    /// Bytes this side's connection carried so far, both ways (0 for a local side).
    /// What this endpoint is, to tell it from a new one at the same address (a recreated
    /// container, a mirror deleted and made again): `None` when that cannot be told.
    fn identity(&self) -> Option<String> {
        None
    }

    fn wire_bytes(&self) -> u64 {
        0
    }

    /// Starts `command` with `sh -c` in this side's root, on this side's machine, and returns
    /// at once; `done` is called once, from another thread, with how it ended (a connection
    /// lost meanwhile ends it as failed). `Err`: it did not start.
    fn exec(&mut self, command: &str, done: crate::hooks::ExecDone) -> Result<(), EndpointError> {
        let _ = (command, done);
        Err(EndpointError::Other(
            "this side cannot run commands".into(),
            "endpoint",
        ))
    }
}
