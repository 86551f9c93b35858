"""Standard Webhooks signatures: the `whsec_` key, signing a request and verifying one.

Kept apart from the sink because the receiver (and `segflow dlq replay`) sign and verify without
delivering anything.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"


def key(secret: str) -> bytes:
    """The HMAC key of a secret: base64, optionally prefixed `whsec_`."""
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error as error:
        raise ValueError(
            f"webhook secret must be base64, optionally prefixed '{SECRET_PREFIX}'"
        ) from error


def signature(key: bytes, msg_id: str, timestamp: int | str, body: bytes) -> str:
    """One signature with a decoded key, so the sink decodes its secret once, not per request."""
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: 'v1,' + base64 HMAC-SHA256 of 'id.timestamp.body'."""
    return signature(key(secret), msg_id, timestamp, body)


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    tolerance_s: float = 300,
    now: float | None = None,
) -> bool:
    """Whether `headers` carry a valid signature of `body`, made within `tolerance_s` of now."""
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        return False
    try:
        timestamp = int(stamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = signature(key(secret), msg_id, stamp, body).encode()
    # Several signatures may be sent (key rotation); each comparison is constant-time.
    return any(
        hmac.compare_digest(candidate.encode(), expected) for candidate in signatures.split()
    )
