"""A Flask backend traced by dd-trace-py; run it under `ddtrace-run`.

usage: ddtrace-run python dd_app.py

Binds 127.0.0.1 on a free port and prints `dd_app listening on 127.0.0.1:PORT`. Every path
answers JSON describing what the tracer made of the request:
  app                "dd"
  headers            the request headers, lower-cased names
  trace_id           the local root span's trace id, 32 lowercase hex (128 bits)
  span_id, parent_id that span's id and its parent's id, 16 lowercase hex (parent null if none)
  sampling_priority  the trace's priority after dd-trace decided (int, null if undecided)
  origin             the trace's origin (`_dd.origin`), null if none
  meta               the context's trace-level tags (`_dd.p.*`, ...)
  injected           the headers dd-trace would send on an outgoing call from this span
"""

import os
import sys

from lifeline import exit_when_stdin_closes

exit_when_stdin_closes()

from flask import Flask, jsonify, request  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from ddtrace.propagation.http import HTTPPropagator  # noqa: E402
from ddtrace.trace import tracer  # noqa: E402

app = Flask("dd_app")
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]


def hex_id(value, width):
    return None if not value else format(value, "0%dx" % width)


@app.route("/", defaults={"path": ""}, methods=METHODS)
@app.route("/<path:path>", methods=METHODS)
def handle(path):
    root = tracer.current_root_span()
    injected = {}
    if root is not None:
        # Injecting from the span makes dd-trace take its sampling decision if none was made.
        HTTPPropagator.inject(root, injected)
    ctx = root.context if root is not None else None
    return jsonify(
        {
            "app": "dd",
            "path": "/" + path,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "trace_id": hex_id(root.trace_id, 32) if root else None,
            "span_id": hex_id(root.span_id, 16) if root else None,
            "parent_id": hex_id(root.parent_id, 16) if root else None,
            "sampling_priority": ctx.sampling_priority if ctx else None,
            "origin": ctx.dd_origin if ctx else None,
            "meta": dict(ctx._meta) if ctx else {},
            "injected": injected,
        }
    )


def serve():
    server = make_server("127.0.0.1", 0, app, threaded=True)
    print("dd_app listening on 127.0.0.1:%d" % server.server_port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    if "ddtrace" not in sys.modules or not os.environ.get("DD_TRACE_AGENT_URL"):
        print("dd_app: run under ddtrace-run with DD_TRACE_AGENT_URL set", file=sys.stderr)
    serve()
