#!/usr/bin/env bash
# Shard groups: how much an unpaced statsd blast hurts forward's latency,
# with both services on every shard and with disjoint groups (forward and
# its echo upstream on shard 0, the aggregator on shard 1). Forward p99 at
# a fixed rate, alone and under the blast, alternating, ROUNDS rounds each;
# prints medians and the ratios. Bounded: every run stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/appliance}
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-4}
RATE=${RATE:-5000}
out=target/isolation
mkdir -p "$out"

config() { # $1: echo/forward shards, $2: aggregate shards
    cat <<CFG
[runtime]
shards = 2
[[echo]]
name = "echo"
listen = "127.0.0.1:17000"
shards = "$1"
[[forward]]
name = "web"
listen = "127.0.0.1:18080"
upstreams = ["127.0.0.1:17000"]
health_interval = "0"
shards = "$1"
[[aggregate]]
name = "statsd"
listen_udp = "127.0.0.1:18125"
graphite = "127.0.0.1:12003"
flush_interval = "1s"
shards = "$2"
CFG
}

p99() { # one fixed-rate run through forward; prints its p99 in us
    "$BIN" loadgen tcp-rr --target 127.0.0.1:18080 --rate "$RATE" --connections 20 --duration "${SECS}s" \
        --shards 1 --no-pin --json 2>/dev/null | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["latency_us"]["p99"])'
}

run_layout() { # $1 name, $2 forward shards, $3 aggregate shards
    config "$2" "$3" > "$out/$1.toml"
    "$BIN" run --config "$out/$1.toml" > "$out/$1.log" 2>&1 &
    local app=$!
    sleep 1
    for _ in $(seq "$ROUNDS"); do
        echo "$1 alone $(p99)" >> "$out/results"
        "$BIN" loadgen statsd --target 127.0.0.1:18125 --duration "$((SECS + 1))s" --shards 1 --no-pin > /dev/null 2>&1 &
        local blast=$!
        sleep 0.5
        echo "$1 blast $(p99)" >> "$out/results"
        wait "$blast" || true
        sleep 2 # let the aggregator drain its socket backlog before the next quiet run
    done
    kill -TERM "$app"; wait "$app" || true
}

: > "$out/results"
run_layout all 0-1 0-1
run_layout disjoint 0 1
python3 - "$out/results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {}
for layout in ("all", "disjoint"):
    for case in ("alone", "blast"):
        vals = [float(r[2]) for r in rows if r[0] == layout and r[1] == case]
        med[layout, case] = statistics.median(vals)
        print(f"{layout:9} {case:6} forward p99 {med[layout, case]:8.0f} us   runs {vals}")
for layout in ("all", "disjoint"):
    print(f"{layout:9} p99 under the blast / alone: {med[layout, 'blast'] / med[layout, 'alone']:.2f}x")
print(f"p99 under the blast, disjoint groups / all shards: {med['disjoint', 'blast'] / med['all', 'blast']:.2f}x")
PY
