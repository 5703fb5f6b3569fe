#!/usr/bin/env bash
# Cost of the eBPF tracer (--enable-ebpf) on HTTPS: TLS 1.3 on loopback,
# keep-alive, both ends linked to OpenSSL's libssl (what the tracer's
# OpenSSL uprobes see). The twin of benches/ebpf_http.sh (plain HTTP), with
# the same structure: each run is done without the agent (baseline) and with
# the agent tracing, alternately, and the two are compared as ratios within
# the same session.
#
#   PROTO=h1 (default) — nginx (one worker, `listen ... ssl`, TLSv1.3 only,
#               no session cache) serves a 100-byte file, wrk (Debian's, on
#               libssl) drives it over https://;
#   PROTO=h2           — nghttpd (one worker, TLS, the same certificate) serves
#               the same file, h2load (libssl) drives it over h2 with
#               $STREAMS concurrent streams per connection.
#
#   saturated — $CONNS connections, as fast as they go: req/s without vs with;
#   rate      — about $RATE req/s offered. h1: wrk's Lua delay() hook
#               (benches/ebpf_http_delay.lua, a fixed pause after each response
#               on each connection; the number of connections is calibrated
#               without the agent so the baseline achieves ~$RATE). h2: h2load
#               --rps (a true per-client rate) on $RATE_CONNS clients.
#               Achieved req/s and latency (avg, p99) without vs with.
#
# The key is a throwaway self-signed EC P-256 certificate made with openssl in
# the temp dir (the clients do not verify it).
#
# For every traced run, as in ebpf_http.sh: the agent's CPU (all threads, its
# own cpuacct cgroup when cgroup v1 cpuacct is mounted, else utime+stime of
# /proc/<pid>/stat) from just before the load until the first collection
# cycle after it ends, divided by the client's request count, in µs ("gross",
# and "net" of the idle agent's CPU rate measured first); the agent's own
# counters (cased_agent_http_requests_traced_total — client and server are
# both traced, so expect 2 per request when TLS is seen in clear text, about
# 0 when the binary has no TLS tracing and only sees ciphertext —,
# cased_agent_ebpf_events_total, ..._events_lost_total,
# cased_agent_http_dropped_total); peak RSS (VmHWM). The agent's /metrics
# lines about ebpf are printed after the last traced run.
#
# The kernel side (socket/syscall tracepoint programs and the libssl uprobe
# programs, named *_up) runs in the traced processes: it shows as throughput
# loss, not as agent CPU. With BPF_STATS=1 (default) one more traced run at
# the rate load is done with kernel.bpf_stats_enabled=1 (put back after) and
# run_time_ns/run_cnt of every program the agent holds (/proc/<agent>/fdinfo,
# named with bpftool) give ns per program run and per request. The uprobe's
# own trap (breakpoint, single-step) is not in run_time_ns: only in
# throughput.
#
# Usage: sudo benches/ebpf_tls.sh [SECONDS]      (SECONDS per run, 15)
#        e.g. sudo RUNS=1 benches/ebpf_tls.sh 5; sudo PROTO=h2 benches/ebpf_tls.sh
# Env:   PROTO (h1 | h2), BIN (target/release/cased-agent; built with
#        `cargo build --release` when missing), RUNS (alternating pairs per
#        load, 3; ROUNDS is an alias), DURATION (alias for SECONDS),
#        CONNS (saturated connections, 10), STREAMS (h2: -m per connection,
#        10), RATE (10000), DELAY_MS (h1 rate: 10), RATE_CONNS (h1: skip the
#        calibration; h2: clients at the rate load, 100), INTERVAL (agent
#        --interval, 10s), PORT (server, a free one), BPF_STATS (1),
#        KEEP (1: keep the temp dir with all outputs), AGENT_ARGS (more agent
#        flags, e.g. --ebpf-attach=syscalls).
set -euo pipefail

