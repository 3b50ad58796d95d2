#!/usr/bin/python3
"""A FUSE stand-in for a macOS volume's names (ferry's tests, tests/it/names.rs).

Usage: nfd.py BACKING MOUNTPOINT

Passes every operation through to BACKING, but spells each name in NFD (decomposed) first,
as HFS+ does: a file made as `café` (NFC) is stored as `cafe\u0301`, found under either
spelling, and handed back decomposed by readdir. Runs in the foreground until unmounted
(`fusermount -u MOUNTPOINT`). Needs Debian's python3-fusepy (libfuse2).
"""
import errno
import os
import sys
import unicodedata

try:
    import fusepy as fuse
except ImportError:  # the PyPI name
    import fuse


def nfd(path):
    return unicodedata.normalize("NFD", path)


class Nfd(fuse.Operations):
    def __init__(self, backing):
        self.backing = os.path.realpath(backing)

    def real(self, path):
        return os.path.join(self.backing, nfd(path).lstrip("/"))

    def __call__(self, op, *args):
        try:
            return super().__call__(op, *args)
        except OSError as e:
            raise fuse.FuseOSError(e.errno or errno.EIO)

    def access(self, path, mode):
        if not os.access(self.real(path), mode, follow_symlinks=False):
            raise fuse.FuseOSError(errno.EACCES)

    def getattr(self, path, fh=None):
        st = os.lstat(self.real(path))
        keys = ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime", "st_nlink",
                "st_size", "st_uid", "st_ino")
        out = {k: getattr(st, k) for k in keys}
        out["st_mtime"] = st.st_mtime_ns / 1e9
        return out

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self.real(path))

    def readlink(self, path):
        return os.readlink(self.real(path))

    def mknod(self, path, mode, dev):
        os.mknod(self.real(path), mode, dev)

    def mkdir(self, path, mode):
        os.mkdir(self.real(path), mode)

    def rmdir(self, path):
        os.rmdir(self.real(path))

    def unlink(self, path):
        os.unlink(self.real(path))

    def symlink(self, target, source):
        # fusepy: symlink(name, target) where name is the link's path.
        os.symlink(source, self.real(target))

    def rename(self, old, new):
        os.rename(self.real(old), self.real(new))

    def link(self, target, source):
        os.link(self.real(source), self.real(target))

    def chmod(self, path, mode):
        os.chmod(self.real(path), mode, follow_symlinks=False)

    def chown(self, path, uid, gid):
        os.chown(self.real(path), uid, gid, follow_symlinks=False)

    def utimens(self, path, times=None):
        os.utime(self.real(path), times, follow_symlinks=False)

    def truncate(self, path, length, fh=None):
        if fh is not None:
            os.ftruncate(fh, length)
        else:
            os.truncate(self.real(path), length)

    def statfs(self, path):
        st = os.statvfs(self.real(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree",
                "f_files", "f_flag", "f_frsize", "f_namemax")
        return {k: getattr(st, k) for k in keys}

    def open(self, path, flags):
        return os.open(self.real(path), flags)

    def create(self, path, mode, fi=None):
        return os.open(self.real(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)

    def read(self, path, size, offset, fh):
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        return os.pwrite(fh, data, offset)

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        os.close(fh)
        return 0

    def fsync(self, path, datasync, fh):
        os.fsync(fh)
        return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: nfd.py BACKING MOUNTPOINT")
    # use_ino: one file has one inode number, whichever spelling looked it up (as on macOS).
    fuse.FUSE(Nfd(sys.argv[1]), sys.argv[2], foreground=True, nothreads=True, use_ino=True,
              default_permissions=True, allow_other=False)
