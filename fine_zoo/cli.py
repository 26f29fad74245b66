"""The `fine` script: fine.cli's method commands plus `serve` (API + embedded worker) and `worker`."""

from __future__ import annotations

import argparse
import sys

from client import cli as client_cli
from fine import cli as method_cli


def cmd_serve(a: argparse.Namespace) -> None:
    from service.cli import serve

    serve(api_only=a.api_only, host=a.host, port=a.port)


def cmd_worker(_a: argparse.Namespace) -> None:
    from worker.__main__ import main

    main([])


def build_parser() -> argparse.ArgumentParser:
    """fine.cli's parser with the service's commands and the HTTP client's commands added."""
    p, sub = method_cli.build_parser()
    client_cli.add_commands(sub)
    sv = sub.add_parser("serve", help="run the service (API + embedded worker unless --api-only)")
    sv.add_argument("--api-only", action="store_true")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.set_defaults(func=cmd_serve)
    wk = sub.add_parser("worker", help="run a Celery worker on the gpu queue")
    wk.set_defaults(func=cmd_worker)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one `fine` command."""
    return method_cli.main(argv, build_parser())


if __name__ == "__main__":
    sys.exit(main())
