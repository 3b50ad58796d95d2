#!/usr/bin/env python3
"""Quick figures for the sync engine, beside rsync and tar, in one run.

Usage: python3 bench/quick.py [--files 100000] [--samples 100] [--work /tmp/ferry-bench]

Builds nothing: run `cargo build --release` first (the script uses target/release/ferry).
Needs root for the tmpfs destinations (as recommended in ../shared/bench-notes.md) and rsync.
Prints a table and writes bench/results/quick-<time>.json.
"""
import argparse, ctypes, json, os, random, select, shutil, signal, statistics, struct
import subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FERRY = os.path.join(ROOT, "target", "release", "ferry")

def cpu_busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)

def timed(cmd, **kw):
    b0, t0c = cpu_busy()
    t0 = time.perf_counter()
    r = subprocess.run(cmd, shell=isinstance(cmd, str), stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    dt = time.perf_counter() - t0
    b1, t1c = cpu_busy()
    if r.returncode not in (0,):
        sys.exit(f"command failed ({r.returncode}): {cmd}\n{r.stderr.decode()[-2000:]}")
    return dt, r.stdout.decode(), (b1 - b0) / max(1, t1c - t0c)

def make_corpus(path, n):
    """n files of 1-4 KiB, 100 per directory, two levels deep; same seed, same bytes."""
    if os.path.exists(os.path.join(path, ".done")):
        return
    shutil.rmtree(path, ignore_errors=True)
    rnd = random.Random(42)
    for i in range(n):
        d = os.path.join(path, f"d{i // 10000:02}", f"s{(i // 100) % 100:02}")
        if i % 100 == 0:
            os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:06}.txt"), "wb") as f:
            f.write(rnd.randbytes(rnd.randint(1024, 4096)))
    open(os.path.join(path, ".done"), "w").close()

def tmpfs(path):
    subprocess.run(["umount", path], stderr=subprocess.DEVNULL)
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6g,mode=0755", "ferrybench", path], check=True)

# --- inotify through ctypes, to time the moment a file appears without polling -------------
libc = ctypes.CDLL("libc.so.6", use_errno=True)
IN_CREATE, IN_MOVED_TO, IN_CLOSE_WRITE = 0x100, 0x80, 0x8

class Watch:
    def __init__(self, d):
        self.fd = libc.inotify_init1(os.O_NONBLOCK)
        libc.inotify_add_watch(self.fd, d.encode(), IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE)
    def wait_for(self, name, timeout=10.0):
        end = time.perf_counter() + timeout
        while True:
            left = end - time.perf_counter()
            if left <= 0:
                raise TimeoutError(name)
            r, _, _ = select.select([self.fd], [], [], left)
            if not r:
                continue
            t = time.perf_counter()
            buf = os.read(self.fd, 65536)
            off = 0
            while off < len(buf):
                _, mask, _, ln = struct.unpack_from("iIII", buf, off)
                nm = buf[off + 16: off + 16 + ln].rstrip(b"\0").decode()
                off += 16 + ln
                if nm == name:
                    return t

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

