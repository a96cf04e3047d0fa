#!/usr/bin/env bash
# scripts/difftest/diff.sh: differential test of two moonwait binaries (the one before
# and after a change that must keep behaviour: e.g. the "one job per file"
# restructuring, 9adc43a vs today). Every case runs
# once per binary in the same fresh directory (so paths in messages match);
# stdout, stderr (timing numbers, pids and binary paths normalised), the exit
# code and every file the run wrote are compared. Prints PASS/DIFF per case.
#
#   OLD=/tmp/mw-old/build/moonwait NEW=build/moonwait scripts/difftest/diff.sh [FILTER]
#
# Build OLD with: git worktree add /tmp/mw-old 9adc43a && make -s -C /tmp/mw-old
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
OLD=${OLD:-/tmp/mw-old/build/moonwait}
NEW=${NEW:-$HERE/../../build/moonwait}
NEW=$(cd "$(dirname "$NEW")" && pwd)/$(basename "$NEW")
FAULTPEER=${FAULTPEER:-$HERE/../../build/faultpeer}
FILTER=${1:-}
W=${W:-/tmp/mwdiff}
RES=$HERE/out
rm -rf "$W" "$RES"; mkdir -p "$W/fix" "$RES"
(cd "$W/fix" && . "$HERE/fixtures.sh")
export FAULTPEER
npass=0; ndiff=0; diffs=()

norm() {
  sed -E -e "s#$OLD#MW#g; s#$NEW#MW#g; s#$(dirname "$(dirname "$OLD")")/lua#LUADIR#g; s#$(dirname "$(dirname "$NEW")")/lua#LUADIR#g" \
    -e 's#[^ <]*/build/\.\./lua#LUADIR#g; s/0x[0-9a-f]{6,}/0xADDR/g' \
    -e 's/(elapsed_s|rate|cpu_s|peak_rss_kb)=[0-9.]+/\1=N/g' \
    -e 's/"elapsed_ms":[0-9]+/"elapsed_ms":N/g' \
    -e 's/line ([0-9]+): [0-9]+ (Aborted|Killed|Terminated|Segmentation)/line \1: PID \2/g' -e 's/pid [0-9]+/pid N/g; s/\(pid [0-9]+\)/(pid N)/g' \
    -e 's/in [0-9.]+ ms/in N ms/g' \
    -e 's/checkpoint\.tmp\.[A-Za-z0-9]{6}/checkpoint.tmp.XXXXXX/g' \
    -e 's/127\.0\.0\.1:[0-9]+/127.0.0.1:PORT/g' \
    -e 's/^(R [0-9]+ [0-9]+ [0-9]+) [0-9]+ /\1 B /; s/^crc32 .*/crc32 X/; s/^dead_letter_len [0-9]+/dead_letter_len N/' \
    -e '/moonwait: (progress|stats):/d'
}

run_side() { # bin side cmd sortout
  local bin=$1 side=$2 cmd=$3 sortout=$4
  rm -rf "$W/c"; cp -a "$W/fix" "$W/c"
  (cd "$W/c" && OLDMW=$OLD NEWMW=$NEW MW=$bin timeout 60 bash -c "$cmd" >"$W/$side.out" 2>"$W/$side.err"; echo "rc=$?" >"$W/$side.rc")
  {
    cat "$W/$side.rc"
    echo "== stdout"; if [ "$sortout" = 1 ]; then LC_ALL=C sort "$W/$side.out" | norm; else norm <"$W/$side.out"; fi
    echo "== stderr"; norm <"$W/$side.err"
    (cd "$W/c" && find . \( -type f -o -type p -o -type l \) | LC_ALL=C sort) | while read -r f; do
      if [ -f "$W/fix/$f" ] && cmp -s "$W/fix/$f" "$W/c/$f"; then continue; fi
      case "$f" in */lock) echo "== $f (lock)"; continue ;; */checkpoint.prev) echo "== $f (prev)"; continue ;; esac
      if [ -p "$W/c/$f" ]; then echo "== $f (fifo)"; continue; fi
      echo "== $f"
      if [ "$sortout" = 1 ] && [[ "$f" == *.jsonl ]]; then LC_ALL=C sort "$W/c/$f" | norm; else norm <"$W/c/$f"; fi
    done
  } >"$W/$side.all"
}

# c NAME [sort] CMD  (CMD runs under bash in the case dir; $MW is the binary)
c() {
  local name=$1; shift
  local sortout=0
  if [ "$1" = sort ]; then sortout=1; shift; fi
  local cmd=$1
  if [ -n "$FILTER" ] && ! [[ "$name" =~ $FILTER ]]; then return; fi
  run_side "$OLD" old "$cmd" "$sortout"
  run_side "$NEW" new "$cmd" "$sortout"
  if cmp -s "$W/old.all" "$W/new.all"; then
    npass=$((npass + 1)); echo "PASS $name"
  else
    ndiff=$((ndiff + 1)); diffs+=("$name"); echo "DIFF $name"
    { echo "# $cmd"; diff -a -u "$W/old.all" "$W/new.all"; } >"$RES/${name//\//_}.diff"
    sed -n '1,40p' "$RES/${name//\//_}.diff" | sed 's/^/    /'
  fi
}

# real servers on 127.0.0.1 for the net cases (stopped at exit)
if [ -z "${NO_SERVERS:-}" ]; then
  eval "$(cd "$HERE/../.." && MOONWAIT_SERVERS_OWNER=$$ luajit scripts/difftest/start-servers.lua)"
  # (the servers live as long as this script; a dead one would make every
  # net case pass, both binaries failing alike)
  redis-cli -p "$REDIS_PORT" ping >/dev/null || { echo "difftest: redis-server did not stay up" >&2; exit 1; }
  kill -0 "$NGINX_PID" || { echo "difftest: nginx did not stay up" >&2; exit 1; }
  export NGINX_PORT TLS_PORT CERT REDIS_PORT
  trap 'kill $NGINX_PID 2>/dev/null; redis-cli -p $REDIS_PORT shutdown nosave >/dev/null 2>&1' EXIT
fi

for f in "$HERE"/cases/*.sh; do . "$f"; done

echo
echo "$npass passed, $ndiff failed"
for d in "${diffs[@]}"; do echo "  DIFF $d (scripts/difftest/out/${d//\//_}.diff)"; done
[ "$ndiff" = 0 ]