cd "$(dirname "$0")/.."
SECS=${1:-${DURATION:-15}}
PROTO=${PROTO:-h1}
BIN=${BIN:-target/release/cased-agent}
RUNS=${RUNS:-${ROUNDS:-3}}
CONNS=${CONNS:-10}
STREAMS=${STREAMS:-10}
RATE=${RATE:-10000}
DELAY_MS=${DELAY_MS:-10}
RATE_CONNS=${RATE_CONNS:-}
INTERVAL=${INTERVAL:-10s}
BPF_STATS=${BPF_STATS:-1}
KEEP=${KEEP:-0}
read -r -a AGENT_ARGS <<<"${AGENT_ARGS:-}"
LUA=$(pwd)/benches/ebpf_http_delay.lua
TICK=$(getconf CLK_TCK)
TMP=$(mktemp -d)
chmod 755 "$TMP" # the nginx worker runs as nobody
CG=""
SERVER=""
AGENT=""
HP=""
STATS_BEFORE=""

die() { echo "ebpf_tls.sh: $*" >&2; exit 1; }

stop_agent() {
    if [ -n "$AGENT" ]; then
        kill "$AGENT" 2>/dev/null || true
        wait "$AGENT" 2>/dev/null || true
        AGENT=""
    fi
}

cleanup() {
    stop_agent
    if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
    if [ -n "$STATS_BEFORE" ]; then sysctl -qw kernel.bpf_stats_enabled="$STATS_BEFORE" || true; fi
    if [ -n "$CG" ]; then rmdir "$CG" 2>/dev/null || true; fi
    if [ "$KEEP" = 1 ]; then echo "outputs kept in $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || die "needs root (BPF programs, cgroups)"
case $PROTO in
h1) for t in nginx wrk curl; do command -v "$t" >/dev/null || die "$t not installed"; done ;;
h2) for t in nghttpd h2load curl; do
        command -v "$t" >/dev/null || die "$t not installed (apt-get install -y nghttp2-server nghttp2-client)"
    done ;;
*) die "PROTO must be h1 or h2, not $PROTO" ;;
esac
command -v openssl >/dev/null || die "openssl not installed"
if [ ! -x "$BIN" ]; then
    [ "$BIN" = target/release/cased-agent ] || die "no $BIN"
    echo "no $BIN: cargo build --release" >&2
    cargo build --release >&2
fi

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# --- the server ----------------------------------------------------------------
PORT=${PORT:-$(free_port)}
mkdir -p "$TMP/www" "$TMP/nginx-tmp"
head -c 100 /dev/zero | tr '\0' 'x' >"$TMP/www/small.html"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=localhost -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>"$TMP/openssl.err" ||
    die "openssl req failed: $(cat "$TMP/openssl.err")"
chmod 644 "$TMP/key.pem" # throwaway; nginx's master reads it as root anyway
URL="https://127.0.0.1:$PORT/small.html"
if [ "$PROTO" = h1 ]; then
    cat >"$TMP/nginx.conf" <<EOF
worker_processes 1;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_body_temp_path $TMP/nginx-tmp;
    proxy_temp_path $TMP/nginx-tmp;
    fastcgi_temp_path $TMP/nginx-tmp;
    uwsgi_temp_path $TMP/nginx-tmp;
    scgi_temp_path $TMP/nginx-tmp;
    server {
        listen 127.0.0.1:$PORT ssl;
        ssl_certificate $TMP/cert.pem;
        ssl_certificate_key $TMP/key.pem;
        ssl_protocols TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets off;
        root $TMP/www;
    }
}
EOF
    nginx -c "$TMP/nginx.conf" -p "$TMP/" -g 'daemon off;' &
    SERVER=$!
    up() { curl -skf -o /dev/null "$URL"; }
    LOG="$TMP/nginx-error.log"
else
    nghttpd -n 1 -a 127.0.0.1 -d "$TMP/www" "$PORT" "$TMP/key.pem" "$TMP/cert.pem" \
        >"$TMP/nghttpd.out" 2>&1 &
    SERVER=$!
    up() { h2load -n1 -c1 "$URL" 2>/dev/null | grep -q ' 1 succeeded'; }
    LOG="$TMP/nghttpd.out"
