"""The six scenarios. Each takes the run's Context and adds figures to ctx.results.

A tool that fails or times out gets its figure recorded as failed with the reason, and the
scenario goes on with the next tool. Every destination is a fresh Dest closed (unmounted) at the
end of the `with` that made it; every watching tool is stopped at the end of its `with`.
"""
import os
import random
import time

import corpora
from common import BusyMeter, RunFailed, log, median, pct, run_timed
from tools import ONESHOT, SESSIONS, FerryWatch

FAILURES = (RunFailed, TimeoutError, OSError, ValueError)
ONESHOT_TIMEOUT = 1800
SAMPLE_TIMEOUT = 30
BURST_FILES = 5000
BURST_TIMEOUT = 600
RESCANS = 5
SETTLE_S = 5
# Pause between latency samples: 50 ms plus a seeded random part up to 1 s, so that samples do
# not lock onto the phase of a tool that polls (unison's watch mode works on a ~1 s period: with
# a fixed 50 ms gap every sample lands just after its tick and reads ~950 ms).
SAMPLE_GAP_S = (0.05, 1.05)
DIRECTIONS = ("alpha->beta", "beta->alpha")
SCENARIO_CORPORA = {"first": ("small", "big", "linux"), "noop": ("small", "linux"),
                    "edit": ("big",), "latency": ("small",), "burst": ("small",),
                    "idle": ("small",)}
TMPFS_NOTE = "destinations on tmpfs"
LSYNCD_NOTE = "lsyncd is one-way per instance: beta->alpha is measured with a second instance"
# (figure notes are split into lines at "; ")
DOCKER_NOTE = ("alpha: a host tmpfs, beta: a tmpfs volume in a new container (FROM scratch + "
               "busybox) with ferry's agent installed before anything is timed")
DOCKER_LATENCY_NOTE = ("beta->alpha: written by a long-lived `docker exec -i sh` in the "
                       "container and timed there ($EPOCHREALTIME just before the write, the "
                       "kernel's clock as on the host); arrivals on beta: inotify from the host "
                       "on the volume's tmpfs (the same inodes)")
FERRY_ONE_PROCESS = "ferry local to local is one process serving both sides"


class Context:
    """What the scenarios share: arguments, targets, the local target for alpha copies,
    corpora by name and the results."""

    def __init__(self, args, targets, local, corpora_by_name, results):
        self.args, self.targets, self.local = args, targets, local
        self.corpora, self.results = corpora_by_name, results

    def corpora_for(self, scenario):
        return [self.corpora[n] for n in SCENARIO_CORPORA[scenario] if n in self.corpora]

    def skipped(self, target, scenario, corpus=None):
        """Peers left out: --skip-slow drops unison on the linux corpus."""
        slow = self.args.skip_slow and corpus is not None and corpus.name == "linux"
        return [p for p in target.peers(scenario) if slow and p == "unison"]

    def tools(self, target, scenario, corpus=None):
        """ferry and the target's peers for a scenario, less the skipped ones."""
        skipped = self.skipped(target, scenario, corpus)
        return ["ferry"] + [p for p in target.peers(scenario) if p not in skipped]

    def skip_note(self, target, scenario, corpus, note=None):
        """A figure note, extended with the peers left out."""
        skipped = self.skipped(target, scenario, corpus)
        extra = f"{', '.join(skipped)} left out on {corpus.name} (--skip-slow)" if skipped else None
        return "; ".join(n for n in (note, extra) if n) or None


def oneshot(tool, src, dest):
    """Run a one-shot tool, timed; its parsed output goes to the sample's `extra`."""
    t = ONESHOT[tool]
    s = run_timed(t.command(src, dest), env=t.env(dest), timeout=ONESHOT_TIMEOUT,
                  extra_cpu=dest.extra_cpu_s if dest.remote else None)
    extra = t.parse(s.pop("stdout"))
    if extra:
        s["extra"] = extra
    return s


