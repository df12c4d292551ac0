#!/usr/bin/env bash
# The whole benchmark of the todo backend, on this machine, into BENCHMARKS.md.
#
# Builds the release binaries (and the task-service's `bench-no-auth`
# variant), starts the three services on a fresh PostgreSQL database pair,
# seeds accounts and long task lists, then measures: every budget pair
# alternated and repeated (REPEATS, medians), the pgbench baselines running
# the services' own SQL (the scripts live beside the store code), the raw
# argon2id rate, the protocol matrix, h2load as an outside client (health
# and GetTask, direct and through the gateway), the service without its
# authentication layer, memory under a mixed load, a soak at half of peak,
# instructions per call under callgrind, and the attack benchmarks (with the
# services' default limits). Finally `bench report` writes BENCHMARKS.md.
#
# Usage: bench/run.sh                 (everything, about an hour)
#        PHASES="build seed budget" bench/run.sh   (a subset; see PHASES)
#        SOAK=20m REPEATS=5 bench/run.sh   (a shorter soak; the budget asks 60m)
#        PHASES="seed capacity report" bench/run.sh   (only the 64/256/1,024
#                                      in-flight runs of the budget)
#        PHASES="seed pinned" bench/run.sh   (GetTask against the health
#                                      floor with PostgreSQL on a core of its
#                                      own; not in the default PHASES: it
#                                      moves the server's processes)
#        COLD_BUILD=1 bench/run.sh    (also time a cold `cargo build` of a
#                                      fresh clone; only on an idle machine)
#        PROFILE=profiling bench/run.sh   (the release build with line tables:
#                                      the same code, whose callgrind profiles
#                                      name their functions; see below)
#
# Needs: cargo, psql, pgbench, jq and curl on PATH, a PostgreSQL server that
# the superuser URL in PG reaches, h2load (Debian's nghttp2-client) for the
# h2load phase, valgrind for the callgrind phase.
#
# The callgrind phase keeps each measured window's profile in
# $WORK/callgrind/ and, when the binaries carry line tables
# (PROFILE=profiling), what each function costs a call in <label>.txt
# (callgrind_annotate, inclusive).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
REPEATS=${REPEATS:-3}
DURATION=${DURATION:-5s}
MATRIX_DURATION=${MATRIX_DURATION:-3s}
SOAK=${SOAK:-60m}
COLD_BUILD=${COLD_BUILD:-0}
# The cargo profile the services are built with: release, or profiling
# (release with line tables; Cargo.toml).
PROFILE=${PROFILE:-release}
PHASES=${PHASES:-"build seed budget matrix h2load noauth mixed soak callgrind attacks report"}
H2LOAD_CALLS=${H2LOAD_CALLS:-200000}
WORK=${WORK:-$CARGO_TARGET_DIR/bench-run}
# Prefix of the cargo commands, e.g. CARGO_NICE="nice -n 10" on a shared machine
# (the services and the load generator themselves run at normal priority).
CARGO_NICE=${CARGO_NICE:-}
OUT=${OUT:-$ROOT/BENCHMARKS.md}
# Fixed ports below Linux's ephemeral range (32768-60999), so no client
# socket of the run itself can hold one when a service binds it.
AUTH_PORT=${AUTH_PORT:-28051}
TASKS_PORT=${TASKS_PORT:-28052}
GATEWAY_PORT=${GATEWAY_PORT:-28080}
CORES=$(nproc)

mkdir -p "$WORK/bin" "$WORK/logs"
RESULTS=$WORK/results.jsonl
MACHINE=$WORK/machine.txt
COMMANDS=$WORK/commands.txt
BIN=$WORK/bin
AUTH=http://127.0.0.1:$AUTH_PORT
TASKS=http://127.0.0.1:$TASKS_PORT
GATEWAY=http://127.0.0.1:$GATEWAY_PORT
AUTH_DB=$PG/bench_auth
TASKS_DB=$PG/bench_tasks

has() { [[ " $PHASES " == *" $1 "* ]]; }
log() { echo "== $(date +%H:%M:%S) $*" >&2; }
note() { echo "$*" >>"$COMMANDS"; }
noise() { echo "$(date +%H:%M:%S) $1: load average $(cut -d' ' -f1-3 /proc/loadavg)" >>"$WORK/noise.txt"; }

# --- build ----------------------------------------------------------------
if has build; then
  log "building $PROFILE binaries into $CARGO_TARGET_DIR"
  (cd "$ROOT" && $CARGO_NICE cargo build --profile "$PROFILE" -p auth-service -p task-service -p gateway -p bench)
  cp "$CARGO_TARGET_DIR/$PROFILE"/{auth-service,task-service,gateway,bench} "$BIN/"
  (cd "$ROOT" && $CARGO_NICE cargo build --profile "$PROFILE" -p task-service --features bench-no-auth)
  cp "$CARGO_TARGET_DIR/$PROFILE/task-service" "$BIN/task-service-no-auth"
  # Leave the ordinary build in place for whoever runs it next.
  (cd "$ROOT" && $CARGO_NICE cargo build --profile "$PROFILE" -p task-service)
