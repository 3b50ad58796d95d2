//! A directory on this machine.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant, SystemTime};

use ferry_core::{Change, Digest, Entry, RelPath};

use super::{
    BaseOpener, Endpoint, EndpointError, Feed, IgnoreSpec, Outcome, ScanReport, ScanRequest, Side,
    Wanted, WatchEvent,
};
use crate::fs::beneath::Root;
use crate::fs::ignore::{Ignorer, STAGING_DIR_NAME};
use crate::fs::scan::{
    DirHook, LocalTree, NoHook, Scanner, StatCache, open_nofollow, parents_are_dirs,
};
use crate::fs::stage::Staging;
use crate::fs::sys::FsCaps;
use crate::fs::transition::{Applier, LinkWay, Swapped, check_swapped};
use crate::fs::watch::{DirWatcher, Seen};
use crate::state::{
    Retention, backup_stamp, new_backup_dir, prune_backups, read_versioned, write_atomic,
    write_versioned,
};

const CACHE_MAGIC: &[u8; 8] = b"FERRYSC2";
/// The modes ferry knows for paths on a filesystem that keeps none (`LocalTree::kept_modes`).
const MODES_MAGIC: &[u8; 8] = b"FERRYKM1";
/// Smallest content worth looking for a local copy of (see `stage_local`).
const LOCAL_COPY_MIN: u64 = 64 * 1024;

pub struct LocalEndpoint {
    side: Side,
    root: PathBuf,
    ignorer: Ignorer,
    state: LocalTree,
    staging: Staging,
    backup_root: PathBuf,
    /// Versions replaced by ferry whose content is in the archive (see `Applier::replaced_dir`).
    replaced_root: PathBuf,
    cache_path: PathBuf,
    watch: Option<WatchHook>,
    /// The stat cache changed since it was loaded or saved.
    cache_dirty: bool,
    /// The watcher channel overflowed: the engine must rescan everything.
    overflow: Arc<AtomicBool>,
    link_way: LinkWay,
    /// What the root's filesystem can hold (`sys::probe`, at open).
    caps: FsCaps,
    /// What it cannot was said (once per session, with the first scan).
    caps_told: bool,
    /// Versions swapped out recently, watched for late writes.
    swapped: Vec<Swapped>,
    /// ferry's own directories this side never syncs (see [`LocalEndpoint::hide_own`]).
    own: Vec<PathBuf>,
    /// How long backups are kept; `None` until told (then nothing is pruned).
    retention: Option<Retention>,
    last_prune: Instant,
    /// Who gets what this side creates, when not this process (`sudo`, an agent writing for a
    /// container's user: see `fs::owner`).
    owner: Option<crate::fs::owner::Owner>,
    /// How the root's filesystem compares names: probed before the first scan that finds
    /// the root (see `fs::names`).
    names: Option<ferry_core::NameRules>,
}

/// While a session runs, its backups are pruned at most this often (and at its start).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

impl LocalEndpoint {
    /// An endpoint for `root` (canonical, existing or not) keeping its staging, backups and
    /// cache under `state_dir`.
    pub fn new(
        side: Side,
        root: PathBuf,
        state_dir: &Path,
        ignore: &IgnoreSpec,
    ) -> Result<Self, EndpointError> {
        Self::new_stored_as(side, side, root, state_dir, ignore)
    }

