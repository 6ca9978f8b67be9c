"""``FernetSecretBox``: webhook signing secrets encrypted at rest (Fernet: AES-128-CBC + HMAC-SHA256).

The key material is ``CALLREC_WEBHOOK_SECRET_KEY`` (or the file generated under ``./var``): any
string, stretched to a Fernet key with SHA-256. Several comma-separated keys may be given to
rotate: the first seals, every one of them opens.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

_CONTEXT = b"callrec webhook secrets v1\x00"


def _fernet(material: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(_CONTEXT + material.encode()).digest()))


class FernetSecretBox:
    """Implements ``SecretBox``."""

    def __init__(self, key_material: str) -> None:
        keys = [k.strip() for k in key_material.split(",") if k.strip()]
        if not keys:
            raise ValueError("the webhook secret key is empty")
        self._box = MultiFernet([_fernet(k) for k in keys])

    def seal(self, secret: str) -> str:
        return self._box.encrypt(secret.encode()).decode("ascii")

    def open(self, sealed: str) -> str:
        try:
            return self._box.decrypt(sealed.encode("ascii")).decode()
        except InvalidToken:
            raise ValueError(
                "a webhook secret cannot be decrypted: was CALLREC_WEBHOOK_SECRET_KEY changed "
                "without keeping the old key after it?"
            ) from None
