#!/usr/bin/env python3
"""The aggregator's AF_XDP backend against its kernel sockets, with the
receive work on the receiver's core, as a NIC queue's IRQ pinned to the
shard's CPU would put it.

Two network namespaces joined by a veth pair with one queue (made here,
removed at exit). `loadgen statsd` (one shard) on CPU 0 in one; the
aggregator, one shard pinned to CPU 1, in the other:

- `--backend kernel`: RPS on the receiving veth sends receive processing
  to CPU 1, where the shard reads its socket;
- `--backend xdp`: the XDP program runs in the veth's NAPI poll, made a
  kernel thread (`threaded` NAPI) pinned to CPU 1 (NAPI=rt: at real-time
  priority, as an interrupt preempts a thread); frames go to the AF_XDP
  socket of that queue.

Backends alternate, round by round, over a ladder of rates (lines/s, 20
lines per datagram); every run's flushed counter totals are checked
exactly at Graphite. Reported per backend: CPU 1's busy time per line (the
receiver's core: kernel receive work and the shard together) at each rate
both count exactly, and the highest rate counted exactly in every round.

Run as root: `make bench-xdp` (ROUNDS, SECS, RATES=comma-separated lines/s,
NAPI=normal|nice|rt, MODE=native|generic).
"""

import os
import sys

from vethlab import Lab, median, run, sh

ROUNDS = int(os.environ.get("ROUNDS", "2"))
SECS = int(os.environ.get("SECS", "3"))
RATES = [int(r) for r in os.environ.get("RATES", "500000,1000000,1500000,2000000,2500000,3000000").split(",")]
RX_CPU, TX_CPU = 1, 0
# The NAPI thread's priority: "normal" (it runs when the shard yields, so
# frames arrive in larger batches; the veth's fixed 256-entry ring, where
# a NIC has thousands of descriptors, overflows at the sender when the
# shard holds the core too long) or "rt" (real-time: it preempts the shard
# as an interrupt would, in smaller batches).
NAPI = os.environ.get("NAPI", "normal")
# XDP in the veth's driver ("native", its NAPI thread on the receiver's
# core) or "generic" (on the socket buffer, in the RPS softirq there).
MODE = os.environ.get("MODE", "native")


def pin_napi(lab):
    """Threaded NAPI on the receiving veth, its threads pinned to RX_CPU
    (once the aggregator has attached XDP: a veth has NAPI only then)."""

    def pin(_pid):
        lab.rx_sh(f"echo 1 > /sys/class/net/{lab.rx_if}/threaded")
        ps = sh("ps", "-eo", "pid,comm").stdout.splitlines()
        threads = [line.split()[0] for line in ps if f"napi/{lab.rx_if}" in line]
        if not threads:
            sys.exit(f"no NAPI thread for {lab.rx_if}: is the XDP program attached?")
        for t in threads:
            sh("taskset", "-pc", str(RX_CPU), t)
            if NAPI == "rt":
                # As an interrupt is: it preempts the shard the moment
                # frames arrive, as the kernel path's softirq does.
                sh("chrt", "-f", "-p", "50", t)
            elif NAPI == "nice":
                # First among equals: CFS runs it soon after it wakes.
                sh("renice", "-n", "-20", "-p", t)
    return pin


def one(lab, backend, rate):
    args = ["--cpus", str(RX_CPU)]
    ready = None
    if backend == "xdp":
        args += ["--backend", "xdp", "--interface", lab.rx_if, "--xdp-mode", MODE]
        # Generic XDP runs where the kernel path does: in the softirq RPS
        # sent to the receiver's core.
        ready = pin_napi(lab) if MODE == "native" else None
    r = run(lab, args, ["--cpus", str(TX_CPU)], SECS, rate, ready)
    return {
        "exact": r["exact"],
        "counted_lines_s": r["counted_lines_s"],
        "rx_core_us_per_line": r["busy_s"][RX_CPU] / r["lines"] * 1e6,
        "app_us_per_line": r["app_s"] / r["lines"] * 1e6,
    }


def main():
    if os.geteuid() != 0:
        sys.exit("run as root (it creates network namespaces and attaches XDP)")
    if os.cpu_count() < 2:
        sys.exit("needs CPUs 0 and 1")
    seen = {}
    with Lab(f"xb{os.getpid()}") as lab:
        # Receive work for the kernel sockets on the receiver's core.
        lab.rx_sh(f"echo {1 << RX_CPU:x} > /sys/class/net/{lab.rx_if}/queues/rx-0/rps_cpus")
        for rnd in range(ROUNDS):
            for rate in RATES:
                order = ["kernel", "xdp"] if rnd % 2 == 0 else ["xdp", "kernel"]
                for backend in order:
                    r = one(lab, backend, rate)
                    seen.setdefault((backend, rate), []).append(r)
                    print(f"round {rnd} {backend:6} {rate} lines/s: exact {r['exact']}, counted "
                          f"{r['counted_lines_s']:.0f}/s, receiver core {r['rx_core_us_per_line']:.3f} us/line, "
                          f"aggregator {r['app_us_per_line']:.3f} us/line", file=sys.stderr)
    report(seen)


def report(seen):
    def exact_everywhere(backend, rate):
        return all(r["exact"] for r in seen[(backend, rate)])

    def med(backend, rate, field):
        return median([r[field] for r in seen[(backend, rate)]])

    print(f"\n### AF_XDP ({MODE}) against kernel sockets, receive work on the receiver's core "
          f"(NAPI thread: {NAPI if MODE == 'native' else 'none, RPS softirq'}); "
          f"{ROUNDS} rounds of {SECS} s per rate, medians\n")
    print("| lines/s | kernel: exact | xdp: exact | kernel: receiver core us/line | xdp: receiver core us/line "
          "| xdp / kernel CPU | kernel: aggregator us/line | xdp: aggregator us/line |")
    print("|---:|---|---|---:|---:|---:|---:|---:|")
    both = []
    for rate in RATES:
        k, x = exact_everywhere("kernel", rate), exact_everywhere("xdp", rate)
        ck, cx = med("kernel", rate, "rx_core_us_per_line"), med("xdp", rate, "rx_core_us_per_line")
        if k and x:
            both.append(cx / ck)
        print(f"| {rate:,} | {k} | {x} | {ck:.3f} | {cx:.3f} | {cx / ck:.2f}x | "
              f"{med('kernel', rate, 'app_us_per_line'):.3f} | {med('xdp', rate, 'app_us_per_line'):.3f} |")
    # The rate counted, not the rate asked: one sender core has a ceiling.
    best = {b: max([med(b, r, "counted_lines_s") for r in RATES if exact_everywhere(b, r)], default=0.0)
            for b in ("kernel", "xdp")}
    print(f"\nhighest rate counted exactly in every round: kernel {best['kernel']:,.0f}, xdp {best['xdp']:,.0f} "
          "lines/s" + (f" (**{best['xdp'] / best['kernel']:.2f}x**)" if best["kernel"] else ""))
    if both:
        print(f"receiver core CPU per line, xdp / kernel, at the rates both count exactly: "
              f"**{median(both):.2f}x** (median; {min(both):.2f}x - {max(both):.2f}x)")


if __name__ == "__main__":
    main()
