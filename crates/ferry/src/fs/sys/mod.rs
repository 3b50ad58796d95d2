//! The platform seam of the host side: every system call whose form differs between Linux and
//! macOS, behind one small API. `linux.rs` (renameat2, O_TMPFILE, openat2, O_PATH, /proc) and
//! `macos.rs` (renameatx_np, O_SEARCH/O_SYMLINK, getpeereid) are the native ways; `portable.rs`
//! is what any other Unix gets, and what Linux runs with `FERRY_TEST_PORTABLE=1` so the tests
//! exercise the fallbacks a Mac or a plain filesystem takes (DEVELOPERS.md).

use std::ffi::{CStr, OsString};
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::OnceLock;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as native;
#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
use macos as native;
mod portable;
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
use portable as native;

pub use native::{O_DIR_REF, O_STAT};

/// True when the portable fallbacks are forced on (`FERRY_TEST_PORTABLE=1`, for tests).
pub fn portable_forced() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("FERRY_TEST_PORTABLE").is_some_and(|v| v == "1"))
}

/// What a rename may do at its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenameHow {
    /// Replaces whatever is there (`rename`).
    Plain,
    /// Fails with `EEXIST` if anything is there, atomically.
    NoReplace,
    /// Swaps the two names atomically (both must exist).
    Exchange,
}

/// The error a system without the wanted form of a call gives (what callers fall back on).
pub fn unsupported() -> io::Error {
    io::Error::from_raw_os_error(libc::EOPNOTSUPP)
}

/// Renames `from` (in `from_dir`) to `to` (in `to_dir`) the way `how` says. Where the system
/// or the filesystem cannot do `NoReplace` or `Exchange` atomically the error is `EINVAL`,
/// `ENOSYS`, `ENOTSUP` or `EOPNOTSUPP`: callers fall back on their own.
pub fn rename_at(
    from_dir: RawFd,
    from: &CStr,
    to_dir: RawFd,
    to: &CStr,
    how: RenameHow,
) -> io::Result<()> {
    if portable_forced() {
        return portable::rename_at(from_dir, from, to_dir, to, how);
    }
    native::rename_at(from_dir, from, to_dir, to, how)
}

/// An unnamed file in the directory `dir` (Linux's `O_TMPFILE`), read-write; `EOPNOTSUPP`
/// where there is no such thing (new files are then staged under a name and renamed).
pub fn open_unnamed(dir: RawFd, path: &CStr, mode: libc::mode_t) -> io::Result<OwnedFd> {
    if portable_forced() {
        return Err(unsupported());
    }
    native::open_unnamed(dir, path, mode)
}

/// Gives the open unnamed file `fd` the name `to` in `to_dir`, never replacing anything.
pub fn link_unnamed(fd: RawFd, to_dir: RawFd, to: &CStr, empty_path: bool) -> io::Result<()> {
    native::link_unnamed(fd, to_dir, to, empty_path)
}

/// `openat2(dir, path, flags, resolve)` on Linux 5.6 and later; `ENOSYS` elsewhere (callers
/// then walk one component at a time). `beneath` asks for `RESOLVE_BENEATH`, `no_symlinks` for
/// `RESOLVE_NO_SYMLINKS` (else only magic links are refused).
pub fn openat2(
    dir: RawFd,
    path: &CStr,
    flags: libc::c_int,
    no_symlinks: bool,
) -> io::Result<OwnedFd> {
    if portable_forced() {
        return Err(io::Error::from_raw_os_error(libc::ENOSYS));
    }
    native::openat2(dir, path, flags, no_symlinks)
}

/// The names in the open directory `fd` (not `.` nor `..`), read from the descriptor.
pub fn dir_names(fd: RawFd) -> io::Result<Vec<OsString>> {
    if portable_forced() {
        return portable::dir_names(fd);
    }
    native::dir_names(fd)
}

/// The uid of the process at the other end of the Unix socket `fd`.
pub fn peer_uid(fd: RawFd) -> io::Result<u32> {
    native::peer_uid(fd)
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What a filesystem can hold, found by trying in a directory of ferry's own on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsCaps {
    /// Permission bits set are the bits read back (not so on exFAT, FAT, some FUSE and
    /// network filesystems).
    pub modes: bool,
    pub symlinks: bool,
    pub hard_links: bool,
}

