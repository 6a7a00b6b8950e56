#!/usr/bin/env python3
"""benches/load: turn the rounds of one run into the report.

usage: report.py --meta META --rounds CSV --idle JSONL --upstream-view TXT [--profile TXT]
                 [--allocs CSV] [--paced CSV] --out DIR

Writes DIR/latest.md (the table, medians across rounds), DIR/latest.csv (every round),
DIR/latest.png (chart, drawn by gnuplot), DIR/profile-latest.txt (with --profile), and prints
the table.
"""
import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess

# before-*: the same routes served by the --compare-bin binary, each right before its stitch-* twin
ORDER = ["direct", "nginx", "haproxy", "caddy", "pingora-bare", "pingap", "before-plain", "stitch-plain",
         "before-full", "stitch-full", "nginx-204", "haproxy-204", "caddy-204", "pingora-bare-204",
         "pingap-204", "before-preflight", "stitch-preflight"]
# ratio columns: every contender against nginx in its mode (before-* and pingora-bare-204 included)
REFERENCE = {"proxy": "nginx", "preflight": "nginx-204"}
# the CPU-per-request table against each reference present in the run (column title, contender
# of each mode)
PEERS = [("bare Pingora", "pingora-bare", "pingora-bare-204"), ("pingap", "pingap", "pingap-204"),
         ("nginx", "nginx", "nginx-204"), ("HAProxy", "haproxy", "haproxy-204"),
         ("Caddy", "caddy", "caddy-204")]
SHORT = {
    "direct": "direct",
    "nginx": "nginx",
    "haproxy": "HAProxy",
    "caddy": "Caddy",
    "pingora-bare": "bare\\nPingora",
    "pingap": "pingap",
    "before-plain": "before\\nplain",
    "stitch-plain": "stitch\\nplain",
    "before-full": "before\\nfull",
    "stitch-full": "stitch\\nfull",
    "nginx-204": "nginx\\n204",
    "haproxy-204": "HAProxy\\n204",
    "caddy-204": "Caddy\\n204",
    "pingora-bare-204": "bare\\n204",
    "pingap-204": "pingap\\n204",
    "before-preflight": "before\\npreflight",
    "stitch-preflight": "stitch\\npreflight",
}
LABEL = {
    "direct": "direct (no proxy)",
    "nginx": "nginx proxy",
    "haproxy": "HAProxy proxy",
    "caddy": "Caddy proxy",
    "pingora-bare": "bare Pingora proxy (baseline)",
    "pingap": "pingap proxy (CORS plugin, OpenTelemetry on)",
    "before-plain": "stitch plain route, before ({compare})",
    "stitch-plain": "stitch plain route",
    "before-full": "stitch full route, before ({compare})",
    "stitch-full": "stitch full route",
    "nginx-204": "preflight: nginx return 204",
    "haproxy-204": "preflight: HAProxy 204",
    "caddy-204": "preflight: Caddy 204",
    "pingora-bare-204": "preflight: bare Pingora 204 (baseline)",
    "pingap-204": "preflight: pingap's CORS plugin",
    "before-preflight": "preflight: stitch at the edge, before ({compare})",
    "stitch-preflight": "preflight: stitch at the edge",
}


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, spec, none="–"):
    return none if v is None else format(v, spec)


def paced_table(path):
    """Latency at the paced load: medians across rounds; p99 added over direct taken per round."""
    rows = list(csv.DictReader(open(path)))
    if not rows:
        return ""
    by = {}
    for r in rows:
        by.setdefault(r["contender"], []).append(r)
    direct = {r["round"]: int(r["p99_us"]) for r in by.get("direct", [])}
    target = rows[0]["target_rps"]
    delay = rows[0]["delay_ms"]
    lines = [f"## Latency at a paced load (about {int(target):,} req/s offered to every contender)", "",
             f"Each of the {len(rows) // max(len(by), 1)} rounds per contender: the same wrk connections as "
             f"above, each pausing {delay} ms after every response, so every proxy sees about the same "
             "request rate, below its limit. Medians across rounds; the added p99 is taken within each "
             "round against direct.", "",
             "| contender | req/s reached | p50 ms | p90 ms | p99 ms | p99 added over direct, ms | errors |",
             "|---|---|---|---|---|---|---|"]
    for name in ORDER:
        rs = by.get(name)
        if not rs:
            continue
        rps = med([int(r["requests"]) * 1e6 / int(r["duration_us"]) for r in rs])
        added = med([(int(r["p99_us"]) - direct[r["round"]]) / 1000 for r in rs
                     if r["round"] in direct]) if name != "direct" else None
        lines.append("| %s | %s | %s | %s | %s | %s | %d |" % (
            LABEL[name].format(compare="--compare-bin"), fmt(rps, ",.0f"),
            fmt(med([int(r["p50_us"]) / 1000 for r in rs]), ".2f"),
            fmt(med([int(r["p90_us"]) / 1000 for r in rs]), ".2f"),
            fmt(med([int(r["p99_us"]) / 1000 for r in rs]), ".2f"),
            "–" if added is None else f"{added:+.2f}",
            sum(int(r["errors"]) for r in rs)))
    return "\n".join(lines)


