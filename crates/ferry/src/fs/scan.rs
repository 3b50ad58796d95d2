//! Walking a local directory into an entry tree, with a stat cache so that an unchanged file
//! is never read twice.

use std::collections::BTreeSet;
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ferry_core::{DIR_MODE, Digest, Entry, Mtime, RelPath, link_stays_inside};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::ignore::Ignorer;
use super::meta::{MetaSpec, Symlinks};

/// A file's identity and change markers: if all of these match, its content is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mode: u32,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl Stat {
    pub fn of(m: &Metadata) -> Stat {
        Stat {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mode: m.mode(),
            mtime_ns: m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec(),
            ctime_ns: m.ctime().saturating_mul(1_000_000_000) + m.ctime_nsec(),
        }
    }

    /// The file entry this stat and `digest` make under `meta`.
    pub fn entry(&self, digest: Digest, meta: &MetaSpec) -> Entry {
        Entry::File {
            digest,
            size: self.size,
            mode: meta.file_mode(self.mode),
            mtime: Mtime(self.mtime_ns),
        }
    }
}

/// What the scan knew of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cached {
    pub stat: Stat,
    pub digest: Digest,
    /// False when the file was modified too close to the moment it was hashed for the stat to
    /// prove a later write would be seen (coarse kernel timestamps): then it is hashed again.
    pub trusted: bool,
    /// The scan that last saw this file (not saved): a full scan drops entries it did not see.
    #[serde(skip)]
    pub seen: u32,
}

/// Files changed less than this long before being hashed are not trusted from the cache: the
/// kernel's file timestamps are only as fine as its clock tick.
const RACY_NS: i64 = 50_000_000;

/// True if a file with this stat was last changed long enough ago (both mtime and ctime: tools
/// like `cp -p` set an old mtime on new content) that a later write would show in its stat.
pub fn stat_is_settled(stat: &Stat) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    stat.mtime_ns.max(stat.ctime_ns) + RACY_NS < now
}

/// Path -> what the last scan saw; also the reference for the no-clobber check. Grouped by
/// directory: a scan looks the files of one directory up one after another, and a small map
/// per directory keeps those lookups in the processor's cache (a single map of 100,000 paths
/// cost a few cache misses per file).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StatCache {
    dirs: FxHashMap<String, FxHashMap<String, Cached>>,
}

/// `(directory, name)` of a path: `("", name)` at the root.
fn split_path(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

impl StatCache {
    pub fn get(&self, path: &str) -> Option<&Cached> {
        let (dir, name) = split_path(path);
        self.dirs.get(dir)?.get(name)
    }

    pub fn get_mut(&mut self, path: &str) -> Option<&mut Cached> {
        let (dir, name) = split_path(path);
        self.dirs.get_mut(dir)?.get_mut(name)
    }

    pub fn insert(&mut self, path: &str, c: Cached) {
        let (dir, name) = split_path(path);
        match self.dirs.get_mut(dir) {
            Some(files) => {
                files.insert(name.to_owned(), c);
            }
            None => {
                let mut files = FxHashMap::default();
                files.insert(name.to_owned(), c);
                self.dirs.insert(dir.to_owned(), files);
            }
        }
    }

    pub fn remove(&mut self, path: &str) -> Option<Cached> {
        let (dir, name) = split_path(path);
        let files = self.dirs.get_mut(dir)?;
        let c = files.remove(name);
        if files.is_empty() {
            self.dirs.remove(dir);
        }
        c
    }

    /// Keeps the entries `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&Cached) -> bool) {
        self.dirs.retain(|_, files| {
            files.retain(|_, c| keep(c));
            !files.is_empty()
        });
    }

    /// Every entry, with its path.
    pub fn iter(&self) -> impl Iterator<Item = (String, &Cached)> {
        self.dirs.iter().flat_map(|(dir, files)| {
            files.iter().map(move |(name, c)| {
                let path = if dir.is_empty() {
                    name.clone()
                } else {
                    format!("{dir}/{name}")
                };
                (path, c)
            })
        })
    }
}

/// Counters for one scan.
#[derive(Clone, Copy, Debug, Default)]
pub struct ScanStats {
    pub entries: u64,
    pub hashed_files: u64,
    pub hashed_bytes: u64,
}

/// Callbacks for directories entering and leaving the tree (the watcher follows them).
pub trait DirHook {
    fn dir_added(&mut self, abs: &Path);
    fn dir_removed(&mut self, abs: &Path);
}

