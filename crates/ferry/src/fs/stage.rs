//! Staging: content arrives here, is verified against its digest, and waits to be renamed into
//! place. The directory sits on the root's filesystem so the final rename is atomic.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ferry_core::Digest;

/// Why content could not be staged.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("content changed while it was copied (expected {expected}, got {got})")]
    DigestMismatch { expected: Digest, got: Digest },
    #[error("staging failed: {0}")]
    Io(#[from] io::Error),
}

pub struct Staging {
    dir: PathBuf,
    /// Remove the directory when done (the in-root `.ferry-staging`).
    remove_when_done: bool,
    staged: HashMap<Digest, (PathBuf, usize)>,
    buf: Vec<u8>,
    counter: u64,
    /// The directory exists (it is created on first use and may be removed by `finish`).
    dir_ready: bool,
}

fn copy_hashing(src: &mut dyn Read, out: &mut fs::File, buf: &mut [u8]) -> io::Result<Digest> {
    let mut h = blake3::Hasher::new();
    loop {
        let n = match src.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        out.write_all(&buf[..n])?;
    }
    Ok(Digest(*h.finalize().as_bytes()))
}

impl Staging {
    /// Opens a staging directory, dropping what a killed run left there (never trusted). Only
    /// ferry's own files (`ferry-*`) are ever removed: a user's directory of the same name at a
    /// root keeps its content.
    pub fn open(dir: PathBuf, remove_when_done: bool) -> io::Result<Staging> {
        remove_ours(&dir);
        Ok(Staging {
            dir,
            remove_when_done,
            staged: HashMap::new(),
            buf: Vec::new(),
            counter: 0,
            dir_ready: false,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A fresh path in the staging directory (on the root's filesystem) to move a file aside
    /// to before removing it.
    pub fn scratch(&mut self) -> io::Result<PathBuf> {
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

    /// Writes `src` to staging, checking it hashes to `digest`. `uses` is how many placements
    /// will take it. Staged files are created `0644` (no executable bits: placement adds them).
    pub fn receive(
        &mut self,
        digest: Digest,
        uses: usize,
        src: &mut dyn Read,
    ) -> Result<(), StageError> {
        if !self.dir_ready {
            fs::create_dir_all(&self.dir)?;
            // Never stage through a symlink planted at the staging name.
            if !fs::symlink_metadata(&self.dir).is_ok_and(|m| m.is_dir()) {
                return Err(
                    io::Error::other(format!("{} is not a directory", self.dir.display())).into(),
                );
            }
            self.dir_ready = true;
        }
        if self.buf.is_empty() {
            self.buf = vec![0; 256 * 1024];
        }
        self.counter += 1;
        let path = self.dir.join(format!(
            "ferry-{}.{}",
            &digest.to_string()[..16],
            self.counter
        ));
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)?;
        let res = copy_hashing(src, &mut out, &mut self.buf);
        drop(out);
        let got = match res {
            Ok(d) => d,
            Err(e) => {
                let _ = fs::remove_file(&path);
                return Err(e.into());
            }
        };
        if got != digest {
            let _ = fs::remove_file(&path);
            return Err(StageError::DigestMismatch {
                expected: digest,
                got,
            });
        }
        // No fsync per file (like rsync and Mutagen): the archive, written after the files and
        // fsynced, never records a file whose placement a crash could undo unnoticed, since
        // the next scan sees the disk as it really is.
        if let Some((old, _)) = self.staged.insert(digest, (path, uses.max(1))) {
            let _ = fs::remove_file(old);
        }
        Ok(())
    }

    /// A file holding `digest`'s content that the caller may rename into place. The last use
    /// gets the staged file itself; earlier ones get a copy.
    pub fn take(&mut self, digest: &Digest) -> io::Result<PathBuf> {
        let Some((path, uses)) = self.staged.get_mut(digest) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "content was not staged",
            ));
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
        Ok(path)
    }

    /// Drops whatever is left (content for changes that did not happen).
    pub fn finish(&mut self) {
        for (_, (p, _)) in self.staged.drain() {
            let _ = fs::remove_file(p);
        }
        if self.remove_when_done && self.dir_ready {
            remove_ours(&self.dir);
            self.dir_ready = false;
        }
    }
}

/// Removes ferry's files (`ferry-*`) from a staging directory, then the directory if that left
/// it empty. Anything else in it is left alone.
fn remove_ours(dir: &Path) {
    if !fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        return;
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let ours = e
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("ferry-"));
            if ours && e.file_type().is_ok_and(|t| t.is_file()) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}
