#!/usr/bin/env python3
"""Figures for `ferry mcp` and the daemon (issue 11's closing note):

1. `write_file` to visible-on-the-other-side latency into a container, p50/p99: the tool returns
   only once the other side holds the same bytes (it flushes the session and checks the digest),
   so the call's duration is that latency; each file is also checked in the container.
2. The daemon's memory (VmRSS, VmHWM) with 10 idle local sessions of 10,000 files each.
3. `ferry list` wall time with those 10 sessions (median and p90 of 30 runs).

Usage: python3 bench/mcp_figures.py [FERRY] [--writes N]  (FERRY: target/release/ferry by default).
Needs Docker, the test image `ferry-test-busybox:1` (built by the tests) and the Python MCP SDK
(`pip install "mcp>=2"`). Everything runs in a private temporary directory with its own daemon.
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ferry", nargs="?", default="target/release/ferry")
    ap.add_argument("--writes", type=int, default=200)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--files", type=int, default=10_000)
    a = ap.parse_args()
    ferry = os.path.abspath(a.ferry)
    from mcp import ClientSession, StdioServerParameters, stdio_client

    tmp = tempfile.mkdtemp(prefix="ferry-bench-mcp-")
    env = dict(os.environ)
    for d in ("run", "state", "home"):
        os.makedirs(os.path.join(tmp, d), mode=0o700)
    env.update(XDG_RUNTIME_DIR=f"{tmp}/run", XDG_STATE_HOME=f"{tmp}/state", HOME=f"{tmp}/home",
               FERRY_MCP_CONFIG=f"{tmp}/mcp.conf")

    def fy(*args, check=True):
        return subprocess.run([ferry, *args], env=env, check=check, capture_output=True, text=True)

    name = f"ferry-bench-mcp-{os.getpid()}"
    subprocess.run(["docker", "run", "-d", "--name", name, "ferry-test-busybox:1"], check=True,
                   capture_output=True)
    try:
        alpha = f"{tmp}/app"
        os.makedirs(f"{alpha}/src")
        with open(f"{alpha}/src/main.rs", "w") as f:
            f.write("fn main() {}\n")
        fy("create", alpha, f"docker://{name}/srv/app", "--name", "web")
        fy("flush", "web")

        async def writes():
            params = StdioServerParameters(command=ferry, args=["mcp"], env=env)
            out = {"alpha": [], "beta": []}
            async with stdio_client(params) as (r, w):
                async with ClientSession(r, w) as s:
                    await s.initialize()
                    for i in range(a.writes):
                        side = "alpha" if i % 2 == 0 else "beta"
                        path = f"notes/n{i}.txt"
                        body = f"note {i}\n" * 20
                        t = time.perf_counter()
                        res = await s.call_tool("write_file", {"name": "web", "side": side,
                                                               "path": path, "content": body})
                        dt = time.perf_counter() - t
                        if res.is_error:
                            raise SystemExit(f"write_file failed: {res.content}")
                        out[side].append(dt)
            return out

        lat = asyncio.run(writes())
        # Spot-check: the last alpha write is in the container, the last beta write on the host.
        got = subprocess.run(["docker", "exec", name, "cat", f"/srv/app/notes/n{a.writes - 2}.txt"],
                             capture_output=True, text=True).stdout
        assert got == f"note {a.writes - 2}\n" * 20, "container missing a write"
        for side, xs in lat.items():
            other = "container" if side == "alpha" else "host"
            print(f"write_file on {side} -> visible in the {other}: n={len(xs)} "
                  f"p50={pct(xs, 50) * 1000:.1f} ms p99={pct(xs, 99) * 1000:.1f} ms "
                  f"max={max(xs) * 1000:.1f} ms")
        fy("terminate", "web")

        # 10 idle sessions of 10,000 files each.
        for k in range(a.sessions):
            src = f"{tmp}/s{k}/alpha"
            for d in range(100):
                os.makedirs(f"{src}/d{d}")
                for n in range(a.files // 100):
                    with open(f"{src}/d{d}/f{n}.txt", "w") as f:
                        f.write(f"session {k} dir {d} file {n}\n")
            fy("create", src, f"{tmp}/s{k}/beta", "--name", f"s{k}")
        for k in range(a.sessions):
            fy("flush", f"s{k}")
        time.sleep(2)  # idle: the engines are watching
        pid = fy("daemon", "status", "--json").stdout
        import json
        pid = json.loads(pid)["pid"]
        status = open(f"/proc/{pid}/status").read()
        rss = {l.split(":")[0]: l.split(":")[1].strip() for l in status.splitlines()
               if l.startswith(("VmRSS", "VmHWM"))}
        print(f"daemon with {a.sessions} idle sessions of {a.files} files: "
              f"VmRSS {rss['VmRSS']}, VmHWM {rss['VmHWM']}")

        times = []
        for _ in range(30):
            t = time.perf_counter()
            fy("list")
            times.append(time.perf_counter() - t)
        print(f"ferry list with {a.sessions} sessions: median {statistics.median(times) * 1000:.1f} ms "
              f"p90 {pct(times, 90) * 1000:.1f} ms (30 runs)")
    finally:
        fy("daemon", "stop", check=False)
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