fi
for _ in $(seq 50); do up && break; sleep 0.1; done
up || die "$PROTO server does not answer on $URL (see $LOG)"

# --- the agent's CPU: its own cpuacct cgroup (v1) when there is one ---------
if [ -d /sys/fs/cgroup/cpuacct ] && [ -f /sys/fs/cgroup/cpuacct/cpuacct.usage ]; then
    CG=/sys/fs/cgroup/cpuacct/cased-ebpf-tls-bench-$$
    mkdir "$CG" || CG=""
fi
CPU_SOURCE=${CG:+cpuacct.usage}
CPU_SOURCE=${CPU_SOURCE:-/proc/pid/stat utime+stime}

cpu_ns() { # CPU nanoseconds of the agent so far
    if [ -n "$CG" ]; then
        cat "$CG/cpuacct.usage"
    else
        awk -v t="$TICK" '{printf "%.0f\n", ($14 + $15) * 1e9 / t}' "/proc/$AGENT/stat"
    fi
}

now_ns() { date +%s%N; }

metric() { # name: the sum of all series of a cased_agent_ metric (0 when absent)
    curl -sf "http://127.0.0.1:$HP/metrics" |
        awk -v n="$1" '{ k = $1; sub(/\{.*/, "", k) } k == n { s += $NF } END { printf "%.0f\n", s + 0 }'
}

start_agent() { # tag
    HP=$(free_port)
    # shellcheck disable=SC2016 # $$ and $@ are the inner shell's
    sh -c 'if [ -n "$1" ]; then echo $$ >"$1/cgroup.procs"; fi; shift; exec "$@"' sh "$CG" \
        "$BIN" --enable-ebpf --sink stdout --interval "$INTERVAL" --health-port "$HP" "${AGENT_ARGS[@]}" \
        >"$TMP/agent.$1.out" 2>"$TMP/agent.$1.err" &
    AGENT=$!
    for _ in $(seq 300); do
        kill -0 "$AGENT" 2>/dev/null || die "agent exited: $(tail -3 "$TMP/agent.$1.err")"
        [ "$(metric cased_agent_ebpf_up 2>/dev/null || echo 0)" = 1 ] &&
            [ "$(metric cased_agent_last_cycle_timestamp_seconds 2>/dev/null || echo 0)" != 0 ] && return 0
        sleep 0.1
    done
    die "agent's eBPF tracer not up after 30s: $(tail -3 "$TMP/agent.$1.err")"
}

wait_cycle_after() { # unix seconds: until a collection cycle has ended after it
    # once a second: each look is a curl process that connects, and the
    # agent reads the maps of every process that connects (TLS discovery,
    # ~0.8 ms): at 10 looks a second that was most of the "idle" agent
    for _ in $(seq 60); do
        [ "$(metric cased_agent_last_cycle_timestamp_seconds)" -gt "$1" ] && return 0
        sleep 1
    done
    die "no collection cycle after $1"
}

to_us() { # 414.33us / 1.87ms / 1.02s -> microseconds
    awk -v v="$1" 'BEGIN {
        m = 1; if (v ~ /us$/) m = 1; else if (v ~ /ms$/) m = 1000; else if (v ~ /s$/) m = 1000000
        sub(/[a-z]+$/, "", v); printf "%.0f\n", v * m }'
}

