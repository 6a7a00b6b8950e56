"""A Flask backend traced by the OpenTelemetry Python SDK, exporting OTLP/HTTP protobuf.

usage: python otel_app.py OTLP_TRACES_ENDPOINT   (e.g. http://127.0.0.1:4318/v1/traces)

The SDK runs as an application would configure it: the default sampler (ParentBased(AlwaysOn)),
the default propagators (tracecontext, baggage), resource service.name `otel-backend`, and a
SimpleSpanProcessor so every span is exported as soon as it ends. Binds 127.0.0.1 on a free port
and prints `otel_app listening on 127.0.0.1:PORT`. Every path answers JSON:
  app                "otel"
  headers            the request headers, lower-cased names
  trace_id           the server span's trace id, 32 lowercase hex
  span_id            its span id, 16 lowercase hex
  parent_id          its parent span id, 16 hex, null if none (or if the span is not recording)
  sampled            the span's sampled flag
  recording          whether the SDK records (and will export) the span
  trace_state        the span's tracestate as a header value
  injected           the headers the SDK would send on an outgoing call from this span
"""

import sys

from lifeline import exit_when_stdin_closes

exit_when_stdin_closes()

from flask import Flask, jsonify, request  # noqa: E402
from opentelemetry import propagate, trace  # noqa: E402
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: E402
from opentelemetry.instrumentation.flask import FlaskInstrumentor  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

endpoint = sys.argv[1]
provider = TracerProvider(resource=Resource.create({"service.name": "otel-backend"}))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=5)))
trace.set_tracer_provider(provider)

app = Flask("otel_app")
FlaskInstrumentor().instrument_app(app)
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]


@app.route("/", defaults={"path": ""}, methods=METHODS)
@app.route("/<path:path>", methods=METHODS)
def handle(path):
    span = trace.get_current_span()
    ctx = span.get_span_context()
    parent = getattr(span, "parent", None)
    injected = {}
    propagate.inject(injected)
    return jsonify(
        {
            "app": "otel",
            "path": "/" + path,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "trace_id": format(ctx.trace_id, "032x") if ctx.is_valid else None,
            "span_id": format(ctx.span_id, "016x") if ctx.is_valid else None,
            "parent_id": format(parent.span_id, "016x") if parent is not None else None,
            "sampled": ctx.trace_flags.sampled,
            "recording": span.is_recording(),
            "trace_state": ctx.trace_state.to_header(),
            "injected": injected,
        }
    )


def serve():
    server = make_server("127.0.0.1", 0, app, threaded=True)
    print("otel_app listening on 127.0.0.1:%d" % server.server_port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    serve()
