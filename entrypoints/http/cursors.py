"""Keyset cursors: a (timestamp, id) position, written ``{microseconds since the epoch}.{id}``.

Clients pass ``next_cursor`` back as they got it. The format is a regular language
(``CURSOR_PATTERN``), and every string in it names a position, so the OpenAPI document states
exactly which cursors the server takes: one that matches the pattern is never refused.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

from litestar.exceptions import ValidationException
from litestar.params import QueryParameter

from domain.model import IDENTIFIER_PATTERN

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# 16 digits of microseconds reach the year 2286; datetime goes to 9999, so every one decodes.
MAX_TIMESTAMP_DIGITS = 16
CURSOR_PATTERN = rf"^[0-9]{{1,{MAX_TIMESTAMP_DIGITS}}}\.{IDENTIFIER_PATTERN}$"
MAX_CURSOR_LENGTH = MAX_TIMESTAMP_DIGITS + 1 + 64
_CURSOR = re.compile(CURSOR_PATTERN)

CursorQuery = Annotated[
    str | None,
    QueryParameter(
        pattern=CURSOR_PATTERN,
        max_length=MAX_CURSOR_LENGTH,
        description="`next_cursor` of the previous page",
    ),
]
BeforeQuery = Annotated[
    str | None,
    QueryParameter(
        pattern=CURSOR_PATTERN,
        max_length=MAX_CURSOR_LENGTH,
        description="`prev_cursor` of a page: the page just newer than it (not with `cursor`)",
    ),
]


def encode_keyset(at: datetime, item_id: str) -> str:
    return f"{(at - _EPOCH) // _MICROSECOND}.{item_id}"


def decode_keyset(value: str) -> tuple[datetime, str]:
    """The position a cursor names; a 400 naming ``cursor`` when it is not one of ours."""
    if not _CURSOR.fullmatch(value):
        raise ValidationException("cursor: malformed cursor")
    micros, item_id = value.split(".", 1)
    return _EPOCH + int(micros) * _MICROSECOND, item_id
