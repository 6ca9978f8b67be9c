"""``callrec serve | worker | migrate | token``."""

from __future__ import annotations

import argparse
import logging
import sys

from sqlalchemy.engine import make_url

from entrypoints.config import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from adapters.sqlalchemy.engine import migrate
    from entrypoints.http.app import create_app

    settings = Settings.from_env()
    if make_url(settings.database_url).get_backend_name() == "sqlite":
        migrate(settings.database_url)
    app = create_app(settings=settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0


def _migrate(_: argparse.Namespace) -> int:
    from adapters.sqlalchemy.engine import migrate

    settings = Settings.from_env()
    migrate(settings.database_url)
    print("schema is up to date")
    return 0


def _token(args: argparse.Namespace) -> int:
    from entrypoints.http.auth import issue_token

    settings = Settings.from_env()
    print(
        issue_token(settings.jwt_secret, org_id=args.org, role=args.role, sub=args.sub or f"cli:{args.role}")
    )
    return 0


def _worker(_: argparse.Namespace) -> int:
    print("callrec worker runs the Kafka consumers (CALLREC_BUS=kafka); not available yet", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callrec", description="Call-recording service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP service (and, embedded, the workers)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=_serve)
    sub.add_parser("worker", help="run the Kafka consumers").set_defaults(func=_worker)
    sub.add_parser("migrate", help="bring the database schema up to date").set_defaults(func=_migrate)
    token = sub.add_parser("token", help="print a dashboard bearer token")
    token.add_argument("--org", required=True)
    token.add_argument("--role", required=True, choices=["member", "admin", "ops_admin"])
    token.add_argument("--sub")
    token.set_defaults(func=_token)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
