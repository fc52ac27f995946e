"""`python -m tests.mirror` (from the repo root): build the test mirror if needed, serve
it on 127.0.0.1, print the shell lines that point aq at it, serve until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from .build import build_mirror
from .server import start_server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.mirror", description=__doc__)
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free)")
    ap.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="cache root (default: $AQ_TEST_CACHE or ~/.cache/aq-tests)",
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="log each request to stderr")
    args = ap.parse_args(argv)

    tree = build_mirror(args.cache)
    server, url = start_server(tree.root, port=args.port, verbose=args.verbose)
    print(f"export AQ_MIRROR={url}")
    print(f"export AQ_TRUSTED_KEY={tree.public_key}")
    sys.stdout.flush()
    print(f"serving {tree.root} at {url} (Ctrl-C to stop)", file=sys.stderr, flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
