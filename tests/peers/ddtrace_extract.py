"""Run dd-trace-py's HTTP propagator on a corpus of header sets (differential test peer).

Reads a JSON array of cases from stdin: [{"id": N, "headers": {"name": "value", ...}}, ...]
and prints one JSON object per case, in order, on its own line:
{"id", "trace_id" (decimal string or null), "parent_id", "priority", "origin",
 "tags" ({_dd.p.* except _dd.p.tid}), "last_parent" (_dd.parent_id or null), "links"}.
Used by tests/propagation_ddtrace.rs; the extract styles are fixed here.
"""
import json
import logging
import os
import sys

os.environ["DD_TRACE_PROPAGATION_STYLE_EXTRACT"] = "datadog,tracecontext,b3multi,b3"
os.environ.setdefault("DD_TRACE_ENABLED", "false")
os.environ.setdefault("DD_INSTRUMENTATION_TELEMETRY_ENABLED", "false")
logging.disable(logging.CRITICAL)

from ddtrace.propagation.http import HTTPPropagator  # noqa: E402


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
        "links": len(ctx._span_links) if ctx is not None else 0,
    }


def main():
    cases = json.load(sys.stdin)
    out = sys.stdout
    for case in cases:
        out.write(json.dumps(run(case)) + "\n")
    out.flush()


if __name__ == "__main__":
    main()
