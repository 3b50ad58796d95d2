//! Confined filesystem primitives: every write, link, rename and removal ferry makes inside a
//! root names its target as (a directory descriptor, one name). The descriptor is opened
//! beneath the root without following any symlink (`openat2` with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS`, or a walk one component at a time with `O_NOFOLLOW` where `openat2`
//! is missing), and the final name is never followed either. So no directory swapped for a
//! symlink, at any moment, can redirect a write outside the root: the descriptor stays on the
//! directory it opened, wherever that directory is moved.
//!
//! Paths outside any root (staging, the backup area: ferry's own directories) are
//! [`Place::abs`]: the same operations relative to the current directory.

use std::ffi::{CStr, CString};
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::OnceLock;

use ferry_core::RelPath;

use super::sys::{self, RenameHow};

/// A root directory, held open: the base every [`Place`] inside it is resolved from.
pub struct Root {
    fd: Rc<OwnedFd>,
    path: PathBuf,
}

/// One name in one directory: where an operation happens.
#[derive(Clone)]
pub struct Place {
    /// The directory (`None`: the current directory, for absolute paths of ferry's own).
    dir: Option<Rc<OwnedFd>>,
    name: CString,
    /// The path a person would recognise, for messages.
    shown: PathBuf,
}

fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Opens `name` in `dir` with `flags` (plus `O_CLOEXEC`).
fn open_at(dir: RawFd, name: &CStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    // SAFETY: a valid descriptor (or AT_FDCWD) and a NUL-terminated name.
    // (`mode_t` is 16 bits on macOS: widened, as a variadic argument must be.)
    let fd = unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            libc::c_uint::from(mode),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just returned to us and is owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Set by tests (`FERRY_TEST_NO_OPENAT2=1`) to run the descriptor walk kernels before 5.6 use.
fn openat2_disabled() -> bool {
    static OFF: OnceLock<bool> = OnceLock::new();
    *OFF.get_or_init(|| std::env::var_os("FERRY_TEST_NO_OPENAT2").is_some_and(|v| v == "1"))
}

/// Opens the directory `rel` beneath `root` (`O_PATH`), following no symlink on the way.
fn open_dir_beneath(root: RawFd, rel: &str) -> io::Result<OwnedFd> {
    if rel.is_empty() {
        return open_at(root, c".", sys::O_DIR_REF, 0);
    }
    let c = cstr(rel.as_bytes())?;
    if !openat2_disabled() {
        match sys::openat2(root, &c, sys::O_DIR_REF, true) {
            Ok(fd) => return Ok(fd),
            // Kernels before 5.6 and other systems (ENOSYS), or a seccomp filter that does
            // not know the call (EPERM): walk instead. Anything else is the answer.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {}
            Err(e) => return Err(e),
        }
    }
    // One component at a time, never following a link: O_NOFOLLOW with O_PATH opens a link
    // itself, and O_DIRECTORY then refuses it (ENOTDIR; elsewhere O_NOFOLLOW gives ELOOP).
    let mut cur = open_at(root, c".", sys::O_DIR_REF, 0)?;
    for comp in rel.split('/') {
        let name = cstr(comp.as_bytes())?;
        cur = open_at(cur.as_raw_fd(), &name, sys::O_DIR_REF | libc::O_NOFOLLOW, 0)?;
    }
    Ok(cur)
}

/// True for the errors a confined open gives when a parent is not a plain directory (a
/// symlink, a file, gone).
pub fn is_parent_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ELOOP | libc::ENOTDIR | libc::EXDEV | libc::ENOENT)
    )
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        let c = cstr(path.as_os_str().as_bytes())?;
        let fd = open_at(libc::AT_FDCWD, &c, sys::O_DIR_REF, 0)?;
        Ok(Root {
            fd: Rc::new(fd),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The place of `rel` (not the root itself): its parent directory opened beneath the root.
    pub fn place(&self, rel: &RelPath) -> io::Result<Place> {
        let parent = rel
            .parent()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        let dir = if parent.is_empty() {
            self.fd.clone()
        } else {
            Rc::new(open_dir_beneath(self.fd.as_raw_fd(), &parent)?)
        };
        let name = rel.name().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "the root itself has no place")
        })?;
        Ok(Place {
            dir: Some(dir),
            name: cstr(name.as_bytes())?,
            shown: self.path.join(rel.as_str()),
        })
    }
}

