#!/usr/bin/env bash
# Installs what `make compare` measures against, only what is missing:
# Debian haproxy, nginx (+ the stream module), wrk, iperf3, python3 (the
# driver), node/npm, and etsy statsd from npm into target/compare/statsd.
set -euo pipefail
cd "$(dirname "$0")/../.."
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
missing=""
need() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" || missing="$missing $1"; }
for p in haproxy nginx libnginx-mod-stream wrk iperf3; do need "$p"; done
command -v python3 >/dev/null || missing="$missing python3"
command -v node >/dev/null && command -v npm >/dev/null || missing="$missing nodejs npm"
# nginx built with a static stream module needs no libnginx-mod-stream.
if [[ $missing == *libnginx-mod-stream* ]] && nginx -V 2>&1 | grep -q -- "--with-stream\( \|$\)"; then
	missing=${missing/ libnginx-mod-stream/}
fi
if [ -n "$missing" ]; then
	echo "installing:$missing"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
fi
if [ ! -f target/compare/statsd/node_modules/statsd/stats.js ]; then
	echo "installing etsy statsd (npm) into target/compare/statsd"
	mkdir -p target/compare/statsd
	npm install --no-audit --no-fund --prefix target/compare/statsd statsd >/dev/null
fi
