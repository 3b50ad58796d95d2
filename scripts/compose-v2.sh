#!/usr/bin/env bash
# Puts Docker Compose v2 on this machine as a docker CLI plugin
# (/usr/local/lib/docker/cli-plugins/docker-compose) when `docker compose` is missing.
# Debian 12 has only Compose v1, which rejects `develop:`. The plugin comes from Debian 13's
# `docker-compose` package, fetched with a private apt configuration that knows only that suite
# and unpacked, NEVER installed: installing it would pull Debian 13's docker.io and replace the
# running engine.
set -euo pipefail
if docker compose version >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "compose-v2.sh: Docker Compose v2 is missing; run this script as root to fetch it" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
  > "$work/sources.list"
apt_private=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o APT::Sandbox::User=root)
apt-get "${apt_private[@]}" update -qq
(cd "$work" && apt-get "${apt_private[@]}" download docker-compose -qq)
dpkg -x "$work"/docker-compose_*.deb "$work/x"
install -D -m 0755 "$work/x/usr/libexec/docker/cli-plugins/docker-compose" \
  /usr/local/lib/docker/cli-plugins/docker-compose
docker compose version