def mismatch(diffs):
    """A short description of tree differences, or None."""
    if not diffs:
        return None
    return f"{len(diffs)} differences, e.g. " + "; ".join(diffs[:3])


# --- first sync ------------------------------------------------------------------------------

def first(ctx):
    """First sync into a fresh, empty destination, --repeat times per tool, interleaved."""
    connects = {}  # remote targets: ferry's first connection to each new destination
    for corpus in ctx.corpora_for("first"):
        corpora.warm_cache(corpus.path)
        for target in ctx.targets:
            note = DOCKER_NOTE if target.remote else TMPFS_NOTE
            fig = ctx.results.figure("first", target.name, "first", "first sync", "s",
                                     corpus=corpus.label(),
                                     note=ctx.skip_note(target, "first", corpus, note))
            tools = ctx.tools(target, "first", corpus)
            samples = {t: [] for t in tools}
            failed, incomplete = {}, {}
            for r in range(ctx.args.repeat):
                for tool in (t for t in tools if t not in failed):
                    log(f"first {corpus.name} {target.name} {tool} run {r + 1}")
                    try:
                        with target.fresh(f"first-{tool}") as dest:
                            if getattr(dest, "connect_sample", None):
                                connects.setdefault(target.name, []).append(dest.connect_sample)
                            samples[tool].append(oneshot(tool, corpus.path, dest))
                            if r == 0:
                                incomplete[tool] = mismatch(dest.diff(corpus.path))
                    except FAILURES as e:
                        failed[tool] = e
            for tool in tools:
                if tool in failed:
                    fig.failed(tool, failed[tool], samples[tool])
                else:
                    fig.ok_median(tool, samples[tool], incomplete=incomplete.get(tool))
    for target in ctx.targets:
        if target.name in connects:
            ctx.results.figure(
                "first", target.name, "first-connect",
                "first connection to a new container (agent upload, empty tree)", "s",
                note="first connection: the agent install made (untimed) before each first sync "
                     "above, timed on its own: connect, upload the agent, sync an empty tree"
            ).ok_median("ferry", connects[target.name])


# --- no-op -----------------------------------------------------------------------------------

def rescans(session, n):
    """duration_ms and phases of the next n full-rescan cycles of a watching ferry."""
    out = []
    session.tool_ready(ONESHOT_TIMEOUT)
    last_cycle = max((e["cycle"] for e in list(session.events) if "cycle" in e), default=0)
    for _ in range(n):
        start = session.wait_event(lambda e: e.get("event") == "cycle_start" and e.get("full_scan")
                                   and e["cycle"] > last_cycle, 120)
        end = session.wait_event(lambda e: e.get("event") == "cycle_end"
                                 and e["cycle"] == start["cycle"], 120)
        last_cycle = start["cycle"]
        out.append({"duration_s": end["duration_ms"] / 1000, "phases_ms": end.get("phases_ms")})
    return out


def noop_ferry(ctx, corpus, target, figs):
    """ferry on an unchanged tree: restart right after the copy, restarts, rescans in session."""
    after_copy, restart, rescan = figs
    with target.fresh("noop-ferry") as dest:
        try:
            oneshot("ferry", corpus.path, dest)
            after_copy.ok_median("ferry", [oneshot("ferry", corpus.path, dest)])
        except FAILURES as e:
            for fig in figs:
                fig.failed("ferry", e)
            return
        try:
            restart.ok_median("ferry", [oneshot("ferry", corpus.path, dest)
                                        for _ in range(ctx.args.repeat)])
        except FAILURES as e:
            restart.failed("ferry", e)
        try:
            with FerryWatch(corpus, dest, ["--rescan-interval", "1"]) as session:
                rescan.ok_median("ferry", rescans(session, RESCANS), key="duration_s")
        except FAILURES as e:
            rescan.failed("ferry", e)


