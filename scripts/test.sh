#!/usr/bin/env bash
# Installs what ferry's tests need, builds the static agent, then runs `cargo test --workspace`
# with this script's arguments (e.g. `scripts/test.sh -p ferry --test it -- usage::`).
# The README's test command, and what .ci/run runs after its checks: keep them the same.
#
# Needs: a Debian-like system (apt-get; run as root or with sudo), rustup, a running Docker
# engine (the remote tests start local containers built FROM scratch; nothing is pulled).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: sshd for the SSH tests, busybox-static for the test images, musl-tools for
# the static agent (blake3 and zstd compile C), ssh-keygen for the sshd fixture's keys.
need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v x86_64-linux-musl-gcc >/dev/null || need+=(musl-tools)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
# The aarch64 agent (a static gnu build through Debian's cross compiler) and the arm64 tests
# (qemu-user-static runs the arm64 container's processes through binfmt_misc).
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
[ -e /usr/lib/binfmt.d/qemu-aarch64.conf ] || need+=(qemu-user-static)
# A real exFAT filesystem (FUSE over a loop device: case-insensitive; no modes, symlinks or
# hard links) for tests/it/exfat.rs and tests/it/names.rs, and tests/fuse/nfd.py, a FUSE
# stand-in storing names decomposed (NFD) as macOS volumes do, run by Debian's /usr/bin/python3
# with python3-fusepy (libfuse2).
[ -x /sbin/mount.exfat-fuse ] || need+=(exfat-fuse)
[ -x /sbin/mkfs.exfat ] || need+=(exfatprogs)
[ -x /bin/fusermount ] || need+=(fuse3)
[ -e /usr/lib/python3/dist-packages/fusepy.py ] && [ -x /usr/bin/python3 ] || need+=(python3 python3-fusepy)
arm64_busybox=/usr/local/lib/ferry-test/busybox-arm64
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null; then
  sudo=(sudo)
else
  sudo=(false)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "${sudo[*]}" = false ]; then
    echo "test.sh: the tests need ${need[*]}: install them (apt-get install ${need[*]}) or run this as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get install -y --no-install-recommends "${need[@]}" \
    || { "${sudo[@]}" apt-get update && "${sudo[@]}" apt-get install -y --no-install-recommends "${need[@]}"; }
fi
if command -v rustup >/dev/null; then
  rustup target add x86_64-unknown-linux-musl aarch64-unknown-linux-gnu
else
  echo "test.sh: no rustup; assuming the x86_64-unknown-linux-musl and aarch64-unknown-linux-gnu targets are installed" >&2
fi

# Debian's arm64 busybox-static, for the arm64 test image (FROM scratch).
if [ ! -x "$arm64_busybox" ]; then
  dpkg --print-foreign-architectures | grep -qx arm64 \
    || { "${sudo[@]}" dpkg --add-architecture arm64 && "${sudo[@]}" apt-get update; }
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download busybox-static:arm64 && dpkg -x busybox-static_*_arm64.deb x)
  "${sudo[@]}" install -D -m 755 "$tmp/x/bin/busybox" "$arm64_busybox"
  rm -rf "$tmp"
fi
# aarch64 emulation for every process, containers included: binfmt_misc mounted, qemu-aarch64
# registered with the F flag (Debian's entry has it).
[ -e /proc/sys/fs/binfmt_misc/register ] \
  || "${sudo[@]}" mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] \
  || "${sudo[@]}" sh -c 'cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register'

docker info >/dev/null 2>&1 || { echo "test.sh: the Docker engine is not reachable (the remote tests need one)" >&2; exit 1; }

# Docker Compose v2 (for `ferry up` and its tests), unpacked from Debian 13's package, never
# installed (see the script).
if ! docker compose version >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then "$(dirname "$0")/compose-v2.sh"; else sudo "$(dirname "$0")/compose-v2.sh"; fi
fi

# The official MCP Python SDK, 2.x (tests/it/mcp.rs drives `ferry mcp` with it through
# tests/mcp-python/check.py, in both protocol eras).
command -v python3 >/dev/null || need_py=1
if [ -n "${need_py:-}" ]; then
  if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" apt-get install -y --no-install-recommends python3 python3-pip python3-venv
fi
if ! python3 -c 'import sys, importlib.metadata as m; sys.exit(int(m.version("mcp").split(".")[0]) < 2)' 2>/dev/null; then
  python3 -m pip install --quiet "mcp>=2" || python3 -m pip install --quiet --break-system-packages "mcp>=2"
fi

# The static agent the remote tests install into containers and over SSH (the tests would
# build it themselves if missing; building it here first keeps the two builds apart).
cargo build --profile agent --target x86_64-unknown-linux-musl -p ferry
# The aarch64 agent for the arm64 tests (linker and +crt-static: .cargo/config.toml).
cargo build --profile agent --target aarch64-unknown-linux-gnu -p ferry
cargo test --workspace "$@"
# The portable paths a macOS host (and filesystems without renameat2/O_TMPFILE) takes, on
# Linux: the local placement, watching and metadata tests again with FERRY_TEST_PORTABLE=1
# (DEVELOPERS.md). Only when the whole suite ran (no arguments). The two placement tests left
# out check how Linux links unnamed files, which the portable way never makes.
if [ $# -eq 0 ]; then
  FERRY_TEST_PORTABLE=1 cargo test -p ferry --test it -- placement:: watch:: metadata:: races:: \
    --skip placement::without_linking_by_descriptor --skip placement::when_unnamed_files_cannot
fi
