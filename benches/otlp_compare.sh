#!/bin/sh
# OTLP/HTTP throughput of agent builds against each other and against the
# decode floor (issue 16), alternating in one session: for each of PAIRS
# rounds, the floor, then every binary given, each `otlp_load throughput`
# (or `floor`) for SECS seconds over CONNS connections. Prints one line a
# run (spans per CPU-second of the process on CPU 0) and the means.
#
#   cargo bench --bench otlp_load --no-run
#   PAIRS=3 benches/otlp_compare.sh target/release/deps/otlp_load-HASH \
#       /tmp/agent-old target/release/cased-agent
#
# Env: PAIRS (3), SECS (10), CONNS (1), FLOOR (1: run the floor too).
set -eu
bench=$1
shift
PAIRS=${PAIRS:-3}
SECS=${SECS:-10}
CONNS=${CONNS:-1}
FLOOR=${FLOOR:-1}
out=$(mktemp)
trap 'rm -f "$out"' EXIT

field() { awk -v k="$1" '$1 == k { print $2 }'; }

run() { # label, then the bench's arguments
    label=$1
    shift
    r=$("$@")
    per=$(echo "$r" | field spans_per_agent_cpu_second)
    acc=$(echo "$r" | field spans_accepted_per_s)
    cpu=$(echo "$r" | field agent_cpu_percent_of_one_core)
    load=$(cut -d' ' -f1 /proc/loadavg)
    printf '%-28s accepted/s %8s  cpu %5s%%  per CPU-s %8s  load %s\n' \
        "$label" "$acc" "$cpu" "$per" "$load"
    echo "$label $per" >>"$out"
}

i=1
while [ "$i" -le "$PAIRS" ]; do
    if [ "$FLOOR" = 1 ]; then
        run floor "$bench" floor "$SECS" "$CONNS"
    fi
    for bin in "$@"; do
        run "$bin" env CASED_AGENT_BIN="$bin" "$bench" throughput "$SECS" "$CONNS"
    done
    i=$((i + 1))
done

echo "means (spans per CPU-second of the process on CPU 0):"
awk '{ s[$1] += $2; n[$1]++ } END { for (k in s) printf "  %-28s %.0f\n", k, s[k] / n[k] }' "$out"
