#!/usr/bin/env bash
# GetTask's CPU per call against the health floor's, with PostgreSQL on a
# core of its own and without. The budget's GetTask row runs everything on
# every core: the load generator, the services and PostgreSQL, whose
# backends then run between a query and its answer on the core the
# task-service's thread was on. Here, alternated, REPEATS times:
#   pinned  PostgreSQL's processes on the last core, the services and the
#           load generator on the others;
#   svc     the services and the load generator on those same cores, and
#           PostgreSQL on every core (the pinning's own effect: fewer cores
#           and so fewer worker threads for the services);
#   shared  everything on every core, as the budget runs it.
# Moves PostgreSQL's processes with taskset and puts them back on every
# core when it ends.
#
# Usage: bench/pinned-floor.sh WORK   (WORK: a bench/run.sh work folder after
#        its build and seed phases: bin/, fixture.json, kek)
# Prints each run; appends them to WORK/pinned-floor.jsonl and prints the
# median ratio of each mode.
set -euo pipefail
WORK=$1
BIN=${BIN:-$WORK/bin}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
REPEATS=${REPEATS:-3}
DURATION=${DURATION:-5s}
AUTH=http://127.0.0.1:28151 TASKS=http://127.0.0.1:28152
RESULTS=$WORK/pinned-floor.jsonl
CORES=$(nproc)
(( CORES >= 2 )) || { echo "needs at least 2 cores" >&2; exit 1; }
PG_CORE=$((CORES - 1)) OTHERS=0-$((CORES - 2)) ALL=0-$((CORES - 1))

postgres_on() { # cpu list
  local pid
  for pid in $(pgrep -x postgres); do taskset -a -p -c "$1" "$pid" >/dev/null; done
}
auth= tasks=
stop() {
  kill $auth $tasks 2>/dev/null || true
  wait $auth $tasks 2>/dev/null || true
  auth= tasks=
}
trap 'stop; postgres_on $ALL' EXIT
start() { # cpu list
  mkdir -p "$WORK/logs"
  taskset -c "$1" "$BIN/auth-service" --listen "${AUTH#http://}" --database-url "$PG/bench_auth" \
    --key-encryption-key-file "$WORK/kek" --mail-dir "$WORK/mail" --access-token-ttl 12h \
    >>"$WORK/logs/pinned-floor.log" 2>&1 &
  auth=$!
  taskset -c "$1" "$BIN/task-service" --listen "${TASKS#http://}" --database-url "$PG/bench_tasks" \
    --auth-url "$AUTH" --max-tasks-per-user 200000 --max-calls-in-flight-per-user 100000 \
    --max-calls-in-flight 100000 >>"$WORK/logs/pinned-floor.log" 2>&1 &
  tasks=$!
  "$BIN/bench" wait --auth "$AUTH" --tasks "$TASKS" --gateway "$TASKS" --service auth --service tasks \
    --timeout 120s
}
load() { # cpu list, mode, rep, scenario
  taskset -c "$1" "$BIN/bench" load --auth "$AUTH" --tasks "$TASKS" --gateway "$TASKS" \
    --fixture "$WORK/fixture.json" --results "$RESULTS" --label "$4/$2" --rep "$3" \
    --pid task-service="$tasks" --scenario "$4" --via direct --duration "$DURATION"
}

: >"$RESULTS"
for rep in $(seq 1 "$REPEATS"); do
  for mode in pinned svc shared; do
    case $mode in
      pinned) postgres_on "$PG_CORE"; cpus=$OTHERS ;;
      svc) postgres_on "$ALL"; cpus=$OTHERS ;;
      shared) postgres_on "$ALL"; cpus=$ALL ;;
    esac
    start "$cpus"
    if (( rep % 2 )); then
      load "$cpus" "$mode" "$rep" health; load "$cpus" "$mode" "$rep" get
    else
      load "$cpus" "$mode" "$rep" get; load "$cpus" "$mode" "$rep" health
    fi
    stop
  done
done

echo "GetTask / health Check, task-service CPU per call: the median ratio of $REPEATS repetitions, then each one's, lowest ratio first:"
jq -rs '
  def cpu: .cpu_us_per_call["task-service"];
  group_by(.label | split("/")[1])[] as $mode
  | [$mode[] | select(.label | startswith("get/"))] as $get
  | [$get[] | . as $g | ($mode[] | select(.label == "health/" + ($g.label | split("/")[1]) and .rep == $g.rep)) as $h
     | {get: ($g | cpu), health: ($h | cpu), ratio: (($g | cpu) / ($h | cpu))}] | sort_by(.ratio) as $runs
  | "\($mode[0].label | split("/")[1]): \($runs[($runs | length) / 2 | floor].ratio * 100 | round / 100)x  " +
    ($runs | map("\(.get * 10 | round / 10) / \(.health * 10 | round / 10) µs") | join(", "))
' "$RESULTS"
