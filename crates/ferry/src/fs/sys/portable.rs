//! What any Unix has: plain `renameat`, no unnamed files, no `openat2`, `fdopendir`,
//! `getpeereid`. Linux runs these with `FERRY_TEST_PORTABLE=1`.

#![cfg_attr(target_os = "macos", allow(dead_code))]

use std::ffi::{CStr, OsString};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;

use super::{RenameHow, check, unsupported};

/// A directory opened only to name things in it.
#[allow(dead_code)]
pub const O_DIR_REF: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY;
/// Whatever is at a name, opened to look at it (a symlink there is refused: `ELOOP`).
#[allow(dead_code)]
pub const O_STAT: libc::c_int = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW;

/// Only a plain rename is atomic here: the other forms are refused (`EOPNOTSUPP`) so callers
/// take their fallbacks (link + unlink, or a look then a rename; moving the old file aside).
pub fn rename_at(
    from_dir: RawFd,
    from: &CStr,
    to_dir: RawFd,
    to: &CStr,
    how: RenameHow,
) -> io::Result<()> {
    if how != RenameHow::Plain {
        return Err(unsupported());
    }
    // SAFETY: valid descriptors (or AT_FDCWD) and NUL-terminated names.
    check(unsafe { libc::renameat(from_dir, from.as_ptr(), to_dir, to.as_ptr()) })
}

#[allow(dead_code)]
pub fn open_unnamed(_dir: RawFd, _path: &CStr, _mode: libc::mode_t) -> io::Result<OwnedFd> {
    Err(unsupported())
}

#[allow(dead_code)]
pub fn link_unnamed(_fd: RawFd, _to_dir: RawFd, _to: &CStr, _empty_path: bool) -> io::Result<()> {
    Err(unsupported())
}

#[allow(dead_code)]
pub fn openat2(
    _dir: RawFd,
    _path: &CStr,
    _flags: libc::c_int,
    _no_symlinks: bool,
) -> io::Result<OwnedFd> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

/// Lists the directory `fd` through a fresh descriptor of its own (`fdopendir` takes the
/// descriptor it is given, and the one held stays untouched).
pub fn dir_names(fd: RawFd) -> io::Result<Vec<OsString>> {
    // SAFETY: a valid descriptor and a NUL-terminated name.
    let own = unsafe {
        libc::openat(
            fd,
            c".".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if own < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `own` is ours; on success the stream owns it and `closedir` closes it.
    let dir = unsafe { libc::fdopendir(own) };
    if dir.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: not taken by a stream: closed here, once.
        drop(unsafe { OwnedFd::from_raw_fd(own) });
        return Err(e);
    }
    let mut names = Vec::new();
    let res = loop {
        // SAFETY: `readdir` returns entries of this stream until NULL; errno tells an error
        // from the end, so it is cleared first.
        let ent = unsafe {
            *errno() = 0;
            libc::readdir(dir)
        };
        if ent.is_null() {
            // SAFETY: errno is thread-local.
            let err = unsafe { *errno() };
            break if err == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(err))
            };
        }
        // SAFETY: `d_name` is a NUL-terminated array inside the entry, valid until the next
        // readdir on this stream; copied out at once.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        let bytes = name.to_bytes();
        if bytes != b"." && bytes != b".." {
            names.push(OsString::from_vec(bytes.to_vec()));
        }
    };
    // SAFETY: the stream is closed once, with its descriptor.
    unsafe { libc::closedir(dir) };
    res.map(|()| names)
}

#[cfg(target_os = "linux")]
unsafe fn errno() -> *mut libc::c_int {
    // SAFETY: glibc/musl's thread-local errno.
    unsafe { libc::__errno_location() }
}

#[cfg(not(target_os = "linux"))]
unsafe fn errno() -> *mut libc::c_int {
    // SAFETY: the BSDs' and macOS's thread-local errno.
    unsafe { libc::__error() }
}

/// The peer's effective uid (`getpeereid`, the BSDs and macOS).
#[allow(dead_code)]
#[cfg(not(target_os = "linux"))]
pub fn peer_uid(fd: RawFd) -> io::Result<u32> {
    let mut uid: libc::uid_t = 0;
    let mut gid: libc::gid_t = 0;
    // SAFETY: a socket descriptor and two out-parameters that live for the call.
    check(unsafe { libc::getpeereid(fd, &mut uid, &mut gid) })?;
    Ok(uid)
}
