"""`segflow ingest COLLECTION [FILE]`: JSON lines into a collection's topic, each one validated.

Invalid lines are reported on stderr as `line N: PATH: MESSAGE` and not sent; the valid ones are
sent in batches, each acknowledged by the broker before the next is read. With `--strict`
nothing is sent unless every line is valid: a regular file is read twice (check, then send),
anything else is buffered.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import io
import os
import stat
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson
from aiokafka.errors import KafkaError

from pipeline.catalog import Catalog, CollectionSpec, load_catalog
from pipeline.documents.validation import Validator
from pipeline.errors import SegflowError
from pipeline.producers.progress import Progress
from pipeline.runtime.produce import CollectionWriter, make_producer
from pipeline.runtime.settings import Settings
from pipeline.runtime.topics import Names, collection_topics, ensure_topics

CHUNK = 1 << 16


# --- Reading and checking lines ----------------------------------------------------------------


@dataclass
class Tally:
    sent: int = 0
    invalid: int = 0


def read_lines(stream: io.BufferedIOBase) -> Iterator[tuple[list[tuple[int, bytes]], bool]]:
    """Yield the non-blank lines (1-based number, bytes) of each read, and whether the read came
    back short: the input has nothing more for now (a slow pipe) or has ended."""
    number = 0
    pieces: list[bytes] = []  # of a line not yet complete (joined once, however long it is)
    while chunk := stream.read1(CHUNK):
        *complete, tail = chunk.split(b"\n")
        if complete:
            complete[0] = b"".join([*pieces, complete[0]])
            pieces = []
        pieces.append(tail)
        lines = []
        for line in complete:
            number += 1
            if line.strip():
                lines.append((number, line))
        yield lines, len(chunk) < CHUNK
    if (rest := b"".join(pieces)).strip():
        yield [(number + 1, rest)], True


def check(line: bytes, validator: Validator) -> tuple[Any, list[str]]:
    """The decoded document and why it is invalid ('PATH: MESSAGE' each; empty when valid)."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return None, [f"/: not valid JSON ({exc.msg} at column {exc.colno})"]
    return doc, validator.errors(doc)


def valid_documents(
    stream: io.BufferedIOBase, validator: Validator, on_invalid: Callable[[int, list[str]], None]
) -> Iterator[tuple[list[Any], bool]]:
    """The valid documents of each read (see `read_lines`); invalid lines go to `on_invalid`."""
    for lines, drained in read_lines(stream):
        docs = []
        for number, line in lines:
            doc, problems = check(line, validator)
            if problems:
                on_invalid(number, problems)
            else:
                docs.append(doc)
        yield docs, drained


# --- The command -------------------------------------------------------------------------------


