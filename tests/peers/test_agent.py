"""Runs ddapm-test-agent in this process, exiting when stdin closes (see lifeline.py).

Arguments are passed to ddapm-test-agent unchanged (the harness passes --port, --otlp-http-port
and --otlp-grpc-port on free ports).
"""

import sys

from lifeline import exit_when_stdin_closes

exit_when_stdin_closes()

from ddapm_test_agent.agent import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:])
