//! Applying changes to a local root with ferry's promises: nothing replaced that changed since
//! the scan, every new file renamed into place whole, a backup of content not in the archive,
//! nothing written through a symlink or outside the root.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ferry_core::{Change, Digest, Entry, Mtime, PERMISSION_BITS, RelPath, link_stays_inside};

use std::time::{Duration, Instant};

use super::beneath::{self, Place, Root, is_parent_error};
use super::meta::{MetaSpec, Permissions, Symlinks};
use super::owner::Owner;
use super::scan::{Cached, DirHook, LocalTree, Stat, stat_is_settled};
use super::stage::{Staging, fill_verified};
use super::sys::{FsCaps, RenameHow};
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
    /// The root, held open: every place written is resolved beneath it.
    pub root: &'a Root,
    pub staging: &'a mut Staging,
    /// Where this cycle's backups go (created on first use).
    pub backup_dir: &'a Path,
    /// Where versions a replacement swapped out go when their content is in the archive (no
    /// backup needed): kept for late writes, pruned like backups.
    pub replaced_dir: &'a Path,
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
    /// Versions swapped out of their paths, watched for late writes (see [`Swapped`]).
    pub swapped: &'a mut Vec<Swapped>,
    /// Which metadata is synced (permission bits, times, symlinks).
    pub meta: MetaSpec,
    /// Who gets what is created here, when not this process (see `fs::owner`).
    pub owner: Option<Owner>,
    /// What this root's filesystem can hold (`sys::probe`): without modes no chmod is tried
    /// (the scan reports the modes ferry knows), without symlinks none is created.
    pub caps: FsCaps,
}

/// A version ferry swapped out of a path when it placed a new one. A program that opened the
/// file before the swap may still write to it afterwards; that write lands in this version.
/// So it is kept in the backup area (a rename, no copy) and looked at again for a while: if it
/// changed after the swap, the session reports where that version is (see [`check_swapped`]).
#[derive(Clone, Debug)]
pub struct Swapped {
    pub path: RelPath,
    pub kept: PathBuf,
    pub stat: Stat,
    pub at: Instant,
}

/// How long a swapped-out version is watched for late writes.
const SWAPPED_WATCH: Duration = Duration::from_secs(30);

