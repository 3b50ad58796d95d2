#!/usr/bin/env python3
"""Save-to-hook latency of `ferry sync --on-change`: from a write in alpha to the `hook` event
of a trivial command (`cat FILE`) run on beta's side, for a local beta and a Docker beta.

    python3 bench/hook-latency.py FERRY [--container NAME] [--n 50]

FERRY is the binary (target/release/ferry or target/debug/ferry); with --container, beta is
docker://NAME/tmp/hook-bench (FERRY_AGENT must point at the static agent). Prints p50/p90/max
in ms, and the hook's own duration_ms (p50) to separate starting it from running it.
"""
import argparse, json, os, subprocess, sys, tempfile, time, statistics

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ferry")
    ap.add_argument("--container")
    ap.add_argument("--n", type=int, default=50)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="hook-bench-")
    alpha = os.path.join(tmp, "alpha")
    os.mkdir(alpha)
    beta = f"docker://{a.container}/tmp/hook-bench" if a.container else os.path.join(tmp, "beta")
    env = dict(os.environ, XDG_STATE_HOME=os.path.join(tmp, "state"))
    with open(os.path.join(alpha, "f.txt"), "w") as f:
        f.write("0\n")
    p = subprocess.Popen([a.ferry, "sync", alpha, beta, "--json", "--on-change", "cat f.txt"],
                         stdout=subprocess.PIPE, text=True, env=env)
    def next_hook():
        for line in p.stdout:
            e = json.loads(line)
            if e["event"] == "hook":
                return e
        sys.exit("ferry ended")
    next_hook()  # the first cycle's run
    lat, run = [], []
    for i in range(1, a.n + 1):
        t0 = time.perf_counter()
        with open(os.path.join(alpha, "f.txt"), "w") as f:
            f.write(f"{i}\n")
        e = next_hook()
        lat.append((time.perf_counter() - t0) * 1000)
        run.append(e["duration_ms"])
        if e["output"] != f"{i}\n":
            sys.exit(f"hook saw {e['output']!r}, expected {i}")
        time.sleep(0.05)
    p.terminate()
    p.wait()
    lat.sort()
    q = lambda v, x: v[min(len(v) - 1, int(len(v) * x))]
    print(f"beta={'docker' if a.container else 'local'} n={a.n} save-to-hook-end ms: "
          f"p50={statistics.median(lat):.1f} p90={q(lat, 0.9):.1f} max={lat[-1]:.1f}; "
          f"hook duration p50={statistics.median(run):.1f}")

main()