def noop(ctx):
    """Sync again with nothing changed, after a first sync."""
    for corpus in ctx.corpora_for("noop"):
        corpora.warm_cache(corpus.path)
        for target in ctx.targets:
            label = corpus.label()
            fig = lambda key, text, note=None: ctx.results.figure(
                "noop", target.name, key, text, "s", corpus=label, note=note)
            figs = (fig("noop-after-copy", "ferry's first restart after the copy",
                        "ferry re-hashes files it wrote within the timestamp granularity on its "
                        "first restart"),
                    fig("noop", "no-op sync (ferry: --once restart)",
                        ctx.skip_note(target, "noop", corpus)),
                    fig("noop-rescan", "full rescan while watching", "rescan: duration_ms of "
                        "ferry's periodic full-scan cycles (--rescan-interval 1)"))
            log(f"noop {corpus.name} {target.name} ferry")
            noop_ferry(ctx, corpus, target, figs)
            for tool in ctx.tools(target, "noop", corpus)[1:]:
                log(f"noop {corpus.name} {target.name} {tool}")
                try:
                    with target.fresh(f"noop-{tool}") as dest:
                        oneshot(tool, corpus.path, dest)
                        figs[1].ok_median(tool, [oneshot(tool, corpus.path, dest)
                                                 for _ in range(ctx.args.repeat)])
                except FAILURES as e:
                    figs[1].failed(tool, e)


# --- one-byte edit ---------------------------------------------------------------------------

EDITED = "f0.bin"


def transferred(tool, sample):
    extra = sample.get("extra", {})
    if tool == "ferry":
        return extra["bytes"]
    return extra["bytes_sent"] + (extra["bytes_received"] if tool == "rsync-pipe" else 0)


def on_wire(tool, sample):
    """Bytes the connection carried: ferry's wire_bytes, rsync-pipe's sent + received."""
    if tool == "ferry":
        return sample["extra"]["wire_bytes"]
    return transferred(tool, sample)


def edit(ctx):
    """Each tool syncs its own copy of `big`; then the middle byte of one file flips, --repeat
    times (back and forth), and each flip is synced and timed. On a remote target ferry's bytes
    on the wire are a figure of their own, and ferry also syncs flips made on the far side."""
    for corpus in ctx.corpora_for("edit"):
        for target in ctx.targets:
            label = corpus.label()
            fig = lambda key, text, unit, note=None: ctx.results.figure(
                "edit", target.name, key, text, unit, corpus=label, note=note)
            ref = (f"{', '.join(target.local_reference)}: measured between two local tmpfs "
                   "directories, for reference (the container has no rsync)"
                   if target.local_reference else None)
            t_fig = fig("edit-time", "sync after the edit" + (" (alpha->beta)" if target.remote
                                                              else ""), "s",
                        "rsync-pipe: rsync through a pipe (-e), so it uses its delta algorithm"
                        + ("" if target.remote else "; local rsync copies whole files"))
            b_fig = fig("edit-bytes", "bytes transferred", "bytes",
                        "ferry: cycle_end bytes" + (" (the size of the content that changed, "
                                                    "however it crossed)" if target.remote
                                                    else "")
                        + "; rsync: Total bytes sent (rsync-pipe: sent + received)")
            remote = {}
            if target.remote:
                remote = {
                    "wire": fig("edit-wire", "bytes on the wire (alpha->beta)", "bytes",
                                "; ".join(filter(None, (
                                    "ferry: wire_bytes summed over the run's cycles (both ways, "
                                    "framing included, no compression on a local Docker socket)",
                                    "rsync-pipe: sent + received", ref, DOCKER_NOTE)))),
                    "back-time": fig("edit-time-beta->alpha",
                                     "sync after an edit made in the container (beta->alpha)", "s"),
                    "back-wire": fig("edit-wire-beta->alpha", "bytes on the wire (beta->alpha)",
                                     "bytes"),
                }
            for tool in ctx.tools(target, "edit"):
                log(f"edit {target.name} {tool}")
                where = ctx.local if tool in target.local_reference else target
                reverse = target.remote and tool == "ferry"
                try:
                    samples, back = edit_runs(ctx, corpus, where, tool, reverse)
                    t_fig.ok_median(tool, samples)
                    sent = [transferred(tool, s) for s in samples]
                    b_fig.ok(tool, median(sent), sent)
                    if remote:
                        wire = [on_wire(tool, s) for s in samples]
                        remote["wire"].ok(tool, median(wire), wire)
                    if back:
                        remote["back-time"].ok_median(tool, back)
                        wire = [on_wire(tool, s) for s in back]
                        remote["back-wire"].ok(tool, median(wire), wire)
                except (*FAILURES, KeyError) as e:
                    figs = [t_fig, b_fig] + ([remote["wire"]] if remote else [])
                    figs += [remote["back-time"], remote["back-wire"]] if reverse else []
                    for f in figs:
                        f.failed(tool, e)