impl Root {
    /// The directory `rel` beneath the root (the root itself when empty), held open; no
    /// symlink is followed on the way or at its name.
    pub fn dir(&self, rel: &RelPath) -> io::Result<DirAt> {
        let fd = if rel.is_root() {
            self.fd.clone()
        } else {
            Rc::new(open_dir_beneath(self.fd.as_raw_fd(), rel.as_str())?)
        };
        Ok(DirAt {
            fd,
            shown: self.path.join(rel.as_str()),
        })
    }
}

/// A directory held open, to name the places inside it.
pub struct DirAt {
    fd: Rc<OwnedFd>,
    shown: PathBuf,
}

impl DirAt {
    /// The names in this directory (in no order; `.` and `..` left out), read from the
    /// descriptor held, never by path.
    pub fn names(&self) -> io::Result<Vec<std::ffi::OsString>> {
        sys::dir_names(self.fd.as_raw_fd())
    }

    /// `name` in this directory.
    pub fn place(&self, name: &str) -> io::Result<Place> {
        Ok(Place {
            dir: Some(self.fd.clone()),
            name: cstr(name.as_bytes())?,
            shown: self.shown.join(name),
        })
    }
}

impl Place {
    /// An absolute path of ferry's own (staging, backups): outside every synced root.
    pub fn abs(path: &Path) -> io::Result<Place> {
        Ok(Place {
            dir: None,
            name: cstr(path.as_os_str().as_bytes())?,
            shown: path.to_path_buf(),
        })
    }

    fn fd(&self) -> RawFd {
        self.dir.as_ref().map_or(libc::AT_FDCWD, |d| d.as_raw_fd())
    }

    /// The path for messages.
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    /// Another name in the same directory.
    pub fn sibling(&self, name: &str) -> io::Result<Place> {
        let shown = self.shown.with_file_name(name);
        Ok(match &self.dir {
            Some(d) => Place {
                dir: Some(d.clone()),
                name: cstr(name.as_bytes())?,
                shown,
            },
            None => Place::abs(&shown)?,
        })
    }

    /// This place, which must be a directory, opened (without following a link) to name the
    /// places inside it.
    pub fn as_dir(&self) -> io::Result<DirAt> {
        let dir = open_at(self.fd(), &self.name, sys::O_DIR_REF | libc::O_NOFOLLOW, 0)?;
        Ok(DirAt {
            fd: Rc::new(dir),
            shown: self.shown.clone(),
        })
    }

    /// The metadata of what is here, not following a symlink.
    pub fn lstat(&self) -> io::Result<fs::Metadata> {
        let fd = open_at(self.fd(), &self.name, sys::O_STAT, 0)?;
        File::from(fd).metadata()
    }