    /// As [`LocalEndpoint::new`], its files in `state_dir` named after `stored` (the name this
    /// side has in the session's files: a run naming the pair in the other order swaps them).
    pub fn new_stored_as(
        side: Side,
        stored: Side,
        root: PathBuf,
        state_dir: &Path,
        ignore: &IgnoreSpec,
    ) -> Result<Self, EndpointError> {
        let io = |op, source| EndpointError::Io {
            side: side.as_str(),
            op,
            source,
        };
        let ignorer =
            Ignorer::new(ignore).map_err(|e| EndpointError::Other(e.to_string(), side.as_str()))?;
        // Staging must share the root's filesystem so placing a file is one atomic rename.
        let same_fs = match (fs::metadata(state_dir), fs::metadata(&root)) {
            (Ok(s), Ok(r)) => s.dev() == r.dev(),
            _ => false,
        };
        let staging_dir = if same_fs {
            state_dir.join(format!("staging-{}", stored.as_str()))
        } else {
            // One subdirectory per session: two sessions sharing a root never touch each
            // other's staged files.
            let session = state_dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("session");
            root.join(STAGING_DIR_NAME).join(session)
        };
        let backup_root = state_dir.join("backups").join(stored.as_str());
        let replaced_root = state_dir.join("replaced").join(stored.as_str());
        let recovered = backup_root.join(format!("recovered-{}", backup_stamp(SystemTime::now())));
        // What the root's filesystem can hold, tried where staging goes (on it, either way).
        let caps = match fs::create_dir_all(&staging_dir) {
            Ok(()) => crate::fs::sys::probe(&staging_dir),
            Err(_) => FsCaps::default(),
        };
        let staging = Staging::open(staging_dir, !same_fs, &recovered)
            .map_err(|e| io("preparing staging", e))?;
        let owner =
            crate::fs::owner::from_env().map_err(|e| EndpointError::Other(e, side.as_str()))?;
        let cache_path = state_dir.join(format!("{}.cache", stored.as_str()));
        let modes_path = state_dir.join(format!("{}.modes", stored.as_str()));
        let cache: StatCache = read_versioned(&cache_path, CACHE_MAGIC)
            .ok()
            .flatten()
            .unwrap_or_default();
        // Probed now, before any watcher can see the probe; a root made later is probed at the
        // first scan that finds it.
        let names = crate::fs::names::probe(&root).ok();
        Ok(LocalEndpoint {
            side,
            root,
            ignorer,
            state: LocalTree {
                tree: None,
                cache,
                dirs: Default::default(),
                generation: 0,
                kept_modes: (!caps.modes).then(|| {
                    read_versioned(&modes_path, MODES_MAGIC)
                        .ok()
                        .flatten()
                        .unwrap_or_default()
                }),
            },
            staging,
            backup_root,
            replaced_root,
            cache_path,
            watch: None,
            cache_dirty: false,
            overflow: Arc::new(AtomicBool::new(false)),
            link_way: LinkWay::EmptyPath,
            caps,
            caps_told: false,
            names,
            swapped: Vec::new(),
            own: Vec::new(),
            retention: None,
            last_prune: Instant::now(),
            owner,
        })
    }

    /// Never syncs `dirs` (absolute) where they lie below the root: ferry's own install and
    /// state directories (an agent serving a home directory holds both). Side-local, and no
    /// ignore pattern re-includes them. The next scan must be full.
    pub fn hide_own(&mut self, dirs: Vec<PathBuf>) {
        self.ignorer.hide_own(&self.root, &dirs);
        self.own = dirs;
    }

    /// Sets how long this side's backups are kept, and prunes them now (a session's start);
    /// then at most every [`PRUNE_EVERY`] while it runs.
    pub fn set_retention(&mut self, policy: Retention) {
        self.retention = Some(policy);
        self.prune();
    }

    fn prune(&mut self) {
        self.last_prune = Instant::now();
        if let Some(policy) = self.retention {
            // Swapped-out versions (content the archive holds) age out like backups.
            prune_backups(&self.backup_root, policy, SystemTime::now());
            prune_backups(&self.replaced_root, policy, SystemTime::now());
        }
    }

    fn io_err(&self, op: &'static str, source: std::io::Error) -> EndpointError {
        EndpointError::Io {
            side: self.side.as_str(),
            op,
            source,
        }
    }

    fn abs(&self, rel: &RelPath) -> PathBuf {
        self.root.join(rel.as_str())
    }
}

impl Endpoint for LocalEndpoint {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn set_ignore(&mut self, spec: &IgnoreSpec) -> Result<(), EndpointError> {
        self.ignorer = Ignorer::new(spec)
            .map_err(|e| EndpointError::Other(e.to_string(), self.side.as_str()))?;
        self.ignorer.hide_own(&self.root, &self.own);
        Ok(())
    }

