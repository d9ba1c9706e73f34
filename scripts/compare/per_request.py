#!/usr/bin/env python3
"""What one request costs each forward proxy at a fixed rate, counted
(`make per-request`): counts are steady where times on this shared machine
are not.

Each proxy (the appliance's forward, HAProxy `mode tcp`, nginx `stream`,
configured as in compare.py; PER_REQUEST_BASELINE=<appliance binary> adds an
older build) runs in front of nginx serving a small page, and loadgen drives
PER_REQUEST_RATE (16,000) keep-alive GETs/s over 50 connections for
PER_REQUEST_SECONDS (6), the proxies alternating over PER_REQUEST_ROUNDS (3)
rounds. Per request, medians:
  - CPU us: utime + stime of the proxy's processes (/proc);
  - system calls: `perf stat -e raw_syscalls:sys_enter` on the proxy's
    processes (a tracepoint: no hardware counter needed), when perf is
    installed;
  - voluntary and involuntary context switches of the proxy's threads
    (/proc/PID/task/TID/status).
With PER_REQUEST_INSTRUCTIONS=1, also the user-space instructions per
request of the appliance (one shard) and nginx stream (one worker), under
callgrind at 1,000 requests/s over 10 connections: the second of two
intervals, 6,000 requests, so start-up is left out.
"""

import glob
import os
import re
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402

RATE = int(os.environ.get("PER_REQUEST_RATE", "16000"))
SECONDS = int(os.environ.get("PER_REQUEST_SECONDS", "6"))
ROUNDS = int(os.environ.get("PER_REQUEST_ROUNDS", "3"))
BASELINE = os.environ.get("PER_REQUEST_BASELINE", "")


def switches(pgid):
    """(voluntary, involuntary) context switches of every thread in group pgid."""
    total = [0, 0]
    for pid in compare.group_pids(pgid):
        for task in glob.glob(f"/proc/{pid}/task/*/status"):
            try:
                with open(task) as f:
                    text = f.read()
            except OSError:
                continue
            for i, key in enumerate(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                m = re.search(rf"^{key}:\s*(\d+)", text, re.M)
                total[i] += int(m.group(1)) if m else 0
    return total


def perf_stat(pgid):
    """perf stat counting system calls of group pgid, or None without perf."""
    pids = compare.group_pids(pgid)
    try:
        return subprocess.Popen(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", ",".join(pids)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    except FileNotFoundError:
        return None


def perf_count(stat):
    if stat is None:
        return float("nan")
    stat.send_signal(signal.SIGINT)
    _, err = stat.communicate(timeout=30)
    for line in err.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] == "raw_syscalls:sys_enter" and fields[0].isdigit():
            return float(fields[0])
    return float("nan")


def measure(port, proc):
    """One fixed-rate run through the proxy at `port`: per-request counts."""
    pgid = proc.pid
    cpu0, sw0, stat = compare.cpu_seconds(pgid), switches(pgid), perf_stat(pgid)
    j = compare.loadgen("tcp-rr", "--http", "--target", f"127.0.0.1:{port}", "--connections", "50",
                        "--rate", str(RATE), "--duration", f"{SECONDS}s")
    calls = perf_count(stat)
    cpu1, sw1 = compare.cpu_seconds(pgid), switches(pgid)
    n = max(j["ok"], 1)
    return {"cpu": (cpu1 - cpu0) * 1e6 / n, "calls": calls / n, "vol": (sw1[0] - sw0[0]) / n,
            "invol": (sw1[1] - sw0[1]) / n}


def callgrind(argv, port, name):
    """User-space instructions per request of the server `argv` starts
    (listening on `port`), under callgrind."""
    out = os.path.join(compare.WORK, f"callgrind-{name}.out")
    for f in glob.glob(out + "*"):
        os.remove(f)
    proc = compare.start(f"callgrind-{name}", ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv])
    compare.wait_port(port, proc)
    served = []
    for secs in (3, 6):
        j = compare.loadgen("tcp-rr", "--http", "--target", f"127.0.0.1:{port}", "--connections", "10",
                            "--rate", "1000", "--duration", f"{secs}s")
        served.append(j["ok"])
        subprocess.run(["callgrind_control", "--dump", str(proc.pid)], capture_output=True, timeout=60)
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    dumps = sorted(glob.glob(out + ".*"), key=lambda f: int(f.rsplit(".", 1)[1]))
    if len(dumps) < 2:
        return float("nan")
    with open(dumps[1]) as f:
        total = next((int(line.split()[1]) for line in f if line.startswith("summary:")), 0)
    return total / max(served[1], 1)


def instructions(backend):
    port = compare.free_port()
    app = callgrind([compare.APP, "forward", "--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{backend}",
                     "--shards", "1", "--no-pin", "--health-interval", "0"], port, "appliance")
    port = compare.free_port()
    conf = compare.render("nginx-stream.conf.in", "callgrind-nginx.conf", LISTEN=port, UPSTREAM=backend,
                          WORK=compare.WORK, NAME="callgrind-nginx", LOAD_MODULE=compare.stream_module())
    with open(conf) as f:
        text = f.read().replace("worker_processes 2;", "worker_processes 1;")
    with open(conf, "w") as f:
        f.write(text)
    ngx = callgrind(["nginx", "-p", compare.WORK + "/", "-e", f"{compare.WORK}/callgrind-nginx.err", "-c", conf,
                     "-g", "daemon off; master_process off;"], port, "nginx")
    return app, ngx


def main():
    os.makedirs(os.path.join(compare.WORK, "nginx-backend-tmp"), exist_ok=True)
    if BASELINE:
        compare.BASELINE = BASELINE
    systems = ["appliance", "haproxy", "nginx"] + (["baseline"] if BASELINE else [])
    backend = compare.free_port()
    conf = compare.render("nginx-backend.conf.in", "nginx-backend.conf", LISTEN=backend, WORK=compare.WORK)
    compare.wait_port(backend, compare.nginx("nginx-backend", conf))
    try:
        proxies = {s: compare.start_proxy(s, backend, "per-request") for s in systems}
        seen = {s: [] for s in systems}
        for r in range(ROUNDS):
            for s in systems[r % len(systems):] + systems[:r % len(systems)]:
                m = measure(*proxies[s])
                seen[s].append(m)
                print(f"round {r + 1} {s}: {m['cpu']:.2f} us CPU, {m['calls']:.2f} system calls, "
                      f"{m['vol']:.2f} + {m['invol']:.2f} context switches per request", flush=True)
        for port_proc in proxies.values():
            os.killpg(port_proc[1].pid, signal.SIGTERM)
        counts = instructions(backend) if os.environ.get("PER_REQUEST_INSTRUCTIONS") == "1" else None
    finally:
        compare.stop_all()
    print(f"\nper request at a fixed {RATE} req/s over 50 connections (medians of {ROUNDS} rounds of {SECONDS} s):")
    print(f"{'proxy':<10} {'CPU us':>8} {'syscalls':>9} {'voluntary':>10} {'involuntary':>12}")
    for s in systems:
        med = {k: statistics.median(m[k] for m in seen[s]) for k in ("cpu", "calls", "vol", "invol")}
        print(f"{s:<10} {med['cpu']:>8.2f} {med['calls']:>9.2f} {med['vol']:>10.2f} {med['invol']:>12.2f}")
    if counts is not None:
        print(f"user-space instructions per request (callgrind): appliance {counts[0]:.0f}, nginx stream {counts[1]:.0f}")


if __name__ == "__main__":
    main()
