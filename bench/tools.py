"""The tools compared: one-shot commands (ONESHOT) and watching sessions (SESSIONS).

A one-shot tool turns (source dir, Dest) into a command, an environment and extra figures parsed
from its output. A session keeps both sides in sync until stopped; `wait_ready` returns once its
initial sync is over. Targets name the peers that make sense for them (targets.py); a new
endpoint kind whose peers need other commands adds entries here under new names.
"""
import collections
import json
import os
import re
import signal
import threading
import time

from common import FERRY, Proc, RunFailed, group_cpu_s, group_rss_mib, log

FSMONITOR_DIR = "/opt/ferry-bench/bin"  # unison-fsmonitor, for `unison -repeat watch`
READY_TIMEOUT = 1800
QUIET_WINDOW_S, QUIET_CPU_S, QUIET_TIMEOUT = 2.0, 0.05, 300
UNISON_FLAGS = ["-batch", "-auto", "-times", "-perms", "0", "-ui", "text"]
_pipe_script = None  # path of the rsync remote-shell stand-in, see init()


def init(work):
    """Write the helper files the tools need under the work directory."""
    global _pipe_script
    _pipe_script = os.path.join(work, "rsync-pipe.sh")
    with open(_pipe_script, "w") as f:
        f.write('#!/bin/sh\n# rsync -e stand-in: drop the host argument, run the "remote" side here.\n'
                'shift\nexec "$@"\n')
    os.chmod(_pipe_script, 0o755)


def ferry_env(dest):
    """ferry's state on the destination's filesystem, fresh with it."""
    return dict(os.environ, XDG_STATE_HOME=os.path.join(dest.scratch, "state"))


def unison_env(dest):
    """unison's archive (normally ~/.unison) beside the destination; fsmonitor on PATH."""
    return dict(os.environ, UNISON=os.path.join(dest.scratch, "unison"),
                PATH=FSMONITOR_DIR + ":" + os.environ.get("PATH", ""))


def parse_ferry(stdout):
    """Totals of ferry's cycle_end events: cycles, duration_ms, bytes, wire_bytes (remote
    sides), files each way, phases."""
    out = {"cycles": 0, "duration_ms": 0.0, "bytes": 0, "wire_bytes": 0, "to_beta": 0,
           "to_alpha": 0, "errors": 0, "phases_ms": collections.Counter()}
    for line in stdout.splitlines():
        if '"cycle_end"' not in line:
            continue
        e = json.loads(line)
        out["cycles"] += 1
        for k in ("duration_ms", "bytes", "wire_bytes", "to_beta", "to_alpha", "errors"):
            out[k] += e.get(k, 0)
        out["phases_ms"].update(e.get("phases_ms", {}))
    out["phases_ms"] = {k: round(v, 3) for k, v in out["phases_ms"].items()}
    out["duration_ms"] = round(out["duration_ms"], 3)
    return out


def parse_rsync(stdout):
    """bytes_sent / bytes_received from `rsync --stats`."""
    out = {}
    for key, label in (("bytes_sent", "Total bytes sent"), ("bytes_received", "Total bytes received")):
        m = re.search(label + r": ([\d,]+)", stdout)
        if m:
            out[key] = int(m.group(1).replace(",", ""))
    return out


class OneShot:
    """A command that syncs src into a Dest and exits."""

    def __init__(self, name, argv, env=None, parse=None):
        self.name, self._argv, self._env, self._parse = name, argv, env, parse

    def command(self, src, dest):
        return self._argv(src, dest)

    def env(self, dest):
        return self._env(dest) if self._env else None

    def parse(self, stdout):
        return self._parse(stdout) if self._parse else {}


ONESHOT = {t.name: t for t in (
    OneShot("ferry", lambda s, d: [FERRY, "sync", s, d.url, "--once", "--json"], ferry_env, parse_ferry),
    OneShot("rsync", lambda s, d: ["rsync", "-a", "--stats", s + "/", d.path + "/"], parse=parse_rsync),
    # Through a pipe rsync believes the other side is remote and uses its delta algorithm.
    OneShot("rsync-pipe", lambda s, d: ["rsync", "-a", "--stats", "-e", _pipe_script, s + "/",
                                        "localhost:" + d.path + "/"], parse=parse_rsync),
    OneShot("unison", lambda s, d: ["unison", s, d.path] + UNISON_FLAGS, unison_env),
    OneShot("cp", lambda s, d: ["cp", "-a", s + "/.", d.path]),
    OneShot("tar", lambda s, d: ["bash", "-c", 'set -o pipefail; tar c -C "$1" . | tar x -C "$2"',
                                 "tar", s, d.path]),
    # Docker targets (d.container, d.root: the tree's path in the container).
    OneShot("docker-cp", lambda s, d: ["docker", "cp", s + "/.", f"{d.container}:{d.root}"]),
    OneShot("docker-tar", lambda s, d: [
        "bash", "-c", 'set -o pipefail; tar c -C "$1" . | docker exec -i "$2" tar x -C "$3"',
        "docker-tar", s, d.container, d.root]),
)}


