#!/usr/bin/env python3
"""make compare: the appliance against its peers in one run, on loopback.

Forward: an nginx `return 200` backend reached directly, through `appliance
forward`, HAProxy (mode tcp, nbthread 2) and nginx stream (2 workers,
reuseport). Measured, alternating systems round by round, median reported:
req/s (wrk -t1 -c50), bulk Gbit/s (iperf3, one stream), new connections/s
(loadgen connect --http), latency percentiles at one fixed rate for all
(loadgen tcp-rr --http --rate, no coordinated omission) and the proxy's CPU
time per request at that rate (utime+stime of every process of the proxy,
from /proc/PID/stat, before and after).

SNI routing: the cost per connection of reading the ClientHello and routing by
its server name, the appliance (--sni-route) against HAProxy (req.ssl_sni)
and nginx stream (ssl_preread), each against its own plain forward.

Aggregate (only when the binary has `appliance aggregate`): loadgen statsd
at a ladder of rates against the appliance and etsy statsd, each checked
exactly through loadgen's Graphite sink; the highest rate with every
counter exact is the lossless rate. Then the same CPU budget for the
aggregator and a bare recv loop that only counts lines: the sender pinned
to CPU 0, each receiver (one thread; the appliance with one shard) pinned
to the last CPU, alternating.

Every process runs in its own process group and every group is killed on
exit, failure or Ctrl-C. COMPARE_QUICK=1 makes a short run; COMPARE_ROUNDS,
COMPARE_SECONDS and COMPARE_RATE override; COMPARE_ONLY=forward|sni|aggregate
runs one part; COMPARE_FIGURES=rps,gbit,cps,fixed picks forward's figures (the
fixed-rate one alone needs COMPARE_RATE, else 16000); COMPARE_APP points at another appliance binary (an older build, for
before/after figures in one session); COMPARE_BASELINE=BINARY adds an older build
as one more forward proxy in the same rounds, with an "appliance / baseline" column.
Output: a table on stdout, target/compare/report.md, target/compare/latency.svg.
"""

