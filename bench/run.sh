#!/usr/bin/env bash
# bench/run.sh: the voice bridge's benchmark (what `./build.sh bench` runs
# once everything is built).
#
#   bench/run.sh               nginx + bridged against bench_fake_openai,
#                              one row per level of BENCH_LEVELS, then one
#                              row with a slow OpenAI (caller audio held)
#   bench/run.sh --calibrate   bench_load against bench_fake_openai
#                              --twilio-echo, no bridge: the tools' floor
#   bench/run.sh --scale       one level (BENCH_SCALE_CALLS, 600) with 1, 2
#                              and 3 bridged daemons (BENCH_SCALE_BRIDGES)
#                              behind the one nginx
#   bench/run.sh --callgrind   nginx and bridged under valgrind's callgrind,
#                              BENCH_CG_CALLS (10) calls of 5 s and of 15 s,
#                              with the fake echoing and not: instructions
#                              per frame in each direction
#   bench/run.sh --overload    voice_max_calls BENCH_MAX_CALLS (800), and
#                              BENCH_OVERLOAD_CALLS (twice as many) calls
#                              offered: the admitted calls' round trips and
#                              losses, and how many were refused (1013);
#                              then the same offer without the limit
#                              (BENCH_OVERLOAD_CONTROL=0 skips it)
#
# The load tools (bench_load, bench_fake_openai, this script) run on core 0,
# nginx (one worker) and bridged on core 1 (taskset).  Each level gets a
# fresh nginx, bridged and fake OpenAI.  bench_load marks its steady window
# on stderr and this script samples /proc there: utime + stime of the nginx
# master and worker and of bridged, their VmRSS (over the idle RSS taken
# before the level), and the tools' own CPU.
#
# Environment: BENCH_LEVELS ("100 500 1000"), BENCH_SECONDS (30: seconds of
# full load per level, after the ramp), BENCH_RAMP (200 calls/s),
# BENCH_DELAY_CALLS (50) and BENCH_DELAY_MS (300) for the slow-OpenAI row
# (BENCH_DELAY_CALLS=0 skips it), BENCH_BRIDGES (1: bridged daemons behind
# nginx, all on core 1), BENCH_TLS_CALLS (200: a row with the fake OpenAI
# behind TLS, to show what TLS costs bridged; 0 skips it),
# BENCH_BRIDGED_LOG (info), BENCH_QUICKACK=1
# (bench_load --quickack: no delayed ACKs, unlike Twilio; shows what
# Nagle costs a server without TCP_NODELAY), BENCH_KEEP=1 keeps the
# temporary directory.  BENCH_WRAP_BRIDGED and BENCH_WRAP_NGINX put a
# command in front of bridged or nginx (valgrind --tool=massif, say).
# Results also go to bench/results/<timestamp>.txt.
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$TOP/bench
BUILD=${VOICE_BUILD_DIR:-$TOP/build}
TOOLS=$BENCH/build

LEVELS=${BENCH_LEVELS:-100 500 1000}
DURATION=${BENCH_SECONDS:-30}
RAMP=${BENCH_RAMP:-200}
DELAY_CALLS=${BENCH_DELAY_CALLS:-50}
DELAY_MS=${BENCH_DELAY_MS:-300}
BRIDGED_LOG=${BENCH_BRIDGED_LOG:-info}
QUICKACK=${BENCH_QUICKACK:-0}
BRIDGES=${BENCH_BRIDGES:-1}
TLS_CALLS=${BENCH_TLS_CALLS:-200}
TLS=0                   # 1: the fake OpenAI behind a TLS proxy
STREAM_MODULE=/usr/lib/nginx/modules/ngx_stream_module.so
read -r -a WRAP_BRIDGED <<< "${BENCH_WRAP_BRIDGED:-}"
read -r -a WRAP_NGINX <<< "${BENCH_WRAP_NGINX:-}"
PUBLIC=voice.example.test
SIGN_URL=wss://$PUBLIC/media-stream

CALIBRATE=0
MODE=levels
CMDLINE="$0 $*"

say() { printf '%s\n' "bench: $*" >&2; }
die() { say "error: $*"; exit 1; }

for a in "$@"; do
    case $a in
        --calibrate) CALIBRATE=1 ;;
        --scale) MODE=scale ;;
        --callgrind) MODE=callgrind ;;
        --overload) MODE=overload ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $a (try --help)" ;;
    esac
done


# --- set-up -----------------------------------------------------------------

make -s -C "$BENCH" O="$TOOLS" || die "the benchmark tools do not build"

PIN=1
if ! taskset -c 0 true 2>/dev/null || ! taskset -c 1 true 2>/dev/null; then
    PIN=0
    say "cores 0 and 1 are not both available: running unpinned"
fi

on_core() {
    local core=$1; shift
    if [ $PIN -eq 1 ]; then
        exec taskset -c "$core" "$@"
    fi
    exec "$@"
}