class Session:
    """A tool syncing src to dst (and back, when two_way) until stopped; `with` starts/stops it."""

    name = "?"
    two_way = True
    stop_signal = signal.SIGTERM

    def __init__(self, src, dst):
        self.src, self.dst = src, dst
        self.tail = collections.deque(maxlen=20)  # last output lines, for failure reasons
        self.proc = None

    def command(self):
        raise NotImplementedError

    def env(self):
        return None

    def on_line(self, line):
        self.tail.append(line.rstrip())

    def __enter__(self):
        self.proc = Proc(self.command(), env=self.env(), on_line=self.on_line,
                         stderr_path=os.path.join(self.dst.scratch, f"{self.name}.stderr"))
        return self

    def __exit__(self, *exc):
        self.proc.stop(self.stop_signal, grace=30.0)

    @property
    def pgid(self):
        return self.proc.pgid

    def cpu_s(self):
        """CPU seconds so far of the tool's process group (and the children it reaped) and of
        what works for it on the sides (a container's agent, the Docker daemons)."""
        return group_cpu_s(self.pgid) + self.src.extra_cpu_s() + self.dst.extra_cpu_s()

    def rss_mib(self):
        """Resident memory now of the tool's process group and of its processes on the sides."""
        return group_rss_mib(self.pgid) + self.src.extra_rss_mib() + self.dst.extra_rss_mib()

    def alive(self):
        return self.proc.alive()

    def failure(self):
        """Why the tool is not running (exit code and its last words)."""
        try:
            with open(os.path.join(self.dst.scratch, f"{self.name}.stderr")) as f:
                last = f.read().strip().splitlines()[-1:]
        except OSError:
            last = []
        last = last or list(self.tail)[-1:] or [""]
        return f"{self.name} exited with code {self.proc.p.poll()}: {last[0][:200]}"

    def tool_ready(self, timeout):
        """Tool-specific first readiness signal (none by default)."""

    def wait_ready(self, timeout=READY_TIMEOUT):
        """Return once the initial sync is over and the tool has gone quiet."""
        self.wait_probes(timeout)
        self.wait_quiet()

    def wait_quiet(self):
        """Wait until the tool's processes use under QUIET_CPU_S in a QUIET_WINDOW_S window: a tool
        can go on working after its first sync (unison re-checks the 100,000 files it has just
        written for several seconds). Gives up after QUIET_TIMEOUT (a tool that is never quiet
        is measured as it is)."""
        end = time.monotonic() + QUIET_TIMEOUT
        cpu = self.cpu_s()
        while time.monotonic() < end:
            time.sleep(QUIET_WINDOW_S)
            now = self.cpu_s()
            if now - cpu < QUIET_CPU_S:
                return
            cpu = now
        log(f"warning: {self.name} still busy {QUIET_TIMEOUT} s after its initial sync")

    def wait_probes(self, timeout):
        """A probe file is written once the first has crossed: the first may be part of the
        initial sync, the second is seen only after it."""
        end = time.monotonic() + timeout
        self.tool_ready(timeout)
        for k in (1, 2):
            name = f"bench-probe-{k}"
            data = f"probe {k} {time.time_ns()}\n".encode()  # new content for every session
            with self.dst.watcher("") as w:
                self.src.write(name, data)
                try:
                    w.wait_for(name, data, max(1.0, end - time.monotonic()), alive=self.alive)
                except RunFailed:
                    raise RunFailed(self.failure())
                except TimeoutError:
                    raise RunFailed(f"{self.name}: initial sync not over within {timeout} s")


class FerryWatch(Session):
    """`ferry sync ALPHA BETA --json`: one process watching and serving both sides."""

    name = "ferry"
    stop_signal = signal.SIGINT  # the step in flight finishes, the archive is saved

    def __init__(self, src, dst, extra_args=()):
        super().__init__(src, dst)
        self.extra_args = list(extra_args)
        self.events = []
        self.cond = threading.Condition()

    def command(self):
        return [FERRY, "sync", self.src.path, self.dst.url, "--json"] + self.extra_args

    def env(self):
        return ferry_env(self.dst)

    def on_line(self, line):
        super().on_line(line)
        try:
            event = json.loads(line)
        except ValueError:
            return
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def wait_event(self, pred, timeout):
        """The first event (in order) for which pred(event) holds; waits for it."""
        end = time.monotonic() + timeout
        seen = 0
        with self.cond:
            while True:
                for e in self.events[seen:]:
                    if pred(e):
                        return e
                seen = len(self.events)
                left = end - time.monotonic()
                if not self.alive():
                    raise RunFailed(self.failure())
                if left <= 0:
                    raise RunFailed(f"ferry: no matching event within {timeout} s")
                self.cond.wait(min(left, 0.5))

    def tool_ready(self, timeout):
        self.wait_event(lambda e: e.get("event") == "watching", timeout)


class UnisonWatch(Session):
    """`unison ALPHA BETA -repeat watch`, with unison-fsmonitor watching both sides."""

    name = "unison"

    def command(self):
        return ["unison", self.src.path, self.dst.path, "-repeat", "watch"] + UNISON_FLAGS

    def env(self):
        return unison_env(self.dst)


class LsyncdWatch(Session):
    """lsyncd with default.rsync and delay 0: one way (src to dst) per instance."""

    name = "lsyncd"
    two_way = False

    def command(self):
        conf = os.path.join(self.dst.scratch, "lsyncd.lua")
        with open(conf, "w") as f:
            f.write("settings { nodaemon = true }\n"
                    f'sync {{ default.rsync, source = "{self.src.path}", '
                    f'target = "{self.dst.path}", delay = 0 }}\n')
        return ["lsyncd", conf]


SESSIONS = {s.name: s for s in (FerryWatch, UnisonWatch, LsyncdWatch)}
