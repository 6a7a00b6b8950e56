#!/usr/bin/python3
"""benches/load: an OTLP/gRPC trace receiver that answers every Export and keeps nothing.

usage: otlp_sink.py PORT LOG

The span sink of pingap's tracing in `benches/load/run --peers`, as the nginx sink is for
stitch's spans: it takes `opentelemetry.proto.collector.trace.v1.TraceService/Export` calls
over HTTP/2 without TLS, leaves each request's bytes undecoded, and answers with an empty
ExportTraceServiceResponse (zero bytes on the wire), which an exporter reads as full success.
It appends one line per call to LOG, so that the run can show that the spans arrive, all of
them: the request's size in bytes and how many times two attribute keys occur in it, found by a
plain byte search: `http.method` (one in each of pingap's request spans) and `upstream.addr`
(one in each of its upstream spans). When it is listening it writes LOG.ready. Runs on Debian's
python3 and its python3-grpcio (.ci/setup bench-peers); no generated protobuf code is needed.
"""
import signal
import sys
import threading
from concurrent import futures

import grpc

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


def main():
    port, log_path = int(sys.argv[1]), sys.argv[2]
    log = open(log_path, "a", buffering=1)
    lock = threading.Lock()

    def export(request, _context):
        with lock:
            log.write(f"{len(request)} {request.count(b'http.method')} {request.count(b'upstream.addr')}\n")
        return b""

    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "Export": grpc.unary_unary_rpc_method_handler(export),  # bytes in, bytes out
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                         options=[("grpc.max_receive_message_length", 64 << 20)])
    server.add_generic_rpc_handlers((handler,))
    if server.add_insecure_port(f"127.0.0.1:{port}") != port:
        sys.exit(f"otlp_sink: cannot listen on 127.0.0.1:{port}")
    server.start()
    open(log_path + ".ready", "w").close()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(0)


main()
