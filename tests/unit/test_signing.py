"""Standard Webhooks signatures: the documented example, round trips, and what must fail."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest

from materializations.webhook import sign, verify

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = b'{"test": 2432232314}'
EXPECTED = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def headers(msg_id: str, timestamp: int, signature: str) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def test_the_standard_webhooks_example() -> None:
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, f"{MSG_ID}.{TIMESTAMP}.".encode() + BODY, hashlib.sha256).digest()
    assert "v1," + base64.b64encode(digest).decode() == EXPECTED
    assert sign(SECRET, MSG_ID, TIMESTAMP, BODY) == EXPECTED
    assert verify(SECRET, headers(MSG_ID, TIMESTAMP, EXPECTED), BODY, now=TIMESTAMP + 10)


def test_round_trip_with_and_without_prefix() -> None:
    now = int(time.time())
    body = b'[{"event": "e1"}]'
    signature = sign(SECRET, "msg_1", now, body)
    assert verify(SECRET, headers("msg_1", now, signature), body)
    assert sign(SECRET.removeprefix("whsec_"), "msg_1", now, body) == signature


def test_header_names_are_case_insensitive_and_several_signatures_may_be_sent() -> None:
    now = int(time.time())
    body = b"[]"
    good = sign(SECRET, "msg_1", now, body)
    other = sign("whsec_" + base64.b64encode(b"another key").decode(), "msg_1", now, body)
    sent = {
        "Webhook-Id": "msg_1",
        "Webhook-Timestamp": str(now),
        "Webhook-Signature": f"{other} {good}",
    }
    assert verify(SECRET, sent, body)
    sent["Webhook-Signature"] = other
    assert not verify(SECRET, sent, body)


@pytest.mark.parametrize(
    ("msg_id", "body", "age"),
    [
        pytest.param("msg_1", b'[{"event": "e2"}]', 0, id="tampered body"),
        pytest.param("msg_2", b'[{"event": "e1"}]', 0, id="other id"),
        pytest.param("msg_1", b'[{"event": "e1"}]', 301, id="too old"),
        pytest.param("msg_1", b'[{"event": "e1"}]', -301, id="too far ahead"),
    ],
)
def test_what_fails(msg_id: str, body: bytes, age: int) -> None:
    signed_at = int(time.time()) - age
    signature = sign(SECRET, "msg_1", signed_at, b'[{"event": "e1"}]')
    assert not verify(SECRET, headers(msg_id, signed_at, signature), body)


@pytest.mark.parametrize(
    "sent",
    [
        {},
        {"webhook-id": "msg_1", "webhook-timestamp": "soon", "webhook-signature": "v1,AAAA"},
        {"webhook-id": "msg_1", "webhook-timestamp": "1614265330"},
    ],
)
def test_missing_or_malformed_headers_fail(sent: dict[str, str]) -> None:
    assert not verify(SECRET, sent, BODY, now=TIMESTAMP)


def test_a_secret_that_is_not_base64_is_refused() -> None:
    with pytest.raises(ValueError, match="base64"):
        sign("whsec_not base64!", "msg_1", TIMESTAMP, BODY)
