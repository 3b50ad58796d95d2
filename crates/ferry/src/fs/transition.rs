//! Applying changes to a local root with ferry's promises: nothing replaced that changed since
//! the scan, every new file renamed into place whole, a backup of content not in the archive,
//! nothing written through a symlink or outside the root.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ferry_core::{Change, Digest, Entry, RelPath, link_stays_inside};

use super::scan::{Cached, DirHook, LocalTree, Stat, parents_are_dirs, stat_is_settled};
use super::stage::{Staging, fill_verified};
use crate::endpoint::Feed;

/// What one change did.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    pub path: RelPath,
    /// What is at the path now, as far as ferry knows.
    pub now: Option<Entry>,
    /// Problems met (the change may be partly done: `now` says how far).
    pub errors: Vec<(RelPath, String)>,
    /// Copies kept of content that was replaced or removed: (path in the tree, backup file).
    pub backups: Vec<(RelPath, PathBuf)>,
}

pub struct Applier<'a> {
    pub root: &'a Path,
    pub staging: &'a mut Staging,
    /// Where this cycle's backups go (created on first use).
    pub backup_dir: &'a Path,
    /// Content that must be backed up before it is replaced or removed (not in the archive).
    pub backup: &'a HashSet<Digest>,
    pub state: &'a mut LocalTree,
    pub hook: &'a mut dyn DirHook,
    /// The last directory `staging_reaches` looked at, and its device: changes come grouped
    /// by directory, so most files need no look at all.
    pub last_dir: Option<(PathBuf, Option<u64>)>,
    /// Content not staged yet arrives here, in the order the changes need it.
    pub feed: &'a mut dyn Feed,
    /// How new files can be linked from an unnamed file (learnt once per endpoint).
    pub link_way: &'a mut LinkWay,
}

/// How an unnamed file (`O_TMPFILE`) gets its name on this system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkWay {
    /// `linkat(fd, "", AT_EMPTY_PATH)` (needs `CAP_DAC_READ_SEARCH`).
    EmptyPath,
    /// `linkat("/proc/self/fd/N", AT_SYMLINK_FOLLOW)`.
    ProcFd,
    /// Neither (or no `O_TMPFILE` on this filesystem): new files go through staging.
    Unsupported,
}

struct Work {
    errors: Vec<(RelPath, String)>,
    backups: Vec<(RelPath, PathBuf)>,
}

