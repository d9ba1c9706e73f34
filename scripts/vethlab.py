"""What the veth benchmarks share (`scripts/steering.py`, `scripts/xdp.py`):
two network namespaces joined by a veth pair, made here and removed at
exit; the aggregator in one (`rx`), `loadgen statsd` in the other (`tx`),
its flushed totals checked exactly at a Graphite sink in `tx`; and the CPU
figures of a run: per-CPU busy time (wall time minus the kernel's exact
idle time; its busy fields are tick samples that miss short bursts), the
aggregator's own CPU time, and where receive softirqs ran."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

APP = os.environ.get("APP", "target/release/appliance")
RX_IP, TX_IP = "10.211.0.2", "10.211.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def sh(*argv, check=True):
    return subprocess.run(argv, check=check, capture_output=True, text=True)


class Lab:
    """The namespaces and the veth: `rx_if` in `rx` (the aggregator's
    side), `tx_if` in `tx`. Use as a context manager."""

    def __init__(self, tag, queues=1):
        self.rx, self.tx = f"{tag}-rx", f"{tag}-tx"
        self.rx_if, self.tx_if = f"{tag}b", f"{tag}a"
        self.queues = queues

    def __enter__(self):
        self.down()
        sh("ip", "netns", "add", self.rx)
        sh("ip", "netns", "add", self.tx)
        q = str(self.queues)
        sh("ip", "link", "add", self.tx_if, "netns", self.tx, "numtxqueues", q, "numrxqueues", q, "type", "veth",
           "peer", "name", self.rx_if, "netns", self.rx, "numtxqueues", q, "numrxqueues", q)
        for ns, dev, ip in ((self.tx, self.tx_if, TX_IP), (self.rx, self.rx_if, RX_IP)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        # A veth hands its peer locally made packets with the UDP checksum
        # left for hardware (CHECKSUM_PARTIAL); a NIC's frames carry whole
        # ones, which is what an AF_XDP receiver must see.
        sh("ip", "netns", "exec", self.tx, "ethtool", "-K", self.tx_if, "tx", "off")
        return self

    def __exit__(self, *exc):
        self.down()

    def down(self):
        for ns in (self.rx, self.tx):
            sh("ip", "netns", "del", ns, check=False)

    def rx_sh(self, script):
        """Runs a shell script in `rx` (sysfs is the namespace's there)."""
        return sh("ip", "netns", "exec", self.rx, "sh", "-c", script)


def cpu_idle():
    """Idle (and I/O wait) seconds so far, per CPU."""
    out = []
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                fields = [int(x) for x in line.split()[1:]]
                out.append((fields[3] + fields[4]) / CLK_TCK)
    return out


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
    return (int(parts[11]) + int(parts[12])) / CLK_TCK


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run(lab, app_args, gen_args, secs, rate=None, ready=None):
    """One run: `appliance aggregate APP_ARGS` in `rx` (listening on
    RX_IP:8125, flushing to a sink in `tx`), `loadgen statsd GEN_ARGS` in
    `tx` for `secs` at `rate` lines/s (None: unpaced). `ready(pid)` runs
    once the aggregator is up (pinning kernel threads, say). Returns the
    run's figures; per-CPU busy seconds cover the load's window."""
    port = free_port()
    app = subprocess.Popen(
        ["ip", "netns", "exec", lab.rx, APP, "aggregate", "--listen-udp", f"{RX_IP}:8125",
         "--graphite", f"{TX_IP}:{port}", "--flush-interval", "1s", "--grace", "3s", "--log-level", "warn",
         *app_args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        time.sleep(0.7)
        if app.poll() is not None:
            sys.exit(f"the aggregator did not start: {app.stderr.read().decode()}")
        if ready:
            ready(app.pid)
        argv = ["ip", "netns", "exec", lab.tx, APP, "loadgen", "statsd", "--target", f"{RX_IP}:8125",
                "--duration", f"{secs}s", "--verify-graphite", f"{TX_IP}:{port}", "--json",
                "--types", "c", "--settle", "2s", "--log-level", "warn", *gen_args]
        if rate:
            argv += ["--rate", str(rate)]
        # `ip netns exec` execs the command in place: the pid is the aggregator's.
        cpu0, idle0, wall0, rx0 = proc_cpu(app.pid), cpu_idle(), time.monotonic(), net_rx()
        gen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(secs)
        cpu1, idle1, wall1, rx1 = proc_cpu(app.pid), cpu_idle(), time.monotonic(), net_rx()
        out, err = gen.communicate(timeout=120)
        if gen.returncode != 0:
            sys.exit(f"loadgen failed: {err}")
        r = json.loads(out)
    finally:
        os.killpg(app.pid, signal.SIGTERM)
        app.wait(timeout=20)
    v = r["verify"]
    # `ok` is lines sent; Graphite's check is on counter totals (a line may
    # carry a count above 1), so it is what says whether all arrived.
    lines = r["ok"]
    wall = wall1 - wall0
    return {
        "lines": lines,
        "sent_lines_s": lines / r["elapsed_s"],
        "exact": v["exact_fraction"] == 1.0 and v["received_total"] == v["sent_total"],
        "counted_lines_s": lines * v["received_fraction"] / r["elapsed_s"],
        "busy_s": [wall - (b - a) for a, b in zip(idle0, idle1)],
        "app_s": cpu1 - cpu0,
        "rx_softirqs": [b - a for a, b in zip(rx0, rx1)],
    }


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else float("nan")
