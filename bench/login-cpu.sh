#!/usr/bin/env bash
# Where the two cores go during a run of logins: the auth-service, the
# PostgreSQL processes, everything else, and idle, in clock ticks from /proc.
# The Login row of the budget compares logins per second with the raw
# argon2id rate, so whatever PostgreSQL spends per login is taken from it.
#
# Usage: bench/login-cpu.sh WORK   (WORK: a bench/run.sh work folder after its
#        build and seed phases: bin/, fixture.json, kek)
#        BIN=other/bin bench/login-cpu.sh WORK   (other binaries, same data)
set -euo pipefail
WORK=$1
BIN=${BIN:-$WORK/bin}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
PORT=${PORT:-28151}
AUTH=http://127.0.0.1:$PORT
DURATION=${DURATION:-10s}

ticks() { # utime + stime of the given pids, in clock ticks
  local sum=0 pid
  for pid in "$@"; do
    [[ -r /proc/$pid/stat ]] && sum=$((sum + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$sum"
}
cores() { # busy and idle ticks of the whole machine
  local _cpu user nice system idle iowait _rest
  read -r _cpu user nice system idle iowait _rest </proc/stat
  echo "$((user + nice + system)) $((idle + iowait))"
}

mkdir -p "$WORK/logs"
"$BIN/auth-service" --listen "127.0.0.1:$PORT" --database-url "$PG/bench_auth" \
  --key-encryption-key-file "$WORK/kek" --mail-dir "$WORK/mail" --access-token-ttl 12h \
  --trusted-proxy 127.0.0.1 --address-rate-per-minute 100000000 --address-burst 1000000 \
  --login-max-failures 1000000 --login-max-failures-per-account 1000000 \
  >>"$WORK/logs/login-cpu.log" 2>&1 &
auth=$!
trap 'kill $auth' EXIT
load() { # label duration
  "$BIN/bench" load --auth "$AUTH" --tasks "$AUTH" --gateway "$AUTH" --fixture "$WORK/fixture.json" \
    --results "$WORK/login-cpu.jsonl" --label "$1" --rep 1 --pid "auth-service=$auth" \
    --scenario login --via direct --in-flight 16 --duration "$2"
}
"$BIN/bench" wait --auth "$AUTH" --tasks "$AUTH" --gateway "$AUTH" --service auth --timeout 60s
load login-cpu/warm-up 3s >/dev/null

read -r busy0 idle0 < <(cores)
postgres0=$(ticks $(pgrep -x postgres)); auth0=$(ticks "$auth")
load login-cpu "$DURATION"
read -r busy1 idle1 < <(cores)
postgres1=$(ticks $(pgrep -x postgres)); auth1=$(ticks "$auth")

logins=$(tail -n 1 "$WORK/login-cpu.jsonl" | jq .ok)
all=$((busy1 - busy0 + idle1 - idle0))
auth_ticks=$((auth1 - auth0)); postgres_ticks=$((postgres1 - postgres0))
other=$((busy1 - busy0 - auth_ticks - postgres_ticks)); idle=$((idle1 - idle0))
per_login_ms() { echo "scale=2; $1 * 1000 / $(getconf CLK_TCK) / $logins" | bc; }
share() { echo "scale=1; $1 * 100 / $all" | bc; }
echo "$logins logins: auth-service $(share $auth_ticks)% ($(per_login_ms $auth_ticks) ms per login)," \
  "PostgreSQL $(share $postgres_ticks)% ($(per_login_ms $postgres_ticks) ms)," \
  "the rest $(share $other)% ($(per_login_ms $other) ms), idle $(share $idle)%"
