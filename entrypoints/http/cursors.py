"""Opaque keyset cursors: a (timestamp, id) position, base64url-encoded JSON."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from litestar.exceptions import ValidationException


def encode_keyset(at: datetime, item_id: str) -> str:
    raw = json.dumps([at.isoformat(), item_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_keyset(value: str) -> tuple[datetime, str]:
    """The position a cursor names; a 400 naming ``cursor`` when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        at, item_id = json.loads(raw)
        parsed = datetime.fromisoformat(at)
        if parsed.tzinfo is None or not isinstance(item_id, str) or len(item_id) > 64:
            raise ValueError
        return parsed, item_id
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ValidationException("cursor: malformed cursor") from None
