#!/bin/bash
# Install the peers bench/run.py compares ferry with; safe to run again (installs only what is
# missing). Needs root. run.py calls it when something is missing, unless --no-setup.
set -euo pipefail

FSMONITOR_ROOT=/opt/ferry-bench  # unison-fsmonitor: not in Debian, built from crates.io

if [ "$(id -u)" -ne 0 ]; then
    echo "bench/setup.sh: run as root" >&2
    exit 1
fi

missing=()
for cmd in rsync unison lsyncd; do
    command -v "$cmd" >/dev/null || missing+=("$cmd")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench/setup.sh: apt-get install ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

if [ ! -x "$FSMONITOR_ROOT/bin/unison-fsmonitor" ]; then
    if ! command -v cargo >/dev/null; then
        echo "bench/setup.sh: cargo is needed to install unison-fsmonitor" >&2
        exit 1
    fi
    echo "bench/setup.sh: cargo install unison-fsmonitor --root $FSMONITOR_ROOT"
    cargo install unison-fsmonitor --root "$FSMONITOR_ROOT"
fi
