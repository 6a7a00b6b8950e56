#!/usr/bin/env python3
"""benches/load: summarise a `perf record` of stitch under load.

usage: profile.py PERF_DATA

Prints (plain text): self time grouped by area (kernel, allocator, memory copies, Pingora,
httparse, http/bytes, tokio, stitch, other), the top symbols by self time, and the top frames by
inclusive time (children) so the cost of a whole step (reading the request, writing to the
upstream, ...) can be read off.
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
    data = sys.argv[1]
    samples, self_rows = report(data, children=False)
    print(f"stitch CPU profile, full route under load (perf cpu-clock, {samples} samples)")
    print()
    print("self time by area:")
    totals = {name: 0.0 for name, _ in AREAS}
    for pct, dso, sym in self_rows:
        for name, match in AREAS:
            if match(dso, sym):
                totals[name] += pct
                break
    for name, _ in AREAS:
        print(f"  {totals[name]:6.2f}%  {name}")
    print()
    print("top symbols by self time:")
    for pct, dso, sym in self_rows[:30]:
        print(f"  {pct:6.2f}%  {dso[:18]:18}  {short(sym)}")
    print()
    try:
        _, child_rows = report(data, children=True)
    except subprocess.CalledProcessError:
        child_rows = []
    if child_rows:
        print("top frames by inclusive time (children; needs the dwarf call graphs):")
        child_rows.sort(key=lambda r: -r[0])
        shown = 0
        for pct, self_pct, dso, sym in child_rows:
            if pct < 1.0 or shown >= 45:
                break
            print(f"  {pct:6.2f}%  (self {self_pct:5.2f}%)  {short(sym)}")
            shown += 1


main()
