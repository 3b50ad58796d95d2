#!/usr/bin/env python3
"""`ferry up` against its peer, `docker compose watch`, on the same Compose service.

Two figures (issue 10 part 8), each recorded with its samples in one JSON file:

- latency: save-to-visible of one small file, host->container for `ferry up` and for
  `docker compose watch` (its `sync` action on the same tree), interleaved sample by sample in
  one run; container->host for `ferry up` (compose watch has no such direction).
- startup: from launching `ferry up` (images built and cached, the container new, no archive)
  to the first edit made on the host being visible in the container, on a 10,000-file service;
  split into boot (until ferry prints the session), first sync (until it watches) and the edit.

Run as root, with the cargo lock held so no build shares the CPUs:

    flock /tmp/ferry-cargo.lock python3 bench/up.py                 # both
    flock /tmp/ferry-cargo.lock python3 bench/up.py --only latency --samples 60

How a sample is observed: the container's files live in its overlay upper directory on the host
(`docker inspect .GraphDriver.Data.UpperDir`); a file either tool writes in the container appears
there, and inotify on that directory times it with no `docker exec` per sample. Writes in the
container (container->host) go through one long-lived `docker exec -i sh`, which reads
`$EPOCHREALTIME` just before each write (same kernel clock as the host).
"""
import argparse
import json
import os
import queue
import random
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import FERRY, ROOT, BusyMeter, Proc, Watch, kill_all, log, median, pct  # noqa: E402

SAMPLE_TIMEOUT = 20.0
SAMPLE_GAP_S = (0.05, 1.05)

DOCKERFILE = """FROM scratch AS tools
COPY busybox /bin/busybox

FROM scratch
COPY --from=tools /bin/busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
WORKDIR /app
COPY src src
CMD ["/bin/sh", "-c", "exec sleep 1000000"]
"""

COMPOSE = """services:
  app:
    build:
      context: ./app
    stop_signal: SIGKILL
"""

WATCH = """    develop:
      watch:
        - action: sync
          path: ./app/src
          target: /app/src
"""


def sh(*cmd, cwd=None, check=True):
    p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {p.stderr.strip()[-400:]}")
    return p.stdout.strip()


def make_project(where, files, watch):
    """A compose project at `where`: one service `app` whose image copies `src` (`files` files of
    1-4 KiB, 100 per directory, plus `lat/`) to /app/src."""
    if os.path.exists(where):
        shutil.rmtree(where)
    src = os.path.join(where, "app", "src")
    rng = random.Random(42)
    for i in range(files):
        d = os.path.join(src, f"d{i // 10000:02}", f"s{(i // 100) % 100:02}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:06}.txt"), "wb") as f:
            f.write(rng.randbytes(rng.randint(1024, 4096)))
    os.makedirs(os.path.join(src, "lat"))
    with open(os.path.join(src, "lat", ".keep"), "w") as f:
        f.write("keep\n")
    shutil.copy("/bin/busybox", os.path.join(where, "app", "busybox"))
    os.chmod(os.path.join(where, "app", "busybox"), 0o755)
    with open(os.path.join(where, "app", "Dockerfile"), "w") as f:
        f.write(DOCKERFILE)
    with open(os.path.join(where, "app", ".dockerignore"), "w") as f:
        f.write("Dockerfile\n")
    with open(os.path.join(where, "compose.yaml"), "w") as f:
        f.write(COMPOSE + (WATCH if watch else ""))