fi
BENCH=$BIN/bench

# --- the machine ----------------------------------------------------------
if has seed || [[ ! -f $MACHINE ]]; then
  : >"$COMMANDS"
  : >"$WORK/noise.txt"
  {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "kernel: $(uname -srmo)"
    echo "cores (nproc): $CORES"
    lscpu | grep -E '^(Architecture|CPU\(s\)|Model name|Thread|Core|Socket|CPU MHz|L2|L3|Hypervisor|Virtualization)' || true
    free -m | sed -n 1,2p
    echo "PostgreSQL: $(psql "$PG/postgres" -tAc 'select version()')"
    echo "PostgreSQL settings: $(psql "$PG/postgres" -tAc "select string_agg(name || '=' || setting, ', ') from pg_settings where name in ('shared_buffers','synchronous_commit','fsync','max_connections','work_mem','autovacuum')")"
    echo "rustc: $(rustc --version)"
    echo "git: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo none) (working tree as it was at the run)"
  } >"$MACHINE"
fi

# --- services -------------------------------------------------------------
PIDS=()
AUTH_PID=; TASKS_PID=; GATEWAY_PID=
stop_services() {
  for pid in $GATEWAY_PID $TASKS_PID $AUTH_PID; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in $GATEWAY_PID $TASKS_PID $AUTH_PID; do
    wait "$pid" 2>/dev/null || true
  done
  AUTH_PID=; TASKS_PID=; GATEWAY_PID=
}
trap stop_services EXIT

# Limits raised for a load generator (honest traffic from one address,
# many calls per user); the attack phase starts them with their defaults.
RAISED_AUTH=(--address-rate-per-minute 100000000 --address-burst 1000000
  --login-max-failures 1000000 --login-max-failures-per-account 1000000)
RAISED_TASKS=(--max-calls-in-flight-per-user 100000 --max-searches-in-flight-per-user 100000
  --max-writes-per-user-per-minute 100000000)
# The bounds on all calls together, per gateway address and per task-service
# replica: raised, except for the runs that measure what they do.
RAISED_GATEWAY=(--max-concurrent-requests-per-address 1024)
RAISED_CAPACITY=(--max-calls-in-flight 100000)

# A command prefix for the services and the load generator: empty, or
# (taskset -c CPUS) in the pinned phase.
ON_CPUS=()
start_services() { # $1: raised|raised-but-capacity|defaults, $2: task-service binary
  local limits=$1 task_binary=${2:-$BIN/task-service}
  local auth_flags=() tasks_flags=() gateway_flags=()
  if [[ $limits == raised* ]]; then
    auth_flags=("${RAISED_AUTH[@]}"); tasks_flags=("${RAISED_TASKS[@]}")
  fi
  if [[ $limits == raised ]]; then
    gateway_flags=("${RAISED_GATEWAY[@]}"); tasks_flags+=("${RAISED_CAPACITY[@]}")
  fi
  local auth_cmd=("${ON_CPUS[@]}" "$BIN/auth-service" --listen "127.0.0.1:$AUTH_PORT" --database-url "$AUTH_DB"
    --key-encryption-key-file "$WORK/kek" --mail-dir "$WORK/mail" --access-token-ttl 12h
    --trusted-proxy 127.0.0.1 "${auth_flags[@]}")
  local tasks_cmd=("${ON_CPUS[@]}" "$task_binary" --listen "127.0.0.1:$TASKS_PORT" --database-url "$TASKS_DB"
    --auth-url "$AUTH" --max-tasks-per-user 200000 "${tasks_flags[@]}")
  local gateway_cmd=("${ON_CPUS[@]}" "$BIN/gateway" --listen "127.0.0.1:$GATEWAY_PORT" --auth-url "$AUTH"
    --tasks-url "$TASKS" "${gateway_flags[@]}")
  note "# services ($limits limits)"
  note "${auth_cmd[*]}"; note "${tasks_cmd[*]}"; note "${gateway_cmd[*]}"
  "${auth_cmd[@]}" >>"$WORK/logs/auth-service.log" 2>&1 &
  AUTH_PID=$!
  "${tasks_cmd[@]}" >>"$WORK/logs/task-service.log" 2>&1 &
  TASKS_PID=$!
  "${gateway_cmd[@]}" >>"$WORK/logs/gateway.log" 2>&1 &
  GATEWAY_PID=$!
  "$BENCH" wait --auth "$AUTH" --tasks "$TASKS" --gateway "$GATEWAY" --timeout 120s
}

