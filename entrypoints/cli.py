"""``callrec serve | worker | migrate | token | dlq | reconcile | purge | audit | storage | demo``."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import sys

from sqlalchemy.engine import make_url

from entrypoints.config import Settings
from entrypoints.logs import configure_logging


def _two_malloc_arenas() -> None:
    """What ``MALLOC_ARENA_MAX=2`` does, unless that is set: glibc otherwise gives threads that allocate
    at once arenas of their own (up to 8 per core) that keep what they freed, which under load costs
    a process about 5 MB of RSS (the SQLite connections and ``to_thread`` work run on threads)."""
    if "MALLOC_ARENA_MAX" not in os.environ:
        with contextlib.suppress(OSError, AttributeError):  # not glibc
            ctypes.CDLL("libc.so.6").mallopt(-8, 2)  # M_ARENA_MAX


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from adapters.sqlalchemy.engine import migrate
    from entrypoints.http.app import create_app

    settings = Settings.from_env()
    if make_url(settings.database_url).get_backend_name() == "sqlite":
        migrate(settings.database_url)
    app = create_app(settings=settings)
    # httptools halves the HTTP layer's CPU per request against h11; uvloop takes a little more off.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        log_config=None,
        loop="uvloop",
        http="httptools",
    )
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


def _worker(args: argparse.Namespace) -> int:
    import asyncio

    from adapters.sqlalchemy.engine import migrate
    from entrypoints.worker import run_worker

    settings = Settings.from_env()
    if settings.bus != "kafka":
        print("callrec worker runs the Kafka consumers: set CALLREC_BUS=kafka", file=sys.stderr)
        return 2
    if make_url(settings.database_url).get_backend_name() == "sqlite":
        migrate(settings.database_url)
    asyncio.run(run_worker(settings, args.consumer))
    return 0


def _dlq(args: argparse.Namespace) -> int:
    import asyncio

    settings = Settings.from_env()
    if settings.bus == "inprocess":
        from adapters.sqlalchemy.engine import migrate
        from entrypoints.outbox_dlq import outbox_dlq_list, outbox_dlq_replay

        if make_url(settings.database_url).get_backend_name() == "sqlite":
            migrate(settings.database_url)

        if args.dlq_command == "list":
            return asyncio.run(outbox_dlq_list(settings, as_json=args.json))
        if args.consumer:
            print(
                "--consumer is for the Kafka dead-letter topic; in-process a replay re-runs only the "
                "consumers that have not handled the event",
                file=sys.stderr,
            )
            return 2
        return asyncio.run(outbox_dlq_replay(settings, event_ids=args.event_id))
    from entrypoints.worker import dlq_list, dlq_replay

    if args.dlq_command == "list":
        return asyncio.run(dlq_list(settings, as_json=args.json, pending_only=args.pending))
    return asyncio.run(dlq_replay(settings, event_ids=args.event_id, consumer=args.consumer))


def _reconcile(args: argparse.Namespace) -> int:
    import asyncio

    from entrypoints.reconcile import reconcile_once

    settings = Settings.from_env()
    if args.stuck_after is not None:
        from datetime import timedelta

        settings = settings.model_copy(update={"reconcile_stuck_after": timedelta(seconds=args.stuck_after)})
    report = asyncio.run(reconcile_once(settings, drain_s=args.drain_s))
    print(report)
    for recording_id, error in report.failed:
        print(f"  {recording_id}: {error}", file=sys.stderr)
    return 1 if report.failed else 0


def _purge(args: argparse.Namespace) -> int:
    import asyncio

    from entrypoints.purge import purge_once

    report = asyncio.run(purge_once(Settings.from_env(), drain_s=args.drain_s))
    print(report)
    for call_id, error in report.failed:
        print(f"  {call_id}: {error}", file=sys.stderr)
    return 1 if report.failed else 0


def _demo(args: argparse.Namespace) -> int:
    import asyncio

    from entrypoints.demo import run_demo

    try:
        return asyncio.run(run_demo(Settings.from_env(), port=args.port, serve=args.serve))
    except (RuntimeError, TimeoutError) as exc:
        print(f"callrec demo failed: {exc}", file=sys.stderr)
        return 1


def _audit(args: argparse.Namespace) -> int:
    import asyncio

    from adapters.sqlalchemy.engine import migrate
    from entrypoints.audit_verify import parse_head, verify_audit_log

    settings = Settings.from_env()
    try:
        head = parse_head(args.head) if args.head else None
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if make_url(settings.database_url).get_backend_name() == "sqlite":
        migrate(settings.database_url)
    return asyncio.run(verify_audit_log(settings, head=head))


def _storage(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from adapters.s3_lifecycle import apply_lifecycle, lifecycle_rules

    try:
        rules = lifecycle_rules(args.days)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.print:
        print(json.dumps({"Rules": rules}, indent=2))
        return 0
    settings = Settings.from_env()
    if settings.storage != "s3":
        print("callrec storage apply-lifecycle needs CALLREC_STORAGE=s3", file=sys.stderr)
        return 2
    from entrypoints.container import _s3_store

    async def apply() -> dict[str, list[dict[str, object]]]:
        async with _s3_store(settings) as store:
            return await apply_lifecycle(store, args.days)

    for bucket, applied in asyncio.run(apply()).items():
        print(f"{bucket}: {len(applied)} lifecycle rule(s); recordings to GLACIER_IR after {args.days} days")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callrec", description="Call-recording service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP service (and, embedded, the workers)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=_serve)
    worker = sub.add_parser("worker", help="run the Kafka consumers (CALLREC_BUS=kafka)")
    worker.add_argument(
        "--consumer", action="append", help="run only this consumer (repeatable; default: all)"
    )
    worker.set_defaults(func=_worker)
    dlq = sub.add_parser(
        "dlq", help="dead letters: the outbox's (in-process bus) or the topic callrec.dlq.v1 (Kafka)"
    )
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_list = dlq_sub.add_parser("list", help="show the dead letters")
    dlq_list.add_argument("--json", action="store_true", help="one JSON object per line")
    dlq_list.add_argument("--pending", action="store_true", help="only those not replayed yet")
    dlq_replay = dlq_sub.add_parser(
        "replay", help="send dead letters back to their consumers (default: all not replayed yet)"
    )
    dlq_replay.add_argument("--event-id", action="append", default=[], help="only this event (repeatable)")
    dlq_replay.add_argument("--consumer", help="only those this consumer gave up on")
    dlq.set_defaults(func=_dlq)
    sub.add_parser("migrate", help="bring the database schema up to date").set_defaults(func=_migrate)
    reconcile = sub.add_parser("reconcile", help="resume the work of recordings stuck in a state")
    reconcile.add_argument(
        "--stuck-after", type=float, help="seconds unchanged before a recording counts as stuck"
    )
    reconcile.add_argument(
        "--drain-s", type=float, default=60.0, help="seconds to hand on the resumed work (0: leave it)"
    )
    reconcile.set_defaults(func=_reconcile)
    purge = sub.add_parser(
        "purge", help="delete the audio of calls older than their organization's retention policy, once"
    )
    purge.add_argument(
        "--drain-s", type=float, default=60.0, help="seconds to carry out the deletions here (0: leave it)"
    )
    purge.set_defaults(func=_purge)
    demo = sub.add_parser(
        "demo", help="play a recorded call through the service with a built-in Twilio stand-in"
    )
    demo.add_argument("--port", type=int, help="port of the demo's service (default: a free one)")
    demo.add_argument("--serve", action="store_true", help="keep serving afterwards, until Ctrl-C")
    demo.set_defaults(func=_demo)
    audit = sub.add_parser("audit", help="the audit log of accesses and changes")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser(
        "verify", help="walk the hash chain; exit 1 naming the first edited, removed or reordered record"
    )
    verify.add_argument(
        "--head", help="SEQ:HASH of a chain head received on callrec.audit.v1 (default: the outbox's newest)"
    )
    audit.set_defaults(func=_audit)
    storage = sub.add_parser("storage", help="the S3 bucket's settings")
    storage_sub = storage.add_subparsers(dest="storage_command", required=True)
    lifecycle = storage_sub.add_parser(
        "apply-lifecycle", help="move recordings to S3 Glacier Instant Retrieval after N days"
    )
    lifecycle.add_argument("--days", type=int, default=30, help="days in S3 Standard first (default 30)")
    lifecycle.add_argument("--print", action="store_true", help="print the rules as JSON, apply nothing")
    storage.set_defaults(func=_storage)
    token = sub.add_parser("token", help="print a dashboard bearer token")
    token.add_argument("--org", required=True)
    token.add_argument("--role", required=True, choices=["member", "admin", "ops_admin"])
    token.add_argument("--sub")
    token.set_defaults(func=_token)
    args = parser.parse_args(argv)
    _two_malloc_arenas()
    configure_logging()  # JSON from the first line, before the settings are even read
    with contextlib.suppress(ValueError):  # a bad setting is reported by the command itself
        settings = Settings.from_env()
        configure_logging(settings.log_level, settings.log_levels)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