impl Applier<'_> {
    pub fn apply(&mut self, ch: &Change) -> Outcome {
        let mut w = Work {
            errors: Vec::new(),
            backups: Vec::new(),
        };
        let now = self.apply_inner(ch, &mut w);
        Outcome {
            path: ch.path.clone(),
            now,
            errors: w.errors,
            backups: w.backups,
        }
    }

    fn apply_inner(&mut self, ch: &Change, w: &mut Work) -> Option<Entry> {
        let rel = &ch.path;
        if rel.is_root() {
            w.errors
                .push((rel.clone(), "refusing to replace the root itself".into()));
            return ch.old.clone();
        }
        if !parents_are_dirs(self.root, rel) {
            w.errors.push((
                rel.clone(),
                "a parent directory is missing or was replaced by a non-directory; not written"
                    .into(),
            ));
            return ch.old.clone();
        }
        match (&ch.old, &ch.new) {
            (None, None) => None,
            (
                Some(Entry::File { digest: od, .. }),
                Some(Entry::File {
                    digest: nd,
                    executable,
                    ..
                }),
            ) => {
                if let Err(e) = self.verify(rel, ch.old.as_ref()) {
                    w.errors.push((rel.clone(), e));
                    return ch.old.clone();
                }
                let result = if od == nd {
                    self.set_executable(rel, *nd, *executable)
                } else {
                    self.replace_file(rel, *od, ch.new.as_ref(), w)
                };
                match result {
                    Ok(()) => ch.new.clone(),
                    Err(e) => {
                        w.errors.push((rel.clone(), e));
                        ch.old.clone()
                    }
                }
            }
            (old, new) => {
                if let Some(old) = old {
                    let left = self.remove(rel, old, w);
                    if left.is_some() {
                        return left;
                    }
                }
                new.as_ref().and_then(|n| self.create(rel, n, w))
            }
        }
    }

    fn abs(&self, rel: &RelPath) -> PathBuf {
        self.root.join(rel.as_str())
    }

    /// Places the new file `rel` straight from the feed when its content has not arrived yet:
    /// received into an unnamed file in the target's directory (`O_TMPFILE`), verified, then
    /// linked at its name, which never replaces anything. No staging copy and no rename: the
    /// cheapest way to place many new files. `None` when it cannot be done that way (content
    /// used more than once, no `O_TMPFILE` here...): the content, if it came, is staged and the
    /// usual way follows.
    fn create_direct(
        &mut self,
        rel: &RelPath,
        abs: &Path,
        digest: &Digest,
        executable: bool,
    ) -> Option<Result<(), String>> {
        if *self.link_way == LinkWay::Unsupported
            || self.staging.has(digest)
            || self.staging.refused(digest)
        {
            return None;
        }
        let dir = abs.parent()?;
        loop {
            let (want, src) = self.feed.next()?;
            if want.digest != *digest || want.uses > 1 {
                // Content for a path that was skipped, or needed more than once: staged.
                let _ = self.staging.receive(&want, src);
                if want.digest == *digest {
                    return None;
                }
                continue;
            }
            let mut f = match open_unnamed(dir) {
                Ok(f) => f,
                Err(e) => {
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
                    ) {
                        *self.link_way = LinkWay::Unsupported;
                    }
                    let _ = self.staging.receive(&want, src);
                    return None;
                }
            };
            let mut buf = self.staging.take_buf();
            let filled = fill_verified(src, &mut f, &want, &mut buf);
            self.staging.put_buf(buf);
            if let Err(e) = filled {
                let why = e.to_string();
                self.staging.refuse(*digest, why.clone());
                return Some(Err(format!("content not available: {why}")));
            }
            if executable {
                let mode = fs::Permissions::from_mode(exec_mode(0o100644, true));
                if let Err(e) = f.set_permissions(mode) {
                    return Some(Err(format!("cannot set mode: {e}")));
                }
            }
            return match self.link_unnamed(&f, abs) {
                Ok(()) => {
                    if let Ok(m) = f.metadata() {
                        self.remember_stat(rel, &m, *digest);
                    }
                    Some(Ok(()))
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Some(Err(self
                    .verify(rel, None)
                    .err()
                    .unwrap_or_else(|| e.to_string()))),
                Err(_) if *self.link_way == LinkWay::Unsupported => {
                    // Unnamed files cannot be linked here: stage the content the usual way.
                    use std::io::Seek;
                    if f.rewind().is_ok() {
                        let _ = self.staging.receive(&want, &mut f);
                    }
                    None
                }
                Err(e) => Some(Err(format!("cannot place file: {e}"))),
            };
        }
    }

    /// Gives the unnamed file `f` the name `abs` (never replacing anything), learning which
    /// way works here.
    fn link_unnamed(&mut self, f: &fs::File, abs: &Path) -> io::Result<()> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::io::AsRawFd;
        let to = CString::new(abs.as_os_str().as_bytes())
            .map_err(|_| io::Error::other("path holds a NUL byte"))?;
        let fd = f.as_raw_fd();
        if *self.link_way == LinkWay::EmptyPath {
            // SAFETY: valid descriptor and NUL-terminated strings that outlive the call.
            let r = unsafe {
                libc::linkat(
                    fd,
                    c"".as_ptr(),
                    libc::AT_FDCWD,
                    to.as_ptr(),
                    libc::AT_EMPTY_PATH,
                )
            };
            if r == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EPERM)) {
                return Err(e);
            }
        }
        let proc_path = CString::new(format!("/proc/self/fd/{fd}"))
            .map_err(|_| io::Error::other("bad descriptor path"))?;
        // SAFETY: as above.
        let r = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                proc_path.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        if r == 0 {
            *self.link_way = LinkWay::ProcFd;
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::AlreadyExists
            && abs
                .parent()
                .is_some_and(|d| fs::symlink_metadata(d).is_ok_and(|m| m.is_dir()))
        {
            // The directory is there, yet neither way links: no /proc, or a system that does
            // not allow it. Staging and a rename will do.
            *self.link_way = LinkWay::Unsupported;
        }
        Err(e)
    }

    /// A staged file with `digest`'s content (see `Staging::take`), receiving from the feed
    /// until it arrives.
    fn content(&mut self, digest: &Digest, for_swap: bool) -> io::Result<PathBuf> {
        while !self.staging.has(digest) && !self.staging.refused(digest) {
            let Some((want, src)) = self.feed.next() else {
                break;
            };
            // A refusal is remembered by staging and told to every path that needed it.
            let _ = self.staging.receive(&want, src);
        }
        self.staging.take(digest, for_swap)
    }

    /// Checks that the disk still holds what the scan saw at `rel` (the top level of `e`).
    fn verify(&self, rel: &RelPath, e: Option<&Entry>) -> Result<(), String> {
        let abs = self.abs(rel);
        let meta = match fs::symlink_metadata(&abs) {
            Ok(m) => Some(m),
            Err(err) if err.kind() == io::ErrorKind::NotFound => None,
            Err(err) => return Err(format!("cannot check before writing: {err}")),
        };
        let changed =
            || Err("changed since it was scanned; left alone until the next cycle".to_owned());
        match (e, meta) {
            (None, None) => Ok(()),
            (None, Some(_)) => Err(
                "something exists here that the scan did not see (created meanwhile, or a name \
                 differing only in case on a case-insensitive filesystem); left alone"
                    .to_owned(),
            ),
            (Some(_), None) => changed(),
            (Some(Entry::File { .. }), Some(m)) => match self.state.cache.get(rel.as_str()) {
                Some(c) if m.file_type().is_file() && c.stat == Stat::of(&m) => Ok(()),
                _ => changed(),
            },
            (Some(Entry::Symlink { target }), Some(m)) => {
                let same = m.file_type().is_symlink()
                    && fs::read_link(&abs).ok().as_deref().and_then(Path::to_str)
                        == Some(target.as_str());
                if same { Ok(()) } else { changed() }
            }
            (Some(Entry::Directory(_)), Some(m)) => {
                if m.is_dir() && self.state.dirs.get(rel.as_str()) == Some(&m.ino()) {
                    Ok(())
                } else {
                    changed()
                }
            }
            (Some(Entry::Problem(p)), _) => {
                Err(format!("cannot change a path ferry cannot read ({p})"))
            }
        }
    }

    /// Keeps a copy of `src` (the content at `rel`) in the backup area unless its content is in
    /// the archive at that path.
    fn backup(
        &mut self,
        rel: &RelPath,
        digest: Digest,
        src: &Path,
        w: &mut Work,
    ) -> Result<(), String> {
        if !self.backup.contains(&digest) {
            return Ok(());
        }
        let dest = self.backup_dir.join(rel.as_str());
        let res = (|| {
            if let Some(p) = dest.parent() {
                fs::create_dir_all(p)?;
            }
            // A hard link keeps the bytes at no cost when the backup area shares the filesystem.
            if fs::hard_link(src, &dest).is_err() {
                fs::copy(src, &dest)?;
            }
            io::Result::Ok(())
        })();
        match res {
            Ok(()) => {
                w.backups.push((rel.clone(), dest));
                Ok(())
            }
            Err(e) => Err(format!("cannot keep a backup ({e}); left alone")),
        }
    }

    /// A temporary name next to `abs`, for a directory on another filesystem than staging (a
    /// mount nested in the root). Always ignored by scans (see `ignore.rs`).
    fn local_temp(&mut self, abs: &Path) -> PathBuf {
        let dir = abs.parent().unwrap_or(self.root);
        dir.join(format!(
            ".ferry-tmp-{}-{}",
            std::process::id(),
            self.staging.next_id()
        ))
    }

    /// True if `abs`'s directory is on the staging directory's filesystem.
    fn staging_reaches(&mut self, abs: &Path) -> bool {
        let dir = abs.parent().unwrap_or(self.root);
        let dev = match &self.last_dir {
            Some((d, dev)) if d == dir => *dev,
            _ => {
                let dev = fs::symlink_metadata(dir).map(|m| m.dev()).ok();
                self.last_dir = Some((dir.to_path_buf(), dev));
                dev
            }
        };
        dev.is_some() && dev == self.staging.dev()
    }

    /// `staged` moved (copied, across filesystems) next to `abs` if staging cannot reach it.
    fn near(&mut self, staged: PathBuf, abs: &Path) -> Result<PathBuf, String> {
        if self.staging_reaches(abs) {
            return Ok(staged);
        }
        let tmp = self.local_temp(abs);
        let copied = fs::copy(&staged, &tmp);
        let _ = fs::remove_file(&staged);
        match copied {
            Ok(_) => Ok(tmp),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(format!(
                    "cannot stage next to the file (another filesystem): {e}"
                ))
            }
        }
    }

    /// Where to move `abs` aside: staging, or next to it when staging cannot reach it.
    fn aside_for(&mut self, abs: &Path) -> Result<PathBuf, String> {
        // `scratch` also creates the staging directory, which `staging_reaches` looks at.
        let in_staging = self
            .staging
            .scratch()
            .map_err(|e| format!("cannot prepare: {e}"))?;
        if self.staging_reaches(abs) {
            Ok(in_staging)
        } else {
            Ok(self.local_temp(abs))
        }
    }

    /// The file moved aside is not the one the scan saw (written after the check): put it back,
    /// or, if something new took its place meanwhile, keep it (see [`Self::park`]).
    fn restore_aside(&mut self, rel: &RelPath, aside: &Path, w: &mut Work) -> String {
        if rename_noreplace(aside, &self.abs(rel)).is_ok() {
            return "changed since it was scanned; left alone until the next cycle".into();
        }
        self.park(rel, aside, w)
    }

    /// Keeps a version of `rel` that could not go back to its path: in the backup area if
    /// possible, else under a name in staging that no cleanup removes. Never deletes it.
    /// Returns the message saying where it is.
    fn park(&mut self, rel: &RelPath, from: &Path, w: &mut Work) -> String {
        let dest = self.backup_dir.join(rel.as_str());
        let moved = dest
            .parent()
            .map_or(Ok(()), fs::create_dir_all)
            .and_then(|()| {
                fs::rename(from, &dest).or_else(|_| {
                    // Across filesystems: copy, and drop the original only once the copy exists.
                    fs::copy(from, &dest)?;
                    fs::remove_file(from)
                })
            });
        if moved.is_ok() {
            w.backups.push((rel.clone(), dest.clone()));
            return format!(
                "changed while ferry replaced it; that version is kept at {}",
                dest.display()
            );
        }
        let kept = self.staging.keep_path();
        match fs::rename(from, &kept) {
            Ok(()) => format!(
                "changed while ferry replaced it and the backup area is unusable; that version is kept at {}",
                kept.display()
            ),
            Err(_) => format!(
                "changed while ferry replaced it and could not be moved; that version is at {}",
                from.display()
            ),
        }
    }

    fn set_executable(
        &mut self,
        rel: &RelPath,
        digest: Digest,
        executable: bool,
    ) -> Result<(), String> {
        // Through a descriptor opened without following links: a file swapped for a symlink
        // since the check is never chmod-ed (nor is anything it points to).
        let f = super::scan::open_nofollow(&self.abs(rel))
            .map_err(|e| format!("cannot open for chmod: {e}"))?;
        let m = f.metadata().map_err(|e| e.to_string())?;
        if !m.is_file() {
            return Err("changed since it was scanned; left alone until the next cycle".into());
        }
        f.set_permissions(fs::Permissions::from_mode(exec_mode(m.mode(), executable)))
            .map_err(|e| format!("chmod failed: {e}"))?;
        drop(f);
        self.remember_file(rel, digest);
        Ok(())
    }

    fn replace_file(
        &mut self,
        rel: &RelPath,
        old: Digest,
        new: Option<&Entry>,
        w: &mut Work,
    ) -> Result<(), String> {
        let Some(Entry::File {
            digest, executable, ..
        }) = new
        else {
            return Err("internal: not a file".into());
        };
        const CHANGED: &str = "changed since it was scanned; left alone until the next cycle";
        let abs = self.abs(rel);
        let Some(seen) = self.state.cache.get(rel.as_str()).map(|c| c.stat) else {
            return Err(CHANGED.into());
        };
        let staged = self
            .content(digest, true)
            .map_err(|e| format!("content not available: {e}"))?;
        let staged = self.near(staged, &abs)?;
        // Our staged file's identity, to tell it apart from anyone else's after swaps.
        let ours = match fs::symlink_metadata(&staged) {
            Ok(m) => (m.dev(), m.ino()),
            Err(e) => return Err(format!("content not available: {e}")),
        };
        let is_ours = |p: &Path| fs::symlink_metadata(p).is_ok_and(|m| (m.dev(), m.ino()) == ours);
        let mode = fs::Permissions::from_mode(exec_mode(seen.mode, *executable));
        if let Err(e) = fs::set_permissions(&staged, mode) {
            let _ = fs::remove_file(&staged);
            return Err(format!("cannot set mode: {e}"));
        }
        // Swap rather than overwrite, then look at what came out: if a write landed after the
        // check, swap back so the person's version is at its path again.
        match rename_exchange(&staged, &abs) {
            Ok(()) => {
                // `staged` now holds what was at the path.
                if !fs::symlink_metadata(&staged).is_ok_and(|m| same_file(&seen, &m)) {
                    if !is_ours(&abs) {
                        // Saved over again after the swap: that newest version stays; keep the
                        // one that came out.
                        return Err(self.park(rel, &staged, w));
                    }
                    return Err(match rename_exchange(&staged, &abs) {
                        Ok(()) if is_ours(&staged) => {
                            let _ = fs::remove_file(&staged);
                            CHANGED.into()
                        }
                        // Whatever is in `staged` now is not ours: keep it.
                        Ok(()) | Err(_) => self.park(rel, &staged, w),
                    });
                }
                if let Err(e) = self.backup(rel, old, &staged, w) {
                    // No copy could be kept: put the old version back.
                    return Err(match rename_exchange(&staged, &abs) {
                        Ok(()) if is_ours(&staged) => {
                            let _ = fs::remove_file(&staged);
                            e
                        }
                        Ok(()) | Err(_) => self.park(rel, &staged, w),
                    });
                }
                let _ = fs::remove_file(&staged);
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
                ) =>
            {
                // No RENAME_EXCHANGE (NFS, many FUSE filesystems): move the old file aside and
                // check it, then place ours where nothing is. The path is briefly empty; no
                // write is lost.
                let result = self.replace_by_moving_aside(rel, &abs, old, &seen, &staged, w);
                if is_ours(&staged) {
                    let _ = fs::remove_file(&staged);
                }
                result?;
            }
            Err(e) => {
                let _ = fs::remove_file(&staged);
                return Err(format!("cannot rename into place: {e}"));
            }
        }
        self.remember_file(rel, *digest);
        Ok(())
    }

    fn replace_by_moving_aside(
        &mut self,
        rel: &RelPath,
        abs: &Path,
        old: Digest,
        seen: &Stat,
        staged: &Path,
        w: &mut Work,
    ) -> Result<(), String> {
        let aside = self.aside_for(abs)?;
        if let Err(e) = fs::rename(abs, &aside) {
            return Err(if e.kind() == io::ErrorKind::NotFound {
                "changed since it was scanned; left alone until the next cycle".into()
            } else {
                format!("cannot move the old version aside: {e}")
            });
        }
        if !fs::symlink_metadata(&aside).is_ok_and(|m| same_file(seen, &m)) {
            return Err(self.restore_aside(rel, &aside, w));
        }
        if let Err(e) = self.backup(rel, old, &aside, w) {
            let msg = self.restore_aside(rel, &aside, w);
            return Err(format!("{e} ({msg})"));
        }
        if let Err(e) = rename_noreplace(staged, abs) {
            // Something appeared at the path meanwhile: it stays. The old version we moved aside
            // is the one the scan saw; put it back if it can go, else keep it.
            let msg = self.restore_aside(rel, &aside, w);
            return Err(format!("cannot place the new version ({e}); {msg}"));
        }
        let _ = fs::remove_file(&aside);
        Ok(())
    }

    /// Records a file ferry just wrote in the stat cache, so the next scan need not read it
    /// (unless it was written too recently for its timestamps to reveal a later same-size
    /// write: then, like any racy entry, it is hashed again).
    fn remember_file(&mut self, rel: &RelPath, digest: Digest) {
        if let Ok(m) = fs::symlink_metadata(self.abs(rel)) {
            self.remember_stat(rel, &m, digest);
        }
    }

    fn remember_stat(&mut self, rel: &RelPath, m: &fs::Metadata, digest: Digest) {
        let stat = Stat::of(m);
        self.state.cache.insert(
            rel.as_str(),
            Cached {
                stat,
                digest,
                trusted: stat_is_settled(&stat),
                seen: 0,
            },
        );
    }

    /// Removes the file at `rel`: moved aside first, checked to be the one the scan saw, backed
    /// up if its content is not in the archive, then unlinked.
    fn remove_file(&mut self, rel: &RelPath, digest: Digest, w: &mut Work) -> Result<(), String> {
        const CHANGED: &str = "changed since it was scanned; left alone until the next cycle";
        let abs = self.abs(rel);
        let Some(seen) = self.state.cache.get(rel.as_str()).map(|c| c.stat) else {
            return Err(CHANGED.into());
        };
        let aside = self.aside_for(&abs)?;
        match fs::rename(&abs, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(CHANGED.into()),
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                // A mount nested in the root (a volume inside a bind mount): staging is on
                // another filesystem. Check, keep a copy if needed, unlink.
                if !fs::symlink_metadata(&abs).is_ok_and(|m| same_file(&seen, &m)) {
                    return Err(CHANGED.into());
                }
                self.backup(rel, digest, &abs, w)?;
                fs::remove_file(&abs).map_err(|e| format!("cannot remove: {e}"))?;
                self.state.cache.remove(rel.as_str());
                return Ok(());
            }
            Err(e) => return Err(format!("cannot remove: {e}")),
        }
        if !fs::symlink_metadata(&aside).is_ok_and(|m| same_file(&seen, &m)) {
            return Err(self.restore_aside(rel, &aside, w));
        }
        if let Err(e) = self.backup(rel, digest, &aside, w) {
            let msg = self.restore_aside(rel, &aside, w);
            return Err(format!("{e} ({msg})"));
        }
        let _ = fs::remove_file(&aside);
        self.state.cache.remove(rel.as_str());
        Ok(())
    }

    /// Removes the symlink at `rel`: moved aside, checked to still be the link the scan saw
    /// (not a file saved there since), then unlinked; anything else goes back.
    fn remove_symlink(&mut self, rel: &RelPath, target: &str, w: &mut Work) -> Result<(), String> {
        let abs = self.abs(rel);
        let aside = self.aside_for(&abs)?;
        if let Err(e) = fs::rename(&abs, &aside) {
            return Err(if e.kind() == io::ErrorKind::NotFound {
                "changed since it was scanned; left alone until the next cycle".into()
            } else {
                format!("cannot remove: {e}")
            });
        }
        let same = fs::symlink_metadata(&aside).is_ok_and(|m| m.file_type().is_symlink())
            && fs::read_link(&aside).ok().as_deref().and_then(Path::to_str) == Some(target);
        if !same {
            return Err(self.restore_aside(rel, &aside, w));
        }
        let _ = fs::remove_file(&aside);
        Ok(())
    }

    /// Removes `old` at `rel`, deepest first. Returns what is left (`None` when all is gone).
    fn remove(&mut self, rel: &RelPath, old: &Entry, w: &mut Work) -> Option<Entry> {
        if let Err(e) = self.verify(rel, Some(old)) {
            w.errors.push((rel.clone(), e));
            return Some(old.clone());
        }
        let abs = self.abs(rel);
        match old {
            Entry::File { digest, .. } => match self.remove_file(rel, *digest, w) {
                Ok(()) => None,
                Err(e) => {
                    w.errors.push((rel.clone(), e));
                    Some(old.clone())
                }
            },
            Entry::Symlink { target } => match self.remove_symlink(rel, target, w) {
                Ok(()) => None,
                Err(e) => {
                    w.errors.push((rel.clone(), e));
                    Some(old.clone())
                }
            },
            Entry::Directory(children) => {
                let mut left = std::collections::BTreeMap::new();
                for (name, child) in children {
                    let Ok(crel) = rel.join(name) else { continue };
                    if let Some(l) = self.remove(&crel, child, w) {
                        left.insert(name.clone(), l);
                    }
                }
                if !left.is_empty() {
                    return Some(Entry::Directory(left));
                }
                match fs::remove_dir(&abs) {
                    Ok(()) => {
                        self.state.dirs.remove(rel.as_str());
                        self.hook.dir_removed(&abs);
                        None
                    }
                    Err(e) => {
                        let why = if e.raw_os_error() == Some(libc::ENOTEMPTY) {
                            "directory still holds files ferry does not sync (ignored or unreadable); kept".to_owned()
                        } else {
                            format!("cannot remove directory: {e}")
                        };
                        w.errors.push((rel.clone(), why));
                        Some(Entry::Directory(Default::default()))
                    }
                }
            }
            Entry::Problem(_) => Some(old.clone()),
        }
    }

    /// Creates `new` at `rel`, where nothing may exist yet. Returns what now exists.
    fn create(&mut self, rel: &RelPath, new: &Entry, w: &mut Work) -> Option<Entry> {
        let abs = self.abs(rel);
        let fail = |w: &mut Work, e: String| {
            w.errors.push((rel.clone(), e));
            None
        };
        match new {
            Entry::File {
                digest, executable, ..
            } => {
                if let Some(done) = self.create_direct(rel, &abs, digest, *executable) {
                    return match done {
                        Ok(()) => Some(new.clone()),
                        Err(e) => fail(w, e),
                    };
                }
                let staged = match self.content(digest, false) {
                    Ok(p) => p,
                    Err(e) => return fail(w, format!("content not available: {e}")),
                };
                let staged = match self.near(staged, &abs) {
                    Ok(p) => p,
                    Err(e) => return fail(w, e),
                };
                // Staged files are 0644; only executables need a chmod.
                if *executable {
                    let mode = fs::Permissions::from_mode(exec_mode(0o100644, true));
                    if let Err(e) = fs::set_permissions(&staged, mode) {
                        let _ = fs::remove_file(&staged);
                        return fail(w, format!("cannot set mode: {e}"));
                    }
                }
                // Never replaces anything: a file that appeared since the scan wins.
                let placed = rename_noreplace(&staged, &abs);
                match placed {
                    Ok(()) => {
                        self.remember_file(rel, *digest);
                        Some(new.clone())
                    }
                    Err(e) => {
                        let _ = fs::remove_file(&staged);
                        if e.kind() == io::ErrorKind::AlreadyExists {
                            fail(
                                w,
                                self.verify(rel, None)
                                    .err()
                                    .unwrap_or_else(|| e.to_string()),
                            )
                        } else {
                            fail(w, format!("cannot place file: {e}"))
                        }
                    }
                }
            }
            // The same rule as the scan's, again here: whatever sent this change, a link that
            // could lead outside the root is never created.
            Entry::Symlink { target } if !link_stays_inside(rel, target) => fail(
                w,
                format!("refusing to create a symlink to '{target}': it may lead outside the root"),
            ),
            Entry::Symlink { target } if leads_outside(self.root, rel, target) => fail(
                w,
                format!(
                    "refusing to create a symlink to '{target}': through links already on this \
                     side it would lead outside the root"
                ),
            ),
            Entry::Symlink { target } => match std::os::unix::fs::symlink(target, &abs) {
                Ok(()) => Some(new.clone()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => fail(
                    w,
                    self.verify(rel, None)
                        .err()
                        .unwrap_or_else(|| e.to_string()),
                ),
                Err(e) => fail(w, format!("cannot create symlink: {e}")),
            },
            Entry::Directory(children) => {
                match fs::create_dir(&abs) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        return fail(
                            w,
                            self.verify(rel, None)
                                .err()
                                .unwrap_or_else(|| e.to_string()),
                        );
                    }
                    Err(e) => return fail(w, format!("cannot create directory: {e}")),
                }
                if let Ok(m) = fs::symlink_metadata(&abs) {
                    self.state.dirs.insert(rel.as_str().to_owned(), m.ino());
                }
                self.hook.dir_added(&abs);
                let mut made = std::collections::BTreeMap::new();
                for (name, child) in children {
                    let Ok(crel) = rel.join(name) else { continue };
                    if let Some(e) = self.create(&crel, child, w) {
                        made.insert(name.clone(), e);
                    }
                }
                Some(Entry::Directory(made))
            }
            Entry::Problem(_) => None,
        }
    }
}

