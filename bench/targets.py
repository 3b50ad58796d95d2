"""Endpoint kinds: where the beta side of a sync lives.

A target kind is a class with `name`, `peers(scenario)` and `fresh(tag) -> Dest`; `TARGETS`
maps the names `--targets` accepts to those classes. A Dest is one fresh, empty destination:

    url            what ferry is given as BETA
    path           host path of the tree (None when it has none)
    remote         True when ferry reaches it through its agent (the wire)
    scratch        a host directory for the tools' state (ferry's XDG_STATE_HOME, unison's
                   archive, lsyncd's config), fresh with the Dest
    write(rel, data, atomic=False)     save a file on that side
    watcher(reldir)                    context manager; .wait_for(name, data, timeout) returns
                                       the perf_counter time `name` appeared there with `data`
    wait_matching({rel: data}, timeout) perf_counter time the last of those files matched
    write_started()                    perf_counter time the last write() began on that side,
                                       timestamped there (None: the caller's clock just before
                                       write() is as good, as for a local directory)
    diff(expected_dir, content=True)   differences from a host tree ([] when equal)
    fill(src_dir)                      copy a host tree into it
    flip_middle_byte(rel)              invert the middle byte of a file on that side, in place,
                                       mtime one second later (the `edit` scenario)
    file_digest(rel)                   sha256 hex digest of a file, read on that side
    extra_cpu_s(), extra_rss_mib()     CPU seconds so far / resident memory now of processes
                                       that work for the destination outside the harness's
                                       children and the tool's process group (0 when local)
    close()                            tear it down (also via `with`)

The alpha side is always a LocalTarget Dest (a tmpfs copy of a corpus) or a cached corpus.
A target kind also has `remote` (its wire carries ferry's protocol: wire-byte figures),
`local_reference` (peers that cannot run against it, measured on local destinations for
reference), `needs()` (commands it needs) and `prepare()` / `cleanup()` (before and after the
run).
"""
import base64
import hashlib
import itertools
import os
import queue
import shlex
import shutil
import subprocess
import tempfile
import time

import corpora
from common import (FERRY, Proc, RunFailed, Watch, log, pid_cpu_s, pid_rss_mib, pid_stat, run,
                    run_timed)

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

    remote = False

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

    def write_started(self):
        return None

    def flip_middle_byte(self, rel):
        flip_middle_byte(os.path.join(self.path, rel))

    def file_digest(self, rel):
        return file_sha256(os.path.join(self.path, rel))

    def extra_cpu_s(self):
        return 0.0

    def extra_rss_mib(self):
        return 0.0


def flip_middle_byte(path):
    """Invert the byte in the middle of a file, in place (same size), and move its mtime one
    second past the previous one: rsync compares whole seconds, and a real edit comes later than
    the sync before it."""
    before = os.stat(path).st_mtime_ns
    with open(path, "r+b") as f:
        mid = os.fstat(f.fileno()).st_size // 2
        f.seek(mid)
        b = f.read(1)
        f.seek(mid)
        f.write(bytes([b[0] ^ 0xFF]))
    after = before + 1_000_000_000
    os.utime(path, ns=(after, after))


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class LocalTarget:
    """Destinations on this machine, each a fresh tmpfs mounted under <work>/mnt."""

    name = "local"
    remote = False
    local_reference = ()
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

    def needs(self):
        return ()

    def prepare(self):
        pass

    def cleanup(self):
        pass


# --- Docker ----------------------------------------------------------------------------------

DOCKER_IMAGE = "ferry-bench-busybox:1"
BUSYBOX = "/bin/busybox"  # static; the image is this and nothing else
DOCKER_LABEL = "ferry-bench.work"  # value: the --work directory (leftovers of a crashed run)
CONTAINER_ROOT = "/dst/tree"  # the synced tree; /dst is a tmpfs volume
STAGING = ".ferry-staging"  # ferry's agent stages there (in the root) when it has no home
DAEMONS = ("dockerd", "containerd")
_CONTAINERS = set()


def docker(*args, **kw):
    return run(["docker", *args], **kw).strip()


