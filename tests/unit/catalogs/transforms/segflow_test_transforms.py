"""Transforms for catalog tests (put on sys.path by a fixture)."""

from __future__ import annotations

from typing import Any


class Copy:
    def publish(self, source: Any, register: Any, previous: Any) -> list[Any]:
        return [source]


class Counter:
    def update(self, source: Any) -> list[Any]:
        return [{"count": 1}]

    def publish(self, source: Any, register: Any, previous: Any) -> list[Any]:
        return [register]


class NoPublish:
    pass