def check_edit(alpha, dest, when):
    """The destination equals alpha (through the view), and the edited file's digest read on
    each side is the same."""
    diffs = dest.diff(alpha.path)
    if diffs:
        raise RunFailed(f"destination differs {when}: " + mismatch(diffs))
    a, b = alpha.file_digest(EDITED), dest.file_digest(EDITED)
    if a != b:
        raise RunFailed(f"{EDITED} differs {when}: sha256 {a[:16]} vs {b[:16]}")


def edit_runs(ctx, corpus, target, tool, reverse=False):
    """Pre-sync a fresh copy with the tool's own kind of first sync, then time the edits. ferry
    gets one more untimed run first: right after a copy it re-hashes what it just wrote (see
    noop), which an edit made later would not see. With reverse, then as many flips made on the
    destination's side, each synced back (after one more untimed run, for the same reason).
    Returns (samples, reverse samples)."""
    with ctx.local.fresh("edit-alpha") as alpha, target.fresh(f"edit-{tool}") as dest:
        alpha.fill(corpus.path)
        oneshot("ferry" if tool == "ferry" else "rsync", alpha.path, dest)
        if tool == "ferry":
            oneshot("ferry", alpha.path, dest)
        samples = []
        for _ in range(ctx.args.repeat):
            alpha.flip_middle_byte(EDITED)
            samples.append(oneshot(tool, alpha.path, dest))
        check_edit(alpha, dest, "after the edits")
        back = []
        if reverse:
            oneshot(tool, alpha.path, dest)
            for _ in range(ctx.args.repeat):
                dest.flip_middle_byte(EDITED)
                back.append(oneshot(tool, alpha.path, dest))
            check_edit(alpha, dest, "after the edits made on the far side")
        return samples, back


# --- watching: latency, burst, idle ----------------------------------------------------------

def watched_pair(ctx, corpus, target, tool, prepare=None):
    """(alpha, beta): a tmpfs copy of the corpus and a fresh destination for a watching tool."""
    alpha = ctx.local.fresh(f"{tool}-alpha")
    try:
        alpha.fill(corpus.path)
        if prepare:
            prepare(alpha)
        return alpha, target.fresh(f"{tool}-beta")
    except BaseException:
        alpha.close()
        raise


def latency_series(session, src, dst, direction, n):
    """n save-to-visible times (ms) from src to dst through a running session."""
    out = []
    gaps = random.Random(n)
    meter = BusyMeter().start()
    cpu0 = session.cpu_s()
    events0 = len(getattr(session, "events", ()))
    with dst.watcher("lat") as w:
        for i in range(n):
            name = f"{'ab' if direction == 'alpha->beta' else 'ba'}-{i:04}.txt"
            data = (name + "\n").encode() + b"x" * 100
            t0 = time.perf_counter()
            src.write("lat/" + name, data)
            try:
                t1 = w.wait_for(name, data, SAMPLE_TIMEOUT, alive=session.alive)
            except RunFailed:
                raise RunFailed(session.failure())
            t0 = src.write_started() or t0  # a remote side's own clock, when it has one
            out.append(round((t1 - t0) * 1000, 3))
            time.sleep(gaps.uniform(*SAMPLE_GAP_S))
    cpu = session.cpu_s() - cpu0
    extra = dict(meter.stop(cpu), tool_cpu_s=round(cpu, 3))
    if hasattr(session, "events"):
        extra["ferry_cycles"] = cycle_summary(session.events[events0:])
    return out, extra


