"""Ties a peer process to the test process that started it.

The test harness gives every peer a pipe on stdin and never writes to it. When the test process
ends (normally, by panic, or killed), the pipe closes, the read below returns, and the peer exits
at once. Peers kept in a `static` fixture, whose Rust `Drop` never runs, are cleaned up this way.
"""

import os
import sys
import threading


def _watch():
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except Exception:
        pass
    os._exit(0)


def exit_when_stdin_closes():
    threading.Thread(target=_watch, name="lifeline", daemon=True).start()
