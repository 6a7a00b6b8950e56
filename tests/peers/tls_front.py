"""A TLS-terminating front for a plain TCP service (standard library only): an HTTPS collector
made of the real ddapm-test-agent behind it, for stitch's `https://` span export tests.

usage: python tls_front.py CERT_PEM KEY_PEM TARGET_PORT

Binds 127.0.0.1 on a free port and prints `tls_front listening on 127.0.0.1:PORT`. Each
accepted connection completes its TLS handshake in its own thread (printing
`tls_front connection sni=NAME` on success, `tls_front handshake failed: ERROR` otherwise), then
its bytes are relayed both ways to 127.0.0.1:TARGET_PORT until either side closes.
"""

import socket
import ssl
import sys
import threading

from lifeline import exit_when_stdin_closes

exit_when_stdin_closes()


def pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(conn, context, target_port):
    conn.settimeout(30)
    try:
        tls = context.wrap_socket(conn, server_side=True)
    except (ssl.SSLError, OSError) as e:
        print(f"tls_front handshake failed: {e}", flush=True)
        conn.close()
        return
    print(f"tls_front connection sni={_last_sni.get()}", flush=True)
    tls.settimeout(None)
    try:
        upstream = socket.create_connection(("127.0.0.1", target_port))
    except OSError as e:
        print(f"tls_front cannot reach the target: {e}", flush=True)
        tls.close()
        return
    t = threading.Thread(target=pipe, args=(upstream, tls), daemon=True)
    t.start()
    pipe(tls, upstream)
    t.join()
    tls.close()
    upstream.close()


class _LastSni:
    """The SNI of the handshake that just ran (handshakes are serialised per thread)."""

    def __init__(self):
        self.local = threading.local()

    def record(self, _ssl_obj, server_name, _ctx):
        self.local.name = server_name

    def get(self):
        return getattr(self.local, "name", None)


_last_sni = _LastSni()


def main():
    cert, key, target_port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = _last_sni.record
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    host, port = listener.getsockname()
    print(f"tls_front listening on {host}:{port}", flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn, context, target_port), daemon=True).start()


if __name__ == "__main__":
    main()
