#!/bin/sh
# ferry list with 10 background sessions of 1,000 files each (local pairs). FERRY=path/to/ferry to pick the build.
set -e
FERRY=${FERRY:-$(dirname "$0")/../target/release/ferry}
T=$(mktemp -d)
export XDG_RUNTIME_DIR=$T/run XDG_STATE_HOME=$T/state HOME=$T
mkdir -p $XDG_RUNTIME_DIR && chmod 700 $XDG_RUNTIME_DIR
for s in 0 1 2 3 4 5 6 7 8 9; do
  mkdir -p $T/a$s/d
  for f in $(seq 1 1000); do echo $f > $T/a$s/d/f$f; done
  $FERRY create $T/a$s $T/b$s --name s$s >/dev/null
  $FERRY flush s$s >/dev/null
done
start=$(date +%s%N)
for i in $(seq 1 20); do $FERRY list --json >/dev/null; done
end=$(date +%s%N)
echo "ferry list --json, 10 sessions x 1000 files: $(( (end-start)/20/1000 )) us per call (mean of 20)"
start=$(date +%s%N)
for i in $(seq 1 20); do $FERRY list >/dev/null; done
end=$(date +%s%N)
echo "ferry list (table): $(( (end-start)/20/1000 )) us per call (mean of 20)"
PID=$($FERRY daemon status --json | sed 's/.*"pid":\([0-9]*\).*/\1/')
grep VmRSS /proc/$PID/status
$FERRY daemon stop >/dev/null
rm -rf $T
