#!/usr/bin/env python3
"""What the admin status page costs: its size, and the CPU each shard
spends while pages refresh (`make page-cost`).

Starts the release binary with a forward and an aggregate service on
loopback, then, for a fixed time each:
  - idle: no page open (the 2 s status history sampling only);
  - pages: PAGES open pages, each fetching /status?format=html every 2 s
    (what the page's script does), spread evenly;
and reads each shard thread's CPU time from /proc before and after.
Prints page and refresh sizes, CPU per refresh on the admin shard (shard 0)
and on the others (their share of the status gathering), and what one open
page costs as a fraction of a core. Bounded: about 2 x SECONDS.
"""

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "target/release/appliance")
SECONDS = float(os.environ.get("PAGE_COST_SECONDS", "20"))
PAGES = int(os.environ.get("PAGE_COST_PAGES", "20"))
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shard_cpu(pid):
    """CPU seconds per shard thread (by name shard-N)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if name.startswith("shard-"):
            out[name] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def fetch(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read()


def run(pid, admin, pages):
    before = shard_cpu(pid)
    start = time.time()
    refreshes = 0
    if pages:
        gap = 2.0 / pages
        while time.time() - start < SECONDS:
            fetch(f"http://{admin}/status?format=html")
            refreshes += 1
            time.sleep(max(0.0, start + refreshes * gap - time.time()))
    else:
        time.sleep(SECONDS)
    elapsed = time.time() - start
    after = shard_cpu(pid)
    return {k: after[k] - before.get(k, 0.0) for k in after}, refreshes, elapsed


def main():
    if not os.path.exists(APP):
        sys.exit(f"{APP} missing: cargo build --release -p appliance")
    admin = f"127.0.0.1:{free_port()}"
    ups = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
    config = f"""[runtime]
shards = 2
no_pin = true
[admin]
listen = "{admin}"
[[forward]]
name = "web"
listen = "127.0.0.1:{free_port()}"
upstreams = ["127.0.0.1:{ups[0].getsockname()[1]}", "127.0.0.1:{ups[1].getsockname()[1]}"]
[[aggregate]]
name = "statsd"
listen_udp = "127.0.0.1:{free_port()}"
flush_interval = "10s"
prometheus = true
"""
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(config)
    p = subprocess.Popen([APP, "run", "--config", f.name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                fetch(f"http://{admin}/healthz")
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(4.5)  # two history samples, so rates and charts are in the page
        page = fetch(f"http://{admin}/")
        part = fetch(f"http://{admin}/status?format=html")
        print(f"page: {len(page)} bytes (the live part alone: {len(part)} bytes per refresh)")
        idle, _, t_idle = run(p.pid, admin, 0)
        busy, n, t_busy = run(p.pid, admin, PAGES)
        print(f"{PAGES} pages open for {t_busy:.0f} s: {n} refreshes")
        for shard in sorted(busy):
            extra = busy[shard] / t_busy - idle.get(shard, 0.0) / t_idle
            per = extra * t_busy / max(n, 1) * 1000
            print(f"  {shard}: {per:.3f} ms CPU per refresh; one open page: {per / 2.0 / 10:.4f} % of a core "
                  f"(idle {idle.get(shard, 0.0) / t_idle * 100:.2f} %, with the pages {busy[shard] / t_busy * 100:.2f} %)")
    finally:
        p.terminate()
        p.wait(timeout=30)
        os.unlink(f.name)


if __name__ == "__main__":
    main()
