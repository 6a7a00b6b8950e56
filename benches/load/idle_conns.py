#!/usr/bin/env python3
"""benches/load: open N keep-alive client connections to a proxy, send one request on each, keep
them all open and idle, then read the proxy's memory from /proc and print one JSON line.

usage: idle_conns.py HOST PORT COUNT PATH PID [PID...]

The first PID is the process that serves the connections (stitch, or the nginx worker); its
VmRSS, VmHWM and open file descriptors are read while every connection is open (the descriptor
count shows that the proxy still holds them all).
"""
import asyncio
import json
import os
import resource
import sys
import time

HEADERS = (
    "Origin: http://localhost:3000\r\n"
    "x-datadog-origin: rum\r\n"
    "x-datadog-parent-id: 3245567862311265982\r\n"
    "x-datadog-sampling-priority: 1\r\n"
    "x-datadog-trace-id: 6255592339373587297\r\n"
    "traceparent: 00-000000000000000056d05416d0047b61-2d0a92c6677ca6be-01\r\n"
    "tracestate: dd=s:1;o:rum\r\n"
)


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])  # kB
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return head.split(b" ", 2)[1]


async def open_one(host, port, path, sem, conns, statuses):
    async with sem:
        for attempt in range(5):
            try:
                reader, writer = await asyncio.open_connection(host, port)
                break
            except OSError:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))
        req = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{HEADERS}\r\n"
        writer.write(req.encode())
        await writer.drain()
        status = await read_response(reader)
        statuses[status] = statuses.get(status, 0) + 1
        conns.append((reader, writer))


async def main():
    host, port, count, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    pids = [int(p) for p in sys.argv[5:]]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    before = proc_status(pids[0])
    conns, statuses = [], {}
    sem = asyncio.Semaphore(256)
    t0 = time.monotonic()
    await asyncio.gather(*(open_one(host, port, path, sem, conns, statuses) for _ in range(count)))
    opened = time.monotonic() - t0
    during = proc_status(pids[0])
    for _, w in conns:
        w.close()
    print(json.dumps({
        "connections": len(conns),
        "statuses": {k.decode(): v for k, v in statuses.items()},
        "open_seconds": round(opened, 2),
        "rss_before_kb": before["VmRSS"],
        "rss_kb": during["VmRSS"],
        "hwm_kb": during["VmHWM"],
        "fds": during["fds"],
    }))


asyncio.run(main())
