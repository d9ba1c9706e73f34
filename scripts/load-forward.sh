#!/usr/bin/env bash
# make load-forward: an upstream (the bundled `appliance echo`, or nginx
# `return 200` with UPSTREAM=nginx when nginx is installed), `appliance
# forward` in front of it, then loadgen: request/response, fixed-rate
# latency, bulk and connection rate. Everything started here is stopped at
# the end, on failure or on Ctrl-C.
#   LOAD_DURATION (5s)  FORWARD_SHARDS (2)  LOADGEN_SHARDS (1)  CONNS (50)  RATE (10000)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

DURATION=${LOAD_DURATION:-5s}
FWD_SHARDS=${FORWARD_SHARDS:-2}
LG_SHARDS=${LOADGEN_SHARDS:-1}
CONNS=${CONNS:-50}
RATE=${RATE:-10000}
WORK=target/load
mkdir -p "$WORK"

up=$(free_port)
if [ "${UPSTREAM:-echo}" = nginx ] && command -v nginx >/dev/null; then
	mkdir -p "$WORK/nginx-backend-tmp"
	sed -e "s|@WORK@|$PWD/$WORK|g" -e "s|@LISTEN@|$up|g" scripts/compare/nginx-backend.conf.in >"$WORK/nginx-backend.conf"
	start_bg "$WORK/upstream.log" nginx -p "$PWD/$WORK" -e "$PWD/$WORK/nginx-backend.err" -c "$PWD/$WORK/nginx-backend.conf" -g 'daemon off;'
	rr=(--http)
	cr=(--http)
	echo "upstream: nginx return 200 on 127.0.0.1:$up"
else
	start_bg "$WORK/upstream.log" "$APP" echo --listen "127.0.0.1:$up" --shards 1 --no-pin
	rr=(--size 64)
	cr=(--size 64)
	echo "upstream: appliance echo on 127.0.0.1:$up"
fi
wait_port "$up" upstream

fwd=$(free_port)
start_bg "$WORK/forward.log" "$APP" forward --listen "127.0.0.1:$fwd" --upstream "127.0.0.1:$up" \
	--shards "$FWD_SHARDS" --no-pin --health-interval 0
wait_port "$fwd" "appliance forward"
echo "appliance forward on 127.0.0.1:$fwd ($FWD_SHARDS shards)"

lg() { run_fg "$APP" loadgen "$@" --target "127.0.0.1:$fwd" --duration "$DURATION" --shards "$LG_SHARDS" --no-pin; }
echo; echo "== request/response, $CONNS connections, unpaced"
lg tcp-rr --connections "$CONNS" "${rr[@]}"
echo; echo "== request/response at a fixed $RATE req/s (latency from the intended send time)"
lg tcp-rr --connections "$CONNS" --rate "$RATE" "${rr[@]}"
echo; echo "== new connections per second (connect, one round trip, close)"
lg connect --connections 16 "${cr[@]}"
if [ "${UPSTREAM:-echo}" != nginx ]; then
	echo; echo "== bulk, 1 connection (sent to echo and drained back)"
	lg tcp-stream --connections 1
fi