/// Looks at the versions swapped out recently: returns (path, message) for each one written
/// after the swap (it stays where it is, in the backup area) and forgets those watched long
/// enough.
pub fn check_swapped(list: &mut Vec<Swapped>) -> Vec<(RelPath, String)> {
    let mut notes = Vec::new();
    list.retain(|s| {
        let changed = match fs::symlink_metadata(&s.kept) {
            Ok(m) => !same_file(&s.stat, &m),
            // Removed by hand, or pruned: nothing left to watch.
            Err(_) => return false,
        };
        if changed {
            notes.push((
                s.path.clone(),
                format!(
                    "was written after ferry replaced it (a program still had it open); that \
                     version is kept as a conflict copy at {}",
                    s.kept.display()
                ),
            ));
            return false;
        }
        s.at.elapsed() < SWAPPED_WATCH
    });
    notes
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

const CHANGED: &str = "changed since it was scanned; left alone until the next cycle";
const PARENT_GONE: &str =
    "a parent directory is missing or was replaced by a non-directory; not written";

impl Applier<'_> {
    pub fn apply(&mut self, ch: &Change) -> Outcome {
        let mut w = Work {
            errors: Vec::new(),
            backups: Vec::new(),
        };
        let now = self.apply_inner(ch, &mut w);
        self.state.keep_modes(&ch.path, now.as_ref());
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
        // The parent is opened beneath the root once, following no link; everything this
        // change does happens in that directory, whatever is renamed or swapped meanwhile.
        let at = match self.root.place(rel) {
            Ok(at) => at,
            Err(e) if is_parent_error(&e) => {
                w.errors.push((rel.clone(), PARENT_GONE.into()));
                return ch.old.clone();
            }
            Err(e) => {
                w.errors
                    .push((rel.clone(), format!("cannot open its directory: {e}")));
                return ch.old.clone();
            }
        };
        match (&ch.old, &ch.new) {
            (None, None) => None,
            (Some(Entry::Directory(_)), Some(Entry::Directory(nd))) => {
                // A directory's permission bits alone (`Change::is_meta`).
                let caps = self.caps;
                let result = self.verify(&at, rel, ch.old.as_ref()).and_then(|()| {
                    if caps.modes {
                        set_dir_mode(&at, nd.mode)
                    } else {
                        Ok(())
                    }
                });
                match result {
                    Ok(()) => ch.new.clone(),
                    Err(e) => {
                        w.errors.push((rel.clone(), e));
                        ch.old.clone()
                    }
                }
            }
            (
                Some(Entry::File { digest: od, .. }),
                Some(Entry::File {
                    digest: nd, mode, ..
                }),
            ) => {
                if let Err(e) = self.verify(&at, rel, ch.old.as_ref()) {
                    w.errors.push((rel.clone(), e));
                    return ch.old.clone();
                }
                let result = if od == nd {
                    self.set_file_mode(&at, rel, *nd, *mode)
                } else {
                    self.replace_file(&at, rel, *od, ch.new.as_ref(), w)
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
                    let left = self.remove(&at, rel, old, w);
                    if left.is_some() {
                        return left;
                    }
                }
                new.as_ref().and_then(|n| self.create(&at, rel, n, w))
            }
        }
    }

    /// Places the new file `rel` straight from the feed when its content has not arrived yet:
    /// received into an unnamed file in the target's directory (`O_TMPFILE`), verified, then
    /// linked at its name, which never replaces anything. No staging copy and no rename: the
    /// cheapest way to place many new files. `None` when it cannot be done that way (content
    /// used more than once, no `O_TMPFILE` here...): the content, if it came, is staged and the
    /// usual way follows.
    fn create_direct(
        &mut self,
        at: &Place,
        rel: &RelPath,
        digest: &Digest,
        (mode, mtime): (u32, Mtime),
    ) -> Option<Result<(), String>> {
        if *self.link_way == LinkWay::Unsupported
            || self.staging.has(digest)
            || self.staging.refused(digest)
        {
            return None;
        }
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
            // Private until it has its final mode: never more readable than its source.
            let mut f = match at.open_unnamed_beside(0o600) {
                Ok(f) => f,
                Err(e) => {
                    if beneath::is_unsupported(&e) || e.raw_os_error() == Some(libc::EISDIR) {
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
            if let Err(e) = self.finish_file(&f, self.new_mode(mode, None), mtime) {
                return Some(Err(e));
            }
            return match self.link_unnamed(&f, at) {
                Ok(()) => {
                    if let Ok(m) = f.metadata() {
                        self.remember_stat(rel, &m, *digest);
                    }
                    Some(Ok(()))
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Some(Err(self
                    .verify(at, rel, None)
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

    /// Gives the unnamed file `f` the name `at` (never replacing anything), learning which
    /// way works here.
    fn link_unnamed(&mut self, f: &fs::File, at: &Place) -> io::Result<()> {
        if *self.link_way == LinkWay::EmptyPath {
            match beneath::link_open_file(f, at, true) {
                Ok(()) => return Ok(()),
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EPERM)) => {}
                Err(e) => return Err(e),
            }
        }
        match beneath::link_open_file(f, at, false) {
            Ok(()) => {
                *self.link_way = LinkWay::ProcFd;
                Ok(())
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::AlreadyExists && at.dir_dev().is_ok() {
                    // The directory is there, yet neither way links: no /proc, or a system
                    // that does not allow it. Staging and a rename will do.
                    *self.link_way = LinkWay::Unsupported;
                }
                Err(e)
            }
        }
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
    fn verify(&self, at: &Place, rel: &RelPath, e: Option<&Entry>) -> Result<(), String> {
        let meta = at
            .lstat_opt()
            .map_err(|err| format!("cannot check before writing: {err}"))?;
        let changed = || Err(CHANGED.to_owned());
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
                    && at.read_link().ok().as_deref().and_then(Path::to_str)
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

    /// Where the backup of `rel` goes this cycle (its directory created).
    fn backup_place(&self, rel: &RelPath) -> io::Result<(PathBuf, Place)> {
        place_under(self.backup_dir, rel)
    }

    /// Keeps a copy of `src` (the content at `rel`) in the backup area unless its content is in
    /// the archive at that path.
    fn backup(
        &mut self,
        rel: &RelPath,
        digest: Digest,
        src: &Place,
        w: &mut Work,
    ) -> Result<(), String> {
        if !self.backup.contains(&digest) {
            return Ok(());
        }
        let res = (|| {
            let (dest, to) = self.backup_place(rel)?;
            // A hard link keeps the bytes at no cost when the backup area shares the filesystem.
            if beneath::hard_link(src, &to).is_err() {
                beneath::copy_new(src, &to)?;
            }
            io::Result::Ok(dest)
        })();
        match res {
            Ok(dest) => {
                w.backups.push((rel.clone(), dest));
                Ok(())
            }
            Err(e) => Err(format!("cannot keep a backup ({e}); left alone")),
        }
    }

    /// A temporary name next to `at`, for a directory on another filesystem than staging (a
    /// mount nested in the root). Always ignored by scans (see `ignore.rs`).
    fn local_temp(&mut self, at: &Place) -> Result<Place, String> {
        let name = format!(
            ".ferry-tmp-{}-{}",
            std::process::id(),
            self.staging.next_id()
        );
        at.sibling(&name)
            .map_err(|e| format!("cannot prepare a temporary name: {e}"))
    }

    /// True if `at`'s directory is on the staging directory's filesystem.
    fn staging_reaches(&mut self, at: &Place) -> bool {
        let dir = at
            .shown()
            .parent()
            .unwrap_or(self.root.path())
            .to_path_buf();
        let dev = match &self.last_dir {
            Some((d, dev)) if *d == dir => *dev,
            _ => {
                let dev = at.dir_dev().ok();
                self.last_dir = Some((dir, dev));
                dev
            }
        };
        dev.is_some() && dev == self.staging.dev()
    }

    /// `staged` moved (copied, across filesystems) next to `at` if staging cannot reach it.
    fn near(&mut self, staged: PathBuf, at: &Place) -> Result<Place, String> {
        let from = Place::abs(&staged).map_err(|e| e.to_string())?;
        if self.staging_reaches(at) {
            return Ok(from);
        }
        let tmp = self.local_temp(at)?;
        let copied = beneath::copy_new(&from, &tmp);
        let _ = fs::remove_file(&staged);
        match copied {
            Ok(_) => Ok(tmp),
            Err(e) => Err(format!(
                "cannot stage next to the file (another filesystem): {e}"
            )),
        }
    }

    /// Where to move `at` aside: staging, or next to it when staging cannot reach it.
    fn aside_for(&mut self, at: &Place) -> Result<Place, String> {
        // `scratch` also creates the staging directory, which `staging_reaches` looks at.
        let in_staging = self
            .staging
            .scratch()
            .map_err(|e| format!("cannot prepare: {e}"))?;
        if self.staging_reaches(at) {
            Place::abs(&in_staging).map_err(|e| e.to_string())
        } else {
            self.local_temp(at)
        }
    }

    /// The file moved aside is not the one the scan saw (written after the check): put it back,
    /// or, if something new took its place meanwhile, keep it (see [`Self::park`]).
    fn restore_aside(&mut self, at: &Place, rel: &RelPath, aside: &Place, w: &mut Work) -> String {
        if beneath::rename_noreplace(aside, at).is_ok() {
            return CHANGED.into();
        }
        self.park(rel, aside, w)
    }

    /// Keeps a version of `rel` that could not go back to its path: in the backup area if
    /// possible, else under a name in staging that no cleanup removes. Never deletes it.
    /// Returns the message saying where it is.
    fn park(&mut self, rel: &RelPath, from: &Place, w: &mut Work) -> String {
        let moved = self.backup_place(rel).and_then(|(dest, to)| {
            beneath::rename(from, &to, RenameHow::Plain)
                .or_else(|_| {
                    // Across filesystems: copy, and drop the original only once the copy exists.
                    beneath::copy_new(from, &to)?;
                    from.unlink()
                })
                .map(|()| dest)
        });
        if let Ok(dest) = moved {
            let msg = format!(
                "changed while ferry replaced it; that version is kept at {}",
                dest.display()
            );
            w.backups.push((rel.clone(), dest));
            return msg;
        }
        let kept = self.staging.keep_path();
        let to = Place::abs(&kept);
        match to.and_then(|to| beneath::rename(from, &to, RenameHow::Plain)) {
            Ok(()) => format!(
                "changed while ferry replaced it and the backup area is unusable; that version is kept at {}",
                kept.display()
            ),
            Err(_) => format!(
                "changed while ferry replaced it and could not be moved; that version is at {}",
                from.shown().display()
            ),
        }
    }

    /// The mode a file placed for an entry with `mode` gets: that mode, or, with
    /// `--permissions exec`, `current` (the replaced file's; `0o644` for a new file) with the
    /// entry's executable bit.
    fn new_mode(&self, mode: u32, current: Option<u32>) -> u32 {
        match self.meta.permissions {
            Permissions::Full => mode & PERMISSION_BITS,
            Permissions::Exec => exec_mode(current.unwrap_or(0o644), mode & 0o100 != 0),
        }
    }

    /// Gives a file about to be placed its mode and (unless `--no-times`) its source's
    /// modification time, through its descriptor.
    fn finish_file(&self, f: &fs::File, mode: u32, mtime: Mtime) -> Result<(), String> {
        // Before the chmod: a chown may clear mode bits.
        if let Some(o) = self.owner {
            std::os::unix::fs::fchown(f, Some(o.uid), Some(o.gid))
                .map_err(|e| format!("cannot give the file to {}:{}: {e}", o.uid, o.gid))?;
        }
        if self.caps.modes {
            chmod_kept(f, mode, self.meta.permissions == Permissions::Full)?;
        }
        // Zero: not known (an entry from before times were kept).
        if self.meta.times && mtime.0 != 0 {
            f.set_modified(system_time(mtime.0))
                .map_err(|e| format!("cannot set modification time: {e}"))?;
        }
        Ok(())
    }

    /// Gives what was just created at `at` to the side's owner, if it has one.
    fn give(&self, at: &Place) -> Result<(), String> {
        match self.owner {
            Some(o) => at
                .lchown(o.uid, o.gid)
                .map_err(|e| format!("{}:{}: {e}", o.uid, o.gid)),
            None => Ok(()),
        }
    }

    /// The same for a staged file, by its place.
    fn finish_staged(&self, staged: &Place, mode: u32, mtime: Mtime) -> Result<(), String> {
        let f = staged
            .open(libc::O_RDONLY | libc::O_NONBLOCK, 0)
            .map_err(|e| format!("cannot set mode: {e}"))?;
        self.finish_file(&f, mode, mtime)
    }

    fn set_file_mode(
        &mut self,
        at: &Place,
        rel: &RelPath,
        digest: Digest,
        mode: u32,
    ) -> Result<(), String> {
        // Through a descriptor opened without following links: a file swapped for a symlink
        // since the check is never chmod-ed (nor is anything it points to).
        let f = at
            .open(libc::O_RDONLY | libc::O_NONBLOCK, 0)
            .map_err(|e| format!("cannot open for chmod: {e}"))?;
        let m = f.metadata().map_err(|e| e.to_string())?;
        if !m.is_file() {
            return Err(CHANGED.into());
        }
        if !self.caps.modes {
            // Nothing to set: the new mode is recorded (`LocalTree::keep_modes`).
            return Ok(());
        }
        chmod_kept(
            &f,
            self.new_mode(mode, Some(m.mode())),
            self.meta.permissions == Permissions::Full,
        )?;
        self.remember_stat(rel, &m_after(&f, m), digest);
        Ok(())
    }

    fn replace_file(
        &mut self,
        at: &Place,
        rel: &RelPath,
        old: Digest,
        new: Option<&Entry>,
        w: &mut Work,
    ) -> Result<(), String> {
        let Some(Entry::File {
            digest,
            mode,
            mtime,
            ..
        }) = new
        else {
            return Err("internal: not a file".into());
        };
        let Some(seen) = self.state.cache.get(rel.as_str()).map(|c| c.stat) else {
            return Err(CHANGED.into());
        };
        let staged = self
            .content(digest, true)
            .map_err(|e| format!("content not available: {e}"))?;
        let staged = self.near(staged, at)?;
        // Our staged file's identity, to tell it apart from anyone else's after swaps.
        let ours = match staged.lstat() {
            Ok(m) => (m.dev(), m.ino()),
            Err(e) => return Err(format!("content not available: {e}")),
        };
        let is_ours = |p: &Place| p.lstat().is_ok_and(|m| (m.dev(), m.ino()) == ours);
        if let Err(e) = self.finish_staged(&staged, self.new_mode(*mode, Some(seen.mode)), *mtime) {
            let _ = staged.unlink();
            return Err(e);
        }
        // Swap rather than overwrite, then look at what came out: if a write landed after the
        // check, swap back so the person's version is at its path again.
        match beneath::exchange(&staged, at) {
            Ok(()) => {
                // `staged` now holds what was at the path.
                if !staged.lstat().is_ok_and(|m| same_file(&seen, &m)) {
                    if !is_ours(at) {
                        // Saved over again after the swap: that newest version stays; keep the
                        // one that came out.
                        return Err(self.park(rel, &staged, w));
                    }
                    return Err(match beneath::exchange(&staged, at) {
                        Ok(()) if is_ours(&staged) => {
                            let _ = staged.unlink();
                            CHANGED.into()
                        }
                        // Whatever is in `staged` now is not ours: keep it.
                        Ok(()) | Err(_) => self.park(rel, &staged, w),
                    });
                }
                if let Err(e) = self.keep_swapped(rel, old, &seen, &staged, w) {
                    // No copy could be kept: put the old version back.
                    return Err(match beneath::exchange(&staged, at) {
                        Ok(()) if is_ours(&staged) => {
                            let _ = staged.unlink();
                            e
                        }
                        Ok(()) | Err(_) => self.park(rel, &staged, w),
                    });
                }
            }
            Err(e) if beneath::is_unsupported(&e) => {
                // No RENAME_EXCHANGE (NFS, many FUSE filesystems): move the old file aside and
                // check it, then place ours where nothing is. The path is briefly empty; no
                // write is lost.
                let result = self.replace_by_moving_aside(at, rel, old, &seen, &staged, w);
                if is_ours(&staged) {
                    let _ = staged.unlink();
                }
                result?;
            }
            Err(e) => {
                let _ = staged.unlink();
                return Err(format!("cannot rename into place: {e}"));
            }
        }
        self.remember_file(at, rel, *digest);
        Ok(())
    }

    /// Keeps the version a swap took out of `rel` (now at `out`): moved whole (a rename, no
    /// copy) into the backup area when its content is not in the archive (a backup, listed),
    /// else into the area of replaced versions, since a program that had it open may still
    /// write to it; watched for that for a while (see [`Swapped`]). Where it cannot be moved
    /// (another filesystem), the old rule: a copy if needed, then it is removed.
    fn keep_swapped(
        &mut self,
        rel: &RelPath,
        old: Digest,
        seen: &Stat,
        out: &Place,
        w: &mut Work,
    ) -> Result<(), String> {
        let needed = self.backup.contains(&old);
        let area = if needed {
            self.backup_dir
        } else {
            self.replaced_dir
        };
        let moved = place_under(area, rel)
            .and_then(|(dest, to)| beneath::rename_noreplace(out, &to).map(|()| dest));
        match moved {
            Ok(dest) => {
                // Compared with what the scan saw (checked right after the swap): a write
                // that landed since, even before this move, is a late one.
                self.swapped.push(Swapped {
                    path: rel.clone(),
                    kept: dest.clone(),
                    stat: *seen,
                    at: Instant::now(),
                });
                if needed {
                    w.backups.push((rel.clone(), dest));
                }
                Ok(())
            }
            Err(_) => {
                self.backup(rel, old, out, w)?;
                let _ = out.unlink();
                Ok(())
            }
        }
    }

    fn replace_by_moving_aside(
        &mut self,
        at: &Place,
        rel: &RelPath,
        old: Digest,
        seen: &Stat,
        staged: &Place,
        w: &mut Work,
    ) -> Result<(), String> {
        let aside = self.aside_for(at)?;
        if let Err(e) = beneath::rename(at, &aside, RenameHow::Plain) {
            return Err(if e.kind() == io::ErrorKind::NotFound {
                CHANGED.into()
            } else {
                format!("cannot move the old version aside: {e}")
            });
        }
        if !aside.lstat().is_ok_and(|m| same_file(seen, &m)) {
            return Err(self.restore_aside(at, rel, &aside, w));
        }
        if let Err(e) = beneath::rename_noreplace(staged, at) {
            // Something appeared at the path meanwhile: it stays. The old version we moved aside
            // is the one the scan saw; put it back if it can go, else keep it.
            let msg = self.restore_aside(at, rel, &aside, w);
            return Err(format!("cannot place the new version ({e}); {msg}"));
        }
        // Kept as a swap's would be (a backup, or a replaced version watched for late writes:
        // a program that opened it before the move may still append to it), never unlinked
        // unseen.
        if let Err(e) = self.keep_swapped(rel, old, seen, &aside, w) {
            let msg = self.park(rel, &aside, w);
            w.errors.push((rel.clone(), format!("{e} ({msg})")));
        }
        Ok(())
    }

    /// Records a file ferry just wrote in the stat cache, so the next scan need not read it
    /// (unless it was written too recently for its timestamps to reveal a later same-size
    /// write: then, like any racy entry, it is hashed again).
    fn remember_file(&mut self, at: &Place, rel: &RelPath, digest: Digest) {
        if let Ok(m) = at.lstat() {
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
    fn remove_file(
        &mut self,
        at: &Place,
        rel: &RelPath,
        digest: Digest,
        w: &mut Work,
    ) -> Result<(), String> {
        let Some(seen) = self.state.cache.get(rel.as_str()).map(|c| c.stat) else {
            return Err(CHANGED.into());
        };
        let aside = self.aside_for(at)?;
        match beneath::rename(at, &aside, RenameHow::Plain) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(CHANGED.into()),
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                // A mount nested in the root (a volume inside a bind mount): staging is on
                // another filesystem. Check, keep a copy if needed, unlink.
                if !at.lstat().is_ok_and(|m| same_file(&seen, &m)) {
                    return Err(CHANGED.into());
                }
                self.backup(rel, digest, at, w)?;
                at.unlink().map_err(|e| format!("cannot remove: {e}"))?;
                self.state.cache.remove(rel.as_str());
                return Ok(());
            }
            Err(e) => return Err(format!("cannot remove: {e}")),
        }
        if !aside.lstat().is_ok_and(|m| same_file(&seen, &m)) {
            return Err(self.restore_aside(at, rel, &aside, w));
        }
        if let Err(e) = self.backup(rel, digest, &aside, w) {
            let msg = self.restore_aside(at, rel, &aside, w);
            return Err(format!("{e} ({msg})"));
        }
        let _ = aside.unlink();
        self.state.cache.remove(rel.as_str());
        Ok(())
    }

    /// Removes the symlink at `rel`: moved aside, checked to still be the link the scan saw
    /// (not a file saved there since), then unlinked; anything else goes back.
    fn remove_symlink(
        &mut self,
        at: &Place,
        rel: &RelPath,
        target: &str,
        w: &mut Work,
    ) -> Result<(), String> {
        let aside = self.aside_for(at)?;
        if let Err(e) = beneath::rename(at, &aside, RenameHow::Plain) {
            return Err(if e.kind() == io::ErrorKind::NotFound {
                CHANGED.into()
            } else {
                format!("cannot remove: {e}")
            });
        }
        let same = aside.lstat().is_ok_and(|m| m.file_type().is_symlink())
            && aside.read_link().ok().as_deref().and_then(Path::to_str) == Some(target);
        if !same {
            return Err(self.restore_aside(at, rel, &aside, w));
        }
        let _ = aside.unlink();
        Ok(())
    }

    /// Removes `old` at `rel`, deepest first. Returns what is left (`None` when all is gone).
    fn remove(&mut self, at: &Place, rel: &RelPath, old: &Entry, w: &mut Work) -> Option<Entry> {
        if let Err(e) = self.verify(at, rel, Some(old)) {
            w.errors.push((rel.clone(), e));
            return Some(old.clone());
        }
        match old {
            Entry::File { digest, .. } => match self.remove_file(at, rel, *digest, w) {
                Ok(()) => None,
                Err(e) => {
                    w.errors.push((rel.clone(), e));
                    Some(old.clone())
                }
            },
            Entry::Symlink { target } => match self.remove_symlink(at, rel, target, w) {
                Ok(()) => None,
                Err(e) => {
                    w.errors.push((rel.clone(), e));
                    Some(old.clone())
                }
            },
            Entry::Directory(children) => {
                let mut left = std::collections::BTreeMap::new();
                let inside = match at.as_dir() {
                    Ok(d) => d,
                    Err(e) => {
                        let why = if is_parent_error(&e) {
                            CHANGED.to_owned()
                        } else {
                            format!("cannot open directory: {e}")
                        };
                        w.errors.push((rel.clone(), why));
                        return Some(old.clone());
                    }
                };
                for (name, child) in children {
                    let Ok(crel) = rel.join(name) else { continue };
                    let Ok(cat) = inside.place(name) else {
                        continue;
                    };
                    if let Some(l) = self.remove(&cat, &crel, child, w) {
                        left.insert(name.clone(), l);
                    }
                }
                if !left.is_empty() {
                    return Some(Entry::Directory(ferry_core::Dir {
                        children: left,
                        mode: children.mode,
                    }));
                }
                match at.rmdir() {
                    Ok(()) => {
                        self.state.dirs.remove(rel.as_str());
                        self.hook.dir_removed(at.shown());
                        None
                    }
                    Err(e) => {
                        let why = if e.raw_os_error() == Some(libc::ENOTEMPTY) {
                            "directory still holds files ferry does not sync (ignored or unreadable); kept".to_owned()
                        } else {
                            format!("cannot remove directory: {e}")
                        };
                        w.errors.push((rel.clone(), why));
                        Some(Entry::Directory(ferry_core::Dir::bare(children.mode)))
                    }
                }
            }
            Entry::Problem(_) => Some(old.clone()),
        }
    }

    /// Creates `new` at `rel`, where nothing may exist yet. Returns what now exists.
    fn create(&mut self, at: &Place, rel: &RelPath, new: &Entry, w: &mut Work) -> Option<Entry> {
        let fail = |w: &mut Work, e: String| {
            w.errors.push((rel.clone(), e));
            None
        };
        match new {
            Entry::File {
                digest,
                mode,
                mtime,
                ..
            } => {
                if let Some(done) = self.create_direct(at, rel, digest, (*mode, *mtime)) {
                    return match done {
                        Ok(()) => Some(new.clone()),
                        Err(e) => fail(w, e),
                    };
                }
                let staged = match self.content(digest, false) {
                    Ok(p) => p,
                    Err(e) => return fail(w, format!("content not available: {e}")),
                };
                let staged = match self.near(staged, at) {
                    Ok(p) => p,
                    Err(e) => return fail(w, e),
                };
                // Staged files are 0600 until they get their mode here.
                if let Err(e) = self.finish_staged(&staged, self.new_mode(*mode, None), *mtime) {
                    let _ = staged.unlink();
                    return fail(w, e);
                }
                // Never replaces anything: a file that appeared since the scan wins.
                match beneath::rename_noreplace(&staged, at) {
                    Ok(()) => {
                        self.remember_file(at, rel, *digest);
                        Some(new.clone())
                    }
                    Err(e) => {
                        let _ = staged.unlink();
                        if e.kind() == io::ErrorKind::AlreadyExists {
                            fail(
                                w,
                                self.verify(at, rel, None)
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
            // could lead outside the root is never created (unless links are synced raw: then
            // they are data, created as they are and, like every link, never followed).
            Entry::Symlink { target }
                if self.meta.symlinks != Symlinks::Raw && !link_stays_inside(rel, target) =>
            {
                fail(
                    w,
                    format!(
                        "refusing to create a symlink to '{target}': it may lead outside the root"
                    ),
                )
            }
            Entry::Symlink { target }
                if self.meta.symlinks != Symlinks::Raw && leads_outside(self.root, rel, target) =>
            {
                fail(
                    w,
                    format!(
                        "refusing to create a symlink to '{target}': through links already on \
                         this side it would lead outside the root"
                    ),
                )
            }
            Entry::Symlink { .. } if !self.caps.symlinks => {
                fail(w, "this filesystem cannot hold symlinks; not placed".into())
            }
            Entry::Symlink { target } => match at.symlink(target) {
                Ok(()) => match self.give(at) {
                    Ok(()) => Some(new.clone()),
                    Err(e) => fail(w, format!("cannot give the link to {e}")),
                },
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => fail(
                    w,
                    self.verify(at, rel, None)
                        .err()
                        .unwrap_or_else(|| e.to_string()),
                ),
                Err(e) => fail(w, format!("cannot create symlink: {e}")),
            },
            Entry::Directory(children) => {
                // Private while its children are written (never more readable than its
                // source), its own bits once they are (a read-only directory can be filled).
                let full = self.meta.permissions == Permissions::Full;
                match at.mkdir(if full { 0o700 } else { 0o755 }) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        return fail(
                            w,
                            self.verify(at, rel, None)
                                .err()
                                .unwrap_or_else(|| e.to_string()),
                        );
                    }
                    Err(e) => return fail(w, format!("cannot create directory: {e}")),
                }
                if let Err(e) = self.give(at) {
                    w.errors
                        .push((rel.clone(), format!("cannot give the directory to {e}")));
                }
                if let Ok(m) = at.lstat() {
                    self.state.dirs.insert(rel.as_str().to_owned(), m.ino());
                }
                self.hook.dir_added(at.shown());
                let mut made = std::collections::BTreeMap::new();
                let inside = match at.as_dir() {
                    Ok(d) => d,
                    Err(e) => {
                        w.errors
                            .push((rel.clone(), format!("cannot open the new directory: {e}")));
                        return Some(Entry::Directory(ferry_core::Dir {
                            children: made,
                            mode: if full { 0o700 } else { ferry_core::DIR_MODE },
                        }));
                    }
                };
                for (name, child) in children {
                    let Ok(crel) = rel.join(name) else { continue };
                    let cat = match inside.place(name) {
                        Ok(p) => p,
                        Err(e) => {
                            w.errors.push((crel, format!("bad name: {e}")));
                            continue;
                        }
                    };
                    if let Some(e) = self.create(&cat, &crel, child, w) {
                        made.insert(name.clone(), e);
                    }
                }
                let mut made = ferry_core::Dir::from(made);
                if full && self.caps.modes {
                    match set_dir_mode(at, children.mode) {
                        Ok(()) => made.mode = children.mode,
                        Err(e) => {
                            made.mode = 0o700;
                            w.errors.push((rel.clone(), e));
                        }
                    }
                } else if !self.caps.modes {
                    // Recorded as the source's (`LocalTree::keep_modes`): the disk shows its own.
                    made.mode = children.mode;
                }
                Some(Entry::Directory(made))
            }
            Entry::Problem(_) => None,
        }
    }
}

/// Sets the permission bits of the directory at `at` through a descriptor (no link followed).
fn set_dir_mode(at: &Place, mode: u32) -> Result<(), String> {
    let f = at
        .open(libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NONBLOCK, 0)
        .map_err(|e| format!("cannot open the directory for chmod: {e}"))?;
    chmod_kept(&f, mode & PERMISSION_BITS, true)
}

/// Sets `f`'s permission bits; with `check`, makes sure the filesystem kept them. One that
/// cannot (vfat, some network and FUSE filesystems) would show its own bits at the next scan,
/// which would then travel back as a change: refused instead, saying what to do.
fn chmod_kept(f: &fs::File, mode: u32, check: bool) -> Result<(), String> {
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod failed: {e}"))?;
    if check {
        let kept = f
            .metadata()
            .map_err(|e| format!("cannot check the mode: {e}"))?
            .mode()
            & PERMISSION_BITS;
        if kept != mode & PERMISSION_BITS {
            return Err(format!(
                "this filesystem does not keep permission bits (set {:o}, it shows {kept:o}); \
                 --permissions exec syncs only the executable bit",
                mode & PERMISSION_BITS
            ));
        }
    }
    Ok(())
}

/// A modification time in nanoseconds since the epoch as a `SystemTime`.
fn system_time(ns: i64) -> std::time::SystemTime {
    let epoch = std::time::UNIX_EPOCH;
    let d = Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        epoch.checked_add(d).unwrap_or(epoch)
    } else {
        epoch.checked_sub(d).unwrap_or(epoch)
    }
}

/// `rel`'s place under `area` (a backup folder of ferry's own), its directory created.
fn place_under(area: &Path, rel: &RelPath) -> io::Result<(PathBuf, Place)> {
    let dest = area.join(rel.as_str());
    if let Some(p) = dest.parent() {
        fs::create_dir_all(p)?;
    }
    let place = Place::abs(&dest)?;
    Ok((dest, place))
}

/// The metadata of `f` after a chmod (the one read before, if it cannot be read again).
fn m_after(f: &fs::File, before: fs::Metadata) -> fs::Metadata {
    f.metadata().unwrap_or(before)
}

/// True if the kernel, resolving `target` from the link's directory without leaving `root`
/// (`openat2` with `RESOLVE_BENEATH`), finds that it leaves: a link that passed the lexical rule
/// can still climb out through a link on this side that ferry does not sync (one that escapes,
/// or an ignored one). A target that does not exist yet resolves nowhere and is fine; kernels
/// without `openat2` (before 5.6) keep the lexical rule alone.
fn leads_outside(root: &Root, link: &RelPath, target: &str) -> bool {
    use std::ffi::CString;
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
    match super::sys::openat2(
        root.raw_fd(),
        &c,
        super::sys::O_STAT & !libc::O_NOFOLLOW,
        false,
    ) {
        Ok(_) => false,
        Err(e) => e.raw_os_error() == Some(libc::EXDEV),
    }
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