impl Default for FsCaps {
    fn default() -> Self {
        FsCaps {
            modes: true,
            symlinks: true,
            hard_links: true,
        }
    }
}

impl FsCaps {
    /// What this filesystem cannot keep, for the one line that says so (`None`: nothing).
    pub fn lacking(&self) -> Option<String> {
        let mut no = Vec::new();
        if !self.modes {
            no.push("permission bits");
        }
        if !self.symlinks {
            no.push("symlinks");
        }
        if !self.hard_links {
            no.push("hard links");
        }
        (!no.is_empty()).then(|| no.join(", "))
    }
}

/// Tries, in `dir` (which must exist), what the filesystem keeps: a file's mode, a symlink,
/// a hard link. Leaves nothing behind. Anything it cannot try counts as kept (the usual
/// errors then say what went wrong).
pub fn probe(dir: &std::path::Path) -> FsCaps {
    use std::os::unix::fs::PermissionsExt;
    let mut caps = FsCaps::default();
    let stem = format!(".ferry-probe-{}", std::process::id());
    let file = dir.join(&stem);
    let link = dir.join(format!("{stem}.l"));
    let hard = dir.join(format!("{stem}.h"));
    let Ok(f) = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&file)
    else {
        return caps;
    };
    if f.set_permissions(std::fs::Permissions::from_mode(0o640))
        .is_ok()
    {
        caps.modes = f
            .metadata()
            .is_ok_and(|m| m.permissions().mode() & 0o777 == 0o640);
    }
    drop(f);
    match std::os::unix::fs::symlink(&stem, &link) {
        Ok(()) => {
            let _ = std::fs::remove_file(&link);
        }
        Err(e) => caps.symlinks = !lacks(&e),
    }
    match std::fs::hard_link(&file, &hard) {
        Ok(()) => {
            let _ = std::fs::remove_file(&hard);
        }
        Err(e) => caps.hard_links = !lacks(&e),
    }
    let _ = std::fs::remove_file(&file);
    caps
}

/// True for the errors of a filesystem that has no such thing.
fn lacks(e: &io::Error) -> bool {
    e.raw_os_error().is_some_and(|c| {
        matches!(c, libc::ENOSYS | libc::EPERM | libc::EOPNOTSUPP) || c == libc::ENOTSUP
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn the_portable_listing_matches_read_dir_and_the_probe_sees_a_full_filesystem() {
        let t = tempfile::tempdir().expect("tempdir");
        for n in ["a", "b c", "é"] {
            std::fs::write(t.path().join(n), n).expect("write");
        }
        std::fs::create_dir(t.path().join("d")).expect("mkdir");
        let dir = std::fs::File::open(t.path()).expect("open");
        let mut got = portable::dir_names(dir.as_raw_fd()).expect("list");
        got.sort();
        let mut want: Vec<OsString> = std::fs::read_dir(t.path())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        want.sort();
        assert_eq!(got, want);
        // The temp directory's filesystem (ext4, tmpfs, overlay) keeps all three.
        assert_eq!(probe(t.path()), FsCaps::default());
        assert_eq!(FsCaps::default().lacking(), None);
        let exfat = FsCaps {
            modes: false,
            symlinks: false,
            hard_links: false,
        };
        assert_eq!(
            exfat.lacking().as_deref(),
            Some("permission bits, symlinks, hard links")
        );
        // Nothing left behind by the probe.
        assert_eq!(std::fs::read_dir(t.path()).expect("ls").count(), 4);
    }

    #[test]
    fn the_portable_rename_refuses_what_it_cannot_do_atomically() {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::write(t.path().join("x"), "x").expect("write");
        std::fs::write(t.path().join("y"), "y").expect("write");
        let dir = std::fs::File::open(t.path()).expect("open");
        let fd = dir.as_raw_fd();
        for how in [RenameHow::NoReplace, RenameHow::Exchange] {
            let e = portable::rename_at(fd, c"x", fd, c"y", how).expect_err("refused");
            assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP), "{how:?}");
        }
        portable::rename_at(fd, c"x", fd, c"y", RenameHow::Plain).expect("plain rename");
        assert_eq!(std::fs::read(t.path().join("y")).expect("read"), b"x");
    }
}