NPROC=$(nproc --all)

# this script, and what it starts without saying otherwise, stay on core 0
if [ $PIN -eq 1 ]; then
    taskset -pc 0 $$ > /dev/null
fi

# every tool holds one socket per call (nginx two, with bridged's)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

WORK=$(mktemp -d /tmp/voice-bench.XXXXXX)
mkdir -p "$BENCH/results"
STAMP=$(date +%Y%m%d-%H%M%S)
RESULTS=$BENCH/results/$STAMP.txt
[ $CALIBRATE -eq 0 ] || RESULTS=$BENCH/results/$STAMP-calibrate.txt
: > "$RESULTS"

PIDS=()
LOAD_PID=""

cleanup() {
    local p i
    trap - EXIT INT TERM
    if [ -n "$LOAD_PID" ]; then
        PIDS+=("$LOAD_PID")
    fi
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for i in $(seq 1 50); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        say "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

forget_pid() {
    local p keep=()
    for p in "${PIDS[@]}"; do
        if [ "$p" != "$1" ]; then
            keep+=("$p")
        fi
    done
    PIDS=("${keep[@]}")
}

# stops one process: SIGTERM (or $2), then SIGKILL after 15 s
stop_pid() {
    local p=$1 sig=${2:-TERM} i
    [ -n "$p" ] || return 0
    kill -"$sig" "$p" 2>/dev/null || true
    for i in $(seq 1 150); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    forget_pid "$p"
}

# prints to the terminal and to the results file
out() { printf '%s\n' "$*" | tee -a "$RESULTS"; }

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# a flat JSON value: jget KEY < file
jget() { sed -n "s/.*\"$1\":\"\{0,1\}\([^,\"}]*\).*/\1/p" | head -n1; }


# --- /proc --------------------------------------------------------------------

TCK=$(getconf CLK_TCK)

# utime + stime of a process, in clock ticks (awk, for the same reason)
ticks() {
    local v=""
    if [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ]; then
        # after "pid (comm) ": state is field 1, utime 12, stime 13
        v=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" \
            2>/dev/null)
    fi
    echo "${v:-0}"
}

sum_ticks() {
    local p t=0
    for p in "$@"; do t=$(( t + $(ticks "$p") )); done
    echo $t
}

# VmRSS in kB (sed, not bash's read, which a signal can cut short)
rss() {
    local v="" i
    for i in 1 2 3; do
        if [ -n "${1:-}" ] && [ -r "/proc/$1/status" ]; then
            v=$(sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$1/status")
        fi
        if [ -n "$v" ]; then
            break
        fi
    done
    echo "${v:-0}"
}

sum_rss() {
    local p t=0
    for p in "$@"; do t=$(( t + $(rss "$p") )); done
    echo $t
}

now_us() { echo "${EPOCHREALTIME/./}"; }


# --- the processes --------------------------------------------------------------

RUN=""              # the current level's directory
MAX_CALLS=0         # voice_max_calls of the next stack (0: none)
FAKE_PID=""
FAKE_PORT=""
NGINX_MASTER=""
NGINX_WORKER=""
NGINX_PORT=""
BRIDGED_PID=""
BRIDGED_PIDS=()
TOKEN=""
API_TOKEN=""

# start_fake [options]: bench_fake_openai on core 0
start_fake() {
    local i
    : > "$RUN/fake.out"
    ( on_core 0 "$TOOLS/bench_fake_openai" --port 0 "$@" ) \
        > "$RUN/fake.out" 2> "$RUN/fake.log" &
    FAKE_PID=$!
    PIDS+=("$FAKE_PID")
    for i in $(seq 1 100); do
        if grep -q '^READY ' "$RUN/fake.out"; then
            FAKE_PORT=$(sed -n 's/^READY \([0-9]*\).*/\1/p' "$RUN/fake.out")
            return 0
        fi
        kill -0 "$FAKE_PID" 2>/dev/null || break
        sleep 0.05
    done
    cat "$RUN/fake.log" >&2
    die "bench_fake_openai did not start"
}

status() {
    curl -s --max-time 2 "http://127.0.0.1:$NGINX_PORT/voice-status" || true
}

# a stock nginx (stream module) on core 0 that terminates TLS in front of
# the fake OpenAI, with the test certificate: bridged then speaks wss:// and
# verifies it against the test CA, as it does with OpenAI
start_tls_proxy() {
    local i
    TLS_PORT=$(free_port)
    mkdir -p "$RUN/tls"
    cat > "$RUN/tls/nginx.conf" <<CONF
load_module $STREAM_MODULE;
$( [ "$(id -u)" -eq 0 ] && echo "user root;" )
worker_processes 1;
worker_rlimit_nofile 65536;
daemon off;
pid $RUN/tls/nginx.pid;
error_log $RUN/tls/error.log warn;
events { worker_connections 16384; }
stream {
    server {
        listen 127.0.0.1:$TLS_PORT ssl;
        ssl_certificate $BUILD/certs/server.pem;
        ssl_certificate_key $BUILD/certs/server.key;
        proxy_pass 127.0.0.1:$FAKE_PORT;
    }
}
CONF
    ( on_core 0 /usr/sbin/nginx -p "$RUN/tls" -c "$RUN/tls/nginx.conf" ) \
        > "$RUN/tls/nginx.out" 2>&1 &
    TLS_PID=$!
    PIDS+=("$TLS_PID")
    for i in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$TLS_PORT") 2>/dev/null; then
            return 0
        fi
        kill -0 "$TLS_PID" 2>/dev/null || break
        sleep 0.05
    done
    cat "$RUN/tls/nginx.out" "$RUN/tls/error.log" >&2 2>/dev/null || true
    die "the TLS proxy did not start"
}

# start_stack [fake options]: fake OpenAI, bridged and nginx, in $RUN
start_stack() {
    local i code=000 api_key

    TOKEN=$(openssl rand -hex 16)
    API_TOKEN=$(openssl rand -hex 16)
    api_key=sk-bench-$(openssl rand -hex 12)
    NGINX_PORT=$(free_port)

    start_fake --api-key "$api_key" "$@"

    OAI_URL=ws://127.0.0.1:$FAKE_PORT/v1/realtime
    if [ "$TLS" = 1 ]; then
        start_tls_proxy
        OAI_URL=wss://127.0.0.1:$TLS_PORT/v1/realtime
    fi

    # the configuration: the template, then one worker and quiet logs
    mkdir -p "$RUN/tmp" "$RUN/transcripts"
    USER_LINE=""
    if [ "$(id -u)" -eq 0 ]; then
        USER_LINE="user root;"
    fi
    RUN_DIR=$RUN
    ERROR_LOG=$RUN/error.log
    MODULE=$BUILD/nginx/ngx_http_voice_module.so
    BRIDGE_ENDPOINT=""
    for i in $(seq 1 "$BRIDGES"); do
        BRIDGE_ENDPOINT+="${BRIDGE_ENDPOINT:+ }ipc://$RUN/bridged-$i.sock"
    done
    LISTEN=127.0.0.1:$NGINX_PORT
    EXTRA_HTTP=""
    if [ "$MAX_CALLS" -gt 0 ]; then
        EXTRA_HTTP="voice_max_calls $MAX_CALLS;"
    fi
    # rendered as build.sh renders it (tools/render.py)
    /usr/bin/python3 "$TOP/tools/render.py" "$TOP/conf/nginx.conf.in" \
        -o "$RUN/nginx.rendered.conf" USER_LINE="$USER_LINE" \
        RUN_DIR="$RUN_DIR" ERROR_LOG="$ERROR_LOG" MODULE="$MODULE" \
        BRIDGE_ENDPOINT="$BRIDGE_ENDPOINT" LISTEN="$LISTEN" \
        EXTRA_HTTP="$EXTRA_HTTP"
    sed -e 's/^\([[:space:]]*\)worker_processes .*;/\1worker_processes 1;/' \
        -e 's/^\([[:space:]]*error_log [^;]*\) [a-z]*;/\1 warn;/' \
        "$RUN/nginx.rendered.conf" > "$RUN/nginx.conf"
    grep -q '^worker_processes 1;' "$RUN/nginx.conf" \
        || die "no worker_processes line to set in conf/nginx.conf.in"
    grep -q "^error_log $ERROR_LOG warn;" "$RUN/nginx.conf" \
        || die "no error_log line to set in conf/nginx.conf.in"

    BRIDGED_PIDS=()
    for i in $(seq 1 "$BRIDGES"); do
        ( export OPENAI_API_KEY=$api_key \
                 OPENAI_REALTIME_URL=$OAI_URL \
                 OPENAI_MODEL=gpt-realtime \
                 TWILIO_ACCOUNT_SID=AC$(openssl rand -hex 16) \
                 TWILIO_AUTH_TOKEN=$TOKEN \
                 TWILIO_API_URL=http://127.0.0.1:9 \
                 BRIDGED_CA_FILE=$BUILD/certs/ca.pem
          on_core 1 ${WRAP_BRIDGED[@]+"${WRAP_BRIDGED[@]}"} \
              "$BUILD/bridged/bridged" --listen "ipc://$RUN/bridged-$i.sock" \
              --log-level "$BRIDGED_LOG" ) > "$RUN/bridged-$i.log" 2>&1 &
        BRIDGED_PIDS+=($!)
        PIDS+=($!)
    done
    BRIDGED_PID=${BRIDGED_PIDS[0]}

    ( export PUBLIC_URL=https://$PUBLIC TWILIO_AUTH_TOKEN=$TOKEN \
             VOICE_API_TOKEN=$API_TOKEN \
             TRANSCRIPT_DIR=$RUN/transcripts
      unset OPENAI_API_KEY TWILIO_ACCOUNT_SID
      on_core 1 ${WRAP_NGINX[@]+"${WRAP_NGINX[@]}"} /usr/sbin/nginx -p "$RUN" -c "$RUN/nginx.conf" ) \
        > "$RUN/nginx.out" 2>&1 &
    NGINX_MASTER=$!
    PIDS+=("$NGINX_MASTER")

    # up, and a request really reaches bridged (voice_status says "alive"
    # before the worker's DEALER has connected): /api/numbers answers 502
    # (bridged finds no Twilio API, there is none) instead of 503
    for i in $(seq 1 200); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
               -H "Authorization: Bearer $API_TOKEN" \
               "http://127.0.0.1:$NGINX_PORT/api/numbers" || true)
        if [ "$code" != 000 ] && [ "$code" != 503 ]; then
            break
        fi
        kill -0 "$NGINX_MASTER" 2>/dev/null \
            || { cat "$RUN/nginx.out" "$RUN/error.log" >&2; die "nginx did not start"; }
        for p in "${BRIDGED_PIDS[@]}"; do
            kill -0 "$p" 2>/dev/null \
                || { cat "$RUN"/bridged-*.log >&2; die "bridged did not start"; }
        done
        sleep 0.1
    done
    if [ "$code" = 000 ] || [ "$code" = 503 ]; then
        die "nginx does not reach bridged (/api/numbers: $code)"
    fi

    NGINX_WORKER=$(pgrep -P "$NGINX_MASTER" | head -n1)
    [ -n "$NGINX_WORKER" ] || die "no nginx worker"
    say "nginx $NGINX_MASTER (worker $NGINX_WORKER) on :$NGINX_PORT, bridged ${BRIDGED_PIDS[*]}, fake OpenAI $FAKE_PID on :$FAKE_PORT"
}

# the calls' transcripts written (nginx has no live call), then all stop
stop_stack() {
    local i calls=""
    if [ -n "$NGINX_MASTER" ]; then
        for i in $(seq 1 300); do
            kill -0 "$NGINX_MASTER" 2>/dev/null || break
            calls=$(status | jget calls)
            if [ "$calls" = 0 ]; then
                break
            fi
            sleep 0.1
        done
        if [ "$calls" != 0 ]; then
            say "warning: nginx still has ${calls:-?} live calls after 30 s"
            printf 'nginx still had %s live calls 30 s after the level\n' \
                "${calls:-?}" >> "$RUN/leftover"
        fi
        stop_pid "$NGINX_MASTER" QUIT
    fi
    for p in "${BRIDGED_PIDS[@]}"; do
        stop_pid "$p"
    done
    stop_pid "$FAKE_PID"
    if [ -n "${TLS_PID:-}" ]; then
        stop_pid "$TLS_PID" QUIT
    fi
    NGINX_MASTER="" NGINX_WORKER="" BRIDGED_PID="" FAKE_PID="" TLS_PID=""
    BRIDGED_PIDS=()
}


# --- one level ------------------------------------------------------------------

# run_level LABEL CALLS: runs bench_load against TARGET_PORT, prints a row
run_level() {
    local label=$1 calls=$2 json=$RUN/load.json log=$RUN/load.log
    local procs=() quickack=() line rc=0 notes="" row
    local t0=0 t1=0 b0=0 b1=0 n0=0 n1=0 l0=0 l1=0 f0=0 f1=0
    local rss_idle=0 rss_ss=0 ni=0 ns=0 di=0 ds=0 st1=""

    if [ $CALIBRATE -eq 0 ]; then
        procs=("$NGINX_MASTER" "$NGINX_WORKER" "${BRIDGED_PIDS[@]}")
        ni=$(sum_rss "$NGINX_MASTER" "$NGINX_WORKER")
        di=$(sum_rss "${BRIDGED_PIDS[@]}")
        rss_idle=$(( ni + di ))
    fi

    if [ "$QUICKACK" = 1 ]; then
        quickack=(--quickack)
    fi

    rm -f "$RUN/events"
    mkfifo "$RUN/events"
    : > "$log"

    say "level $label: $calls calls, $DURATION s at full load"
    ( on_core 0 "$TOOLS/bench_load" --host 127.0.0.1 --port "$TARGET_PORT" \
          --path /media-stream --sign-url "$SIGN_URL" \
          --auth-token "$TOKEN" --calls "$calls" --seconds "$DURATION" \
          --ramp-per-sec "$RAMP" --json "${quickack[@]}" ) \
        > "$json" 2> "$RUN/events" &
    LOAD_PID=$!

    # bench_load says where its steady window begins and ends
    while IFS= read -r line; do
        printf '%s\n' "$line" >> "$log"
        case $line in
            *"event steady-begin"*)
                t0=$(now_us)
                b0=$(sum_ticks "${procs[@]}")
                n0=$(sum_ticks "$NGINX_MASTER" "$NGINX_WORKER")
                l0=$(ticks "$LOAD_PID"); f0=$(ticks "$FAKE_PID")
                ;;
            *"event steady-end"*)
                t1=$(now_us)
                b1=$(sum_ticks "${procs[@]}")
                n1=$(sum_ticks "$NGINX_MASTER" "$NGINX_WORKER")
                l1=$(ticks "$LOAD_PID"); f1=$(ticks "$FAKE_PID")
                if [ $CALIBRATE -eq 0 ]; then
                    ns=$(sum_rss "$NGINX_MASTER" "$NGINX_WORKER")
                    ds=$(sum_rss "${BRIDGED_PIDS[@]}")
                    rss_ss=$(( ns + ds ))
                fi
                ;;
        esac
    done < "$RUN/events"

    wait "$LOAD_PID" || rc=$?
    LOAD_PID=""

    # bench_load ends on SIGINT with 130 and its partial report; bash then
    # takes the Ctrl-C for handled, so this script stops here by itself
    if [ $rc -eq 130 ] || [ $rc -eq 143 ]; then
        say "interrupted"
        exit 130
    fi
    [ $rc -eq 0 ] || say "bench_load exited with $rc"

    if [ $CALIBRATE -eq 0 ]; then
        st1=$(status)
        local dropped_in
        dropped_in=$(jget audioDropped <<< "$st1")
        if [ -n "$dropped_in" ] && [ "$dropped_in" != 0 ]; then
            notes+=" nginx-dropped-frames=$dropped_in"
        fi
    fi

    if [ ! -s "$json" ]; then
        out "$(printf '%-14s bench_load gave no result (exit %s)' "$label" "$rc")"
        return 0
    fi

    local ok fail p50 p99 max wlost slost v refused
    ok=$(jget connected < "$json"); fail=$(jget failed < "$json")

    # calls refused for want of room (1013) are not the bridge's load:
    # the figures per call are the admitted calls'
    refused=$(jget refused < "$json")
    if [ -n "$refused" ] && [ "$refused" != 0 ]; then
        notes+=" offered=$ok refused=$refused(1013)"
        ok=$(( ok - refused ))
    fi
    if [ "$MODE" = overload ]; then
        # the ramp, refusals and all, as well as the steady window
        notes+=" RTT of all frames p99/max $(jget all_rtt_p99_ms < "$json")/$(jget all_rtt_max_ms < "$json") ms"
    fi
    p50=$(jget rtt_p50_ms < "$json"); p99=$(jget rtt_p99_ms < "$json")
    max=$(jget rtt_max_ms < "$json")
    wlost=$(jget frames_lost < "$json"); slost=$(jget start_lost < "$json")

    v=$(jget dropped < "$json")
    if [ "$v" != 0 ]; then
        notes+=" hung-up=$v($(jget drop_reason < "$json"))"
    fi
    v=$(jget failed_status < "$json")
    if [ "$v" != 0 ]; then
        notes+=" non-101=$v(last $(jget last_status < "$json"))"
    fi
    for v in failed_refused failed_timeout failed_other misrouted corrupt \
             duplicates; do
        if [ "$(jget $v < "$json")" != 0 ]; then
            notes+=" $v=$(jget $v < "$json")"
        fi
    done
    v=$(jget late_frames < "$json")
    if [ "$v" != 0 ]; then
        notes+=" late>5ms=$v(max $(jget late_max_ms < "$json") ms)"
    fi
    v=$(jget backlog_max_bytes < "$json")
    if [ "$v" != 0 ]; then
        notes+=" send-backlog=${v}B"
    fi
    if [ "$label" = delay ]; then
        notes+=" RTT of all frames (held ones too) p99/max $(jget all_rtt_p99_ms < "$json")/$(jget all_rtt_max_ms < "$json") ms"
    fi
    if [ -s "$RUN/leftover" ]; then
        notes+=" $(cat "$RUN/leftover")"
    fi

    row=$(awk -v label="$label" -v ok="$ok" -v fail="$fail" \
              -v t0="$t0" -v t1="$t1" -v b0="$b0" -v b1="$b1" \
              -v l0="$l0" -v l1="$l1" -v f0="$f0" -v f1="$f1" \
              -v ri="$rss_idle" -v rs="$rss_ss" -v tck="$TCK" \
              -v p50="$p50" -v p99="$p99" -v max="$max" \
              -v wl="$wlost" -v sl="$slost" -v cal="$CALIBRATE" \
              -v notes="$notes" 'BEGIN {
        win = (t1 - t0) / 1e6
        bms = (b1 - b0) * 1000 / tck
        tms = (l1 - l0 + f1 - f0) * 1000 / tck
        if (cal || win <= 0 || ok == 0) {
            cpu = "-"; rssc = "-"; bpct = "-"
        } else {
            cpu = sprintf("%.3f", bms / (ok * win))
            rssc = sprintf("%.1f", (rs - ri) / ok)
            bpct = sprintf("%.0f%%", bms / 10 / win)
        }
        tpct = win > 0 ? tms / 10 / win : 0
        if (!cal && win > 0 && bms / 10 / win > 95)
            notes = notes " BRIDGE SATURATED (its core is full: CPU/call is a floor)"
        if (tpct > 90) notes = notes " TOOLS SATURATED"
        printf "%-10s %5s/%-5s %8s %8s %7.2f/%7.2f/%8.2f %7s/%-6s %6s %5.0f%% %5.1fs%s\n",
               label, ok, fail, cpu, rssc, p50, p99, max, wl, sl, bpct,
               tpct, win, notes
    }')
    out "$row"

    {
        if [ $CALIBRATE -eq 0 ]; then
            awk -v label="$label" -v ok="$ok" -v t0="$t0" -v t1="$t1" \
                -v b0="$b0" -v b1="$b1" -v n0="$n0" -v n1="$n1" \
                -v ni="$ni" -v ns="$ns" -v di="$di" -v ds="$ds" \
                -v tck="$TCK" 'BEGIN {
                win = (t1 - t0) / 1e6
                if (win <= 0 || ok == 0) exit
                nms = (n1 - n0) * 1000 / tck
                dms = (b1 - b0) * 1000 / tck - nms
                printf "%s: nginx %.0f%% of a core, %.3f CPU-ms/call-s, RSS %d -> %d kB (%.1f KB/call); bridged %.0f%%, %.3f CPU-ms/call-s, RSS %d -> %d kB (%.1f KB/call)\n",
                       label, nms / 10 / win, nms / (ok * win), ni, ns,
                       (ns - ni) / ok, dms / 10 / win, dms / (ok * win),
                       di, ds, (ds - di) / ok
            }'
        fi
        printf '%s: ' "$label"
        cat "$json"
        if [ -n "$st1" ]; then
            printf '%s: voice_status after the level: %s\n' "$label" "$st1"
        fi
    } >> "$WORK/details"

    return 0
}