restart_tasks() { # $1: binary
  kill "$TASKS_PID"; wait "$TASKS_PID" 2>/dev/null || true
  local tasks_cmd=("$1" --listen "127.0.0.1:$TASKS_PORT" --database-url "$TASKS_DB"
    --auth-url "$AUTH" --max-tasks-per-user 200000 "${RAISED_TASKS[@]}")
  note "${tasks_cmd[*]}"
  "${tasks_cmd[@]}" >>"$WORK/logs/task-service.log" 2>&1 &
  TASKS_PID=$!
  "$BENCH" wait --auth "$AUTH" --tasks "$TASKS" --gateway "$GATEWAY" --service tasks --service gateway --timeout 120s
}

pids() { echo --pid "auth-service=$AUTH_PID" --pid "task-service=$TASKS_PID" --pid "gateway=$GATEWAY_PID"; }
common() { # $1: label, $2: rep
  echo --auth "$AUTH" --tasks "$TASKS" --gateway "$GATEWAY" --fixture "$WORK/fixture.json" \
    --results "$RESULTS" --label "$1" --rep "$2" $(pids)
}
# A measured scenario: label rep scenario via [more flags].
load() {
  local label=$1 rep=$2 scenario=$3 via=$4; shift 4
  local duration=(--duration "$DURATION")
  [[ " $* " == *" --duration "* ]] && duration=()
  note "${ON_CPUS[*]}${ON_CPUS[*]:+ }bench load $(common "$label" "$rep") --scenario $scenario --via $via ${duration[*]} $*"
  "${ON_CPUS[@]}" "$BENCH" load $(common "$label" "$rep") --scenario "$scenario" --via "$via" "${duration[@]}" "$@"
}
# pgbench: label rep database script [flags]; appends {tps, latency_ms}.
# Ten clients: the size of each service's connection pool.
pgb() {
  local label=$1 rep=$2 database=$3 script=$4; shift 4
  local seconds=${DURATION%s}
  note "pgbench -n -M prepared -c 10 -j 2 -T $seconds -f $script $* $database"
  local output
  output=$(pgbench -n -M prepared -c 10 -j 2 -T "$seconds" -f "$script" "$@" "$database" 2>&1) || {
    echo "$output" >&2; return 1; }
  local tps latency failed
  tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' <<<"$output")
  latency=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$output")
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$output")
  echo "$label: $tps tps, $latency ms, failed ${failed:-0}" >&2
  echo "{\"label\":\"$label\",\"rep\":$rep,\"tps\":$tps,\"latency_ms\":$latency,\"failed\":${failed:-0}}" >>"$RESULTS"
}
TASK_PGBENCH=$ROOT/task-service/src/store/pgbench
AUTH_PGBENCH=$ROOT/auth-service/src/store/pgbench

