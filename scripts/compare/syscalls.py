#!/usr/bin/env python3
"""System calls per new connection and per request, for the appliance and
both peers (`make syscalls`): counts are steady where times on this shared
machine are not.

Each proxy (the appliance's forward, HAProxy `mode tcp`, nginx `stream`,
configured as in compare.py, two threads or workers each) runs in front of
nginx serving a small page. strace attaches (-c -f) to every process of
the proxy after it started, then loadgen runs a fixed count through it:
  - new connections: CONNS of connect + HTTP GET + close (16 at a time);
  - requests: REQS keep-alive HTTP GETs over 16 connections;
strace detaches after each and its summary is divided by the count. The
table also shows the three most frequent calls of each. strace slows the
proxies (so no times are shown); it does not change what they call.
"""

import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402

CONNS = int(os.environ.get("SYSCALLS_CONNS", "3000"))
REQS = int(os.environ.get("SYSCALLS_REQUESTS", "30000"))


def traced(proc, out, load):
    """Runs `load()` with strace attached to every process of `proc`'s
    group; returns {syscall: calls}."""
    args = ["strace", "-c", "-f", "-o", out]
    for pid in compare.group_pids(os.getpgid(proc.pid)):
        args += ["-p", pid]
    tracer = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    load()
    time.sleep(0.5)
    tracer.send_signal(signal.SIGINT)
    tracer.wait(timeout=30)
    calls = {}
    with open(out) as f:
        for line in f:
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
            if m and m.group(2) != "total":
                calls[m.group(2)] = int(m.group(1))
    return calls


def summary(calls, n):
    top = sorted(calls.items(), key=lambda kv: -kv[1])[:3]
    total = sum(calls.values()) / n
    return total, ", ".join(f"{k} {v / n:.2f}" for k, v in top)


def main():
    os.makedirs(os.path.join(compare.WORK, "nginx-backend-tmp"), exist_ok=True)
    backend = compare.free_port()
    conf = compare.render("nginx-backend.conf.in", "nginx-backend.conf", LISTEN=backend, WORK=compare.WORK)
    compare.wait_port(backend, compare.nginx("nginx-backend", conf))
    rows = []
    try:
        for system in ("appliance", "haproxy", "nginx"):
            port, proc = compare.start_proxy(system, backend, "syscalls")
            target = f"127.0.0.1:{port}"
            conns = traced(proc, f"{compare.WORK}/strace-{system}-conn.txt", lambda: compare.loadgen(
                "connect", "--target", target, "--http", "--requests", str(CONNS), "--connections", "16"))
            reqs = traced(proc, f"{compare.WORK}/strace-{system}-req.txt", lambda: compare.loadgen(
                "tcp-rr", "--target", target, "--http", "--requests", str(REQS), "--connections", "16"))
            rows.append((system, summary(conns, CONNS), summary(reqs, REQS)))
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        compare.stop_all()
    print(f"\nsystem calls per new connection ({CONNS}, connect + GET + close) and per request ({REQS} keep-alive GETs):")
    print(f"{'proxy':<10} {'per conn':>9}  {'most frequent':<48} {'per request':>11}  most frequent")
    for system, (c, ctop), (r, rtop) in rows:
        print(f"{system:<10} {c:>9.2f}  {ctop:<48} {r:>11.3f}  {rtop}")


if __name__ == "__main__":
    main()
