"""A real gRPC server and client (grpcio) for stitch's HTTP/2 tests. No .proto: the methods
use generic handlers over raw bytes, so nothing is generated.

usage:
  python grpc_peer.py server [CERT KEY]
      Serves `stitch.test.Echo` on 127.0.0.1, a free port: cleartext (h2c) without CERT/KEY,
      TLS (h2 by ALPN) with them. Prints `grpc_peer listening on 127.0.0.1:PORT`.
        Unary   answers JSON {"method", "request", "metadata", "peer"}: the request bytes as
                text, the metadata (request headers) the server received and the client's
                address (stitch's upstream connection); a request `hold:SECONDS` is answered
                after that long
        Stream  answers N messages (N = the request, as a number), each {"i", "metadata"}
        Fail    fails with NOT_FOUND, details "no such thing" (a trailers-only answer)
        StreamFail  answers one message, then fails with RESOURCE_EXHAUSTED, "stream cut"
                (the status in trailers after data)
  python grpc_peer.py client TARGET [CA NAME] [KEY=VALUE ...]
      Calls Unary, Stream (3), Fail and StreamFail on TARGET (cleartext, or TLS trusting CA for NAME) with
      the KEY=VALUE pairs as metadata, and prints one JSON line:
      {"unary": ..., "stream": [...], "fail": {"code", "details"},
       "stream_fail": {"code", "details", "received"}}.
  python grpc_peer.py concurrent TARGET N [AUTHORITY]
      Makes one Unary call, then N overlapping ones (`hold:0.5`) on one cleartext channel,
      and prints the JSON list of the peers the server saw for the N.
"""

import json
import sys
import time
from concurrent import futures

import grpc

SERVICE = "stitch.test.Echo"


def _metadata(context):
    return {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}


def unary(request, context):
    text = request.decode()
    if text.startswith("hold:"):
        # Keep the call open so that concurrent calls overlap on the connection.
        time.sleep(float(text[5:]))
    return json.dumps(
        {
            "method": "Unary",
            "request": text,
            "metadata": _metadata(context),
            "peer": context.peer(),
        }
    ).encode()


def stream(request, context):
    md = _metadata(context)
    for i in range(int(request.decode() or "3")):
        yield json.dumps({"i": i, "metadata": md}).encode()


def stream_fail(_request, context):
    yield b"{}"
    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "stream cut")


def fail(_request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")


def serve(args):
    from lifeline import exit_when_stdin_closes

    exit_when_stdin_closes()
    handlers = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
            "StreamFail": grpc.unary_stream_rpc_method_handler(stream_fail),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handlers,))
    if args:
        cert, key = (open(p, "rb").read() for p in args[:2])
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"grpc_peer listening on 127.0.0.1:{port}", flush=True)
    server.wait_for_termination()


def client(args):
    target, rest = args[0], args[1:]
    options = [("grpc.enable_http_proxy", 0)]
    if len(rest) >= 2 and "=" not in rest[0]:
        ca, name, rest = open(rest[0], "rb").read(), rest[1], rest[2:]
        options.append(("grpc.ssl_target_name_override", name))
        options.append(("grpc.default_authority", name))
        channel = grpc.secure_channel(
            target, grpc.ssl_channel_credentials(root_certificates=ca), options
        )
    else:
        channel = grpc.insecure_channel(target, options)
    metadata = [tuple(kv.split("=", 1)) for kv in rest]
    call = lambda kind, name: getattr(channel, kind)(f"/{SERVICE}/{name}")  # noqa: E731
    out = {}
    out["unary"] = json.loads(call("unary_unary", "Unary")(b"hello", metadata=metadata, timeout=20))
    out["stream"] = [
        json.loads(m) for m in call("unary_stream", "Stream")(b"3", metadata=metadata, timeout=20)
    ]
    try:
        call("unary_unary", "Fail")(b"", metadata=metadata, timeout=20)
        out["fail"] = {"code": "OK"}
    except grpc.RpcError as e:
        out["fail"] = {"code": e.code().name, "details": e.details()}
    received = 0
    try:
        for _ in call("unary_stream", "StreamFail")(b"", metadata=metadata, timeout=20):
            received += 1
        out["stream_fail"] = {"code": "OK", "received": received}
    except grpc.RpcError as e:
        out["stream_fail"] = {"code": e.code().name, "details": e.details(), "received": received}
    print(json.dumps(out), flush=True)


def concurrent(args):
    target, n = args[0], int(args[1])
    options = [("grpc.enable_http_proxy", 0)]
    if len(args) > 2:
        options.append(("grpc.default_authority", args[2]))
    channel = grpc.insecure_channel(target, options)
    method = channel.unary_unary(f"/{SERVICE}/Unary")
    # One call first, so that stitch has an upstream connection to share.
    method(b"warm-up", timeout=20)
    calls = [method.future(b"hold:0.5", timeout=20) for _ in range(n)]
    print(json.dumps([json.loads(c.result())["peer"] for c in calls]), flush=True)


if __name__ == "__main__":
    {"server": serve, "client": client, "concurrent": concurrent}[sys.argv[1]](sys.argv[2:])
