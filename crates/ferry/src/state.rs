//! Per-session state on disk: the archive, the lock, atomic writes.
//!
//! Layout (see docs/archive.md): `$XDG_STATE_HOME/ferry/sessions/<key>/` holds `archive`,
//! `pair`, `alpha.cache`, `beta.cache`, `lock`, `staging-*/` and `backups/{alpha,beta}/<time>/`.
//!
//! A session is the unordered pair: `ferry sync A B` and `ferry sync B A` share one key and one
//! lock (issue 9 item 5). The per-side files are named after the order of the run that created
//! the session (kept in `pair`); a run in the other order reads and writes them swapped.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_core::{Entry, RelPath};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::endpoint::Side;

const ARCHIVE_MAGIC: &[u8; 8] = b"FERRYAR3";
/// The archive before entries carried permission bits and times (see [`legacy`]).
const ARCHIVE_MAGIC_2: &[u8; 8] = b"FERRYAR2";
/// The first bytes of a journal in today's format; a journal without them is from before
/// entries carried permission bits and times.
const JOURNAL_MAGIC: &[u8; 8] = b"FERRYJ3\n";
const PAIR_MAGIC: &[u8; 8] = b"FERRYPR1";

/// The last state both sides agreed on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Archive {
    pub alpha: String,
    pub beta: String,
    /// Incremented by every write; the journal names the epoch it extends.
    pub epoch: u64,
    pub ancestor: Option<Entry>,
}

/// [`Archive`] borrowed, for writing.
#[derive(Serialize)]
struct ArchiveRef<'a> {
    alpha: &'a str,
    beta: &'a str,
    epoch: u64,
    ancestor: &'a Option<Entry>,
}

/// A journal record (see `docs/archive.md`): what a cycle was about to change, and what it
/// agreed on once done, so a crash before the archive is saved can be accounted for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pending {
    /// A change about to be made on one side.
    Planned {
        /// The side written: true for alpha.
        alpha: bool,
        path: RelPath,
        old: Option<Entry>,
        new: Option<Entry>,
    },
    /// The cycle finished: the archive's new values at the paths it looked at.
    Committed {
        agreed: Vec<(RelPath, Option<Entry>)>,
    },
    /// First record of a journal: the archive epoch it extends. A journal whose epoch is not
    /// the archive's (the archive was written, the journal not yet removed) is stale.
    Epoch(u64),
}

/// Errors opening or saving session state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("no state directory: set XDG_STATE_HOME or HOME")]
    NoStateDir,
    #[error("another ferry is already syncing this pair, in this order or the other (state {0})")]
    Locked(PathBuf),
    #[error("state {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("archive {0} is corrupt or from an incompatible version; move it away to start over")]
    Corrupt(PathBuf),
}

pub struct Session {
    pub dir: PathBuf,
    /// This run names the pair in the other order than the session's per-side files.
    reversed: bool,
    _lock: File,
}

/// The root of all sessions' state.
pub fn state_root() -> Result<PathBuf, StateError> {
    directories::ProjectDirs::from("", "", "ferry")
        .and_then(|d| d.state_dir().map(Path::to_path_buf))
        .ok_or(StateError::NoStateDir)
}

impl Session {
    /// Opens (creating) the state of the session for this endpoint pair and locks it. The pair
    /// is unordered: `open(a, b)` and `open(b, a)` are the same session and exclude each other.
    pub fn open(alpha: &str, beta: &str) -> Result<Session, StateError> {
        let io = |path: &Path, source| StateError::Io {
            path: path.to_path_buf(),
            source,
        };
        let (lo, hi) = if alpha <= beta {
            (alpha, beta)
        } else {
            (beta, alpha)
        };
        let sessions = state_root()?.join("sessions");
        let dir = sessions.join(session_key(lo, hi));
        let mut orientation = None;
        if alpha > beta && !dir.exists() {
            // Before the key was symmetric it hashed the pair in the order given: adopt such a
            // session (under its lock, so a ferry still running it keeps it).
            let legacy = sessions.join(session_key(alpha, beta));
            if legacy.is_dir() {
                let lock_path = legacy.join("lock");
                let lock = File::create(&lock_path).map_err(|e| io(&lock_path, e))?;
                if !try_lock(&lock) {
                    return Err(StateError::Locked(legacy));
                }
                fs::rename(&legacy, &dir).map_err(|e| io(&legacy, e))?;
                orientation = Some((alpha.to_owned(), beta.to_owned()));
            }
        }
        let fresh = !dir.exists();
        fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let lock_path = dir.join("lock");
        let lock = File::create(&lock_path).map_err(|e| io(&lock_path, e))?;
        if !try_lock(&lock) {
            return Err(StateError::Locked(dir));
        }
        let pair_path = dir.join("pair");
        let stored: Option<(String, String)> =
            read_versioned(&pair_path, PAIR_MAGIC).ok().flatten();
        let (first, second) = match stored {
            Some(p) => p,
            None => {
                // A new session takes this run's order; one from before `pair` existed was
                // keyed (and its files named) in sorted order, unless adopted above.
                let p = match orientation {
                    Some(p) => p,
                    None if fresh => (alpha.to_owned(), beta.to_owned()),
                    None => (lo.to_owned(), hi.to_owned()),
                };
                write_versioned(PAIR_MAGIC, &p)
                    .and_then(|b| write_atomic(&pair_path, &b))
                    .map_err(|e| io(&pair_path, e))?;
                p
            }
        };
        let reversed = first == beta && second == alpha && alpha != beta;
        Ok(Session {
            dir,
            reversed,
            _lock: lock,
        })
    }

