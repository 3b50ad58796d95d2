"""Shared helpers: timing one command, long-running tool processes, /proc accounting, inotify.

Everything a scenario starts goes through `run_timed` (one-shot commands) or `Proc` (tools that
keep running); both put the tool in its own process group so that `kill_all` can end every
leftover on Ctrl-C or an exception.
"""
import ctypes
import os
import resource
import select
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FERRY = os.path.join(ROOT, "target", "release", "ferry")
NPROC = os.cpu_count() or 1
CLK_TCK = os.sysconf("SC_CLK_TCK")
# A run is "disturbed" when the rest of the machine used more than this fraction of all CPUs
# while it ran (the machine-wide busy fraction minus what the run's own processes account for).
DISTURBED_OTHER = 0.10


def log(msg):
    """Progress line on stderr (stdout is kept for the final table)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(xs, p):
    """The p-th percentile (nearest rank on the sorted list)."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def median(xs):
    return statistics.median(xs)


# --- machine-wide CPU ------------------------------------------------------------------------

def cpu_jiffies():
    """(busy, total) jiffies of all CPUs since boot, from the first line of /proc/stat (guest
    time is already inside user time, so only the first 8 fields count; steal counts as busy)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def self_cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class BusyMeter:
    """Machine-wide CPU busy fraction between start() and stop(), compared with what the run
    accounts for: the tool's CPU plus the harness's own (writing files, polling)."""

    def start(self):
        self.j0 = cpu_jiffies()
        self.self0 = self_cpu_s()
        self.t0 = time.perf_counter()
        return self

    def stop(self, own_cpu_s):
        """Return {machine_busy, own_busy, disturbed} for a run whose tool used own_cpu_s."""
        b1, t1 = cpu_jiffies()
        wall = max(time.perf_counter() - self.t0, 1e-9)
        machine = (b1 - self.j0[0]) / max(1, t1 - self.j0[1])
        own = min(1.0, (own_cpu_s + self_cpu_s() - self.self0) / (wall * NPROC))
        return {"machine_busy": round(machine, 3), "own_busy": round(own, 3),
                "disturbed": machine - own > DISTURBED_OTHER}


# --- one-shot commands -----------------------------------------------------------------------

class RunFailed(Exception):
    """A tool exited non-zero or timed out; the message is the reason recorded for its figure."""


def run_timed(cmd, env=None, timeout=3600, extra_cpu=None):
    """Run cmd (argv list, or a shell string) and measure it.

    Returns a sample dict: wall_s, cpu_s (user+sys of the reaped children), machine_busy,
    own_busy, disturbed, plus `stdout` (text; the caller pops it). Raises RunFailed on a bad exit
    code or a timeout (the whole process group is killed then). `extra_cpu`, if given, returns
    the CPU seconds so far of processes that work for the run without being its children (a
    Docker destination: the container, dockerd, containerd): their share is recorded as
    `target_cpu_s` and counted in own_busy.
    """
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    x0 = extra_cpu() if extra_cpu else 0.0
    meter = BusyMeter().start()
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, shell=isinstance(cmd, str), env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(p.pid)
        p.communicate()
        raise RunFailed(f"timed out after {timeout} s")
    except BaseException:
        kill_group(p.pid)
        p.wait()
        raise
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if p.returncode != 0:
        last = (err or out).decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise RunFailed(f"exit {p.returncode}: {last[0][:200]}")
    sample = {"wall_s": round(wall, 4), "cpu_s": round(cpu, 3)}
    if extra_cpu:
        x = extra_cpu() - x0
        sample["target_cpu_s"] = round(x, 3)
        cpu += x
    sample.update(meter.stop(cpu))
    sample["stdout"] = out.decode(errors="replace")
    return sample


def run(cmd, **kw):
    """Run an untimed helper command; raise RunFailed with its stderr if it fails."""
    r = subprocess.run(cmd, shell=isinstance(cmd, str), capture_output=True, **kw)
    if r.returncode != 0:
        raise RunFailed(f"{cmd if isinstance(cmd, str) else ' '.join(cmd)}: exit {r.returncode}: "
                        f"{r.stderr.decode(errors='replace').strip()[-300:]}")
    return r.stdout.decode(errors="replace")


# --- long-running processes ------------------------------------------------------------------

_LIVE = {}  # process group id -> Proc, for kill_all


def kill_group(pgid, grace=5.0):
    """SIGTERM a process group, then SIGKILL whatever is left after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        end = time.monotonic() + wait
        while time.monotonic() < end:
            if not group_pids(pgid):
                return
            time.sleep(0.05)