def cycle_summary(events):
    """Medians over a watching ferry's cycles: duration_ms, wire_bytes, each phase."""
    ends = [e for e in events if e.get("event") == "cycle_end"]
    if not ends:
        return {"cycles": 0}
    med = lambda xs: round(median(xs), 3)
    phases = sorted({k for e in ends for k in e.get("phases_ms", {})})
    return {"cycles": len(ends), "duration_ms_p50": med([e["duration_ms"] for e in ends]),
            "wire_bytes_p50": med([e.get("wire_bytes", 0) for e in ends]),
            "phases_ms_p50": {k: med([e["phases_ms"].get(k, 0) for e in ends]) for k in phases}}


def record_latency(fig, tool, series, busy):
    stats = {"p50": pct(series, 50), "p90": pct(series, 90), "p99": pct(series, 99),
             "max": max(series), "n": len(series)}
    fig.ok(tool, stats["p50"], series, stats=stats, extra=busy)


def latency(ctx):
    """Save-to-visible of one small file, both ways, --samples times, on the small corpus."""
    for corpus in ctx.corpora_for("latency"):
        for target in ctx.targets:
            note = "; ".join(filter(None, (
                LSYNCD_NOTE if "lsyncd" in target.peers("latency") else None,
                f"{DOCKER_NOTE}; {DOCKER_LATENCY_NOTE}" if target.remote else None))) or None
            figs = {d: ctx.results.figure("latency", target.name, f"latency-{d}",
                                          f"save-to-visible {d}", "ms", corpus=corpus.label(),
                                          stat_rows=["p50", "p90", "p99", "max"], note=note)
                    for d in DIRECTIONS}
            for tool in ctx.tools(target, "latency"):
                log(f"latency {target.name} {tool}")
                latency_tool(ctx, corpus, target, tool, figs)


def latency_tool(ctx, corpus, target, tool, figs):
    cls = SESSIONS[tool]
    try:
        alpha, beta = watched_pair(ctx, corpus, target, tool,
                                   prepare=lambda a: os.mkdir(os.path.join(a.path, "lat")))
    except FAILURES as e:
        for fig in figs.values():
            fig.failed(tool, e)
        return
    with alpha, beta:
        sides = {"alpha->beta": (alpha, beta), "beta->alpha": (beta, alpha)}
        if cls.two_way:
            try:
                with cls(alpha, beta) as session:
                    session.wait_ready()
                    for d in DIRECTIONS:
                        latency_direction(ctx, session, sides[d], d, figs[d], tool)
            except FAILURES as e:
                for fig in figs.values():
                    if tool not in fig.d["results"]:
                        fig.failed(tool, e)
        else:
            for d in DIRECTIONS:
                try:
                    with cls(*sides[d]) as session:
                        session.wait_ready()
                        latency_direction(ctx, session, sides[d], d, figs[d], tool)
                except FAILURES as e:
                    figs[d].failed(tool, e)


def latency_direction(ctx, session, sides, direction, fig, tool):
    try:
        series, busy = latency_series(session, *sides, direction, ctx.args.samples)
        record_latency(fig, tool, series, busy)
    except FAILURES as e:
        fig.failed(tool, e)


def burst_contents(files, count):
    """{rel: new bytes} for `count` files spread evenly over the small corpus."""
    rnd = random.Random(7)
    step = files / count
    return {corpora.small_rel(int(k * step)): rnd.randbytes(rnd.randint(1024, 4096))
            for k in range(count)}


