//! Staging: content arrives here, is verified against its digest, and waits to be renamed into
//! place. The directory sits on the root's filesystem so the final rename is atomic.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ferry_core::Digest;

use crate::endpoint::Wanted;

/// Why content could not be staged.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("content changed while it was copied (expected {expected}, got {got})")]
    DigestMismatch { expected: Digest, got: Digest },
    #[error("content changed while it was copied (expected {expected} bytes, got {got})")]
    Short { expected: u64, got: u64 },
    #[error("staging failed: {0}")]
    Io(#[from] io::Error),
}

pub struct Staging {
    dir: PathBuf,
    /// Remove the directory when done (the in-root `.ferry-staging`).
    remove_when_done: bool,
    staged: HashMap<Digest, (PathBuf, usize)>,
    /// Content received but refused this cycle, and why.
    refused: HashMap<Digest, String>,
    buf: Vec<u8>,
    counter: u64,
    /// The directory exists (it is created on first use and may be removed by `finish`).
    dir_ready: bool,
    /// The staging directory's device, once known (placement compares it with the target's).
    dev: Option<u64>,
}

/// Copies exactly `size` bytes from `src` to `out`; returns their digest and how many there
/// were (fewer than `size` if `src` ended first). Bytes past `size` are never read: the content
/// wanted is the version the scan saw, whose size it knew.
fn copy_hashing(
    src: &mut dyn Read,
    out: &mut fs::File,
    size: u64,
    buf: &mut [u8],
) -> io::Result<(Digest, u64)> {
    let mut h = blake3::Hasher::new();
    let mut got = 0u64;
    let mut hole_at_end = false;
    while got < size {
        let want = usize::try_from(size - got).map_or(buf.len(), |w| w.min(buf.len()));
        let n = match src.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        if is_zero(&buf[..n]) {
            // Zeros are skipped, not written: holes stay holes (issue 9 item 9, `rsync -S`).
            out.seek(io::SeekFrom::Current(n as i64))?;
            hole_at_end = true;
        } else {
            out.write_all(&buf[..n])?;
            hole_at_end = false;
        }
        got += n as u64;
    }
    if hole_at_end {
        // A file ending in a hole gets its length without writing it.
        out.set_len(got)?;
    }
    Ok((Digest(*h.finalize().as_bytes()), got))
}

/// True if every byte of `b` is zero (64 bytes at a time, which the compiler vectorises).
pub fn is_zero(b: &[u8]) -> bool {
    let mut blocks = b.chunks_exact(64);
    blocks
        .by_ref()
        .all(|c| c.iter().fold(0u8, |a, &x| a | x) == 0)
        && blocks.remainder().iter().all(|&x| x == 0)
}