/// True if the kernel, resolving `target` from the link's directory without leaving `root`
/// (`openat2` with `RESOLVE_BENEATH`), finds that it leaves: a link that passed the lexical rule
/// can still climb out through a link on this side that ferry does not sync (one that escapes,
/// or an ignored one). A target that does not exist yet resolves nowhere and is fine; kernels
/// without `openat2` (before 5.6) keep the lexical rule alone.
fn leads_outside(root: &Path, link: &RelPath, target: &str) -> bool {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    let Ok(dir) = fs::File::open(root) else {
        return false;
    };
    let from = link
        .parent()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let path = if from.is_empty() {
        target.to_owned()
    } else {
        format!("{from}/{target}")
    };
    let Ok(c) = CString::new(path) else {
        return true;
    };
    // SAFETY: `open_how` is plain integers; all-zero is its documented "no options" value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: a valid directory descriptor, a NUL-terminated path and an `open_how` of the
    // size passed; the kernel keeps no reference to any of them.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd >= 0 {
        // SAFETY: the descriptor was just returned to us and is closed exactly once.
        unsafe { libc::close(fd as libc::c_int) };
        return false;
    }
    io::Error::last_os_error().raw_os_error() == Some(libc::EXDEV)
}

/// True if `m` is the file the scan saw as `seen` (same inode, size and modification time;
/// not ctime, which a backup's hard link changes).
fn same_file(seen: &Stat, m: &fs::Metadata) -> bool {
    let now = Stat::of(m);
    m.file_type().is_file()
        && now.dev == seen.dev
        && now.ino == seen.ino
        && now.size == seen.size
        && now.mtime_ns == seen.mtime_ns
}