class Project:
    def __init__(self, work, name, files, watch):
        self.dir = os.path.join(work, name)
        self.name = f"ferry-bench-up-{name}"
        self.src = os.path.join(self.dir, "app", "src")
        make_project(self.dir, files, watch)
        self.down()
        sh("docker", "compose", "-p", self.name, "build", cwd=self.dir)

    def compose(self, *args):
        return sh("docker", "compose", "-p", self.name, *args, cwd=self.dir)

    def down(self):
        subprocess.run(["docker", "compose", "-p", self.name, "down", "-t", "0"], cwd=self.dir,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @property
    def container(self):
        return f"{self.name}-app-1"

    def upper(self, rel=""):
        """The container's overlay upper directory (+ `/app/src/rel`)."""
        up = sh("docker", "inspect", "-f", "{{.GraphDriver.Data.UpperDir}}", self.container)
        return os.path.join(up, "app", "src", rel) if rel else up


class Writer:
    """`docker exec -i CONTAINER sh`: one command line per write, answered with the
    `$EPOCHREALTIME` read just before the write."""

    def __init__(self, container, scratch):
        self.acks = queue.Queue()
        self.p = Proc(["docker", "exec", "-i", container, "sh"],
                      on_line=lambda line: self.acks.put(line.split()),
                      stderr_path=os.path.join(scratch, f"writer-{container}.stderr"),
                      stdin=subprocess.PIPE)

    def write(self, path, text):
        self.p.p.stdin.write(f"t=$EPOCHREALTIME; printf %s '{text}' > {path}; echo W $t $?\n")
        self.p.p.stdin.flush()
        ack = self.acks.get(timeout=30)
        if len(ack) != 3 or ack[0] != "W" or ack[2] != "0":
            raise SystemExit(f"write in the container failed: {ack}")
        return float(ack[1]) - (time.time() - time.perf_counter())

    def close(self):
        self.p.stop()


def wait_file(path, data, timeout):
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        try:
            with open(path, "rb") as f:
                if f.read() == data:
                    return time.perf_counter()
        except OSError:
            pass
        time.sleep(0.002)
    raise SystemExit(f"{path} did not get its content within {timeout} s")


def probe(project, tag, timeout=300):
    """Writes probes on the host until one shows in the container (the tool is ready)."""
    end = time.time() + timeout
    i = 0
    while time.time() < end:
        name = f"probe-{tag}-{i}.txt"
        data = f"{name}\n".encode()
        with open(os.path.join(project.src, "lat", name), "wb") as f:
            f.write(data)
        try:
            wait_file(project.upper(f"lat/{name}"), data, 3)
            return
        except SystemExit:
            i += 1
    raise SystemExit(f"{tag}: no probe reached the container within {timeout} s")


def ferry_up(project, state, out_path):
    """`ferry up --json` in the project, with its own state directory; events collected."""
    env = dict(os.environ, XDG_STATE_HOME=state, COMPOSE_PROJECT_NAME=project.name)
    env.pop("COMPOSE_FILE", None)
    events = []

    def on_line(line):
        try:
            events.append((time.perf_counter(), json.loads(line)))
        except ValueError:
            pass

    cmd = ["sh", "-c", f"cd {project.dir} && exec {FERRY} up --json"]
    return Proc(cmd, env=env, on_line=on_line, stderr_path=out_path), events


def wait_event(proc, events, name, timeout=600):
    end = time.time() + timeout
    while time.time() < end:
        for t, e in list(events):
            if e.get("event") == name:
                return t
        if not proc.alive():
            raise SystemExit(f"ferry up exited before '{name}'")
        time.sleep(0.01)
    raise SystemExit(f"no '{name}' from ferry up within {timeout} s")


def stats(xs):
    return {"p50": round(pct(xs, 50), 2), "p90": round(pct(xs, 90), 2),
            "p99": round(pct(xs, 99), 2), "max": round(max(xs), 2), "n": len(xs)}


def latency(args, work):
    log(f"latency: two projects of {args.files} files (ferry up; docker compose watch)")
    fp = Project(work, "ferry", args.files, watch=False)
    wp = Project(work, "watch", args.files, watch=True)
    wp.compose("up", "-d")
    watch = Proc(["docker", "compose", "--project-directory", wp.dir,
                  "-f", os.path.join(wp.dir, "compose.yaml"), "-p", wp.name, "watch"],
                 stderr_path=os.path.join(work, "compose-watch.stderr"))
    state = os.path.join(work, "state-latency")
    shutil.rmtree(state, ignore_errors=True)
    up, events = ferry_up(fp, state, os.path.join(work, "ferry-up.stderr"))
    try:
        wait_event(up, events, "watching")
        probe(fp, "ferry")
        probe(wp, "watch")
        time.sleep(2)
        samples = {"ferry up": [], "docker compose watch": []}
        gaps = random.Random(args.samples)
        meter = BusyMeter().start()
        pairs = [("ferry up", fp), ("docker compose watch", wp)]
        watchers = {tool: Watch(p.upper("lat")) for tool, p in pairs}
        for i in range(args.samples):
            order = pairs if i % 2 == 0 else pairs[::-1]
            for tool, p in order:
                name = f"ab-{i:04}.txt"
                data = (name + "\n").encode() + b"x" * 100
                t0 = time.perf_counter()
                with open(os.path.join(p.src, "lat", name), "wb") as f:
                    f.write(data)
                t1 = watchers[tool].wait_for(name, data, SAMPLE_TIMEOUT)
                samples[tool].append(round((t1 - t0) * 1000, 3))
                time.sleep(gaps.uniform(*SAMPLE_GAP_S))
        busy_ab = meter.stop(0.0)
        for w in watchers.values():
            w.close()
        # container -> host, ferry only
        writer = Writer(fp.container, work)
        back = []
        meter = BusyMeter().start()
        with Watch(os.path.join(fp.src, "lat")) as w:
            for i in range(args.samples):
                name = f"ba-{i:04}.txt"
                text = name + "x" * 100
                t0 = writer.write(f"/app/src/lat/{name}", text)
                t1 = w.wait_for(name, text.encode(), SAMPLE_TIMEOUT)
                back.append(round((t1 - t0) * 1000, 3))
                time.sleep(gaps.uniform(*SAMPLE_GAP_S))
        busy_ba = meter.stop(0.0)
        writer.close()
    finally:
        up.stop()
        watch.stop()
        fp.down()
        wp.down()
    return {
        "files": args.files,
        "host->container": {tool: {"stats": stats(xs), "samples_ms": xs}
                            for tool, xs in samples.items()},
        "container->host": {"ferry up": {"stats": stats(back), "samples_ms": back}},
        "machine_busy": {"host->container": busy_ab, "container->host": busy_ba},
    }


def startup(args, work):
    """`--repeat` runs with the source as the image was built (the build is all cache), then
    `--repeat` runs after a new source file (`docker compose build` copies `src` again)."""
    log(f"startup: a {args.startup_files}-file service, {args.repeat} runs per case")
    p = Project(work, "startup", args.startup_files, watch=False)
    cases = {}
    for case in ("unchanged since the build", "a source file added since the build"):
        runs = []
        for r in range(args.repeat):
            p.down()
            state = os.path.join(work, f"state-startup-{len(cases)}-{r}")
            shutil.rmtree(state, ignore_errors=True)
            added = os.path.join(p.src, "lat", f"added-{r}.txt")
            if case.startswith("a source"):
                with open(added, "w") as f:
                    f.write("added\n")
            name = f"first-{r}.txt"
            edit = os.path.join(p.src, "lat", name)
            t0 = time.perf_counter()
            up, events = ferry_up(p, state, os.path.join(work, f"startup-{r}.stderr"))
            try:
                t_session = wait_event(up, events, "up_session")
                t_watch = wait_event(up, events, "watching")
                data = f"{name} edit\n".encode()
                seen_at = p.upper(f"lat/{name}")
                t_edit = time.perf_counter()
                with open(edit, "wb") as f:
                    f.write(data)
                t_seen = wait_file(seen_at, data, 60)
            finally:
                up.stop()
            # The source as built again, so that the next run's build is what its case says.
            for f in (edit, added):
                if os.path.exists(f):
                    os.unlink(f)
            if case.startswith("a source"):
                p.compose("build")
            run = {"total_s": round(t_seen - t0, 3), "boot_s": round(t_session - t0, 3),
                   "first_sync_s": round(t_watch - t_session, 3),
                   "edit_ms": round((t_seen - t_edit) * 1000, 2)}
            log(f"  {case}, run {r + 1}: {run}")
            runs.append(run)
        cases[case] = {"runs": runs, "median_total_s": median([r["total_s"] for r in runs])}
    p.down()
    return {"files": args.startup_files, "cases": cases}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="latency,startup")
    ap.add_argument("--files", type=int, default=3000, help="files in the latency service")
    ap.add_argument("--samples", type=int, default=60)
    ap.add_argument("--startup-files", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", default="/var/tmp/ferry-bench-up")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/up.py: run as root (it reads containers' overlay directories)")
    if not os.access(FERRY, os.X_OK):
        raise SystemExit(f"bench/up.py: no {FERRY}: cargo build --release -p ferry")
    os.makedirs(args.work, exist_ok=True)
    doc = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(sys.argv),
        "ferry": {"commit": sh("git", "rev-parse", "--short", "HEAD", cwd=ROOT),
                  "binary": FERRY},
        "compose": sh("docker", "compose", "version", "--short"),
        "nproc": os.cpu_count(),
    }
    try:
        if "latency" in args.only:
            doc["latency"] = latency(args, args.work)
        if "startup" in args.only:
            doc["startup"] = startup(args, args.work)
    finally:
        kill_all()
    doc["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = args.out or os.path.join(
        ROOT, "bench", "runs", time.strftime("%Y-%m-%d-up-vs-compose-watch.json", time.gmtime()))
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
    if "latency" in doc:
        lat = doc["latency"]
        for direction in ("host->container", "container->host"):
            for tool, r in lat[direction].items():
                s = r["stats"]
                print(f"{direction:16} {tool:22} p50 {s['p50']:8.2f} ms  p90 {s['p90']:8.2f}"
                      f"  p99 {s['p99']:8.2f}  max {s['max']:8.2f}  (n={s['n']})")
        print(f"machine busy: {lat['machine_busy']}")
    if "startup" in doc:
        st = doc["startup"]
        for case, c in st["cases"].items():
            print(f"ferry up -> first synced edit, {st['files']} files, {case}: median "
                  f"{c['median_total_s']} s; runs {c['runs']}")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
