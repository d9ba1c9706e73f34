#!/usr/bin/env python3
"""The forward proxy's CPU per new connection, this build against another
(`CONN_CPU_BASELINE=<old appliance binary> scripts/compare/conn_cpu.py [N]`).

An echo upstream (this build's `appliance echo`, one shard), then for each
build in alternating order over 3 rounds: `appliance forward` on 2 shards,
N (default 40,000) connections of connect + 64-byte echo + close at a fixed
6,000/s from loadgen (32 loops), and the proxy's CPU time from /proc (every
thread, io-wq workers included) divided by N. A fixed rate makes both
builds do the same work in the same time, so CPU time is the figure.
Prints each round and the medians' ratio.
"""

import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import cpu_seconds, free_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NEW = os.path.join(ROOT, "target/release/appliance")
OLD = os.environ.get("CONN_CPU_BASELINE")


def round_of(binary, upstream, n):
    p = free_port()
    proxy = subprocess.Popen([binary, "forward", "--listen", f"127.0.0.1:{p}", "--upstream", f"127.0.0.1:{upstream}",
                              "--shards", "2", "--no-pin", "--health-interval", "0"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(0.7)
        before = cpu_seconds(proxy.pid)
        out = subprocess.run([NEW, "loadgen", "connect", "--target", f"127.0.0.1:{p}", "--size", "64",
                              "--requests", str(n), "--rate", "6000", "--connections", "32", "--shards", "1",
                              "--no-pin"], capture_output=True, text=True, timeout=600).stdout
        if " 0 errors" not in out:
            sys.exit(f"loadgen reported errors: {out}")
        time.sleep(0.3)
        return (cpu_seconds(proxy.pid) - before) / n * 1e6
    finally:
        proxy.terminate()
        proxy.wait(timeout=30)


def main():
    if not OLD:
        sys.exit("give the other build: CONN_CPU_BASELINE=<appliance binary>")
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40_000
    up = free_port()
    echo = subprocess.Popen([NEW, "echo", "--listen", f"127.0.0.1:{up}", "--shards", "1", "--no-pin"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen = {"this": [], "baseline": []}
    try:
        time.sleep(0.5)
        for r in range(3):
            order = [("this", NEW), ("baseline", OLD)]
            for name, binary in order if r % 2 == 0 else order[::-1]:
                us = round_of(binary, up, n)
                seen[name].append(us)
                print(f"round {r + 1} {name}: {us:.1f} us CPU per connection", flush=True)
    finally:
        echo.terminate()
        echo.wait(timeout=30)
    this, base = statistics.median(seen["this"]), statistics.median(seen["baseline"])
    print(f"medians: this {this:.1f}, baseline {base:.1f} us per connection: {this / base:.2f}x")


if __name__ == "__main__":
    main()