run_wrk() { # connections script-or-empty seconds -> "rps requests avg_us p99_us"
    local out
    if [ -n "$2" ]; then
        out=$(WRK_DELAY_MS=$DELAY_MS wrk -t1 -c"$1" -d"$3"s --latency -s "$2" "$URL")
    else
        out=$(wrk -t1 -c"$1" -d"$3"s --latency "$URL")
    fi
    echo "$out" >>"$TMP/wrk.log"
    local rps req avg p99
    rps=$(awk '/^Requests\/sec:/ {printf "%.0f\n", $2}' <<<"$out")
    req=$(awk '/ requests in / {print $1}' <<<"$out")
    avg=$(to_us "$(awk '$1 == "Latency" && $2 ~ /^[0-9]/ {print $2; exit}' <<<"$out")")
    p99=$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    if grep -q 'Socket errors' <<<"$out"; then echo "wrk: $(grep 'Socket errors' <<<"$out")" >&2; fi
    if grep -q 'Non-2xx' <<<"$out"; then echo "wrk: $(grep 'Non-2xx' <<<"$out")" >&2; fi
    echo "$rps $req $avg $p99"
}

run_h2load() { # clients rps-per-client-or-empty seconds -> "rps requests avg_us p99_us"
    local out rate=()
    [ -n "$2" ] && rate=(--rps="$2")
    out=$(h2load -t1 -c"$1" -m"$STREAMS" "${rate[@]}" -D "$3" --log-file="$TMP/h2load.req" "$URL")
    echo "$out" >>"$TMP/h2load.log"
    local rps req avg p99
    rps=$(awk '/^finished in / {printf "%.0f\n", $4}' <<<"$out")
    req=$(awk '/^requests: / {for (i = 2; i < NF; i++) if ($(i + 1) ~ /^succeeded/) print $i}' <<<"$out")
    avg=$(to_us "$(awk '/^time for request:/ {print $6}' <<<"$out")")
    # per-request log: start (µs since epoch), status, µs to the end of the response
    p99=$(cut -f3 "$TMP/h2load.req" | sort -n | awk '{ v[NR] = $1 } END { i = int(NR * 0.99); if (i < 1) i = 1; print v[i] + 0 }')
    rm -f "$TMP/h2load.req"
    local bad
    bad=$(awk '/^requests: / {for (i = 2; i < NF; i++) if ($(i + 1) ~ /^(failed|errored|timeout)/ && $i > 0) print $i, $(i + 1)}' <<<"$out")
    if [ -n "$bad" ]; then echo "h2load: $(tr '\n' ' ' <<<"$bad")" >&2; fi
    echo "$rps $req $avg $p99"
}

run_load() { # connections saturated|rate seconds -> "rps requests avg_us p99_us"
    if [ "$PROTO" = h1 ]; then
        if [ "$2" = rate ]; then run_wrk "$1" "$LUA" "$3"; else run_wrk "$1" "" "$3"; fi
    else
        if [ "$2" = rate ]; then run_h2load "$1" "$RPS_PER_CONN" "$3"; else run_h2load "$1" "" "$3"; fi
    fi
}

RESULTS=$TMP/results.tsv
printf 'load\tmode\trps\trequests\tavg_us\tp99_us\tcpu_ns\twall_ns\ttraced\tevents\tlost\tdropped\thwm_kb\tbpf_ns\tbpf_cnt\n' >"$RESULTS"
RUN_N=0
LAST_METRICS=""