# --- a fresh database pair and the fixture --------------------------------
if has seed; then
  : >"$RESULTS"
  log "fresh databases"
  for db in bench_auth bench_tasks; do
    psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
    psql "$PG/postgres" -qc "CREATE DATABASE $db"
  done
  rm -rf "$WORK/mail" "$WORK/logs"/*.log
  (umask 077 && head -c 32 /dev/urandom | base64 >"$WORK/kek")
  start_services raised
  noise "seed"
  log "seeding 200 users, 20 tasks each"
  "$BENCH" seed --auth "$AUTH" --tasks "$TASKS" --fixture "$WORK/fixture.json" --users 200 --tasks-per-user 20
  LIST_USER=$(jq -r .list_user.id "$WORK/fixture.json")
  DEEP_USER=$(jq -r .deep_user.id "$WORK/fixture.json")
  log "10,000 tasks for the list user, 100,000 for the deep user (SQL)"
  for pair in "$LIST_USER:10000" "$DEEP_USER:100000"; do
    owner=${pair%%:*} count=${pair##*:}
    psql "$TASKS_DB" -q <<SQL
INSERT INTO tasks (id, owner, title, description, search_title, search_description, completed,
  priority, due_time, due_key, create_time, update_time, complete_time, version, request_id)
SELECT gen_random_uuid(), '$owner', 'Seeded task ' || n, 'inserted by bench/run.sh',
  'seeded task ' || n, 'inserted by bench/run.sh', n % 3 = 0, (n % 4)::smallint, NULL,
  9223372036854775807, now() - n * interval '1 second', now() - n * interval '1 second',
  CASE WHEN n % 3 = 0 THEN now() END, 1, NULL
FROM generate_series(1, $count) AS n;
INSERT INTO task_counts (owner, total, completed)
SELECT owner, count(*), count(*) FILTER (WHERE completed) FROM tasks WHERE owner = '$owner' GROUP BY owner
ON CONFLICT (owner) DO UPDATE SET total = EXCLUDED.total, completed = EXCLUDED.completed;
SQL
  done
  psql "$TASKS_DB" -qc "VACUUM ANALYZE"
  psql "$AUTH_DB" -qc "VACUUM ANALYZE"
elif has budget || has capacity || has pinned || has matrix || has h2load || has noauth || has mixed || has soak || has callgrind || has attacks; then
  start_services raised
  LIST_USER=$(jq -r .list_user.id "$WORK/fixture.json")
  DEEP_USER=$(jq -r .deep_user.id "$WORK/fixture.json")
fi
# (Only the services need this; a report-only run starts nothing.)
[[ -n ${LIST_USER:-} ]] &&
  ANY_ID=$(psql "$TASKS_DB" -tAc "SELECT id FROM tasks WHERE owner = '$LIST_USER' LIMIT 1")

# --- the budget pairs, alternated, REPEATS times -------------------------
# 64, 256 and 1,024 callers of GetTask, through the gateway and direct, that
# back off for the RetryInfo of a refusal, as well-behaved clients do: at
# least the 1s it asks, plus up to a fifth more at random (as gRPC's
# connection back-off jitters), so the refused do not all come back at once.
# The gateway (256 calls in flight per address) and the task-service (256 per
# replica) keep their default bounds here: the excess is refused at once
# instead of queued. Part of every budget repetition; PHASES=capacity runs
# these alone, REPEATS times.
capacity() { # rep
  local rep=$1 via name flag n
  stop_services; start_services raised-but-capacity
  for via in gateway-grpc:grpc direct:direct; do
    name=${via%%:*} flag=${via##*:}
    for n in 64 256 1024; do
      load "get-$n/$name" "$rep" get "$flag" --in-flight "$n" --connections 8 --warmup 2s \
        --allow RESOURCE_EXHAUSTED --refusal-backoff 1s --refusal-jitter 0.2
    done
  done
  stop_services; start_services raised
}
pair() { # rep, then two commands (as strings) run in an order that alternates
  local rep=$1 a=$2 b=$3
  if (( rep % 2 )); then eval "$a"; eval "$b"; else eval "$b"; eval "$a"; fi
}
if has budget; then
  for rep in $(seq 1 "$REPEATS"); do
    noise "budget rep $rep"
    log "budget, repetition $rep of $REPEATS"
    pair "$rep" "load health/direct $rep health direct" "load get/direct $rep get direct"
    pair "$rep" "load health/gateway-grpc-web-h2 $rep health grpc-web-h2" \
      "load get/gateway-grpc-web-h2 $rep get grpc-web-h2"
    pair "$rep" "load list/direct $rep list direct" \
      "pgb pgbench/list-page $rep $TASKS_DB $TASK_PGBENCH/list_page.sql -D owner=$LIST_USER; pgb pgbench/list-tx $rep $TASKS_DB $TASK_PGBENCH/list_tx.sql -D owner=$LIST_USER"
    pgb pgbench/get "$rep" "$TASKS_DB" "$TASK_PGBENCH/get.sql" -D "owner=$LIST_USER" -D "id=$ANY_ID"
    pair "$rep" "load list-deep-p1/direct $rep list-deep direct --in-flight 1 --connections 1 --page 1" \
      "load list-deep-p1000/direct $rep list-deep direct --in-flight 1 --connections 1 --page 1000"
    pair "$rep" "load create/direct $rep create direct" \
      "pgb pgbench/create-tx $rep $TASKS_DB $TASK_PGBENCH/create_tx.sql -D owner_ready=0; pgb pgbench/insert $rep $TASKS_DB $TASK_PGBENCH/insert.sql -D owner_ready=0"
    pair "$rep" "load refresh/direct $rep refresh direct" \
      "psql $AUTH_DB -q -v clients=10 -f $AUTH_PGBENCH/refresh_setup.sql; pgb pgbench/refresh-tx $rep $AUTH_DB $AUTH_PGBENCH/refresh_tx.sql -D k=0"
    pair "$rep" "load login/direct $rep login direct --in-flight 16" \
      "$BENCH argon2 --results $RESULTS --label argon2/1 --rep $rep --threads 1 --duration 3s; $BENCH argon2 --results $RESULTS --label argon2/$CORES --rep $rep --threads $CORES --duration 3s"
    pair "$rep" "load get-idle/direct $rep get direct --rate 200 --in-flight 16" \
      "load get-under-login/direct $rep get direct --rate 200 --in-flight 16 --background login --background-in-flight 16"
    capacity "$rep"
    load set-completed/direct "$rep" set-completed direct
    for via in direct grpc-web-h2; do
      label=watch/$([[ $via == direct ]] && echo direct || echo gateway-$via)
      note "bench watch $(common "$label" "$rep") --via $via --streams 1000 --owner-streams 4 --changes 300"
      "$BENCH" watch $(common "$label" "$rep") --via "$via" --streams 1000 --owner-streams 4 --changes 300 --connections 8
    done
    note "bench logout-refusal $(common logout-refusal/direct "$rep") --rounds 20"
    "$BENCH" logout-refusal $(common logout-refusal/direct "$rep") --rounds 20
  done
fi

if has capacity && ! has budget; then
  for rep in $(seq 1 "$REPEATS"); do
    noise "capacity rep $rep"
    log "64, 256 and 1,024 in flight, repetition $rep of $REPEATS"
    capacity "$rep"
  done
fi

# --- every scenario by every way in, once --------------------------------
if has matrix; then
  noise "matrix"
  log "protocol matrix"
  for scenario in health login refresh create get list list-deep set-completed mixed; do
    for via in direct grpc grpc-web-h1 grpc-web-h2 connect-proto connect-json; do
      in_flight=64; [[ $scenario == login ]] && in_flight=16
      [[ $scenario == list-deep ]] && in_flight=4
      DURATION=$MATRIX_DURATION load "matrix/$scenario/$via" 1 "$scenario" "$via" --in-flight $in_flight --page 1000
    done
  done
fi

# --- without the authentication layer (a build feature) --------------------
if has noauth; then
  for rep in $(seq 1 "$REPEATS"); do
    noise "noauth rep $rep"
    log "bench-no-auth, repetition $rep"
    restart_tasks "$BIN/task-service-no-auth"
    load get-noauth/direct "$rep" get direct
    restart_tasks "$BIN/task-service"
    load get-auth/direct "$rep" get direct
  done
fi

# --- GetTask against the health floor, PostgreSQL on a core of its own ------
# The budget's GetTask row runs everything on every core: the load generator,
# the services and PostgreSQL, whose backends then run between a query and
# its answer on the core the task-service's thread was on. Here the health
# and GetTask pair runs, alternated, in three placements:
#   pg-own-core      PostgreSQL's processes on the last core, the services and
#                    the load generator on the others;
#   services-pinned  the services and the load generator on those same cores,
#                    PostgreSQL on every core (the pinning's own effect: fewer
#                    cores, so fewer worker threads, for the services);
#   unpinned         everything on every core, as the budget runs it.
# PostgreSQL's processes are moved with taskset (it must be on this machine)
# and put back on every core afterwards, even if the run fails.
postgres_on() { # cpu list
  local pid
  for pid in $(pgrep -x postgres); do taskset -a -p -c "$1" "$pid" >/dev/null; done
}
if has pinned; then
  (( CORES >= 2 )) || { echo "the pinned phase needs at least 2 cores" >&2; exit 1; }
  all_cpus=0-$((CORES - 1)) other_cpus=0-$((CORES - 2))
  trap 'stop_services; postgres_on "$all_cpus"' EXIT
  for rep in $(seq 1 "$REPEATS"); do
    noise "pinned rep $rep"
    log "GetTask and health with PostgreSQL on a core of its own and without, repetition $rep"
    for placement in pg-own-core services-pinned unpinned; do
      case $placement in
        pg-own-core) postgres_on "$((CORES - 1))"; ON_CPUS=(taskset -c "$other_cpus") ;;
        services-pinned) postgres_on "$all_cpus"; ON_CPUS=(taskset -c "$other_cpus") ;;
        unpinned) postgres_on "$all_cpus"; ON_CPUS=() ;;
      esac
      stop_services; start_services raised
      pair "$rep" "load pinned/$placement/health $rep health direct" "load pinned/$placement/get $rep get direct"
    done
  done
  postgres_on "$all_cpus"; ON_CPUS=()
  trap stop_services EXIT
  stop_services; start_services raised
  # Per placement: the median over repetitions of GetTask's task-service CPU
  # per call over the health Check's, then each repetition's.
  jq -rs '
    [.[] | select(.label | startswith("pinned/"))]
    | group_by(.label | split("/")[1])[] as $runs
    | [$runs[] | select(.label | endswith("/get")) as $get
       | ($runs[] | select(.rep == $get.rep and (.label | endswith("/health")))) as $health
       | {get: $get.cpu_us_per_call["task-service"], health: $health.cpu_us_per_call["task-service"]}
       | .ratio = .get / .health] | sort_by(.ratio) as $ratios
    | "pinned: \($runs[0].label | split("/")[1]): GetTask / health CPU \($ratios[$ratios | length / 2 | floor].ratio * 100 | round / 100)x ("
      + ($ratios | map("\(.get * 10 | round / 10) / \(.health * 10 | round / 10) µs") | join(", ")) + ")"
  ' "$RESULTS" >&2
fi

# --- memory under mixed ---------------------------------------------------
if has mixed || has soak; then
  stop_services
  start_services raised
  sleep 2
  "$BENCH" sample $(common idle-sample 1)
fi
if has mixed; then
  for rep in $(seq 1 "$REPEATS"); do
    noise "mixed rep $rep"
    log "mixed, repetition $rep"
    load mixed/gateway-grpc-web-h2 "$rep" mixed grpc-web-h2 --duration 10s
    load mixed/direct "$rep" mixed direct --duration 10s
  done
fi

# --- h2load: an outside client, as a cross-check ----------------------------
# nghttp2's load generator, 64 calls in flight (8 connections x 8 streams),
# the same request bytes every time. It sees HTTP statuses, not gRPC
# trailers, so one call of each is first checked for grpc-status 0 by curl.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
h2() { # label, rep, url, body file, then name=pid of each process to charge
  local label=$1 rep=$2 url=$3 body=$4; shift 4
  local headers=(-H 'content-type: application/grpc' -H 'te: trailers')
  [[ $label == */get/* ]] && headers+=(-H "authorization: Bearer $H2_TOKEN")
  curl -sS --http2-prior-knowledge -v "${headers[@]}" --data-binary "@$body" -o /dev/null "$url" 2>&1 |
    grep -q '< grpc-status: 0' || { echo "$label: the checked call did not answer grpc-status 0" >&2; return 1; }
  local before=() after=() process
  for process in "$@"; do before+=("$(cpu_ticks "${process#*=}")"); done
  note "h2load -n $H2LOAD_CALLS -c 8 -m 8 -t 1 -d $body ${headers[*]} $url"
  local output
  output=$(h2load -n "$H2LOAD_CALLS" -c 8 -m 8 -t 1 -d "$body" "${headers[@]}" "$url" 2>&1)
  for process in "$@"; do after+=("$(cpu_ticks "${process#*=}")"); done
  local rps ok mean cpu="" i=0 tick_us=$((1000000 / $(getconf CLK_TCK)))
  rps=$(sed -n 's/^finished in [0-9.]*[a-z]*, \([0-9.]*\) req\/s.*/\1/p' <<<"$output")
  ok=$(sed -n 's/^status codes: \([0-9]*\) 2xx.*/\1/p' <<<"$output")
  mean=$(awk '/^time for request:/ { v = $6; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
    print (u == "ms" ? v * 1000 : (u == "s" ? v * 1000000 : v)) }' <<<"$output")
  for process in "$@"; do
    cpu+="${cpu:+,}\"${process%%=*}\":$(jq -n "(${after[$i]} - ${before[$i]}) * $tick_us / $H2LOAD_CALLS")"
    i=$((i + 1))
  done
  echo "$label: $rps req/s, mean $mean us, $ok of $H2LOAD_CALLS 2xx" >&2
  echo "{\"label\":\"$label\",\"rep\":$rep,\"h2load_rps\":$rps,\"mean_us\":$mean,\"non_2xx\":$((H2LOAD_CALLS - ok)),\"cpu_us_per_call\":{$cpu}}" >>"$RESULTS"
}
if has h2load; then
  noise "h2load"
  log "h2load: health and GetTask, direct and through the gateway"
  printf '\x00\x00\x00\x00\x00' >"$WORK/health.grpc"
  # GetTaskRequest { id = 1: the 36-character id }, framed: 38 bytes.
  printf '\x00\x00\x00\x00\x26\x0a\x24%s' "$ANY_ID" >"$WORK/get.grpc"
  H2_TOKEN=$(jq -r .list_user.access_token "$WORK/fixture.json")
  for rep in $(seq 1 "$REPEATS"); do
    h2 h2load/health/direct "$rep" "$TASKS/grpc.health.v1.Health/Check" "$WORK/health.grpc" task-service="$TASKS_PID"
    h2 h2load/get/direct "$rep" "$TASKS/tasks.v1.TaskService/GetTask" "$WORK/get.grpc" task-service="$TASKS_PID"
    h2 h2load/health/gateway-grpc "$rep" "$GATEWAY/grpc.health.v1.Health/Check" "$WORK/health.grpc" gateway="$GATEWAY_PID"
    h2 h2load/get/gateway-grpc "$rep" "$GATEWAY/tasks.v1.TaskService/GetTask" "$WORK/get.grpc" \
      gateway="$GATEWAY_PID" task-service="$TASKS_PID"
  done