    /// The name `side` of this run has in the session's per-side files (caches, staging,
    /// backups): the other one when the pair is named in the other order than at its creation.
    pub fn stored_side(&self, side: Side) -> Side {
        match (self.reversed, side) {
            (false, s) => s,
            (true, Side::Alpha) => Side::Beta,
            (true, Side::Beta) => Side::Alpha,
        }
    }

    fn archive_path(&self) -> PathBuf {
        self.dir.join("archive")
    }

    fn pending_path(&self) -> PathBuf {
        self.dir.join("pending")
    }

    /// Notes the changes a cycle is about to make, before it makes them. No fsync: this guards
    /// against the process dying (kill -9), whose writes the kernel still completes.
    pub fn journal_pending(&self, records: &[Pending]) -> Result<(), StateError> {
        let p = self.pending_path();
        let mut buf = Vec::new();
        let fresh = fs::metadata(&p).map_or(true, |m| m.len() == 0);
        if fresh {
            buf.extend_from_slice(JOURNAL_MAGIC);
        }
        for r in records {
            let r = self.orient(r.clone());
            let body = postcard::to_stdvec(&r).map_err(|e| StateError::Io {
                path: p.clone(),
                source: io::Error::other(e),
            })?;
            buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
            buf.extend_from_slice(&checksum(&body));
            buf.extend_from_slice(&body);
        }
        if buf.len() == if fresh { JOURNAL_MAGIC.len() } else { 0 } {
            return Ok(());
        }
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .and_then(|mut f| f.write_all(&buf))
            .map_err(|source| StateError::Io { path: p, source })
    }