    fn scan(&mut self, req: &ScanRequest) -> Result<ScanReport, EndpointError> {
        if self.names.is_none() && self.root.is_dir() {
            // A root ferry cannot write to receives nothing, so how it compares names does
            // not matter: exact, and asked again at the next scan.
            self.names = crate::fs::names::probe(&self.root).ok();
        }
        if let (ScanRequest::Paths(paths), Some(rules), Some(tree)) =
            (req, self.names, self.state.tree.as_mut())
        {
            // What ferry placed is known under the spelling it used; a folding filesystem may
            // report the same file under its own: one file, not two (see `fs::names`).
            if !rules.is_exact() {
                crate::fs::names::drop_stale_spellings(&self.root, tree, paths, rules);
            }
        }
        let mut nohook = NoHook;
        let hook: &mut dyn DirHook = match self.watch.as_mut() {
            Some(w) => w,
            None => &mut nohook,
        };
        let mut scanner = Scanner::new(&self.root, &self.ignorer, hook);
        let res = match req {
            ScanRequest::Full => scanner.full(&mut self.state),
            ScanRequest::Paths(paths) => scanner.paths(&mut self.state, paths),
        };
        let stats = scanner.stats;
        // Hashing is what the cache saves; entries dropped or added change it too.
        self.cache_dirty |= stats.hashed_files > 0 || matches!(req, ScanRequest::Paths(_));
        res.map_err(|e| EndpointError::Io {
            side: self.side.as_str(),
            op: "scanning",
            source: e,
        })?;
        let mut notes = check_swapped(&mut self.swapped);
        if !self.caps_told {
            self.caps_told = true;
            if let Some(lacking) = self.caps.lacking() {
                notes.push((
                    RelPath::root(),
                    format!(
                        "this filesystem cannot keep {lacking}: files sync with the modes ferry \
                         knows for them (not the disk's), symlinks are not placed here, backups \
                         are copies"
                    ),
                ));
            }
        }
        Ok(ScanReport {
            entries: stats.entries,
            hashed_files: stats.hashed_files,
            hashed_bytes: stats.hashed_bytes,
            notes,
        })
    }

    fn identity(&self) -> Option<String> {
        // The root directory's inode and birth time: a directory deleted and made again is
        // another one (the inode alone may be reused at once), a restart or a remount is not.
        let m = fs::symlink_metadata(&self.root).ok()?;
        let born = m
            .created()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Some(format!("dir:{}:{born}", m.ino()))
    }

    fn tree(&self) -> Option<&Entry> {
        self.state.tree.as_ref()
    }

    fn name_rules(&self) -> ferry_core::NameRules {
        self.names.unwrap_or(ferry_core::NameRules::EXACT)
    }

