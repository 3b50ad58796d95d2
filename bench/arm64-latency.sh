#!/bin/sh
# Save-to-visible latency between the host and an arm64 container whose agent runs under qemu
# (issue 12, part 2; a sanity figure, not a target). The container's /srv/app is a bind mount
# of a host directory, so both ends are watched from the host without `docker exec`.
# Needs: the arm64 test image (built by `cargo test -p ferry --test it -- arm64::`), the
# aarch64 agent (target/aarch64-unknown-linux-gnu/agent/ferry) and aarch64 binfmt (scripts/test.sh).
# FERRY=path/to/ferry picks the build (default target/debug/ferry); N=20 edits each way.
set -e
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FERRY=${FERRY:-$ROOT/target/debug/ferry}
IMAGE=${IMAGE:-ferry-test-busybox-arm64:1}
N=${N:-20}
T=$(mktemp -d)
export XDG_STATE_HOME=$T/state HOME=$T FERRY_AGENT_ARCH=aarch64
export FERRY_AGENT_AARCH64=${FERRY_AGENT_AARCH64:-$ROOT/target/aarch64-unknown-linux-gnu/agent/ferry}
mkdir -p $T/alpha $T/mnt
C=ferry-arm64-latency-$$
docker run -d --name $C -v $T/mnt:/srv/app $IMAGE >/dev/null
P=
trap '[ -n "$P" ] && kill $P 2>/dev/null; docker rm -f $C >/dev/null; rm -rf $T' EXIT
docker exec $C uname -m | grep -qx aarch64 || { echo "the container is not aarch64" >&2; exit 1; }
$FERRY sync $T/alpha docker://$C/srv/app >$T/log 2>&1 &
P=$!
echo probe > $T/alpha/probe
until [ -f $T/mnt/probe ]; do sleep 0.05; kill -0 $P || { cat $T/log; exit 1; }; done
# $1 writes into $2, waits until the file shows in $3; prints the median and max in ms.
measure() {
  : > $T/times
  for i in $(seq 1 $N); do
    start=$(date +%s%N)
    echo "$1 $i" > $2/$1$i
    until [ -f $3/$1$i ]; do sleep 0.005; done
    end=$(date +%s%N)
    echo $(( (end - start) / 1000000 )) >> $T/times
    sleep 0.3
  done
  sort -n $T/times > $T/sorted
  echo "$1: median $(sed -n "$(( (N + 1) / 2 ))p" $T/sorted) ms, max $(tail -1 $T/sorted) ms ($N edits)"
}
measure host-to-arm64 $T/alpha $T/mnt
measure arm64-to-host $T/mnt $T/alpha
ps -o comm= -p $P >/dev/null
