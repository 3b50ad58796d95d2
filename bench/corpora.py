"""The three corpora, made deterministically and cached under the work directory.

A corpus is ready when its marker `<dir>.done` holds the parameters it was made with; anything
else (no marker, other parameters, a half-made tree) is removed and made again.
"""
import glob
import json
import os
import random
import shutil
import stat

from common import log, run

SEED = 42
GENERATOR = 1  # bump when a generator changes, so cached corpora are remade
BIG_FILES = 4
DEB_GLOB = "linux-source-6.1_*.deb"
DEB_CACHE = "/var/cache/ferry-bench"


class Corpus:
    """A cached tree: name (small, big, linux), path, and the counts recorded in its marker."""

    def __init__(self, name, path, info):
        self.name, self.path, self.info = name, path, info

    def label(self):
        """e.g. 'small: 100,000 files, 255 MB' (how figures name their corpus)."""
        return f"{self.name}: {self.info['files']:,} files, {self.info['bytes'] / 1e6:,.0f} MB"


def make_small(path, n):
    """n files of 1-4 KiB, 100 per directory, two levels deep; same seed, same bytes
    (the generator of the former bench/quick.py)."""
    rnd = random.Random(SEED)
    for i in range(n):
        d = os.path.join(path, f"d{i // 10000:02}", f"s{(i // 100) % 100:02}")
        if i % 100 == 0:
            os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:06}.txt"), "wb") as f:
            f.write(rnd.randbytes(rnd.randint(1024, 4096)))


def small_rel(i):
    """Relative path of the i-th file of the small corpus."""
    return f"d{i // 10000:02}/s{(i // 100) % 100:02}/f{i:06}.txt"


def make_big(path, mib):
    """BIG_FILES files of `mib` MiB of seeded random bytes, written 1 MiB at a time."""
    rnd = random.Random(SEED)
    os.makedirs(path)
    for k in range(BIG_FILES):
        with open(os.path.join(path, f"f{k}.bin"), "wb") as f:
            for _ in range(mib):
                f.write(rnd.randbytes(1 << 20))


def cached_deb(work):
    """The newest linux-source .deb in the cache or the work directory, or None."""
    found = sorted(glob.glob(os.path.join(DEB_CACHE, DEB_GLOB)) + glob.glob(os.path.join(work, DEB_GLOB)),
                   key=os.path.basename)
    return found[-1] if found else None


def download_deb(work):
    log("linux-source .deb not cached: apt-get download linux-source-6.1")
    run(["apt-get", "download", "linux-source-6.1"], cwd=work)
    deb = cached_deb(work)
    if not deb:
        raise RuntimeError("apt-get download linux-source-6.1 gave no .deb")
    return deb


def make_linux(path, deb):
    """The kernel source tree from the linux-source .deb (its tarball's single top directory)."""
    tmp = path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    run(f"dpkg-deb --fsys-tarfile '{deb}' | tar -xOf - --wildcards './usr/src/linux-source-*.tar.xz'"
        f" | xz -dc | tar -x -C '{tmp}'")
    (top,) = os.listdir(tmp)
    os.rename(os.path.join(tmp, top), path)
    os.rmdir(tmp)


def count(path):
    """files, dirs (below the root), symlinks and file bytes of a tree."""
    c = {"files": 0, "dirs": 0, "symlinks": 0, "bytes": 0}
    for d, dirs, files in os.walk(path):
        for name in dirs + files:
            st = os.lstat(os.path.join(d, name))
            if stat.S_ISLNK(st.st_mode):
                c["symlinks"] += 1
            elif stat.S_ISDIR(st.st_mode):
                c["dirs"] += 1
            elif stat.S_ISREG(st.st_mode):
                c["files"] += 1
                c["bytes"] += st.st_size
    return c


def ensure(name, args):
    """Make (or reuse) the corpus `name` for these arguments and return it."""
    root = os.path.join(args.work, "corpora")
    os.makedirs(root, exist_ok=True)
    if name == "small":
        params, path = {"files": args.files}, os.path.join(root, f"small-{args.files}")
    elif name == "big":
        params, path = {"files": BIG_FILES, "mib": args.big_mib}, os.path.join(root, f"big-{args.big_mib}")
    else:
        deb = cached_deb(args.work)
        params, path = {"deb": os.path.basename(deb) if deb else None}, os.path.join(root, "linux")
    params.update(kind=name, seed=SEED, generator=GENERATOR)
    marker = path + ".done"
    try:
        with open(marker) as f:
            saved = json.load(f)
        if saved["params"] == params or (name == "linux" and deb is None):
            return Corpus(name, path, saved["info"])  # a tree from a .deb since cleaned away
    except (OSError, ValueError, KeyError):
        pass
    if name == "linux" and deb is None:
        deb = download_deb(args.work)
        params["deb"] = os.path.basename(deb)
    log(f"making corpus {name} in {path}")
    if os.path.exists(marker):
        os.remove(marker)
    shutil.rmtree(path, ignore_errors=True)
    if name == "small":
        make_small(path, args.files)
    elif name == "big":
        make_big(path, args.big_mib)
    else:
        make_linux(path, deb)
    info = count(path)
    run(["sync"])
    with open(marker, "w") as f:
        json.dump({"params": params, "info": info}, f)
    return Corpus(name, path, info)


def warm_cache(path):
    """Read every file once so first syncs start from a warm page cache. (`tar cf /dev/null`
    would not do: GNU tar skips reading file data when its archive is /dev/null.)"""
    run(f"tar c -C '{path}' . | cat > /dev/null")


def copy_tree(src, dst):
    """Copy the contents of src into the existing directory dst, keeping modes and times."""
    run(f"tar c -C '{src}' . | tar x -C '{dst}'")


def _entries(root):
    """{relative path: (type, size or link target)} of a tree, without descending into links."""
    out = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(d, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", None)
            else:
                out[rel] = ("file", st.st_size)
    return out


def _same_bytes(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def tree_diff(expected, actual, content=True, ignore=()):
    """Differences between two trees (names, types, sizes, link targets and, with content, file
    bytes); an empty list when they match. Names in `ignore` (top level) are skipped."""
    a = {k: v for k, v in _entries(expected).items() if k.split("/")[0] not in ignore}
    b = {k: v for k, v in _entries(actual).items() if k.split("/")[0] not in ignore}
    diffs = [f"missing {k}" for k in sorted(a.keys() - b.keys())]
    diffs += [f"extra {k}" for k in sorted(b.keys() - a.keys())]
    for k in sorted(a.keys() & b.keys()):
        if a[k] != b[k]:
            diffs.append(f"differs {k}: {a[k]} vs {b[k]}")
        elif content and a[k][0] == "file" and not _same_bytes(os.path.join(expected, k),
                                                                os.path.join(actual, k)):
            diffs.append(f"content differs {k}")
    return diffs
