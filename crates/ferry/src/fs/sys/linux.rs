//! Linux: `renameat2`, `O_TMPFILE` and `linkat`, `openat2`, `O_PATH`, `/proc/self/fd`,
//! `SO_PEERCRED`.

use std::ffi::{CStr, CString, OsString};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use super::{RenameHow, check};

/// A directory opened only to name things in it (no read permission needed).
pub const O_DIR_REF: libc::c_int = libc::O_PATH | libc::O_DIRECTORY;
/// Whatever is at a name (a symlink itself), opened to look at it.
pub const O_STAT: libc::c_int = libc::O_PATH | libc::O_NOFOLLOW;

pub fn rename_at(
    from_dir: RawFd,
    from: &CStr,
    to_dir: RawFd,
    to: &CStr,
    how: RenameHow,
) -> io::Result<()> {
    let flags = match how {
        RenameHow::Plain => 0,
        RenameHow::NoReplace => libc::RENAME_NOREPLACE,
        RenameHow::Exchange => libc::RENAME_EXCHANGE,
    };
    // SAFETY: valid descriptors and NUL-terminated names; the kernel keeps no reference.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            from_dir,
            from.as_ptr(),
            to_dir,
            to.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if flags == 0 && e.raw_os_error() == Some(libc::ENOSYS) {
        return super::portable::rename_at(from_dir, from, to_dir, to, how);
    }
    Err(e)
}

pub fn open_unnamed(dir: RawFd, path: &CStr, mode: libc::mode_t) -> io::Result<OwnedFd> {
    // SAFETY: a valid descriptor (or AT_FDCWD) and a NUL-terminated path.
    let fd = unsafe {
        libc::openat(
            dir,
            path.as_ptr(),
            libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
            mode,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just returned to us, owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Through `AT_EMPTY_PATH` when `empty_path` (needs `CAP_DAC_READ_SEARCH`), else
/// `/proc/self/fd`.
pub fn link_unnamed(fd: RawFd, to_dir: RawFd, to: &CStr, empty_path: bool) -> io::Result<()> {
    if empty_path {
        // SAFETY: valid descriptors and NUL-terminated names.
        return check(unsafe {
            libc::linkat(fd, c"".as_ptr(), to_dir, to.as_ptr(), libc::AT_EMPTY_PATH)
        });
    }
    let proc_path = CString::new(format!("/proc/self/fd/{fd}"))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))?;
    // SAFETY: as above.
    check(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            to_dir,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
}

pub fn openat2(
    dir: RawFd,
    path: &CStr,
    flags: libc::c_int,
    no_symlinks: bool,
) -> io::Result<OwnedFd> {
    // SAFETY: `open_how` is plain integers; all-zero is its "no options" value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH
        | if no_symlinks {
            libc::RESOLVE_NO_SYMLINKS
        } else {
            libc::RESOLVE_NO_MAGICLINKS
        };
    // SAFETY: a valid descriptor, a NUL-terminated path and an `open_how` of the size passed;
    // the kernel keeps no reference to any of them.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just returned to us, owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Through the kernel's link to the open directory (no path that could be swapped).
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
    // SAFETY: just returned to us; closed when dropped, after the listing.
    let own = unsafe { OwnedFd::from_raw_fd(own) };
    use std::os::fd::AsRawFd;
    std::fs::read_dir(format!("/proc/self/fd/{}", own.as_raw_fd()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect()
}

/// `SO_PEERCRED`.
pub fn peer_uid(fd: RawFd) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, which lives for the call.
    check(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok(cred.uid)
}
