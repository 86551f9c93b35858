"""API keys without Postgres: their shape, hashing, the Authorization header and CLI checks."""

from __future__ import annotations

import argparse
import hashlib
from datetime import UTC, datetime

import pytest

from pipeline.catalog import Catalog
from pipeline.errors import SegflowError
from pipeline.producers.api import add_api_parser
from pipeline.producers.keys import (
    KeyInfo,
    add_keys_parser,
    bearer_token,
    hash_key,
    new_key,
    parse_collections,
    well_formed,
)
from pipeline.runtime.settings import Settings
from tests.fixtures.stack import ROOT


def test_keys_are_prefixed_urlsafe_and_unique() -> None:
    keys = {new_key() for _ in range(1000)}
    assert len(keys) == 1000
    for key in keys:
        assert key.startswith("sfk_") and len(key) == 4 + 43
        assert well_formed(key)
        assert set(key[4:]) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )


def test_only_the_sha256_of_a_key_is_stored() -> None:
    key = new_key()
    assert hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert len(hash_key(key)) == 64 and key[4:] not in hash_key(key)


@pytest.mark.parametrize(
    "key",
    ["", "sfk_", "sfk_" + "A" * 42, "sfk_" + "A" * 44, "sfx_" + "A" * 43, "sfk_" + "A" * 42 + "="],
)
def test_malformed_keys_are_recognised_without_asking_postgres(key: str) -> None:
    assert not well_formed(key)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer   ", None),
        ("Basic dXNlcjpwYXNz", None),
        ("sfk_abc", None),
        ("Bearer sfk_abc", "sfk_abc"),
        ("bearer sfk_abc", "sfk_abc"),
        ("  Bearer  sfk_abc  ", "sfk_abc"),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_key_scope() -> None:
    info = KeyInfo("web", "0" * 32, ("segment/events",), datetime.now(UTC))
    assert info.may_write("segment/events")
    assert not info.may_write("segment/profiles")


def test_collections_of_a_key_must_be_ingestible(catalog: Catalog) -> None:
    assert parse_collections(" segment/events, ,segment/events", catalog) == ["segment/events"]
    with pytest.raises(SegflowError, match="at least one collection"):
        parse_collections(" , ", catalog)
    with pytest.raises(
        SegflowError,
        match=r"unknown collection 'segment/event'; expected one of "
        r"\['profile/events', 'profile/group-members', 'segment/events'\]",
    ):
        parse_collections("segment/event", catalog)
    with pytest.raises(SegflowError, match="'segment/toggles' is derived from 'segment/events'"):
        parse_collections("segment/events,segment/toggles", catalog)


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="segflow")
    sub = parser.add_subparsers(dest="command", required=True)
    add_keys_parser(sub)
    add_api_parser(sub)
    return parser.parse_args(list(argv))


def test_cli_parsers() -> None:
    args = _parse("keys", "create", "--name", "web", "--collections", "segment/events")
    assert (args.name, args.collections) == ("web", "segment/events")
    assert _parse("keys", "revoke", "web").name == "web"
    assert callable(_parse("keys", "list").func)
    api = _parse("api")
    assert (api.host, api.port, api.max_documents, api.max_bytes) == (
        "127.0.0.1",
        8080,
        1000,
        1 << 20,
    )
    api = _parse("api", "--host", "0.0.0.0", "--port", "0", "--max-documents", "10")
    assert (api.host, api.port, api.max_documents) == ("0.0.0.0", 0, 10)


@pytest.mark.parametrize(
    "argv",
    [
        ("keys", "create", "--name", "web", "--collections", "segment/events"),
        ("keys", "list"),
        ("keys", "revoke", "web"),
    ],
)
def test_keys_commands_need_postgres(argv: tuple[str, ...]) -> None:
    args = _parse(*argv)
    with pytest.raises(SegflowError, match="SEGFLOW_POSTGRES is not set"):
        args.func(args, Settings(catalog=ROOT / "catalog"))


def test_unknown_collections_are_refused_before_connecting() -> None:
    args = _parse("keys", "create", "--name", "web", "--collections", "segment/nope")
    settings = Settings(postgres="postgresql://nobody@127.0.0.1:1/none", catalog=ROOT / "catalog")
    with pytest.raises(SegflowError, match="unknown collection 'segment/nope'"):
        args.func(args, settings)
