"""Drives `ferry mcp` with the official MCP Python SDK (`pip install "mcp>=2"`), in both eras:
the legacy `ClientSession` (the 2025-11-25 `initialize` handshake) and the auto-negotiating
`Client` (tries `server/discover` first). Run by crates/ferry/tests/it/mcp.rs:

    python3 check.py FERRY SESSION ALPHA_DIR

SESSION must be a ferry daemon session whose alpha is ALPHA_DIR. Exits non-zero with the reason
on the first failed check; prints one line per client on success.
"""

import asyncio
import os
import sys

from mcp import Client, ClientSession, StdioServerParameters, stdio_client

TOOLS = {
    "list_sessions", "session_status", "create_session", "sync_now", "pause_session",
    "resume_session", "terminate_session", "list_conflicts", "resolve_conflict", "list_files",
    "read_file", "write_file",
}


def check(cond, what):
    if not cond:
        raise SystemExit(f"check failed: {what}")


def text(result):
    return "".join(getattr(c, "text", "") for c in result.content)


async def exercise(call, list_tools, tag, ferry, session, alpha):
    names = {t.name for t in (await list_tools()).tools}
    check(names == TOOLS, f"{tag}: tools {sorted(names)}")

    r = await call("list_sessions", {})
    check(not r.is_error and session in text(r), f"{tag}: list_sessions: {text(r)}")

    # A write on beta (the container) is on alpha (this machine) when the tool returns.
    path = f"py/{tag}.txt"
    content = f"written by the Python SDK's {tag} client\n"
    r = await call("write_file", {"name": session, "side": "beta", "path": path, "content": content})
    check(not r.is_error, f"{tag}: write_file: {text(r)}")
    with open(os.path.join(alpha, path)) as f:
        check(f.read() == content, f"{tag}: alpha does not have {path}")

    r = await call("read_file", {"name": session, "side": "beta", "path": path})
    check(not r.is_error and text(r) == content, f"{tag}: read_file: {text(r)}")

    r = await call("read_file", {"name": session, "side": "alpha", "path": "../outside.txt"})
    check(r.is_error and "refused" in text(r), f"{tag}: traversal not refused: {text(r)}")

    r = await call("read_file", {"name": session, "side": "alpha", "path": ".env"})
    check(r.is_error and "'.env'" in text(r), f"{tag}: .env not refused by its rule: {text(r)}")

    r = await call("session_status", {"name": "no-such-session"})
    check(r.is_error and "no session named" in text(r), f"{tag}: unknown session: {text(r)}")

    r = await call("list_files", {"name": session, "side": "sideways"})
    check(r.is_error, f"{tag}: a bad side was accepted: {text(r)}")


async def legacy(ferry, session, alpha):
    params = StdioServerParameters(command=ferry, args=["mcp"], env=dict(os.environ))
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as s:
            init = await s.initialize()
            check(init.protocol_version == "2025-11-25", f"legacy: version {init.protocol_version}")
            await exercise(s.call_tool, s.list_tools, "legacy", ferry, session, alpha)
            return init.protocol_version


async def auto(ferry, session, alpha):
    params = StdioServerParameters(command=ferry, args=["mcp"], env=dict(os.environ))
    async with Client(params, mode="auto") as c:
        version = c.protocol_version
        check(version > "2025-11-25", f"auto: negotiated {version}, not the discover era")
        await exercise(c.call_tool, c.list_tools, "auto", ferry, session, alpha)
        return version


def main():
    ferry, session, alpha = sys.argv[1:4]
    print("legacy ClientSession:", asyncio.run(legacy(ferry, session, alpha)))
    print("auto Client:", asyncio.run(auto(ferry, session, alpha)))


if __name__ == "__main__":
    main()