# what the level's logs say, grouped (numbers and SIDs folded)
log_summary() {
    local label=$1 f=$RUN/error.log
    {
        printf '%s: nginx error.log, %s lines at warn or above\n' "$label" \
            "$( (wc -l < "$f") 2>/dev/null || echo 0)"
        if [ -s "$f" ]; then
            sed -e 's/^[0-9/]* [0-9:]* //; s/[0-9]*#[0-9]*: \*[0-9]* //' \
                -e 's/, client: .*//; s/[0-9][0-9]*/N/g' "$f" \
                | sort | uniq -c | sort -rn | sed -n '1,8p'
        fi
        printf '%s: bridged logs, %s lines (level %s), %s at warn or above\n' \
            "$label" "$(cat "$RUN"/bridged-*.log | wc -l)" "$BRIDGED_LOG" \
            "$(cat "$RUN"/bridged-*.log | grep -c -E '\[(warn|error)\]' || true)"
        cat "$RUN"/bridged-*.log | grep -E '\[(warn|error)\]' \
            | sed -e 's/^[^ ]* //; s/\[CA[0-9a-f]*\] //; s/MZ[0-9a-f]*/MZ…/g' \
                  -e 's/[0-9][0-9]*/N/g' \
            | sort | uniq -c | sort -rn | sed -n '1,8p' || true
        printf '%s: %s\n' "$label" "$(cat "$RUN/fake.log")"
    } >> "$WORK/logs"
}

