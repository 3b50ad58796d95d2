#!/usr/bin/env python3
"""ferry's benchmark: ferry beside rsync, unison, lsyncd, cp and tar, scenario by scenario.

    python3 bench/run.py [--no-build] [--no-setup] [--only first,noop,edit,latency,burst,idle]
                         [--corpora small,big,linux] [--targets local,docker] [--files 100000]
                         [--samples 100] [--repeat 3] [--idle-seconds 60] [--big-mib 256]
                         [--work /var/tmp/ferry-bench] [--skip-slow] [--readme]
                         [--from-json FILE]

Needs root (every destination is a fresh tmpfs); --targets docker needs the local Docker daemon
and ferry's static agent. Prints a table, writes
bench/results/<UTC time>.json, latest.json, latency.svg and throughput.svg. See bench/README.md.
"""
import argparse
import datetime
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys

import charts
import corpora
import report
import tools
from common import FERRY, ROOT, RunFailed, kill_all, log
from scenarios import SCENARIO_CORPORA, SCENARIO_FUNCS, Context
from targets import DOCKER_IMAGE, TARGETS, TMPFS_OPTIONS, LocalTarget, unmount_all

RESULTS = os.path.join(ROOT, "bench", "results")
README = os.path.join(ROOT, "README.md")
SETUP = os.path.join(ROOT, "bench", "setup.sh")
FSMONITOR = os.path.join(tools.FSMONITOR_DIR, "unison-fsmonitor")
WATCHING = ("latency", "burst", "idle")
# peers whose command is not their name
PEER_COMMANDS = {"rsync-pipe": "rsync", "docker-cp": "docker", "docker-tar": "docker"}


def csv(choices):
    """argparse type: a comma-separated subset of `choices`, kept in the choices' order."""
    def parse(text):
        picked = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in picked if x not in choices]
        if bad or not picked:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)}")
        return [c for c in choices if c in picked]
    return parse


