#!/usr/bin/env python3
"""benches/load: what the heap held at its largest, by call site, from a DHAT profile.

usage: heap_sites.py dhat-heap.json [CONNECTIONS] [ROWS]

A stitch built with `--features dhat-heap` writes dhat-heap.json when it stops. Run it through
the idle test (idle_conns.py: CONNECTIONS idle keep-alive connections, 10,000 by default) and the
heap's peak is the idle state, so dividing by CONNECTIONS gives the bytes each idle connection
holds, site by site: the first frame of each call stack that is not the allocator's own.
"""
import json
import re
import sys

# Frames of the allocator and of the containers' growth paths, skipped to find the caller.
PLUMBING = re.compile(
    r"^(dhat::|alloc::|core::|__rust|<alloc::|<core::|std::alloc)"
    r"|^(alloc|alloc_zeroed|alloc_impl|alloc_impl_runtime|allocate|allocate_zeroed|box_new_uninit"
    r"|new<|pin<|with_capacity<u8>|with_capacity_in|with_capacity_zeroed_in|from_elem|try_allocate_in|grow_|finish_grow|reserve)"
)


def site(frames):
    """The first frames past the allocator: what allocated, and its caller."""
    names = [re.sub(r"^0x[0-9a-f]+: ", "", f) for f in frames]
    useful = [n for n in names if not PLUMBING.search(n)]
    kept = (useful or names)[:2]
    return " <- ".join(re.sub(r" \(/root/\.cargo/registry/src/[^/]+/", " (", n) for n in kept)


def main():
    profile = json.load(open(sys.argv[1]))
    conns = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
    rows = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    frames = profile["ftbl"]
    sites = {}
    for pp in profile["pps"]:
        if pp["gb"] == 0:
            continue
        key = site([frames[i] for i in pp["fs"]])
        total, blocks = sites.get(key, (0, 0))
        sites[key] = (total + pp["gb"], blocks + pp["gbk"])
    held = sum(t for t, _ in sites.values())
    print(f"heap at its peak: {held / 1024:,.0f} KiB, {held / conns / 1024:.2f} KiB per connection"
          f" over {conns:,} connections")
    print(f"{'bytes/conn':>10} {'blocks/conn':>11} {'bytes/block':>11}  site")
    for key, (total, blocks) in sorted(sites.items(), key=lambda kv: -kv[1][0])[:rows]:
        print(f"{total / conns:10.0f} {blocks / conns:11.2f} {total / max(blocks, 1):11.0f}  {key}")


if __name__ == "__main__":
    main()