header() {
    out "$(printf '%-10s %11s %8s %8s %-24s %-14s %6s %6s %6s %s' \
        level "calls" "CPU-ms/" "RSS-KB/" "  RTT ms p50/p99/max" \
        "frames lost" bridge tools window notes)"
    out "$(printf '%-10s %11s %8s %8s %-24s %-14s %6s %6s' \
        "" "ok/failed" call-s call "" " steady/start" CPU CPU)"
}


# --- the run --------------------------------------------------------------------

out "voice bridge benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
out "command: $CMDLINE  (BENCH_LEVELS=\"$LEVELS\" BENCH_SECONDS=$DURATION BENCH_RAMP=$RAMP$( [ "$QUICKACK" = 1 ] && echo ' BENCH_QUICKACK=1' || true))"
out "machine: $NPROC cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1), kernel $(uname -r)"
out "tree:    $(git -C "$TOP" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$TOP" diff --quiet HEAD 2>/dev/null || echo ' (with local changes)')"
if [ $PIN -eq 0 ]; then
    out "pinning: none (cores 0 and 1 are not both available)"
elif [ $CALIBRATE -eq 1 ]; then
    out "pinning: bench_load and bench_fake_openai --twilio-echo on core 0 (no bridge)"
else
    out "pinning: bench_load and bench_fake_openai on core 0; nginx (1 worker) and bridged on core 1"
