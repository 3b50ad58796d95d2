//! Per-session state on disk: the archive, the lock, atomic writes.
//!
//! Layout (see docs/archive.md): `$XDG_STATE_HOME/ferry/sessions/<key>/` holds `archive`,
//! `alpha.cache`, `beta.cache`, `lock`, `staging-*/` and `backups/{alpha,beta}/<time>/`.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use ferry_core::{Entry, RelPath};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

const ARCHIVE_MAGIC: &[u8; 8] = b"FERRYAR2";

/// The last state both sides agreed on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Archive {
    pub alpha: String,
    pub beta: String,
    /// Incremented by every write; the journal names the epoch it extends.
    pub epoch: u64,
    pub ancestor: Option<Entry>,
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
    #[error("another ferry is already syncing this pair (state {0})")]
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
    _lock: File,
}

/// The root of all sessions' state.
pub fn state_root() -> Result<PathBuf, StateError> {
    directories::ProjectDirs::from("", "", "ferry")
        .and_then(|d| d.state_dir().map(Path::to_path_buf))
        .ok_or(StateError::NoStateDir)
}

impl Session {
    /// Opens (creating) the state of the session for this endpoint pair and locks it.
    pub fn open(alpha: &str, beta: &str) -> Result<Session, StateError> {
        let key = blake3::hash(format!("{alpha}\0{beta}").as_bytes()).to_hex();
        let dir = state_root()?.join("sessions").join(&key.as_str()[..24]);
        let io = |path: &Path, source| StateError::Io {
            path: path.to_path_buf(),
            source,
        };
        fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let lock_path = dir.join("lock");
        let lock = File::create(&lock_path).map_err(|e| io(&lock_path, e))?;
        // SAFETY: flock on a file descriptor we own; no memory is shared.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(StateError::Locked(dir));
        }
        Ok(Session { dir, _lock: lock })
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
        for r in records {
            let body = postcard::to_stdvec(r).map_err(|e| StateError::Io {
                path: p.clone(),
                source: io::Error::other(e),
            })?;
            buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
            buf.extend_from_slice(&checksum(&body));
            buf.extend_from_slice(&body);
        }
        if buf.is_empty() {
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
        let mut out = Vec::new();
        let mut good = 0;
        while bytes.len() - good >= 8 {
            let rest = &bytes[good..];
            let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let Some(body) = rest.get(8..8 + len) else {
                break;
            };
            if rest[4..8] != checksum(body) {
                break;
            }
            match postcard::take_from_bytes::<Pending>(body) {
                Ok((r, [])) => out.push(r),
                _ => break,
            }
            good += 8 + len;
        }
        if out.first() != Some(&Pending::Epoch(epoch)) {
            let _ = fs::remove_file(&path);
            return Vec::new();
        }
        if good < bytes.len() {
            let _ = fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(good as u64));
        }
        out
    }

    pub fn load_archive(&self) -> Result<Option<Archive>, StateError> {
        let p = self.archive_path();
        read_versioned(&p, ARCHIVE_MAGIC).map_err(|e| match e.kind() {
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
        write_versioned(ARCHIVE_MAGIC, a)
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

#[cfg(test)]
mod tests {
    use super::*;

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
        fs::write(&p, b"FERRYAR2\xff\xff").unwrap();
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
}
