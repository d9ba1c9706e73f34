#!/usr/bin/env bash
# make load-aggregate: `appliance aggregate` (UDP and TCP statsd in,
# Graphite out every second) with loadgen statsd in front of it; loadgen is
# also the Graphite sink and checks the flushed counter totals exactly
# against what it sent. Everything started here is stopped at the end, on
# failure or on Ctrl-C.
#   LINES (2000000)  RATE (lines/s, 200000; RATE=0: unpaced)  KEYS (1000)  PER_PACKET (20)
#   AGG_SHARDS (2)  LOADGEN_SHARDS (1)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

if ! has_aggregate; then
	echo "load-aggregate: skipped: $APP has no 'aggregate' subcommand yet (it arrives with the aggregate branch)"
	exit 0
fi
LINES=${LINES:-2000000}
RATE=${RATE:-200000}
WORK=target/load
mkdir -p "$WORK"

udp=$(free_port)
tcp=$(free_port)
graphite=$(free_port)
start_bg "$WORK/aggregate.log" "$APP" aggregate --listen-udp "127.0.0.1:$udp" --listen-tcp "127.0.0.1:$tcp" \
	--flush-interval 1s --graphite "127.0.0.1:$graphite" --prefix stats --shards "${AGG_SHARDS:-2}"
wait_port "$tcp" "appliance aggregate"
echo "appliance aggregate: statsd on udp/tcp 127.0.0.1:$udp/$tcp, graphite to 127.0.0.1:$graphite"

rate=()
[ "$RATE" != 0 ] && rate=(--rate "$RATE")
run_fg "$APP" loadgen statsd --target "127.0.0.1:$udp" --lines "$LINES" "${rate[@]}" --keys "${KEYS:-1000}" \
	--per-packet "${PER_PACKET:-20}" --verify-graphite "127.0.0.1:$graphite" --prefix stats \
	--shards "${LOADGEN_SHARDS:-1}" --no-pin