def ensure_image():
    """Build the bench image (FROM scratch, the host's static busybox, nothing else) unless it
    exists. No registry is needed."""
    if subprocess.run(["docker", "image", "inspect", DOCKER_IMAGE],
                      capture_output=True).returncode == 0:
        return
    log(f"building the Docker image {DOCKER_IMAGE} from {BUSYBOX}")
    with tempfile.TemporaryDirectory() as ctx:
        shutil.copy2(BUSYBOX, os.path.join(ctx, "busybox"))
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write('FROM scratch\nCOPY busybox /bin/busybox\n'
                    'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
                    'CMD ["/bin/sleep", "1000000"]\n')
        run(["docker", "build", "-q", "-t", DOCKER_IMAGE, ctx],
            env=dict(os.environ, DOCKER_BUILDKIT="0"))


def remove_container(name):
    """Remove a container of ours and its volume (same name)."""
    subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True)
    subprocess.run(["docker", "volume", "rm", "-f", name], capture_output=True)
    _CONTAINERS.discard(name)


def remove_containers(work=None):
    """Remove the containers and volumes this run made and, given `work`, leftovers labelled
    with that work directory (a crashed run's)."""
    names = set(_CONTAINERS)
    if work:
        label = f"label={DOCKER_LABEL}={work}"
        for cmd in (["ps", "-a", "--format", "{{.Names}}"], ["volume", "ls", "-q"]):
            names.update(subprocess.run(["docker", *cmd, "--filter", label], capture_output=True,
                                        text=True).stdout.split())
    for name in sorted(names):
        remove_container(name)


def daemon_pids():
    """{comm: [pids]} of dockerd and containerd (they do the work of `docker cp` and relay the
    exec streams)."""
    out = {d: [] for d in DAEMONS}
    for name in os.listdir("/proc"):
        if name.isdigit():
            comm = _comm(name)
            if comm in out:
                out[comm].append(int(name))
    return out