def latency(src, dst, samples, direction):
    """Save a small file on one side, time until it is visible on the other."""
    a, b = (src, dst) if direction == "alpha->beta" else (dst, src)
    w = Watch(b)
    out = []
    for i in range(samples):
        name = f"lat-{direction[0]}-{os.getpid()}-{i}.txt"
        t0 = time.perf_counter()
        with open(os.path.join(a, name), "wb") as f:
            f.write(b"x" * 100)
        t1 = w.wait_for(name)
        out.append((t1 - t0) * 1000)
        time.sleep(0.05)
    return out

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--work", default="/tmp/ferry-bench")
    args = ap.parse_args()
    if not os.path.exists(FERRY):
        sys.exit("run `cargo build --release` first")
    os.makedirs(args.work, exist_ok=True)
    corpus = os.path.join(args.work, f"corpus-{args.files}")
    make_corpus(corpus, args.files)
    shutil.rmtree(os.path.join(corpus, "lat"), ignore_errors=True)  # a crashed run's leftovers
    mnt = os.path.join(args.work, "mnt")
    env = dict(os.environ, XDG_STATE_HOME=os.path.join(mnt, "state"))
    res = {"files": args.files, "machine": os.uname().nodename, "nproc": os.cpu_count()}
    subprocess.run("sync", shell=True)
    subprocess.run(["tar", "cf", "/dev/null", corpus])  # warm the page cache

    tmpfs(mnt)
    res["tar_first_s"], _, _ = timed(f"mkdir {mnt}/tar && tar c -C {corpus} . | tar x -C {mnt}/tar")
    res["rsync_first_s"], _, _ = timed(["rsync", "-a", corpus + "/", f"{mnt}/rsync/"])
    res["rsync_noop_s"], _, _ = timed(["rsync", "-a", corpus + "/", f"{mnt}/rsync/"])
    res["ferry_first_s"], out, _ = timed([FERRY, "sync", corpus, f"{mnt}/ferry", "--once", "--json"], env=env)
    # The first run after the copy re-hashes what ferry just wrote (written within the kernel's
    # timestamp granularity, so not trusted from the stat cache yet); later runs do not.
    res["ferry_noop_after_copy_s"], _, _ = timed([FERRY, "sync", corpus, f"{mnt}/ferry", "--once"], env=env)
    res["ferry_noop_s"], out, _ = timed([FERRY, "sync", corpus, f"{mnt}/ferry", "--once", "--json"], env=env)
    ends = [json.loads(l) for l in out.splitlines() if '"cycle_end"' in l]
    res["ferry_noop_cycle_ms"] = ends[-1]["duration_ms"]
    res["ferry_noop_phases_ms"] = ends[-1]["phases_ms"]
    # rsync after a one-file change: its save-to-visible figure on this tree.
    with open(os.path.join(corpus, "d00", "s00", "f000000.txt"), "ab") as f:
        f.write(b"!")
    res["rsync_one_change_s"], _, _ = timed(["rsync", "-a", corpus + "/", f"{mnt}/rsync/"])
    timed([FERRY, "sync", corpus, f"{mnt}/ferry", "--once"], env=env)

    # Continuous mode: latency both ways on the full tree.
    p = subprocess.Popen([FERRY, "sync", corpus, f"{mnt}/ferry", "--json"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in p.stdout:
        if '"watching"' in line:
            break
    # Keep draining ferry's event lines (a full pipe would stall it) into a log for diagnosis.
    import threading
    log = open(os.path.join(args.work, "ferry-watch.log"), "w")
    threading.Thread(target=lambda: [log.write(l) for l in p.stdout], daemon=True).start()
    lat_dir = os.path.join(corpus, "lat")
    os.makedirs(lat_dir, exist_ok=True)
    peer = os.path.join(mnt, "ferry", "lat")
    deadline = time.time() + 30
    while not os.path.isdir(peer) and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    for d in ("alpha->beta", "beta->alpha"):
        xs = latency(lat_dir, peer, args.samples, d)
        res[f"latency_{d}_ms"] = {"p50": pct(xs, 50), "p90": pct(xs, 90), "p99": pct(xs, 99), "max": max(xs)}
    p.send_signal(signal.SIGINT)
    p.wait(timeout=30)
    shutil.rmtree(lat_dir)
    subprocess.run(["umount", mnt])

    print(f"{'figure':45} {'value':>12}")
    for k, v in res.items():
        if isinstance(v, dict):
            v = " ".join(f"{kk}={vv:.0f}" for kk, vv in v.items())
        elif isinstance(v, float):
            v = f"{v:.3f}"
        print(f"{k:45} {v!s:>12}")
    print(f"ferry/tar first sync: {res['ferry_first_s'] / res['tar_first_s']:.2f}x   "
          f"ferry/rsync first sync: {res['ferry_first_s'] / res['rsync_first_s']:.2f}x   "
          f"ferry/rsync no-op: {res['ferry_noop_s'] / res['rsync_noop_s']:.2f}x")
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", f"quick-{int(time.time())}.json"), "w") as f:
        json.dump(res, f, indent=1)

if __name__ == "__main__":
    main()
