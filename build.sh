#!/usr/bin/env bash
# build.sh: the one entry point of the voice bridge.
#
#   ./build.sh run     install what is missing, build, and run nginx (with
#                      the voice module) and bridged (restarted if it fails)
#                      in the foreground; without Twilio/OpenAI credentials,
#                      a local simulation
#   ./build.sh test    install, build, and run every test
#   ./build.sh build   install and build only (tests/sse's client too)
#   ./build.sh package build the Debian packages libnginx-mod-http-voice
#                      and voice-bridged into build/pkg (docs/deploy.md)
#   ./build.sh package-test
#                      build them, then install them into a throwaway
#                      root and place a call with what they installed
#   ./build.sh fuzz    run each libFuzzer target for FUZZ_SECONDS (30)
#   ./build.sh bench   build, then run the benchmark (bench/bench.py; its
#                      --calibrate, --scale, --callgrind and --overload
#                      modes too; --soak: bench/soak.py): see
#                      docs/performance.md
#
# Configuration comes from the environment and from .env at the top of the
# repository (the environment wins): PORT, PUBLIC_URL, TWILIO_ACCOUNT_SID,
# TWILIO_AUTH_TOKEN, OPENAI_API_KEY, TWILIO_API_URL, OPENAI_REALTIME_URL,
# OPENAI_MODEL, TRANSCRIPT_DIR, VOICE_API_TOKEN.  Generated files go to
# build/ and run/.
#
# Each command first installs the Debian packages it needs that are
# missing (the lists below, one apt-get), then builds with make (the
# Makefile at the top: make decides what is stale, a second build with
# nothing changed does nothing), then does its job.
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=${VOICE_BUILD_DIR:-$TOP/build}   # another for a second tree of work
RUN=${VOICE_RUN_DIR:-$TOP/run}
PY=/usr/bin/python3

# The Debian packages, all of them here.  Every command needs DEBS; some
# need more (DEBS_<COMMAND>).  The one package the tests take from npm,
# eventsource, is pinned by tests/sse/package-lock.json and installed by
# the Makefile's sse target (npm ci), with need_npm below.
DEBS=(
    # the module, against Debian's nginx; bridged; the unit and fuzz tests
    nginx nginx-dev libwebsockets-dev libwebsockets-evlib-uv libuv1-dev
    libcurl4-openssl-dev libcjson-dev libssl-dev libzmq3-dev pkg-config
    make gcc clang libclang-rt-14-dev libcmocka-dev
    # the test certificates, the speech fixtures; the simulation (run)
    openssl espeak-ng sox curl procps
    # conf/ rendered (tools/render.py), the stand-ins, the end-to-end tests
    python3 python3-pytest python3-pytest-xdist python3-websockets
    python3-requests python3-prometheus-client
    python3-aiohttp python3-zmq iproute2)
DEBS_PACKAGE=(debhelper dpkg-dev lintian)   # the .debs, lintian's check
DEBS_PACKAGE_TEST=(systemd)                 # systemd-analyze, the unit's check
DEBS_BENCH=(valgrind libnginx-mod-stream)   # --callgrind; the wss row

