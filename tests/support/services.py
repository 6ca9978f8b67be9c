"""Starting and stopping the real services the integration tiers talk to (by PID, always)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def missing_service(reason: str) -> None:
    """Skip locally, fail in CI: in CI a tier that cannot run is a failure, not a pass."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required service unavailable in CI: {reason}")
    pytest.skip(reason)


def _gone(pid: int) -> bool:
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)  # our own child: reap it, or it lingers as a zombie
        if reaped == pid:
            return True
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM the process group led by ``pid``, then SIGKILL it if it has not exited in time."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            break
        time.sleep(0.05)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        while not _gone(pid):
            time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # leftovers in the group


def postgres_bin() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@dataclass
class PostgresServer:
    url: str  # an asyncpg SQLAlchemy URL of the default database
    port: int
    pid: int = 0  # leader of the server's process group


@contextmanager
def throwaway_postgres() -> Iterator[PostgresServer]:
    """A fresh PostgreSQL cluster on a free port in a temp dir, removed afterwards."""
    bindir = postgres_bin()
    if bindir is None:
        missing_service("PostgreSQL server binaries not installed (apt-get install postgresql)")
    assert bindir is not None
    root = Path(tempfile.mkdtemp(prefix="callrec-pg-"))
    data = root / "data"
    as_root = os.geteuid() == 0
    run_as: list[str] = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    subprocess.run(
        [*run_as, str(bindir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres", "--no-sync"],
        check=True,
        capture_output=True,
    )
    proc = subprocess.Popen(
        [
            *run_as,
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(root),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "max_connections=200",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("PostgreSQL did not start") from None
                time.sleep(0.05)
        time.sleep(0.2)
        yield PostgresServer(
            url=f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres", port=port, pid=proc.pid
        )
    finally:
        stop_pid(proc.pid)
        shutil.rmtree(root, ignore_errors=True)


def create_database(server: PostgresServer, name: str) -> str:
    """A new empty database on the server; returns its URL."""
    import asyncio

    import asyncpg

    async def _create() -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=server.port, user="postgres", database="postgres")
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(_create())
    return f"postgresql+asyncpg://postgres@127.0.0.1:{server.port}/{name}"