one_run() { # load(saturated|rate) mode(base|ebpf|ebpf_stats) connections
    local load=$1 mode=$2 c=$3 w
    RUN_N=$((RUN_N + 1))
    if [ "$mode" = base ]; then
        w=$(run_load "$c" "$load" "$SECS")
        printf '%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\n' "$load" "$mode" "$(tr ' ' '\t' <<<"$w")" >>"$RESULTS"
        echo "  $load $mode: $w" >&2
        return
    fi
    start_agent "$RUN_N"
    local tr0 ev0 lo0 dr0 cpu0 t0 tr1 ev1 lo1 dr1 cpu1 t1 end hwm b0 b1
    tr0=$(metric cased_agent_http_requests_traced_total)
    ev0=$(metric cased_agent_ebpf_events_total)
    lo0=$(metric cased_agent_ebpf_events_lost_total)
    dr0=$(metric cased_agent_http_dropped_total)
    [ "$mode" = ebpf_stats ] && b0=$(bpf_run_stats before)
    t0=$(now_ns)
    cpu0=$(cpu_ns)
    w=$(run_load "$c" "$load" "$SECS")
    [ "$mode" = ebpf_stats ] && b1=$(bpf_run_stats after)
    end=$(($(date +%s) + 1))
    wait_cycle_after "$end"
    cpu1=$(cpu_ns)
    t1=$(now_ns)
    tr1=$(metric cased_agent_http_requests_traced_total)
    ev1=$(metric cased_agent_ebpf_events_total)
    lo1=$(metric cased_agent_ebpf_events_lost_total)
    dr1=$(metric cased_agent_http_dropped_total)
    hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$AGENT/status")
    # steady RSS at the end of the run (VmHWM is the BTF parse at load): side file only
    echo "$load $mode VmRSS_kB=$(awk '/^VmRSS:/ {print $2}' "/proc/$AGENT/status") VmHWM_kB=$hwm" >>"$TMP/rss.txt"
    LAST_METRICS=$TMP/metrics.$RUN_N.$load.$mode
    curl -sf "http://127.0.0.1:$HP/metrics" | grep -v '^#' | grep -E 'ebpf|requests_traced|http_dropped' >"$LAST_METRICS" || true
    if [ "$mode" = ebpf_stats ] && command -v bpftool >/dev/null; then
        bpftool -j prog show >"$TMP/bpftool_prog_show.json" 2>/dev/null || true
    fi
    stop_agent
    local bns=- bcnt=-
    if [ "$mode" = ebpf_stats ]; then
        bns=$(($(cut -d' ' -f1 <<<"$b1") - $(cut -d' ' -f1 <<<"$b0")))
        bcnt=$(($(cut -d' ' -f2 <<<"$b1") - $(cut -d' ' -f2 <<<"$b0")))
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$load" "$mode" "$(tr ' ' '\t' <<<"$w")" \
        $((cpu1 - cpu0)) $((t1 - t0)) $((tr1 - tr0)) $((ev1 - ev0)) $((lo1 - lo0)) $((dr1 - dr0)) \
        "$hwm" "$bns" "$bcnt" >>"$RESULTS"
    echo "  $load $mode: $w  traced=$((tr1 - tr0)) lost=$((lo1 - lo0)) cpu_ms=$(((cpu1 - cpu0) / 1000000))" >&2
}

