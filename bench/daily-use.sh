#!/usr/bin/env bash
# Before/after figures for issue 9 items 1, 2, 3 and 12: run with BIN=<ferry> AGENT=<static agent>.
set -u
BIN=${BIN:?}; AGENT=${AGENT:?}
W=$(mktemp -d /tmp/ferry-measure.XXXX)
export XDG_STATE_HOME=$W/state HOME=$W/home FERRY_AGENT=$AGENT
mkdir -p $W/state $W/home
count() { grep -c "\"event\":\"$1\"" "$2" || true; }

echo "== item 1: full disk (1.6 MB file into a 1 MiB tmpfs), 10 s watching"
mkdir -p $W/a1 $W/b1; mount -t tmpfs -o size=1m,mode=0755 tmpfs $W/b1
head -c 1600000 /dev/urandom > $W/a1/big; echo hi > $W/a1/small
timeout 10 $BIN sync $W/a1 $W/b1 --json > $W/j1 2>$W/e1
echo "cycles: $(count cycle_end $W/j1), error events: $(count error $W/j1), human-visible reason lines: $(timeout 3 $BIN sync $W/a1 $W/b1 2>&1 | grep -ci 'space')"
umount -l $W/b1

echo "== item 2: rm -rf node_modules (1,040 files of a 1,347-entry tree) while watching"
mkdir -p $W/a2 $W/b2
for d in $(seq 0 103); do mkdir -p $W/a2/node_modules/p$d; for f in $(seq 0 9); do echo "m $d $f" > $W/a2/node_modules/p$d/f$f.js; done; done
for d in $(seq 0 19); do mkdir -p $W/a2/src/s$d; for f in $(seq 0 9); do echo "s $d $f" > $W/a2/src/s$d/f$f.js; done; done
$BIN sync $W/a2 $W/b2 --once > /dev/null 2>&1
$BIN sync $W/a2 $W/b2 --json > $W/j2 2>$W/e2 & P=$!
sleep 2; rm -rf $W/b2/node_modules; sleep 8
if kill -0 $P 2>/dev/null; then echo "session alive"; kill $P; wait $P 2>/dev/null; else wait $P; echo "session ended, exit $?: $(tail -1 $W/e2)"; fi
echo "alpha node_modules files left: $(find $W/a2/node_modules -type f 2>/dev/null | wc -l); copies in alpha's backup area: $(find $W/state -path '*backups/alpha*' -type f | wc -l)"

echo "== item 2b: mv src lib while stopped, then --once"
mv $W/a2/src $W/a2/lib 2>/dev/null
$BIN sync $W/a2 $W/b2 --once > /dev/null 2>$W/e2b; echo "exit $?: $(tail -1 $W/e2b)"

echo "== item 3: recreated container"
IMG=${IMG:-ferry-test-busybox}
docker rm -f ferry-measure >/dev/null 2>&1; docker run -d --name ferry-measure $IMG >/dev/null
mkdir -p $W/a3; for f in $(seq 0 29); do echo "src $f" > $W/a3/f$f; done
$BIN sync $W/a3 docker://ferry-measure/srv/app --once > /dev/null 2>&1
docker rm -f ferry-measure >/dev/null; docker run -d --name ferry-measure $IMG >/dev/null
$BIN sync $W/a3 docker://ferry-measure/srv/app --once > $W/o3 2>$W/e3; echo "exit $?: $(cat $W/e3 $W/o3 | tail -2 | tr '\n' ' ')"
echo "files in the new container: $(docker exec ferry-measure /bin/busybox sh -c 'ls /srv/app 2>/dev/null | wc -l')"
docker rm -f ferry-measure >/dev/null

echo "== item 12: 40 MB written over 2 s (2 MB + fsync every 100 ms)"
mkdir -p $W/a4 $W/b4; echo x > $W/a4/keep
$BIN sync $W/a4 $W/b4 --json > $W/j4 2>&1 & P=$!
sleep 1.5
python3 - "$W/a4/big.bin" <<'PY'
import os, sys, time
with open(sys.argv[1], "wb") as f:
    for i in range(20):
        f.write(os.urandom(2 << 20)); f.flush(); os.fsync(f.fileno()); time.sleep(0.1)
PY
sleep 4; kill $P; wait $P 2>/dev/null
echo "versions of big.bin that reached beta: $(grep '"path":"big.bin"' $W/j4 | grep -c '"event":"change"')"
rm -rf $W
