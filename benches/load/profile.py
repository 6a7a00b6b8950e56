#!/usr/bin/env python3
"""benches/load: summarise a `perf record` of stitch under load.

usage: profile.py PERF_DATA TITLE [CPU_US_PER_REQUEST [self-only]]

Prints (plain text): self time grouped by area (kernel, allocator, memory copies, Pingora,
httparse, http/bytes, tokio, stitch, other), the steps of a proxied request by inclusive time
(from the dwarf call graphs), the top symbols by self time, and the top frames by inclusive time.
With the CPU time per request measured during the recording, shares are also given in µs.
`self-only` (a recording without call graphs, e.g. of nginx) prints the self-time parts only.
"""
import re
import subprocess
import sys

AREAS = [
    ("kernel (syscalls, TCP, epoll)", lambda dso, sym: sym.startswith("[k]")),
    ("allocator (malloc/free)", lambda dso, sym: re.search(
        r"\b(_?_?libc_)?(malloc|free|cfree|realloc|calloc|_int_malloc|_int_free|_int_realloc|"
        r"malloc_consolidate|tcache\w*|unlink_chunk|sysmalloc|mi_\w+|je_\w+|_rjem_\w+|"
        r"__rust_(alloc|dealloc|realloc)|alloc::alloc::\w+)\b", sym) is not None),
    ("memcpy/memmove/memset/memcmp", lambda dso, sym: re.search(
        r"(mem(cpy|move|set|cmp|chr)|bcmp|strlen)", sym) is not None),
    ("httparse (HTTP/1 parsing)", lambda dso, sym: "httparse" in sym),
    ("Pingora", lambda dso, sym: "pingora" in sym),
    ("http / bytes crates (header maps, buffers)", lambda dso, sym: re.search(
        r"\b(http::|bytes::|HeaderMap|HeaderName|HeaderValue)", sym) is not None),
    ("tokio (scheduler, I/O driver, timers)", lambda dso, sym: "tokio" in sym),
    ("stitch's own code", lambda dso, sym: "stitch::" in sym),
    ("other user space", lambda dso, sym: True),
]


# Steps of one request through Pingora and stitch's hooks: (label, regex on the symbol).
# Inclusive time; steps nest (the hooks run inside Pingora's request processing), so they do
# not add up to 100%.
STEPS = [
    ("read the client's request (Pingora h1 server)", r"v1::server::HttpSession::read_request\b"),
    ("stitch request_filter (route, CORS, extract, sample)", r"ProxyHttp>::request_filter\b"),
    ("stitch upstream_peer", r"ProxyHttp>::upstream_peer\b"),
    ("take a pooled upstream connection", r"TransportConnector::reused_stream"),
    ("stitch upstream_request_filter (inject)", r"ProxyHttp>::upstream_request_filter\b"),
    ("read the upstream response header", r"v1::client::HttpSession::read_resp_header_parts"),
    ("stitch response_filter (CORS headers)", r"ProxyHttp>::response_filter\b"),
    ("write the response header to the client", r"v1::server::HttpSession::write_response_header\b"),
    ("write (and flush) the response body to the client", r"v1::server::HttpSession::write_body_buf"),
    ("give the upstream connection back to the pool", r"release_http_session"),
    ("stitch logging (metrics, access log, edge span)", r"ProxyHttp>::logging\b"),
    ("  of which: hand the span to the exporter", r"SpanSink::submit"),
    ("span exporter task (batches, msgpack, PUT)", r"ExportService as .*BackgroundService>::start"),
    ("tokio: parked (epoll_wait, timers)", r"worker::Context::park_internal"),
    ("kernel: sendto/write/writev (loopback TCP, incl. the receiver's softirq)",
     r"\[k\] __x64_sys_(sendto|write|writev)$"),
    ("kernel: recvfrom/read", r"\[k\] __x64_sys_(recvfrom|read)$"),
    ("kernel: epoll_wait", r"\[k\] __x64_sys_epoll_wait$"),
    ("allocator (malloc + free, self)", None),
]


def report(data, children):
    args = ["perf", "report", "-i", data, "--stdio", "-g", "none", "--percent-limit", "0",
            "--sort", "dso,sym", "-t", "\t"]
    args.append("--children" if children else "--no-children")
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    rows = []
    samples = None
    for line in out.splitlines():
        m = re.match(r"# Samples: (\S+)", line)
        if m:
            samples = m.group(1)
        if line.startswith("#") or not line.strip():
            continue
        parts = [p.strip() for p in line.split("\t")]
        if children:
            if len(parts) < 4:
                continue
            pct, self_pct, dso, sym = parts[0], parts[1], parts[2], parts[3]
            rows.append((float(pct.rstrip("%")), float(self_pct.rstrip("%")), dso, sym))
        else:
            if len(parts) < 3:
                continue
            pct, dso, sym = parts[0], parts[1], parts[2]
            rows.append((float(pct.rstrip("%")), dso, sym))
    return samples, rows


def short(sym, width=150):
    # drop generic arguments, which make Rust symbols unreadable at this width
    s = sym
    for _ in range(8):
        s2 = re.sub(r"<[^<>]*>", "<…>", s)
        if s2 == s:
            break
        s = s2
    return s if len(s) <= width else s[: width - 1] + "…"


def main():
    data, title = sys.argv[1], sys.argv[2]
    us = float(sys.argv[3]) if len(sys.argv) > 3 and float(sys.argv[3]) > 0 else None
    samples, self_rows = report(data, children=False)
    extra = f", {us:.1f} µs of CPU per request under perf" if us else ""
    print(f"{title} (perf cpu-clock, {samples} samples{extra})")

    def cost(pct):
        return f"{pct:6.2f}%" + (f"  {pct * us / 100:5.1f} µs" if us else "")
    print()
    print("self time by area:")
    totals = {name: 0.0 for name, _ in AREAS}
    for pct, dso, sym in self_rows:
        for name, match in AREAS:
            if match(dso, sym):
                totals[name] += pct
                break
    for name, _ in AREAS:
        print(f"  {cost(totals[name])}  {name}")
    print()
    child_rows = []
    if "self-only" not in sys.argv[4:]:
        try:
            _, child_rows = report(data, children=True)
        except subprocess.CalledProcessError:
            child_rows = []
    if child_rows:
        print("steps of a request, inclusive time (steps nest; they do not add up):")
        for label, rx in STEPS:
            if rx is None:
                pct = totals[AREAS[1][0]]
            else:
                pct = max((r[0] for r in child_rows if re.search(rx, r[3])), default=0.0)
            print(f"  {cost(pct)}  {label}")
        print()
    print("top symbols by self time:")
    for pct, dso, sym in self_rows[:30]:
        print(f"  {pct:6.2f}%  {dso[:18]:18}  {short(sym)}")
    print()
    if child_rows:
        print("top frames by inclusive time (children):")
        child_rows.sort(key=lambda r: -r[0])
        shown = 0
        for pct, self_pct, dso, sym in child_rows:
            if pct < 1.0 or shown >= 45:
                break
            if "(inlined)" in sym or sym.startswith("[k] 0x"):
                continue
            print(f"  {pct:6.2f}%  (self {self_pct:5.2f}%)  {short(sym)}")
            shown += 1
        print()


main()