    /// The journal records extending archive `epoch`, in order. A torn or damaged tail (a kill
    /// mid-write) is cut off the file, so later records are never appended after garbage; a
    /// journal for another epoch is stale and removed.
    pub fn pending(&self, epoch: u64) -> Vec<Pending> {
        let path = self.pending_path();
        let Ok(bytes) = fs::read(&path) else {
            return Vec::new();
        };
        let legacy = !bytes.starts_with(JOURNAL_MAGIC);
        let mut out = Vec::new();
        let mut good = if legacy { 0 } else { JOURNAL_MAGIC.len() };
        while bytes.len() - good >= 8 {
            let rest = &bytes[good..];
            let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let Some(body) = rest.get(8..8 + len) else {
                break;
            };
            if rest[4..8] != checksum(body) {
                break;
            }
            let record = if legacy {
                match postcard::take_from_bytes::<legacy::Pending>(body) {
                    Ok((r, [])) => r.into(),
                    _ => break,
                }
            } else {
                match postcard::take_from_bytes::<Pending>(body) {
                    Ok((r, [])) => r,
                    _ => break,
                }
            };
            out.push(self.orient(record));
            good += 8 + len;
        }
        if out.first() != Some(&Pending::Epoch(epoch)) {
            let _ = fs::remove_file(&path);
            return Vec::new();
        }
        if legacy {
            // Rewritten in today's format, so this run's records can follow.
            let _ = fs::remove_file(&path);
            if self.journal_pending(&out).is_err() {
                let _ = fs::remove_file(&path);
            }
            return out;
        }
        if good < bytes.len() {
            let _ = fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(good as u64));
        }
        out
    }

    /// A journal record as stored (or, stored, as this run sees it): the side a planned
    /// change writes is named in the session's order.
    fn orient(&self, r: Pending) -> Pending {
        match r {
            Pending::Planned {
                alpha,
                path,
                old,
                new,
            } if self.reversed => Pending::Planned {
                alpha: !alpha,
                path,
                old,
                new,
            },
            r => r,
        }
    }

    pub fn load_archive(&self) -> Result<Option<Archive>, StateError> {
        let p = self.archive_path();
        let swap = |mut a: Archive| {
            if self.reversed {
                std::mem::swap(&mut a.alpha, &mut a.beta);
            }
            a
        };
        let read = match read_versioned(&p, ARCHIVE_MAGIC) {
            // Written before entries carried permission bits and times: converted (see
            // `legacy`), so the first cycle knows which side changed a mode since.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                read_versioned::<legacy::Archive>(&p, ARCHIVE_MAGIC_2)
                    .map(|a| a.map(Archive::from))
                    .map_err(|_| e)
            }
            r => r,
        };
        read.map(|a| a.map(swap)).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => StateError::Corrupt(p.clone()),
            _ => StateError::Io {
                path: p.clone(),
                source: e,
            },
        })
    }

    /// Writes the archive atomically, then clears the pending journal it now accounts for.
    pub fn save_archive(&self, a: &Archive) -> Result<(), StateError> {
        let p = self.archive_path();
        // The same encoding as `Archive`, its names in the session's order (no copy of the tree).
        let (alpha, beta) = if self.reversed {
            (&a.beta, &a.alpha)
        } else {
            (&a.alpha, &a.beta)
        };
        let stored = ArchiveRef {
            alpha,
            beta,
            epoch: a.epoch,
            ancestor: &a.ancestor,
        };
        write_versioned(ARCHIVE_MAGIC, &stored)
            .and_then(|b| write_atomic(&p, &b))
            .map_err(|source| StateError::Io { path: p, source })?;
        match fs::remove_file(self.pending_path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io {
                path: self.pending_path(),
                source,
            }),
        }
    }
}

/// How long a side's backups are kept (`--keep-backups`): folders older than `max_age`, and
/// the oldest folders beyond `max_bytes` in all, are removed, whichever comes first; the newest
/// folder is always kept. `None`: no limit of that kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub max_age: Option<Duration>,
    pub max_bytes: Option<u64>,
}

impl Default for Retention {
    /// 7 days or 1 GiB, whichever comes first.
    fn default() -> Self {
        Retention {
            max_age: Some(Duration::from_secs(7 * 86_400)),
            max_bytes: Some(1 << 30),
        }
    }
}

impl Retention {
    /// Keeps everything.
    pub const FOREVER: Retention = Retention {
        max_age: None,
        max_bytes: None,
    };
}

impl std::str::FromStr for Retention {
    type Err = String;

    /// `forever`, or one or two limits separated by a comma: an age (`7d`, `12h`, or a bare
    /// number of days) and a size (`500MB`, `1GiB`, `2G`).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "--keep-backups '{s}': expected DAYS (7d, 12h), SIZE (500MB, 1GiB), both (7d,1GiB) or 'forever'"
            )
        };
        let s = s.trim();
        if s.eq_ignore_ascii_case("forever") {
            return Ok(Retention::FOREVER);
        }
        let mut r = Retention::FOREVER;
        for part in s.split(',').map(str::trim) {
            let digits = part
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .unwrap_or(part.len());
            let (num, unit) = part.split_at(digits);
            let n: f64 = num.parse().map_err(|_| bad())?;
            if !n.is_finite() || n < 0.0 {
                return Err(bad());
            }
            let age = |secs: f64| Some(Duration::from_secs_f64(n * secs));
            let size = |mul: f64| Some((n * mul) as u64);
            match unit.trim().to_ascii_lowercase().as_str() {
                "" | "d" | "day" | "days" if r.max_age.is_none() => r.max_age = age(86_400.0),
                "h" | "hour" | "hours" if r.max_age.is_none() => r.max_age = age(3600.0),
                "b" if r.max_bytes.is_none() => r.max_bytes = size(1.0),
                "k" | "kb" if r.max_bytes.is_none() => r.max_bytes = size(1e3),
                "m" | "mb" if r.max_bytes.is_none() => r.max_bytes = size(1e6),
                "g" | "gb" if r.max_bytes.is_none() => r.max_bytes = size(1e9),
                "t" | "tb" if r.max_bytes.is_none() => r.max_bytes = size(1e12),
                "kib" if r.max_bytes.is_none() => r.max_bytes = size(1024.0),
                "mib" if r.max_bytes.is_none() => r.max_bytes = size(1024.0 * 1024.0),
                "gib" if r.max_bytes.is_none() => r.max_bytes = size(1024.0 * 1024.0 * 1024.0),
                "tib" if r.max_bytes.is_none() => {
                    r.max_bytes = size(1024.0 * 1024.0 * 1024.0 * 1024.0)
                }
                _ => return Err(bad()),
            }
        }
        Ok(r)
    }
}