/// Atomically swaps `a` and `b` (`renameat2(RENAME_EXCHANGE)`).
fn rename_exchange(a: &Path, b: &Path) -> io::Result<()> {
    renameat2(a, b, libc::RENAME_EXCHANGE)
}

fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let (Ok(f), Ok(t)) = (
        CString::new(from.as_os_str().as_bytes()),
        CString::new(to.as_os_str().as_bytes()),
    ) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    // SAFETY: two valid NUL-terminated paths; the syscall reads them and keeps no reference.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Moves `from` to `to` unless something exists at `to` (then `AlreadyExists`): one atomic
/// `renameat2(RENAME_NOREPLACE)`, or `link` + `unlink` where the filesystem lacks it.
/// An unnamed file in `dir` (`O_TMPFILE`), readable and writable, mode 0644.
fn open_unnamed(dir: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o644)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir)
}

fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    match renameat2(from, to, libc::RENAME_NOREPLACE) {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
            ) =>
        {
            // link() refuses to replace anything too.
            fs::hard_link(from, to)?;
            let _ = fs::remove_file(from);
            Ok(())
        }
        r => r,
    }
}

/// True for errors the next cycle is expected to clear: the disk moved under a cycle (a file
/// written while it was copied, something created meanwhile).
pub fn is_transient(message: &str) -> bool {
    [
        "changed since it was scanned",
        "content not available",
        "content changed while",
        "the scan did not see",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// `mode` with the executable bits set (where the matching read bit is) or cleared.
fn exec_mode(mode: u32, executable: bool) -> u32 {
    let perm = mode & 0o7777;
    if executable {
        perm | 0o100 | ((perm & 0o044) >> 2)
    } else {
        perm & !0o111
    }
}

#[cfg(test)]
mod tests {
    use super::exec_mode;

    #[test]
    fn exec_bits_follow_read_bits() {
        assert_eq!(exec_mode(0o100644, true), 0o755);
        assert_eq!(exec_mode(0o100600, true), 0o700);
        assert_eq!(exec_mode(0o100755, false), 0o644);
    }
}