say() { printf '%s\n' "build.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }


# --- set-up ---------------------------------------------------------------

# installs DEBS and the packages named, those that are not installed
# already: one dpkg-query for all, and apt-get (its update too) only when
# something is missing
install_deps() {
    local want=("${DEBS[@]}" "$@") missing=() p name status
    declare -A have=()
    while IFS=$'\t' read -r name status; do
        [ "$status" != installed ] || have[$name]=1
    done < <(dpkg-query -W -f='${Package}\t${db:Status-Status}\n' \
                 "${want[@]}" 2>/dev/null || true)
    for p in "${want[@]}"; do
        [ -n "${have[$p]:-}" ] || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0

    say "installing Debian packages: ${missing[*]}"
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q \
        --no-install-recommends "${missing[@]}"
}

# npm, for the tests' SSE client (Makefile's sse): Node.js's own, or
# Debian's when there is none
need_npm() {
    command -v npm > /dev/null || install_deps nodejs npm
}

# .env sets what the environment does not already set
load_env() {
    local line key val
    [ -f "$TOP/.env" ] || return 0
    while IFS= read -r line || [ -n "$line" ]; do
        line=${line%$'\r'}
        [[ $line =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] \
            || continue
        key=${BASH_REMATCH[2]}
        val=${BASH_REMATCH[3]}
        if [[ $val =~ ^\"(.*)\"$ ]] || [[ $val =~ ^\'(.*)\'$ ]]; then
            val=${BASH_REMATCH[1]}
        fi
        [ -n "${!key+x}" ] || export "$key=$val"
    done < "$TOP/.env"
}


# --- build ----------------------------------------------------------------

# make (the Makefile at the top) builds into BUILD what is stale: the
# module, bridged, the speech fixtures, the test certificates.  One build
# of a tree at a time (flock): parallel tests start ./build.sh run at once
build() {
    mkdir -p "$BUILD"
    flock "$BUILD/.build.lock" \
        make -s --no-print-directory -O -j"$(nproc)" -C "$TOP" O="$BUILD" \
        "$@" || die "the build failed (make -C $TOP O=$BUILD $*)"
    say "module: $BUILD/nginx/ngx_http_voice_module.so"
    say "bridged: $BUILD/bridged/bridged"
}


# --- configuration --------------------------------------------------------

# render FILE NAME...: conf/FILE.in into $RUN/FILE (tools/render.py),
# each @NAME@ replaced by the value of the shell variable NAME
render() {
    local file=$1 name values=()
    shift
    for name; do values+=("$name=${!name-}"); done
    "$PY" "$TOP/tools/render.py" "$TOP/conf/$file.in" -o "$RUN/$file" \
        "${values[@]}"
}

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}


# --- run ------------------------------------------------------------------
#
# ./build.sh run supervises what it starts, as a service manager would:
# bridged is started again when it fails (Restart=on-failure, with a bounded
# backoff, the same command line); nginx, or a stand-in of the simulation,
# ending stops everything (nginx's master process restarts its own
# workers).  Stopping -- SIGTERM, SIGINT, or an exit for any reason -- sends
# SIGTERM to every process it started, and SIGKILL to whatever of them and
# their descendants is left after STOP_GRACE_S.

STOP_GRACE_S=10         # SIGTERM, then SIGKILL after this
RESTART_FIRST_S=1       # bridged's first restart comes after this,
RESTART_MAX_S=10        # doubling each time up to this;
RESTART_STABLE_S=30     # up this long, it starts from the first again
QUICK_FAIL_S=5          # an exit this soon after its start is a quick failure:
QUICK_FAIL_MAX=5        # this many in a row, and its configuration is wrong

PIDS=()                 # the processes started here, each one's name in NAME
declare -A NAME=()
declare -A KNOWN=()     # them and their descendants: pid -> start time
NAP=""                  # a descriptor that is never readable (nap)
PROC_CHILDREN=""        # /proc/PID/task/TID/children is there
[ ! -r "/proc/$$/task/$$/children" ] || PROC_CHILDREN=1
BRIDGED_PID="" BRIDGED_T0=0 BRIDGED_NEXT=0 BRIDGED_DELAY=0
BRIDGED_RESTARTS=0 BRIDGED_QUICK=0

# build.sh becomes a child subreaper (prctl PR_SET_CHILD_SUBREAPER, which
# execve keeps): a process whose parent dies -- nginx's workers when their
# master is killed -- is adopted by build.sh instead of init, so it is
# still found and stopped with the rest.  Without python3, not.
become_subreaper() {
    if [ -n "${BUILD_SH_SUBREAPER:-}" ]; then
        unset BUILD_SH_SUBREAPER
        return 0
    fi
    [ -x "$PY" ] || return 0
    export BUILD_SH_SUBREAPER=1
    exec "$PY" -c '
import ctypes, os, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(36, ctypes.c_ulong(1),
        ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
except Exception:
    pass
os.execv(sys.argv[1], sys.argv[1:])' "$BASH" "$0" "$@"
}

# sleeps for $1 seconds without a child process, and wakes for a trap
nap() {
    if [ -n "$NAP" ]; then
        read -r -t "$1" -u "$NAP" _ || true
    else
        sleep "$1"
    fi
}

now_ms() { local t=${EPOCHREALTIME/[.,]/}; NOW_MS=$((t / 1000)); }

# PS_STATE, PS_PPID and PS_START (its start time) of process $1, or false
proc_stat() {
    local s
    { read -r s < "/proc/$1/stat"; } 2>/dev/null || return 1
    s=${s##*) }
    # shellcheck disable=SC2086
    set -- $s
    PS_STATE=$1 PS_PPID=$2 PS_START=${20}
}

# true while known process $1 runs: the same process (start time), not a zombie
known_alive() {
    proc_stat "$1" && [ "$PS_STATE" != Z ] && [ "$PS_START" = "${KNOWN[$1]}" ]
}

# LEFT: the known processes that still run
known_left() {
    local p
    LEFT=()
    for p in "${!KNOWN[@]}"; do
        if known_alive "$p"; then LEFT+=("$p"); fi
    done
}

# KNOWN: every live descendant of build.sh (nginx's workers, the stand-ins'
# log filters too), and those known before that live on elsewhere.  From
# /proc/PID/task/*/children (no process started for it, so the supervision
# loop does it at every turn), or ps
refresh_tree() {
    local pid ppid t k queue=("$$") kids
    declare -A children=()
    if [ -z "$PROC_CHILDREN" ]; then
        while read -r pid ppid; do
            children[$ppid]+=" $pid"
        done < <(ps -e -o pid=,ppid= 2>/dev/null || true)
    fi
    for pid in "${!KNOWN[@]}"; do
        if known_alive "$pid"; then queue+=("$pid"); else unset "KNOWN[$pid]"; fi
    done
    while [ ${#queue[@]} -gt 0 ]; do
        pid=${queue[-1]}
        unset 'queue[-1]'
        if [ -n "$PROC_CHILDREN" ]; then
            kids=""
            for t in /proc/"$pid"/task/*/children; do
                k=""
                { read -r k < "$t"; } 2>/dev/null || true
                kids+=" $k"
            done
        else
            kids=${children[$pid]:-}
        fi
        for pid in $kids; do
            [ -z "${KNOWN[$pid]:-}" ] || continue
            proc_stat "$pid" && [ "$PS_STATE" != Z ] || continue
            KNOWN[$pid]=$PS_START
            queue+=("$pid")
        done
    done
}

# tracks child $1, named $2
track() {
    PIDS+=("$1")
    NAME[$1]=$2
    STARTED=1
    if proc_stat "$1"; then KNOWN[$1]=$PS_START; fi
}

untrack() {
    local p keep=()
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

stop_all() {
    local p i
    # once: from a trap, from the exit, or from the supervision loop; a
    # second SIGINT or SIGTERM while stopping goes straight to SIGKILL
    [ -z "${STOPPED:-}" ] || return 0
    STOPPED=1 STOP_NOW=""
    trap 'STOP_NOW=1' INT TERM
    trap - EXIT
    refresh_tree
    # SIGTERM to each child of build.sh (an orphan it adopted too), and to
    # a descendant whose parent is gone: nobody else will stop it
    for p in "${!KNOWN[@]}"; do
        known_alive "$p" || continue
        [ "$PS_PPID" = $$ ] || [ -z "${KNOWN[$PS_PPID]:-}" ] || continue
        kill -TERM "$p" 2>/dev/null || true
    done
    for ((i = 0; i < STOP_GRACE_S * 10; i++)); do
        known_left
        [ ${#LEFT[@]} -gt 0 ] && [ -z "$STOP_NOW" ] || break
        nap 0.1
    done
    if [ ${#LEFT[@]} -gt 0 ]; then
        refresh_tree
        known_left
        say "still running after ${STOP_GRACE_S} s or a second signal, killed (SIGKILL): $(ps -o pid=,args= -p "$(IFS=,; echo "${LEFT[*]}")" 2>/dev/null | cut -c1-60 | paste -sd ';')"
        kill -KILL "${LEFT[@]}" 2>/dev/null || true
    fi
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    # gone once reaped (by build.sh, or by init if it did not adopt them)
    for ((i = 0; i < 20; i++)); do
        known_left
        [ ${#LEFT[@]} -gt 0 ] || break
        nap 0.1
    done
    [ -z "${STARTED:-}" ] || say "stopped"
}

# SIGTERM or SIGINT: stop everything, and exit 0 (a requested stop)
on_signal() {
    stop_all
    exit 0
}

# "exited with status S" or "was killed by signal K (NAME)", for status $1
describe_status() {
    if [ "$1" -gt 128 ] && [ "$1" -lt 192 ]; then
        printf 'was killed by signal %d (%s)' $(($1 - 128)) \
            "$(kill -l $(($1 - 128)) 2>/dev/null || echo '?')"
    else
        printf 'exited with status %d' "$1"
    fi
}

start_bridged() {
    "$BUILD/bridged/bridged" --listen "$BRIDGE_ENDPOINT" {NAP}<&- &
    BRIDGED_PID=$!
    track "$BRIDGED_PID" bridged
    now_ms
    BRIDGED_T0=$NOW_MS
    BRIDGED_NEXT=0
}

# bridged (pid $1) ended with status $2: it is started again after the
# backoff (status 0); everything stops when it exited cleanly (status 2:
# not a failure, Restart=on-failure) or keeps failing at start, which is
# its configuration (status 1)
bridged_ended() {
    local pid=$1 status=$2 up how
    now_ms
    up=$((NOW_MS - BRIDGED_T0))
    how=$(describe_status "$status")
    BRIDGED_PID=""
    if [ "$status" -eq 0 ]; then
        say "bridged (pid $pid) exited cleanly (status 0): stopping everything"
        return 2
    fi
    if [ $up -ge $((RESTART_STABLE_S * 1000)) ]; then
        BRIDGED_DELAY=0
    fi
    if [ $up -lt $((QUICK_FAIL_S * 1000)) ]; then
        BRIDGED_QUICK=$((BRIDGED_QUICK + 1))
    else
        BRIDGED_QUICK=0
    fi
    if [ $BRIDGED_QUICK -ge $QUICK_FAIL_MAX ]; then
        say "bridged (pid $pid) $how"
        say "error: bridged failed $BRIDGED_QUICK times in a row within ${QUICK_FAIL_S} s of its start: it refuses its configuration or environment (see its messages above); not restarting it, stopping everything"
        return 1
    fi
    if [ "$BRIDGED_DELAY" -eq 0 ]; then
        BRIDGED_DELAY=$RESTART_FIRST_S
    else
        BRIDGED_DELAY=$((BRIDGED_DELAY * 2))
        [ "$BRIDGED_DELAY" -le $RESTART_MAX_S ] || BRIDGED_DELAY=$RESTART_MAX_S
    fi
    BRIDGED_RESTARTS=$((BRIDGED_RESTARTS + 1))
    say "bridged (pid $pid) $how; restarting it in $BRIDGED_DELAY s (restart #$BRIDGED_RESTARTS)"
    BRIDGED_NEXT=$((NOW_MS + BRIDGED_DELAY * 1000))
}

# the supervision loop, at every quarter second: returns when everything
# must stop, with status 0 when that is not a failure
supervise() {
    local p status name tick=0 rc
    while :; do
        for p in "${PIDS[@]}"; do
            if kill -0 "$p" 2>/dev/null \
                && ! { proc_stat "$p" && [ "$PS_STATE" = Z ]; }; then
                continue
            fi
            # it ended: its status (bash keeps it once it has reaped it)
            wait "$p" 2>/dev/null && status=0 || status=$?
            name=${NAME[$p]}
            untrack "$p"
            if [ "$name" = bridged ]; then
                bridged_ended "$p" "$status" && rc=0 || rc=$?
                [ $rc -ne 2 ] || return 0
                [ $rc -eq 0 ] || return 1
            else
                say "$name (pid $p) $(describe_status "$status"): stopping everything"
                return 1
            fi
        done
        if [ -z "$BRIDGED_PID" ] && [ "$BRIDGED_NEXT" -gt 0 ]; then
            now_ms
            if [ "$NOW_MS" -ge "$BRIDGED_NEXT" ]; then
                start_bridged
                say "bridged started again (pid $BRIDGED_PID), with the same command line (--listen $BRIDGE_ENDPOINT)"
            fi
        fi
        # the descendants: at every turn, or every 2 s with ps
        tick=$(((tick + 1) % 8))
        [ -z "$PROC_CHILDREN" ] && [ $tick -ne 0 ] || refresh_tree
        nap 0.25
    done
}

# starts a stand-in that prints "READY <port>"; its port goes to FAKE_PORT.
# Not in a $(...) subshell: its pid must be tracked, so that stop_all stops it
start_fake() {
    local name=$1; shift
    local out=$RUN/$name.out i pid
    : > "$out"
    "$PY" "$TOP/tests/fakes/$name.py" "$@" > "$out" {NAP}<&- \
        2> >(sed -u "s/^/[$name] /" >&2) &
    pid=$!
    track "$pid" "$name"
    FAKE_PORT=""
    for i in $(seq 1 100); do
        if grep -q '^READY ' "$out"; then
            FAKE_PORT=$(sed -n 's/^READY \([0-9]*\).*/\1/p' "$out" | head -n1)
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || die "$name exited before it was ready"
        nap 0.1
    done
    die "$name did not start"
}

# what the simulated tool endpoint answers for check_tables
SIM_TOOL_PATHS='{"paths": {"/tables": {"reply": {"party_size": 2, "time": "19:00",
    "free": [{"table": 4, "seats": 2, "where": "by the window"}]}}}}'

# the simulation, when no credentials are configured: local stand-ins for
# Twilio and OpenAI (tests/fakes) and, unless VOICE_NGINX_INCLUDE names the
# assistant's settings, a local tool endpoint and a simulated assistant that
# calls it (conf/simulation.conf.in) and then hangs up by itself
cmd_run_simulation() {
    local own=1
    [ -z "${VOICE_NGINX_INCLUDE:-}" ] || own=0

    cat >&2 <<'EOF'

  ==================================================================
   SIMULATION: no Twilio and OpenAI credentials are configured
   (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, OPENAI_API_KEY), so local
   stand-ins for Twilio and OpenAI are started. No real phone call is
   placed.
EOF
    if [ $own -eq 1 ]; then
        cat >&2 <<'EOF'
   Each call placed through the API (POST /api/call) goes:
     1. the simulated caller asks for a table for two at seven pm;
     2. the assistant calls the HTTP tool check_tables: a signed POST
        to a local tool endpoint (voice_tool, run/simulation.conf);
     3. it answers with the tool's result and says goodbye;
     4. it calls end_call and hangs up by itself once the goodbye
        has played.
   The transcript shows both tool calls and "endedBy": "assistant".
  ==================================================================

EOF
    else
        cat >&2 <<'EOF'
   The assistant's settings are VOICE_NGINX_INCLUDE's, so nothing is
   scripted: the simulated caller speaks a recorded sentence, hears the
   simulated assistant, and hangs up.
  ==================================================================

EOF
    fi

    export TWILIO_ACCOUNT_SID=AC$(openssl rand -hex 16)
    export TWILIO_AUTH_TOKEN=$(openssl rand -hex 16)
    export OPENAI_API_KEY=sk-simulated-$(openssl rand -hex 12)
    export PUBLIC_URL=${PUBLIC_URL:-https://voice-bridge.simulated}

    local twport oaiport toolport script=""
    local openai_args=() twilio_args=(--auto-hangup)
    if [ $own -eq 1 ]; then
        # the key that signs the tool requests: nginx passes it to bridged
        # (env VOICE_TOOL_SECRET), the tool endpoint checks it
        export VOICE_TOOL_SECRET=${VOICE_TOOL_SECRET:-$(openssl rand -hex 24)}
        start_fake tool_server --port 0
        toolport=$FAKE_PORT
        curl -sf -X POST -H 'Content-Type: application/json' \
            -d "$SIM_TOOL_PATHS" "http://127.0.0.1:$toolport/_fake/config" \
            > /dev/null || die "the tool endpoint refused its configuration"

        SIM_TOOL_URL=http://127.0.0.1:$toolport/tables
        SIM_TOOL_SCHEMA=$TOP/conf/simulation-tables.json
        render simulation.conf SIM_TOOL_URL SIM_TOOL_SCHEMA
        VOICE_NGINX_INCLUDE=$RUN/simulation.conf

        script=$(cat "$TOP/conf/simulation-script.json")
        # every call (each OpenAI session) plays the whole script
        openai_args=(--script "$script" --script-per-session)
        # the assistant hangs up; the caller does not (--auto-hangup would
        # after the first words), but a call never lasts over a minute
        twilio_args=(--max-call-seconds 60)
    fi

    start_fake fake_openai --port 0 \
        --tls-cert "$BUILD/certs/server.pem" \
        --tls-key "$BUILD/certs/server.key" \
        --api-key "$OPENAI_API_KEY" \
        --reply-audio "$BUILD/fixtures/reply.ulaw" \
        --reply-text "$(cat "$BUILD/fixtures/reply.txt")" \
        --phrase "$BUILD/fixtures/caller.ulaw=$(cat "$BUILD/fixtures/caller.txt")" \
        "${openai_args[@]}"
    oaiport=$FAKE_PORT
    start_fake fake_twilio --port 0 \
        --tls-cert "$BUILD/certs/server.pem" \
        --tls-key "$BUILD/certs/server.key" \
        --account-sid "$TWILIO_ACCOUNT_SID" \
        --auth-token "$TWILIO_AUTH_TOKEN" \
        --public-url "$PUBLIC_URL" \
        --deliver-to "http://127.0.0.1:$PORT" \
        --caller-audio "$BUILD/fixtures/caller.ulaw" "${twilio_args[@]}"
    twport=$FAKE_PORT

    export TWILIO_API_URL=https://localhost:$twport
    export OPENAI_REALTIME_URL=wss://localhost:$oaiport/v1/realtime
    export BRIDGED_CA_FILE=$BUILD/certs/ca.pem
    say "SIMULATION: fake Twilio at $TWILIO_API_URL, fake OpenAI at $OPENAI_REALTIME_URL"
    if [ $own -eq 1 ]; then
        say "SIMULATION: tool endpoint at $SIM_TOOL_URL (check_tables), the assistant's script is conf/simulation-script.json"
    fi
}

cmd_run() {
    become_subreaper run
    # from here on, whatever ends the run stops what it started
    trap on_signal INT TERM
    trap stop_all EXIT

    install_deps
    build
    load_env

    export PORT=${PORT:-3000}
    export TRANSCRIPT_DIR=${TRANSCRIPT_DIR:-$TOP/logs}
    export OPENAI_MODEL=${OPENAI_MODEL:-gpt-realtime-2.1}
    mkdir -p "$RUN/tmp" "$TRANSCRIPT_DIR"
    exec {NAP}<> <(:)

    local simulate=0
    if [ -z "${TWILIO_ACCOUNT_SID:-}" ] || [ -z "${TWILIO_AUTH_TOKEN:-}" ] \
        || [ -z "${OPENAI_API_KEY:-}" ]; then
        simulate=1
    fi

    if [ $simulate -eq 1 ]; then
        cmd_run_simulation
    else
        [ -n "${PUBLIC_URL:-}" ] || die "PUBLIC_URL must be set: Twilio reaches the service through it"
    fi

    # the API's bearer token: VOICE_API_TOKEN, or one made for this run;
    # either way in $RUN/api-token (mode 600) for the commands below
    if [ -z "${VOICE_API_TOKEN:-}" ]; then
        export VOICE_API_TOKEN=$(openssl rand -hex 24)
        say "VOICE_API_TOKEN is not set: the API takes a token made for this run (set it in .env to keep one)"
    fi
    ( umask 077; printf '%s\n' "$VOICE_API_TOKEN" > "$RUN/api-token" )

    export BRIDGE_ENDPOINT=ipc://$RUN/bridged.sock
    export MODULE=$BUILD/nginx/ngx_http_voice_module.so
    export RUN_DIR=$RUN
    export ERROR_LOG=stderr
    export USER_LINE=""
    [ "$(id -u)" -eq 0 ] && USER_LINE="user root;"
    export LISTEN=$PORT
    export EXTRA_HTTP=""
    export HTTP_INCLUDE="" SERVER_INCLUDE=""
    if [ -n "${VOICE_NGINX_HTTP_INCLUDE:-}" ]; then
        [ -r "$VOICE_NGINX_HTTP_INCLUDE" ] || die "VOICE_NGINX_HTTP_INCLUDE: cannot read $VOICE_NGINX_HTTP_INCLUDE"
        HTTP_INCLUDE="include $(realpath "$VOICE_NGINX_HTTP_INCLUDE");"
        say "http block includes $VOICE_NGINX_HTTP_INCLUDE"
    fi
    if [ -n "${VOICE_NGINX_INCLUDE:-}" ]; then
        [ -r "$VOICE_NGINX_INCLUDE" ] || die "VOICE_NGINX_INCLUDE: cannot read $VOICE_NGINX_INCLUDE"
        SERVER_INCLUDE="include $(realpath "$VOICE_NGINX_INCLUDE");"
        say "server block includes $VOICE_NGINX_INCLUDE"
    fi
    render nginx.conf USER_LINE RUN_DIR ERROR_LOG MODULE BRIDGE_ENDPOINT \
        LISTEN EXTRA_HTTP HTTP_INCLUDE SERVER_INCLUDE

    # bridged keeps this command line across restarts: the same endpoint,
    # which nginx's workers reconnect to
    start_bridged
    /usr/sbin/nginx -p "$RUN" -c "$RUN/nginx.conf" {NAP}<&- &
    track $! nginx

    say "listening on port $PORT; transcripts go to $TRANSCRIPT_DIR"
    cat >&2 <<EOF

  Try it (the API wants the bearer token, which is in $RUN/api-token):
    TOKEN=\$(cat $RUN/api-token)
    curl -H "Authorization: Bearer \$TOKEN" http://127.0.0.1:$PORT/api/numbers
    curl -X POST http://127.0.0.1:$PORT/api/call -H "Authorization: Bearer \$TOKEN" \\
         -H 'Content-Type: application/json' -d '{"number": "+14155550123"}'
    curl -H "Authorization: Bearer \$TOKEN" "http://127.0.0.1:$PORT/api/transcript/CA...?format=text"

EOF

    # until SIGTERM or SIGINT (on_signal), or nginx or a stand-in ends, or
    # bridged keeps failing at start
    local rc=0
    supervise || rc=$?
    stop_all
    return $rc
}


# --- tests ----------------------------------------------------------------

cmd_test() {
    install_deps "${DEBS_PACKAGE[@]}" "${DEBS_PACKAGE_TEST[@]}"
    need_npm
    build all sse
    local t0=$SECONDS

    say "unit tests"
    make -s -C "$TOP/tests/unit" run O="$BUILD/unit"

    if [ -f "$TOP/tests/fuzz/Makefile" ]; then
        say "fuzz corpora, replayed under ASan and UBSan"
        make -s -C "$TOP/tests/fuzz" replay O="$BUILD/fuzz"
    fi

    say "style"
    "$TOP/tests/style/check.sh"
    "$PY" "$TOP/tests/style/troubleshooting.py"

    # the tests mostly wait on real-time audio: several at once (each
    # stack has its own ports and directory) take a third of the time; more
    # than three on two cores makes timing-sensitive tests flaky
    local jobs=${VOICE_TEST_JOBS:-3}

    say "end-to-end tests ($jobs at a time)"
    VOICE_TOP=$TOP VOICE_BUILD=$BUILD "$PY" -m pytest -q -p no:cacheprovider \
        -n "$jobs" "$TOP/tests/fakes" "$TOP/tests/e2e"

    # about a minute, most of it the call
    say "Debian packages: built, installed into a throwaway root, a call through them"
    make_debs
    test_debs

    # a separate build with AddressSanitizer and UndefinedBehaviorSanitizer:
    # the unit tests, then the end-to-end suite with that bridged (its
    # logs are checked for any sanitizer report, leaks included)
    say "unit tests under ASan and UBSan"
    make -s -C "$TOP/tests/unit" run O="$BUILD/unit-san" SAN=1

    say "end-to-end tests with bridged under ASan and UBSan"
    make -s -C "$TOP/bridged" O="$BUILD/bridged-san" SAN=1
    VOICE_TOP=$TOP VOICE_BUILD=$BUILD VOICE_BRIDGED=$BUILD/bridged-san/bridged \
        "$PY" -m pytest -q -p no:cacheprovider -n "$jobs" "$TOP/tests/e2e"

    say "all tests passed in $((SECONDS - t0)) s"
}

# the Debian packages (pkg/make-debs.sh): debhelper writes them the way
# Debian's own nginx modules and services are written; lintian checks them
cmd_package() {
    install_deps "${DEBS_PACKAGE[@]}"
    build
    make_debs
}

make_debs() {
    "$TOP/pkg/make-debs.sh" "$TOP" "$BUILD"
}

test_debs() {
    VOICE_TOP=$TOP VOICE_BUILD=$BUILD "$PY" -m pytest -q -p no:cacheprovider \
        "$TOP/tests/pkg"
}

# the packages installed into a throwaway root (an overlay of this one, in
# a mount namespace of its own): nginx -t with the example site, systemd's
# verdict on the unit, a call through the installed files
cmd_package_test() {
    install_deps "${DEBS_PACKAGE[@]}" "${DEBS_PACKAGE_TEST[@]}"
    build
    make_debs
    test_debs
}

cmd_fuzz() {
    install_deps
    make -s -C "$TOP/tests/fuzz" fuzz O="$BUILD/fuzz" \
        FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
}

# the benchmark: bench/bench.py after a full build (bench/bench.py --help);
# --soak: bench/soak.py, faults under load (bench/soak.py --help)
cmd_bench() {
    install_deps "${DEBS_BENCH[@]}"
    build
    if [ "${1:-}" = --soak ]; then
        shift
        VOICE_BUILD_DIR=$BUILD "$PY" "$TOP/bench/soak.py" "$@"
        return
    fi
    VOICE_BUILD_DIR=$BUILD "$PY" "$TOP/bench/bench.py" "$@"
}


case "${1:-}" in
    run)   cmd_run ;;
    test)  cmd_test ;;
    build) install_deps; need_npm; build all sse ;;
    package) cmd_package ;;
    package-test) cmd_package_test ;;
    fuzz)  cmd_fuzz ;;
    bench) shift; cmd_bench "$@" ;;
    *)     sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
esac
