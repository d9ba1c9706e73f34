#!/usr/bin/env python3
"""CPU steering against the kernel's hash, where receive work is spread over
the shards' CPUs as a NIC's queues would spread it.

Two network namespaces joined by a veth pair (made here, removed at exit):
the load generator in one, the aggregator (2 shards, CPUs 0 and 1) in the
other. On the receiving veth, RPS spreads receive processing over CPUs 0
and 1 by flow, as RSS with IRQs pinned to the shards' CPUs would on a NIC.
With `--steering hash` the kernel then picks a shard by its own hash, so
about half the datagrams are received on one CPU and read on the other;
with `--steering cpu` each datagram goes to the shard on the CPU that
processed it.

Alternating rounds, the same sender each time: at a fixed rate, the CPU
the whole machine spends per line (all CPUs busy time, from /proc/stat:
sender, softirq and aggregator together) and the aggregator's own; unpaced,
the lines/s counted exactly at Graphite. Every round checks the flushed
counter totals exactly against what was sent (paced rounds must be exact).

Run as root: `make steering` (ROUNDS, SECS, RATE in the environment).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

APP = os.environ.get("APP", "target/release/appliance")
ROUNDS = int(os.environ.get("ROUNDS", "3"))
SECS = int(os.environ.get("SECS", "4"))
RATE = int(os.environ.get("RATE", "400000"))
TAG = f"st{os.getpid()}"
RX, TX = f"{TAG}-rx", f"{TAG}-tx"
RX_IP, TX_IP = "10.211.0.2", "10.211.0.1"


def sh(*argv, check=True):
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def netns_up():
    sh("ip", "netns", "add", RX)
    sh("ip", "netns", "add", TX)
    sh("ip", "link", "add", f"{TAG}a", "netns", TX, "type", "veth", "peer", "name", f"{TAG}b", "netns", RX)
    for ns, dev, ip in ((TX, f"{TAG}a", TX_IP), (RX, f"{TAG}b", RX_IP)):
        sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
        sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    # RPS over CPUs 0 and 1 on every receive queue of the aggregator's side.
    script = f"for q in /sys/class/net/{TAG}b/queues/rx-*; do echo 3 > $q/rps_cpus; done"
    sh("ip", "netns", "exec", RX, "sh", "-c", script)


def netns_down():
    for ns in (RX, TX):
        sh("ip", "netns", "del", ns, check=False)


def idle_seconds():
    """Idle (and I/O wait) time of all CPUs so far. The kernel measures
    idle time exactly (NO_HZ); its busy fields are tick samples, which miss
    short bursts, so busy time is taken as wall time minus this."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (fields[3] + fields[4]) / os.sysconf("SC_CLK_TCK")


def net_rx():
    """NET_RX softirqs so far, per CPU."""
    with open("/proc/softirqs") as f:
        for line in f:
            if line.strip().startswith("NET_RX:"):
                return [int(x) for x in line.split()[1:]]
    return []


def proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def round_(steering, rate):
    """One run: the aggregator with `steering`, the sender at `rate` lines/s
    (None: unpaced). Returns the figures of the run."""
    port = free_port()
    app = subprocess.Popen(
        ["ip", "netns", "exec", RX, APP, "aggregate", "--listen-udp", f"{RX_IP}:8125",
         "--graphite", f"{TX_IP}:{port}", "--flush-interval", "1s", "--cpus", "0,1",
         "--steering", steering, "--grace", "3s", "--log-level", "warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        time.sleep(0.5)
        if app.poll() is not None:
            sys.exit(f"the aggregator did not start: {app.stderr.read().decode()}")
        argv = ["ip", "netns", "exec", TX, APP, "loadgen", "statsd", "--target", f"{RX_IP}:8125",
                "--duration", f"{SECS}s", "--verify-graphite", f"{TX_IP}:{port}", "--json",
                "--shards", "1", "--no-pin", "--types", "c", "--settle", "2s", "--log-level", "warn"]
        if rate:
            argv += ["--rate", str(rate)]
        pid = app.pid  # `ip netns exec` execs the command in place
        cpu0, idle0, wall0, rx0 = proc_cpu(pid), idle_seconds(), time.monotonic(), net_rx()
        gen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # The load's own window: the figures stop where sending stops.
        time.sleep(SECS)
        cpu1, idle1, wall1, rx1 = proc_cpu(pid), idle_seconds(), time.monotonic(), net_rx()
        out, err = gen.communicate(timeout=60)
        if gen.returncode != 0:
            sys.exit(f"loadgen failed: {err}")
        r = json.loads(out)
    finally:
        os.killpg(app.pid, signal.SIGTERM)
        app.wait(timeout=20)
    v = r["verify"]
    # `ok` is lines sent; Graphite's check is on counter totals (a line
    # may carry a count above 1), so it is what says whether all arrived.
    lines = r["ok"]
    counted = lines * v["received_fraction"]
    machine = os.cpu_count() * (wall1 - wall0) - (idle1 - idle0)
    return {
        "sent_lines_s": lines / r["elapsed_s"],
        "exact": v["exact_fraction"] == 1.0 and v["received_total"] == v["sent_total"],
        "counted_lines_s": counted / r["elapsed_s"],
        "machine_us_per_line": machine / lines * 1e6,
        "app_us_per_line": (cpu1 - cpu0) / lines * 1e6,
        # Where receive work ran: the share of NET_RX softirqs on CPU 1.
        "rx_on_cpu1": (rx1[1] - rx0[1]) / max(1, sum(rx1) - sum(rx0)),
    }


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def main():
    if os.geteuid() != 0:
        sys.exit("run as root (it creates network namespaces)")
    if os.cpu_count() < 2:
        sys.exit("needs CPUs 0 and 1")
    netns_down()
    netns_up()
    try:
        results = {}
        for rnd in range(ROUNDS):
            order = ["hash", "cpu"] if rnd % 2 == 0 else ["cpu", "hash"]
            for steering in order:
                for rate in (RATE, None):
                    r = round_(steering, rate)
                    results.setdefault((steering, rate), []).append(r)
                    what = f"{rate} lines/s" if rate else "unpaced"
                    print(f"round {rnd} {steering:4} {what}: " + ", ".join(
                        f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()),
                        file=sys.stderr)
                    if rate and not r["exact"]:
                        sys.exit(f"{steering} at {rate} lines/s did not count every line exactly")
    finally:
        netns_down()
    m = {k: {f: median([r[f] for r in rs]) for f in rs[0] if f != "exact"} for k, rs in results.items()}
    print(f"\n### steering: hash vs cpu, RPS on CPUs 0-1, {ROUNDS} rounds of {SECS} s, medians\n")
    print("| steering | paced: machine CPU us/line | paced: aggregator CPU us/line "
          "| paced: receive work on CPU 1 | unpaced: lines/s counted | unpaced: exact rounds |")
    print("|---|---:|---:|---:|---:|---:|")
    for s in ("hash", "cpu"):
        exact = sum(r["exact"] for r in results[(s, None)])
        print(f"| {s} | {m[(s, RATE)]['machine_us_per_line']:.3f} | {m[(s, RATE)]['app_us_per_line']:.3f} "
              f"| {m[(s, RATE)]['rx_on_cpu1']:.0%} "
              f"| {m[(s, None)]['counted_lines_s'] / 1e6:.2f} M | {exact}/{ROUNDS} |")
    ratio = lambda f, rate: m[("cpu", rate)][f] / m[("hash", rate)][f]
    print(f"\ncpu/hash at {RATE} lines/s: machine CPU per line **{ratio('machine_us_per_line', RATE):.2f}x**, "
          f"aggregator CPU per line **{ratio('app_us_per_line', RATE):.2f}x**; "
          f"unpaced lines/s counted **{ratio('counted_lines_s', None):.2f}x**")


if __name__ == "__main__":
    main()