/// No watching.
pub struct NoHook;

impl DirHook for NoHook {
    fn dir_added(&mut self, _: &Path) {}
    fn dir_removed(&mut self, _: &Path) {}
}

/// The scanned state of one local root.
#[derive(Debug, Default)]
pub struct LocalTree {
    pub tree: Option<Entry>,
    pub cache: StatCache,
    /// Directory path -> inode, to notice a directory replaced by another of the same name.
    pub dirs: FxHashMap<String, u64>,
    /// Numbers scans, for `Cached::seen`.
    pub generation: u32,
    /// On a filesystem that does not keep permission bits (exFAT shows every file `0777`):
    /// the mode each path has as far as ferry knows (what it placed, else the default), which
    /// the scan reports instead of the disk's, so the disk's never travel as changes. `None`
    /// where modes are kept. Not saved: after a restart paths start again from the default.
    pub kept_modes: Option<FxHashMap<String, u32>>,
}

impl LocalTree {
    /// The mode the scan reports for `rel`: `shown` (the disk's) where modes are kept, else
    /// what ferry knows (see `kept_modes`), `default` for a path it never placed.
    pub fn mode_as_kept(&mut self, rel: &str, shown: u32, default: u32) -> u32 {
        match &mut self.kept_modes {
            None => shown,
            Some(m) => *m.entry(rel.to_owned()).or_insert(default),
        }
    }

    /// Records the modes in `now` (what is at `rel` after a change), on a filesystem that does
    /// not keep them.
    pub fn keep_modes(&mut self, rel: &RelPath, now: Option<&Entry>) {
        let Some(m) = &mut self.kept_modes else {
            return;
        };
        fn walk(m: &mut FxHashMap<String, u32>, rel: &RelPath, e: &Entry) {
            match e {
                Entry::File { mode, .. } => {
                    m.insert(rel.as_str().to_owned(), *mode);
                }
                Entry::Directory(d) => {
                    m.insert(rel.as_str().to_owned(), d.mode);
                    for (name, child) in d.iter() {
                        if let Ok(c) = rel.join(name) {
                            walk(m, &c, child);
                        }
                    }
                }
                _ => {}
            }
        }
        match now {
            Some(e) => walk(m, rel, e),
            None => {
                m.remove(rel.as_str());
            }
        }
    }
}

/// `e` with the mode `state` knows for `rel` (see `LocalTree::kept_modes`).
fn as_kept(state: &mut LocalTree, rel: &RelPath, mut e: Entry) -> Entry {
    if let Entry::File { mode, .. } = &mut e {
        *mode = state.mode_as_kept(rel.as_str(), *mode, ferry_core::FILE_MODE);
    }
    e
}

/// A file found by the walk whose digest is not in the cache: hashed after the walk, several
/// at a time.
struct Pending {
    rel: RelPath,
    stat: Stat,
}

/// What hashing one file gave: its cache entry and size, `None` if it vanished.
type Hashed = io::Result<Option<(Cached, u64)>>;

/// Fewer files than this, holding fewer bytes than [`PARALLEL_HASH_MIN_BYTES`], are hashed on
/// the scanning thread alone (starting threads costs more than it saves).
const PARALLEL_HASH_MIN: usize = 64;
const PARALLEL_HASH_MIN_BYTES: u64 = 16 * 1024 * 1024;

pub struct Scanner<'a> {
    pub root: &'a Path,
    pub ignorer: &'a Ignorer,
    pub hook: &'a mut dyn DirHook,
    pub stats: ScanStats,
    buf: Vec<u8>,
    /// The current scan's number (see `Cached::seen`).
    generation: u32,
    pending: Vec<Pending>,
}

impl<'a> Scanner<'a> {
    pub fn new(root: &'a Path, ignorer: &'a Ignorer, hook: &'a mut dyn DirHook) -> Self {
        Scanner {
            root,
            ignorer,
            hook,
            stats: ScanStats::default(),
            buf: Vec::new(),
            generation: 0,
            pending: Vec::new(),
        }
    }

    fn abs(&self, rel: &RelPath) -> PathBuf {
        if rel.is_root() {
            self.root.to_path_buf()
        } else {
            self.root.join(rel.as_str())
        }
    }