def source_collection(catalog: Catalog, name: str) -> CollectionSpec:
    """The collection `name`, which must exist and must not be derived."""
    if name not in catalog.collections:
        close = difflib.get_close_matches(name, list(catalog.collections), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SegflowError(
            f"unknown collection {name!r}{hint}; expected one of {sorted(catalog.collections)}"
        )
    if name in catalog.derivations:
        source = catalog.captured_source(name)
        raise SegflowError(
            f"collection {name!r} is derived from {source!r}; write to {source!r} instead"
        )
    return catalog.collections[name]


def _is_regular(path: Path | None) -> bool:
    try:
        return path is not None and stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


class Ingest:
    """One `segflow ingest` run: reports invalid lines and sends valid documents in batches."""

    def __init__(self, validator: Validator, batch: int, err: TextIO) -> None:
        self.validator = validator
        self.batch = batch
        self.err = err
        self.tally = Tally()
        self.progress = Progress(err, unit="sent")

    def report(self, number: int, problems: list[str]) -> None:
        self.tally.invalid += 1
        self.progress.clear()
        for problem in problems:
            self.err.write(f"line {number}: {problem}\n")
        self.err.flush()

    def _changed(self, number: int, problems: list[str]) -> None:
        raise SegflowError(f"the input changed while it was read: line {number} is now invalid")

    async def _send(self, writer: CollectionWriter, docs: list[Any]) -> None:
        self.tally.sent += await writer.send_all(docs)
        self.progress.update(self.tally.sent, f", {self.tally.invalid:,} invalid")

    async def stream(
        self, writer: CollectionWriter, reads: Iterator[tuple[list[Any], bool]]
    ) -> None:
        """Send as the lines come: a full batch at a time, or what there is when input pauses."""
        pending: list[Any] = []
        for docs, drained in reads:
            pending += docs
            full = len(pending) - len(pending) % self.batch
            for start in range(0, full, self.batch):
                await self._send(writer, pending[start : start + self.batch])
            pending = pending[full:]
            if drained and pending:
                await self._send(writer, pending)
                pending = []
        if pending:
            await self._send(writer, pending)

    async def run(
        self,
        writer: CollectionWriter,
        open_input: Callable[[], io.BufferedIOBase],
        rereadable: bool,
        strict: bool,
    ) -> None:
        self.progress.restart()
        if not strict:
            with open_input() as stream:
                await self.stream(writer, valid_documents(stream, self.validator, self.report))
            return
        if rereadable:  # check everything, then read again to send
            with open_input() as stream:
                for _ in valid_documents(stream, self.validator, self.report):
                    pass
            if not self.tally.invalid:
                with open_input() as stream:
                    await self.stream(
                        writer, valid_documents(stream, self.validator, self._changed)
                    )
            return
        buffered: list[Any] = []
        with open_input() as stream:
            for docs, _ in valid_documents(stream, self.validator, self.report):
                if not self.tally.invalid:  # once one is invalid, nothing will be sent
                    buffered += docs
        if not self.tally.invalid:
            await self.stream(writer, iter([(buffered, False)]))


async def _ingest(
    settings: Settings,
    catalog: Catalog,
    spec: CollectionSpec,
    run: Ingest,
    open_input: Callable[[], io.BufferedIOBase],
    rereadable: bool,
    strict: bool,
) -> None:
    assert settings.broker
    names = Names(settings.topic_prefix)
    await ensure_topics(settings.broker, collection_topics(catalog, names, spec.name))
    producer = make_producer(settings.broker, settings.linger_ms)
    await producer.start()
    try:
        writer = CollectionWriter(catalog, spec.name, names, producer, "segflow-ingest")
        await run.run(writer, open_input, rereadable, strict)
    finally:
        await producer.stop()


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    catalog = load_catalog(settings.catalog)
    spec = source_collection(catalog, args.collection)
    if not settings.broker:
        raise SegflowError("SEGFLOW_BROKER is not set: which broker should I write to?")
    path = None if args.file in (None, "-") else Path(args.file)
    if path is not None:
        try:
            path.open("rb").close()
        except OSError as exc:
            raise SegflowError(f"cannot read {str(path)!r}: {exc.strerror}") from exc

    def open_input() -> io.BufferedIOBase:
        if path is None:
            return os.fdopen(os.dup(sys.stdin.fileno()), "rb")
        return path.open("rb")

    run = Ingest(Validator(spec.schema), args.batch, sys.stderr)
    try:
        asyncio.run(
            _ingest(settings, catalog, spec, run, open_input, _is_regular(path), args.strict)
        )
    except KafkaError as exc:
        raise SegflowError(f"broker {settings.broker}: {exc}") from exc
    except KeyboardInterrupt:
        run.progress.clear()
        print(f"interrupted: sent {run.tally.sent} document(s)", file=sys.stderr)
        return 130
    finally:
        run.progress.clear()
    if args.strict and run.tally.invalid:
        print("--strict: nothing sent, as some lines are invalid", file=sys.stderr)
    print(
        f"sent {run.tally.sent} document(s), {run.tally.invalid} invalid line(s)", file=sys.stderr
    )
    return 1 if run.tally.invalid else 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, not {text!r}")
    return value


def add_ingest_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `ingest` to the `segflow` command."""
    p = subparsers.add_parser(
        "ingest", help="validate JSON lines and write the valid ones to a collection"
    )
    p.add_argument("collection", help="a collection that is not derived, e.g. segment/events")
    p.add_argument("file", nargs="?", help="JSON lines (default, or '-': stdin)")
    p.add_argument("--strict", action="store_true", help="send nothing unless every line is valid")
    p.add_argument("--batch", type=_positive, default=1000, help="documents per acknowledged batch")
    p.set_defaults(func=cmd_ingest)