class Proc:
    """A tool running in its own session; stdout lines go to `on_line` from a draining thread
    (a full pipe would stall the tool), stderr to a log file; stdin: none unless given (PIPE:
    write to .p.stdin)."""

    def __init__(self, cmd, env=None, on_line=None, stderr_path=None, stdin=subprocess.DEVNULL):
        err = open(stderr_path, "wb") if stderr_path else subprocess.DEVNULL
        self.p = subprocess.Popen(cmd, env=env, stdin=stdin,
                                  stdout=subprocess.PIPE, stderr=err, start_new_session=True,
                                  text=True, errors="replace")
        if stderr_path:
            err.close()
        self.pgid = self.p.pid
        _LIVE[self.pgid] = self
        self.thread = threading.Thread(target=self._drain, args=(on_line,), daemon=True)
        self.thread.start()

    def _drain(self, on_line):
        for line in self.p.stdout:
            if on_line:
                on_line(line)

    def alive(self):
        return self.p.poll() is None

    def stop(self, first_signal=signal.SIGTERM, grace=5.0):
        """Send first_signal to the leader, wait up to grace seconds, then kill the group."""
        if self.alive():
            try:
                self.p.send_signal(first_signal)
                self.p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        kill_group(self.pgid, grace=2.0)
        self.p.wait()
        self.thread.join(timeout=2)
        _LIVE.pop(self.pgid, None)
        return self.p.returncode


def kill_all():
    """Kill every Proc still running (used on exceptions and Ctrl-C)."""
    for proc in list(_LIVE.values()):
        proc.stop(grace=1.0)


# --- /proc accounting for a process group ----------------------------------------------------

def _proc_stats():
    """Yield (pid, fields after the comm) for every process."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                text = f.read()
        except OSError:
            continue
        yield int(name), text[text.rindex(")") + 2:].split()


def group_pids(pgid):
    """Pids of the live (non-zombie) processes of a process group."""
    return [pid for pid, f in _proc_stats() if int(f[2]) == pgid and f[0] != "Z"]


def pid_stat(pid):
    """The fields after the comm of /proc/PID/stat, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def pid_cpu_s(pid, children=True):
    """utime+stime of one process (plus cutime+cstime: the children it reaped), 0 if gone."""
    f = pid_stat(pid)
    if f is None:
        return 0.0
    return sum(int(x) for x in f[11:15 if children else 13]) / CLK_TCK


def pid_rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def group_cpu_s(pgid):
    """utime+stime of a group's processes plus the children they reaped (cutime+cstime)."""
    ticks = sum(int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
                for _, f in _proc_stats() if int(f[2]) == pgid)
    return ticks / CLK_TCK


def group_rss_mib(pgid):
    """Sum of VmRSS over a process group, in MiB."""
    return sum(pid_rss_mib(pid) for pid in group_pids(pgid))


# --- inotify, to time the moment a file appears without polling ------------------------------

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x8, 0x80, 0x100


class Watch:
    """inotify on one directory; wait_for() returns when a named file there has given content."""

    def __init__(self, directory):
        self.dir = directory
        self.fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if _libc.inotify_add_watch(self.fd, directory.encode(),
                                   IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE) < 0:
            err = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(err, f"inotify on {directory}")

    def close(self):
        os.close(self.fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _complete(self, name, data):
        try:
            with open(os.path.join(self.dir, name), "rb") as f:
                return f.read() == data
        except OSError:
            return False

    def wait_for(self, name, data, timeout, alive=None):
        """perf_counter time of the first event on `name` after which it reads back as `data`.
        `alive`, if given, is polled twice a second: when it returns False the wait gives up."""
        end = time.perf_counter() + timeout
        while True:
            left = end - time.perf_counter()
            if left <= 0:
                raise TimeoutError(f"{name} not visible within {timeout} s")
            if not select.select([self.fd], [], [], min(left, 0.5))[0]:
                if alive and not alive():
                    raise RunFailed("the tool exited")
                continue
            t = time.perf_counter()
            buf = os.read(self.fd, 65536)
            off = 0
            while off < len(buf):
                _, _, _, ln = struct.unpack_from("iIII", buf, off)
                nm = buf[off + 16: off + 16 + ln].rstrip(b"\0").decode(errors="replace")
                off += 16 + ln
                if nm == name and self._complete(name, data):
                    return t