bpf_run_stats() { # "run_time_ns run_cnt" summed over the agent's BPF programs
    # (per program, "prog_id run_time_ns run_cnt" lines also go to $TMP/bpf_progs.<before|after>)
    local f s=0 n=0 a b id
    : >"$TMP/bpf_progs.$1"
    for f in /proc/"$AGENT"/fdinfo/*; do
        grep -q '^prog_type:' "$f" 2>/dev/null || continue
        a=$(awk '/^run_time_ns:/ {print $2}' "$f")
        b=$(awk '/^run_cnt:/ {print $2}' "$f")
        id=$(awk '/^prog_id:/ {print $2}' "$f")
        echo "${id:-?} ${a:-0} ${b:-0}" >>"$TMP/bpf_progs.$1"
        s=$((s + ${a:-0}))
        n=$((n + ${b:-0}))
    done
    echo "$s $n"
}

echo "$PROTO over TLS on 127.0.0.1:$PORT, $SECS s per run, $RUNS alternating pairs per load; agent CPU from $CPU_SOURCE" >&2

# --- the idle agent (tracer attached, no load): its CPU floor ---------------
start_agent idle
i_cpu0=$(cpu_ns); i_t0=$(now_ns)
i_ev0=$(metric cased_agent_ebpf_events_total)
sleep "$SECS"
i_end=$(($(date +%s) + 1)); wait_cycle_after "$i_end"
i_cpu1=$(cpu_ns); i_t1=$(now_ns)
i_ev1=$(metric cased_agent_ebpf_events_total)
stop_agent
IDLE_NS_PER_S=$(((i_cpu1 - i_cpu0) * 1000000000 / (i_t1 - i_t0)))
echo "  idle agent: $((IDLE_NS_PER_S / 1000)) us CPU per s, $((i_ev1 - i_ev0)) background events" >&2

# --- saturated ---------------------------------------------------------------
run_load "$CONNS" saturated 3 >/dev/null # warm-up
for i in $(seq "$RUNS"); do
    if [ $((i % 2)) = 1 ]; then order="base ebpf"; else order="ebpf base"; fi
    for m in $order; do one_run saturated "$m" "$CONNS"; done
done

# --- about $RATE req/s offered ------------------------------------------------
RPS_PER_CONN=""
if [ "$PROTO" = h2 ]; then
    # h2load --rps is a rate per client: RATE_CONNS clients, RATE in all
    RATE_CONNS=${RATE_CONNS:-100}
    RPS_PER_CONN=$(((RATE + RATE_CONNS / 2) / RATE_CONNS))
    [ "$RPS_PER_CONN" -ge 1 ] || RPS_PER_CONN=1
    r=$(run_load "$RATE_CONNS" rate 3 | cut -d' ' -f1)
    echo "  rate load: $RATE_CONNS clients x --rps=$RPS_PER_CONN -> $r req/s (warm-up)" >&2
elif [ -z "$RATE_CONNS" ]; then
    # wrk: calibrate the connections without the agent
    RATE_CONNS=$(((RATE * (DELAY_MS * 1000 + 300) + 999999) / 1000000))
    for _ in 1 2 3 4; do
        r=$(run_load "$RATE_CONNS" rate 5 | cut -d' ' -f1)
        echo "  calibration: $RATE_CONNS connections, delay ${DELAY_MS} ms -> $r req/s" >&2
        off=$(((r - RATE) * 100 / RATE))
        [ "${off#-}" -le 1 ] && break
        RATE_CONNS=$(((RATE_CONNS * RATE + r / 2) / r))
    done
fi
for i in $(seq "$RUNS"); do
    if [ $((i % 2)) = 1 ]; then order="base ebpf"; else order="ebpf base"; fi
    for m in $order; do one_run rate "$m" "$RATE_CONNS"; done
done
if [ "$BPF_STATS" = 1 ]; then
    STATS_BEFORE=$(sysctl -n kernel.bpf_stats_enabled)
    sysctl -qw kernel.bpf_stats_enabled=1
    one_run rate ebpf_stats "$RATE_CONNS"
    sysctl -qw kernel.bpf_stats_enabled="$STATS_BEFORE"
    STATS_BEFORE=""
fi

# --- the tables ----------------------------------------------------------------
if [ "$PROTO" = h1 ]; then
    SAT_DESC="wrk -t1 -c$CONNS"
    RATE_DESC="wrk -t1 -c$RATE_CONNS, delay $DELAY_MS ms"
else
    SAT_DESC="h2load -t1 -c$CONNS -m$STREAMS"
    RATE_DESC="h2load -t1 -c$RATE_CONNS -m$STREAMS --rps=$RPS_PER_CONN"
fi
python3 - "$RESULTS" "$IDLE_NS_PER_S" "$SAT_DESC" "$RATE_DESC" "$TMP" <<'EOF'
import csv, json, os, statistics as st, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
idle = int(sys.argv[2])
desc = {"saturated": sys.argv[3], "rate": sys.argv[4]}
tmp = sys.argv[5]
med = lambda xs: st.median(xs) if xs else float("nan")
def sel(load, mode): return [r for r in rows if r["load"] == load and r["mode"] == mode]
print("| load | client | req/s base (median) | req/s traced (median) | traced/base | avg lat base→traced (µs) | p99 base→traced (µs) |")
print("|---|---|---|---|---|---|---|")
for load in ("saturated", "rate"):
    b, e = sel(load, "base"), sel(load, "ebpf")
    if not b or not e: continue
    f = lambda rs, k: med([float(r[k]) for r in rs])
    # pairwise ratios (run i traced / run i base) as well as the ratio of medians
    pr = [float(x["rps"]) / float(y["rps"]) for x, y in zip(e, b)]
    print(f"| {load} | `{desc[load]}` | {f(b,'rps'):.0f} | {f(e,'rps'):.0f} | {f(e,'rps')/f(b,'rps'):.3f} (pairs: {', '.join(f'{p:.3f}' for p in pr)}) "
          f"| {f(b,'avg_us'):.0f} → {f(e,'avg_us'):.0f} | {f(b,'p99_us'):.0f} → {f(e,'p99_us'):.0f} |")
print()
print("| load | run | requests | traced (agent) | traced/requests | events | lost | dropped | agent CPU gross µs/req | net of idle µs/req | µs/traced exchange (gross) | peak RSS MiB |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
few = False
for r in rows:
    if r["mode"] == "base": continue
    req, cpu, wall = int(r["requests"]), int(r["cpu_ns"]), int(r["wall_ns"])
    tr = int(r["traced"])
    few |= tr < req
    net = cpu - idle * wall / 1e9
    extra = ""
    if r["mode"] == "ebpf_stats":
        extra = f" (bpf_stats on: kernel BPF {int(r['bpf_ns'])/req:.0f} ns/req over {int(r['bpf_cnt'])} program runs, {int(r['bpf_cnt'])/req:.1f} runs/req)"
    print(f"| {r['load']} | {r['mode']}{extra} | {req} | {tr} | {tr/req:.3f} | {r['events']} | {r['lost']} | {r['dropped']} "
          f"| {cpu/req/1e3:.2f} | {net/req/1e3:.2f} | {cpu/max(tr,1)/1e3:.2f} | {int(r['hwm_kb'])/1024:.1f} |")
print()
print(f"idle agent (tracer attached, no load): {idle/1e3:.0f} µs CPU per second")
if few:
    print("note: fewer traced exchanges than requests (2 per request expected with both ends traced):"
          " this binary does not see these TLS exchanges in clear text")

# per program, the bpf_stats run: ns per run and per request
def progs(tag):
    p = os.path.join(tmp, f"bpf_progs.{tag}")
    if not os.path.exists(p): return {}
    out = {}
    for l in open(p):
        i, ns, n = l.split()
        out[i] = (int(ns), int(n))
    return out
before, after = progs("before"), progs("after")
stats = [r for r in rows if r["mode"] == "ebpf_stats"]
if after and stats:
    req = int(stats[0]["requests"])
    names = {}
    try:
        for p in json.load(open(os.path.join(tmp, "bpftool_prog_show.json"))):
            names[str(p["id"])] = (p.get("name", "?"), p.get("type", "?"))
    except (OSError, ValueError):
        pass
    print()
    print(f"kernel BPF time per program (bpf_stats run at the rate load, {req} requests):")
    print("| program | type | id | runs | runs/req | ns/run | ns/req |")
    print("|---|---|---|---|---|---|---|")
    lines = []
    for i, (ns1, n1) in after.items():
        ns0, n0 = before.get(i, (0, 0))
        dn, dc = ns1 - ns0, n1 - n0
        name, typ = names.get(i, ("?", "?"))
        lines.append((dn, f"| {name} | {typ} | {i} | {dc} | {dc/req:.2f} | {dn/dc if dc else 0:.0f} | {dn/req:.0f} |"))
    for _, l in sorted(lines, reverse=True):
        print(l)
    up = [i for i in after if names.get(i, ("",))[0].endswith("_up")]
    print(f"uprobe programs (*_up): {len(up)} loaded" + ("" if up else " — none in this binary"))
EOF

if [ -n "$LAST_METRICS" ]; then
    echo
    echo "agent /metrics at the end of the last traced run (${LAST_METRICS##*/metrics.}):"
    cat "$LAST_METRICS"
fi