/// A backup folder's name: the UTC time, readable and sorting in time order
/// (`2026-12-06T11-30-05Z`; colons are avoided for the sake of other filesystems and tools).
pub fn backup_stamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}-{:02}-{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A new backup folder's path under `root` for a transition starting at `t`: the time's
/// stamp, with `-2`, `-3`, ... when a folder of that second exists already. Not created (the
/// transition creates it when it keeps something).
pub fn new_backup_dir(root: &Path, t: SystemTime) -> PathBuf {
    let stamp = backup_stamp(t);
    let mut dir = root.join(&stamp);
    let mut n = 2u32;
    while fs::symlink_metadata(&dir).is_ok() {
        dir = root.join(format!("{stamp}-{n}"));
        n += 1;
    }
    dir
}

/// The order of a backup folder's name (seconds since the epoch, then the `-N` suffix):
/// `<stamp>[-N]`, `recovered-<stamp>`, and the unix-time names of earlier versions
/// (`<secs>.<nanos>`, `recovered-<secs>`). `None` for anything else (never pruned).
fn backup_order(name: &str) -> Option<(u64, u64)> {
    let name = name.strip_prefix("recovered-").unwrap_or(name);
    if let Some((secs, nanos)) = name.split_once('.') {
        return Some((secs.parse().ok()?, nanos.parse().ok()?));
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return Some((name.parse().ok()?, 0));
    }
    let (stamp, seq) = match name.split_once("Z-") {
        Some((st, n)) => (st, n.parse().ok()?),
        None => (name.strip_suffix('Z')?, 1),
    };
    let b = stamp.as_bytes();
    if b.len() != 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| stamp.get(r)?.parse::<u64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let days = days_from_civil(y as i64, mo as i64, d as i64);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + mi * 60 + s;
    // Sub-second order of the earlier names is nanoseconds; keep suffixes after them.
    Some((secs, seq))
}

/// Backup folders younger than this are never pruned, whatever the policy.
pub const PRUNE_GRACE: Duration = Duration::from_secs(60);

/// What [`prune_backups`] removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub folders: u64,
    pub bytes: u64,
}

/// Applies `policy` to the backup folders under `root` (one side's backup area) at `now`.
/// Only folders older than the newest one are ever removed; names ferry did not make are left
/// alone. A folder that cannot be measured or removed is skipped.
pub fn prune_backups(root: &Path, policy: Retention, now: SystemTime) -> Pruned {
    let mut out = Pruned::default();
    if policy == Retention::FOREVER {
        return out;
    }
    let Ok(rd) = fs::read_dir(root) else {
        return out;
    };
    let mut folders: Vec<((u64, u64), PathBuf)> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let order = backup_order(e.file_name().to_str()?)?;
            Some((order, e.path()))
        })
        .collect();
    folders.sort_by_key(|f| std::cmp::Reverse(f.0));
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut total = 0u64;
    for (i, ((secs, _), path)) in folders.into_iter().enumerate() {
        let size = tree_size(&path);
        total = total.saturating_add(size);
        // The newest folder, and any from the last minute: a version swapped out of its path
        // is watched for late writes for a while (`check_swapped`), and must still be there.
        if i == 0 || now_secs.saturating_sub(secs) < PRUNE_GRACE.as_secs() {
            continue;
        }
        let too_old = policy
            .max_age
            .is_some_and(|a| now_secs.saturating_sub(secs) > a.as_secs());
        let too_big = policy.max_bytes.is_some_and(|m| total > m);
        if (too_old || too_big) && fs::remove_dir_all(&path).is_ok() {
            out.folders += 1;
            out.bytes += size;
        }
    }
    out
}