    /// Like [`Self::lstat`], with "nothing here" as `None`.
    pub fn lstat_opt(&self) -> io::Result<Option<fs::Metadata>> {
        match self.lstat() {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The device of the directory this place is in.
    pub fn dir_dev(&self) -> io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        match &self.dir {
            Some(d) => {
                let dup = d.try_clone()?;
                Ok(File::from(dup).metadata()?.dev())
            }
            None => Ok(fs::metadata(self.shown.parent().unwrap_or(Path::new("/")))?.dev()),
        }
    }

    pub fn read_link(&self) -> io::Result<PathBuf> {
        let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
        // SAFETY: a valid descriptor, a NUL-terminated name and a buffer of the length given.
        let n = unsafe {
            libc::readlinkat(
                self.fd(),
                self.name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.truncate(n as usize);
        Ok(PathBuf::from(std::ffi::OsStr::from_bytes(&buf)))
    }

    /// Opens what is here, never following a symlink at this name (`O_NOFOLLOW`).
    pub fn open(&self, flags: libc::c_int, mode: libc::mode_t) -> io::Result<File> {
        open_at(self.fd(), &self.name, flags | libc::O_NOFOLLOW, mode).map(File::from)
    }

    /// Creates a new file here (never an existing one, never through a link), write-only.
    pub fn create_new(&self, mode: libc::mode_t) -> io::Result<File> {
        self.open(libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, mode)
    }

    /// An unnamed file (`O_TMPFILE`) in this place's directory, read-write; `EOPNOTSUPP` where
    /// the system has none (see `sys::open_unnamed`).
    pub fn open_unnamed_beside(&self, mode: libc::mode_t) -> io::Result<File> {
        match &self.dir {
            Some(d) => sys::open_unnamed(d.as_raw_fd(), c".", mode).map(File::from),
            None => {
                let parent = self.shown.parent().unwrap_or(Path::new("/"));
                let c = cstr(parent.as_os_str().as_bytes())?;
                sys::open_unnamed(libc::AT_FDCWD, &c, mode).map(File::from)
            }
        }
    }

    pub fn mkdir(&self, mode: libc::mode_t) -> io::Result<()> {
        // SAFETY: a valid descriptor and a NUL-terminated name.
        check(unsafe { libc::mkdirat(self.fd(), self.name.as_ptr(), mode) })
    }

    pub fn rmdir(&self) -> io::Result<()> {
        // SAFETY: as above.
        check(unsafe { libc::unlinkat(self.fd(), self.name.as_ptr(), libc::AT_REMOVEDIR) })
    }

    pub fn unlink(&self) -> io::Result<()> {
        // SAFETY: as above.
        check(unsafe { libc::unlinkat(self.fd(), self.name.as_ptr(), 0) })
    }

    /// Gives what is here (a link itself, never what it points to) to `uid:gid`.
    pub fn lchown(&self, uid: u32, gid: u32) -> io::Result<()> {
        // SAFETY: a valid descriptor and a NUL-terminated name.
        check(unsafe {
            libc::fchownat(
                self.fd(),
                self.name.as_ptr(),
                uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
    }

    pub fn symlink(&self, target: &str) -> io::Result<()> {
        let t = cstr(target.as_bytes())?;
        // SAFETY: two NUL-terminated strings and a valid descriptor.
        check(unsafe { libc::symlinkat(t.as_ptr(), self.fd(), self.name.as_ptr()) })
    }
}

/// Renames `from` to `to` the way `how` says (see `sys::rename_at`).
pub fn rename(from: &Place, to: &Place, how: RenameHow) -> io::Result<()> {
    sys::rename_at(from.fd(), &from.name, to.fd(), &to.name, how)
}

/// Atomically swaps `a` and `b`.
pub fn exchange(a: &Place, b: &Place) -> io::Result<()> {
    rename(a, b, RenameHow::Exchange)
}

/// True for the errors of a call (or a form of it) the system or filesystem does not have.
pub fn is_unsupported(e: &io::Error) -> bool {
    // ENOTSUP and EOPNOTSUPP are one number on Linux, two on macOS.
    e.raw_os_error().is_some_and(|c| {
        matches!(c, libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) || c == libc::ENOTSUP
    })
}

/// Moves `from` to `to` unless something exists at `to` (then `AlreadyExists`): one atomic
/// no-replace rename (`renameat2(RENAME_NOREPLACE)`, `renameatx_np(RENAME_EXCL)`), or link +
/// unlink where the filesystem lacks it, or, where it has no hard links either (exFAT, FAT),
/// a look then a plain rename: a file created at `to` in between those two would be replaced,
/// a window of microseconds on filesystems that offer nothing better.
pub fn rename_noreplace(from: &Place, to: &Place) -> io::Result<()> {
    match rename(from, to, RenameHow::NoReplace) {
        Err(e) if is_unsupported(&e) => {}
        r => return r,
    }
    // link() refuses to replace anything too.
    match hard_link(from, to) {
        Ok(()) => {
            let _ = from.unlink();
            return Ok(());
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
        Err(e)
            if is_unsupported(&e)
                || matches!(e.raw_os_error(), Some(libc::EPERM | libc::EMLINK)) => {}
        Err(e) => return Err(e),
    }
    if to.lstat_opt()?.is_some() {
        return Err(io::Error::from_raw_os_error(libc::EEXIST));
    }
    rename(from, to, RenameHow::Plain)
}

/// A hard link `to` -> the file at `from` (a symlink at `from` is linked itself, not followed).
pub fn hard_link(from: &Place, to: &Place) -> io::Result<()> {
    // SAFETY: valid descriptors and NUL-terminated names.
    check(unsafe { libc::linkat(from.fd(), from.name.as_ptr(), to.fd(), to.name.as_ptr(), 0) })
}

/// Gives the open unnamed file `f` the name `to` (never replacing anything): through
/// `AT_EMPTY_PATH` when `empty_path` (needs `CAP_DAC_READ_SEARCH`), else `/proc/self/fd`.
pub fn link_open_file(f: &File, to: &Place, empty_path: bool) -> io::Result<()> {
    sys::link_unnamed(f.as_raw_fd(), to.fd(), &to.name, empty_path)
}

/// Copies the file at `from` (not followed if a link) to a new file `to`; `to` is removed
/// again if the copy fails.
pub fn copy_new(from: &Place, to: &Place) -> io::Result<u64> {
    let mut src = from.open(libc::O_RDONLY | libc::O_NONBLOCK, 0)?;
    let mut dst = to.create_new(0o600)?;
    let r = io::copy(&mut src, &mut dst).and_then(|n| dst.sync_data().map(|()| n));
    if r.is_err() {
        let _ = to.unlink();
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parent_swapped_for_a_symlink_is_refused_and_a_held_one_stays_put() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        fs::create_dir_all(root.join("b/d")).expect("mkdir");
        fs::create_dir(&outside).expect("mkdir");
        let r = Root::open(&root).expect("root");
        let rel = RelPath::new("b/d/f").expect("rel");
        let held = r.place(&rel).expect("place");
        // Swap the directory for a link to the outside.
        fs::rename(root.join("b/d"), root.join("b/d.moved")).expect("mv");
        std::os::unix::fs::symlink(&outside, root.join("b/d")).expect("ln");
        let e = r.place(&rel).err().expect("a link in the path is refused");
        assert!(is_parent_error(&e), "{e}");
        // The place opened before the swap writes into the moved directory, not the outside.
        let mut f = held.create_new(0o644).expect("create");
        io::Write::write_all(&mut f, b"x").expect("write");
        assert!(root.join("b/d.moved/f").exists());
        assert_eq!(fs::read_dir(&outside).expect("ls").count(), 0);
    }

    #[test]
    fn the_final_name_is_never_followed() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("root");
        fs::create_dir(&root).expect("mkdir");
        let outside = t.path().join("secret");
        fs::write(&outside, "s").expect("write");
        std::os::unix::fs::symlink(&outside, root.join("l")).expect("ln");
        let r = Root::open(&root).expect("root");
        let p = r.place(&RelPath::new("l").expect("rel")).expect("place");
        assert!(p.open(libc::O_WRONLY, 0).is_err());
        assert!(p.lstat().expect("lstat").file_type().is_symlink());
        assert_eq!(p.read_link().expect("readlink"), outside);
        p.unlink().expect("unlink removes the link");
        assert_eq!(fs::read(&outside).expect("read"), b"s");
    }
}