class DockerDest:
    """A new container of the bench image whose /dst is a new tmpfs volume; the tree is
    /dst/tree (url docker://NAME/dst/tree, no host path for the tools). The harness observes it
    through the volume's mount point on the host (`view`: the same tmpfs, so inotify there sees
    what happens in the container) and acts in it through `docker exec`. ferry's agent is
    installed before anything is timed (untimed `ferry sync --once` of an empty tree, whose run
    is kept in `connect_sample`). scratch is a host tmpfs."""

    path = None
    remote = True

    def __init__(self, name, mount, work):
        self.name = self.container = name
        self.mount = mount
        self.root = CONTAINER_ROOT
        self.url = f"docker://{name}{CONTAINER_ROOT}"
        self.writer = None
        self._acks = queue.Queue()
        self._sent = self._acked = 0
        self._last_ack = None
        mount_tmpfs(mount)
        self.scratch = os.path.join(mount, ".bench")
        os.mkdir(self.scratch)
        try:
            label = f"{DOCKER_LABEL}={work}"
            _CONTAINERS.add(name)
            docker("volume", "create", "--label", label, "--driver", "local", "--opt", "type=tmpfs",
                   "--opt", "device=tmpfs", "--opt", f"o={TMPFS_OPTIONS}", name)
            docker("run", "-d", "--label", label, "--name", name, "-v", f"{name}:/dst",
                   DOCKER_IMAGE)
            self.exec("mkdir", CONTAINER_ROOT)
            mountpoint = docker("volume", "inspect", "-f", "{{.Mountpoint}}", name)
            if not os.path.ismount(mountpoint):
                raise RunFailed(f"the volume's mount point {mountpoint} is not visible here "
                                "(the harness needs the Docker daemon on this machine)")
            self.view = os.path.join(mountpoint, "tree")
            init = int(docker("inspect", "-f", "{{.State.Pid}}", name))
            self.init_pid = init
            self.shim_pid = int(pid_stat(init)[1])  # the container's containerd shim
            self.cgroup_procs = _cgroup_procs(init)
            self.daemons = daemon_pids()
            self.connect_sample = self._install_agent()
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.writer:
            try:
                self.writer.p.stdin.close()
            except OSError:
                pass
            self.writer.stop(grace=2.0)
            self.writer = None
        if self.name in _CONTAINERS:
            remove_container(self.name)
        if self.mount in _MOUNTED:
            unmount(self.mount)

    def exec(self, *argv, stdin=None):
        """Run a command in the container (untimed helper), return its stdout."""
        return run(["docker", "exec", *(["-i"] if stdin is not None else []), self.name, *argv],
                   input=stdin)

    def sh(self, script):
        return self.exec("sh", "-c", script)

    def _install_agent(self):
        """Sync an empty tree to /dst/.warm once: ferry uploads its agent into the container.
        Returns that run's sample (it is also the cost of a first connection)."""
        empty = os.path.join(self.scratch, "empty")
        os.mkdir(empty)
        env = dict(os.environ, XDG_STATE_HOME=os.path.join(self.scratch, "warm-state"))
        s = run_timed([FERRY, "sync", empty, f"docker://{self.name}/dst/.warm", "--once", "--json"],
                      env=env, timeout=120, extra_cpu=self.extra_cpu_s)
        s.pop("stdout")
        shutil.rmtree(os.path.join(self.scratch, "warm-state"))
        return s

    # --- the Dest interface --------------------------------------------------------------

    def _start_writer(self):
        """A long-lived `docker exec -i NAME sh`: each write is one command line; it answers
        `W <$EPOCHREALTIME before the write> <exit code>`."""
        self.writer = Proc(["docker", "exec", "-i", self.name, "sh"],
                           on_line=lambda line: self._acks.put(line.split()),
                           stderr_path=os.path.join(self.scratch, "writer.stderr"),
                           stdin=subprocess.PIPE)
        self._command("echo W $EPOCHREALTIME 0")
        self.write_started()

    def _command(self, line):
        self.writer.p.stdin.write(line + "\n")
        self.writer.p.stdin.flush()
        self._sent += 1

    def write(self, rel, data, atomic=False):
        """Write through the writer shell, without waiting (write_started() waits). Text data
        goes through sh's printf builtin (no process started), other data through base64 -d."""
        if self.writer is None:
            self._start_writer()
        target = shlex.quote(f"{self.root}/{rel}")
        dest = "/dst/.bench-write.tmp" if atomic else target
        if all(32 <= c < 127 or c == 10 for c in data):
            put = f"printf %s {shlex.quote(data.decode())} > {dest}"
        else:
            put = f"printf %s {base64.b64encode(data).decode()} | base64 -d > {dest}"
        move = f" && mv {dest} {target}" if atomic else ""
        # $EPOCHREALTIME (microseconds) is read by the shell itself before the write
        self._command(f"t=$EPOCHREALTIME; {put}{move}; echo W $t $?")

    def write_started(self):
        """Wait for the writer's answers to every write so far; the last one's time (the
        container's clock is the host's: same kernel), as perf_counter time."""
        while self._acked < self._sent:
            try:
                ack = self._acks.get(timeout=30)
            except queue.Empty:
                raise RunFailed(f"the writer shell in {self.name} did not answer within 30 s")
            self._acked += 1
            if len(ack) != 3 or ack[0] != "W" or ack[2] != "0":
                raise RunFailed(f"write in {self.name} failed: {' '.join(ack)}")
            self._last_ack = float(ack[1])
        return self._last_ack - (time.time() - time.perf_counter())

    def watcher(self, reldir):
        return Watch(os.path.join(self.view, reldir))

    def wait_matching(self, expected, timeout):
        return LocalDest.wait_matching(self, expected, timeout)

    def _read(self, rel):
        try:
            with open(os.path.join(self.view, rel), "rb") as f:
                return f.read()
        except OSError:
            return None

    def count_files(self):
        """Regular files under the tree, counted in the container (ferry's staging left out)."""
        out = self.sh(f"find {self.root} -path {self.root}/{STAGING} -prune -o -type f -print "
                      "| wc -l")
        return int(out.strip())

    def diff(self, expected_dir, content=True, ignore=()):
        """Differences seen through the volume (names, types, sizes, content), plus the count
        of files in the container itself."""
        diffs = corpora.tree_diff(expected_dir, self.view, content=content,
                                  ignore=tuple(ignore) + (STAGING,))
        want = corpora.count(expected_dir)["files"]
        got = self.count_files()
        if got != want:
            diffs.append(f"{got} files in the container, {want} expected")
        return diffs

    def fill(self, src_dir):
        run(["bash", "-c", 'set -o pipefail; tar c -C "$1" . | docker exec -i "$2" tar x -C "$3"',
             "fill", src_dir, self.name, self.root])

    def flip_middle_byte(self, rel):
        """The edit, made in the container: dd writes the inverted byte in place, touch moves
        the mtime to the next whole second after the previous one."""
        host = os.path.join(self.view, rel)
        st = os.stat(host)
        mid = st.st_size // 2
        with open(host, "rb") as f:
            f.seek(mid)
            b = f.read(1)[0] ^ 0xFF
        path = shlex.quote(f"{self.root}/{rel}")
        self.sh(f"printf '\\{b:03o}' | dd of={path} bs=1 seek={mid} count=1 conv=notrunc "
                f"2>/dev/null && touch -d @{st.st_mtime_ns // 10 ** 9 + 1} {path}")

    def agent_tag(self):
        """The version-hash directory ferry installed its agent under."""
        return " ".join(self.exec("ls", "/.ferry/agent").split())

    def file_digest(self, rel):
        return self.exec("sha256sum", f"{self.root}/{rel}").split()[0]

    def extra_cpu_s(self):
        """dockerd and containerd (own CPU, dockerd's also what its children did: `docker cp`
        unpacks in one), the container's shim (with the processes it reaped: runc, finished
        execs) and the container's live processes."""
        total = sum(pid_cpu_s(p) for p in self.daemons["dockerd"])
        total += sum(pid_cpu_s(p, children=False) for p in self.daemons["containerd"])
        total += pid_cpu_s(self.shim_pid)
        total += sum(pid_cpu_s(p) for p in self._container_pids())
        return total

    def extra_rss_mib(self):
        """Resident memory of the container's processes (ferry's agent, mostly)."""
        return sum(pid_rss_mib(p) for p in self._container_pids())

    def _container_pids(self):
        try:
            with open(self.cgroup_procs) as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def _cgroup_procs(pid):
    """The cgroup.procs file of a process's cgroup (v1: the cpuacct hierarchy; v2: unified)."""
    with open(f"/proc/{pid}/cgroup") as f:
        lines = [l.rstrip("\n").split(":", 2) for l in f]
    for _, controllers, path in lines:
        if "cpuacct" in controllers.split(","):
            for base in ("/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup/cpu,cpuacct"):
                if os.path.exists(base + path + "/cgroup.procs"):
                    return base + path + "/cgroup.procs"
    for _, controllers, path in lines:
        if controllers == "":
            return "/sys/fs/cgroup" + path + "/cgroup.procs"
    raise RunFailed(f"no cgroup found for pid {pid}")


