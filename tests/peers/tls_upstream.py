"""A real HTTPS/1.1 upstream for stitch's `tls = true` tests (standard library only).

usage: python tls_upstream.py CERT_PEM KEY_PEM

Binds 127.0.0.1 on a free port and prints `tls_upstream listening on 127.0.0.1:PORT`. The TLS
handshake runs in each connection's own thread, so a client that aborts it cannot stall the
server. Every request is answered 200 with JSON:
  app      "tls_upstream"
  method   the request method
  path     the request target as received
  headers  the request headers, lower-cased names
  sni      the server name the client sent in its ClientHello (null if none)
  tls      the negotiated TLS version
and printed as `tls_upstream request METHOD PATH sni=SNI`. A failed handshake is printed as
`tls_upstream handshake failed: ERROR`. Used by tests/upstream_tls_health.rs.
"""

import json
import socket
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from lifeline import exit_when_stdin_closes

exit_when_stdin_closes()

# The SNI each connection sent, by connection object (filled in during its handshake).
_sni = {}
_sni_lock = threading.Lock()


def _record_sni(ssl_obj, server_name, _ctx):
    with _sni_lock:
        _sni[id(ssl_obj)] = server_name
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        with _sni_lock:
            sni = _sni.get(id(self.connection))
        print(f"tls_upstream request {self.command} {self.path} sni={sni}", flush=True)
        body = json.dumps(
            {
                "app": "tls_upstream",
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "sni": sni,
                "tls": self.connection.version(),
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _answer

    def log_message(self, *_args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr, context):
        self.context = context
        super().__init__(addr, Handler)

    def finish_request(self, request, client_address):
        # In the connection's thread: the handshake, then HTTP over the TLS socket.
        request.settimeout(30)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            print(f"tls_upstream handshake failed: {e}", flush=True)
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            with _sni_lock:
                _sni.pop(id(tls), None)
            try:
                tls.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            tls.close()


def main():
    cert, key = sys.argv[1], sys.argv[2]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = _record_sni
    server = Server(("127.0.0.1", 0), context)
    host, port = server.server_address[:2]
    print(f"tls_upstream listening on {host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