    /// Scans the whole root into `state`, reusing its cached digests; cache entries for files
    /// no longer there are dropped.
    pub fn full(&mut self, state: &mut LocalTree) -> io::Result<()> {
        let meta = match fs::symlink_metadata(self.root) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                for dir in state.dirs.keys() {
                    self.hook.dir_removed(&self.root.join(dir));
                }
                *state = LocalTree::default();
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if !meta.is_dir() {
            return Err(io::Error::other("the root is no longer a directory"));
        }
        self.begin(state);
        let old_dirs = std::mem::take(&mut state.dirs);
        let mut tree = self.entry(&RelPath::root(), &meta, state);
        self.hash_pending(state, &RelPath::root(), &mut tree);
        state.tree = tree;
        let generation = self.generation;
        state.cache.retain(|c| c.seen == generation);
        // Watching an existing directory again is harmless; stop watching the ones gone.
        for dir in old_dirs.keys() {
            if !state.dirs.contains_key(dir) {
                self.hook.dir_removed(&self.root.join(dir));
            }
        }
        Ok(())
    }

    /// Starts a scan: a new number for the cache entries it sees.
    fn begin(&mut self, state: &mut LocalTree) {
        state.generation = state.generation.wrapping_add(1);
        self.generation = state.generation;
    }

