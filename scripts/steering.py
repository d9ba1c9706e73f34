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

import os
import sys

from vethlab import Lab, median, run

ROUNDS = int(os.environ.get("ROUNDS", "3"))
SECS = int(os.environ.get("SECS", "4"))
RATE = int(os.environ.get("RATE", "400000"))


def round_(lab, steering, rate):
    """One run with `--steering STEERING`, the sender at `rate` lines/s
    (None: unpaced)."""
    r = run(lab, ["--cpus", "0,1", "--steering", steering], ["--shards", "1", "--no-pin"], SECS, rate)
    return {
        "exact": r["exact"],
        "counted_lines_s": r["counted_lines_s"],
        "machine_us_per_line": sum(r["busy_s"]) / r["lines"] * 1e6,
        "app_us_per_line": r["app_s"] / r["lines"] * 1e6,
        # Where receive work ran: the share of NET_RX softirqs on CPU 1.
        "rx_on_cpu1": r["rx_softirqs"][1] / max(1, sum(r["rx_softirqs"])),
    }


def main():
    if os.geteuid() != 0:
        sys.exit("run as root (it creates network namespaces)")
    if os.cpu_count() < 2:
        sys.exit("needs CPUs 0 and 1")
    results = {}
    with Lab(f"st{os.getpid()}") as lab:
        # RPS over CPUs 0 and 1 on every receive queue of the aggregator's side.
        lab.rx_sh(f"for q in /sys/class/net/{lab.rx_if}/queues/rx-*; do echo 3 > $q/rps_cpus; done")
        for rnd in range(ROUNDS):
            order = ["hash", "cpu"] if rnd % 2 == 0 else ["cpu", "hash"]
            for steering in order:
                for rate in (RATE, None):
                    r = round_(lab, steering, rate)
                    results.setdefault((steering, rate), []).append(r)
                    what = f"{rate} lines/s" if rate else "unpaced"
                    print(f"round {rnd} {steering:4} {what}: " + ", ".join(
                        f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()),
                        file=sys.stderr)
                    if rate and not r["exact"]:
                        sys.exit(f"{steering} at {rate} lines/s did not count every line exactly")
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