fi
out ""

# total instructions (Ir) in the callgrind files matching a glob
cg_total() {
    local f t=0 v
    for f in "$@"; do
        [ -s "$f" ] || continue
        v=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$f" | head -n1)
        t=$(( t + ${v:-0} ))
    done
    echo $t
}

# cg_run ECHO SECONDS: one run under callgrind; prints
# "<nginx Ir> <bridged Ir> <frames sent> <frames back>"
cg_run() {
    local echo=$1 secs=$2 fake=() json
    RUN=$WORK/cg-$echo-$secs
    mkdir -p "$RUN"
    WRAP_NGINX=(valgrind --tool=callgrind --callgrind-out-file="$RUN/cg.nginx.%p")
    WRAP_BRIDGED=(valgrind --tool=callgrind --callgrind-out-file="$RUN/cg.bridged.%p")
    [ "$echo" = 1 ] || fake=(--no-echo)
    start_stack "${fake[@]}"
    json=$RUN/load.json
    ( on_core 0 "$TOOLS/bench_load" --host 127.0.0.1 --port "$NGINX_PORT" \
          --path /media-stream --sign-url "$SIGN_URL" \
          --auth-token "$TOKEN" --calls "$CG_CALLS" --seconds "$secs" \
          --ramp-per-sec 5 --json ) > "$json" 2> "$RUN/load.log" || true
    stop_stack
    WRAP_NGINX=() WRAP_BRIDGED=()
    echo "$(cg_total "$RUN"/cg.nginx.*) $(cg_total "$RUN"/cg.bridged.*)" \
         "$(jget frames_sent < "$json") $(jget media_in < "$json")"
}