    /// Rescans only `paths` (from watch events) on top of `state`. Each path is looked at
    /// again; a directory that is new (or was replaced) is scanned whole, one that was already
    /// known keeps its children (their own events name them).
    pub fn paths(&mut self, state: &mut LocalTree, paths: &BTreeSet<RelPath>) -> io::Result<()> {
        if state.tree.is_none() {
            self.full(state)?;
            return Ok(());
        }
        match fs::symlink_metadata(self.root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) | Err(_) => {
                self.full(state)?;
                return Ok(());
            }
        }
        if paths.iter().any(RelPath::is_root) {
            // The root itself changed (moved away, replaced): watch whatever is there now and
            // look at everything.
            self.hook.dir_removed(self.root);
            self.full(state)?;
            return Ok(());
        }
        let mut targets = Vec::with_capacity(paths.len());
        for p in paths {
            // Climb to the nearest ancestor whose parent the tree knows as a directory.
            let mut target = p.clone();
            while let Some(parent) = target.parent() {
                if matches!(
                    state.tree.as_ref().and_then(|t| t.get(parent.as_str())),
                    Some(Entry::Directory(_))
                ) {
                    break;
                }
                target = parent;
            }
            if !target.is_root() && !self.ignorer.event_ignored(&target) {
                targets.push(target);
            }
        }
        // Paths that vanished first: a directory renamed to a name that sorts earlier keeps its
        // inode, so inotify hands its new name the old watch; forgetting the old name after
        // watching the new one would drop that watch.
        let (gone, present): (Vec<RelPath>, Vec<RelPath>) = targets
            .into_iter()
            .partition(|t| fs::symlink_metadata(self.abs(t)).is_err());
        self.begin(state);
        for t in gone.iter().chain(&present) {
            self.rescan_one(state, t)?;
        }
        Ok(())
    }

    fn rescan_one(&mut self, state: &mut LocalTree, rel: &RelPath) -> io::Result<()> {
        let abs = self.abs(rel);
        // Never look through a parent that became a symlink since the tree saw it.
        let meta = if parents_are_dirs(self.root, rel) {
            match fs::symlink_metadata(&abs) {
                Ok(m) => Ok(Some(m)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        } else {
            Ok(None)
        };
        // A directory named by an event is scanned whole, even if an inode like its old one is
        // there: it may be a new directory that reused the number (delete + recreate), whose
        // children were created before any watch could see them. The stat cache keeps this
        // cheap for a directory that did not really change.
        let old_files = self.remove(state, rel);
        let entry = match meta {
            Ok(None) => None,
            Ok(Some(m)) => {
                let mut e = self.entry(rel, &m, state);
                self.hash_pending(state, rel, &mut e);
                e
            }
            Err(e) => Some(Entry::Problem(format!("cannot stat: {e}"))),
        };
        // Files the old subtree had that this look did not find.
        for p in old_files {
            if state
                .cache
                .get(&p)
                .is_some_and(|c| c.seen != self.generation)
            {
                state.cache.remove(&p);
            }
        }
        if let Some(e) = entry {
            if let Some(Entry::Directory(siblings)) = state
                .tree
                .as_mut()
                .and_then(|t| Entry::get_mut(t, rel.parent().unwrap_or_default().as_str()))
            {
                siblings.insert(rel.name().unwrap_or_default().to_owned(), e);
            }
        }
        Ok(())
    }

    /// Takes the subtree at `rel` out of the tree, forgetting its directories (and their
    /// watches); returns the paths of the files it had (their cache entries stay, for reuse by
    /// a rescan).
    fn remove(&mut self, state: &mut LocalTree, rel: &RelPath) -> Vec<String> {
        let mut taken = Vec::new();
        let (Some(parent), Some(name)) = (rel.parent(), rel.name()) else {
            return taken;
        };
        let Some(Entry::Directory(siblings)) = state
            .tree
            .as_mut()
            .and_then(|t| Entry::get_mut(t, parent.as_str()))
        else {
            return taken;
        };
        let Some(old) = siblings.remove(name) else {
            return taken;
        };
        old.walk(rel.as_str(), &mut |p, e| match e {
            Entry::File { .. } => taken.push(p.to_owned()),
            Entry::Directory(_) if state.dirs.remove(p).is_some() => {
                self.hook.dir_removed(&self.root.join(p));
            }
            _ => {}
        });
        taken
    }

    fn entry(&mut self, rel: &RelPath, meta: &Metadata, state: &mut LocalTree) -> Option<Entry> {
        self.stats.entries += 1;
        let ft = meta.file_type();
        if ft.is_dir() {
            let abs = self.abs(rel);
            state.dirs.insert(rel.as_str().to_owned(), meta.ino());
            // Watch before listing, so nothing created in between is missed.
            self.hook.dir_added(&abs);
            // The root's own bits are never synced (see `reconcile`): reported as the default.
            let mode = if rel.is_root() {
                DIR_MODE
            } else {
                let shown = self.ignorer.meta().dir_mode(meta.mode());
                state.mode_as_kept(rel.as_str(), shown, DIR_MODE)
            };
            return Some(match self.dir(rel, &abs, state) {
                Entry::Directory(mut d) => {
                    d.mode = mode;
                    Entry::Directory(d)
                }
                e => e,
            });
        }
        if ft.is_file() {
            if let Some(problem) = self.ignorer.too_big(meta.len()) {
                // Never read, so a huge file costs nothing; stale cache entries go with it.
                state.cache.remove(rel.as_str());
                return Some(problem);
            }
            let stat = Stat::of(meta);
            if let Some(c) = state.cache.get_mut(rel.as_str()) {
                if c.trusted && c.stat == stat {
                    c.seen = self.generation;
                    let e = stat.entry(c.digest, &self.ignorer.meta());
                    return Some(as_kept(state, rel, e));
                }
            }
            // Hashed after the walk (`hash_pending`), which fills in the digest.
            self.pending.push(Pending {
                rel: rel.clone(),
                stat,
            });
            let e = stat.entry(Digest([0; 32]), &self.ignorer.meta());
            return Some(as_kept(state, rel, e));
        }
        if ft.is_symlink() {
            let how = self.ignorer.meta().symlinks;
            if how == Symlinks::Ignore {
                return None;
            }
            return Some(match fs::read_link(self.abs(rel)) {
                Ok(target) => match target.to_str() {
                    Some(t) if how == Symlinks::Raw || link_stays_inside(rel, t) => {
                        Entry::Symlink {
                            target: t.to_owned(),
                        }
                    }
                    Some(t) => Entry::Problem(format!(
                        "symlink to '{t}' may lead outside the root (only targets like '../dir/name' are synced; --symlinks raw syncs every link as it is); not synced"
                    )),
                    None => Entry::Problem("symlink target is not valid UTF-8; not synced".into()),
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
                Err(e) => Entry::Problem(format!("cannot read symlink: {e}")),
            });
        }
        let kind = if ft.is_fifo() {
            "a named pipe"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "a device"
        };
        Some(Entry::Problem(format!("{kind}; not synced")))
    }

    fn dir(&mut self, rel: &RelPath, abs: &Path, state: &mut LocalTree) -> Entry {
        let rd = match fs::read_dir(abs) {
            Ok(rd) => rd,
            Err(e) => return Entry::Problem(format!("cannot list directory: {e}")),
        };
        let mut children = std::collections::BTreeMap::new();
        for dent in rd {
            let Ok(dent) = dent else { continue };
            let os_name = dent.file_name();
            let Some(name) = os_name.to_str() else {
                let lossy = os_name.to_string_lossy().into_owned();
                children.entry(lossy).or_insert_with(|| {
                    Entry::Problem("name is not valid UTF-8; not synced".into())
                });
                continue;
            };
            let child = match rel.join(name) {
                Ok(c) => c,
                Err(e) => {
                    children.insert(name.to_owned(), Entry::Problem(format!("{e}; not synced")));
                    continue;
                }
            };
            let is_dir = dent.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if self.ignorer.is_ignored(child.as_str(), is_dir) {
                continue;
            }
            let meta = match dent.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    children.insert(name.to_owned(), Entry::Problem(format!("cannot stat: {e}")));
                    continue;
                }
            };
            if let Some(e) = self.entry(&child, &meta, state) {
                children.insert(name.to_owned(), e);
            }
        }
        Entry::Directory(children.into())
    }

    /// Hashes the files the walk of `base` (whose entry is `tree`) left pending, on several
    /// threads when there are many, and puts their digests in the tree and the cache.
    fn hash_pending(&mut self, state: &mut LocalTree, base: &RelPath, tree: &mut Option<Entry>) {
        let jobs = std::mem::take(&mut self.pending);
        if jobs.is_empty() {
            return;
        }
        let results = self.hash_all(&jobs);
        for (job, res) in jobs.iter().zip(results) {
            let found = match res {
                Ok(Some((cached, size))) => {
                    self.stats.hashed_files += 1;
                    self.stats.hashed_bytes += size;
                    // The size read, which the digest is of (the stat may be later).
                    let entry = Stat {
                        size,
                        ..cached.stat
                    }
                    .entry(cached.digest, &self.ignorer.meta());
                    let entry = as_kept(state, &job.rel, entry);
                    state.cache.insert(
                        job.rel.as_str(),
                        Cached {
                            seen: self.generation,
                            ..cached
                        },
                    );
                    Some(entry)
                }
                // Vanished between listing and reading: as if it had never been there.
                Ok(None) => None,
                Err(e) => Some(Entry::Problem(format!("cannot read: {e}"))),
            };
            place(tree, base, &job.rel, found);
        }
    }

    /// Hashes `jobs`, in order.
    fn hash_all(&mut self, jobs: &[Pending]) -> Vec<Hashed> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        let bytes: u64 = jobs.iter().map(|j| j.stat.size).sum();
        if threads < 2
            || jobs.len() < 2
            || (jobs.len() < PARALLEL_HASH_MIN && bytes < PARALLEL_HASH_MIN_BYTES)
        {
            if self.buf.is_empty() {
                self.buf = vec![0; 256 * 1024];
            }
            let mut buf = std::mem::take(&mut self.buf);
            let out = jobs
                .iter()
                .map(|j| hash_file(&self.abs(&j.rel), j.stat, &mut buf))
                .collect();
            self.buf = buf;
            return out;
        }
        // Work is handed out one file at a time: sizes vary too much for fixed shares.
        let next = std::sync::atomic::AtomicUsize::new(0);
        let root = self.root;
        let mut results: Vec<Option<Hashed>> = (0..jobs.len()).map(|_| None).collect();
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut buf = vec![0; 256 * 1024];
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(j) = jobs.get(i) else { break };
                            done.push((i, hash_file(&root.join(j.rel.as_str()), j.stat, &mut buf)));
                        }
                        done
                    })
                })
                .collect();
            for w in workers {
                // A worker that panicked leaves its files unhashed: reported as problems below.
                if let Ok(done) = w.join() {
                    for (i, r) in done {
                        results[i] = Some(r);
                    }
                }
            }
        });
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(io::Error::other("hashing thread failed"))))
            .collect()
    }
}