def allocations(path):
    """Heap allocations per request by contender, from run's allocs.csv (--profile)."""
    out = {}
    for r in csv.DictReader(open(path)):
        if int(r["requests"]):
            out[r["contender"]] = (int(r["total"]) / int(r["requests"]), r["counted"])
    return out


def peers_table(names, per, modes, table, label, allocs):
    """CPU per request of each contender against each reference of its mode present in the run
    (the reference's CPU per request ÷ this one's, taken round by round, then the median), with
    the allocations per request beside it."""
    refs = [p for p in PEERS if p[1] in per or p[2] in per]
    head = "| contender | proxy CPU µs/req | heap allocations/req | " + " | ".join(
        f"{title} CPU/req ÷ this" for title, _, _ in refs) + " |"
    lines = [head, "|" + "---|" * (3 + len(refs))]
    for n in names:
        if table[n]["cpu"] is None:
            continue
        cells = []
        for _, proxy_ref, preflight_ref in refs:
            ref = proxy_ref if modes[n] == "proxy" else preflight_ref
            if ref not in per:
                cells.append("–")
                continue
            ratio = med([per[ref][i]["cpu"] / per[n][i]["cpu"] for i in per[n]
                         if i in per[ref] and per[n][i]["cpu"] and per[ref][i]["cpu"]])
            cells.append(fmt(ratio, ".2f"))
        a = allocs.get(n)
        alloc = "–" if a is None else fmt(a[0], ".1f") + (" (Go)" if a[1] == "go" else "")
        lines.append("| {} | {} | {} | {} |".format(label[n], fmt(table[n]["cpu"], ".1f"), alloc,
                                                   " | ".join(cells)))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--meta", required=True)
    ap.add_argument("--rounds", required=True)
    ap.add_argument("--idle", required=True)
    ap.add_argument("--upstream-view", required=True)
    ap.add_argument("--profile")
    ap.add_argument("--allocs")
    ap.add_argument("--paced")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    meta = [l.rstrip("\n") for l in open(a.meta) if l.strip()]
    # the --compare-bin binary, named in the before-* labels by its file name
    compare = next((l[len("compare: "):].split(" (")[0] for l in meta if l.startswith("compare: ")), "")
    compare = os.path.basename(compare) or "--compare-bin"
    label = {n: l.format(compare=compare) for n, l in LABEL.items()}
    rows = list(csv.DictReader(open(a.rounds)))
    per = {}  # contender -> round -> metrics
    modes = {}
    for r in rows:
        n = r["contender"]
        modes[n] = r["mode"]
        reqs = int(r["requests"])
        secs = int(r["duration_us"]) / 1e6
        m = {
            "rps": reqs / secs,
            "p50": int(r["p50_us"]) / 1000,
            "p99": int(r["p99_us"]) / 1000,
            "errors": int(r["errors"]),
            "cpu": None, "busy": None, "rss": None,
        }
        tck = int(r["clk_tck"])
        m["core0"] = 100 * int(r["cpu0_busy_ticks"]) / tck / secs
        m["core1"] = 100 * int(r["cpu1_busy_ticks"]) / tck / secs
        m["steal"] = 100 * int(r["steal_ticks"]) / tck / secs
        m["irq1"] = 100 * int(r["cpu1_irq_ticks"]) / tck / secs
        m["sys"] = None
        if r["utime_ticks"]:
            cpu_s = (int(r["utime_ticks"]) + int(r["stime_ticks"])) / tck
            m["cpu"] = cpu_s * 1e6 / reqs if reqs else None
            m["sys"] = int(r["stime_ticks"]) / tck * 1e6 / reqs if reqs else None
            m["busy"] = 100 * cpu_s / secs
        if r["hwm_kb"]:
            m["rss"] = int(r["hwm_kb"]) / 1024
        per.setdefault(n, {})[int(r["round"])] = m

    names = [n for n in ORDER if n in per]
    table = {}
    for n in names:
        rounds = per[n]
        t = {k: med([m[k] for m in rounds.values()]) for k in ("rps", "p50", "p99", "cpu", "sys", "busy", "rss", "core0", "core1", "steal", "irq1")}
        t["errors"] = sum(m["errors"] for m in rounds.values())
        t["rounds"] = len(rounds)
        ref = REFERENCE[modes[n]]
        # ratios to nginx taken round by round (same round, neighbouring runs), then the median
        if ref in per and n != ref:
            t["rps_ratio"] = med([rounds[i]["rps"] / per[ref][i]["rps"] for i in rounds if i in per[ref]])
            t["cpu_ratio"] = med([per[ref][i]["cpu"] / rounds[i]["cpu"] for i in rounds
                                  if i in per[ref] and rounds[i]["cpu"] and per[ref][i]["cpu"]])
        elif n == ref:
            t["rps_ratio"], t["cpu_ratio"] = 1.0, 1.0
        else:
            t["rps_ratio"], t["cpu_ratio"] = None, None
        if modes[n] == "proxy" and "direct" in per and n != "direct":
            t["p99_added"] = med([rounds[i]["p99"] - per["direct"][i]["p99"] for i in rounds if i in per["direct"]])
        else:
            t["p99_added"] = None
        table[n] = t

    head = ("| contender | req/s | p50 ms | p99 ms | p99 added over direct, ms | proxy CPU µs/req "
            "| of which kernel | proxy's share of CPU 1 | CPU 1 busy (all; of which irq+softirq) | CPU 0 busy (wrk, backend) "
            "| peak RSS MiB | req/s ÷ nginx | nginx CPU/req ÷ this | errors |")
    lines = [head, "|" + "---|" * 14]
    pct = lambda v: fmt(v, ".0f") + ("%" if v is not None else "")
    for n in names:
        t = table[n]
        lines.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            label[n], fmt(t["rps"], ",.0f"), fmt(t["p50"], ".2f"), fmt(t["p99"], ".2f"),
            fmt(t["p99_added"], "+.2f"), fmt(t["cpu"], ".1f"), fmt(t["sys"], ".1f"),
            pct(t["busy"]), f"{pct(t['core1'])} ({pct(t['irq1'])})", pct(t["core0"]),
            fmt(t["rss"], ".1f"), fmt(t["rps_ratio"], ".2f"), fmt(t["cpu_ratio"], ".2f"), t["errors"]))
    table_md = "\n".join(lines)
    allocs = allocations(a.allocs) if a.allocs else {}
    peers_md = peers_table(names, per, modes, table, label, allocs)

    idle = [json.loads(l) for l in open(a.idle) if l.strip()]
    idle_md = ""
    if idle:
        il = ["| proxy | idle keep-alive connections | descriptors held | RSS before, MiB | RSS with them open, MiB "
              "| per connection, KiB | peak RSS, MiB | first requests' statuses |", "|" + "---|" * 8]
        for d in idle:
            per_conn = (d["rss_kb"] - d["rss_before_kb"]) / d["connections"] if d["connections"] else None
            il.append("| {} | {:,} | {:,} | {:.1f} | {:.1f} | {} | {:.1f} | {} |".format(
                d["proxy"], d["connections"], d["fds"], d["rss_before_kb"] / 1024, d["rss_kb"] / 1024,
                fmt(per_conn, ".2f"), d["hwm_kb"] / 1024,
                ", ".join(f"{k}: {v}" for k, v in sorted(d["statuses"].items()))))
        idle_md = "\n".join(il)

    os.makedirs(a.out, exist_ok=True)
    shutil.copyfile(a.rounds, os.path.join(a.out, "latest.csv"))
    chart = draw_chart(names, table, a.out)

    md = ["# stitch load benchmark: latest run", ""]
    md += [f"- {l}" for l in meta]
    md += ["", f"Medians of {max(t['rounds'] for t in table.values())} rounds per contender. "
           "Proxy CPU is the process's own user+system time over the run (nginx: its worker) divided by "
           "the requests completed (\"of which kernel\": the system part). The busy columns say which "
           "core was the limit: the proxy's own share of CPU 1; all of CPU 1 (the proxy, interrupts and "
           "softirqs, and other un-niced processes of this shared machine; niced background jobs, "
           "which yield to the benchmark, are left out); and CPU 0 (wrk, the backend and the sink). "
           "The irq+softirq share of CPU 1 is mostly the loopback TCP work the proxy's own sends "
           "trigger; the kernel books it to no process, so it is not in the proxy's CPU per request. "
           "Peak RSS is VmHWM, reset before each run. Ratios are taken within each round, then the "
           "median: req/s ÷ nginx ≥ 1 and nginx CPU/req ÷ this ≥ 1 mean at least as good as nginx "
           "(preflights compare with nginx's `return 204`).", "", table_md, ""]
    md += ["## CPU per request against each reference", "",
           "Each reference's CPU per request ÷ this contender's, taken within each round, then the "
           "median: above 1 means cheaper than that reference. Preflights compare with the "
           "references' own preflight answers. Heap allocations per request come from the extra "
           "runs of `--profile`: calls to malloc, calloc and realloc (glibc's, and mimalloc's in "
           "stitch and the bare baseline) by every thread of the proxy; nginx and HAProxy allocate "
           "most of their memory from their own pools, which call malloc only to grow; Caddy's "
           "figure (Go) is the Go runtime's count of heap objects." + (
               "" if allocs else " This run had no `--profile`, so no allocation counts."),
           "", peers_md, ""]
    steal = med([t["steal"] for t in table.values()])
    if steal is not None and steal >= 1:
        md += [f"Hypervisor steal time during the runs (both CPUs, median): {steal:.0f}%.", ""]
    if chart:
        md += ["![req/s, CPU per request and p99 by contender](latest.png)", ""]
    if idle_md:
        md += ["## Memory with idle keep-alive connections", "",
               "Each connection made one request on the full route, then stayed open and idle while "
               "the proxy's memory was read from /proc.", "", idle_md, ""]
    paced_md = paced_table(a.paced) if a.paced else ""
    if paced_md:
        md += [paced_md, ""]
    md += ["## What the full route sends upstream", "", "```"]
    md += [l.rstrip("\n") for l in open(a.upstream_view)]
    md += ["```", ""]
    if a.profile:
        shutil.copyfile(a.profile, os.path.join(a.out, "profile-latest.txt"))
        md += ["## Profile", "",
               "From extra runs after the measured rounds: `strace -c` on each proxy, then "
               "`perf record` of stitch on each route (`--profile`). Top symbols and frames are in "
               "`profile-latest.txt`.", "", "```"]
        blocks = [b.strip() for b in open(a.profile).read().split("\n\n") if b.strip()]
        md += ["\n\n".join(b for b in blocks if not b.startswith("top "))]
        md += ["```", ""]
    with open(os.path.join(a.out, "latest.md"), "w") as f:
        f.write("\n".join(md))

    print()
    print(table_md)
    print()
    print(peers_md)
    if paced_md:
        print()
        print(paced_md)
    if idle_md:
        print()
        print(idle_md)
    print()
    print(f"wrote {os.path.join(a.out, 'latest.md')}" + (f" and {chart}" if chart else ""))