if [ "$MODE" = callgrind ]; then
    command -v valgrind > /dev/null || die "valgrind is not installed"
    CG_CALLS=${BENCH_CG_CALLS:-10}
    out "callgrind: $CG_CALLS calls, runs of 5 s and 15 s; instructions per frame"
    out "are the difference between the two runs over the difference in frames,"
    out "so start-up, call set-up and tear-down cancel out.  With the fake OpenAI"
    out "silent (--no-echo) only caller audio flows: that is the inbound cost."
    out "Outbound is the echoing run's cost per round trip minus the inbound one;"
    out "it includes the marks (one per 100 ms of reply audio) and their echoes."
    read -r ni0 di0 fi0 _ <<< "$(cg_run 0 5)"
    read -r ni1 di1 fi1 _ <<< "$(cg_run 0 15)"
    read -r ne0 de0 fe0 be0 <<< "$(cg_run 1 5)"
    read -r ne1 de1 fe1 be1 <<< "$(cg_run 1 15)"
    out "$(awk -v ni0="$ni0" -v ni1="$ni1" -v di0="$di0" -v di1="$di1" \
               -v fi0="$fi0" -v fi1="$fi1" -v ne0="$ne0" -v ne1="$ne1" \
               -v de0="$de0" -v de1="$de1" -v fe0="$fe0" -v fe1="$fe1" \
               -v be0="$be0" -v be1="$be1" 'BEGIN {
        if (fi1 <= fi0 || fe1 <= fe0) { print "callgrind: no frames counted"; exit }
        nin = (ni1 - ni0) / (fi1 - fi0); din = (di1 - di0) / (fi1 - fi0)
        nrt = (ne1 - ne0) / (fe1 - fe0); drt = (de1 - de0) / (fe1 - fe0)
        printf "%-28s %10s %10s %10s\n", "instructions per frame", "nginx", "bridged", "both"
        printf "%-28s %10.0f %10.0f %10.0f\n", "caller -> OpenAI (in)", nin, din, nin + din
        printf "%-28s %10.0f %10.0f %10.0f\n", "OpenAI -> caller (out)", nrt - nin, drt - din, nrt + drt - nin - din
        printf "%-28s %10.0f %10.0f %10.0f\n", "round trip", nrt, drt, nrt + drt
        printf "frames: silent run %d -> %d sent; echo run %d -> %d sent, %d -> %d back\n", fi0, fi1, fe0, fe1, be0, be1
    }')"
    out ""
    out "results: $RESULTS"
    exit 0