    fn read_small(&mut self, path: &RelPath, limit: u64) -> Result<Option<Vec<u8>>, EndpointError> {
        let abs = self.abs(path);
        let err = |msg: String| EndpointError::Other(format!("{path}: {msg}"), self.side.as_str());
        if fs::symlink_metadata(&abs).is_err() {
            return Ok(None);
        }
        // A link (`.ferryignore -> .gitignore`) is fine as long as it resolves inside the root.
        let real = abs.canonicalize().map_err(|e| err(e.to_string()))?;
        if !real.starts_with(&self.root) {
            return Err(err("is a symlink leading outside the root; not read".into()));
        }
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&real)
            .map_err(|e| err(e.to_string()))?;
        if !f.metadata().is_ok_and(|m| m.is_file()) {
            return Err(err("is not a regular file; not read".into()));
        }
        let mut buf = Vec::new();
        f.take(limit)
            .read_to_end(&mut buf)
            .map_err(|e| err(e.to_string()))?;
        Ok(Some(buf))
    }

    fn stage_local(&mut self, wanted: &[Wanted]) -> Result<Vec<Digest>, EndpointError> {
        // Finding a local copy means indexing every file by digest: worth it only for content
        // big enough that copying beats receiving it (a renamed or moved large file).
        let (big, small): (Vec<&Wanted>, Vec<&Wanted>) =
            wanted.iter().partition(|w| w.size >= LOCAL_COPY_MIN);
        let mut missing: Vec<Digest> = small.iter().map(|w| w.digest).collect();
        if big.is_empty() {
            return Ok(missing);
        }
        let want: HashSet<Digest> = big.iter().map(|w| w.digest).collect();
        let mut local: HashMap<Digest, String> = HashMap::new();
        for (p, c) in self.state.cache.iter() {
            if want.contains(&c.digest) {
                local.entry(c.digest).or_insert(p);
            }
        }
        for w in big {
            let staged = local.get(&w.digest).is_some_and(|p| {
                let Ok(rel) = RelPath::new(p) else {
                    return false;
                };
                if !parents_are_dirs(&self.root, &rel) {
                    return false;
                }
                match open_nofollow(&self.abs(&rel)) {
                    Ok(mut f) => self.staging.receive(w, &mut f).is_ok(),
                    Err(_) => false,
                }
            });
            if !staged {
                missing.push(w.digest);
            }
        }
        Ok(missing)
    }

    fn open(
        &mut self,
        path: &RelPath,
        _digest: &Digest,
    ) -> Result<Box<dyn Read + Send + '_>, EndpointError> {
        // No parent check here: reading through a parent swapped for a symlink could only
        // yield bytes that staging then refuses, since they must hash to the scanned digest.
        let f = open_nofollow(&self.abs(path)).map_err(|e| self.io_err("opening for copy", e))?;
        Ok(Box::new(f))
    }

    fn transition(
        &mut self,
        changes: &[Change],
        backup: &HashSet<Digest>,
        feed: &mut dyn Feed,
    ) -> Result<Vec<Outcome>, EndpointError> {
        let root = match fs::symlink_metadata(&self.root) {
            Ok(m) if m.is_dir() => Root::open(&self.root).ok(),
            _ => None,
        };
        let Some(root) = root else {
            return Err(EndpointError::RootGone {
                side: self.side.as_str(),
                root: self.describe(),
            });
        };
        if self.last_prune.elapsed() >= PRUNE_EVERY {
            self.prune();
        }
        let now = SystemTime::now();
        let backup_dir = new_backup_dir(&self.backup_root, now);
        let replaced_dir = new_backup_dir(&self.replaced_root, now);
        let mut nohook = NoHook;
        let hook: &mut dyn DirHook = match self.watch.as_mut() {
            Some(w) => w,
            None => &mut nohook,
        };
        let mut applier = Applier {
            root: &root,
            staging: &mut self.staging,
            backup_dir: &backup_dir,
            replaced_dir: &replaced_dir,
            backup,
            state: &mut self.state,
            hook,
            last_dir: None,
            feed,
            link_way: &mut self.link_way,
            caps: self.caps,
            swapped: &mut self.swapped,
            meta: self.ignorer.meta(),
            owner: self.owner,
        };
        let outcomes: Vec<Outcome> = changes.iter().map(|ch| applier.apply(ch)).collect();
        super::follow(&mut self.state.tree, changes, &outcomes);
        self.cache_dirty = true;
        Ok(outcomes)
    }

    fn watch(&mut self, tx: SyncSender<WatchEvent>) -> Result<(), EndpointError> {
        let side = self.side;
        let root = self.root.clone();
        let overflow = self.overflow.clone();
        let handler = move |seen: Seen| {
            let ev = match seen {
                Seen::Overflow => WatchEvent::Rescan(side),
                Seen::Failed(msg) => WatchEvent::Failed(side, msg),
                Seen::Path(p) => {
                    let Some(rel) = p
                        .strip_prefix(&root)
                        .ok()
                        .and_then(|p| p.to_str())
                        .and_then(|p| RelPath::new(p).ok())
                    else {
                        return;
                    };
                    WatchEvent::Paths(side, vec![rel])
                }
            };
            // Never block the watcher's thread: a full channel means "look at everything".
            if tx.try_send(ev).is_err() {
                overflow.store(true, Ordering::SeqCst);
            }
        };
        let watcher = DirWatcher::new(handler)
            .map_err(|e| EndpointError::Other(watch_error_hint(&e), self.side.as_str()))?;
        self.watch = Some(WatchHook {
            watcher,
            failed: None,
        });
        Ok(())
    }

    fn discard_staged(&mut self) {
        self.staging.finish();
    }

    fn poll_watch(&mut self) -> Option<WatchEvent> {
        if let Some(msg) = self.watch.as_mut().and_then(|w| w.failed.take()) {
            return Some(WatchEvent::Failed(self.side, msg));
        }
        self.overflow
            .swap(false, Ordering::SeqCst)
            .then_some(WatchEvent::Rescan(self.side))
    }

    fn backup_root(&self) -> PathBuf {
        self.backup_root.clone()
    }

    fn signature(
        &mut self,
        path: &RelPath,
        digest: &Digest,
    ) -> Result<Option<Vec<u8>>, EndpointError> {
        let Ok(base) = read_base(&self.root, path) else {
            return Ok(None);
        };
        // Only a base that still is what the scan saw: anything else makes a useless delta.
        if blake3::hash(&base).as_bytes() != &digest.0 {
            return Ok(None);
        }
        Ok(Some(crate::delta::signature(&base)))
    }

    fn exec(&mut self, command: &str, done: crate::hooks::ExecDone) -> Result<(), EndpointError> {
        crate::hooks::spawn(command, &self.root, done)
            .map_err(|e| self.io_err("starting a hook", e))
    }

    fn base_opener(&self) -> Option<BaseOpener> {
        let root = self.root.clone();
        Some(std::sync::Arc::new(move |p: &RelPath| read_base(&root, p)))
    }

    fn save_cache(&mut self) -> Result<(), EndpointError> {
        if !self.cache_dirty {
            return Ok(());
        }
        self.cache_dirty = false;
        if let Some(modes) = &self.state.kept_modes {
            let path = self.cache_path.with_extension("modes");
            let bytes = write_versioned(MODES_MAGIC, modes)
                .map_err(|e| self.io_err("saving the modes", e))?;
            write_atomic(&path, &bytes).map_err(|e| self.io_err("saving the modes", e))?;
        }
        let bytes = write_versioned(CACHE_MAGIC, &self.state.cache)
            .map_err(|e| self.io_err("saving the stat cache", e))?;
        write_atomic(&self.cache_path, &bytes).map_err(|e| self.io_err("saving the stat cache", e))
    }
}