class DockerTarget:
    """Containers on the local Docker daemon: each destination a new container of the bench
    image (FROM scratch + busybox) with a new tmpfs volume at /dst."""

    name = "docker"
    remote = True
    local_reference = ("rsync-pipe",)  # no rsync in the container: measured locally, for reference
    PEERS = {
        "first": ("docker-cp", "docker-tar"),
        "noop": (),
        "edit": ("rsync-pipe",),
        "latency": (),
        "burst": (),
        "idle": (),
    }

    def __init__(self, work):
        self.work = work
        self.base = os.path.join(work, "mnt")
        self.tag = f"ferry-bench-{os.getpid()}"

    def peers(self, scenario):
        return self.PEERS[scenario]

    def needs(self):
        return ("docker",)

    def prepare(self):
        """Build the image, remove a crashed run's leftovers, and make one container to check
        that ferry can install its agent (embedded in a release build, or found at run time:
        $FERRY_AGENT, target/x86_64-unknown-linux-musl/agent/ferry); keeps the agent's tag."""
        ensure_image()
        remove_containers(self.work)
        with self.fresh("probe") as dest:
            self.agent_tag = dest.agent_tag()

    def cleanup(self):
        remove_containers(self.work)

    def fresh(self, tag):
        seq = next(_SEQ)
        return DockerDest(f"{self.tag}-{tag}-{seq}", os.path.join(self.base, f"{tag}-{seq}"),
                          self.work)


TARGETS = {"local": LocalTarget, "docker": DockerTarget}
