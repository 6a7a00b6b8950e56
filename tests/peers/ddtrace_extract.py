"""Run dd-trace-py's HTTP propagator on a corpus of header sets (differential test peer).

usage: python ddtrace_extract.py [--extract-first] [--behavior continue|restart|ignore] [--baggage]

The options set dd-trace-py's own variables before it is imported:
DD_TRACE_PROPAGATION_EXTRACT_FIRST=true, DD_TRACE_PROPAGATION_BEHAVIOR_EXTRACT=<value>, and
`baggage` added to the extract styles (datadog,tracecontext,b3multi,b3).

Reads a JSON array of cases from stdin: [{"id": N, "headers": {"name": "value", ...}}, ...]
and prints one JSON object per case, in order, on its own line:
{"id", "trace_id" (decimal string or null), "parent_id", "priority", "origin",
 "tags" ({_dd.p.* except _dd.p.tid}), "last_parent" (_dd.parent_id or null),
 "random" (traceparent flag 0x02 kept for the trace), "baggage" ({key: value}),
 "links" ([{"trace_id", "span_id" (decimal strings), "flags", "tracestate", "reason",
 "context_headers"}])}.
Used by tests/propagation_ddtrace.rs.
"""
import json
import logging
import os
import sys

args = sys.argv[1:]
styles = "datadog,tracecontext,b3multi,b3"
if "--baggage" in args:
    styles += ",baggage"
os.environ["DD_TRACE_PROPAGATION_STYLE_EXTRACT"] = styles
if "--extract-first" in args:
    os.environ["DD_TRACE_PROPAGATION_EXTRACT_FIRST"] = "true"
if "--behavior" in args:
    os.environ["DD_TRACE_PROPAGATION_BEHAVIOR_EXTRACT"] = args[args.index("--behavior") + 1]
os.environ.setdefault("DD_TRACE_ENABLED", "false")
os.environ.setdefault("DD_INSTRUMENTATION_TELEMETRY_ENABLED", "false")
logging.disable(logging.CRITICAL)

from ddtrace.propagation.http import HTTPPropagator  # noqa: E402


def link(lk):
    attrs = lk.attributes or {}
    return {
        "trace_id": str(lk.trace_id),
        "span_id": str(lk.span_id),
        "flags": lk.flags,
        "tracestate": lk.tracestate or None,
        "reason": attrs.get("reason"),
        "context_headers": attrs.get("context_headers"),
    }


def run(case):
    ctx = HTTPPropagator.extract(case["headers"])
    meta = dict(ctx._meta) if ctx is not None else {}
    tags = {k: v for k, v in meta.items() if k.startswith("_dd.p.") and k != "_dd.p.tid"}
    trace_id = ctx.trace_id if ctx is not None else None
    return {
        "id": case["id"],
        "trace_id": None if trace_id is None else str(trace_id),
        "parent_id": None if ctx is None or ctx.span_id is None else str(ctx.span_id),
        "priority": None if ctx is None or ctx.sampling_priority is None else int(ctx.sampling_priority),
        "origin": None if ctx is None else ctx.dd_origin,
        "tags": tags,
        "last_parent": meta.get("_dd.parent_id"),
        "random": ctx is not None and bool(ctx._trace_flags & 0x02),
        "baggage": dict(ctx.get_all_baggage_items()) if ctx is not None else {},
        "links": [link(lk) for lk in ctx._span_links] if ctx is not None else [],
    }


def main():
    cases = json.load(sys.stdin)
    out = sys.stdout
    for case in cases:
        out.write(json.dumps(run(case)) + "\n")
    out.flush()


if __name__ == "__main__":
    main()
