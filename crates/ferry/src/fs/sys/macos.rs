//! macOS: `renameatx_np` with `RENAME_EXCL`/`RENAME_SWAP` (APFS and HFS+ have both; other
//! volumes answer `ENOTSUP` and callers fall back), `O_SEARCH` and `O_SYMLINK` where Linux
//! uses `O_PATH`, `getpeereid`. No unnamed files and no `openat2`: the portable ways.
//! Checked to compile (`cargo check --target aarch64-apple-darwin`), never run here.

use std::ffi::CStr;
use std::io;
use std::os::fd::RawFd;

use super::{RenameHow, check};

pub use super::portable::{dir_names, link_unnamed, open_unnamed, openat2, peer_uid};

/// A directory opened only to search it (needs search permission, not read).
pub const O_DIR_REF: libc::c_int = libc::O_SEARCH;
/// Whatever is at a name (`O_SYMLINK`: a symlink itself), opened for looking only.
pub const O_STAT: libc::c_int = libc::O_EVTONLY | libc::O_SYMLINK | libc::O_NONBLOCK;

pub fn rename_at(
    from_dir: RawFd,
    from: &CStr,
    to_dir: RawFd,
    to: &CStr,
    how: RenameHow,
) -> io::Result<()> {
    let flags = match how {
        RenameHow::Plain => 0,
        RenameHow::NoReplace => libc::RENAME_EXCL,
        RenameHow::Exchange => libc::RENAME_SWAP,
    };
    // SAFETY: valid descriptors (or AT_FDCWD) and NUL-terminated names.
    check(unsafe { libc::renameatx_np(from_dir, from.as_ptr(), to_dir, to.as_ptr(), flags) })
}