fi

# --- soak at half of peak -------------------------------------------------
if has soak; then
  peak=$(jq -s '[.[] | select(.label == "mixed/gateway-grpc-web-h2") | .rps] | sort | .[length/2|floor] // 1000' "$RESULTS")
  rate=$(jq -n "$peak / 2 | floor")
  # mixed churns the tasks table (creates and deletes alternate); without
  # autovacuum the dead rows pile up over the soak, which no deployment does.
  if [[ $(psql "$PG/postgres" -tAc 'show autovacuum') == off ]]; then
    log "warning: this PostgreSQL runs with autovacuum off; the soak's tables will bloat"
  fi
  noise "soak start ($SOAK at $rate/s)"
  log "soak: mixed at $rate calls/s (half of $peak) for $SOAK"
  load soak/gateway-grpc-web-h2 1 mixed grpc-web-h2 --rate "$rate" --in-flight 64 --duration "$SOAK" --report-every 60s
  noise "soak end"
fi

# --- instructions per call under callgrind -------------------------------
# Calls one at a time on one connection, for as long as the count takes.
CG_LOAD=(--in-flight 1 --connections 1 --warmup 0s --duration 600s)
callgrind() { # label, process name, pid, out file prefix, bench load flags...
  local label=$1 process=$2 pid=$3 out=$4; shift 4
  # Warm-up: enough calls that every fixture user's token has been verified
  # once (the task-service caches verified tokens; 200 calls over 200 users
  # left about 75 first verifications, ~16% of the instructions, inside the
  # measured window).
  "$BENCH" load "$@" --count 2000 "${CG_LOAD[@]}"
  # Two measured runs, of 1,001 calls and of 1: their difference is 1,000
  # calls without what each run of the load generator costs the server
  # once (its connection; for Refresh, the sign-in that starts its session,
  # an argon2id hash of ~115,000 instructions per call of 1,000).
  local calls call kept
  calls=$(callgrind_window "$pid" "$out" "$@" --count 1001)
  kept=$WORK/callgrind/${label#callgrind/}
  cp "$(ls -t "$out".* | head -1)" "$kept.out"
  if [[ -n $(readelf -S --wide "$BIN/$process" | grep -F .debug_line) ]]; then
    # What each function costs a call, its callees included: every one
    # above half a percent of the call.
    callgrind_annotate --inclusive=yes --threshold=100 "$kept.out" 2>/dev/null \
      | sed -E 's|/root/\.cargo/registry/src/[^/]*/||; s|/rustc/[0-9a-f]*/library/||; s| \[/[^]]*\]$||' \
      | awk '/ \(100\.0%\) / && !total { total = 1 }
             total && match($0, /^ *[0-9,]+ \( *[0-9.]+%\)/) {
               n = substr($0, 1, RLENGTH); rest = substr($0, RLENGTH + 1)
               split(n, f, "("); count = f[1]; gsub(/[ ,]/, "", count); share = f[2]; sub(/%\)/, "", share)
               if (share + 0 >= 0.5) printf "%9d  %5.1f%%  %s\n", count / 1001, share, rest }' \
      >"$kept.txt" || true
  fi
  call=$(callgrind_window "$pid" "$out" "$@" --count 1)
  local instructions=$((calls - call))
  echo "$label: $instructions instructions for 1000 calls" >&2
  echo "{\"label\":\"$label\",\"rep\":1,\"process\":\"$process\",\"instructions\":$instructions,\"instructions_per_call\":$((instructions / 1000))}" >>"$RESULTS"
}
callgrind_window() { # pid, out file prefix, bench load flags...: the instructions of one run
  local pid=$1 out=$2; shift 2
  callgrind_control -z "$pid" >/dev/null
  "$BENCH" load "$@" "${CG_LOAD[@]}" >&2
  callgrind_control -d "$pid" >/dev/null
  sleep 1
  local file instructions
  file=$(ls -t "$out".* | head -1)
  instructions=$(sed -n 's/^summary: \([0-9]*\).*/\1/p' "$file" | head -1)
  [[ -z $instructions ]] && instructions=$(sed -n 's/^totals: \([0-9]*\).*/\1/p' "$file" | head -1)
  echo "$instructions"
}
if has callgrind; then
  noise "callgrind"
  log "callgrind: a task-service, a gateway and an auth-service of their own under valgrind"
  rm -rf "$WORK"/callgrind.* "$WORK/callgrind"
  mkdir -p "$WORK/callgrind"
  CG_TASKS=28062 CG_GATEWAY=28090 CG_AUTH=28061
  valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.tasks.%p" \
    "$BIN/task-service" --listen "127.0.0.1:$CG_TASKS" --database-url "$TASKS_DB" --auth-url "$AUTH" \
    --max-tasks-per-user 200000 "${RAISED_TASKS[@]}" >>"$WORK/logs/callgrind-tasks.log" 2>&1 &
  cg_tasks=$!
  valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.gateway.%p" \
    "$BIN/gateway" --listen "127.0.0.1:$CG_GATEWAY" --auth-url "$AUTH" --tasks-url "$TASKS" \
    "${RAISED_GATEWAY[@]}" >>"$WORK/logs/callgrind-gateway.log" 2>&1 &
  cg_gateway=$!
  valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.auth.%p" \
    "$BIN/auth-service" --listen "127.0.0.1:$CG_AUTH" --database-url "$AUTH_DB" \
    --key-encryption-key-file "$WORK/kek" --mail-dir "$WORK/mail" --access-token-ttl 12h \
    "${RAISED_AUTH[@]}" >>"$WORK/logs/callgrind-auth.log" 2>&1 &
  cg_auth=$!
  "$BENCH" wait --auth "http://127.0.0.1:$CG_AUTH" --tasks "http://127.0.0.1:$CG_TASKS" \
    --gateway "http://127.0.0.1:$CG_GATEWAY" --timeout 600s
  cg_common=(--auth "$AUTH" --fixture "$WORK/fixture.json" --results /dev/null)
  # Each call with its server's health Check, the floor of the CPU rows:
  # their ratio in instructions is the same on any host.
  callgrind callgrind/health-direct task-service "$cg_tasks" "$WORK/callgrind.tasks" \
    "${cg_common[@]}" --tasks "http://127.0.0.1:$CG_TASKS" --gateway "$GATEWAY" --scenario health --via direct
  callgrind callgrind/get-direct task-service "$cg_tasks" "$WORK/callgrind.tasks" \
    "${cg_common[@]}" --tasks "http://127.0.0.1:$CG_TASKS" --gateway "$GATEWAY" --scenario get --via direct
  callgrind callgrind/list-direct task-service "$cg_tasks" "$WORK/callgrind.tasks" \
    "${cg_common[@]}" --tasks "http://127.0.0.1:$CG_TASKS" --gateway "$GATEWAY" --scenario list --via direct
  callgrind callgrind/health-gateway gateway "$cg_gateway" "$WORK/callgrind.gateway" \
    "${cg_common[@]}" --tasks "$TASKS" --gateway "http://127.0.0.1:$CG_GATEWAY" --scenario health --via grpc-web-h2
  callgrind callgrind/get-gateway gateway "$cg_gateway" "$WORK/callgrind.gateway" \
    "${cg_common[@]}" --tasks "$TASKS" --gateway "http://127.0.0.1:$CG_GATEWAY" --scenario get --via grpc-web-h2
  callgrind callgrind/refresh-direct auth-service "$cg_auth" "$WORK/callgrind.auth" \
    --auth "http://127.0.0.1:$CG_AUTH" --fixture "$WORK/fixture.json" --results /dev/null \
    --tasks "$TASKS" --gateway "$GATEWAY" --scenario refresh --via direct
  note "valgrind --tool=callgrind (task-service, gateway and auth-service as above, on ports $CG_TASKS, $CG_GATEWAY and $CG_AUTH); callgrind_control -z before and -d after a run of 1,001 calls and a run of 1, one at a time; their difference"
  kill "$cg_tasks" "$cg_gateway" "$cg_auth"; wait "$cg_tasks" "$cg_gateway" "$cg_auth" 2>/dev/null || true