/// The bytes of the files under `dir` (not following links).
fn tree_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days since 1970-01-01 of a civil date (the inverse of [`civil_from_days`]).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The directory name of the session of the pair `(first, second)`.
fn session_key(first: &str, second: &str) -> String {
    let key = blake3::hash(format!("{first}\0{second}").as_bytes()).to_hex();
    key.as_str()[..24].to_owned()
}

/// Takes `lock` (`flock`, exclusive, without waiting); false if another process holds it.
fn try_lock(lock: &File) -> bool {
    // SAFETY: flock on a file descriptor we own; no memory is shared.
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

fn checksum(body: &[u8]) -> [u8; 4] {
    let h = blake3::hash(body);
    let b = h.as_bytes();
    [b[0], b[1], b[2], b[3]]
}

/// `magic` followed by the postcard encoding of `v`.
pub fn write_versioned<T: Serialize>(magic: &[u8; 8], v: &T) -> io::Result<Vec<u8>> {
    let mut out = magic.to_vec();
    postcard::to_io(v, &mut out).map_err(io::Error::other)?;
    Ok(out)
}

/// Reads what [`write_versioned`] wrote; `Ok(None)` if the file does not exist, an
/// `InvalidData` error if it is not ours or is damaged.
pub fn read_versioned<T: DeserializeOwned>(path: &Path, magic: &[u8; 8]) -> io::Result<Option<T>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(body) = bytes.strip_prefix(magic.as_slice()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad magic"));
    };
    postcard::from_bytes(body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new file: temp file
/// in the same directory, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

/// The archive and journal formats before entries carried permission bits and modification
/// times (archive `FERRYAR2`, a journal without [`JOURNAL_MAGIC`]). They load converted: a
/// file's mode is `0o755` if it was executable, else `0o644`; directories are `0o755`; times
/// are unknown (zero). The first cycle then sees a side whose real modes differ from these as
/// having changed them, and carries its bits over (alpha's, where both sides differ).
mod legacy {
    use std::collections::BTreeMap;

    use ferry_core::{Digest, Dir, Entry, MAX_DEPTH, RelPath};
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Archive {
        alpha: String,
        beta: String,
        epoch: u64,
        ancestor: Option<OldEntry>,
    }

    impl From<Archive> for super::Archive {
        fn from(a: Archive) -> Self {
            super::Archive {
                alpha: a.alpha,
                beta: a.beta,
                epoch: a.epoch,
                ancestor: a.ancestor.map(Entry::from),
            }
        }
    }

    #[derive(Deserialize)]
    pub enum Pending {
        Planned {
            alpha: bool,
            path: RelPath,
            old: Option<OldEntry>,
            new: Option<OldEntry>,
        },
        Committed {
            agreed: Vec<(RelPath, Option<OldEntry>)>,
        },
        Epoch(u64),
    }

    impl From<Pending> for super::Pending {
        fn from(p: Pending) -> Self {
            match p {
                Pending::Planned {
                    alpha,
                    path,
                    old,
                    new,
                } => super::Pending::Planned {
                    alpha,
                    path,
                    old: old.map(Entry::from),
                    new: new.map(Entry::from),
                },
                Pending::Committed { agreed } => super::Pending::Committed {
                    agreed: agreed
                        .into_iter()
                        .map(|(p, e)| (p, e.map(Entry::from)))
                        .collect(),
                },
                Pending::Epoch(e) => super::Pending::Epoch(e),
            }
        }
    }

    /// The old entry, decoded with the same depth limit as today's.
    pub enum OldEntry {
        Directory(BTreeMap<String, OldEntry>),
        File {
            digest: Digest,
            size: u64,
            executable: bool,
        },
        Symlink {
            target: String,
        },
        Problem(String),
    }

    #[derive(Deserialize)]
    #[serde(rename = "Entry")]
    enum Repr {
        Directory(BTreeMap<String, OldEntry>),
        File {
            digest: Digest,
            size: u64,
            executable: bool,
        },
        Symlink {
            target: String,
        },
        Problem(String),
    }

    std::thread_local! {
        static DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    impl<'de> Deserialize<'de> for OldEntry {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<OldEntry, D::Error> {
            let depth = DEPTH.with(|c| c.get());
            if depth >= MAX_DEPTH {
                return Err(serde::de::Error::custom("tree nested too deep"));
            }
            DEPTH.with(|c| c.set(depth + 1));
            let r = Repr::deserialize(d);
            DEPTH.with(|c| c.set(depth));
            Ok(match r? {
                Repr::Directory(c) => OldEntry::Directory(c),
                Repr::File {
                    digest,
                    size,
                    executable,
                } => OldEntry::File {
                    digest,
                    size,
                    executable,
                },
                Repr::Symlink { target } => OldEntry::Symlink { target },
                Repr::Problem(p) => OldEntry::Problem(p),
            })
        }
    }

    impl From<OldEntry> for Entry {
        fn from(e: OldEntry) -> Entry {
            match e {
                OldEntry::Directory(c) => Entry::Directory(Dir::from(
                    c.into_iter()
                        .map(|(n, e)| (n, Entry::from(e)))
                        .collect::<BTreeMap<_, _>>(),
                )),
                OldEntry::File {
                    digest,
                    size,
                    executable,
                } => Entry::file(digest.0, size, executable),
                OldEntry::Symlink { target } => Entry::Symlink { target },
                OldEntry::Problem(p) => Entry::Problem(p),
            }
        }
    }

    #[cfg(test)]
    pub mod write {
        //! The old encoding, for tests that need a file written by the previous version.
        use serde::Serialize;

        #[derive(Serialize)]
        #[serde(rename = "Entry")]
        pub enum Entry {
            Directory(std::collections::BTreeMap<String, Entry>),
            File {
                digest: ferry_core::Digest,
                size: u64,
                executable: bool,
            },
        }

        #[derive(Serialize)]
        pub struct Archive {
            pub alpha: String,
            pub beta: String,
            pub epoch: u64,
            pub ancestor: Option<Entry>,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_of_the_previous_format_loads_converted() {
        use legacy::write::{Archive as Old, Entry as E};
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("archive");
        let old = Old {
            alpha: "/x".into(),
            beta: "/y".into(),
            epoch: 4,
            ancestor: Some(E::Directory(
                [
                    (
                        "run".to_owned(),
                        E::File {
                            digest: ferry_core::Digest([1; 32]),
                            size: 1,
                            executable: true,
                        },
                    ),
                    ("sub".to_owned(), E::Directory(Default::default())),
                ]
                .into(),
            )),
        };
        write_atomic(&p, &write_versioned(ARCHIVE_MAGIC_2, &old).unwrap()).unwrap();
        let session = Session {
            dir: d.path().to_path_buf(),
            reversed: false,
            _lock: File::open(d.path()).unwrap(),
        };
        let a = session.load_archive().unwrap().unwrap();
        assert_eq!(a.epoch, 4);
        assert_eq!(
            a.ancestor,
            Some(Entry::dir([
                ("run", Entry::file([1; 32], 1, true)),
                ("sub", Entry::dir([])),
            ]))
        );
        assert_eq!(
            a.ancestor
                .as_ref()
                .and_then(|t| t.get("run"))
                .and_then(Entry::mode),
            Some(0o755)
        );
    }

    #[test]
    fn versioned_round_trip_and_corruption() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a");
        let a = Archive {
            alpha: "/x".into(),
            beta: "/y".into(),
            epoch: 3,
            ancestor: Some(Entry::dir([("f", Entry::file([7; 32], 3, true))])),
        };
        write_atomic(&p, &write_versioned(ARCHIVE_MAGIC, &a).unwrap()).unwrap();
        assert_eq!(
            read_versioned::<Archive>(&p, ARCHIVE_MAGIC).unwrap(),
            Some(a)
        );
        fs::write(&p, b"FERRYAR3\xff\xff").unwrap();
        assert_eq!(
            read_versioned::<Archive>(&p, ARCHIVE_MAGIC)
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidData
        );
        assert_eq!(
            read_versioned::<Archive>(&d.path().join("none"), ARCHIVE_MAGIC).unwrap(),
            None
        );
    }

    #[test]
    fn stamps_are_readable_utc_and_parse_back() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_556_605); // 2026-12-06T11:30:05Z
        assert_eq!(backup_stamp(t), "2026-12-06T11-30-05Z");
        assert_eq!(backup_stamp(UNIX_EPOCH), "1970-01-01T00-00-00Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(backup_stamp(leap), "2000-02-29T00-00-00Z");
        assert_eq!(
            backup_order("2026-12-06T11-30-05Z"),
            Some((1_796_556_605, 1))
        );
        assert_eq!(
            backup_order("2026-12-06T11-30-05Z-3"),
            Some((1_796_556_605, 3))
        );
        assert_eq!(
            backup_order("recovered-2026-12-06T11-30-05Z"),
            Some((1_796_556_605, 1))
        );
        assert_eq!(
            backup_order("1796556605.000000012"),
            Some((1_796_556_605, 12))
        );
        assert_eq!(
            backup_order("recovered-1796556605"),
            Some((1_796_556_605, 0))
        );
        for other in ["notes", "2026-12-06", "x2026-12-06T11-30-05Z", ""] {
            assert_eq!(backup_order(other), None, "{other}");
        }
    }

    #[test]
    fn new_backup_dirs_are_unique_within_a_second() {
        let d = tempfile::tempdir().unwrap();
        let t = UNIX_EPOCH + Duration::from_secs(1_796_556_605);
        let a = new_backup_dir(d.path(), t);
        assert_eq!(a, d.path().join("2026-12-06T11-30-05Z"));
        assert_eq!(new_backup_dir(d.path(), t), a, "not created: still free");
        fs::create_dir(&a).unwrap();
        let b = new_backup_dir(d.path(), t);
        assert_eq!(b, d.path().join("2026-12-06T11-30-05Z-2"));
        fs::create_dir(&b).unwrap();
        assert_eq!(
            new_backup_dir(d.path(), t),
            d.path().join("2026-12-06T11-30-05Z-3")
        );
    }

    #[test]
    fn retention_parses() {
        let day = Duration::from_secs(86_400);
        assert_eq!("forever".parse(), Ok(Retention::FOREVER));
        assert_eq!(
            "3".parse(),
            Ok(Retention {
                max_age: Some(day * 3),
                max_bytes: None
            })
        );
        assert_eq!(
            "30d, 2GiB".parse(),
            Ok(Retention {
                max_age: Some(day * 30),
                max_bytes: Some(2 << 30)
            })
        );
        assert_eq!(
            "500MB".parse(),
            Ok(Retention {
                max_age: None,
                max_bytes: Some(500_000_000)
            })
        );
        for bad in ["", "soon", "7d,8d", "-1d", "1GiB,2GB", "7x"] {
            assert!(bad.parse::<Retention>().is_err(), "{bad}");
        }
    }

    #[test]
    fn pruning_keeps_the_newest_folder_and_removes_old_or_big_ones() {
        let d = tempfile::tempdir().unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_796_556_605);
        let day = Duration::from_secs(86_400);
        let mk = |name: &str, bytes: usize| {
            let p = d.path().join(name);
            fs::create_dir_all(p.join("src")).unwrap();
            fs::write(p.join("src/f"), vec![0u8; bytes]).unwrap();
        };
        mk(&backup_stamp(now - day * 30), 10); // old
        mk(&backup_stamp(now - day * 2), 10);
        mk(&format!("{}-2", backup_stamp(now - day)), 600);
        mk(&backup_stamp(now - day), 600);
        mk(&backup_stamp(now), 10);
        fs::create_dir(d.path().join("mine")).unwrap();
        let policy = Retention {
            max_age: Some(day * 7),
            max_bytes: Some(1000),
        };
        let pruned = prune_backups(d.path(), policy, now);
        let mut left: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "2026-12-05T11-30-05Z-2".to_owned(),
                backup_stamp(now),
                "mine".to_owned()
            ]
        );
        assert_eq!(
            pruned,
            Pruned {
                folders: 3,
                bytes: 620
            }
        );
        // The newest is kept even when it alone is over the limit, and even when it is old.
        let d2 = tempfile::tempdir().unwrap();
        fs::create_dir_all(d2.path().join(backup_stamp(now - day * 99))).unwrap();
        fs::write(
            d2.path().join(backup_stamp(now - day * 99)).join("f"),
            vec![0u8; 5000],
        )
        .unwrap();
        assert_eq!(prune_backups(d2.path(), policy, now), Pruned::default());
        // Folders of the last minute stay too: a swapped-out version in one is still watched
        // for late writes.
        let d3 = tempfile::tempdir().unwrap();
        for t in [now - Duration::from_secs(5), now] {
            fs::create_dir_all(d3.path().join(backup_stamp(t))).unwrap();
            fs::write(d3.path().join(backup_stamp(t)).join("f"), vec![0u8; 5000]).unwrap();
        }
        assert_eq!(prune_backups(d3.path(), policy, now), Pruned::default());
    }
}