fi

if [ "$MODE" = overload ]; then
    LIMIT=${BENCH_MAX_CALLS:-800}
    OFFER=${BENCH_OVERLOAD_CALLS:-$(( 2 * LIMIT ))}
    out "overload: $OFFER calls offered, with voice_max_calls $LIMIT, then"
    out "without a limit.  With it, the calls past the limit are refused"
    out "(their stream closed with 1013 at its start) and the row's figures"
    out "are the admitted calls'; without it, every call is admitted"
    header
    LIMITS=("$LIMIT")
    if [ "${BENCH_OVERLOAD_CONTROL:-1}" = 1 ]; then
        LIMITS+=(0)
    fi
    for MAX_CALLS in "${LIMITS[@]}"; do
        RUN=$WORK/overload-$MAX_CALLS
        mkdir -p "$RUN"
        start_stack
        TARGET_PORT=$NGINX_PORT
        if [ "$MAX_CALLS" -gt 0 ]; then
            run_level "$OFFER>$LIMIT" "$OFFER"
        else
            run_level "$OFFER" "$OFFER"
        fi
        stop_stack
        log_summary "overload-$MAX_CALLS"
    done
    MAX_CALLS=0
elif [ "$MODE" = scale ]; then
    SCALE_CALLS=${BENCH_SCALE_CALLS:-600}
    out "scale-out: $SCALE_CALLS calls behind one nginx worker, with 1, 2 and 3"
    out "bridged daemons (all on core 1 with nginx: this shows how calls and"
    out "work divide between daemons, not more cores)"
    header
    for b in ${BENCH_SCALE_BRIDGES:-1 2 3}; do
        BRIDGES=$b
        RUN=$WORK/scale-$b
        mkdir -p "$RUN"
        start_stack
        TARGET_PORT=$NGINX_PORT
        run_level "${SCALE_CALLS}x${b}b" "$SCALE_CALLS"
        stop_stack
        log_summary "${SCALE_CALLS}x${b}b"
        per=""
        for f in "$RUN"/bridged-*.log; do
            per+="${per:+/}$(grep -c 'stream [^ ]* started: ' "$f" || true)"
        done
        out "           calls owned by each bridged: $per"
    done
