"""A mock server with `ServerConfig` fields the `tinker-mock serve` CLI has no flag for.

    python benchmarks/config_server.py '{"session_abandon_seconds": 1.0}'

Serves HTTP on a free loopback port through `mock_server.embedded.serve` (the same app and
service as the CLI), prints the CLI's ready line `tinker-mock listening http=URL grpc=-`, and
runs until SIGTERM or SIGINT (then stops as the CLI does: in-flight calls finish).
"""

from __future__ import annotations

import json
import signal
import sys
import threading

from mock_server.embedded import serve
from mock_server.service import ServerConfig


def main(overrides: dict[str, object]) -> None:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with serve(ServerConfig(port=0), grpc=False, **overrides) as mock:
        print(f"tinker-mock listening http={mock.url} grpc=-", flush=True)
        stop.wait()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {})