def burst(ctx):
    """Rewrite up to 5,000 files of alpha as fast as possible (temp file + rename each), time
    until all of them read back equal on beta."""
    for corpus in ctx.corpora_for("burst"):
        count = min(BURST_FILES, corpus.info["files"])
        expected = burst_contents(corpus.info["files"], count)
        for target in ctx.targets:
            fig = ctx.results.figure("burst", target.name, "burst",
                                     f"{count:,} files rewritten, first write to last visible", "s",
                                     corpus=corpus.label(),
                                     note="direction alpha->beta; "
                                          + (DOCKER_NOTE if target.remote else TMPFS_NOTE))
            for tool in ctx.tools(target, "burst"):
                log(f"burst {target.name} {tool}")
                try:
                    alpha, beta = watched_pair(ctx, corpus, target, tool)
                    with alpha, beta, SESSIONS[tool](alpha, beta) as session:
                        session.wait_ready()
                        sample = burst_once(session, alpha, beta, expected)
                    fig.ok_median(tool, [sample], key="seconds")
                except FAILURES as e:
                    fig.failed(tool, e)


def burst_once(session, alpha, beta, expected):
    """One burst: seconds from the first write to the last file visible, and what it cost (for
    ferry also how many cycles it took)."""
    meter = BusyMeter().start()
    cpu0 = session.cpu_s()
    events0 = len(getattr(session, "events", ()))
    t0 = time.perf_counter()
    for rel, data in expected.items():
        alpha.write(rel, data, atomic=True)
    written = time.perf_counter()
    done = beta.wait_matching(expected, BURST_TIMEOUT)
    cpu = session.cpu_s() - cpu0
    sample = dict(meter.stop(cpu), seconds=round(done - t0, 4), write_s=round(written - t0, 4),
                  cpu_s=round(cpu, 3))
    if hasattr(session, "events"):
        sample["ferry_cycles"] = sum(1 for e in session.events[events0:]
                                     if e.get("event") == "cycle_end")
    return sample


def idle(ctx):
    """CPU and peak memory of each watching tool over --idle-seconds of an unchanged tree."""
    for corpus in ctx.corpora_for("idle"):
        for target in ctx.targets:
            note = (f"{FERRY_ONE_PROCESS}; lsyncd: one instance, one way; "
                    "unison: with unison-fsmonitor")
            if target.remote:
                note = (f"{DOCKER_NOTE}; ferry: the host process and its agent in the container "
                        "(CPU: also dockerd, containerd and the container's shim, which carry "
                        "the agent's stream)")
            cpu_fig = ctx.results.figure("idle", target.name, "idle-cpu",
                                         f"CPU over {ctx.args.idle_seconds} s idle", "s",
                                         corpus=corpus.label(), note=note)
            rss_fig = ctx.results.figure("idle", target.name, "idle-rss", "peak resident memory",
                                         "MiB", corpus=corpus.label())
            for tool in ctx.tools(target, "idle"):
                log(f"idle {target.name} {tool}")
                try:
                    alpha, beta = watched_pair(ctx, corpus, target, tool)
                    with alpha, beta, SESSIONS[tool](alpha, beta) as session:
                        session.wait_ready()
                        time.sleep(SETTLE_S)
                        sample, rss = idle_once(session, ctx.args.idle_seconds)
                    cpu_fig.ok_median(tool, [sample], key="cpu_s")
                    rss_fig.ok(tool, max(rss), rss)
                except FAILURES as e:
                    cpu_fig.failed(tool, e)
                    rss_fig.failed(tool, e)


def idle_once(session, seconds):
    """CPU seconds of the tool's process group over `seconds`, and its RSS sampled each second."""
    meter = BusyMeter().start()
    cpu0 = session.cpu_s()
    rss = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rss.append(round(session.rss_mib(), 1))
        time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        if not session.alive():
            raise RunFailed(session.failure())
    cpu = session.cpu_s() - cpu0
    return dict(meter.stop(cpu), cpu_s=round(cpu, 3)), rss


SCENARIO_FUNCS = {"first": first, "noop": noop, "edit": edit, "latency": latency,
                  "burst": burst, "idle": idle}
