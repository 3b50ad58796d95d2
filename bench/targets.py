"""Endpoint kinds: where the beta side of a sync lives.

A target kind is a class with `name`, `peers(scenario)` and `fresh(tag) -> Dest`; `TARGETS`
maps the names `--targets` accepts to those classes. A Dest is one fresh, empty destination:

    url            what ferry is given as BETA
    path           host path of the tree (None when it has none)
    scratch        a host directory for the tools' state (ferry's XDG_STATE_HOME, unison's
                   archive, lsyncd's config), fresh with the Dest
    write(rel, data, atomic=False)     save a file on that side
    watcher(reldir)                    context manager; .wait_for(name, data, timeout) returns
                                       the perf_counter time `name` appeared there with `data`
    wait_matching({rel: data}, timeout) perf_counter time the last of those files matched
    diff(expected_dir, content=True)   differences from a host tree ([] when equal)
    fill(src_dir)                      copy a host tree into it
    close()                            tear it down (also via `with`)

The alpha side is always a LocalTarget Dest (a tmpfs copy of a corpus) or a cached corpus.
"""
import itertools
import os
import subprocess
import time

import corpora
from common import Watch, log, run

MOUNT_SOURCE = "ferrybench"
TMPFS_OPTIONS = "size=6g,mode=0755"  # mode 1777 would make unison see a permission difference
_MOUNTED = set()
_SEQ = itertools.count()


def mount_tmpfs(path):
    os.makedirs(path, exist_ok=True)
    run(["mount", "-t", "tmpfs", "-o", TMPFS_OPTIONS, MOUNT_SOURCE, path])
    _MOUNTED.add(path)


def unmount(path):
    """Unmount a tmpfs of ours and remove its mount point. A tool that just exited can keep it
    busy for a moment, so retry for a few seconds, then detach it lazily."""
    for _ in range(50):
        if subprocess.run(["umount", path], capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    else:
        log(f"warning: {path} still busy after 5 s; unmounting it lazily")
        run(["umount", "-l", path])
    _MOUNTED.discard(path)
    os.rmdir(path)


def unmount_all(under=None):
    """Unmount what this run mounted and, given `under`, stale mounts of ours below it."""
    paths = set(_MOUNTED)
    if under:
        with open("/proc/mounts") as f:
            for line in f:
                src, mnt = line.split()[:2]
                if src == MOUNT_SOURCE and mnt.startswith(under.rstrip("/") + "/"):
                    paths.add(mnt)
    for p in sorted(paths, reverse=True):
        unmount(p)


class LocalDest:
    """A fresh directory on its own tmpfs: `path` = <mount>/tree, scratch = <mount>/.bench."""

    def __init__(self, mount):
        self.mount = mount
        mount_tmpfs(mount)
        self.path = self.url = os.path.join(mount, "tree")
        self.scratch = os.path.join(mount, ".bench")
        os.mkdir(self.path, 0o755)
        os.mkdir(self.scratch)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.mount in _MOUNTED:
            unmount(self.mount)

    def write(self, rel, data, atomic=False):
        """Write a file; atomic: through a temp file in scratch (same filesystem) and rename, so
        the tree only ever shows the complete file."""
        target = os.path.join(self.path, rel)
        tmp = os.path.join(self.scratch, "write.tmp") if atomic else target
        with open(tmp, "wb") as f:
            f.write(data)
        if atomic:
            os.rename(tmp, target)

    def watcher(self, reldir):
        return Watch(os.path.join(self.path, reldir))

    def wait_matching(self, expected, timeout):
        """Poll until every file of `expected` ({rel: bytes}) reads back equal: check in order,
        re-check only those not matching yet, 5 ms between passes."""
        pending = list(expected)
        end = time.perf_counter() + timeout
        while True:
            pending = [rel for rel in pending if self._read(rel) != expected[rel]]
            now = time.perf_counter()
            if not pending:
                return now
            if now > end:
                raise TimeoutError(f"{len(pending)} of {len(expected)} files not synced "
                                   f"within {timeout} s")
            time.sleep(0.005)

    def _read(self, rel):
        try:
            with open(os.path.join(self.path, rel), "rb") as f:
                return f.read()
        except OSError:
            return None

    def diff(self, expected_dir, content=True, ignore=()):
        return corpora.tree_diff(expected_dir, self.path, content=content, ignore=ignore)

    def fill(self, src_dir):
        corpora.copy_tree(src_dir, self.path)


class LocalTarget:
    """Destinations on this machine, each a fresh tmpfs mounted under <work>/mnt."""

    name = "local"
    # Which peers do the same job as ferry against this kind of endpoint, per scenario
    # (names from tools.ONESHOT for first/noop/edit, tools.SESSIONS for the others).
    PEERS = {
        "first": ("rsync", "unison", "cp", "tar"),
        "noop": ("rsync", "unison"),
        "edit": ("rsync", "rsync-pipe"),
        "latency": ("unison", "lsyncd"),
        "burst": ("unison", "lsyncd"),
        "idle": ("unison", "lsyncd"),
    }

    def __init__(self, work):
        self.base = os.path.join(work, "mnt")

    def peers(self, scenario):
        return self.PEERS[scenario]

    def fresh(self, tag):
        return LocalDest(os.path.join(self.base, f"{tag}-{next(_SEQ)}"))


TARGETS = {"local": LocalTarget}