/// Reads the file at `rel` for a delta: a regular file reached through real directories only,
/// and no bigger than deltas go.
fn read_base(root: &Path, rel: &RelPath) -> std::io::Result<Vec<u8>> {
    if !parents_are_dirs(root, rel) {
        return Err(std::io::Error::other("a parent is not a directory"));
    }
    let f = open_nofollow(&root.join(rel.as_str()))?;
    let meta = f.metadata()?;
    if !meta.is_file() || meta.len() > crate::delta::DELTA_MAX {
        return Err(std::io::Error::other("not a regular file of delta size"));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    f.take(crate::delta::DELTA_MAX).read_to_end(&mut buf)?;
    Ok(buf)
}

struct WatchHook {
    watcher: DirWatcher,
    failed: Option<String>,
}

impl DirHook for WatchHook {
    fn dir_added(&mut self, abs: &Path) {
        if let Err(e) = self.watcher.watch(abs) {
            // A directory gone meanwhile is no failure: its parent's events tell of it.
            if self.failed.is_none() && e.raw_os_error() != Some(libc::ENOENT) {
                self.failed = Some(watch_error_hint(&e));
            }
        }
    }

    fn dir_removed(&mut self, abs: &Path) {
        self.watcher.unwatch(abs);
    }
}

/// Turns watcher errors a user can fix into advice.
fn watch_error_hint(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOSPC) => "too many watches: raise fs.inotify.max_user_watches (sysctl); \
                               falling back to periodic scans"
            .into(),
        Some(libc::EMFILE) => {
            "too many inotify instances: raise fs.inotify.max_user_instances (sysctl)".into()
        }
        _ => format!("watcher error: {e}"),
    }
}