import atexit
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
APP = os.environ.get("COMPARE_APP") or os.path.join(ROOT, "target", "release", "appliance")
WORK = os.path.join(ROOT, "target", "compare")
TEMPLATES = os.path.join(ROOT, "scripts", "compare")
QUICK = os.environ.get("COMPARE_QUICK", "0") not in ("", "0")
ROUNDS = int(os.environ.get("COMPARE_ROUNDS", "1" if QUICK else "3"))
SECONDS = int(os.environ.get("COMPARE_SECONDS", "2" if QUICK else "5"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
# COMPARE_BASELINE: another appliance binary (an older build) measured as
# one more proxy in the same alternating rounds, so a change is judged
# against its own past in one run, not across runs of a noisy machine.
BASELINE = os.environ.get("COMPARE_BASELINE", "")
PROXIES = ["appliance", "haproxy", "nginx"] + (["baseline"] if BASELINE else [])
# The fixed rate is this fraction of the slowest proxy's req/s in this run,
# so every system can keep up with it (unless COMPARE_RATE is given).
RATE_FRACTION = 0.3
# statsd line mixes: counters alone (how the peer figures in BENCHMARKS.md
# were taken), and every type (timers, sets, ... cost an aggregator more).
MIXES = [("counters", "c"), ("every type", "c,g,ms,h,d,s")]
SYSTEMS = ["direct"] + PROXIES
FIGURES = os.environ.get("COMPARE_FIGURES", "rps,gbit,cps,fixed").split(",")

procs = []


def log(msg):
    print(msg, flush=True)


def start(name, argv, cwd=None):
    """Starts argv in a new session (its own process group), output to a log."""
    out = open(os.path.join(WORK, name + ".log"), "w")
    p = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    p.name = name
    procs.append(p)
    return p


def stop_all():
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + 3
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    procs.clear()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc):
    for _ in range(200):
        if proc.poll() is not None:
            sys.exit(f"{proc.name} exited ({proc.returncode}); see {WORK}/{proc.name}.log")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{proc.name} did not listen on 127.0.0.1:{port}; see {WORK}/{proc.name}.log")


def group_pids(pgid):
    """The pids of every process in group pgid."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # rest[0] is field 3 (state): pgrp is field 5.
        if int(rest[2]) == pgid:
            pids.append(pid)
    return pids


def cpu_seconds(pgid):
    """utime+stime of every process in group pgid (each process's stat
    covers all of its threads, living and exited)."""
    total = 0
    for pid in group_pids(pgid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # utime is field 14, stime 15.
        total += int(rest[11]) + int(rest[12])
    return total / CLK_TCK


def render(template, out, **subs):
    with open(os.path.join(TEMPLATES, template)) as f:
        text = f.read()
    for k, v in subs.items():
        text = text.replace("@" + k + "@", str(v))
    path = os.path.join(WORK, out)
    with open(path, "w") as f:
        f.write(text)
    return path


def stream_module():
    for m in ("/usr/lib/nginx/modules/ngx_stream_module.so", "/usr/share/nginx/modules/ngx_stream_module.so"):
        if os.path.exists(m):
            return f"load_module {m};"
    return ""


def nginx(name, conf):
    return start(name, ["nginx", "-p", WORK + "/", "-e", f"{WORK}/{name}.err", "-c", conf, "-g", "daemon off;"])


def start_proxy(system, upstream, tag, sni=False):
    """A proxy to `upstream`; with `sni`, one that routes by the
    ClientHello's server name (api.example.com to `upstream`, any other
    name to `upstream` too), so only the routing differs."""
    port = free_port()
    name = f"{system}-{tag}"
    if system in ("appliance", "baseline"):
        route = ["--sni-route", f"api.example.com=127.0.0.1:{upstream}"] if sni else []
        p = start(name, [APP if system == "appliance" else BASELINE, "forward", "--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{upstream}",
                         "--shards", "2", "--no-pin", "--health-interval", "0", *route])
    elif system == "haproxy":
        conf = render("haproxy-sni.cfg.in" if sni else "haproxy.cfg.in", name + ".cfg", LISTEN=port, UPSTREAM=upstream)
        p = start(name, ["haproxy", "-db", "-f", conf])
    else:
        conf = render("nginx-sni.conf.in" if sni else "nginx-stream.conf.in", name + ".conf", LISTEN=port,
                      UPSTREAM=upstream, WORK=WORK, NAME=name, LOAD_MODULE=stream_module())
        p = nginx(name, conf)
    wait_port(port, p)
    return port, p


def loadgen(*args, cpus=None):
    """Runs loadgen (one shard, unpinned unless `cpus` pins it) and returns its JSON."""
    cmd = [APP, "loadgen", *args, "--json"] + (["--cpus", cpus] if cpus else ["--shards", "1", "--no-pin"])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    line = next((l for l in r.stdout.splitlines() if l.startswith("{")), None)
    if line is None:
        sys.exit(f"loadgen failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}{r.stderr}")
    return json.loads(line)


def wrk(port):
    r = subprocess.run(["wrk", "-t1", "-c50", f"-d{SECONDS}s", f"http://127.0.0.1:{port}/"],
                       capture_output=True, text=True, timeout=120)
    m = re.search(r"Requests/sec:\s*([\d.]+)", r.stdout)
    if not m or "Non-2xx" in r.stdout or "Socket errors" in r.stdout:
        log(f"  wrk to port {port} reported a problem:\n{r.stdout}")
    return float(m.group(1)) if m else 0.0


def iperf(port):
    r = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(SECONDS), "-J"],
                       capture_output=True, text=True, timeout=120)
    try:
        return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
    except (ValueError, KeyError):
        log(f"  iperf3 to port {port} failed:\n{r.stdout[-500:]}{r.stderr[-500:]}")
        return 0.0


def rounds(what, systems, measure, n=None):
    """Runs measure(system) ROUNDS (or n) times per system, alternating
    systems (the order rotates every round), and returns the values."""
    seen = {s: [] for s in systems}
    for r in range(n or ROUNDS):
        order = systems[r % len(systems):] + systems[:r % len(systems)]
        for s in order:
            v = measure(s)
            seen[s].append(v)
            if isinstance(v, float):
                log(f"  {what} round {r + 1} {s}: {v:.3f}")
    return seen


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def forward():
    """The forward comparison; returns {figure: {system: [values]}} and the fixed rate."""
    os.makedirs(os.path.join(WORK, "nginx-backend-tmp"), exist_ok=True)
    backend = free_port()
    conf = render("nginx-backend.conf.in", "nginx-backend.conf", LISTEN=backend, WORK=WORK)
    wait_port(backend, nginx("nginx-backend", conf))
    iperf_port = free_port()
    wait_port(iperf_port, start("iperf3-server", ["iperf3", "-s", "-p", str(iperf_port)]))
    http = {"direct": (backend, None)}
    bulk = {"direct": (iperf_port, None)}
    for s in PROXIES:
        http[s] = start_proxy(s, backend, "http")
        bulk[s] = start_proxy(s, iperf_port, "bulk")
    log(f"backend nginx on {backend}, iperf3 on {iperf_port}; proxies: "
        + ", ".join(f"{s} {http[s][0]}/{bulk[s][0]}" for s in PROXIES))
    skipped = {s: [] for s in SYSTEMS}
    res = {"rps": skipped, "gbit": skipped, "cps": skipped}
    if "rps" in FIGURES:
        log("== req/s, wrk -t1 -c50")
        res["rps"] = rounds("req/s", SYSTEMS, lambda s: wrk(http[s][0]))
    if "gbit" in FIGURES:
        log("== bulk Gbit/s, iperf3 single stream")
        res["gbit"] = rounds("Gbit/s", SYSTEMS, lambda s: iperf(bulk[s][0]))
    if "cps" in FIGURES:
        log("== new connections/s, loadgen connect --http (16 loops)")
        res["cps"] = rounds("conn/s", SYSTEMS, lambda s: loadgen(
            "connect", "--http", "--target", f"127.0.0.1:{http[s][0]}", "--connections", "16",
            "--duration", f"{SECONDS}s")["rate_per_s"])
    rate = float(os.environ.get("COMPARE_RATE", "0")) or (max(
        1000.0, round(RATE_FRACTION * min(median(res["rps"][s]) for s in PROXIES), -3))
        if "rps" in FIGURES else 16000.0)
    if "fixed" not in FIGURES:
        for k in ("p50", "p90", "p99", "p99.9", "max", "cpu_us"):
            res[k] = skipped
        stop_all()
        return res, rate
    log(f"== latency at a fixed {rate:.0f} req/s for all (loadgen tcp-rr --http, 50 connections), proxy CPU")

    def fixed(s):
        proc = http[s][1]
        before = cpu_seconds(proc.pid) if proc else 0.0
        j = loadgen("tcp-rr", "--http", "--target", f"127.0.0.1:{http[s][0]}", "--connections", "50",
                    "--rate", str(rate), "--duration", f"{SECONDS}s")
        after = cpu_seconds(proc.pid) if proc else 0.0
        lat = j.get("latency_us", {})
        out = {k: lat.get(k, float("nan")) for k in ("p50", "p90", "p99", "p99.9", "max")}
        out["achieved"] = j["rate_per_s"]
        out["errors"] = j["errors"]
        out["cpu_us"] = (after - before) * 1e6 / j["ok"] if proc and j["ok"] else float("nan")
        log(f"  {s}: {j['rate_per_s']:.0f} req/s, p99 {out['p99']:.0f} us, CPU {out['cpu_us']:.2f} us/req, "
            f"{j['errors']} errors")
        return out

    fixed_runs = rounds("fixed", SYSTEMS, fixed)
    for k in ("p50", "p90", "p99", "p99.9", "max", "cpu_us"):
        res[k] = {s: [r[k] for r in fixed_runs[s]] for s in SYSTEMS}
    stop_all()
    return res, rate


def sni():
    """SNI routing's cost per connection: every proxy forwards to one echo
    upstream, once plainly and once routing by the ClientHello's server
    name; loadgen connect sends a 512-byte ClientHello naming
    api.example.com on each new connection and reads its echo. New
    connections/s unpaced, and the proxy's CPU per connection at one fixed
    connect rate for all. Returns {figure: {system: [values]}}."""
    if "sni-route" not in subprocess.run([APP, "forward", "--help"], capture_output=True, text=True).stdout:
        log("== sni: skipped (this binary has no --sni-route)")
        return None
    echo = free_port()
    wait_port(echo, start("echo-backend", [APP, "echo", "--listen", f"127.0.0.1:{echo}", "--shards", "1", "--no-pin"]))
    systems = [s for s in PROXIES if s != "baseline"]
    plain = {s: start_proxy(s, echo, "plain") for s in systems}
    routed = {s: start_proxy(s, echo, "sni", sni=True) for s in systems}

    def hello(port, *extra):
        return loadgen("connect", "--tls-hello", "api.example.com", "--target", f"127.0.0.1:{port}",
                       "--connections", "16", "--duration", f"{SECONDS}s", *extra)

    res = {}
    log("== SNI: new connections/s with a ClientHello round trip, plain and routed by server name")
    res["plain_cps"] = rounds("plain conn/s", systems, lambda s: hello(plain[s][0])["rate_per_s"])
    res["sni_cps"] = rounds("sni conn/s", systems, lambda s: hello(routed[s][0])["rate_per_s"])
    rate = float(os.environ.get("COMPARE_SNI_RATE", "0")) or max(
        500.0, round(RATE_FRACTION * min(median(res["sni_cps"][s]) for s in systems), -2))
    log(f"== SNI: proxy CPU per connection at a fixed {rate:.0f} connections/s")

    def cpu(proxies):
        def measure(s):
            port, proc = proxies[s]
            before = cpu_seconds(proc.pid)
            j = hello(port, "--rate", str(rate))
            after = cpu_seconds(proc.pid)
            if j["errors"]:
                log(f"  {s}: {j['errors']} errors: {j.get('first_error')}")
            return (after - before) * 1e6 / j["ok"] if j["ok"] else float("nan")
        return measure

    res["plain_cpu"] = rounds("plain CPU us/conn", systems, cpu(plain))
    res["sni_cpu"] = rounds("sni CPU us/conn", systems, cpu(routed))
    res["rate"] = rate
    stop_all()
    return res


def sni_table(res):
    systems = [s for s in PROXIES if s != "baseline"]
    med = {k: {s: median(res[k][s]) for s in systems} for k in ("plain_cps", "sni_cps", "plain_cpu", "sni_cpu")}
    head = ["figure"] + [NAMES[s] for s in systems] + ["appliance / HAProxy", "appliance / nginx stream"]
    rows = []
    for key, label, f in [("plain_cps", "conn/s, plain forward", "{:.0f}"), ("sni_cps", "conn/s, SNI routed", "{:.0f}"),
                          ("plain_cpu", "CPU us/conn, plain", "{:.1f}"), ("sni_cpu", "CPU us/conn, SNI routed", "{:.1f}")]:
        rows.append([label] + [fmt(f, med[key][s]) for s in systems]
                    + [ratio(med[key]["appliance"], med[key]["haproxy"]), ratio(med[key]["appliance"], med[key]["nginx"])])
    cost = {s: med["sni_cpu"][s] - med["plain_cpu"][s] for s in systems}
    rows.append(["SNI routing's extra CPU us/conn"] + [fmt("{:.1f}", cost[s]) for s in systems]
                + [ratio(cost["appliance"], cost["haproxy"]), ratio(cost["appliance"], cost["nginx"])])
    drop = {s: med["sni_cps"][s] / med["plain_cps"][s] for s in systems}
    rows.append(["conn/s routed / plain"] + [fmt("{:.2f}", drop[s]) for s in systems] + ["", ""])
    return head, rows


def aggregate():
    """The aggregate comparison, or None when it cannot run here. With
    COMPARE_PEER_ONLY=1 etsy statsd is measured alone when the appliance
    has no aggregate service yet (to check the peer side of the setup)."""
    systems = ["appliance", "etsy"]
    if subprocess.run([APP, "aggregate", "--help"], capture_output=True).returncode != 0:
        if os.environ.get("COMPARE_PEER_ONLY", "0") in ("", "0"):
            log("== aggregate: skipped: this appliance binary has no 'aggregate' subcommand yet "
                "(it arrives with the aggregate branch)")
            return None
        systems = ["etsy"]
    etsy_dir = os.path.join(WORK, "statsd", "node_modules", "statsd")
    if not os.path.exists(os.path.join(etsy_dir, "stats.js")) or not shutil.which("node"):
        log(f"== aggregate: skipped: etsy statsd not found in {etsy_dir} (make compare installs it)")
        return None
    ports = {s: (free_port(), free_port()) for s in systems}
    if "appliance" in ports:
        udp, graphite = ports["appliance"]
        tcp = free_port()
        p = start("aggregate", [APP, "aggregate", "--listen-udp", f"127.0.0.1:{udp}", "--listen-tcp",
                                f"127.0.0.1:{tcp}", "--flush-interval", "1s", "--graphite",
                                f"127.0.0.1:{graphite}", "--prefix", "stats", "--shards", "2"])
        wait_port(tcp, p)
    udp, graphite = ports["etsy"]
    mgmt = free_port()
    conf = os.path.join(WORK, "etsy-config.js")
    with open(conf, "w") as f:
        f.write(f'{{ port: {udp}, mgmt_port: {mgmt}, graphitePort: {graphite}, graphiteHost: "127.0.0.1", '
                f'flushInterval: 1000, backends: ["./backends/graphite"], graphite: {{ legacyNamespace: false }} }}\n')
    wait_port(mgmt, start("etsy-statsd", ["node", "stats.js", conf], cwd=etsy_dir))
    ladder = [50_000, 200_000, 0] if QUICK else [25_000, 50_000, 100_000, 200_000, 400_000, 800_000, 0]
    out = []
    for mix, types in MIXES:
        for rate in ladder:
            lines = rate * SECONDS if rate else (1_000_000 if QUICK else 2_000_000)
            log(f"== statsd, {mix}, at {rate or 'unpaced'} lines/s, {lines} lines, exact check through Graphite")

            def run(s):
                udp, graphite = ports[s]
                # The sink only listens while loadgen runs, so the appliance
                # may be backing off (up to 5 s) when a run starts: settle
                # longer than that. An exact run returns as soon as it is.
                args = ["statsd", "--target", f"127.0.0.1:{udp}", "--lines", str(lines), "--keys", "1000",
                        "--types", types, "--per-packet", "20", "--verify-graphite", f"127.0.0.1:{graphite}",
                        "--settle", "6s"]
                if rate:
                    args += ["--rate", str(rate)]
                j = loadgen(*args)
                v = j["verify"]
                log(f"  {s}: sent {j['rate_per_s']:.0f} lines/s, exact keys {v['exact_fraction']:.4f}, "
                    f"counter total received {v['received_fraction']:.4f}")
                return {"sent": j["rate_per_s"], "exact": v["exact_fraction"], "received": v["received_fraction"]}

            seen = rounds("statsd", systems, run)
            out.append((mix, rate, {s: {k: median([r[k] for r in seen[s]]) for k in ("sent", "exact", "received")}
                                    for s in seen}))
    stop_all()
    return out


BARE = os.path.join(ROOT, "target", "release", "examples", "udp_count")


def stop(p):
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass


def one_core():
    """The aggregator against the bare loop on the same CPU budget: the
    sender pinned to CPU 0 and the receiver to the last CPU, one thread
    each (the bare loop, or the appliance with one shard), the same
    unpaced counter blast, alternating. The appliance's lines are checked
    exact through Graphite; the rate is what the receiver took per second
    of sending. Returns {system: {sent, received, rate, exact}} medians."""
    if not os.path.exists(BARE):
        log(f"== one core: skipped ({BARE} missing: cargo build --release -p netstack --example udp_count)")
        return None
    last = str(os.cpu_count() - 1)
    lines = 1_000_000 if QUICK else 2_000_000
    log(f"== one receiving core (cpu {last}), sender on cpu 0: bare recv loop against appliance --cpus {last}, "
        f"counters, unpaced, {lines} lines")
    blast = ["--lines", str(lines), "--keys", "1000", "--types", "c", "--per-packet", "20"]

    def run(s):
        udp = free_port()
        if s.startswith("bare loop"):
            # The loop as the issue defines it (default buffer), and with
            # the receive buffer the appliance asks for (--udp-socket-buffer).
            rcvbuf = [] if s == "bare loop" else [str(8 << 20)]
            p = start("udp-count", ["taskset", "-c", last, BARE, f"127.0.0.1:{udp}", "1000", *rcvbuf])
            time.sleep(0.3)
            j = loadgen("statsd", "--target", f"127.0.0.1:{udp}", *blast, cpus="0")
            p.wait(timeout=60)
            with open(os.path.join(WORK, "udp-count.log")) as f:
                m = re.search(r"lines (\d+)", f.read())
            received, exact = (int(m.group(1)) / lines if m else 0.0), float("nan")
        else:
            tcp, graphite = free_port(), free_port()
            p = start("aggregate-one-core", [APP, "aggregate", "--listen-udp", f"127.0.0.1:{udp}", "--listen-tcp",
                                             f"127.0.0.1:{tcp}", "--flush-interval", "1s", "--graphite",
                                             f"127.0.0.1:{graphite}", "--cpus", last])
            wait_port(tcp, p)
            j = loadgen("statsd", "--target", f"127.0.0.1:{udp}", *blast, "--verify-graphite",
                        f"127.0.0.1:{graphite}", "--settle", "6s", cpus="0")
            stop(p)
            received, exact = j["verify"]["received_fraction"], j["verify"]["exact_fraction"]
        out = {"sent": j["rate_per_s"], "received": received, "rate": j["rate_per_s"] * received, "exact": exact}
        log(f"  {s}: sent {out['sent']:.0f} lines/s, received {received:.4f}, so {out['rate']:.0f} lines/s"
            + ("" if exact != exact else f", exact keys {exact:.4f}"))
        return out

    # Every receiver here keeps up with most of the blast, so the rates are
    # the sender's, which swing ~15% run to run: five rounds at least.
    seen = rounds("one core", ["bare loop", "bare loop 8M", "appliance"], run, max(ROUNDS, 5))
    return {s: {k: median([r[k] for r in seen[s]]) for k in ("sent", "received", "rate", "exact")} for s in seen}


def visible_loss():
    """Loss the user can see: the aggregator overloaded on purpose (stalled
    for a second under load), then the datagrams loadgen sent against
    what the appliance counted plus the kernel drops it reports
    (appliance_aggregate_{datagrams,kernel_drops}_total on /metrics, read
    before and after). Returns {sent, counted, kernel_drops}."""
    udp, admin = free_port(), free_port()
    p = start("aggregate-overload", [APP, "aggregate", "--listen-udp", f"127.0.0.1:{udp}", "--flush-interval", "1s",
                                     "--flush-stdout", "--cpus", "0", "--admin", f"127.0.0.1:{admin}"])
    wait_port(admin, p)

    def scrape():
        with socket.create_connection(("127.0.0.1", admin), timeout=10) as c:
            c.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            text = b"".join(iter(lambda: c.recv(65536), b"")).decode()
        get = lambda name: sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
                               if l.startswith(name + "{") and 'shard="all"' in l)
        return get("appliance_aggregate_datagrams_total"), get("appliance_aggregate_kernel_drops_total")

    before = scrape()
    # 3 s of load; the aggregator stalls (SIGSTOP, as a descheduled or
    # swapped process would) for 1 s of it, so its buffers overflow.
    rate = 400_000
    cmd = [APP, "loadgen", "statsd", "--target", f"127.0.0.1:{udp}", "--lines", str(3 * rate), "--rate", str(rate),
           "--keys", "1000", "--types", "c", "--per-packet", "20", "--json", "--cpus", "0"]
    gen = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)
    os.killpg(p.pid, signal.SIGSTOP)
    time.sleep(1.0)
    os.killpg(p.pid, signal.SIGCONT)
    text, _ = gen.communicate(timeout=120)
    j = json.loads(next(l for l in text.splitlines() if l.startswith("{")))
    time.sleep(2)
    after = scrape()
    stop(p)
    out = {"sent": j["datagrams_sent"], "counted": after[0] - before[0], "kernel_drops": after[1] - before[1]}
    log(f"== overload: sent {out['sent']:.0f} datagrams, counted {out['counted']:.0f}, "
        f"kernel drops reported {out['kernel_drops']:.0f}")
    return out


# (key, label, higher is better, format)
ROWS = [
    ("rps", "req/s, wrk -t1 -c50", True, "{:.0f}"),
    ("gbit", "bulk Gbit/s, iperf3 1 stream", True, "{:.2f}"),
    ("cps", "new connections/s (connect + GET + close)", True, "{:.0f}"),
    ("p50", "p50 us at the fixed rate", False, "{:.0f}"),
    ("p99", "p99 us at the fixed rate", False, "{:.0f}"),
    ("p99.9", "p99.9 us at the fixed rate", False, "{:.0f}"),
    ("cpu_us", "proxy CPU us per request at the fixed rate", False, "{:.2f}"),
]
TARGETS = {"rps": ">= 1.3x better peer, >= 0.75x direct", "gbit": ">= 1.3x better peer",
           "cpu_us": "<= 0.6x HAProxy", "p99": "below HAProxy"}
NAMES = {"direct": "direct", "appliance": "appliance", "haproxy": "HAProxy", "nginx": "nginx stream",
         "baseline": "appliance (baseline)"}


def fmt(f, v):
    return "n/a" if v != v else f.format(v)


def ratio(a, b):
    return "n/a" if a != a or b != b or b == 0 else f"{a / b:.2f}x"


def forward_table(res, rate):
    head = ["figure"] + [NAMES[s] for s in SYSTEMS] + ["appliance / better peer", "appliance / HAProxy",
                                                         "appliance / direct", "target"]
    if BASELINE:
        head.insert(-1, "appliance / baseline")
    rows = []
    for key, label, higher, f in ROWS:
        med = {s: median(res[key][s]) for s in SYSTEMS}
        peers = [med[s] for s in ("haproxy", "nginx") if med[s] == med[s]]
        best = (max(peers) if higher else min(peers)) if peers else float("nan")
        direct = ratio(med["appliance"], med["direct"]) if key in ("rps", "gbit", "cps") else ""
        rows.append([label] + [fmt(f, med[s]) for s in SYSTEMS]
                    + [ratio(med["appliance"], best), ratio(med["appliance"], med["haproxy"]), direct]
                    + ([ratio(med["appliance"], med["baseline"])] if BASELINE else [])
                    + [TARGETS.get(key, "")])
    return head, rows


def aggregate_table(agg):
    systems = list(agg[0][2].keys()) if agg else []
    head = ["lines", "rate (lines/s)"]
    for s in systems:
        head += [f"{s} sent lines/s", f"{s} exact keys", f"{s} counter total received"]
    rows = []
    for mix, rate, m in agg:
        row = [mix, f"{rate:,}" if rate else "unpaced"]
        for s in systems:
            row += [f"{m[s]['sent']:.0f}", f"{m[s]['exact']:.4f}", f"{m[s]['received']:.4f}"]
        rows.append(row)
    lossless = {f"{s} ({mix})": max([m[s]["sent"] for x, _, m in agg if x == mix and m[s]["exact"] >= 1.0],
                                    default=0.0)
                for mix, _ in MIXES for s in systems}
    return head, rows, lossless


def markdown(head, rows):
    out = "| " + " | ".join(head) + " |\n|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|\n"
    return out + "".join("| " + " | ".join(r) + " |\n" for r in rows)


def text_table(head, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w) for i, (x, w) in enumerate(zip(r, widths)))
    return "\n".join([line(head), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def svg(res, rate):
    """Grouped bars: latency percentiles per system at the fixed rate."""
    pcts = ["p50", "p90", "p99", "p99.9"]
    colors = {"direct": "#888888", "appliance": "#1f77b4", "haproxy": "#d62728", "nginx": "#2ca02c",
              "baseline": "#9467bd"}
    vals = {s: [median(res[p][s]) for p in pcts] for s in SYSTEMS}
    top = max([v for vs in vals.values() for v in vs if v == v] + [1.0])
    w, h, left, bottom, group = 720, 360, 60, 40, 150
    bar = (group - 30) / len(SYSTEMS)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<text x="{w / 2}" y="18" text-anchor="middle" font-size="14">Latency at a fixed {rate:.0f} req/s '
           f'(loadgen tcp-rr --http, microseconds, median of {ROUNDS})</text>']
    plot_h = h - bottom - 40
    for i in range(5):
        y = h - bottom - plot_h * i / 4
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{w - 10}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end">{top * i / 4:.0f}</text>')
    for gi, p in enumerate(pcts):
        x0 = left + 15 + gi * group
        out.append(f'<text x="{x0 + (group - 30) / 2:.1f}" y="{h - bottom + 16}" text-anchor="middle">{p}</text>')
        for si, s in enumerate(SYSTEMS):
            v = vals[s][gi]
            if v != v:
                continue
            bh = plot_h * v / top
            x = x0 + si * bar
            out.append(f'<rect x="{x:.1f}" y="{h - bottom - bh:.1f}" width="{bar - 2:.1f}" height="{bh:.1f}" '
                       f'fill="{colors[s]}"><title>{NAMES[s]} {p}: {v:.0f} us</title></rect>')
    for si, s in enumerate(SYSTEMS):
        out.append(f'<rect x="{left + 10 + si * 150}" y="{h - 14}" width="10" height="10" fill="{colors[s]}"/>')
        out.append(f'<text x="{left + 24 + si * 150}" y="{h - 5}">{NAMES[s]}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    os.makedirs(WORK, exist_ok=True)
    atexit.register(stop_all)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sys.exit(130))
    if not os.path.exists(APP):
        sys.exit(f"{APP} missing: run cargo build --release -p appliance")
    log(f"compare: {ROUNDS} round(s) of {SECONDS} s per system and figure{' (COMPARE_QUICK)' if QUICK else ''}")
    only = os.environ.get("COMPARE_ONLY", "")
    res, rate = forward() if only in ("", "forward") else (None, 0.0)
    routing = sni() if only in ("", "sni") else None
    agg = aggregate() if only in ("", "aggregate") else None
    bare = one_core() if only in ("", "aggregate") else None
    loss = visible_loss() if only in ("", "aggregate") and agg is not None else None
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    report = (f"### make compare{' (COMPARE_QUICK=1)' if QUICK else ''}, {stamp}\n\n"
              f"Median of {ROUNDS} alternating round(s) of {SECONDS} s; {os.cpu_count()} CPUs shared by load "
              "generator, servers and peers, so only ratios within this run count.\n")
    if res is not None:
        head, rows = forward_table(res, rate)
        report += (f"\n#### forward (fixed rate {rate:.0f} req/s for every system; chart: latency.svg)\n\n"
                   + markdown(head, rows))
        log("\n" + text_table(head, rows))
        with open(os.path.join(WORK, "latency.svg"), "w") as f:
            f.write(svg(res, rate))
    if routing is not None:
        shead, srows = sni_table(routing)
        report += (f"\n#### SNI routing (512-byte ClientHello echoed per connection; CPU at {routing['rate']:.0f} conn/s)\n\n"
                   + markdown(shead, srows))
        log("\n" + text_table(shead, srows))
    if agg is not None:
        ahead, arows, lossless = aggregate_table(agg)
        report += ("\n#### aggregate (statsd, 20 lines per datagram, 1000 keys per type)\n\n"
                   + markdown(ahead, arows)
                   + "\nHighest rate with every counter exact: "
                   + ", ".join(f"{s} {v:.0f} lines/s" for s, v in lossless.items()) + ".\n")
        log("\n" + text_table(ahead, arows))
        log("lossless lines/s: " + ", ".join(f"{s} {v:.0f}" for s, v in lossless.items()))
    if bare is not None:
        a = bare["appliance"]
        b = max((bare[s] for s in ("bare loop", "bare loop 8M")), key=lambda x: x["rate"])
        line = (f"One receiving core, sender pinned to another (medians): the bare recv loop (counts lines "
                f"only) took {bare['bare loop']['rate']:.0f} lines/s ({bare['bare loop']['received']:.4f} of "
                f"{bare['bare loop']['sent']:.0f} sent), {bare['bare loop 8M']['rate']:.0f} with an 8 MiB "
                f"receive buffer ({bare['bare loop 8M']['received']:.4f}); the appliance with one shard "
                f"{a['rate']:.0f} lines/s ({a['received']:.4f} of {a['sent']:.0f} sent, exact keys "
                f"{a['exact']:.4f}): {ratio(a['rate'], b['rate'])} the better bare loop (target: within 10%).\n")
        report += "\n" + line
        log(line.rstrip())
    if loss is not None:
        gap = loss["sent"] - loss["counted"] - loss["kernel_drops"]
        line = (f"Overloaded on purpose (stalled 1 s under 400k lines/s): sent {loss['sent']:.0f} datagrams; the "
                f"appliance counted {loss['counted']:.0f} and reported {loss['kernel_drops']:.0f} dropped by the "
                f"kernel: {'sent = counted + reported drops' if gap == 0 else f'{gap:.0f} unaccounted for'}.\n")
        report += "\n" + line
        log(line.rstrip())
    with open(os.path.join(WORK, "report.md"), "w") as f:
        f.write(report)
    with open(os.path.join(WORK, "raw.json"), "w") as f:
        json.dump({"forward": res, "fixed_rate": rate, "sni": routing, "aggregate": agg, "bare_loop": bare,
                   "visible_loss": loss}, f, indent=1)
    log(f"\nwrote {WORK}/report.md, {WORK}/latency.svg, {WORK}/raw.json")


if __name__ == "__main__":
    main()