def parse_args():
    ap = argparse.ArgumentParser(description="ferry's benchmark (see bench/README.md)")
    ap.add_argument("--no-build", action="store_true", help="use target/release/ferry as it is")
    ap.add_argument("--no-setup", action="store_true", help="never run bench/setup.sh")
    ap.add_argument("--only", type=csv(list(SCENARIO_FUNCS)), default=list(SCENARIO_FUNCS),
                    help="scenarios to run (default: all)")
    ap.add_argument("--corpora", type=csv(["small", "big", "linux"]), default=["small", "big", "linux"])
    ap.add_argument("--targets", type=csv(list(TARGETS)), default=["local"],
                    help="endpoint kinds for the beta side: local (tmpfs), docker (a tmpfs "
                         "volume in a new container)")
    ap.add_argument("--files", type=int, default=100_000, help="files in the small corpus")
    ap.add_argument("--samples", type=int, default=100, help="latency samples per tool and direction")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each cheap timed command")
    ap.add_argument("--idle-seconds", type=int, default=60)
    ap.add_argument("--big-mib", type=int, default=256, help="size of each of the 4 big files")
    ap.add_argument("--work", default="/var/tmp/ferry-bench", help="corpora cache and mount points")
    ap.add_argument("--skip-slow", action="store_true", help="leave unison out on the linux corpus")
    ap.add_argument("--readme", action="store_true",
                    help="rewrite README.md between <!-- bench:start --> and <!-- bench:end -->")
    ap.add_argument("--from-json", metavar="FILE",
                    help="run nothing: print the table and write the charts (and README) from FILE")
    args = ap.parse_args()
    for name in ("files", "samples", "repeat", "idle_seconds", "big_mib"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    args.work = os.path.abspath(args.work)
    return args


# --- preflight -------------------------------------------------------------------------------

def needed_corpora(args):
    return [c for c in args.corpora if any(c in SCENARIO_CORPORA[s] for s in args.only)]


def missing(args, targets):
    """Commands and files this run needs that are not there."""
    need = {"mount", "umount", "tar", "bash"}
    for t in targets:
        need.update(t.needs())
        for scenario in args.only:
            need.update(PEER_COMMANDS.get(p, p) for p in t.peers(scenario))
    if "linux" in needed_corpora(args):
        need.update(("dpkg-deb", "xz"))
    out = sorted(c for c in need if not shutil.which(c))
    if any("unison" in t.peers(s) for t in targets for s in args.only if s in WATCHING) \
            and not os.access(FSMONITOR, os.X_OK):
        out.append(FSMONITOR)
    return out


def preflight(args, targets):
    """Exit with a one-line reason unless everything the run needs is there (setting it up and
    building ferry first unless told not to)."""
    if os.geteuid() != 0:
        sys.exit("bench/run.py needs root: every destination is a fresh tmpfs mount")
    if args.readme:
        report.check_readme(README)
    lacking = missing(args, targets)
    if lacking and not args.no_setup:
        log(f"missing {', '.join(lacking)}: running bench/setup.sh")
        if subprocess.run(["bash", SETUP]).returncode != 0:
            sys.exit("bench/setup.sh failed")
        lacking = missing(args, targets)
    if lacking:
        sys.exit(f"missing {', '.join(lacking)} (bench/setup.sh installs the peers)")
    if not args.no_build:
        if not shutil.which("cargo"):
            sys.exit("cargo not found (or pass --no-build to use target/release/ferry as it is)")
        log("cargo build --release")
        if subprocess.run(["cargo", "build", "--release"], cwd=ROOT).returncode != 0:
            sys.exit("cargo build --release failed")
    if not os.access(FERRY, os.X_OK):
        sys.exit(f"{FERRY} not found: build it (cargo build --release) or drop --no-build")
    for t in targets:
        try:
            t.prepare()
        except RunFailed as e:
            sys.exit(f"target {t.name}: {e}")


# --- the document's description of the run ---------------------------------------------------

def first_line(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unavailable"


def machine(work, targets=("local",)):
    with open("/proc/cpuinfo") as f:
        cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "unknown")
    with open("/proc/meminfo") as f:
        ram_kib = int(next(l for l in f if l.startswith("MemTotal")).split()[1])
    with open("/proc/mounts") as f:
        mounts = [l.split()[1:3] for l in f]
    work_fs = max((m for m in mounts if work == m[0] or work.startswith(m[0].rstrip("/") + "/")),
                  key=lambda m: len(m[0]))[1]
    return {"cpu": cpu, "nproc": os.cpu_count(), "ram_gib": round(ram_kib / 2 ** 20, 1),
            "kernel": os.uname().release,
            "filesystems": f"destinations on tmpfs ({TMPFS_OPTIONS}"
                           + ("; docker: tmpfs volumes in new containers" if "docker" in targets
                              else "") + f"), corpora on {work_fs}"}


def versions(targets):
    fsmonitor = "not installed"
    if os.access(FSMONITOR, os.X_OK):
        fsmonitor = "installed"
        if shutil.which("cargo"):
            listed = subprocess.run(["cargo", "install", "--list", "--root", "/opt/ferry-bench"],
                                    capture_output=True, text=True).stdout
            fsmonitor = next((l.rstrip(":") for l in listed.splitlines()
                              if l.startswith("unison-fsmonitor")), fsmonitor)
    return {"ferry": first_line([FERRY, "--version"]), "rsync": first_line(["rsync", "--version"]),
            "unison": first_line(["unison", "-version"]), "unison-fsmonitor": fsmonitor,
            "lsyncd": first_line(["lsyncd", "--version"]), "tar": first_line(["tar", "--version"]),
            "cp": first_line(["cp", "--version"]), "python": sys.version.split()[0],
            **({"docker": "Docker Engine " + first_line(["docker", "version", "--format",
                                                         "{{.Server.Version}}"]),
                "container image": f"{DOCKER_IMAGE}: FROM scratch + "
                                   + first_line(["/bin/busybox"])}
               if any(t.name == "docker" for t in targets) else {})}


def ferry_build(targets):
    """Commit of the work tree (dirty: something outside bench/ differs) and the binary used
    (and the tag of the static agent it installs, for remote targets)."""
    def git(*a):
        try:
            return subprocess.run(["git", "-C", ROOT, *a], capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""
    def describe(path):
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:16]
        mtime = datetime.datetime.fromtimestamp(os.stat(path).st_mtime, datetime.timezone.utc)
        return digest, mtime.strftime("%Y-%m-%dT%H:%M:%SZ")
    digest, mtime = describe(FERRY)
    out = {"commit": git("rev-parse", "--short", "HEAD") or "unknown",
           "dirty": bool(git("status", "--porcelain", "--", ".", ":(exclude)bench")),
           "binary_sha256": digest, "binary_mtime": mtime}
    for t in targets:
        if getattr(t, "agent_tag", None):
            out["agent_tag"] = t.agent_tag
    return out


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parameters(args):
    keys = ("only", "corpora", "targets", "files", "samples", "repeat", "idle_seconds", "big_mib",
            "skip_slow", "work")
    return {k: getattr(args, k) for k in keys}


# --- main ------------------------------------------------------------------------------------

def measure(args, targets):
    """Run the selected scenarios; returns the results document."""
    doc = {"schema": 1, "started": utc_now(), "machine": machine(args.work, args.targets),
           "tools": versions(targets), "ferry": ferry_build(targets),
           "parameters": parameters(args)}
    results = report.Results()
    corpora_by_name = {}
    for name in needed_corpora(args):
        corpora_by_name[name] = corpora.ensure(name, args)
    doc["corpora"] = {c.name: dict(c.info, path=c.path) for c in corpora_by_name.values()}
    ctx = Context(args, targets, LocalTarget(args.work), corpora_by_name, results)
    for scenario in args.only:
        log(f"scenario {scenario}")
        SCENARIO_FUNCS[scenario](ctx)
    doc["finished"] = utc_now()
    doc["figures"] = results.dicts()
    return doc


def publish(doc, args, json_path=None):
    """Print the table, write the charts and, with --readme, the README section."""
    print(report.text_table(doc))
    if json_path:
        log(f"wrote {json_path} and {os.path.join(RESULTS, 'latest.json')}")
    written, removed = charts.write_charts(doc, RESULTS)
    for path in written:
        log(f"wrote {path}")
    for path in removed:
        log(f"removed {path}: this run has no figures for it")
    if args.readme:
        report.update_readme(README, doc)
        log("updated the performance section of README.md")


def on_term(signum, frame):
    raise KeyboardInterrupt


def main():
    args = parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            doc = json.load(f)
        if args.readme:
            report.check_readme(README)
        publish(doc, args)
        return
    targets = [TARGETS[name](args.work) for name in args.targets]
    preflight(args, targets)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    os.makedirs(args.work, exist_ok=True)
    unmount_all(under=args.work)  # a crashed run's leftovers
    tools.init(args.work)
    try:
        doc = measure(args, targets)
    except KeyboardInterrupt:
        sys.exit("interrupted: nothing written")
    finally:
        kill_all()
        for t in targets:
            t.cleanup()
        unmount_all(under=args.work)
    publish(doc, args, report.write_json(doc, RESULTS))


if __name__ == "__main__":
    main()