def draw_chart(names, table, out):
    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        return None
    dat = os.path.join(out, ".chart.dat")
    with open(dat, "w") as f:
        for i, n in enumerate(names):
            t = table[n]
            color = ("0x888888" if n == "direct" else "0x2e8b57" if n.startswith("nginx")
                     else "0x6b8e23" if n.startswith(("haproxy", "caddy"))
                     else "0xd08a2a" if n.startswith("pingora-bare")
                     else "0x9a4fb0" if n.startswith("pingap")
                     else "0x8fb3e8" if n.startswith("before-") else "0x1f5fbf")
            f.write('{} "{}" {} {} {} {}\n'.format(
                i, SHORT[n],
                t["rps"] or 0, t["cpu"] if t["cpu"] is not None else "NaN", t["p99"] or 0, color))
    png = os.path.join(out, "latest.png")
    width = max(1500, 3 * (70 * len(names) + 90))  # room for every bar's two-line label
    before = "; before: the --compare-bin build" if any(n.startswith("before-") for n in names) else ""
    script = f"""
set terminal pngcairo size {width},560 font "sans,10"
set output "{png}"
set multiplot layout 1,3 title "stitch load benchmark: wrk -t1 -c32, the proxy alone on one core, medians of the rounds (the 204s and preflights: OPTIONS answered at the edge{before})"
set style fill solid 0.85 noborder
set boxwidth 0.7
set grid ytics
set xtics font "sans,9"
set bmargin 4
set yrange [0:*]
unset key
set title "requests per second"
plot "{dat}" using 1:3:6:xtic(2) with boxes lc rgb variable, \
     "" using 1:3:(sprintf("%.0f", $3)) with labels offset 0,0.7 font "sans,8"
set title "proxy CPU per request (µs, lower is better)"
plot "{dat}" using 1:4:6:xtic(2) with boxes lc rgb variable, \
     "" using 1:4:(sprintf("%.1f", $4)) with labels offset 0,0.7 font "sans,8"
set title "p99 latency (ms)"
plot "{dat}" using 1:5:6:xtic(2) with boxes lc rgb variable, \
     "" using 1:5:(sprintf("%.2f", $5)) with labels offset 0,0.7 font "sans,8"
unset multiplot
"""
    r = subprocess.run([gnuplot], input=script, text=True, capture_output=True)
    os.remove(dat)
    if r.returncode != 0:
        print("report: gnuplot failed:", r.stderr.strip())
        return None
    return png


main()