impl Staging {
    /// Opens a staging directory, dropping what a killed run left there (never trusted). Only
    /// ferry's own files (`ferry-*`) are ever removed: a user's directory of the same name at a
    /// root keeps its content.
    pub fn open(dir: PathBuf, remove_when_done: bool, recovered: &Path) -> io::Result<Staging> {
        settle_leftovers(&dir, recovered);
        if remove_when_done {
            let _ = fs::remove_dir(&dir);
            if let Some(parent) = dir.parent() {
                let _ = fs::remove_dir(parent);
            }
        }
        Ok(Staging {
            dir,
            remove_when_done,
            staged: HashMap::new(),
            refused: HashMap::new(),
            buf: Vec::new(),
            counter: 0,
            dir_ready: false,
            dev: None,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The staging directory's device (it is created if need be).
    pub fn dev(&mut self) -> Option<u64> {
        if self.dev.is_none() && self.ensure_dir().is_ok() {
            use std::os::unix::fs::MetadataExt;
            self.dev = fs::symlink_metadata(&self.dir).ok().map(|m| m.dev());
        }
        self.dev
    }

    /// Creates the directory on first use. Never stages through a symlink planted at its name.
    fn ensure_dir(&mut self) -> io::Result<()> {
        if !self.dir_ready {
            fs::create_dir_all(&self.dir)?;
            if !fs::symlink_metadata(&self.dir).is_ok_and(|m| m.is_dir()) {
                return Err(io::Error::other(format!(
                    "{} is not a directory",
                    self.dir.display()
                )));
            }
            self.dir_ready = true;
        }
        Ok(())
    }

    /// A fresh path in the staging directory (on the root's filesystem) to move a file aside
    /// to before removing it.
    pub fn scratch(&mut self) -> io::Result<PathBuf> {
        self.ensure_dir()?;
        self.counter += 1;
        Ok(self.dir.join(format!("ferry-aside.{}", self.counter)))
    }

    /// A fresh path in the staging directory for a version ferry must keep but could not put
    /// anywhere else. Not named `ferry-*`, so no cleanup ever removes it.
    pub fn keep_path(&mut self) -> PathBuf {
        self.counter += 1;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        self.dir.join(format!("kept-{stamp}-{}", self.counter))
    }

    /// A number not used before by this staging area (for temporary names).
    pub fn next_id(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// True if `digest` is staged and not used up.
    pub fn has(&self, digest: &Digest) -> bool {
        self.staged.contains_key(digest)
    }

    /// Records that content for `digest` arrived and was refused.
    pub fn refuse(&mut self, digest: Digest, why: String) {
        self.refused.insert(digest, why);
    }

    /// A buffer for copying content (shared, to allocate it once).
    pub fn take_buf(&mut self) -> Vec<u8> {
        let mut b = std::mem::take(&mut self.buf);
        if b.is_empty() {
            b = vec![0; 256 * 1024];
        }
        b
    }

    /// Gives back the buffer `take_buf` lent.
    pub fn put_buf(&mut self, buf: Vec<u8>) {
        self.buf = buf;
    }

    /// True if content for `digest` arrived this cycle and was refused.
    pub fn refused(&self, digest: &Digest) -> bool {
        self.refused.contains_key(digest)
    }

    /// Writes `want.size` bytes of `src` to staging, checking they hash to `want.digest`.
    /// `want.uses` is how many placements will take it. Staged files are created `0600`
    /// (never more readable than their source): placement gives them their mode.
    pub fn receive(&mut self, want: &Wanted, src: &mut dyn Read) -> Result<(), StageError> {
        self.ensure_dir()?;
        if self.buf.is_empty() {
            self.buf = vec![0; 256 * 1024];
        }
        self.counter += 1;
        let res = write_part(&self.dir, want, src, &mut self.buf, self.counter);
        let out = match &res {
            Ok(p) => Ok(p.clone()),
            Err(e) => Err(e.to_string()),
        };
        self.adopt(want, out);
        res.map(|_| ())
    }

    /// Takes in what receiving `want` gave: the staged file, or why it was refused.
    pub fn adopt(&mut self, want: &Wanted, received: Result<PathBuf, String>) {
        match received {
            Ok(path) => {
                self.refused.remove(&want.digest);
                if let Some((old, _)) = self.staged.insert(want.digest, (path, want.uses.max(1))) {
                    let _ = fs::remove_file(old);
                }
            }
            Err(why) => {
                self.refused.insert(want.digest, why);
            }
        }
    }

    /// A file holding `digest`'s content that the caller may rename into place. The last use
    /// gets the staged file itself; earlier ones get a copy. With `for_swap` the file is first
    /// given a name that cleanup never removes unchecked, since after a swap it holds the
    /// version that was at the target.
    pub fn take(&mut self, digest: &Digest, for_swap: bool) -> io::Result<PathBuf> {
        let Some((path, uses)) = self.staged.get_mut(digest) else {
            return Err(match self.refused.get(digest) {
                Some(why) => io::Error::other(why.clone()),
                None => io::Error::new(io::ErrorKind::NotFound, "content was not staged"),
            });
        };
        if *uses > 1 {
            *uses -= 1;
            let copy = tempfile::Builder::new()
                .prefix("ferry-cp-")
                .tempfile_in(&self.dir)?;
            fs::copy(&*path, copy.path())?;
            let (_, p) = copy.keep().map_err(|e| e.error)?;
            return Ok(p);
        }
        let path = path.clone();
        self.staged.remove(digest);
        match path.to_str().and_then(|p| p.strip_suffix(".part")) {
            Some(done) if for_swap => {
                let done = PathBuf::from(done);
                if let Err(e) = fs::rename(&path, &done) {
                    let _ = fs::remove_file(&path);
                    return Err(e);
                }
                Ok(done)
            }
            _ => Ok(path),
        }
    }

    /// Drops whatever is left (content for changes that did not happen).
    /// Only content this staging area received and never handed out is ours for sure: a path
    /// handed out may hold someone else's file by now (swapped out, moved aside).
    pub fn finish(&mut self) {
        self.refused.clear();
        for (_, (p, _)) in self.staged.drain() {
            let _ = fs::remove_file(p);
        }
        if self.remove_when_done && self.dir_ready {
            // Only if empty; then the shared `.ferry-staging` above it, if that is empty too.
            if fs::remove_dir(&self.dir).is_ok() {
                self.dir_ready = false;
                if let Some(parent) = self.dir.parent() {
                    let _ = fs::remove_dir(parent);
                }
            }
        }
    }
}

/// Writes exactly `want.size` bytes of `src` to a new file in `dir` named after the digest and
/// `id`, and checks they hash to `want.digest`; returns its path. The file keeps its `.part`
/// name until placed: a leftover `.part` is always ferry's own copy. Before a swap (which may
/// give the staged name someone's version) `Staging::take` renames it to its final name, which
/// cleanup looks at closely.
pub fn write_part(
    dir: &Path,
    want: &Wanted,
    src: &mut dyn Read,
    buf: &mut [u8],
    id: u64,
) -> Result<PathBuf, StageError> {
    let part = dir.join(format!(
        "ferry-{}.{id}.part",
        &want.digest.to_string()[..16]
    ));
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&part)?;
    let res = fill_verified(src, &mut out, want, buf);
    drop(out);
    match res {
        Err(e) => {
            let _ = fs::remove_file(&part);
            Err(e)
        }
        // No fsync per file (like rsync and Mutagen): the archive, written after the files and
        // fsynced, never records a file whose placement a crash could undo unnoticed, since
        // the next scan sees the disk as it really is.
        Ok(()) => Ok(part),
    }
}

/// Writes exactly `want.size` bytes of `src` to `out` and checks they hash to `want.digest`.
pub fn fill_verified(
    src: &mut dyn Read,
    out: &mut fs::File,
    want: &Wanted,
    buf: &mut [u8],
) -> Result<(), StageError> {
    match copy_hashing(src, out, want.size, buf)? {
        (_, got) if got != want.size => Err(StageError::Short {
            expected: want.size,
            got,
        }),
        (got, _) if got != want.digest => Err(StageError::DigestMismatch {
            expected: want.digest,
            got,
        }),
        _ => Ok(()),
    }
}

/// Deals with what a killed run left in staging. A staged file (`ferry-<hex16>.<n>`) whose
/// content still hashes to its name is ferry's own copy and is removed; anything else
/// (`ferry-aside.*` and `ferry-cp-*` may hold a person's version moved out of the way, a staged
/// file may have been swapped with one) is moved to `recovered` (in the backup area), never
/// deleted. `kept-*` files (versions ferry could put nowhere else) stay.
fn settle_leftovers(dir: &Path, recovered: &Path) {
    if !fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        return;
    }
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let Some(name) = e.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !name.starts_with("ferry-") || !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = e.path();
        if name.ends_with(".part") {
            // Killed while receiving: ferry's own partial copy.
            let _ = fs::remove_file(&path);
            continue;
        }
        let own_copy = name
            .strip_prefix("ferry-")
            .and_then(|rest| rest.split_once('.'))
            .filter(|(hex, n)| hex.len() == 16 && n.chars().all(|c| c.is_ascii_digit()))
            .is_some_and(|(hex, _)| {
                fs::File::open(&path)
                    .ok()
                    .and_then(|mut f| {
                        let mut h = blake3::Hasher::new();
                        io::copy(&mut f, &mut h).ok()?;
                        Some(h.finalize().to_hex().starts_with(hex))
                    })
                    .unwrap_or(false)
            });
        if own_copy {
            let _ = fs::remove_file(&path);
            continue;
        }
        let dest = recovered.join(&name);
        let moved = fs::create_dir_all(recovered).and_then(|()| {
            fs::rename(&path, &dest).or_else(|_| {
                fs::copy(&path, &dest)?;
                fs::remove_file(&path)
            })
        });
        if moved.is_err() {
            // Leave it where it is under a name no cleanup touches.
            let _ = fs::rename(&path, dir.join(format!("kept-{name}")));
        }
    }
}