elif [ $CALIBRATE -eq 1 ]; then
    out "calibration: the load tools against each other, no bridge"
    header
    for n in $LEVELS; do
        RUN=$WORK/$n
        mkdir -p "$RUN"
        TOKEN=$(openssl rand -hex 16)
        start_fake --twilio-echo
        TARGET_PORT=$FAKE_PORT
        run_level "$n" "$n"
        stop_pid "$FAKE_PID"
        printf '%s: %s\n' "$n" "$(cat "$RUN/fake.log")" >> "$WORK/logs"
        FAKE_PID=""
    done
else
    header
    for n in $LEVELS; do
        RUN=$WORK/$n
        mkdir -p "$RUN"
        start_stack
        TARGET_PORT=$NGINX_PORT
        run_level "$n" "$n"
        stop_stack
        log_summary "$n"
    done

    if [ "$DELAY_CALLS" -gt 0 ]; then
        RUN=$WORK/delay
        mkdir -p "$RUN"
        start_stack --accept-delay-ms "$DELAY_MS"
        TARGET_PORT=$NGINX_PORT
        run_level delay "$DELAY_CALLS"
        stop_stack
        log_summary delay
        out "delay: $DELAY_CALLS calls, with a fake OpenAI that answers each upgrade after $DELAY_MS ms"
    fi

    if [ "$TLS_CALLS" -gt 0 ] && [ ! -f "$STREAM_MODULE" ]; then
        out "tls: skipped ($STREAM_MODULE is missing: libnginx-mod-stream)"
    elif [ "$TLS_CALLS" -gt 0 ]; then
        for TLS in 0 1; do
            RUN=$WORK/tls-$TLS
            mkdir -p "$RUN"
            start_stack
            TARGET_PORT=$NGINX_PORT
            run_level "$( [ $TLS = 1 ] && echo wss || echo ws)-$TLS_CALLS" "$TLS_CALLS"
            stop_stack
            log_summary "$( [ $TLS = 1 ] && echo wss || echo ws)-$TLS_CALLS"
        done
        TLS=0
        out "ws/wss: $TLS_CALLS calls with the fake OpenAI on ws://, then behind a TLS"
        out "proxy (stock nginx, stream module, on core 0) on wss://, verified against"
        out "the test CA: the difference in bridged's RSS per call is TLS's"
    fi
fi

out ""
out "calls: connected/failed to connect.  CPU-ms/call-s: utime+stime of nginx"
out "(master+worker) and bridged over the steady window / (calls x seconds)."
out "RSS-KB/call: their VmRSS at the end of the window minus before the level,"
out "/ calls.  RTT: frames sent in the steady window.  frames lost: sent in the"
out "window and not back 1 s after the end / of each call's first second."
out "bridge, tools: CPU of nginx+bridged, of bench_load+fake, in % of a core."
out ""
out "per level:"
if [ -f "$WORK/details" ]; then
    tee -a "$RESULTS" < "$WORK/details"
fi
if [ -f "$WORK/logs" ]; then
    tee -a "$RESULTS" < "$WORK/logs"
fi
if [ $CALIBRATE -eq 0 ]; then
    out "(the start-up probe, GET /api/numbers until it is not 503, accounts for"
    out "\"no bridged takes the request\" in error.log and for bridged's"
    out "numbers.list warning: there is no Twilio API in the benchmark)"
fi
out ""
out "results: $RESULTS"
