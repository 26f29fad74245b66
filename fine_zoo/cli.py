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


def cmd_users(a: argparse.Namespace) -> None:
    """`fine users add NAME [--admin]` (prints the key once) and `fine users revoke NAME`."""
    from learngene_store.accounts import AccountError, add_user, revoke_user
    from learngene_store.db import migrate, session_factory
    from service.settings import get_settings

    settings = get_settings()
    migrate(settings)
    with session_factory(settings)() as session:
        try:
            if a.users_command == "add":
                key = add_user(session, a.name, admin=a.admin)
                print(key)
                print(f"user {a.name}{' (admin)' if a.admin else ''} created; the key above is shown only once",
                      file=sys.stderr)
            else:
                revoke_user(session, a.name)
                print(f"user {a.name}: key revoked", file=sys.stderr)
        except AccountError as e:
            raise ValueError(str(e)) from None


def cmd_gc(a: argparse.Namespace) -> None:
    """`fine gc`: delete blobs no registry row names (older than --grace seconds)."""
    from learngene_store.blobs import make_blob_store
    from learngene_store.db import migrate, session_factory
    from learngene_store.gc import collect_orphans
    from service.settings import get_settings

    settings = get_settings()
    migrate(settings)
    with session_factory(settings)() as session:
        done = collect_orphans(session, make_blob_store(settings), a.grace, a.dry_run)
    verb = "would delete" if a.dry_run else "deleted"
    print(f"{verb} {len(done.deleted)} orphaned blobs; kept {done.kept} referenced and {done.young} younger than "
          f"{a.grace:g} s")


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
    us = sub.add_parser("users", help="accounts of the service's database (DATABASE_URL / FINE_HOME)")
    us_sub = us.add_subparsers(dest="users_command", required=True)
    add = us_sub.add_parser("add", help="create a user and print its API key (once)")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="may register public learngenes and move aliases")
    add.set_defaults(func=cmd_users)
    rv = us_sub.add_parser("revoke", help="revoke a user's API key")
    rv.add_argument("name")
    rv.set_defaults(func=cmd_users)
    gc = sub.add_parser("gc", help="delete blobs that no dataset, learngene or checkpoint names")
    gc.add_argument("--grace", type=float, default=3600.0, help="keep unreferenced blobs younger than this (s)")
    gc.add_argument("--dry-run", action="store_true")
    gc.set_defaults(func=cmd_gc)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one `fine` command."""
    return method_cli.main(argv, build_parser())


if __name__ == "__main__":
    sys.exit(main())
