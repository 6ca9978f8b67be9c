"""Files and directories only their owner may read: the SQLite database, the generated secrets."""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def make_private_dir(path: Path) -> None:
    """Create ``path`` and its missing parents, each new one ``0700``; an existing one is left alone."""
    missing: list[Path] = []
    while not path.exists():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs to set
        os.chmod(directory, PRIVATE_DIR_MODE)  # mkdir's mode passes through the umask


def create_private_file(path: Path) -> bool:
    """Create ``path`` empty and ``0600`` (its directory as ``make_private_dir``), unless it exists.

    Returns whether it was created.
    """
    make_private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    except FileExistsError:
        return False
    os.fchmod(fd, PRIVATE_FILE_MODE)
    os.close(fd)
    return True
