# Shared by the load and compare scripts (source it): processes started
# with `start_bg` run in their own process group and are all stopped (TERM,
# then KILL, whole groups) when the script exits, fails or is interrupted.

APP=${APP:-target/release/appliance}
PGIDS=()

# start_bg LOGFILE CMD ARGS...: starts CMD in a new session; LAST_PID is its pid.
start_bg() {
	local log=$1
	shift
	# Without job control a background job is not a group leader, so
	# setsid execs in place and $! is the new group's id.
	setsid "$@" >"$log" 2>&1 &
	LAST_PID=$!
	PGIDS+=("$LAST_PID")
}

# run_fg CMD ARGS...: runs CMD to completion, but so that a signal to this
# script is handled at once (bash runs traps only between foreground
# commands, and `wait` is interruptible); CMD is stopped by the cleanup.
FG_PIDS=()
run_fg() {
	"$@" &
	FG_PIDS+=($!)
	wait $!
}

cleanup() {
	local rc=$?
	# A failing kill (the process already gone) must not end the cleanup.
	set +e
	local pg
	for pg in "${FG_PIDS[@]}"; do kill -TERM "$pg" 2>/dev/null; done
	for pg in "${PGIDS[@]}"; do kill -TERM -- "-$pg" 2>/dev/null; done
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		local alive=0
		for pg in "${PGIDS[@]}"; do kill -0 -- "-$pg" 2>/dev/null && alive=1; done
		[ "$alive" = 0 ] && break
		sleep 0.2
	done
	for pg in "${PGIDS[@]}"; do kill -KILL -- "-$pg" 2>/dev/null; done
	PGIDS=()
	# The script's own status, not that of the last kill.
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_port: a loopback TCP/UDP port nothing listens on right now.
free_port() {
	local port
	while :; do
		port=$((20000 + RANDOM % 30000))
		ss -Htanu 2>/dev/null | grep -q ":$port\b" || { echo "$port"; return; }
	done
}

# wait_port PORT [NAME]: waits (10 s) until something accepts on 127.0.0.1:PORT.
wait_port() {
	for _ in $(seq 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	echo "${2:-server} did not listen on 127.0.0.1:$1 within 10 s" >&2
	return 1
}

# has_aggregate: true when this appliance binary has the aggregate service.
has_aggregate() {
	"$APP" aggregate --help >/dev/null 2>&1
}