/// Puts what became of the pending file `rel` into `tree` (the entry at `base`): its hashed
/// entry, a problem, or nothing if it vanished.
fn place(tree: &mut Option<Entry>, base: &RelPath, rel: &RelPath, found: Option<Entry>) {
    if rel == base {
        *tree = found;
        return;
    }
    let Some(t) = tree.as_mut() else { return };
    let inner = if base.is_root() {
        rel.as_str()
    } else {
        match rel
            .as_str()
            .strip_prefix(base.as_str())
            .and_then(|r| r.strip_prefix('/'))
        {
            Some(r) => r,
            None => return,
        }
    };
    let (parent, name) = match inner.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", inner),
    };
    if let Some(Entry::Directory(children)) = Entry::get_mut(t, parent) {
        match found {
            Some(e) => {
                children.insert(name.to_owned(), e);
            }
            None => {
                children.remove(name);
            }
        }
    }
}

/// Hashes a file. `Ok(None)` if it vanished.
fn hash_file(abs: &Path, stat: Stat, buf: &mut [u8]) -> Hashed {
    let mut f = match open_nofollow(abs) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut h = blake3::Hasher::new();
    let mut size = 0u64;
    loop {
        let n = f.read(buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
        // A short read of a regular file is its end: no second read to hear it again. A file
        // that grows meanwhile shows in the stat taken below.
        if n < buf.len() && size >= stat.size {
            break;
        }
    }
    let after = Stat::of(&f.metadata()?);
    // If it changed while being read, or too recently to trust the stat, hash it again next
    // time. The digest may be of a torn read; staging verifies content against it anyway.
    let trusted = after == stat && size == stat.size && stat_is_settled(&after);
    Ok(Some((
        Cached {
            stat: after,
            digest: Digest(*h.finalize().as_bytes()),
            trusted,
            seen: 0,
        },
        size,
    )))
}

/// Opens a file for reading without following a symlink at the last component.
pub fn open_nofollow(p: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        // O_NONBLOCK: a FIFO swapped in after the scan saw a file must not hang a cycle.
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(p)
}

/// True if every parent of `rel` under `root` is a real directory (not a symlink).
pub fn parents_are_dirs(root: &Path, rel: &RelPath) -> bool {
    let mut cur = root.to_path_buf();
    let Some(parent) = rel.parent() else {
        return true;
    };
    for name in parent.components() {
        cur.push(name);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(n: u8) -> Cached {
        Cached {
            stat: Stat {
                dev: 1,
                ino: n.into(),
                size: 3,
                mode: 0o100644,
                mtime_ns: 0,
                ctime_ns: 0,
            },
            digest: Digest([n; 32]),
            trusted: true,
            seen: 0,
        }
    }

    #[test]
    fn stat_cache_groups_by_directory() {
        let mut c = StatCache::default();
        c.insert("top", cached(1));
        c.insert("a/b/x", cached(2));
        c.insert("a/b/y", cached(3));
        assert_eq!(c.get("top").map(|e| e.digest), Some(Digest([1; 32])));
        assert_eq!(c.get("a/b/y").map(|e| e.digest), Some(Digest([3; 32])));
        assert!(c.get("a/b").is_none() && c.get("b/y").is_none());
        let mut all: Vec<String> = c.iter().map(|(p, _)| p).collect();
        all.sort();
        assert_eq!(all, ["a/b/x", "a/b/y", "top"]);
        if let Some(e) = c.get_mut("a/b/x") {
            e.seen = 7;
        }
        c.retain(|e| e.seen == 7);
        assert_eq!(c.iter().map(|(p, _)| p).collect::<Vec<_>>(), ["a/b/x"]);
        assert!(c.remove("a/b/x").is_some());
        assert!(
            c.dirs.is_empty(),
            "an emptied directory leaves no map behind"
        );
        let bytes = postcard::to_allocvec(&{
            let mut c = StatCache::default();
            c.insert("d/f", cached(4));
            c
        })
        .expect("encodes");
        let back: StatCache = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(back.get("d/f").map(|e| e.stat.ino), Some(4));
    }

    #[test]
    fn place_puts_hashed_files_where_the_walk_left_them() {
        let file = |n: u8| Entry::file([n; 32], 1, false);
        let rel = |p: &str| RelPath::new(p).expect("valid path");
        let mut tree = Some(Entry::Directory(
            [(
                "d".to_owned(),
                Entry::Directory(
                    [("f".to_owned(), file(0)), ("g".to_owned(), file(0))]
                        .into_iter()
                        .collect(),
                ),
            )]
            .into_iter()
            .collect(),
        ));
        place(&mut tree, &RelPath::root(), &rel("d/f"), Some(file(9)));
        place(&mut tree, &RelPath::root(), &rel("d/g"), None);
        let t = tree.as_ref().expect("tree");
        assert_eq!(t.get("d/f"), Some(&file(9)));
        assert_eq!(
            t.get("d/g"),
            None,
            "a file that vanished before hashing is dropped"
        );
        // Relative to a rescanned subtree, and the subtree being the file itself.
        let mut sub = tree.as_ref().and_then(|t| t.get("d")).cloned();
        place(&mut sub, &rel("d"), &rel("d/f"), Some(file(5)));
        assert_eq!(sub.as_ref().and_then(|s| s.get("f")), Some(&file(5)));
        let mut single = Some(file(0));
        place(&mut single, &rel("d/f"), &rel("d/f"), Some(file(6)));
        assert_eq!(single, Some(file(6)));
    }
}