fi

# --- attacks, with the services' default limits ---------------------------
if has attacks; then
  stop_services
  start_services defaults
  for rep in $(seq 1 "$REPEATS"); do
    noise "attacks rep $rep"
    log "attacks, repetition $rep"
    for attack in idle search logout-flood sign-in-storm health-watch; do
      note "bench attack $(common "attack/$attack" "$rep") --attack $attack --via grpc --victim-rate 100 --duration 10s"
      "$BENCH" attack $(common "attack/$attack" "$rep") --attack "$attack" --via grpc --victim-rate 100 --duration 10s
    done
  done
  stop_services
fi

# --- a cold build of a fresh clone (only on request: it needs an idle machine)
if [[ $COLD_BUILD == 1 ]]; then
  log "cold build of a fresh clone"
  rm -rf "$WORK/clone" "$WORK/clone-target"
  git clone -q "$ROOT" "$WORK/clone"
  before=$(cut -d' ' -f1-3 /proc/loadavg)
  start=$(date +%s.%N)
  (cd "$WORK/clone" && CARGO_TARGET_DIR="$WORK/clone-target" cargo build --timings >"$WORK/logs/cold-build.log" 2>&1)
  seconds=$(echo "$(date +%s.%N) - $start" | bc)
  after=$(cut -d' ' -f1-3 /proc/loadavg)
  slowest=$(python3 "$ROOT/bench/timings.py" "$WORK/clone-target/cargo-timings/cargo-timing.html")
  jq -nc --arg s "$seconds" --arg load "before $before, after $after" --arg text "$slowest" \
    '{label:"build/cold",rep:1,seconds:($s|tonumber),load:$load,text:$text}' >>"$RESULTS"
  note "git clone $ROOT clone && CARGO_TARGET_DIR=<empty> cargo build --timings"
fi

# --- the report -----------------------------------------------------------
if has report; then
  {
    cat "$MACHINE"
    echo
    echo "Load average (1, 5, 15 min) at the start of each phase:"
    cat "$WORK/noise.txt"
  } >"$WORK/machine-and-noise.txt"
  "$BENCH" report --results "$RESULTS" --machine "$WORK/machine-and-noise.txt" --commands "$COMMANDS" \
    --analysis "$ROOT/bench/ANALYSIS.md" --cores "$CORES" --hash-permits "$CORES" --out "$OUT"
fi
has report && log "done: $OUT"
log "finished: $PHASES"
